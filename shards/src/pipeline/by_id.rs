//! `avro-confluent` records: magic byte 0, a 4-byte schema id, an Avro datum
//! written with that schema. Each writer schema is resolved to the job's reader
//! schema once per core ([`Projection::compile`], Avro's resolution rules), then
//! cached: after an id's first record, a record costs one map lookup more than
//! plain Avro.
//!
//! Writer schemas come from the job's static `schemas` table (air-gapped setups)
//! and, for every other id, from the server's schema registry, looked up on the
//! first record with that id on this core. An id the registry does not know is
//! not cached (a producer registers before it sends, so the next record may find
//! it); a writer schema that cannot be resolved to the reader is cached as such
//! (an id's schema never changes). Either way the record is a dead letter with
//! the reason.
//!
//! Owns the per-core cache (at most [`CACHE_ENTRIES_MAX`] ids a job and core; full,
//! it starts again). Never takes the registry's lock for an id it has seen.

use super::avro::{DecodeError, Projected, Projection, ReaderFields};
use apache_avro::Schema;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Writer schemas a job keeps resolved on one core.
pub const CACHE_ENTRIES_MAX: usize = 1024;

/// The server's registry, and the series that count the cache.
#[derive(Clone, Debug)]
pub struct RegistryLink {
    pub registry: tidewater_registry::Shared,
    /// Entries over every job's cache on every core.
    pub entries: Gauge,
    pub misses: Counter,
}

/// Projections by writer schema id.
#[derive(Debug)]
pub struct ByIds {
    fixed: BTreeMap<u32, Projection>,
    reader: Schema,
    fields: ReaderFields,
    registry: Option<RegistryLink>,
    cache: RefCell<hashbrown::HashMap<u32, Result<Projection, String>>>,
}

impl Clone for ByIds {
    /// A copy for another core: the same schemas, an empty cache.
    fn clone(&self) -> ByIds {
        ByIds {
            fixed: self.fixed.clone(),
            reader: self.reader.clone(),
            fields: self.fields.clone(),
            registry: self.registry.clone(),
            cache: RefCell::default(),
        }
    }
}

impl Drop for ByIds {
    fn drop(&mut self) {
        if let Some(link) = &self.registry {
            link.entries.dec_by(self.cache.borrow().len() as i64);
        }
    }
}

impl ByIds {
    pub fn new(fixed: BTreeMap<u32, Projection>, reader: Schema, fields: ReaderFields) -> ByIds {
        ByIds {
            fixed,
            reader,
            fields,
            registry: None,
            cache: RefCell::default(),
        }
    }

    /// Whether ids outside the static table can be read (set by the server).
    pub fn has_fixed(&self) -> bool {
        !self.fixed.is_empty()
    }

    pub fn link(&mut self, link: RegistryLink) {
        self.registry = Some(link);
    }

    /// Reads the fields the job needs out of one framed record value.
    #[inline]
    pub fn project<'a>(&self, value: &'a [u8], out: &mut Projected<'a>) -> Result<(), DecodeError> {
        let (id, datum) = match value {
            [0, a, b, c, d, datum @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), datum),
            _ => {
                return Err(DecodeError(
                    "not in the confluent framing (magic byte 0 + 4-byte schema id)".into(),
                ))
            }
        };
        if let Some(p) = self.fixed.get(&id) {
            return p.project(datum, out);
        }
        if let Some(found) = self.cache.borrow().get(&id) {
            return match found {
                Ok(p) => p.project(datum, out),
                Err(why) => Err(DecodeError(why.clone())),
            };
        }
        self.resolve(id)?;
        match self.cache.borrow().get(&id) {
            Some(Ok(p)) => p.project(datum, out),
            Some(Err(why)) => Err(DecodeError(why.clone())),
            None => Err(DecodeError(format!("unknown schema id {id}"))),
        }
    }

    /// Looks `id` up in the registry and caches what it resolves to; an error
    /// when the registry does not know it (not cached).
    #[cold]
    fn resolve(&self, id: u32) -> Result<(), DecodeError> {
        let Some(link) = &self.registry else {
            return Err(DecodeError(format!(
                "unknown schema id {id} (not in the job's `schemas`, and no schema registry)"
            )));
        };
        link.misses.inc();
        let text = match link.registry.read().whole_schema(id) {
            Ok(text) => text,
            Err(_) => {
                return Err(DecodeError(format!(
                    "unknown schema id {id}: not in the schema registry"
                )))
            }
        };
        let resolved = Schema::parse_str(&text)
            .map_err(|e| format!("schema id {id} is not valid Avro: {e}"))
            .and_then(|writer| {
                Projection::compile(&writer, &self.reader, &self.fields).map_err(|e| {
                    format!(
                        "writer schema id {id} cannot be read with the job's reader schema: {e}"
                    )
                })
            });
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_ENTRIES_MAX {
            link.entries.dec_by(cache.len() as i64);
            cache.clear();
        }
        cache.insert(id, resolved);
        link.entries.inc();
        Ok(())
    }
}
