//! Adopted journal segments (`journal_adopt`, `docs/write-once.md`): the ledger's
//! data kept where the journal wrote it, found through runs.
//!
//! Owns, per partition, the runs of its offsets that live in journal segments (the
//! live ones the journal still holds, and those adopted into
//! `<ledger_dir>/mixed/`); the list of live segments not yet adopted, in order;
//! what the log needs to adopt the oldest sealed one (its run index); and loading
//! the adopted segments at start-up, rebuilding a missing or damaged index from its
//! segment. It never writes, renames or syncs a segment: the log's adoption step
//! does (`log::adopt`), and tells the ledger when it is done.
//!
//! Mixed segments hold only what the journal wrote, so a partition's offsets are:
//! its per-partition segments (written before adoption was turned on), then its
//! runs, dense. Turning adoption off again while mixed segments exist is refused.

use super::mixed::{Run, RunIndex};
use super::{Ledger, Partition};
use crate::error::{LogError, Result};
use crate::frame::{Header, Kind};
use crate::fs;
use crate::journal::{Dropped, Journal, OpenSegment, SegmentHeader};
use glommio::io::DmaFile;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The directory of adopted segments, inside the core's ledger directory.
pub const MIXED_DIR: &str = "mixed";

/// The file start-up renames from the journal's directory into the ledger's to
/// learn whether they are on one file system; one a crash left is removed.
pub const ADOPT_PROBE: &str = "adopt-probe.tmp";

/// The extension of a freed adopted segment kept to become a journal slot.
const FREE_EXT: &str = "free";

/// A journal segment file as reads see it: renamed on adoption. Open while live;
/// adopted, kept open among the `ADOPTED_OPEN_MAX` segments adopted or read
/// last, else opened by the next read that needs it, so open files stay bounded
/// however many segments the ledger keeps.
pub struct SegFile {
    file: RefCell<Option<Rc<DmaFile>>>,
    pub(super) path: RefCell<PathBuf>,
    /// The bytes of the runs it held when adopted: copy-out weighs what is left
    /// of them (`copy_out`).
    pub(super) run_bytes: std::cell::Cell<u64>,
}

/// Adopted segments whose files stay open: at 64 MiB a segment, 4 GiB of each
/// core's newest (or last read) data; a job catching up reads them in turn.
const ADOPTED_OPEN_MAX: usize = 64;

impl SegFile {
    fn new(file: Option<Rc<DmaFile>>, path: PathBuf) -> Rc<SegFile> {
        Rc::new(SegFile {
            file: RefCell::new(file),
            path: RefCell::new(path),
            run_bytes: std::cell::Cell::new(0),
        })
    }

    /// The file, and whether it was opened just now (it was not kept open).
    pub(super) async fn file(&self) -> Result<(Rc<DmaFile>, bool)> {
        let kept = self.file.borrow().clone();
        if let Some(f) = kept {
            return Ok((f, false));
        }
        let path = self.path.borrow().clone();
        let f = DmaFile::open(&path)
            .await
            .map_err(|e| LogError::io("opening", &path, e))?;
        Ok((Rc::new(f), true))
    }
}

/// One run of a partition and the segment that holds it.
pub(super) struct PartRun {
    pub(super) segment_seq: u64,
    pub(super) file: Rc<SegFile>,
    pub(super) run: Run,
}

/// A journal segment whose frames the ledger reads in place, not yet adopted.
struct LiveSegment {
    segment_seq: u64,
    slot: usize,
    first_seq: u64,
    last_seq: u64,
    sealed: bool,
    file: Rc<SegFile>,
}

