//! The state one core's log shares between its face and its two tasks.
//!
//! Owns the offsets of every partition, the journal write being filled, the
//! counters, the wake-ups and the fatal-error latch. Assigns offsets at reserve and
//! sequence numbers when the journal task lays a write out (and gives both back
//! when a write fails, so they stay dense); never does I/O. Lives on one core
//! (`Rc`, `RefCell`): `!Send` by construction.

use crate::config::LogConfig;
use crate::error::LogError;
use crate::frame::{self, Header, BLOCK, HEADER_LEN};
use crate::ledger::Ledger;
use crate::wait::{Notify, Outcome};
use bytes::Bytes;
use glommio::io::DmaBuffer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Counters of the log (read by metrics and benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogStats {
    pub appends: u64,
    pub append_bytes: u64,
    pub journal_writes: u64,
    pub journal_syncs: u64,
    pub journal_write_bytes: u64,
    pub ledger_writes: u64,
    pub ledger_write_bytes: u64,
    pub ledger_syncs: u64,
    /// Journal writes taken whole as ledger chunks (no copy).
    pub ledger_adopted_writes: u64,
    pub segments_deleted: u64,
    /// Sealed journal segments adopted as the ledger's data (`journal_adopt`).
    pub journal_segments_adopted: u64,
    /// Journal slots filled with a segment retention freed instead of a new file.
    pub journal_segments_reused: u64,
    /// Bytes copy-out moved from adopted segments into partitions' own segments.
    pub copied_out_bytes: u64,
}

pub(super) struct Offsets {
    /// Next offset to assign.
    pub(super) next: u64,
    /// One past the last acknowledged offset: the high watermark.
    pub(super) durable: u64,
    /// Being deleted: appends are refused.
    pub(super) deleting: bool,
}

/// One append waiting in the pending journal write: its batch is not copied until
/// the write is laid out.
pub(super) struct Append {
    pub(super) partition: u32,
    pub(super) batch: Bytes,
    pub(super) base_offset: u64,
    pub(super) record_count: u32,
    pub(super) timestamp_ms: i64,
}

/// The journal write being filled by appenders: offsets are assigned, bytes not yet
/// laid out (see [`Pending::lay_out`]).
pub(super) struct Pending {
    pub(super) appends: Vec<Append>,
    /// Bytes of the frames (headers and batches), before any padding.
    pub(super) raw: usize,
    pub(super) outcome: Rc<Outcome>,
}

/// A journal write laid out: frames grouped in one run per partition.
pub(super) struct LaidOut {
    pub(super) buf: DmaBuffer,
    /// Bytes of frames, before the padding to a block.
    pub(super) len: usize,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// (position, header) of each frame in `buf`, in file order.
    pub(super) frames: Vec<(usize, Header)>,
    pub(super) outcome: Rc<Outcome>,
}

/// The most bytes `frames` frames of `raw` bytes in all take laid out in any
/// order. Padding goes before a frame only where its header would cross a block
/// (less than a header, and never before the first frame), so at most once a block,
/// and only after at least `BLOCK - HEADER_LEN + 1` bytes of frames in that block.
pub(super) fn laid_out_bound(raw: usize, frames: usize) -> usize {
    let paddings = frames.saturating_sub(1).min(raw / (BLOCK - HEADER_LEN + 1));
    raw + (HEADER_LEN - 1) * paddings
}

impl Pending {
    /// What this write may take laid out (see [`laid_out_bound`]).
    pub(super) fn bound(&self) -> usize {
        laid_out_bound(self.raw, self.appends.len())
    }

    /// What this write would take laid out with one more batch of `batch_len` bytes.
    pub(super) fn bound_with(&self, batch_len: usize) -> usize {
        laid_out_bound(self.raw + HEADER_LEN + batch_len, self.appends.len() + 1)
    }

    /// Copies the appends into one aligned buffer, grouped by partition (in partition
    /// id order, each one's appends in their order, so offsets stay dense within a
    /// run), and numbers the frames from `first_seq` in file order. One contiguous
    /// run per partition per write is what lets a sealed journal segment be indexed
    /// by runs (`docs/write-once.md`). The order across partitions means nothing.
    pub(super) fn lay_out(self, first_seq: u64) -> LaidOut {
        let n = self.appends.len();
        let bound = self.bound();
        debug_assert!(n > 0, "a pending write holds appends");
        let mut order: Vec<(u32, u32)> = (self.appends.iter().enumerate())
            .map(|(i, a)| (a.partition, i as u32))
            .collect();
        // O(n log n) whatever the number of partitions; a write of one partition
        // (the common case on a busy core) is sorted already.
        if !order.is_sorted() {
            order.sort_unstable();
        }
        let mut buf = glommio::allocate_dma_buffer(frame::align_up(bound));
        let bytes = buf.as_bytes_mut();
        let mut frames = Vec::with_capacity(n);
        let mut len = 0;
        let mut seq = first_seq;
        for &(_, i) in &order {
            let a = &self.appends[i as usize];
            let start = frame::frame_start(len);
            bytes[len..start].fill(0);
            let mut header = Header::data(
                a.partition,
                seq,
                a.base_offset,
                a.record_count,
                a.timestamp_ms,
            );
            let flen = frame::encode(&mut bytes[start..], &header, &a.batch);
            header.payload_len = a.batch.len() as u32;
            frames.push((start, header));
            len = start + flen;
            seq += 1;
        }
        debug_assert!(len <= bound);
        LaidOut {
            buf,
            len,
            first_seq,
            last_seq: seq - 1,
            frames,
            outcome: self.outcome,
        }
    }
}

pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) durable_seq: u64,
    /// Journal frames up to this sequence number are durable in the ledger.
    pub(super) recyclable_seq: u64,
    pub(super) offsets: HashMap<u32, Offsets>,
    pub(super) pending: Option<Pending>,
    /// An unrecoverable storage failure: every later append fails with it.
    pub(super) fatal: Option<Arc<LogError>>,
    /// The last ledger write failed (e.g. no space); cleared by the next success.
    pub(super) ledger_error: Option<Arc<LogError>>,
    /// When a failed ledger write was last logged: a device that stays full (other
    /// partitions' writes may succeed in between) is reported every
    /// `LEDGER_ERROR_LOG_EVERY`, not on every retry.
    pub(super) ledger_error_logged: Option<Instant>,
    /// After a failed copy-out, none is tried before this.
    pub(super) copy_out_retry_at: Option<Instant>,
    pub(super) closing: bool,
    pub(super) stats: LogStats,
    /// Per journal write (one group commit): nanoseconds from start to durable
    /// (write, and sync under `always`), and the appends it carried. Bounded; the
    /// metrics task drains it.
    pub(super) write_samples: Vec<(u64, u32)>,
}

