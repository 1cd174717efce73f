//! Reads by offset: from a segment file (through its sparse index), from the
//! recent journal writes (slices of their buffers) or from the chunks still in
//! memory.
//!
//! Owns where a read starts and how much it takes: about `max_bytes` of payload,
//! at least one batch when any is there, and never past what the ledger holds
//! (which is exactly what was acknowledged). Never writes.

use super::adopted::{PartRun, SegFile};
use super::chunk::Chunk;
use super::mixed::Run;
use super::{Entry, Ledger, Payload, RecentWrite, WrittenSlice};
use crate::error::{LogError, Result};
use crate::frame::{self, Header, Kind, Step, HEADER_LEN};
use glommio::io::{DmaFile, ReadResult};
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

/// Reads from a segment fetch at least this much, so small reads still batch.
const READ_BYTES_MIN: usize = 64 << 10;

impl Ledger {
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
                    Ok((
                        seg.file.clone(),
                        seg.path.clone(),
                        start,
                        len,
                        seg.write_pos,
                    ))
                }
                _ => {
                    let mut got = Gathered::new(from, max_bytes);
                    if read_recent(&l.recent, id, &mut got) {
                        return Ok(got.entries);
                    }
                    match p.run_index(from) {
                        Some(first) => Err(plan_runs(&p.runs, first, max_bytes)),
                        None => {
                            read_chunks(&p.chunks, &mut got);
                            return Ok(got.entries);
                        }
                    }
                }
            }
        };
        // Through runs of journal segments (`journal_adopt`), else a segment file.
        let (file, path, start, len, write_pos) = match plan {
            Ok(file_read) => file_read,
            Err((seg, runs)) => {
                let (file, opened) = seg.file().await?;
                if opened {
                    this.borrow_mut().opened_for_read(&seg, file.clone());
                }
                let path = seg.path.borrow().clone();
                return super::mixed::read_runs(&file, &path, &runs, from, max_bytes).await;
            }
        };
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
        let mut got = Gathered::new(from, max_bytes);
        let mut pos = (start - aligned) as usize;
        loop {
            match frame::Scanner::new(&buf, pos, buf.len()).next() {
                Some(Step::Frame { pos: at, header }) if header.kind == Kind::Data => {
                    pos = at + header.frame_len();
                    if !got.add(&header, || payload_in(&buf, at, &header)) {
                        break;
                    }
                }
                Some(Step::End {
                    pos: at,
                    why: frame::Invalid::Truncated { frame_len, .. },
                }) if got.entries.is_empty()
                    && aligned + ((at + frame_len) as u64) <= write_pos =>
                {
                    // The first batch is larger than what we read: read all of it.
                    let more = at + frame_len;
                    buf = read_range(&file, &path, aligned, more).await?;
                    pos = at;
                }
                _ => break,
            }
        }
        Ok(got.entries)
    }
}

/// A read through runs takes at most this many runs.
const RUNS_PER_READ_MAX: usize = 16;

/// The runs one read takes, from `runs[first]`: that run, then the partition's
/// next ones in the same segment while the read wants more payload, at most
/// `RUNS_PER_READ_MAX` (a lost run is read alone).
fn plan_runs(runs: &VecDeque<PartRun>, first: usize, max_bytes: usize) -> (Rc<SegFile>, Vec<Run>) {
    let head = &runs[first];
    let mut out = vec![head.run];
    let mut bytes = u64::from(head.run.len);
    if !head.run.is_lost() {
        for r in runs.range(first + 1..) {
            let more = bytes < (max_bytes + HEADER_LEN) as u64 && out.len() < RUNS_PER_READ_MAX;
            if !more || r.segment_seq != head.segment_seq || r.run.is_lost() {
                break;
            }
            bytes += u64::from(r.run.len);
            out.push(r.run);
        }
    }
    (head.file.clone(), out)
}

/// The entries one read answers with: those ending after `from`, up to about
/// `max_bytes` of payload (the first always goes in, so a reader always moves on).
/// Disk frames and in-memory chunks are gathered the same way.
pub(super) struct Gathered {
    from: u64,
    max_bytes: usize,
    total: usize,
    pub(super) entries: Vec<Entry>,
}

impl Gathered {
    pub(super) fn new(from: u64, max_bytes: usize) -> Gathered {
        Gathered {
            from,
            max_bytes,
            total: 0,
            entries: Vec::new(),
        }
    }

    /// Takes the frame `header` describes, whose payload `payload` gives; `false`
    /// once the read is full and the frame was left out.
    pub(super) fn add(&mut self, header: &Header, payload: impl FnOnce() -> Payload) -> bool {
        if header.end_offset() <= self.from {
            return true;
        }
        let len = header.payload_len as usize;
        if !self.entries.is_empty() && self.total + len > self.max_bytes {
            return false;
        }
        self.total += len;
        self.entries.push(Entry {
            base_offset: header.base_offset,
            record_count: header.record_count,
            timestamp_ms: header.timestamp_ms,
            payload: payload(),
        });
        true
    }
}

/// The bytes of `[pos, pos + len)`, in the buffer the device filled: the entries
/// read from it share it.
pub(super) async fn read_range(
    file: &DmaFile,
    path: &Path,
    pos: u64,
    len: usize,
) -> Result<ReadResult> {
    file.read_at(pos, len)
        .await
        .map_err(|e| LogError::io("reading", path, e))
}

/// The payload of the frame `header` describes at `at` in `buf`: a slice of the
/// read's buffer, shared (no copy), or a copy where the buffer cannot give one.
pub(super) fn payload_in(buf: &ReadResult, at: usize, header: &Header) -> Payload {
    let (first, len) = (at + HEADER_LEN, header.payload_len as usize);
    ReadResult::slice(buf, first, len).map_or_else(
        || Payload::Owned(buf[first..first + len].to_vec()),
        Payload::Read,
    )
}

/// Gathers partition `id`'s batches from the recent journal writes, without a copy,
/// when they hold the batch with `got.from` (then they hold every later one too:
/// they are the newest writes, in order); `false`, having gathered nothing, when
/// they do not.
fn read_recent(recent: &VecDeque<RecentWrite>, id: u32, got: &mut Gathered) -> bool {
    let mut first = true;
    for w in recent {
        // One run per partition, in partition id order.
        let lo = w.frames.partition_point(|(_, h)| h.partition < id);
        let hi = w.frames.partition_point(|(_, h)| h.partition <= id);
        let run = &w.frames[lo..hi];
        let Some(&(_, head)) = run.first() else {
            continue;
        };
        if first && head.base_offset > got.from {
            return false;
        }
        first = false;
        for &(pos, header) in run {
            let payload = || {
                Payload::Written(WrittenSlice {
                    buf: w.buf.clone(),
                    start: pos + HEADER_LEN,
                    len: header.payload_len as usize,
                })
            };
            if !got.add(&header, payload) {
                return true;
            }
        }
    }
    !first
}

fn read_chunks(chunks: &VecDeque<Chunk>, got: &mut Gathered) {
    let from = got.from;
    for c in chunks.iter().filter(|c| c.end_offset > from) {
        let first = c
            .entries
            .partition_point(|&(o, _)| o <= from)
            .saturating_sub(1);
        let bytes = c.bytes();
        for &(_, pos) in &c.entries[first..] {
            let pos = pos as usize;
            let header = frame::decode_own(&bytes[pos..]);
            let payload = &bytes[pos + HEADER_LEN..pos + header.frame_len()];
            if !got.add(&header, || Payload::Owned(payload.to_vec())) {
                return;
            }
        }
    }
}
