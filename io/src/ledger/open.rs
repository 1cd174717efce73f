//! Opening the ledger directory at start-up: every partition recovered from its
//! files, before the log takes appends.
//!
//! Owns the checks of what the directory may hold (partition directories with a
//! meta file, tombstones, nothing foreign), finishing interrupted creations and
//! deletions, and rebuilding a segment's end and index from its frames. Keeps a
//! valid prefix of each segment; what it drops is reported, never silently lost.

use super::files::{
    empty_tombstone, name_of, parse_segment_name, read_meta, segment_name, META_FILE,
};
use super::segment::{open_segment, read_index, write_index, Segment};
use super::{Ledger, LedgerLimits, Partition};
use crate::error::{LogError, Result};
use crate::frame::{self, Header, Kind, Step};
use crate::fs;
use crate::journal::Dropped;
use glommio::io::DmaFile;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

impl Ledger {
    /// Opens the ledger directory, recovering every partition in it.
    pub async fn open(
        dir: &Path,
        limits: LedgerLimits,
        partitions_max: usize,
        report: &mut Vec<Dropped>,
        rebuilt: &mut Vec<PathBuf>,
    ) -> Result<Self> {
        fs::create_dir_all(dir)
            .await
            .map_err(|e| e.with_op("creating ledger directory"))?;
        // glommio resolves some calls (statx) by path: keep paths absolute.
        let dir = &fs::canonicalize(dir).await?;
        crate::journal::prime_device(dir).await?;
        let mut ledger = Ledger {
            dir: dir.to_path_buf(),
            limits,
            partitions: HashMap::new(),
            names: HashMap::new(),
            deleted: Default::default(),
            pending_bytes: 0,
            recent: VecDeque::new(),
            adopting: None,
            log_start_writes: Rc::new(glommio::sync::Semaphore::new(1)),
        };
        let mut dirs = Vec::new();
        let entries = fs::read_dir(dir)
            .await
            .map_err(|e| e.with_op("listing ledger directory"))?;
        for entry in entries {
            let name = name_of(&entry);
            if name == "lost+found" || name == ".tidewater-probe" || name == super::MIXED_DIR {
                continue;
            }
            if name == super::ADOPT_PROBE {
                // Left by a start-up that died between its rename and its removal.
                fs::remove_file(&entry).await?;
                continue;
            }
            if name.starts_with('.') && name.ends_with(".deleted") {
                // A deleted partition: keep its id, finish removing its data.
                let (id, _) = read_meta(&entry.join(META_FILE)).await?;
                empty_tombstone(&entry).await?;
                ledger.deleted.insert(id);
                continue;
            }
            if name.starts_with('.') && name.ends_with(".creating") {
                // A partition whose creation a crash interrupted; it was never
                // reported created.
                tracing::warn!(path = %entry.display(), "removing an unfinished partition");
                fs::remove_dir_all(&entry).await?;
                continue;
            }
            if !fs::is_dir(&entry).await || !fs::is_file(&entry.join(META_FILE)).await {
                return Err(LogError::corrupt(
                    &entry,
                    format!("foreign entry in the ledger directory (only partition directories with a {META_FILE} belong there); move it away"),
                ));
            }
            dirs.push(entry);
        }
        dirs.sort();
        if dirs.len() > partitions_max {
            return Err(LogError::TooManyPartitions(partitions_max));
        }
        for pdir in dirs {
            let p = ledger.recover_partition(&pdir, report, rebuilt).await?;
            if let Some(other) = ledger.partitions.get(&p.id) {
                return Err(LogError::corrupt(
                    &pdir.join(META_FILE),
                    format!(
                        "partition id {} is also used by {}",
                        p.id,
                        other.dir.display()
                    ),
                ));
            }
            ledger.names.insert(p.name.clone(), p.id);
            ledger.partitions.insert(p.id, p);
        }
        Ok(ledger)
    }

