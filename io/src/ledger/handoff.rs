//! The journal → ledger hand-off: frames the journal made durable enter the
//! partitions' chunks, copied in place or, for a large write of one partition,
//! taken whole without a copy; and each completed write is kept among the recent
//! ones that reads of the newest data slice.
//!
//! Asserts on this side of the boundary what the log asserts on its side: a
//! partition's offsets are dense. Never does I/O.

use super::chunk::{chunk_capacity, Chunk};
use super::Ledger;
use crate::frame::{self, Header};
use glommio::io::DmaBuffer;
use std::rc::Rc;

impl Ledger {
    /// Accepts one frame (already durable in the journal per policy) into `id`'s chunks.
    /// The frame's offsets must continue the partition exactly.
    pub fn push_frame(&mut self, header: &Header, frame_bytes: &[u8]) {
        let flush_bytes = self.limits.flush_bytes;
        let p = self
            .partitions
            .get_mut(&header.partition)
            .expect("journal frames name known partitions");
        assert_eq!(
            header.base_offset, p.next_offset,
            "ledger offsets are dense"
        );
        let need_new = p
            .chunks
            .back()
            .is_none_or(|c| c.len >= flush_bytes || !c.fits(frame_bytes.len()));
        if need_new {
            // A frame that does not fit starts the next chunk (this one is then
            // due, see `due`). From the registered pool while it lasts (writes skip
            // pinning pages), else the heap.
            let cap = chunk_capacity(flush_bytes, frame_bytes.len());
            p.chunks.push_back(Chunk {
                base_offset: header.base_offset,
                end_offset: header.base_offset,
                buf: Rc::new(glommio::allocate_dma_buffer(cap)),
                len: 0,
                sealed: false,
                entries: Vec::new(),
                max_timestamp_ms: i64::MIN,
                last_seq: 0,
                in_flight: false,
            });
        }
        let c = p.chunks.back_mut().expect("a chunk");
        let before = c.len;
        let start = frame::frame_start(before);
        let dst = c.open_buf().as_bytes_mut();
        dst[before..start].fill(0);
        dst[start..start + frame_bytes.len()].copy_from_slice(frame_bytes);
        c.len = start + frame_bytes.len();
        c.entries.push((header.base_offset, start as u32));
        c.end_offset = header.end_offset();
        c.max_timestamp_ms = c.max_timestamp_ms.max(header.timestamp_ms);
        c.last_seq = header.seq;
        p.next_offset = c.end_offset;
        self.pending_bytes += c.len - before;
    }

    /// Takes a whole journal write as one sealed chunk, without copying it: `buf` is
    /// the write as it went to the journal (padded to a block), `frames` the
    /// (position, header) of its frames in order, all of one partition, continuing
    /// it exactly. Callers check [`Ledger::adoptable`] first. The layout of a
    /// journal write is a chunk's (frames from a block boundary, each header
    /// within a block, the same padding), so the ledger writes the bytes as they are.
    pub fn adopt_write(&mut self, buf: Rc<DmaBuffer>, frames: &[(usize, Header)]) {
        let (&(_, first), &(last_pos, last)) = (
            frames.first().expect("a write holds frames"),
            frames.last().expect("a write holds frames"),
        );
        let p = self
            .partitions
            .get_mut(&first.partition)
            .expect("journal frames name known partitions");
        assert_eq!(first.base_offset, p.next_offset, "ledger offsets are dense");
        let mut entries = Vec::with_capacity(frames.len());
        let mut max_timestamp_ms = i64::MIN;
        let mut next = first.base_offset;
        for &(pos, h) in frames {
            assert!(
                h.partition == first.partition && h.base_offset == next,
                "an adopted write holds one partition's frames, dense"
            );
            entries.push((h.base_offset, pos as u32));
            max_timestamp_ms = max_timestamp_ms.max(h.timestamp_ms);
            next = h.end_offset();
        }
        let len = last_pos + last.frame_len();
        assert!(len <= buf.len() && buf.len() == frame::align_up(len));
        p.chunks.push_back(Chunk {
            base_offset: first.base_offset,
            end_offset: next,
            buf,
            len,
            sealed: true,
            entries,
            max_timestamp_ms,
            last_seq: last.seq,
            in_flight: false,
        });
        p.next_offset = next;
        self.pending_bytes += len;
    }

