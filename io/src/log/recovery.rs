//! Start-up recovery: what the journal holds that the ledger lacks goes back into it.
//!
//! Owns the replay of the journal chain into the ledger, the accounting of what was
//! dropped, damaged or lost, and the report of it. Keeps every valid frame; fills
//! offsets only a damaged frame held with payload-less entries, so offsets stay
//! dense. Runs once, before the log takes appends; never acknowledges anything.
//!
//! After a clean stop it reads no journal segment: the stop left `clean-stop` in
//! the journal directory (every frame in the ledger and synced, the journal's
//! next sequence number), which recovery takes and removes, durably, before
//! anything is written, so a crash after this start is recovered from the
//! journal as always. A ledger found damaged at open (a segment cut short, written
//! bytes after a zeroed block, an index rebuilt) is repaired from the journal
//! whatever the marker says.

use crate::config::{Durability, JournalAdopt, LogConfig};
use crate::error::Result;
use crate::frame::{self, Header, HEADER_LEN};
use crate::journal::{Damaged, Dropped, Journal, RecoveredEnd};
use crate::ledger::{Ledger, LedgerLimits};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

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
    /// The last stop was clean: the journal was not read.
    pub clean_stop: bool,
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

/// The journal and the ledger as recovery left them, and what it found.
pub(super) struct Recovered {
    pub(super) journal: Journal,
    pub(super) ledger: RefCell<Ledger>,
    /// The sequence number of the next journal frame.
    pub(super) next_seq: u64,
    pub(super) report: RecoveryReport,
}

/// Opens the ledger and the journal and replays into the ledger what it lacks.
pub(super) async fn recover(cfg: &LogConfig) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let clean = take_clean_stop(cfg).await?;
    let limits = LedgerLimits {
        segment_bytes: cfg.ledger_segment_bytes,
        flush_bytes: cfg.ledger_flush_bytes,
        index_interval_bytes: u64::from(cfg.index_interval_bytes),
        retention_bytes: cfg.retention_bytes,
        retention_ms: cfg.retention_ms,
        frame_bytes_max: cfg.frame_bytes_max(),
    };
    let ledger = Ledger::open(
        &cfg.ledger_dir,
        limits,
        cfg.partitions_max,
        &mut report.dropped,
        &mut report.indexes_rebuilt,
    )
    .await?;
    let ledger = RefCell::new(ledger);
    let (adopt, apart) = decide_adoption(cfg).await?;
    Ledger::open_mixed(
        &ledger,
        (
            cfg.shard,
            adopt,
            cfg.journal_flush_bytes_max,
            cfg.journal_segments as usize,
        ),
        &mut report.dropped,
        &mut report.indexes_rebuilt,
    )
    .await?;
    if adopt {
        prepare_adopting_journal(cfg, apart).await?;
    }
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
    let (seq_floor, last_seq_floor) = ledger.borrow().adopted_floor();
    if adopt {
        journal.set_adopting(seq_floor);
    }
    // The marker names where the chain it was written for ends; anything else
    // (a journal moved in from elsewhere) is read as always. So is the journal
    // when the ledger or a journal header was found damaged at open (a segment
    // cut short, an index rebuilt): the journal may still hold what it took.
    let last_first = journal.chain().last().map(|&(_, first)| first);
    let found_whole =
        report.dropped.is_empty() && report.indexes_rebuilt.is_empty() && report.damaged.is_empty();
    // Adopting, a clean stop adopted every segment: an empty chain is whole.
    let chain_ok = |n: u64| last_first.map_or(adopt, |f| f <= n);
    let trusted = clean.filter(|&n| found_whole && chain_ok(n));
    let next_seq = match trusted {
        Some(n) => {
            for (slot, _) in journal.chain() {
                // Every frame is in the ledger: each segment may be reused.
                journal.set_last_seq(slot, n - 1);
            }
            if adopt {
                ledger.borrow_mut().release_through(n - 1);
            }
            journal.finish_recovery(None).await?;
            report.clean_stop = true;
            n
        }
        None => replay(&mut journal, &ledger, &mut report).await?,
    };
    // Adopted segments may have taken every journal segment: number on above them.
    let next_seq = next_seq.max(last_seq_floor.saturating_add(1));
    ledger.borrow_mut().raise_empty_to_start();
    Ok(Recovered {
        journal,
        ledger,
        next_seq,
        report,
    })
}