/// The ledger's state of adoption (present when `journal_adopt` is on).
pub(super) struct Adopting {
    shard: u32,
    dir: PathBuf,
    /// A run never grows past this (the journal's largest write): reads take a
    /// run whole.
    run_bytes_max: u64,
    live: VecDeque<LiveSegment>,
    /// The adopted segments kept open, oldest first.
    open: VecDeque<Rc<SegFile>>,
    /// Every adopted segment, by number: deleted once no run is in it.
    segments: BTreeMap<u64, Rc<SegFile>>,
    /// Journal frames up to here are in adopted segments (or needed by nobody).
    adopted_through: u64,
    /// The newest adopted segment and its last frame: the journal never numbers
    /// below them again.
    segment_seq_max: u64,
    last_seq_max: u64,
    /// The segment copy-out found damaged: not tried again.
    copy_out_refused: Option<u64>,
    /// Segments retention freed, kept (`SSSS.free`) to become journal slots:
    /// their blocks are written, so the journal's synced writes into them need no
    /// extent conversion. At most `free_max` (the journal's slot count).
    free: Vec<PathBuf>,
    free_max: usize,
}

impl Adopting {
    /// Counts `seg` among the segments kept open, closing the oldest beyond
    /// `ADOPTED_OPEN_MAX`.
    fn keep_open(&mut self, seg: &Rc<SegFile>) {
        self.open.push_back(seg.clone());
        while self.open.len() > ADOPTED_OPEN_MAX {
            let old = self.open.pop_front().expect("more than the bound");
            old.file.borrow_mut().take();
        }
    }
}

/// What a retention pass over runs decided (see [`Ledger::take_expired_runs`]).
#[derive(Default)]
pub(super) struct RunsExpired {
    /// Partitions whose start moved.
    pub(super) starts: Vec<u32>,
    /// Adopted segments to delete (their index files beside them), out of the
    /// ledger's list already.
    pub(super) segments: Vec<(u64, Rc<SegFile>)>,
}

/// What the log must do to adopt the oldest sealed segment.
pub struct Adoption {
    pub segment_seq: u64,
    /// The journal slot it is in, and that slot's path.
    pub slot: usize,
    pub journal_path: PathBuf,
    pub file: Rc<DmaFile>,
    /// Its last frame's sequence number: the journal may reuse the slot once
    /// adopted.
    pub last_seq: u64,
    /// `None`: nothing in it is the ledger's (every frame was of deleted partitions
    /// or already held): the slot is released as it is, nothing is renamed.
    pub index: Option<RunIndex>,
    /// Where the segment and its index go.
    pub seg_path: PathBuf,
    pub index_path: PathBuf,
}

impl Partition {
    /// The run that holds `offset`, as an index into `runs`.
    pub(super) fn run_index(&self, offset: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.run.base_offset <= offset);
        let i = i.checked_sub(1)?;
        (offset < self.runs[i].run.end_offset).then_some(i)
    }

    /// Its runs in adopted segment `segment_seq`.
    pub(super) fn runs_in(&self, segment_seq: u64) -> Vec<Run> {
        let from = self.runs.partition_point(|r| r.segment_seq < segment_seq);
        let to = self.runs.partition_point(|r| r.segment_seq <= segment_seq);
        self.runs.range(from..to).map(|r| r.run).collect()
    }

    fn push_run(&mut self, segment_seq: u64, file: &Rc<SegFile>, run: Run) {
        self.next_offset = run.end_offset;
        self.runs.push_back(PartRun {
            segment_seq,
            file: file.clone(),
            run,
        });
    }
}

impl Ledger {
    /// Whether this ledger adopts journal segments.
    pub fn is_adopting(&self) -> bool {
        self.adopting.is_some()
    }

    fn adopting_mut(&mut self) -> &mut Adopting {
        self.adopting.as_mut().expect("journal_adopt is on")
    }

    /// Journal frames up to this sequence number no longer need their journal slot
    /// (`None`: not adopting; the copy path decides).
    pub fn adopted_through(&self) -> Option<u64> {
        self.adopting.as_ref().map(|a| a.adopted_through)
    }

    /// Every journal frame up to `seq` is in the ledger (a clean stop said so): the
    /// journal may reuse the segments holding them.
    pub fn release_through(&mut self, seq: u64) {
        let a = self.adopting_mut();
        a.adopted_through = a.adopted_through.max(seq);
    }

    /// The newest adopted segment's number and its last frame's sequence number
    /// (zeros when none): the journal continues above both.
    pub fn adopted_floor(&self) -> (u64, u64) {
        self.adopting
            .as_ref()
            .map_or((0, 0), |a| (a.segment_seq_max, a.last_seq_max))
    }

