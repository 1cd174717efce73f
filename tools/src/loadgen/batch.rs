//! A record batch (magic v2, uncompressed, no producer id) written straight into
//! one buffer: record framing, varints and CRC32C, with no per-record allocation.
//!
//! kafka-protocol's `RecordBatchEncoder` wants a `Record` (two `Bytes` copies and a
//! header map) per event; `cargo bench --bench loadgen` shows it costs several times
//! what the rest of an event does, and the load generator must outrun the server.
//! kafka-protocol's decoder reads these batches back in the tests, and the
//! compressed path still goes through its encoder.

use bytes::{BufMut, Bytes, BytesMut};

const HEADER_LEN: usize = 61;

/// Builds one batch in place; `take` completes the header and hands the bytes over
/// without a copy (the next batch gets a buffer of its own while they live).
pub struct BatchWriter {
    buf: BytesMut,
    capacity: usize,
    count: i32,
    base_ts: i64,
    max_ts: i64,
}

/// Appends `v` as a zigzag varint: Kafka's varint and varlong, and Avro's int and
/// long, are the same encoding.
pub fn varint(out: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8(z as u8 | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// The bytes [`varint`] writes for `v`.
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

impl BatchWriter {
    pub fn new(capacity: usize) -> BatchWriter {
        BatchWriter {
            buf: BytesMut::with_capacity(capacity),
            capacity,
            count: 0,
            base_ts: 0,
            max_ts: i64::MIN,
        }
    }

    /// Starts a new batch.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.reserve(self.capacity);
        self.buf.put_bytes(0, HEADER_LEN);
        self.count = 0;
        self.max_ts = i64::MIN;
    }

    pub fn len(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record with a key and a value, written straight into the batch:
    /// its length is known before its bytes.
    pub fn push(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64) {
        if self.buf.len() < HEADER_LEN {
            self.clear();
        }
        if self.count == 0 {
            self.base_ts = timestamp_ms;
        }
        let delta = timestamp_ms - self.base_ts;
        let (klen, vlen) = (key.len() as i64, value.len() as i64);
        let len = 1
            + varint_len(delta)
            + varint_len(i64::from(self.count))
            + varint_len(klen)
            + key.len()
            + varint_len(vlen)
            + value.len()
            + 1;
        let b = &mut self.buf;
        varint(b, len as i64);
        b.put_u8(0); // attributes
        varint(b, delta);
        varint(b, i64::from(self.count)); // offset delta
        varint(b, klen);
        b.put_slice(key);
        varint(b, vlen);
        b.put_slice(value);
        varint(b, 0); // headers
        self.count += 1;
        self.max_ts = self.max_ts.max(timestamp_ms);
    }

    /// Completes the header (lengths, timestamps, CRC32C) and returns the batch; the
    /// writer is empty afterwards.
    pub fn take(&mut self) -> Bytes {
        let b = &mut self.buf;
        let batch_len = (b.len() - 12) as i32;
        b[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset: the broker's
        b[8..12].copy_from_slice(&batch_len.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b[16] = 2; // magic
        b[21..23].copy_from_slice(&0i16.to_be_bytes()); // attributes: none, create time
        b[23..27].copy_from_slice(&(self.count - 1).to_be_bytes()); // last offset delta
        b[27..35].copy_from_slice(&self.base_ts.to_be_bytes());
        b[35..43].copy_from_slice(&self.max_ts.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = tidewater_io::checksum::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        self.count = 0;
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn varint_len_is_what_varint_writes() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i64::MAX,
            i64::MIN,
            300,
            -300,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn kafka_protocol_reads_it_back_exactly() {
        let mut w = BatchWriter::new(1 << 16);
        w.clear();
        let values: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; i % 200]).collect();
        for (i, v) in values.iter().enumerate() {
            w.push(
                format!("k{i}").as_bytes(),
                v,
                1_700_000_000_000 + (i as i64 % 7) * 13,
            );
        }
        let mut bytes = w.take();
        let set = RecordBatchDecoder::decode(&mut bytes).expect("valid batch, CRC included");
        let records = set.records;
        assert_eq!(records.len(), 300);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(r.value.as_deref(), Some(&values[i][..]));
            assert_eq!(r.timestamp, 1_700_000_000_000 + (i as i64 % 7) * 13);
            assert_eq!(r.producer_id, -1);
        }
        // Reused for the next batch.
        w.clear();
        w.push(b"x", b"y", 5);
        let mut bytes = w.take();
        assert_eq!(
            RecordBatchDecoder::decode(&mut bytes)
                .unwrap()
                .records
                .len(),
            1
        );
    }
}
