//! `tidewater loadgen`: the reference IoT events (Avro, ~300 bytes, key = device_id)
//! produced over the Kafka protocol to any broker, at a set rate or as fast as it goes.
//!
//! Each connection is one pinned thread talking to one broker (the leader of the
//! partitions it produces to, found with Metadata), keeping up to `max_in_flight`
//! Produce requests outstanding. A device always lands on the partition Kafka's default
//! partitioner gives its key, so keyed state downstream sees it on one core. Ack latency
//! is measured per request, from send to response, and applies to every event in it.
//! Reproducible: the same `--seed` gives the same events in the same order.

pub mod batch;
pub mod consume;
pub mod event;
pub mod sasl;
pub mod tls;
pub use tidewater_shards::partitioner;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PRODUCE_VERSION: i16 = 7;
const METADATA_VERSION: i16 = 1;

/// What to generate and where to send it.
#[derive(Clone, Debug)]
pub struct Options {
    pub brokers: String,
    pub topic: String,
    pub devices: u32,
    /// Events per second over all connections; `None`: as fast as possible.
    pub rate: Option<u64>,
    pub duration: Option<Duration>,
    pub events: Option<u64>,
    pub connections: u32,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    /// Events per partition per request.
    pub batch_events: u32,
    pub compression: Compression,
    /// Fraction of events whose event time is set back by up to `skew_ms`.
    pub out_of_order: f64,
    pub skew_ms: u64,
    /// Event time runs this many times faster than the wall clock from the start of
    /// the run (60: a minute of event time per second), so windows fire quickly.
    pub time_scale: f64,
    /// Count acknowledged events per event-time window of this size (0: do not),
    /// so a windowed job's output can be checked against what was acknowledged.
    pub window_ms: i64,
    pub seed: u64,
    pub max_in_flight: usize,
    /// Connect over TLS (an `SSL` listener); None: plaintext.
    pub tls: Option<tls::Tls>,
    /// Authenticate each connection with SASL (a `SASL_*` listener).
    pub sasl: Option<sasl::Sasl>,
    /// Raised by the caller: the load stops as at the end of `duration`.
    pub stop: Option<Arc<AtomicBool>>,
    /// Show a live progress line.
    pub progress: bool,
}

/// The end-of-run report (also written as JSON).
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub acked: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub ack_latency_ms: (f64, f64, f64),
    pub errors: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    /// Acknowledged events per window start (with `window_ms`).
    pub acked_per_window: BTreeMap<i64, u64>,
    /// False when a request failed in part: then which events of it were stored is
    /// not known here, and `acked_per_window` leaves the whole request out.
    pub windows_exact: bool,
    /// The latest event time sent.
    pub max_event_ms: i64,
}

impl Report {
    pub fn to_json(&self) -> String {
        let errors: serde_json::Map<String, serde_json::Value> = self
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect();
        serde_json::json!({
            "sent": self.sent,
            "acked": self.acked,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
            "bytes_sent": self.bytes_sent,
            "ack_latency_ms": {
                "p50": self.ack_latency_ms.0,
                "p99": self.ack_latency_ms.1,
                "p999": self.ack_latency_ms.2,
            },
            "errors": errors,
        })
        .to_string()
    }
}

fn io_err(what: impl Into<String>) -> std::io::Error {
    std::io::Error::other(what.into())
}

/// Writes one request with its size prefix and header.
fn send<R: Encodable>(
    s: &mut impl Write,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> std::io::Result<usize> {
    send_in(
        s,
        &mut RequestBuffer::default(),
        api,
        version,
        correlation_id,
        body,
    )
}

/// [`send`], encoding into `buf` (kept by a connection across its requests).
fn send_in<R: Encodable>(
    s: &mut impl Write,
    buf: &mut RequestBuffer,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> std::io::Result<usize> {
    let frame = encode_request(buf, api, version, correlation_id, body)?;
    s.write_all(frame)?;
    s.flush()?;
    Ok(frame.len())
}

/// A buffer requests are encoded into, kept from one request to the next so a
/// connection's requests grow it once instead of each growing it from empty.
#[derive(Default)]
pub struct RequestBuffer(BytesMut);

/// Encodes one request, size prefix and header included, into `buf`.
fn encode_request<'b, R: Encodable>(
    buf: &'b mut RequestBuffer,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> std::io::Result<&'b [u8]> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("tidewater-loadgen")));
    let buf = &mut buf.0;
    buf.clear();
    buf.put_i32(0);
    header
        .encode(buf, api.request_header_version(version))
        .and_then(|_| body.encode(buf, version))
        .map_err(|e| io_err(format!("encoding {api:?}: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(&buf[..])
}

/// The produce request the generator sends (acks=all, one topic): `batches` are
/// (partition, record batch). Returns the bytes to write.
pub fn produce_request<'b>(
    buf: &'b mut RequestBuffer,
    topic: &str,
    batches: Vec<(i32, Bytes)>,
    correlation_id: i32,
) -> std::io::Result<&'b [u8]> {
    let req = produce_request_of(
        -1,
        TopicName(StrBytes::from_string(topic.to_string())),
        batches,
    );
    encode_request(buf, ApiKey::Produce, PRODUCE_VERSION, correlation_id, &req)
}

