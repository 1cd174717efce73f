//! Reading the records of stored Kafka record batches (magic v2) in place.
//!
//! A log entry holds one or more batches as the producer sent them; their offsets are
//! consecutive from the entry's base offset. Uncompressed records are read without a
//! copy; compressed batches (gzip, snappy raw or xerial-framed, lz4 frame, zstd) are
//! inflated into one reused buffer. Control batches (transaction markers) take their
//! offsets but yield no records. Must never panic on bytes it did not write: every
//! length is checked, and a damaged batch is reported, not guessed at.

use std::io::Read;

const HEADER_LEN: usize = 61;
/// Largest inflated batch: a bound on what one compressed batch may expand to.
pub const INFLATED_BYTES_MAX: usize = 64 << 20;

/// One record, borrowed from the batch (or the inflate buffer).
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's headers, still encoded (see [`header`]).
    pub headers: &'a [u8],
}

/// The value of header `name` in a record's encoded headers.
pub fn header<'a>(headers: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut at = 0;
    let count = varlong(headers, &mut at)?;
    for _ in 0..count.max(0) {
        let k = nullable_bytes(headers, &mut at)??;
        let v = nullable_bytes(headers, &mut at)?;
        if k == name.as_bytes() {
            return v;
        }
    }
    None
}

