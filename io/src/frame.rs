//! The frame: the one on-disk record format shared by the journal and the ledger.
//!
//! Owns the byte layout of a frame and the block rules that make a frame stream
//! parseable after a crash. Knows nothing about files, segments or partitions'
//! meaning; it only encodes and validates bytes.
//!
//! Layout (little-endian), `HEADER_LEN` bytes, then `payload_len` bytes of payload:
//!
//! | bytes  | field          | notes                                             |
//! |--------|----------------|---------------------------------------------------|
//! | 0..4   | crc32c         | over bytes 4..48 and the payload (PAD: header only) |
//! | 4..8   | payload_len    |                                                   |
//! | 8      | kind           | 1 data, 2 pad, 3 seal; 0 never written            |
//! | 9      | version        | 1                                                 |
//! | 10..12 | reserved       | 0                                                 |
//! | 12..16 | partition      | the partition id                                  |
//! | 16..24 | seq            | journal sequence number, dense per core from 1    |
//! | 24..32 | base_offset    | first offset of the batch in its partition        |
//! | 32..36 | record_count   | offsets the batch covers (>= 1)                   |
//! | 36..40 | reserved       | 0                                                 |
//! | 40..48 | timestamp_ms   | the batch's max timestamp, epoch ms               |
//!
//! Block rule: a frame header never starts in the last `HEADER_LEN - 1` bytes of a
//! `BLOCK`; the writer leaves them zero and the reader skips them. Every write ends
//! on a block boundary with a PAD frame (or, when fewer than `HEADER_LEN` bytes are
//! left, with those skipped bytes), so no written block is ever written again.

/// The I/O unit: every write starts and ends on a multiple of this.
pub const BLOCK: usize = 4096;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 48;
const VERSION: u8 = 1;

const _: () = assert!(BLOCK.is_power_of_two());
const _: () = assert!(HEADER_LEN * 2 <= BLOCK);

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A batch of a partition.
    Data = 1,
    /// Filler up to a block boundary; the payload is not checked.
    Pad = 2,
    /// The writer closed this segment here on purpose; the chain goes on in the next.
    Seal = 3,
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub payload_len: u32,
    pub partition: u32,
    pub seq: u64,
    pub base_offset: u64,
    pub record_count: u32,
    pub timestamp_ms: i64,
}

impl Header {
    pub fn data(partition: u32, seq: u64, base_offset: u64, record_count: u32, ts: i64) -> Self {
        Header {
            kind: Kind::Data,
            payload_len: 0,
            partition,
            seq,
            base_offset,
            record_count,
            timestamp_ms: ts,
        }
    }

