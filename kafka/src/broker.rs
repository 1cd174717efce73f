//! What one core's front end serves: its placement of partitions (which are here,
//! which core owns the others), its limits, how clients reach the cores (the mode),
//! and what it does about topics (the policy). It holds the core's log, its
//! idempotent producers' state, its request memory, its group coordinator and its
//! way to the other cores.
//!
//! A partition is placed by one fixed rule (`tidewater_shards::partition_owner`);
//! the broker only applies it. Its own part of a topic change (creating or deleting
//! this core's partitions) is here; the coordination across cores is in
//! `topic_changes.rs`.
//!
//! Never: touches another core's log or table; a change on another core arrives as
//! a request through the mesh.

use crate::error::KafkaError;
use crate::groups::{Coordinator, GroupConfig};
use crate::idempotence;
use crate::remote::Forwarder;
use crate::stats::{KafkaStats, TopicStats};
use crate::topic_config::{ServerDefaults, TopicConfig};
use kafka_protocol::ResponseError;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tidewater_io::ShardLog;
use tidewater_shards::{partition_name, partition_owner, PartitionTable};

/// Limits of the front end (per core).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body read from a socket.
    pub request_bytes_max: usize,
    /// Request bodies one core holds at once, over all its connections; a connection
    /// reserves its request's size before reading it and waits while the budget is
    /// spent (that wait is the back-pressure on producers).
    pub request_memory_bytes_max: usize,
    /// Connections one core serves at once; more are closed at accept.
    pub connections_max: usize,
    /// Requests one connection may have read and not yet answered: the next request
    /// is read (and a produce gets its offsets) while earlier ones wait for their
    /// journal write; answers leave in request order.
    pub in_flight_requests_max: usize,
    /// Longest a Fetch waits for data (the client's max_wait is capped to this).
    pub fetch_wait_ms_max: u64,
    /// Largest Fetch answer over all its partitions (the client's max_bytes is
    /// capped to this); taken from the request memory until it is written.
    pub fetch_bytes_max: usize,
    /// Longest a request body may take to arrive once its size is read, and an
    /// answer to be taken by the client.
    pub request_timeout_ms: u64,
    /// Longest a connection may wait for its next request before it is closed.
    pub connections_max_idle_ms: u64,
    /// New connections one client IP may open to a core per second; more are
    /// closed at accept. 0: no limit.
    pub connection_creation_rate_per_ip: u32,
    /// How long a SASL session lasts before the client must authenticate again on
    /// its connection (KIP-368); 0: for the connection's life.
    pub connections_max_reauth_ms: u64,
    /// How long the answer to a failed SASL authentication waits (the connection
    /// then closes): a password guesser gets one guess per this per connection.
    pub connection_failed_authentication_delay_ms: u64,
    /// Failed SASL authentications one client IP may make on a core per minute;
    /// beyond it the IP's authentications fail unchecked until the minute ends.
    /// 0: no limit.
    pub failed_authentications_per_ip_per_minute: u32,
    /// The group coordinator's timeouts and limits.
    pub groups: GroupConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: 100 << 20,
            request_memory_bytes_max: 256 << 20,
            connections_max: 10_000,
            in_flight_requests_max: 16,
            fetch_wait_ms_max: 30_000,
            // Kafka's fetch.max.bytes.
            fetch_bytes_max: 55 << 20,
            request_timeout_ms: 30_000,
            // Kafka's connections.max.idle.ms.
            connections_max_idle_ms: 600_000,
            // Kafka's connection_creation_rate quota is unset by default too.
            connection_creation_rate_per_ip: 0,
            // Kafka's connections.max.reauth.ms and
            // connection.failed.authentication.delay.ms.
            connections_max_reauth_ms: 0,
            connection_failed_authentication_delay_ms: 100,
            failed_authentications_per_ip_per_minute: 30,
            groups: GroupConfig::default(),
        }
    }
}

