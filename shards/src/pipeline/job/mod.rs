//! One job on one core: read the core's source partitions in offset order, decode,
//! route each record by key to the core that owns the key, keep window state, move
//! the watermark, fire windows into the sinks.
//!
//! keyBy: the owner of a key is `partition_owner(partition_for(key, P), cores)` —
//! the core that owns the partition Kafka's default partitioner gives the key — so
//! records a client partitioned by the job key never leave their core. Other records
//! go, batched, through a bounded SPSC mailbox per (job, from core, to core), followed
//! by the sender's watermark. A receiving task per mailbox applies them at once and
//! never waits, so two cores sending to each other cannot deadlock.
//!
//! Watermarks: per source partition, max event time − max_out_of_orderness; a core's
//! watermark is the minimum over its partitions and the watermarks that arrived from
//! the other cores, leaving out inputs idle for `idle_timeout` (all idle: the maximum,
//! so the last windows fire once the data stops). It never moves back.
//!
//! Checkpoints (aligned barriers): core 0 starts checkpoint `n` every
//! `checkpoint_interval` by sending barrier `n` into its mailboxes after the records
//! before it; a core that sees a barrier sends its own the same way. A core stops
//! reading its sources at its barrier, and a mailbox receiver that delivered barrier
//! `n` takes nothing more from that core until this core's part of `n` is written.
//! When every input has delivered `n` and the sinks have delivered every window fired
//! before it, the core writes its part (window state, source positions, watermarks,
//! output positions; `checkpoint.rs`) and tells core 0, which writes the manifest
//! when all parts are durable. On start, the job resumes from the newest complete
//! checkpoint and skips side-output records it already wrote after it.
//!
//! At a clean stop, core 0 takes one more checkpoint (after the one in progress, if
//! any) and the other cores keep taking part until it is complete, so a restart
//! replays only what was appended or read while that checkpoint was taken; a sink
//! that cannot deliver within `SHUTDOWN_CHECKPOINT_WAIT` abandons it, and the next
//! start replays from the checkpoint before.
//!
//! Never drops a record: undecodable ones go to `<job>.dlq` with the reason, late ones
//! to `<job>.late`; a full state or a failed side-output write stops the job with an
//! error that says so, and the log keeps everything from there.

//!
//! Rooms: `driver` is the loop of named steps one core runs; `mailbox` carries records,
//! watermarks and barriers between cores; `state` is what the loop and the mailbox
//! receivers share; `record` takes one stored record into the state or a mailbox;
//! `watermark` combines inputs into the core's watermark; `side_output` writes late
//! events and dead letters once; `align` decides when a checkpoint starts and when
//! this core's part of it may be written. Nothing here blocks the core: every wait
//! is on a notification (appends, mailbox messages, sink deliveries, the stop) or on
//! the next deadline the loop knows of.

mod align;
mod driver;
mod mailbox;
mod record;
mod side_output;
mod state;
mod watermark;

pub use mailbox::{mesh, CoreMail, Mail, MailboxStats};

use super::checkpoint;
use super::spec::Job;
use super::window::Layout;
use super::PipelineError;
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

fn push_sample(v: &RefCell<Vec<u64>>, d: Duration) {
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
pub(crate) struct Stopping {
    stop: Stop,
    since: Cell<Option<Instant>>,
}

impl Stopping {
    fn new(stop: Stop) -> Stopping {
        Stopping {
            stop,
            since: Cell::new(None),
        }
    }

    fn is_set(&self) -> bool {
        self.stop.is_set()
    }

    fn since(&self) -> Instant {
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
    fn halted(&self) -> bool {
        self.is_set() && self.since().elapsed() >= SHUTDOWN_CHECKPOINT_WAIT
    }

    /// Completes once `halted` would say so.
    async fn until_halted(&self) {
        self.stop.wait().await;
        let end = self.since() + SHUTDOWN_CHECKPOINT_WAIT;
        glommio::timer::sleep(end.saturating_duration_since(Instant::now())).await;
    }
}

/// Runs the job on this core until the server stops; returns why it stopped early.
pub async fn run(
    job: Rc<Job>,
    layout: Rc<Layout>,
    ctx: JobContext,
    mail: CoreMail,
    stats: Rc<JobStats>,
) -> Result<(), PipelineError> {
    let res = match driver::JobCore::start(job.clone(), layout, ctx, mail, stats.clone()).await {
        Ok(core) => core.run().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        tracing::error!(job = %job.name, "job stopped: {e}; its input stays in the log");
        *stats.failed.borrow_mut() = Some(e.to_string());
    }
    res
}
