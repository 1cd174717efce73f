//! The front end's Prometheus series on one core: handles into the families the
//! binary's registry holds ([`KafkaFamilies`]), one add per request or batch, never
//! per record.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;

pub type Labels = Vec<(String, String)>;
pub type Hist = Family<Labels, Histogram, fn() -> Histogram>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The registry's families the front end writes.
#[derive(Clone)]
pub struct KafkaFamilies {
    pub records_in: Family<Labels, Counter>,
    pub bytes_in: Family<Labels, Counter>,
    pub records_out: Family<Labels, Counter>,
    pub request_seconds: Hist,
    pub append_seconds: Hist,
    pub connections: Family<Labels, Gauge>,
    pub requests_in_flight: Family<Labels, Gauge>,
    pub request_buffers_pooled: Family<Labels, Gauge>,
    pub protocol_violations: Family<Labels, Counter>,
    pub cross_core_forwards: Family<Labels, Counter>,
}

/// The front end's handles on one core.
pub struct KafkaMetrics {
    pub shard: String,
    topics: std::cell::RefCell<HashMap<String, (Counter, Counter, Counter)>>,
    requests: std::cell::RefCell<HashMap<&'static str, Histogram>>,
    pub append_seconds: Histogram,
    pub connections: Gauge,
    pub requests_in_flight: Gauge,
    pub request_buffers_pooled: Gauge,
    pub protocol_violations: Counter,
    forwards: Counter,
    families: KafkaFamilies,
}

impl KafkaMetrics {
    pub fn new(m: KafkaFamilies, shard: u32, topics: &[String]) -> KafkaMetrics {
        let s = shard.to_string();
        let topics = topics
            .iter()
            .map(|t| (t.clone(), topic_series(&m, &s, t)))
            .collect();
        let l = labels(&[("shard", &s)]);
        let gauge = |f: &Family<Labels, Gauge>| f.get_or_create(&l).clone();
        let counter = |f: &Family<Labels, Counter>| f.get_or_create(&l).clone();
        KafkaMetrics {
            topics: std::cell::RefCell::new(topics),
            forwards: counter(&m.cross_core_forwards),
            requests: Default::default(),
            append_seconds: m.append_seconds.get_or_create(&l).clone(),
            connections: gauge(&m.connections),
            requests_in_flight: gauge(&m.requests_in_flight),
            request_buffers_pooled: gauge(&m.request_buffers_pooled),
            protocol_violations: counter(&m.protocol_violations),
            shard: s,
            families: m.clone(),
        }
    }

    /// Series for a topic created at run time.
    pub fn add_topic(&self, topic: &str) {
        self.topics
            .borrow_mut()
            .entry(topic.to_string())
            .or_insert_with(|| topic_series(&self.families, &self.shard, topic));
    }

    /// Drops a deleted topic's series on this core, so that a scrape stops showing
    /// it (a topic created again later starts from zero).
    pub fn remove_topic(&self, topic: &str) {
        self.topics.borrow_mut().remove(topic);
        let l = labels(&[("shard", &self.shard), ("topic", topic)]);
        for family in [
            &self.families.records_in,
            &self.families.bytes_in,
            &self.families.records_out,
        ] {
            family.remove(&l);
        }
    }

    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if let Some((r, b, _)) = self.topics.borrow().get(topic) {
            r.inc_by(records);
            b.inc_by(bytes);
        }
    }

    /// A partition's part of a request sent to its owner (single-port mode).
    pub fn forwarded(&self) {
        self.forwards.inc();
    }

    pub fn fetched(&self, topic: &str, records: u64) {
        if let Some((_, _, o)) = self.topics.borrow().get(topic) {
            o.inc_by(records);
        }
    }

    pub fn request(&self, api: &'static str, seconds: f64) {
        let mut map = self.requests.borrow_mut();
        map.entry(api)
            .or_insert_with(|| {
                self.families
                    .request_seconds
                    .get_or_create(&labels(&[("shard", &self.shard), ("api", api)]))
                    .clone()
            })
            .observe(seconds);
    }
}

fn topic_series(m: &KafkaFamilies, shard: &str, topic: &str) -> (Counter, Counter, Counter) {
    let l = labels(&[("shard", shard), ("topic", topic)]);
    (
        m.records_in.get_or_create(&l).clone(),
        m.bytes_in.get_or_create(&l).clone(),
        m.records_out.get_or_create(&l).clone(),
    )
}
