//! The per-core log: what the Kafka front end and the pipeline call.
//!
//! Owns one core's journal and ledger and the two tasks that move data between
//! them. An append gets its offsets at once, joins the pending journal write (its
//! bytes are copied when the write is laid out, one run per partition), and
//! completes when the write that carries it is durable per the policy (group commit:
//! every append that arrives while a write is in flight rides the next one).
//! Once durable, the frame is handed to the ledger, so a read never sees data that is
//! not acknowledged. Must only be used from the core (executor) that opened it.
//!
//! The folder, by task: `state` (offsets, the pending write, wake-ups: no I/O),
//! `journal_task` (journal writes, group commit, rolls), `ledger_task` (write-behind,
//! sync, retention), `recovery` (start-up replay). This file is the public face;
//! the tasks never call it.

mod adopt;
mod journal_task;
mod ledger_task;
mod recovery;
mod state;

pub use recovery::CLEAN_STOP_FILE;
pub use recovery::{Lost, RecoveryReport};
pub use state::LogStats;

use crate::config::{Durability, LogConfig};
use crate::error::{LogError, Result};
use crate::ledger::{Entry, Ledger};
use crate::wait::{Notify, Outcome};
use bytes::Bytes;
use ledger_task::make_ledger_durable;
use recovery::Recovered;
use state::{Offsets, Shared, State};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// A completed append: where it landed and what durability was waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub durability: Durability,
}

/// A batch with its offsets, on its way to the device: see [`ShardLog::reserve`].
#[must_use = "the append is acknowledged only once durable"]
pub struct Reserved {
    appended: Appended,
    outcome: Rc<Outcome>,
}

impl Reserved {
    /// The batch's base offset (not readable before it is durable).
    pub fn base_offset(&self) -> u64 {
        self.appended.base_offset
    }

    /// Completes once the batch is durable per the log's policy. On an error the
    /// batch is not in the log, nor is any batch reserved after it up to the failure:
    /// their offsets are given out again.
    pub async fn durable(self) -> Result<Appended> {
        self.outcome.wait().await?;
        Ok(self.appended)
    }
}

/// One core's durable log. `!Send`: it lives and dies on its core.
pub struct ShardLog {
    shared: Rc<Shared>,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
}

impl ShardLog {
    /// Opens the log: recovers the ledger, replays what it lacks from the journal,
    /// makes the result durable, and starts the driver task on this executor.
    pub async fn open(cfg: LogConfig) -> Result<(ShardLog, RecoveryReport)> {
        cfg.validate()?;
        let Recovered {
            journal,
            ledger,
            next_seq,
            report,
        } = recovery::recover(&cfg).await?;
        let offsets = ledger
            .borrow()
            .partitions()
            .map(|p| {
                let o = p.next_offset();
                (
                    p.id,
                    Offsets {
                        next: o,
                        durable: o,
                        deleting: false,
                    },
                )
            })
            .collect();
        {
            // A topic's own limits are in place before the ledger task first runs.
            let mut l = ledger.borrow_mut();
            let own: Vec<(u32, crate::ledger::PartitionLimits)> = l
                .partitions()
                .filter_map(|p| cfg.partition_limits.get(&p.name).map(|x| (p.id, *x)))
                .collect();
            for (id, limits) in own {
                l.set_limits(id, Some(limits));
            }
        }
        let shared = Rc::new(Shared {
            cfg,
            state: RefCell::new(State {
                next_seq,
                durable_seq: next_seq - 1,
                recyclable_seq: 0,
                offsets,
                pending: None,
                fatal: None,
                ledger_error: None,
                ledger_error_logged: None,
                copy_out_retry_at: None,
                closing: false,
                stats: LogStats::default(),
                write_samples: Vec::new(),
            }),
            ledger,
            work: Notify::default(),
            room: Notify::default(),
            ledger_work: Notify::default(),
            appended: Notify::default(),
            failed: Notify::default(),
            ledger_io: glommio::sync::Semaphore::new(1),
            durable_wanted: std::cell::Cell::new(false),
        });
        // Everything replayed is made durable in the ledger before new appends, so
        // every journal segment is free to reuse.
        match make_ledger_durable(&shared).await {
            Ok(()) => {}
            // What the ledger cannot take stays in the journal and in memory.
            Err(e) if e.is_no_space() => tracing::warn!("after recovery: {e}"),
            Err(e) => return Err(e),
        }
        for d in &report.dropped {
            tracing::warn!("recovery dropped {d}");
        }
        for d in &report.damaged {
            tracing::error!("journal damage: {d}; every valid frame around it was kept");
        }
        for l in &report.lost {
            tracing::error!("{l}");
        }
        let journal_task = journal_task::spawn(shared.clone(), journal);
        let ledger_task = ledger_task::spawn(shared.clone());
        Ok((
            ShardLog {
                shared,
                tasks: RefCell::new(vec![journal_task, ledger_task]),
            },
            report,
        ))
    }

