//! The pipeline's hot paths, per event: reading records out of a stored batch, Avro
//! projection (ours against apache-avro's decoder, the reference; and framed with a
//! schema-registry id), JSON projection
//! (plain and as Python writes it, against a serde_json map of raw values, the
//! decoder before it), keyBy routing, window update and fire, a fired window's rows
//! as JSON (what the topic and file sinks write), and the cross-core mailbox
//! hand-off.
//!
//! `cargo bench -p tidewater-shards --bench pipeline`; criterion reports time per
//! iteration and elements/s (one element = one event).

use apache_avro::types::Value;
use apache_avro::Schema;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::{Duration, Instant};
use tidewater_shards::partitioner::partition_for;
use tidewater_shards::pipeline::avro::{
    reader_fields, Num, Projected, Projection, ReaderFields, SlotKind, SLOTS_MAX,
};
use tidewater_shards::pipeline::by_id::{ByIds, RegistryLink};
use tidewater_shards::pipeline::json::{JsonProjection, TimeFormat};
use tidewater_shards::pipeline::records::{for_each_record, validate};
use tidewater_shards::pipeline::spec::{Aggregate, Func, Job, JobConfig};
use tidewater_shards::pipeline::window::{Layout, Position, Windows};
use tidewater_shards::sink::rows::JsonRows;

const SCHEMA: &str = include_str!("../../schemas/sensor.avsc");
const EVENTS: usize = 10_000;
const DEVICES: u32 = 100_000;

fn datum(schema: &Schema, i: u32) -> Vec<u8> {
    let v = Value::Record(vec![
        (
            "device_id".into(),
            Value::String(format!("device-{:06}", i % DEVICES)),
        ),
        ("sensor_type".into(), Value::Int((i % 8) as i32)),
        (
            "timestamp".into(),
            Value::Long(1_700_000_000_000 + i64::from(i)),
        ),
        (
            "temperature".into(),
            Value::Double(20.0 + f64::from(i % 100) / 10.0),
        ),
        ("humidity".into(), Value::Double(50.0)),
        ("pressure".into(), Value::Double(1000.0)),
        ("battery_level".into(), Value::Double(80.0)),
        ("status".into(), Value::Int(1)),
        ("latitude".into(), Value::Double(48.1)),
        ("longitude".into(), Value::Double(11.5)),
        ("firmware".into(), Value::String("1.2.3".into())),
        ("metadata".into(), Value::Bytes(vec![7; 200])),
    ]);
    apache_avro::to_avro_datum(schema, v).expect("encodes")
}

/// The reference event as JSON: compact, or as Python's `json.dumps` writes it
/// (spaces, `\u` escapes, a float timestamp).
fn json_event(i: u32, python: bool) -> Vec<u8> {
    let id = if python {
        format!("d\\u00e9vice-{:06}", i % DEVICES)
    } else {
        format!("device-{:06}", i % DEVICES)
    };
    let ts = 1_700_000_000_000u64 + u64::from(i);
    let (sep, ts) = if python {
        (", ", format!("{ts}.0"))
    } else {
        (",", ts.to_string())
    };
    let fields = [
        format!("\"device_id\":\"{id}\""),
        format!("\"sensor_type\":{}", i % 8),
        format!("\"timestamp\":{ts}"),
        format!("\"temperature\":{}", 20.0 + f64::from(i % 100) / 10.0),
        "\"humidity\":50.5".into(),
        "\"pressure\":1000.25".into(),
        "\"battery_level\":80.0".into(),
        "\"status\":1".into(),
        "\"latitude\":48.1".into(),
        "\"longitude\":11.5".into(),
        "\"firmware\":\"1.2.3\"".into(),
        format!("\"metadata\":\"{}\"", "ab".repeat(100)),
    ];
    format!("{{{}}}", fields.join(sep)).into_bytes()
}

