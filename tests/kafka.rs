//! The Kafka front end with real clients: kcat (librdkafka) produces keyed messages and
//! consumes them back byte-identical; Metadata sends each partition to its owning
//! core; garbage on a socket closes that connection only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{consume, kcat, start, start_with, Server};

fn produce_and_consume(cores: &str, extra: &[&str]) -> Server {
    let s = start_with(cores, 5, extra);
    let broker = format!("127.0.0.1:{}", s.port);
    let n = 500;
    let input: String = (0..n)
        .map(|i| format!("key-{i}\tvalue {i} {}\n", "x".repeat(i % 97)))
        .collect();
    let (ok, _, err) = kcat(
        &[
            "-P",
            "-b",
            &broker,
            "-t",
            "events",
            "-K",
            "\t",
            "-X",
            "acks=all",
            // The Java client's partitioner; the loadgen and keyBy use our murmur2.
            "-X",
            "partitioner=murmur2_random",
        ],
        Some(&input),
    );
    assert!(ok, "produce failed: {err}");
    let out = consume(&broker, "events", "%p\t%o\t%k\t%s\n");
    let mut got: Vec<(String, String)> = Vec::new();
    let mut per_partition: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for line in out.lines() {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        assert_eq!(f.len(), 4, "{line}");
        per_partition
            .entry(f[0].to_string())
            .or_default()
            .push(f[1].parse().unwrap());
        let want = tidewater_tools::loadgen::partitioner::partition_for(f[2].as_bytes(), 5);
        assert_eq!(
            f[0].parse::<u32>().unwrap(),
            want,
            "librdkafka's murmur2 agrees: {line}"
        );
        got.push((f[2].to_string(), f[3].to_string()));
    }
    got.sort();
    let mut want: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("key-{i}"),
                format!("value {i} {}", "x".repeat(i % 97)),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "message count; stderr: {err}");
    assert!(got == want, "every message back, byte-identical");
    for (p, offsets) in per_partition {
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, dense, "partition {p} offsets dense from 0");
    }
    s
}

#[test]
fn kcat_round_trip_on_one_core() {
    produce_and_consume("1", &[]);
}

#[test]
fn kcat_round_trip_on_two_cores_per_core_brokers() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: needs 2 CPUs");
        return;
    }
    let s = start("2", 4);
    let broker = format!("127.0.0.1:{}", s.port);
    let (ok, out, err) = kcat(&["-L", "-b", &broker], None);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("broker 1 at 127.0.0.1:{}", s.port + 1)),
        "{out}"
    );
    for p in 0..4 {
        assert!(
            out.contains(&format!("partition {p}, leader {}", p % 2)),
            "{out}"
        );
    }
    drop(s);
    let s = produce_and_consume("2", &[]);
    // Each partition's data went straight to its owner: nothing was forwarded.
    let metrics = common::scrape_when(s.admin, |m| {
        common::metric_sum(m, "tidewater_records_in_total") >= 500.0
    });
    assert_eq!(
        common::metric_sum(&metrics, "tidewater_cross_core_forwards_total"),
        0.0
    );
    assert!(common::metric_sum(&metrics, "tidewater_records_in_total") >= 500.0);
}

#[test]
fn kcat_round_trip_on_two_cores_single_port() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: needs 2 CPUs");
        return;
    }
    let s = start_with("2", 4, &["--kafka-mode", "single-port"]);
    let broker = format!("127.0.0.1:{}", s.port);
    let (ok, out, err) = kcat(&["-L", "-b", &broker], None);
    assert!(ok, "{err}");
    assert!(out.contains("1 brokers:"), "one broker: {out}");
    for p in 0..4 {
        assert!(out.contains(&format!("partition {p}, leader 0")), "{out}");
    }
    drop(s);
    // Connections land on either core; the other core's partitions are forwarded.
    let s = produce_and_consume("2", &["--kafka-mode", "single-port"]);
    let metrics = common::scrape_when(s.admin, |m| {
        common::metric_sum(m, "tidewater_cross_core_forwards_total") > 0.0
    });
    assert!(
        common::metric_sum(&metrics, "tidewater_cross_core_forwards_total") > 0.0,
        "{metrics}"
    );
}