    /// Creates a partition if it does not exist and returns its id.
    pub fn create_partition(&self, name: &str) -> Result<u32> {
        self.create_partition_at(name, 0)
    }

    /// Creates a partition whose offsets start at `start` if it does not exist, and
    /// returns its id (used to move a partition from another core's log).
    pub fn create_partition_at(&self, name: &str, start: u64) -> Result<u32> {
        let id = self.shared.ledger.borrow_mut().create_partition_at(
            name,
            start,
            self.shared.cfg.partitions_max,
        )?;
        let limits = self.shared.cfg.partition_limits.get(name).copied();
        self.shared.ledger.borrow_mut().set_limits(id, limits);
        self.shared
            .state
            .borrow_mut()
            .offsets
            .entry(id)
            .or_insert(Offsets {
                next: start,
                durable: start,
                deleting: false,
            });
        Ok(id)
    }

    /// The most partitions this core's log holds (`partitions_max`).
    pub fn partitions_max(&self) -> usize {
        self.shared.cfg.partitions_max
    }

    pub fn partition_id(&self, name: &str) -> Option<u32> {
        self.shared.ledger.borrow().partition_id(name)
    }

    /// Deletes a partition and its data; false if there is none by that name. New
    /// appends are refused at once, appends already accepted finish first, and the
    /// id is never given to another partition.
    pub async fn delete_partition(&self, name: &str) -> Result<bool> {
        let sh = &*self.shared;
        let Some(id) = self.partition_id(name) else {
            return Ok(false);
        };
        match sh.state.borrow_mut().offsets.get_mut(&id) {
            Some(o) if !o.deleting => o.deleting = true,
            // Another delete of it is under way.
            _ => return Ok(false),
        }
        let res = self.delete_when_quiet(id).await;
        let gone = sh.ledger.borrow().partition(id).is_none();
        let mut st = sh.state.borrow_mut();
        if gone {
            st.offsets.remove(&id);
        } else if let Some(o) = st.offsets.get_mut(&id) {
            // Still there: appends are taken again, and the delete can be retried.
            o.deleting = false;
        }
        res.map(|()| true)
    }

    /// Waits for the appends accepted for `id` and for any ledger write, then
    /// deletes it from the ledger.
    async fn delete_when_quiet(&self, id: u32) -> Result<()> {
        let sh = &*self.shared;
        loop {
            // A write completing (durable or failed, fatal or not) wakes both.
            let (appended, room) = (sh.appended.epoch(), sh.room.epoch());
            {
                let st = sh.state.borrow();
                if let Some(e) = &st.fatal {
                    return Err(LogError::Shared(e.clone()));
                }
                let o = &st.offsets[&id];
                if o.durable == o.next {
                    break;
                }
            }
            sh.work.notify();
            futures_lite::future::or(sh.appended.wait(appended), sh.room.wait(room)).await;
        }
        // No ledger write is in flight while the permit is held.
        let _io = sh
            .ledger_io
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        Ledger::delete_partition(&sh.ledger, id).await
    }

    /// Names and ids of the partitions this log holds.
    pub fn partitions(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .shared
            .ledger
            .borrow()
            .partitions()
            .map(|p| (p.name.clone(), p.id))
            .collect();
        v.sort();
        v
    }

