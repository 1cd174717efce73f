//! Fetch: batches as stored, with their base offsets written in, from the ledger and
//! its in-memory tail. Long poll: with less than `min_bytes` available the request
//! sleeps until the core acknowledges new data (or `max_wait_ms`, capped by
//! `fetch_wait_ms_max`, runs out) and reads again.

use super::{batch, code, Broker};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use std::time::{Duration, Instant};
use tidewater_io::LogError;

pub async fn handle(broker: &Broker, req: &FetchRequest) -> FetchResponse {
    let wait =
        Duration::from_millis((req.max_wait_ms.max(0) as u64).min(broker.limits.fetch_wait_ms_max));
    let start = Instant::now();
    loop {
        let epoch = broker.log.append_epoch();
        let (resp, bytes) = read_once(broker, req).await;
        let min = req.min_bytes.max(0) as usize;
        let left = wait.saturating_sub(start.elapsed());
        if bytes >= min.max(1) || left.is_zero() || has_error(&resp) {
            return resp;
        }
        // Sleep until this core acknowledges new data, or the wait is over.
        futures_lite::future::or(
            broker.log.wait_for_append(epoch),
            glommio::timer::sleep(left),
        )
        .await;
    }
}

fn has_error(r: &FetchResponse) -> bool {
    r.responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.error_code != code::NONE))
}

/// Serves every partition once; returns the response and the record bytes in it.
async fn read_once(broker: &Broker, req: &FetchRequest) -> (FetchResponse, usize) {
    let mut budget = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = PartitionData::default()
                .with_partition_index(p.partition)
                .with_last_stable_offset(-1)
                .with_high_watermark(-1)
                .with_log_start_offset(-1);
            let id = match broker.place(&t.topic.0, p.partition).owned() {
                Ok(id) => id,
                Err(code) => {
                    partitions.push(r.with_error_code(code));
                    continue;
                }
            };
            let hw = broker.log.high_watermark(id).unwrap_or(0) as i64;
            let start = broker.log.log_start_offset(id).unwrap_or(0) as i64;
            r = r
                .with_high_watermark(hw)
                .with_last_stable_offset(hw)
                .with_log_start_offset(start);
            let max = (p.partition_max_bytes.max(0) as usize).min(budget);
            if max == 0 || p.fetch_offset == hw {
                partitions.push(r.with_records(Some(Bytes::new())));
                continue;
            }
            if p.fetch_offset < 0 {
                partitions.push(r.with_error_code(code::OFFSET_OUT_OF_RANGE));
                continue;
            }
            match broker.log.read(id, p.fetch_offset as u64, max).await {
                Ok(entries) => {
                    let mut out = BytesMut::new();
                    let mut records = 0u64;
                    for e in entries {
                        if !out.is_empty() && out.len() + e.payload.len() > max {
                            break;
                        }
                        records += u64::from(e.record_count);
                        let at = out.len();
                        out.extend_from_slice(&e.payload);
                        set_base_offsets(&mut out[at..], e.base_offset);
                    }
                    broker.metrics.fetched(&t.topic.0, records);
                    total += out.len();
                    budget = budget.saturating_sub(out.len());
                    partitions.push(r.with_records(Some(out.freeze())));
                }
                Err(LogError::OffsetOutOfRange { .. }) => {
                    partitions.push(r.with_error_code(code::OFFSET_OUT_OF_RANGE));
                }
                Err(e) => {
                    tracing::warn!(topic = %t.topic.0.as_str(), partition = p.partition, "fetch failed: {e}");
                    partitions.push(r.with_error_code(code::KAFKA_STORAGE_ERROR));
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(topics), total)
}

/// A log entry holds one or more batches with consecutive offsets from `base`.
fn set_base_offsets(entry: &mut [u8], base: u64) {
    let mut at = 0;
    let mut next = base;
    while at + batch::HEADER_LEN <= entry.len() {
        let Some((len, count)) = batch::peek(&entry[at..]) else {
            break;
        };
        batch::set_base_offset(&mut entry[at..], next);
        next += u64::from(count);
        at += len;
    }
}
