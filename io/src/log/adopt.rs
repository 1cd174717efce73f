//! Adoption (`journal_adopt`): a sealed journal segment becomes the ledger's data
//! where it lies, instead of being copied (`docs/write-once.md`).
//!
//! Owns the file steps, in this order: the segment synced; its run index written
//! durably to `<ledger_dir>/mixed/SSSS.index`; the segment renamed to
//! `mixed/SSSS.seg` and cut after its last run; a file put in its journal slot (a
//! segment retention freed, `SSSS.free`, when one is kept: its blocks are written;
//! else a new one, allocated but not zero-filled); both directories synced. Only
//! then may the journal reuse the slot (`recyclable_seq`). A crash between any two steps leaves either the segment in
//! the journal (replayed and adopted again at the next start; an index without its
//! segment is removed) or the segment in `mixed/` (the missing slot is created
//! again). Never writes frames; the ledger decides what an index holds.

use super::state::Shared;
use crate::error::{LogError, Result};
use crate::frame;
use crate::fs;
use std::path::Path;

/// Adopts every sealed journal segment whose frames are all durable, oldest first.
/// Callers hold `ledger_io`.
pub(super) async fn adopt_sealed(sh: &Shared) -> Result<()> {
    loop {
        // What a clean stop released counts even when nothing is left to adopt.
        let through = sh.ledger.borrow().adopted_through().unwrap_or(0);
        let durable = {
            let mut st = sh.state.borrow_mut();
            st.recyclable_seq = st.recyclable_seq.max(through);
            st.durable_seq
        };
        let next = sh.ledger.borrow().next_adoption(durable);
        let Some(a) = next.transpose()? else {
            return Ok(());
        };
        if let Some(index) = &a.index {
            a.file
                .fdatasync()
                .await
                .map_err(|e| LogError::io("syncing", &a.journal_path, e))?;
            fs::write_durable(&a.index_path, index.encode()).await?;
            // Each step again only if it did not happen: an attempt that failed
            // part way (a full device) is taken up where it stopped. Segment
            // numbers only grow (`next_adoption` checks), so a segment already
            // at `seg_path` is this one, renamed by that attempt.
            if !fs::exists(&a.seg_path).await {
                fs::rename(&a.journal_path, &a.seg_path).await?;
            }
            // Out of the journal, cut after its last run (one sealed early, at a
            // stop, is mostly allocated space; what follows holds nothing the
            // index names). Never before the rename: a journal slot keeps its size.
            let end = index.runs().iter().map(|r| r.end_pos()).max().unwrap_or(0);
            let keep = frame::align_up(end as usize) as u64 + frame::BLOCK as u64;
            if keep < sh.cfg.journal_segment_bytes {
                a.file
                    .truncate(keep)
                    .await
                    .map_err(|e| LogError::io("truncating", &a.seg_path, e))?;
            }
            if !fs::exists(&a.journal_path).await {
                fill_slot(sh, &a.journal_path).await?;
            }
            fs::sync_dir(parent(&a.journal_path)).await?;
            fs::sync_dir(parent(&a.seg_path)).await?;
            tracing::debug!(path = %a.seg_path.display(), runs = index.runs().len(), "journal segment adopted");
        }
        sh.ledger.borrow_mut().adopted(&a);
        let mut st = sh.state.borrow_mut();
        st.stats.journal_segments_adopted += u64::from(a.index.is_some());
    }
}

/// Puts a file in a journal slot an adoption emptied: a freed adopted segment when
/// one is kept (written blocks: no extent conversion for the journal's synced
/// writes), else a new file, allocated but not zero-filled.
async fn fill_slot(sh: &Shared, slot: &Path) -> Result<()> {
    let bytes = sh.cfg.journal_segment_bytes;
    let free = sh.ledger.borrow_mut().take_free();
    if let Some(free) = free {
        match crate::journal::reuse_as_segment(&free, slot, bytes).await {
            Ok(()) => {
                sh.state.borrow_mut().stats.journal_segments_reused += 1;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(path = %free.display(), "a freed segment could not become a journal slot, so a new file is made: {e}");
                if fs::exists(&free).await {
                    sh.ledger.borrow_mut().freed(free);
                }
            }
        }
    }
    crate::journal::create_unfilled_segment(slot, bytes).await
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}
