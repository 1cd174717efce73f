//! Copy-out (`journal_adopt`, `docs/write-once.md` step 3): a partition kept much
//! longer than the partitions it shares adopted segments with moves its runs into
//! segments of its own, so that those adopted segments can go.
//!
//! Owns choosing what to copy (the oldest adopted segment, once what partitions
//! still hold of it and of the segments after it is a small share of what they
//! held) and writing a partition's
//! runs from it into the partition's own segments, every frame checked as a read
//! checks it. Never deletes an adopted segment (retention does, once no run is
//! left in it) and never copies a lost run. A crash at any point leaves the runs,
//! or the runs and a whole or partial copy of them: at start-up a partition's own
//! segments come first, and the runs repeating them are skipped (`register`).

use super::adopted::SegFile;
use super::files::segment_name;
use super::mixed::{walk_runs, Run};
use super::segment::{open_segment, Segment};
use super::{Ledger, LedgerLimits, Partition};
use crate::error::{LogError, Result};
use crate::frame::{self, Header};
use crate::fs;
use glommio::io::{DmaBuffer, DmaFile};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// An adopted segment is copied out of once what partitions still hold of it is at
/// most this fraction (1/4) of what it held: copying adds at most a quarter of a
/// segment to what the device writes for it, and frees all of it.
const COPY_OUT_SHARE_DIV: u64 = 4;
/// Segments weighed together from the oldest: what is left of them against what
/// they held.
const COPY_OUT_SPAN: usize = 16;
/// Bytes of runs one read takes while copying.
const COPY_READ_BYTES: u64 = 2 << 20;

/// What to copy out of one adopted segment: each partition's runs in it.
pub(crate) struct CopyOut {
    segment_seq: u64,
    file: Rc<SegFile>,
    parts: Vec<(u32, Vec<Run>)>,
}

impl CopyOut {
    /// The partitions with runs to copy.
    pub(crate) fn partitions(&self) -> Vec<u32> {
        self.parts.iter().map(|&(id, _)| id).collect()
    }
}

/// Whether `p`'s runs in one adopted segment may be copied (see
/// [`Ledger::copy_out_plan`]).
fn copyable(p: &Partition, runs: &[Run]) -> bool {
    let held = p
        .retain_from
        .is_some_and(|keep| runs.iter().any(|r| r.end_offset > keep));
    !held && !runs.iter().any(Run::is_lost)
}

impl Ledger {
    /// What to copy out of the oldest adopted segment, if anything: its runs, when
    /// the runs left in it and the segments after it, up to `COPY_OUT_SPAN` of them,
    /// are at most `1/COPY_OUT_SHARE_DIV` of what those segments held (a partition
    /// kept longer than its neighbours with a large share of one segment, one
    /// sealed early, does not stop it for good), none of them lost (a lost run has
    /// nothing to copy) and none under a checkpoint's hold (lifted soon: copying
    /// what it keeps would write it twice for nothing). The oldest segment's runs
    /// are each partition's oldest, so copied they go on its own segments.
    pub(crate) fn copy_out_plan(&self) -> Option<CopyOut> {
        let mut segments = self.adopted_segments().take(COPY_OUT_SPAN);
        let (segment_seq, file) = segments.next()?;
        if self.copy_out_refused() == Some(segment_seq) {
            return None;
        }
        let mut parts = Vec::new();
        let (mut left, mut held) = (0, file.run_bytes.get());
        for p in self.partitions.values() {
            let runs = p.runs_in(segment_seq);
            if !copyable(p, &runs) {
                return None;
            }
            left += runs.iter().map(|r| u64::from(r.len)).sum::<u64>();
            if !runs.is_empty() {
                parts.push((p.id, runs));
            }
        }
        if parts.is_empty() {
            return None;
        }
        parts.sort_unstable_by_key(|&(id, _)| id);
        let plan = CopyOut {
            segment_seq,
            file: file.clone(),
            parts,
        };
        if left * COPY_OUT_SHARE_DIV <= held {
            return Some(plan);
        }
        // The segments after it are only weighed: what is left in them counts
        // whatever it is.
        for (seq, file) in segments {
            for p in self.partitions.values() {
                left += p.runs_in(seq).iter().map(|r| u64::from(r.len)).sum::<u64>();
            }
            held += file.run_bytes.get();
            if left * COPY_OUT_SHARE_DIV <= held {
                return Some(plan);
            }
        }
        None
    }