/// JSON projection of 5 of 12 fields, compact and Python-style, and the decoder it
/// replaced (a serde_json map of raw values; it refused escapes) as the reference.
fn json_projection(g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {
    let names = [
        "device_id",
        "timestamp",
        "temperature",
        "humidity",
        "pressure",
    ];
    let kinds = [
        SlotKind::Bytes,
        SlotKind::Int,
        SlotKind::Float,
        SlotKind::Float,
        SlotKind::Float,
    ];
    let table: Vec<(String, u8, SlotKind)> = names
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (n, k))| (n.to_string(), i as u8, k))
        .collect();
    let p = JsonProjection::new(table, Some((1, TimeFormat::EpochMs)));
    for python in [false, true] {
        let events: Vec<Vec<u8>> = (0..EVENTS as u32).map(|i| json_event(i, python)).collect();
        let name = if python {
            "json, as Python writes it (5 of 12 fields)"
        } else {
            "json (5 of 12 fields)"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for e in &events {
                    let mut scratch = Vec::new();
                    let mut out = Projected::default();
                    p.project(e, &mut out, &mut scratch).unwrap();
                    sum += out.vals[2].map_or(0.0, Num::as_f64);
                }
                black_box(sum)
            })
        });
    }
    let events: Vec<Vec<u8>> = (0..EVENTS as u32).map(|i| json_event(i, false)).collect();
    g.bench_function(
        "json: serde_json map of raw values (the decoder before)",
        |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for e in &events {
                    let obj: std::collections::HashMap<&str, &serde_json::value::RawValue> =
                        serde_json::from_slice(e).unwrap();
                    for n in &names[1..] {
                        if let Some(v) = obj.get(n) {
                            sum += v.get().parse::<f64>().unwrap_or(0.0);
                        }
                    }
                }
                black_box(sum)
            })
        },
    );
}

/// The same events in Confluent framing (magic byte, schema id 1), the writer
/// schema resolved through the schema registry on the first record and cached:
/// what an `avro-confluent` job pays over plain Avro.
fn confluent_projection(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    schema: &Schema,
    fields: &ReaderFields,
    spans: &[(usize, usize)],
    buf: &[u8],
) {
    let mut registry = tidewater_registry::Registry::default();
    let (id, records) = registry.register("iot-value", SCHEMA, None, &[]).unwrap();
    assert_eq!(id, 1);
    records.into_iter().for_each(|r| registry.apply(r));
    let mut by_id = ByIds::new(Default::default(), schema.clone(), fields.clone());
    by_id.link(RegistryLink {
        registry: tidewater_registry::Shared::new(registry),
        entries: Default::default(),
        misses: Default::default(),
    });
    let mut framed = Vec::new();
    let mut at = Vec::new();
    for &(from, len) in spans {
        at.push((framed.len(), len + 5));
        framed.extend_from_slice(&[0, 0, 0, 0, 1]);
        framed.extend_from_slice(&buf[from..from + len]);
    }
    let data: Vec<&[u8]> = at.iter().map(|&(a, len)| &framed[a..a + len]).collect();
    g.bench_function(
        "avro-confluent, id from the registry (5 of 12 fields)",
        |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for d in &data {
                    let mut out = Projected::default();
                    by_id.project(d, &mut out).unwrap();
                    sum += out.vals[2].map_or(0.0, Num::as_f64);
                }
                black_box(sum)
            })
        },
    );
}

fn projection(c: &mut Criterion) {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let fields = reader_fields(
        &schema,
        &[
            "device_id",
            "timestamp",
            "temperature",
            "humidity",
            "pressure",
        ],
        "device_id",
    )
    .unwrap();
    let p = Projection::compile(&schema, &schema, &fields).unwrap();
    // Back to back in one buffer, as records sit in a log entry read from the ledger.
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    for i in 0..EVENTS as u32 {
        let d = datum(&schema, i);
        spans.push((buf.len(), d.len()));
        buf.extend_from_slice(&d);
    }
    let data: Vec<&[u8]> = spans.iter().map(|&(at, len)| &buf[at..at + len]).collect();
    let mut g = c.benchmark_group("projection");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("compiled (5 of 12 fields)", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for d in &data {
                let mut out = Projected::default();
                p.project(d, &mut out).unwrap();
                sum += out.vals[2].map_or(0.0, Num::as_f64);
            }
            black_box(sum)
        })
    });
    confluent_projection(&mut g, &schema, &fields, &spans, &buf);
    json_projection(&mut g);
    g.sample_size(10);
    g.bench_function("apache-avro from_avro_datum (reference)", |b| {
        b.iter(|| {
            let mut n = 0;
            for d in &data {
                let v = apache_avro::from_avro_datum(&schema, &mut &d[..], None).unwrap();
                n += matches!(v, Value::Record(_)) as usize;
            }
            black_box(n)
        })
    });
    g.finish();
}

