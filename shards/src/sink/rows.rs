//! Output rows of a fired window in the formats the sinks write: JSON objects (topic
//! and file sinks) and ClickHouse RowBinary, plus the ClickHouse table they go to.
//!
//! A row is the key, `window_start`, `window_end` (epoch ms) and each aggregate by its
//! `as` name; an aggregate that saw no value (only nulls) is null. The same fired
//! window always encodes to the same bytes.

use crate::pipeline::avro::{Num, SlotKind};
use crate::pipeline::spec::Job;
use crate::pipeline::window::{Fired, Layout};
use std::io::Write;

/// Appends row `i` of `f` as one JSON object (no newline).
pub fn json_row(out: &mut Vec<u8>, job: &Job, layout: &Layout, f: &Fired, i: usize) {
    out.push(b'{');
    json_str(out, &job.key_field);
    out.push(b':');
    match std::str::from_utf8(&f.keys[i]) {
        Ok(s) => json_str(out, s),
        // Bytes keys that are not text: hex, so the row stays valid JSON.
        Err(_) => {
            out.push(b'"');
            for b in f.keys[i].iter() {
                let _ = write!(out, "{b:02x}");
            }
            out.push(b'"');
        }
    }
    let _ = write!(
        out,
        ",\"window_start\":{},\"window_end\":{}",
        f.start, f.end
    );
    let acc = f.acc(i, layout.words);
    for (n, a) in layout.aggs.iter().enumerate() {
        out.push(b',');
        json_str(out, &a.name);
        out.push(b':');
        match layout.value(acc, n) {
            None => out.extend_from_slice(b"null"),
            Some(Num::I(v)) => {
                let _ = write!(out, "{v}");
            }
            Some(Num::F(v)) if v.is_finite() => {
                // Rust prints the shortest text that reads back as the same f64.
                let _ = write!(out, "{v:?}");
            }
            Some(Num::F(_)) => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
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