/// How a core's front end serves, as the binary configures it.
pub struct Serving {
    /// How clients reach the cores.
    pub mode: Mode,
    pub limits: Limits,
    pub topics: TopicPolicy,
    pub users: std::sync::Arc<crate::sasl::users::Users>,
    pub authorizer: std::sync::Arc<crate::acl::Authorizer>,
    pub quotas: std::sync::Arc<crate::quota::Quotas>,
}

/// What one core's front end serves.
pub struct Broker {
    pub shard: u32,
    /// Every topic and its partitions; grows when CreateTopics adds one.
    table: RefCell<PartitionTable>,
    pub log: Rc<ShardLog>,
    pub limits: Limits,
    /// Every topic of the table as this core places its partitions, by name.
    placements: RefCell<HashMap<String, Rc<TopicPlacement>>>,
    /// Topics created at run time, and when set, unknown topics too.
    pub topics: TopicPolicy,
    /// One topic creation or deletion at a time (on core 0, which coordinates them).
    topic_changes: glommio::sync::Semaphore,
    /// Idempotent producers' sequence state for this core's partitions.
    pub producers: RefCell<idempotence::Producers>,
    /// Open connections (at most `limits.connections_max`).
    pub connections: Cell<usize>,
    /// This core's counters, which the binary exports.
    pub stats: Rc<KafkaStats>,
    pub mode: Mode,
    /// The way to the other cores (set once connected): topic creation in both
    /// modes, and the parts of requests other cores own in single-port mode.
    forward: std::cell::OnceCell<Forwarder>,
    /// The request memory budget, in bytes.
    pub memory: Rc<glommio::sync::Semaphore>,
    /// Failed appends are logged at most once per `APPEND_FAILURE_LOG_EVERY`.
    pub append_failures: LogThrottle,
    /// Failed TLS handshakes are logged at most every [`APPEND_FAILURE_LOG_EVERY`].
    pub tls_failures: LogThrottle,
    /// New connections per client IP this second.
    pub ip_rate: crate::ip_rate::IpRate,
    /// Connections closed for their IP's rate are logged at most every period.
    pub rate_refusals: LogThrottle,
    /// The SASL users (every core's, one file).
    pub users: std::sync::Arc<crate::sasl::users::Users>,
    /// Who may do what (every core's, one file of ACLs).
    pub authorizer: std::sync::Arc<crate::acl::Authorizer>,
    /// The client quotas (every core's, one file), and what this core's clients
    /// used of them.
    pub quotas: std::sync::Arc<crate::quota::Quotas>,
    pub quota_usage: crate::quota::Usage,
    /// Failed SASL authentications per client IP this minute.
    pub failed_logins: crate::ip_rate::IpRate,
    /// Failed SASL authentications are logged at most every period, and so are
    /// IPs over their limit of them.
    pub sasl_failures: LogThrottle,
    pub sasl_limited: LogThrottle,
    /// The consumer groups this core coordinates.
    pub groups: Rc<Coordinator>,
    /// The server's settings a topic's own configs fall back to.
    pub defaults: ServerDefaults,
    /// Topics' own configs (every topic's, on every core).
    topic_configs: RefCell<HashMap<String, TopicConfig>>,
}

/// How often a core logs failed appends while they keep failing (a full disk fails
/// every append of every request: a line each would flood the log).
pub const APPEND_FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// At most one log line per period for a failure that repeats; counts the rest.
#[derive(Default)]
pub struct LogThrottle {
    next: Cell<Option<std::time::Instant>>,
    suppressed: Cell<u64>,
}

