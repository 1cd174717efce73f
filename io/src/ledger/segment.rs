//! A segment file of a partition and its sparse index file.
//!
//! Owns opening (and preallocating) a segment, the in-memory index of a segment,
//! and the index file's format: `TWINDEX1`, a CRC32C, the segment's end and its
//! (offset, position) entries, written whole once the segment is sealed. An index
//! that fails any check is rebuilt from its segment, never trusted.

use crate::error::{LogError, Result};
use crate::fs;
use glommio::io::{DmaFile, OpenOptions};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const INDEX_MAGIC: &[u8; 8] = b"TWINDEX1";
const INDEX_HEADER_LEN: usize = 40;

/// A segment file of a partition.
pub(super) struct Segment {
    pub(super) base_offset: u64,
    /// One past the last offset written to the file.
    pub(super) end_offset: u64,
    pub(super) path: PathBuf,
    /// Open for the active segment only: sealed segments are opened per read, so
    /// open files stay one per partition however many segments it keeps.
    pub(super) file: Option<Rc<DmaFile>>,
    /// Bytes written (block aligned); the next write goes here.
    pub(super) write_pos: u64,
    /// Sparse index: (offset, position of the frame that holds it), ascending.
    pub(super) index: Vec<(u64, u64)>,
    pub(super) max_timestamp_ms: i64,
}

impl Segment {
    pub(super) fn index_position(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1
        }
    }
}

pub(super) async fn open_segment(path: &Path, create_bytes: Option<u64>) -> Result<DmaFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_bytes.is_some())
        .dma_open(path)
        .await
        .map_err(|e| LogError::io("opening", path, e))?;
    // On tmpfs, preallocating only fills memory with zeros: there is no extent to save.
    // `Some(0)` creates the file without allocating (a segment written once).
    if let Some(bytes) = create_bytes.filter(|&b| b > 0 && !is_tmpfs(path)) {
        file.pre_allocate(bytes, false)
            .await
            .map_err(|e| LogError::io("allocating", path, e))?;
    }
    Ok(file)
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-param.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs writes only into `st`.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

pub(super) struct IndexFile {
    pub(super) end_offset: u64,
    pub(super) write_pos: u64,
    pub(super) max_timestamp_ms: i64,
    pub(super) entries: Vec<(u64, u64)>,
}

/// Writes a sealed segment's index file durably (`<segment>.index`).
pub(super) async fn write_index(path: &Path, seg: &Segment) -> Result<()> {
    let body = index_bytes(seg);
    Ok(fs::write_durable(path, body).await?)
}

/// The index file of a sealed segment, as bytes.
pub(super) fn index_bytes(seg: &Segment) -> Vec<u8> {
    let mut body = Vec::with_capacity(INDEX_HEADER_LEN + seg.index.len() * 16);
    body.extend_from_slice(&[0u8; 4]);
    body.extend_from_slice(INDEX_MAGIC);
    body.extend_from_slice(&(seg.index.len() as u32).to_le_bytes());
    body.extend_from_slice(&seg.end_offset.to_le_bytes());
    body.extend_from_slice(&seg.write_pos.to_le_bytes());
    body.extend_from_slice(&seg.max_timestamp_ms.to_le_bytes());
    for &(o, p) in &seg.index {
        body.extend_from_slice(&o.to_le_bytes());
        body.extend_from_slice(&p.to_le_bytes());
    }
    let crc = crc32c::crc32c(&body[4..]);
    body[0..4].copy_from_slice(&crc.to_le_bytes());
    body
}

/// Loads an index file; `None` when it is missing or fails any check.
pub(super) async fn read_index(path: &Path) -> Option<IndexFile> {
    let body = fs::read(path).await.ok()?;
    if body.len() < INDEX_HEADER_LEN || &body[4..12] != INDEX_MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(body[0..4].try_into().ok()?);
    if stored != crc32c::crc32c(&body[4..]) {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(body[12..16].try_into().ok()?) as usize;
    if body.len() != INDEX_HEADER_LEN + count * 16 {
        return None;
    }
    let entries: Vec<(u64, u64)> = (0..count)
        .map(|i| {
            let at = INDEX_HEADER_LEN + i * 16;
            (u64_at(at), u64_at(at + 8))
        })
        .collect();
    let sorted = entries
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
    let write_pos = u64_at(24);
    if !sorted || entries.last().is_some_and(|&(_, p)| p >= write_pos) {
        return None;
    }
    Some(IndexFile {
        end_offset: u64_at(16),
        write_pos,
        max_timestamp_ms: i64::from_le_bytes(body[32..40].try_into().ok()?),
        entries,
    })
}
