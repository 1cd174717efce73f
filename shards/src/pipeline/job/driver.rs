//! The loop one core runs for one job: a pass of named steps (stop, start a
//! checkpoint, read the sources, publish the watermark, write side outputs, fire,
//! write this core's checkpoint part, complete checkpoints), then, when a pass found
//! nothing to do, a wait for whatever could give it something: an append, a mailbox
//! message, a sink delivery, the stop, or the next deadline it knows of.
//!
//! Owns the job's sources and their positions on this core; never blocks the core
//! and never drops a record (what it cannot use goes to a side output).

use super::align::Alignment;
use super::context::{JobContext, JobStats, Stopping, SHUTDOWN_CHECKPOINT_WAIT};
use super::mailbox::{self, CoreMail, Mail, Outboxes};
use super::record::RecordCx;
use super::side_output::SideOutputs;
use super::state::{GroupLines, Remote, State, StateCell};
use super::watermark::{combine, CoreWatermark, Published};
use crate::pipeline::checkpoint::{self, ArchivedCoreSnapshot};
use crate::pipeline::records::{bump, for_each_record};
use crate::pipeline::spec::Job;
use crate::pipeline::window::{Fired, Layout};
use crate::pipeline::PipelineError;
use crate::sink::rows::JsonRows;
use crate::sink::{Outgoing, QUEUE_FIRES};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tidewater_io::wait::Notify;
use tidewater_io::LogError;

/// Bytes read from a partition at a time.
const READ_BYTES: usize = 1 << 20;
/// Longest the loop waits without a wake-up: a safety net, not a poll (every
/// change the loop acts on wakes it, and every deadline it knows of ends a wait).
const WAIT_MAX: Duration = Duration::from_secs(1);

/// One source partition on this core.
struct Source {
    index: u32,
    id: u32,
    next: u64,
    max_ts: i64,
    active_at: Instant,
}

/// What a pass of reading found.
enum Read {
    Nothing,
    Some,
    LogClosed,
}

pub(super) struct JobCore {
    job: Rc<Job>,
    layout: Rc<Layout>,
    ctx: JobContext,
    stats: Rc<JobStats>,
    cell: Rc<StateCell>,
    outboxes: Outboxes,
    sources: Vec<Source>,
    side: SideOutputs,
    wm: CoreWatermark,
    published: Published,
    /// `None`: checkpoints off.
    align: Option<Alignment>,
    stopping: Rc<Stopping>,
    idle: Duration,
    /// `slots` of the projected values travel with a routed record.
    slots: usize,
    scratch: Vec<u8>,
    /// Each sink's delivery epoch before the pass (reused).
    sinks_seen: Vec<u64>,
}

impl JobCore {
    /// Restores the checkpoint resumed from, starts the mailbox receivers and
    /// connects the outboxes.
    pub async fn start(
        job: Rc<Job>,
        layout: Rc<Layout>,
        ctx: JobContext,
        mail: CoreMail,
        stats: Rc<JobStats>,
    ) -> Result<JobCore, PipelineError> {
        let restored = ctx.checkpoints.as_ref().and_then(|c| c.restore.clone());
        let snap = restored.as_ref().map(|(_, part)| part.view());
        let first_id = ctx.checkpoints.as_ref().map_or(0, |c| c.highest);
        let mut state = State::new(&job, &layout, ctx.shards, first_id);
        if let (Some((id, _)), Some(snap)) = (&restored, snap) {
            state
                .restore(&job, snap, ctx.source_partitions)
                .map_err(|reason| PipelineError::Restore { id: *id, reason })?;
            tracing::info!(job = %job.name, shard = ctx.shard, checkpoint = id, "resuming from checkpoint");
        }
        let cell = Rc::new(StateCell {
            state: RefCell::new(state),
            changed: Notify::default(),
            resumed_moved: Notify::default(),
        });
        // A connect completes when the other core connects its end, so the
        // receivers connect in their own tasks, started first: two cores connecting
        // to each other never wait on one another.
        for (from, rx, counts) in mail.inbox {
            cell.state.borrow_mut().remote[from as usize] = Some(Remote {
                wm: i64::MIN,
                idle: false,
            });
            let task = mailbox::receive(job.clone(), from, rx, counts, cell.clone(), stats.clone());
            glommio::spawn_local(task).detach();
        }
        let outboxes = Outboxes::connect(mail.out).await;
        let sources = open_sources(&ctx, snap);
        let side = SideOutputs::open(&job, &ctx.log, (&ctx.late_ids, &ctx.dlq_ids), snap).await?;
        let mut align = ctx.checkpoints.as_ref().map(Alignment::new);
        if let Some(a) = &mut align {
            a.keep(&ctx.log, positions(&sources));
        }
        Ok(JobCore {
            slots: slots(&job),
            idle: Duration::from_millis(job.idle_ms.max(0) as u64),
            wm: CoreWatermark::new(snap.map_or(i64::MIN, |s| s.core_wm.to_native())),
            published: Published::new(),
            stopping: Rc::new(Stopping::new(ctx.stop.clone())),
            sinks_seen: Vec::with_capacity(ctx.sinks.len()),
            scratch: Vec::new(),
            job,
            layout,
            ctx,
            stats,
            cell,
            outboxes,
            sources,
            side,
            align,
        })
    }

