//! DeleteRecords: a partition's records before an offset are deleted, on the core
//! that owns it (forwarded in single-port mode): reads start there from then on,
//! across restarts, and the log deletes the segments before it. Topics the config
//! declares or a job reads are refused (POLICY_VIOLATION): a job may replay its
//! sources from a checkpoint.

use crate::broker::{Broker, Placement};
use crate::error::KafkaError;
use crate::remote::{Reply, Request};
use crate::topic_changes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

pub async fn handle(broker: &Broker, req: &DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str();
        let placed = broker.topic(name);
        let protected = topic_changes::unprotected(broker, name, "its records cannot be deleted");
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let index = p.partition_index;
            let placement = placed
                .as_ref()
                .map_or(Placement::Unknown, |t| t.place(index));
            let done = match (&protected, placement, broker.forwarder()) {
                (Err(e), _, _) => Err(e.clone()),
                (Ok(()), Placement::Elsewhere(owner), Some(f)) => {
                    broker.stats.forwarded();
                    let req = Request::DeleteRecords {
                        topic: name.to_string(),
                        index,
                        offset: p.offset,
                    };
                    match f.call(owner, req).await {
                        Some(Reply::Trimmed(r)) => r,
                        _ => Err(KafkaError::bare(ResponseError::NotLeaderOrFollower)),
                    }
                }
                (Ok(()), placement, _) => here(broker, placement, index, p.offset).await,
            };
            let r = DeleteRecordsPartitionResult::default().with_partition_index(index);
            partitions.push(match done {
                Ok(low) => r.with_low_watermark(low as i64),
                Err(e) => {
                    tracing::info!(
                        topic = name,
                        partition = index,
                        code = e.code(),
                        "records not deleted: {e}"
                    );
                    r.with_low_watermark(-1).with_error_code(e.code())
                }
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Deletes a partition's records before `offset` (-1: all, to the high watermark)
/// on the core that owns it; the new start.
pub async fn partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    offset: i64,
) -> Result<u64, KafkaError> {
    here(broker, broker.place(topic, index), index, offset).await
}

async fn here(
    broker: &Broker,
    placement: Placement,
    index: i32,
    offset: i64,
) -> Result<u64, KafkaError> {
    let local = placement.owned()?;
    let high = broker
        .log
        .high_watermark(local.id)
        .map_err(|e| KafkaError::from(&e))?;
    let before = match offset {
        -1 => high,
        o if o < 0 || o as u64 > high => {
            return Err(KafkaError::new(
                ResponseError::OffsetOutOfRange,
                format!("offset {o}: the partition ends at {high}"),
            ))
        }
        o => o as u64,
    };
    let start = broker
        .log
        .delete_records(local.id, before)
        .await
        .map_err(|e| KafkaError::from(&e))?;
    tracing::info!(topic = %local.topic.name, partition = index, start, "records deleted");
    Ok(start)
}
