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

use super::avro::{Num, Projected, SLOTS_MAX};
use super::checkpoint;
use super::records::{for_each_record, BadBatch, RecordRef};
use super::spec::{EventTime, Job};
use super::window::{Applied, Fired, Layout, Position, RestoreError, Windows};
use crate::sink::topic::{self, OutRecord};
use crate::sink::SinkHandle;
use crate::{partition_owner, partitioner};
use bytes::Bytes;
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidewater_io::{LogError, ShardLog};

/// Messages a mailbox holds before the sender waits.
pub const MAILBOX_CAPACITY: usize = 64;
/// Bytes read from a partition at a time.
const READ_BYTES: usize = 1 << 20;
/// How often a core tells the others its watermark when nothing else moves.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// Longest the driver sleeps when there is nothing to do.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// Records routed to another core.
#[derive(Debug, Default)]
pub struct Routed {
    keys: Vec<u8>,
    recs: Vec<(u32, u32, Position)>,
    /// `slots` values per record.
    vals: Vec<Option<Num>>,
}

/// A connected mailbox to another core and the records waiting to go into it.
type Outbox = (ConnectedSender<Mail>, Arc<MailboxStats>, Routed);

/// What travels through a mailbox.
#[derive(Debug)]
pub enum Mail {
    Records(Routed),
    /// The sender's source watermark, after every record it covers.
    Watermark {
        wm: i64,
        idle: bool,
    },
    /// Checkpoint barrier: every record the sender routed before its part of
    /// checkpoint `n` came before this.
    Barrier(u64),
    /// To core 0: this core's part of checkpoint `id` is durable.
    Done {
        id: u64,
        bytes: u64,
    },
}

/// Depth and wait of one mailbox, shared by its two ends (touched once per batch).
#[derive(Debug, Default)]
pub struct MailboxStats {
    pub depth: AtomicU64,
    pub sent: AtomicU64,
    pub wait_ns: AtomicU64,
}

/// One core's ends of one job's mailboxes, before they are connected.
pub struct CoreMail {
    pub out: Vec<Option<(SharedSender<Mail>, Arc<MailboxStats>)>>,
    pub inbox: Vec<(u32, SharedReceiver<Mail>, Arc<MailboxStats>)>,
}

/// The full mesh of mailboxes for one job over `shards` cores.
pub fn mesh(shards: u32) -> Vec<CoreMail> {
    let n = shards as usize;
    let mut cores: Vec<CoreMail> = (0..n)
        .map(|_| CoreMail {
            out: (0..n).map(|_| None).collect(),
            inbox: Vec::new(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MAILBOX_CAPACITY);
                let stats = Arc::new(MailboxStats::default());
                cores[from].out[to] = Some((tx, stats.clone()));
                cores[to].inbox.push((from as u32, rx, stats));
            }
        }
    }
    cores
}

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
    pub requested: Arc<AtomicU64>,
    /// Shared by the job's cores: set by core 0 when the checkpoint taken at
    /// shutdown is complete (or abandoned), after which every core's part ends.
    pub finished: Arc<AtomicU64>,
}

/// How long a stopping server waits for its shutdown checkpoint (a dead sink
/// cannot deliver what was fired before it); after that the next start replays
/// from the checkpoint before.
pub const SHUTDOWN_CHECKPOINT_WAIT: Duration = Duration::from_secs(10);

use super::records::bump;

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
    pub stop: Rc<dyn Fn() -> bool>,
    /// `None`: checkpoints off (a restart replays the sources from the start).
    pub checkpoints: Option<Checkpoints>,
}

struct Source {
    index: u32,
    id: u32,
    next: u64,
    max_ts: i64,
    active_at: Instant,
}

struct Remote {
    wm: i64,
    idle: bool,
}

/// Per key group, the line late events are judged by where it is past the core's
/// own: after a rescale, a group's old owner may have fired further than its new one.
/// Empty otherwise, and emptied once the core's own line passes every group's.
#[derive(Default)]
struct GroupLines {
    by_group: Vec<i64>,
    max: i64,
}

impl GroupLines {
    #[inline]
    fn line(&self, key: &[u8]) -> i64 {
        if self.by_group.is_empty() {
            return i64::MIN;
        }
        self.by_group[partitioner::partition_for(key, self.by_group.len() as u32) as usize]
    }
}

/// State the driver and the mailbox receivers share (borrowed only between awaits).
struct Shared {
    windows: Windows,
    lines: GroupLines,
    remote: Vec<Option<Remote>>,
    late: Vec<OutRecord>,
    full: Option<String>,
    /// The checkpoint barrier each other core delivered last.
    barriers: Vec<u64>,
    /// Receivers hold after barrier `n` until this reaches `n`.
    resumed: u64,
    /// Core 0: parts done per checkpoint (count, bytes).
    done: std::collections::BTreeMap<u64, (u32, u64)>,
}

