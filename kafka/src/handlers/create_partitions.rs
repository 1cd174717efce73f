//! CreatePartitions: a topic made at run time gets more partitions, each on the
//! core the placement rule gives it (`p % cores`), on every core through core 0
//! (`topic_changes.rs`). Topics the config declares or a job reads are refused
//! (POLICY_VIOLATION): a job's keyed state is partitioned by its source's
//! partitions. Manual assignments get INVALID_REPLICA_ASSIGNMENT; `validate_only`
//! checks and adds nothing.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::topic_changes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

pub async fn handle(broker: &Broker, req: &CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str();
        let to = u32::try_from(t.count).unwrap_or(0);
        let done = if t.assignments.is_some() {
            Err(KafkaError::new(
                ResponseError::InvalidReplicaAssignment,
                "partitions are placed by the server (partition p on core p % cores)",
            ))
        } else if req.validate_only {
            topic_changes::check_growth(broker, name, to)
        } else {
            topic_changes::grow(broker, name, to).await
        };
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        results.push(match done {
            Ok(()) => r,
            Err(e) => {
                tracing::info!(topic = name, code = e.code(), "partitions not added: {e}");
                r.with_error_code(e.code()).with_error_message(e.message())
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
