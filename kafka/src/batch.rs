//! Record batch (magic v2) checks: what a Produce must pass before its bytes reach
//! the log. The header, length and checksum here; then every record, inflated with
//! a cap when compressed (`tidewater_shards::pipeline::records::validate`), so that
//! no consumer of a partition ever stops at a batch it cannot read. The batch is
//! stored as received; only its base offset field is rewritten on the way out
//! (Fetch), which its CRC does not cover.

use crate::error::KafkaError;
use kafka_protocol::ResponseError;
use std::cell::RefCell;
use tidewater_shards::pipeline::records::{self, Invalid};

/// Bytes of a v2 record batch header.
pub const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;

/// What the log needs from a valid batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Offsets the batch covers (last offset delta + 1).
    pub record_count: u32,
    pub max_timestamp_ms: i64,
    /// Bytes of this batch in the buffer.
    pub len: usize,
    /// Idempotent producer id (-1: none), its epoch and the batch's first sequence.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Why a batch was refused; maps to a Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Truncated, bad lengths, bad checksum: CORRUPT_MESSAGE.
    Corrupt(String),
    /// Not magic 2: UNSUPPORTED_FOR_MESSAGE_FORMAT.
    OldFormat(i8),
    /// Compression codec 5 to 7: UNSUPPORTED_COMPRESSION_TYPE.
    Codec(i16),
    /// A control batch, which only a broker writes: INVALID_RECORD.
    Control,
}

impl From<BatchError> for KafkaError {
    fn from(e: BatchError) -> KafkaError {
        match e {
            BatchError::Corrupt(why) => KafkaError::new(ResponseError::CorruptMessage, why),
            BatchError::OldFormat(m) => KafkaError::new(
                ResponseError::UnsupportedForMessageFormat,
                format!("record batch magic {m}: only magic 2 is accepted"),
            ),
            BatchError::Codec(c) => KafkaError::new(
                ResponseError::UnsupportedCompressionType,
                format!("compression codec {c}: use 0 to 4 (none, gzip, snappy, lz4, zstd)"),
            ),
            BatchError::Control => KafkaError::new(
                ResponseError::InvalidRecord,
                "control batches are written by the broker, not by clients",
            ),
        }
    }
}

/// Inflated batches are kept here while their records are checked.
const SCRATCH_KEPT_BYTES_MAX: usize = 4 << 20;

