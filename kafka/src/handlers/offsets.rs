//! OffsetCommit, OffsetFetch (single group, and many groups from v8) and
//! OffsetDelete. A commit is answered once durable in the coordinating core's log.

use crate::broker::Broker;
use crate::groups::now_ms;
use crate::groups::offsets::Record;
use crate::handlers::coordinated::forward;
use crate::remote::{FetchedOffset, FetchedOffsets, GroupCall, GroupReply};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Instant;

fn name(v: &str) -> TopicName {
    TopicName(StrBytes::from_string(v.to_string()))
}

/// Whether `topic` has a partition `p`.
fn exists(broker: &Broker, topic: &str, p: i32) -> bool {
    broker
        .table()
        .topic(topic)
        .is_some_and(|t| u32::try_from(p).is_ok_and(|p| p < t.partitions))
}

pub async fn handle_commit(broker: &Rc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let owner = broker.groups.owner(&req.group_id);
    if owner == broker.shard {
        return commit(broker, req).await;
    }
    let fallback = commit_all(&req, ResponseError::CoordinatorNotAvailable);
    match forward(broker, owner, GroupCall::Commit(req)).await {
        Some(GroupReply::Commit(r)) => r,
        _ => fallback,
    }
}

/// Every partition of the request answered `e`.
fn commit_all(req: &OffsetCommitRequest, e: ResponseError) -> OffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

