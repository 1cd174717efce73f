//! The journal ring: one core's write-ahead log on preallocated O_DIRECT segment files.
//!
//! Owns the segment files of one core's journal directory, their headers, the write
//! position, rolling from one segment to the next and recycling old ones. It never
//! decides *what* is written (the log's driver builds the flushes) nor when a
//! segment's contents are safe elsewhere (the driver says so with a sequence number).
//!
//! Files: `journal-NNNN.seg`, `segments` of them, each `segment_bytes` long, created
//! once with `fallocate` and zero-filled so that later writes never extend a file
//! (writes into written blocks sync about twice as fast). Block 0 is the segment
//! header; frames follow from block 1. A segment ends with a SEAL frame that is made
//! durable before the next segment receives data, so recovery can tell a deliberate
//! end from a torn one; a clean stop seals the active segment the same way.

use crate::error::{LogError, Result};
use crate::frame::{self, Header, Invalid, Kind, Step, BLOCK, HEADER_LEN};
use crate::fs;
use glommio::io::{DmaFile, OpenOptions};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const MAGIC: &[u8; 8] = b"TWJOURN1";
/// Bytes used in the header block; the rest is zero.
const SEG_HEADER_LEN: usize = 40;
/// Zero-fill writes use this size.
const ZERO_FILL_BYTES: usize = 1 << 20;

/// The header block of a journal segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard: u32,
    /// Position of the segment in the ring's history; 0 marks a never-used segment.
    pub segment_seq: u64,
    /// The journal sequence number of the segment's first frame.
    pub first_seq: u64,
    pub segment_bytes: u64,
}

impl SegmentHeader {
    fn encode(&self, dst: &mut [u8]) {
        dst[..BLOCK].fill(0);
        dst[4..12].copy_from_slice(MAGIC);
        dst[12..16].copy_from_slice(&self.shard.to_le_bytes());
        dst[16..24].copy_from_slice(&self.segment_seq.to_le_bytes());
        dst[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        dst[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&dst[4..SEG_HEADER_LEN]);
        dst[0..4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads a header block back; `Err` says why it is not one.
    pub fn decode(src: &[u8]) -> std::result::Result<Self, String> {
        if src.len() < SEG_HEADER_LEN {
            return Err("shorter than a segment header".into());
        }
        if &src[4..12] != MAGIC {
            return Err("not a journal segment (bad magic)".into());
        }
        let stored = u32::from_le_bytes(src[0..4].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&src[4..SEG_HEADER_LEN]);
        if stored != computed {
            return Err(format!(
                "segment header checksum mismatch ({stored:#010x} != {computed:#010x})"
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(src[i..i + 8].try_into().expect("8 bytes"));
        Ok(SegmentHeader {
            shard: u32::from_le_bytes(src[12..16].try_into().expect("4 bytes")),
            segment_seq: u64_at(16),
            first_seq: u64_at(24),
            segment_bytes: u64_at(32),
        })
    }
}

/// Something recovery did not keep, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )
    }
}

/// Where recovery stopped in the journal.
#[derive(Clone, Copy, Debug)]
pub struct RecoveredEnd {
    pub slot: usize,
    pub end_pos: usize,
    pub sealed: bool,
    pub damaged: bool,
}

/// A journal segment the journal writes or wrote, as an adopting ledger reads it
/// (`journal_adopt`).
pub struct OpenSegment {
    pub segment_seq: u64,
    pub slot: usize,
    /// Its first frame's sequence number.
    pub first_seq: u64,
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
}

/// One journal segment file.
struct Slot {
    path: PathBuf,
    file: Rc<DmaFile>,
    header: SegmentHeader,
    /// Sequence number of the last frame in the segment; `first_seq - 1` when empty.
    last_seq: u64,
}

/// The journal of one core. Owned by the log's driver task only.
pub struct Journal {
    shard: u32,
    segment_bytes: u64,
    slots: Vec<Slot>,
    /// Live slots, oldest first; the active segment is the last.
    live: std::collections::VecDeque<usize>,
    /// Next write position in the active segment (block aligned).
    write_pos: u64,
    /// The active segment must be sealed and left before the next write.
    must_roll: bool,
    segment_seq_next: u64,
    dsync: bool,
    /// Sync the sealed segment and the new header at a roll (`always`, `interval`);
    /// under `never` nothing is synced but at a clean close.
    sync_rolls: bool,
    /// Segment headers found damaged and rebuilt from the segment's first frame.
    repaired: Vec<Damaged>,
    /// Sealed segments are adopted by the ledger (`journal_adopt`): a slot's file
    /// may have been renamed away and replaced, so a reused slot is opened again.
    adopting: bool,
}

/// What a scan of one segment found.
pub struct SegmentScan {
    /// Data frames in order: position in the segment bytes and header.
    pub frames: Vec<(usize, Header)>,
    /// The next sequence number expected after this segment.
    pub next_seq: u64,
    /// Where the valid prefix ends.
    pub end_pos: usize,
    /// The segment ended with a SEAL: the chain continues in the next segment.
    pub sealed: bool,
    /// Set when the segment ended on damage rather than on a clean end.
    pub damage: Option<Dropped>,
    /// Damage with valid frames after it, where the scan picked up again.
    pub damaged: Vec<Damaged>,
}

/// Frames that failed their checks with valid frames of later sequence numbers
/// after them in the same segment: media damage, not a torn tail (a torn write has
/// nothing valid after it). Recovery keeps every valid frame on both sides.
#[derive(Clone, Debug)]
pub struct Damaged {
    pub path: PathBuf,
    /// Byte offset in the segment where the damage starts, and where the next valid
    /// frame begins.
    pub offset: u64,
    pub resumed_at: u64,
    /// Sequence numbers of the frames lost: `first_seq..next_seq`.
    pub first_seq: u64,
    pub next_seq: u64,
    pub reason: String,
    /// The damaged frame's header as far as it can be read (unverified).
    pub guess: Option<Header>,
    /// How many of the segment's valid frames come before the damage.
    pub frames_before: usize,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first_seq == self.next_seq {
            return write!(
                f,
                "{} bytes {}..{}: {}; no frame lost",
                self.path.display(),
                self.offset,
                self.resumed_at,
                self.reason
            );
        }
        write!(
            f,
            "{} bytes {}..{}: {}; frames seq {}..{} unreadable, valid frames follow",
            self.path.display(),
            self.offset,
            self.resumed_at,
            self.reason,
            self.first_seq,
            self.next_seq
        )
    }
}

pub(crate) fn slot_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("journal-{index:04}.seg"))
}

fn parse_slot_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".seg")?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