    async fn recover_partition(
        &self,
        pdir: &Path,
        report: &mut Vec<Dropped>,
        rebuilt: &mut Vec<PathBuf>,
    ) -> Result<Partition> {
        let (id, name) = read_meta(&pdir.join(META_FILE)).await?;
        let mut bases = Vec::new();
        let mut deleted_before = 0;
        let entries = fs::read_dir(pdir)
            .await
            .map_err(|e| e.with_op("listing partition"))?;
        for entry in entries {
            let fname = name_of(&entry);
            if fname.ends_with(".tmp") {
                // An index or meta file whose writing a crash interrupted; the real
                // one is rebuilt or still in place.
                tracing::warn!(path = %entry.display(), "removing an unfinished file");
                fs::remove_file(&entry).await?;
                continue;
            }
            match parse_segment_name(&fname) {
                _ if fname == META_FILE => {}
                _ if fname == super::LOG_START_FILE => {
                    let text = fs::read_to_string(&entry).await?;
                    deleted_before = text.trim().parse().map_err(|_| {
                        LogError::corrupt(&entry, "not a log start offset (one number)")
                    })?;
                }
                Some((base, "log")) => bases.push(base),
                Some((_, "index")) => {}
                _ => {
                    return Err(LogError::corrupt(
                        &entry,
                        "foreign file in a partition directory (only NNNN.log, NNNN.index, partition.meta and log-start belong there); move it away",
                    ))
                }
            }
        }
        bases.sort_unstable();
        let mut part = Partition {
            id,
            name,
            dir: pdir.to_path_buf(),
            segments: VecDeque::new(),
            chunks: VecDeque::new(),
            runs: VecDeque::new(),
            next_offset: 0,
            unsynced: Vec::new(),
            retain_from: None,
            superseded_before: None,
            limits: None,
            deleted_before,
        };
        for (i, &base) in bases.iter().enumerate() {
            let path = pdir.join(segment_name(base, "log"));
            let file = Rc::new(open_segment(&path, None).await?);
            let sealed_end = bases.get(i + 1).copied();
            let index_path = pdir.join(segment_name(base, "index"));
            let index = match sealed_end {
                Some(_) => read_index(&index_path).await,
                None => None,
            };
            let seg = match index {
                Some(idx) => Segment {
                    base_offset: base,
                    end_offset: idx.end_offset,
                    path,
                    file: Some(file),
                    write_pos: idx.write_pos,
                    index: idx.entries,
                    max_timestamp_ms: idx.max_timestamp_ms,
                },
                None => {
                    let seg = self
                        .scan_segment(id, base, path, file, sealed_end.is_none(), report)
                        .await?;
                    if sealed_end.is_some() {
                        tracing::warn!(path = %index_path.display(), "index missing or damaged; rebuilt from its segment");
                        write_index(&index_path, &seg).await?;
                        rebuilt.push(index_path);
                    }
                    seg
                }
            };
            let mut seg = seg;
            if sealed_end.is_some() {
                seg.file = None;
            }
            if let Some(next) = sealed_end {
                if seg.end_offset != next {
                    return Err(LogError::corrupt(
                        &seg.path,
                        format!(
                            "sealed segment ends at offset {} but the next segment starts at {next}",
                            seg.end_offset
                        ),
                    ));
                }
            }
            part.next_offset = seg.end_offset;
            part.segments.push_back(seg);
        }
        Ok(part)
    }

