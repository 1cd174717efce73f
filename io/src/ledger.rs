//! The ledger: one core's partitions, each a series of segment files with a sparse
//! offset index, written behind the journal in large aligned writes.
//!
//! Owns, per partition: the segment files under `<ledger_dir>/<partition-name>/`, their
//! indexes, the in-memory chunks not yet written (frames copied in, or a whole
//! journal write of the partition taken as it is), reads by offset, and retention. It
//! never assigns offsets (the log does) and never decides durability for an append
//! (the journal does); what it holds is always a prefix of what the journal accepted.
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

use crate::error::{LogError, Result};
use crate::frame::{self, Header, Kind, Step, HEADER_LEN};
use crate::journal::Dropped;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const META_FILE: &str = "partition.meta";
const INDEX_MAGIC: &[u8; 8] = b"TWINDEX1";
const INDEX_HEADER_LEN: usize = 40;
/// Reads from a segment fetch at least this much, so small reads still batch.
const READ_BYTES_MIN: usize = 64 << 10;

/// A batch read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub base_offset: u64,
    pub record_count: u32,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

impl Entry {
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// A segment file of a partition.
struct Segment {
    base_offset: u64,
    /// One past the last offset written to the file.
    end_offset: u64,
    path: PathBuf,
    /// Open for the active segment only: sealed segments are opened per read, so
    /// open files stay one per partition however many segments it keeps.
    file: Option<Rc<DmaFile>>,
    /// Bytes written (block aligned); the next write goes here.
    write_pos: u64,
    /// Sparse index: (offset, position of the frame that holds it), ascending.
    index: Vec<(u64, u64)>,
    max_timestamp_ms: i64,
}

impl Segment {
    fn index_position(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1
        }
    }
}

/// Frames accepted by the journal but not yet written to a segment.
struct Chunk {
    base_offset: u64,
    end_offset: u64,
    /// Frames laid out as they will be on disk from a block boundary: the first
    /// `len` bytes of `buf`, an aligned buffer filled in place, then sealed (padded
    /// to a block, trimmed) and written as it is. The write in flight shares it, so
    /// readers still find the frames in memory; nothing is copied in between.
    buf: Rc<DmaBuffer>,
    len: usize,
    sealed: bool,
    /// (base offset, position in `buf`) of every frame.
    entries: Vec<(u64, u32)>,
    max_timestamp_ms: i64,
    last_seq: u64,
    in_flight: bool,
}

/// One partition's ledger.
pub struct Partition {
    pub id: u32,
    pub name: String,
    dir: PathBuf,
    segments: VecDeque<Segment>,
    chunks: VecDeque<Chunk>,
    next_offset: u64,
    /// Written to a segment since the last sync.
    unsynced: Vec<Rc<DmaFile>>,
    /// Offsets from here on must stay readable (a checkpoint may replay from it):
    /// retention never deletes a segment holding one.
    retain_from: Option<u64>,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        &self.buf.as_bytes()[..self.len]
    }

    /// Whether a frame of `frame_len` bytes still fits (its block padding too: the
    /// buffer is a whole number of blocks). A sealed chunk takes nothing more.
    fn fits(&self, frame_len: usize) -> bool {
        !self.sealed && frame::frame_start(self.len) + frame_len <= self.buf.len()
    }

    /// The buffer of an open chunk, to fill.
    fn open_buf(&mut self) -> &mut DmaBuffer {
        assert!(!self.sealed, "a sealed chunk takes no frames");
        Rc::get_mut(&mut self.buf).expect("only a sealed chunk's buffer is shared")
    }

    /// Pads the chunk to a block and seals it (once); returns the bytes to write.
    fn seal(&mut self) -> Rc<DmaBuffer> {
        if !self.sealed {
            let len = self.len;
            let b = self.open_buf();
            let end = frame::pad_to_block(b.as_bytes_mut(), len);
            b.trim_to_size(end);
            self.sealed = true;
        }
        self.buf.clone()
    }
}

