//! Tidewater's Kafka front end: the Kafka wire protocol on each core. It owns the
//! connections (framing, request memory, pipelining), the front end's limits, one
//! handler per API, topic changes across cores, and the forwarding of a request's
//! parts to the cores that own them.
//!
//! Layers, each using only the ones below it:
//!
//! - `connection`: accept loops, TLS handshakes, framing, pipelining, dispatch, why
//!   a connection closed, and the SASL gate; `listener`: what a listener's
//!   connections see (its advertised address, its TLS configuration, its SASL
//!   mechanisms) and who a client is (its principal); `sasl`: the mechanisms, the
//!   users (`users.json`) and a connection's authentication;
//! - `handlers/`: one file per API; `owner`: what other cores ask of this one;
//! - `topic_changes`: CreateTopics and DeleteTopics across cores, and `topics_file`
//!   (`topics.json`);
//! - `broker`: placement, limits, mode, topic policy, this core's log and its group
//!   coordinator;
//! - `groups`: the consumer groups this core coordinates and their committed
//!   offsets (`docs/consumer-groups.md`);
//! - `remote` (what crosses between cores) over `forward` (the mesh, transport only);
//! - beside them: `error` ([`KafkaError`]), `stats` ([`KafkaStats`]),
//!   `topic_config` (a topic's own configs), `batch`
//!   (record batch checks), `idempotence`, `budget` (request memory), `bodies`
//!   (buffer pool), `ip_rate` (new connections per client IP per second).
//!
//! Per-core brokers (the default): core `i` listens on `PORT + i` and Metadata names
//! each core as its own broker (node id `i`) and each partition's leader as its owning
//! core, so an unmodified client sends every partition's data straight to the core
//! that owns it. A request for a partition another core owns gets
//! NOT_LEADER_OR_FOLLOWER (the client refreshes its metadata).
//!
//! Single port: every core listens on `PORT` (SO_REUSEPORT; the binary places each
//! connection on the core of the CPU that received its packets), Metadata names
//! one broker, and a core forwards the parts of a request that other cores own to
//! them. Every accepted connection is counted, and whether it was received on
//! another CPU than its core's (`SO_INCOMING_CPU`).
//!
//! Each core serves every listener it is given (`[[listeners]]`); a connection's
//! Metadata names the addresses of the listener it came in on.
//!
//! Never: speaks Prometheus (it keeps plain counters, [`KafkaStats`], that the binary
//! exports); reads a configuration file (the binary hands over [`Limits`], [`Mode`]
//! and [`TopicPolicy`]); blocks a core on a file-system call of its own
//! (`topics.json` goes through `tidewater_io::fs`; only the start-up read, before
//! any core serves, blocks; creating a partition is the log's own call,
//! `ShardLog::create_partition`); or touches another core's log or table (it asks
//! that core through the mesh). Codecs come from the `kafka-protocol` crate.

pub mod acl;
mod authorize;
pub mod batch;
mod bodies;
mod broker;
mod budget;
mod connection;
mod dispatch;
pub mod error;
mod forward;
pub mod groups;
mod handlers;
mod idempotence;
pub mod ip_rate;
pub mod listener;
mod owner;
pub mod quota;
mod remote;
pub mod sasl;
pub mod shared_file;
pub mod stats;
mod topic_changes;
pub mod topic_config;
pub mod topics_file;

pub use broker::{Broker, Limits, LogThrottle, Mode, Serving, TopicPolicy};
pub use connection::serve;
pub use error::KafkaError;
pub use groups::{GroupConfig, OFFSETS_TOPIC};
pub use listener::{Endpoint, TlsConfig};
pub use owner::connect as connect_forwarding;
pub use remote::{mesh, ForwardMail};
pub use stats::KafkaStats;