async fn open_rw(path: &Path, create: bool) -> Result<DmaFile> {
    open_with(path, create, 0).await
}

async fn open_with(path: &Path, create: bool, flags: i32) -> Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(flags)
        .dma_open(path)
        .await
        .map_err(|e| LogError::io("opening", path, e))
}

/// Creates a segment file of `bytes`, allocated and zero-filled, synced.
async fn create_segment(path: &Path, bytes: u64) -> Result<DmaFile> {
    create_allocated(path, bytes, true).await
}

/// Creates a segment file of `bytes` at `path`, allocated but not zero-filled (the
/// slot of a segment the ledger adopted: zero-filling would write the device once
/// more per byte, which adoption exists to avoid). Reads of its unwritten blocks
/// return zeros; its first writes pay the extent conversion.
pub(crate) async fn create_unfilled_segment(path: &Path, bytes: u64) -> Result<()> {
    create_allocated(path, bytes, false)
        .await?
        .close()
        .await
        .map_err(|e| LogError::io("closing", path, e))
}

/// Makes the freed adopted segment at `free` the segment file of `bytes` at `path`
/// (a journal slot): its size set (grown by allocation, or cut), synced, then
/// renamed, its first two blocks zeroed. Its blocks are written already, so the
/// journal's synced writes into them need no extent conversion; the frames it
/// still holds are older than anything the journal numbers (the adoption floor
/// never goes down: the newest adopted segment is never freed) and read as stale
/// (`looks_stale`).
pub(crate) async fn reuse_as_segment(free: &Path, path: &Path, bytes: u64) -> Result<()> {
    let file = open_rw(free, false).await?;
    let len = file
        .file_size()
        .await
        .map_err(|e| LogError::io("reading size of", free, e))?;
    if len > bytes {
        file.truncate(bytes)
            .await
            .map_err(|e| LogError::io("truncating", free, e))?;
    } else if len < bytes {
        file.pre_allocate(bytes, false)
            .await
            .map_err(|e| LogError::io("allocating journal segment", free, e))?;
    }
    // Its old header and first block of frames zeroed: the slot reads as never
    // used until the journal writes a header of its own (a crash before that
    // must not put the old segment back in the chain), and a header lost with
    // `durability = never` is rebuilt from our first frame, not an old one.
    let mut zeros = file.alloc_dma_buffer(2 * BLOCK);
    zeros.as_bytes_mut().fill(0);
    file.write_at(zeros, 0)
        .await
        .map_err(|e| LogError::io("zeroing the header of", free, e))?;
    file.fdatasync()
        .await
        .map_err(|e| LogError::io("syncing", free, e))?;
    file.rename(path)
        .await
        .map_err(|e| LogError::io("renaming", free, e))?;
    file.close()
        .await
        .map_err(|e| LogError::io("closing", path, e))
}

/// Creates `path` whole or not at all: allocated under a temporary name,
/// zero-filled when asked, synced, renamed.
async fn create_allocated(path: &Path, bytes: u64, zero_fill: bool) -> Result<DmaFile> {
    let tmp = path.with_extension("seg.tmp");
    let file = open_rw(&tmp, true).await?;
    file.pre_allocate(bytes, false)
        .await
        .map_err(|e| LogError::io("allocating journal segment", &tmp, e))?;
    let mut pos = if zero_fill { 0 } else { bytes };
    while pos < bytes {
        let len = ZERO_FILL_BYTES.min((bytes - pos) as usize);
        let mut buf = file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        file.write_at(buf, pos)
            .await
            .map_err(|e| LogError::io("zero-filling journal segment", &tmp, e))?;
        pos += len as u64;
    }
    file.fdatasync()
        .await
        .map_err(|e| LogError::io("syncing", &tmp, e))?;
    file.rename(path)
        .await
        .map_err(|e| LogError::io("renaming", &tmp, e))?;
    Ok(file)
}

