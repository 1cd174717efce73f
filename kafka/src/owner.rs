//! The owning core's side of the mesh: runs what another core asks of it (a
//! partition's part of a request, a step of a topic change, a group's request) through exactly the code
//! it runs for its own clients (checks, idempotence, append, read), so both modes
//! store the same bytes.
//!
//! Never: a second path to the log for forwarded parts.

use crate::broker::Broker;
use crate::handlers::{
    delete_records, fetch, group_admin, list_offsets, membership, offsets, produce,
};
use crate::remote::{ForwardMail, GroupCall, GroupReply, Reply, Request};
use crate::{forward, topic_changes};
use std::rc::Rc;

/// Connects this core's ends of the mesh, before the listener opens; from then on
/// other cores' requests run here (`serve`).
pub async fn connect(broker: &Rc<Broker>, mail: ForwardMail) {
    let b = broker.clone();
    let f = forward::start(broker.shard, mail, move |req| {
        let b = b.clone();
        async move { serve(&b, req).await }
    })
    .await;
    broker.set_forwarder(f);
}

/// Runs a request another core sent to this (the owning) core.
async fn serve(broker: &Rc<Broker>, req: Request) -> Reply {
    match req {
        Request::Produce {
            topic,
            index,
            records,
        } => Reply::Produce(produce::partition(broker, &topic, index, records).await),
        Request::Fetch {
            topic,
            index,
            offset,
            max_bytes,
        } => Reply::Fetch(fetch::read_partition(broker, &topic, index, offset, max_bytes).await),
        Request::ListOffsets {
            topic,
            index,
            timestamp,
        } => Reply::ListOffsets(list_offsets::partition(broker, &topic, index, timestamp).await),
        Request::CreateTopic {
            name,
            partitions,
            config,
        } => {
            Reply::Admin(topic_changes::coordinate_create(broker, &name, partitions, config).await)
        }
        Request::AddTopic {
            name,
            partitions,
            config,
        } => Reply::Admin(broker.add_topic(&name, partitions, &config).await),
        Request::DeleteRecords {
            topic,
            index,
            offset,
        } => Reply::Trimmed(delete_records::partition(broker, &topic, index, offset).await),
        Request::GrowTopic { name, to } => {
            Reply::Admin(topic_changes::coordinate_grow(broker, &name, to).await)
        }
        Request::AddPartitions { name, to } => Reply::Admin(broker.grow_topic(&name, to).await),
        Request::RemovePartitions { name, to } => {
            Reply::Admin(broker.shrink_topic(&name, to).await)
        }
        Request::AlterTopicConfig { name, change } => {
            Reply::Admin(topic_changes::coordinate_alter(broker, &name, change).await)
        }
        Request::SetTopicConfig { name, config } => {
            Reply::Admin(broker.apply_topic_config(&name, config))
        }
        Request::DeleteTopic { name } => {
            Reply::Admin(topic_changes::coordinate_delete(broker, &name).await)
        }
        Request::RemoveTopic { name } => Reply::Admin(broker.remove_topic(&name).await),
        Request::Group(call) => Reply::Group(Box::new(coordinate(broker, *call).await)),
    }
}

/// Runs a group request on this, the coordinating, core.
async fn coordinate(broker: &Rc<Broker>, call: GroupCall) -> GroupReply {
    match call {
        GroupCall::Join {
            req,
            version,
            client_id,
            client_host,
        } => GroupReply::Join(membership::join(broker, req, version, client_id, client_host).await),
        GroupCall::Sync(req) => GroupReply::Sync(membership::sync(broker, req).await),
        GroupCall::Heartbeat(req) => GroupReply::Heartbeat(membership::heartbeat(broker, &req)),
        GroupCall::Leave(req, version) => {
            GroupReply::Leave(membership::leave(broker, &req, version))
        }
        GroupCall::Commit(req) => GroupReply::Commit(offsets::commit(broker, req).await),
        GroupCall::Fetch { group, topics } => {
            GroupReply::Fetch(offsets::fetch(broker, &group, topics))
        }
        GroupCall::OffsetDelete(req) => {
            GroupReply::OffsetDelete(offsets::delete(broker, req).await)
        }
        GroupCall::Describe(group) => {
            GroupReply::Describe(group_admin::describe_here(broker, &group))
        }
        GroupCall::List => GroupReply::List(group_admin::list_here(broker)),
        GroupCall::Delete(group) => {
            GroupReply::Delete(group_admin::delete_here(broker, &group).await)
        }
    }
}