    /// The journal opened segment `s` (frames from now on go there); the one
    /// before it, if any, is sealed.
    pub fn journal_segment_opened(&mut self, s: OpenSegment) {
        let a = self.adopting_mut();
        if let Some(prev) = a.live.back_mut() {
            prev.sealed = true;
        }
        a.live.push_back(LiveSegment {
            segment_seq: s.segment_seq,
            slot: s.slot,
            first_seq: s.first_seq,
            last_seq: s.first_seq - 1,
            sealed: false,
            file: SegFile::new(Some(s.file), s.path),
        });
    }

    /// The journal sealed its active segment (a clean stop, or recovery's end).
    /// `last_seq`, when given, is its last frame (recovery counts frames the
    /// ledger did not take).
    pub fn journal_segment_sealed(&mut self, last_seq: Option<u64>) {
        if let Some(s) = self.adopting_mut().live.back_mut() {
            s.sealed = true;
            if let Some(l) = last_seq {
                s.last_seq = s.last_seq.max(l);
            }
        }
    }

    /// Takes the data frames of one journal write (or of recovery) in the active
    /// segment: `frames` are (position in the write, header), the write at
    /// `file_pos` in the segment file. Each continues its partition exactly.
    pub fn add_frames(&mut self, file_pos: u64, frames: &[(usize, Header)]) {
        let a = self.adopting.as_mut().expect("journal_adopt is on");
        let max = a.run_bytes_max;
        let live = a.live.back_mut().expect("an open journal segment");
        let (segment_seq, file) = (live.segment_seq, live.file.clone());
        for &(pos, h) in frames {
            live.last_seq = live.last_seq.max(h.seq);
            if h.kind != Kind::Data {
                continue;
            }
            let p = self
                .partitions
                .get_mut(&h.partition)
                .expect("journal frames name known partitions");
            assert_eq!(h.base_offset, p.next_offset, "ledger offsets are dense");
            let at = file_pos + pos as u64;
            let joined = p
                .runs
                .back_mut()
                .is_some_and(|r| r.segment_seq == segment_seq && r.run.extend(at, &h, max));
            if joined {
                p.next_offset = h.end_offset();
            } else {
                p.push_run(segment_seq, &file, Run::of_frame(at, &h));
            }
        }
    }

    /// Offsets `from..to` of `partition` whose only copy was damaged (recovery):
    /// kept as a lost run of the active segment, so offsets stay dense.
    pub fn add_lost(&mut self, partition: u32, (from, to): (u64, u64)) {
        let a = self.adopting.as_ref().expect("journal_adopt is on");
        let live = a.live.back().expect("an open journal segment");
        let (segment_seq, file) = (live.segment_seq, live.file.clone());
        if let Some(p) = self.partitions.get_mut(&partition) {
            assert_eq!(from, p.next_offset, "ledger offsets are dense");
            p.push_run(segment_seq, &file, lost_run(partition, from, to));
        }
    }

    /// The oldest live segment, when it is sealed and every frame in it is durable
    /// (`durable_seq`): what adopting it takes.
    pub fn next_adoption(&self, durable_seq: u64) -> Option<Result<Adoption>> {
        let a = self.adopting.as_ref()?;
        let s = a
            .live
            .front()
            .filter(|s| s.sealed && s.last_seq <= durable_seq)?;
        if s.segment_seq <= a.segment_seq_max {
            // Only a journal header rebuilt from damage can number a segment so
            // (`Journal::open`); adopting it would replace an adopted segment.
            return Some(Err(LogError::corrupt(
                &s.file.path.borrow(),
                format!(
                    "journal segment numbered {} but segments up to {} are adopted already: not adopted; move it away",
                    s.segment_seq, a.segment_seq_max
                ),
            )));
        }
        let mut runs = Vec::new();
        for p in self.partitions.values() {
            runs.extend(p.runs_in(s.segment_seq));
        }
        let name = super::files::segment_name(s.segment_seq, "");
        let index = (!runs.is_empty())
            .then(|| RunIndex::from_runs(a.shard, s.segment_seq, (s.first_seq, s.last_seq), runs));
        Some(Ok(Adoption {
            segment_seq: s.segment_seq,
            slot: s.slot,
            journal_path: s.file.path.borrow().clone(),
            file: s
                .file
                .file
                .borrow()
                .clone()
                .expect("a live segment's file is open"),
            last_seq: s.last_seq,
            index,
            seg_path: a.dir.join(format!("{name}seg")),
            index_path: a.dir.join(format!("{name}index")),
        }))
    }