/// Runs the job on this core until the server stops; returns why it stopped early.
pub async fn run(
    job: Rc<Job>,
    layout: Rc<Layout>,
    ctx: JobContext,
    mail: CoreMail,
    stats: Rc<JobStats>,
) -> Result<(), String> {
    let res = drive(job.clone(), layout, ctx, mail, stats.clone()).await;
    if let Err(e) = &res {
        tracing::error!(job = %job.name, "job stopped: {e}; its input stays in the log");
        *stats.failed.borrow_mut() = Some(e.clone());
    }
    res
}

async fn drive(
    job: Rc<Job>,
    layout: Rc<Layout>,
    ctx: JobContext,
    mail: CoreMail,
    stats: Rc<JobStats>,
) -> Result<(), String> {
    let slots = job
        .aggregates
        .iter()
        .filter_map(|a| a.slot)
        .max()
        .map_or(2, |m| m as usize + 1)
        .max(2);
    let shared = Rc::new(RefCell::new(Shared {
        windows: Windows::new(
            (*layout).clone(),
            job.window_ms,
            job.lateness_ms,
            job.state_entries_max,
        ),
        lines: GroupLines::default(),
        remote: (0..ctx.shards).map(|_| None).collect(),
        late: Vec::new(),
        full: None,
        barriers: vec![0; ctx.shards as usize],
        resumed: 0,
        done: Default::default(),
    }));
    let restored = ctx.checkpoints.as_ref().and_then(|c| c.restore.clone());
    if let Some((id, bytes)) = &restored {
        restore_state(
            &job,
            &mut shared.borrow_mut(),
            bytes.view(),
            ctx.source_partitions,
        )
        .map_err(|e| format!("checkpoint {id}: {e}"))?;
    }
    let first_id = ctx.checkpoints.as_ref().map_or(0, |c| c.highest);
    {
        let mut sh = shared.borrow_mut();
        sh.resumed = first_id;
        sh.barriers.fill(first_id);
    }
    // Connect this core's ends. A connect completes when the other core connects
    // its end, so the receivers connect in their own tasks, started first: two cores
    // connecting to each other never wait on one another.
    for (from, rx, st) in mail.inbox {
        shared.borrow_mut().remote[from as usize] = Some(Remote {
            wm: i64::MIN,
            idle: false,
        });
        glommio::spawn_local(receive(
            job.clone(),
            from,
            rx,
            st,
            shared.clone(),
            stats.clone(),
        ))
        .detach();
    }
    let mut outboxes: Vec<Option<Outbox>> = Vec::new();
    for o in mail.out {
        outboxes.push(match o {
            Some((tx, st)) => Some((tx.connect().await, st, Routed::default())),
            None => None,
        });
    }
    let started = Instant::now();
    let snap = restored.as_ref().map(|(_, b)| b.view());
    let mut sources: Vec<Source> = ctx
        .sources
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
                active_at: started,
            }
        })
        .collect();
    // Side-output records already written after the checkpoint are not written again.
    let output_from = |name: &str, partition: u32| {
        snap.and_then(|s| {
            s.outputs
                .iter()
                .find(|o| o.name.as_str() == name && o.partition.to_native() == partition)
                .map(|o| o.end.to_native())
        })
        .unwrap_or(0)
    };
    let late_name = format!("topic:{}", job.late_topic());
    let dlq_name = format!("topic:{}", job.dlq_topic());
    let mut late_seen = std::collections::HashSet::new();
    for (p, id) in owned(&ctx.late_ids) {
        late_seen.extend(sources_written(&ctx.log, id, output_from(&late_name, p)).await?);
    }
    let mut dlq_seen = std::collections::HashSet::new();
    for (p, id) in owned(&ctx.dlq_ids) {
        dlq_seen.extend(sources_written(&ctx.log, id, output_from(&dlq_name, p)).await?);
    }
    let mut core_wm = snap.map_or(i64::MIN, |s| s.core_wm.to_native());
    if let Some((id, _)) = &restored {
        tracing::info!(job = %job.name, shard = ctx.shard, checkpoint = id, "resuming from checkpoint");
    }
    // Retention keeps what a checkpoint may replay from: the positions of the parts
    // this core wrote that are still kept (and the one resumed from).
    let mut kept_positions: std::collections::VecDeque<Vec<(u32, u64)>> = Default::default();
    if ctx.checkpoints.is_some() {
        kept_positions.push_back(sources.iter().map(|s| (s.id, s.next)).collect());
        hold(&ctx.log, &kept_positions);
    }
    let mut ckpt: Option<InProgress> = None;
    let mut next_id = first_id + 1;
    let mut last_ckpt = Instant::now();
    let mut savepoints_seen = ctx
        .checkpoints
        .as_ref()
        .map_or(0, |c| c.requested.load(Ordering::Relaxed));
    let mut savepoint: Option<u64> = None;
    let mut scratch = Vec::new();
    let mut dlq: Vec<(u32, OutRecord)> = Vec::new();
    let mut wm_at = Instant::now();
    let mut sent_wm: Option<(i64, bool)> = None;
    let mut last_heartbeat = Instant::now();
    let idle = Duration::from_millis(job.idle_ms.max(0) as u64);
    // Stopping: when the stop was first seen, and (core 0) the checkpoint that ends
    // the job. Waits for room in a mailbox end once the shutdown wait is over.
    let stopping_since: Rc<Cell<Option<Instant>>> = Default::default();
    let mut final_id: Option<u64> = None;
    let halt = {
        let (stop, since) = (ctx.stop.clone(), stopping_since.clone());
        move || {
            if !stop() {
                return false;
            }
            let t = since.get().unwrap_or_else(|| {
                since.set(Some(Instant::now()));
                Instant::now()
            });
            t.elapsed() >= SHUTDOWN_CHECKPOINT_WAIT
        }
    };
    loop {
        if (ctx.stop)() {
            let Some(c) = &ctx.checkpoints else {
                return Ok(());
            };
            let done = c.finished.load(Ordering::SeqCst);
            if done != 0 {
                return Ok(());
            }
            if halt() {
                if ctx.shard == 0 {
                    c.finished.store(u64::MAX, Ordering::SeqCst);
                }
                tracing::warn!(job = %job.name, shard = ctx.shard,
                    "no checkpoint at shutdown: it did not complete within {SHUTDOWN_CHECKPOINT_WAIT:?} \
                     (a sink that cannot deliver?); the next start replays from the last complete one");
                return Ok(());
            }
        }
        if let Some(e) = shared.borrow().full.clone() {
            return Err(e);
        }
        let epoch = ctx.log.append_epoch();
        // Back-pressure: while a sink cannot take the windows that are due, read
        // nothing more (the log keeps it).
        let sinks_full = ctx.sinks.iter().any(|s| s.tx.is_full());
        let blocked = sinks_full && shared.borrow().windows.due(core_wm);
        let mut progressed = false;
        // Start a checkpoint: core 0 on its timer, the others on core 0's barrier.
        if let (None, Some(c)) = (&ckpt, &ctx.checkpoints) {
            let seen = shared.borrow().barriers.iter().copied().max().unwrap_or(0);
            let start = if ctx.shard == 0 {
                let asked = c.requested.load(Ordering::Relaxed);
                if asked > savepoints_seen {
                    savepoints_seen = asked;
                    savepoint = Some(next_id);
                }
                let last = (ctx.stop)() && final_id.is_none();
                if last {
                    final_id = Some(next_id);
                }
                (last_ckpt.elapsed() >= c.interval || savepoint == Some(next_id) || last)
                    .then_some(next_id)
            } else {
                (seen >= next_id).then_some(seen)
            };
            if let Some(id) = start {
                flush_outboxes(&mut outboxes, &stats, &halt).await?;
                for (to, o) in outboxes.iter_mut().enumerate() {
                    if let Some((tx, st, _)) = o {
                        send(tx, st, Mail::Barrier(id), &stats, &halt)
                            .await
                            .map_err(|_| format!("core {to} stopped taking records"))?;
                    }
                }
                ckpt = Some(InProgress {
                    id,
                    started: Instant::now(),
                    aligned_at: None,
                });
                next_id = id + 1;
                last_ckpt = Instant::now();
            }
        }
        if !blocked && ckpt.is_none() {
            for src in sources.iter_mut() {
                let end = ctx.log.high_watermark(src.id).map_err(|e| e.to_string())?;
                if src.next >= end {
                    continue;
                }
                let entries = match ctx.log.read(src.id, src.next, READ_BYTES).await {
                    Ok(v) => v,
                    Err(LogError::OffsetOutOfRange { .. }) => {
                        let start = ctx
                            .log
                            .log_start_offset(src.id)
                            .map_err(|e| e.to_string())?;
                        tracing::warn!(job = %job.name, partition = src.index, from = src.next, to = start,
                            "records before offset {start} were removed by retention before the job read them");
                        src.next = start.max(src.next);
                        continue;
                    }
                    Err(LogError::Closed) => return Ok(()),
                    Err(e) => return Err(format!("cannot read partition {}: {e}", src.index)),
                };
                let mut sh = shared.borrow_mut();
                let sh = &mut *sh;
                for e in &entries {
                    let mut bad = Vec::new();
                    let mut cx = RecordCx {
                        job: &job,
                        ctx: &ctx,
                        stats: &stats,
                        windows: &mut sh.windows,
                        lines: &sh.lines,
                        late: &mut sh.late,
                        full: &mut sh.full,
                        dlq: &mut dlq,
                        outboxes: &mut outboxes,
                        src_index: src.index,
                        max_ts: &mut src.max_ts,
                        slots,
                    };
                    for_each_record(
                        &e.payload,
                        e.base_offset,
                        e.record_count,
                        &mut scratch,
                        |r| cx.on_record(r),
                        &mut bad,
                    );
                    for b in bad {
                        cx.dead_batch(b);
                    }
                    src.next = e.end_offset();
                }
                src.active_at = Instant::now();
                progressed = true;
            }
        }
        // Records for other cores leave before the watermark that covers them.
        flush_outboxes(&mut outboxes, &stats, &halt).await?;
        let now = Instant::now();
        // This core's source watermark.
        let mut lag = Vec::with_capacity(sources.len());
        let mut own = Vec::with_capacity(sources.len());
        for s in &sources {
            let end = ctx.log.high_watermark(s.id).unwrap_or(s.next);
            lag.push((s.index, end.saturating_sub(s.next)));
            // Data waiting is activity, however old the last read.
            let is_idle = s.next >= end && now.duration_since(s.active_at) >= idle;
            own.push((s.max_ts.saturating_sub(job.out_of_orderness_ms), is_idle));
        }
        *stats.lag.borrow_mut() = lag;
        let source_wm = combine(own.iter().copied());
        let all_idle = own.iter().all(|&(_, i)| i);
        // Nothing goes out while this core's part of a checkpoint is pending: the
        // other cores hold what arrives after a barrier, so a stream of heartbeats
        // would fill their mailboxes and block two cores on each other.
        let changed = sent_wm != Some((source_wm, all_idle));
        if ckpt.is_none() && (changed || now.duration_since(last_heartbeat) >= HEARTBEAT) {
            for (to, o) in outboxes.iter_mut().enumerate() {
                if let Some((tx, st, _)) = o {
                    send(
                        tx,
                        st,
                        Mail::Watermark {
                            wm: source_wm,
                            idle: all_idle,
                        },
                        &stats,
                        &halt,
                    )
                    .await
                    .map_err(|_| format!("core {to} stopped taking records"))?;
                }
            }
            sent_wm = Some((source_wm, all_idle));
            last_heartbeat = now;
        }
        // The core's watermark: its sources and the other cores.
        let wm = {
            let sh = shared.borrow();
            let inputs = own
                .iter()
                .copied()
                .chain(sh.remote.iter().flatten().map(|r| (r.wm, r.idle)));
            combine(inputs)
        };
        if wm > core_wm {
            core_wm = wm;
            wm_at = now;
            stats.watermark.set(core_wm);
        }
        // Late events (found here or by the receivers) go to their side output.
        let mut late: Vec<(u32, OutRecord)> = std::mem::take(&mut shared.borrow_mut().late)
            .into_iter()
            .map(|r| {
                let key = r.key.as_deref().unwrap_or_default();
                (partitioner::partition_for(key, ctx.source_partitions), r)
            })
            .collect();
        not_again(&mut late, &mut late_seen);
        not_again(&mut dlq, &mut dlq_seen);
        append_side(&ctx.log, &ctx.late_ids, late)
            .await
            .map_err(|e| format!("cannot write late events to {}: {e}", job.late_topic()))?;
        append_side(&ctx.log, &ctx.dlq_ids, std::mem::take(&mut dlq))
            .await
            .map_err(|e| format!("cannot write dead letters to {}: {e}", job.dlq_topic()))?;
        // Fire what is due, as far as every sink has room.
        {
            let mut sh = shared.borrow_mut();
            let sinks = &ctx.sinks;
            sh.windows.fire(core_wm, wm_at, |f: Fired| {
                let f = Rc::new(f);
                for s in sinks {
                    // Room was checked: a full queue stops firing before the pop.
                    if s.tx.try_send(f.clone()).is_err() {
                        tracing::error!(job = %job.name, sink = %s.name, "sink queue refused a window with room");
                    }
                    s.stats.queued.set(s.stats.queued.get() + 1);
                }
                bump(&stats.windows_fired, 1);
                !sinks.iter().any(|s| s.tx.is_full())
            });
            if !sh.lines.by_group.is_empty() && sh.windows.fired_upto() >= sh.lines.max {
                sh.lines = GroupLines::default();
            }
            stats.state_entries.set(sh.windows.entries() as u64);
            stats.state_bytes.set(sh.windows.bytes() as u64);
        }
        // This core's part of a checkpoint: once every other core's barrier is in
        // and the sinks hold nothing fired before it.
        if let (Some(cur), Some(c)) = (&mut ckpt, &ctx.checkpoints) {
            let aligned = shared
                .borrow()
                .barriers
                .iter()
                .enumerate()
                .all(|(from, &b)| from as u32 == ctx.shard || b >= cur.id);
            if aligned && cur.aligned_at.is_none() {
                cur.aligned_at = Some(Instant::now());
            }
            let drained = ctx.sinks.iter().all(|s| s.stats.queued.get() == 0);
            let flushed = shared.borrow().late.is_empty() && dlq.is_empty();
            if aligned && drained && flushed {
                let snap = {
                    let sh = shared.borrow();
                    let (windows, fired_upto) = sh.windows.snapshot();
                    let mut outputs: Vec<checkpoint::OutputSnap> = ctx
                        .sinks
                        .iter()
                        .flat_map(|s| s.positions(&ctx.log))
                        .collect();
                    for (name, ids) in [(&late_name, &ctx.late_ids), (&dlq_name, &ctx.dlq_ids)] {
                        for (p, id) in owned(ids) {
                            outputs.push(checkpoint::OutputSnap {
                                name: name.clone(),
                                partition: p,
                                end: ctx.log.high_watermark(id).unwrap_or(0),
                            });
                        }
                    }
                    checkpoint::CoreSnapshot {
                        job: job.name.clone(),
                        id: cur.id,
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
                        remote: sh
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
                        group_lines: sh
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
                };
                let bytes = checkpoint::write_part(&c.root, &snap).await?;
                let id = cur.id;
                stats.checkpoint_part.set(id);
                stats.checkpoint_bytes.set(bytes);
                push_sample(&stats.checkpoint_us, cur.started.elapsed());
                push_sample(
                    &stats.alignment_us,
                    cur.aligned_at
                        .map_or(Duration::ZERO, |a| a.duration_since(cur.started)),
                );
                kept_positions.push_back(sources.iter().map(|s| (s.id, s.next)).collect());
                while kept_positions.len() > checkpoint::KEEP + 1 {
                    kept_positions.pop_front();
                }
                hold(&ctx.log, &kept_positions);
                if ctx.shard == 0 {
                    let mut sh = shared.borrow_mut();
                    let e = sh.done.entry(id).or_default();
                    e.0 += 1;
                    e.1 += bytes;
                } else if let Some(Some((tx, st, _))) = outboxes.get_mut(0) {
                    send(tx, st, Mail::Done { id, bytes }, &stats, &halt)
                        .await
                        .map_err(|_| "core 0 stopped taking records".to_string())?;
                }
                shared.borrow_mut().resumed = id;
                ckpt = None;
            }
        }
        // Core 0: a checkpoint every core has written is complete.
        if ctx.shard == 0 {
            if let Some(c) = &ctx.checkpoints {
                let complete: Vec<u64> = shared
                    .borrow()
                    .done
                    .iter()
                    .filter(|(_, (n, _))| *n == ctx.shards)
                    .map(|(&id, _)| id)
                    .collect();
                for id in complete {
                    checkpoint::write_manifest(&c.root, &job.name, id, ctx.shards).await?;
                    if savepoint.is_some_and(|s| s <= id) {
                        checkpoint::mark_savepoint(&c.root, &job.name, id).await?;
                        tracing::info!(job = %job.name, checkpoint = id, "savepoint taken");
                        savepoint = None;
                    }
                    shared.borrow_mut().done.retain(|&k, _| k > id);
                    checkpoint::prune(&c.root, &job.name, id).await;
                    stats.checkpoint_complete.set(id);
                    tracing::debug!(job = %job.name, checkpoint = id, "checkpoint complete");
                    if final_id.is_some_and(|f| f <= id) {
                        tracing::info!(job = %job.name, checkpoint = id, "checkpoint taken at shutdown");
                        c.finished.store(id, Ordering::SeqCst);
                    }
                }
            }
        }
        if !progressed || ckpt.is_some() {
            let waited = Instant::now();
            futures_lite::future::or(
                ctx.log.wait_for_append(epoch),
                glommio::timer::sleep(IDLE_POLL),
            )
            .await;
            if blocked {
                bump(&stats.blocked_ns, waited.elapsed().as_nanos() as u64);
            }
        }
    }
}