impl LogThrottle {
    /// `Some(n)`: log now, saying `n` more happened since the last line; `None`:
    /// counted, not logged.
    pub fn admit(&self, now: std::time::Instant, every: std::time::Duration) -> Option<u64> {
        if self.next.get().is_some_and(|t| now < t) {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.next.set(Some(now + every));
        Some(self.suppressed.replace(0))
    }
}

/// What the front end does about topics that are not declared.
#[derive(Clone, Debug, Default)]
pub struct TopicPolicy {
    /// Where topics created at run time are recorded (they survive restarts).
    pub file: Option<std::path::PathBuf>,
    /// Create unknown topics a client asks for in Metadata, with this many
    /// partitions (`None`: off, the default).
    pub auto_create_partitions: Option<u32>,
    /// Partitions of a CreateTopics that asks for the default (-1).
    pub default_partitions: u32,
    /// Topics DeleteTopics refuses, and why (declared in the config, used by a job).
    pub protected: HashMap<String, String>,
    /// Where topics' own configs are recorded (`topic_configs.json`).
    pub configs_file: Option<std::path::PathBuf>,
    /// Topics' own configs at start.
    pub configs: HashMap<String, TopicConfig>,
}

/// How clients reach the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Core `i` is broker `i` on port + `i`.
    PerCore,
    /// One port on every core; other cores' partitions are forwarded.
    SinglePort,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "per-core" => Ok(Mode::PerCore),
            "single-port" => Ok(Mode::SinglePort),
            other => Err(format!("kafka_mode {other:?}: use per-core or single-port")),
        }
    }
}

/// A topic as this core places it: its partition count, the log's id of each
/// partition this core owns, and its counters. A request looks its topic up once
/// (by name) and then places each partition by index, with no further look-up.
pub struct TopicPlacement {
    pub name: String,
    partitions: u32,
    /// The log's id of each partition this core owns, by partition index.
    ids: Vec<Option<u32>>,
    shards: u32,
    pub stats: Rc<TopicStats>,
    /// The largest batch a producer may send to it (`max.message.bytes`).
    pub max_message_bytes: Cell<usize>,
    /// Set when the topic is deleted: a request that looked it up before then (and
    /// waited since) finds its partitions unknown, as a new look-up would.
    removed: Cell<bool>,
}

impl TopicPlacement {
    /// Where `partition` of this topic lives.
    pub fn place(self: &Rc<Self>, partition: i32) -> Placement {
        let Some(p) = u32::try_from(partition)
            .ok()
            .filter(|&p| p < self.partitions && !self.removed.get())
        else {
            return Placement::Unknown;
        };
        match self.ids.get(p as usize).copied().flatten() {
            Some(id) => Placement::Here(Local {
                topic: self.clone(),
                id,
            }),
            None => Placement::Elsewhere(partition_owner(p, self.shards)),
        }
    }
}

/// A partition this core owns.
pub struct Local {
    pub topic: Rc<TopicPlacement>,
    /// The log's id of the partition.
    pub id: u32,
}

/// Where a (topic, partition) lives, seen from this core.
pub enum Placement {
    Here(Local),
    /// Owned by that core.
    Elsewhere(u32),
    Unknown,
}

impl Placement {
    /// The partition when this core owns it, else the Kafka error to send (a code
    /// alone: the client refreshes its metadata).
    pub fn owned(self) -> Result<Local, KafkaError> {
        match self {
            Placement::Here(local) => Ok(local),
            Placement::Elsewhere(_) => Err(KafkaError::bare(ResponseError::NotLeaderOrFollower)),
            Placement::Unknown => Err(KafkaError::bare(ResponseError::UnknownTopicOrPartition)),
        }
    }
}

