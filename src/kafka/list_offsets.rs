//! ListOffsets: earliest (-2), latest (-1), and by timestamp: the first batch whose
//! max timestamp reaches the one asked for (offset -1 when none does).

use super::{code, Broker};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use tidewater_io::Result;

/// Bytes read per step of a timestamp search.
const SEARCH_READ_BYTES: usize = 1 << 20;

pub async fn handle(broker: &Broker, req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1);
            partitions.push(match broker.place(&t.name.0, p.partition_index).owned() {
                Ok(id) => match lookup(broker, id, p.timestamp).await {
                    Ok((offset, ts)) => r.with_offset(offset).with_timestamp(ts),
                    Err(e) => {
                        tracing::warn!(topic = %t.name.0.as_str(), "list offsets failed: {e}");
                        r.with_error_code(code::KAFKA_STORAGE_ERROR)
                    }
                },
                Err(code) => r.with_error_code(code),
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
