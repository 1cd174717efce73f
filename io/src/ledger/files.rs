//! The ledger directory's entries: their names, partition directories (made whole
//! under a temporary name, deleted through a tombstone), meta files, and the
//! segment files retention deletes.
//!
//! Owns every name in the directory and every create, rename and remove of a
//! whole entry. Never writes a segment's frames (see `write`).

use super::{Ledger, Partition};
use crate::error::{LogError, Result};
use crate::fs::{self, blocking};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

pub(super) const META_FILE: &str = "partition.meta";

pub(super) fn segment_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// Removes everything but the meta file from a deleted partition's directory.
pub(super) async fn empty_tombstone(dir: &Path) -> Result<()> {
    for path in fs::read_dir(dir).await? {
        if path.file_name().is_none_or(|n| n != META_FILE) {
            fs::remove_file(&path).await?;
        }
    }
    Ok(())
}

/// The name of a directory entry, as text.
pub(super) fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned())
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
        && name != super::MIXED_DIR
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
        // nothing or a whole partition directory. Blocking calls, on the core:
        // `ShardLog::create_partition` is synchronous (the Kafka front end calls it
        // while it answers CreateTopics); making it async is the front end's change.
        let pdir = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.creating"));
        blocking::create_dir_all(&tmp).map_err(|e| e.with_op("creating partition directory"))?;
        // Each durable write syncs `tmp` after itself.
        write_meta(&tmp.join(META_FILE), id, name)?;
        if start > 0 {
            // An empty active segment says where the offsets start; the first write
            // fills it.
            let seg = tmp.join(segment_name(start, "log"));
            blocking::write_durable(&seg, &[])?;
        }
        blocking::rename(&tmp, &pdir)?;
        blocking::sync_dir(&self.dir)?;
        self.names.insert(name.to_string(), id);
        self.partitions.insert(
            id,
            Partition {
                id,
                name: name.to_string(),
                dir: pdir,
                segments: VecDeque::new(),
                chunks: VecDeque::new(),
                runs: VecDeque::new(),
                next_offset: start,
                unsynced: Vec::new(),
                retain_from: None,
                superseded_before: None,
                limits: None,
                deleted_before: 0,
            },
        );
        Ok(id)
    }

    /// Deletes a partition: its directory becomes a tombstone (renamed, synced), then
    /// its segments are removed. Callers make sure no write of it is in flight.
    pub async fn delete_partition(this: &RefCell<Self>, id: u32) -> Result<()> {
        let (pdir, tomb) = {
            let l = this.borrow();
            let Some(p) = l.partitions.get(&id) else {
                return Ok(());
            };
            assert!(
                p.chunks.iter().all(|c| !c.in_flight),
                "no write of a partition being deleted is in flight"
            );
            (
                p.dir.clone(),
                l.dir.join(format!(".{}.{id}.deleted", p.name)),
            )
        };
        fs::rename(&pdir, &tomb).await?;
        // Renamed: deleted from here on, whatever fails next (the next start finishes
        // emptying the tombstone).
        let dir = {
            let mut l = this.borrow_mut();
            let p = l.partitions.remove(&id).expect("present");
            l.names.remove(&p.name);
            l.pending_bytes -= p.chunks.iter().map(|c| c.len).sum::<usize>();
            l.deleted.insert(id);
            l.dir.clone()
        };
        fs::sync_dir(&dir).await?;
        empty_tombstone(&tomb).await
    }

    /// Deletes sealed segments beyond the retention limits, and adopted segments
    /// no partition holds a run in any more; returns how many.
    pub async fn apply_retention(this: &RefCell<Self>, now_ms: i64) -> usize {
        let (expired, mut starts) = this.borrow_mut().take_expired(now_ms);
        let runs = this.borrow_mut().take_expired_runs(now_ms);
        starts.extend(runs.starts);
        // Each start is recorded before any segment goes: the next start must not
        // take what retention deleted for offsets lost, nor bring it back.
        if !Self::record_starts(this, &starts).await {
            // The files stay (a restart finds them again); adopted segments are
            // tried again at the next pass.
            this.borrow_mut().keep_adopted(runs.segments);
            return 0;
        }
        for (partition, seg) in &expired {
            remove_segment(seg).await;
            tracing::info!(partition = %partition, path = %seg.display(), "segment deleted by retention");
        }
        for (_, seg) in &runs.segments {
            let path = seg.path.borrow().clone();
            let keep = this.borrow_mut().keep_freed(&path);
            let kept = match keep {
                Some(free) => match fs::rename(&path, &free).await {
                    Ok(()) => Some(free),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "adopted segment freed, and removed: it could not be kept for the journal: {e}");
                        None
                    }
                },
                None => None,
            };
            // The segment's index, and the segment unless it was kept.
            remove_segment(&path).await;
            if let Some(free) = kept {
                this.borrow_mut().freed(free);
                tracing::info!(path = %path.display(), "adopted segment freed: no partition holds a run in it; kept to become a journal slot");
            } else {
                tracing::info!(path = %path.display(), "adopted segment deleted: no partition holds a run in it");
            }
        }
        expired.len() + runs.segments.len()
    }

    /// Writes the `LOG_START_FILE` of each partition in `ids` with its start as it
    /// is when written (one writer at a time with DeleteRecords, so the larger
    /// offset always lands last); `false` when one could not be written. A
    /// partition deleted meanwhile needs none.
    async fn record_starts(this: &RefCell<Self>, ids: &[u32]) -> bool {
        if ids.is_empty() {
            return true;
        }
        let writes = this.borrow().log_start_writes.clone();
        let Ok(_one) = writes.acquire_permit(1).await else {
            return false;
        };
        for id in ids {
            let found = this
                .borrow()
                .partitions
                .get(id)
                .map(|p| (p.dir.join(super::LOG_START_FILE), p.deleted_before));
            let Some((path, start)) = found else { continue };
            match fs::write_durable(&path, format!("{start}\n").into_bytes()).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), "retention could not record the log start, so it deletes nothing this pass: {}", e.source);
                    return false;
                }
            }
        }
        true
    }

    /// Takes the sealed segments beyond the retention limits out of the partition
    /// table: (partition name, segment path) of each, for their files to be
    /// removed, and the partitions whose start must be recorded (adopting: a
    /// partition's last own segment went, its offsets go on in runs).
    fn take_expired(&mut self, now_ms: i64) -> (Vec<(String, PathBuf)>, Vec<u32>) {
        let limits = self.limits.clone();
        let adopted_max = self.adopted_segment_max();
        let mut expired = Vec::new();
        let mut starts = Vec::new();
        for p in self.partitions.values_mut() {
            // Runs do not change here: their bytes count once.
            let runs: u64 = p.runs.iter().map(|r| u64::from(r.run.len)).sum();
            loop {
                // The last segment is where the partition's writes go, unless its
                // offsets go on in runs of adopted journal segments, or it takes
                // no writes (adopting: only copy-out writes segments).
                let continues =
                    adopted_max.is_some_and(|m| p.runs.front().is_none_or(|r| r.segment_seq <= m));
                if p.segments.is_empty() || p.segments.len() < 2 && !continues {
                    break;
                }
                let total: u64 = p.segments.iter().map(|s| s.write_pos).sum::<u64>() + runs;
                let oldest = p.segments.front().expect("segments");
                if p.retain_from.is_some_and(|keep| oldest.end_offset > keep) {
                    break;
                }
                let (retention_bytes, retention_ms) = p.retention(&limits);
                let over_size = retention_bytes.is_some_and(|max| total > max);
                let too_old = retention_ms
                    .is_some_and(|ms| oldest.max_timestamp_ms < now_ms.saturating_sub(ms as i64));
                let superseded = p
                    .superseded_before
                    .is_some_and(|before| oldest.end_offset <= before);
                if !over_size && !too_old && !superseded {
                    break;
                }
                let seg = p.segments.pop_front().expect("segment");
                expired.push((p.name.clone(), seg.path));
                if p.segments.is_empty() {
                    let start = p.runs.front().map_or(p.next_offset, |r| r.run.base_offset);
                    p.deleted_before = p.deleted_before.max(start);
                    starts.push(p.id);
                }
            }
        }
        (expired, starts)
    }
}

/// Removes a segment file, then its index (an index left alone is removed at
/// the next start); a file already gone is no error.
async fn remove_segment(seg: &Path) {
    for path in [seg.to_path_buf(), seg.with_extension("index")] {
        if let Err(e) = fs::remove_file(&path).await {
            if !e.is_not_found() {
                tracing::warn!(path = %path.display(), "retention could not delete: {}", e.source);
            }
        }
    }
}

/// Writes a partition's meta file durably (blocking: see `create_partition_at`).
fn write_meta(path: &Path, id: u32, name: &str) -> Result<()> {
    let text = format!("tidewater-partition 1\nid {id}\nname {name}\n");
    Ok(blocking::write_durable(path, text.as_bytes())?)
}

pub(super) async fn read_meta(path: &Path) -> Result<(u32, String)> {
    let text = fs::read_to_string(path).await?;
    parse_meta(path, &text)
}

fn parse_meta(path: &Path, text: &str) -> Result<(u32, String)> {
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse_meta(&path, &text).unwrap(), (7, "t-1".to_string()));
        let err = parse_meta(&path, "hello").unwrap_err().to_string();
        assert!(err.contains("partition.meta"), "{err}");
    }
}