impl Partition {
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The first offset held: in the oldest segment, else in the oldest chunk not yet
    /// written, else the end (an empty partition).
    pub fn start_offset(&self) -> u64 {
        self.segments
            .front()
            .map(|s| s.base_offset)
            .or_else(|| self.chunks.front().map(|c| c.base_offset))
            .unwrap_or(self.next_offset)
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

fn segment_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// Removes everything but the meta file from a deleted partition's directory.
fn empty_tombstone(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        if entry.file_name() != META_FILE {
            std::fs::remove_file(entry.path())
                .map_err(|e| LogError::io("removing", &entry.path(), e))?;
        }
    }
    Ok(())
}

fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
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

async fn open_segment(path: &Path, create_bytes: Option<u64>) -> Result<DmaFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_bytes.is_some())
        .dma_open(path)
        .await
        .map_err(|e| LogError::io("opening", path, e))?;
    // On tmpfs, preallocating only fills memory with zeros: there is no extent to save.
    if let Some(bytes) = create_bytes.filter(|_| !is_tmpfs(path)) {
        file.pre_allocate(bytes, false)
            .await
            .map_err(|e| LogError::io("allocating", path, e))?;
    }
    Ok(file)
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-param.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs writes only into `st`.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

impl Ledger {
    /// Opens the ledger directory, recovering every partition in it.
    pub async fn open(
        dir: &Path,
        limits: LedgerLimits,
        partitions_max: usize,
        report: &mut Vec<Dropped>,
        rebuilt: &mut Vec<PathBuf>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::io("creating ledger directory", dir, e))?;
        // glommio resolves some calls (statx) by path: keep paths absolute.
        let dir = &std::fs::canonicalize(dir).map_err(|e| LogError::io("resolving", dir, e))?;
        crate::journal::prime_device(dir).await?;
        let mut ledger = Ledger {
            dir: dir.to_path_buf(),
            limits,
            partitions: HashMap::new(),
            names: HashMap::new(),
            deleted: Default::default(),
            pending_bytes: 0,
        };
        let mut dirs = Vec::new();
        for entry in
            std::fs::read_dir(dir).map_err(|e| LogError::io("listing ledger directory", dir, e))?
        {
            let entry = entry.map_err(|e| LogError::io("listing ledger directory", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "lost+found" || name == ".tidewater-probe" {
                continue;
            }
            if name.starts_with('.') && name.ends_with(".deleted") {
                // A deleted partition: keep its id, finish removing its data.
                let (id, _) = read_meta(&entry.path().join(META_FILE))?;
                empty_tombstone(&entry.path())?;
                ledger.deleted.insert(id);
                continue;
            }
            if name.starts_with('.') && name.ends_with(".creating") {
                // A partition whose creation a crash interrupted; it was never
                // reported created.
                tracing::warn!(path = %entry.path().display(), "removing an unfinished partition");
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| LogError::io("removing", &entry.path(), e))?;
                continue;
            }
            if !entry.path().is_dir() || !entry.path().join(META_FILE).is_file() {
                return Err(LogError::corrupt(
                    &entry.path(),
                    format!("foreign entry in the ledger directory (only partition directories with a {META_FILE} belong there); move it away"),
                ));
            }
            dirs.push(entry.path());
        }
        dirs.sort();
        if dirs.len() > partitions_max {
            return Err(LogError::TooManyPartitions(partitions_max));
        }
        for pdir in dirs {
            let p = ledger.recover_partition(&pdir, report, rebuilt).await?;
            if let Some(other) = ledger.partitions.get(&p.id) {
                return Err(LogError::corrupt(
                    &pdir.join(META_FILE),
                    format!(
                        "partition id {} is also used by {}",
                        p.id,
                        other.dir.display()
                    ),
                ));
            }
            ledger.names.insert(p.name.clone(), p.id);
            ledger.partitions.insert(p.id, p);
        }
        Ok(ledger)
    }

