//! `tidewater log`: drive one core's log directly and check what it holds.
//!
//! `append` writes deterministic payloads from concurrent tasks and prints one line per
//! completed append (`ack <partition> <offset> <index>`), so a parent that kills it at
//! any moment knows exactly what was acknowledged. `check` opens the log (running
//! recovery), verifies that every partition is dense and readable, and prints a
//! summary. [`payload`] lets anyone regenerate the bytes of an acknowledged append.

use std::io::Write;
use std::rc::Rc;
use tidewater_io::{Entry, LogConfig, Result, ShardLog};

/// The payload of append `index` to `partition`: 20 to ~3000 bytes, fully determined
/// by the two numbers, starting with them in text.
pub fn payload(partition: u32, index: u64) -> Vec<u8> {
    let mut x = (u64::from(partition) << 40) ^ index ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: cheap, deterministic filler.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let len = 20 + (next() % 3000) as usize;
    let mut v = format!("p{partition} i{index} ").into_bytes();
    while v.len() < len {
        v.extend_from_slice(&next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Options of `tidewater log append`.
#[derive(Clone, Debug)]
pub struct AppendOptions {
    pub partitions: u32,
    pub tasks_per_partition: u32,
    /// Appends per task; `None` runs until killed.
    pub count: Option<u64>,
    /// Makes indexes unique across runs: index = run << 32 | task << 24 | n.
    pub run: u32,
}

/// Opens the log, creates `p0..pN`, and appends from concurrent tasks, printing an
/// `ack` line after each completed append. Returns the number of appends.
pub async fn append(cfg: LogConfig, opts: AppendOptions) -> Result<u64> {
    let (log, report) = ShardLog::open(cfg).await?;
    for d in &report.dropped {
        eprintln!("recovery dropped {d}");
    }
    let log = Rc::new(log);
    let mut ids = Vec::new();
    for p in 0..opts.partitions {
        ids.push(log.create_partition(&format!("p{p}"))?);
    }
    let mut tasks = Vec::new();
    for &id in &ids {
        for t in 0..opts.tasks_per_partition {
            let log = log.clone();
            let opts = opts.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut n = 0u64;
                while opts.count.is_none_or(|c| n < c) {
                    let index = u64::from(opts.run) << 32 | u64::from(t) << 24 | n;
                    let a = log.append(id, payload(id, index), 1, 0).await?;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {id} {} {index}", a.base_offset);
                    n += 1;
                }
                Ok::<u64, tidewater_io::LogError>(n)
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    if let Ok(log) = Rc::try_unwrap(log) {
        log.close().await?;
    }
    Ok(total)
}

/// What `check` found in one partition.
#[derive(Debug)]
pub struct PartitionCheck {
    pub name: String,
    pub id: u32,
    pub start: u64,
    pub high_watermark: u64,
    pub entries: Vec<Entry>,
}

/// Reads every partition from its start to its high watermark and checks that the
/// offsets are dense. Returns the entries for further checks.
pub async fn check(log: &ShardLog) -> std::result::Result<Vec<PartitionCheck>, String> {
    let mut out = Vec::new();
    for (name, id) in log.partitions() {
        let start = log.log_start_offset(id).map_err(|e| e.to_string())?;
        let hw = log.high_watermark(id).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        let mut next = start;
        while next < hw {
            let batch = log
                .read(id, next, 1 << 20)
                .await
                .map_err(|e| format!("{name}: read at {next}: {e}"))?;
            let Some(first) = batch.first() else {
                return Err(format!("{name}: nothing readable at {next} below {hw}"));
            };
            if first.base_offset > next {
                return Err(format!("{name}: gap: offset {next} missing"));
            }
            for e in batch {
                if e.base_offset != next && !(e.base_offset < next && e.end_offset() > next) {
                    return Err(format!("{name}: offsets not dense at {next}"));
                }
                next = e.end_offset();
                // Bytes of its own: a read's entries share its buffer (1 MiB or
                // more), which the whole log's entries would otherwise all pin.
                let payload = tidewater_io::Payload::Owned(e.payload.to_vec());
                entries.push(tidewater_io::Entry { payload, ..e });
            }
        }
        out.push(PartitionCheck {
            name,
            id,
            start,
            high_watermark: hw,
            entries,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic_and_distinct() {
        assert_eq!(payload(1, 5), payload(1, 5));
        assert_ne!(payload(1, 5), payload(1, 6));
        assert_ne!(payload(2, 5), payload(1, 5));
        assert!(payload(0, 0).starts_with(b"p0 i0 "));
        assert!((20..3100).contains(&payload(3, 77).len()));
    }
}