fn produce_request_of(acks: i16, topic: TopicName, batches: Vec<(i32, Bytes)>) -> ProduceRequest {
    let partition_data = batches
        .into_iter()
        .map(|(index, batch)| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(batch))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic)
            .with_partition_data(partition_data)])
}

/// Reads one response body (after its header).
fn recv(s: &mut impl Read, api: ApiKey, version: i16) -> std::io::Result<(i32, Bytes)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(4..=(256 << 20)).contains(&len) {
        return Err(io_err(format!("response size {len} out of range")));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
        .map_err(|e| io_err(format!("response header: {e}")))?;
    Ok((header.correlation_id, body))
}

/// A connection to `addr`: TLS, then SASL, when given.
fn open(
    addr: &str,
    (tls, sasl): (Option<&tls::Tls>, Option<&sasl::Sasl>),
) -> std::io::Result<tls::Conn> {
    let mut s = tls::connect(addr, tls)?;
    if let Some(sasl) = sasl {
        sasl::authenticate(&mut s, sasl)?;
    }
    Ok(s)
}

/// Partition leaders of `topic`: partition -> broker address.
fn discover(
    brokers: &str,
    topic_name: &str,
    security: (Option<&tls::Tls>, Option<&sasl::Sasl>),
) -> std::io::Result<Vec<String>> {
    let mut last = io_err("no broker given");
    for addr in brokers.split(',') {
        let mut s = match open(addr.trim(), security) {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let req = MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(
                Some(TopicName(StrBytes::from_string(topic_name.to_string()))),
            ),
        ]));
        send(&mut s, ApiKey::Metadata, METADATA_VERSION, 1, &req)?;
        let (_, mut body) = recv(&mut s, ApiKey::Metadata, METADATA_VERSION)?;
        let meta = MetadataResponse::decode(&mut body, METADATA_VERSION)
            .map_err(|e| io_err(format!("metadata: {e}")))?;
        let brokers: HashMap<i32, String> = meta
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let topic = meta
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic_name))
            .ok_or_else(|| io_err(format!("topic {topic_name} not in metadata")))?;
        if topic.error_code != 0 || topic.partitions.is_empty() {
            return Err(io_err(format!(
                "topic {}: error code {} ({} partitions)",
                topic_name,
                topic.error_code,
                topic.partitions.len()
            )));
        }
        let mut leaders = vec![String::new(); topic.partitions.len()];
        for p in &topic.partitions {
            let addr = brokers
                .get(&p.leader_id.0)
                .ok_or_else(|| io_err(format!("partition {} has no leader", p.partition_index)))?;
            leaders[p.partition_index as usize] = addr.clone();
        }
        return Ok(leaders);
    }
    Err(last)
}

/// Counters shared with the progress line.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    acked: AtomicU64,
}

/// What one connection measured.
/// A produce request on its way: correlation id, sent at, events, events per window.
type InFlight = (i32, Instant, u64, Vec<(i64, u64)>);