/// Single port: a connection is served by the core whose CPU received its packets
/// (over loopback, the CPU of the thread that connected), not by a hash.
#[test]
fn single_port_connections_land_on_the_core_of_their_receiving_cpu() {
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if cpus.len() < 2 {
        eprintln!("SKIPPED: needs 2 CPUs");
        return;
    }
    let s = start_with("2", 4, &["--kafka-mode", "single-port"]);
    let accepted = |m: &str, shard: usize| {
        let label = format!("shard=\"{shard}\"");
        m.lines()
            .filter(|l| {
                l.starts_with("tidewater_kafka_connections_accepted_total{") && l.contains(&label)
            })
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>()
    };
    let before = common::scrape(s.admin);
    const EACH: usize = 12;
    let port = s.port;
    // Core i runs on cpus[i] (`--cores 2`: the first two CPUs).
    let held: Vec<std::net::TcpStream> = (0..2)
        .flat_map(|shard| {
            let cpu = cpus[shard];
            std::thread::spawn(move || {
                assert!(core_affinity::set_for_current(core_affinity::CoreId {
                    id: cpu
                }));
                (0..EACH)
                    .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap()
        })
        .collect();
    let total = |m: &str| accepted(m, 0) + accepted(m, 1);
    let want = total(&before) + 2.0 * EACH as f64;
    let after = common::scrape_when(s.admin, |m| total(m) >= want);
    for shard in 0..2 {
        assert_eq!(
            accepted(&after, shard) - accepted(&before, shard),
            EACH as f64,
            "core {shard} accepted the connections made from its CPU: {after}"
        );
    }
    assert_eq!(
        common::metric_sum(&after, "tidewater_kafka_connections_off_cpu_total"),
        0.0,
        "{after}"
    );
    // Placed by the program, not only by the kernel's own preference for
    // SO_INCOMING_CPU (kernels from 6.2): it was attached.
    let lines: Vec<String> = s.log.try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("connections go to the core of the CPU that received them")),
        "{lines:?}"
    );
    drop(held);
}

#[test]
fn unknown_topics_get_an_error_and_garbage_closes_only_its_connection() {
    let s = start("1", 2);
    let broker = format!("127.0.0.1:{}", s.port);
    let (_, out, err) = kcat(&["-L", "-b", &broker, "-t", "nope"], None);
    assert!(out.contains("Unknown topic or partition"), "{out} {err}");
    // A producer to it never gets the message acknowledged.
    let (_, _, err) = kcat(
        &[
            "-P",
            "-b",
            &broker,
            "-t",
            "nope",
            "-X",
            "message.timeout.ms=2000",
        ],
        Some("x\n"),
    );
    assert!(err.contains("Delivery failed"), "{err}");

    let garbage: Vec<Vec<u8>> = vec![
        vec![0xff; 64],                                         // negative size
        vec![0, 0, 0, 20, 0, 77, 0, 0, 1, 2, 3],                // unknown API key, truncated
        vec![0, 0, 0, 12, 0, 3, 0, 99, 0, 0, 0, 1, 0, 0, 0, 0], // Metadata v99
        vec![0, 0, 0, 9, 0, 0],                                 // cut short, then closed
        (0..4096).map(|i| (i * 7 % 251) as u8).collect(),
    ];
    for g in garbage {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let _ = c.write_all(&g);
        let _ = c.shutdown(std::net::Shutdown::Write);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    // The server still serves everyone else.
    let t = Instant::now();
    let (ok, out, err) = kcat(&["-L", "-b", &broker], None);
    assert!(ok && out.contains("topic \"events\""), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30));
    let (ok, _, err) = kcat(
        &["-P", "-b", &broker, "-t", "events", "-p", "0"],
        Some("after garbage\n"),
    );
    assert!(ok, "{err}");
    let (ok, out, _) = kcat(
        &[
            "-C",
            "-b",
            &broker,
            "-t",
            "events",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
        ],
        None,
    );
    assert!(ok && out.contains("after garbage"), "{out}");
}

#[test]
fn kafka_python_with_acks_all_and_compression_reads_everything_back() {
    let s = start("1", 3);
    let broker = format!("127.0.0.1:{}", s.port);
    for codec in ["none", "gzip", "lz4"] {
        let (ok, out) = common::python(
            "kafka_python_roundtrip.py",
            &[&broker, "events", codec, "2000"],
        );
        assert!(ok, "kafka-python with {codec}: {out}");
    }
}

