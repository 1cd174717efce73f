//! The per-core log: what the Kafka front end and the pipeline call.
//!
//! Owns one core's journal and ledger and the driver task that moves data between
//! them. An append gets its offsets at once, is copied into the pending journal write,
//! and completes when the write that carries it is durable per the policy (group
//! commit: every append that arrives while a write is in flight rides the next one).
//! Once durable, the frame is handed to the ledger, so a read never sees data that is
//! not acknowledged. Must only be used from the core (executor) that opened it.

use crate::config::{Durability, LogConfig, JOURNAL_WRITES_IN_FLIGHT_MAX, WRITE_SAMPLES_MAX};
use crate::error::{LogError, Result};
use crate::frame::{self, Header, BLOCK, HEADER_LEN};
use crate::journal::{Damaged, Dropped, Journal, RecoveredEnd};
use crate::ledger::{Entry, Ledger, LedgerLimits};
use crate::wait::{Notify, Outcome};
use glommio::io::DmaBuffer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What recovery found and did, for the log line at start-up and for tests.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Journal segments read.
    pub journal_segments_scanned: usize,
    /// Journal frames restored into the ledger (the ledger lacked them).
    pub frames_restored: u64,
    /// Valid frames found in the journal.
    pub frames_scanned: u64,
    /// What was not kept, where and why.
    pub dropped: Vec<Dropped>,
    /// Journal damage with valid frames after it (media damage): every valid frame
    /// on both sides was kept; the damaged segment was copied aside first.
    pub damaged: Vec<Damaged>,
    /// Offsets whose records only a damaged frame held: kept in the ledger as
    /// entries with no payload, so offsets stay dense and readers see the loss.
    pub lost: Vec<Lost>,
    /// Index files rebuilt from their segments.
    pub indexes_rebuilt: Vec<PathBuf>,
}

/// Offsets of a partition whose records were lost to journal damage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub partition: String,
    pub from: u64,
    pub to: u64,
    /// The damaged segment and the byte offset of the damage.
    pub path: PathBuf,
    pub offset: u64,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {} offsets {}..{} lost: their only copy was the damaged journal frame at {} byte {}",
            self.partition,
            self.from,
            self.to,
            self.path.display(),
            self.offset
        )
    }
}

impl RecoveryReport {
    /// True when recovery found media damage: the server runs, but degraded.
    pub fn degraded(&self) -> bool {
        !self.damaged.is_empty()
    }
}

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

struct Offsets {
    /// Next offset to assign.
    next: u64,
    /// One past the last acknowledged offset: the high watermark.
    durable: u64,
    /// Being deleted: appends are refused.
    deleting: bool,
}

/// The journal write being filled by appenders.
struct Pending {
    buf: DmaBuffer,
    len: usize,
    first_seq: u64,
    last_seq: u64,
    /// (position, header) of each frame in `buf`.
    frames: Vec<(usize, Header)>,
    outcome: Rc<Outcome>,
}

struct State {
    next_seq: u64,
    durable_seq: u64,
    /// Journal frames up to this sequence number are durable in the ledger.
    recyclable_seq: u64,
    offsets: HashMap<u32, Offsets>,
    pending: Option<Pending>,
    /// An unrecoverable storage failure: every later append fails with it.
    fatal: Option<Arc<LogError>>,
    /// The last ledger write failed (e.g. no space); cleared by the next success.
    ledger_error: Option<Arc<LogError>>,
    /// When a failed ledger write was last logged: a device that stays full (other
    /// partitions' writes may succeed in between) is reported every
    /// `LEDGER_ERROR_LOG_EVERY`, not on every retry.
    ledger_error_logged: Option<Instant>,
    closing: bool,
    stats: LogStats,
    /// Per journal write (one group commit): nanoseconds from start to durable
    /// (write, and sync under `always`), and the appends it carried. Bounded; the
    /// metrics task drains it.
    write_samples: Vec<(u64, u32)>,
}

