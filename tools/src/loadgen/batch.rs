//! A record batch (magic v2, uncompressed, no producer id) written straight into
//! one buffer: record framing, varints and CRC32C, with no per-record allocation.
//!
//! kafka-protocol's `RecordBatchEncoder` wants a `Record` (two `Bytes` copies and a
//! header map) per event; `cargo bench --bench loadgen` shows it costs several times
//! what the rest of an event does, and the load generator must outrun the server.
//! kafka-protocol's decoder reads these batches back in the tests, and the
//! compressed path still goes through its encoder.

const HEADER_LEN: usize = 61;

/// Builds one batch; `finish` completes the header and returns the bytes.
pub struct BatchWriter {
    buf: Vec<u8>,
    count: i32,
    base_ts: i64,
    max_ts: i64,
    record: Vec<u8>,
}

/// Appends `v` as a zigzag varint: Kafka's varint and varlong, and Avro's int and
/// long, are the same encoding.
pub fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push(z as u8 | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

impl BatchWriter {
    pub fn new(capacity: usize) -> BatchWriter {
        BatchWriter {
            buf: Vec::with_capacity(capacity),
            count: 0,
            base_ts: 0,
            max_ts: i64::MIN,
            record: Vec::with_capacity(512),
        }
    }

    /// Starts a new batch (the buffer is reused).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        self.count = 0;
        self.max_ts = i64::MIN;
    }

    pub fn len(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record with a key and a value.
    pub fn push(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64) {
        if self.buf.len() < HEADER_LEN {
            self.clear();
        }
        if self.count == 0 {
            self.base_ts = timestamp_ms;
        }
        let r = &mut self.record;
        r.clear();
        r.push(0); // attributes
        varint(r, timestamp_ms - self.base_ts);
        varint(r, i64::from(self.count)); // offset delta
        varint(r, key.len() as i64);
        r.extend_from_slice(key);
        varint(r, value.len() as i64);
        r.extend_from_slice(value);
        varint(r, 0); // headers
        varint(&mut self.buf, r.len() as i64);
        self.buf.extend_from_slice(r);
        self.count += 1;
        self.max_ts = self.max_ts.max(timestamp_ms);
    }

    /// Completes the header (lengths, timestamps, CRC32C) and returns the batch.
    pub fn finish(&mut self) -> &[u8] {
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
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

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
        let mut bytes = bytes::Bytes::copy_from_slice(w.finish());
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
        let mut bytes = bytes::Bytes::copy_from_slice(w.finish());
        assert_eq!(
            RecordBatchDecoder::decode(&mut bytes)
                .unwrap()
                .records
                .len(),
            1
        );
    }
}
