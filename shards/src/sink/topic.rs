//! Writing records to a partition of this core's log as Kafka record batches, for
//! the topic sink and the side outputs (`<job>.dlq`, `<job>.late`). Whatever is
//! written here any Kafka client can read.

use crate::pipeline::PipelineError;
use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tidewater_io::ShardLog;

/// Largest batch one append carries (well under the log's `batch_bytes_max`).
pub const BATCH_BYTES: usize = 256 << 10;

/// One record to write.
#[derive(Clone, Debug)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub timestamp_ms: i64,
    pub headers: Vec<(&'static str, Bytes)>,
}

impl OutRecord {
    fn size(&self) -> usize {
        self.value.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + 24
    }
}

/// Encodes `records` into batches of about [`BATCH_BYTES`] and appends them to
/// `partition` in order; completes when all are durable per the log's policy.
pub async fn append(
    log: &ShardLog,
    partition: u32,
    records: &[OutRecord],
) -> Result<(), PipelineError> {
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len() && (end == start || bytes + records[end].size() <= BATCH_BYTES) {
            bytes += records[end].size();
            end += 1;
        }
        let chunk = &records[start..end];
        let batch = encode(chunk).map_err(PipelineError::Encode)?;
        let max_ts = chunk.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
        log.append(partition, &batch, chunk.len() as u32, max_ts)
            .await
            .map_err(PipelineError::log(format!(
                "appending to log partition {partition}"
            )))?;
        start = end;
    }
    Ok(())
}

fn encode(records: &[OutRecord]) -> Result<Vec<u8>, String> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Constant offset − sequence keeps the records in one batch (base
            // sequence −1: not idempotent).
            sequence: i as i32 - 1,
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: Some(r.value.clone()),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_static_str(k), Some(v.clone())))
                .collect(),
        })
        .collect();
    let mut out = BytesMut::with_capacity(records.iter().map(OutRecord::size).sum::<usize>() + 128);
    RecordBatchEncoder::encode(
        &mut out,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("cannot encode a record batch: {e}"))?;
    Ok(out.to_vec())
}