pub async fn commit(broker: &Rc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let groups = &broker.groups;
    if req.group_id.is_empty() {
        return commit_all(&req, ResponseError::InvalidGroupId);
    }
    let generation = req.generation_id_or_member_epoch;
    let admitted = groups.with_group(&req.group_id, generation < 0, |g| {
        g.check_commit(
            &req.member_id,
            req.group_instance_id.as_deref(),
            generation,
            Instant::now(),
        )
    });
    match admitted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return commit_all(&req, e),
        Err(ResponseError::GroupIdNotFound) => {
            return commit_all(&req, ResponseError::IllegalGeneration)
        }
        Err(e) => return commit_all(&req, e),
    }
    let at = now_ms();
    let max = groups.cfg.offset_metadata_bytes_max;
    let mut records = Vec::new();
    // Each partition's code; `None`: stored with the others.
    let mut codes: Vec<Vec<Option<ResponseError>>> = Vec::new();
    for t in &req.topics {
        let mut topic_codes = Vec::new();
        for p in &t.partitions {
            let meta_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
            let code = if !exists(broker, &t.name, p.partition_index) {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if meta_len > max {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                records.push(Record::Commit {
                    g: req.group_id.to_string(),
                    t: t.name.to_string(),
                    p: p.partition_index,
                    o: p.committed_offset,
                    e: p.committed_leader_epoch,
                    m: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    ts: at,
                });
                None
            };
            topic_codes.push(code);
        }
        codes.push(topic_codes);
    }
    let stored = groups.store(records).await;
    let failed = stored.err().map(|e| {
        tracing::warn!(group = %req.group_id.as_str(), "offset commit failed: {e}");
        // As Kafka answers a commit its log refused.
        match e.kind() {
            ResponseError::MessageTooLarge => ResponseError::InvalidCommitOffsetSize,
            _ => ResponseError::CoordinatorNotAvailable,
        }
    });
    let topics = req
        .topics
        .iter()
        .zip(codes)
        .map(|(t, topic_codes)| {
            let partitions = t
                .partitions
                .iter()
                .zip(topic_codes)
                .map(|(p, code)| {
                    let code = code.or(failed).map_or(0, |e| e.code());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

pub async fn handle_fetch(
    broker: &Rc<Broker>,
    req: &OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::new();
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let got = fetch_on_owner(broker, &g.group_id, topics).await;
            let topics = got
                .topics
                .into_iter()
                .map(|(t, ps)| {
                    let partitions = ps
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
                                .with_committed_leader_epoch(p.leader_epoch)
                                .with_metadata(Some(StrBytes::from_string(p.metadata)))
                                .with_error_code(p.error)
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(name(&t))
                        .with_partitions(partitions)
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
                    .with_error_code(got.error),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let got = fetch_on_owner(broker, &req.group_id, topics).await;
    let topics = got
        .topics
        .into_iter()
        .map(|(t, ps)| {
            let partitions = ps
                .into_iter()
                .map(|p| {
                    // Before v2 the group's error is told in each partition.
                    let error = if version < 2 && got.error != 0 {
                        got.error
                    } else {
                        p.error
                    };
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p.partition)
                        .with_committed_offset(p.offset)
                        .with_committed_leader_epoch(if version >= 5 { p.leader_epoch } else { -1 })
                        .with_metadata(Some(StrBytes::from_string(p.metadata)))
                        .with_error_code(error)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name(&t))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 { got.error } else { 0 })
}

async fn fetch_on_owner(
    broker: &Rc<Broker>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> FetchedOffsets {
    let owner = broker.groups.owner(group);
    if owner == broker.shard {
        return fetch(broker, group, topics);
    }
    let asked = topics.clone();
    let call = GroupCall::Fetch {
        group: group.to_string(),
        topics,
    };
    match forward(broker, owner, call).await {
        Some(GroupReply::Fetch(f)) => f,
        _ => FetchedOffsets {
            error: ResponseError::CoordinatorNotAvailable.code(),
            topics: asked
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| none(p, 0)).collect()))
                .collect(),
        },
    }
}

fn none(partition: i32, error: i16) -> FetchedOffset {
    FetchedOffset {
        partition,
        offset: -1,
        leader_epoch: -1,
        metadata: String::new(),
        error,
    }
}

/// A group's commits: of the partitions asked for (-1 for each without one), or
/// (`None`) every one it has.
pub fn fetch(
    broker: &Rc<Broker>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> FetchedOffsets {
    let committed = broker.groups.committed(group);
    let found = |t: &str, p: i32| match committed.get(&(t.to_string(), p)) {
        Some(c) => FetchedOffset {
            partition: p,
            offset: c.offset,
            leader_epoch: c.leader_epoch,
            metadata: c.metadata.clone().unwrap_or_default(),
            error: 0,
        },
        None => none(p, 0),
    };
    let topics = match topics {
        Some(asked) => asked
            .into_iter()
            .map(|(t, ps)| {
                let got = ps.into_iter().map(|p| found(&t, p)).collect();
                (t, got)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<FetchedOffset>> =
                Default::default();
            for (t, p) in committed.keys() {
                by_topic.entry(t.clone()).or_default().push(found(t, *p));
            }
            for ps in by_topic.values_mut() {
                ps.sort_by_key(|p| p.partition);
            }
            by_topic.into_iter().collect()
        }
    };
    FetchedOffsets { error: 0, topics }
}

pub async fn handle_delete(broker: &Rc<Broker>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let owner = broker.groups.owner(&req.group_id);
    if owner == broker.shard {
        return delete(broker, req).await;
    }
    match forward(broker, owner, GroupCall::OffsetDelete(req)).await {
        Some(GroupReply::OffsetDelete(r)) => r,
        _ => OffsetDeleteResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}

/// OffsetDelete: forgets commits of topics the group's members do not subscribe to
/// (GROUP_SUBSCRIBED_TO_TOPIC for the others, as Kafka).
pub async fn delete(broker: &Rc<Broker>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let groups = &broker.groups;
    let subscribed = groups.with_group(&req.group_id, false, |g| {
        let mut topics = HashSet::new();
        for m in g.members() {
            for (_, metadata) in &m.protocols {
                match subscription(metadata) {
                    Some(ts) => topics.extend(ts),
                    // Not the consumer protocol: every topic counts as subscribed.
                    None => return None,
                }
            }
        }
        Some(topics)
    });
    let subscribed = match subscribed {
        Ok(Some(s)) => Some(s),
        // Members that do not speak the consumer protocol: the group is in use.
        Ok(None) => {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::NonEmptyGroup.code())
        }
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let mut records = Vec::new();
    let mut topics = Vec::new();
    for t in &req.topics {
        let busy = subscribed
            .as_ref()
            .is_none_or(|s| s.contains(t.name.as_str()));
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let code = if busy {
                ResponseError::GroupSubscribedToTopic.code()
            } else {
                records.push(Record::Forget {
                    g: req.group_id.to_string(),
                    t: t.name.to_string(),
                    p: p.partition_index,
                    ts: None,
                });
                0
            };
            partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    if let Err(e) = groups.store(records).await {
        tracing::warn!(group = %req.group_id.as_str(), "offset delete failed: {e}");
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

/// The topics a consumer-protocol subscription names (`None`: not one).
fn subscription(metadata: &[u8]) -> Option<Vec<String>> {
    let mut buf = bytes::Bytes::copy_from_slice(metadata);
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    let s = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(s.topics.iter().map(|t| t.to_string()).collect())
}
