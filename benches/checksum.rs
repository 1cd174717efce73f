//! CRC-32C on the hot paths, the `crc32c` crate against `crc-fast` (what
//! `tidewater_io::checksum` uses), at the sizes the paths see: a 300-byte event, a
//! 6 KiB batch (20 events, a frame of a busy producer with `linger.ms=5`), and a
//! 1 MiB journal write. `cargo bench --bench checksum`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for size in [300usize, 6 << 10, 1 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        assert_eq!(tidewater_io::checksum::crc32c(&data), crc32c::crc32c(&data));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("crc32c-crate", size), &data, |b, d| {
            b.iter(|| crc32c::crc32c(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("crc-fast", size), &data, |b, d| {
            b.iter(|| tidewater_io::checksum::crc32c(black_box(d)))
        });
        // A frame: its 44 header bytes, then the payload.
        g.bench_with_input(BenchmarkId::new("crc-fast-frame", size), &data, |b, d| {
            b.iter(|| tidewater_io::checksum::crc32c_pair(black_box(&d[..44]), black_box(d)))
        });
    }
    g.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);