    async fn recover_partition(
        &self,
        pdir: &Path,
        report: &mut Vec<Dropped>,
        rebuilt: &mut Vec<PathBuf>,
    ) -> Result<Partition> {
        let (id, name) = read_meta(&pdir.join(META_FILE))?;
        let mut bases = Vec::new();
        for entry in
            std::fs::read_dir(pdir).map_err(|e| LogError::io("listing partition", pdir, e))?
        {
            let entry = entry.map_err(|e| LogError::io("listing partition", pdir, e))?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            if fname.ends_with(".tmp") {
                // An index or meta file whose writing a crash interrupted; the real
                // one is rebuilt or still in place.
                tracing::warn!(path = %entry.path().display(), "removing an unfinished file");
                std::fs::remove_file(entry.path())
                    .map_err(|e| LogError::io("removing", &entry.path(), e))?;
                continue;
            }
            match parse_segment_name(&fname) {
                _ if fname == META_FILE => {}
                Some((base, "log")) => bases.push(base),
                Some((_, "index")) => {}
                _ => {
                    return Err(LogError::corrupt(
                        &entry.path(),
                        "foreign file in a partition directory (only NNNN.log, NNNN.index and partition.meta belong there); move it away",
                    ))
                }
            }
        }
        bases.sort_unstable();
        let mut part = Partition {
            id,
            name,
            dir: pdir.to_path_buf(),
            segments: VecDeque::new(),
            chunks: VecDeque::new(),
            next_offset: 0,
            unsynced: Vec::new(),
            retain_from: None,
        };
        for (i, &base) in bases.iter().enumerate() {
            let path = pdir.join(segment_name(base, "log"));
            let file = Rc::new(open_segment(&path, None).await?);
            let sealed_end = bases.get(i + 1).copied();
            let index_path = pdir.join(segment_name(base, "index"));
            let seg = match sealed_end.and_then(|_| read_index(&index_path)) {
                Some(idx) => Segment {
                    base_offset: base,
                    end_offset: idx.end_offset,
                    path,
                    file: Some(file),
                    write_pos: idx.write_pos,
                    index: idx.entries,
                    max_timestamp_ms: idx.max_timestamp_ms,
                },
                None => {
                    let seg = self
                        .scan_segment(id, base, path, file, sealed_end.is_none(), report)
                        .await?;
                    if sealed_end.is_some() {
                        tracing::warn!(path = %index_path.display(), "index missing or damaged; rebuilt from its segment");
                        write_index(&index_path, &seg)?;
                        rebuilt.push(index_path);
                    }
                    seg
                }
            };
            let mut seg = seg;
            if sealed_end.is_some() {
                seg.file = None;
            }
            if let Some(next) = sealed_end {
                if seg.end_offset != next {
                    return Err(LogError::corrupt(
                        &seg.path,
                        format!(
                            "sealed segment ends at offset {} but the next segment starts at {next}",
                            seg.end_offset
                        ),
                    ));
                }
            }
            part.next_offset = seg.end_offset;
            part.segments.push_back(seg);
        }
        Ok(part)
    }

    /// Reads a segment and finds its valid frames; the active segment's end becomes its
    /// write position (block aligned down: a partial last block came from a torn write
    /// whose frames the journal still holds).
    async fn scan_segment(
        &self,
        id: u32,
        base: u64,
        path: PathBuf,
        file: Rc<DmaFile>,
        active: bool,
        report: &mut Vec<Dropped>,
    ) -> Result<Segment> {
        let size = file
            .file_size()
            .await
            .map_err(|e| LogError::io("reading size of", &path, e))?;
        let bytes = crate::journal::read_all(&file, &path, size).await?;
        let mut seg = Segment {
            base_offset: base,
            end_offset: base,
            path,
            file: Some(file),
            write_pos: 0,
            index: Vec::new(),
            max_timestamp_ms: i64::MIN,
        };
        let mut last_indexed: Option<u64> = None;
        let mut valid_end = 0usize;
        let mut frames: Vec<(usize, Header)> = Vec::new();
        for step in frame::Scanner::new(&bytes, 0, bytes.len()) {
            match step {
                Step::Frame { pos, header }
                    if header.kind == Kind::Data
                        && header.partition == id
                        && header.base_offset == seg.end_offset
                        && header.record_count > 0 =>
                {
                    frames.push((pos, header));
                    seg.end_offset = header.end_offset();
                    valid_end = pos + header.frame_len();
                }
                Step::Frame { pos, header } => {
                    report.push(Dropped {
                        path: seg.path.clone(),
                        offset: pos as u64,
                        reason: format!(
                            "unexpected frame (kind {:?}, partition {}, offset {}) where offset {} was expected",
                            header.kind, header.partition, header.base_offset, seg.end_offset
                        ),
                    });
                    break;
                }
                Step::End { pos, why } => {
                    if why != frame::Invalid::Zeroed {
                        report.push(Dropped {
                            path: seg.path.clone(),
                            offset: pos as u64,
                            reason: why.to_string(),
                        });
                    }
                    // Padding after the last frame is part of the valid prefix.
                    valid_end = valid_end.max(frame::align_down(pos));
                }
            }
        }
        let keep_end = if active {
            frame::align_down(valid_end)
        } else {
            frame::align_up(valid_end)
        };
        if keep_end < valid_end {
            tracing::info!(path = %seg.path.display(), from = keep_end, "partial last block of the ledger left for the journal to restore");
        }
        seg.end_offset = base;
        for (pos, header) in frames
            .into_iter()
            .filter(|(p, h)| p + h.frame_len() <= keep_end)
        {
            if last_indexed.is_none_or(|l| pos as u64 >= l + self.limits.index_interval_bytes) {
                seg.index.push((header.base_offset, pos as u64));
                last_indexed = Some(pos as u64);
            }
            seg.end_offset = header.end_offset();
            seg.max_timestamp_ms = seg.max_timestamp_ms.max(header.timestamp_ms);
        }
        seg.write_pos = keep_end as u64;
        Ok(seg)
    }

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

