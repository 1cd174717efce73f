//! A chunk: frames of one partition in memory, accepted by the journal and not yet
//! written to a segment, laid out exactly as they will be on disk.
//!
//! Owns the chunk's buffer and its block padding. Once sealed it takes no more
//! frames and its buffer is shared with the write in flight, so readers still find
//! the frames in memory. Knows nothing of files.

use crate::frame;
use glommio::io::DmaBuffer;
use std::rc::Rc;

/// Frames accepted by the journal but not yet written to a segment.
pub(super) struct Chunk {
    pub(super) base_offset: u64,
    pub(super) end_offset: u64,
    /// Frames laid out as they will be on disk from a block boundary: the first
    /// `len` bytes of `buf`, an aligned buffer filled in place, then sealed (padded
    /// to a block, trimmed) and written as it is. The write in flight shares it, so
    /// readers still find the frames in memory; nothing is copied in between.
    pub(super) buf: Rc<DmaBuffer>,
    pub(super) len: usize,
    pub(super) sealed: bool,
    /// (base offset, position in `buf`) of every frame.
    pub(super) entries: Vec<(u64, u32)>,
    pub(super) max_timestamp_ms: i64,
    pub(super) last_seq: u64,
    pub(super) in_flight: bool,
}

impl Chunk {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf.as_bytes()[..self.len]
    }

    /// Whether a frame of `frame_len` bytes still fits (its block padding too: the
    /// buffer is a whole number of blocks). A sealed chunk takes nothing more.
    pub(super) fn fits(&self, frame_len: usize) -> bool {
        !self.sealed && frame::frame_start(self.len) + frame_len <= self.buf.len()
    }

    /// The buffer of an open chunk, to fill.
    pub(super) fn open_buf(&mut self) -> &mut DmaBuffer {
        assert!(!self.sealed, "a sealed chunk takes no frames");
        Rc::get_mut(&mut self.buf).expect("only a sealed chunk's buffer is shared")
    }

    /// Pads the chunk to a block and seals it (once); returns the bytes to write.
    pub(super) fn seal(&mut self) -> Rc<DmaBuffer> {
        if !self.sealed {
            let len = self.len;
            let b = self.open_buf();
            let end = frame::pad_to_block(b.as_bytes_mut(), len);
            b.trim_to_size(end);
            self.sealed = true;
        }
        self.buf.clone()
    }
}

/// The buffer of a ledger chunk: `flush_bytes`, or one frame (with the padding of
/// its write) when that is larger, in whole blocks. The registered pool is a buddy
/// allocator, so the default 1 MiB takes exactly a 1 MiB block of it.
pub(crate) fn chunk_capacity(flush_bytes: usize, frame_len: usize) -> usize {
    frame::align_up(flush_bytes.max(frame_len + frame::BLOCK))
}

pub(super) fn first_seq_of(c: &Chunk) -> u64 {
    // The first frame's header, inside the chunk's bytes this process wrote.
    let pos = c.entries.first().map_or(0, |&(_, p)| p as usize);
    frame::decode_own(&c.bytes()[pos..]).seq
}