impl Broker {
    pub fn new(
        shard: u32,
        table: PartitionTable,
        log: Rc<ShardLog>,
        stats: Rc<KafkaStats>,
        serving: Serving,
    ) -> Self {
        let Serving {
            mode,
            limits,
            topics,
            users,
            authorizer,
            quotas,
        } = serving;
        assert!(
            limits.request_bytes_max <= limits.request_memory_bytes_max,
            "a request of request_bytes_max must fit the memory budget"
        );
        assert!(
            limits.fetch_bytes_max <= limits.request_memory_bytes_max,
            "an answer of fetch_bytes_max must fit the memory budget"
        );
        let defaults = ServerDefaults::of(log.config());
        let placements = table
            .topics()
            .iter()
            .map(|t| {
                let config = topics.configs.get(&t.name).cloned().unwrap_or_default();
                let max = config.max_message_bytes(&defaults);
                let placed = placement(&table, shard, &log, &stats, &t.name, t.partitions, max);
                (t.name.clone(), Rc::new(placed))
            })
            .collect();
        let topic_configs = RefCell::new(topics.configs.clone());
        let groups = Rc::new(Coordinator::new(
            shard,
            table.shard_count(),
            log.clone(),
            limits.groups,
        ));
        let counted = groups.clone();
        stats.count_groups_with(Box::new(move || counted.counts()));
        Broker {
            shard,
            groups,
            defaults,
            topic_configs,
            table: RefCell::new(table),
            log,
            limits,
            placements: RefCell::new(placements),
            topics,
            topic_changes: glommio::sync::Semaphore::new(1),
            producers: Default::default(),
            connections: Cell::new(0),
            stats,
            mode,
            forward: std::cell::OnceCell::new(),
            memory: Rc::new(glommio::sync::Semaphore::new(
                limits.request_memory_bytes_max as u64,
            )),
            append_failures: LogThrottle::default(),
            tls_failures: LogThrottle::default(),
            ip_rate: crate::ip_rate::IpRate::new(limits.connection_creation_rate_per_ip),
            rate_refusals: LogThrottle::default(),
            users,
            authorizer,
            quotas,
            quota_usage: Default::default(),
            failed_logins: crate::ip_rate::IpRate::new(
                limits.failed_authentications_per_ip_per_minute,
            ),
            sasl_failures: LogThrottle::default(),
            sasl_limited: LogThrottle::default(),
        }
    }

    /// A topic as this core places it (`None`: not a topic here).
    pub fn topic(&self, name: &str) -> Option<Rc<TopicPlacement>> {
        self.placements.borrow().get(name).cloned()
    }

    /// Where `partition` of `topic` lives: one look-up of the topic; a request of
    /// many partitions looks its topic up once with [`Broker::topic`] instead.
    pub fn place(&self, topic: &str, partition: i32) -> Placement {
        self.topic(topic)
            .map_or(Placement::Unknown, |t| t.place(partition))
    }

