//! CreateTopics: each topic is checked, then made on every core through core 0
//! (`topic_changes.rs`). Replication factor is 1 (one machine); per-topic configs
//! and manual replica assignments are refused with their error codes rather than
//! ignored. `validate_only` checks everything a creation would, and makes nothing.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::topic_changes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

pub async fn handle(broker: &Broker, req: &CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str();
        let r = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let partitions = if t.num_partitions == -1 {
            broker.topics.default_partitions
        } else {
            t.num_partitions.max(0) as u32
        };
        let res = match check(t, partitions) {
            Err(e) => Err(e),
            Ok(()) if req.validate_only => topic_changes::check_new(broker, name, partitions),
            Ok(()) => topic_changes::create(broker, name, partitions).await,
        };
        results.push(match res {
            Ok(()) => r
                .with_num_partitions(partitions as i32)
                .with_replication_factor(1),
            Err(e) => {
                tracing::info!(topic = name, code = e.code(), "topic not created: {e}");
                r.with_error_code(e.code()).with_error_message(e.message())
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// What one topic of the request asks for, checked on its own.
fn check(t: &CreatableTopic, partitions: u32) -> Result<(), KafkaError> {
    if t.replication_factor != -1 && t.replication_factor != 1 {
        Err(KafkaError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {}: one machine keeps one copy (use 1)",
                t.replication_factor
            ),
        ))
    } else if !t.assignments.is_empty() {
        Err(KafkaError::new(
            ResponseError::InvalidReplicaAssignment,
            "partitions are placed by the server (partition p on core p % cores)",
        ))
    } else if !t.configs.is_empty() {
        Err(KafkaError::new(
            ResponseError::InvalidConfig,
            "per-topic configs are not supported; retention and limits are server settings",
        ))
    } else {
        topic_changes::validate(&t.name.0, partitions)
    }
}
