//! The journal task: every journal write of one core, and group commit.
//!
//! Owns the journal: takes the pending write, lays it out (one run per partition,
//! numbered in file order), pads it to a block, keeps at most
//! `JOURNAL_WRITES_IN_FLIGHT_MAX` writes in flight, syncs per the durability
//! policy, rolls segments, then hands each write's frames to the ledger (into its
//! chunks, or, with `journal_adopt`, as runs it reads where they lie) and
//! acknowledges its appends, strictly in order. Never writes the ledger itself
//! (a roll that finds no free segment asks for the ledger to be made durable).

use super::ledger_task::make_ledger_durable;
use super::state::{fail_fatal, LaidOut, Shared};
use crate::config::{Durability, JOURNAL_WRITES_IN_FLIGHT_MAX, WRITE_SAMPLES_MAX};
use crate::error::{LogError, Result};
use crate::frame::{self, Header};
use crate::journal::Journal;
use crate::wait::Outcome;
use glommio::io::DmaBuffer;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts the journal task on this executor; it owns `journal` from here on.
pub(super) fn spawn(shared: Rc<Shared>, journal: Journal) -> glommio::task::JoinHandle<()> {
    let driver = Driver {
        shared,
        journal,
        journal_unsynced: false,
        last_sync: Instant::now(),
        in_flight: Default::default(),
    };
    glommio::spawn_local(driver.run()).detach()
}

/// A journal write on its way to the device.
struct InFlight {
    started: Instant,
    write: glommio::Task<Result<()>>,
    buf: Rc<DmaBuffer>,
    /// Where the write goes in its segment file.
    file_pos: u64,
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
                let pending = {
                    let mut st = sh.state.borrow_mut();
                    let first_seq = st.next_seq;
                    let p = st.pending.take();
                    p.map(|p| {
                        st.next_seq += p.appends.len() as u64;
                        p.lay_out(first_seq)
                    })
                };
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
                match self.journal.seal_for_stop().await {
                    Err(e) => self.fail_all(e, None),
                    Ok(()) if sh.ledger.borrow().is_adopting() => {
                        sh.ledger.borrow_mut().journal_segment_sealed(None);
                    }
                    Ok(()) => {}
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

    /// Pads one laid-out write and starts it (rolling the segment first when it does
    /// not fit). Returns an error only when it is fatal.
    async fn start(&mut self, mut p: LaidOut) -> Result<()> {
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
        let file_pos = self.journal.write_pos();
        let write = glommio::spawn_local(self.journal.start_write(buf.clone(), p.last_seq));
        self.in_flight.push_back(InFlight {
            started: Instant::now(),
            write,
            buf,
            file_pos,
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
            let adopting = ledger.is_adopting();
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
            if adopting {
                // The ledger reads the frames where they are (`journal_adopt`).
                ledger.add_frames(w.file_pos, &w.frames);
            } else if adopt {
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
            ledger.keep_recent(w.buf.clone(), w.frames);
            // An adopted write is a sealed chunk: due at once.
            !adopting && (adopt || ledger.pending_bytes() >= sh.cfg.ledger_flush_bytes)
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
            self.opened();
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
            self.opened();
            return Ok(None);
        }
        Err(LogError::Config(
            "no journal segment is free although the ledger is durable".into(),
        ))
    }

    /// Tells an adopting ledger which segment the journal now writes (the one
    /// before it is sealed).
    fn opened(&self) {
        let mut ledger = self.shared.ledger.borrow_mut();
        if ledger.is_adopting() {
            if let Some(s) = self.journal.active() {
                ledger.journal_segment_opened(s);
            }
        }
    }

    /// Fails `p` and every append after it (not fatal: the log goes on). Only called
    /// with no write in flight.
    fn fail_pending(&mut self, p: LaidOut, e: LogError) {
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