    /// Keeps a completed journal write for reads of the newest data (see
    /// [`Payload::Written`](super::Payload)), dropping the oldest beyond
    /// `RECENT_WRITES`. `frames` are its data frames in file order, which must be
    /// partition id order; a write whose frames are not is not kept (reads of it
    /// copy out of the chunks, as before).
    pub(crate) fn keep_recent(&mut self, buf: Rc<DmaBuffer>, frames: Vec<(usize, Header)>) {
        if !frames.is_sorted_by_key(|(_, h)| h.partition) {
            debug_assert!(false, "a journal write holds one run per partition");
            self.recent.clear();
            return;
        }
        self.recent.push_back(super::RecentWrite { buf, frames });
        while self.recent.len() > crate::config::RECENT_WRITES {
            self.recent.pop_front();
        }
    }

    /// Whether a journal write of `len` bytes is worth taking whole as a chunk: at
    /// least half a ledger flush (smaller ones are packed together by copying,
    /// so the ledger's writes stay large), and no more than half a segment.
    pub fn adoptable(&self, len: usize) -> bool {
        len >= self.limits.flush_bytes / 2 && len as u64 <= self.limits.segment_bytes / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::HEADER_LEN;
    use crate::ledger::{Entry, LedgerLimits};

    /// Frames of `sizes` bytes for partition 0 from offset `base`, seq from `seq`,
    /// one record each, pushed into `l`; returns their payloads.
    fn push(l: &mut Ledger, base: u64, seq: u64, sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let payload = vec![(base + i as u64) as u8; n];
            let mut header = Header::data(0, seq + i as u64, base + i as u64, 1, 5);
            let mut buf = vec![0; HEADER_LEN + n];
            frame::encode(&mut buf, &header, &payload);
            header.payload_len = n as u32;
            l.push_frame(&header, &buf);
            out.push(payload);
        }
        out
    }

    #[test]
    fn chunks_fill_in_place_and_stay_readable_while_their_write_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let limits = LedgerLimits {
                    segment_bytes: 1 << 20,
                    flush_bytes: 16 << 10,
                    index_interval_bytes: 4096,
                    retention_bytes: None,
                    retention_ms: None,
                    frame_bytes_max: 1 << 20,
                };
                let l = std::cell::RefCell::new(
                    Ledger::open(&path, limits, 8, &mut Vec::new(), &mut Vec::new())
                        .await
                        .unwrap(),
                );
                l.borrow_mut().create_partition("p", 8).unwrap();
                // 3 x 5000 bytes fill 15 KiB of the 16 KiB chunk: not due. The fourth
                // does not fit, starts a second chunk and makes the first due.
                let mut want = push(&mut l.borrow_mut(), 0, 1, &[5000, 5000, 5000]);
                assert!(l.borrow().due(false).is_empty());
                want.extend(push(&mut l.borrow_mut(), 3, 4, &[5000]));
                assert_eq!(l.borrow().due(false), vec![0]);
                assert_eq!(l.borrow().partitions[&0].chunks.len(), 2);
                let job = Ledger::prepare_write(&l, 0).await.unwrap().unwrap();
                assert_eq!(job.len(), 16 << 10, "three frames, padded to a block");
                // Sealed and in flight: later frames go to the open chunk, and every
                // frame reads back from memory meanwhile.
                want.extend(push(&mut l.borrow_mut(), 4, 5, &[100]));
                // (offset, length, every byte its offset) of each entry.
                let check = |entries: Vec<Entry>, from: usize, to: usize| {
                    let got: Vec<(u64, usize, bool)> = entries
                        .iter()
                        .map(|e| {
                            let b = e.base_offset;
                            (b, e.payload.len(), e.payload == want[b as usize])
                        })
                        .collect();
                    let expect: Vec<(u64, usize, bool)> = (from..to)
                        .map(|i| (i as u64, want[i].len(), true))
                        .collect();
                    assert_eq!(got, expect);
                };
                check(Ledger::read(&l, 0, 0, 1 << 20).await.unwrap(), 0, 5);
                check(Ledger::read(&l, 0, 2, 1 << 20).await.unwrap(), 2, 5);
                // Written: the first three read from the segment file (a read stays in
                // one place), the rest from memory.
                assert_eq!(Ledger::run_write(&l, job).await.unwrap(), 3);
                assert_eq!(l.borrow().partitions[&0].segments[0].end_offset, 3);
                check(Ledger::read(&l, 0, 0, 1 << 20).await.unwrap(), 0, 3);
                check(Ledger::read(&l, 0, 3, 1 << 20).await.unwrap(), 3, 5);
                assert_eq!(
                    l.borrow().pending_bytes(),
                    5000 + HEADER_LEN + 100 + HEADER_LEN
                );
            });
    }
}
