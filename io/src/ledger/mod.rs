//! The ledger: one core's partitions, each a series of segment files with a sparse
//! offset index, written behind the journal in large aligned writes.
//!
//! Owns, per partition: the segment files under `<ledger_dir>/<partition-name>/`, their
//! indexes, the in-memory chunks not yet written (frames copied in, or a whole
//! journal write of the partition taken as it is), reads by offset, and retention;
//! per core, the newest completed journal writes, which reads of the newest data
//! slice instead of copying from the chunks. It never assigns offsets (the log
//! does) and never decides durability for an append (the journal does); what it
//! holds is always a prefix of what the journal accepted.
//!
//! A deleted partition leaves a tombstone, `.<name>.<id>.deleted` holding only its
//! meta file, so its id is never given to another partition: journal frames that
//! still name it are skipped at recovery instead of landing in a stranger.
//!
//! A partition directory holds `partition.meta` (its id and name),
//! `NNNNNNNNNNNNNNNNNNNN.log` segments named by their base offset, and for sealed
//! segments `NNNNNNNNNNNNNNNNNNNN.index`. Frames in a segment are the journal's frames,
//! byte for byte. Every write is padded to a block boundary, so no written block is
//! ever written again: a crash can only tear the write in flight, whose frames the
//! journal still holds.
//!
//! The folder: `mod.rs` holds the partition table (what the log asks of the
//! ledger without I/O); `files` names and creates the directory's entries
//! (partition directories, meta files, tombstones, retention deletes);
//! `segment` a segment file and its index file; `chunk` a chunk in memory;
//! `handoff` takes the journal's frames into chunks; `write` writes chunks to
//! segments and syncs them; `read` serves reads; `mixed` indexes sealed journal
//! segments by runs and reads through them; `adopted` keeps the runs of journal
//! segments the ledger reads in place (`journal_adopt`); `open` recovers the directory at
//! start-up. This file names only the `chunk`, `segment` and `adopted` types; the
//! other files build on it, never the reverse.

mod adopted;
mod chunk;
mod copy_out;
mod files;
mod handoff;
pub mod mixed;
mod open;
mod read;
mod segment;
mod write;

pub use adopted::{Adoption, ADOPT_PROBE, MIXED_DIR};
pub(crate) use chunk::chunk_capacity;
pub use files::valid_partition_name;

use crate::error::LogError;
use chunk::Chunk;
use glommio::io::{DmaBuffer, DmaFile};
use segment::Segment;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

/// A batch read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub base_offset: u64,
    pub record_count: u32,
    pub timestamp_ms: i64,
    pub payload: Payload,
}

/// A batch's bytes: a slice of the buffer a segment read filled, shared by every
/// batch of that read (no copy, no allocation); a slice of a recent journal write's
/// buffer, likewise; or bytes of its own (taken from the chunks in memory, which
/// are still being filled). Holding one keeps its buffer alive, so readers use the
/// bytes and drop them, and whatever keeps entries takes `Owned` copies. Like the
/// buffer, it stays on its core (`!Send`).
#[derive(Clone)]
pub enum Payload {
    Read(glommio::io::ReadResult),
    Written(WrittenSlice),
    Owned(Vec<u8>),
}

/// A batch inside a completed journal write's buffer, which nothing changes any
/// more.
#[derive(Clone)]
pub struct WrittenSlice {
    buf: Rc<DmaBuffer>,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Read(r) => r,
            Payload::Written(w) => &w.buf.as_bytes()[w.start..w.start + w.len],
            Payload::Owned(v) => v,
        }
    }
}

/// The bytes, as a `Vec<u8>` shows them (test failures compare payloads).
impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload::Owned(v)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl Entry {
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// One partition's ledger.
pub struct Partition {
    pub id: u32,
    pub name: String,
    dir: PathBuf,
    segments: VecDeque<Segment>,
    chunks: VecDeque<Chunk>,
    /// Its offsets in journal segments (`journal_adopt`), after its segments.
    runs: VecDeque<adopted::PartRun>,
    next_offset: u64,
    /// Written to a segment since the last sync.
    unsynced: Vec<Rc<DmaFile>>,
    /// Offsets from here on must stay readable (a checkpoint may replay from it):
    /// retention never deletes a segment holding one.
    retain_from: Option<u64>,
    /// Offsets before this are superseded by later ones (a compacted partition's
    /// snapshot starts here): a sealed segment wholly before it is deleted at the
    /// next retention pass, retention limits or not.
    superseded_before: Option<u64>,
    /// Its own segment size and retention (a topic's configs), in place of the
    /// ledger's.
    limits: Option<PartitionLimits>,
    /// Offsets before this were deleted (DeleteRecords): the partition starts here
    /// even while a segment still holds them. Kept in `LOG_START_FILE`.
    deleted_before: u64,
}

/// The file in a partition's directory that keeps its `deleted_before`.
pub(crate) const LOG_START_FILE: &str = "log-start";

/// A partition's own segment size and retention, in place of the log's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLimits {
    pub segment_bytes: u64,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
}

impl PartitionLimits {
    /// The log's segment size and no retention: for internal partitions whose
    /// records are live state (superseded only as their owner says).
    pub fn without_retention(cfg: &crate::LogConfig) -> PartitionLimits {
        PartitionLimits {
            segment_bytes: cfg.ledger_segment_bytes,
            retention_bytes: None,
            retention_ms: None,
        }
    }
}

impl Partition {
    /// The segment size this partition rolls at.
    fn segment_bytes(&self, ledger: &LedgerLimits) -> u64 {
        self.limits
            .map_or(ledger.segment_bytes, |l| l.segment_bytes)
    }

