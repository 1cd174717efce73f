//! The built-in schema registry as Confluent's clients use it: confluent-kafka's
//! `SchemaRegistryClient` and `AvroSerializer` register three versions of a
//! subject while an `avro-confluent` job reads records of all three (rows checked
//! against sums made in the client), an incompatible fourth is refused, bad
//! requests get Confluent's errors; then kill -9, and the ids, versions and levels
//! are the same after the restart, and the job reads on. In both Kafka modes.

mod common;

use std::path::Path;

const READER: &str = r#"{"type": "record", "name": "Reading", "namespace": "iot", "fields": [
  {"name": "device_id", "type": "string"},
  {"name": "ts", "type": "long"},
  {"name": "temperature", "type": ["null", "double"], "default": null},
  {"name": "humidity", "type": "double", "default": 0.0},
  {"name": "pressure", "type": "long"}
]}"#;

/// The job reading with READER from a file; with `by_subject`, also a second one
/// reading with the same schema from the registry (subject `readings-reader`).
fn config(dir: &Path, by_subject: bool) -> String {
    let second = if by_subject {
        SECOND_JOB.replace(
            "OUT",
            &dir.join("out2/by_subject.jsonl").display().to_string(),
        )
    } else {
        String::new()
    };
    format!(
        r#"[[topics]]
name = "readings"
partitions = 4

[[jobs]]
name = "by_device"
source = "readings"
format = "avro-confluent"
schema_file = "reader.avsc"
key = "device_id"
event_time = "ts"
window = {{ type = "tumbling", size = "1m" }}
max_out_of_orderness = "0s"
idle_timeout = "3s"
checkpoint_interval = "1s"
aggregates = [
  {{ fn = "count", as = "events" }},
  {{ fn = "sum", field = "temperature", as = "temperature_sum" }},
  {{ fn = "sum", field = "humidity", as = "humidity_sum" }},
  {{ fn = "max", field = "pressure", as = "pressure_max" }},
]

[[jobs.sinks]]
type = "file"
path = {:?}
{second}"#,
        dir.join("out/by_device.jsonl").display().to_string()
    )
}

const SECOND_JOB: &str = r#"
[[jobs]]
name = "by_subject"
source = "readings"
format = "avro-confluent"
schema_subject = "readings-reader"
schema_version = 1
key = "device_id"
event_time = "ts"
window = { type = "tumbling", size = "1m" }
max_out_of_orderness = "0s"
idle_timeout = "3s"
checkpoint_interval = "1s"
aggregates = [
  { fn = "count", as = "events" },
  { fn = "sum", field = "temperature", as = "temperature_sum" },
  { fn = "sum", field = "humidity", as = "humidity_sum" },
  { fn = "max", field = "pressure", as = "pressure_max" },
]

[[jobs.sinks]]
type = "file"
path = "OUT"
"#;

/// Registers `schema` under `subject` with a raw HTTP request; its id.
fn register(addr: &str, subject: &str, schema: &str) -> u64 {
    use std::io::Write;
    let body = serde_json::json!({ "schema": schema }).to_string();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /subjects/{subject}/versions HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let got = common::http_answers(&mut c, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 200, "{got:?}");
    let v: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    v["id"].as_u64().unwrap()
}