/// Whether this log adopts sealed journal segments (`journal_adopt`): as set, or,
/// with `auto`, when journal and ledger are on one file system or the ledger holds
/// adopted segments already (then it must go on; [`prepare_adopting_journal`]
/// says whether it can). With it, why the two are not on one file system, when
/// they are not (see [`one_file_system`]).
async fn decide_adoption(cfg: &LogConfig) -> Result<(bool, Option<String>)> {
    if cfg.journal_adopt == JournalAdopt::Off {
        return Ok((false, None));
    }
    // Probed once: with `true` the answer only decides whether start is refused.
    let apart = one_file_system(cfg).await?;
    if cfg.journal_adopt == JournalAdopt::On || apart.is_none() {
        return Ok((true, apart));
    }
    let mixed = cfg.ledger_dir.join(crate::ledger::MIXED_DIR);
    let held = crate::fs::exists(&mixed).await
        && crate::fs::read_dir(&mixed)
            .await?
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "seg"));
    if !held && cfg.shard == 0 {
        tracing::info!(
            journal = %cfg.journal_dir.display(),
            ledger = %cfg.ledger_dir.display(),
            "journal and ledger on separate file systems: sealed journal segments are copied into the ledger (journal_adopt = auto)"
        );
    }
    Ok((held, apart))
}

/// `None` when a file renames from the journal's directory into the ledger's: they
/// are on one file system. Else why not. A rename proves it (a device number would
/// not: two bind mounts of one file system share it and still refuse one).
async fn one_file_system(cfg: &LogConfig) -> Result<Option<String>> {
    crate::fs::create_dir_all(&cfg.journal_dir).await?;
    crate::fs::create_dir_all(&cfg.ledger_dir).await?;
    let probe = cfg.journal_dir.join("adopt-probe.seg.tmp");
    let landed = cfg.ledger_dir.join(crate::ledger::ADOPT_PROBE);
    crate::fs::write(&probe, Vec::new()).await?;
    let renamed = crate::fs::rename(&probe, &landed).await;
    let left = if renamed.is_ok() { &landed } else { &probe };
    if let Err(e) = crate::fs::remove_file(left).await {
        // The next start removes it (the journal and the ledger skip it).
        tracing::warn!(path = %left.display(), "could not remove the probe file: {e}");
    }
    Ok(renamed.err().map(|e| e.to_string()))
}

/// Before the journal opens adopting: journal and ledger must be on one file system
/// (`apart` says why they are not; adoption renames: better refused now than at the
/// first adoption), and a slot whose file an interrupted adoption renamed away gets
/// a new one, not zero-filled.
async fn prepare_adopting_journal(cfg: &LogConfig, apart: Option<String>) -> Result<()> {
    if let Some(e) = apart {
        let advice = match cfg.journal_adopt {
            JournalAdopt::On => "set journal_adopt = false to keep them on separate devices",
            _ => "the ledger holds adopted journal segments, so the journal must stay beside it: move journal_dir back",
        };
        return Err(crate::error::LogError::Config(format!(
            "journal_adopt needs journal_dir ({}) and ledger_dir ({}) on one file system: adoption renames sealed journal segments into the ledger, and a rename between them failed ({e}); {advice}",
            cfg.journal_dir.display(),
            cfg.ledger_dir.display()
        )));
    }
    let mut created = false;
    for slot in 0..cfg.journal_segments as usize {
        let path = crate::journal::slot_path(&cfg.journal_dir, slot);
        if !crate::fs::exists(&path).await {
            crate::journal::create_unfilled_segment(&path, cfg.journal_segment_bytes).await?;
            created = true;
        }
    }
    if created {
        crate::fs::sync_dir(&cfg.journal_dir).await?;
    }
    Ok(())
}

/// The file a clean stop leaves in the journal directory.
pub const CLEAN_STOP_FILE: &str = "clean-stop";

/// Records a clean stop: every frame before `next_seq` is in the ledger and
/// synced. Written last by [`super::ShardLog::close`].
pub(super) async fn write_clean_stop(cfg: &LogConfig, next_seq: u64) -> Result<()> {
    let body = format!(
        "tidewater clean stop\nshard {}\nnext_seq {next_seq}\n",
        cfg.shard
    );
    let text = format!("{body}crc {}\n", crc32c::crc32c(body.as_bytes()));
    crate::fs::write_durable(&cfg.journal_dir.join(CLEAN_STOP_FILE), text.into_bytes()).await?;
    Ok(())
}