/// Reads `len` bytes from the start of `file` in large aligned reads.
pub(crate) async fn read_all(file: &DmaFile, path: &Path, len: u64) -> Result<Vec<u8>> {
    read_until_zeros(file, path, len, usize::MAX).await
}

/// Reads `file` from the start in pieces, as [`read_all`], but stops once the
/// bytes read end in a run of at least `zeros` zero bytes: nothing a scan from
/// the start accepts lies past such a run when no valid frame holds one. Returns
/// what was read (the run included).
pub(crate) async fn read_until_zeros(
    file: &DmaFile,
    path: &Path,
    len: u64,
    zeros: usize,
) -> Result<Vec<u8>> {
    const PIECE: u64 = 8 << 20;
    // Pages of capacity never read into are never touched.
    let mut out = Vec::with_capacity(len as usize);
    let mut pos = 0u64;
    let mut trailing = 0usize;
    while pos < len && trailing < zeros {
        let want = PIECE.min(len - pos);
        let piece = file
            .read_at_aligned(pos, frame::align_up(want as usize))
            .await
            .map_err(|e| LogError::io("reading", path, e))?;
        let got = piece.len().min(want as usize);
        let piece = &piece[..got];
        trailing = match piece.iter().rposition(|&b| b != 0) {
            Some(last) => got - last - 1,
            None => trailing.saturating_add(got),
        };
        out.extend_from_slice(piece);
        if (got as u64) < want {
            break;
        }
        pos += want;
    }
    Ok(out)
}

/// Makes glommio decide poll-ring support for `dir`'s device with a real read.
///
/// glommio probes whether a device supports io_uring polled I/O by reading the first
/// file it opens there, once per process and device. An empty new file reads zero
/// bytes, which passes the probe on devices without polling (virtio, most clouds), and
/// every later read then fails with EOPNOTSUPP. Opening a one-block file first makes
/// the probe read real data, so it answers for the device as it is.
pub async fn prime_device(dir: &Path) -> Result<()> {
    let path = dir.join(".tidewater-probe");
    if let Err(e) = fs::write(&path, vec![0u8; BLOCK]).await {
        // A full device: the files already there (never empty) make the probe right.
        let _ = fs::remove_file(&path).await;
        tracing::debug!(path = %path.display(), "cannot write the device probe: {}", e.source);
        return Ok(());
    }
    let opened = DmaFile::open(&path).await;
    let _ = fs::remove_file(&path).await;
    let file = opened.map_err(|e| LogError::io("opening", &path, e))?;
    let _ = file.close().await;
    Ok(())
}

/// The segment's first frame (at block 1), when one is there and valid.
async fn first_frame(file: &DmaFile, path: &Path, segment_bytes: u64) -> Result<Option<Header>> {
    let head = file
        .read_at_aligned(BLOCK as u64, BLOCK)
        .await
        .map_err(|e| LogError::io("reading", path, e))?;
    if head.len() < HEADER_LEN || head[..HEADER_LEN].iter().all(|b| *b == 0) {
        return Ok(None); // never written: the common case, one block read
    }
    let bytes = read_all(file, path, segment_bytes).await?;
    Ok(
        match frame::Scanner::new(&bytes, BLOCK, bytes.len()).next() {
            Some(Step::Frame { header, .. }) if header.kind == Kind::Data => Some(header),
            _ => None,
        },
    )
}

/// Gives a segment whose header is damaged (or zero) but whose first frame is valid
/// its header back, when that frame's sequence number shows the segment belongs to
/// the live chain: after its oldest segment (a header torn while a segment was
/// reused leaves frames of its previous use, older than every live segment), or
/// with no other live segment. Its place in the ring's history comes from its
/// neighbours. The segment is copied aside first; what was rebuilt is returned.
async fn repair_headers(
    slots: &mut [Slot],
    unheaded: Vec<(usize, Header, String)>,
    segment_bytes: u64,
) -> Result<Vec<Damaged>> {
    let mut repaired = Vec::new();
    for (index, first, what) in unheaded {
        let live: Vec<(u64, u64)> = slots
            .iter()
            .map(|s| (s.header.first_seq, s.header.segment_seq))
            .filter(|&(_, seq)| seq != 0)
            .collect();
        let oldest = live.iter().map(|&(f, _)| f).min();
        if first.seq == 0 || oldest.is_some_and(|o| first.seq <= o) {
            tracing::warn!(path = %slots[index].path.display(), "{what}; its frames are older than the journal's chain: the segment is unused");
            continue;
        }
        let prev = live.iter().filter(|&&(f, _)| f < first.seq).max();
        let next = live.iter().filter(|&&(f, _)| f > first.seq).min();
        let segment_seq = match (prev, next) {
            (Some(&(_, p)), _) => p + 1,
            (None, Some(&(_, n))) => n.saturating_sub(1),
            // Nothing to place it by: taken as reused, so frames of an older use
            // end its scan rather than pass for damage.
            (None, None) => slots.len() as u64 + 1,
        };
        if segment_seq == 0 || live.iter().any(|&(_, s)| s == segment_seq) {
            tracing::warn!(path = %slots[index].path.display(), "{what}; cannot place it in the ring's history: the segment is unused");
            continue;
        }
        let path = slots[index].path.clone();
        let bytes = read_all(&slots[index].file, &path, segment_bytes).await?;
        copy_aside(&path, first.seq, &bytes).await?;
        slots[index].header = SegmentHeader {
            shard: slots[index].header.shard,
            segment_seq,
            first_seq: first.seq,
            segment_bytes,
        };
        slots[index].last_seq = first.seq.saturating_sub(1);
        repaired.push(Damaged {
            path,
            offset: 0,
            resumed_at: BLOCK as u64,
            first_seq: first.seq,
            next_seq: first.seq,
            reason: format!("segment header {what}; rebuilt from its first frame"),
            guess: None,
            frames_before: 0,
        });
    }
    Ok(repaired)
}