/// A batch that cannot be read. Carries the offsets it covers so the caller can
/// account for them (a dead-letter entry) and go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBatch {
    pub base_offset: u64,
    pub offsets: u32,
    pub reason: String,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Zigzag varint (Kafka's varint / varlong), advancing `at`.
fn varlong(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// A length-prefixed field: `-1` is null.
fn nullable_bytes<'a>(b: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varlong(b, at)?;
    if len < 0 {
        return Some(None);
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let s = b.get(*at..end)?;
    *at = end;
    Some(Some(s))
}

/// Calls `f` for every record of the batches in `entry`, whose first batch starts at
/// offset `base_offset`. A damaged batch is pushed to `bad` with its offsets, and
/// reading goes on with the next batch when its length is readable (else the rest of
/// the entry is reported as one bad range, using `entry_offsets`, the entry's record
/// count).
pub fn for_each_record(
    entry: &[u8],
    base_offset: u64,
    entry_offsets: u32,
    scratch: &mut Vec<u8>,
    mut f: impl FnMut(RecordRef<'_>),
    bad: &mut Vec<BadBatch>,
) {
    if entry.is_empty() && entry_offsets > 0 {
        // The log keeps offsets whose records were lost to media damage as entries
        // with no payload: they are accounted for, never silently skipped.
        bad.push(BadBatch {
            base_offset,
            offsets: entry_offsets,
            reason: "records lost to damage in the journal (the server's log names the frame)"
                .into(),
        });
        return;
    }
    let mut at = 0;
    let mut next = base_offset;
    let end_offset = base_offset + u64::from(entry_offsets);
    while at < entry.len() && next < end_offset {
        let rest = &entry[at..];
        if rest.len() < HEADER_LEN {
            bad.push(BadBatch {
                base_offset: next,
                offsets: (end_offset - next) as u32,
                reason: format!("{} stray bytes after the last batch", rest.len()),
            });
            return;
        }
        let len = 12 + be_i32(rest, 8).max(0) as usize;
        let last_delta = be_i32(rest, 23);
        if len > rest.len() || len < HEADER_LEN || last_delta < 0 {
            bad.push(BadBatch {
                base_offset: next,
                offsets: (end_offset - next) as u32,
                reason: format!(
                    "batch length {len} does not fit the {} bytes left",
                    rest.len()
                ),
            });
            return;
        }
        let offsets = last_delta as u32 + 1;
        if let Err(reason) = read_batch(&rest[..len], next, scratch, &mut f) {
            bad.push(BadBatch {
                base_offset: next,
                offsets,
                reason,
            });
        }
        next += u64::from(offsets);
        at += len;
    }
}

fn read_batch(
    batch: &[u8],
    base: u64,
    scratch: &mut Vec<u8>,
    f: &mut impl FnMut(RecordRef<'_>),
) -> Result<(), String> {
    walk_batch(batch, base, scratch, false, f)
}

/// Why a producer's batch is refused (see [`validate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Its records do not parse, do not match its header, or do not inflate within
    /// [`INFLATED_BYTES_MAX`]: Kafka's CORRUPT_MESSAGE.
    Corrupt(String),
    /// A compression codec that does not exist (5 to 7): UNSUPPORTED_COMPRESSION_TYPE.
    Codec(i16),
    /// A control batch (transaction marker), which only a broker writes: INVALID_RECORD.
    Control,
}

/// Checks a producer's batch (exactly one: its length field must cover `batch`),
/// record by record as Kafka's broker does before it stores one (the caller checks
/// the checksum): a known
/// codec, a body that inflates within [`INFLATED_BYTES_MAX`], exactly the header's
/// record count with offset deltas 0, 1, 2, ... (so the last is the header's last
/// offset delta), and no byte after the last record. Every reader of the
/// partition can then read every stored batch. `scratch` holds what it inflates.
pub fn validate(batch: &[u8], scratch: &mut Vec<u8>) -> Result<(), Invalid> {
    let declared = batch
        .get(8..12)
        .map(|b| i64::from(i32::from_be_bytes(b.try_into().expect("4 bytes"))) + 12);
    if batch.len() < HEADER_LEN || declared != Some(batch.len() as i64) {
        return Err(Invalid::Corrupt(format!(
            "record batch of {} bytes does not match its length field",
            batch.len()
        )));
    }
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    if attributes & 0x20 != 0 {
        return Err(Invalid::Control);
    }
    let codec = attributes & 0x07;
    if codec > 4 {
        return Err(Invalid::Codec(codec));
    }
    let count = be_i32(batch, 57);
    let last_delta = be_i32(batch, 23);
    if count < 1 || i64::from(last_delta) != i64::from(count) - 1 {
        return Err(Invalid::Corrupt(format!(
            "record batch claims {count} records with last offset delta {last_delta}"
        )));
    }
    walk_batch(batch, 0, scratch, true, &mut |_| {}).map_err(Invalid::Corrupt)
}

/// Reads a batch's records; `dense`: also requires offset deltas 0, 1, 2, ... and
/// nothing after the last record.
fn walk_batch(
    batch: &[u8],
    base: u64,
    scratch: &mut Vec<u8>,
    dense: bool,
    f: &mut impl FnMut(RecordRef<'_>),
) -> Result<(), String> {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    if attributes & 0x20 != 0 {
        return Ok(()); // a control batch: a transaction marker, no data
    }
    let log_append_time = attributes & 0x08 != 0;
    let base_ts = be_i64(batch, 27);
    let max_ts = be_i64(batch, 35);
    let count = be_i32(batch, 57);
    let body = &batch[HEADER_LEN..];
    let records: &[u8] = match attributes & 0x07 {
        0 => body,
        codec => {
            inflate(codec, body, scratch)?;
            scratch
        }
    };
    let mut at = 0;
    for i in 0..count.max(0) {
        let broken = || format!("record {i} of {count} is truncated or malformed");
        let len = varlong(records, &mut at).ok_or_else(broken)?;
        let start = at;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(broken)?;
        let rec = &records[..end];
        at += 1; // attributes
        let ts_delta = varlong(rec, &mut at).ok_or_else(broken)?;
        let offset_delta = varlong(rec, &mut at).ok_or_else(broken)?;
        let key = nullable_bytes(rec, &mut at).ok_or_else(broken)?;
        let value = nullable_bytes(rec, &mut at).ok_or_else(broken)?;
        if at > end || offset_delta < 0 {
            return Err(broken());
        }
        let headers = &rec[at..end];
        at = end;
        if dense && offset_delta != i64::from(i) {
            return Err(format!(
                "record {i} of {count} has offset delta {offset_delta}; a producer's are 0, 1, 2, ..."
            ));
        }
        f(RecordRef {
            offset: base + offset_delta as u64,
            timestamp_ms: if log_append_time {
                max_ts
            } else {
                base_ts.wrapping_add(ts_delta)
            },
            key,
            value,
            headers,
        });
    }
    if dense && at != records.len() {
        return Err(format!(
            "{} bytes after the last of {count} records",
            records.len() - at
        ));
    }
    Ok(())
}

fn inflate(codec: i16, body: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let limit = INFLATED_BYTES_MAX as u64 + 1;
    let res = match codec {
        1 => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(out)
            .map(drop),
        2 => return snappy(body, out),
        3 => lz4::Decoder::new(body).and_then(|d| d.take(limit).read_to_end(out).map(drop)),
        4 => zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(limit).read_to_end(out).map(drop)),
        other => return Err(format!("unknown compression codec {other}")),
    };
    res.map_err(|e| format!("cannot decompress (codec {codec}): {e}"))?;
    if out.len() > INFLATED_BYTES_MAX {
        return Err(format!(
            "batch inflates past {INFLATED_BYTES_MAX} bytes; refused"
        ));
    }
    Ok(())
}

/// Snappy as Kafka clients send it: raw, or in the xerial framing the Java client
/// uses (magic, version, then length-prefixed raw blocks).
fn snappy(body: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    let mut dec = snap::raw::Decoder::new();
    let mut block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(raw).map_err(|e| format!("snappy: {e}"))?;
        if out.len() + n > INFLATED_BYTES_MAX {
            return Err(format!(
                "batch inflates past {INFLATED_BYTES_MAX} bytes; refused"
            ));
        }
        let at = out.len();
        out.resize(at + n, 0);
        dec.decompress(raw, &mut out[at..])
            .map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    if body.starts_with(XERIAL) && body.len() >= 16 {
        let mut at = 16; // magic (8), version (4), compatible version (4)
        while at < body.len() {
            let len = body
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or("snappy: truncated xerial block length")?;
            let raw = body
                .get(at + 4..at + 4 + len)
                .ok_or("snappy: truncated xerial block")?;
            block(raw, out)?;
            at += 4 + len;
        }
        Ok(())
    } else {
        block(body, out)
    }
}

/// Calls `f` for every record of log partition `partition` from offset `from`
/// (or the log's start, if later) to its current end: what a restarted job reads
/// back of its own outputs.
pub async fn read_from(
    log: &tidewater_io::ShardLog,
    partition: u32,
    from: u64,
    mut f: impl FnMut(RecordRef<'_>),
) -> Result<(), super::PipelineError> {
    let what = || format!("reading back log partition {partition}");
    let end = log
        .high_watermark(partition)
        .map_err(super::PipelineError::log(what()))?;
    let mut next = from.max(log.log_start_offset(partition).unwrap_or(0));
    let mut scratch = Vec::new();
    while next < end {
        let entries = log
            .read(partition, next, 1 << 20)
            .await
            .map_err(super::PipelineError::log(what()))?;
        if entries.is_empty() {
            break;
        }
        for e in &entries {
            let mut bad = Vec::new();
            for_each_record(
                &e.payload,
                e.base_offset,
                e.record_count,
                &mut scratch,
                &mut f,
                &mut bad,
            );
            next = e.end_offset();
        }
    }
    Ok(())
}

/// Adds `n` to a per-core counter.
pub(crate) fn bump(c: &std::cell::Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// (key, value, timestamp) of a test record.
    pub type TestRecord<'a> = (Option<&'a [u8]>, &'a [u8], i64);
    type Collected = (Vec<(u64, i64, Vec<u8>)>, Vec<BadBatch>);

    pub fn batch(records: &[TestRecord<'_>], compression: Compression) -> Vec<u8> {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v, ts))| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: *ts,
                key: k.map(bytes::Bytes::copy_from_slice),
                value: Some(bytes::Bytes::copy_from_slice(v)),
                headers: Default::default(),
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        out.to_vec()
    }

    fn collect(entry: &[u8], base: u64, n: u32) -> Collected {
        let mut scratch = Vec::new();
        let mut got = Vec::new();
        let mut bad = Vec::new();
        for_each_record(
            entry,
            base,
            n,
            &mut scratch,
            |r| {
                got.push((
                    r.offset,
                    r.timestamp_ms,
                    r.value.unwrap_or_default().to_vec(),
                ))
            },
            &mut bad,
        );
        (got, bad)
    }

    #[test]
    fn offsets_lost_to_damage_are_one_bad_range() {
        let (got, bad) = collect(&[], 40, 3);
        assert!(got.is_empty());
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].base_offset, bad[0].offsets), (40, 3));
        assert!(bad[0].reason.contains("lost"), "{}", bad[0].reason);
    }

    #[test]
    fn reads_plain_batches_back_to_back() {
        let mut entry = batch(
            &[(Some(b"k"), b"one", 10), (None, b"two", 12)],
            Compression::None,
        );
        entry.extend(batch(&[(None, b"three", 20)], Compression::None));
        let (got, bad) = collect(&entry, 100, 3);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            got,
            vec![
                (100, 10, b"one".to_vec()),
                (101, 12, b"two".to_vec()),
                (102, 20, b"three".to_vec())
            ]
        );
    }

    #[test]
    fn reads_gzip_lz4_zstd_and_snappy() {
        let records: Vec<TestRecord<'_>> = vec![(None, b"alpha", 1), (None, b"beta", 2)];
        let (got, bad) = collect(&batch(&records, Compression::None), 0, 2);
        assert!(bad.is_empty());
        assert_eq!(got.len(), 2);
        let mut plain = Vec::new();
        for (i, (_, v, ts)) in records.iter().enumerate() {
            plain.extend(record_bytes(i as i64, *ts - 1, v));
        }
        for codec in 1..=4i16 {
            let body = compress(codec, &plain);
            let b = with_body(&batch(&records, Compression::None), codec, &body);
            let (got, bad) = collect(&b, 7, 2);
            assert!(bad.is_empty(), "codec {codec}: {bad:?}");
            assert_eq!(got[0], (7, 1, b"alpha".to_vec()), "codec {codec}");
            assert_eq!(got[1], (8, 2, b"beta".to_vec()), "codec {codec}");
        }
        // xerial-framed snappy, as the Java client writes it.
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        xerial.extend((raw.len() as u32).to_be_bytes());
        xerial.extend(raw);
        let b = with_body(&batch(&records, Compression::None), 2, &xerial);
        let (got, bad) = collect(&b, 0, 2);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(got[1].2, b"beta".to_vec());
    }

    /// One record's bytes (length-prefixed), base timestamp taken as `ts - delta`.
    fn record_bytes(offset_delta: i64, ts_delta: i64, value: &[u8]) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, v: i64) {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                out.push(z as u8 | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
        }
        let mut body = vec![0u8];
        put(&mut body, ts_delta);
        put(&mut body, offset_delta);
        put(&mut body, -1);
        put(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put(&mut body, 0);
        let mut out = Vec::new();
        put(&mut out, body.len() as i64);
        out.extend(body);
        out
    }

    fn compress(codec: i16, plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(plain).unwrap(),
            3 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                e.write_all(plain).unwrap();
                e.finish().0
            }
            4 => zstd::encode_all(plain, 3).unwrap(),
            _ => unreachable!(),
        }
    }

    /// `batch` with its records replaced by `body` under `codec` (base timestamp 1).
    fn with_body(batch: &[u8], codec: i16, body: &[u8]) -> Vec<u8> {
        let mut b = batch[..HEADER_LEN].to_vec();
        b.extend_from_slice(body);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        b[27..35].copy_from_slice(&1i64.to_be_bytes());
        b
    }

    #[test]
    fn damaged_batches_are_reported_with_their_offsets_and_never_panic() {
        let good = batch(&[(None, b"x", 1), (None, b"y", 2)], Compression::None);
        // Every truncation and every single-byte flip: no panic, offsets accounted.
        for cut in 0..good.len() {
            let (got, bad) = collect(&good[..cut], 0, 2);
            let covered: u64 =
                got.len() as u64 + bad.iter().map(|b| u64::from(b.offsets)).sum::<u64>();
            assert!(covered >= 2 || cut < HEADER_LEN, "cut {cut}");
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = collect(&b, 0, 2);
        }
        let mut b = good.clone();
        b[HEADER_LEN] = 0x7f; // first record's length runs past the batch
        let (got, bad) = collect(&b, 5, 2);
        assert!(got.is_empty());
        assert_eq!(bad[0].base_offset, 5);
        assert_eq!(bad[0].offsets, 2);
        assert!(bad[0].reason.contains("truncated"), "{}", bad[0].reason);
    }
}
