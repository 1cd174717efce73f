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

/// Batches one [`append_all`] keeps reserved in the journal ahead of the one it
/// waits for: enough to fill a journal write (2 MiB by default) so a fired
/// window's rows go out in a few group commits, few enough that producers' appends
/// queue behind at most that much of it.
const BATCHES_IN_FLIGHT: usize = 8;

/// Encodes `records` into batches of about [`BATCH_BYTES`] and appends them to
/// `partition` in order; completes when all are durable per the log's policy.
pub async fn append(
    log: &ShardLog,
    partition: u32,
    records: &[OutRecord],
) -> Result<(), PipelineError> {
    append_all(log, &[(partition, records)]).await
}

/// [`append`] for several partitions at once: the batches of every partition are
/// reserved in the journal one after another with up to [`BATCHES_IN_FLIGHT`]
/// waiting to be durable, so they share group commits instead of each waiting
/// for its own. Yields at the executor's preemption points between batches.
///
/// On an error nothing more is reserved, and it returns once every batch already
/// reserved is durable or failed: any of them may be in the log (a full device
/// fails the pending write, and a batch reserved after it may still land), so a
/// caller that retries writes them again, as it would after a failure half-way
/// through appending one batch after another.
pub async fn append_all(
    log: &ShardLog,
    parts: &[(u32, &[OutRecord])],
) -> Result<(), PipelineError> {
    let mut in_flight = std::collections::VecDeque::with_capacity(BATCHES_IN_FLIGHT);
    let res = reserve_all(log, parts, &mut in_flight).await;
    let mut first_error = res.err();
    for (r, p) in in_flight {
        if let Err(e) = r.durable().await {
            first_error.get_or_insert(failed(p, e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Reserves the batches of [`append_all`], waiting for the oldest in flight
/// whenever [`BATCHES_IN_FLIGHT`] are; stops at the first error.
async fn reserve_all(
    log: &ShardLog,
    parts: &[(u32, &[OutRecord])],
    in_flight: &mut std::collections::VecDeque<(tidewater_io::Reserved, u32)>,
) -> Result<(), PipelineError> {
    for &(partition, records) in parts {
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && (end == start || bytes + records[end].size() <= BATCH_BYTES)
            {
                bytes += records[end].size();
                end += 1;
            }
            let chunk = &records[start..end];
            let batch = encode(chunk).map_err(PipelineError::Encode)?;
            let max_ts = chunk.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
            let reserved = log
                .reserve(partition, batch, chunk.len() as u32, max_ts)
                .await
                .map_err(|e| failed(partition, e))?;
            in_flight.push_back((reserved, partition));
            if in_flight.len() >= BATCHES_IN_FLIGHT {
                if let Some((r, p)) = in_flight.pop_front() {
                    r.durable().await.map_err(|e| failed(p, e))?;
                }
            }
            glommio::yield_if_needed().await;
            start = end;
        }
    }
    Ok(())
}

fn failed(partition: u32, source: tidewater_io::LogError) -> PipelineError {
    PipelineError::Log {
        what: format!("appending to log partition {partition}"),
        source,
    }
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
