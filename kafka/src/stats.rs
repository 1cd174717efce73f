//! The front end's counters on one core: plain cells that connections and handlers
//! bump (one add per request or per partition's part, never per record), per topic
//! where the series are per topic. The binary's metrics sync, on the same core,
//! reads them and exports them to Prometheus under the names in
//! `docs/operations.md` (named on each field here).
//!
//! Topics come and go with the broker's table; each change wakes
//! [`KafkaStats::topics_changed`], so the series of a deleted topic go at once and
//! those of a topic made again start from zero.
//!
//! Never: a registry, a lock or an atomic; a `KafkaStats` is `!Send` and is touched
//! by its own core only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tidewater_io::wait::Notify;

/// The APIs request times are kept for (`api` label); any other is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    ApiVersions,
    InitProducerId,
    OffsetCommit,
    OffsetFetch,
    /// JoinGroup, SyncGroup, Heartbeat, LeaveGroup (a JoinGroup waits for the
    /// rebalance, so its time is the rebalance's).
    GroupMembership,
    Other,
}

impl Api {
    pub const ALL: [Api; 10] = [
        Api::Produce,
        Api::Fetch,
        Api::ListOffsets,
        Api::Metadata,
        Api::ApiVersions,
        Api::InitProducerId,
        Api::OffsetCommit,
        Api::OffsetFetch,
        Api::GroupMembership,
        Api::Other,
    ];

    /// The API of a request body (its first two bytes are the API key).
    pub fn of(body: &[u8]) -> Api {
        match body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) {
            Some(0) => Api::Produce,
            Some(1) => Api::Fetch,
            Some(2) => Api::ListOffsets,
            Some(3) => Api::Metadata,
            Some(18) => Api::ApiVersions,
            Some(22) => Api::InitProducerId,
            Some(8) => Api::OffsetCommit,
            Some(9) => Api::OffsetFetch,
            Some(11..=14) => Api::GroupMembership,
            _ => Api::Other,
        }
    }

    /// The `api` label.
    pub fn label(self) -> &'static str {
        match self {
            Api::Produce => "produce",
            Api::Fetch => "fetch",
            Api::ListOffsets => "list_offsets",
            Api::Metadata => "metadata",
            Api::ApiVersions => "api_versions",
            Api::InitProducerId => "init_producer_id",
            Api::OffsetCommit => "offset_commit",
            Api::OffsetFetch => "offset_fetch",
            Api::GroupMembership => "group_membership",
            Api::Other => "other",
        }
    }
}

/// Upper bounds of a latency histogram's buckets, in seconds: 50 µs doubling to
/// about 1.6 s; one more bucket takes the rest (`+Inf`).
pub const LATENCY_BUCKETS: usize = 16;

/// The bounds, each as Prometheus' exponential buckets compute it.
pub fn latency_bounds() -> [f64; LATENCY_BUCKETS] {
    std::array::from_fn(|i| 50e-6 * 2f64.powf(i as f64))
}

/// Observations in seconds, counted into the [`latency_bounds`] buckets.
pub struct Histogram {
    bounds: [f64; LATENCY_BUCKETS],
    /// Per bucket, not cumulative; the last is beyond every bound.
    counts: [Cell<u64>; LATENCY_BUCKETS + 1],
    sum: Cell<f64>,
    count: Cell<u64>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            bounds: latency_bounds(),
            counts: Default::default(),
            sum: Cell::new(0.0),
            count: Cell::new(0),
        }
    }
}

impl Histogram {
    /// Counts `seconds` in the first bucket whose bound reaches it (the last one
    /// when none does).
    pub fn observe(&self, seconds: f64) {
        self.sum.set(self.sum.get() + seconds);
        self.count.set(self.count.get() + 1);
        let at = match self.bounds.iter().position(|&b| b >= seconds) {
            Some(at) => at,
            None if seconds <= f64::MAX => LATENCY_BUCKETS,
            // NaN or infinite: in the sum and count only, as Prometheus has it.
            None => return,
        };
        let c = &self.counts[at];
        c.set(c.get() + 1);
    }