    /// The log adopted (or released) the oldest live segment, now at `seg_path`.
    pub fn adopted(&mut self, done: &Adoption) {
        let a = self.adopting_mut();
        let s = a.live.pop_front().expect("a live segment");
        assert_eq!(s.segment_seq, done.segment_seq, "segments adopted in order");
        if let Some(index) = &done.index {
            *s.file.path.borrow_mut() = done.seg_path.clone();
            s.file.run_bytes.set(index.run_bytes());
            a.segment_seq_max = a.segment_seq_max.max(s.segment_seq);
            a.last_seq_max = a.last_seq_max.max(s.last_seq);
            a.segments.insert(s.segment_seq, s.file.clone());
            a.keep_open(&s.file);
        }
        a.adopted_through = a.adopted_through.max(s.last_seq);
    }

    /// A read opened an adopted segment's file: it stays open for the reads after
    /// it (a job catching up reads a segment many times over).
    pub(super) fn opened_for_read(&mut self, seg: &Rc<SegFile>, file: Rc<DmaFile>) {
        if let Some(a) = self.adopting.as_mut() {
            if a.segments.values().any(|s| Rc::ptr_eq(s, seg)) {
                *seg.file.borrow_mut() = Some(file);
                a.keep_open(seg);
            }
        }
    }

    /// Loads the adopted segments of `<dir>/mixed` (with `adopt`; without, refuses
    /// a directory that holds any) and starts adopting. Runs after [`Ledger::open`]
    /// and before the journal is replayed: a partition's runs continue its
    /// segments. A missing or damaged index is rebuilt from its segment; runs that
    /// repeat what the partition holds are skipped, a gap is kept as lost.
    pub async fn open_mixed(
        this: &RefCell<Self>,
        (shard, adopt, run_bytes_max, free_max): (u32, bool, usize, usize),
        report: &mut Vec<Dropped>,
        rebuilt: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let dir = this.borrow().dir.join(MIXED_DIR);
        let (listed, mut free) = if fs::exists(&dir).await {
            list_mixed(&dir).await?
        } else {
            Default::default()
        };
        if !adopt {
            if let Some(seq) = listed.first() {
                return Err(LogError::Config(format!(
                    "{} holds adopted journal segments (from segment {seq}): this ledger was written with journal_adopt = true; keep it on",
                    dir.display()
                )));
            }
            return Ok(());
        }
        if !fs::exists(&dir).await {
            fs::create_dir_all(&dir).await?;
            let ledger_dir = this.borrow().dir.clone();
            fs::sync_dir(&ledger_dir).await?;
        }
        this.borrow_mut().adopting = Some(Adopting {
            shard,
            dir: dir.clone(),
            run_bytes_max: run_bytes_max as u64,
            live: VecDeque::new(),
            open: VecDeque::new(),
            segments: BTreeMap::new(),
            adopted_through: 0,
            segment_seq_max: 0,
            last_seq_max: 0,
            copy_out_refused: None,
            free: Vec::new(),
            free_max,
        });
        // Beyond what the journal can take, freed segments are removed.
        while free.len() > free_max {
            let path = free.pop().expect("more than the bound");
            fs::remove_file(&path).await?;
        }
        this.borrow_mut().adopting_mut().free = free;
        for seq in listed {
            let name = super::files::segment_name(seq, "");
            let seg_path = dir.join(format!("{name}seg"));
            let index_path = dir.join(format!("{name}index"));
            let decoded = match fs::read(&index_path).await {
                Ok(bytes) => RunIndex::decode(&bytes),
                Err(e) => Err(e.to_string()),
            };
            let index = match decoded {
                Ok(i) if i.segment_seq == seq && i.shard == shard => i,
                other => {
                    let why = other
                        .err()
                        .unwrap_or_else(|| "names another segment".into());
                    tracing::warn!(path = %index_path.display(), "{why}; rebuilt from its segment");
                    let file = DmaFile::open(&seg_path)
                        .await
                        .map_err(|e| LogError::io("opening", &seg_path, e))?;
                    let i = rebuild_index(&file, &seg_path, (shard, seq), run_bytes_max).await?;
                    let _ = file.close().await;
                    fs::write_durable(&index_path, i.encode()).await?;
                    rebuilt.push(index_path);
                    i
                }
            };
            // Opened per read (`SegFile::file`).
            let seg = SegFile::new(None, seg_path);
            this.borrow_mut().register(&index, &seg, report);
        }
        Ok(())
    }