fn records(c: &mut Criterion) {
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let recs: Vec<Record> = (0..500u32)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000,
            key: Some(bytes::Bytes::from(format!("device-{i:06}"))),
            value: Some(bytes::Bytes::from(datum(&schema, i))),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    let mut g = c.benchmark_group("records");
    g.throughput(Throughput::Elements(500));
    g.bench_function("iterate a stored batch of 500", |b| {
        let mut scratch = Vec::new();
        let mut bad = Vec::new();
        b.iter(|| {
            let mut n = 0usize;
            for_each_record(
                &batch,
                0,
                500,
                &mut scratch,
                |r| n += r.value.map_or(0, |v| v.len()),
                &mut bad,
            );
            black_box(n)
        })
    });
    // What a Produce pays per batch: the checksum it always paid, and the record
    // walk it pays now so that no consumer meets a batch it cannot read.
    g.bench_function("produce check: CRC32C of a batch of 500", |b| {
        b.iter(|| black_box(crc32c::crc32c(black_box(&batch[21..]))))
    });
    g.bench_function("produce check: validate a batch of 500", |b| {
        let mut scratch = Vec::new();
        b.iter(|| black_box(validate(black_box(&batch), &mut scratch)))
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..EVENTS as u32)
        .map(|i| format!("device-{:06}", i * 7 % DEVICES).into_bytes())
        .collect();
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("key -> partition -> core", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in &keys {
                acc = acc.wrapping_add(tidewater_shards::partition_owner(partition_for(k, 8), 2));
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn layout() -> Layout {
    let a = |func, slot: Option<u8>, kind| Aggregate {
        func,
        slot,
        kind,
        name: String::new(),
    };
    Layout::new(vec![
        a(Func::Count, None, SlotKind::Int),
        a(Func::Min, Some(2), SlotKind::Float),
        a(Func::Max, Some(2), SlotKind::Float),
        a(Func::Avg, Some(2), SlotKind::Float),
        a(Func::Avg, Some(3), SlotKind::Float),
        a(Func::Sum, Some(4), SlotKind::Float),
    ])
}

fn window_update(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..EVENTS as u32)
        .map(|i| format!("device-{:06}", i * 7919 % DEVICES).into_bytes())
        .collect();
    let mut vals = [None; SLOTS_MAX];
    vals[2] = Some(Num::F(21.5));
    vals[3] = Some(Num::F(50.0));
    vals[4] = Some(Num::F(1000.0));
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(EVENTS as u64));
    // Steady state: the (key, window) entries exist (100k devices, reference job).
    g.bench_function("update, 100k open keys, reference aggregates", |b| {
        let mut w = Windows::new(layout(), 60_000, 0, 10_000_000);
        for d in 0..DEVICES {
            let k = format!("device-{d:06}");
            w.apply(
                k.as_bytes(),
                &vals,
                Position {
                    ts: 1_000,
                    partition: 0,
                    offset: 0,
                },
            );
        }
        let mut off = 0u64;
        b.iter(|| {
            for k in &keys {
                off += 1;
                w.apply(
                    k,
                    &vals,
                    Position {
                        ts: 2_000,
                        partition: 0,
                        offset: off,
                    },
                );
            }
        })
    });
    // Every key once per 100k events (each device reports in turn, as in the
    // reference load): no entry is still in cache when its next event comes.
    let all: Vec<Vec<u8>> = (0..DEVICES)
        .map(|i| format!("device-{:06}", (u64::from(i) * 7919 % u64::from(DEVICES))).into_bytes())
        .collect();
    g.throughput(Throughput::Elements(u64::from(DEVICES)));
    g.bench_function("update, 100k open keys touched in turn", |b| {
        let mut w = Windows::new(layout(), 60_000, 0, 10_000_000);
        let mut off = 0u64;
        b.iter(|| {
            for k in &all {
                off += 1;
                w.apply(
                    k,
                    &vals,
                    Position {
                        ts: 2_000,
                        partition: 0,
                        offset: off,
                    },
                );
            }
        })
    });
    // Per key from here on: one element = one row of the fired window.
    g.throughput(Throughput::Elements(u64::from(DEVICES)));
    g.bench_function("fire a window of 100k keys (per key)", |b| {
        b.iter_batched(
            || {
                let mut w = Windows::new(layout(), 60_000, 0, 10_000_000);
                for d in 0..DEVICES {
                    let k = format!("device-{d:06}");
                    w.apply(
                        k.as_bytes(),
                        &vals,
                        Position {
                            ts: 1_000,
                            partition: 0,
                            offset: 0,
                        },
                    );
                }
                w
            },
            |mut w| {
                let mut rows = 0;
                w.fire(60_000, Instant::now(), |f| {
                    rows += f.rows();
                    true
                });
                black_box(rows)
            },
            BatchSize::LargeInput,
        )
    });
    // What the topic and file sinks send: every row of the fired window as JSON.
    let job = reference_job();
    let lay = Layout::new(job.aggregates.clone());
    let mut w = Windows::new(Layout::new(job.aggregates.clone()), 60_000, 0, 10_000_000);
    for d in 0..DEVICES {
        let k = format!("device-{d:06}");
        let mut v = [None; SLOTS_MAX];
        for (n, a) in job.aggregates.iter().enumerate() {
            if let Some(slot) = a.slot {
                v[slot as usize] = Some(Num::F(20.0 + f64::from(d % 1000) / 7.0 + n as f64));
            }
        }
        w.apply(
            k.as_bytes(),
            &v,
            Position {
                ts: 1_000,
                partition: 0,
                offset: 0,
            },
        );
    }
    let mut fired = None;
    w.fire(60_000, Instant::now(), |f| {
        fired = Some(f);
        true
    });
    let fired = fired.expect("one window");
    g.bench_function("JSON rows of a window of 100k keys (per key)", |b| {
        b.iter(|| {
            let rows = futures_lite::future::block_on(JsonRows::encode(&job, &lay, &fired));
            black_box(rows.len())
        })
    });
    g.finish();
}

/// The reference job (its sinks and schema path do not matter here).
fn reference_job() -> Job {
    let text = r#"
name = "device_minute"
source = "iot-sensor-data"
schema_file = "schemas/sensor.avsc"
key = "device_id"
event_time = "timestamp"
window = { type = "tumbling", size = "1m" }
aggregates = [
  { fn = "count", as = "events" },
  { fn = "min", field = "temperature", as = "temperature_min" },
  { fn = "max", field = "temperature", as = "temperature_max" },
  { fn = "avg", field = "temperature", as = "temperature_avg" },
  { fn = "avg", field = "humidity", as = "humidity_avg" },
  { fn = "sum", field = "pressure", as = "pressure_sum" },
]

[[sinks]]
type = "file"
path = "rows.jsonl"
"#;
    let cfg: JobConfig = toml::from_str(text).expect("the reference job parses");
    cfg.compile(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.."
    )))
    .expect("the reference job compiles")
}

