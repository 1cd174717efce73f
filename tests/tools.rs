//! `tidewater demo` and `tidewater bench` as a user runs them, cut short: they start
//! the server, drive the load, check the results and say so.

mod common;

#[test]
fn demo_runs_the_reference_job_and_checks_its_windows() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = common::tidewater()
        .args([
            "demo",
            "--duration",
            "4s",
            "--rate",
            "20000",
            "--devices",
            "1000",
        ])
        .args(["--time-scale", "60", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "check: N of M fired windows hold exactly the events acknowledged for them"
    let check = stdout
        .lines()
        .find(|l| l.contains("check:"))
        .unwrap_or_else(|| panic!("no check line in:\n{stdout}"));
    let nums: Vec<u64> = check
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        nums.len() >= 2 && nums[0] == nums[1] && nums[0] >= 2,
        "{check}"
    );
    assert!(stdout.contains("Stopped cleanly"), "{stdout}");
    // A second run replaces its own directory; a foreign one is refused.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let out = common::tidewater()
        .args(["demo", "--duration", "1s", "--dir"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not made by `tidewater demo`"));
}

#[test]
fn bench_writes_a_verified_report_with_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let kafka = tidewater_tools::ports::free(2).expect("free ports");
    let admin = tidewater_tools::ports::free(1).expect("a free port");
    let out = common::tidewater()
        .args([
            "bench",
            "--duration",
            "3s",
            "--backlog-events",
            "100000",
            "--tls",
        ])
        // Fixed ports: every server of the run (live, TLS, backlog) takes them in turn.
        .args(["--kafka-port", &kafka.to_string()])
        .args(["--admin-port", &admin.to_string()])
        // 3 s of wall clock carry 3 minutes of event time: windows fire and are
        // checked against what was acknowledged.
        .args(["--time-scale", "60", "--devices", "1000", "--dir"])
        .arg(dir.path().join("bench"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in [
        "ingest_events_per_sec",
        "live_events_per_sec",
        "backlog_events_per_sec",
        "cpu_seconds_per_million_events",
    ] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    for q in ["p50", "p99", "p999"] {
        assert!(
            r["ack_latency_ms"][q].as_f64().is_some_and(|v| v > 0.0),
            "{r}"
        );
    }
    for q in ["p50", "p99"] {
        assert!(r["fire_latency_ms"][q].as_f64().is_some(), "{r}");
    }
    assert!(r["windows_checked"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["verified"], serde_json::Value::Bool(true), "{r}");
    let g = &r["group_consume"];
    assert!(g["consumed"].as_u64().unwrap() >= 100_000, "{r}");
    assert!(g["events_per_sec"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    assert!(
        g["commits"].as_u64().unwrap() >= 2,
        "a final commit per member: {r}"
    );
    assert!(r["acked_events"].as_u64().unwrap() > 0);
    // The live test again over TLS, verified the same way.
    let t = &r["tls"];
    assert!(
        t["ingest_events_per_sec"].as_f64().is_some_and(|v| v > 0.0),
        "{r}"
    );
    assert!(
        t["ingest_vs_plaintext"].as_f64().is_some_and(|v| v > 0.0),
        "{r}"
    );
    assert!(t["acked_events"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(t["verified"], serde_json::Value::Bool(true), "{r}");
    // Every byte produced is written at least once (the journal and the ledger
    // write it twice today); the disk guard did not stop the run.
    let amplification = r["device_bytes_written_per_ingested_byte"].as_f64();
    assert!(amplification.is_some_and(|v| v > 1.0), "{r}");
    assert!(r["live_stopped_early"].is_null(), "{r}");
    // The data is gone when the run ends.
    for test in ["live", "live-tls", "backlog"] {
        let left = dir.path().join("bench").join(test);
        assert!(!left.exists(), "{} was kept", left.display());
    }
}

#[test]
fn bench_sweep_reports_and_draws_latency_against_rate() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("sweep.json");
    let out = common::tidewater()
        .args([
            "bench",
            "--sweep",
            "--sweep-rates",
            "20k,max",
            "--sweep-step",
            "1s",
        ])
        .args(["--devices", "1000", "--dir"])
        .arg(dir.path().join("bench"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    common::succeeded(out);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let points = r["sweep"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{r}");
    assert_eq!(points[0]["offered_events_per_sec"], 20_000, "{r}");
    assert!(points[1]["offered_events_per_sec"].is_null(), "{r}");
    for p in points {
        assert!(
            p["achieved_events_per_sec"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{r}"
        );
        assert!(
            p["ack_latency_ms"]["p99"].as_f64().is_some_and(|v| v > 0.0),
            "{r}"
        );
    }
    // The rate-limited step stays near what it was offered; the open one runs faster.
    let limited = points[0]["achieved_events_per_sec"].as_f64().unwrap();
    assert!((10_000.0..=30_000.0).contains(&limited), "{r}");
    let svg = std::fs::read_to_string(dir.path().join("sweep.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 3,
        "{svg}"
    );
    assert!(
        !dir.path().join("bench").join("sweep").exists(),
        "the data was kept"
    );
}

#[test]
fn bench_refuses_a_run_its_disk_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::tidewater()
        .args([
            "bench",
            "--duration",
            "1s",
            "--backlog-events",
            "1000000000000000",
        ])
        .arg("--dir")
        .arg(dir.path().join("bench"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("this run needs at least"), "{said}");
    assert!(said.contains("lower --backlog-events"), "{said}");
    // Fixed ports that run past 65535 for the cores, or overlap, are refused too.
    for ports in [["65535", "1000"], ["20000", "20000"]] {
        let out = common::tidewater()
            .args(["bench", "--cores", "2", "--duration", "1s", "--dir"])
            .arg(dir.path().join("bench"))
            .args(["--kafka-port", ports[0], "--admin-port", ports[1]])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ports:?}: {said}");
        assert!(
            said.contains("--kafka-port") || said.contains("--admin-port"),
            "{said}"
        );
    }
}
