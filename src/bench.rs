//! `tidewater bench`: the end-to-end benchmark of the reference job.
//!
//! Live test: the server runs the job while the load generator produces at full
//! rate (acks=all) for `--duration`; then the job drains and the results are checked
//! against what was acknowledged. Backlog test: N events are produced with no job
//! running, then the job starts and the time to read them all is measured. The report
//! (stdout, and `--report FILE.json`) gives events/s ingested, processed live and from
//! the backlog, server CPU seconds per million events, ack latency and window-fire
//! latency percentiles, and whether the results were verified. After the backlog
//! test, a consumer group of two members reads the whole backlog again, committing
//! every second (`loadgen --consume`): group consumption in events/s.

use crate::harness::{self, Server};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tidewater_tools::loadgen;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Length of the live test.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Events produced for the backlog test (0: skip it).
    #[arg(long, default_value_t = 10_000_000)]
    backlog_events: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Add the ClickHouse sink (e.g. http://127.0.0.1:8123).
    #[arg(long)]
    clickhouse: Option<String>,
    /// Cores for the server: `all`, a count or a list.
    #[arg(long, default_value = "all")]
    cores: String,
    /// Load generator connections (threads).
    #[arg(long, default_value_t = 2)]
    connections: u32,
    #[arg(long, default_value_t = 100_000)]
    devices: u32,
    /// Events per partition per produce request.
    #[arg(long, default_value_t = 500)]
    batch_events: u32,
    /// always, interval or never.
    #[arg(long, default_value = "always")]
    durability: String,
    /// The job's checkpoint interval (`0s`: no checkpoints).
    #[arg(long, default_value = "10s")]
    checkpoint_interval: String,
    /// Working directory (replaced on each run).
    #[arg(long, default_value = "tidewater-bench")]
    dir: PathBuf,
    /// Put the servers' ledgers under this directory (in a `tidewater-bench`
    /// directory replaced on each run), e.g. on a second device as in production;
    /// default: inside --dir, on the journal's device.
    #[arg(long)]
    ledger_dir: Option<PathBuf>,
    /// Event time runs this many times faster than the wall clock, so the live test
    /// fires several windows (at 1, a 60 s run may fire none: the first window fires
    /// only once event time passes its end plus the 5 s out-of-orderness).
    #[arg(long, default_value_t = 4.0)]
    time_scale: f64,
    /// Per-partition retention for the servers (`--retention-bytes` of serve);
    /// default: none, every event stays on disk. Retention never deletes what the
    /// job has not checkpointed past, so it bounds a RAM-backed `--ledger-dir`.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// The servers' `--journal-adopt`: auto (their default: sealed journal segments
    /// become the ledger's data, every byte written once, when journal and ledger
    /// share a file system), true or false (docs/write-once.md).
    #[arg(long, default_value = "auto", value_parser = ["auto", "true", "false"])]
    journal_adopt: String,
    /// Run the live test a second time over TLS (an `SSL` listener, a certificate
    /// made for the run) and compare the two.
    #[arg(long)]
    tls: bool,
    /// Keep the servers' data when the run ends (default: each test's data is
    /// deleted once it is checked, and the rest at the end).
    #[arg(long)]
    keep: bool,
    /// The servers' Kafka port (per-core: core `i` on PORT + `i`); default: free
    /// ports.
    #[arg(long)]
    kafka_port: Option<u16>,
    /// The servers' admin port; default: a free port.
    #[arg(long)]
    admin_port: Option<u16>,
    /// Instead of the live and backlog tests: ack latency at each rate of
    /// --sweep-rates, with the reference job running; the report gets `sweep` and
    /// an SVG chart is written beside it (or to `sweep.svg` in --dir).
    #[arg(long)]
    sweep: bool,
    /// Offered rates for --sweep, events/s (`k`, `m`; `max`: no limit).
    #[arg(long, default_value = "100k,250k,500k,750k,1m,1.5m,2m,max")]
    sweep_rates: String,
    /// How long each rate of --sweep is offered.
    #[arg(long, default_value = "5s")]
    sweep_step: String,
}

