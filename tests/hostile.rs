//! The server as a hostile client and a careless operator probe it: mutated requests,
//! bodies announced and never sent, idle and greedy consumers, batches no consumer
//! could read, topics that cannot be made, a half-sent admin request, a flipped byte
//! in the journal. Each is refused or answered with the protocol's error, named in a
//! log line, and the process serves everyone else as before, losing nothing more
//! than the damage itself.

mod common;

use common::requests::{framed, topic, valid_requests};
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::Decodable;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tidewater_tools::loadgen::batch::varint;

/// The first line of the server's log that `matches`, waiting up to 10 s for it.
fn logged(s: &common::Server, matches: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Ok(line) = s
        .log
        .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if matches(&line) {
            return line;
        }
        seen.push(line);
    }
    panic!("no such line in the log:\n{}", seen.join("\n"));
}

/// Sends one request on a new connection, says it sends no more, and reads until
/// the server has answered (or refused) and closed.
fn send(port: u16, request: &[u8]) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(request);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 4096];
    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
}

/// Whether the server still answers an ApiVersions on a fresh connection.
fn answers(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = framed(ApiKey::ApiVersions, 0, &m::ApiVersionsRequest::default());
    let mut len = [0u8; 4];
    c.write_all(&req).is_ok() && c.read_exact(&mut len).is_ok() && i32::from_be_bytes(len) > 0
}

/// Header bytes (size prefix, API key, version, correlation id, client id) that the
/// mutations leave alone, so each one reaches the API's body decoder.
fn body_start(request: &[u8]) -> usize {
    let client_id_len = i16::from_be_bytes([request[12], request[13]]) as usize;
    14 + client_id_len
}

#[test]
fn huge_counts_and_lengths_close_the_connection_and_the_server_lives() {
    // A mutated max wait must not hold the test for the default 30 s.
    let mut s = common::start_with("2", 2, &["--fetch-wait-ms-max", "50"]);
    let mut mutations = 0;
    for (api, version, request) in valid_requests() {
        // At every position of the body, a count or length of 2^31-1 (int32, as
        // non-flexible versions write arrays and bytes) and of 2^32-2 (an unsigned
        // varint, as flexible versions write them).
        let plants: [&[u8]; 3] = [
            &[0x7f, 0xff, 0xff, 0xff],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x7f, 0xff],
        ];
        for at in body_start(&request)..request.len() {
            for plant in plants {
                let mut bad = request.clone();
                let end = (at + plant.len()).min(bad.len());
                bad[at..end].copy_from_slice(&plant[..end - at]);
                send(s.port, &bad);
                mutations += 1;
            }
        }
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "the server died on a mutated {api:?} v{version}"
        );
    }
    assert!(mutations > 500, "{mutations} mutations sent");
    assert!(answers(s.port) && answers(s.port + 1), "both cores answer");
    // The connections that broke the protocol were logged with their peer and API.
    let refused = logged(&s, |l| {
        l.contains("WARN") && l.contains("malformed Metadata")
    });
    assert!(refused.contains("peer=\"127.0.0.1:"), "{refused}");
    let _ = s.child.kill();
}

/// Reads one framed answer; `None` when the connection closed or `limit` passed.
fn answer(c: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    c.read_exact(&mut body).ok()?;
    Some(body)
}

/// Whether the server closed `c` (EOF or reset) within `limit`.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn announced_bodies_that_never_arrive_block_no_one_and_are_closed() {
    // A budget of two largest requests; three peers announce a largest request each
    // and send nothing more.
    let s = common::start_with(
        "1",
        1,
        &[
            "--request-bytes-max",
            "1048576",
            "--request-memory-bytes-max",
            "2097152",
            "--request-timeout-ms",
            "6000",
        ],
    );
    let mut stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.write_all(&(1i32 << 20).to_be_bytes()).unwrap();
            c.write_all(&[0, 3, 0, 0]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Everyone else is served while they stall.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(&framed(ApiKey::Metadata, 1, &m::MetadataRequest::default()))
        .unwrap();
    assert!(
        answer(&mut c, Duration::from_secs(4)).is_some(),
        "a Metadata is answered while three peers hold announced bodies"
    );
    // And the stalled ones are closed once request_timeout_ms passes.
    for st in &mut stalled {
        assert!(
            closed_within(st, Duration::from_secs(20)),
            "a stalled request is closed"
        );
    }
    logged(&s, |l| {
        l.contains("WARN") && l.contains("request_timeout_ms")
    });
}