    /// Copies one partition's runs of a plan (see [`Ledger::copy_out_plan`]) into its
    /// own segments; the next retention pass deletes the adopted segment once every
    /// partition's are. Returns the bytes copied. Callers hold the log's
    /// `ledger_io` permit. A segment found damaged is not tried again (it stays
    /// while a partition keeps a run in it).
    pub(crate) async fn copy_out(this: &RefCell<Self>, plan: &CopyOut, id: u32) -> Result<u64> {
        let Some((_, runs)) = plan.parts.iter().find(|(p, _)| *p == id) else {
            return Ok(0);
        };
        let (file, _) = plan.file.file().await?;
        let path = plan.file.path.borrow().clone();
        let from = (plan.segment_seq, runs.as_slice());
        let res = Self::copy_out_partition(this, id, (&file, &path), from).await;
        if let Err(LogError::Corrupt { .. }) = &res {
            this.borrow_mut().refuse_copy_out(plan.segment_seq);
        }
        res
    }

    /// Writes `runs` (`id`'s oldest, in adopted segment `segment_seq`) at the end of
    /// `id`'s active segment while it has room, else in a new one (not allocated
    /// ahead: it is written once), synced; then the runs leave the partition.
    async fn copy_out_partition(
        this: &RefCell<Self>,
        id: u32,
        (src, src_path): (&Rc<DmaFile>, &Path),
        (segment_seq, runs): (u64, &[Run]),
    ) -> Result<u64> {
        let bytes: u64 = runs.iter().map(|r| u64::from(r.len)).sum();
        let Some(target) = this.borrow().copy_target(id, segment_seq, runs, bytes) else {
            return Ok(0);
        };
        let appending = matches!(target, Target::Append(..));
        let (dst, path, mut copier) = match target {
            Target::Append(file, path, copier) => (file, path, copier),
            Target::New { from, dir } => {
                Self::seal_active(this, id).await?;
                let path = dir.join(segment_name(from, "log"));
                let file = Rc::new(open_segment(&path, Some(0)).await?);
                fs::sync_dir(&dir).await?;
                let limits = this.borrow().limits.clone();
                (file, path, Copier::new(from, 0, None, &limits))
            }
        };
        // Bytes past where this copy starts (a copy cut short by a crash, or an
        // allocation made before adoption) must not read as frames after it.
        dst.truncate(copier.at)
            .await
            .map_err(|e| LogError::io("trimming", &path, e))?;
        let mut groups = runs;
        while !groups.is_empty() {
            let mut n = 0;
            let mut group_bytes = 0;
            while n < groups.len() && (n == 0 || group_bytes < COPY_READ_BYTES) {
                group_bytes += u64::from(groups[n].len);
                n += 1;
            }
            walk_runs(src, src_path, &groups[..n], |buf, pos, h| {
                copier.push(&buf[pos..pos + h.frame_len()], h);
                true
            })
            .await?;
            copier.write_full(&dst, &path).await?;
            groups = &groups[n..];
        }
        copier.finish();
        copier.write_full(&dst, &path).await?;
        dst.fdatasync()
            .await
            .map_err(|e| LogError::io("syncing", &path, e))?;
        let mut l = this.borrow_mut();
        let Some(p) = l.partitions.get_mut(&id) else {
            // Deleted meanwhile: its directory went with it.
            return Ok(0);
        };
        if appending {
            let Some(s) = p.segments.back_mut().filter(|s| s.path == path) else {
                // Its segments changed meanwhile: the runs stay, and are read.
                return Ok(0);
            };
            s.end_offset = copier.end_offset;
            s.write_pos = copier.at;
            s.index.append(&mut copier.index);
            s.max_timestamp_ms = s.max_timestamp_ms.max(copier.max_timestamp_ms);
        } else {
            p.segments.push_back(Segment {
                base_offset: copier.base_offset,
                end_offset: copier.end_offset,
                path,
                file: Some(dst),
                write_pos: copier.at,
                index: std::mem::take(&mut copier.index),
                max_timestamp_ms: copier.max_timestamp_ms,
            });
        }
        while p
            .runs
            .front()
            .is_some_and(|r| r.segment_seq == segment_seq && r.run.end_offset <= copier.end_offset)
        {
            p.runs.pop_front();
        }
        Ok(bytes)
    }