/// A v2 record batch of one record from idempotent producer `pid`, sequence `seq`.
fn idempotent_batch(pid: i64, seq: i32, value: &[u8]) -> Vec<u8> {
    // One record: length, attributes, timestamp delta, offset delta, key -1, value, 0 headers.
    let mut rec = vec![0u8, 0, 0, 1]; // attributes, ts delta 0, offset delta 0, key len -1 (zigzag 1)
    rec.push((value.len() as u8) << 1); // zigzag varint (values < 64 bytes)
    rec.extend_from_slice(value);
    rec.push(0); // headers
    let mut body = vec![(rec.len() as u8) << 1];
    body.extend(rec);
    let mut b = vec![0u8; 61];
    b.extend(body);
    let batch_length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[16] = 2;
    b[23..27].copy_from_slice(&0i32.to_be_bytes()); // last offset delta
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Sends a Produce v3 (acks=all) of `batch` to partition 0 of `events`; returns
/// (error code, base offset).
fn raw_produce(conn: &mut TcpStream, correlation: i32, batch: &[u8]) -> (i16, i64) {
    send_produce(conn, correlation, batch);
    produce_answer(conn, correlation)
}

/// Sends a Produce v3 (acks=all) of `batch` to partition 0 of `events`.
fn send_produce(conn: &mut TcpStream, correlation: i32, batch: &[u8]) {
    let mut req = Vec::new();
    req.extend(0i16.to_be_bytes()); // Produce
    req.extend(3i16.to_be_bytes()); // v3
    req.extend(correlation.to_be_bytes());
    req.extend(4i16.to_be_bytes());
    req.extend(b"test");
    req.extend((-1i16).to_be_bytes()); // no transactional id
    req.extend((-1i16).to_be_bytes()); // acks=all
    req.extend(5000i32.to_be_bytes());
    req.extend(1i32.to_be_bytes()); // one topic
    req.extend(6i16.to_be_bytes());
    req.extend(b"events");
    req.extend(1i32.to_be_bytes()); // one partition
    req.extend(0i32.to_be_bytes());
    req.extend((batch.len() as i32).to_be_bytes());
    req.extend(batch);
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
}

/// Reads the answer to a [`send_produce`]: (error code, base offset).
fn produce_answer(conn: &mut TcpStream, correlation: i32) -> (i16, i64) {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[0..4], &correlation.to_be_bytes());
    // correlation(4) topics(4) name(2+6) partitions(4) index(4) error(2) base_offset(8)
    let at = 4 + 4 + 8 + 4 + 4;
    let code = i16::from_be_bytes([resp[at], resp[at + 1]]);
    let offset = i64::from_be_bytes(resp[at + 2..at + 10].try_into().unwrap());
    (code, offset)
}

#[test]
fn a_retried_idempotent_batch_is_stored_once() {
    let s = start("1", 1);
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let pid = 4242;
    assert_eq!(
        raw_produce(&mut conn, 1, &idempotent_batch(pid, 0, b"first")),
        (0, 0)
    );
    assert_eq!(
        raw_produce(&mut conn, 2, &idempotent_batch(pid, 1, b"second")),
        (0, 1)
    );
    // The response to seq 1 was "lost": the producer sends it again.
    assert_eq!(
        raw_produce(&mut conn, 3, &idempotent_batch(pid, 1, b"second")),
        (0, 1)
    );
    // A gap is refused with OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    assert_eq!(
        raw_produce(&mut conn, 4, &idempotent_batch(pid, 5, b"gap")).0,
        45
    );
    // A flipped byte is CORRUPT_MESSAGE (2), and nothing is appended.
    let mut bad = idempotent_batch(pid, 2, b"third");
    let last = bad.len() - 2;
    bad[last] ^= 0x20;
    assert_eq!(raw_produce(&mut conn, 5, &bad).0, 2);
    assert_eq!(
        raw_produce(&mut conn, 6, &idempotent_batch(pid, 2, b"third")),
        (0, 2)
    );
    let broker = format!("127.0.0.1:{}", s.port);
    let out = consume(&broker, "events", "%o %s\n");
    assert_eq!(out, "0 first\n1 second\n2 third\n");
}

