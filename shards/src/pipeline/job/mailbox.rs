//! The mailboxes between one job's cores: a bounded SPSC channel per (from core, to
//! core) carrying routed records, the sender's watermark, checkpoint barriers and
//! (to core 0) "part done". A receiving task per inbox applies what arrives at once
//! and never waits on the driver except to hold after a barrier, so two cores
//! sending to each other cannot deadlock.
//!
//! Owns the channel ends and their counters; never touches the log or the sinks.

use super::context::{JobStats, Stopping};
use super::state::{Remote, StateCell};
use crate::pipeline::avro::{Num, SLOTS_MAX};
use crate::pipeline::records::bump;
use crate::pipeline::spec::Job;
use crate::pipeline::window::Position;
use crate::pipeline::PipelineError;
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Messages a mailbox holds before the sender waits.
pub const MAILBOX_CAPACITY: usize = 64;

/// Records routed to another core.
#[derive(Debug, Default)]
pub struct Routed {
    keys: Vec<u8>,
    recs: Vec<(u32, u32, Position)>,
    /// `slots` values per record.
    vals: Vec<Option<Num>>,
}

impl Routed {
    /// Adds one record for the other core.
    #[inline]
    pub(super) fn push(&mut self, key: &[u8], pos: Position, vals: &[Option<Num>]) {
        let at = self.keys.len() as u32;
        self.keys.extend_from_slice(key);
        self.recs.push((at, key.len() as u32, pos));
        self.vals.extend_from_slice(vals);
    }

    fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }
}

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

/// A connected mailbox to another core and the records waiting to go into it.
pub(super) struct Outbox {
    tx: ConnectedSender<Mail>,
    stats: Arc<MailboxStats>,
    pub(super) pending: Routed,
}

/// This core's outboxes, by receiving core (`None` for itself).
pub(super) struct Outboxes(pub(super) Vec<Option<Outbox>>);

impl Outboxes {
    /// Connects this core's sending ends (each completes when the other core
    /// connects its receiving end, which it does in a task of its own).
    pub(super) async fn connect(
        out: Vec<Option<(SharedSender<Mail>, Arc<MailboxStats>)>>,
    ) -> Outboxes {
        let mut v = Vec::with_capacity(out.len());
        for o in out {
            v.push(match o {
                Some((tx, stats)) => Some(Outbox {
                    tx: tx.connect().await,
                    stats,
                    pending: Routed::default(),
                }),
                None => None,
            });
        }
        Outboxes(v)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Sends the records waiting for each core.
    pub(super) async fn flush(
        &mut self,
        stats: &JobStats,
        stop: &Stopping,
    ) -> Result<(), PipelineError> {
        for (to, o) in self.0.iter_mut().enumerate() {
            if let Some(o) = o {
                if !o.pending.is_empty() {
                    let batch = std::mem::take(&mut o.pending);
                    send(o, Mail::Records(batch), stats, stop)
                        .await
                        .map_err(|_| PipelineError::PeerGone(to))?;
                }
            }
        }
        Ok(())
    }

    /// Sends `m()` to every other core.
    pub(super) async fn broadcast(
        &mut self,
        m: impl Fn() -> Mail,
        stats: &JobStats,
        stop: &Stopping,
    ) -> Result<(), PipelineError> {
        for (to, o) in self.0.iter_mut().enumerate() {
            if let Some(o) = o {
                send(o, m(), stats, stop)
                    .await
                    .map_err(|_| PipelineError::PeerGone(to))?;
            }
        }
        Ok(())
    }

    /// Sends `m` to core `to`.
    pub(super) async fn send_to(
        &mut self,
        to: usize,
        m: Mail,
        stats: &JobStats,
        stop: &Stopping,
    ) -> Result<(), PipelineError> {
        match self.0.get_mut(to) {
            Some(Some(o)) => send(o, m, stats, stop)
                .await
                .map_err(|_| PipelineError::PeerGone(to)),
            _ => Ok(()),
        }
    }
}

/// Puts `m` into the mailbox, waiting for room while the job is not halted.
/// Fails when the other core is gone or the shutdown wait is over.
async fn send(o: &Outbox, m: Mail, stats: &JobStats, stop: &Stopping) -> Result<(), ()> {
    o.stats.depth.fetch_add(1, Ordering::Relaxed);
    o.stats.sent.fetch_add(1, Ordering::Relaxed);
    let m = match o.tx.try_send(m) {
        Ok(()) => return Ok(()),
        Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m))) => m,
        Err(_) => return Err(()),
    };
    let waited = Instant::now();
    let sent = futures_lite::future::or(async { o.tx.send(m).await.map_err(|_| ()) }, async {
        stop.until_halted().await;
        Err(())
    })
    .await;
    let ns = waited.elapsed().as_nanos() as u64;
    o.stats.wait_ns.fetch_add(ns, Ordering::Relaxed);
    bump(&stats.blocked_ns, ns);
    sent
}

/// One inbox's receiving task: applies each message at once.
pub(super) async fn receive(
    job: Rc<Job>,
    from: u32,
    rx: SharedReceiver<Mail>,
    counts: Arc<MailboxStats>,
    cell: Rc<StateCell>,
    stats: Rc<JobStats>,
) {
    let rx = rx.connect().await;
    while let Some(m) = rx.recv().await {
        counts.depth.fetch_sub(1, Ordering::Relaxed);
        let hold_for = receive_one(&job, from, m, &cell, &stats);
        cell.changed.notify();
        // Alignment: after a barrier, nothing more from this core until our part of
        // that checkpoint is written (its records after the barrier belong to the
        // next one).
        if let Some(id) = hold_for {
            loop {
                let seen = cell.resumed_moved.epoch();
                if cell.state.borrow().resumed >= id {
                    break;
                }
                cell.resumed_moved.wait(seen).await;
            }
        }
    }
}

/// Applies one message; returns the checkpoint to hold for after a barrier.
fn receive_one(job: &Job, from: u32, m: Mail, cell: &StateCell, stats: &JobStats) -> Option<u64> {
    let mut guard = cell.state.borrow_mut();
    let st = &mut *guard;
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
                st.apply(job, stats, key, &vals, pos);
            }
        }
        Mail::Watermark { wm, idle } => {
            st.remote[from as usize] = Some(Remote { wm, idle });
        }
        Mail::Done { id, bytes } => {
            let e = st.done.entry(id).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        Mail::Barrier(id) => {
            st.barriers[from as usize] = st.barriers[from as usize].max(id);
            return Some(id);
        }
    }
    None
}