    /// Where `id`'s copied runs go: the end of its active segment when it has room
    /// for `bytes`, else a new segment; `None` when the runs are no longer its
    /// oldest (it was deleted, or they were dropped).
    fn copy_target(&self, id: u32, segment_seq: u64, runs: &[Run], bytes: u64) -> Option<Target> {
        let p = self.partitions.get(&id)?;
        let first = p.runs.front()?;
        if first.segment_seq != segment_seq || first.run != runs[0] {
            return None;
        }
        // A copy interrupted by a crash may have left the first runs' frames in the
        // partition's segments already: they go on from where those end. A gap
        // between the two (an own segment retention could not remove) is not
        // bridged: the runs stay, and are read.
        let from = p
            .segments
            .back()
            .map_or(first.run.base_offset, |s| s.end_offset);
        if first.run.base_offset > from {
            return None;
        }
        let active = p.segments.back().and_then(|s| {
            let file = s.file.clone()?;
            // An empty one takes the copy whatever its size: a new segment would
            // have its name.
            let room = s.write_pos == 0 || s.write_pos + bytes <= p.segment_bytes(&self.limits);
            room.then(|| {
                let last = s.index.last().map(|&(_, pos)| pos);
                let copier = Copier::new(from, s.write_pos, last, &self.limits);
                Target::Append(file, s.path.clone(), copier)
            })
        });
        Some(active.unwrap_or(Target::New {
            from,
            dir: p.dir.clone(),
        }))
    }
}

enum Target {
    Append(Rc<DmaFile>, PathBuf, Copier),
    New { from: u64, dir: PathBuf },
}

/// Frames laid out as a segment holds them (from a block boundary, each where
/// `frame_start` puts it), in buffers of the ledger's write size
/// (`ledger_flush_bytes`; a larger frame gets one of its own) written in turn.
struct Copier {
    base_offset: u64,
    /// Frames ending at or before here are in the segment already.
    end_offset: u64,
    max_timestamp_ms: i64,
    buf: DmaBuffer,
    len: usize,
    /// Where `buf` goes in the segment file (block aligned).
    at: u64,
    /// Filled buffers to write, with their positions.
    full: Vec<(u64, DmaBuffer)>,
    /// Sparse index entries of the copied frames, one per `interval` bytes.
    index: Vec<(u64, u64)>,
    last_indexed: Option<u64>,
    interval: u64,
    write_bytes: usize,
}

impl Copier {
    fn new(from: u64, at: u64, last_indexed: Option<u64>, limits: &LedgerLimits) -> Copier {
        let write_bytes = frame::align_up(limits.flush_bytes.max(frame::BLOCK));
        Copier {
            base_offset: from,
            end_offset: from,
            max_timestamp_ms: i64::MIN,
            buf: glommio::allocate_dma_buffer(write_bytes),
            len: 0,
            at,
            full: Vec::new(),
            index: Vec::new(),
            last_indexed,
            interval: limits.index_interval_bytes,
            write_bytes,
        }
    }