struct ConnResult {
    max_ts: i64,
    windows: BTreeMap<i64, u64>,
    windows_exact: bool,
    sent: u64,
    acked: u64,
    bytes: u64,
    latency_us: hdrhistogram::Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// One connection's plan: its broker and the devices whose partitions that broker leads.
struct Plan {
    addr: String,
    /// (partition, devices mapping to it)
    partitions: Vec<(u32, Vec<u32>)>,
}

fn plan(opts: &Options, leaders: &[String]) -> Vec<Plan> {
    let n = leaders.len() as u32;
    let mut by_partition: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    let mut key = Vec::with_capacity(16);
    for d in 0..opts.devices {
        event::device_key(d, &mut key);
        by_partition[partitioner::partition_for(&key, n) as usize].push(d);
    }
    let mut brokers: Vec<String> = leaders.to_vec();
    brokers.sort();
    brokers.dedup();
    let conns = (opts.connections as usize).max(brokers.len());
    let mut plans: Vec<Plan> = (0..conns)
        .map(|i| Plan {
            addr: brokers[i % brokers.len()].clone(),
            partitions: Vec::new(),
        })
        .collect();
    // Deal each broker's partitions over the connections to that broker.
    for (b, broker) in brokers.iter().enumerate() {
        let mine: Vec<usize> = (0..conns).filter(|i| i % brokers.len() == b).collect();
        let parts: Vec<u32> = (0..n).filter(|&p| &leaders[p as usize] == broker).collect();
        for (j, p) in parts.into_iter().enumerate() {
            let devices = std::mem::take(&mut by_partition[p as usize]);
            if !devices.is_empty() {
                plans[mine[j % mine.len()]].partitions.push((p, devices));
            }
        }
    }
    plans.retain(|p| !p.partitions.is_empty());
    plans
}

/// One plain record (no producer id, no headers) for `RecordBatchEncoder`.
pub fn record(key: &[u8], value: &[u8], timestamp_ms: i64, offset: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder starts a new batch whenever offset − sequence changes: keep it
        // constant (base sequence −1, no idempotence) so records share one batch.
        sequence: (offset as i32).wrapping_sub(1),
        timestamp: timestamp_ms,
        key: Some(Bytes::copy_from_slice(key)),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Default::default(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the load and returns the report.
pub fn run(opts: &Options) -> std::io::Result<Report> {
    let security = (opts.tls.as_ref(), opts.sasl.as_ref());
    let leaders = discover(&opts.brokers, &opts.topic, security)?;
    let plans = plan(opts, &leaders);
    if plans.is_empty() {
        return Err(io_err("no partition to produce to"));
    }
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let per_conn_rate = opts.rate.map(|r| (r / plans.len() as u64).max(1));
    let per_conn_events = opts.events.map(|e| e.div_ceil(plans.len() as u64));
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let (opts, live, stop) = (opts.clone(), live.clone(), stop.clone());
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        handles.push(std::thread::spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            connection(
                &opts,
                plan,
                i as u64,
                per_conn_rate,
                per_conn_events,
                &live,
                &stop,
            )
        }));
    }
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    });
    let mut last = (Instant::now(), 0u64);
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let stopped = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        if stopped || opts.duration.is_some_and(|d| start.elapsed() >= d) {
            stop.store(true, Ordering::SeqCst);
        }
        if let Some(b) = &bar {
            let acked = live.acked.load(Ordering::Relaxed);
            let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), acked);
            b.set_message(format!(
                "sent {} acked {} ({:.0} events/s)",
                live.sent.load(Ordering::Relaxed),
                acked,
                rate
            ));
            b.tick();
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut report = Report {
        seconds,
        windows_exact: true,
        ..Default::default()
    };
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| io_err(e.to_string()))?;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| io_err("a connection thread panicked"))??;
        report.sent += r.sent;
        report.acked += r.acked;
        report.bytes_sent += r.bytes;
        for (w, n) in r.windows {
            *report.acked_per_window.entry(w).or_default() += n;
        }
        report.windows_exact &= r.windows_exact;
        report.max_event_ms = report.max_event_ms.max(r.max_ts);
        let _ = hist.add(&r.latency_us);
        for (k, v) in r.errors {
            *report.errors.entry(k).or_default() += v;
        }
    }
    let counted = if opts.acks == 0 {
        report.sent
    } else {
        report.acked
    };
    report.events_per_sec = counted as f64 / seconds;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    report.ack_latency_ms = (ms(0.5), ms(0.99), ms(0.999));
    Ok(report)
}

