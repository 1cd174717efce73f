//! The `tidewater` binary: the server and its tools behind one command line.
//!
//! Owns the command line, logging set-up and exit codes; everything else lives in the
//! workspace crates (`io` for storage, `shards` for what a core owns, `kafka` for the
//! Kafka front end, `tools`).

mod admin_auth;
mod bench;
mod config;
mod demo;
mod disk;
mod harness;
mod listeners;
mod metrics;
mod placement;
mod rescale;
mod schema_registry;
mod server;
mod sweep;
mod users;

use anyhow::Result;
use clap::{Parser, Subcommand};
use config::{CoreSelection, FileConfig, KafkaFlags, Settings, StorageFlags};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "tidewater",
    version,
    about = "Real-time event processing on one machine: Kafka wire protocol in, keyed event-time windows out, thread-per-core."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: one pinned core per selected CPU, until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Drive or check one core's log directly (inspection and crash testing).
    #[command(subcommand)]
    Log(LogCommand),
    /// Produce the reference IoT events (Avro, ~300 bytes, key = device_id) to any
    /// Kafka broker and report events/s and ack latency.
    Loadgen(LoadgenArgs),
    /// The reference job on embedded defaults with the built-in load generator: a
    /// live line, then a summary and where the results went.
    Demo(demo::DemoArgs),
    /// The end-to-end benchmark: live test at max rate, then the backlog test; writes
    /// a report (events/s, CPU per event, ack and fire latency, verified).
    Bench(bench::BenchArgs),
    /// Take a checkpoint of every job now (a savepoint: kept until removed by hand)
    /// through a running server's admin listener, and wait until it is complete.
    Checkpoint(CheckpointArgs),
    /// The SASL users of a data directory, while its server is stopped.
    #[command(subcommand)]
    Users(users::UsersCommand),
}

#[derive(clap::Args)]
struct CheckpointArgs {
    /// Required: take it now.
    #[arg(long)]
    now: bool,
    /// The server's admin listener.
    #[arg(long, default_value = "127.0.0.1:9644")]
    admin_addr: String,
    /// The file holding the admin token, when the server has admin_token_file.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// The admin listener speaks HTTPS: trust the CA in this PEM file.
    #[arg(long)]
    admin_tls_ca_file: Option<PathBuf>,
    /// With --admin-tls-ca-file: this client certificate (PEM) instead of a token.
    #[arg(long, requires = "admin_tls_key_file")]
    admin_tls_cert_file: Option<PathBuf>,
    /// The key of --admin-tls-cert-file (PEM).
    #[arg(long, requires = "admin_tls_cert_file")]
    admin_tls_key_file: Option<PathBuf>,
    /// How long to wait for it to complete.
    #[arg(long, default_value = "60s")]
    timeout: String,
}