    /// The partition table as it is now.
    pub fn table(&self) -> std::cell::Ref<'_, PartitionTable> {
        self.table.borrow()
    }

    /// Single-port mode's way to the other cores' partitions.
    pub fn forwarder(&self) -> Option<&Forwarder> {
        (self.mode == Mode::SinglePort)
            .then(|| self.forward.get())
            .flatten()
    }

    /// The way to the other cores for topic changes.
    pub fn control(&self) -> Option<&Forwarder> {
        self.forward.get()
    }

    /// Keeps the way to the other cores, once connected (`owner::connect`).
    pub(crate) fn set_forwarder(&self, f: Forwarder) {
        let _ = self.forward.set(f);
    }

    /// On core 0: one topic creation or deletion at a time.
    pub(crate) fn topic_changes(&self) -> &glommio::sync::Semaphore {
        &self.topic_changes
    }

    /// Creates this core's partitions of a new topic and makes the topic known here;
    /// all or nothing: a failure deletes the partitions it made. Yields between
    /// partitions, so a large topic never holds the core from its other work.
    pub async fn add_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &TopicConfig,
    ) -> Result<(), KafkaError> {
        self.make_partitions(name, 0..partitions, config).await?;
        let mut table = self.table.borrow_mut();
        table.add_topic(tidewater_shards::Topic {
            name: name.to_string(),
            partitions,
        });
        drop(table);
        self.place_topic(name, partitions, config);
        self.set_config(name, config.clone());
        Ok(())
    }

    /// Creates this core's partitions among `range` of a topic, with the topic's
    /// limits; all or nothing (a failure deletes those it made). Yields between
    /// partitions, so a large topic never holds the core from its other work.
    async fn make_partitions(
        &self,
        name: &str,
        range: std::ops::Range<u32>,
        config: &TopicConfig,
    ) -> Result<(), KafkaError> {
        let shards = self.table.borrow().shard_count();
        let mut made = Vec::new();
        for p in range.filter(|&p| tidewater_shards::partition_owner(p, shards) == self.shard) {
            let pname = partition_name(name, p);
            match self.log.create_partition(&pname) {
                Ok(id) => {
                    self.log.set_limits(id, config.limits(&self.defaults));
                    made.push(pname)
                }
                Err(e) => {
                    for m in &made {
                        if let Err(undo) = self.log.delete_partition(m).await {
                            tracing::error!(partition = %m, "cannot undo a partial creation: {undo}");
                        }
                    }
                    return Err(KafkaError::storage(format!(
                        "core {}: cannot create partition {p} of {name}: {e}",
                        self.shard
                    )));
                }
            }
            glommio::yield_if_needed().await;
        }
        Ok(())
    }

    /// Places a topic of `partitions` partitions anew (a request that looked up the
    /// old placement finds the partitions it knew).
    fn place_topic(&self, name: &str, partitions: u32, config: &TopicConfig) {
        let table = self.table.borrow();
        let max = config.max_message_bytes(&self.defaults);
        let placed = placement(
            &table,
            self.shard,
            &self.log,
            &self.stats,
            name,
            partitions,
            max,
        );
        self.placements
            .borrow_mut()
            .insert(name.to_string(), Rc::new(placed));
    }

    /// Gives a topic `to` partitions (CreatePartitions): this core makes its new ones.
    pub async fn grow_topic(&self, name: &str, to: u32) -> Result<(), KafkaError> {
        let Some(from) = self.table.borrow().topic(name).map(|t| t.partitions) else {
            return Err(KafkaError::unknown_topic(name));
        };
        let config = self.topic_config(name);
        if to > from {
            self.make_partitions(name, from..to, &config).await?;
            self.table.borrow_mut().set_partitions(name, to);
            self.place_topic(name, to, &config);
        }
        Ok(())
    }

    /// Takes a topic back to `to` partitions (the undo of a failed CreatePartitions):
    /// this core deletes its partitions from `to` on.
    pub async fn shrink_topic(&self, name: &str, to: u32) -> Result<(), KafkaError> {
        let Some(from) = self.table.borrow().topic(name).map(|t| t.partitions) else {
            return Ok(());
        };
        let config = self.topic_config(name);
        self.table.borrow_mut().set_partitions(name, to.min(from));
        self.place_topic(name, to.min(from), &config);
        self.delete_partitions(name, to..from.max(to)).await
    }

    /// Deletes this core's partitions among `range` of a topic.
    async fn delete_partitions(
        &self,
        name: &str,
        range: std::ops::Range<u32>,
    ) -> Result<(), KafkaError> {
        let shards = self.table.borrow().shard_count();
        for p in range.filter(|&p| tidewater_shards::partition_owner(p, shards) == self.shard) {
            self.log
                .delete_partition(&partition_name(name, p))
                .await
                .map_err(|e| {
                    KafkaError::storage(format!(
                        "core {}: cannot delete partition {p} of {name}: {e}",
                        self.shard
                    ))
                })?;
        }
        Ok(())
    }

    /// A topic's own configs (empty: the server's apply).
    pub fn topic_config(&self, name: &str) -> TopicConfig {
        self.topic_configs
            .borrow()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Every topic's own configs.
    pub fn topic_configs(&self) -> HashMap<String, TopicConfig> {
        self.topic_configs.borrow().clone()
    }

    fn set_config(&self, name: &str, config: TopicConfig) {
        let mut all = self.topic_configs.borrow_mut();
        if config.is_empty() {
            all.remove(name);
        } else {
            all.insert(name.to_string(), config);
        }
    }

    /// Puts a topic's new configs in force on this core: its partitions' segment
    /// size and retention, the largest batch it takes.
    pub fn apply_topic_config(&self, name: &str, config: TopicConfig) -> Result<(), KafkaError> {
        let Some(topic) = self.topic(name) else {
            return Err(KafkaError::unknown_topic(name));
        };
        let limits = config.limits(&self.defaults);
        for id in topic.ids.iter().flatten() {
            self.log.set_limits(*id, limits);
        }
        topic
            .max_message_bytes
            .set(config.max_message_bytes(&self.defaults));
        self.set_config(name, config);
        Ok(())
    }

    /// Deletes this core's partitions of a topic (DeleteTopics) and forgets it.
    pub async fn remove_topic(&self, name: &str) -> Result<(), KafkaError> {
        let partitions = self.table.borrow().topic(name).map_or(0, |t| t.partitions);
        // Out of the table first: Metadata stops naming it, new requests for it get
        // UNKNOWN_TOPIC_OR_PARTITION while the data goes.
        self.table.borrow_mut().remove_topic(name);
        if let Some(gone) = self.placements.borrow_mut().remove(name) {
            gone.removed.set(true);
        }
        self.delete_partitions(name, 0..partitions).await?;
        self.stats.remove_topic(name);
        self.topic_configs.borrow_mut().remove(name);
        self.groups.forget_topic(name).await;
        Ok(())
    }

    /// How many brokers clients see: every core (per-core mode), or one.
    pub fn brokers(&self) -> u32 {
        match self.mode {
            Mode::SinglePort => 1,
            Mode::PerCore => self.table.borrow().shard_count(),
        }
    }
}

