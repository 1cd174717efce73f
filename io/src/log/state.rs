//! The state one core's log shares between its face and its two tasks.
//!
//! Owns the offsets of every partition, the journal write being filled, the
//! counters, the wake-ups and the fatal-error latch. Assigns offsets and sequence
//! numbers (and gives them back when a write fails, so offsets stay dense); never
//! does I/O. Lives on one core (`Rc`, `RefCell`): `!Send` by construction.

use crate::config::LogConfig;
use crate::error::LogError;
use crate::frame::{self, Header, BLOCK, HEADER_LEN};
use crate::ledger::Ledger;
use crate::wait::{Notify, Outcome};
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
}

pub(super) struct Offsets {
    /// Next offset to assign.
    pub(super) next: u64,
    /// One past the last acknowledged offset: the high watermark.
    pub(super) durable: u64,
    /// Being deleted: appends are refused.
    pub(super) deleting: bool,
}

/// The journal write being filled by appenders.
pub(super) struct Pending {
    pub(super) buf: DmaBuffer,
    pub(super) len: usize,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// (position, header) of each frame in `buf`.
    pub(super) frames: Vec<(usize, Header)>,
    pub(super) outcome: Rc<Outcome>,
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
    /// Assigns offsets and copies one frame into the pending journal write.
    pub(super) fn push(
        &mut self,
        partition: u32,
        batch: &[u8],
        record_count: u32,
        timestamp_ms: i64,
        cfg: &LogConfig,
    ) -> (u64, Rc<Outcome>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let offsets = self.offsets.get_mut(&partition).expect("checked by caller");
        let base_offset = offsets.next;
        offsets.next += u64::from(record_count);
        let p = self.pending.get_or_insert_with(|| Pending {
            buf: glommio::allocate_dma_buffer(cfg.journal_flush_bytes_max),
            len: 0,
            first_seq: seq,
            last_seq: seq,
            frames: Vec::new(),
            outcome: Rc::new(Outcome::default()),
        });
        let start = frame::frame_start(p.len);
        let bytes = p.buf.as_bytes_mut();
        bytes[p.len..start].fill(0);
        let header = Header::data(partition, seq, base_offset, record_count, timestamp_ms);
        let len = frame::encode(&mut bytes[start..], &header, batch);
        let mut header = header;
        header.payload_len = batch.len() as u32;
        p.frames.push((start, header));
        p.len = start + len;
        p.last_seq = seq;
        self.stats.appends += 1;
        self.stats.append_bytes += batch.len() as u64;
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