    /// Adds an adopted segment's runs to their partitions (see [`Ledger::open_mixed`]).
    fn register(&mut self, index: &RunIndex, seg: &Rc<SegFile>, report: &mut Vec<Dropped>) {
        let path = seg.path.borrow().clone();
        let mut unknown = std::collections::BTreeSet::new();
        for &run in index.runs() {
            let Some(p) = self.partitions.get_mut(&run.partition) else {
                if !self.deleted.contains(&run.partition) {
                    unknown.insert(run.partition);
                }
                continue;
            };
            let have = p.next_offset;
            if run.end_offset <= have {
                continue;
            }
            if run.base_offset < have {
                // A rebuilt index's run may begin inside what the partition's
                // segments hold (copied before adoption was turned on): reads
                // from `have` on skip its first batches.
                let after_runs = p
                    .runs
                    .back()
                    .is_none_or(|r| r.run.end_offset <= run.base_offset);
                if after_runs && !run.is_lost() {
                    p.push_run(index.segment_seq, seg, run);
                    continue;
                }
                report.push(Dropped {
                    path: path.clone(),
                    offset: run.pos,
                    reason: format!(
                        "run of partition {} at offsets {}..{} overlaps what it holds (up to {have}): not read",
                        p.name, run.base_offset, run.end_offset
                    ),
                });
                continue;
            }
            if run.base_offset > have && run.base_offset <= p.deleted_before {
                // Retention or DeleteRecords moved the start past the gap: the
                // segments that held it are gone on purpose.
                p.push_run(index.segment_seq, seg, run);
                continue;
            }
            if run.base_offset > have {
                report.push(Dropped {
                    path: path.clone(),
                    offset: run.pos,
                    reason: format!(
                        "partition {}: offsets {have}..{} are in no segment: kept as lost",
                        p.name, run.base_offset
                    ),
                });
                p.push_run(
                    index.segment_seq,
                    seg,
                    lost_run(run.partition, have, run.base_offset),
                );
            }
            p.push_run(index.segment_seq, seg, run);
        }
        for id in unknown {
            report.push(Dropped {
                path: path.clone(),
                offset: 0,
                reason: format!(
                    "runs of partition id {id}, which has no ledger directory: not read"
                ),
            });
        }
        seg.run_bytes.set(index.run_bytes());
        let a = self.adopting_mut();
        a.segments.insert(index.segment_seq, seg.clone());
        a.segment_seq_max = a.segment_seq_max.max(index.segment_seq);
        a.last_seq_max = a.last_seq_max.max(index.last_seq);
        a.adopted_through = a.adopted_through.max(index.last_seq);
    }

