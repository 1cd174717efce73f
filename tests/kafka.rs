//! The Kafka front end with real clients: kcat (librdkafka) produces keyed messages and
//! consumes them back byte-identical; Metadata sends each partition to its owning
//! core; garbage on a socket closes that connection only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two free consecutive ports (per-core listeners use PORT and PORT+1).
fn free_ports() -> u16 {
    for _ in 0..100 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < 65000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free ports");
}

fn start(cores: &str, partitions: u32) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!("[[topics]]\nname = \"events\"\npartitions = {partitions}\n"),
    )
    .unwrap();
    let port = free_ports();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args([
            "serve",
            "--cores",
            cores,
            "--journal-segment-bytes",
            "4194304",
            "--journal-segments",
            "2",
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--kafka-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" ready") && !line.contains("core ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("server ready");
    Server {
        child,
        port,
        _dir: dir,
    }
}

fn kcat(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn produce_and_consume(cores: &str) {
    let s = start(cores, 5);
    let broker = format!("127.0.0.1:{}", s.port);
    let n = 500;
    let input: String = (0..n)
        .map(|i| format!("key-{i}\tvalue {i} {}\n", "x".repeat(i % 97)))
        .collect();
    let (ok, _, err) = kcat(
        &[
            "-P", "-b", &broker, "-t", "events", "-K", "\t", "-X", "acks=all",
        ],
        Some(&input),
    );
    assert!(ok, "produce failed: {err}");
    let (ok, out, err) = kcat(
        &[
            "-C",
            "-b",
            &broker,
            "-t",
            "events",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p\t%o\t%k\t%s\n",
        ],
        None,
    );
    assert!(ok, "consume failed: {err}");
    let mut got: Vec<(String, String)> = Vec::new();
    let mut per_partition: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for line in out.lines() {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        assert_eq!(f.len(), 4, "{line}");
        per_partition
            .entry(f[0].to_string())
            .or_default()
            .push(f[1].parse().unwrap());
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
}

#[test]
fn kcat_round_trip_on_one_core() {
    produce_and_consume("1");
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
    produce_and_consume("2");
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
