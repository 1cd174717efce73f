//! Checkpoints (aligned barriers): core 0 starts checkpoint `n` every
//! `checkpoint_interval` (or at once for a savepoint, or at a clean stop) by sending
//! barrier `n` into its mailboxes after the records before it; a core that sees a
//! barrier sends its own the same way. A core stops reading its sources at its
//! barrier, and a mailbox receiver that delivered barrier `n` takes nothing more from
//! that core until this core's part of `n` is written. When every input has
//! delivered `n` and the sinks have delivered every window fired before it, the core
//! writes its part and tells core 0, which writes the manifest when all parts are
//! durable.
//!
//! Owns when a checkpoint starts, when this core's part may be written, what
//! retention must keep for it, and (core 0) completing it; never builds a part's
//! content or sends mail.

use super::context::{push_sample, Checkpoints, JobStats};
use crate::pipeline::checkpoint;
use crate::pipeline::PipelineError;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tidewater_io::ShardLog;

/// A checkpoint this core has sent its barrier for and not yet written.
pub(super) struct InProgress {
    pub id: u64,
    started: Instant,
    aligned_at: Option<Instant>,
}

/// One core's side of a job's checkpoints.
pub(super) struct Alignment {
    pub current: Option<InProgress>,
    next_id: u64,
    last_started: Instant,
    savepoints_seen: u64,
    /// Core 0: the savepoint asked for, by the id it will have.
    savepoint: Option<u64>,
    /// Core 0: the checkpoint that ends the job at a clean stop.
    final_id: Option<u64>,
    /// Source positions (log id, next offset) of the parts this core wrote that
    /// are still kept, oldest first (and the one resumed from).
    kept: VecDeque<Vec<(u32, u64)>>,
}

impl Alignment {
    pub fn new(c: &Checkpoints) -> Alignment {
        Alignment {
            current: None,
            next_id: c.highest + 1,
            last_started: Instant::now(),
            savepoints_seen: c.requested.get(),
            savepoint: None,
            final_id: None,
            kept: VecDeque::new(),
        }
    }

    /// The checkpoint to start now, if any: core 0 on its timer, a savepoint asked
    /// for or the stop; the others on core 0's barrier (`barrier_max`, the highest
    /// any core delivered).
    pub fn due(
        &mut self,
        shard: u32,
        c: &Checkpoints,
        stopping: bool,
        barrier_max: u64,
    ) -> Option<u64> {
        if self.current.is_some() {
            return None;
        }
        if shard != 0 {
            return (barrier_max >= self.next_id).then_some(barrier_max);
        }
        let asked = c.requested.get();
        if asked > self.savepoints_seen {
            self.savepoints_seen = asked;
            self.savepoint = Some(self.next_id);
        }
        let last = stopping && self.final_id.is_none();
        if last {
            self.final_id = Some(self.next_id);
        }
        let due = self.last_started.elapsed() >= c.interval;
        (due || self.savepoint == Some(self.next_id) || last).then_some(self.next_id)
    }

    /// Savepoints asked for that this core has seen.
    pub fn savepoints_seen(&self) -> u64 {
        self.savepoints_seen
    }

    /// Core 0: when the timer would start the next checkpoint.
    pub fn next_due(&self, shard: u32, c: &Checkpoints) -> Option<Instant> {
        (shard == 0 && self.current.is_none()).then(|| self.last_started + c.interval)
    }

    /// The barrier of `id` went out.
    pub fn started(&mut self, id: u64) {
        self.current = Some(InProgress {
            id,
            started: Instant::now(),
            aligned_at: None,
        });
        self.next_id = id + 1;
        self.last_started = Instant::now();
    }

    /// Whether every other core's barrier for the checkpoint in progress is in.
    pub fn aligned(&mut self, shard: u32, barriers: &[u64]) -> bool {
        let Some(cur) = &mut self.current else {
            return false;
        };
        let aligned = barriers
            .iter()
            .enumerate()
            .all(|(from, &b)| from as u32 == shard || b >= cur.id);
        if aligned && cur.aligned_at.is_none() {
            cur.aligned_at = Some(Instant::now());
        }
        aligned
    }

    /// This core's part of the checkpoint in progress is durable at `positions`
    /// (its sources' log id and next offset): retention may let go of the part
    /// before the oldest kept.
    pub fn part_written(
        &mut self,
        log: &ShardLog,
        stats: &JobStats,
        positions: Vec<(u32, u64)>,
        bytes: u64,
    ) -> Option<u64> {
        let cur = self.current.take()?;
        stats.checkpoint_part.set(cur.id);
        stats.checkpoint_bytes.set(bytes);
        push_sample(&stats.checkpoint_us, cur.started.elapsed());
        push_sample(
            &stats.alignment_us,
            cur.aligned_at
                .map_or(Duration::ZERO, |a| a.duration_since(cur.started)),
        );
        self.keep(log, positions);
        while self.kept.len() > checkpoint::KEEP + 1 {
            self.kept.pop_front();
        }
        self.hold(log);
        Some(cur.id)
    }

    /// Retention keeps what a checkpoint may replay from: `positions` too.
    pub fn keep(&mut self, log: &ShardLog, positions: Vec<(u32, u64)>) {
        self.kept.push_back(positions);
        self.hold(log);
    }

    /// Holds retention at the oldest kept position of each source partition.
    fn hold(&self, log: &ShardLog) {
        if let Some(oldest) = self.kept.front() {
            for &(id, next) in oldest {
                log.retain_from(id, Some(next));
            }
        }
    }

    /// Core 0: writes the manifest of each checkpoint in `complete` (every core
    /// wrote its part, oldest first), marks savepoints, prunes, and raises
    /// `finished` when the checkpoint taken at shutdown is complete.
    pub async fn complete(
        &mut self,
        job: &str,
        c: &Checkpoints,
        shards: u32,
        complete: Vec<u64>,
        stats: &JobStats,
    ) -> Result<(), PipelineError> {
        for id in complete {
            checkpoint::write_manifest(&c.root, job, id, shards).await?;
            if self.savepoint.is_some_and(|s| s <= id) {
                checkpoint::mark_savepoint(&c.root, job, id).await?;
                tracing::info!(job, checkpoint = id, "savepoint taken");
                self.savepoint = None;
            }
            checkpoint::prune(&c.root, job, id).await;
            stats.checkpoint_complete.set(id);
            tracing::debug!(job, checkpoint = id, "checkpoint complete");
            if self.final_id.is_some_and(|f| f <= id) {
                tracing::info!(job, checkpoint = id, "checkpoint taken at shutdown");
                c.finished.raise(id);
            }
        }
        Ok(())
    }
}
