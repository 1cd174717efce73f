//! Produce: each partition's records (one or more v2 batches) are checked whole, then
//! appended as one log entry, so a partition's part of a request lands entirely or not
//! at all. The partitions of one request are appended concurrently and so share a
//! group commit. The response waits for durability per the log's policy (acks 1 and
//! all are the same on one machine: the core that owns the partition is the only
//! replica); acks=0 gets no response.

use super::batch::{self, BatchError};
use super::idempotence::{BatchId, Verdict};
use super::{code, forward, Broker, Placement};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;
use tidewater_io::LogError;

/// What the checks found in a partition's records.
struct Checked {
    count: u32,
    max_ts: i64,
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
}

/// Checks every batch of a partition's records.
fn check_all(records: &[u8]) -> Result<Checked, (i16, String)> {
    let mut at = 0;
    let mut c = Checked {
        count: 0,
        max_ts: i64::MIN,
        producer_id: -1,
        epoch: -1,
        first_seq: -1,
    };
    while at < records.len() {
        match batch::check(&records[at..]) {
            Ok(info) => {
                if at == 0 {
                    (c.producer_id, c.epoch, c.first_seq) =
                        (info.producer_id, info.producer_epoch, info.base_sequence);
                }
                c.count = c.count.checked_add(info.record_count).ok_or((
                    code::INVALID_RECORD,
                    "too many records in one request".to_string(),
                ))?;
                c.max_ts = c.max_ts.max(info.max_timestamp_ms);
                at += info.len;
            }
            Err(BatchError::Corrupt(why)) => return Err((code::CORRUPT_MESSAGE, why)),
            Err(BatchError::OldFormat(m)) => {
                return Err((
                    code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
                    format!("record batch magic {m}: only magic 2 is accepted"),
                ))
            }
        }
    }
    if c.count == 0 {
        return Err((
            code::INVALID_REQUEST,
            "no record batch in the partition data".into(),
        ));
    }
    Ok(c)
}

fn error_code_of(e: &LogError) -> i16 {
    match e {
        LogError::BatchTooLarge { .. } => code::MESSAGE_TOO_LARGE,
        LogError::Shared(inner) => error_code_of(inner),
        _ => code::KAFKA_STORAGE_ERROR,
    }
}

pub async fn handle(broker: &Rc<Broker>, req: ProduceRequest) -> ProduceResponse {
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        // Every partition's part runs at once (here or on its owner), so they share
        // group commits; the answers are collected in request order.
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let records: Bytes = p.records.unwrap_or_default();
            let (b, name, index) = (broker.clone(), name.clone(), p.index);
            parts.push(match broker.place(&name, index) {
                Placement::Elsewhere(owner) if broker.forwarder().is_some() => {
                    broker.metrics.forwarded();
                    glommio::spawn_local(async move {
                        let req = forward::Request::Produce {
                            topic: name,
                            index,
                            records,
                        };
                        match b.forwarder().expect("checked").call(owner, req).await {
                            Some(forward::Reply::Produce(r)) => r,
                            _ => failed(
                                index,
                                code::NOT_LEADER_OR_FOLLOWER,
                                "the owning core is not answering",
                            ),
                        }
                    })
                }
                _ => {
                    glommio::spawn_local(async move { partition(&b, &name, index, records).await })
                }
            });
        }
        let mut done = Vec::with_capacity(parts.len());
        for part in parts {
            done.push(part.await);
        }
        done.sort_by_key(|r| r.index);
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(done),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

fn failed(index: i32, code: i16, why: &str) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(why.to_string())))
}

/// One partition's records on the core that owns it: checked whole, checked for a
/// retried idempotent batch, appended as one log entry, answered once durable.
pub async fn partition(
    broker: &Broker,
    name: &str,
    index: i32,
    records: Bytes,
) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1);
    let id = match broker.place(name, index).owned() {
        Ok(id) => id,
        Err(code) => return r.with_error_code(code),
    };
    let c = match check_all(&records) {
        Ok(v) => v,
        Err((code, why)) => {
            tracing::info!(topic = %name, partition = index, "produce refused: {why}");
            return r
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(why)));
        }
    };
    let batch_id = BatchId {
        pid: c.producer_id,
        epoch: c.epoch,
        partition: id,
        first: c.first_seq,
        last: c.first_seq.wrapping_add(c.count as i32 - 1),
    };
    let verdict = broker.producers.borrow_mut().check(&batch_id);
    match verdict {
        Verdict::Append => {}
        Verdict::Duplicate(offset) => {
            tracing::debug!(topic = %name, partition = index, offset, "duplicate batch answered, not appended");
            return r.with_base_offset(offset as i64);
        }
        Verdict::Refuse(code, why) => {
            tracing::info!(topic = %name, partition = index, "produce refused: {why}");
            return r
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(why)));
        }
    }
    let started = std::time::Instant::now();
    match broker.log.append(id, &records, c.count, c.max_ts).await {
        Ok(a) => {
            broker
                .metrics
                .produced(name, u64::from(c.count), records.len() as u64);
            broker
                .metrics
                .append_seconds
                .observe(started.elapsed().as_secs_f64());
            broker
                .producers
                .borrow_mut()
                .appended(&batch_id, a.base_offset);
            let start = broker.log.log_start_offset(id).unwrap_or(0);
            r.with_base_offset(a.base_offset as i64)
                .with_log_start_offset(start as i64)
        }
        Err(e) => {
            tracing::warn!(topic = %name, partition = index, "append failed: {e}");
            r.with_error_code(error_code_of(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
        }
    }
}
