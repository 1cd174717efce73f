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
use std::cell::{Cell, RefCell};
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
    cache: RefCell<Cache>,
    /// The id of the last record and its entry: records of one producer mostly
    /// share an id, and then cost a compare.
    last: Cell<Option<(u32, usize)>>,
}

/// Ids resolved on this core: the projection, or why there is none.
#[derive(Debug, Default)]
struct Cache {
    index: hashbrown::HashMap<u32, usize>,
    entries: Vec<Result<Projection, String>>,
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
            last: Cell::new(None),
        }
    }
}

impl Drop for ByIds {
    fn drop(&mut self) {
        if let Some(link) = &self.registry {
            link.entries
                .dec_by(self.cache.borrow().entries.len() as i64);
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
            last: Cell::new(None),
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
        let at = match self.last.get() {
            Some((last, at)) if last == id => at,
            _ => self.entry(id)?,
        };
        match self.cache.borrow().entries.get(at) {
            Some(Ok(p)) => p.project(datum, out),
            Some(Err(why)) => Err(DecodeError(why.clone())),
            None => Err(DecodeError(format!("unknown schema id {id}"))),
        }
    }

    /// The cache entry of `id`, made on its first record: the static table's
    /// projection, else the registry's schema resolved.
    #[cold]
    fn entry(&self, id: u32) -> Result<usize, DecodeError> {
        let known = self.cache.borrow().index.get(&id).copied();
        let at = match known {
            Some(at) => at,
            None => {
                let resolved = match self.fixed.get(&id) {
                    Some(p) => Ok(p.clone()),
                    None => self.resolve(id)?,
                };
                self.insert(id, resolved)
            }
        };
        self.last.set(Some((id, at)));
        Ok(at)
    }

    fn insert(&self, id: u32, resolved: Result<Projection, String>) -> usize {
        let mut cache = self.cache.borrow_mut();
        if cache.entries.len() >= CACHE_ENTRIES_MAX {
            if let Some(link) = &self.registry {
                link.entries.dec_by(cache.entries.len() as i64);
            }
            *cache = Cache::default();
            self.last.set(None);
        }
        cache.entries.push(resolved);
        let at = cache.entries.len() - 1;
        cache.index.insert(id, at);
        if let Some(link) = &self.registry {
            link.entries.inc();
        }
        at
    }

    /// Looks `id` up in the registry: what it resolves to (to cache), or an error
    /// when the registry does not know it (not cached).
    fn resolve(&self, id: u32) -> Result<Result<Projection, String>, DecodeError> {
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
        let compiled = tidewater_registry::guard::contained("resolving a writer schema", || {
            Schema::parse_str(&text)
                .map_err(|e| format!("schema id {id} is not valid Avro: {e}"))
                .and_then(|writer| {
                    Projection::compile(&writer, &self.reader, &self.fields).map_err(|e| {
                        format!(
                            "writer schema id {id} cannot be read with the job's reader schema: {e}"
                        )
                    })
                })
        });
        Ok(compiled.and_then(|c| c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::avro::reader_fields;

    const READER: &str = r#"{"type":"record","name":"R","fields":[{"name":"k","type":"string"},{"name":"v","type":"long","default":7}]}"#;

    fn registered(reg: &tidewater_registry::Shared, subject: &str, text: &str) -> u32 {
        let (id, records) = reg.read().register(subject, text, None, &[]).unwrap();
        reg.apply(records);
        id
    }

    fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(datum);
        v
    }

    #[test]
    fn ids_are_looked_up_once_and_unknown_ones_again_later() {
        let reader = Schema::parse_str(READER).unwrap();
        let fields = reader_fields(&reader, &["k", "v"], "k").unwrap();
        let mut by_id = ByIds::new(Default::default(), reader, fields);
        let link = RegistryLink {
            registry: Default::default(),
            entries: Default::default(),
            misses: Default::default(),
        };
        by_id.link(link.clone());
        // A writer without `v`: the reader's default fills it.
        let writer = r#"{"type":"record","name":"R","fields":[{"name":"k","type":"string"}]}"#;
        let one = framed(1, &[2, b'a']);
        let mut out = Projected::default();
        let e = by_id.project(&one, &mut out).unwrap_err();
        assert!(e.0.contains("unknown schema id 1"), "{e:?}");
        assert_eq!(registered(&link.registry, "s", writer), 1);
        by_id.project(&one, &mut out).unwrap();
        assert_eq!(out.key, Some(&b"a"[..]));
        assert_eq!(out.vals[1], Some(crate::pipeline::avro::Num::I(7)));
        by_id.project(&one, &mut out).unwrap();
        assert_eq!(link.misses.get(), 2, "the unknown id, then its first sight");
        // A writer the reader cannot read (no `k`, no default): cached as such.
        let other = r#"{"type":"record","name":"R","fields":[{"name":"x","type":"int"}]}"#;
        let id = registered(&link.registry, "t", other);
        let unreadable = framed(id, &[2]);
        for _ in 0..2 {
            let e = by_id.project(&unreadable, &mut out).unwrap_err();
            assert!(
                e.0.contains("cannot be read with the job's reader schema"),
                "{e:?}"
            );
        }
        assert_eq!(link.misses.get(), 3);
        assert_eq!(link.entries.get(), 2);
        let writer = writer.to_string();
        assert!(by_id.project(&[1, 0, 0], &mut out).is_err(), "not framed");
        // Full, the cache starts again; every id still reads right after it.
        let mut ids = Vec::new();
        for i in 0..CACHE_ENTRIES_MAX + 5 {
            let text = writer.replace("\"R\"", &format!("\"R{i}\""));
            ids.push(registered(&link.registry, &format!("s{i}"), &text));
        }
        for &id in ids.iter().chain(&ids[..3]) {
            let value = framed(id, &[2, b'z']);
            let mut o = Projected::default();
            by_id.project(&value, &mut o).unwrap();
            assert_eq!(o.key, Some(&b"z"[..]));
            assert!(link.entries.get() <= CACHE_ENTRIES_MAX as i64);
        }
        by_id.project(&one, &mut out).unwrap();
        assert_eq!(out.key, Some(&b"a"[..]), "after eviction, id 1 again");
        // A copy for another core starts empty; dropping one gives its entries back.
        let copy = by_id.clone();
        drop(by_id);
        assert_eq!(link.entries.get(), 0);
        drop(copy);
        assert_eq!(link.entries.get(), 0);
    }
}