#[test]
fn idle_connections_are_closed() {
    let s = common::start_with("1", 1, &["--connections-max-idle-ms", "300"]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(10)));
}

#[test]
fn a_fetch_answer_is_capped_at_fetch_bytes_max() {
    // The ledger written often: a read from its segment file returns many batches,
    // so the cap, not the layout, is what ends the answer.
    let s = common::start_with(
        "1",
        1,
        &[
            "--fetch-bytes-max",
            "1048576",
            "--ledger-flush-interval-ms",
            "20",
        ],
    );
    let broker = format!("127.0.0.1:{}", s.port);
    // 4 MiB in 40 messages of 100 KiB.
    let line = "v".repeat(100 << 10) + "\n";
    let (ok, _, err) = common::kcat(
        &[
            "-P",
            "-b",
            &broker,
            "-t",
            "events",
            "-p",
            "0",
            "-X",
            "batch.size=200000",
        ],
        Some(&line.repeat(40)),
    );
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let req = m::FetchRequest::default()
        .with_max_wait_ms(100)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![m::fetch_request::FetchTopic::default()
            .with_topic(topic("events"))
            .with_partitions(vec![m::fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(i32::MAX)])]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(&framed(ApiKey::Fetch, 4, &req)).unwrap();
    let body = answer(&mut c, Duration::from_secs(10)).expect("an answer");
    // At most the cap, plus the one batch that crosses it (each under 256 KiB here).
    assert!(
        body.len() > 512 << 10,
        "it holds data: {} bytes",
        body.len()
    );
    assert!(
        body.len() <= (1 << 20) + (256 << 10),
        "answer of {} bytes over fetch_bytes_max",
        body.len()
    );
}

/// Sends a Produce v3 of `records` to partition 0 of `events` with `acks`; returns
/// the partition's error code.
fn produce(port: u16, acks: i16, records: Vec<u8>) -> i16 {
    let part = m::produce_request::PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(bytes::Bytes::from(records)));
    let req = m::ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![m::produce_request::TopicProduceData::default()
            .with_name(topic("events"))
            .with_partition_data(vec![part])]);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&framed(ApiKey::Produce, 3, &req)).unwrap();
    let body = answer(&mut c, Duration::from_secs(10)).expect("a produce answer");
    let mut buf = bytes::Bytes::from(body);
    let _ = kafka_protocol::messages::ResponseHeader::decode(&mut buf, 0).unwrap();
    let resp = m::ProduceResponse::decode(&mut buf, 3).unwrap();
    resp.responses[0].partition_responses[0].error_code
}

