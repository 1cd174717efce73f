//! Produce: each partition's records (one or more v2 batches) are checked whole, then
//! appended as one log entry, so a partition's part of a request lands entirely or not
//! at all. A request is handled in two steps: [`begin`] reserves every local part's
//! offsets in request order (and sends the parts other cores own to them), and the
//! future it returns waits for durability. The connection begins the next request
//! before the last is durable, so the requests of one connection, like the
//! partitions of one request, share group commits and keep their order. The response
//! waits for durability per the log's policy (acks 1 and all are the same on one
//! machine: the core that owns the partition is the only replica); acks=0 gets no
//! response.

use crate::batch;
use crate::broker::{Broker, Local, Placement, TopicPlacement, APPEND_FAILURE_LOG_EVERY};
use crate::error::KafkaError;
use crate::idempotence::{BatchId, Verdict};
use crate::remote::{Reply, Request};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
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
fn check_all(records: &[u8]) -> Result<Checked, KafkaError> {
    let mut at = 0;
    let mut c = Checked {
        count: 0,
        max_ts: i64::MIN,
        producer_id: -1,
        epoch: -1,
        first_seq: -1,
    };
    while at < records.len() {
        let info = batch::check(&records[at..]).map_err(KafkaError::from)?;
        if at == 0 {
            (c.producer_id, c.epoch, c.first_seq) =
                (info.producer_id, info.producer_epoch, info.base_sequence);
        }
        c.count = c.count.checked_add(info.record_count).ok_or_else(|| {
            KafkaError::new(
                ResponseError::InvalidRecord,
                "too many records in one request",
            )
        })?;
        c.max_ts = c.max_ts.max(info.max_timestamp_ms);
        at += info.len;
    }
    if c.count == 0 {
        return Err(KafkaError::new(
            ResponseError::InvalidRequest,
            "no record batch in the partition data",
        ));
    }
    Ok(c)
}

/// One partition's part of a request on its way.
enum Part {
    /// Answered already (refused, or a retry of a durable batch).
    Done(PartitionProduceResponse),
    /// Reserved here: waits for durability.
    Local(Appending),
    /// Sent to the core that owns it.
    Forwarded(glommio::Task<PartitionProduceResponse>),
}

/// Begins a produce request: every part this core owns gets its offsets, in request
/// order, before this returns (waiting for room in the log if it is full); the parts
/// other cores own are sent to them. The returned future completes with the
/// response once every part is durable or refused.
pub async fn begin(
    broker: &Rc<Broker>,
    req: ProduceRequest,
) -> impl std::future::Future<Output = ProduceResponse> + 'static {
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        // One look-up per topic; its partitions are placed by index.
        let placed = broker.topic(topic.name.0.as_str());
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let records: Bytes = p.records.unwrap_or_default();
            let placement = placed
                .as_ref()
                .map_or(Placement::Unknown, |t| t.place(p.index));
            parts.push(match placement {
                Placement::Elsewhere(owner) if broker.forwarder().is_some() => {
                    forward(broker, owner, topic.name.0.as_str(), p.index, records)
                }
                placement => match reserve(broker, p.index, placement, records).await {
                    Ok(local) => Part::Local(local),
                    Err(answer) => Part::Done(answer),
                },
            });
        }
        topics.push((topic.name, parts));
    }
    let broker = broker.clone();
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let mut done = Vec::with_capacity(parts.len());
            for part in parts {
                done.push(match part {
                    Part::Done(r) => r,
                    Part::Local(local) => local.finish(&broker).await,
                    Part::Forwarded(task) => task.await,
                });
            }
            done.sort_by_key(|r| r.index);
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(done),
            );
        }
        ProduceResponse::default().with_responses(responses)
    }
}

/// Sends a partition's part to the core that owns it (single-port mode).
fn forward(broker: &Rc<Broker>, owner: u32, topic: &str, index: i32, records: Bytes) -> Part {
    broker.stats.forwarded();
    let b = broker.clone();
    let req = Request::Produce {
        topic: topic.to_string(),
        index,
        records,
    };
    Part::Forwarded(glommio::spawn_local(async move {
        let reply = match b.forwarder() {
            Some(f) => f.call(owner, req).await,
            None => None,
        };
        match reply {
            Some(Reply::Produce(r)) => r,
            _ => failed(
                index,
                &KafkaError::new(
                    ResponseError::NotLeaderOrFollower,
                    "the owning core is not answering",
                ),
            ),
        }
    }))
}

/// The answer to a request refused whole: every partition gets `e`.
pub fn refuse_all(req: &ProduceRequest, e: &KafkaError) -> ProduceResponse {
    tracing::info!(code = e.code(), "produce refused: {e}");
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                    t.partition_data
                        .iter()
                        .map(|p| failed(p.index, e))
                        .collect(),
                )
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