/// Copies a damaged journal segment to `<journal dir>.damaged/` before recovery
/// writes anything to it, so the evidence survives for whoever looks into it.
/// Named by the segment's use (its first sequence number): a restart before the
/// segment is reused finds the same damage and keeps the one copy. The copy is
/// written whole (temporary name, renamed), so a copy that exists is complete.
pub(crate) async fn copy_aside(path: &Path, first_seq: u64, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = dir.with_file_name(format!(
        "{}.damaged",
        dir.file_name()
            .map_or("journal".into(), |n| n.to_string_lossy())
    ));
    fs::create_dir_all(&aside).await?;
    let name = path
        .file_name()
        .map_or("segment".into(), |n| n.to_string_lossy());
    let copy = aside.join(format!("{name}.from-seq-{first_seq}"));
    if fs::exists(&copy).await {
        return Ok(());
    }
    fs::write_durable(&copy, bytes.to_vec())
        .await
        .map_err(|e| LogError::io("copying a damaged journal segment to", &copy, e.source))?;
    tracing::error!(
        "damaged journal segment {} copied to {}",
        path.display(),
        copy.display()
    );
    Ok(())
}

impl Journal {
    /// Opens (creating on first start) the journal ring in `dir`, checks every file
    /// and returns the journal with its live segments in chain order; nothing is
    /// written to existing segments until [`Journal::finish_recovery`].
    ///
    /// With `dsync`, segments are opened `O_DSYNC`: a write completes once durable, in
    /// one device request (write + flush/FUA) instead of a write and an `fdatasync`.
    /// Without `sync_rolls`, a roll writes the seal and the next header without
    /// syncing them (`never`: each sync there flushes the device's cache of the whole
    /// segment, tens of milliseconds during which no append completes). Recovery
    /// still keeps a valid prefix: the chain is followed only across a seal and
    /// from a segment whose first sequence number continues it.
    pub async fn open(
        dir: &Path,
        shard: u32,
        segment_bytes: u64,
        segments: u32,
        dsync: bool,
        sync_rolls: bool,
    ) -> Result<Self> {
        fs::create_dir_all(dir)
            .await
            .map_err(|e| e.with_op("creating journal directory"))?;
        // glommio resolves some calls (statx) by path: keep paths absolute.
        let dir = &fs::canonicalize(dir).await?;
        check_journal_dir(dir, segments).await?;
        prime_device(dir).await?;
        let mut slots = Vec::with_capacity(segments as usize);
        let mut created = false;
        // Segments without a valid header whose first frame is valid.
        let mut unheaded: Vec<(usize, Header, String)> = Vec::new();
        for index in 0..segments as usize {
            let path = slot_path(dir, index);
            if !fs::exists(&path).await {
                created = true;
                create_segment(&path, segment_bytes)
                    .await?
                    .close()
                    .await
                    .map_err(|e| LogError::io("closing", &path, e))?;
            }
            let file = open_with(&path, false, if dsync { libc::O_DSYNC } else { 0 }).await?;
            let size = file
                .file_size()
                .await
                .map_err(|e| LogError::io("reading size of", &path, e))?;
            if size != segment_bytes {
                return Err(LogError::corrupt(
                    &path,
                    format!("journal segment is {size} bytes but journal_segment_bytes is {segment_bytes}; keep the setting the journal was created with, or move the directory away"),
                ));
            }
            let head = file
                .read_at_aligned(0, BLOCK)
                .await
                .map_err(|e| LogError::io("reading header of", &path, e))?;
            let unused = SegmentHeader {
                shard,
                segment_seq: 0,
                first_seq: 0,
                segment_bytes,
            };
            let decoded = if head.iter().all(|b| *b == 0) {
                Err("zeroed".to_string())
            } else {
                SegmentHeader::decode(&head)
            };
            let header = match decoded {
                Ok(h) if h.shard != shard => {
                    return Err(LogError::corrupt(
                        &path,
                        format!("journal segment belongs to core {} but this is core {shard}; each core needs its own journal directory", h.shard),
                    ))
                }
                Ok(h) => h,
                Err(what) => {
                    // No header: never used, or a header write torn before any of its
                    // data (nothing acked), or damage. Only frames tell them apart;
                    // see `repair_headers`.
                    if let Some(first) = first_frame(&file, &path, segment_bytes).await? {
                        unheaded.push((index, first, what));
                    } else if what != "zeroed" {
                        tracing::warn!(path = %path.display(), "{what}; no frame follows: the segment is unused");
                    }
                    unused
                }
            };
            slots.push(Slot {
                path,
                file: Rc::new(file),
                header,
                last_seq: header.first_seq.saturating_sub(1),
            });
        }
        if created {
            fs::sync_dir(dir).await?;
        }
        let repaired = repair_headers(&mut slots, unheaded, segment_bytes).await?;
        let mut live: Vec<usize> = (0..slots.len())
            .filter(|&i| slots[i].header.segment_seq != 0)
            .collect();
        live.sort_by_key(|&i| slots[i].header.segment_seq);
        let segment_seq_next = live.last().map_or(1, |&i| slots[i].header.segment_seq + 1);
        Ok(Journal {
            shard,
            segment_bytes,
            slots,
            live: live.into(),
            write_pos: BLOCK as u64,
            must_roll: true,
            segment_seq_next,
            dsync,
            sync_rolls,
            repaired,
            adopting: false,
        })
    }