    /// Lays out the frame `bytes` (header `h`) after the last one; skipped when the
    /// segment holds it already.
    fn push(&mut self, bytes: &[u8], h: &Header) {
        if h.end_offset() <= self.end_offset {
            return;
        }
        if frame::frame_start(self.len) + bytes.len() > self.buf.len() {
            self.seal_buf(bytes.len());
        }
        let start = frame::frame_start(self.len);
        let dst = self.buf.as_bytes_mut();
        dst[self.len..start].fill(0);
        dst[start..start + bytes.len()].copy_from_slice(bytes);
        self.len = start + bytes.len();
        let pos = self.at + start as u64;
        if self.last_indexed.is_none_or(|l| pos >= l + self.interval) {
            self.index.push((h.base_offset, pos));
            self.last_indexed = Some(pos);
        }
        self.end_offset = h.end_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(h.timestamp_ms);
    }

    /// Pads the buffer to a block and queues it; the next holds at least a frame
    /// of `next_frame` bytes.
    fn seal_buf(&mut self, next_frame: usize) {
        let cap = frame::align_up(self.write_bytes.max(next_frame + frame::BLOCK));
        let mut full = std::mem::replace(&mut self.buf, glommio::allocate_dma_buffer(cap));
        if self.len == 0 {
            return;
        }
        let end = frame::pad_to_block(full.as_bytes_mut(), self.len);
        full.trim_to_size(end);
        self.full.push((self.at, full));
        self.at += end as u64;
        self.len = 0;
    }

    /// Queues the last buffer.
    fn finish(&mut self) {
        if self.len > 0 {
            self.seal_buf(0);
        }
    }

    /// Writes the queued buffers.
    async fn write_full(&mut self, file: &DmaFile, path: &Path) -> Result<()> {
        for (at, buf) in self.full.drain(..) {
            let len = buf.len();
            let n = file
                .write_at(buf, at)
                .await
                .map_err(|e| LogError::io("writing", path, e))?;
            if n != len {
                let short = std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("short write: {n} of {len} bytes"),
                );
                return Err(LogError::io("writing", path, short));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LedgerLimits {
        LedgerLimits {
            segment_bytes: 1 << 20,
            flush_bytes: 8192,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: None,
            frame_bytes_max: 1 << 20,
        }
    }

    fn frame(base: u64, count: u32, len: usize) -> (Header, Vec<u8>) {
        let h = Header::data(7, base, base, count, base as i64);
        let mut bytes = vec![0; frame::HEADER_LEN + len];
        frame::encode(&mut bytes, &h, &vec![base as u8; len]);
        (frame::decode_own(&bytes), bytes)
    }

    /// A copy that resumes after a torn one skips what the segment holds, and lays
    /// frames out as the ledger writes them: each where `frame_start` puts it, the
    /// buffer padded to a block, the next buffer where that one ends.
    #[test]
    fn frames_the_segment_holds_are_skipped_and_the_rest_laid_out_in_blocks() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(async {
                let mut c = Copier::new(10, 4096, Some(0), &limits());
                for (base, count) in [(4, 3), (7, 3), (10, 2), (12, 5), (17, 1)] {
                    let (h, bytes) = frame(base, count, 3000);
                    c.push(&bytes, &h);
                }
                c.finish();
                assert_eq!((c.base_offset, c.end_offset), (10, 18));
                assert_eq!(c.max_timestamp_ms, 17);
                // Three frames of 3048 bytes: two fit 8 KiB, the third starts the
                // next buffer.
                let at: Vec<(u64, usize)> = c.full.iter().map(|(at, b)| (*at, b.len())).collect();
                assert_eq!(at, [(4096, 8192), (12288, 4096)]);
                assert_eq!(c.at, 16384);
                // One entry per 4 KiB at most, after the segment's last (at 0).
                assert_eq!(c.index, [(10, 4096), (17, 12288)]);
                let (first, second) = (&c.full[0].1, &c.full[1].1);
                assert_eq!(frame::decode_own(&first.as_bytes()[3048..]).base_offset, 12);
                assert_eq!(frame::decode_own(second.as_bytes()).base_offset, 17);
            });
    }
}
