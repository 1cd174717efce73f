//! Fetch: batches as stored, with their base offsets written in, from the ledger and
//! its in-memory tail. Long poll: with less than `min_bytes` available the request
//! sleeps until the core acknowledges new data (or `max_wait_ms`, capped by
//! `fetch_wait_ms_max`, runs out) and reads again.

use crate::batch;
use crate::broker::{Broker, Local, Placement};
use crate::budget::Budget;
use crate::error::KafkaError;
use crate::remote::{PartitionRead, Reply, Request};
use bytes::BytesMut;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tidewater_io::LogError;

/// Answers a Fetch. Each read takes the most its answer may hold (the client's
/// max_bytes, at most `fetch_bytes_max`) from the request memory, and keeps what the
/// answer holds until it is written; nothing is held while the long poll waits.
pub async fn handle(broker: &Rc<Broker>, req: &FetchRequest, budget: &mut Budget) -> FetchResponse {
    let wait =
        Duration::from_millis((req.max_wait_ms.max(0) as u64).min(broker.limits.fetch_wait_ms_max));
    let cap = answer_bytes_max(req.max_bytes, broker.limits.fetch_bytes_max);
    let held = budget.bytes();
    let start = Instant::now();
    loop {
        let epoch = broker.log.append_epoch();
        // The budget is never closed; were it, the read goes on unbudgeted.
        let _ = budget.grow(cap).await;
        let (resp, bytes, remote) = read_once(broker, req, cap).await;
        budget.shrink_to(held + bytes);
        let min = req.min_bytes.max(0) as usize;
        let left = wait.saturating_sub(start.elapsed());
        if bytes >= min.max(1) || left.is_zero() || has_error(&resp) {
            return resp;
        }
        budget.shrink_to(held);
        // Sleep until this core acknowledges new data, or the wait is over; other
        // cores' partitions (single-port mode) are asked again every 10 ms.
        let nap = if remote { left.min(REMOTE_POLL) } else { left };
        futures_lite::future::or(
            broker.log.wait_for_append(epoch),
            glommio::timer::sleep(nap),
        )
        .await;
    }
}

/// The most one answer may hold: the client's max_bytes (0 or less: no wish), at
/// most `limit`. A partition's first batch is sent whole even when larger (as Kafka
/// does, so a consumer always makes progress).
fn answer_bytes_max(max_bytes: i32, limit: usize) -> usize {
    usize::try_from(max_bytes)
        .ok()
        .filter(|&m| m > 0)
        .map_or(limit, |m| m.min(limit))
}

/// How often a long poll asks other cores again for their partitions.
const REMOTE_POLL: Duration = Duration::from_millis(10);

fn has_error(r: &FetchResponse) -> bool {
    r.responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

/// Reads `index` of `topic` from `offset`, about `max` bytes (at least one batch),
/// on the core that owns it.
pub async fn read_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    offset: i64,
    max: usize,
) -> PartitionRead {
    read_placed(broker, index, broker.place(topic, index), offset, max).await
}

/// [`read_partition`] of a partition placed already.
async fn read_placed(
    broker: &Broker,
    index: i32,
    placement: Placement,
    offset: i64,
    max: usize,
) -> PartitionRead {
    let mut r = PartitionRead {
        high_watermark: -1,
        log_start: -1,
        ..Default::default()
    };
    let Local { topic, id } = match placement.owned() {
        Ok(local) => local,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let hw = broker.log.high_watermark(id).unwrap_or(0) as i64;
    r.high_watermark = hw;
    r.log_start = broker.log.log_start_offset(id).unwrap_or(0) as i64;
    if max == 0 || offset == hw {
        return r;
    }
    if offset < 0 {
        r.error = Some(KafkaError::bare(ResponseError::OffsetOutOfRange));
        return r;
    }
    match broker.log.read(id, offset as u64, max).await {
        Ok(entries) => {
            let mut out = BytesMut::new();
            let mut records = 0u64;
            for e in entries {
                if !out.is_empty() && out.len() + e.payload.len() > max {
                    break;
                }
                records += u64::from(e.record_count);
                let at = out.len();
                if e.payload.is_empty() {
                    // Offsets lost to journal damage: a control batch covers them, so
                    // every consumer steps over them as over a transaction marker.
                    out.extend_from_slice(&batch::lost_marker(e.record_count));
                } else {
                    out.extend_from_slice(&e.payload);
                }
                set_base_offsets(&mut out[at..], e.base_offset);
            }
            topic.stats.fetched(records);
            r.records = out.freeze();
        }
        Err(LogError::OffsetOutOfRange { .. }) => {
            r.error = Some(KafkaError::bare(ResponseError::OffsetOutOfRange));
        }
        Err(e) => {
            let topic = topic.name.as_str();
            tracing::warn!(topic, partition = index, "fetch failed: {e}");
            r.error = Some(KafkaError::storage(e.to_string()));
        }
    }
    r
}

/// Serves every partition once; returns the response, the record bytes in it, and
/// whether another core was asked.
async fn read_once(
    broker: &Broker,
    req: &FetchRequest,
    cap: usize,
) -> (FetchResponse, usize, bool) {
    let mut budget = cap;
    let mut total = 0usize;
    let mut remote = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        // One look-up per topic; its partitions are placed by index.
        let placed = broker.topic(t.topic.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let max = (p.partition_max_bytes.max(0) as usize).min(budget);
            let placement = placed
                .as_ref()
                .map_or(Placement::Unknown, |t| t.place(p.partition));
            let read = match (placement, broker.forwarder()) {
                (Placement::Elsewhere(owner), Some(f)) => {
                    remote = true;
                    broker.stats.forwarded();
                    let req = Request::Fetch {
                        topic: t.topic.0.to_string(),
                        index: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: max,
                    };
                    match f.call(owner, req).await {
                        Some(Reply::Fetch(r)) => r,
                        _ => PartitionRead {
                            error: Some(KafkaError::bare(ResponseError::NotLeaderOrFollower)),
                            high_watermark: -1,
                            log_start: -1,
                            ..Default::default()
                        },
                    }
                }
                (placement, _) => {
                    read_placed(broker, p.partition, placement, p.fetch_offset, max).await
                }
            };
            total += read.records.len();
            budget = budget.saturating_sub(read.records.len());
            partitions.push(
                PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_error_code(read.error.as_ref().map_or(0, KafkaError::code))
                    .with_high_watermark(read.high_watermark)
                    .with_last_stable_offset(read.high_watermark)
                    .with_log_start_offset(read.log_start)
                    .with_records(Some(read.records)),
            );
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        remote,
    )
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