    /// Appends one batch covering `record_count` offsets to `partition`; completes with
    /// the batch's base offset once durable per the log's policy.
    pub async fn append(
        &self,
        partition: u32,
        batch: impl Into<Bytes>,
        record_count: u32,
        timestamp_ms: i64,
    ) -> Result<Appended> {
        self.reserve(partition, batch, record_count, timestamp_ms)
            .await?
            .durable()
            .await
    }

    /// The first half of [`ShardLog::append`]: completes once the batch has its
    /// offsets and is in the pending journal write (after waiting for room
    /// when the log is full), so batches reserved one after another get offsets in
    /// that order. [`Reserved::durable`] then waits for the write. A caller may
    /// reserve the next batch before the last is durable: that is how one connection
    /// keeps several requests in one group commit.
    pub async fn reserve(
        &self,
        partition: u32,
        batch: impl Into<Bytes>,
        record_count: u32,
        timestamp_ms: i64,
    ) -> Result<Reserved> {
        let batch: Bytes = batch.into();
        let sh = &*self.shared;
        if batch.len() > sh.cfg.batch_bytes_max {
            return Err(LogError::BatchTooLarge {
                len: batch.len(),
                max: sh.cfg.batch_bytes_max,
            });
        }
        // An empty payload is how the ledger marks offsets lost to media damage.
        if record_count == 0 || batch.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let (base_offset, outcome) = loop {
            let seen = sh.room.epoch();
            {
                let mut st = sh.state.borrow_mut();
                if let Some(e) = &st.fatal {
                    return Err(LogError::Shared(e.clone()));
                }
                if st.closing {
                    return Err(LogError::Closed);
                }
                if st.offsets.get(&partition).is_none_or(|o| o.deleting) {
                    return Err(LogError::UnknownPartition(partition));
                }
                let ledger_full =
                    sh.ledger.borrow().pending_bytes() >= sh.cfg.ledger_pending_bytes_max;
                if ledger_full {
                    if let Some(e) = &st.ledger_error {
                        return Err(LogError::Shared(e.clone()));
                    }
                }
                let fits = st
                    .pending
                    .as_ref()
                    .is_none_or(|p| p.bound_with(batch.len()) <= sh.cfg.journal_flush_bytes_max);
                if fits && !ledger_full {
                    break st.push(partition, batch, record_count, timestamp_ms);
                }
            }
            sh.work.notify();
            sh.room.wait(seen).await;
        };
        sh.work.notify();
        Ok(Reserved {
            appended: Appended {
                base_offset,
                durability: sh.cfg.durability,
            },
            outcome,
        })
    }

    /// Reads batches from `from`, about `max_bytes` of payload (at least one batch when
    /// any is there). Only acknowledged batches are visible.
    pub async fn read(&self, partition: u32, from: u64, max_bytes: usize) -> Result<Vec<Entry>> {
        // The ledger holds exactly the acknowledged batches: its end is the high
        // watermark, and reads past it are out of range.
        Ledger::read(&self.shared.ledger, partition, from, max_bytes).await
    }

    /// Keeps `partition`'s offsets from `offset` on readable whatever retention says
    /// (a checkpoint may replay from there); `None` lifts the hold.
    pub fn retain_from(&self, partition: u32, offset: Option<u64>) {
        self.shared
            .ledger
            .borrow_mut()
            .retain_from(partition, offset);
    }

    /// Deletes `partition`'s offsets before `before` (DeleteRecords; at most the
    /// high watermark): reads start there from now on, across restarts; the
    /// segments wholly before it are deleted at the next retention pass. Returns
    /// the partition's new start.
    pub async fn delete_records(&self, partition: u32, before: u64) -> Result<u64> {
        Ledger::delete_before(&self.shared.ledger, partition, before).await
    }

    /// Gives `partition` its own segment size and retention (`None`: the log's).
    pub fn set_limits(&self, partition: u32, limits: Option<crate::ledger::PartitionLimits>) {
        self.shared
            .ledger
            .borrow_mut()
            .set_limits(partition, limits);
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.shared.cfg
    }