    /// Segment headers found damaged at open and rebuilt from their first frame
    /// (each segment was copied aside first); taken once, for the recovery report.
    pub fn take_repaired(&mut self) -> Vec<Damaged> {
        std::mem::take(&mut self.repaired)
    }

    /// True when a completed write is already durable (`O_DSYNC`): no sync needed.
    pub fn writes_are_durable(&self) -> bool {
        self.dsync
    }

    /// A roll's seal and header must be synced: the policy wants them stable and the
    /// writes are not already (`O_DSYNC` makes each write stable as it completes).
    fn roll_needs_sync(&self) -> bool {
        self.sync_rolls && !self.dsync
    }

    /// Sealed segments will be adopted by the ledger (`journal_adopt`): reused slots
    /// are opened again (the ledger replaces the file it renamed away), and segment
    /// numbers continue above `segment_seq_floor`, the newest adopted one. Call
    /// before recovery reads the chain: a slot still holding a segment at or below
    /// the floor holds nothing anyone needs (adoption goes in order, so it was
    /// released, or copied before adoption was turned on) and leaves the chain,
    /// where it would read as a break before the segments after the adopted ones.
    pub fn set_adopting(&mut self, segment_seq_floor: u64) {
        self.adopting = true;
        self.segment_seq_next = self.segment_seq_next.max(segment_seq_floor + 1);
        let stale: Vec<usize> = self
            .live
            .iter()
            .copied()
            .filter(|&i| self.slots[i].header.segment_seq <= segment_seq_floor)
            .collect();
        for slot in stale {
            tracing::debug!(path = %self.slots[slot].path.display(), "journal segment already adopted or released: free");
            self.live.retain(|&i| i != slot);
            // In use before: reopened when reused, like any slot adoption freed.
            self.slots[slot].last_seq = 0;
        }
    }

    /// The active segment.
    pub fn active(&self) -> Option<OpenSegment> {
        self.live.back().map(|&slot| self.open_segment(slot))
    }

    /// The segment in `slot` as an adopting ledger takes it.
    pub fn open_segment(&self, slot: usize) -> OpenSegment {
        let s = &self.slots[slot];
        OpenSegment {
            segment_seq: s.header.segment_seq,
            slot,
            first_seq: s.header.first_seq,
            file: s.file.clone(),
            path: s.path.clone(),
        }
    }

    /// Where the next write goes in the active segment.
    pub fn write_pos(&self) -> u64 {
        self.write_pos
    }

    /// Live segments, oldest first, as `(slot, first_seq)`.
    pub fn chain(&self) -> Vec<(usize, u64)> {
        self.live
            .iter()
            .map(|&i| (i, self.slots[i].header.first_seq))
            .collect()
    }

    /// True when the slot has held an earlier segment (may hold stale frames).
    pub fn is_reused(&self, slot: usize) -> bool {
        self.slots[slot].header.segment_seq > self.slots.len() as u64
    }

    pub fn slot_path(&self, slot: usize) -> &Path {
        &self.slots[slot].path
    }

    /// Reads a whole segment into memory (recovery only).
    pub async fn read_segment(&self, slot: usize) -> Result<Vec<u8>> {
        let s = &self.slots[slot];
        read_all(&s.file, &s.path, self.segment_bytes).await
    }

    /// Scans segment bytes from block 1, expecting sequence numbers from `expected`.
    /// Damage followed by valid frames of later sequence numbers is skipped (and
    /// listed in `damaged`); damage with nothing valid after it ends the scan.
    pub fn scan(path: &Path, bytes: &[u8], expected: u64, recycled: bool) -> SegmentScan {
        let mut scan = SegmentScan {
            frames: Vec::new(),
            next_seq: expected,
            end_pos: BLOCK,
            sealed: false,
            damage: None,
            damaged: Vec::new(),
        };
        let mut start = BLOCK;
        while let Some(resumed) = Self::scan_from(path, bytes, start, recycled, &mut scan) {
            start = resumed;
        }
        scan
    }