    /// Reads a segment and finds its valid frames; the active segment's end becomes its
    /// write position (block aligned down: a partial last block came from a torn write
    /// whose frames the journal still holds).
    async fn scan_segment(
        &self,
        id: u32,
        base: u64,
        path: PathBuf,
        file: Rc<DmaFile>,
        active: bool,
        report: &mut Vec<Dropped>,
    ) -> Result<Segment> {
        let size = file
            .file_size()
            .await
            .map_err(|e| LogError::io("reading size of", &path, e))?;
        let mut bytes = if active {
            // Preallocated: read up to the zeros after the last write, not to
            // the end (32 MiB by default, most of it never written).
            let zeros = self.limits.frame_bytes_max + frame::BLOCK;
            crate::journal::read_until_zeros(&file, &path, size, zeros).await?
        } else {
            crate::journal::read_all(&file, &path, size).await?
        };
        let mut scan = scan_frames(&bytes, id, base, &path);
        if (bytes.len() as u64) < size && !scan.ends_in_zeros {
            // The read stopped in a run of zeros that is not the end: inside a
            // frame written with a larger batch_bytes_max than today's. All of it.
            bytes = crate::journal::read_all(&file, &path, size).await?;
            scan = scan_frames(&bytes, id, base, &path);
        }
        let FrameScan {
            frames,
            valid_end,
            write_end,
            dropped,
            ..
        } = scan;
        report.extend(dropped);
        let mut seg = Segment {
            base_offset: base,
            end_offset: base,
            path,
            file: Some(file),
            write_pos: 0,
            index: Vec::new(),
            max_timestamp_ms: i64::MIN,
        };
        let mut last_indexed: Option<u64> = None;
        // The active segment is cut where its last whole write ended: the frames
        // of a torn (or lost) write after it are all still in the journal, and
        // a cut inside a write would leave the start of a dropped frame between
        // the last kept one and the next write, where reads would stop.
        let keep_end = if active {
            write_end.min(frame::align_down(valid_end))
        } else {
            frame::align_up(valid_end)
        };
        if keep_end < valid_end {
            tracing::info!(path = %seg.path.display(), from = keep_end, "partial last block of the ledger left for the journal to restore");
        }
        seg.end_offset = base;
        for (pos, header) in frames
            .into_iter()
            .filter(|(p, h)| p + h.frame_len() <= keep_end)
        {
            if last_indexed.is_none_or(|l| pos as u64 >= l + self.limits.index_interval_bytes) {
                seg.index.push((header.base_offset, pos as u64));
                last_indexed = Some(pos as u64);
            }
            seg.end_offset = header.end_offset();
            seg.max_timestamp_ms = seg.max_timestamp_ms.max(header.timestamp_ms);
        }
        seg.write_pos = keep_end as u64;
        Ok(seg)
    }
}

/// What a scan of a segment's bytes from the start found.
struct FrameScan {
    /// The frames of the partition, dense in offsets from the segment's base.
    frames: Vec<(usize, Header)>,
    /// Where the last of them ends, or the padding after it.
    valid_end: usize,
    /// The last block boundary the scan reached with every byte before it in
    /// whole frames and pads: where one of the ledger's padded writes ended.
    write_end: usize,
    dropped: Vec<Dropped>,
    /// It ended at a zeroed header with only zeros after it: where the
    /// segment's writes end.
    ends_in_zeros: bool,
}

/// Scans `bytes` (partition `id`'s segment at `base`, read from `path`) for its
/// valid frames and reports what ends them when that is not a clean end.
fn scan_frames(bytes: &[u8], id: u32, base: u64, path: &Path) -> FrameScan {
    let mut scan = FrameScan {
        frames: Vec::new(),
        valid_end: 0,
        write_end: 0,
        dropped: Vec::new(),
        ends_in_zeros: false,
    };
    let mut next_offset = base;
    let dropped = |offset: usize, reason: String| Dropped {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    for step in frame::Scanner::new(bytes, 0, bytes.len()) {
        let (Step::Frame { pos, .. } | Step::End { pos, .. }) = step;
        if pos == frame::align_down(pos) && pos <= bytes.len() {
            scan.write_end = scan.write_end.max(pos);
        }
        match step {
            Step::Frame { pos, header }
                if header.kind == Kind::Data
                    && header.partition == id
                    && header.base_offset == next_offset
                    && header.record_count > 0 =>
            {
                scan.frames.push((pos, header));
                next_offset = header.end_offset();
                scan.valid_end = pos + header.frame_len();
            }
            Step::Frame { pos, header } => {
                scan.dropped.push(dropped(pos, format!(
                    "unexpected frame (kind {:?}, partition {}, offset {}) where offset {} was expected",
                    header.kind, header.partition, header.base_offset, next_offset
                )));
                break;
            }
            Step::End { pos, why } => {
                if why != frame::Invalid::Zeroed {
                    scan.dropped.push(dropped(pos, why.to_string()));
                } else if !bytes[pos.min(bytes.len())..].iter().all(|&b| b == 0) {
                    // Written bytes after a block of zeros: a write that was
                    // lost. Reported, so the journal restores what follows.
                    let why = "zeroed block with written bytes after it (a lost write)";
                    scan.dropped.push(dropped(pos, why.into()));
                } else {
                    scan.ends_in_zeros = true;
                }
                // Padding after the last frame is part of the valid prefix.
                scan.valid_end = scan.valid_end.max(frame::align_down(pos));
            }
        }
    }
    scan
}
