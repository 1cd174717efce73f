//! A window job on JSON as people write it: kafka-python producing `json.dumps`
//! output (`\u` escapes in keys, float event times, or RFC 3339 strings with
//! `event_time_format`), the file sink's rows checked against sums made in Python,
//! and no record in the dead-letter topic.

mod common;

fn config(out: &std::path::Path, time_format: &str) -> String {
    format!(
        r#"[[topics]]
name = "readings"
partitions = 2

[[jobs]]
name = "by_device"
source = "readings"
format = "json"
key = "device_id"
event_time = "ts"
event_time_format = "{time_format}"
window = {{ type = "tumbling", size = "1m" }}
max_out_of_orderness = "0s"
idle_timeout = "1s"
checkpoint_interval = "1s"
aggregates = [
  {{ fn = "count", as = "events" }},
  {{ fn = "sum", field = "value", as = "value_sum" }},
]

[[jobs.sinks]]
type = "file"
path = {:?}
"#,
        out.join("by_device.jsonl").display().to_string()
    )
}

#[test]
fn json_as_python_writes_it_goes_through_a_window_job() {
    for time_format in ["epoch_ms", "rfc3339"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cfg = dir.path().join("job.toml");
        std::fs::write(&cfg, config(&out, time_format)).unwrap();
        let data = dir.path().join("data");
        let (mut child, port, admin, log) = common::serve_with_admin(&[
            "--cores",
            "2",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        let broker = format!("127.0.0.1:{port}");
        let (ok, said) = common::python(
            "json_job.py",
            &[&broker, "readings", out.to_str().unwrap(), time_format],
        );
        let metrics = common::scrape(admin);
        let _ = child.kill();
        let _ = child.wait();
        let tail: Vec<String> = log.try_iter().collect();
        assert!(
            ok,
            "{time_format}: {said}\n{}",
            tail[tail.len().saturating_sub(20)..].join("\n")
        );
        assert_eq!(
            common::metric_sum(&metrics, "tidewater_dlq_records_total"),
            0.0,
            "{time_format}: nothing valid goes to the dead letters"
        );
    }
}