    /// The retention limits (bytes, ms) this partition is held to.
    fn retention(&self, ledger: &LedgerLimits) -> (Option<u64>, Option<u64>) {
        self.limits
            .map_or((ledger.retention_bytes, ledger.retention_ms), |l| {
                (l.retention_bytes, l.retention_ms)
            })
    }
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The first offset held: in the oldest segment, else in the oldest run of a
    /// journal segment (`journal_adopt`), else in the oldest chunk not yet written,
    /// else the end (an empty partition).
    pub fn start_offset(&self) -> u64 {
        let held = self
            .segments
            .front()
            .map(|s| s.base_offset)
            .or_else(|| self.runs.front().map(|r| r.run.base_offset))
            .or_else(|| self.chunks.front().map(|c| c.base_offset))
            .unwrap_or(self.next_offset);
        held.max(self.deleted_before.min(self.next_offset))
    }
}

/// Settings the ledger needs.
#[derive(Clone, Debug)]
pub struct LedgerLimits {
    pub segment_bytes: u64,
    pub flush_bytes: usize,
    pub index_interval_bytes: u64,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    /// Largest frame the log writes: valid data never holds a run of zeros
    /// longer than this (a frame header is never zero), so an active segment is
    /// read at start-up only until such a run, not to its preallocated end.
    pub frame_bytes_max: usize,
}

/// All partitions of one core.
pub struct Ledger {
    dir: PathBuf,
    limits: LedgerLimits,
    partitions: HashMap<u32, Partition>,
    names: HashMap<String, u32>,
    /// Ids of deleted partitions: never given out again.
    deleted: std::collections::HashSet<u32>,
    /// Bytes in chunks not yet written, over all partitions.
    pending_bytes: usize,
    /// The newest completed journal writes, oldest first, at most `RECENT_WRITES`.
    recent: VecDeque<RecentWrite>,
    /// Journal segments adopted instead of copied (`journal_adopt`).
    adopting: Option<adopted::Adopting>,
    /// One `LOG_START_FILE` write at a time (DeleteRecords, retention over runs):
    /// two at once could leave the smaller offset on disk.
    log_start_writes: Rc<glommio::sync::Semaphore>,
}

/// A completed journal write kept for reads: its buffer and its data frames, in
/// file order, which is partition id order (one run per partition).
struct RecentWrite {
    buf: Rc<DmaBuffer>,
    frames: Vec<(usize, crate::frame::Header)>,
}

/// What to write next: one chunk of one partition.
pub struct WriteJob {
    partition: u32,
    file: Rc<DmaFile>,
    path: PathBuf,
    pos: u64,
    buf: Rc<DmaBuffer>,
}

impl WriteJob {
    /// Bytes this write puts on the device.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl Ledger {
    pub fn partition_id(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// Whether `id` belonged to a partition that was deleted.
    pub fn is_deleted(&self, id: u32) -> bool {
        self.deleted.contains(&id)
    }

    pub fn partition(&self, id: u32) -> Option<&Partition> {
        self.partitions.get(&id)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.values()
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Keeps offsets from `offset` on readable whatever the retention limits say
    /// (`None`: retention alone decides).
    pub fn retain_from(&mut self, id: u32, offset: Option<u64>) {
        if let Some(p) = self.partitions.get_mut(&id) {
            p.retain_from = offset;
        }
    }

    /// Marks `id`'s offsets before `offset` as superseded (see
    /// [`Partition::superseded_before`]).
    pub fn supersede_before(&mut self, id: u32, offset: u64) {
        if let Some(p) = self.partitions.get_mut(&id) {
            p.superseded_before = Some(offset);
        }
    }

    /// Gives partition `id` its own limits (`None`: the ledger's again).
    pub fn set_limits(&mut self, id: u32, limits: Option<PartitionLimits>) {
        if let Some(p) = self.partitions.get_mut(&id) {
            p.limits = limits;
        }
    }

    /// Deletes `id`'s offsets before `before` (DeleteRecords): the start moves there
    /// at once, durably (`LOG_START_FILE`), and the segments wholly before it go at
    /// the next retention pass. Returns the new start.
    pub async fn delete_before(
        this: &std::cell::RefCell<Self>,
        id: u32,
        before: u64,
    ) -> crate::error::Result<u64> {
        let writes = this.borrow().log_start_writes.clone();
        let _one = writes
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let (dir, start, end) = {
            let l = this.borrow();
            let p = l
                .partitions
                .get(&id)
                .ok_or(LogError::UnknownPartition(id))?;
            (p.dir.clone(), p.start_offset(), p.next_offset)
        };
        if before > end {
            let name = this
                .borrow()
                .partitions
                .get(&id)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            return Err(LogError::OffsetOutOfRange {
                partition: name,
                offset: before,
                start,
                end,
            });
        }
        if before <= start {
            return Ok(start);
        }
        crate::fs::write_durable(
            &dir.join(LOG_START_FILE),
            format!("{before}\n").into_bytes(),
        )
        .await?;
        let mut l = this.borrow_mut();
        let p = l
            .partitions
            .get_mut(&id)
            .ok_or(LogError::UnknownPartition(id))?;
        p.deleted_before = p.deleted_before.max(before);
        p.superseded_before = Some(p.superseded_before.unwrap_or(0).max(before));
        Ok(p.start_offset())
    }

    /// Segment files of a partition (tests, inspection).
    pub fn segments_of(&self, id: u32) -> usize {
        self.partitions.get(&id).map_or(0, |p| p.segments.len())
    }
}
