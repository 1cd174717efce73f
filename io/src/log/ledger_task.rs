//! The ledger's write-behind task: what the journal task handed to the ledger's
//! memory reaches the ledger's files, and journal segments become free to reuse.
//!
//! Owns when ledger chunks are written, when the ledger is synced and retention
//! applied, and which journal frames that makes safe to recycle
//! (`recyclable_seq`), or, with `journal_adopt`, adopts sealed journal segments
//! (`adopt`) instead. Every ledger write holds `ledger_io`, so the task and a
//! journal roll never write the ledger at once. A full device is remembered and
//! retried; any other failure stops the log. Never writes the journal.

use super::state::{fail_fatal, Shared};
use crate::error::{LogError, Result};
use crate::ledger::Ledger;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts the ledger task on this executor.
pub(super) fn spawn(sh: Rc<Shared>) -> glommio::task::JoinHandle<()> {
    glommio::spawn_local(run_ledger(sh)).detach()
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
pub(super) async fn make_ledger_durable(sh: &Shared) -> Result<()> {
    let _io = sh
        .ledger_io
        .acquire_permit(1)
        .await
        .map_err(|_| LogError::Closed)?;
    write_ledger(sh, true).await?;
    let durable_seq = sh.state.borrow().durable_seq;
    // Adopting, a journal segment is free once adopted (`adopt_sealed` says so);
    // copying, once every frame in it is in a segment file.
    let adopting = sh.ledger.borrow().is_adopting();
    let through = sh.ledger.borrow().written_through_seq(durable_seq);
    Ledger::sync(&sh.ledger).await?;
    if adopting {
        super::adopt::adopt_sealed(sh).await?;
    }
    let removed = Ledger::apply_retention(&sh.ledger, now_ms()).await;
    let mut st = sh.state.borrow_mut();
    if !adopting {
        st.recyclable_seq = st.recyclable_seq.max(through);
    }
    st.stats.ledger_syncs += 1;
    st.stats.segments_deleted += removed as u64;
    Ok(())
}

/// After a failed copy-out (a full device), the next is tried this much later.
const COPY_OUT_RETRY: Duration = Duration::from_secs(30);

/// Copies out of the oldest adopted segment when partitions kept longer than
/// their neighbours are about all that keep it (`Ledger::copy_out_plan`), one
/// partition at a time under `ledger_io`, so a journal roll waits for one
/// partition's copy at most. At most once per `ledger_flush_interval_ms`, after a
/// durable pass (a roll waiting for a slot gets its pass first). A failure is logged and leaves the runs where they
/// are; the next try comes `COPY_OUT_RETRY` later.
async fn copy_out(sh: &Shared) {
    if sh
        .state
        .borrow()
        .copy_out_retry_at
        .is_some_and(|t| Instant::now() < t)
    {
        return;
    }
    let Some(plan) = sh.ledger.borrow().copy_out_plan() else {
        return;
    };
    for id in plan.partitions() {
        let Ok(_io) = sh.ledger_io.acquire_permit(1).await else {
            return;
        };
        if sh.state.borrow().closing {
            return;
        }
        let res = Ledger::copy_out(&sh.ledger, &plan, id).await;
        let mut st = sh.state.borrow_mut();
        match res {
            Ok(n) => st.stats.copied_out_bytes += n,
            Err(e) => {
                tracing::warn!(
                    "copy-out failed (the adopted segment stays; tried again in {}s): {e}",
                    COPY_OUT_RETRY.as_secs()
                );
                st.copy_out_retry_at = Some(Instant::now() + COPY_OUT_RETRY);
                return;
            }
        }
    }
}

/// The ledger's write-behind task: writes full chunks as they fill, and everything
/// (synced, with retention) every `ledger_flush_interval_ms`. Runs beside the journal
/// task so the two devices work at once.
async fn run_ledger(sh: Rc<Shared>) {
    let interval = Duration::from_millis(sh.cfg.ledger_flush_interval_ms);
    let mut last_sync = Instant::now();
    let mut last_copy_out = Instant::now();
    loop {
        let seen = sh.ledger_work.epoch();
        if sh.state.borrow().closing || sh.state.borrow().fatal.is_some() {
            break;
        }
        // Taken either way: a pass that is due anyway also serves the roll's request.
        let wanted = sh.durable_wanted.take();
        let res = if wanted || last_sync.elapsed() >= interval {
            last_sync = Instant::now();
            let res = make_ledger_durable(&sh).await;
            // On its own clock: under load every pass is one a roll asked for.
            let due = last_copy_out.elapsed() >= interval;
            if res.is_ok() && due && sh.ledger.borrow().is_adopting() {
                last_copy_out = Instant::now();
                copy_out(&sh).await;
            }
            res
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
