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
use super::{forward, Broker, KafkaError};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::ResponseError;

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
            None => Err(KafkaError::new(
                ResponseError::UnknownTopicId,
                "topics have no ids on this server: name the topic",
            )),
        };
        responses.push(match res {
            Ok(()) => r,
            Err(e) => {
                tracing::info!(topic = ?name.as_ref().map(|n| n.0.as_str()), code = e.code(), "topic not deleted: {e}");
                r.with_error_code(e.code()).with_error_message(e.message())
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Deletes a topic on every core (through core 0).
pub async fn delete(broker: &Broker, name: &str) -> Result<(), KafkaError> {
    if broker.shard == 0 {
        return coordinate(broker, name).await;
    }
    let req = forward::Request::DeleteTopic {
        name: name.to_string(),
    };
    ask(broker, 0, req).await
}

/// On core 0: the mark, every core's partitions, then the record goes.
pub async fn coordinate(broker: &Broker, name: &str) -> Result<(), KafkaError> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_none() {
        return Err(KafkaError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("there is no topic {name}"),
        ));
    }
    if let Some(why) = broker.topics.protected.get(name) {
        return Err(KafkaError::new(
            ResponseError::PolicyViolation,
            format!("topic {name} {why}; it cannot be deleted while it is"),
        ));
    }
    let file = broker.topics.file.as_deref();
    if let Some(file) = file {
        let mut all = recorded(file)?;
        for t in all.iter_mut().filter(|t| t.name == name) {
            t.deleting = true;
        }
        rewrite(file, &all)?;
    }
    on_every_core(broker, broker.remove_topic(name), || {
        forward::Request::RemoveTopic {
            name: name.to_string(),
        }
    })
    .await?;
    if let Some(file) = file {
        let mut all = recorded(file)?;
        all.retain(|t| t.name != name);
        rewrite(file, &all)?;
    }
    tracing::info!(topic = name, "topic deleted");
    Ok(())
}