    /// Runs passes until the job ends: `Ok` at a stop (or when the log closes),
    /// `Err` with the reason when it cannot go on.
    pub async fn run(mut self) -> Result<(), PipelineError> {
        loop {
            if let Some(end) = self.stop_step() {
                return end;
            }
            if let Some(e) = self.cell.state.borrow().full.clone() {
                return Err(PipelineError::StateFull(e));
            }
            let appends = self.ctx.log.append_epoch();
            let mail = self.cell.changed.epoch();
            self.sinks_seen.clear();
            self.sinks_seen
                .extend(self.ctx.sinks.iter().map(|s| s.stats.delivered.epoch()));
            // Back-pressure: while a sink cannot take the windows that are due, read
            // nothing more (the log keeps it).
            let sinks_full = self.ctx.sinks.iter().any(|s| s.tx.is_full());
            let blocked = sinks_full && self.cell.state.borrow().windows.due(self.wm.get());
            self.start_checkpoint().await?;
            let read = if blocked || self.checkpointing() {
                Read::Nothing
            } else {
                self.read_sources().await?
            };
            if let Read::LogClosed = read {
                return Ok(());
            }
            // Records for other cores leave before the watermark that covers them.
            self.outboxes.flush(&self.stats, &self.stopping).await?;
            self.publish_watermark().await?;
            self.write_side_outputs().await?;
            self.fire().await;
            self.write_part().await?;
            self.complete().await?;
            if matches!(read, Read::Nothing) || self.checkpointing() {
                let waited = Instant::now();
                self.wait(appends, mail).await;
                if blocked {
                    bump(&self.stats.blocked_ns, waited.elapsed().as_nanos() as u64);
                }
            }
        }
    }

    fn checkpointing(&self) -> bool {
        self.align.as_ref().is_some_and(|a| a.current.is_some())
    }

    /// At a stop: the job ends once the checkpoint taken at shutdown is complete,
    /// at once without checkpoints, or when the shutdown wait is over.
    fn stop_step(&self) -> Option<Result<(), PipelineError>> {
        if !self.stopping.is_set() {
            return None;
        }
        let Some(c) = &self.ctx.checkpoints else {
            return Some(Ok(()));
        };
        if c.finished.get() != 0 {
            return Some(Ok(()));
        }
        if !self.stopping.halted() {
            return None;
        }
        if self.ctx.shard == 0 {
            c.finished.raise(u64::MAX);
        }
        tracing::warn!(job = %self.job.name, shard = self.ctx.shard,
            "no checkpoint at shutdown: it did not complete within {SHUTDOWN_CHECKPOINT_WAIT:?} \
             (a sink that cannot deliver?); the next start replays from the last complete one");
        Some(Ok(()))
    }

    /// Core 0 on its timer (or a savepoint, or the stop), the others on core 0's
    /// barrier: sends the barrier after every record routed before it.
    async fn start_checkpoint(&mut self) -> Result<(), PipelineError> {
        let (Some(a), Some(c)) = (&mut self.align, &self.ctx.checkpoints) else {
            return Ok(());
        };
        let barrier_max = {
            let st = self.cell.state.borrow();
            st.barriers.iter().copied().max().unwrap_or(0)
        };
        let Some(id) = a.due(self.ctx.shard, c, self.stopping.is_set(), barrier_max) else {
            return Ok(());
        };
        self.outboxes.flush(&self.stats, &self.stopping).await?;
        self.outboxes
            .broadcast(|| Mail::Barrier(id), &self.stats, &self.stopping)
            .await?;
        a.started(id);
        Ok(())
    }