/// Produce requests sent back to back on one connection are pipelined: they share
/// journal writes (group commits), get their offsets in request order and are
/// answered in request order, an ApiVersions between them in its place; the
/// idempotent producer's batches each follow the one before, not yet durable.
/// Garbage behind pipelined requests closes the connection after their answers.
#[test]
fn pipelined_produce_requests_share_writes_and_keep_their_order() {
    let s = start_with("1", 1, &["--durability", "always"]);
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let pid = 77;
    let n = 300;
    let mut burst = TcpStream::try_clone(&conn).unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            if i == n / 2 {
                // ApiVersions v0: key 18, version 0, correlation, client id "test".
                let mut req = vec![0, 18, 0, 0];
                req.extend(1_000_000i32.to_be_bytes());
                req.extend(4i16.to_be_bytes());
                req.extend(b"test");
                burst.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
                burst.write_all(&req).unwrap();
            }
            send_produce(
                &mut burst,
                i,
                &idempotent_batch(pid, i, format!("v{i}").as_bytes()),
            );
        }
    });
    for i in 0..n {
        if i == n / 2 {
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).unwrap();
            let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
            conn.read_exact(&mut resp).unwrap();
            assert_eq!(
                &resp[0..4],
                &1_000_000i32.to_be_bytes(),
                "ApiVersions in its place"
            );
        }
        assert_eq!(
            produce_answer(&mut conn, i),
            (0, i64::from(i)),
            "request {i}"
        );
    }
    sender.join().unwrap();
    // The counters reach the registry about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (appends, writes) = loop {
        let metrics = common::scrape(s.admin);
        let appends = common::metric_sum(&metrics, "tidewater_journal_appends_total");
        let writes = common::metric_sum(&metrics, "tidewater_journal_writes_total");
        if appends == f64::from(n) || Instant::now() > deadline {
            break (appends, writes);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(appends, f64::from(n));
    // Handled one at a time, every request would have had a write of its own.
    assert!(
        writes < appends / 2.0,
        "{writes} journal writes for {appends} appends from one connection"
    );
    let broker = format!("127.0.0.1:{}", s.port);
    let out = consume(&broker, "events", "%o %s\n");
    let want: String = (0..n).map(|i| format!("{i} v{i}\n")).collect();
    assert_eq!(out, want);

    // Garbage behind pipelined requests: they are answered, then the connection
    // closes; the server goes on.
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    for i in 0..5 {
        send_produce(&mut conn, i, &idempotent_batch(78, i, b"before garbage"));
    }
    // A whole frame of 20 bytes with an unknown API key.
    let mut garbage = vec![0, 0, 0, 20, 0, 77];
    garbage.resize(24, 1);
    conn.write_all(&garbage).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for i in 0..5 {
        assert_eq!(produce_answer(&mut conn, i), (0, i64::from(n + i)));
    }
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the answers, then the close");
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    assert_eq!(
        raw_produce(&mut conn, 1, &idempotent_batch(78, 5, b"after")),
        (0, i64::from(n + 5))
    );
}

#[test]
fn confluent_kafka_idempotent_producer_round_trips() {
    let s = start("1", 2);
    let broker = format!("127.0.0.1:{}", s.port);
    let (ok, out) = common::python("confluent_idempotent.py", &[&broker, "events", "3000"]);
    assert!(ok, "confluent-kafka: {out}");
}

