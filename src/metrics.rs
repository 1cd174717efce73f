//! Prometheus metrics and the admin listener (`GET /metrics`, `GET /health`).
//!
//! One registry for the process; every series carries the label `shard`, and each
//! series has exactly one writer: the core it names. The Kafka front end, the log and
//! the pipeline keep plain per-core counters on their hot paths, and a small task on
//! each core copies them into the registry every [`SYNC_INTERVAL`] (the front end's
//! topic series also at once when a topic is made or deleted). The admin listener is
//! a thread of its own, off the cores, so a scrape never takes core time.
//!
//! Never: a lock or a shared write on a per-record path; an unbounded label set (the
//! labels are shards, declared topics, jobs, their sinks and partitions). Jobs are
//! labelled `job_name`: Prometheus keeps `job` for the scrape job.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidewater_io::ShardLog;
use tidewater_kafka::stats::{Api, KafkaStats, TopicStats};
use tidewater_shards::pipeline::JobStats;
use tidewater_shards::sink::SinkHandle;

/// How often each core copies its counters into the registry, unless
/// `metrics_interval_ms` says otherwise.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);

type Labels = Vec<(String, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;
type FGauge = Gauge<f64, AtomicU64>;
type Copied = Family<Labels, CopiedHistogram, fn() -> CopiedHistogram>;

fn latency_buckets() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

fn commit_buckets() -> Histogram {
    // 1 .. 4096 appends
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

fn fire_buckets() -> Histogram {
    // 1 ms .. 60 s; finer from 50 ms to 1 s, where fire-latency goals and alerts
    // sit (doubling buckets made any p99 between 128 and 256 ms read as ~255 ms).
    Histogram::new([
        0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4,
        0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    ])
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A histogram whose counts a crate keeps itself (the Kafka front end's
/// `tidewater_kafka::stats::Histogram`) and a core's sync copies in whole; encoded
/// exactly as prometheus-client encodes its own.
#[derive(Clone, Debug)]
struct CopiedHistogram(Arc<Mutex<CopiedCounts>>);

#[derive(Debug)]
struct CopiedCounts {
    sum: f64,
    count: u64,
    /// (upper bound, count in this bucket alone); the last bound is `f64::MAX`
    /// (`+Inf`), as prometheus-client has it.
    buckets: Vec<(f64, u64)>,
}

impl CopiedHistogram {
    /// Empty, with the front end's latency buckets.
    fn latency() -> CopiedHistogram {
        let buckets = tidewater_kafka::stats::latency_bounds()
            .into_iter()
            .chain([f64::MAX])
            .map(|b| (b, 0))
            .collect();
        CopiedHistogram(Arc::new(Mutex::new(CopiedCounts {
            sum: 0.0,
            count: 0,
            buckets,
        })))
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, CopiedCounts> {
        // Plain numbers: a panic elsewhere leaves nothing half-written to fear.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn copy_from(&self, h: &tidewater_kafka::stats::Histogram) {
        let (sum, count, buckets) = h.snapshot();
        let mut c = self.counts();
        c.sum = sum;
        c.count = count;
        c.buckets = buckets
            .into_iter()
            .map(|(bound, n)| (bound.unwrap_or(f64::MAX), n))
            .collect();
    }
}

impl TypedMetric for CopiedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CopiedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = self.counts();
        encoder.encode_histogram::<NoLabelSet>(c.sum, c.count, &c.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Registers a family of copied histograms.
fn copied(r: &mut Registry, name: &str, help: &str) -> Copied {
    let f: Copied = Family::new_with_constructor(CopiedHistogram::latency as fn() -> _);
    r.register(name, help, f.clone());
    f
}

/// Every metric family; cloned handles are cheap (shared series).
pub struct Metrics {
    registry: Registry,
    records_in: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    records_out: Family<Labels, Counter>,
    request_seconds: Copied,
    append_seconds: Copied,
    connections: Family<Labels, Gauge>,
    requests_in_flight: Family<Labels, Gauge>,
    request_buffers_pooled: Family<Labels, Gauge>,
    protocol_violations: Family<Labels, Counter>,
    tls_handshake_failures: Family<Labels, Counter>,
    connections_throttled: Family<Labels, Counter>,
    connections_accepted: Family<Labels, Counter>,
    connections_off_cpu: Family<Labels, Counter>,
    connection_rate_ips: Family<Labels, Gauge>,
    sasl_authentications: Family<Labels, Counter>,
    sasl_reauthentications: Family<Labels, Counter>,
    sasl_authentication_failures: Family<Labels, Counter>,
    sasl_failed_login_ips: Family<Labels, Gauge>,
    authorization_failures: Family<Labels, Counter>,
    throttled_requests: Family<Labels, Counter>,
    quota_entities: Family<Labels, Gauge>,
    journal_appends: Family<Labels, Counter>,
    journal_writes: Family<Labels, Counter>,
    journal_syncs: Family<Labels, Counter>,
    journal_write_bytes: Family<Labels, Counter>,
    ledger_flush_bytes: Family<Labels, Counter>,
    ledger_writes: Family<Labels, Counter>,
    ledger_adopted_writes: Family<Labels, Counter>,
    segments_deleted: Family<Labels, Counter>,
    journal_segments_adopted: Family<Labels, Counter>,
    ledger_copied_out_bytes: Family<Labels, Counter>,
    journal_segments_reused: Family<Labels, Counter>,
    cross_core_forwards: Family<Labels, Counter>,
    groups: Family<Labels, Gauge>,
    group_members: Family<Labels, Gauge>,
    committed_offsets: Family<Labels, Gauge>,
    group_rebalances: Family<Labels, Counter>,
    busy_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    pipeline_records: Family<Labels, Counter>,
    routed_records: Family<Labels, Counter>,
    mailbox_depth: Family<Labels, Gauge>,
    mailbox_wait_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    pipeline_lag: Family<Labels, Gauge>,
    watermark_ms: Family<Labels, Gauge>,
    watermark_lag: Family<Labels, FGauge>,
    state_entries: Family<Labels, Gauge>,
    state_bytes: Family<Labels, Gauge>,
    windows_fired: Family<Labels, Counter>,
    late: Family<Labels, Counter>,
    dlq: Family<Labels, Counter>,
    backpressure_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    job_failed: Family<Labels, Gauge>,
    sink_rows: Family<Labels, Counter>,
    sink_errors: Family<Labels, Counter>,
    sink_retries: Family<Labels, Counter>,
    sink_queue: Family<Labels, Gauge>,
    sink_fire_seconds: Hist,
    checkpoint_seconds: Hist,
    alignment_seconds: Hist,
    checkpoint_bytes: Family<Labels, Gauge>,
    checkpoint_last_id: Family<Labels, Gauge>,
    stalls: Family<Labels, Counter>,
    timer_lateness: Hist,
    journal_write_seconds: Hist,
    group_commit: Hist,
    recovery_damaged: Family<Labels, Gauge>,
    recovery_lost: Family<Labels, Gauge>,
    /// Why the server runs degraded (media damage found at start), one line a core.
    degraded: std::sync::Mutex<Vec<String>>,
    /// Cores that finished starting; the server is healthy when all did.
    pub ready_cores: AtomicUsize,
    pub cores: usize,
    pub stopping: AtomicBool,
    /// Savepoints asked for through `POST /checkpoint`.
    pub savepoints: Arc<tidewater_io::wait::Signal>,
    /// Admin requests refused for want of the token, and when that was last said.
    admin_auth_failures: Family<Labels, Counter>,
    admin_auth_log: std::sync::Mutex<tidewater_kafka::LogThrottle>,
    /// Failed admin TLS handshakes are logged through this, apart from refusals.
    admin_tls_log: std::sync::Mutex<tidewater_kafka::LogThrottle>,
    pub schema_registry: crate::schema_registry::RegistryStats,
    /// How often each core's [`sync`] runs.
    sync_interval: Duration,
}

impl Metrics {
    pub fn new(cores: usize) -> Metrics {
        let mut r = Registry::with_prefix("tidewater");
        macro_rules! fam {
            ($name:literal, $help:literal) => {{
                let f = Family::default();
                r.register($name, $help, f.clone());
                f
            }};
            ($name:literal, $help:literal, $ctor:expr) => {{
                let f: Hist = Family::new_with_constructor($ctor as fn() -> Histogram);
                r.register($name, $help, f.clone());
                f
            }};
        }
        Metrics {
            records_in: fam!("records_in", "Records appended by producers, per topic"),
            bytes_in: fam!(
                "bytes_in",
                "Record batch bytes appended by producers, per topic"
            ),
            records_out: fam!(
                "records_out",
                "Records served to consumers (Fetch), per topic"
            ),
            request_seconds: copied(
                &mut r,
                "kafka_request_seconds",
                "Kafka request handling time, per API",
            ),
            append_seconds: copied(
                &mut r,
                "journal_append_seconds",
                "Time from a produced batch reaching the log to its durable ack",
            ),
            connections: fam!("kafka_connections", "Open Kafka connections"),
            requests_in_flight: fam!(
                "kafka_requests_in_flight",
                "Kafka requests read and not yet answered, over a core's connections (at most in_flight_requests_max per connection)"
            ),
            request_buffers_pooled: fam!(
                "kafka_request_buffers_pooled_bytes",
                "Bytes of free request buffers a core keeps for reuse (at most 32 MiB)"
            ),
            protocol_violations: fam!(
                "kafka_protocol_violations",
                "Connections closed because the peer broke the protocol: a malformed, oversized or unknown request, or a version not served"
            ),
            tls_handshake_failures: fam!(
                "kafka_tls_handshake_failures",
                "Kafka connections whose TLS handshake failed or timed out: a plaintext client, an untrusted or expired certificate on either side"
            ),
            connections_throttled: fam!(
                "kafka_connections_throttled",
                "Kafka connections closed at accept: their IP opened more than connection_creation_rate_per_ip this second"
            ),
            connections_accepted: fam!("kafka_connections_accepted", "Kafka connections accepted"),
            connections_off_cpu: fam!(
                "kafka_connections_off_cpu",
                "Kafka connections accepted on a core other than the CPU that received their packets (SO_INCOMING_CPU): single-port mode places them on that CPU's core"
            ),
            connection_rate_ips: fam!(
                "kafka_connection_rate_ips",
                "Client IPs the per-IP connection rate tracks (at most 10000 per core)"
            ),
            sasl_authentications: fam!(
                "kafka_sasl_authentications",
                "SASL authentications that succeeded on a Kafka connection (its first)"
            ),
            sasl_reauthentications: fam!(
                "kafka_sasl_reauthentications",
                "SASL re-authentications that succeeded (KIP-368, connections_max_reauth_ms)"
            ),
            sasl_authentication_failures: fam!(
                "kafka_sasl_authentication_failures",
                "SASL authentications that failed: a wrong password or unknown user, a malformed exchange, or an IP over failed_authentications_per_ip_per_minute"
            ),
            sasl_failed_login_ips: fam!(
                "kafka_sasl_failed_login_ips",
                "Client IPs whose failed SASL authentications this minute are counted (at most 10000 per core)"
            ),
            throttled_requests: fam!(
                "kafka_throttled_requests",
                "Requests a client quota throttled (answered with throttle_time_ms, the connection muted that long), by quota: producer_byte_rate, consumer_byte_rate, request_percentage"
            ),
            quota_entities: fam!(
                "kafka_quota_entities",
                "Client entities (user, client id) a core measures against their quotas (at most 10000 per core)"
            ),
            authorization_failures: fam!(
                "kafka_authorization_failures",
                "Operations the ACL authorizer refused (a topic, group or cluster answered *_AUTHORIZATION_FAILED); listings leave out what a principal may not see without counting it"
            ),
            journal_appends: fam!("journal_appends", "Batches appended to the journal"),
            journal_writes: fam!("journal_writes", "Journal writes (one group commit each)"),
            journal_syncs: fam!(
                "journal_syncs",
                "Journal syncs; appends / syncs is the group-commit size"
            ),
            journal_write_bytes: fam!("journal_write_bytes", "Bytes written to the journal"),
            ledger_flush_bytes: fam!("ledger_flush_bytes", "Bytes written to ledger segments"),
            ledger_writes: fam!("ledger_writes", "Ledger segment writes"),
            ledger_adopted_writes: fam!(
                "ledger_adopted_writes",
                "Journal writes of one partition the ledger took whole, without a copy"
            ),
            segments_deleted: fam!(
                "ledger_segments_deleted",
                "Ledger segments removed by retention"
            ),
            journal_segments_adopted: fam!(
                "journal_segments_adopted",
                "Sealed journal segments kept as the ledger's data instead of being copied, with journal_adopt"
            ),
            journal_segments_reused: fam!(
                "journal_segments_reused",
                "Journal slots filled with an adopted segment retention freed, whose blocks are written, instead of a new file"
            ),
            ledger_copied_out_bytes: fam!(
                "ledger_copied_out_bytes",
                "Bytes moved out of adopted segments into the segments of partitions kept longer than their neighbours (copy-out)"
            ),
            cross_core_forwards: fam!(
                "cross_core_forwards",
                "Partition parts of requests forwarded to the owning core (single-port mode; 0 in per-core mode)"
            ),
            groups: fam!(
                "kafka_groups",
                "Consumer groups the core coordinates (with members or committed offsets)"
            ),
            group_members: fam!(
                "kafka_group_members",
                "Members of the consumer groups the core coordinates"
            ),
            committed_offsets: fam!(
                "kafka_committed_offsets",
                "Committed offsets the core keeps for its consumer groups"
            ),
            group_rebalances: fam!(
                "kafka_group_rebalances",
                "Consumer group rebalances completed (new generations) on the core"
            ),
            busy_seconds: fam!(
                "busy_seconds",
                "Time the core spent running tasks (rate: busy fraction)"
            ),
            pipeline_records: fam!("pipeline_records", "Source records a job read"),
            routed_records: fam!(
                "routed_records",
                "Records a job sent to other cores (keyBy)"
            ),
            mailbox_depth: fam!(
                "mailbox_depth",
                "Messages queued in a keyBy mailbox to another core"
            ),
            mailbox_wait_seconds: fam!(
                "mailbox_wait_seconds",
                "Time spent waiting for room in a keyBy mailbox"
            ),
            pipeline_lag: fam!(
                "pipeline_lag_records",
                "Records in a source partition the job has not read yet"
            ),
            watermark_ms: fam!("watermark_ms", "The core's event-time watermark, epoch ms"),
            watermark_lag: fam!("watermark_lag_seconds", "Wall clock minus the watermark"),
            state_entries: fam!("window_state_entries", "Open (key, window) entries"),
            state_bytes: fam!("window_state_bytes", "Approximate bytes of window state"),
            windows_fired: fam!("windows_fired", "Windows fired (one per window per core)"),
            late: fam!(
                "late_events",
                "Events whose window had fired, sent to <job>.late"
            ),
            dlq: fam!(
                "dlq_records",
                "Records that could not be read, sent to <job>.dlq"
            ),
            backpressure_seconds: fam!(
                "backpressure_seconds",
                "Time a job waited on a full mailbox or sink (rate: backpressured fraction)"
            ),
            job_failed: fam!(
                "job_failed",
                "1 when the job stopped on this core (see the log)"
            ),
            sink_rows: fam!("sink_rows", "Rows delivered"),
            sink_errors: fam!("sink_errors", "Failed deliveries (each retried)"),
            sink_retries: fam!("sink_retries", "Delivery retries"),
            sink_queue: fam!("sink_queue_windows", "Fired windows waiting for the sink"),
            sink_fire_seconds: fam!(
                "sink_fire_latency_seconds",
                "From the watermark passing a window's end to its rows in the sink",
                fire_buckets
            ),
            checkpoint_seconds: fam!(
                "checkpoint_duration_seconds",
                "From a core's checkpoint barrier to its part written and synced",
                fire_buckets
            ),
            alignment_seconds: fam!(
                "checkpoint_alignment_seconds",
                "Part of a checkpoint spent waiting for the other cores' barriers",
                fire_buckets
            ),
            checkpoint_bytes: fam!("checkpoint_bytes", "Size of the core's last checkpoint part"),
            checkpoint_last_id: fam!(
                "checkpoint_last_id",
                "Last checkpoint id: complete (core 0) or written (other cores)"
            ),
            stalls: fam!(
                "executor_stalls",
                "Times the core came back to a due timer more than 10 ms late (a task ran too long or the CPU was taken)"
            ),
            timer_lateness: fam!(
                "executor_timer_lateness_seconds",
                "How late the core's metrics timer fired: scheduling delay on the core",
                latency_buckets
            ),
            journal_write_seconds: fam!(
                "journal_write_seconds",
                "One journal write (a group commit) from start to durable: write, and sync under durability always",
                latency_buckets
            ),
            group_commit: fam!(
                "journal_group_commit_appends",
                "Appends carried by one journal write (group commit size)",
                commit_buckets
            ),
            recovery_damaged: fam!(
                "recovery_journal_damage",
                "Damaged journal ranges with valid frames after them (media damage) found at the last start; the segment is copied to <journal_dir>.damaged"
            ),
            recovery_lost: fam!(
                "recovery_lost_offsets",
                "Offsets whose records only a damaged journal frame held, found at the last start (consumers skip them; jobs count them as dead letters)"
            ),
            degraded: std::sync::Mutex::new(Vec::new()),
            admin_auth_failures: fam!(
                "admin_auth_failures",
                "Admin requests refused: no or a wrong bearer token (admin_token_file), and no verified client certificate (admin_tls_client_ca_file)"
            ),
            admin_auth_log: Default::default(),
            admin_tls_log: Default::default(),
            schema_registry: {
                let stats = crate::schema_registry::RegistryStats::default();
                stats.register(&mut r);
                stats
            },
            registry: r,
            ready_cores: AtomicUsize::new(0),
            cores,
            stopping: AtomicBool::new(false),
            savepoints: Default::default(),
            sync_interval: SYNC_INTERVAL,
        }
    }

    /// Sets how often each core copies its counters into the registry.
    pub fn with_sync_interval(mut self, every: Duration) -> Metrics {
        self.sync_interval = every;
        self
    }

    /// What a core's recovery found: damage makes the server run degraded.
    pub fn recovered(&self, shard: u32, report: &tidewater_io::RecoveryReport) {
        let l = labels(&[("shard", &shard.to_string())]);
        self.recovery_damaged
            .get_or_create(&l)
            .set(report.damaged.len() as i64);
        let lost: u64 = report.lost.iter().map(|l| l.to - l.from).sum();
        self.recovery_lost.get_or_create(&l).set(lost as i64);
        if report.degraded() {
            let line = format!(
                "core {shard}: journal damage at start ({} range(s), {lost} offset(s) lost; see the log and <journal_dir>.damaged)",
                report.damaged.len()
            );
            if let Ok(mut d) = self.degraded.lock() {
                d.push(line);
            }
        }
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 << 10);
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Copies a monotonic per-core count into a counter.
#[derive(Default)]
struct Delta(u64);

impl Delta {
    fn push(&mut self, c: &Counter, now: u64) {
        c.inc_by(now.saturating_sub(self.0));
        self.0 = self.0.max(now);
    }
}

/// One core's Kafka front-end series, copied from its [`KafkaStats`].
pub struct KafkaSeries {
    stats: Rc<KafkaStats>,
    metrics: Arc<Metrics>,
    shard: String,
    connections: Gauge,
    requests_in_flight: Gauge,
    request_buffers_pooled: Gauge,
    protocol_violations: (Counter, Delta),
    tls_handshake_failures: (Counter, Delta),
    connections_throttled: (Counter, Delta),
    connections_accepted: (Counter, Delta),
    connections_off_cpu: (Counter, Delta),
    connection_rate_ips: Gauge,
    sasl_authentications: (Counter, Delta),
    sasl_reauthentications: (Counter, Delta),
    sasl_authentication_failures: (Counter, Delta),
    sasl_failed_login_ips: Gauge,
    authorization_failures: (Counter, Delta),
    throttled_requests: Vec<(Counter, Delta)>,
    quota_entities: Gauge,
    forwards: (Counter, Delta),
    groups: (Gauge, Gauge, Gauge),
    rebalances: (Counter, Delta),
    append_seconds: CopiedHistogram,
    /// Per API in `Api::ALL` order; made at its first request, as before.
    requests: Vec<Option<CopiedHistogram>>,
    topics: HashMap<String, TopicSeries>,
}

/// One topic's series on one core, and the counters they copy.
struct TopicSeries {
    stats: Rc<TopicStats>,
    records_in: (Counter, Delta),
    bytes_in: (Counter, Delta),
    records_out: (Counter, Delta),
}

impl KafkaSeries {
    /// The series of core `shard`'s front end, every topic's among them, made now so
    /// a scrape shows them from the start.
    pub fn new(m: &Arc<Metrics>, shard: u32, stats: Rc<KafkaStats>) -> KafkaSeries {
        let s = shard.to_string();
        let l = labels(&[("shard", &s)]);
        let gauge = |f: &Family<Labels, Gauge>| f.get_or_create(&l).clone();
        let counter = |f: &Family<Labels, Counter>| (f.get_or_create(&l).clone(), Delta(0));
        let mut series = KafkaSeries {
            connections: gauge(&m.connections),
            requests_in_flight: gauge(&m.requests_in_flight),
            request_buffers_pooled: gauge(&m.request_buffers_pooled),
            protocol_violations: counter(&m.protocol_violations),
            tls_handshake_failures: counter(&m.tls_handshake_failures),
            connections_throttled: counter(&m.connections_throttled),
            connections_accepted: counter(&m.connections_accepted),
            connections_off_cpu: counter(&m.connections_off_cpu),
            connection_rate_ips: gauge(&m.connection_rate_ips),
            sasl_authentications: counter(&m.sasl_authentications),
            sasl_reauthentications: counter(&m.sasl_reauthentications),
            sasl_authentication_failures: counter(&m.sasl_authentication_failures),
            sasl_failed_login_ips: gauge(&m.sasl_failed_login_ips),
            authorization_failures: counter(&m.authorization_failures),
            throttled_requests: tidewater_kafka::quota::Kind::ALL
                .iter()
                .map(|k| {
                    let l = labels(&[("shard", &s), ("quota", k.key())]);
                    (m.throttled_requests.get_or_create(&l).clone(), Delta(0))
                })
                .collect(),
            quota_entities: gauge(&m.quota_entities),
            forwards: counter(&m.cross_core_forwards),
            groups: (
                gauge(&m.groups),
                gauge(&m.group_members),
                gauge(&m.committed_offsets),
            ),
            rebalances: counter(&m.group_rebalances),
            append_seconds: m.append_seconds.get_or_create(&l).clone(),
            requests: Api::ALL.iter().map(|_| None).collect(),
            topics: HashMap::new(),
            stats,
            metrics: m.clone(),
            shard: s,
        };
        series.sync();
        series
    }

    /// Copies every counter in.
    fn sync(&mut self) {
        let st = &self.stats;
        self.connections.set(st.connections.get() as i64);
        self.requests_in_flight
            .set(st.requests_in_flight.get() as i64);
        self.request_buffers_pooled
            .set(st.request_buffers_pooled_bytes.get() as i64);
        let (c, d) = &mut self.protocol_violations;
        d.push(c, st.protocol_violations.get());
        let (c, d) = &mut self.tls_handshake_failures;
        d.push(c, st.tls_handshake_failures.get());
        let (c, d) = &mut self.connections_throttled;
        d.push(c, st.connections_throttled.get());
        let (c, d) = &mut self.connections_accepted;
        d.push(c, st.connections_accepted.get());
        let (c, d) = &mut self.connections_off_cpu;
        d.push(c, st.connections_off_cpu.get());
        self.connection_rate_ips
            .set(st.connection_rate_ips.get() as i64);
        let (c, d) = &mut self.sasl_authentications;
        d.push(c, st.sasl_authentications.get());
        let (c, d) = &mut self.sasl_reauthentications;
        d.push(c, st.sasl_reauthentications.get());
        let (c, d) = &mut self.sasl_authentication_failures;
        d.push(c, st.sasl_authentication_failures.get());
        self.sasl_failed_login_ips
            .set(st.sasl_failed_login_ips.get() as i64);
        let (c, d) = &mut self.authorization_failures;
        d.push(c, st.authorization_failures.get());
        for ((c, d), n) in self
            .throttled_requests
            .iter_mut()
            .zip(&st.throttled_requests)
        {
            d.push(c, n.get());
        }
        self.quota_entities.set(st.quota_entities.get() as i64);
        let (c, d) = &mut self.forwards;
        d.push(c, st.cross_core_forwards.get());
        let g = st.group_counts();
        self.groups.0.set(g.groups as i64);
        self.groups.1.set(g.members as i64);
        self.groups.2.set(g.offsets as i64);
        let (c, d) = &mut self.rebalances;
        d.push(c, g.rebalances);
        self.append_seconds.copy_from(&st.append_seconds);
        for (api, series) in Api::ALL.iter().zip(&mut self.requests) {
            let h = st.request_seconds(*api);
            if h.count() == 0 {
                continue;
            }
            series
                .get_or_insert_with(|| {
                    let l = labels(&[("shard", &self.shard), ("api", api.label())]);
                    self.metrics.request_seconds.get_or_create(&l).clone()
                })
                .copy_from(h);
        }
        self.sync_topics();
    }

    /// Makes the series of topics added, drops those of topics removed (or made
    /// again: their counters start from zero), and copies the rest in.
    fn sync_topics(&mut self) {
        let now = self.stats.topics();
        let (m, shard) = (&self.metrics, &self.shard);
        self.topics.retain(|name, t| {
            let kept = now.iter().any(|s| Rc::ptr_eq(s, &t.stats));
            if !kept {
                let l = labels(&[("shard", shard), ("topic", name)]);
                for family in [&m.records_in, &m.bytes_in, &m.records_out] {
                    family.remove(&l);
                }
            }
            kept
        });
        for stats in now {
            let t = self
                .topics
                .entry(stats.name.clone())
                .or_insert_with(|| TopicSeries::new(m, shard, stats));
            let st = &t.stats;
            let (c, d) = &mut t.records_in;
            d.push(c, st.records_in.get());
            let (c, d) = &mut t.bytes_in;
            d.push(c, st.bytes_in.get());
            let (c, d) = &mut t.records_out;
            d.push(c, st.records_out.get());
        }
    }
}

impl TopicSeries {
    fn new(m: &Metrics, shard: &str, stats: Rc<TopicStats>) -> TopicSeries {
        let l = labels(&[("shard", shard), ("topic", &stats.name)]);
        let counter = |f: &Family<Labels, Counter>| (f.get_or_create(&l).clone(), Delta(0));
        TopicSeries {
            records_in: counter(&m.records_in),
            bytes_in: counter(&m.bytes_in),
            records_out: counter(&m.records_out),
            stats,
        }
    }
}

/// One job's handles on one core.
struct JobSeries {
    name: String,
    stats: Rc<JobStats>,
    sinks: Vec<(String, Rc<tidewater_shards::sink::SinkStats>)>,
    mailboxes: Vec<(u32, Arc<tidewater_shards::pipeline::MailboxStats>)>,
    deltas: HashMap<String, Delta>,
    wait_ns: HashMap<u32, u64>,
    blocked_ns: u64,
}

/// What a core's sync task reads.
pub struct CoreSources {
    pub log: Rc<ShardLog>,
    kafka: Option<KafkaSeries>,
    jobs: Vec<JobSeries>,
}

impl CoreSources {
    pub fn new(log: Rc<ShardLog>) -> CoreSources {
        CoreSources {
            log,
            kafka: None,
            jobs: Vec::new(),
        }
    }

    pub fn add_kafka(&mut self, series: KafkaSeries) {
        self.kafka = Some(series);
    }

    pub fn add_job(
        &mut self,
        name: &str,
        stats: Rc<JobStats>,
        sinks: &[SinkHandle],
        mailboxes: Vec<(u32, Arc<tidewater_shards::pipeline::MailboxStats>)>,
    ) {
        self.jobs.push(JobSeries {
            name: name.to_string(),
            stats,
            sinks: sinks
                .iter()
                .map(|s| (s.name.clone(), s.stats.clone()))
                .collect(),
            mailboxes,
            deltas: HashMap::new(),
            wait_ns: HashMap::new(),
            blocked_ns: 0,
        });
    }
}

/// Runs on each core until the server stops: copies the core's counters into the
/// registry every [`Metrics::with_sync_interval`] ([`SYNC_INTERVAL`] by default).
pub async fn sync(m: Arc<Metrics>, shard: u32, mut src: CoreSources, stop: impl Fn() -> bool) {
    let s = shard.to_string();
    let l = labels(&[("shard", &s)]);
    let mut log_deltas: HashMap<&'static str, Delta> = HashMap::new();
    let mut busy_prev = Duration::ZERO;
    let busy = m.busy_seconds.get_or_create(&l).clone();
    let stalls = m.stalls.get_or_create(&l).clone();
    let write_seconds = m.journal_write_seconds.get_or_create(&l).clone();
    let group_commit = m.group_commit.get_or_create(&l).clone();
    let lateness = m.timer_lateness.get_or_create(&l).clone();
    while !stop() {
        let st = src.log.stats();
        for (name, fam, v) in [
            ("appends", &m.journal_appends, st.appends),
            ("writes", &m.journal_writes, st.journal_writes),
            ("syncs", &m.journal_syncs, st.journal_syncs),
            ("bytes", &m.journal_write_bytes, st.journal_write_bytes),
            ("ledger_bytes", &m.ledger_flush_bytes, st.ledger_write_bytes),
            ("ledger_writes", &m.ledger_writes, st.ledger_writes),
            (
                "ledger_adopted",
                &m.ledger_adopted_writes,
                st.ledger_adopted_writes,
            ),
            ("deleted", &m.segments_deleted, st.segments_deleted),
            (
                "adopted",
                &m.journal_segments_adopted,
                st.journal_segments_adopted,
            ),
            (
                "copied_out",
                &m.ledger_copied_out_bytes,
                st.copied_out_bytes,
            ),
            (
                "reused",
                &m.journal_segments_reused,
                st.journal_segments_reused,
            ),
        ] {
            log_deltas
                .entry(name)
                .or_default()
                .push(&fam.get_or_create(&l), v);
        }
        for (ns, appends) in src.log.drain_write_samples() {
            write_seconds.observe(ns as f64 / 1e9);
            group_commit.observe(f64::from(appends));
        }
        let runtime = glommio::executor().executor_stats().total_runtime();
        busy.inc_by(runtime.saturating_sub(busy_prev).as_secs_f64());
        busy_prev = runtime;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Some(k) = &mut src.kafka {
            k.sync();
        }
        for j in &mut src.jobs {
            sync_job(&m, &s, j, now_ms);
        }
        // A timer that fires late means the core was not free to run it: a stall.
        let asked = Instant::now();
        wait_tick(asked + m.sync_interval, src.kafka.as_mut()).await;
        let late = asked.elapsed().saturating_sub(m.sync_interval);
        lateness.observe(late.as_secs_f64());
        if late > STALL {
            stalls.inc();
        }
    }
}

/// Sleeps until `due`. A topic made or deleted meanwhile has its series made or
/// dropped at once, so a scrape right after a DeleteTopics no longer shows them.
async fn wait_tick(due: Instant, mut kafka: Option<&mut KafkaSeries>) {
    loop {
        let left = due.saturating_duration_since(Instant::now());
        let Some(k) = kafka.as_deref_mut() else {
            glommio::timer::sleep(left).await;
            return;
        };
        let stats = k.stats.clone();
        let seen = stats.topics_changed().epoch();
        let changed = futures_lite::future::or(
            async {
                stats.topics_changed().wait(seen).await;
                true
            },
            async {
                glommio::timer::sleep(left).await;
                false
            },
        )
        .await;
        if !changed {
            return;
        }
        k.sync_topics();
    }
}

/// Timer lateness counted as an executor stall.
const STALL: Duration = Duration::from_millis(10);

fn sync_job(m: &Metrics, shard: &str, j: &mut JobSeries, now_ms: i64) {
    let l = labels(&[("shard", shard), ("job_name", &j.name)]);
    let st = &j.stats;
    for (key, fam, v) in [
        ("records", &m.pipeline_records, st.records_in.get()),
        ("routed", &m.routed_records, st.routed_out.get()),
        ("fired", &m.windows_fired, st.windows_fired.get()),
        ("late", &m.late, st.late.get()),
        ("dlq", &m.dlq, st.dlq.get()),
    ] {
        j.deltas
            .entry(key.to_string())
            .or_default()
            .push(&fam.get_or_create(&l), v);
    }
    let blocked = st.blocked_ns.get();
    m.backpressure_seconds
        .get_or_create(&l)
        .inc_by(blocked.saturating_sub(j.blocked_ns) as f64 / 1e9);
    j.blocked_ns = blocked;
    let wm = st.watermark.get();
    m.watermark_ms.get_or_create(&l).set(wm.max(0));
    if wm > 0 {
        m.watermark_lag
            .get_or_create(&l)
            .set((now_ms - wm) as f64 / 1000.0);
    }
    m.state_entries
        .get_or_create(&l)
        .set(st.state_entries.get() as i64);
    m.state_bytes
        .get_or_create(&l)
        .set(st.state_bytes.get() as i64);
    m.job_failed
        .get_or_create(&l)
        .set(i64::from(st.failed.borrow().is_some()));
    m.checkpoint_bytes
        .get_or_create(&l)
        .set(st.checkpoint_bytes.get() as i64);
    let last = if shard == "0" {
        st.checkpoint_complete.get()
    } else {
        st.checkpoint_part.get()
    };
    m.checkpoint_last_id.get_or_create(&l).set(last as i64);
    let h = m.checkpoint_seconds.get_or_create(&l);
    for us in st.checkpoint_us.borrow_mut().drain(..) {
        h.observe(us as f64 / 1e6);
    }
    let h = m.alignment_seconds.get_or_create(&l);
    for us in st.alignment_us.borrow_mut().drain(..) {
        h.observe(us as f64 / 1e6);
    }
    for &(p, lag) in st.lag.borrow().iter() {
        let pl = labels(&[
            ("shard", shard),
            ("job_name", &j.name),
            ("partition", &p.to_string()),
        ]);
        m.pipeline_lag.get_or_create(&pl).set(lag as i64);
    }
    for (to, mb) in &j.mailboxes {
        let ml = labels(&[
            ("shard", shard),
            ("job_name", &j.name),
            ("to", &to.to_string()),
        ]);
        m.mailbox_depth
            .get_or_create(&ml)
            .set(mb.depth.load(Ordering::Relaxed) as i64);
        let w = mb.wait_ns.load(Ordering::Relaxed);
        let prev = j.wait_ns.entry(*to).or_default();
        m.mailbox_wait_seconds
            .get_or_create(&ml)
            .inc_by(w.saturating_sub(*prev) as f64 / 1e9);
        *prev = w;
    }
    for (sink, ss) in &j.sinks {
        let sl = labels(&[("shard", shard), ("job_name", &j.name), ("sink", sink)]);
        for (key, fam, v) in [
            ("rows", &m.sink_rows, ss.rows.get()),
            ("errors", &m.sink_errors, ss.errors.get()),
            ("retries", &m.sink_retries, ss.retries.get()),
        ] {
            j.deltas
                .entry(format!("{sink}/{key}"))
                .or_default()
                .push(&fam.get_or_create(&sl), v);
        }
        m.sink_queue.get_or_create(&sl).set(ss.queued.get() as i64);
        let h = m.sink_fire_seconds.get_or_create(&sl);
        for us in ss.latencies_us.borrow_mut().drain(..) {
            h.observe(us as f64 / 1e6);
        }
    }
}

/// Admin connections served at once; more get 503 at once and are closed.
const ADMIN_CONNECTIONS_MAX: usize = 16;
/// Longest an admin request (its line and headers) may take to arrive.
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin request line and headers.
const ADMIN_REQUEST_BYTES_MAX: u64 = 16 << 10;

/// Serves `GET /metrics`, `GET /health` and `POST /checkpoint` on `addr`, off the
/// cores: an accepting thread, and a thread per connection, at most
/// `ADMIN_CONNECTIONS_MAX` at once, each given `ADMIN_REQUEST_TIMEOUT` and
/// `ADMIN_REQUEST_BYTES_MAX` for its request (and its TLS handshake, with `tls`),
/// so a half-sent request delays no one.
pub fn serve_admin(
    m: Arc<Metrics>,
    addr: std::net::SocketAddr,
    auth: crate::admin_auth::AdminAuth,
    tls: Option<crate::listeners::Tls>,
) -> std::io::Result<()> {
    let auth = Arc::new(auth);
    // Exported from the start, at 0.
    let _ = m.admin_auth_failures.get_or_create(&Vec::new());
    let listener = std::net::TcpListener::bind(addr)?;
    tracing::info!(%addr, tls = tls.is_some(), "admin listener up: /metrics, /health");
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("tw-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= ADMIN_CONNECTIONS_MAX {
                    open.fetch_sub(1, Ordering::SeqCst);
                    if tls.is_some() {
                        // A TLS client cannot read a plaintext 503: it is closed.
                        continue;
                    }
                    let _ = conn.set_write_timeout(Some(ADMIN_REQUEST_TIMEOUT));
                    reply(
                        &mut conn,
                        "503 Service Unavailable",
                        "text/plain",
                        "too many admin connections\n",
                    );
                    continue;
                }
                let (m, opened, auth) = (m.clone(), open.clone(), auth.clone());
                let tls = tls.as_ref().map(crate::listeners::Tls::now);
                let spawned = std::thread::Builder::new()
                    .name("tw-admin-conn".into())
                    .spawn(move || {
                        admin_connection(&m, &auth, conn, tls);
                        opened.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("admin connection dropped: cannot start its thread: {e}");
                }
            }
        })?;
    Ok(())
}

fn reply_unauthorized(conn: &mut impl Write) {
    let body =
        "this path needs the admin token: Authorization: Bearer <the token in admin_token_file>\n";
    let _ = write!(
        conn,
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"tidewater\"\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// How often refused admin requests are logged while they keep coming.
const ADMIN_AUTH_LOG_EVERY: Duration = Duration::from_secs(10);

/// `Some(n)` when a line about an admin refusal may be logged now (`n`: how many
/// `log` left out since the last), at most every `ADMIN_AUTH_LOG_EVERY`.
fn admitted(log: &std::sync::Mutex<tidewater_kafka::LogThrottle>) -> Option<u64> {
    let now = std::time::Instant::now();
    log.lock()
        .ok()
        .and_then(|t| t.admit(now, ADMIN_AUTH_LOG_EVERY))
}

/// A WARN for a refused admin request, at most one every 10 s (the counter has
/// them all).
fn warn_of_auth_failure(m: &Metrics, peer: &str, path: &str, refused: u64) {
    if let Some(more) = admitted(&m.admin_auth_log) {
        tracing::warn!(
            peer,
            path,
            refused,
            "admin request refused: no or wrong token ({more} more since the last line; tidewater_admin_auth_failures_total counts them all)"
        );
    }
}

fn reply(conn: &mut impl Write, status: &str, ctype: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

/// An admin connection's socket with a deadline over every read and write, not a
/// timeout per call: a client sending a byte now and then cannot stretch a request
/// (or a TLS handshake) past it. [`Bounded::renew`] starts the answer's time.
struct Bounded {
    sock: std::net::TcpStream,
    deadline: std::time::Instant,
}

impl Bounded {
    fn new(sock: std::net::TcpStream) -> Bounded {
        Bounded {
            sock,
            deadline: std::time::Instant::now() + ADMIN_REQUEST_TIMEOUT,
        }
    }

    fn renew(&mut self) {
        self.deadline = std::time::Instant::now() + ADMIN_REQUEST_TIMEOUT;
    }

    /// The time left, or TimedOut.
    fn left(&self) -> std::io::Result<Duration> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl std::io::Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sock.set_read_timeout(Some(self.left()?))?;
        self.sock.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sock.set_write_timeout(Some(self.left()?))?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// One admin connection: over TLS when the listener has it (the handshake within
/// the request's time), then its request.
fn admin_connection(
    m: &Metrics,
    auth: &crate::admin_auth::AdminAuth,
    conn: std::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut conn = Bounded::new(conn);
    let Some(tls) = tls else {
        return admin_request(m, auth, &mut conn, &peer, false);
    };
    let Ok(session) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(session, conn);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            note_admin_tls_failure(m, &peer, &e);
            return;
        }
    }
    let certified = stream
        .conn
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    admin_request(m, auth, &mut stream, &peer, certified);
    stream.conn.send_close_notify();
    let _ = stream.conn.complete_io(&mut stream.sock);
}

/// Renews the time of an admin connection's socket, under TLS or not.
trait Renew {
    fn renew(&mut self);
}

impl Renew for Bounded {
    fn renew(&mut self) {
        Bounded::renew(self);
    }
}

impl Renew for rustls::StreamOwned<rustls::ServerConnection, Bounded> {
    fn renew(&mut self) {
        self.sock.renew();
    }
}

/// A failed admin TLS handshake: a line at most every 10 s; a connection closed
/// before its first byte (a port check) none.
fn note_admin_tls_failure(m: &Metrics, peer: &str, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return;
    }
    if let Some(more) = admitted(&m.admin_tls_log) {
        tracing::info!(
            peer,
            "admin connection closed: TLS handshake failed: {e} ({more} more since the last line)"
        );
    }
}

/// The request line and the `Authorization` header of a request, its line and
/// headers read whole (up to `ADMIN_REQUEST_BYTES_MAX`, within the connection's
/// deadline) so the client is never cut off while still sending; None when they do
/// not arrive.
fn read_head(conn: &mut impl std::io::Read) -> Option<(String, Option<String>)> {
    let mut reader = BufReader::new(std::io::Read::take(conn, ADMIN_REQUEST_BYTES_MAX));
    let mut next_line =
        |out: &mut String| matches!(reader.read_line(out), Ok(n) if n > 0 && out.ends_with('\n'));
    let mut line = String::new();
    if !next_line(&mut line) {
        return None;
    }
    let mut header = String::new();
    let mut authorization = None;
    loop {
        header.clear();
        if !next_line(&mut header) {
            return None;
        }
        if header == "\r\n" || header == "\n" {
            return Some((line, authorization));
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
}

/// Reads one request and answers it. `certified`: the connection showed a client
/// certificate the listener's TLS verified.
fn admin_request<S: std::io::Read + Write + Renew>(
    m: &Metrics,
    auth: &crate::admin_auth::AdminAuth,
    conn: &mut S,
    peer: &str,
    certified: bool,
) {
    let head = read_head(conn);
    // The answer gets its own time (a /metrics page can be large).
    conn.renew();
    let Some((line, authorization)) = head else {
        return reply(
            conn,
            "408 Request Timeout",
            "text/plain",
            "incomplete request\n",
        );
    };
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("");
    if !auth.allows(path, authorization.as_deref(), certified) {
        let refused = m.admin_auth_failures.get_or_create(&Vec::new()).inc() + 1;
        warn_of_auth_failure(m, peer, path, refused);
        return reply_unauthorized(conn);
    }
    let (status, ctype, body) = match (method, path) {
        ("POST", "/checkpoint") => {
            let n = m.savepoints.add_one();
            tracing::info!(request = n, "savepoint asked for");
            (
                "202 Accepted",
                "text/plain",
                "a checkpoint of every job starts now; watch tidewater_checkpoint_last_id\n"
                    .to_string(),
            )
        }
        (_, "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.render(),
        ),
        (_, "/health") => {
            let ready = m.ready_cores.load(Ordering::SeqCst);
            if m.stopping.load(Ordering::SeqCst) {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "stopping\n".to_string(),
                )
            } else if ready < m.cores {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("starting: {ready} of {} cores ready\n", m.cores),
                )
            } else {
                let degraded = m.degraded.lock().map(|d| d.join("; ")).unwrap_or_default();
                if degraded.is_empty() {
                    ("200 OK", "text/plain", "ok\n".to_string())
                } else {
                    // Serving, so 200; the body says what an operator must look at.
                    ("200 OK", "text/plain", format!("degraded: {degraded}\n"))
                }
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try GET /metrics, GET /health or POST /checkpoint\n".to_string(),
        ),
    };
    reply(conn, status, ctype, &body);
}