/// How core `shard` places topic `name` of `table`, with the log's id of each
/// partition it owns and the largest batch it takes; its counters are taken from
/// `stats` (made there if new).
fn placement(
    table: &PartitionTable,
    shard: u32,
    log: &ShardLog,
    stats: &KafkaStats,
    name: &str,
    partitions: u32,
    max_message_bytes: usize,
) -> TopicPlacement {
    let shards = table.shard_count();
    let ids = (0..partitions)
        .map(|p| {
            (partition_owner(p, shards) == shard)
                .then(|| log.partition_id(&partition_name(name, p)))
                .flatten()
        })
        .collect();
    TopicPlacement {
        name: name.to_string(),
        partitions,
        ids,
        shards,
        stats: stats.add_topic(name),
        max_message_bytes: Cell::new(max_message_bytes),
        removed: Cell::new(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_per_period_with_the_count_between() {
        let t = LogThrottle::default();
        let every = std::time::Duration::from_secs(10);
        let t0 = std::time::Instant::now();
        assert_eq!(t.admit(t0, every), Some(0), "the first is logged");
        for i in 1..=999 {
            let at = t0 + std::time::Duration::from_millis(i);
            assert_eq!(t.admit(at, every), None, "within the period: counted");
        }
        assert_eq!(
            t.admit(t0 + every, every),
            Some(999),
            "the next line says how many went unlogged"
        );
        assert_eq!(t.admit(t0 + every, every), None);
    }

    #[test]
    fn a_topic_places_its_partitions_by_index_with_one_rule() {
        let stats = KafkaStats::default();
        let t = Rc::new(TopicPlacement {
            name: "t".into(),
            partitions: 4,
            ids: vec![Some(7), None, Some(9), None],
            shards: 2,
            stats: stats.add_topic("t"),
            max_message_bytes: Cell::new(1 << 20),
            removed: Cell::new(false),
        });
        assert!(matches!(t.place(2), Placement::Here(Local { id: 9, .. })));
        assert!(matches!(t.place(3), Placement::Elsewhere(1)));
        assert!(matches!(t.place(4), Placement::Unknown));
        assert!(matches!(t.place(-1), Placement::Unknown));
        let not_here = t.place(1).owned().map(|l| l.id);
        assert_eq!(not_here.map_err(|e| e.code()), Err(6));
        t.removed.set(true);
        assert!(matches!(t.place(2), Placement::Unknown), "deleted since");
    }
}