#[test]
fn loadgen_produces_the_reference_events_and_reports_them() {
    let s = start("1", 4);
    let broker = format!("127.0.0.1:{}", s.port);
    let report = s.dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args([
            "loadgen",
            "--brokers",
            &broker,
            "--topic",
            "events",
            "--events",
            "20000",
        ])
        .args([
            "--devices",
            "1000",
            "--batch-events",
            "100",
            "--quiet",
            "--out-of-order",
            "0.1",
            "--skew-ms",
            "3000",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["sent"], 20000, "{json}");
    assert_eq!(json["acked"], 20000, "{json}");
    assert!(json["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(json["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(json["errors"], serde_json::json!({}));
    // Every event is in the log, keyed by its device, on the partition Kafka's
    // partitioner gives that key.
    let out = consume(&broker, "events", "%p %k\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20000);
    for l in lines.iter().take(500) {
        let (p, key) = l.split_once(' ').unwrap();
        assert!(key.starts_with("device-"), "{l}");
        let want = tidewater_tools::loadgen::partitioner::partition_for(key.as_bytes(), 4);
        assert_eq!(p.parse::<u32>().unwrap(), want, "{l}");
    }
}

#[test]
fn an_oversized_request_closes_its_connection_only() {
    let s = start_with("1", 1, &["--request-bytes-max", "4096"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(&8192i32.to_be_bytes()).unwrap();
    c.write_all(&[0u8; 64]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        c.read(&mut buf).unwrap_or(0),
        0,
        "the server closed the connection"
    );
    // Small requests still work; a produce larger than the limit fails cleanly.
    let broker = format!("127.0.0.1:{}", s.port);
    let (ok, out, err) = kcat(&["-L", "-b", &broker], None);
    assert!(ok && out.contains("events"), "{err}");
    let (ok, _, err) = kcat(
        &["-P", "-b", &broker, "-t", "events", "-p", "0"],
        Some("small\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(consume(&broker, "events", "%s\n"), "small\n");
}

#[test]
fn create_topics_creates_on_every_core_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = |extra: &'static [&'static str]| {
        let mut a = vec![
            "--cores".to_string(),
            "2".to_string(),
            "--data-dir".to_string(),
            data.to_str().unwrap().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = args(&[]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (mut child, port, _) = common::serve(&a);
    let broker = format!("127.0.0.1:{port}");
    let (ok, out) = common::python("create_topics.py", &[&broker, "made-at-runtime", "5"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{out}");
    // After a restart the topic is still there, with its records.
    let (mut child, port, _) = common::serve(&a);
    let broker = format!("127.0.0.1:{port}");
    let (ok, out, err) = kcat(&["-L", "-b", &broker, "-t", "made-at-runtime"], None);
    assert!(ok && out.contains("5 partitions"), "{out} {err}");
    let records = consume(&broker, "made-at-runtime", "%s\n");
    assert_eq!(records.lines().count(), 300, "{records}");
    // Unknown topics stay unknown: auto-creation is off by default.
    let (_, out, _) = kcat(&["-L", "-b", &broker, "-t", "not-made"], None);
    assert!(out.contains("Unknown topic"), "{out}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn auto_creation_when_enabled_makes_unknown_topics_on_first_use() {
    let s = start_with(
        "2",
        1,
        &["--auto-create-topics", "true", "--default-partitions", "3"],
    );
    let broker = format!("127.0.0.1:{}", s.port);
    let (ok, _, err) = kcat(
        &[
            "-P",
            "-b",
            &broker,
            "-t",
            "born-on-produce",
            "-X",
            "acks=all",
        ],
        Some("one\ntwo\nthree\n"),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(&["-L", "-b", &broker, "-t", "born-on-produce"], None);
    assert!(ok && out.contains("3 partitions"), "{out} {err}");
    let got = consume(&broker, "born-on-produce", "%s\n");
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, vec!["one", "three", "two"]);
}

#[test]
fn delete_topics_deletes_everywhere_and_an_interrupted_one_finishes_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[[topics]]\nname = \"declared\"\npartitions = 2\n").unwrap();
    let a = [
        "--cores",
        "2",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (mut child, port, admin, _) = common::serve_with_admin(&a);
    let broker = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin}");
    let (ok, out) = common::python(
        "delete_topics.py",
        &[&broker, "short-lived", "declared", &admin],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{out}");
    // After a restart: the re-created topic, with only its new records.
    let (mut child, port, _) = common::serve(&a);
    let broker = format!("127.0.0.1:{port}");
    let (ok, out, err) = kcat(&["-L", "-b", &broker, "-t", "short-lived"], None);
    assert!(ok && out.contains("3 partitions"), "{out} {err}");
    assert_eq!(consume(&broker, "short-lived", "%s\n").lines().count(), 10);
    let _ = child.kill();
    let _ = child.wait();
    // A deletion cut short by a crash (marked, partitions still there): the next
    // start deletes them on every core before it listens.
    let topics = data.join("topics.json");
    let text = std::fs::read_to_string(&topics).unwrap();
    let marked = text.replace(
        "\"partitions\": 3",
        "\"partitions\": 3,\n    \"deleting\": true",
    );
    assert_ne!(marked, text, "{text}");
    std::fs::write(&topics, marked).unwrap();
    assert!(data.join("ledger/shard-1/short-lived-1").is_dir());
    let (mut child, port, log) = common::serve(&a);
    let broker = format!("127.0.0.1:{port}");
    let lines: Vec<String> = log.try_iter().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("its topic's deletion was interrupted"))
            .count(),
        3,
        "{}",
        lines.join("\n")
    );
    let (_, out, _) = kcat(&["-L", "-b", &broker, "-t", "short-lived"], None);
    assert!(out.contains("Unknown topic"), "{out}");
    assert!(!data.join("ledger/shard-1/short-lived-1").exists());
    // The mark is gone once done: a topic made later by that name stays.
    let text = std::fs::read_to_string(&topics).unwrap();
    assert!(!text.contains("short-lived"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
    // Single port: connections land on either core, so deletions also travel from
    // core 1 to core 0, which coordinates them.
    let mut single = a.to_vec();
    single.extend(["--kafka-mode", "single-port"]);
    let (mut child, port, _) = common::serve(&single);
    let broker = format!("127.0.0.1:{port}");
    for n in 0..4 {
        let (ok, out) = common::python(
            "delete_topics.py",
            &[&broker, &format!("sp-{n}"), "declared"],
        );
        assert!(ok, "{out}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