/// A checkpoint this core has sent its barrier for and not yet written.
struct InProgress {
    id: u64,
    started: Instant,
    aligned_at: Option<Instant>,
}

fn push_sample(v: &RefCell<Vec<u64>>, d: Duration) {
    let mut v = v.borrow_mut();
    if v.len() < 10_000 {
        v.push(d.as_micros() as u64);
    }
}

/// Holds retention at the oldest kept checkpoint position of each source partition.
fn hold(log: &ShardLog, kept: &std::collections::VecDeque<Vec<(u32, u64)>>) {
    if let Some(oldest) = kept.front() {
        for &(id, next) in oldest {
            log.retain_from(id, Some(next));
        }
    }
}

async fn flush_outboxes(
    outboxes: &mut [Option<Outbox>],
    stats: &JobStats,
    stop: &dyn Fn() -> bool,
) -> Result<(), String> {
    for (to, o) in outboxes.iter_mut().enumerate() {
        if let Some((tx, st, pending)) = o {
            if !pending.recs.is_empty() {
                let batch = std::mem::take(pending);
                send(tx, st, Mail::Records(batch), stats, stop)
                    .await
                    .map_err(|_| format!("core {to} stopped taking records"))?;
            }
        }
    }
    Ok(())
}

/// Puts a checkpoint's window state and watermarks back.
fn restore_state(
    job: &Job,
    sh: &mut Shared,
    snap: &checkpoint::ArchivedCoreSnapshot,
    groups: u32,
) -> Result<(), String> {
    let words = snap.words.to_native() as usize;
    if words != sh.windows.layout.words {
        return Err(format!(
            "it holds {words} accumulator words per key, job {} now needs {} (were its aggregates changed?)",
            job.name, sh.windows.layout.words
        ));
    }
    sh.windows.set_fired_upto(snap.fired_upto.to_native());
    if !snap.group_lines.is_empty() {
        let mut by_group = vec![i64::MIN; groups as usize];
        for l in snap.group_lines.iter() {
            let slot = by_group
                .get_mut(l.group.to_native() as usize)
                .ok_or("a key group past the source's partitions")?;
            *slot = l.upto.to_native();
        }
        let max = by_group.iter().copied().max().unwrap_or(i64::MIN);
        sh.lines = GroupLines { by_group, max };
    }
    for w in snap.windows.iter() {
        let start = w.start.to_native();
        let mut at = 0usize;
        for (i, len) in w.key_lens.iter().enumerate() {
            let len = len.to_native() as usize;
            let key = w
                .keys
                .get(at..at + len)
                .ok_or("window keys are cut short")?;
            at += len;
            let acc: Vec<u64> = w
                .accs
                .get(i * words..(i + 1) * words)
                .ok_or("window accumulators are cut short")?
                .iter()
                .map(|v| v.to_native())
                .collect();
            sh.windows
                .restore_entry(start, key, &acc)
                .map_err(|e| match e {
                    RestoreError::Full => format!(
                        "more open windows than state_entries_max of job {}",
                        job.name
                    ),
                    RestoreError::Shape { words, found } => format!(
                        "job {}: a checkpointed window holds {found} accumulator words where the job's aggregates need {words}: the checkpoint is of other aggregates",
                        job.name
                    ),
                })?;
        }
    }
    for r in snap.remote.iter() {
        if let Some(slot) = sh.remote.get_mut(r.from.to_native() as usize) {
            *slot = Some(Remote {
                wm: r.wm.to_native(),
                idle: r.idle,
            });
        }
    }
    Ok(())
}