/// A v2 batch around `body` (records as they are on the wire, maybe compressed)
/// claiming `count` records, with attributes `attributes`.
fn batch_of(body: &[u8], count: i32, attributes: i16) -> Vec<u8> {
    let mut b = vec![0u8; 61];
    b.extend_from_slice(body);
    let batch_length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[16] = 2;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// One record's bytes: a null key and `value` (under 64 bytes), offset delta `i`.
fn record(i: u8, value: &[u8]) -> Vec<u8> {
    let mut rec = vec![0u8, 0, i << 1, 1, (value.len() as u8) << 1];
    rec.extend_from_slice(value);
    rec.push(0);
    let mut out = vec![(rec.len() as u8) << 1];
    out.extend(rec);
    out
}

#[test]
fn batches_no_consumer_could_read_are_refused_and_take_no_offsets() {
    let s = common::start("1", 1);
    const CORRUPT_MESSAGE: i16 = 2;
    const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    const INVALID_REQUIRED_ACKS: i16 = 21;
    let plain = record(0, b"fine");
    let mut bomb_records = vec![0u8; 0];
    // One record whose value is 1 GiB of zeros does not fit a varint under 64, so
    // build the inflated body by hand: length, attributes, ts, offset, key, value.
    let value_len: i64 = 1 << 30;
    let mut rec = vec![0u8, 0, 0, 1];
    varint(&mut rec, value_len);
    let rec_len = rec.len() as i64 + value_len + 1;
    varint(&mut bomb_records, rec_len);
    bomb_records.extend(rec);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    enc.write_all(&bomb_records).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&[0]).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 256 << 10, "the bomb is {} bytes", bomb.len());
    let mut two = record(0, b"a");
    two.extend(record(1, b"b"));
    let cases: Vec<(&str, Vec<u8>, i16)> = vec![
        (
            "codec 5",
            batch_of(&plain, 1, 5),
            UNSUPPORTED_COMPRESSION_TYPE,
        ),
        (
            "codec 7",
            batch_of(&plain, 1, 7),
            UNSUPPORTED_COMPRESSION_TYPE,
        ),
        ("gzip that is not", batch_of(&plain, 1, 1), CORRUPT_MESSAGE),
        (
            "snappy that is not",
            batch_of(&[0xff; 40], 1, 2),
            CORRUPT_MESSAGE,
        ),
        ("lz4 that is not", batch_of(&plain, 1, 3), CORRUPT_MESSAGE),
        ("zstd that is not", batch_of(&plain, 1, 4), CORRUPT_MESSAGE),
        (
            "zstd inflating to 1 GiB",
            batch_of(&bomb, 1, 4),
            CORRUPT_MESSAGE,
        ),
        (
            "1,000,000 records claimed, one sent",
            batch_of(&plain, 1_000_000, 0),
            CORRUPT_MESSAGE,
        ),
        (
            "two records claimed as one",
            batch_of(&two, 1, 0),
            CORRUPT_MESSAGE,
        ),
        ("a control batch", batch_of(&plain, 1, 0x20), 87),
    ];
    for (what, batch, want) in cases {
        assert_eq!(produce(s.port, -1, batch), want, "{what}");
    }
    // Kafka's acks are -1, 0 and 1.
    assert_eq!(
        produce(s.port, 5, batch_of(&plain, 1, 0)),
        INVALID_REQUIRED_ACKS
    );
    // Nothing was stored and no offset was taken: a plain consumer reads the one
    // good record at offset 0.
    assert_eq!(produce(s.port, -1, batch_of(&two, 2, 0)), 0);
    let broker = format!("127.0.0.1:{}", s.port);
    let out = common::consume(&broker, "events", "%o %s\n");
    assert_eq!(out, "0 a\n1 b\n");
}

#[test]
fn an_api_versions_of_a_newer_version_gets_the_table_to_downgrade_to() {
    let s = common::start("1", 1);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    // v99: a future client; its header is the flexible one (v2), as from v3 on.
    let mut req = Vec::new();
    req.extend(18i16.to_be_bytes());
    req.extend(99i16.to_be_bytes());
    req.extend(7i32.to_be_bytes());
    req.extend(4i16.to_be_bytes());
    req.extend(b"next");
    req.push(0); // no tagged fields
    req.extend([0u8; 8]); // a body we cannot know
    c.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    c.write_all(&req).unwrap();
    let body = answer(&mut c, Duration::from_secs(10)).expect("an answer, not a close");
    let mut buf = bytes::Bytes::from(body);
    let header = kafka_protocol::messages::ResponseHeader::decode(&mut buf, 0).unwrap();
    assert_eq!(header.correlation_id, 7);
    let resp = m::ApiVersionsResponse::decode(&mut buf, 0).unwrap();
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("Produce listed");
    assert_eq!((produce.min_version, produce.max_version), (3, 9));
}