    /// Scans from `start` until a clean end, a seal, or damage; returns where to go
    /// on when the damage has valid frames of later sequence numbers after it.
    fn scan_from(
        path: &Path,
        bytes: &[u8],
        start: usize,
        recycled: bool,
        scan: &mut SegmentScan,
    ) -> Option<usize> {
        let damage = |pos: usize, reason: String| {
            Some(Dropped {
                path: path.to_path_buf(),
                offset: pos as u64,
                reason,
            })
        };
        for step in frame::Scanner::new(bytes, start, bytes.len()) {
            match step {
                Step::Frame { pos, header } if header.seq != scan.next_seq => {
                    scan.end_pos = pos;
                    if recycled && header.seq < scan.next_seq {
                        // An older frame left by the segment's previous use: a clean end.
                        return None;
                    }
                    scan.damage = damage(
                        pos,
                        format!(
                            "sequence gap: frame seq {} where {} was expected",
                            header.seq, scan.next_seq
                        ),
                    );
                    return None;
                }
                Step::Frame { pos, header } if header.kind == Kind::Seal => {
                    scan.end_pos = pos + HEADER_LEN;
                    scan.sealed = true;
                    return None;
                }
                Step::Frame { pos, header } => {
                    if header.record_count == 0 {
                        scan.end_pos = pos;
                        scan.damage =
                            damage(pos, format!("frame seq {} covers no records", header.seq));
                        return None;
                    }
                    scan.frames.push((pos, header));
                    scan.next_seq += 1;
                    scan.end_pos = pos + header.frame_len();
                }
                Step::End { pos, why } => {
                    scan.end_pos = pos;
                    let rest = &bytes[pos.min(bytes.len())..];
                    // In a reused segment, the bytes after our end may be an older
                    // frame of its previous use (older sequence number): a clean end.
                    let stale = recycled && looks_stale(rest, scan.next_seq);
                    if why == Invalid::Zeroed || stale {
                        return None;
                    }
                    let expected = scan.next_seq;
                    // Frames a segment can hold bound how far the sequence may jump.
                    let gap_max = (bytes.len() / HEADER_LEN) as u64;
                    let later = |h: &Header| h.seq > expected && h.seq - expected <= gap_max;
                    let Some((at, next)) = frame::resync(bytes, pos + 1, bytes.len(), later) else {
                        // Nothing of ours after it. In a reused segment, bytes at a
                        // block boundary (where our writes end) that are not even a
                        // data frame's header are its previous use's, from inside
                        // one of its frames (a segment retention freed becomes a
                        // slot with its frames where they were): a clean end. A torn
                        // or damaged frame of ours keeps its header, and is
                        // reported.
                        let old = recycled
                            && pos % BLOCK == 0
                            && frame::guess_data_header(rest).is_none();
                        if !old {
                            scan.damage = damage(pos, why.to_string());
                        }
                        return None;
                    };
                    scan.damaged.push(Damaged {
                        path: path.to_path_buf(),
                        offset: pos as u64,
                        resumed_at: at as u64,
                        first_seq: expected,
                        next_seq: next.seq,
                        reason: why.to_string(),
                        guess: frame::guess_data_header(rest),
                        frames_before: scan.frames.len(),
                    });
                    scan.next_seq = next.seq;
                    return Some(at);
                }
            }
        }
        None
    }

    /// After recovery replayed the chain: seal the last kept segment at `end_pos` so
    /// nothing after it is read again. When recovery stopped on damage, the bytes after
    /// the seal and every later segment are zero-filled, so that frames it dropped can
    /// never be mistaken for new ones once their sequence numbers are reused.
    pub async fn finish_recovery(&mut self, last: Option<RecoveredEnd>) -> Result<()> {
        if let Some(end) = last {
            let kept = self
                .live
                .iter()
                .position(|&i| i == end.slot)
                .map_or(0, |p| p + 1);
            let forgotten: Vec<usize> = self.live.drain(kept..).collect();
            if !end.sealed {
                let after_seal = self.seal_at(end.slot, end.end_pos, true).await?;
                if end.damaged {
                    self.wipe(end.slot, after_seal).await?;
                }
            }
            for slot in forgotten {
                self.wipe(slot, 0).await?;
                self.slots[slot].header.segment_seq = 0;
            }
        }
        self.must_roll = true;
        Ok(())
    }

    /// Records the last sequence number found in a live slot (recovery).
    pub fn set_last_seq(&mut self, slot: usize, last_seq: u64) {
        self.slots[slot].last_seq = last_seq;
    }

    /// Zero-fills `slot` from `from` (block aligned) to its end, and syncs.
    async fn wipe(&self, slot: usize, from: u64) -> Result<()> {
        let s = &self.slots[slot];
        let mut pos = from;
        while pos < self.segment_bytes {
            let len = ZERO_FILL_BYTES.min((self.segment_bytes - pos) as usize);
            let mut buf = s.file.alloc_dma_buffer(len);
            buf.as_bytes_mut().fill(0);
            s.file
                .write_at(buf, pos)
                .await
                .map_err(|e| LogError::io("zero-filling", &s.path, e))?;
            pos += len as u64;
        }
        s.file
            .fdatasync()
            .await
            .map_err(|e| LogError::io("syncing", &s.path, e))
    }