#[test]
fn confluent_clients_evolve_a_schema_under_a_running_job_and_it_survives_kill_9() {
    for mode in ["per-core", "single-port"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reader.avsc"), READER).unwrap();
        let cfg = dir.path().join("job.toml");
        std::fs::write(&cfg, config(dir.path(), false)).unwrap();
        let data = dir.path().join("data");
        let state = dir.path().join("registry.json");
        let registry_port = tidewater_tools::ports::free(1).unwrap();
        let registry = format!("http://127.0.0.1:{registry_port}");
        let registry_addr = format!("127.0.0.1:{registry_port}");
        let args = [
            "--cores",
            "2",
            "--kafka-mode",
            mode,
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--schema-registry-addr",
            &registry_addr,
        ];
        let (port, admin) = (common::free_ports(), common::free_ports());
        let out = dir.path().join("out");
        let out2 = dir.path().join("out2");
        let run = |child: &mut std::process::Child,
                   log: &std::sync::mpsc::Receiver<String>,
                   phase: &str,
                   outs: &str| {
            let (ok, said) = common::python(
                "schema_registry.py",
                &[
                    &format!("127.0.0.1:{port}"),
                    &registry,
                    "readings",
                    outs,
                    state.to_str().unwrap(),
                    phase,
                ],
            );
            if !ok {
                let _ = child.kill();
                let tail: Vec<String> = log.try_iter().collect();
                panic!(
                    "{mode} {phase}: {said}\n{}",
                    tail[tail.len().saturating_sub(30)..].join("\n")
                );
            }
            eprintln!("{mode} {phase}: {said}");
        };
        let (mut child, _, _, log) = common::serve_on(&args, port, admin);
        run(&mut child, &log, "produce", out.to_str().unwrap());
        let metrics = common::scrape(admin);
        assert_eq!(
            common::metric_sum(&metrics, "tidewater_dlq_records_total"),
            1.0,
            "{mode}: only the record of an unregistered id is a dead letter"
        );
        assert!(
            common::metric_sum(&metrics, "tidewater_schema_registry_job_cache_misses_total") >= 3.0,
            "{mode}: the job looked the three ids up"
        );
        let dead = common::consume(&format!("127.0.0.1:{port}"), "by_device.dlq", "%h");
        assert!(dead.contains("unknown schema id 999"), "{mode}: {dead}");
        // The reader schema as a subject's version: a second job reads with it
        // from the restart on.
        assert!(register(&registry_addr, "readings-reader", READER) > 0);
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::write(&cfg, config(dir.path(), true)).unwrap();
        let (mut child, _, _, log) = common::serve_on(&args, port, admin);
        let outs = format!("{},{}", out.display(), out2.display());
        run(&mut child, &log, "after-restart", &outs);
        let dead = common::consume(&format!("127.0.0.1:{port}"), "by_device.dlq", "%h\n");
        let _ = child.kill();
        let _ = child.wait();
        // A replay from the last checkpoint may write the id-999 dead letter
        // again, but nothing written with v1, v2 or v3 is ever one.
        assert!(!dead.trim().is_empty(), "{mode}: the dead letter is kept");
        for line in dead.lines().filter(|l| !l.trim().is_empty()) {
            assert!(line.contains("unknown schema id 999"), "{mode}: {line}");
        }
    }
}

#[test]
fn hostile_http_gets_answers_and_the_registry_keeps_serving() {
    use std::io::Write;
    let registry_port = tidewater_tools::ports::free(1).unwrap();
    let addr = format!("127.0.0.1:{registry_port}");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _, _) = common::serve(&[
        "--cores",
        "1",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--schema-registry-addr",
        &addr,
    ]);
    let connect = || std::net::TcpStream::connect(&addr).unwrap();
    // Two requests in one write (pipelined): two answers, in order.
    let mut c = connect();
    c.write_all(
        b"GET /subjects HTTP/1.1\r\nHost: x\r\n\r\nGET /schemas/types HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let got = common::http_answers(&mut c, 2);
    assert_eq!(
        got,
        vec![(200, "[]".to_string()), (200, r#"["AVRO"]"#.to_string())]
    );
    // Not HTTP: 400, then the connection closes.
    let mut c = connect();
    c.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let got = common::http_answers(&mut c, 2);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 400);
    // A head over 64 KiB: 431.
    let mut c = connect();
    let long = format!("GET /subjects HTTP/1.1\r\nX: {}\r\n", "a".repeat(70_000));
    let _ = c.write_all(long.as_bytes());
    assert_eq!(common::http_answers(&mut c, 1)[0].0, 431);
    // A 10 MB body: 413 once it is read, and the request after it is answered.
    let mut c = connect();
    let body = vec![b' '; 10 << 20];
    let head = format!(
        "POST /subjects/s/versions HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body).unwrap();
    c.write_all(b"GET /config HTTP/1.1\r\n\r\n").unwrap();
    let got = common::http_answers(&mut c, 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, 413);
    assert!(got[0].1.contains("\"error_code\":413"), "{got:?}");
    assert_eq!(got[1], (200, r#"{"compatibilityLevel":"BACKWARD"}"#.into()));
    // Chunked: 411.
    let mut c = connect();
    c.write_all(
        b"POST /subjects/s/versions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(common::http_answers(&mut c, 1)[0].0, 411);
    // A schema the Avro library panics on: an invalid schema, not a crash.
    let mut c = connect();
    let schema = r#"{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"fixed","name":"F","size":9223372036854775808},"default":1}]}"#;
    let body = serde_json::json!({ "schema": schema }).to_string();
    write!(
        c,
        "POST /subjects/s/versions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let got = common::http_answers(&mut c, 1);
    assert_eq!(got[0].0, 422, "{got:?}");
    assert!(got[0].1.contains("42201"), "{got:?}");
    // Still serving.
    let mut c = connect();
    c.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(
        common::http_answers(&mut c, 1),
        vec![(200, "{}".to_string())]
    );
    assert!(child.try_wait().unwrap().is_none(), "the server is alive");
    let _ = child.kill();
    let _ = child.wait();
}