    /// (sum, count, per-bucket counts with their bounds; the last bound `None`).
    pub fn snapshot(&self) -> (f64, u64, Vec<(Option<f64>, u64)>) {
        let buckets = self
            .bounds
            .iter()
            .map(|&b| Some(b))
            .chain([None])
            .zip(self.counts.iter().map(Cell::get))
            .collect();
        (self.sum.get(), self.count.get(), buckets)
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// One topic's counters on one core.
pub struct TopicStats {
    pub name: String,
    /// Records appended by producers (`tidewater_records_in_total`).
    pub records_in: Cell<u64>,
    /// Record batch bytes appended by producers (`tidewater_bytes_in_total`).
    pub bytes_in: Cell<u64>,
    /// Records served to consumers by Fetch (`tidewater_records_out_total`).
    pub records_out: Cell<u64>,
}

impl TopicStats {
    fn new(name: &str) -> TopicStats {
        TopicStats {
            name: name.to_string(),
            records_in: Cell::new(0),
            bytes_in: Cell::new(0),
            records_out: Cell::new(0),
        }
    }

    /// A batch appended and durable.
    pub fn produced(&self, records: u64, bytes: u64) {
        add(&self.records_in, records);
        add(&self.bytes_in, bytes);
    }

    /// Records read for a Fetch.
    pub fn fetched(&self, records: u64) {
        add(&self.records_out, records);
    }
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// The front end's counters on one core.
#[derive(Default)]
pub struct KafkaStats {
    /// Open connections (`tidewater_kafka_connections`).
    pub connections: Cell<u64>,
    /// Requests read and not yet answered, over the core's connections
    /// (`tidewater_kafka_requests_in_flight`).
    pub requests_in_flight: Cell<u64>,
    /// Bytes of free request buffers kept for reuse
    /// (`tidewater_kafka_request_buffers_pooled_bytes`).
    pub request_buffers_pooled_bytes: Cell<u64>,
    /// Connections closed because the peer broke the protocol
    /// (`tidewater_kafka_protocol_violations_total`).
    pub protocol_violations: Cell<u64>,
    /// Connections whose TLS handshake failed or timed out
    /// (`tidewater_kafka_tls_handshake_failures_total`).
    pub tls_handshake_failures: Cell<u64>,
    /// Connections accepted (`tidewater_kafka_connections_accepted_total`).
    pub connections_accepted: Cell<u64>,
    /// Accepted connections whose packets the kernel received on another CPU than
    /// this core's (`SO_INCOMING_CPU`): served across two caches
    /// (`tidewater_kafka_connections_off_cpu_total`).
    pub connections_off_cpu: Cell<u64>,
    /// Connections closed at accept because their IP opened more than
    /// `connection_creation_rate_per_ip` this second
    /// (`tidewater_kafka_connections_throttled_total`).
    pub connections_throttled: Cell<u64>,
    /// Client IPs the connection rate tracks now, at most
    /// [`crate::ip_rate::IPS_MAX`] (`tidewater_kafka_connection_rate_ips`).
    pub connection_rate_ips: Cell<u64>,
    /// SASL authentications that succeeded, first ones and renewals
    /// (`tidewater_kafka_sasl_authentications_total`,
    /// `tidewater_kafka_sasl_reauthentications_total`).
    pub sasl_authentications: Cell<u64>,
    pub sasl_reauthentications: Cell<u64>,
    /// SASL authentications that failed
    /// (`tidewater_kafka_sasl_authentication_failures_total`).
    pub sasl_authentication_failures: Cell<u64>,
    /// Client IPs whose failed authentications this minute are counted, at most
    /// [`crate::ip_rate::IPS_MAX`] (`tidewater_kafka_sasl_failed_login_ips`).
    pub sasl_failed_login_ips: Cell<u64>,
    /// Operations the authorizer refused (`tidewater_kafka_authorization_failures_total`).
    pub authorization_failures: Cell<u64>,
    /// Requests a quota throttled, by [`crate::quota::Kind`] (produce, fetch,
    /// request time) (`tidewater_kafka_throttled_requests_total`).
    pub throttled_requests: [Cell<u64>; 3],
    /// Client entities this core measures against their quotas, at most
    /// [`crate::quota::ENTITIES_MAX`] (`tidewater_kafka_quota_entities`).
    pub quota_entities: Cell<u64>,
    /// Partition parts of requests forwarded to the owning core, single-port mode
    /// (`tidewater_cross_core_forwards_total`).
    pub cross_core_forwards: Cell<u64>,
    /// From a produced batch reaching the log to its durable ack
    /// (`tidewater_journal_append_seconds`).
    pub append_seconds: Histogram,
    /// Request handling time per API, in [`Api::ALL`] order
    /// (`tidewater_kafka_request_seconds`).
    requests: [Histogram; Api::ALL.len()],
    /// Every topic in the core's table.
    topics: RefCell<HashMap<String, Rc<TopicStats>>>,
    topics_changed: Notify,
    /// Counts the core's consumer groups when the metrics ask.
    group_counter: RefCell<Option<Box<dyn Fn() -> GroupCounts>>>,
}

/// A core's consumer groups, as the metrics show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounts {
    /// Groups with members or commits (`tidewater_kafka_groups`).
    pub groups: u64,
    /// Members over those groups (`tidewater_kafka_group_members`).
    pub members: u64,
    /// Committed offsets kept (`tidewater_kafka_committed_offsets`).
    pub offsets: u64,
    /// Rebalances completed since start (`tidewater_kafka_group_rebalances_total`).
    pub rebalances: u64,
}

impl KafkaStats {
    /// Counters for a core whose table holds `topics`.
    pub fn new(topics: &[String]) -> KafkaStats {
        let stats = KafkaStats::default();
        for t in topics {
            stats.add_topic(t);
        }
        stats
    }

    /// A request of `api` answered after `seconds`.
    pub fn request(&self, api: Api, seconds: f64) {
        self.request_seconds(api).observe(seconds);
    }

    pub fn request_seconds(&self, api: Api) -> &Histogram {
        // `Api::ALL` lists the variants in declaration order.
        &self.requests[api as usize]
    }

    /// A partition's part sent to the core that owns it.
    pub fn forwarded(&self) {
        add(&self.cross_core_forwards, 1);
    }

    /// A topic's counters, if the topic is known here.
    pub fn topic(&self, name: &str) -> Option<Rc<TopicStats>> {
        self.topics.borrow().get(name).cloned()
    }

    /// Every topic's counters, in no order.
    pub fn topics(&self) -> Vec<Rc<TopicStats>> {
        self.topics.borrow().values().cloned().collect()
    }

    /// Counters for a topic added to the table (kept if it has them already).
    pub fn add_topic(&self, name: &str) -> Rc<TopicStats> {
        if let Some(stats) = self.topic(name) {
            return stats;
        }
        let stats = Rc::new(TopicStats::new(name));
        self.topics
            .borrow_mut()
            .insert(name.to_string(), stats.clone());
        self.topics_changed.notify();
        stats
    }

    /// Drops a deleted topic's counters; a topic made again later starts from zero.
    pub fn remove_topic(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
        self.topics_changed.notify();
    }

    /// The core's group coordinator counts its groups with `f`.
    pub fn count_groups_with(&self, f: Box<dyn Fn() -> GroupCounts>) {
        *self.group_counter.borrow_mut() = Some(f);
    }

    /// The core's consumer groups now (zero before a coordinator is set).
    pub fn group_counts(&self) -> GroupCounts {
        self.group_counter
            .borrow()
            .as_ref()
            .map_or_else(GroupCounts::default, |f| f())
    }

    /// Notified whenever a topic is added or removed.
    pub fn topics_changed(&self) -> &Notify {
        &self.topics_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_like_prometheus_and_topics_restart_from_zero() {
        let h = Histogram::default();
        for v in [0.0, 50e-6, 51e-6, 10.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - (10.0 + 101e-6)).abs() < 1e-12);
        assert_eq!(buckets.len(), LATENCY_BUCKETS + 1);
        assert_eq!(buckets[0], (Some(50e-6), 2), "a bound takes what equals it");
        assert_eq!(buckets[1], (Some(100e-6), 1));
        assert_eq!(buckets[LATENCY_BUCKETS], (None, 1));

        let s = KafkaStats::new(&["a".to_string()]);
        let old = s.topic("a").expect("declared");
        old.produced(3, 30);
        let seen = s.topics_changed().epoch();
        s.remove_topic("a");
        assert!(s.topic("a").is_none());
        let new = s.add_topic("a");
        assert_eq!(new.records_in.get(), 0);
        assert!(!Rc::ptr_eq(&old, &new));
        assert_eq!(s.topics_changed().epoch(), seen + 2);
        assert_eq!(Api::of(&[0, 22, 0]), Api::InitProducerId);
        assert_eq!(Api::of(&[0, 19]).label(), "other");
    }
}
