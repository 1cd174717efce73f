//! Mixed segments: sealed journal segments indexed by runs, the ledger's data once
//! `docs/write-once.md` (step 2) adopts them instead of copying their frames.
//!
//! Owns the run index of one segment (building it from the segment's frames, its
//! file format, finding a partition's run by offset) and reading a partition's
//! batches through it. It never writes or renames a segment and never decides when
//! one is adopted or deleted (`adopted` and the log do).
//!
//! A run is what one journal write holds of one partition (journal writes lay out
//! one run per partition, `log::state::Pending::lay_out`): frames next to each
//! other in the file, offsets dense, nothing of another partition between them.

use super::read::{payload_in, read_range, Gathered};
use super::{Entry, Payload};
use crate::error::{LogError, Result};
use crate::frame::{self, Header, Kind, Step, HEADER_LEN};
use glommio::io::{DmaFile, ReadResult};
use std::path::Path;
use std::rc::Rc;

const MAGIC: &[u8; 8] = b"TWRUNS01";
/// crc32c (4), magic (8), shard (4), segment_seq (8), first_seq (8), last_seq (8),
/// run count (4).
const INDEX_HEADER_LEN: usize = 44;
/// partition (4), base_offset (8), end_offset (8), pos (8), len (4),
/// max_timestamp_ms (8).
const RUN_LEN: usize = 40;

/// One partition's frames in one journal write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub partition: u32,
    pub base_offset: u64,
    /// One past the run's last offset.
    pub end_offset: u64,
    /// Position of the run's first frame in the segment file.
    pub pos: u64,
    /// From the first frame's start to the last frame's end; 0 for a lost run:
    /// offsets whose only copy was damaged journal bytes (recovery), kept so that
    /// offsets stay dense and readers see the loss (a batch with no payload).
    pub len: u32,
    /// The largest timestamp of the run's batches (time retention reads it).
    pub max_timestamp_ms: i64,
}

impl Run {
    /// Offsets the run names but no frame holds (see [`Run::len`]).
    pub fn is_lost(&self) -> bool {
        self.len == 0
    }

    /// One past the run's last byte in the segment file.
    pub fn end_pos(&self) -> u64 {
        self.pos + u64::from(self.len)
    }

    /// The run of one data frame, `h`, at `pos` in the segment file.
    pub fn of_frame(pos: u64, h: &Header) -> Run {
        Run {
            partition: h.partition,
            base_offset: h.base_offset,
            end_offset: h.end_offset(),
            pos,
            len: h.frame_len() as u32,
            max_timestamp_ms: h.timestamp_ms,
        }
    }

    /// Takes the data frame `h` at `pos` into the run when it continues it: same
    /// partition, its next offsets, next in the file (where `frame_start` puts the
    /// frame after the run's last), and the run no longer than `run_bytes_max`
    /// with it. `false`, unchanged, when the frame starts another run (always
    /// after a lost run).
    pub fn extend(&mut self, pos: u64, h: &Header, run_bytes_max: u64) -> bool {
        let end = pos + h.frame_len() as u64;
        let continues = !self.is_lost()
            && self.partition == h.partition
            && self.end_offset == h.base_offset
            && frame::frame_start(self.end_pos() as usize) as u64 == pos
            && end - self.pos <= run_bytes_max;
        if continues {
            self.end_offset = h.end_offset();
            self.len = (end - self.pos) as u32;
            self.max_timestamp_ms = self.max_timestamp_ms.max(h.timestamp_ms);
        }
        continues
    }
}

/// The runs of one sealed journal segment, ordered by partition, then offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIndex {
    pub shard: u32,
    pub segment_seq: u64,
    /// Sequence numbers of the segment's first and last frames.
    pub first_seq: u64,
    pub last_seq: u64,
    runs: Vec<Run>,
}

impl RunIndex {
    /// The index of a segment whose data frames are `frames` ((position, header), in
    /// file order, as a journal scan returns them). A run ends where the next frame
    /// is of another partition, does not continue its offsets, does not follow it
    /// in the file (a PAD frame between them, as ends most journal writes, or damage
    /// the scan resumed after), or would pass `run_bytes_max` (the journal's largest
    /// write). A write that ends without a PAD frame (on a block boundary, or fewer
    /// than a header's bytes before one) looks like the gap a header leaves inside a
    /// write, so one partition's runs of two writes may join: a run is at most
    /// `run_bytes_max`, not exactly one write.
    pub fn from_frames(
        shard: u32,
        segment_seq: u64,
        frames: &[(usize, Header)],
        run_bytes_max: usize,
    ) -> RunIndex {
        let run_bytes_max = run_bytes_max.min(u32::MAX as usize) as u64;
        let mut runs: Vec<Run> = Vec::new();
        let mut open: Option<Run> = None;
        for &(pos, h) in frames.iter().filter(|(_, h)| h.kind == Kind::Data) {
            let pos = pos as u64;
            if !open
                .as_mut()
                .is_some_and(|r| r.extend(pos, &h, run_bytes_max))
            {
                runs.extend(open.replace(Run::of_frame(pos, &h)));
            }
        }
        runs.extend(open);
        runs.sort_unstable_by_key(|r| (r.partition, r.base_offset));
        let seqs = frames.iter().map(|(_, h)| h.seq);
        RunIndex {
            shard,
            segment_seq,
            first_seq: seqs.clone().min().unwrap_or(0),
            last_seq: seqs.max().unwrap_or(0),
            runs,
        }
    }