/// Source positions (`tidewater.source` headers) of the records in `partition`
/// from `from` on: side output written after the checkpoint.
async fn sources_written(
    log: &ShardLog,
    partition: u32,
    from: u64,
) -> Result<std::collections::HashSet<Vec<u8>>, String> {
    let mut seen = std::collections::HashSet::new();
    super::records::read_from(log, partition, from, |r| {
        if let Some(src) = super::records::header(r.headers, SOURCE_HEADER) {
            seen.insert(src.to_vec());
        }
    })
    .await?;
    Ok(seen)
}

/// (Kafka index, log id) of each partition in `ids` this core holds.
fn owned(ids: &[Option<u32>]) -> impl Iterator<Item = (u32, u32)> + '_ {
    ids.iter()
        .enumerate()
        .filter_map(|(p, id)| id.map(|id| (p as u32, id)))
}

/// Appends side-output records (Kafka index, record) to their partitions.
async fn append_side(
    log: &ShardLog,
    ids: &[Option<u32>],
    records: Vec<(u32, OutRecord)>,
) -> Result<(), String> {
    let mut by_partition: std::collections::BTreeMap<u32, Vec<OutRecord>> = Default::default();
    for (p, r) in records {
        by_partition.entry(p).or_default().push(r);
    }
    for (p, batch) in by_partition {
        let id = ids
            .get(p as usize)
            .copied()
            .flatten()
            .ok_or_else(|| format!("partition {p} is not on this core"))?;
        topic::append(log, id, &batch)
            .await
            .map_err(|e| format!("partition {p}: {e}"))?;
    }
    Ok(())
}

