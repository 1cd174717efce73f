//! Tidewater's schema registry, as the Confluent Schema Registry keeps its state:
//! subjects with numbered versions, each naming a schema by a global id; one id per
//! distinct schema (by Avro's parsing canonical form), whatever the subject; soft
//! and hard deletes; a compatibility level, global or per subject, decided by
//! Avro's schema-resolution rules (`compat`).
//!
//! `store` is the state and the records that change it: a command (register,
//! delete, set a level) is checked against the state and returns the records to
//! make durable; only [`store::Registry::apply`] changes the state, at start (replay)
//! and once a record is durable, so a replay gives the same ids and versions.
//!
//! Never: does I/O (the records' storage and the REST listener are the server's),
//! or accepts a schema it has not parsed. Avro only: JSON Schema and Protobuf are
//! refused with Confluent's invalid-schema error saying so.

pub mod compat;
pub mod store;

pub use compat::Level;
pub use store::{Record, Registry, RegistryError};