    /// Reads what each source partition has past its position, in offset order.
    async fn read_sources(&mut self) -> Result<Read, PipelineError> {
        let JobCore {
            job,
            ctx,
            stats,
            cell,
            outboxes,
            sources,
            side,
            slots,
            scratch,
            ..
        } = self;
        let mut read = Read::Nothing;
        for src in sources.iter_mut() {
            let end = ctx
                .log
                .high_watermark(src.id)
                .map_err(PipelineError::log(format!("partition {}", src.index)))?;
            if src.next >= end {
                continue;
            }
            let entries = match ctx.log.read(src.id, src.next, READ_BYTES).await {
                Ok(v) => v,
                Err(LogError::OffsetOutOfRange { .. }) => {
                    let start = ctx
                        .log
                        .log_start_offset(src.id)
                        .map_err(PipelineError::log(format!("partition {}", src.index)))?;
                    tracing::warn!(job = %job.name, partition = src.index, from = src.next, to = start,
                        "records before offset {start} were removed by retention before the job read them");
                    src.next = start.max(src.next);
                    continue;
                }
                Err(LogError::Closed) => return Ok(Read::LogClosed),
                Err(e) => {
                    let what = format!("cannot read partition {}", src.index);
                    return Err(PipelineError::Log { what, source: e });
                }
            };
            let mut state = cell.state.borrow_mut();
            for e in &entries {
                let mut bad = Vec::new();
                let mut cx = RecordCx {
                    job,
                    ctx,
                    stats,
                    state: &mut state,
                    dead: &mut side.dead,
                    outboxes,
                    src_index: src.index,
                    max_ts: &mut src.max_ts,
                    slots: *slots,
                };
                for_each_record(
                    &e.payload,
                    e.base_offset,
                    e.record_count,
                    scratch,
                    |r| cx.on_record(r),
                    &mut bad,
                );
                for b in bad {
                    cx.dead_batch(b);
                }
                src.next = e.end_offset();
            }
            src.active_at = Instant::now();
            read = Read::Some;
        }
        Ok(read)
    }