    /// Bytes the whole frame takes (header and payload).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// One past the last offset this frame covers.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Why a frame stream ended where it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// All zero header: never written. A clean end.
    Zeroed,
    /// The bytes end before the frame does.
    Truncated { frame_len: usize, available: usize },
    /// The header's length field is larger than any frame may be.
    BadLength(u32),
    /// Unknown kind or version byte.
    BadKind { kind: u8, version: u8 },
    /// The checksum does not match: a torn or corrupted frame.
    BadCrc { stored: u32, computed: u32 },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Zeroed => write!(f, "zeroed (never written)"),
            Invalid::Truncated {
                frame_len,
                available,
            } => write!(
                f,
                "torn: frame of {frame_len} bytes but only {available} bytes present"
            ),
            Invalid::BadLength(len) => write!(f, "bad length field {len}"),
            Invalid::BadKind { kind, version } => {
                write!(f, "bad kind {kind} / version {version}")
            }
            Invalid::BadCrc { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Where the next frame header may start, given that the previous frame ended at `pos`.
pub fn frame_start(pos: usize) -> usize {
    let room = BLOCK - pos % BLOCK;
    if room < HEADER_LEN {
        pos + room
    } else {
        pos
    }
}

/// Rounds up to the next block boundary.
pub fn align_up(pos: usize) -> usize {
    pos.div_ceil(BLOCK) * BLOCK
}

/// Rounds down to a block boundary.
pub fn align_down(pos: usize) -> usize {
    pos / BLOCK * BLOCK
}

fn put_header(dst: &mut [u8], h: &Header) {
    dst[4..8].copy_from_slice(&h.payload_len.to_le_bytes());
    dst[8] = h.kind as u8;
    dst[9] = VERSION;
    dst[10..12].fill(0);
    dst[12..16].copy_from_slice(&h.partition.to_le_bytes());
    dst[16..24].copy_from_slice(&h.seq.to_le_bytes());
    dst[24..32].copy_from_slice(&h.base_offset.to_le_bytes());
    dst[32..36].copy_from_slice(&h.record_count.to_le_bytes());
    dst[36..40].fill(0);
    dst[40..48].copy_from_slice(&h.timestamp_ms.to_le_bytes());
}

/// Encodes a data or seal frame at the start of `dst` and returns its length.
/// `dst` must hold `HEADER_LEN + payload.len()` bytes.
pub fn encode(dst: &mut [u8], header: &Header, payload: &[u8]) -> usize {
    let len = HEADER_LEN + payload.len();
    assert!(dst.len() >= len, "frame does not fit its buffer");
    let mut h = *header;
    h.payload_len = u32::try_from(payload.len()).expect("payload length checked by caller");
    put_header(&mut dst[..HEADER_LEN], &h);
    dst[HEADER_LEN..len].copy_from_slice(payload);
    let crc = crate::checksum::crc32c_pair(&dst[4..HEADER_LEN], payload);
    dst[0..4].copy_from_slice(&crc.to_le_bytes());
    len
}

/// Fills `dst[pos..]` up to the next block boundary (PAD frame, or zeros when fewer
/// than `HEADER_LEN` bytes remain) and returns the boundary. `dst` must reach it.
pub fn pad_to_block(dst: &mut [u8], pos: usize) -> usize {
    let end = align_up(pos);
    let room = end - pos;
    if room == 0 {
        return end;
    }
    dst[pos..end].fill(0);
    if room >= HEADER_LEN {
        let h = Header {
            kind: Kind::Pad,
            payload_len: (room - HEADER_LEN) as u32,
            partition: 0,
            seq: 0,
            base_offset: 0,
            record_count: 0,
            timestamp_ms: 0,
        };
        put_header(&mut dst[pos..pos + HEADER_LEN], &h);
        let crc = crc32c::crc32c(&dst[pos + 4..pos + HEADER_LEN]);
        dst[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
    }
    end
}

/// Decodes the frame at the start of `src`. `payload_len_max` bounds the length field.
/// On success returns the header; the payload is `src[HEADER_LEN..frame_len]`.
pub fn decode(src: &[u8], payload_len_max: usize) -> Result<Header, Invalid> {
    if src.len() < HEADER_LEN {
        if src.iter().all(|b| *b == 0) {
            return Err(Invalid::Zeroed);
        }
        return Err(Invalid::Truncated {
            frame_len: HEADER_LEN,
            available: src.len(),
        });
    }
    let head = &src[..HEADER_LEN];
    if head.iter().all(|b| *b == 0) {
        return Err(Invalid::Zeroed);
    }
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let payload_len = u32_at(4);
    let (kind_byte, version) = (head[8], head[9]);
    let kind = match (kind_byte, version) {
        (1, VERSION) => Kind::Data,
        (2, VERSION) => Kind::Pad,
        (3, VERSION) => Kind::Seal,
        _ => {
            return Err(Invalid::BadKind {
                kind: kind_byte,
                version,
            })
        }
    };
    let limit = if kind == Kind::Pad {
        BLOCK
    } else {
        payload_len_max
    };
    if payload_len as usize > limit {
        return Err(Invalid::BadLength(payload_len));
    }
    let frame_len = HEADER_LEN + payload_len as usize;
    let checked = if kind == Kind::Pad {
        HEADER_LEN
    } else {
        frame_len
    };
    if src.len() < checked {
        return Err(Invalid::Truncated {
            frame_len,
            available: src.len(),
        });
    }
    let stored = u32_at(0);
    let computed = crate::checksum::crc32c(&src[4..checked]);
    if stored != computed {
        return Err(Invalid::BadCrc { stored, computed });
    }
    Ok(header_fields(head, kind))
}

/// The header fields at the start of `head` (at least `HEADER_LEN` bytes), read as
/// they are: the caller has decided the frame is of `kind` and may be trusted.
fn header_fields(head: &[u8], kind: Kind) -> Header {
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    Header {
        kind,
        payload_len: u32_at(4),
        partition: u32_at(12),
        seq: u64_at(16),
        base_offset: u64_at(24),
        record_count: u32_at(32),
        timestamp_ms: u64_at(40) as i64,
    }
}

/// The header of a data frame this process encoded and still holds in memory (a
/// ledger chunk not yet written): no CRC check, which guards bytes that went through
/// a device, not the process's own memory (~2% of a core at 1M events/s). Debug
/// builds still check.
pub fn decode_own(src: &[u8]) -> Header {
    let header = header_fields(src, Kind::Data);
    debug_assert_eq!(decode(src, src.len()), Ok(header));
    header
}

/// The first valid frame at or after `from` whose raw header `wanted` accepts:
/// where a scan that met damage picks up again. The header's kind, version and
/// length are checked before `wanted`, and the checksum last, so most positions cost
/// a few byte compares. Only data and seal frames are found (a PAD frame proves
/// nothing about the sequence). Bounded by `buf`: the caller passes one segment.
pub fn resync(
    buf: &[u8],
    from: usize,
    payload_len_max: usize,
    wanted: impl Fn(&Header) -> bool,
) -> Option<(usize, Header)> {
    let mut pos = frame_start(from);
    while pos + HEADER_LEN <= buf.len() {
        let head = &buf[pos..pos + HEADER_LEN];
        let kind = match (head[8], head[9]) {
            (1, VERSION) => Some(Kind::Data),
            (3, VERSION) => Some(Kind::Seal),
            _ => None,
        };
        if let Some(kind) = kind {
            let raw = header_fields(head, kind);
            if raw.payload_len as usize <= payload_len_max
                && wanted(&raw)
                && decode(&buf[pos..], payload_len_max) == Ok(raw)
            {
                return Some((pos, raw));
            }
        }
        pos = frame_start(pos + 1);
    }
    None
}

/// The header fields at the start of `bytes` as they are, unchecked, when its kind
/// and version bytes name a data frame: a damaged frame's best guess at what it held.
pub fn guess_data_header(bytes: &[u8]) -> Option<Header> {
    let head = bytes.get(..HEADER_LEN)?;
    (head[8] == Kind::Data as u8 && head[9] == VERSION).then(|| header_fields(head, Kind::Data))
}

/// One step of a scan over a frame stream that starts on a block boundary.
#[derive(Debug)]
pub enum Step {
    /// A valid frame at `pos`.
    Frame { pos: usize, header: Header },
    /// The stream ends at `pos` for `why`.
    End { pos: usize, why: Invalid },
}

/// Iterates the frames of `buf`, where `buf[0]` lies on a block boundary.
/// PAD frames are skipped; data and seal frames are yielded; the last item is `End`.
pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    payload_len_max: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8], start: usize, payload_len_max: usize) -> Self {
        Scanner {
            buf,
            pos: start,
            payload_len_max,
            done: false,
        }
    }
}

