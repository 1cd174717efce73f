//! DeleteTopics: core 0 coordinates, one topic change at a time (shared with
//! CreateTopics). The topic is first marked `deleting` in `topics.json`, then every
//! core takes it out of its table (new requests get UNKNOWN_TOPIC_OR_PARTITION) and
//! deletes the partitions it owns (appends already accepted finish first; the
//! partitions' log ids are never reused), then the record goes. A crash in between
//! leaves the mark, and every core finishes the deletion at the next start.
//!
//! Refused with POLICY_VIOLATION, saying why: topics the config file declares (it
//! would bring them back) and topics a job reads or writes. Topics have no ids here:
//! a v6 request by id gets UNKNOWN_TOPIC_ID.

use super::create_topics::{ask, on_every_core, one_topic_change, recorded, rewrite};
use super::{code, forward, Broker};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;

pub async fn handle(broker: &Broker, req: &DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`, v6 in `topics` (by name or by id).
    let asked: Vec<_> = if req.topics.is_empty() {
        req.topic_names
            .iter()
            .map(|n| (Some(n.clone()), Default::default()))
            .collect()
    } else {
        req.topics
            .iter()
            .map(|t| (t.name.clone(), t.topic_id))
            .collect()
    };
    let mut responses = Vec::with_capacity(asked.len());
    for (name, id) in asked {
        let r = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let res = match &name {
            Some(n) => delete(broker, n.0.as_str()).await,
            None => Err((
                code::UNKNOWN_TOPIC_ID,
                "topics have no ids on this server: name the topic".to_string(),
            )),
        };
        responses.push(match res {
            Ok(()) => r,
            Err((code, why)) => {
                tracing::info!(topic = ?name.as_ref().map(|n| n.0.as_str()), code, "topic not deleted: {why}");
                r.with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(why)))
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Deletes a topic on every core (through core 0).
pub async fn delete(broker: &Broker, name: &str) -> Result<(), (i16, String)> {
    if broker.shard == 0 {
        return coordinate(broker, name).await;
    }
    let req = forward::Request::DeleteTopic {
        name: name.to_string(),
    };
    ask(broker, 0, req).await
}

/// On core 0: the mark, every core's partitions, then the record goes.
pub async fn coordinate(broker: &Broker, name: &str) -> Result<(), (i16, String)> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_none() {
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("there is no topic {name}"),
        ));
    }
    if let Some(why) = broker.topics.protected.get(name) {
        return Err((
            code::POLICY_VIOLATION,
            format!("topic {name} {why}; it cannot be deleted while it is"),
        ));
    }
    let storage = |e: String| (code::KAFKA_STORAGE_ERROR, e);
    let file = broker.topics.file.as_deref();
    if let Some(file) = file {
        let mut all = recorded(file).map_err(storage)?;
        for t in all.iter_mut().filter(|t| t.name == name) {
            t.deleting = true;
        }
        rewrite(file, &all).map_err(storage)?;
    }
    on_every_core(broker, broker.remove_topic(name), || {
        forward::Request::RemoveTopic {
            name: name.to_string(),
        }
    })
    .await?;
    if let Some(file) = file {
        let mut all = recorded(file).map_err(storage)?;
        all.retain(|t| t.name != name);
        rewrite(file, &all).map_err(storage)?;
    }
    tracing::info!(topic = name, "topic deleted");
    Ok(())
}