/// Sends a CreateTopics v4 of one topic to `port`; returns its error code.
fn create_topic(port: u16, name: &str, partitions: i32) -> i16 {
    let req = m::CreateTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics(vec![m::create_topics_request::CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&framed(ApiKey::CreateTopics, 4, &req)).unwrap();
    let body = answer(&mut c, Duration::from_secs(60)).expect("a CreateTopics answer");
    let mut buf = bytes::Bytes::from(body);
    let _ = kafka_protocol::messages::ResponseHeader::decode(&mut buf, 0).unwrap();
    let resp = m::CreateTopicsResponse::decode(&mut buf, 4).unwrap();
    resp.topics[0].error_code
}

/// Directories of `topic`'s partitions in any core's ledger, made or half-made
/// (`.NAME.creating`), but for the file `except` and deleted partitions' tombstones
/// (which keep only their id, so it is never reused).
fn partition_dirs(data: &std::path::Path, topic: &str, except: &str) -> Vec<String> {
    let mut found = Vec::new();
    for shard in std::fs::read_dir(data.join("ledger")).unwrap() {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(shard).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let bare = name.trim_start_matches('.');
            let tombstone = name.ends_with(".deleted");
            if bare.starts_with(&format!("{topic}-")) && name != except && !tombstone {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn create_topics_checks_first_and_creates_all_or_nothing() {
    const INVALID_TOPIC_EXCEPTION: i16 = 17;
    const POLICY_VIOLATION: i16 = 44;
    let s = common::start("2", 2);
    let data = s.dir.path().join("data");
    for bad in ["", ".", "..", "a/b", "sp ace", "ü", &"x".repeat(201)] {
        assert_eq!(
            create_topic(s.port, bad, 1),
            INVALID_TOPIC_EXCEPTION,
            "{bad:?}"
        );
    }
    // 5,000 partitions per core where each holds at most 4,096: refused before any
    // partition is made.
    assert_eq!(create_topic(s.port, "huge", 10_000), POLICY_VIOLATION);
    assert!(partition_dirs(&data, "huge", "").is_empty());
    // A core that fails part-way (a file where partition 5's directory is made)
    // leaves nothing behind on any core, and creation works once the cause is gone.
    let blocker = data.join("ledger/shard-1/.made-5.creating");
    std::fs::write(&blocker, b"in the way").unwrap();
    assert_ne!(create_topic(s.port, "made", 8), 0);
    assert_eq!(
        partition_dirs(&data, "made", ".made-5.creating"),
        Vec::<String>::new()
    );
    let topics = std::fs::read_to_string(data.join("topics.json")).unwrap_or_default();
    assert!(!topics.contains("\"made\""), "{topics}");
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(create_topic(s.port, "made", 8), 0);
    assert_eq!(partition_dirs(&data, "made", ".made-5.creating").len(), 8);
}

/// GET `path` on the admin listener; the whole answer, or `None` after `limit`.
fn admin_get(port: u16, path: &str, limit: Duration) -> Option<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(limit)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn a_half_sent_admin_request_delays_no_one() {
    let s = common::start("1", 1);
    // Half a request line, and a header line that never ends.
    let mut half = TcpStream::connect(("127.0.0.1", s.admin)).unwrap();
    half.write_all(b"GET /hea").unwrap();
    let mut endless = TcpStream::connect(("127.0.0.1", s.admin)).unwrap();
    endless.write_all(b"GET /health HTTP/1.1\r\nX: ").unwrap();
    endless.write_all(&[b'y'; 64 << 10]).unwrap_or(());
    for _ in 0..3 {
        let health = admin_get(s.admin, "/health", Duration::from_secs(2));
        assert!(
            health
                .as_deref()
                .is_some_and(|h| h.starts_with("HTTP/1.1 200")),
            "{health:?}"
        );
        let metrics = admin_get(s.admin, "/metrics", Duration::from_secs(2));
        assert!(metrics.is_some_and(|m| m.contains("tidewater_kafka_connections")));
    }
    // Both are answered and closed within the admin request timeout.
    assert!(closed_within(&mut half, Duration::from_secs(15)));
    assert!(closed_within(&mut endless, Duration::from_secs(15)));
}

#[test]
fn one_flipped_byte_in_the_journal_loses_only_its_frame_and_says_so() {
    // The ledger is held back, so acknowledged records live only in the journal.
    let hold = [
        "--cores",
        "1",
        "--ledger-flush-interval-ms",
        "3600000",
        "--ledger-flush-bytes",
        "67108864",
    ];
    let mut s = common::start_with("1", 1, &hold[2..]);
    for i in 0..20u8 {
        let value = format!("m-{i:02}");
        assert_eq!(
            produce(s.port, -1, batch_of(&record(0, value.as_bytes()), 1, 0)),
            0
        );
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    // Flip one byte in the middle of the 11th frame's payload.
    let data = s.dir.path().join("data");
    let shard = data.join("journal/shard-0");
    let mut damaged = None;
    for e in std::fs::read_dir(&shard).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let frames: Vec<(usize, usize)> =
            tidewater_io::frame::Scanner::new(&bytes, tidewater_io::frame::BLOCK, bytes.len())
                .filter_map(|st| match st {
                    tidewater_io::frame::Step::Frame { pos, header }
                        if header.kind == tidewater_io::frame::Kind::Data =>
                    {
                        Some((pos, header.frame_len()))
                    }
                    _ => None,
                })
                .collect();
        if frames.len() == 20 {
            let (pos, len) = frames[10];
            let mut bytes = bytes;
            bytes[pos + len - 20] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            damaged = Some(path);
        }
    }
    let damaged = damaged.expect("a segment with the 20 frames");
    let cfg = s.dir.path().join("t.toml");
    let mut args = vec![
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(&hold);
    let (child, port, admin, log) = common::serve_with_admin(&args);
    let s2 = common::Server {
        child,
        port,
        admin,
        log,
        dir: tempfile::tempdir().unwrap(),
    };
    // Every other record is there, at its own offset; the lost one is skipped.
    let broker = format!("127.0.0.1:{port}");
    let out = common::consume(&broker, "events", "%o %s\n");
    let want: String = (0..20u8)
        .filter(|&i| i != 10)
        .map(|i| format!("{i} m-{i:02}\n"))
        .collect();
    assert_eq!(out, want);
    // Said loudly: the file, the offsets, a metric and /health.
    let name = damaged.file_name().unwrap().to_string_lossy().into_owned();
    logged(&s2, |l| {
        l.contains("ERROR") && l.contains("journal damage") && l.contains(&name)
    });
    logged(&s2, |l| {
        l.contains("partition events-0 offsets 10..11 lost")
    });
    let health = admin_get(admin, "/health", Duration::from_secs(5)).unwrap();
    assert!(health.contains("degraded"), "{health}");
    let metrics = admin_get(admin, "/metrics", Duration::from_secs(5)).unwrap();
    assert!(
        metrics.contains("tidewater_recovery_lost_offsets{shard=\"0\"} 1"),
        "{metrics}"
    );
    // The segment as found was kept aside.
    assert_eq!(
        std::fs::read_dir(data.join("journal/shard-0.damaged"))
            .unwrap()
            .count(),
        1
    );
    // And new records continue after the lost offset.
    assert_eq!(produce(port, -1, batch_of(&record(0, b"after"), 1, 0)), 0);
    assert!(common::consume(&broker, "events", "%o %s\n").ends_with("20 after\n"));
}

#[test]
fn requests_that_decode_to_far_more_than_their_size_are_refused() {
    let mut s = common::start("1", 1);
    // A Metadata v1 of 2,000,000 topics with empty names: 4 MB on the wire, a few
    // hundred MB once decoded.
    let n = 2_000_000i32;
    let mut req = Vec::new();
    req.extend(3i16.to_be_bytes());
    req.extend(1i16.to_be_bytes());
    req.extend(7i32.to_be_bytes());
    req.extend((-1i16).to_be_bytes());
    req.extend(n.to_be_bytes());
    req.extend(std::iter::repeat_n([0u8, 0], n as usize).flatten());
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    c.write_all(&req).unwrap();
    assert!(
        answer(&mut c, Duration::from_secs(30)).is_none(),
        "refused, not answered"
    );
    let why = logged(&s, |l| {
        l.contains("WARN") && l.contains("malformed Metadata")
    });
    assert!(why.contains("memory allowed"), "{why}");
    // A real Metadata of many topics still passes.
    let topics: Vec<_> = (0..10_000)
        .map(|i| {
            m::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic(&format!("some-topic-{i}"))))
        })
        .collect();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(&framed(
        ApiKey::Metadata,
        9,
        &m::MetadataRequest::default().with_topics(Some(topics)),
    ))
    .unwrap();
    assert!(answer(&mut c, Duration::from_secs(30)).is_some());
    assert!(s.child.try_wait().unwrap().is_none());
}
