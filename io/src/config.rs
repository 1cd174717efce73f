//! The log's settings and limits: every bound the storage keeps is here, with its unit.

use crate::error::{LogError, Result};
use crate::frame::{BLOCK, HEADER_LEN};
use std::path::PathBuf;

/// Journal writes one core keeps in flight: enough to keep the device busy while the
/// next write fills, few enough that an acknowledgement waits for at most one more.
pub(crate) const JOURNAL_WRITES_IN_FLIGHT_MAX: usize = 2;

/// Completed journal writes one core keeps in memory, so that reads of the newest
/// data (a job following its source, a consumer at the end) slice their batches
/// out of the write's buffer instead of copying them out of the ledger's chunks.
pub(crate) const RECENT_WRITES: usize = 4;

/// Journal write samples kept between two drains.
pub(crate) const WRITE_SAMPLES_MAX: usize = 8192;

/// When an append counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After the journal write and an `fdatasync` that covers it.
    Always,
    /// After the journal write; an `fdatasync` follows at least every `sync_interval_ms`.
    Interval,
    /// After the journal write; never synced (a crash may lose acknowledged appends).
    Never,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Durability::Always),
            "interval" => Ok(Durability::Interval),
            "never" => Ok(Durability::Never),
            other => Err(format!(
                "unknown durability {other:?}: use always, interval or never"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Always => "always",
            Durability::Interval => "interval",
            Durability::Never => "never",
        })
    }
}

/// Settings of one core's log. Directories are this core's own (not shared).
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub journal_dir: PathBuf,
    pub ledger_dir: PathBuf,
    /// The core index that owns this log; written into the journal's segment headers.
    pub shard: u32,
    pub durability: Durability,
    /// With `Durability::Interval`: the longest time written data stays unsynced.
    pub sync_interval_ms: u64,
    /// With `Durability::Always`: open journal segments `O_DSYNC` so each write is
    /// durable on completion (one device request) instead of write + `fdatasync`.
    pub journal_odsync: bool,
    /// Size of one journal segment file (preallocated and zero-filled once).
    pub journal_segment_bytes: u64,
    /// Number of journal segment files in the ring.
    pub journal_segments: u32,
    /// Largest single journal write; appends beyond it wait for the next write.
    pub journal_flush_bytes_max: usize,
    /// A ledger segment is sealed when it would grow beyond this.
    pub ledger_segment_bytes: u64,
    /// A partition's in-memory tail is written when it reaches this.
    pub ledger_flush_bytes: usize,
    /// Every partition's tail is written and synced at least this often.
    pub ledger_flush_interval_ms: u64,
    /// Unwritten ledger bytes on this core beyond which appends wait.
    pub ledger_pending_bytes_max: usize,
    /// Whether sealed journal segments become the ledger's data (renamed into
    /// `<ledger_dir>/mixed/` with a run index) instead of being copied into
    /// per-partition segments, so every byte is written once
    /// (`docs/write-once.md`). Needs the journal and the ledger on one file system;
    /// `Auto` (the default) adopts when they are.
    pub journal_adopt: JournalAdopt,
    /// Sparse index: one entry per this many ledger bytes.
    pub index_interval_bytes: u32,
    /// Retention: delete a partition's oldest sealed segments beyond this size.
    pub retention_bytes: Option<u64>,
    /// Retention: delete sealed segments whose newest batch is older than this.
    pub retention_ms: Option<u64>,
    /// Largest batch one append may carry.
    pub batch_bytes_max: usize,
    /// Partitions one core may own.
    pub partitions_max: usize,
    /// Partitions with their own segment size and retention (a topic's configs),
    /// by partition name; in place from the moment the log opens or makes them.
    pub partition_limits: std::collections::HashMap<String, crate::ledger::PartitionLimits>,
}

/// The `journal_adopt` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JournalAdopt {
    /// Adopt when the journal and the ledger are on one file system (a rename
    /// between them works), or when the ledger holds adopted segments already
    /// (it must go on adopting; start-up then says whether it can). Copy when
    /// they are on separate devices, the layout the copy path is for.
    #[default]
    Auto,
    /// Adopt; refused at start when the two are not on one file system.
    On,
    /// Copy; refused at start when the ledger holds adopted segments.
    Off,
}

impl std::str::FromStr for JournalAdopt {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(JournalAdopt::Auto),
            "true" | "on" => Ok(JournalAdopt::On),
            "false" | "off" => Ok(JournalAdopt::Off),
            other => Err(format!(
                "journal_adopt is auto, true or false, not {other:?}"
            )),
        }
    }
}

impl LogConfig {
    /// Defaults that run on a laptop: a 256 MiB journal ring, 32 MiB ledger segments.
    pub fn new(journal_dir: PathBuf, ledger_dir: PathBuf, shard: u32) -> Self {
        LogConfig {
            journal_dir,
            ledger_dir,
            shard,
            durability: Durability::Always,
            sync_interval_ms: 10,
            journal_odsync: true,
            journal_segment_bytes: 64 << 20,
            journal_segments: 4,
            journal_flush_bytes_max: 2 << 20,
            ledger_segment_bytes: 32 << 20,
            ledger_flush_bytes: 1 << 20,
            ledger_flush_interval_ms: 1000,
            ledger_pending_bytes_max: 64 << 20,
            journal_adopt: JournalAdopt::Auto,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: None,
            batch_bytes_max: 1 << 20,
            partitions_max: 4096,
            partition_limits: Default::default(),
        }
    }

