//! What one core asks of another, and what it answers: a partition's part of a
//! Produce, Fetch or ListOffsets (single-port mode), a step of a topic change, or a
//! consumer group's request for the core that coordinates the group (both modes). `forward.rs` carries them; `owner.rs` runs them on the core asked.
//!
//! Plain values that cross cores (`Send`): names and bytes, never a reference into a
//! core's state.

use crate::error::KafkaError;
use crate::forward;
use crate::topic_config::{Change, TopicConfig};
use bytes::Bytes;
use kafka_protocol::messages as m;
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;

/// A request for another core.
#[derive(Debug)]
pub enum Request {
    Produce {
        topic: String,
        index: i32,
        records: Bytes,
    },
    Fetch {
        topic: String,
        index: i32,
        offset: i64,
        max_bytes: usize,
    },
    ListOffsets {
        topic: String,
        index: i32,
        timestamp: i64,
    },
    /// The owner of a partition: delete its records before `offset`.
    DeleteRecords {
        topic: String,
        index: i32,
        offset: i64,
    },
    /// To core 0: create this topic on every core.
    CreateTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
    },
    /// To each core: create your partitions of this topic.
    AddTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
    },
    /// To core 0: give this topic `to` partitions on every core.
    GrowTopic { name: String, to: u32 },
    /// To each core: make your new partitions of this topic, up to `to`.
    AddPartitions { name: String, to: u32 },
    /// To each core: delete your partitions of this topic from `to` on (an undo).
    RemovePartitions { name: String, to: u32 },
    /// To core 0: put these configs of a topic in force on every core.
    AlterTopicConfig { name: String, change: Change },
    /// To each core: put these configs in force on your partitions.
    SetTopicConfig { name: String, config: TopicConfig },
    /// To core 0: delete this topic on every core.
    DeleteTopic { name: String },
    /// To each core: delete your partitions of this topic.
    RemoveTopic { name: String },
    /// To the core that coordinates the group.
    Group(Box<GroupCall>),
}

/// A group request, decoded on the core the client sent it to, for the core that
/// coordinates the group; `version` is the request's.
#[derive(Debug)]
pub enum GroupCall {
    Join {
        req: m::JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    },
    Sync(m::SyncGroupRequest),
    Heartbeat(m::HeartbeatRequest),
    Leave(m::LeaveGroupRequest, i16),
    Commit(m::OffsetCommitRequest),
    /// One group's commits: of these partitions, or (`None`) all.
    Fetch {
        group: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe(String),
    /// This core's groups (ListGroups asks every core).
    List,
    Delete(String),
    OffsetDelete(m::OffsetDeleteRequest),
}

/// The coordinating core's answer to a [`GroupCall`].
#[derive(Debug)]
pub enum GroupReply {
    Join(m::JoinGroupResponse),
    Sync(m::SyncGroupResponse),
    Heartbeat(m::HeartbeatResponse),
    Leave(m::LeaveGroupResponse),
    Commit(m::OffsetCommitResponse),
    Fetch(FetchedOffsets),
    Describe(m::describe_groups_response::DescribedGroup),
    List(Vec<m::list_groups_response::ListedGroup>),
    /// DeleteGroups' error code for the group (0: deleted).
    Delete(i16),
    OffsetDelete(m::OffsetDeleteResponse),
}

/// One group's committed offsets, as OffsetFetch answers them in any version.
#[derive(Debug, Default)]
pub struct FetchedOffsets {
    pub error: i16,
    pub topics: Vec<(String, Vec<FetchedOffset>)>,
}

/// One partition's committed offset (-1: none).
#[derive(Debug)]
pub struct FetchedOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: i16,
}

/// What the core asked answers.
#[derive(Debug)]
pub enum Reply {
    Produce(PartitionProduceResponse),
    Fetch(PartitionRead),
    ListOffsets(ListOffsetsPartitionResponse),
    /// Done, or why not.
    Admin(Result<(), KafkaError>),
    /// A partition's new start after DeleteRecords, or why not.
    Trimmed(Result<u64, KafkaError>),
    Group(Box<GroupReply>),
}

/// One partition read on the core that owns it.
#[derive(Debug, Default)]
pub struct PartitionRead {
    /// Why nothing (or not all) could be read; the offsets may still be known.
    pub error: Option<KafkaError>,
    pub high_watermark: i64,
    pub log_start: i64,
    pub records: Bytes,
}

/// This core's ends of the mesh, before they are connected.
pub type ForwardMail = forward::ForwardMail<Request, Reply>;

/// This core's way to the others.
pub type Forwarder = forward::Forwarder<Request, Reply>;

/// The front ends' mesh over `shards` cores: element `i` is core `i`'s ends.
pub fn mesh(shards: u32) -> Vec<ForwardMail> {
    forward::mesh(shards)
}
