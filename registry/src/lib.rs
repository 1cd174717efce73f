//! Tidewater's schema registry, as the Confluent Schema Registry keeps its state:
//! subjects with numbered versions, each naming a schema by a global id; one id per
//! distinct schema (as Avro parses it, spacing aside), whatever the subject; soft
//! and hard deletes; a compatibility level, global or per subject, decided by
//! Avro's schema-resolution rules (`compat`).
//!
//! `store` is the state and the records that change it: a command (register,
//! delete, set a level) is checked against the state and returns the records to
//! make durable; only [`store::Registry::apply`] changes the state, at start (replay)
//! and once a record is durable, so a replay gives the same ids and versions.
//!
//! `refs` makes a schema with references whole; `api` is the REST API as a pure
//! function of the state.
//!
//! Never: does I/O (the records' storage and the REST listener are the server's),
//! or accepts a schema it has not parsed. Avro only: JSON Schema and Protobuf are
//! refused with Confluent's invalid-schema error saying so.

pub mod api;
pub mod compat;
pub mod guard;
pub mod refs;
pub mod store;
pub mod valid;

pub use compat::Level;
pub use refs::Reference;
pub use store::{Record, Registry, RegistryError};

use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The internal topic whose partition 0 keeps the registry's records (on core 0,
/// the core that serves the REST API), as Confluent's and Redpanda's `_schemas`.
pub const SCHEMAS_TOPIC: &str = "_schemas";

/// The registry as every core sees it. The core serving the REST API writes it,
/// once a record is durable; jobs read it only when their own per-core cache
/// misses (a schema id seen for the first time), never per record. Control-plane
/// state changed a few times a day: a lock here costs nothing on the data path.
#[derive(Clone, Default, Debug)]
pub struct Shared(Arc<RwLock<Registry>>);

impl Shared {
    pub fn new(r: Registry) -> Shared {
        Shared(Arc::new(RwLock::new(r)))
    }

    /// The state now. (A holder that panicked left a consistent state: records
    /// are applied whole, one `apply` at a time.)
    pub fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies durable records.
    pub fn apply(&self, records: impl IntoIterator<Item = Record>) {
        let mut r = self.0.write().unwrap_or_else(|p| p.into_inner());
        records.into_iter().for_each(|rec| r.apply(rec));
    }

    /// Replaces the state (at start, with the replayed one).
    pub fn replace(&self, r: Registry) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = r;
    }
}