const MARKER: &str = ".tidewater-bench";

/// `--sweep`: one server with the reference job, each rate offered in turn.
fn sweep(a: &BenchArgs, root: &Path) -> Result<i32> {
    let rates = crate::sweep::parse_rates(&a.sweep_rates)?;
    let step = crate::parse_duration(&a.sweep_step)?;
    let needs = Needs {
        servers: 1,
        events: 0,
        load_secs: step.as_secs().saturating_mul(rates.len() as u64),
    };
    check_space(a, root, needs)?;
    anyhow::ensure!(!a.tls, "--sweep runs in plaintext: drop --tls");
    println!(
        "Tidewater bench --sweep: reference job running, {} devices, {} events per partition per request, acks=all, durability {}",
        a.devices, a.batch_events, a.durability
    );
    println!("machine: {}", machine());
    let dir = root.join("sweep");
    let server = start(a, &dir, true, None)?;
    let mut points = Vec::new();
    for offered in rates {
        let mut opts = options(a, server.brokers());
        opts.rate = offered;
        opts.duration = Some(step);
        let guard = guard(a, &dir, &mut opts);
        let report = loadgen::run(&opts).map_err(|e| anyhow::anyhow!("load generator: {e}"));
        let stopped = guard.finish();
        let report = report?;
        anyhow::ensure!(
            report.errors.is_empty(),
            "produce errors: {:?}",
            report.errors
        );
        let p = crate::sweep::Point {
            offered,
            achieved: report.events_per_sec,
            ms: report.ack_latency_ms,
        };
        println!(
            "offered {:>9}: acknowledged {:>9.0} events/s, ack latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms",
            offered.map_or("max".to_string(), |r| r.to_string()),
            p.achieved,
            p.ms.0,
            p.ms.1,
            p.ms.2
        );
        points.push(p);
        if let Some(why) = stopped {
            println!("{why}");
            break;
        }
    }
    server.stop()?;
    if !a.keep {
        remove_tests(a, root, &["sweep"])?;
    }
    let svg = a.report.as_ref().map_or_else(
        || PathBuf::from("tidewater-sweep.svg"),
        |r| r.with_extension("svg"),
    );
    let title = format!(
        "Tidewater ack latency, reference job running ({})",
        machine()
    );
    crate::sweep::write_svg(&svg, &points, &title)?;
    println!("chart: {}", svg.display());
    if let Some(path) = &a.report {
        let report = serde_json::json!({
            "machine": machine(),
            "cores": a.cores,
            "durability": a.durability,
            "batch_events": a.batch_events,
            "step_secs": step.as_secs_f64(),
            "sweep": points.iter().map(crate::sweep::Point::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(0)
}

/// Deletes the named tests' directories (data, logs, sink output) when the run
/// ends; the marker stays, and a report written under --dir with it.
fn remove_tests(a: &BenchArgs, root: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        remove_dirs(std::iter::once(root.join(name)).chain(ledgers_of(a, name)))?;
    }
    println!("data: deleted (--keep keeps it)");
    Ok(())
}

/// Deletes test `name`'s data (under `root`, and its ledgers under --ledger-dir)
/// once it is checked: the next test needs the room.
fn forget(a: &BenchArgs, root: &Path, name: &str) -> Result<()> {
    remove_dirs(std::iter::once(root.join(name).join("data")).chain(ledgers_of(a, name)))
}

/// Test `name`'s ledgers under --ledger-dir, when given.
fn ledgers_of(a: &BenchArgs, name: &str) -> Option<PathBuf> {
    a.ledger_dir.as_ref().map(|l| l.join(name))
}

/// Removes each directory that exists.
fn remove_dirs(dirs: impl IntoIterator<Item = PathBuf>) -> Result<()> {
    for dir in dirs {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Watches the free space under `dir` (and --ledger-dir) while `opts`' load runs:
/// the guard stops the load when a device reaches its reserve.
fn guard(a: &BenchArgs, dir: &Path, opts: &mut loadgen::Options) -> crate::disk::Guard {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts.stop = Some(stop.clone());
    let watched = std::iter::once(dir.to_path_buf()).chain(a.ledger_dir.clone());
    crate::disk::Guard::watch(watched.collect(), stop)
}

/// The cores a run's servers use, as `--cores` says.
fn core_count(cores: &str) -> u64 {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    match cores.parse::<crate::config::CoreSelection>() {
        Ok(crate::config::CoreSelection::Count(n)) => n as u64,
        Ok(crate::config::CoreSelection::List(l)) => l.len() as u64,
        Ok(crate::config::CoreSelection::All) | Err(_) => all,
    }
}

/// Fixed ports must hold every core's Kafka port, and the admin port apart.
fn check_ports(a: &BenchArgs) -> Result<()> {
    let cores = core_count(&a.cores);
    if let Some(k) = a.kafka_port {
        anyhow::ensure!(
            k > 0 && u64::from(k) + cores - 1 <= 65_535,
            "--kafka-port {k}: core i listens on PORT + i, and {cores} cores run past 65535"
        );
        if let Some(adm) = a.admin_port {
            anyhow::ensure!(
                !(u64::from(k)..u64::from(k) + cores).contains(&u64::from(adm)),
                "--admin-port {adm} is one of the Kafka ports {k}..{}",
                u64::from(k) + cores - 1
            );
        }
    }
    Ok(())
}

/// What a run will write before its load, and the load's length.
struct Needs {
    /// Servers whose preallocation is on disk at once.
    servers: u64,
    /// Events written apart from the timed load (the backlog).
    events: u64,
    /// Seconds of load at full rate whose data may stay on disk at once.
    load_secs: u64,
}

/// Refuses a run whose fixed part (the servers' preallocation, the backlog) does
/// not fit with the reserve left, on `--dir` and on `--ledger-dir` (which takes
/// the ledger's share); says when the load may stop early.
fn check_space(a: &BenchArgs, root: &Path, needs: Needs) -> Result<()> {
    use crate::disk::{gb, preallocated_bytes, reserve, space, BYTES_PER_EVENT};
    let cores = core_count(&a.cores);
    let fixed = (needs.servers * preallocated_bytes(cores))
        .saturating_add(needs.events.saturating_mul(BYTES_PER_EVENT));
    let load_max = (cores * crate::disk::EVENTS_PER_SEC_PER_CORE_MAX)
        .saturating_mul(needs.load_secs.max(1))
        .saturating_mul(BYTES_PER_EVENT);
    // With --ledger-dir the ledger (about half of what is written) goes there.
    let mut devices = vec![(root.to_path_buf(), 1.0)];
    if let Some(l) = &a.ledger_dir {
        devices = vec![(root.to_path_buf(), 0.5), (l.clone(), 0.5)];
    }
    for (dir, share) in devices {
        let part = |n: u64| (n as f64 * share) as u64;
        let (free, total) = space(&dir)?;
        let keep = reserve(total);
        anyhow::ensure!(
            free >= part(fixed).saturating_add(keep),
            "{} has {} free; this run needs at least {} there ({} for the servers' preallocation and {} events written apart from the timed load) and keeps {} free: lower --backlog-events, or give it a larger device",
            dir.display(),
            gb(free),
            gb(part(fixed).saturating_add(keep)),
            gb(part(fixed)),
            needs.events,
            gb(keep)
        );
        if free
            < part(fixed)
                .saturating_add(part(load_max))
                .saturating_add(keep)
        {
            println!(
                "disk: {} free under {}; at full rate the load could write up to {} there, so it stops early if free space falls to {}",
                gb(free),
                dir.display(),
                gb(part(load_max)),
                gb(keep)
            );
        }
    }
    Ok(())
}

fn fresh(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARKER).exists(),
            "{} exists and was not made by `tidewater bench`; pass --dir elsewhere",
            dir.display()
        );
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "made by tidewater bench; replaced by the next run\n",
    )?;
    Ok(std::fs::canonicalize(dir)?)
}

struct Live {
    /// Why the load stopped before `--duration`, if it did (the disk guard).
    stopped_early: Option<String>,
    /// Bytes the server wrote to its devices per byte produced to it (`None`: the
    /// kernel does not say).
    write_amplification: Option<f64>,
    ingest_eps: f64,
    live_eps: f64,
    cpu_per_million: f64,
    ack_ms: (f64, f64, f64),
    fire_ms: (Option<f64>, Option<f64>),
    /// Fires the fire latency percentiles come from (a window fired on a core into
    /// the measured sink, ClickHouse with --clickhouse, else the topic, is one):
    /// with a handful, the p99 is their largest.
    fires: u64,
    verified: bool,
    why_not: Vec<String>,
    acked: u64,
    windows_checked: usize,
    drain_seconds: f64,
}

pub fn run(mut a: BenchArgs) -> Result<i32> {
    let duration = crate::parse_duration(&a.duration)?;
    anyhow::ensure!(
        a.time_scale.is_finite() && a.time_scale > 0.0,
        "--time-scale must be a positive number, not {}",
        a.time_scale
    );
    if let Some(url) = &a.clickhouse {
        clickhouse_answers(url)?;
    }
    let root = fresh(&a.dir)?;
    if let Some(ledgers) = &a.ledger_dir {
        a.ledger_dir = Some(fresh(&ledgers.join("tidewater-bench"))?);
    }
    check_ports(&a)?;
    if a.sweep {
        return sweep(&a, &root);
    }
    // The live servers (plaintext, TLS) and the backlog's come one after another,
    // each test's data deleted once it is checked, unless --keep keeps it all.
    let tests = 1 + u64::from(a.tls);
    let needs = Needs {
        servers: if a.keep { tests + 1 } else { 1 },
        events: a.backlog_events,
        load_secs: duration.as_secs() * if a.keep { tests } else { 1 },
    };
    check_space(&a, &root, needs)?;
    println!(
        "Tidewater bench: reference job, {} devices, acks=all, durability {}",
        a.devices, a.durability
    );
    println!("machine: {}", machine());
    let live = live_test(&a, &root.join("live"), duration, None)?;
    if !a.keep {
        forget(&a, &root, "live")?;
    }
    println!(
        "live: ingest {:.0} events/s, processed {:.0} events/s during the load, {:.3} server CPU-s per million events",
        live.ingest_eps, live.live_eps, live.cpu_per_million
    );
    println!(
        "      ack latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms; fire latency p50 {} p99 {} over {} fires; drained {:.1}s after the load",
        live.ack_ms.0,
        live.ack_ms.1,
        live.ack_ms.2,
        fmt_ms(live.fire_ms.0),
        fmt_ms(live.fire_ms.1),
        live.fires,
        live.drain_seconds
    );
    if live.verified {
        println!(
            "      verified: {} acknowledged events; {} fired windows hold exactly the events acknowledged for them",
            live.acked, live.windows_checked
        );
    } else {
        println!("      NOT verified: {}", live.why_not.join("; "));
    }
    let tls = if a.tls {
        Some(tls_test(&a, &root, duration, &live)?)
    } else {
        None
    };
    let backlog = if a.backlog_events > 0 {
        let b = backlog_test(&a, &root.join("backlog"))?;
        println!(
            "backlog: {} events drained in {:.2}s = {:.0} events/s ({:.0} events/s from the job's first record), {:.3} CPU-s per million",
            a.backlog_events,
            b.seconds,
            a.backlog_events as f64 / b.seconds,
            b.from_first,
            b.cpu_per_million
        );
        println!(
            "group consume: 2 members read {} events at {:.0} events/s from the first record ({:.2}s to join, {:.2}s in all), committing every second ({} commits), {:.3} server CPU-s per million",
            b.group.consumed,
            b.group.events_per_sec,
            b.group.join_seconds,
            b.group.seconds,
            b.group.commits,
            b.group_cpu_per_million
        );
        Some(b)
    } else {
        None
    };
    if !a.keep {
        remove_tests(&a, &root, &["live", "live-tls", "tls", "backlog"])?;
    }
    let report = serde_json::json!({
        "machine": machine(),
        "cores": a.cores,
        "durability": a.durability,
        "ledger_dir": a.ledger_dir.as_ref().map_or("inside --dir".into(), |d| d.display().to_string()),
        "checkpoint_interval": a.checkpoint_interval,
        "retention_bytes": a.retention_bytes,
        "journal_adopt": a.journal_adopt,
        "time_scale": a.time_scale,
        "devices": a.devices,
        "duration_secs": duration.as_secs_f64(),
        "sinks": if a.clickhouse.is_some() { "topic, file, clickhouse" } else { "topic, file" },
        "ingest_events_per_sec": live.ingest_eps,
        "live_events_per_sec": live.live_eps,
        "backlog_events_per_sec": backlog.as_ref().map(|b| a.backlog_events as f64 / b.seconds),
        "backlog_events_per_sec_from_first_record": backlog.as_ref().map(|b| b.from_first),
        "backlog_events": a.backlog_events,
        "cpu_seconds_per_million_events": live.cpu_per_million,
        "device_bytes_written_per_ingested_byte": live.write_amplification,
        "live_stopped_early": live.stopped_early,
        "backlog_cpu_seconds_per_million_events": backlog.as_ref().map(|b| b.cpu_per_million),
        "group_consume": backlog.as_ref().map(|b| b.group.to_json()),
        "group_consume_cpu_seconds_per_million_events": backlog.as_ref().map(|b| b.group_cpu_per_million),
        "ack_latency_ms": { "p50": live.ack_ms.0, "p99": live.ack_ms.1, "p999": live.ack_ms.2 },
        "fire_latency_ms": { "p50": live.fire_ms.0.map(|s| s * 1000.0), "p99": live.fire_ms.1.map(|s| s * 1000.0), "fires": live.fires },
        "acked_events": live.acked,
        "windows_checked": live.windows_checked,
        "verified": live.verified,
        "not_verified_because": live.why_not,
        "tls": tls,
    });
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report: {}", path.display());
    }
    let tls_verified = tls.as_ref().is_none_or(|t| t["verified"] == true);
    Ok(if live.verified && tls_verified { 0 } else { 1 })
}

/// The live test again over TLS: the same load, the server on an `SSL` listener with
/// a certificate made for the run. Prints the comparison; returns its report part.
fn tls_test(
    a: &BenchArgs,
    root: &Path,
    duration: Duration,
    plain: &Live,
) -> Result<serde_json::Value> {
    // The plaintext run's log is checked and done with: its disk goes back first, so
    // the two runs need the space of one (--keep keeps both).
    if !a.keep {
        forget(a, root, "live")?;
    }
    let tls = harness::make_tls(&root.join("tls"))?;
    let live = live_test(a, &root.join("live-tls"), duration, Some(&tls))?;
    if !a.keep {
        forget(a, root, "live-tls")?;
    }
    println!(
        "live over TLS: ingest {:.0} events/s ({:+.1}% against plaintext), {:.3} server CPU-s per million events ({:+.1}%); ack latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms; {}",
        live.ingest_eps,
        (live.ingest_eps / plain.ingest_eps - 1.0) * 100.0,
        live.cpu_per_million,
        (live.cpu_per_million / plain.cpu_per_million - 1.0) * 100.0,
        live.ack_ms.0,
        live.ack_ms.1,
        live.ack_ms.2,
        if live.verified {
            "verified".to_string()
        } else {
            format!("NOT verified: {}", live.why_not.join("; "))
        }
    );
    Ok(serde_json::json!({
        "ingest_events_per_sec": live.ingest_eps,
        "ingest_vs_plaintext": live.ingest_eps / plain.ingest_eps,
        "cpu_seconds_per_million_events": live.cpu_per_million,
        "ack_latency_ms": { "p50": live.ack_ms.0, "p99": live.ack_ms.1, "p999": live.ack_ms.2 },
        "acked_events": live.acked,
        "verified": live.verified,
        "not_verified_because": live.why_not,
        "stopped_early": live.stopped_early,
    }))
}

fn options(a: &BenchArgs, brokers: String) -> loadgen::Options {
    loadgen::Options {
        brokers,
        topic: "iot-sensor-data".into(),
        devices: a.devices,
        rate: None,
        duration: None,
        events: None,
        connections: a.connections,
        acks: -1,
        batch_events: a.batch_events,
        compression: kafka_protocol::records::Compression::None,
        out_of_order: 0.0,
        skew_ms: 0,
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

fn start(
    a: &BenchArgs,
    dir: &Path,
    with_job: bool,
    tls: Option<&harness::TlsFiles>,
) -> Result<Server> {
    std::fs::create_dir_all(dir)?;
    let schema = harness::write_schema(dir)?;
    let config = dir.join("bench.toml");
    let text = if with_job {
        harness::reference_config(
            &schema,
            "2s",
            &a.checkpoint_interval,
            &tidewater_tools::reference::sinks(&dir.join("out"), a.clickhouse.as_deref()),
        )
    } else {
        "[[topics]]\nname = \"iot-sensor-data\"\npartitions = 8\n".to_string()
    };
    std::fs::write(&config, text)?;
    // Counters reach /metrics every 50 ms, so the backlog's end is timed to
    // that, not to the default 500 ms.
    let mut args = vec![
        "--durability".to_string(),
        a.durability.clone(),
        "--metrics-interval-ms".into(),
        "50".into(),
    ];
    if let (Some(ledgers), Some(name)) = (&a.ledger_dir, dir.file_name()) {
        args.push("--ledger-dir".into());
        args.push(ledgers.join(name).display().to_string());
    }
    if let Some(bytes) = a.retention_bytes {
        args.push("--retention-bytes".into());
        args.push(bytes.to_string());
    }
    args.push("--journal-adopt".into());
    args.push(a.journal_adopt.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ports = harness::Ports {
        kafka: a.kafka_port,
        admin: a.admin_port,
    };
    Server::start_with(
        &config,
        &dir.join("data"),
        &a.cores,
        &args,
        &dir.join("server.log"),
        tls,
        ports,
    )
}

/// Fails early, and says so, when the ClickHouse of `--clickhouse` does not answer:
/// the sink would retry for ever and the job would never drain.
fn clickhouse_answers(url: &str) -> Result<()> {
    let endpoint = tidewater_shards::sink::http::Endpoint::parse(url, None, None)
        .map_err(|e| anyhow::anyhow!("--clickhouse {e}"))?;
    let answer = harness::http(&endpoint.host_port, "GET", "/ping");
    match answer {
        Ok((200, _)) => Ok(()),
        Ok((code, body)) => {
            anyhow::bail!("--clickhouse {url}: /ping answered {code} {}", body.trim())
        }
        Err(e) => anyhow::bail!("--clickhouse {url} does not answer ({e:#}); start it first"),
    }
}

/// How long the job may read nothing while it lags before the run is given up.
const NO_PROGRESS_MAX: Duration = Duration::from_secs(60);

/// Waits until the job has read everything and stayed idle long enough for every
/// complete window to fire; returns the seconds it took.
fn drain(server: &Server) -> Result<f64> {
    let t = Instant::now();
    let mut quiet: Option<Instant> = None;
    let mut progress = (f64::NAN, Instant::now());
    loop {
        let scrape = server.scrape()?;
        let lag = scrape.sum("tidewater_pipeline_lag_records", &[]);
        let read = scrape.sum("tidewater_pipeline_records_total", &[]);
        if read != progress.0 {
            progress = (read, Instant::now());
        }
        if lag == 0.0 {
            if quiet.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(4) {
                return Ok(t.elapsed().as_secs_f64());
            }
        } else {
            quiet = None;
            anyhow::ensure!(
                progress.1.elapsed() < NO_PROGRESS_MAX,
                "the job read nothing for {NO_PROGRESS_MAX:?} while {lag} records wait \
                 (a sink down?); see {}",
                server.log_path().display()
            );
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "the job did not catch up within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn live_test(
    a: &BenchArgs,
    dir: &Path,
    duration: Duration,
    tls: Option<&harness::TlsFiles>,
) -> Result<Live> {
    let server = start(a, dir, true, tls)?;
    let mut opts = options(a, server.brokers());
    opts.tls = tls.map(|t| t.client.clone());
    opts.duration = Some(duration);
    let guard = guard(a, dir, &mut opts);
    let cpu0 = harness::cpu_seconds(server.pid())?;
    // Unknown (null in the report) where the kernel keeps no per-process I/O counts.
    let written0 = server.device_bytes_written().ok();
    let before = server.scrape()?;
    let t0 = Instant::now();
    let report = loadgen::run(&opts).map_err(|e| anyhow::anyhow!("load generator: {e}"));
    let stopped_early = guard.finish();
    let report = report?;
    // A guard that tripped as the load ended stopped nothing.
    let stopped_early = stopped_early.filter(|_| t0.elapsed() < duration);
    if let Some(why) = &stopped_early {
        println!("      {why}");
    }
    let load_secs = t0.elapsed().as_secs_f64();
    let during = server.scrape()?;
    let drain_seconds = drain(&server)?;
    let cpu1 = harness::cpu_seconds(server.pid())?;
    let written = written0
        .zip(server.device_bytes_written().ok())
        .map(|(w0, w1)| w1.saturating_sub(w0));
    let after = server.scrape()?;
    let processed_live = during.sum("tidewater_pipeline_records_total", &[])
        - before.sum("tidewater_pipeline_records_total", &[]);
    let sink = if a.clickhouse.is_some() {
        "clickhouse:iot.device_minute"
    } else {
        "topic:device_minute"
    };
    let m = [("sink", sink)];
    let fire = (
        after.quantile("tidewater_sink_fire_latency_seconds", &m, 0.5),
        after.quantile("tidewater_sink_fire_latency_seconds", &m, 0.99),
    );
    let fires = after.sum("tidewater_sink_fire_latency_seconds_count", &m) as u64;
    // Verification: every event acknowledged was read once, nothing went to the side
    // outputs, and each fired window holds exactly the events acknowledged for it.
    let mut why_not = Vec::new();
    if !report.errors.is_empty() || !report.windows_exact {
        why_not.push(format!("produce errors {:?}", report.errors));
    }
    let read = after.sum("tidewater_pipeline_records_total", &[]);
    if read as u64 != report.acked {
        why_not.push(format!(
            "the job read {read} records, {} were acknowledged",
            report.acked
        ));
    }
    for name in ["tidewater_late_events_total", "tidewater_dlq_records_total"] {
        let n = after.sum(name, &[]);
        if n != 0.0 {
            why_not.push(format!("{name} = {n}"));
        }
    }
    let counts = harness::file_sink_counts(&dir.join("out"))?;
    let final_wm = report.max_event_ms - 5_000;
    let due: BTreeMap<i64, u64> = report
        .acked_per_window
        .iter()
        .filter(|(w, _)| **w + 60_000 <= final_wm)
        .map(|(w, n)| (*w, *n))
        .collect();
    if due.is_empty() {
        why_not.push(
            "no window was due to fire, so none could be checked: run longer or raise --time-scale"
                .into(),
        );
    }
    if counts != due {
        let diff: Vec<String> = due
            .iter()
            .filter(|(w, n)| counts.get(w) != Some(n))
            .map(|(w, n)| {
                format!(
                    "window {w}: {:?} in the sink, {n} acknowledged",
                    counts.get(w)
                )
            })
            .take(3)
            .collect();
        why_not.push(format!(
            "{} windows in the sink, {} due; {}",
            counts.len(),
            due.len(),
            diff.join(", ")
        ));
    }
    server.stop()?;
    if let (Some(why), false) = (&stopped_early, why_not.is_empty()) {
        // What was loaded is checked all the same; when that fails, the early stop
        // is the first thing to know.
        why_not.insert(0, why.clone());
    }
    Ok(Live {
        stopped_early,
        write_amplification: written.map(|w| w as f64 / report.bytes_sent.max(1) as f64),
        ingest_eps: report.events_per_sec,
        live_eps: processed_live / load_secs,
        cpu_per_million: (cpu1 - cpu0) / report.acked.max(1) as f64 * 1e6,
        ack_ms: report.ack_latency_ms,
        fire_ms: fire,
        fires,
        verified: why_not.is_empty(),
        why_not,
        acked: report.acked,
        windows_checked: counts.len(),
        drain_seconds,
    })
}

/// (seconds from start to drained, CPU-s per million, events/s from the first record read).
/// What the backlog test measured.
struct Backlog {
    /// Seconds from the server's start to the job having read every event.
    seconds: f64,
    cpu_per_million: f64,
    /// Events/s from the job's first record.
    from_first: f64,
    /// The group read of the same events afterwards.
    group: loadgen::consume::ConsumeReport,
    group_cpu_per_million: f64,
}

fn backlog_test(a: &BenchArgs, dir: &Path) -> Result<Backlog> {
    // Produce with no job running: the backlog.
    let server = start(a, dir, false, None)?;
    let mut opts = options(a, server.brokers());
    opts.events = Some(a.backlog_events);
    let guard = guard(a, dir, &mut opts);
    let report = loadgen::run(&opts).map_err(|e| anyhow::anyhow!("load generator: {e}"));
    if let Some(why) = guard.finish() {
        anyhow::bail!("the backlog could not be written: {why}");
    }
    let report = report?;
    anyhow::ensure!(
        report.errors.is_empty(),
        "backlog load failed: {:?}",
        report.errors
    );
    server.stop()?;
    // The job starts and reads it all.
    let server = start(a, dir, true, None)?;
    let target = report.acked as f64;
    let mut first: Option<(Instant, f64)> = None;
    let done = loop {
        let s = server.scrape()?;
        let read = s.sum("tidewater_pipeline_records_total", &[]);
        if read > 0.0 && first.is_none() {
            first = Some((Instant::now(), read));
        }
        if read >= target {
            break Instant::now();
        }
        anyhow::ensure!(
            server.started.elapsed() < Duration::from_secs(900),
            "the backlog did not drain within 15 minutes ({read} of {target})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = harness::cpu_seconds(server.pid())?;
    let secs = done.duration_since(server.started).as_secs_f64();
    let from_first = first.map_or(0.0, |(t, n)| {
        (target - n) / done.duration_since(t).as_secs_f64().max(1e-3)
    });
    // A consumer group reads the backlog again, as applications read a topic.
    let group = loadgen::consume::run(&loadgen::consume::ConsumeOptions {
        brokers: server.brokers(),
        topic: "iot-sensor-data".into(),
        group: "bench".into(),
        consumers: 2,
        duration: Some(Duration::from_secs(600)),
        events: Some(report.acked),
        commit_interval: Duration::from_secs(1),
        from_latest: false,
        progress: false,
    })
    .map_err(|e| anyhow::anyhow!("group consumer: {e}"))?;
    let group_cpu = harness::cpu_seconds(server.pid())? - cpu;
    anyhow::ensure!(
        group.consumed >= report.acked && group.errors.is_empty(),
        "the group read {} of {} events (errors {:?})",
        group.consumed,
        report.acked,
        group.errors
    );
    server.stop()?;
    Ok(Backlog {
        seconds: secs,
        cpu_per_million: cpu / target * 1e6,
        from_first,
        group_cpu_per_million: group_cpu / group.consumed.max(1) as f64 * 1e6,
        group,
    })
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |s| format!("{:.0} ms", s * 1000.0))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), kernel {}", kernel.trim())
}