    /// This core's source watermark to the other cores (when it changed, or as a
    /// heartbeat), then the core's own watermark from its sources and theirs.
    async fn publish_watermark(&mut self) -> Result<(), PipelineError> {
        let now = Instant::now();
        let mut lag = Vec::with_capacity(self.sources.len());
        let mut own = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            let end = self.ctx.log.high_watermark(s.id).unwrap_or(s.next);
            lag.push((s.index, end.saturating_sub(s.next)));
            // Data waiting is activity, however old the last read.
            let is_idle = s.next >= end && now.duration_since(s.active_at) >= self.idle;
            own.push((
                s.max_ts.saturating_sub(self.job.out_of_orderness_ms),
                is_idle,
            ));
        }
        *self.stats.lag.borrow_mut() = lag;
        let source_wm = combine(own.iter().copied());
        let all_idle = own.iter().all(|&(_, i)| i);
        // Nothing goes out while this core's part of a checkpoint is pending: the
        // other cores hold what arrives after a barrier, so a stream of heartbeats
        // would fill their mailboxes and block two cores on each other.
        if !self.checkpointing() && self.published.due(source_wm, all_idle, now) {
            let m = || Mail::Watermark {
                wm: source_wm,
                idle: all_idle,
            };
            self.outboxes
                .broadcast(m, &self.stats, &self.stopping)
                .await?;
            self.published.sent(source_wm, all_idle, now);
        }
        let wm = {
            let st = self.cell.state.borrow();
            let remote = st.remote.iter().flatten().map(|r| (r.wm, r.idle));
            combine(own.iter().copied().chain(remote))
        };
        if self.wm.advance(wm, now) {
            self.stats.watermark.set(self.wm.get());
        }
        Ok(())
    }

    /// Late events (found here or by the receivers) and dead letters to their side
    /// outputs.
    async fn write_side_outputs(&mut self) -> Result<(), PipelineError> {
        let late = std::mem::take(&mut self.cell.state.borrow_mut().late);
        self.side
            .write(&self.ctx.log, late, self.ctx.source_partitions)
            .await
    }

    /// Fires what is due, as far as every sink has room: those windows are taken
    /// out of the state first (late events are judged against them from here on),
    /// then each one's rows are encoded once for the JSON sinks, yielding at the
    /// executor's preemption points, and the window is queued to every sink. It
    /// returns with every window it took queued, before the pass can write a
    /// checkpoint part.
    async fn fire(&mut self) {
        let sinks = &self.ctx.sinks;
        let room = sinks
            .iter()
            .map(|s| QUEUE_FIRES.saturating_sub(s.tx.len()))
            .min()
            .unwrap_or(usize::MAX);
        let mut due = Vec::new();
        {
            let mut st = self.cell.state.borrow_mut();
            // With no room, only a call that fires nothing (none due) is made: it
            // still moves the line late events are judged by.
            if room > 0 || !st.windows.due(self.wm.get()) {
                st.windows
                    .fire(self.wm.get(), self.wm.moved_at(), |f: Fired| {
                        due.push(f);
                        due.len() < room
                    });
            }
            if !st.lines.by_group.is_empty() && st.windows.fired_upto() >= st.lines.max {
                st.lines = GroupLines::default();
            }
            self.stats.state_entries.set(st.windows.entries() as u64);
            self.stats.state_bytes.set(st.windows.bytes() as u64);
        }
        let json = sinks.iter().any(|s| s.json);
        for fired in due {
            let json = match json {
                true => Some(JsonRows::encode(&self.job, &self.layout, &fired).await),
                false => None,
            };
            let out = Rc::new(Outgoing { fired, json });
            for s in sinks {
                // Room was counted before the windows were taken, and only this
                // loop sends.
                if s.tx.try_send(out.clone()).is_err() {
                    tracing::error!(job = %self.job.name, sink = %s.name, "sink queue refused a window with room");
                }
                s.stats.queued.set(s.stats.queued.get() + 1);
            }
            bump(&self.stats.windows_fired, 1);
        }
    }

    /// This core's part of the checkpoint in progress: once every other core's
    /// barrier is in and the sinks and side outputs hold nothing from before it.
    async fn write_part(&mut self) -> Result<(), PipelineError> {
        let (Some(a), Some(c)) = (&mut self.align, &self.ctx.checkpoints) else {
            return Ok(());
        };
        let Some(id) = a.current.as_ref().map(|cur| cur.id) else {
            return Ok(());
        };
        let (aligned, flushed) = {
            let st = self.cell.state.borrow();
            (
                a.aligned(self.ctx.shard, &st.barriers),
                st.late.is_empty() && self.side.dead.is_empty(),
            )
        };
        let drained = self.ctx.sinks.iter().all(|s| s.stats.queued.get() == 0);
        if !(aligned && drained && flushed) {
            return Ok(());
        }
        let snap = snapshot(
            &self.job,
            &self.layout,
            &self.ctx,
            (&self.cell.state.borrow(), &self.side),
            (id, &self.sources, self.wm.get()),
        );
        let bytes = checkpoint::write_part(&c.root, snap).await?;
        a.part_written(&self.ctx.log, &self.stats, positions(&self.sources), bytes);
        if self.ctx.shard == 0 {
            let mut st = self.cell.state.borrow_mut();
            let e = st.done.entry(id).or_default();
            e.0 += 1;
            e.1 += bytes;
        } else {
            self.outboxes
                .send_to(0, Mail::Done { id, bytes }, &self.stats, &self.stopping)
                .await?;
        }
        self.cell.state.borrow_mut().resumed = id;
        self.cell.resumed_moved.notify();
        Ok(())
    }

    /// Core 0: a checkpoint every core has written is complete.
    async fn complete(&mut self) -> Result<(), PipelineError> {
        if self.ctx.shard != 0 {
            return Ok(());
        }
        let (Some(a), Some(c)) = (&mut self.align, &self.ctx.checkpoints) else {
            return Ok(());
        };
        let ids = self.cell.state.borrow_mut().take_complete(self.ctx.shards);
        a.complete(&self.job.name, c, self.ctx.shards, ids, &self.stats)
            .await
    }

    /// Waits for anything that could give the next pass work: an append after
    /// `appends`, a mailbox message after `mail`, a sink delivery, the stop (or,
    /// stopping, the end of the shutdown checkpoint), a savepoint asked for, or the
    /// next deadline.
    async fn wait(&self, appends: u64, mail: u64) {
        let mut wakes: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = vec![
            Box::pin(self.ctx.log.wait_for_append(appends)),
            Box::pin(self.cell.changed.wait(mail)),
        ];
        for (s, &seen) in self.ctx.sinks.iter().zip(&self.sinks_seen) {
            wakes.push(Box::pin(s.stats.delivered.wait(seen)));
        }
        if let Some(c) = &self.ctx.checkpoints {
            if self.stopping.is_set() {
                wakes.push(Box::pin(c.finished.reached(1)));
            } else if let (0, Some(a)) = (self.ctx.shard, &self.align) {
                // Only core 0 takes savepoints (the others follow its barrier).
                wakes.push(Box::pin(c.requested.reached(a.savepoints_seen() + 1)));
            }
        }
        if !self.stopping.is_set() {
            wakes.push(Box::pin(self.ctx.stop.wait()));
        }
        let now = Instant::now();
        wakes.push(Box::pin(glommio::timer::sleep(
            self.next_deadline(now).saturating_duration_since(now),
        )));
        std::future::poll_fn(|cx| {
            if wakes.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The soonest time something the loop does becomes due without a wake-up: a
    /// heartbeat, core 0's checkpoint timer, a source turning idle, the end of the
    /// shutdown wait; at most `WAIT_MAX` away.
    fn next_deadline(&self, now: Instant) -> Instant {
        let mut soonest = now + WAIT_MAX;
        let mut consider = |t: Instant| {
            if t > now && t < soonest {
                soonest = t;
            }
        };
        if !self.outboxes.is_empty() {
            consider(self.published.next());
        }
        if let (Some(a), Some(c)) = (&self.align, &self.ctx.checkpoints) {
            if let Some(t) = a.next_due(self.ctx.shard, c) {
                consider(t);
            }
        }
        for s in &self.sources {
            consider(s.active_at + self.idle);
        }
        if self.stopping.is_set() {
            consider(self.stopping.since() + SHUTDOWN_CHECKPOINT_WAIT);
        }
        soonest
    }
}

/// Accumulator slots a routed record carries: the highest aggregate slot + 1, at
/// least 2.
fn slots(job: &Job) -> usize {
    job.aggregates
        .iter()
        .filter_map(|a| a.slot)
        .max()
        .map_or(2, |m| m as usize + 1)
        .max(2)
}

/// This core's source partitions, at their checkpointed positions or at the
/// start of the log.
fn open_sources(ctx: &JobContext, snap: Option<&ArchivedCoreSnapshot>) -> Vec<Source> {
    let now = Instant::now();
    ctx.sources
        .iter()
        .map(|&(index, id)| {
            let saved =
                snap.and_then(|s| s.sources.iter().find(|x| x.partition.to_native() == index));
            Source {
                index,
                id,
                next: saved.map_or_else(
                    || ctx.log.log_start_offset(id).unwrap_or(0),
                    |x| x.next.to_native(),
                ),
                max_ts: saved.map_or(i64::MIN, |x| x.max_ts.to_native()),
                active_at: now,
            }
        })
        .collect()
}

/// (log id, next offset) of each source: where a replay from here starts.
fn positions(sources: &[Source]) -> Vec<(u32, u64)> {
    sources.iter().map(|s| (s.id, s.next)).collect()
}

/// This core's part of checkpoint `id`.
fn snapshot(
    job: &Job,
    layout: &Layout,
    ctx: &JobContext,
    (st, side): (&State, &SideOutputs),
    (id, sources, core_wm): (u64, &[Source], i64),
) -> checkpoint::CoreSnapshot {
    let (windows, fired_upto) = st.windows.snapshot();
    let mut outputs: Vec<checkpoint::OutputSnap> = ctx
        .sinks
        .iter()
        .flat_map(|s| s.positions(&ctx.log))
        .collect();
    side.positions(&ctx.log, &mut outputs);
    checkpoint::CoreSnapshot {
        job: job.name.clone(),
        id,
        shard: ctx.shard,
        shards: ctx.shards,
        words: layout.words as u32,
        sources: sources
            .iter()
            .map(|s| checkpoint::SourceSnap {
                partition: s.index,
                next: s.next,
                max_ts: s.max_ts,
            })
            .collect(),
        remote: st
            .remote
            .iter()
            .enumerate()
            .filter_map(|(from, r)| {
                r.as_ref().map(|r| checkpoint::RemoteSnap {
                    from: from as u32,
                    wm: r.wm,
                    idle: r.idle,
                })
            })
            .collect(),
        core_wm,
        fired_upto,
        group_lines: st
            .lines
            .by_group
            .iter()
            .enumerate()
            .filter(|&(_, &upto)| upto > fired_upto)
            .map(|(g, &upto)| checkpoint::GroupLine {
                group: g as u32,
                upto,
            })
            .collect(),
        windows,
        outputs,
    }
}
