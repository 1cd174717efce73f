//! ListOffsets: earliest (-2), latest (-1), and by timestamp: the first batch whose
//! max timestamp reaches the one asked for (offset -1 when none does).

use crate::broker::{Broker, Local, Placement};
use crate::remote::{Reply, Request};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use tidewater_io::Result;

/// Bytes read per step of a timestamp search.
const SEARCH_READ_BYTES: usize = 1 << 20;

pub async fn handle(broker: &Broker, req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        // One look-up per topic; its partitions are placed by index.
        let placed = broker.topic(t.name.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let (index, ts) = (p.partition_index, p.timestamp);
            let placement = placed
                .as_ref()
                .map_or(Placement::Unknown, |t| t.place(index));
            partitions.push(match (placement, broker.forwarder()) {
                (Placement::Elsewhere(owner), Some(f)) => {
                    broker.stats.forwarded();
                    let req = Request::ListOffsets {
                        topic: t.name.0.to_string(),
                        index,
                        timestamp: ts,
                    };
                    match f.call(owner, req).await {
                        Some(Reply::ListOffsets(r)) => r,
                        _ => ListOffsetsPartitionResponse::default()
                            .with_partition_index(index)
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_error_code(ResponseError::NotLeaderOrFollower.code()),
                    }
                }
                (placement, _) => answer_placed(broker, index, placement, ts).await,
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// One partition's answer, on the core that owns it.
pub async fn partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    answer_placed(broker, index, broker.place(topic, index), timestamp).await
}

/// [`partition`] of a partition placed already.
async fn answer_placed(
    broker: &Broker,
    index: i32,
    placement: Placement,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let r = ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_timestamp(-1);
    match placement.owned() {
        Ok(Local { topic, id }) => match lookup(broker, id, timestamp).await {
            Ok((offset, ts)) => r.with_offset(offset).with_timestamp(ts),
            Err(e) => {
                let topic = topic.name.as_str();
                tracing::warn!(topic, "list offsets failed: {e}");
                r.with_error_code(ResponseError::KafkaStorageError.code())
            }
        },
        Err(e) => r.with_error_code(e.code()),
    }
}

/// (offset, timestamp) for a ListOffsets timestamp argument.
async fn lookup(broker: &Broker, id: u32, timestamp: i64) -> Result<(i64, i64)> {
    let log = &broker.log;
    match timestamp {
        -1 => Ok((log.high_watermark(id)? as i64, -1)),
        -2 => Ok((log.log_start_offset(id)? as i64, -1)),
        ts => {
            let hw = log.high_watermark(id)?;
            let mut next = log.log_start_offset(id)?;
            while next < hw {
                let entries = log.read(id, next, SEARCH_READ_BYTES).await?;
                for e in &entries {
                    if e.timestamp_ms >= ts {
                        return Ok((e.base_offset as i64, e.timestamp_ms));
                    }
                }
                match entries.last() {
                    Some(e) => next = e.end_offset(),
                    None => break,
                }
            }
            Ok((-1, -1))
        }
    }
}