    /// Writes a SEAL frame at `end_pos` of `slot`, keeping the bytes before it, and
    /// syncs. Returns the block-aligned position after the seal.
    async fn seal_at(&mut self, slot: usize, end_pos: usize, sync: bool) -> Result<u64> {
        let s = &self.slots[slot];
        let block_start = frame::align_down(end_pos);
        let seal_pos = frame::frame_start(end_pos);
        let write_end = frame::align_up(seal_pos + HEADER_LEN);
        if write_end as u64 > self.segment_bytes {
            // No room for a seal: the segment is full, recovery reads to its end.
            return Ok(self.segment_bytes);
        }
        let keep = s
            .file
            .read_at(block_start as u64, end_pos - block_start)
            .await
            .map_err(|e| LogError::io("reading", &s.path, e))?;
        let mut buf = s.file.alloc_dma_buffer(write_end - block_start);
        let bytes = buf.as_bytes_mut();
        bytes.fill(0);
        bytes[..keep.len()].copy_from_slice(&keep);
        let seal = Header {
            kind: Kind::Seal,
            payload_len: 0,
            partition: 0,
            seq: s.last_seq + 1,
            base_offset: 0,
            record_count: 0,
            timestamp_ms: 0,
        };
        frame::encode(&mut bytes[seal_pos - block_start..], &seal, &[]);
        s.file
            .write_at(buf, block_start as u64)
            .await
            .map_err(|e| LogError::io("sealing", &s.path, e))?;
        if sync {
            s.file
                .fdatasync()
                .await
                .map_err(|e| LogError::io("syncing", &s.path, e))?;
        }
        Ok(write_end as u64)
    }

    /// True when a flush of `len` bytes fits the active segment (with room for a seal).
    pub fn fits(&self, len: usize) -> bool {
        !self.must_roll && self.write_pos + (len + BLOCK) as u64 <= self.segment_bytes
    }

    /// Seals the active segment and opens the next one for frames from `first_seq`.
    /// `recyclable_seq`: every frame with a sequence number up to it is safe in the
    /// ledger, so segments holding only such frames may be reused. Returns `false`
    /// when no segment is free (the caller must make the ledger durable first).
    pub async fn roll(&mut self, first_seq: u64, recyclable_seq: u64) -> Result<bool> {
        let Some(slot) = self.free_slot(recyclable_seq) else {
            return Ok(false);
        };
        if !self.must_roll {
            if let Some(&active) = self.live.back() {
                let pos = self.write_pos as usize;
                self.seal_at(active, pos, self.roll_needs_sync()).await?;
            }
        }
        if let Some(pos) = self.live.iter().position(|&i| i == slot) {
            self.live.remove(pos);
        }
        let header = SegmentHeader {
            shard: self.shard,
            segment_seq: self.segment_seq_next,
            first_seq,
            segment_bytes: self.segment_bytes,
        };
        let sync = self.roll_needs_sync();
        let flags = if self.dsync { libc::O_DSYNC } else { 0 };
        let s = &mut self.slots[slot];
        if self.adopting && s.header.segment_seq != 0 {
            // The ledger renamed the segment it adopted and put a new file here.
            s.file = Rc::new(open_with(&s.path, false, flags).await?);
        }
        let mut buf = s.file.alloc_dma_buffer(BLOCK);
        header.encode(buf.as_bytes_mut());
        s.file
            .write_at(buf, 0)
            .await
            .map_err(|e| LogError::io("writing header of", &s.path, e))?;
        if sync {
            s.file
                .fdatasync()
                .await
                .map_err(|e| LogError::io("syncing", &s.path, e))?;
        }
        s.header = header;
        s.last_seq = first_seq - 1;
        self.segment_seq_next += 1;
        self.live.push_back(slot);
        self.write_pos = BLOCK as u64;
        self.must_roll = false;
        tracing::debug!(path = %s.path.display(), first_seq, "journal segment opened");
        Ok(true)
    }

    fn free_slot(&self, recyclable_seq: u64) -> Option<usize> {
        // Not in the chain: never used, forgotten by recovery, or (adopting) stale.
        if let Some(i) = (0..self.slots.len()).find(|i| !self.live.contains(i)) {
            return Some(i);
        }
        let &oldest = self.live.front()?;
        let is_active = !self.must_roll && self.live.len() == 1;
        (self.slots[oldest].last_seq <= recyclable_seq && !is_active).then_some(oldest)
    }