impl Iterator for Scanner<'_> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.done {
            return None;
        }
        loop {
            self.pos = frame_start(self.pos);
            let rest = self.buf.get(self.pos..).unwrap_or(&[]);
            match decode(rest, self.payload_len_max) {
                Ok(h) if h.kind == Kind::Pad => self.pos += h.frame_len(),
                Ok(header) => {
                    let pos = self.pos;
                    self.pos += header.frame_len();
                    return Some(Step::Frame { pos, header });
                }
                Err(why) => {
                    self.done = true;
                    let why = match why {
                        // Running off the end of the bytes we hold is not damage when
                        // nothing was there to read.
                        Invalid::Truncated { available: 0, .. } => Invalid::Zeroed,
                        other => other,
                    };
                    return Some(Step::End { pos: self.pos, why });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, size: usize) -> Vec<u8> {
        let mut buf = vec![0u8; BLOCK * 8];
        let mut pos = 0;
        for i in 0..n {
            pos = frame_start(pos);
            let payload = vec![i as u8; size];
            let h = Header::data(7, i as u64 + 1, i as u64 * 2, 2, 1000 + i as i64);
            pos += encode(&mut buf[pos..], &h, &payload);
        }
        let end = pad_to_block(&mut buf, pos);
        buf.truncate(end);
        buf
    }

    #[test]
    fn round_trip_with_block_rule_and_padding() {
        // 100-byte payloads make frames straddle blocks and hit the tail rule.
        let buf = frames(90, 100);
        assert_eq!(buf.len() % BLOCK, 0);
        let steps: Vec<Step> = Scanner::new(&buf, 0, 1 << 20).collect();
        assert_eq!(steps.len(), 91);
        for (i, s) in steps[..90].iter().enumerate() {
            let Step::Frame { pos, header } = s else {
                panic!("expected a frame, got {s:?}")
            };
            assert_eq!(header.seq, i as u64 + 1);
            assert_eq!(header.base_offset, i as u64 * 2);
            assert_eq!(
                &buf[pos + HEADER_LEN..pos + header.frame_len()],
                &[i as u8; 100]
            );
        }
        assert!(matches!(
            steps[90],
            Step::End {
                why: Invalid::Zeroed,
                ..
            }
        ));
    }

    #[test]
    fn header_never_starts_in_block_tail() {
        for pos in 0..3 * BLOCK {
            let s = frame_start(pos);
            assert!(BLOCK - s % BLOCK >= HEADER_LEN);
            assert!(s >= pos && s - pos < HEADER_LEN);
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = vec![0u8; BLOCK];
        let h = Header::data(1, 1, 0, 1, 5);
        let len = encode(&mut buf, &h, b"hello world");
        for i in 0..len {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, 1 << 20).is_err(), "flip at {i} not caught");
        }
        assert_eq!(decode(&buf, 1 << 20).unwrap().payload_len, 11);
    }

    #[test]
    fn a_scan_picks_up_again_at_the_next_valid_frame_after_damage() {
        let buf = frames(90, 100);
        let steps: Vec<Step> = Scanner::new(&buf, 0, 1 << 20).collect();
        let Step::Frame { pos: at, .. } = steps[40] else {
            panic!()
        };
        for flip in [at, at + 9, at + 20, at + HEADER_LEN + 50] {
            let mut bad = buf.clone();
            bad[flip] ^= 0x10;
            let from = at + 1;
            let (pos, h) = resync(&bad, from, 1 << 20, |h| h.seq > 41).expect("found");
            assert_eq!(h.seq, 42, "flip at {flip}");
            assert!(matches!(steps[41], Step::Frame { pos: p, .. } if p == pos));
        }
        // Nothing after the last frame: nothing found.
        assert_eq!(resync(&buf, at + 1, 1 << 20, |h| h.seq > 1000), None);
    }

    #[test]
    fn oversized_length_is_rejected_before_reading() {
        let mut buf = vec![0u8; BLOCK];
        encode(&mut buf, &Header::data(1, 1, 0, 1, 5), &[1u8; 200]);
        assert_eq!(decode(&buf, 100), Err(Invalid::BadLength(200)));
    }
}