/// Drops the records already written before a restart (their source in `seen`).
fn not_again(records: &mut Vec<(u32, OutRecord)>, seen: &mut std::collections::HashSet<Vec<u8>>) {
    if seen.is_empty() {
        return;
    }
    records.retain(|(_, r)| {
        let src = r
            .headers
            .iter()
            .find(|(k, _)| *k == SOURCE_HEADER)
            .map(|(_, v)| v.to_vec());
        !src.is_some_and(|s| seen.remove(&s))
    });
}

/// The header naming a side-output record's source: `topic/partition/offset`.
const SOURCE_HEADER: &str = "tidewater.source";

/// The watermark of a set of inputs (watermark, idle): the least of the active ones;
/// when all are idle, the greatest.
fn combine(inputs: impl Iterator<Item = (i64, bool)>) -> i64 {
    let mut active = i64::MAX;
    let mut any_active = false;
    let mut all = i64::MIN;
    for (wm, idle) in inputs {
        all = all.max(wm);
        if !idle {
            any_active = true;
            active = active.min(wm);
        }
    }
    if any_active {
        active
    } else {
        all
    }
}

async fn send(
    tx: &ConnectedSender<Mail>,
    st: &MailboxStats,
    m: Mail,
    stats: &JobStats,
    stop: &dyn Fn() -> bool,
) -> Result<(), ()> {
    st.depth.fetch_add(1, Ordering::Relaxed);
    st.sent.fetch_add(1, Ordering::Relaxed);
    // Full: wait, but keep an eye on the stop flag. Closed: the other core is gone.
    let back = |e: glommio::GlommioError<Mail>| match e {
        glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => Ok(m),
        _ => Err(()),
    };
    let mut m = match tx.try_send(m) {
        Ok(()) => return Ok(()),
        Err(e) => back(e)?,
    };
    let waited = Instant::now();
    loop {
        match tx.try_send(m) {
            Ok(()) => break,
            Err(e) => m = back(e)?,
        }
        if stop() {
            return Err(());
        }
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
    let ns = waited.elapsed().as_nanos() as u64;
    st.wait_ns.fetch_add(ns, Ordering::Relaxed);
    bump(&stats.blocked_ns, ns);
    Ok(())
}

async fn receive(
    job: Rc<Job>,
    from: u32,
    rx: SharedReceiver<Mail>,
    st: Arc<MailboxStats>,
    shared: Rc<RefCell<Shared>>,
    stats: Rc<JobStats>,
) {
    let rx = rx.connect().await;
    while let Some(m) = rx.recv().await {
        st.depth.fetch_sub(1, Ordering::Relaxed);
        let hold_for = {
            let mut guard = shared.borrow_mut();
            let sh = &mut *guard;
            receive_one(&job, from, m, sh, &stats)
        };
        // Alignment: after a barrier, nothing more from this core until our part of
        // that checkpoint is written (its records after the barrier belong to the
        // next one).
        if let Some(id) = hold_for {
            while shared.borrow().resumed < id {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Applies one message; returns the checkpoint to hold for after a barrier.
fn receive_one(job: &Job, from: u32, m: Mail, sh: &mut Shared, stats: &JobStats) -> Option<u64> {
    match m {
        Mail::Records(r) => {
            let slots = if r.recs.is_empty() {
                0
            } else {
                r.vals.len() / r.recs.len()
            };
            let mut vals = [None; SLOTS_MAX];
            bump(&stats.routed_in, r.recs.len() as u64);
            for (i, &(at, len, pos)) in r.recs.iter().enumerate() {
                vals[..slots].copy_from_slice(&r.vals[i * slots..(i + 1) * slots]);
                let key = &r.keys[at as usize..(at + len) as usize];
                apply(
                    job,
                    &mut sh.windows,
                    &sh.lines,
                    &mut sh.late,
                    &mut sh.full,
                    stats,
                    key,
                    &vals,
                    pos,
                );
            }
        }
        Mail::Watermark { wm, idle } => {
            sh.remote[from as usize] = Some(Remote { wm, idle });
        }
        Mail::Done { id, bytes } => {
            let e = sh.done.entry(id).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        Mail::Barrier(id) => {
            sh.barriers[from as usize] = sh.barriers[from as usize].max(id);
            return Some(id);
        }
    }
    None
}

/// Applies one event to the state; late events become side-output records.
#[allow(clippy::too_many_arguments)] // the split borrows of `Shared`, named
fn apply(
    job: &Job,
    windows: &mut Windows,
    lines: &GroupLines,
    late: &mut Vec<OutRecord>,
    full: &mut Option<String>,
    stats: &JobStats,
    key: &[u8],
    vals: &[Option<Num>; SLOTS_MAX],
    pos: Position,
) {
    match windows.apply_after(key, vals, pos, lines.line(key)) {
        Applied::Added => {}
        Applied::Late(start) => {
            bump(&stats.late, 1);
            let mut v = Vec::with_capacity(160);
            v.extend_from_slice(b"{\"key\":");
            json_bytes(&mut v, key);
            v.extend_from_slice(
                format!(
                    ",\"event_time\":{},\"window_start\":{start},\"source_partition\":{},\"source_offset\":{},\"reason\":\"its window had fired\"}}",
                    pos.ts, pos.partition, pos.offset
                )
                .as_bytes(),
            );
            late.push(OutRecord {
                key: Some(Bytes::copy_from_slice(key)),
                value: Bytes::from(v),
                timestamp_ms: pos.ts,
                headers: vec![(
                    SOURCE_HEADER,
                    Bytes::from(format!("{}/{}/{}", job.source, pos.partition, pos.offset)),
                )],
            });
        }
        Applied::Full => {
            if full.is_none() {
                *full = Some(format!(
                    "window state is full ({} open key-windows = state_entries_max of job `{}`); \
                     raise state_entries_max or use fewer keys/shorter windows",
                    windows.entries(),
                    job.name
                ));
            }
        }
    }
}

fn json_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(
        serde_json::to_string(&String::from_utf8_lossy(b))
            .unwrap_or_default()
            .as_bytes(),
    );
}

/// Everything one record touches, borrowed for the length of a log entry.
struct RecordCx<'a> {
    job: &'a Job,
    ctx: &'a JobContext,
    stats: &'a JobStats,
    windows: &'a mut Windows,
    lines: &'a GroupLines,
    late: &'a mut Vec<OutRecord>,
    full: &'a mut Option<String>,
    dlq: &'a mut Vec<(u32, OutRecord)>,
    outboxes: &'a mut [Option<Outbox>],
    src_index: u32,
    max_ts: &'a mut i64,
    slots: usize,
}

/// Why an event time cannot be believed, if it cannot: before 1970, or further
/// ahead of its record's timestamp (fixed in the log, so a replay decides the same)
/// than `ahead_ms_max`. Such an event would move the watermark there for good and
/// make every later event late.
fn time_out_of_bounds(ts: i64, record_ms: i64, ahead_ms_max: i64) -> Option<String> {
    if ts < 0 {
        return Some(format!("event time {ts} is before 1970"));
    }
    let ahead = ts.saturating_sub(record_ms);
    (ahead > ahead_ms_max).then(|| {
        format!(
            "event time {ts} is {ahead} ms ahead of the record's timestamp {record_ms}; event_time_ahead_max allows {ahead_ms_max} ms"
        )
    })
}

impl RecordCx<'_> {
    #[inline]
    fn on_record(&mut self, r: RecordRef<'_>) {
        bump(&self.stats.records_in, 1);
        let Some(value) = r.value else {
            return self.dead(r, "the record has no value (null)");
        };
        let mut p = Projected::default();
        if let Err(e) = self.job.decode(value, &mut p) {
            return self.dead(r, &format!("cannot decode: {e}"));
        }
        let Some(key) = p.key else {
            return self.dead(
                r,
                &format!("the key field `{}` is null or missing", self.job.key_field),
            );
        };
        let ts = match self.job.event_time {
            EventTime::KafkaTimestamp => r.timestamp_ms,
            EventTime::Field(slot) => match p.vals[slot as usize] {
                Some(Num::I(t)) => t,
                _ => return self.dead(r, "the event time field is null or missing"),
            },
        };
        if let Some(why) = time_out_of_bounds(ts, r.timestamp_ms, self.job.ahead_ms_max) {
            return self.dead(r, &why);
        }
        if ts > *self.max_ts {
            *self.max_ts = ts;
        }
        let pos = Position {
            ts,
            partition: self.src_index,
            offset: r.offset,
        };
        let owner = partition_owner(
            partitioner::partition_for(key, self.ctx.source_partitions),
            self.ctx.shards,
        );
        if owner == self.ctx.shard {
            apply(
                self.job,
                self.windows,
                self.lines,
                self.late,
                self.full,
                self.stats,
                key,
                &p.vals,
                pos,
            );
            return;
        }
        let Some((_, _, pending)) = &mut self.outboxes[owner as usize] else {
            unreachable!("every other core has a mailbox");
        };
        let at = pending.keys.len() as u32;
        pending.keys.extend_from_slice(key);
        pending.recs.push((at, key.len() as u32, pos));
        pending.vals.extend_from_slice(&p.vals[..self.slots]);
        bump(&self.stats.routed_out, 1);
    }

    fn dead(&mut self, r: RecordRef<'_>, reason: &str) {
        bump(&self.stats.dlq, 1);
        self.dlq.push((
            self.src_index,
            OutRecord {
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(r.value.unwrap_or_default()),
                timestamp_ms: r.timestamp_ms,
                headers: vec![
                    ("tidewater.error", Bytes::copy_from_slice(reason.as_bytes())),
                    (
                        SOURCE_HEADER,
                        Bytes::from(format!(
                            "{}/{}/{}",
                            self.job.source, self.src_index, r.offset
                        )),
                    ),
                ],
            },
        ));
    }

    fn dead_batch(&mut self, b: BadBatch) {
        bump(&self.stats.dlq, u64::from(b.offsets));
        tracing::warn!(job = %self.job.name, partition = self.src_index, offset = b.base_offset, "unreadable batch of {} offsets: {}", b.offsets, b.reason);
        self.dlq.push((
            self.src_index,
            OutRecord {
                key: None,
                value: Bytes::new(),
                timestamp_ms: 0,
                headers: vec![
                    (
                        "tidewater.error",
                        Bytes::from(format!(
                            "unreadable batch of {} offsets: {}",
                            b.offsets, b.reason
                        )),
                    ),
                    (
                        SOURCE_HEADER,
                        Bytes::from(format!(
                            "{}/{}/{}",
                            self.job.source, self.src_index, b.base_offset
                        )),
                    ),
                ],
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::combine;

    #[test]
    fn event_times_before_1970_or_too_far_ahead_are_refused() {
        use super::time_out_of_bounds as check;
        let day = 86_400_000;
        let now = 1_800_000_000_000;
        assert_eq!(check(now, now, day), None);
        assert_eq!(check(now + day, now, day), None);
        assert_eq!(
            check(now - 365 * day, now, day),
            None,
            "old events are late, not wrong"
        );
        assert!(check(now + day + 1, now, day)
            .unwrap()
            .contains("event_time_ahead_max"));
        assert!(
            check(4_102_444_800_000, now, day).is_some(),
            "the year 2100"
        );
        assert!(check(-1, now, day).unwrap().contains("before 1970"));
        assert!(check(i64::MAX, i64::MIN, day).is_some(), "no overflow");
    }

    #[test]
    fn the_watermark_is_the_least_active_input_or_else_the_greatest() {
        // (watermark, idle) per input.
        assert_eq!(
            combine([(10, false), (5, false), (99, true)].into_iter()),
            5
        );
        assert_eq!(
            combine([(10, false), (5, true)].into_iter()),
            10,
            "an idle input does not hold the others back"
        );
        assert_eq!(
            combine([(10, true), (5, true)].into_iter()),
            10,
            "all idle: the greatest, so the last windows fire"
        );
        assert_eq!(
            combine([(i64::MIN, false), (7, false)].into_iter()),
            i64::MIN,
            "an input that has seen nothing yet holds everything back"
        );
        assert_eq!(combine(std::iter::empty()), i64::MIN);
    }
}
