//! What a job gets from its core and what it shows the metrics: the job's
//! context (its log, sources, side-output partitions, sinks, stop), its counters,
//! its checkpoint settings, and the stop as the job sees it.
//!
//! Owns no behaviour beyond the stop's shutdown wait; never touches the log.

use crate::pipeline::checkpoint;
use crate::sink::SinkHandle;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidewater_io::wait::{Signal, Stop};
use tidewater_io::ShardLog;

/// Counters and gauges of one job on one core.
#[derive(Debug, Default)]
pub struct JobStats {
    pub records_in: Cell<u64>,
    pub dlq: Cell<u64>,
    pub late: Cell<u64>,
    pub windows_fired: Cell<u64>,
    pub routed_out: Cell<u64>,
    pub routed_in: Cell<u64>,
    pub watermark: Cell<i64>,
    pub state_entries: Cell<u64>,
    pub state_bytes: Cell<u64>,
    /// Per source partition (Kafka index): log end − next offset to process.
    pub lag: RefCell<Vec<(u32, u64)>>,
    /// Time spent waiting for a full mailbox or sink queue (back-pressure).
    pub blocked_ns: Cell<u64>,
    pub failed: RefCell<Option<String>>,
    /// Last checkpoint this core wrote its part of, its size, and (core 0) the last
    /// complete one.
    pub checkpoint_part: Cell<u64>,
    pub checkpoint_bytes: Cell<u64>,
    pub checkpoint_complete: Cell<u64>,
    /// Samples (µs) drained by the metrics task: barrier to part written, and the
    /// part of that spent waiting for the other cores' barriers.
    pub checkpoint_us: RefCell<Vec<u64>>,
    pub alignment_us: RefCell<Vec<u64>>,
}

/// Samples a metrics scrape has not drained yet, at most.
const SAMPLES_MAX: usize = 10_000;

pub(super) fn push_sample(v: &RefCell<Vec<u64>>, d: Duration) {
    let mut v = v.borrow_mut();
    if v.len() < SAMPLES_MAX {
        v.push(d.as_micros() as u64);
    }
}

/// A job's checkpointing on one core.
pub struct Checkpoints {
    /// `<data_dir>/checkpoints`.
    pub root: std::path::PathBuf,
    pub interval: Duration,
    /// The checkpoint to resume from (the same on every core), read and checked.
    pub restore: Option<(u64, Rc<checkpoint::Part>)>,
    /// Ids on disk go up to this: new ones start above it.
    pub highest: u64,
    /// Savepoints asked for (core 0 takes one at once when this moves); a
    /// savepoint is a checkpoint that pruning keeps.
    pub requested: Arc<Signal>,
    /// Shared by the job's cores: raised by core 0 when the checkpoint taken at
    /// shutdown is complete (or abandoned: `u64::MAX`), after which every core's
    /// part ends.
    pub finished: Arc<Signal>,
}

/// How long a stopping server waits for its shutdown checkpoint (a dead sink
/// cannot deliver what was fired before it); after that the next start replays
/// from the checkpoint before.
pub const SHUTDOWN_CHECKPOINT_WAIT: Duration = Duration::from_secs(10);

/// What a job needs from its core.
pub struct JobContext {
    pub shard: u32,
    pub shards: u32,
    pub log: Rc<ShardLog>,
    /// Partitions of the source topic.
    pub source_partitions: u32,
    /// This core's source partitions: (Kafka index, log id).
    pub sources: Vec<(u32, u32)>,
    /// Log ids of this core's partitions of `<job>.late` and `<job>.dlq`, by Kafka
    /// index. They have the source's partition count: a late event goes to its key
    /// group's partition, a dead letter to its source partition's, both owned here,
    /// so side output moves with its key group when the job is rescaled.
    pub late_ids: Vec<Option<u32>>,
    pub dlq_ids: Vec<Option<u32>>,
    pub sinks: Vec<SinkHandle>,
    pub stop: Stop,
    /// `None`: checkpoints off (a restart replays the sources from the start).
    pub checkpoints: Option<Checkpoints>,
}

/// The server's stop as a job sees it: from the moment it is first seen, the job
/// has `SHUTDOWN_CHECKPOINT_WAIT` to finish its last checkpoint; after that, a
/// wait for room in a mailbox ends (the job halts).
pub(super) struct Stopping {
    stop: Stop,
    since: Cell<Option<Instant>>,
}

impl Stopping {
    pub fn new(stop: Stop) -> Stopping {
        Stopping {
            stop,
            since: Cell::new(None),
        }
    }

    pub fn is_set(&self) -> bool {
        self.stop.is_set()
    }

    pub fn since(&self) -> Instant {
        match self.since.get() {
            Some(t) => t,
            None => {
                let now = Instant::now();
                self.since.set(Some(now));
                now
            }
        }
    }

    /// Stopped, and the shutdown wait is over.
    pub fn halted(&self) -> bool {
        self.is_set() && self.since().elapsed() >= SHUTDOWN_CHECKPOINT_WAIT
    }

    /// Completes once `halted` would say so.
    pub async fn until_halted(&self) {
        self.stop.wait().await;
        let end = self.since() + SHUTDOWN_CHECKPOINT_WAIT;
        glommio::timer::sleep(end.saturating_duration_since(Instant::now())).await;
    }
}