/// The next sequence number a clean stop recorded, when its file is there and
/// whole. The file is removed, durably, either way: whatever happens after this
/// start, the next one reads the journal unless another clean stop says not to.
async fn take_clean_stop(cfg: &LogConfig) -> Result<Option<u64>> {
    let path = cfg.journal_dir.join(CLEAN_STOP_FILE);
    // A stop that died while writing the marker leaves only its temporary.
    let tmp = cfg.journal_dir.join(format!("{CLEAN_STOP_FILE}.tmp"));
    if crate::fs::exists(&tmp).await {
        crate::fs::remove_file(&tmp).await?;
    }
    if !crate::fs::exists(&path).await {
        return Ok(None);
    }
    let text = crate::fs::read_to_string(&path).await.ok();
    crate::fs::remove_file(&path).await?;
    crate::fs::sync_dir(&cfg.journal_dir).await?;
    let parsed = text.as_deref().and_then(|t| parse_clean_stop(t, cfg.shard));
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "clean-stop file unreadable: reading the journal");
    }
    Ok(parsed)
}

fn parse_clean_stop(text: &str, shard: u32) -> Option<u64> {
    let (body, crc) = text.rsplit_once("crc ")?;
    if crc.trim().parse::<u32>().ok()? != crc32c::crc32c(body.as_bytes()) {
        return None;
    }
    let mut lines = body.lines();
    (lines.next()? == "tidewater clean stop").then_some(())?;
    let of = |line: Option<&str>, key: &str| -> Option<u64> {
        line?.strip_prefix(key)?.strip_prefix(' ')?.parse().ok()
    };
    (of(lines.next(), "shard")? == u64::from(shard)).then_some(())?;
    of(lines.next(), "next_seq").filter(|&n| n > 0)
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
        let adopting = ledger.borrow().is_adopting();
        if adopting {
            // The ledger reads what it takes of this segment where it lies.
            let segment = journal.open_segment(slot);
            ledger.borrow_mut().journal_segment_opened(segment);
        }
        report.journal_segments_scanned += 1;
        report.frames_scanned += scan.frames.len() as u64;
        if !scan.damaged.is_empty() {
            // Evidence first: nothing writes to the segment before its copy exists.
            crate::journal::copy_aside(&path, first_seq, &bytes).await?;
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
                // A partition emptied by retention or DeleteRecords starts where
                // the journal's first frame of it does.
                let have = if header.base_offset > have
                    && l.restart_empty_at(header.partition, header.base_offset)
                {
                    header.base_offset
                } else {
                    have
                };
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
                if adopting {
                    l.add_frames(0, &[(pos, header)]);
                } else {
                    l.push_frame(&header, &bytes[pos..pos + header.frame_len()]);
                }
                report.frames_restored += 1;
            }
            if let Some(d) = damage.last() {
                last_damage = Some((d.path.clone(), d.offset));
            }
        }
        report.damaged.extend(scan.damaged.iter().cloned());
        journal.set_last_seq(slot, scan.next_seq - 1);
        if adopting {
            // Sealed now or by `finish_recovery`: adopted once recovery is done.
            ledger
                .borrow_mut()
                .journal_segment_sealed(Some(scan.next_seq - 1));
        }
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
        write_restored(ledger).await?;
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

/// Keeps memory to about one journal segment during replay: writes what the last
/// one restored into the ledger's chunks (none when adopting). On a full device
/// it stays in memory (bounded by the journal ring) and in the journal.
async fn write_restored(ledger: &RefCell<Ledger>) -> Result<()> {
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
    Ok(())
}

/// Keeps offsets `from..to` of `partition` dense with an entry of no payload (a
/// lost run, when adopting), and reports them lost.
fn fill_lost(
    l: &mut Ledger,
    partition: u32,
    (from, to): (u64, u64),
    seq: u64,
    (path, offset): (PathBuf, u64),
    report: &mut RecoveryReport,
) {
    if l.is_adopting() {
        l.add_lost(partition, (from, to));
    }
    let mut at = if l.is_adopting() { to } else { from };
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
