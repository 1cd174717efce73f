//! Avro projection compiled from the schemas: reads only the fields a job needs out of
//! a binary datum, without allocating.
//!
//! `apache-avro` parses the schemas; [`Projection::compile`] turns a writer schema and
//! the job's reader schema into a flat program — one step per writer field, either
//! "read into slot N" or "skip" — applying Avro's resolution rules (fields matched by
//! name or reader alias, int → long → float → double promotions, string ↔ bytes,
//! reader defaults for fields the writer lacks). Running the program is a loop over
//! varints and fixed-size reads. `apache-avro`'s own decoder is the reference in the
//! tests. Never trusts a length in the datum: every read is bounds-checked.

use apache_avro::schema::{Name, ResolvedSchema, Schema};
use std::collections::HashMap;

/// Fields one job may read (key, event time and measures together).
pub const SLOTS_MAX: usize = 16;

/// A numeric value read from a record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::I(v) => v as f64,
            Num::F(v) => v,
        }
    }
}

/// What a slot holds once read, as the reader schema types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// int, long, boolean (and their logical types): exact integers.
    Int,
    /// float, double.
    Float,
    /// string or bytes: only the key may be one.
    Bytes,
}

/// The fields of one record a job reads: `vals[i]` is slot `i`; `None` is absent
/// (a null, or a missing field without a default). The key borrows the datum.
#[derive(Clone, Copy, Debug)]
pub struct Projected<'a> {
    pub key: Option<&'a [u8]>,
    pub vals: [Option<Num>; SLOTS_MAX],
}

impl Default for Projected<'_> {
    fn default() -> Self {
        Projected {
            key: None,
            vals: [None; SLOTS_MAX],
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Prim {
    Bool,
    Int,
    Float,
    Double,
}

/// How to pass over a value the job does not need.
#[derive(Clone, Debug, PartialEq)]
enum Skip {
    Null,
    Bool,
    Varint,
    Float,
    Double,
    Bytes,
    Fixed(usize),
    Record(Vec<Skip>),
    Union(Vec<Skip>),
    Array(Box<Skip>),
    Map(Box<Skip>),
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    /// The common skips, flat: one match per field on the hot path.
    SkipVarint,
    SkipBytes,
    SkipFixed(usize),
    Skip(Skip),
    /// A number read into a slot, converted to the slot's kind.
    Num(Prim, u8, SlotKind),
    /// The key (string or bytes).
    Key,
    /// Null: the slot stays absent.
    Absent,
    /// A union: the branch index selects the op.
    Union(Vec<Op>),
}

/// A datum that could not be read; the reason goes to the dead-letter output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// The compiled program for one writer schema.
#[derive(Clone, Debug)]
pub struct Projection {
    ops: Vec<Op>,
    /// Values of reader defaults for needed fields the writer lacks.
    defaults: Vec<(u8, Num)>,
}

/// The reader's view: for each needed field, its slot and kind.
#[derive(Clone, Debug)]
pub struct ReaderFields {
    pub kinds: Vec<SlotKind>,
    by_name: HashMap<String, u8>,
}

impl ReaderFields {
    pub fn slot(&self, field: &str) -> Option<u8> {
        self.by_name.get(field).copied()
    }
}

fn names_of(schema: &Schema) -> Result<HashMap<Name, Schema>, String> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    Ok(resolved
        .get_names()
        .iter()
        .map(|(n, s)| (n.clone(), (*s).clone()))
        .collect())
}

fn deref<'a>(s: &'a Schema, names: &'a HashMap<Name, Schema>) -> Result<&'a Schema, String> {
    match s {
        Schema::Ref { name } => names
            .get(name)
            .ok_or_else(|| format!("unknown named type {}", name.fullname(None))),
        other => Ok(other),
    }
}

/// The reader record's fields, checked and given slots: `needed` in order (no
/// duplicates), each a primitive the job can use.
pub fn reader_fields(reader: &Schema, needed: &[&str], key: &str) -> Result<ReaderFields, String> {
    let names = names_of(reader)?;
    let Schema::Record(rec) = deref(reader, &names)? else {
        return Err("the reader schema is not a record".into());
    };
    if needed.len() > SLOTS_MAX {
        return Err(format!(
            "a job may read at most {SLOTS_MAX} fields, this one needs {}",
            needed.len()
        ));
    }
    let mut kinds = Vec::new();
    let mut by_name = HashMap::new();
    for (slot, &name) in needed.iter().enumerate() {
        let f = rec
            .fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("the reader schema has no field `{name}`"))?;
        let kind = slot_kind(&f.schema, &names)
            .ok_or_else(|| format!("field `{name}` is not a number, string or bytes"))?;
        if kind == SlotKind::Bytes && name != key {
            return Err(format!(
                "field `{name}` is a string or bytes; only the key may be"
            ));
        }
        if name == key && kind != SlotKind::Bytes {
            return Err(format!("the key field `{name}` must be a string or bytes"));
        }
        kinds.push(kind);
        by_name.insert(name.to_string(), slot as u8);
    }
    Ok(ReaderFields { kinds, by_name })
}