thread_local! {
    /// One core's inflate buffer, reused; shrunk back after a batch larger than
    /// `SCRATCH_KEPT_BYTES_MAX` (it grows to at most `INFLATED_BYTES_MAX`).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the batch at the start of `bytes` and returns what the log needs.
pub fn check(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let corrupt = |why: String| Err(BatchError::Corrupt(why));
    if bytes.len() < HEADER_LEN {
        return corrupt(format!(
            "record batch of {} bytes is shorter than its header",
            bytes.len()
        ));
    }
    let batch_length = i32_at(bytes, 8);
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(BatchError::OldFormat(magic));
    }
    let len = 12usize.saturating_add(usize::try_from(batch_length).unwrap_or(usize::MAX));
    if batch_length < (HEADER_LEN - 12) as i32 || len > bytes.len() {
        return corrupt(format!(
            "record batch length {batch_length} does not fit the {} bytes received",
            bytes.len()
        ));
    }
    let stored = u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes"));
    let computed = tidewater_io::checksum::crc32c(&bytes[CRC_START..len]);
    if stored != computed {
        return corrupt(format!(
            "record batch checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let last_offset_delta = i32_at(bytes, 23);
    SCRATCH
        .with_borrow_mut(|scratch| {
            let checked = records::validate(&bytes[..len], scratch);
            if scratch.capacity() > SCRATCH_KEPT_BYTES_MAX {
                *scratch = Vec::new();
            }
            checked
        })
        .map_err(|e| match e {
            Invalid::Corrupt(why) => BatchError::Corrupt(why),
            Invalid::Codec(c) => BatchError::Codec(c),
            Invalid::Control => BatchError::Control,
        })?;
    Ok(BatchInfo {
        record_count: last_offset_delta as u32 + 1,
        max_timestamp_ms: i64_at(bytes, 35),
        len,
        producer_id: i64_at(bytes, 43),
        producer_epoch: i16::from_be_bytes([bytes[51], bytes[52]]),
        base_sequence: i32_at(bytes, 53),
    })
}

/// (length, offsets covered) of a stored batch, trusting it (it passed [`check`]).
pub fn peek(bytes: &[u8]) -> Option<(usize, u32)> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let len = 12 + usize::try_from(i32_at(bytes, 8)).ok()?;
    let count = u32::try_from(i32_at(bytes, 23)).ok()? + 1;
    (len <= bytes.len()).then_some((len, count))
}

/// A control batch covering `count` offsets (base offset 0, set when served) that
/// holds one COMMIT marker of no producer: what a Fetch sends for offsets whose
/// records were lost to journal damage. Every Kafka consumer skips control batches
/// and moves past their last offset, as it does past a transaction's marker.
pub fn lost_marker(count: u32) -> Vec<u8> {
    // The control record: length, attributes, timestamp delta, offset delta (zigzag
    // varints), key (version 0, type 1 = COMMIT), value (version 0, epoch 0), no
    // headers.
    let key = [0u8, 0, 0, 1];
    let value = [0u8, 0, 0, 0, 0, 0];
    let mut rec = vec![0u8, 0, 0, (key.len() as u8) << 1];
    rec.extend_from_slice(&key);
    rec.push((value.len() as u8) << 1);
    rec.extend_from_slice(&value);
    rec.push(0);
    let mut b = vec![0u8; HEADER_LEN];
    b.push((rec.len() as u8) << 1);
    b.extend_from_slice(&rec);
    let batch_length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[16] = 2;
    b[21..23].copy_from_slice(&0x30i16.to_be_bytes()); // control, transactional
    let last_delta = count.saturating_sub(1).min(i32::MAX as u32) as i32;
    b[23..27].copy_from_slice(&last_delta.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // no producer
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Writes `base_offset` into a stored batch before it is served.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use tidewater_tools::loadgen::batch::varint;

    /// A valid batch of `n` empty records (null key and value, no headers).
    pub fn batch(n: i32, ts: i64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        for i in 0..n {
            // length 6, attributes, timestamp delta 0, offset delta i, key and
            // value null (-1), no headers; zigzag varints, i < 64.
            b.extend_from_slice(&[12, 0, 0, (i as u8) << 1, 1, 1, 0]);
        }
        seal(&mut b, n, ts);
        b
    }

    /// Writes the header fields that depend on the records, and the checksum.
    fn seal(b: &mut [u8], n: i32, ts: i64) {
        let batch_length = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        b[35..43].copy_from_slice(&ts.to_be_bytes());
        b[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn batches_that_lie_about_their_records_are_corrupt() {
        // One record present, 1,000,000 claimed (and 2^31 offsets claimed).
        let mut b = batch(1, 5);
        b[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
        b[23..27].copy_from_slice(&999_999i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(check(&b), Err(BatchError::Corrupt(_))),
            "{:?}",
            check(&b)
        );
        let mut b = batch(1, 5);
        b[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(check(&b), Err(BatchError::Corrupt(_))));
        // Offset deltas that skip, and bytes after the last record.
        let mut b = vec![0u8; HEADER_LEN];
        b.extend_from_slice(&[12, 0, 0, 0, 1, 1, 0, 12, 0, 0, 4, 1, 1, 0]);
        seal(&mut b, 2, 5);
        assert!(matches!(check(&b), Err(BatchError::Corrupt(_))));
        let mut b = batch(2, 5);
        b.push(0);
        seal(&mut b, 2, 5);
        assert!(matches!(check(&b), Err(BatchError::Corrupt(_))));
    }

    #[test]
    fn unknown_codecs_control_batches_and_bad_payloads_are_refused() {
        for codec in 5..=7u8 {
            let mut b = batch(1, 5);
            b[22] = codec;
            seal(&mut b, 1, 5);
            assert_eq!(check(&b), Err(BatchError::Codec(i16::from(codec))));
        }
        let mut b = batch(1, 5);
        b[22] = 0x20;
        seal(&mut b, 1, 5);
        assert_eq!(check(&b), Err(BatchError::Control));
        // Each real codec with a body that is not what it claims.
        for codec in 1..=4u8 {
            let mut b = batch(1, 5);
            b[22] = codec;
            seal(&mut b, 1, 5);
            assert!(
                matches!(check(&b), Err(BatchError::Corrupt(_))),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn a_bomb_is_refused_at_the_inflate_cap() {
        // 80 MiB of zeros as one record's value, zstd: a few KiB on the wire.
        let value = vec![0u8; 80 << 20];
        let mut rec = Vec::new();
        rec.extend_from_slice(&[0, 0, 0, 1]); // attributes, ts, offset delta, key null
        varint(&mut rec, value.len() as i64);
        rec.extend_from_slice(&value);
        rec.push(0);
        let mut plain = Vec::new();
        varint(&mut plain, rec.len() as i64);
        plain.extend_from_slice(&rec);
        let body = zstd::bulk::compress(&plain, 1).unwrap();
        assert!(body.len() < 64 << 10);
        let mut b = vec![0u8; HEADER_LEN];
        b.extend_from_slice(&body);
        b[22] = 4;
        seal(&mut b, 1, 5);
        match check(&b) {
            Err(BatchError::Corrupt(why)) => assert!(why.contains("inflates past"), "{why}"),
            other => panic!("{other:?}"),
        }
        SCRATCH.with_borrow(|s| assert!(s.capacity() <= SCRATCH_KEPT_BYTES_MAX));
    }

    #[test]
    fn valid_batches_pass_and_every_flipped_byte_after_the_crc_fails() {
        let b = batch(5, 1234);
        assert_eq!(
            check(&b),
            Ok(BatchInfo {
                record_count: 5,
                max_timestamp_ms: 1234,
                len: b.len(),
                producer_id: 0,
                producer_epoch: 0,
                base_sequence: 0,
            })
        );
        for i in CRC_START..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(check(&bad).is_err(), "flip at {i}");
        }
        assert!(matches!(check(&b[..30]), Err(BatchError::Corrupt(_))));
        let mut old = b.clone();
        old[16] = 1;
        assert_eq!(check(&old), Err(BatchError::OldFormat(1)));
    }
}