    /// Registered (pinned) I/O memory a core's executor should have for this log:
    /// room for every ledger chunk allowed to wait in memory, the journal writes in
    /// flight, the one filling and the recent ones kept for reads, and reads.
    /// Buffers beyond it come from the heap, where each new page costs a fault and
    /// each write pins its pages, which halved the ledger's throughput when
    /// measured (`docs/benchmarks.md`). A ledger far behind, holding adopted
    /// journal writes (up to twice their bytes each), can pass it: slower then,
    /// never wrong.
    pub fn io_memory_bytes(&self) -> usize {
        /// Segment reads in flight on one core.
        const READS: usize = 16 << 20;
        let journal =
            (JOURNAL_WRITES_IN_FLIGHT_MAX + 1 + RECENT_WRITES) * self.journal_flush_bytes_max;
        // Pending bytes may pass the limit by one journal write, into two chunks.
        let ledger = self.ledger_pending_bytes_max
            + self.journal_flush_bytes_max
            + 2 * crate::ledger::chunk_capacity(self.ledger_flush_bytes, self.frame_bytes_max());
        // The pool is a buddy allocator: a power of two wastes none of it.
        (ledger + journal + READS).next_power_of_two()
    }

    /// Largest frame (header + batch) the log writes.
    pub fn frame_bytes_max(&self) -> usize {
        HEADER_LEN + self.batch_bytes_max
    }

    /// The smallest ledger segment these limits allow: one flush and a largest
    /// frame after it, and a block for the seal.
    pub fn ledger_segment_bytes_min(&self) -> u64 {
        (self.ledger_flush_bytes + self.frame_bytes_max() + BLOCK) as u64
    }

    /// Checks that the limits fit each other; says which one does not.
    pub fn validate(&self) -> Result<()> {
        let fail = |what: String| Err(LogError::Config(what));
        let block = BLOCK as u64;
        if self.journal_segments < 2 {
            return fail("journal_segments must be at least 2 (a ring)".into());
        }
        if !self.journal_segment_bytes.is_multiple_of(block)
            || !self.ledger_segment_bytes.is_multiple_of(block)
        {
            return fail(format!("segment sizes must be multiples of {BLOCK} bytes"));
        }
        if !self.journal_flush_bytes_max.is_multiple_of(BLOCK) {
            return fail(format!(
                "journal_flush_bytes_max must be a multiple of {BLOCK} bytes"
            ));
        }
        if self.batch_bytes_max == 0 || self.batch_bytes_max > (256 << 20) {
            return fail("batch_bytes_max must be between 1 byte and 256 MiB".into());
        }
        // A flush holds at least one frame plus a pad block.
        if self.journal_flush_bytes_max < self.frame_bytes_max() + BLOCK {
            return fail(format!(
                "journal_flush_bytes_max ({}) must exceed batch_bytes_max + {} ({})",
                self.journal_flush_bytes_max,
                HEADER_LEN + BLOCK,
                self.frame_bytes_max() + BLOCK
            ));
        }
        // A segment holds its header block, one full flush and a seal block.
        let seg_min = (self.journal_flush_bytes_max + 2 * BLOCK) as u64;
        if self.journal_segment_bytes < seg_min {
            return fail(format!(
                "journal_segment_bytes ({}) must be at least journal_flush_bytes_max + 8 KiB ({seg_min})",
                self.journal_segment_bytes
            ));
        }
        let ledger_min = self.ledger_segment_bytes_min();
        if self.ledger_segment_bytes < ledger_min {
            return fail(format!(
                "ledger_segment_bytes ({}) must be at least ledger_flush_bytes + batch_bytes_max + 4 KiB ({ledger_min})",
                self.ledger_segment_bytes
            ));
        }
        if self.ledger_pending_bytes_max < self.journal_flush_bytes_max {
            return fail(
                "ledger_pending_bytes_max must be at least journal_flush_bytes_max".into(),
            );
        }
        if self.index_interval_bytes == 0 || self.sync_interval_ms == 0 {
            return fail("index_interval_bytes and sync_interval_ms must be positive".into());
        }
        if self.ledger_flush_interval_ms == 0 || self.partitions_max == 0 {
            return fail("ledger_flush_interval_ms and partitions_max must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_memory_covers_the_ledger_and_journal_buffers_in_a_power_of_two() {
        let mut cfg = LogConfig::new(PathBuf::new(), PathBuf::new(), 0);
        // 64 MiB of ledger chunks + 7 journal writes of 2 MiB (in flight, filling,
        // kept for reads) + 16 MiB of reads.
        assert_eq!(cfg.io_memory_bytes(), 128 << 20);
        cfg.ledger_pending_bytes_max = 256 << 20;
        assert_eq!(cfg.io_memory_bytes(), 512 << 20);
        cfg.ledger_pending_bytes_max = 4 << 20;
        cfg.journal_flush_bytes_max = 4 << 20;
        assert_eq!(cfg.io_memory_bytes(), 64 << 20);
    }
}