    /// Retention over runs: drops each partition's oldest runs of adopted segments
    /// while its retention limits say so (bytes over its segments and runs, the
    /// age of a run's newest batch), or while they are superseded or deleted
    /// (DeleteRecords), never past a checkpoint's hold (`retain_from`) and only
    /// once its own segments are gone (they are older). Then takes out the adopted
    /// segments no run is in any more and no read holds. Returns the partitions
    /// whose start moved, to record (`LOG_START_FILE`), and the segments to delete.
    pub(super) fn take_expired_runs(&mut self, now_ms: i64) -> RunsExpired {
        let mut out = RunsExpired::default();
        let Some(adopted_max) = self.adopting.as_ref().map(|a| a.segment_seq_max) else {
            return out;
        };
        let limits = self.limits.clone();
        let mut held = HashSet::new();
        for p in self.partitions.values_mut() {
            let (retention_bytes, retention_ms) = p.retention(&limits);
            // Runs go only once the partition's own segments are gone, so its
            // size is its runs'.
            let mut total: u64 = p.runs.iter().map(|r| u64::from(r.run.len)).sum();
            let mut dropped = false;
            while let Some(r) = p.runs.front().filter(|_| p.segments.is_empty()) {
                let adopted = r.segment_seq <= adopted_max;
                let hold = p.retain_from.is_some_and(|keep| r.run.end_offset > keep);
                let over_size = retention_bytes.is_some_and(|max| total > max);
                let cutoff = retention_ms.map(|ms| now_ms.saturating_sub(ms as i64));
                let too_old = cutoff.is_some_and(|c| r.run.max_timestamp_ms < c);
                let gone = r.run.end_offset <= p.deleted_before
                    || p.superseded_before.is_some_and(|b| r.run.end_offset <= b);
                if !adopted || hold || !(over_size || too_old || gone) {
                    break;
                }
                total -= u64::from(r.run.len);
                p.runs.pop_front();
                dropped = true;
            }
            if dropped {
                let start = p.runs.front().map_or(p.next_offset, |r| r.run.base_offset);
                p.deleted_before = p.deleted_before.max(start);
                out.starts.push(p.id);
            }
            held.extend(p.runs.iter().map(|r| r.segment_seq));
        }
        let a = self.adopting.as_mut().expect("adopting");
        let free: Vec<u64> = a
            .segments
            .iter()
            .filter(|(seq, seg)| {
                let kept_open = a.open.iter().filter(|o| Rc::ptr_eq(o, seg)).count();
                // The newest stays: its number and its index's last frame are the
                // floor the journal numbers above at the next start, and freed
                // segments hold frames numbered below it.
                let newest = **seq == a.segment_seq_max;
                !newest && !held.contains(seq) && Rc::strong_count(seg) == 1 + kept_open
            })
            .map(|(&seq, _)| seq)
            .collect();
        for seq in free {
            let seg = a.segments.remove(&seq).expect("listed");
            a.open.retain(|o| !Rc::ptr_eq(o, &seg));
            out.segments.push((seq, seg));
        }
        out
    }

    /// Puts back adopted segments a retention pass took out but did not delete.
    pub(super) fn keep_adopted(&mut self, segments: Vec<(u64, Rc<SegFile>)>) {
        if let Some(a) = self.adopting.as_mut() {
            a.segments.extend(segments);
        }
    }

    /// The adopted segments and their numbers, oldest first.
    pub(super) fn adopted_segments(&self) -> impl Iterator<Item = (u64, &Rc<SegFile>)> {
        self.adopting
            .iter()
            .flat_map(|a| a.segments.iter().map(|(&seq, seg)| (seq, seg)))
    }

    /// The adopted segment copy-out found damaged (it is not tried again).
    pub(super) fn copy_out_refused(&self) -> Option<u64> {
        self.adopting.as_ref()?.copy_out_refused
    }

    pub(super) fn refuse_copy_out(&mut self, segment_seq: u64) {
        if let Some(a) = self.adopting.as_mut() {
            a.copy_out_refused = Some(segment_seq);
        }
    }

    /// Where an adopted segment retention frees goes: kept as a segment for the
    /// journal (its new path) while fewer than `free_max` are, else `None` (it is
    /// removed).
    pub(super) fn keep_freed(&mut self, seg_path: &Path) -> Option<PathBuf> {
        let a = self.adopting.as_mut()?;
        (a.free.len() < a.free_max).then(|| seg_path.with_extension(FREE_EXT))
    }