    /// Starts writing one flush (block aligned, last frame `last_seq`) to the active
    /// segment and returns the write to await; its position is taken at once, so
    /// several writes may be in flight. The caller checked [`Journal::fits`].
    pub fn start_write(
        &mut self,
        buf: Rc<glommio::io::DmaBuffer>,
        last_seq: u64,
    ) -> impl std::future::Future<Output = Result<()>> + 'static {
        let len = buf.len();
        assert!(
            len.is_multiple_of(BLOCK) && self.fits(len),
            "flush does not fit"
        );
        let &active = self.live.back().expect("an active segment");
        let pos = self.write_pos;
        self.write_pos += len as u64;
        self.slots[active].last_seq = last_seq;
        let s = &self.slots[active];
        let (file, path) = (s.file.clone(), s.path.clone());
        async move {
            let written = file
                .write_rc_at(buf, pos)
                .await
                .map_err(|e| LogError::io("writing", &path, e))?;
            if written != len {
                return Err(LogError::io(
                    "writing",
                    &path,
                    std::io::Error::other(format!("short write: {written} of {len} bytes")),
                ));
            }
            Ok(())
        }
    }

    /// Seals the active segment after its last write and syncs (a clean stop), so
    /// the next start finds where the journal ends. Without the seal, recovery
    /// reads on into what the segment's previous use left there, which is often
    /// the middle of an old frame: indistinguishable from a torn write, it was
    /// reported as damage and wiped.
    pub async fn seal_for_stop(&mut self) -> Result<()> {
        if let Some(&active) = self.live.back().filter(|_| !self.must_roll) {
            self.seal_at(active, self.write_pos as usize, true).await?;
            self.must_roll = true;
        }
        Ok(())
    }

    /// Syncs the active segment.
    pub async fn sync(&self) -> Result<()> {
        if let Some(&active) = self.live.back() {
            let s = &self.slots[active];
            s.file
                .fdatasync()
                .await
                .map_err(|e| LogError::io("syncing", &s.path, e))?;
        }
        Ok(())
    }
}

/// True when `bytes` start with what reads as a frame header older than `expected`:
/// bytes of the segment's previous use, not a torn write of ours.
fn looks_stale(bytes: &[u8], expected: u64) -> bool {
    if bytes.len() < 24 {
        return false;
    }
    let seq = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    (1..expected).contains(&seq)
}

/// Refuses directories that hold something other than this journal's files.
async fn check_journal_dir(dir: &Path, segments: u32) -> Result<()> {
    let entries = fs::read_dir(dir)
        .await
        .map_err(|e| e.with_op("listing journal directory"))?;
    for path in entries {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".seg.tmp") {
            // A segment whose creation was interrupted; it is made again.
            let _ = fs::remove_file(&path).await;
            continue;
        }
        match parse_slot_name(&name) {
            Some(i) if i < segments as usize => {}
            Some(_) => {
                return Err(LogError::corrupt(
                    &path,
                    format!("journal has more segments than journal_segments = {segments}; keep the setting the journal was created with"),
                ))
            }
            None if name == "lost+found" || name == ".tidewater-probe" => {}
            // A clean stop's marker: recovery takes and removes it before the
            // journal opens, so it is only seen here by other callers.
            None if name == crate::log::CLEAN_STOP_FILE => {}
            None => {
                return Err(LogError::corrupt(
                    &path,
                    "foreign file in the journal directory (only journal-NNNN.seg belong there); move it away or point journal_dir elsewhere",
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            shard: 3,
            segment_seq: 9,
            first_seq: 1234,
            segment_bytes: 1 << 20,
        };
        let mut block = vec![0u8; BLOCK];
        h.encode(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Ok(h));
        block[20] ^= 1;
        assert!(SegmentHeader::decode(&block).is_err());
    }

    /// Ten frames of 3000 bytes from block 1, from sequence number `first`.
    fn frames(first: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 16 * BLOCK];
        let mut pos = BLOCK;
        for i in 0..10 {
            let h = Header::data(1, first + i, i * 2, 2, 0);
            pos = frame::frame_start(pos);
            pos += frame::encode(&mut bytes[pos..], &h, &[7u8; 3000]);
        }
        bytes
    }

    /// The bytes after a reused segment's last frame may be the middle of a frame
    /// of its previous use: a clean end. A frame of ours cut short there is not.
    #[test]
    fn a_reused_segment_ends_cleanly_in_the_middle_of_an_old_frame() {
        let path = Path::new("journal-0000.seg");
        // Ours: three frames of 3048 bytes from block 1 (to 13240), padded to
        // block 4; there the old segment's fifth frame is 96 bytes in.
        let mut bytes = frames(100);
        let ours = frames(500);
        bytes[BLOCK..13240].copy_from_slice(&ours[BLOCK..13240]);
        let end = frame::pad_to_block(&mut bytes, 13240);
        assert_eq!(end, 4 * BLOCK);
        assert!(frame::guess_data_header(&bytes[end..]).is_none());
        let scan = Journal::scan(path, &bytes, 500, true);
        assert!(scan.damage.is_none(), "{:?}", scan.damage);
        assert_eq!(scan.frames.len(), 3);
        // Not reused: the same bytes are damage.
        assert!(Journal::scan(path, &bytes, 500, false).damage.is_some());
        // Our fourth frame torn there (its header written, not its payload):
        // damage, reused or not.
        let mut whole = vec![0u8; 3048];
        frame::encode(&mut whole, &Header::data(1, 503, 6, 2, 0), &[9u8; 3000]);
        bytes[end..end + HEADER_LEN].copy_from_slice(&whole[..HEADER_LEN]);
        let scan = Journal::scan(path, &bytes, 500, true);
        assert_eq!(scan.frames.len(), 3);
        assert!(scan.damage.is_some());
    }

    #[test]
    fn slot_names() {
        assert_eq!(parse_slot_name("journal-0007.seg"), Some(7));
        assert_eq!(parse_slot_name("journal-7.seg"), None);
        assert_eq!(parse_slot_name("other"), None);
    }
}
