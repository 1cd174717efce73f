//! `tidewater demo`: the reference job on embedded defaults, in a fresh directory,
//! fed by the built-in load generator, with a live line and a summary.
//!
//! Owns nothing the server does not: it writes a config, runs `serve` as a child,
//! drives the load generator in this process and reads the server's /metrics.

use crate::harness::{self, Server};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidewater_tools::loadgen;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// How long the load runs, e.g. `30s`, `2m`.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Events per second.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Devices (distinct keys).
    #[arg(long, default_value_t = 100_000)]
    devices: u32,
    /// Event time runs this many times faster than the wall clock, so 1-minute
    /// windows fire every few seconds (1: real time).
    #[arg(long, default_value_t = 10.0)]
    time_scale: f64,
    /// Also write the results to this ClickHouse (e.g. http://127.0.0.1:8123).
    #[arg(long)]
    clickhouse: Option<String>,
    /// Where the demo keeps its data and results (replaced on each run).
    #[arg(long, default_value = "tidewater-demo")]
    dir: PathBuf,
    /// Cores for the server: `all`, a count or a list.
    #[arg(long, default_value = "all")]
    cores: String,
}

const MARKER: &str = ".tidewater-demo";

pub fn run(a: DemoArgs) -> Result<i32> {
    let duration = crate::parse_duration(&a.duration)?;
    let (dir, out, config) = prepare(&a)?;
    println!("Tidewater demo: the reference job (keyBy device_id, 1-minute tumbling windows, count/min/max/avg/sum)");
    println!(
        "  config {}   data {}",
        config.display(),
        dir.join("data").display()
    );
    let server = Server::start(
        &config,
        &dir.join("data"),
        &a.cores,
        &[
            "--journal-segment-bytes",
            "16777216",
            "--retention-bytes",
            "1073741824",
        ],
        &dir.join("server.log"),
    )?;
    println!(
        "  server ready in {:.1}s: Kafka on {} (kcat -b {} -L), metrics on http://127.0.0.1:{}/metrics",
        server.started.elapsed().as_secs_f64(),
        server.brokers(),
        server.brokers(),
        server.admin_port
    );
    println!(
        "  load: {} events/s for {:?}, {} devices, 5% out of order by up to 4 s, event time x{}",
        a.rate, duration, a.devices, a.time_scale
    );
    let opts = load_options(&a, server.brokers(), duration);
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let done = done.clone();
        std::thread::spawn(move || {
            let r = loadgen::run(&opts);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    live(&server, &done)?;
    println!();
    let report = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
        .map_err(|e| anyhow::anyhow!("load generator: {e}"))?;
    summary(&a, &server, &report, &out)?;
    server.stop()?;
    println!("\nStopped cleanly. Data and log stay in {}.", dir.display());
    Ok(0)
}

/// A fresh working directory (ours, with the marker, is replaced; anything else is
/// refused) with the schema and the config: (dir, results dir, config path).
fn prepare(a: &DemoArgs) -> Result<(PathBuf, PathBuf, PathBuf)> {
    // A fresh directory: ours (it has the marker) is replaced; anything else is refused.
    if a.dir.exists() {
        anyhow::ensure!(
            a.dir.join(MARKER).exists(),
            "{} exists and was not made by `tidewater demo`; pass --dir elsewhere",
            a.dir.display()
        );
        std::fs::remove_dir_all(&a.dir)
            .with_context(|| format!("cannot clear {}", a.dir.display()))?;
    }
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    std::fs::write(
        a.dir.join(MARKER),
        "made by tidewater demo; replaced by the next run\n",
    )?;
    let dir = std::fs::canonicalize(&a.dir)?;
    let out = dir.join("out");
    let schema = harness::write_schema(&dir)?;
    let config = dir.join("demo.toml");
    std::fs::write(
        &config,
        harness::reference_config(
            &schema,
            "2s",
            "10s",
            &tidewater_tools::reference::sinks(&out, a.clickhouse.as_deref()),
        ),
    )?;
    Ok((dir, out, config))
}

fn load_options(a: &DemoArgs, brokers: String, duration: Duration) -> loadgen::Options {
    loadgen::Options {
        brokers,
        topic: "iot-sensor-data".into(),
        devices: a.devices,
        rate: Some(a.rate),
        duration: Some(duration),
        events: None,
        connections: 2,
        acks: -1,
        batch_events: 200,
        compression: kafka_protocol::records::Compression::None,
        out_of_order: 0.05,
        skew_ms: 4_000, // event-time ms, under the job's 5 s out-of-orderness
        time_scale: a.time_scale,
        window_ms: 60_000,
        seed: 1,
        max_in_flight: 5,
        progress: false,
        tls: None,
        sasl: None,
        stop: None,
    }
}

/// The live line, once a second, until the load is done and the job has read
/// everything and stayed idle long enough for the last complete windows to fire.
fn live(server: &Server, done: &AtomicBool) -> Result<()> {
    let mut prev = (Instant::now(), 0.0);
    let mut quiet_since: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = server.scrape()?;
        let ingested = s.sum(
            "tidewater_records_in_total",
            &[("topic", "iot-sensor-data")],
        );
        let rate = (ingested - prev.1) / prev.0.elapsed().as_secs_f64();
        prev = (Instant::now(), ingested);
        let lag = s.sum("tidewater_pipeline_lag_records", &[]);
        let fired = s.sum("tidewater_windows_fired_total", &[]);
        let rows = s.sum(
            "tidewater_sink_rows_total",
            &[("sink", "topic:device_minute")],
        );
        print!(
            "\r  in {:>9.0} events/s | {:>11.0} events in | windows fired {:>4.0} | rows out {:>9.0} | pipeline lag {:>9.0}   ",
            rate, ingested, fired, rows, lag
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if done.load(Ordering::SeqCst) {
            // After the load: wait until the job has read everything and stayed idle
            // long enough for the last complete windows to fire.
            if lag == 0.0 {
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if q.elapsed() >= Duration::from_secs(4) {
                    break;
                }
            } else {
                quiet_since = None;
            }
        }
    }
    Ok(())
}

/// What the run did, checked against what the load generator had acknowledged,
/// and where the results went.
fn summary(a: &DemoArgs, server: &Server, report: &loadgen::Report, out: &Path) -> Result<()> {
    let s = server.scrape()?;
    let fire_p50 = s.quantile(
        "tidewater_sink_fire_latency_seconds",
        &[("sink", "topic:device_minute")],
        0.5,
    );
    let fire_p99 = s.quantile(
        "tidewater_sink_fire_latency_seconds",
        &[("sink", "topic:device_minute")],
        0.99,
    );
    println!("\nSummary");
    println!(
        "  ingested {} events in {:.1}s: {:.0} events/s, acks=all, durability always",
        report.acked, report.seconds, report.events_per_sec
    );
    println!(
        "  ack latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        report.ack_latency_ms.0, report.ack_latency_ms.1, report.ack_latency_ms.2
    );
    println!(
        "  windows fired {:.0}, rows {:.0}; fire latency (watermark past window end -> row in sink) p50 {} p99 {}",
        s.sum("tidewater_windows_fired_total", &[]),
        s.sum("tidewater_sink_rows_total", &[("sink", "topic:device_minute")]),
        ms(fire_p50),
        ms(fire_p99)
    );
    println!(
        "  late events {:.0} (to device_minute.late), dead letters {:.0} (to device_minute.dlq)",
        s.sum("tidewater_late_events_total", &[]),
        s.sum("tidewater_dlq_records_total", &[])
    );
    let counts = harness::file_sink_counts(out)?;
    let mut matched = 0;
    for (w, n) in &counts {
        if report.acked_per_window.get(w) == Some(n) {
            matched += 1;
        }
    }
    println!(
        "  check: {matched} of {} fired windows hold exactly the events acknowledged for them",
        counts.len()
    );
    println!("\nA few rows:");
    if let Some(first) = std::fs::read_dir(out)?.filter_map(|e| e.ok()).next() {
        let text = std::fs::read_to_string(first.path())?;
        for line in text.lines().take(3) {
            println!("  {line}");
        }
    }
    println!("\nWhere the results went:");
    println!(
        "  topic device_minute:  kcat -b {} -C -t device_minute -e   (while the server runs)",
        server.brokers()
    );
    println!(
        "  as a consumer group:  kcat -b {} -G device-minute-readers device_minute   (resumes where it left off; docs/consumer-groups.md shows other clients)",
        server.brokers()
    );
    println!(
        "  files:                {}/device_minute.jsonl.shard-*",
        out.display()
    );
    if let Some(url) = &a.clickhouse {
        println!("  ClickHouse:           {url}  SELECT * FROM iot.device_minute FINAL");
    }
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |s| format!("{:.0} ms", s * 1000.0))
}
