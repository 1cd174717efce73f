//! Writing chunks to segments: which chunk is due, sealing a segment and starting
//! the next, the write itself, and syncing what was written.
//!
//! Owns the segment roll (trim, sync, index file, next segment created and its
//! directory synced) and the order of writes: one partition's chunks are written
//! oldest first, one in flight at a time. A short write (a full device without
//! preallocation) leaves the chunk in memory to be written again. Callers hold the
//! log's `ledger_io` permit; never decides durability for an append.

use super::chunk::first_seq_of;
use super::files::segment_name;
use super::segment::{index_bytes, open_segment, Segment};
use super::{Ledger, WriteJob};
use crate::error::{LogError, Result};
use crate::frame;
use crate::fs;
use glommio::io::DmaFile;
use std::rc::Rc;

impl Ledger {
    /// Partitions that have a chunk ready to write (full, or any when `all`). A
    /// chunk with a successor is full (the next frame did not fit), and so is a
    /// sealed one.
    pub fn due(&self, all: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .partitions
            .values()
            .filter(|p| {
                p.chunks.front().is_some_and(|c| {
                    !c.in_flight
                        && (all
                            || c.sealed
                            || c.len >= self.limits.flush_bytes
                            || p.chunks.len() > 1)
                })
            })
            .map(|p| p.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Prepares the write of `id`'s oldest chunk: pads and seals it (it takes no more
    /// frames), and rolls the segment first when it would not fit. Segment files are
    /// created here, so this may fail with `NoSpace`.
    pub async fn prepare_write(
        this: &std::cell::RefCell<Self>,
        id: u32,
    ) -> Result<Option<WriteJob>> {
        let (needs_roll, base) = {
            let l = this.borrow();
            let Some(p) = l.partitions.get(&id) else {
                return Ok(None);
            };
            let Some(c) = p.chunks.front().filter(|c| !c.in_flight) else {
                return Ok(None);
            };
            let len = frame::align_up(c.len) as u64;
            // A sealed last segment (its successor could not be created, e.g. on a
            // full device) takes no more writes: the roll is retried.
            let segment_bytes = p.segment_bytes(&l.limits);
            let roll = p.segments.back().is_none_or(|s| {
                s.file.is_none() || s.write_pos > 0 && s.write_pos + len > segment_bytes
            });
            (roll, c.base_offset)
        };
        if needs_roll {
            Self::roll(this, id, base).await?;
        }
        let mut l = this.borrow_mut();
        let p = l.partitions.get_mut(&id).expect("partition exists");
        let seg = p.segments.back().expect("an active segment");
        let file = seg.file.clone().expect("the active segment is open");
        let (path, pos) = (seg.path.clone(), seg.write_pos);
        let c = p.chunks.front_mut().expect("a chunk");
        let buf = c.seal();
        c.in_flight = true;
        Ok(Some(WriteJob {
            partition: id,
            file,
            path,
            pos,
            buf,
        }))
    }

    /// Seals the active segment (trim, index, sync) and creates the next at `base`.
    async fn roll(this: &std::cell::RefCell<Self>, id: u32, base: u64) -> Result<()> {
        Self::seal_active(this, id).await?;
        let (path, seg_bytes, dir) = {
            let l = this.borrow();
            let p = &l.partitions[&id];
            (
                p.dir.join(segment_name(base, "log")),
                p.segment_bytes(&l.limits),
                p.dir.clone(),
            )
        };
        let file = match open_segment(&path, Some(seg_bytes)).await {
            Ok(f) => f,
            Err(e) => {
                // Leave no half-made segment behind; the roll is retried later.
                let _ = fs::remove_file(&path).await;
                return Err(e);
            }
        };
        fs::sync_dir(&dir).await?;
        let mut l = this.borrow_mut();
        let p = l.partitions.get_mut(&id).expect("partition");
        p.segments.push_back(Segment {
            base_offset: base,
            end_offset: base,
            path,
            file: Some(Rc::new(file)),
            write_pos: 0,
            index: Vec::new(),
            max_timestamp_ms: i64::MIN,
        });
        Ok(())
    }

    /// Seals `id`'s active segment, when it has one: trimmed to what was written,
    /// synced, its index written durably, its file closed. It takes no more writes.
    pub(super) async fn seal_active(this: &std::cell::RefCell<Self>, id: u32) -> Result<()> {
        // Already sealed when an earlier roll sealed it and then failed to create
        // the next segment.
        let sealing = this.borrow().partitions.get(&id).and_then(|p| {
            let s = p.segments.back()?;
            Some((s.file.clone()?, s.path.clone(), s.write_pos))
        });
        let Some((file, spath, write_pos)) = sealing else {
            return Ok(());
        };
        file.truncate(write_pos)
            .await
            .map_err(|e| LogError::io("trimming", &spath, e))?;
        file.fdatasync()
            .await
            .map_err(|e| LogError::io("syncing", &spath, e))?;
        let (index_path, index) = {
            let l = this.borrow();
            let seg = l
                .partitions
                .get(&id)
                .and_then(|p| p.segments.back())
                .expect("segment");
            (seg.path.with_extension("index"), index_bytes(seg))
        };
        // Under `ledger_io`: nothing else changes the segment meanwhile.
        fs::write_durable(&index_path, index).await?;
        let mut l = this.borrow_mut();
        let seg = l
            .partitions
            .get_mut(&id)
            .and_then(|p| p.segments.back_mut())
            .expect("segment");
        seg.file = None;
        Ok(())
    }

    /// Runs a prepared write and applies it: the chunk leaves memory, the index grows.
    pub async fn run_write(this: &std::cell::RefCell<Self>, job: WriteJob) -> Result<u64> {
        let len = job.buf.len();
        let res = job.file.write_rc_at(job.buf, job.pos).await;
        let mut l = this.borrow_mut();
        let interval = l.limits.index_interval_bytes;
        let p = l.partitions.get_mut(&job.partition).expect("partition");
        let written = match res {
            Ok(n) if n == len => n,
            Ok(n) => {
                // A short write is how a full device without preallocation (tmpfs)
                // answers: the chunk stays in memory and is written again later.
                p.chunks.front_mut().expect("chunk").in_flight = false;
                return Err(LogError::io(
                    "writing",
                    &job.path,
                    std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("short write: {n} of {len} bytes"),
                    ),
                ));
            }
            Err(e) => {
                p.chunks.front_mut().expect("chunk").in_flight = false;
                return Err(LogError::io("writing", &job.path, e));
            }
        };
        let c = p.chunks.pop_front().expect("chunk");
        let seg = p.segments.back_mut().expect("segment");
        assert_eq!(seg.end_offset, c.base_offset, "segment offsets are dense");
        let mut last_indexed = seg.index.last().map(|&(_, pos)| pos);
        for &(offset, rel) in &c.entries {
            let pos = job.pos + u64::from(rel);
            if last_indexed.is_none_or(|l| pos >= l + interval) {
                seg.index.push((offset, pos));
                last_indexed = Some(pos);
            }
        }
        seg.end_offset = c.end_offset;
        seg.write_pos += written as u64;
        seg.max_timestamp_ms = seg.max_timestamp_ms.max(c.max_timestamp_ms);
        if !p.unsynced.iter().any(|f| Rc::ptr_eq(f, &job.file)) {
            p.unsynced.push(job.file.clone());
        }
        l.pending_bytes -= c.len;
        Ok(c.last_seq)
    }

    /// Syncs every segment written since the last sync.
    pub async fn sync(this: &std::cell::RefCell<Self>) -> Result<()> {
        let files: Vec<(Rc<DmaFile>, u32)> = {
            let mut l = this.borrow_mut();
            l.partitions
                .values_mut()
                .flat_map(|p| {
                    let id = p.id;
                    p.unsynced.drain(..).map(move |f| (f, id))
                })
                .collect()
        };
        for (file, id) in files {
            if let Err(e) = file.fdatasync().await {
                let path = file
                    .path()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| this.borrow().dir.join(format!("partition {id}")));
                return Err(LogError::io("syncing", &path, e));
            }
        }
        Ok(())
    }

    /// The sequence number below which every journal frame is in a segment file
    /// (written; durable after the next [`Ledger::sync`]): one before the oldest
    /// frame still in memory, or `journal_last_seq` when nothing is.
    pub fn written_through_seq(&self, journal_last_seq: u64) -> u64 {
        self.partitions
            .values()
            .filter_map(|p| p.chunks.front())
            .map(|c| first_seq_of(c).saturating_sub(1))
            .min()
            .unwrap_or(journal_last_seq)
    }
}
