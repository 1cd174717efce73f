//! What one core's front end serves: its placement of partitions (which are here,
//! which core owns the others), its limits, how clients reach the cores (the mode),
//! and what it does about topics (the policy). It holds the core's log, its
//! idempotent producers' state, its request memory and its way to the other cores.
//!
//! A partition is placed by one fixed rule (`tidewater_shards::partition_owner`);
//! the broker only applies it. Its own part of a topic change (creating or deleting
//! this core's partitions) is here; the coordination across cores is in
//! `topic_changes.rs`.
//!
//! Never: touches another core's log or table; a change on another core arrives as
//! a request through the mesh.

use crate::error::KafkaError;
use crate::idempotence;
use crate::remote::Forwarder;
use crate::stats::KafkaStats;
use kafka_protocol::ResponseError;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tidewater_io::ShardLog;
use tidewater_shards::{partition_name, PartitionTable};

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
        }
    }
}

/// What one core's front end serves.
pub struct Broker {
    pub shard: u32,
    /// Every topic and its partitions; grows when CreateTopics adds one.
    table: RefCell<PartitionTable>,
    pub log: Rc<ShardLog>,
    pub advertised_host: String,
    pub base_port: u16,
    pub limits: Limits,
    /// (topic, partition) -> the log's partition id, for partitions this core owns.
    partitions: RefCell<HashMap<(String, i32), u32>>,
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

/// Where a (topic, partition) lives, seen from this core.
pub enum Placement {
    Here(u32),
    /// Owned by that core.
    Elsewhere(u32),
    Unknown,
}

impl Placement {
    /// The log's partition id when this core owns it, else the Kafka error to send
    /// (a code alone: the client refreshes its metadata).
    pub fn owned(self) -> Result<u32, KafkaError> {
        match self {
            Placement::Here(id) => Ok(id),
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
        // What Metadata tells clients: host, base port, and how cores are reached.
        (advertised_host, base_port, mode): (String, u16, Mode),
        limits: Limits,
        stats: Rc<KafkaStats>,
        topics: TopicPolicy,
    ) -> Self {
        assert!(
            limits.request_bytes_max <= limits.request_memory_bytes_max,
            "a request of request_bytes_max must fit the memory budget"
        );
        assert!(
            limits.fetch_bytes_max <= limits.request_memory_bytes_max,
            "an answer of fetch_bytes_max must fit the memory budget"
        );
        let mut partitions = HashMap::new();
        for (topic, p) in table.owned_by(shard) {
            if let Some(id) = log.partition_id(&partition_name(topic, p)) {
                partitions.insert((topic.to_string(), p as i32), id);
            }
        }
        Broker {
            shard,
            table: RefCell::new(table),
            log,
            advertised_host,
            base_port,
            limits,
            partitions: RefCell::new(partitions),
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
        }
    }

    pub fn place(&self, topic: &str, partition: i32) -> Placement {
        if let Some(&id) = self
            .partitions
            .borrow()
            .get(&(topic.to_string(), partition))
        {
            return Placement::Here(id);
        }
        let table = self.table.borrow();
        let known = table
            .topic(topic)
            .is_some_and(|t| partition >= 0 && (partition as u32) < t.partitions);
        if known {
            Placement::Elsewhere(tidewater_shards::partition_owner(
                partition as u32,
                table.shard_count(),
            ))
        } else {
            Placement::Unknown
        }
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
    pub async fn add_topic(&self, name: &str, partitions: u32) -> Result<(), KafkaError> {
        let shards = self.table.borrow().shard_count();
        let mut made = Vec::new();
        for p in
            (0..partitions).filter(|&p| tidewater_shards::partition_owner(p, shards) == self.shard)
        {
            let pname = partition_name(name, p);
            match self.log.create_partition(&pname) {
                Ok(_) => made.push(pname),
                Err(e) => {
                    for m in &made {
                        if let Err(undo) = self.log.delete_partition(m).await {
                            tracing::error!(partition = %m, "cannot undo a partial topic creation: {undo}");
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
        for (p, pname) in (0..partitions)
            .filter(|&p| tidewater_shards::partition_owner(p, shards) == self.shard)
            .zip(&made)
        {
            if let Some(id) = self.log.partition_id(pname) {
                self.partitions
                    .borrow_mut()
                    .insert((name.to_string(), p as i32), id);
            }
        }
        self.table.borrow_mut().add_topic(tidewater_shards::Topic {
            name: name.to_string(),
            partitions,
        });
        self.stats.add_topic(name);
        Ok(())
    }

    /// Deletes this core's partitions of a topic (DeleteTopics) and forgets it.
    pub async fn remove_topic(&self, name: &str) -> Result<(), KafkaError> {
        let shards = self.table.borrow().shard_count();
        let partitions = self.table.borrow().topic(name).map_or(0, |t| t.partitions);
        // Out of the table first: Metadata stops naming it, new requests for it get
        // UNKNOWN_TOPIC_OR_PARTITION while the data goes.
        self.table.borrow_mut().remove_topic(name);
        for p in
            (0..partitions).filter(|&p| tidewater_shards::partition_owner(p, shards) == self.shard)
        {
            self.partitions
                .borrow_mut()
                .remove(&(name.to_string(), p as i32));
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
        self.stats.remove_topic(name);
        Ok(())
    }

    pub fn port_of(&self, shard: u32) -> i32 {
        i32::from(self.base_port) + shard as i32
    }
}
