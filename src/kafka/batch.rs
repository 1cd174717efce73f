//! Record batch (magic v2) header checks: what a Produce must pass before its bytes
//! reach the log. The batch is stored as received; only its base offset field is
//! rewritten on the way out (Fetch), which its CRC does not cover.

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
    let computed = crc32c::crc32c(&bytes[CRC_START..len]);
    if stored != computed {
        return corrupt(format!(
            "record batch checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let last_offset_delta = i32_at(bytes, 23);
    let records = i32_at(bytes, 57);
    if last_offset_delta < 0 || records < 1 || records > last_offset_delta.saturating_add(1) {
        return corrupt(format!(
            "record batch claims {records} records with last offset delta {last_offset_delta}"
        ));
    }
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

/// Writes `base_offset` into a stored batch before it is served.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal valid batch of `n` records with no record bodies checked.
    pub fn batch(n: i32, ts: i64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + 8];
        let batch_length = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        b[35..43].copy_from_slice(&ts.to_be_bytes());
        b[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
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