    pub fn partition_id(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// Whether `id` belonged to a partition that was deleted.
    pub fn is_deleted(&self, id: u32) -> bool {
        self.deleted.contains(&id)
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

    pub fn partition(&self, id: u32) -> Option<&Partition> {
        self.partitions.get(&id)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.values()
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Accepts one frame (already durable in the journal per policy) into `id`'s chunks.
    /// The frame's offsets must continue the partition exactly.
    pub fn push_frame(&mut self, header: &Header, frame_bytes: &[u8]) {
        let flush_bytes = self.limits.flush_bytes;
        let p = self
            .partitions
            .get_mut(&header.partition)
            .expect("journal frames name known partitions");
        assert_eq!(
            header.base_offset, p.next_offset,
            "ledger offsets are dense"
        );
        let need_new = p
            .chunks
            .back()
            .is_none_or(|c| c.len >= flush_bytes || !c.fits(frame_bytes.len()));
        if need_new {
            // A frame that does not fit starts the next chunk (this one is then
            // due, see `due`). From the registered pool while it lasts (writes skip
            // pinning pages), else the heap.
            let cap = chunk_capacity(flush_bytes, frame_bytes.len());
            p.chunks.push_back(Chunk {
                base_offset: header.base_offset,
                end_offset: header.base_offset,
                buf: Rc::new(glommio::allocate_dma_buffer(cap)),
                len: 0,
                sealed: false,
                entries: Vec::new(),
                max_timestamp_ms: i64::MIN,
                last_seq: 0,
                in_flight: false,
            });
        }
        let c = p.chunks.back_mut().expect("a chunk");
        let before = c.len;
        let start = frame::frame_start(before);
        let dst = c.open_buf().as_bytes_mut();
        dst[before..start].fill(0);
        dst[start..start + frame_bytes.len()].copy_from_slice(frame_bytes);
        c.len = start + frame_bytes.len();
        c.entries.push((header.base_offset, start as u32));
        c.end_offset = header.end_offset();
        c.max_timestamp_ms = c.max_timestamp_ms.max(header.timestamp_ms);
        c.last_seq = header.seq;
        p.next_offset = c.end_offset;
        self.pending_bytes += c.len - before;
    }

    /// Takes a whole journal write as one sealed chunk, without copying it: `buf` is
    /// the write as it went to the journal (padded to a block), `frames` the
    /// (position, header) of its frames in order, all of one partition, continuing
    /// it exactly. Callers check [`Ledger::adoptable`] first. The layout of a
    /// journal write is a chunk's (frames from a block boundary, each header
    /// within a block, the same padding), so the ledger writes the bytes as they are.
    pub fn adopt_write(&mut self, buf: Rc<DmaBuffer>, frames: &[(usize, Header)]) {
        let (&(_, first), &(last_pos, last)) = (
            frames.first().expect("a write holds frames"),
            frames.last().expect("a write holds frames"),
        );
        let p = self
            .partitions
            .get_mut(&first.partition)
            .expect("journal frames name known partitions");
        assert_eq!(first.base_offset, p.next_offset, "ledger offsets are dense");
        let mut entries = Vec::with_capacity(frames.len());
        let mut max_timestamp_ms = i64::MIN;
        let mut next = first.base_offset;
        for &(pos, h) in frames {
            assert!(
                h.partition == first.partition && h.base_offset == next,
                "an adopted write holds one partition's frames, dense"
            );
            entries.push((h.base_offset, pos as u32));
            max_timestamp_ms = max_timestamp_ms.max(h.timestamp_ms);
            next = h.end_offset();
        }
        let len = last_pos + last.frame_len();
        assert!(len <= buf.len() && buf.len() == frame::align_up(len));
        p.chunks.push_back(Chunk {
            base_offset: first.base_offset,
            end_offset: next,
            buf,
            len,
            sealed: true,
            entries,
            max_timestamp_ms,
            last_seq: last.seq,
            in_flight: false,
        });
        p.next_offset = next;
        self.pending_bytes += len;
    }

    /// Whether a journal write of `len` bytes is worth taking whole as a chunk: at
    /// least half a ledger flush (smaller ones are packed together by copying,
    /// so the ledger's writes stay large), and no more than half a segment.
    pub fn adoptable(&self, len: usize) -> bool {
        len >= self.limits.flush_bytes / 2 && len as u64 <= self.limits.segment_bytes / 2
    }

    /// Partitions that have a chunk ready to write (full, or any when `all`). A
    /// chunk with a successor is full (the next frame did not fit), and so is a
    /// sealed one.
    pub fn due(&self, all: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .partitions
            .values()
            .filter(|p| {
                p.chunks.front().is_some_and(|c| {
                    !c.in_flight
                        && (all
                            || c.sealed
                            || c.len >= self.limits.flush_bytes
                            || p.chunks.len() > 1)
                })
            })
            .map(|p| p.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Prepares the write of `id`'s oldest chunk: pads and seals it (it takes no more
    /// frames), and rolls the segment first when it would not fit. Segment files are
    /// created here, so this may fail with `NoSpace`.
    pub async fn prepare_write(
        this: &std::cell::RefCell<Self>,
        id: u32,
    ) -> Result<Option<WriteJob>> {
        let (needs_roll, base) = {
            let l = this.borrow();
            let Some(p) = l.partitions.get(&id) else {
                return Ok(None);
            };
            let Some(c) = p.chunks.front().filter(|c| !c.in_flight) else {
                return Ok(None);
            };
            let len = frame::align_up(c.len) as u64;
            // A sealed last segment (its successor could not be created, e.g. on a
            // full device) takes no more writes: the roll is retried.
            let roll = p.segments.back().is_none_or(|s| {
                s.file.is_none() || s.write_pos > 0 && s.write_pos + len > l.limits.segment_bytes
            });
            (roll, c.base_offset)
        };
        if needs_roll {
            Self::roll(this, id, base).await?;
        }
        let mut l = this.borrow_mut();
        let p = l.partitions.get_mut(&id).expect("partition exists");
        let seg = p.segments.back().expect("an active segment");
        let file = seg.file.clone().expect("the active segment is open");
        let (path, pos) = (seg.path.clone(), seg.write_pos);
        let c = p.chunks.front_mut().expect("a chunk");
        let buf = c.seal();
        c.in_flight = true;
        Ok(Some(WriteJob {
            partition: id,
            file,
            path,
            pos,
            buf,
        }))
    }

    /// Seals the active segment (trim, index, sync) and creates the next at `base`.
    async fn roll(this: &std::cell::RefCell<Self>, id: u32, base: u64) -> Result<()> {
        let (sealing, path, seg_bytes, dir) = {
            let l = this.borrow();
            let p = &l.partitions[&id];
            // Already sealed when an earlier roll sealed it and then failed to
            // create the next segment.
            let sealing = p
                .segments
                .back()
                .and_then(|s| Some((s.file.clone()?, s.path.clone(), s.write_pos)));
            (
                sealing,
                p.dir.join(segment_name(base, "log")),
                l.limits.segment_bytes,
                p.dir.clone(),
            )
        };
        if let Some((file, spath, write_pos)) = sealing {
            file.truncate(write_pos)
                .await
                .map_err(|e| LogError::io("trimming", &spath, e))?;
            file.fdatasync()
                .await
                .map_err(|e| LogError::io("syncing", &spath, e))?;
            let mut l = this.borrow_mut();
            let seg = l
                .partitions
                .get_mut(&id)
                .and_then(|p| p.segments.back_mut())
                .expect("segment");
            write_index(&seg.path.with_extension("index"), seg)?;
            seg.file = None;
        }
        let file = match open_segment(&path, Some(seg_bytes)).await {
            Ok(f) => f,
            Err(e) => {
                // Leave no half-made segment behind; the roll is retried later.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        crate::journal::sync_dir(&dir)?;
        let mut l = this.borrow_mut();
        let p = l.partitions.get_mut(&id).expect("partition");
        p.segments.push_back(Segment {
            base_offset: base,
            end_offset: base,
            path,
            file: Some(Rc::new(file)),
            write_pos: 0,
            index: Vec::new(),
            max_timestamp_ms: i64::MIN,
        });
        Ok(())
    }

    /// Runs a prepared write and applies it: the chunk leaves memory, the index grows.
    pub async fn run_write(this: &std::cell::RefCell<Self>, job: WriteJob) -> Result<u64> {
        let len = job.buf.len();
        let res = job.file.write_rc_at(job.buf, job.pos).await;
        let mut l = this.borrow_mut();
        let interval = l.limits.index_interval_bytes;
        let p = l.partitions.get_mut(&job.partition).expect("partition");
        let written = match res {
            Ok(n) if n == len => n,
            Ok(n) => {
                // A short write is how a full device without preallocation (tmpfs)
                // answers: the chunk stays in memory and is written again later.
                p.chunks.front_mut().expect("chunk").in_flight = false;
                return Err(LogError::io(
                    "writing",
                    &job.path,
                    std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("short write: {n} of {len} bytes"),
                    ),
                ));
            }
            Err(e) => {
                p.chunks.front_mut().expect("chunk").in_flight = false;
                return Err(LogError::io("writing", &job.path, e));
            }
        };
        let c = p.chunks.pop_front().expect("chunk");
        let seg = p.segments.back_mut().expect("segment");
        assert_eq!(seg.end_offset, c.base_offset, "segment offsets are dense");
        let mut last_indexed = seg.index.last().map(|&(_, pos)| pos);
        for &(offset, rel) in &c.entries {
            let pos = job.pos + u64::from(rel);
            if last_indexed.is_none_or(|l| pos >= l + interval) {
                seg.index.push((offset, pos));
                last_indexed = Some(pos);
            }
        }
        seg.end_offset = c.end_offset;
        seg.write_pos += written as u64;
        seg.max_timestamp_ms = seg.max_timestamp_ms.max(c.max_timestamp_ms);
        if !p.unsynced.iter().any(|f| Rc::ptr_eq(f, &job.file)) {
            p.unsynced.push(job.file.clone());
        }
        l.pending_bytes -= c.len;
        Ok(c.last_seq)
    }

    /// Syncs every segment written since the last sync.
    pub async fn sync(this: &std::cell::RefCell<Self>) -> Result<()> {
        let files: Vec<(Rc<DmaFile>, u32)> = {
            let mut l = this.borrow_mut();
            l.partitions
                .values_mut()
                .flat_map(|p| {
                    let id = p.id;
                    p.unsynced.drain(..).map(move |f| (f, id))
                })
                .collect()
        };
        for (file, id) in files {
            if let Err(e) = file.fdatasync().await {
                let path = file
                    .path()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| this.borrow().dir.join(format!("partition {id}")));
                return Err(LogError::io("syncing", &path, e));
            }
        }
        Ok(())
    }

    /// The sequence number below which every journal frame is in a segment file
    /// (written; durable after the next [`Ledger::sync`]): one before the oldest
    /// frame still in memory, or `journal_last_seq` when nothing is.
    pub fn written_through_seq(&self, journal_last_seq: u64) -> u64 {
        self.partitions
            .values()
            .filter_map(|p| p.chunks.front())
            .map(|c| first_seq_of(c).saturating_sub(1))
            .min()
            .unwrap_or(journal_last_seq)
    }

    /// Reads batches of `id` from `from`, up to about `max_bytes` of payload (at least
    /// one batch when any exists).
    pub async fn read(
        this: &std::cell::RefCell<Self>,
        id: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let plan = {
            let l = this.borrow();
            let p = l
                .partitions
                .get(&id)
                .ok_or(LogError::UnknownPartition(id))?;
            if from < p.start_offset() || from > p.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    partition: p.name.clone(),
                    offset: from,
                    start: p.start_offset(),
                    end: p.next_offset,
                });
            }
            if from == p.next_offset {
                return Ok(Vec::new());
            }
            let seg_i = p.segments.partition_point(|s| s.base_offset <= from);
            match seg_i.checked_sub(1).map(|i| &p.segments[i]) {
                Some(seg) if from < seg.end_offset => {
                    let start = seg.index_position(from);
                    let want = (max_bytes + HEADER_LEN).max(READ_BYTES_MIN) as u64;
                    let len = want.min(seg.write_pos - start) as usize;
                    Some((
                        seg.file.clone(),
                        seg.path.clone(),
                        start,
                        len,
                        seg.write_pos,
                    ))
                }
                _ => {
                    return Ok(read_chunks(&p.chunks, from, max_bytes));
                }
            }
        };
        let (file, path, start, len, write_pos) = plan.expect("file read planned");
        let file = match file {
            Some(f) => f,
            None => Rc::new(
                DmaFile::open(&path)
                    .await
                    .map_err(|e| LogError::io("opening", &path, e))?,
            ),
        };
        let aligned = frame::align_down(start as usize) as u64;
        let mut buf = read_range(&file, &path, aligned, len + (start - aligned) as usize).await?;
        let mut entries = Vec::new();
        let mut total = 0usize;
        let mut pos = (start - aligned) as usize;
        loop {
            match frame::Scanner::new(&buf, pos, buf.len()).next() {
                Some(Step::Frame { pos: at, header }) if header.kind == Kind::Data => {
                    pos = at + header.frame_len();
                    if header.end_offset() <= from {
                        continue;
                    }
                    if !entries.is_empty() && total + header.payload_len as usize > max_bytes {
                        break;
                    }
                    total += header.payload_len as usize;
                    entries.push(Entry {
                        base_offset: header.base_offset,
                        record_count: header.record_count,
                        timestamp_ms: header.timestamp_ms,
                        payload: buf[at + HEADER_LEN..at + header.frame_len()].to_vec(),
                    });
                }
                Some(Step::End {
                    pos: at,
                    why: frame::Invalid::Truncated { frame_len, .. },
                }) if entries.is_empty() && aligned + ((at + frame_len) as u64) <= write_pos => {
                    // The first batch is larger than what we read: read all of it.
                    let more = at + frame_len;
                    buf = read_range(&file, &path, aligned, more).await?;
                    pos = at;
                }
                _ => break,
            }
        }
        Ok(entries)
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

    /// Keeps offsets from `offset` on readable whatever the retention limits say
    /// (`None`: retention alone decides).
    pub fn retain_from(&mut self, id: u32, offset: Option<u64>) {
        if let Some(p) = self.partitions.get_mut(&id) {
            p.retain_from = offset;
        }
    }

    /// Segment files of a partition (tests, inspection).
    pub fn segments_of(&self, id: u32) -> usize {
        self.partitions.get(&id).map_or(0, |p| p.segments.len())
    }
}

/// The buffer of a ledger chunk: `flush_bytes`, or one frame (with the padding of
/// its write) when that is larger, in whole blocks. The registered pool is a buddy
/// allocator, so the default 1 MiB takes exactly a 1 MiB block of it.
pub(crate) fn chunk_capacity(flush_bytes: usize, frame_len: usize) -> usize {
    frame::align_up(flush_bytes.max(frame_len + frame::BLOCK))
}

fn first_seq_of(c: &Chunk) -> u64 {
    // The first frame's header, inside the chunk's bytes this process wrote.
    let pos = c.entries.first().map_or(0, |&(_, p)| p as usize);
    frame::decode_own(&c.bytes()[pos..]).seq
}

async fn read_range(file: &DmaFile, path: &Path, pos: u64, len: usize) -> Result<Vec<u8>> {
    let r = file
        .read_at(pos, len)
        .await
        .map_err(|e| LogError::io("reading", path, e))?;
    Ok(r.to_vec())
}

fn read_chunks(chunks: &VecDeque<Chunk>, from: u64, max_bytes: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for c in chunks.iter().filter(|c| c.end_offset > from) {
        let first = c
            .entries
            .partition_point(|&(o, _)| o <= from)
            .saturating_sub(1);
        let bytes = c.bytes();
        for &(_, pos) in &c.entries[first..] {
            let pos = pos as usize;
            let header = frame::decode_own(&bytes[pos..]);
            if header.end_offset() <= from {
                continue;
            }
            if !out.is_empty() && total + header.payload_len as usize > max_bytes {
                return out;
            }
            total += header.payload_len as usize;
            out.push(Entry {
                base_offset: header.base_offset,
                record_count: header.record_count,
                timestamp_ms: header.timestamp_ms,
                payload: bytes[pos + HEADER_LEN..pos + header.frame_len()].to_vec(),
            });
        }
    }
    out
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

fn read_meta(path: &Path) -> Result<(u32, String)> {
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

struct IndexFile {
    end_offset: u64,
    write_pos: u64,
    max_timestamp_ms: i64,
    entries: Vec<(u64, u64)>,
}

fn write_index(path: &Path, seg: &Segment) -> Result<()> {
    use std::io::Write;
    let mut body = Vec::with_capacity(INDEX_HEADER_LEN + seg.index.len() * 16);
    body.extend_from_slice(&[0u8; 4]);
    body.extend_from_slice(INDEX_MAGIC);
    body.extend_from_slice(&(seg.index.len() as u32).to_le_bytes());
    body.extend_from_slice(&seg.end_offset.to_le_bytes());
    body.extend_from_slice(&seg.write_pos.to_le_bytes());
    body.extend_from_slice(&seg.max_timestamp_ms.to_le_bytes());
    for &(o, p) in &seg.index {
        body.extend_from_slice(&o.to_le_bytes());
        body.extend_from_slice(&p.to_le_bytes());
    }
    let crc = crc32c::crc32c(&body[4..]);
    body[0..4].copy_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("index.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| LogError::io("creating", &tmp, e))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| LogError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LogError::io("renaming", &tmp, e))
}

/// Loads an index file; `None` when it is missing or fails any check.
fn read_index(path: &Path) -> Option<IndexFile> {
    let body = std::fs::read(path).ok()?;
    if body.len() < INDEX_HEADER_LEN || &body[4..12] != INDEX_MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(body[0..4].try_into().ok()?);
    if stored != crc32c::crc32c(&body[4..]) {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(body[12..16].try_into().ok()?) as usize;
    if body.len() != INDEX_HEADER_LEN + count * 16 {
        return None;
    }
    let entries: Vec<(u64, u64)> = (0..count)
        .map(|i| {
            let at = INDEX_HEADER_LEN + i * 16;
            (u64_at(at), u64_at(at + 8))
        })
        .collect();
    let sorted = entries
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
    let write_pos = u64_at(24);
    if !sorted || entries.last().is_some_and(|&(_, p)| p >= write_pos) {
        return None;
    }
    Some(IndexFile {
        end_offset: u64_at(16),
        write_pos,
        max_timestamp_ms: i64::from_le_bytes(body[32..40].try_into().ok()?),
        entries,
    })
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

    /// Frames of `sizes` bytes for partition 0 from offset `base`, seq from `seq`,
    /// one record each, pushed into `l`; returns their payloads.
    fn push(l: &mut Ledger, base: u64, seq: u64, sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let payload = vec![(base + i as u64) as u8; n];
            let mut header = Header::data(0, seq + i as u64, base + i as u64, 1, 5);
            let mut buf = vec![0; HEADER_LEN + n];
            frame::encode(&mut buf, &header, &payload);
            header.payload_len = n as u32;
            l.push_frame(&header, &buf);
            out.push(payload);
        }
        out
    }

    #[test]
    fn chunks_fill_in_place_and_stay_readable_while_their_write_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let limits = LedgerLimits {
                    segment_bytes: 1 << 20,
                    flush_bytes: 16 << 10,
                    index_interval_bytes: 4096,
                    retention_bytes: None,
                    retention_ms: None,
                };
                let l = std::cell::RefCell::new(
                    Ledger::open(&path, limits, 8, &mut Vec::new(), &mut Vec::new())
                        .await
                        .unwrap(),
                );
                l.borrow_mut().create_partition("p", 8).unwrap();
                // 3 x 5000 bytes fill 15 KiB of the 16 KiB chunk: not due. The fourth
                // does not fit, starts a second chunk and makes the first due.
                let mut want = push(&mut l.borrow_mut(), 0, 1, &[5000, 5000, 5000]);
                assert!(l.borrow().due(false).is_empty());
                want.extend(push(&mut l.borrow_mut(), 3, 4, &[5000]));
                assert_eq!(l.borrow().due(false), vec![0]);
                assert_eq!(l.borrow().partitions[&0].chunks.len(), 2);
                let job = Ledger::prepare_write(&l, 0).await.unwrap().unwrap();
                assert_eq!(job.len(), 16 << 10, "three frames, padded to a block");
                // Sealed and in flight: later frames go to the open chunk, and every
                // frame reads back from memory meanwhile.
                want.extend(push(&mut l.borrow_mut(), 4, 5, &[100]));
                // (offset, length, every byte its offset) of each entry.
                let check = |entries: Vec<Entry>, from: usize, to: usize| {
                    let got: Vec<(u64, usize, bool)> = entries
                        .iter()
                        .map(|e| {
                            let b = e.base_offset;
                            (b, e.payload.len(), e.payload == want[b as usize])
                        })
                        .collect();
                    let expect: Vec<(u64, usize, bool)> = (from..to)
                        .map(|i| (i as u64, want[i].len(), true))
                        .collect();
                    assert_eq!(got, expect);
                };
                check(Ledger::read(&l, 0, 0, 1 << 20).await.unwrap(), 0, 5);
                check(Ledger::read(&l, 0, 2, 1 << 20).await.unwrap(), 2, 5);
                // Written: the first three read from the segment file (a read stays in
                // one place), the rest from memory.
                assert_eq!(Ledger::run_write(&l, job).await.unwrap(), 3);
                assert_eq!(l.borrow().partitions[&0].segments[0].end_offset, 3);
                check(Ledger::read(&l, 0, 0, 1 << 20).await.unwrap(), 0, 3);
                check(Ledger::read(&l, 0, 3, 1 << 20).await.unwrap(), 3, 5);
                assert_eq!(
                    l.borrow().pending_bytes(),
                    5000 + HEADER_LEN + 100 + HEADER_LEN
                );
            });
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
