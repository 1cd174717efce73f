//! Output rows of a fired window in the formats the sinks write: JSON objects (topic
//! and file sinks) and ClickHouse RowBinary, plus the ClickHouse table they go to.
//!
//! A row is the key, `window_start`, `window_end` (epoch ms) and each aggregate by its
//! `as` name; an aggregate that saw no value (only nulls) is null. The same fired
//! window always encodes to the same bytes.

use crate::pipeline::avro::{Num, SlotKind};
use crate::pipeline::spec::Job;
use crate::pipeline::window::{Fired, Layout};
use bytes::Bytes;
use std::io::Write;

/// Rows encoded between two preemption points (about 50 µs of work with the
/// reference aggregates).
const ROWS_PER_SLICE: usize = 256;

/// A fired window's rows as JSON, encoded once for every sink that writes JSON:
/// one object per line, each line ending in a newline, in the window's key order.
#[derive(Debug, Default)]
pub struct JsonRows {
    text: Bytes,
    /// Where each row's object ends (its newline's position).
    ends: Vec<usize>,
}

impl JsonRows {
    /// Encodes every row of `f`, yielding to the core's other tasks when the
    /// executor asks (`yield_if_needed`): a window of 100k keys is about 20 ms of
    /// work.
    pub async fn encode(job: &Job, layout: &Layout, f: &Fired) -> JsonRows {
        let row = RowWriter::new(job, layout, f);
        let mut text = Vec::new();
        let mut ends = Vec::with_capacity(f.rows());
        for i in 0..f.rows() {
            row.write(&mut text, f, i);
            if i == 0 {
                // Sized from the first row: the buffer is never copied to grow.
                text.reserve((text.len() + 8) * f.rows() + f.rows() / 16);
            }
            ends.push(text.len());
            text.push(b'\n');
            if i % ROWS_PER_SLICE == ROWS_PER_SLICE - 1 {
                glommio::yield_if_needed().await;
            }
        }
        JsonRows {
            text: text.into(),
            ends,
        }
    }

    /// Every row, newline-terminated (shares the buffer).
    pub fn lines(&self) -> Bytes {
        self.text.clone()
    }