#[derive(clap::Args)]
struct LoadgenArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "iot-sensor-data")]
    topic: String,
    #[arg(long, default_value_t = 100_000)]
    devices: u32,
    /// Events per second in all, or `max`.
    #[arg(long, default_value = "max")]
    rate: String,
    /// How long to run, e.g. `60s`, `2m` (default 10s unless --events is given).
    #[arg(long)]
    duration: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    events: Option<u64>,
    #[arg(long, default_value_t = 2)]
    connections: u32,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Events per partition per request (the batch size).
    #[arg(long, default_value_t = 500)]
    batch_events: u32,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Fraction of events whose event time goes back by up to --skew-ms.
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    #[arg(long, default_value_t = 0)]
    skew_ms: u64,
    /// Event time runs this many times faster than the wall clock (60: a minute of
    /// event time per second, so 1-minute windows fire every second).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Produce requests outstanding per connection.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Produce over TLS (an `SSL` listener), trusting the CA in this PEM file.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// With --tls-ca-file: this client certificate (PEM), for listeners that ask for one.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Authenticate with SASL (a SASL_PLAINTEXT listener, or SASL_SSL with
    /// --tls-ca-file): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, requires_all = ["sasl_username", "sasl_password_file"])]
    sasl_mechanism: Option<String>,
    #[arg(long, requires = "sasl_mechanism")]
    sasl_username: Option<String>,
    /// The password: the first line of this file (never a flag: it would show in ps).
    #[arg(long, requires = "sasl_mechanism")]
    sasl_password_file: Option<PathBuf>,
    /// Consume instead: a group of --consumers members reads --topic, committing
    /// every --commit-interval; reports events/s and produce→consume latency.
    #[arg(long)]
    consume: bool,
    /// The consumer group (with --consume).
    #[arg(long, default_value = "tidewater-loadgen")]
    group: String,
    /// Members of the group, one thread each (with --consume).
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// How often each member commits its positions (with --consume).
    #[arg(long, default_value = "1s")]
    commit_interval: String,
    /// Where a partition without a committed offset starts: earliest or latest
    /// (with --consume).
    #[arg(long, default_value = "earliest")]
    from: String,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where data lives unless --journal-dir/--ledger-dir say otherwise.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cores to run on: `all`, a count (`2`), or a list (`0,2-3`).
    #[arg(long)]
    cores: Option<CoreSelection>,
    #[command(flatten)]
    kafka: KafkaFlags,
    #[command(flatten)]
    storage: StorageFlags,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Append deterministic payloads from concurrent tasks; prints `ack P OFFSET INDEX`
    /// after each completed append.
    Append {
        /// The log's directory (journal/ and ledger/ under it unless given).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        #[arg(long, default_value_t = 4)]
        tasks_per_partition: u32,
        /// Appends per task; runs until killed when absent.
        #[arg(long)]
        count: Option<u64>,
        /// Distinguishes the payloads of successive runs.
        #[arg(long, default_value_t = 0)]
        run: u32,
        #[command(flatten)]
        storage: StorageFlags,
    },
    /// Open the log (running recovery), check every partition is dense and readable.
    Check {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        storage: StorageFlags,
    },
}

fn main() {
    tidewater_registry::guard::abort_on_other_panics();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; plain text for journald and log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Serve(args) => {
            let file = match &args.config {
                Some(path) => FileConfig::load(path)?,
                None => FileConfig::embedded_defaults(),
            };
            let settings =
                Settings::resolve(file, args.data_dir, args.cores, &args.storage, &args.kafka)?;
            server::serve(settings)
        }
        Command::Log(cmd) => log_command(cmd),
        Command::Loadgen(args) => loadgen(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Checkpoint(args) => checkpoint_now(args),
        Command::Users(cmd) => users::run(cmd),
    }
}

/// `tidewater checkpoint --now`: asks for a savepoint and waits for every job's.
fn checkpoint_now(a: CheckpointArgs) -> Result<i32> {
    anyhow::ensure!(
        a.now,
        "say --now: a checkpoint of every job is taken at once"
    );
    let timeout = parse_duration(&a.timeout)?;
    let token = match &a.admin_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let token = token.as_deref();
    let client = a
        .admin_tls_cert_file
        .as_deref()
        .zip(a.admin_tls_key_file.as_deref());
    let tls = match &a.admin_tls_ca_file {
        Some(ca) => Some(
            tidewater_tools::loadgen::tls::Tls::from_files(ca, client)
                .map_err(|e| anyhow::anyhow!("admin TLS: {e}"))?,
        ),
        None if client.is_some() => {
            anyhow::bail!("--admin-tls-cert-file needs --admin-tls-ca-file")
        }
        None => None,
    };
    let tls = tls.as_ref();
    let last = |addr: &str| -> Result<std::collections::BTreeMap<String, f64>> {
        let (code, body) = harness::http_as(addr, "GET", "/metrics", token, tls)?;
        anyhow::ensure!(code == 200, "{addr}/metrics answered {code}");
        let s = harness::Scrape::parse(&body);
        Ok(s.series("tidewater_checkpoint_last_id")
            .into_iter()
            .filter(|(l, _)| l.get("shard").map(String::as_str) == Some("0"))
            .filter_map(|(l, v)| Some((l.get("job_name")?.clone(), v)))
            .collect())
    };
    let before = last(&a.admin_addr)?;
    anyhow::ensure!(
        !before.is_empty(),
        "the server at {} runs no job with checkpoints",
        a.admin_addr
    );
    let (code, body) = harness::http_as(&a.admin_addr, "POST", "/checkpoint", token, tls)?;
    anyhow::ensure!(code == 202, "POST /checkpoint answered {code}: {body}");
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = last(&a.admin_addr)?;
        let done = before
            .iter()
            .all(|(job, id)| now.get(job).is_some_and(|n| n > id));
        if done {
            for (job, id) in now {
                println!("job {job}: savepoint {id} complete");
            }
            return Ok(0);
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "no complete checkpoint within {timeout:?} (a sink that cannot deliver holds checkpoints; see the server log)"
        );
    }
}