/// One connection: builds requests of `batch_events` per partition, keeps up to
/// `max_in_flight` outstanding, paces to `rate`, stops at `events` or when told.
fn connection(
    opts: &Options,
    plan: Plan,
    conn_index: u64,
    rate: Option<u64>,
    events_max: Option<u64>,
    live: &Live,
    stop: &AtomicBool,
) -> std::io::Result<ConnResult> {
    let mut s = open(&plan.addr, (opts.tls.as_ref(), opts.sasl.as_ref()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ conn_index.wrapping_mul(0x9e37));
    let mut out = ConnResult {
        max_ts: i64::MIN,
        windows: BTreeMap::new(),
        windows_exact: true,
        sent: 0,
        acked: 0,
        bytes: 0,
        latency_us: hdrhistogram::Histogram::new(3).map_err(|e| io_err(e.to_string()))?,
        errors: BTreeMap::new(),
    };
    let mut cursors = vec![0usize; plan.partitions.len()];
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut req_windows: Vec<(i64, u64)> = Vec::new();
    // Uncompressed batches are written directly (see batch.rs); compressed ones go
    // through kafka-protocol's encoder.
    let plain = matches!(opts.compression, Compression::None);
    let mut writer = batch::BatchWriter::new(opts.batch_events as usize * 340 + 64);
    let mut request = RequestBuffer::default();
    let mut correlation = 0i32;
    let mut value = Vec::with_capacity(320);
    let mut key = Vec::with_capacity(16);
    let started = Instant::now();
    let origin_ms = now_ms();
    let topic = TopicName(StrBytes::from_string(opts.topic.clone()));
    let encode_options = RecordEncodeOptions {
        version: 2,
        compression: opts.compression,
    };
    loop {
        let done = stop.load(Ordering::Relaxed) || events_max.is_some_and(|m| out.sent >= m);
        if done {
            break;
        }
        if let Some(r) = rate {
            // Pace: the next request goes when the schedule reaches it.
            let due = Duration::from_secs_f64(out.sent as f64 / r as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                // Ahead of schedule: take the answers meanwhile, so that their
                // latency is not the time the generator waited to send.
                if in_flight.is_empty() {
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                } else {
                    receive_one(&mut s, &mut in_flight, &mut out, live)?;
                }
                continue;
            }
        }
        let mut batches = Vec::with_capacity(plan.partitions.len());
        let mut in_request = 0u64;
        let ts_now =
            origin_ms + (started.elapsed().as_secs_f64() * 1000.0 * opts.time_scale) as i64;
        for (pi, (partition, devices)) in plan.partitions.iter().enumerate() {
            let mut records =
                Vec::with_capacity(if plain { 0 } else { opts.batch_events as usize });
            writer.clear();
            for _ in 0..opts.batch_events {
                let device = devices[cursors[pi] % devices.len()];
                cursors[pi] += 1;
                let mut ts = ts_now;
                if opts.out_of_order > 0.0 && rng.gen_bool(opts.out_of_order.min(1.0)) {
                    ts -= rng.gen_range(0..=opts.skew_ms) as i64;
                }
                out.max_ts = out.max_ts.max(ts);
                if opts.window_ms > 0 {
                    let w = ts.div_euclid(opts.window_ms) * opts.window_ms;
                    match req_windows.iter_mut().find(|(s, _)| *s == w) {
                        Some((_, n)) => *n += 1,
                        None => req_windows.push((w, 1)),
                    }
                }
                let reading = event::Reading {
                    device,
                    sensor_type: (device % 8) as i32,
                    timestamp_ms: ts,
                    temperature: 15.0 + rng.gen::<f64>() * 20.0,
                    humidity: rng.gen::<f64>() * 100.0,
                    pressure: 950.0 + rng.gen::<f64>() * 100.0,
                    battery_level: rng.gen::<f64>() * 100.0,
                    status: rng.gen_range(0..4),
                    latitude: 48.0 + f64::from(device % 1000) / 1000.0,
                    longitude: 11.0 + f64::from(device % 997) / 997.0,
                };
                event::encode(&reading, &mut value);
                event::device_key(device, &mut key);
                if plain {
                    writer.push(&key, &value, ts);
                } else {
                    records.push(record(&key, &value, ts, records.len() as i64));
                }
            }
            let batch = if plain {
                writer.take()
            } else {
                let mut batch = BytesMut::new();
                RecordBatchEncoder::encode(&mut batch, &records, &encode_options)
                    .map_err(|e| io_err(format!("encoding a record batch: {e}")))?;
                batch.freeze()
            };
            in_request += u64::from(opts.batch_events);
            batches.push((*partition as i32, batch));
        }
        let req = produce_request_of(opts.acks, topic.clone(), batches);
        correlation = correlation.wrapping_add(1);
        let sent = send_in(
            &mut s,
            &mut request,
            ApiKey::Produce,
            PRODUCE_VERSION,
            correlation,
            &req,
        )?;
        out.bytes += sent as u64;
        out.sent += in_request;
        live.sent.fetch_add(in_request, Ordering::Relaxed);
        if opts.acks == 0 {
            req_windows.clear(); // nothing is acknowledged
        } else {
            in_flight.push_back((
                correlation,
                Instant::now(),
                in_request,
                std::mem::take(&mut req_windows),
            ));
            while in_flight.len() >= opts.max_in_flight {
                receive_one(&mut s, &mut in_flight, &mut out, live)?;
            }
        }
    }
    while !in_flight.is_empty() {
        receive_one(&mut s, &mut in_flight, &mut out, live)?;
    }
    Ok(out)
}

fn receive_one(
    s: &mut tls::Conn,
    in_flight: &mut VecDeque<InFlight>,
    out: &mut ConnResult,
    live: &Live,
) -> std::io::Result<()> {
    let (cid, mut body) = recv(s, ApiKey::Produce, PRODUCE_VERSION)?;
    let Some((want, sent_at, events, windows)) = in_flight.pop_front() else {
        return Err(io_err("response without a request"));
    };
    if cid != want {
        return Err(io_err(format!("response {cid} where {want} was expected")));
    }
    let _ = out.latency_us.record(sent_at.elapsed().as_micros() as u64);
    let resp = ProduceResponse::decode(&mut body, PRODUCE_VERSION)
        .map_err(|e| io_err(format!("produce response: {e}")))?;
    let mut failed = 0u64;
    for t in &resp.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                *out.errors.entry(p.error_code.to_string()).or_default() += 1;
                failed += 1;
            }
        }
    }
    // A failed partition fails its share of the request's events.
    let parts: u64 = resp
        .responses
        .iter()
        .map(|t| t.partition_responses.len() as u64)
        .sum();
    let acked = if failed == 0 {
        for (w, n) in windows {
            *out.windows.entry(w).or_default() += n;
        }
        events
    } else {
        out.windows_exact = false;
        events - events * failed / parts.max(1)
    };
    out.acked += acked;
    live.acked.fetch_add(acked, Ordering::Relaxed);
    let _ = body.remaining();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    #[test]
    fn events_decode_with_the_reference_decoder_and_are_about_300_bytes() {
        let schema = apache_avro::Schema::parse_str(event::SCHEMA).unwrap();
        let r = event::Reading {
            device: 123,
            sensor_type: 3,
            timestamp_ms: 1_700_000_000_123,
            temperature: 21.5,
            humidity: 40.25,
            pressure: 1013.0,
            battery_level: 99.0,
            status: 1,
            latitude: 48.1,
            longitude: 11.5,
        };
        let mut buf = Vec::new();
        event::encode(&r, &mut buf);
        assert!((280..=320).contains(&buf.len()), "{} bytes", buf.len());
        let v = apache_avro::from_avro_datum(&schema, &mut &buf[..], None).unwrap();
        let Value::Record(fields) = v else {
            panic!("not a record")
        };
        let get = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("device_id"), Value::String("device-000123".into()));
        assert_eq!(get("timestamp"), Value::Long(1_700_000_000_123));
        assert_eq!(get("temperature"), Value::Double(21.5));
        assert_eq!(get("status"), Value::Int(1));
        assert_eq!(get("firmware"), Value::String("fw-2.4.1".into()));
    }

    #[test]
    fn every_device_lands_on_exactly_one_connection() {
        let opts = Options {
            brokers: String::new(),
            topic: "t".into(),
            devices: 1000,
            rate: None,
            duration: None,
            events: None,
            connections: 3,
            acks: -1,
            batch_events: 10,
            compression: Compression::None,
            out_of_order: 0.0,
            skew_ms: 0,
            time_scale: 1.0,
            window_ms: 0,
            seed: 1,
            max_in_flight: 5,
            progress: false,
            tls: None,
            sasl: None,
            stop: None,
        };
        let leaders: Vec<String> = (0..8).map(|p| format!("b{}", p % 2)).collect();
        let plans = plan(&opts, &leaders);
        let mut devices: Vec<u32> = plans
            .iter()
            .flat_map(|p| p.partitions.iter().flat_map(|(_, d)| d.clone()))
            .collect();
        devices.sort_unstable();
        assert_eq!(devices, (0..1000).collect::<Vec<_>>());
        for p in &plans {
            for (part, _) in &p.partitions {
                assert_eq!(leaders[*part as usize], p.addr);
            }
        }
    }
}
