//! Produce: each partition's records (one or more v2 batches) are checked whole, then
//! appended as one log entry, so a partition's part of a request lands entirely or not
//! at all. The partitions of one request are appended concurrently and so share a
//! group commit. The response waits for durability per the log's policy (acks 1 and
//! all are the same on one machine: the core that owns the partition is the only
//! replica); acks=0 gets no response.

use super::batch::{self, BatchError};
use super::idempotence::{BatchId, Verdict};
use super::{code, Broker};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
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

pub async fn handle(broker: &Broker, req: ProduceRequest) -> ProduceResponse {
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut pending = Vec::new();
        let mut done = Vec::new();
        for p in topic.partition_data {
            let r = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1);
            let id = match broker.place(&name, p.index).owned() {
                Ok(id) => id,
                Err(code) => {
                    done.push(r.with_error_code(code));
                    continue;
                }
            };
            let records: Bytes = p.records.unwrap_or_default();
            let c = match check_all(&records) {
                Ok(v) => v,
                Err((code, why)) => {
                    tracing::info!(topic = %name, partition = p.index, "produce refused: {why}");
                    done.push(
                        r.with_error_code(code)
                            .with_error_message(Some(StrBytes::from_string(why))),
                    );
                    continue;
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
                    tracing::debug!(topic = %name, partition = p.index, offset, "duplicate batch answered, not appended");
                    done.push(r.with_base_offset(offset as i64));
                    continue;
                }
                Verdict::Refuse(code, why) => {
                    tracing::info!(topic = %name, partition = p.index, "produce refused: {why}");
                    done.push(
                        r.with_error_code(code)
                            .with_error_message(Some(StrBytes::from_string(why))),
                    );
                    continue;
                }
            }
            let log = broker.log.clone();
            let (count, max_ts) = (c.count, c.max_ts);
            let bytes = records.len() as u64;
            let task = glommio::spawn_local(async move {
                let started = std::time::Instant::now();
                let res = log.append(id, &records, count, max_ts).await;
                (
                    res,
                    log.log_start_offset(id).unwrap_or(0),
                    started.elapsed(),
                    count,
                    bytes,
                )
            });
            pending.push((r, task, batch_id));
        }
        for (r, task, batch_id) in pending {
            let (res, start, took, count, bytes) = task.await;
            done.push(match res {
                Ok(a) => {
                    broker.metrics.produced(&name, u64::from(count), bytes);
                    broker.metrics.append_seconds.observe(took.as_secs_f64());
                    broker
                        .producers
                        .borrow_mut()
                        .appended(&batch_id, a.base_offset);
                    r.with_base_offset(a.base_offset as i64)
                        .with_log_start_offset(start as i64)
                }
                Err(e) => {
                    tracing::warn!(topic = %name, partition = r.index, "append failed: {e}");
                    r.with_error_code(error_code_of(&e))
                        .with_error_message(Some(StrBytes::from_string(e.to_string())))
                }
            });
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