    /// Largest batch one append may carry (`batch_bytes_max`).
    pub fn batch_bytes_max(&self) -> usize {
        self.shared.cfg.batch_bytes_max
    }

    /// Says `partition`'s offsets before `offset` are superseded by later ones (a
    /// compacted partition wrote a snapshot from there): its sealed segments wholly
    /// before `offset` go at the next retention pass, whatever the limits.
    pub fn supersede_before(&self, partition: u32, offset: u64) {
        self.shared
            .ledger
            .borrow_mut()
            .supersede_before(partition, offset);
    }

    /// A counter that moves whenever new data becomes readable; pass it to
    /// [`ShardLog::wait_for_append`] to wait for the next move.
    pub fn append_epoch(&self) -> u64 {
        self.shared.appended.epoch()
    }

    /// Completes once data was acknowledged after `epoch` was read (or the log
    /// stops). Readers that found nothing new wait here instead of polling.
    pub async fn wait_for_append(&self, epoch: u64) {
        self.shared.appended.wait(epoch).await
    }

    /// One past the last acknowledged offset.
    pub fn high_watermark(&self, partition: u32) -> Result<u64> {
        self.shared
            .state
            .borrow()
            .offsets
            .get(&partition)
            .map(|o| o.durable)
            .ok_or(LogError::UnknownPartition(partition))
    }

    /// The first offset still held (retention moves it forward).
    pub fn log_start_offset(&self, partition: u32) -> Result<u64> {
        self.shared
            .ledger
            .borrow()
            .partition(partition)
            .map(|p| p.start_offset())
            .ok_or(LogError::UnknownPartition(partition))
    }

    /// The unrecoverable failure that stopped the log, if any.
    pub fn fatal_error(&self) -> Option<Arc<LogError>> {
        self.shared.state.borrow().fatal.clone()
    }

    /// Completes with the failure once the log stops for good (a storage fault).
    pub async fn failed(&self) -> Arc<LogError> {
        loop {
            let seen = self.shared.failed.epoch();
            if let Some(e) = self.fatal_error() {
                return e;
            }
            self.shared.failed.wait(seen).await;
        }
    }

    pub fn stats(&self) -> LogStats {
        self.shared.state.borrow().stats
    }

    /// Takes the samples of the journal writes since the last call: (nanoseconds
    /// to durable, appends in the group commit), at most 8192 of them.
    pub fn drain_write_samples(&self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.shared.state.borrow_mut().write_samples)
    }

    /// Ledger segments of a partition (tests and inspection).
    pub fn ledger_segments(&self, partition: u32) -> usize {
        self.shared.ledger.borrow().segments_of(partition)
    }

    /// Finishes every append already accepted, writes and syncs everything, and stops.
    pub async fn close(&self) -> Result<()> {
        let sh = self.shared.clone();
        sh.state.borrow_mut().closing = true;
        sh.work.notify();
        sh.room.notify();
        sh.ledger_work.notify();
        let tasks: Vec<_> = self.tasks.borrow_mut().drain(..).collect();
        for task in tasks {
            task.await;
        }
        if let Some(e) = sh.state.borrow().fatal.clone() {
            return Err(LogError::Shared(e));
        }
        make_ledger_durable(&sh).await?;
        // A clean stop: the next start need not read the journal. Only when no
        // append is left half-done.
        let (next, durable, pending) = {
            let st = sh.state.borrow();
            (st.next_seq, st.durable_seq, st.pending.is_some())
        };
        if next == durable + 1 && !pending {
            // Everything is durable already: without the marker the next start
            // only reads the journal again.
            if let Err(e) = recovery::write_clean_stop(&sh.cfg, next).await {
                tracing::warn!(
                    "cannot record the clean stop ({e}): the next start reads the journal"
                );
            }
        }
        Ok(())
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        // Dropped without close(): stop the driver at its next wake-up; what was
        // acknowledged is durable per the policy already.
        self.shared.state.borrow_mut().closing = true;
        self.shared.work.notify();
        self.shared.ledger_work.notify();
    }
}
