//! The load generator's hot path, per event: Avro encoding of the reference event; a
//! 500-event record batch (key and value copies, varints, CRC32C) through
//! kafka-protocol's `RecordBatchEncoder` and through the generator's own
//! `BatchWriter`; and a whole produce request of 8 such batches, as the generator
//! builds and encodes it for the socket. `cargo bench --bench loadgen`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use tidewater_tools::loadgen::{self, event};

fn encode_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("loadgen");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(320);
    let mut device = 0u32;
    g.bench_function("avro_event", |b| {
        b.iter(|| {
            device = device.wrapping_add(1) % 100_000;
            event::encode(&event::Reading::sample(device), &mut buf);
            buf.len()
        })
    });
    const N: usize = 500;
    g.throughput(Throughput::Elements(N as u64));
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    let mut key = Vec::new();
    g.bench_function("record_batch_500", |b| {
        b.iter(|| {
            let records: Vec<Record> = (0..N as u32)
                .map(|d| {
                    event::encode(&event::Reading::sample(d), &mut buf);
                    event::device_key(d, &mut key);
                    loadgen::record(&key, &buf, 1_700_000_000_000, i64::from(d))
                })
                .collect();
            let mut out = BytesMut::new();
            RecordBatchEncoder::encode(&mut out, &records, &options).expect("encodes");
            out.len()
        })
    });
    let mut writer = loadgen::batch::BatchWriter::new(N * 340 + 64);
    g.bench_function("batch_writer_500", |b| {
        b.iter(|| {
            writer.clear();
            for d in 0..N as u32 {
                event::encode(&event::Reading::sample(d), &mut buf);
                event::device_key(d, &mut key);
                writer.push(&key, &buf, 1_700_000_000_000);
            }
            writer.take().len()
        })
    });
    const PARTITIONS: usize = 8;
    g.throughput(Throughput::Elements((N * PARTITIONS) as u64));
    let mut request = loadgen::RequestBuffer::default();
    g.bench_function("produce_request_8x500", |b| {
        b.iter(|| {
            let mut batches = Vec::with_capacity(PARTITIONS);
            for p in 0..PARTITIONS as i32 {
                writer.clear();
                for d in 0..N as u32 {
                    event::encode(&event::Reading::sample(d), &mut buf);
                    event::device_key(d, &mut key);
                    writer.push(&key, &buf, 1_700_000_000_000);
                }
                batches.push((p, writer.take()));
            }
            loadgen::produce_request(&mut request, "iot-sensor-data", batches, 1)
                .expect("encodes")
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, encode_event);
criterion_main!(benches);