/// `30s`, `2m`, `500ms`, `1h 30m` (humantime); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(std::time::Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t)
        .map_err(|e| anyhow::anyhow!("duration {text:?}: {e} (use e.g. 30s, 2m, 500ms)"))
}

/// `loadgen --consume`: a consumer group's read rate and latency.
fn consume(a: LoadgenArgs) -> Result<i32> {
    use tidewater_tools::loadgen::consume;
    let from_latest = match a.from.as_str() {
        "earliest" => false,
        "latest" => true,
        other => anyhow::bail!("--from {other:?}: use earliest or latest"),
    };
    anyhow::ensure!(a.consumers > 0, "--consumers must be positive");
    let duration = match (&a.duration, a.events) {
        (Some(d), _) => Some(parse_duration(d)?),
        (None, None) => Some(std::time::Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    let opts = consume::ConsumeOptions {
        brokers: a.brokers,
        topic: a.topic,
        group: a.group,
        consumers: a.consumers,
        duration,
        events: a.events,
        commit_interval: parse_duration(&a.commit_interval)?,
        from_latest,
        progress: !a.quiet,
    };
    let report = consume::run(&opts).map_err(|e| anyhow::anyhow!("loadgen --consume: {e}"))?;
    println!(
        "consumed {} in {:.2}s ({:.2}s to join): {:.0} events/s ({:.0} MB/s) from the first record; produce→consume latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; {} commits, {} joins; errors {:?}",
        report.consumed,
        report.seconds,
        report.join_seconds,
        report.events_per_sec,
        report.bytes as f64 / (report.seconds - report.join_seconds).max(1e-3) / 1e6,
        report.latency_ms.0,
        report.latency_ms.1,
        report.latency_ms.2,
        report.commits,
        report.joins,
        report.errors
    );
    if let Some(path) = a.report {
        std::fs::write(&path, report.to_json().to_string())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(0)
}

fn loadgen(a: LoadgenArgs) -> Result<i32> {
    if a.consume {
        return consume(a);
    }
    use kafka_protocol::records::Compression;
    use tidewater_tools::loadgen;
    let compression = match a.compression.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => anyhow::bail!("--compression {other:?}: use none, gzip, snappy, lz4 or zstd"),
    };
    let acks = match a.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => anyhow::bail!("--acks {other:?}: use all, 1 or 0"),
    };
    let rate = match a.rate.as_str() {
        "max" => None,
        r => Some(
            r.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("--rate {r:?}: a number of events/s, or max"))?,
        ),
    };
    let duration = match (&a.duration, a.events) {
        (Some(d), _) => Some(parse_duration(d)?),
        (None, None) => Some(std::time::Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    if a.devices == 0 || a.batch_events == 0 || a.connections == 0 || a.max_in_flight == 0 {
        anyhow::bail!(
            "--devices, --batch-events, --connections and --max-in-flight must be positive"
        );
    }
    if !(0.0..=1.0).contains(&a.out_of_order) {
        anyhow::bail!("--out-of-order is a fraction between 0 and 1");
    }
    let tls = loadgen_tls(&a)?;
    let sasl = loadgen_sasl(&a)?;
    let opts = loadgen::Options {
        brokers: a.brokers,
        topic: a.topic,
        devices: a.devices,
        rate,
        duration,
        events: a.events,
        connections: a.connections,
        acks,
        batch_events: a.batch_events,
        compression,
        out_of_order: a.out_of_order,
        skew_ms: a.skew_ms,
        time_scale: a.time_scale,
        window_ms: 0,
        seed: a.seed,
        max_in_flight: a.max_in_flight,
        progress: !a.quiet,
        tls,
        sasl,
        stop: None,
    };
    let report = loadgen::run(&opts).map_err(|e| anyhow::anyhow!("loadgen: {e}"))?;
    println!(
        "sent {} acked {} in {:.2}s: {:.0} events/s; ack latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; errors {:?}",
        report.sent,
        report.acked,
        report.seconds,
        report.events_per_sec,
        report.ack_latency_ms.0,
        report.ack_latency_ms.1,
        report.ack_latency_ms.2,
        report.errors
    );
    if let Some(path) = a.report {
        std::fs::write(&path, report.to_json())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}

/// The load generator's SASL settings from its flags.
fn loadgen_sasl(a: &LoadgenArgs) -> Result<Option<tidewater_tools::loadgen::sasl::Sasl>> {
    let (Some(mechanism), Some(user), Some(file)) =
        (&a.sasl_mechanism, &a.sasl_username, &a.sasl_password_file)
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let password = text.lines().next().unwrap_or_default();
    tidewater_tools::loadgen::sasl::Sasl::new(mechanism, user, password)
        .map(Some)
        .map_err(anyhow::Error::msg)
}

/// The load generator's TLS settings from its flags.
fn loadgen_tls(a: &LoadgenArgs) -> Result<Option<tidewater_tools::loadgen::tls::Tls>> {
    let client = a.tls_cert_file.as_deref().zip(a.tls_key_file.as_deref());
    match &a.tls_ca_file {
        None if client.is_some() => anyhow::bail!("--tls-cert-file needs --tls-ca-file"),
        None => Ok(None),
        Some(ca) => Ok(Some(
            tidewater_tools::loadgen::tls::Tls::from_files(ca, client)
                .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
        )),
    }
}

fn log_settings(dir: PathBuf, storage: &StorageFlags) -> Result<tidewater_io::LogConfig> {
    let s = Settings::resolve(
        FileConfig::default(),
        Some(dir),
        None,
        storage,
        &KafkaFlags::default(),
    )?;
    let mut cfg = s.log;
    cfg.journal_dir = s.journal_dir;
    cfg.ledger_dir = s.ledger_dir;
    Ok(cfg)
}

fn on_one_core<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> Result<T> {
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .map_err(|e| anyhow::anyhow!("cannot start an executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("executor failed: {e}"))
}

fn log_command(cmd: LogCommand) -> Result<i32> {
    use tidewater_tools::logtool;
    match cmd {
        LogCommand::Append {
            dir,
            partitions,
            tasks_per_partition,
            count,
            run,
            storage,
        } => {
            let cfg = log_settings(dir, &storage)?;
            let opts = logtool::AppendOptions {
                partitions,
                tasks_per_partition,
                count,
                run,
            };
            let n = on_one_core(move || Box::pin(logtool::append(cfg, opts)))??;
            eprintln!("{n} appends acknowledged");
            Ok(0)
        }
        LogCommand::Check { dir, storage } => {
            let cfg = log_settings(dir, &storage)?;
            // A check reads the journal even after a clean stop.
            let marker = cfg.journal_dir.join(tidewater_io::CLEAN_STOP_FILE);
            if marker.exists() {
                std::fs::remove_file(&marker)?;
            }
            let out = on_one_core(move || {
                Box::pin(async move {
                    let (log, report) = tidewater_io::ShardLog::open(cfg)
                        .await
                        .map_err(|e| e.to_string())?;
                    for d in &report.dropped {
                        println!("dropped {d}");
                    }
                    let parts = logtool::check(&log).await?;
                    for p in &parts {
                        println!(
                            "partition {} (id {}): offsets {}..{}, {} batches",
                            p.name,
                            p.id,
                            p.start,
                            p.high_watermark,
                            p.entries.len()
                        );
                    }
                    log.close().await.map_err(|e| e.to_string())?;
                    Ok::<(), String>(())
                })
            })?;
            match out {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("check failed: {e}");
                    Ok(1)
                }
            }
        }
    }
}