/// The kind a reader type gives a slot; unions count by their non-null branch.
fn slot_kind(s: &Schema, names: &HashMap<Name, Schema>) -> Option<SlotKind> {
    match deref(s, names).ok()? {
        Schema::String | Schema::Bytes | Schema::Uuid => Some(SlotKind::Bytes),
        Schema::Union(u) => {
            let mut it = u.variants().iter().filter(|v| !matches!(v, Schema::Null));
            let one = it.next()?;
            if it.next().is_some() {
                return None;
            }
            slot_kind(one, names)
        }
        other => match prim_of(other)? {
            Prim::Float | Prim::Double => Some(SlotKind::Float),
            Prim::Bool | Prim::Int => Some(SlotKind::Int),
        },
    }
}

/// The primitive a writer type is read as, if it is one.
fn prim_of(s: &Schema) -> Option<Prim> {
    Some(match s {
        Schema::Boolean => Prim::Bool,
        Schema::Int
        | Schema::Long
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Prim::Int,
        Schema::Float => Prim::Float,
        Schema::Double => Prim::Double,
        _ => return None,
    })
}

fn skip_of(s: &Schema, names: &HashMap<Name, Schema>, depth: usize) -> Result<Skip, String> {
    if depth > 32 {
        return Err("schema nests deeper than 32 levels".into());
    }
    Ok(match deref(s, names)? {
        Schema::Null => Skip::Null,
        Schema::Boolean => Skip::Bool,
        Schema::Float => Skip::Float,
        Schema::Double => Skip::Double,
        Schema::String | Schema::Bytes | Schema::Uuid | Schema::BigDecimal => Skip::Bytes,
        Schema::Fixed(f) => Skip::Fixed(f.size),
        Schema::Duration => Skip::Fixed(12),
        Schema::Decimal(d) => skip_of(&d.inner, names, depth + 1)?,
        Schema::Enum(_) => Skip::Varint,
        Schema::Array(a) => Skip::Array(Box::new(skip_of(&a.items, names, depth + 1)?)),
        Schema::Map(m) => Skip::Map(Box::new(skip_of(&m.types, names, depth + 1)?)),
        Schema::Union(u) => Skip::Union(
            u.variants()
                .iter()
                .map(|v| skip_of(v, names, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Record(r) => Skip::Record(
            r.fields
                .iter()
                .map(|f| skip_of(&f.schema, names, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        other => match prim_of(other) {
            Some(_) => Skip::Varint,
            None => return Err(format!("unsupported Avro type {other:?}")),
        },
    })
}

/// A skip as a flat op where it has one.
fn flat(s: Skip) -> Op {
    match s {
        Skip::Varint => Op::SkipVarint,
        Skip::Bytes => Op::SkipBytes,
        Skip::Double => Op::SkipFixed(8),
        Skip::Float => Op::SkipFixed(4),
        Skip::Bool => Op::SkipFixed(1),
        Skip::Null => Op::SkipFixed(0),
        Skip::Fixed(n) => Op::SkipFixed(n),
        other => Op::Skip(other),
    }
}

/// Whether a writer primitive may be read as a reader slot of `kind` (Avro's
/// promotion rules: int → long/float/double, long → float/double, float → double).
fn promotable(w: &Schema, r: &Schema, kind: SlotKind) -> bool {
    match kind {
        SlotKind::Bytes => matches!(w, Schema::String | Schema::Bytes | Schema::Uuid),
        SlotKind::Int => match (w, r) {
            (Schema::Boolean, Schema::Boolean) => true,
            (Schema::Int, Schema::Long) | (Schema::Int, Schema::Int) => true,
            (Schema::Long, Schema::Int) => false,
            _ => prim_of(w) == Some(Prim::Int) && prim_of(r) == Some(Prim::Int),
        },
        SlotKind::Float => match (w, r) {
            (Schema::Double, Schema::Float) => false,
            _ => {
                matches!(prim_of(w), Some(Prim::Int | Prim::Float | Prim::Double))
                    && !matches!(w, Schema::Boolean)
            }
        },
    }
}

/// The reader field's type with nullable unions unwrapped to their value branch.
fn value_type<'a>(s: &'a Schema, names: &'a HashMap<Name, Schema>) -> Result<&'a Schema, String> {
    match deref(s, names)? {
        Schema::Union(u) => {
            let v = u
                .variants()
                .iter()
                .find(|v| !matches!(v, Schema::Null))
                .ok_or("a union of null only")?;
            deref(v, names)
        }
        other => Ok(other),
    }
}

fn read_op(
    w: &Schema,
    r: &Schema,
    slot: u8,
    kind: SlotKind,
    names: &HashMap<Name, Schema>,
    field: &str,
) -> Result<Op, String> {
    let w = deref(w, names)?;
    if let Schema::Union(u) = w {
        let branches = u
            .variants()
            .iter()
            .map(|b| match deref(b, names) {
                Ok(Schema::Null) => Ok(Op::Absent),
                Ok(b) if promotable(b, r, kind) => read_op(b, r, slot, kind, names, field),
                // A branch that cannot be read: a record using it fails to decode.
                Ok(b) => skip_of(b, names, 0).map(Op::Skip),
                Err(e) => Err(e),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Op::Union(branches));
    }
    if !promotable(w, r, kind) {
        return Err(format!(
            "field `{field}`: the writer's {w:?} cannot be read as the reader's {r:?}"
        ));
    }
    Ok(match kind {
        SlotKind::Bytes => Op::Key,
        _ => Op::Num(prim_of(w).expect("promotable is primitive"), slot, kind),
    })
}

impl Projection {
    /// Compiles the program that reads `fields` (reader field names, slot = index;
    /// the key field is the one whose kind is `Bytes`) from data written with
    /// `writer`, as the `reader` schema sees them.
    pub fn compile(
        writer: &Schema,
        reader: &Schema,
        fields: &ReaderFields,
    ) -> Result<Self, String> {
        let wnames = names_of(writer)?;
        let rnames = names_of(reader)?;
        let Schema::Record(wrec) = deref(writer, &wnames)? else {
            return Err("the writer schema is not a record".into());
        };
        let Schema::Record(rrec) = deref(reader, &rnames)? else {
            return Err("the reader schema is not a record".into());
        };
        let mut ops = Vec::with_capacity(wrec.fields.len());
        let mut found = vec![false; fields.kinds.len()];
        for wf in &wrec.fields {
            // The reader field this writer field feeds: same name, or a reader alias.
            let rf = rrec.fields.iter().find(|rf| {
                rf.name == wf.name || rf.aliases.as_ref().is_some_and(|a| a.contains(&wf.name))
            });
            let target = rf.and_then(|rf| fields.slot(&rf.name).map(|s| (rf, s)));
            match target {
                Some((rf, slot)) if !found[slot as usize] => {
                    found[slot as usize] = true;
                    let kind = fields.kinds[slot as usize];
                    let rtype = value_type(&rf.schema, &rnames)?;
                    ops.push(read_op(&wf.schema, rtype, slot, kind, &wnames, &rf.name)?);
                }
                _ => ops.push(flat(skip_of(&wf.schema, &wnames, 0)?)),
            }
        }
        let mut defaults = Vec::new();
        for (name, &slot) in &fields.by_name {
            if found[slot as usize] {
                continue;
            }
            let rf = rrec
                .fields
                .iter()
                .find(|f| &f.name == name)
                .expect("checked");
            let kind = fields.kinds[slot as usize];
            match (&rf.default, kind) {
                (Some(serde_json::Value::Null), _) => {}
                (Some(v), SlotKind::Int) if v.as_i64().is_some() => {
                    defaults.push((slot, Num::I(v.as_i64().expect("checked"))))
                }
                (Some(v), SlotKind::Int) if v.as_bool().is_some() => {
                    defaults.push((slot, Num::I(i64::from(v.as_bool().expect("checked")))))
                }
                (Some(v), SlotKind::Float) if v.as_f64().is_some() => {
                    defaults.push((slot, Num::F(v.as_f64().expect("checked"))))
                }
                _ => {
                    return Err(format!(
                        "the writer schema lacks field `{name}` and the reader gives it no usable default"
                    ))
                }
            }
        }
        Ok(Projection { ops, defaults })
    }

    /// Reads the needed fields of `datum` into `out` (which is reset first).
    pub fn project<'a>(&self, datum: &'a [u8], out: &mut Projected<'a>) -> Result<(), DecodeError> {
        *out = Projected::default();
        for &(slot, v) in &self.defaults {
            out.vals[slot as usize] = Some(v);
        }
        let mut cur = Cursor { b: datum, at: 0 };
        for op in &self.ops {
            step(op, &mut cur, out)?;
        }
        if cur.at != datum.len() {
            return Err(DecodeError(format!(
                "{} bytes left after the record's last field (wrong schema?)",
                datum.len() - cur.at
            )));
        }
        Ok(())
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

fn eof() -> DecodeError {
    DecodeError("the record ends inside a field".into())
}

impl<'a> Cursor<'a> {
    #[inline]
    fn long(&mut self) -> Result<i64, DecodeError> {
        // One-byte values (small ints, lengths, union branches) are the common case.
        if let Some(&b) = self.b.get(self.at) {
            if b < 0x80 {
                self.at += 1;
                return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
            }
        }
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.at).ok_or_else(eof)?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError("a varint longer than 10 bytes".into()));
            }
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or_else(eof)?;
        let s = self.b.get(self.at..end).ok_or_else(eof)?;
        self.at = end;
        Ok(s)
    }

    #[inline]
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| DecodeError(format!("negative length {n}")))
    }
}

fn skip(s: &Skip, c: &mut Cursor<'_>) -> Result<(), DecodeError> {
    match s {
        Skip::Null => {}
        Skip::Bool => {
            c.take(1)?;
        }
        Skip::Varint => {
            c.long()?;
        }
        Skip::Float => {
            c.take(4)?;
        }
        Skip::Double => {
            c.take(8)?;
        }
        Skip::Bytes => {
            let n = c.len()?;
            c.take(n)?;
        }
        Skip::Fixed(n) => {
            c.take(*n)?;
        }
        Skip::Record(fields) => {
            for f in fields {
                skip(f, c)?;
            }
        }
        Skip::Union(branches) => {
            let b = branch(c, branches.len())?;
            skip(&branches[b], c)?;
        }
        Skip::Array(item) | Skip::Map(item) => {
            let is_map = matches!(s, Skip::Map(_));
            loop {
                let count = c.long()?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    // A block with its byte size: skip it whole.
                    let bytes = c.len()?;
                    c.take(bytes)?;
                    continue;
                }
                for _ in 0..count {
                    if is_map {
                        skip(&Skip::Bytes, c)?;
                    }
                    skip(item, c)?;
                }
            }
        }
    }
    Ok(())
}

fn branch(c: &mut Cursor<'_>, n: usize) -> Result<usize, DecodeError> {
    let b = c.long()?;
    usize::try_from(b)
        .ok()
        .filter(|&b| b < n)
        .ok_or_else(|| DecodeError(format!("union branch {b} of {n}")))
}

/// One op, for union branches (recursive, so never inlined).
fn run<'a>(op: &Op, c: &mut Cursor<'a>, out: &mut Projected<'a>) -> Result<(), DecodeError> {
    step(op, c, out)
}

/// One op, inlined into [`Projection::project`]'s loop.
#[inline(always)]
fn step<'a>(op: &Op, c: &mut Cursor<'a>, out: &mut Projected<'a>) -> Result<(), DecodeError> {
    match op {
        Op::SkipVarint => {
            c.long()?;
        }
        Op::SkipBytes => {
            let n = c.len()?;
            c.take(n)?;
        }
        Op::SkipFixed(n) => {
            c.take(*n)?;
        }
        Op::Skip(s) => skip(s, c)?,
        Op::Absent => {}
        Op::Key => {
            let n = c.len()?;
            out.key = Some(c.take(n)?);
        }
        Op::Num(prim, slot, kind) => {
            let v = match prim {
                Prim::Bool => Num::I(i64::from(c.take(1)?[0] != 0)),
                Prim::Int => Num::I(c.long()?),
                Prim::Float => Num::F(f64::from(f32::from_le_bytes(
                    c.take(4)?.try_into().expect("4 bytes"),
                ))),
                Prim::Double => Num::F(f64::from_le_bytes(c.take(8)?.try_into().expect("8 bytes"))),
            };
            out.vals[*slot as usize] = Some(match (kind, v) {
                (SlotKind::Float, Num::I(i)) => Num::F(i as f64),
                (_, v) => v,
            });
        }
        Op::Union(branches) => {
            let b = branch(c, branches.len())?;
            if let Op::Skip(s) = &branches[b] {
                skip(s, c)?;
                return Err(DecodeError(format!(
                    "union branch {b} has a type the job cannot read"
                )));
            }
            run(&branches[b], c, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    const V2: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[
        {"name":"device_id","type":"string"},
        {"name":"tags","type":{"type":"map","values":{"type":"array","items":"long"}}},
        {"name":"ts","type":"long"},
        {"name":"temp","type":["null","double"],"default":null},
        {"name":"level","type":"int"},
        {"name":"inner","type":{"type":"record","name":"In","fields":[{"name":"a","type":"string"},{"name":"f","type":{"type":"fixed","name":"F","size":3}}]}},
        {"name":"again","type":"In"},
        {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
        {"name":"hum","type":"float"}
    ]}"#;

    fn needs(reader: &Schema) -> ReaderFields {
        reader_fields(
            reader,
            &["device_id", "ts", "temp", "level", "hum"],
            "device_id",
        )
        .unwrap()
    }

    fn value(i: i64) -> Value {
        let inner = Value::Record(vec![
            ("a".into(), Value::String("x".repeat(i as usize % 5))),
            ("f".into(), Value::Fixed(3, vec![1, 2, 3])),
        ]);
        Value::Record(vec![
            ("device_id".into(), Value::String(format!("device-{i}"))),
            (
                "tags".into(),
                Value::Map(
                    (0..i % 3)
                        .map(|j| {
                            (
                                format!("t{j}"),
                                Value::Array(vec![Value::Long(j); j as usize]),
                            )
                        })
                        .collect(),
                ),
            ),
            ("ts".into(), Value::Long(1_700_000_000_000 + i * 997)),
            (
                "temp".into(),
                if i % 4 == 0 {
                    Value::Union(0, Box::new(Value::Null))
                } else {
                    Value::Union(1, Box::new(Value::Double(i as f64 * 0.25 - 3.0)))
                },
            ),
            ("level".into(), Value::Int(-(i as i32))),
            ("inner".into(), inner.clone()),
            ("again".into(), inner),
            (
                "kind".into(),
                Value::Enum((i % 2) as u32, ["A", "B"][i as usize % 2].into()),
            ),
            ("hum".into(), Value::Float(i as f32 / 8.0)),
        ])
    }

    #[test]
    fn agrees_with_apache_avro_on_every_field_it_reads() {
        let schema = Schema::parse_str(V2).unwrap();
        let f = needs(&schema);
        let p = Projection::compile(&schema, &schema, &f).unwrap();
        for i in 0..200 {
            let datum = apache_avro::to_avro_datum(&schema, value(i)).unwrap();
            let mut out = Projected::default();
            p.project(&datum, &mut out).unwrap();
            let reference = apache_avro::from_avro_datum(&schema, &mut &datum[..], None).unwrap();
            let Value::Record(fields) = reference else {
                panic!()
            };
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
            assert_eq!(
                Value::String(String::from_utf8(out.key.unwrap().to_vec()).unwrap()),
                get("device_id")
            );
            assert_eq!(
                Value::Long(match out.vals[1].unwrap() {
                    Num::I(v) => v,
                    _ => panic!(),
                }),
                get("ts")
            );
            match (get("temp"), out.vals[2]) {
                (Value::Union(0, _), None) => {}
                (Value::Union(1, v), Some(Num::F(x))) => assert_eq!(*v, Value::Double(x)),
                other => panic!("{other:?}"),
            }
            assert_eq!(out.vals[3], Some(Num::I(-i)));
            assert_eq!(
                Value::Float(out.vals[4].unwrap().as_f64() as f32),
                get("hum")
            );
        }
    }

    #[test]
    fn an_older_writer_resolves_to_the_reader() {
        // v1: no `temp` (reader default null), `level` and `hum` narrower types, a field
        // renamed (reader alias), fields in another order.
        let v1 = r#"{"type":"record","name":"R","namespace":"t","fields":[
            {"name":"time","type":"int"},
            {"name":"device_id","type":"bytes"},
            {"name":"level","type":"int"},
            {"name":"hum","type":"int"},
            {"name":"gone","type":"string"}
        ]}"#;
        let reader = r#"{"type":"record","name":"R","namespace":"t","fields":[
            {"name":"device_id","type":"string"},
            {"name":"ts","type":"long","aliases":["time"]},
            {"name":"temp","type":["null","double"],"default":null},
            {"name":"level","type":"long"},
            {"name":"hum","type":"double"},
            {"name":"extra","type":"double","default":1.5}
        ]}"#;
        let w = Schema::parse_str(v1).unwrap();
        let r = Schema::parse_str(reader).unwrap();
        let f = reader_fields(
            &r,
            &["device_id", "ts", "temp", "level", "hum", "extra"],
            "device_id",
        )
        .unwrap();
        let p = Projection::compile(&w, &r, &f).unwrap();
        let datum = apache_avro::to_avro_datum(
            &w,
            Value::Record(vec![
                ("time".into(), Value::Int(123)),
                ("device_id".into(), Value::Bytes(b"dev".to_vec())),
                ("level".into(), Value::Int(7)),
                ("hum".into(), Value::Int(40)),
                ("gone".into(), Value::String("bye".into())),
            ]),
        )
        .unwrap();
        let mut out = Projected::default();
        p.project(&datum, &mut out).unwrap();
        assert_eq!(out.key, Some(&b"dev"[..]));
        assert_eq!(out.vals[1], Some(Num::I(123)));
        assert_eq!(out.vals[2], None);
        assert_eq!(out.vals[3], Some(Num::I(7)));
        assert_eq!(out.vals[4], Some(Num::F(40.0)));
        assert_eq!(out.vals[5], Some(Num::F(1.5)));
        // apache-avro agrees where it resolves the same way (it does not apply
        // reader aliases, so this writer names the field as the reader does).
        let w2 = Schema::parse_str(&v1.replace("\"time\"", "\"ts\"")).unwrap();
        let p2 = Projection::compile(&w2, &r, &f).unwrap();
        let mut out = Projected::default();
        p2.project(&datum, &mut out).unwrap();
        let reference = apache_avro::from_avro_datum(&w2, &mut &datum[..], Some(&r)).unwrap();
        let Value::Record(fields) = reference else {
            panic!()
        };
        assert_eq!(fields[1].1, Value::Long(123));
        assert_eq!(fields[3].1, Value::Long(7));
        assert_eq!(fields[4].1, Value::Double(40.0));
        assert_eq!(fields[5].1, Value::Double(1.5));
        assert_eq!(out.vals[4], Some(Num::F(40.0)));
    }

    #[test]
    fn incompatible_writers_are_refused_at_compile_time() {
        let r = Schema::parse_str(V2).unwrap();
        let f = needs(&r);
        let narrower = V2.replace(
            r#"{"name":"ts","type":"long"}"#,
            r#"{"name":"ts","type":"double"}"#,
        );
        let w = Schema::parse_str(&narrower).unwrap();
        let e = Projection::compile(&w, &r, &f).unwrap_err();
        assert!(e.contains("`ts`"), "{e}");
        let missing = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"device_id","type":"string"}]}"#;
        let e = Projection::compile(&Schema::parse_str(missing).unwrap(), &r, &f).unwrap_err();
        assert!(e.contains("lacks field"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let schema = Schema::parse_str(V2).unwrap();
        let p = Projection::compile(&schema, &schema, &needs(&schema)).unwrap();
        let datum = apache_avro::to_avro_datum(&schema, value(7)).unwrap();
        let mut out = Projected::default();
        for cut in 0..datum.len() {
            assert!(p.project(&datum[..cut], &mut out).is_err(), "cut {cut}");
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut d = datum.clone();
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng % d.len() as u64) as usize;
                d[i] = (rng >> 32) as u8;
            }
            let mut o = Projected::default();
            let _ = p.project(&d, &mut o);
        }
        let mut long = datum.clone();
        long.push(0);
        assert!(p
            .project(&long, &mut out)
            .unwrap_err()
            .0
            .contains("left after"));
    }
}