struct Shared {
    cfg: LogConfig,
    state: RefCell<State>,
    ledger: RefCell<Ledger>,
    /// Wakes the driver: an append arrived, or the log is closing.
    work: Notify,
    /// Wakes appenders waiting for room: a flush completed.
    room: Notify,
    /// Wakes the ledger task: chunks are ready, or the log is closing.
    ledger_work: Notify,
    /// Wakes readers waiting for new data: a journal write became durable.
    appended: Notify,
    /// Serializes ledger I/O between the ledger task and a journal roll.
    ledger_io: glommio::sync::Semaphore,
    /// Set by the journal driver when it opens a segment: the ledger task makes the
    /// ledger durable now, in the background, so that the older segments are free
    /// to reuse by the time the journal rolls again (instead of the roll doing it
    /// while every append waits).
    durable_wanted: std::cell::Cell<bool>,
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
        let mut report = RecoveryReport::default();
        let limits = LedgerLimits {
            segment_bytes: cfg.ledger_segment_bytes,
            flush_bytes: cfg.ledger_flush_bytes,
            index_interval_bytes: u64::from(cfg.index_interval_bytes),
            retention_bytes: cfg.retention_bytes,
            retention_ms: cfg.retention_ms,
        };
        let ledger = Ledger::open(
            &cfg.ledger_dir,
            limits,
            cfg.partitions_max,
            &mut report.dropped,
            &mut report.indexes_rebuilt,
        )
        .await?;
        let mut journal = Journal::open(
            &cfg.journal_dir,
            cfg.shard,
            cfg.journal_segment_bytes,
            cfg.journal_segments,
            cfg.durability == Durability::Always && cfg.journal_odsync,
            cfg.durability != Durability::Never,
        )
        .await?;
        report.damaged.extend(journal.take_repaired());
        let ledger = RefCell::new(ledger);
        let next_seq = replay(&mut journal, &ledger, &mut report).await?;
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
                closing: false,
                stats: LogStats::default(),
                write_samples: Vec::new(),
            }),
            ledger,
            work: Notify::default(),
            room: Notify::default(),
            ledger_work: Notify::default(),
            appended: Notify::default(),
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
        let driver = Driver {
            shared: shared.clone(),
            journal,
            journal_unsynced: false,
            last_sync: Instant::now(),
            in_flight: Default::default(),
        };
        let journal_task = glommio::spawn_local(driver.run()).detach();
        let ledger_task = glommio::spawn_local(run_ledger(shared.clone())).detach();
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
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // No ledger write is in flight while the permit is held.
        let _io = sh
            .ledger_io
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let res = sh.ledger.borrow_mut().delete_partition(id);
        res
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
        batch: &[u8],
        record_count: u32,
        timestamp_ms: i64,
    ) -> Result<Appended> {
        self.reserve(partition, batch, record_count, timestamp_ms)
            .await?
            .durable()
            .await
    }

    /// The first half of [`ShardLog::append`]: completes once the batch has its
    /// offsets and is copied into the pending journal write (after waiting for room
    /// when the log is full), so batches reserved one after another get offsets in
    /// that order. [`Reserved::durable`] then waits for the write. A caller may
    /// reserve the next batch before the last is durable: that is how one connection
    /// keeps several requests in one group commit.
    pub async fn reserve(
        &self,
        partition: u32,
        batch: &[u8],
        record_count: u32,
        timestamp_ms: i64,
    ) -> Result<Reserved> {
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
        let need = HEADER_LEN + batch.len() + HEADER_LEN;
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
                    .is_none_or(|p| p.len + need <= sh.cfg.journal_flush_bytes_max);
                if fits && !ledger_full {
                    break st.push(partition, batch, record_count, timestamp_ms, &sh.cfg);
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
    pub fn fatal_error(&self) -> Option<String> {
        self.shared
            .state
            .borrow()
            .fatal
            .as_ref()
            .map(|e| e.to_string())
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
        make_ledger_durable(&sh).await
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

impl State {
    /// Assigns offsets and copies one frame into the pending journal write.
    fn push(
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
    fn roll_back(&mut self) -> Option<Pending> {
        for o in self.offsets.values_mut() {
            o.next = o.durable;
        }
        self.next_seq = self.durable_seq + 1;
        self.pending.take()
    }
}

/// Replays the journal chain into the ledger and returns the next sequence number.
async fn replay(
    journal: &mut Journal,
    ledger: &RefCell<Ledger>,
    report: &mut RecoveryReport,
) -> Result<u64> {
    let chain = journal.chain();
    let mut next_seq = chain.first().map_or(1, |&(_, first)| first.max(1));
    let mut end: Option<RecoveredEnd> = None;
    let mut broken: HashMap<u32, ()> = HashMap::new();
    // The last media damage met (file, byte offset): a partition's next frame
    // beyond its ledger's end then means the frames between were lost in it.
    let mut last_damage: Option<(PathBuf, u64)> = None;
    for (i, &(slot, first_seq)) in chain.iter().enumerate() {
        let path = journal.slot_path(slot).to_path_buf();
        if i > 0 && first_seq != next_seq {
            report.dropped.push(Dropped {
                path,
                offset: 0,
                reason: format!(
                    "segment starts at seq {first_seq} but the chain continues at {next_seq}: segment not replayed"
                ),
            });
            break;
        }
        let bytes = journal.read_segment(slot).await?;
        let scan = Journal::scan(&path, &bytes, next_seq, journal.is_reused(slot));
        report.journal_segments_scanned += 1;
        report.frames_scanned += scan.frames.len() as u64;
        if !scan.damaged.is_empty() {
            // Evidence first: nothing writes to the segment before its copy exists.
            crate::journal::copy_aside(&path, first_seq, &bytes)?;
        }
        {
            let mut l = ledger.borrow_mut();
            let mut damage = scan.damaged.iter().peekable();
            for (i, &(pos, header)) in scan.frames.iter().enumerate() {
                while let Some(d) = damage.next_if(|d| d.frames_before == i) {
                    last_damage = Some((d.path.clone(), d.offset));
                }
                let Some(p) = l.partition(header.partition) else {
                    if l.is_deleted(header.partition) {
                        continue;
                    }
                    report.dropped.push(Dropped {
                        path: path.clone(),
                        offset: pos as u64,
                        reason: format!(
                            "frame seq {} names partition id {} which has no ledger directory",
                            header.seq, header.partition
                        ),
                    });
                    continue;
                };
                let have = p.next_offset();
                if broken.contains_key(&header.partition) || header.end_offset() <= have {
                    continue;
                }
                if let Some(d) = last_damage.as_ref().filter(|_| header.base_offset > have) {
                    // The frames between were in the damaged bytes.
                    fill_lost(
                        &mut l,
                        header.partition,
                        (have, header.base_offset),
                        header.seq,
                        d.clone(),
                        report,
                    );
                }
                let p = l.partition(header.partition).expect("checked above");
                let have = p.next_offset();
                if header.base_offset != have {
                    report.dropped.push(Dropped {
                        path: path.clone(),
                        offset: pos as u64,
                        reason: format!(
                            "partition {}: ledger ends at offset {have} but the journal continues at {}; later frames of this partition not replayed",
                            p.name, header.base_offset
                        ),
                    });
                    broken.insert(header.partition, ());
                    continue;
                }
                l.push_frame(&header, &bytes[pos..pos + header.frame_len()]);
                report.frames_restored += 1;
            }
            if let Some(d) = damage.last() {
                last_damage = Some((d.path.clone(), d.offset));
            }
        }
        report.damaged.extend(scan.damaged.iter().cloned());
        journal.set_last_seq(slot, scan.next_seq - 1);
        next_seq = scan.next_seq;
        end = Some(RecoveredEnd {
            slot,
            end_pos: scan.end_pos,
            sealed: scan.sealed,
            damaged: scan.damage.is_some(),
        });
        if let Some(d) = scan.damage {
            report.dropped.push(d);
        }
        // Keep memory to about one segment: write what this one restored. On a full
        // device it stays in memory (bounded by the journal ring) and in the journal.
        let ids = ledger.borrow().due(true);
        for id in ids {
            let res = match Ledger::prepare_write(ledger, id).await {
                Ok(Some(job)) => Ledger::run_write(ledger, job).await.map(|_| ()),
                other => other.map(|_| ()),
            };
            match res {
                Err(e) if !e.is_no_space() => return Err(e),
                _ => {}
            }
        }
        if !scan.sealed || end.is_some_and(|e| e.damaged) {
            for &(later, _) in &chain[i + 1..] {
                report.dropped.push(Dropped {
                    path: journal.slot_path(later).to_path_buf(),
                    offset: 0,
                    reason: "segment after the end of the journal chain: not replayed".into(),
                });
            }
            break;
        }
    }
    // A damaged frame that no later frame of its partition followed: its own header,
    // where it agrees with the bytes around it, says which offsets it held.
    let damaged = report.damaged.clone();
    for d in &damaged {
        fill_guessed(&mut ledger.borrow_mut(), d, report);
    }
    journal.finish_recovery(end).await?;
    Ok(next_seq)
}

/// Keeps offsets `from..to` of `partition` dense with an entry of no payload, and
/// reports them lost.
fn fill_lost(
    l: &mut Ledger,
    partition: u32,
    (from, to): (u64, u64),
    seq: u64,
    (path, offset): (PathBuf, u64),
    report: &mut RecoveryReport,
) {
    let mut at = from;
    while at < to {
        // A frame covers at most u32::MAX offsets; the bytes on disk decide `to`.
        let count = u32::try_from(to - at).unwrap_or(u32::MAX);
        let mut bytes = vec![0u8; HEADER_LEN];
        let header = Header::data(partition, seq, at, count, 0);
        frame::encode(&mut bytes, &header, &[]);
        l.push_frame(&header, &bytes);
        at += u64::from(count);
    }
    let name = l
        .partition(partition)
        .map_or(String::new(), |p| p.name.clone());
    report.lost.push(Lost {
        partition: name,
        from,
        to,
        path,
        offset,
    });
}

/// When a damaged frame's header reads as the last frame of its partition (its
/// sequence number, its offset and its length agree with what is around it), its
/// offsets are kept as lost, unless the ledger holds them already. Called after
/// every frame is replayed: a later frame of the partition fills the gap exactly
/// and wins over a header that may itself be damaged.
fn fill_guessed(l: &mut Ledger, d: &Damaged, report: &mut RecoveryReport) {
    let Some(g) = d.guess else { return };
    let Some(p) = l.partition(g.partition) else {
        return;
    };
    let end = frame::frame_start(d.offset as usize + g.frame_len());
    let fits = d.resumed_at as usize == end || d.resumed_at as usize == frame::align_up(end);
    if !fits || g.seq != d.first_seq || g.record_count == 0 || g.base_offset != p.next_offset() {
        return;
    }
    fill_lost(
        l,
        g.partition,
        (g.base_offset, g.end_offset()),
        g.seq,
        (d.path.clone(), d.offset),
        report,
    );
}

/// Writes ledger chunks. With `all`, every frame durable in the journal when called
/// (frames arriving meanwhile are not chased, or a steady stream would keep this
/// going for ever); without, one pass over the full chunks, so that the ledger task
/// soon looks again at whether the journal needs the ledger durable. A full device
/// is remembered (appends fail once the ledger's memory is spent); the caller
/// decides whether other errors are fatal. Callers hold `ledger_io`.
async fn write_ledger(sh: &Shared, all: bool) -> Result<()> {
    let target = sh.state.borrow().durable_seq;
    // Each pass writes the oldest chunk of every partition that has one due (chunks
    // of one partition are written in order).
    loop {
        let ids = sh.ledger.borrow().due(all);
        let written = all && sh.ledger.borrow().written_through_seq(target) >= target;
        if ids.is_empty() || written {
            return Ok(());
        }
        write_ledger_pass(sh, ids).await?;
        sh.room.notify();
        if !all {
            return Ok(());
        }
    }
}

/// How often a ledger write that keeps failing (a full device) is logged again.
const LEDGER_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

async fn write_ledger_pass(sh: &Shared, ids: Vec<u32>) -> Result<()> {
    for id in ids {
        let res = match Ledger::prepare_write(&sh.ledger, id).await {
            Ok(Some(job)) => {
                let len = job.len();
                Ledger::run_write(&sh.ledger, job).await.map(|_| len)
            }
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        };
        let mut st = sh.state.borrow_mut();
        match res {
            Ok(len) => {
                st.ledger_error = None;
                st.stats.ledger_writes += 1;
                st.stats.ledger_write_bytes += len as u64;
            }
            Err(e) => {
                let e = Arc::new(e);
                if st
                    .ledger_error_logged
                    .is_none_or(|t| t.elapsed() >= LEDGER_ERROR_LOG_EVERY)
                {
                    tracing::error!("ledger write failed (retried until it succeeds): {e}");
                    st.ledger_error_logged = Some(Instant::now());
                }
                st.ledger_error = Some(e.clone());
                return Err(LogError::Shared(e));
            }
        }
    }
    Ok(())
}

/// Writes every ledger chunk, syncs, applies retention, and records which journal
/// frames are now safe in the ledger (their segments may be reused).
async fn make_ledger_durable(sh: &Shared) -> Result<()> {
    let _io = sh
        .ledger_io
        .acquire_permit(1)
        .await
        .map_err(|_| LogError::Closed)?;
    write_ledger(sh, true).await?;
    let durable_seq = sh.state.borrow().durable_seq;
    let through = sh.ledger.borrow().written_through_seq(durable_seq);
    Ledger::sync(&sh.ledger).await?;
    let removed = sh.ledger.borrow_mut().apply_retention(now_ms());
    let mut st = sh.state.borrow_mut();
    st.recyclable_seq = st.recyclable_seq.max(through);
    st.stats.ledger_syncs += 1;
    st.stats.segments_deleted += removed as u64;
    Ok(())
}

/// The ledger's write-behind task: writes full chunks as they fill, and everything
/// (synced, with retention) every `ledger_flush_interval_ms`. Runs beside the journal
/// task so the two devices work at once.
async fn run_ledger(sh: Rc<Shared>) {
    let interval = Duration::from_millis(sh.cfg.ledger_flush_interval_ms);
    let mut last_sync = Instant::now();
    loop {
        let seen = sh.ledger_work.epoch();
        if sh.state.borrow().closing || sh.state.borrow().fatal.is_some() {
            break;
        }
        // Taken either way: a pass that is due anyway also serves the roll's request.
        let wanted = sh.durable_wanted.take();
        let res = if wanted || last_sync.elapsed() >= interval {
            last_sync = Instant::now();
            make_ledger_durable(&sh).await
        } else {
            match sh.ledger_io.acquire_permit(1).await {
                Ok(_io) => write_ledger(&sh, false).await,
                Err(_) => break,
            }
        };
        sh.room.notify();
        // After a failure (a full device) wait before trying again.
        let more_due = res.is_ok() && !sh.ledger.borrow().due(false).is_empty();
        match res {
            Err(e) if !e.is_no_space() => {
                fail_fatal(&sh, e, []);
                break;
            }
            _ => {}
        }
        if !more_due && sh.ledger_work.epoch() == seen {
            let wait = interval
                .saturating_sub(last_sync.elapsed())
                .max(Duration::from_millis(1));
            futures_lite::future::or(sh.ledger_work.wait(seen), glommio::timer::sleep(wait)).await;
        }
    }
}

/// Stops the log: every append not yet durable fails with `e`, and so does every
/// later one. Storage faults (EIO, a failed sync) end here: the process must exit.
fn fail_fatal(sh: &Shared, e: LogError, current: impl IntoIterator<Item = Rc<Outcome>>) {
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
}

/// A journal write on its way to the device.
struct InFlight {
    started: Instant,
    write: glommio::Task<Result<()>>,
    buf: Rc<DmaBuffer>,
    frames: Vec<(usize, Header)>,
    last_seq: u64,
    outcome: Rc<Outcome>,
}

/// The task that performs every journal write of one core. Writes complete, and their
/// appends are acknowledged, strictly in order, so what is acknowledged is always a
/// prefix of the journal (recovery keeps exactly a prefix).
struct Driver {
    shared: Rc<Shared>,
    journal: Journal,
    journal_unsynced: bool,
    /// When the journal was last synced (`interval` syncs at least every
    /// `sync_interval_ms`, under load too).
    last_sync: Instant,
    in_flight: std::collections::VecDeque<InFlight>,
}

impl Driver {
    async fn run(mut self) {
        let sh = self.shared.clone();
        let sync_interval = Duration::from_millis(sh.cfg.sync_interval_ms);
        let interval = sh.cfg.durability == Durability::Interval;
        loop {
            let seen = sh.work.epoch();
            if self.in_flight.len() < JOURNAL_WRITES_IN_FLIGHT_MAX {
                let pending = sh.state.borrow_mut().pending.take();
                if let Some(p) = pending {
                    let outcome = p.outcome.clone();
                    if let Err(e) = self.start(p).await {
                        self.fail_all(e, Some(outcome));
                        break;
                    }
                    continue;
                }
            }
            if !self.in_flight.is_empty() {
                let room = self.in_flight.len() < JOURNAL_WRITES_IN_FLIGHT_MAX;
                let front = self.in_flight.front_mut().expect("a write in flight");
                let done = if room {
                    // Wait for the oldest write, or for appends to start the next one.
                    futures_lite::future::or(async { Some((&mut front.write).await) }, async {
                        sh.work.wait(seen).await;
                        None
                    })
                    .await
                } else {
                    Some((&mut front.write).await)
                };
                if let Some(res) = done {
                    if let Err(e) = self.complete(res).await {
                        self.fail_all(e, None);
                        break;
                    }
                }
                continue;
            }
            // Idle with unsynced writes: `interval` syncs when due, every policy at
            // a clean close (`never` syncs nowhere else).
            let closing = sh.state.borrow().closing;
            let interval_due = interval && self.last_sync.elapsed() >= sync_interval;
            if self.journal_unsynced && (closing || interval_due) {
                if let Err(e) = self.sync_journal().await {
                    self.fail_all(e, None);
                    break;
                }
            }
            if closing {
                if let Err(e) = self.journal.seal_for_stop().await {
                    self.fail_all(e, None);
                }
                break;
            }
            if sh.work.epoch() == seen {
                if self.journal_unsynced && interval {
                    let wait = sync_interval
                        .saturating_sub(self.last_sync.elapsed())
                        .max(Duration::from_millis(1));
                    futures_lite::future::or(sh.work.wait(seen), glommio::timer::sleep(wait)).await;
                } else {
                    sh.work.wait(seen).await;
                }
            }
        }
    }

    /// Pads one pending write and starts it (rolling the segment first when it does
    /// not fit). Returns an error only when it is fatal.
    async fn start(&mut self, mut p: Pending) -> Result<()> {
        let len = frame::pad_to_block(p.buf.as_bytes_mut(), p.len);
        p.buf.trim_to_size(len);
        if !self.journal.fits(len) {
            // A segment is sealed only behind every write into it.
            while !self.in_flight.is_empty() {
                let res = (&mut self.in_flight.front_mut().expect("in flight").write).await;
                self.complete(res).await?;
            }
            if let Some(e) = self.roll(p.first_seq).await? {
                self.fail_pending(p, e);
                return Ok(());
            }
        }
        let buf = Rc::new(p.buf);
        let write = glommio::spawn_local(self.journal.start_write(buf.clone(), p.last_seq));
        self.in_flight.push_back(InFlight {
            started: Instant::now(),
            write,
            buf,
            frames: p.frames,
            last_seq: p.last_seq,
            outcome: p.outcome,
        });
        Ok(())
    }

    /// Finishes the oldest write: syncs it per policy, hands its frames to the ledger
    /// and acknowledges its appends. Returns an error only when it is fatal.
    async fn complete(&mut self, res: Result<()>) -> Result<()> {
        res?;
        let sh = self.shared.clone();
        let always = sh.cfg.durability == Durability::Always;
        if always && !self.journal.writes_are_durable() {
            self.journal.sync().await?;
        }
        // Under a steady load the driver is never idle: `interval` syncs here once due.
        let interval_due = sh.cfg.durability == Durability::Interval
            && self.last_sync.elapsed() >= Duration::from_millis(sh.cfg.sync_interval_ms);
        if interval_due {
            self.sync_journal().await?;
        }
        let w = self.in_flight.pop_front().expect("a write in flight");
        let mut st = sh.state.borrow_mut();
        st.stats.journal_writes += 1;
        st.stats.journal_write_bytes += w.buf.len() as u64;
        if always {
            st.stats.journal_syncs += 1;
        } else if !interval_due {
            self.journal_unsynced = true;
        }
        // Kept only while someone drains them (the metrics task); beyond the bound
        // the newest are left out.
        if st.write_samples.len() < WRITE_SAMPLES_MAX {
            let sample = (w.started.elapsed().as_nanos() as u64, w.frames.len() as u32);
            st.write_samples.push(sample);
        }
        let ledger_due = {
            let mut ledger = sh.ledger.borrow_mut();
            // A large write of one partition (a core that owns one busy partition,
            // as with the default of one partition per core) becomes a ledger
            // chunk as it is; others
            // are copied frame by frame into the partitions' chunks. "Large": at
            // least half its buffer, which stays allocated until the ledger has
            // written it, so adopted writes hold at most twice their bytes.
            let one_partition = w
                .frames
                .iter()
                .all(|(_, h)| h.partition == w.frames[0].1.partition);
            let large = 2 * w.buf.len() >= sh.cfg.journal_flush_bytes_max;
            let adopt = one_partition && large && ledger.adoptable(w.buf.len());
            if adopt {
                ledger.adopt_write(w.buf.clone(), &w.frames);
                st.stats.ledger_adopted_writes += 1;
            } else {
                let bytes = w.buf.as_bytes();
                for &(pos, header) in &w.frames {
                    ledger.push_frame(&header, &bytes[pos..pos + header.frame_len()]);
                }
            }
            for &(_, header) in &w.frames {
                let o = st
                    .offsets
                    .get_mut(&header.partition)
                    .expect("known partition");
                o.durable = header.end_offset();
            }
            // An adopted write is a sealed chunk: due at once.
            adopt || ledger.pending_bytes() >= sh.cfg.ledger_flush_bytes
        };
        st.durable_seq = w.last_seq;
        drop(st);
        w.outcome.complete(Ok(()));
        sh.room.notify();
        sh.appended.notify();
        if ledger_due {
            sh.ledger_work.notify();
        }
        Ok(())
    }

    /// Syncs the active journal segment (`interval`, and at close).
    async fn sync_journal(&mut self) -> Result<()> {
        self.journal.sync().await?;
        self.journal_unsynced = false;
        self.last_sync = Instant::now();
        self.shared.state.borrow_mut().stats.journal_syncs += 1;
        Ok(())
    }

    /// Opens the next journal segment, making the ledger durable first when no
    /// segment is free. `Ok(Some(e))`: no segment, because the ledger cannot be
    /// written for now (a full device); the appends waiting must fail with `e`.
    async fn roll(&mut self, first_seq: u64) -> Result<Option<LogError>> {
        let recyclable = self.shared.state.borrow().recyclable_seq;
        if self.journal.roll(first_seq, recyclable).await? {
            self.shared.durable_wanted.set(true);
            self.shared.ledger_work.notify();
            return Ok(None);
        }
        match make_ledger_durable(&self.shared).await {
            Ok(()) => {}
            Err(e) if e.is_no_space() => return Ok(Some(e)),
            Err(e) => return Err(e),
        }
        let recyclable = self.shared.state.borrow().recyclable_seq;
        if self.journal.roll(first_seq, recyclable).await? {
            return Ok(None);
        }
        Err(LogError::Config(
            "no journal segment is free although the ledger is durable".into(),
        ))
    }

    /// Fails `p` and every append after it (not fatal: the log goes on). Only called
    /// with no write in flight.
    fn fail_pending(&mut self, p: Pending, e: LogError) {
        let e = Arc::new(e);
        tracing::warn!("journal write refused: {e}");
        let later = self.shared.state.borrow_mut().roll_back();
        p.outcome.complete(Err(e.clone()));
        if let Some(l) = later {
            l.outcome.complete(Err(e));
        }
        self.shared.room.notify();
    }

    /// A fatal failure: fails `current`, every write in flight and what is pending.
    fn fail_all(&mut self, e: LogError, current: Option<Rc<Outcome>>) {
        let outcomes = current
            .into_iter()
            .chain(self.in_flight.drain(..).map(|w| w.outcome));
        fail_fatal(&self.shared, e, outcomes);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const _: () = assert!(BLOCK >= 2 * HEADER_LEN);