pub(super) struct Shared {
    pub(super) cfg: LogConfig,
    pub(super) state: RefCell<State>,
    pub(super) ledger: RefCell<Ledger>,
    /// Wakes the driver: an append arrived, or the log is closing.
    pub(super) work: Notify,
    /// Wakes appenders waiting for room: a flush completed.
    pub(super) room: Notify,
    /// Wakes the ledger task: chunks are ready, or the log is closing.
    pub(super) ledger_work: Notify,
    /// Wakes readers waiting for new data: a journal write became durable.
    pub(super) appended: Notify,
    /// Wakes whoever waits for the log to fail: it stopped for good.
    pub(super) failed: Notify,
    /// Serializes ledger I/O between the ledger task and a journal roll.
    pub(super) ledger_io: glommio::sync::Semaphore,
    /// Set by the journal driver when it opens a segment: the ledger task makes the
    /// ledger durable now, in the background, so that the older segments are free
    /// to reuse by the time the journal rolls again (instead of the roll doing it
    /// while every append waits).
    pub(super) durable_wanted: std::cell::Cell<bool>,
}

impl State {
    /// Assigns offsets to one batch and adds it to the pending journal write
    /// (sequence numbers are given when the write is laid out).
    pub(super) fn push(
        &mut self,
        partition: u32,
        batch: Bytes,
        record_count: u32,
        timestamp_ms: i64,
    ) -> (u64, Rc<Outcome>) {
        let offsets = self.offsets.get_mut(&partition).expect("checked by caller");
        let base_offset = offsets.next;
        offsets.next += u64::from(record_count);
        let p = self.pending.get_or_insert_with(|| Pending {
            appends: Vec::new(),
            raw: 0,
            outcome: Rc::new(Outcome::default()),
        });
        p.raw += HEADER_LEN + batch.len();
        self.stats.appends += 1;
        self.stats.append_bytes += batch.len() as u64;
        p.appends.push(Append {
            partition,
            batch,
            base_offset,
            record_count,
            timestamp_ms,
        });
        (base_offset, p.outcome.clone())
    }

    /// Forgets every append not yet durable: offsets and sequence numbers go back to
    /// the last durable ones, so offsets stay dense.
    pub(super) fn roll_back(&mut self) -> Option<Pending> {
        for o in self.offsets.values_mut() {
            o.next = o.durable;
        }
        self.next_seq = self.durable_seq + 1;
        self.pending.take()
    }
}

/// Stops the log: every append not yet durable fails with `e`, and so does every
/// later one. Storage faults (EIO, a failed sync) end here: the process must exit.
pub(super) fn fail_fatal(sh: &Shared, e: LogError, current: impl IntoIterator<Item = Rc<Outcome>>) {
    let e = Arc::new(e);
    tracing::error!("the log on this core stopped: {e}");
    let later = {
        let mut st = sh.state.borrow_mut();
        st.fatal = Some(e.clone());
        st.roll_back()
    };
    for o in current.into_iter().chain(later.map(|l| l.outcome)) {
        o.complete(Err(e.clone()));
    }
    sh.room.notify();
    sh.ledger_work.notify();
    sh.appended.notify();
    sh.failed.notify();
}