    /// Row `i`'s object without its newline (shares the buffer).
    pub fn row(&self, i: usize) -> Bytes {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        self.text.slice(start..self.ends[i])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Writes the rows of one fired window as JSON objects. What every row of the
/// window shares (the key's name, the window's bounds, each aggregate's name) is
/// encoded once; numbers are written with `itoa` and `zmij` (the shortest text
/// that reads back as the same f64), which cut the cost per row to a fraction of
/// `write!`'s (`cargo bench --bench pipeline -- JSON`).
struct RowWriter<'a> {
    layout: &'a Layout,
    /// `{"<key>":`
    open: Vec<u8>,
    /// `,"window_start":<start>,"window_end":<end>`
    bounds: Vec<u8>,
    /// `,"<name>":` per aggregate.
    names: Vec<Vec<u8>>,
}

impl<'a> RowWriter<'a> {
    fn new(job: &Job, layout: &'a Layout, f: &Fired) -> RowWriter<'a> {
        let mut open = vec![b'{'];
        json_str(&mut open, &job.key_field);
        open.push(b':');
        let mut bounds = b",\"window_start\":".to_vec();
        bounds.extend_from_slice(itoa::Buffer::new().format(f.start).as_bytes());
        bounds.extend_from_slice(b",\"window_end\":");
        bounds.extend_from_slice(itoa::Buffer::new().format(f.end).as_bytes());
        let names = layout
            .aggs
            .iter()
            .map(|a| {
                let mut n = vec![b','];
                json_str(&mut n, &a.name);
                n.push(b':');
                n
            })
            .collect();
        RowWriter {
            layout,
            open,
            bounds,
            names,
        }
    }

    /// Appends row `i` of `f` as one JSON object (no newline).
    fn write(&self, out: &mut Vec<u8>, f: &Fired, i: usize) {
        out.extend_from_slice(&self.open);
        let key = &f.keys[i];
        match std::str::from_utf8(key) {
            Ok(s) => json_str(out, s),
            // Bytes keys that are not text: hex, so the row stays valid JSON.
            Err(_) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push(b'"');
                for &b in key.iter() {
                    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                }
                out.push(b'"');
            }
        }
        out.extend_from_slice(&self.bounds);
        let acc = f.acc(i, self.layout.words);
        let (mut ints, mut floats) = (itoa::Buffer::new(), zmij::Buffer::new());
        for (n, name) in self.names.iter().enumerate() {
            out.extend_from_slice(name);
            match self.layout.value(acc, n) {
                None => out.extend_from_slice(b"null"),
                Some(Num::I(v)) => out.extend_from_slice(ints.format(v).as_bytes()),
                Some(Num::F(v)) if v.is_finite() => {
                    out.extend_from_slice(floats.format_finite(v).as_bytes())
                }
                Some(Num::F(_)) => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends every row of `f` in RowBinary, in the column order of [`create_table`].
pub fn row_binary(out: &mut Vec<u8>, layout: &Layout, f: &Fired) {
    for i in 0..f.rows() {
        let key = &f.keys[i];
        put_varint(out, key.len() as u64);
        out.extend_from_slice(key);
        out.extend_from_slice(&(f.start as u64).to_le_bytes());
        out.extend_from_slice(&(f.end as u64).to_le_bytes());
        let acc = f.acc(i, layout.words);
        for (n, a) in layout.aggs.iter().enumerate() {
            let v = layout.value(acc, n);
            if a.func != crate::pipeline::spec::Func::Count {
                // Nullable(T): one byte, 1 = null.
                out.push(u8::from(v.is_none()));
            }
            match v {
                None => {}
                Some(Num::I(x)) => out.extend_from_slice(&x.to_le_bytes()),
                Some(Num::F(x)) => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
    }
}

/// The ClickHouse type of each aggregate's column.
fn column_type(a: &crate::pipeline::spec::Aggregate) -> &'static str {
    use crate::pipeline::spec::Func;
    match (a.func, a.output()) {
        (Func::Count, _) => "UInt64",
        (_, SlotKind::Float) => "Nullable(Float64)",
        _ => "Nullable(Int64)",
    }
}

/// `CREATE TABLE IF NOT EXISTS` for a job's rows. ReplacingMergeTree ordered by
/// (key, window_start): a window written twice (a retry, a replay) collapses to one
/// row on merge, and readers who need that before the merge use `FINAL`.
pub fn create_table(job: &Job, layout: &Layout, table: &str) -> String {
    let mut cols = vec![
        format!("`{}` String", job.key_field),
        "window_start UInt64".to_string(),
        "window_end UInt64".to_string(),
    ];
    for a in &layout.aggs {
        cols.push(format!("`{}` {}", a.name, column_type(a)));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {table} ({}) ENGINE = ReplacingMergeTree() ORDER BY (`{}`, window_start)",
        cols.join(", "),
        job.key_field
    )
}

/// The columns in insert order, for `INSERT INTO t (cols) FORMAT RowBinary`.
pub fn columns(job: &Job, layout: &Layout) -> String {
    let mut cols = vec![
        format!("`{}`", job.key_field),
        "window_start".to_string(),
        "window_end".to_string(),
    ];
    for a in &layout.aggs {
        cols.push(format!("`{}`", a.name));
    }
    cols.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::avro::SLOTS_MAX;
    use crate::pipeline::spec::JobConfig;
    use crate::pipeline::window::{Position, Windows};

    fn job() -> Job {
        let text = r#"
name = "j"
source = "s"
format = "json"
key = "device id"
event_time = "timestamp"
window = { type = "tumbling", size = "1m" }
aggregates = [
  { fn = "count", as = "n" },
  { fn = "max", field = "t", as = "t \"max\"" },
  { fn = "sum", field = "c", as = "c_sum" },
]

[[sinks]]
type = "file"
path = "rows.jsonl"
"#;
        let cfg: JobConfig = toml::from_str(text).unwrap();
        cfg.compile(std::path::Path::new(".")).unwrap()
    }

    /// One window holding one row per (key, t, c).
    fn fired(job: &Job, rows: &[(&[u8], Option<Num>, Option<Num>)]) -> Fired {
        let layout = Layout::new(job.aggregates.clone());
        let mut w = Windows::new(layout, 60_000, 0, 1000);
        for (key, t, c) in rows {
            let mut vals = [None; SLOTS_MAX];
            for a in &job.aggregates {
                if let Some(slot) = a.slot {
                    vals[slot as usize] = if a.name == "c_sum" { *c } else { *t };
                }
            }
            let pos = Position {
                ts: 60_000,
                partition: 0,
                offset: 0,
            };
            w.apply(key, &vals, pos);
        }
        let mut out = None;
        w.fire(120_000, std::time::Instant::now(), |f| {
            out = Some(f);
            true
        });
        out.unwrap()
    }

    #[test]
    fn rows_are_json_that_reads_back_to_the_same_values() {
        let job = job();
        let layout = Layout::new(job.aggregates.clone());
        let floats = [
            0.1,
            -0.0,
            1e-7,
            1e16,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            100.0,
            -21.5,
        ];
        let keys: Vec<Vec<u8>> = (0..floats.len())
            .map(|i| format!("k{i:02} \"q\" \\ \u{1} é").into_bytes())
            .collect();
        let mut rows: Vec<(&[u8], Option<Num>, Option<Num>)> = keys
            .iter()
            .zip(floats)
            .map(|(k, f)| (k.as_slice(), Some(Num::F(f)), Some(Num::F(-1.5))))
            .collect();
        rows.push((b"\xff\x00", Some(Num::F(f64::NAN)), None));
        let f = fired(&job, &rows);
        let json = futures_lite::future::block_on(JsonRows::encode(&job, &layout, &f));
        assert_eq!(json.len(), rows.len());
        let lines = json.lines();
        assert!(lines.ends_with(b"\n"));
        let text: Vec<&[u8]> = lines.split(|&b| b == b'\n').collect();
        for i in 0..json.len() {
            assert_eq!(&json.row(i)[..], text[i], "row {i} is line {i}");
            let v: serde_json::Value = serde_json::from_slice(&json.row(i)).unwrap();
            assert_eq!(v["window_start"], 60_000);
            assert_eq!(v["window_end"], 120_000);
            assert_eq!(v["n"], 1);
            if i < floats.len() {
                // Keys fire in byte order: k00.. in the order of `floats`.
                let key = String::from_utf8(keys[i].clone()).unwrap();
                assert_eq!(v["device id"], serde_json::Value::String(key));
                let t = v["t \"max\""].as_f64().unwrap();
                assert_eq!(t.to_bits(), floats[i].to_bits(), "{t} for {}", floats[i]);
                assert_eq!(v["c_sum"], -1.5);
            } else {
                // Not UTF-8: hex. Not finite, or no value: null.
                assert_eq!(v["device id"], "ff00");
                assert!(v["t \"max\""].is_null() && v["c_sum"].is_null());
            }
        }
    }
}