    /// A freed segment now at `path` (see [`Ledger::keep_freed`]).
    pub(crate) fn freed(&mut self, path: PathBuf) {
        if let Some(a) = self.adopting.as_mut() {
            a.free.push(path);
        }
    }

    /// A freed segment for a journal slot, if any is kept: its blocks are written.
    pub fn take_free(&mut self) -> Option<PathBuf> {
        self.adopting.as_mut()?.free.pop()
    }

    /// The newest adopted segment's number (`None`: not adopting).
    pub(super) fn adopted_segment_max(&self) -> Option<u64> {
        self.adopting.as_ref().map(|a| a.segment_seq_max)
    }

    /// Recovery: a partition that holds nothing (no segment, run or chunk) whose
    /// recorded start is at or past `base` starts at `base`, the first frame the
    /// journal still has of it (retention or DeleteRecords took everything before,
    /// and its start may lie inside that frame). `false` when it does not apply.
    pub fn restart_empty_at(&mut self, id: u32, base: u64) -> bool {
        let Some(p) = self.partitions.get_mut(&id) else {
            return false;
        };
        let empty = p.segments.is_empty() && p.runs.is_empty() && p.chunks.is_empty();
        if empty && p.next_offset < base && base <= p.deleted_before {
            p.next_offset = base;
            return true;
        }
        false
    }

    /// After recovery: a partition that holds nothing goes on from its recorded
    /// start (retention or DeleteRecords took everything), never from below it.
    pub fn raise_empty_to_start(&mut self) {
        for p in self.partitions.values_mut() {
            if p.segments.is_empty() && p.runs.is_empty() && p.chunks.is_empty() {
                p.next_offset = p.next_offset.max(p.deleted_before);
            }
        }
    }
}

fn lost_run(partition: u32, from: u64, to: u64) -> Run {
    Run {
        partition,
        base_offset: from,
        end_offset: to,
        pos: 0,
        len: 0,
        max_timestamp_ms: i64::MIN,
    }
}

/// The segment numbers in a mixed directory that have a segment file, ascending,
/// and the freed segments kept for the journal (`SSSS.free`). Leftovers of an
/// interrupted adoption are removed: temporaries, and an index whose segment never
/// arrived (the journal still holds it; it is adopted again).
async fn list_mixed(dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut segs = Vec::new();
    let mut indexes = Vec::new();
    let mut free = Vec::new();
    for entry in fs::read_dir(dir).await? {
        let name = super::files::name_of(&entry);
        if name.ends_with(".tmp") {
            fs::remove_file(&entry).await?;
            continue;
        }
        match super::files::parse_segment_name(&name) {
            Some((seq, "seg")) => segs.push(seq),
            Some((seq, "index")) => indexes.push((seq, entry)),
            Some((_, FREE_EXT)) => free.push(entry),
            _ => {
                return Err(LogError::corrupt(
                    &entry,
                    "foreign file among adopted segments (only NNNN.seg, NNNN.index and NNNN.free belong there); move it away",
                ))
            }
        }
    }
    for (seq, path) in indexes {
        if !segs.contains(&seq) {
            tracing::warn!(path = %path.display(), "removing the index of a segment never adopted");
            fs::remove_file(&path).await?;
        }
    }
    segs.sort_unstable();
    free.sort_unstable();
    Ok((segs, free))
}

/// The run index of an adopted segment, from its frames.
async fn rebuild_index(
    file: &DmaFile,
    path: &Path,
    (shard, seq): (u32, u64),
    run_bytes_max: usize,
) -> Result<RunIndex> {
    let size = file
        .file_size()
        .await
        .map_err(|e| LogError::io("reading size of", path, e))?;
    let bytes = crate::journal::read_all(file, path, size).await?;
    let header = SegmentHeader::decode(&bytes).map_err(|why| {
        LogError::corrupt(path, format!("adopted segment without a header: {why}"))
    })?;
    let scan = Journal::scan(path, &bytes, header.first_seq, true);
    let mut index = RunIndex::from_frames(shard, seq, &scan.frames, run_bytes_max);
    index.first_seq = header.first_seq;
    index.last_seq = scan.next_seq.saturating_sub(1);
    Ok(index)
}