const _: () = assert!(BLOCK >= 2 * HEADER_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;

    fn pending(appends: &[(u32, u64, usize)]) -> Pending {
        let mut p = Pending {
            appends: Vec::new(),
            raw: 0,
            outcome: Rc::new(Outcome::default()),
        };
        for (i, &(partition, base_offset, len)) in appends.iter().enumerate() {
            p.raw += HEADER_LEN + len;
            p.appends.push(Append {
                partition,
                batch: Bytes::from(vec![(i % 250) as u8 + 1; len]),
                base_offset,
                record_count: 1,
                timestamp_ms: i as i64,
            });
        }
        p
    }

    #[test]
    fn a_write_holds_one_run_per_partition_numbered_in_file_order() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                // Interleaved as appenders would: partitions 7, 3, 7, 9, 3, 7. The
                // sizes put frames near block ends, where padding depends on order.
                let sizes = [4000, 4030, 10, 4096 - 3 * HEADER_LEN, 1, 8000];
                let parts = [7, 3, 7, 9, 3, 7];
                let mut next = HashMap::new();
                let spec: Vec<(u32, u64, usize)> = parts
                    .iter()
                    .zip(sizes)
                    .map(|(&p, len)| {
                        let o = next.entry(p).or_insert(100 * u64::from(p));
                        *o += 1;
                        (p, *o - 1, len)
                    })
                    .collect();
                let p = pending(&spec);
                let bound = p.bound();
                let w = p.lay_out(41);
                assert!(w.len <= bound, "{} > {bound}", w.len);
                assert_eq!((w.first_seq, w.last_seq), (41, 46));
                // File order: 3's two, 7's three, then 9's, each run in append order.
                let order: Vec<(u32, u64)> = w
                    .frames
                    .iter()
                    .map(|(_, h)| (h.partition, h.base_offset))
                    .collect();
                assert_eq!(
                    order,
                    [(3, 300), (3, 301), (7, 700), (7, 701), (7, 702), (9, 900)]
                );
                let bytes = w.buf.as_bytes();
                for (k, &(pos, h)) in w.frames.iter().enumerate() {
                    assert_eq!(h.seq, 41 + k as u64, "dense in file order");
                    let got = frame::decode(&bytes[pos..w.len], 1 << 20).unwrap();
                    assert_eq!(got, h);
                    assert_eq!(got.kind, Kind::Data);
                    let i = spec
                        .iter()
                        .position(|&(p, o, _)| (p, o) == (h.partition, h.base_offset))
                        .unwrap();
                    assert_eq!(got.timestamp_ms, i as i64);
                    let payload = &bytes[pos + HEADER_LEN..pos + got.frame_len()];
                    assert!(
                        payload.len() == sizes[i]
                            && payload.iter().all(|&b| b == (i % 250) as u8 + 1)
                    );
                    assert!(pos % BLOCK + HEADER_LEN <= BLOCK, "a header within a block");
                }
            });
    }

    #[test]
    fn one_partition_keeps_append_order_and_fills_to_the_bound() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let spec: Vec<(u32, u64, usize)> =
                    (0..50).map(|i| (2, i, 100 + 37 * i as usize)).collect();
                let p = pending(&spec);
                let bound = p.bound();
                let w = p.lay_out(1);
                assert!(w.len <= bound);
                let offsets: Vec<u64> = w.frames.iter().map(|(_, h)| h.base_offset).collect();
                assert_eq!(offsets, (0..50).collect::<Vec<_>>());
                assert_eq!(w.buf.len(), frame::align_up(bound));
            });
    }

    #[test]
    fn the_bound_holds_for_small_frames_in_any_order_and_stays_tight() {
        use rand::{Rng, SeedableRng};
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let mut rng = rand::rngs::StdRng::seed_from_u64(3);
                for round in 0..50 {
                    let mut next = HashMap::new();
                    let spec: Vec<(u32, u64, usize)> = (0..400)
                        .map(|_| {
                            let p = rng.gen_range(0..5u32);
                            let o = next.entry(p).or_insert(0u64);
                            *o += 1;
                            (p, *o - 1, rng.gen_range(1..=300 * (round % 3 + 1)))
                        })
                        .collect();
                    let p = pending(&spec);
                    let (raw, bound) = (p.raw, p.bound());
                    let w = p.lay_out(1);
                    assert!(w.len <= bound, "round {round}: {} > {bound}", w.len);
                    assert!(bound <= raw + raw / 80 + HEADER_LEN, "round {round}: loose");
                }
                // One frame alone is never padded.
                assert_eq!(laid_out_bound(HEADER_LEN + 5000, 1), HEADER_LEN + 5000);
            });
    }
}
