//! The reference job end to end, against an independent reference: events produced
//! by kafka-python (Avro from fastavro), results read back from the output topic, a
//! real ClickHouse server (`FINAL`) and the JSON-lines files, and compared row by row
//! with aggregates computed in Python (tests/clients/pipeline.py). Late events and
//! malformed records must land, counted, in `<job>.late` and `<job>.dlq`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use tidewater_tools::reference;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Run {
    child: Child,
    port: u16,
    admin: u16,
    dir: tempfile::TempDir,
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state(&self) -> String {
        self.dir.path().join("state.json").display().to_string()
    }

    fn files(&self) -> String {
        self.dir.path().join("out").display().to_string()
    }
}

/// The reference job, as the issue writes it, with sinks to the topic, the files
/// and (when given) ClickHouse.
fn job_toml(format: &str, clickhouse: Option<&str>, out: &Path) -> String {
    let schema = repo().join("schemas/sensor.avsc");
    let format = if format == "avro-confluent" {
        format!(
            "format = \"avro-confluent\"\nschema_file = {schema:?}\nschemas = {{ 1 = {:?}, 2 = {schema:?} }}\n",
            repo().join("tests/data/sensor-v1.avsc")
        )
    } else {
        reference::Job::avro(&schema)
    };
    let job = reference::Job {
        format,
        idle_timeout: "3s",
        checkpoint_interval: "1s",
    };
    reference::config(&job, &reference::sinks(out, clickhouse))
}

fn start(cores: &str, format: &str, clickhouse: Option<&str>) -> Run {
    start_with(cores, format, clickhouse, &[])
}

fn start_with(cores: &str, format: &str, clickhouse: Option<&str>, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("job.toml");
    std::fs::write(&cfg, job_toml(format, clickhouse, &dir.path().join("out"))).unwrap();
    let data = dir.path().join("data");
    let mut args = vec![
        "--cores",
        cores,
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (child, port, admin, log) = common::serve_with_admin(&args);
    Run {
        child,
        port,
        admin,
        dir,
        log,
    }
}

fn step(run: &Run, args: &[&str]) -> String {
    let state = run.state();
    let bootstrap = run.bootstrap();
    let mut all = vec![args[0], state.as_str(), "--bootstrap", bootstrap.as_str()];
    all.extend_from_slice(&args[1..]);
    let (ok, out) = common::python("pipeline.py", &all);
    if !ok {
        let log: Vec<String> = run.log.try_iter().collect();
        let tail = &log[log.len().saturating_sub(40)..];
        panic!(
            "pipeline.py {}: {out}\nserver log (last lines):\n{}",
            args[0],
            tail.join("\n")
        );
    }
    out
}

fn schema() -> PathBuf {
    repo().join("schemas/sensor.avsc")
}

/// Produce, verify, send late events, verify again.
fn reference_run(cores: &str, keyed: bool, clickhouse: bool, extra: &[&str]) {
    let ch = clickhouse.then(common::ClickHouse::start);
    let url = ch.as_ref().map(|c| c.url());
    let run = start_with(cores, "avro", url.as_deref(), extra);
    let schema = schema();
    let schema = schema.to_str().unwrap();
    let mut produce = vec!["produce", "--schema", schema];
    if !keyed {
        produce.push("--unkeyed");
    }
    step(&run, &produce);
    let files = run.files();
    let metrics = format!("http://127.0.0.1:{}/metrics", run.admin);
    let mut verify = vec![
        "verify",
        "--files",
        files.as_str(),
        "--metrics",
        metrics.as_str(),
    ];
    if let Some(u) = &url {
        verify.extend_from_slice(&["--clickhouse", u.as_str()]);
    }
    step(&run, &verify);
    step(&run, &["late", "--schema", schema]);
    let out = step(&run, &verify);
    assert!(out.contains("ok:"), "{out}");
}

#[test]
fn one_core_keyed_matches_the_reference_in_topic_clickhouse_and_files() {
    reference_run("1", true, true, &[]);
}

#[test]
fn two_cores_unkeyed_records_cross_cores_and_still_match() {
    reference_run("2", false, true, &[]);
}

#[test]
fn two_cores_keyed_match_without_crossing() {
    reference_run("2", true, false, &[]);
}

#[test]
fn two_cores_single_port_match_the_same_reference() {
    reference_run("2", false, false, &["--kafka-mode", "single-port"]);
}

#[test]
fn an_older_writer_schema_in_confluent_framing_aggregates_correctly() {
    let run = start("2", "avro-confluent", None);
    let v1 = repo().join("tests/data/sensor-v1.avsc");
    let schema = schema();
    step(
        &run,
        &[
            "produce",
            "--schema",
            schema.to_str().unwrap(),
            "--confluent",
            v1.to_str().unwrap(),
        ],
    );
    let files = run.files();
    step(&run, &["verify", "--files", files.as_str()]);
}

#[test]
fn a_clickhouse_outage_delays_rows_but_loses_and_duplicates_none() {
    let mut ch = common::ClickHouse::start();
    let url = ch.url();
    let run = start("2", "avro", Some(&url));
    let schema = schema();
    let schema = schema.to_str().unwrap();
    step(&run, &["produce", "--schema", schema, "--windows", "3"]);
    // Let the first windows reach ClickHouse, then take it away mid-run.
    std::thread::sleep(std::time::Duration::from_secs(4));
    ch.kill();
    step(
        &run,
        &[
            "produce",
            "--schema",
            schema,
            "--start-window",
            "3",
            "--windows",
            "3",
            "--seed",
            "2",
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(5));
    ch.restart();
    let files = run.files();
    let out = step(
        &run,
        &[
            "verify",
            "--files",
            files.as_str(),
            "--clickhouse",
            url.as_str(),
        ],
    );
    assert!(out.contains("ok:"), "{out}");
}