    /// The index of a segment whose runs are `runs` (any order).
    pub fn from_runs(
        shard: u32,
        segment_seq: u64,
        (first_seq, last_seq): (u64, u64),
        mut runs: Vec<Run>,
    ) -> RunIndex {
        runs.sort_unstable_by_key(|r| (r.partition, r.base_offset));
        RunIndex {
            shard,
            segment_seq,
            first_seq,
            last_seq,
            runs,
        }
    }

    /// The bytes its runs hold.
    pub fn run_bytes(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.len)).sum()
    }

    /// Every run, by partition, then offset.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The runs of `partition`, by offset.
    pub fn runs_of(&self, partition: u32) -> &[Run] {
        let from = self.runs.partition_point(|r| r.partition < partition);
        let to = self.runs.partition_point(|r| r.partition <= partition);
        &self.runs[from..to]
    }

    /// The run of `partition` that holds `offset`, if this segment has it.
    pub fn find(&self, partition: u32, offset: u64) -> Option<&Run> {
        let runs = self.runs_of(partition);
        let i = runs.partition_point(|r| r.base_offset <= offset);
        runs[..i].last().filter(|r| offset < r.end_offset)
    }

    /// The index file's bytes: a header, the runs, all under one crc32c.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + self.runs.len() * RUN_LEN);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.shard.to_le_bytes());
        out.extend_from_slice(&self.segment_seq.to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for r in &self.runs {
            out.extend_from_slice(&r.partition.to_le_bytes());
            out.extend_from_slice(&r.base_offset.to_le_bytes());
            out.extend_from_slice(&r.end_offset.to_le_bytes());
            out.extend_from_slice(&r.pos.to_le_bytes());
            out.extend_from_slice(&r.len.to_le_bytes());
            out.extend_from_slice(&r.max_timestamp_ms.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads an index file's bytes back; `Err` says why they are not one (the caller
    /// rebuilds the index from the segment's frames).
    pub fn decode(bytes: &[u8]) -> std::result::Result<RunIndex, String> {
        if bytes.len() < INDEX_HEADER_LEN || &bytes[4..12] != MAGIC {
            return Err("not a run index (short, or bad magic)".into());
        }
        let stored = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[4..]);
        if stored != computed {
            return Err(format!(
                "run index checksum mismatch ({stored:#010x} != {computed:#010x})"
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let count = u32_at(40) as usize;
        if Some(bytes.len()) != count.checked_mul(RUN_LEN).map(|n| n + INDEX_HEADER_LEN) {
            return Err(format!(
                "run index of {} bytes for {count} runs",
                bytes.len()
            ));
        }
        let runs: Vec<Run> = (0..count)
            .map(|k| {
                let at = INDEX_HEADER_LEN + k * RUN_LEN;
                Run {
                    partition: u32_at(at),
                    base_offset: u64_at(at + 4),
                    end_offset: u64_at(at + 12),
                    pos: u64_at(at + 20),
                    len: u32_at(at + 28),
                    max_timestamp_ms: u64_at(at + 32) as i64,
                }
            })
            .collect();
        let ordered = runs
            .windows(2)
            .all(|w| (w[0].partition, w[0].end_offset) <= (w[1].partition, w[1].base_offset));
        if !ordered || runs.iter().any(|r| r.end_offset <= r.base_offset) {
            return Err("run index out of order".into());
        }
        let framed =
            |r: &Run| r.is_lost() || r.pos >= frame::BLOCK as u64 && r.len as usize >= HEADER_LEN;
        // An index of no frame (only lost runs) has last_seq = first_seq - 1.
        if !runs.iter().all(framed) || u64_at(24) > u64_at(32).saturating_add(1) {
            return Err("run index with a run outside the segment's frames".into());
        }
        Ok(RunIndex {
            shard: u32_at(12),
            segment_seq: u64_at(16),
            first_seq: u64_at(24),
            last_seq: u64_at(32),
            runs,
        })
    }
}

/// Reads the batches of `run` (in `file`, the segment at `path`) from `from`, about
/// `max_bytes` of payload (at least one batch): [`read_runs`] of one run.
pub async fn read_run(
    file: &Rc<DmaFile>,
    path: &Path,
    run: &Run,
    from: u64,
    max_bytes: usize,
) -> Result<Vec<Entry>> {
    read_runs(file, path, std::slice::from_ref(run), from, max_bytes).await
}

/// Runs closer than this in the file are read in one read (the bytes between, of
/// other partitions, read along); farther ones in reads of their own, issued at once.
const READ_GAP_MAX: u64 = 64 << 10;

/// Reads the batches of `runs` (one partition's, in offset order, in `file`, the
/// segment at `path`) from `from`, about `max_bytes` of payload (at least one
/// batch). Runs next to each other in the file are read together; the reads are
/// in flight at once, and batches share their buffers. Every frame of a run is
/// checked against the index: its first at `run.pos` with the run's first offset,
/// offsets dense, the last ending at the run's end offset and length. A lost run
/// (first) reads as one batch with no payload; reading stops before a later one.
pub async fn read_runs(
    file: &Rc<DmaFile>,
    path: &Path,
    runs: &[Run],
    from: u64,
    max_bytes: usize,
) -> Result<Vec<Entry>> {
    let mut got = Gathered::new(from, max_bytes);
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    if first.is_lost() {
        let count = u32::try_from(first.end_offset - first.base_offset).unwrap_or(u32::MAX);
        let header = Header::data(first.partition, 0, first.base_offset, count, 0);
        got.add(&header, || Payload::Owned(Vec::new()));
        return Ok(got.entries);
    }
    let runs: Vec<Run> = runs.iter().take_while(|r| !r.is_lost()).copied().collect();
    walk_runs(file, path, &runs, |buf, pos, header| {
        got.add(header, || payload_in(buf, pos, header))
    })
    .await?;
    Ok(got.entries)
}

/// Reads `runs` (one partition's, in offset order, none lost, in `file`, the
/// segment at `path`) and calls `each(buffer, position, header)` for every frame,
/// in order, checked against the index: its first at `run.pos` with the run's first
/// offset, offsets dense, the last ending at the run's end offset and length. Runs
/// next to each other in the file are read together; the reads are in flight at
/// once. Stops early, with `Ok(false)`, when `each` says so.
pub async fn walk_runs(
    file: &Rc<DmaFile>,
    path: &Path,
    runs: &[Run],
    mut each: impl FnMut(&ReadResult, usize, &Header) -> bool,
) -> Result<bool> {
    // Extents: (first run, one past the last) read together.
    let mut extents: Vec<(usize, usize)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        match extents.last_mut() {
            Some((_, end))
                if r.pos
                    <= frame::align_up(runs[*end - 1].end_pos() as usize) as u64 + READ_GAP_MAX =>
            {
                *end = i + 1
            }
            _ => extents.push((i, i + 1)),
        }
    }
    let reads: Vec<_> = extents
        .iter()
        .map(|&(a, b)| {
            let aligned = frame::align_down(runs[a].pos as usize) as u64;
            let end = (runs[b - 1].end_pos() - aligned) as usize;
            let (file, path) = (file.clone(), path.to_path_buf());
            let read =
                glommio::spawn_local(async move { read_range(&file, &path, aligned, end).await });
            (aligned, end, read)
        })
        .collect();
    for ((aligned, end, read), &(a, b)) in reads.into_iter().zip(&extents) {
        let buf = read.await?;
        if buf.len() < end {
            let what = format!(
                "the file's end, before the run's end at byte {}",
                aligned as usize + end
            );
            return Err(damaged(path, aligned + buf.len() as u64, &what));
        }
        for run in &runs[a..b] {
            if !walk_run(&buf, aligned, path, run, &mut each)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Calls `each` for `run`'s frames in `buf` (the file's bytes from `aligned`),
/// checking every frame; `false` once `each` says stop.
fn walk_run(
    buf: &ReadResult,
    aligned: u64,
    path: &Path,
    run: &Run,
    each: &mut impl FnMut(&ReadResult, usize, &Header) -> bool,
) -> Result<bool> {
    let first = (run.pos - aligned) as usize;
    let end = first + run.len as usize;
    let mut next = (first, run.base_offset);
    for step in frame::Scanner::new(&buf[..end], first, run.len as usize) {
        let (pos, header) = match step {
            Step::Frame { pos, header } => (pos, header),
            Step::End { pos, why } => {
                return Err(damaged(path, pos as u64 + aligned, &format!("{why:?}")));
            }
        };
        // Each frame where the last one's end puts it (`frame_start`): a PAD frame
        // the scanner skipped inside the run is damage to the index's claim too.
        let expected = header.kind == Kind::Data
            && header.partition == run.partition
            && header.base_offset == next.1
            && pos == frame::frame_start(next.0)
            && pos + header.frame_len() <= end;
        if !expected {
            return Err(damaged(path, pos as u64 + aligned, &format!("{header:?}")));
        }
        next = (pos + header.frame_len(), header.end_offset());
        if !each(buf, pos, &header) {
            return Ok(false);
        }
        if next.1 >= run.end_offset {
            break;
        }
    }
    if next != (end, run.end_offset) {
        let what = format!("the run ending at offset {} and byte {}", next.1, next.0);
        return Err(damaged(path, aligned + next.0 as u64, &what));
    }
    Ok(true)
}

/// A run that does not hold what its index says.
fn damaged(path: &Path, at: u64, what: &str) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        what: format!("at byte {at} the run index promised a frame of this run, found {what}"),
    }
}