/// Batches of 1024 events (key bytes + 5 values each) from one pinned executor to
/// another through a glommio shared channel, as keyBy sends them.
fn mailbox(c: &mut Criterion) {
    use glommio::channels::shared_channel;
    use glommio::{LocalExecutorBuilder, Placement};
    const BATCH: usize = 1024;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("mailbox");
    g.sample_size(10);
    g.throughput(Throughput::Elements((BATCH * 256) as u64));
    g.bench_function("cross-core hand-off, batches of 1024", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) =
                    shared_channel::new_bounded::<(Vec<u8>, Vec<(u32, u32, i64, u64)>, Vec<f64>)>(
                        64,
                    );
                // Timed from the first send to the last receive: executor start-up
                // and channel connection are not the hand-off's cost.
                let recv = LocalExecutorBuilder::new(Placement::Fixed(1 % cpus))
                    .spawn(move || async move {
                        let rx = rx.connect().await;
                        let mut n = 0usize;
                        while let Some((_, recs, _)) = rx.recv().await {
                            n += recs.len();
                        }
                        (n, Instant::now())
                    })
                    .unwrap();
                let send = LocalExecutorBuilder::new(Placement::Fixed(0))
                    .spawn(move || async move {
                        let tx = tx.connect().await;
                        let started = Instant::now();
                        for _ in 0..256 {
                            let keys = vec![b'd'; BATCH * 13];
                            let recs: Vec<(u32, u32, i64, u64)> = (0..BATCH as u32)
                                .map(|i| (i * 13, 13, 0, u64::from(i)))
                                .collect();
                            let vals = vec![1.0; BATCH * 5];
                            tx.send((keys, recs, vals)).await.unwrap();
                        }
                        started
                    })
                    .unwrap();
                let started = send.join().unwrap();
                let (n, ended) = recv.join().unwrap();
                assert_eq!(n, BATCH * 256);
                total += ended.duration_since(started);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    projection,
    records,
    routing,
    window_update,
    mailbox
);
criterion_main!(benches);
