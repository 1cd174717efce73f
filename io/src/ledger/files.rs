//! The ledger directory's entries: their names, partition directories (made whole
//! under a temporary name, deleted through a tombstone), meta files, and the
//! segment files retention deletes.
//!
//! Owns every name in the directory and every create, rename and remove of a
//! whole entry. Never writes a segment's frames (see `write`).

use super::{Ledger, Partition};
use crate::error::{LogError, Result};
use std::collections::VecDeque;
use std::path::Path;

pub(super) const META_FILE: &str = "partition.meta";

pub(super) fn segment_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// Removes everything but the meta file from a deleted partition's directory.
pub(super) fn empty_tombstone(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        if entry.file_name() != META_FILE {
            std::fs::remove_file(entry.path())
                .map_err(|e| LogError::io("removing", &entry.path(), e))?;
        }
    }
    Ok(())
}

pub(super) fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (digits, ext) = name.split_once('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, ext))
}

/// Partition names become directory names: keep them to a safe alphabet, and off the
/// leading dot (names the ledger uses for its own temporary entries).
pub fn valid_partition_name(name: &str) -> bool {
    // 240: the temporary name made while creating it (`.NAME.creating`) still fits
    // a file name's 255 bytes.
    !name.is_empty()
        && name.len() <= 240
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Ledger {
    /// Creates a partition (its directory and meta file, synced) and returns its id.
    pub fn create_partition(&mut self, name: &str, partitions_max: usize) -> Result<u32> {
        self.create_partition_at(name, 0, partitions_max)
    }

    /// Creates a partition whose first offset is `start` (a partition moved here from
    /// another core, whose older offsets retention had removed); an existing one is
    /// returned as it is.
    pub fn create_partition_at(
        &mut self,
        name: &str,
        start: u64,
        partitions_max: usize,
    ) -> Result<u32> {
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        if !valid_partition_name(name) {
            return Err(LogError::BadPartitionName(name.to_string()));
        }
        if self.partitions.len() >= partitions_max {
            return Err(LogError::TooManyPartitions(partitions_max));
        }
        let id = self
            .partitions
            .keys()
            .chain(&self.deleted)
            .max()
            .map_or(0, |m| m + 1);
        // Made complete under a temporary name, then renamed: a crash leaves either
        // nothing or a whole partition directory.
        let pdir = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.creating"));
        std::fs::create_dir_all(&tmp)
            .map_err(|e| LogError::io("creating partition directory", &tmp, e))?;
        write_meta(&tmp.join(META_FILE), id, name)?;
        if start > 0 {
            // An empty active segment says where the offsets start; the first write
            // fills it.
            let seg = tmp.join(segment_name(start, "log"));
            std::fs::File::create(&seg)
                .and_then(|f| f.sync_all())
                .map_err(|e| LogError::io("creating", &seg, e))?;
        }
        crate::journal::sync_dir(&tmp)?;
        std::fs::rename(&tmp, &pdir).map_err(|e| LogError::io("renaming", &tmp, e))?;
        crate::journal::sync_dir(&self.dir)?;
        self.names.insert(name.to_string(), id);
        self.partitions.insert(
            id,
            Partition {
                id,
                name: name.to_string(),
                dir: pdir,
                segments: VecDeque::new(),
                chunks: VecDeque::new(),
                next_offset: start,
                unsynced: Vec::new(),
                retain_from: None,
            },
        );
        Ok(id)
    }

    /// Deletes a partition: its directory becomes a tombstone (renamed, synced), then
    /// its segments are removed. Callers make sure no write of it is in flight.
    pub fn delete_partition(&mut self, id: u32) -> Result<()> {
        let Some(p) = self.partitions.get(&id) else {
            return Ok(());
        };
        assert!(
            p.chunks.iter().all(|c| !c.in_flight),
            "no write of a partition being deleted is in flight"
        );
        let tomb = self.dir.join(format!(".{}.{id}.deleted", p.name));
        std::fs::rename(&p.dir, &tomb).map_err(|e| LogError::io("renaming", &p.dir, e))?;
        // Renamed: deleted from here on, whatever fails next (the next start finishes
        // emptying the tombstone).
        let p = self.partitions.remove(&id).expect("present");
        self.names.remove(&p.name);
        self.pending_bytes -= p.chunks.iter().map(|c| c.len).sum::<usize>();
        self.deleted.insert(id);
        drop(p);
        crate::journal::sync_dir(&self.dir)?;
        empty_tombstone(&tomb)
    }

    /// Deletes sealed segments beyond the retention limits; returns how many.
    pub fn apply_retention(&mut self, now_ms: i64) -> usize {
        let limits = self.limits.clone();
        let mut removed = 0;
        for p in self.partitions.values_mut() {
            loop {
                if p.segments.len() < 2 {
                    break;
                }
                let total: u64 = p.segments.iter().map(|s| s.write_pos).sum();
                let oldest = p.segments.front().expect("segments");
                if p.retain_from.is_some_and(|keep| oldest.end_offset > keep) {
                    break;
                }
                let over_size = limits.retention_bytes.is_some_and(|max| total > max);
                let too_old = limits
                    .retention_ms
                    .is_some_and(|ms| oldest.max_timestamp_ms < now_ms.saturating_sub(ms as i64));
                if !over_size && !too_old {
                    break;
                }
                let seg = p.segments.pop_front().expect("segment");
                for path in [seg.path.clone(), seg.path.with_extension("index")] {
                    if let Err(e) = std::fs::remove_file(&path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %path.display(), "retention could not delete: {e}");
                        }
                    }
                }
                tracing::info!(partition = %p.name, path = %seg.path.display(), "segment deleted by retention");
                removed += 1;
            }
        }
        removed
    }
}

fn write_meta(path: &Path, id: u32, name: &str) -> Result<()> {
    use std::io::Write;
    let text = format!("tidewater-partition 1\nid {id}\nname {name}\n");
    let tmp = path.with_extension("meta.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| LogError::io("creating", &tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| LogError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LogError::io("renaming", &tmp, e))
}

pub(super) fn read_meta(path: &Path) -> Result<(u32, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| LogError::io("reading", path, e))?;
    let mut lines = text.lines();
    let bad = |what: &str| LogError::corrupt(path, format!("not a partition meta file: {what}"));
    if lines.next() != Some("tidewater-partition 1") {
        return Err(bad("first line must be `tidewater-partition 1`"));
    }
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("id "))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| bad("second line must be `id N`"))?;
    let name = lines
        .next()
        .and_then(|l| l.strip_prefix("name "))
        .filter(|n| valid_partition_name(n))
        .ok_or_else(|| bad("third line must be `name NAME`"))?;
    Ok((id, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_partition_name("iot-sensor-data-3"));
        assert!(!valid_partition_name("../etc"));
        assert!(!valid_partition_name(""));
        assert_eq!(
            parse_segment_name("00000000000000000042.log"),
            Some((42, "log"))
        );
        assert_eq!(parse_segment_name("42.log"), None);
    }

    #[test]
    fn meta_round_trip_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(META_FILE);
        write_meta(&path, 7, "t-1").unwrap();
        assert_eq!(read_meta(&path).unwrap(), (7, "t-1".to_string()));
        std::fs::write(&path, "hello").unwrap();
        let err = read_meta(&path).unwrap_err().to_string();
        assert!(err.contains("partition.meta"), "{err}");
    }
}
