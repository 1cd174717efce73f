//! DeleteTopics: each topic named is deleted on every core through core 0
//! (`topic_changes.rs`), one topic change at a time. Topics have no ids here: a v6
//! request by id gets UNKNOWN_TOPIC_ID.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::topic_changes;
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
            Some(n) => topic_changes::delete(broker, n.0.as_str()).await,
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