/// A partition's answer before anything is known: no offset, no append time.
fn answer(index: i32) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
}

/// A partition's answer when its part is refused or failed: the code, and the
/// message when the error has one.
fn failed(index: i32, e: &KafkaError) -> PartitionProduceResponse {
    answer(index)
        .with_error_code(e.code())
        .with_error_message(e.message())
}

/// One partition's records on the core that owns it: checked whole, checked for a
/// retried idempotent batch, appended as one log entry, answered once durable.
pub async fn partition(
    broker: &Broker,
    name: &str,
    index: i32,
    records: Bytes,
) -> PartitionProduceResponse {
    match reserve(broker, index, broker.place(name, index), records).await {
        Ok(local) => local.finish(broker).await,
        Err(answer) => answer,
    }
}

/// A partition's part with its offsets, on its way to the device.
struct Appending {
    log: tidewater_io::Reserved,
    topic: Rc<TopicPlacement>,
    index: i32,
    id: u32,
    batch_id: BatchId,
    count: u32,
    bytes: usize,
    started: std::time::Instant,
}

/// Checks one partition's records (`index`, placed already) and reserves their
/// offsets; `Err` is the answer when nothing is to be appended (not here, refused,
/// or a retry of a durable batch).
async fn reserve(
    broker: &Broker,
    index: i32,
    placement: Placement,
    records: Bytes,
) -> Result<Appending, PartitionProduceResponse> {
    let r = answer(index);
    let Local { topic, id } = placement.owned().map_err(|e| failed(index, &e))?;
    let name = topic.name.as_str();
    let max = topic.max_message_bytes.get();
    if records.len() > max {
        let e = KafkaError::new(
            ResponseError::MessageTooLarge,
            format!(
                "a batch of {} bytes; topic {name} takes at most {max} (max.message.bytes)",
                records.len()
            ),
        );
        tracing::info!(topic = %name, partition = index, "produce refused: {e}");
        return Err(failed(index, &e));
    }
    let c = match check_all(&records) {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(topic = %name, partition = index, "produce refused: {e}");
            return Err(failed(index, &e));
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
            return Err(r.with_base_offset(offset as i64));
        }
        Verdict::InFlight => {
            let why = "a retry of a batch still being written: retry";
            tracing::debug!(topic = %name, partition = index, "{why}");
            return Err(failed(
                index,
                &KafkaError::new(ResponseError::RequestTimedOut, why),
            ));
        }
        Verdict::Refuse(e) => {
            tracing::info!(topic = %name, partition = index, "produce refused: {e}");
            return Err(failed(index, &e));
        }
    }
    let started = std::time::Instant::now();
    let bytes = records.len();
    match broker.log.reserve(id, records, c.count, c.max_ts).await {
        Ok(log) => {
            broker
                .producers
                .borrow_mut()
                .reserved(&batch_id, log.base_offset());
            Ok(Appending {
                log,
                topic,
                index,
                id,
                batch_id,
                count: c.count,
                bytes,
                started,
            })
        }
        Err(e) => Err(append_failed(broker, name, index, &e)),
    }
}

/// The answer for an append the log refused; logged at most once per
/// `APPEND_FAILURE_LOG_EVERY` on a core, with how many went unlogged before it.
fn append_failed(
    broker: &Broker,
    name: &str,
    index: i32,
    e: &LogError,
) -> PartitionProduceResponse {
    let now = std::time::Instant::now();
    if let Some(more) = broker.append_failures.admit(now, APPEND_FAILURE_LOG_EVERY) {
        tracing::warn!(topic = %name, partition = index, unlogged_before = more,
            "append failed: {e} (further failures on this core are logged at most every {:?})",
            APPEND_FAILURE_LOG_EVERY);
    }
    failed(index, &KafkaError::from(e))
}

impl Appending {
    /// Waits for durability and answers.
    async fn finish(self, broker: &Broker) -> PartitionProduceResponse {
        let r = answer(self.index);
        match self.log.durable().await {
            Ok(a) => {
                self.topic
                    .stats
                    .produced(u64::from(self.count), self.bytes as u64);
                broker
                    .stats
                    .append_seconds
                    .observe(self.started.elapsed().as_secs_f64());
                broker.producers.borrow_mut().durable(&self.batch_id);
                let start = broker.log.log_start_offset(self.id).unwrap_or(0);
                r.with_base_offset(a.base_offset as i64)
                    .with_log_start_offset(start as i64)
            }
            Err(e) => {
                broker.producers.borrow_mut().failed(&self.batch_id);
                append_failed(broker, &self.topic.name, self.index, &e)
            }
        }
    }
}
