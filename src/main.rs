//! The `tidewater` binary: the server and its tools behind one command line.
//!
//! Owns the command line, logging set-up and exit codes; everything else lives in the
//! workspace crates (`io` for storage, `shards` for what a core owns, `tools`).

mod config;
mod kafka;
mod server;

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
    Serve(ServeArgs),
    /// Drive or check one core's log directly (inspection and crash testing).
    #[command(subcommand)]
    Log(LogCommand),
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
    /// Kafka listener: core i listens on PORT+i (default 127.0.0.1:9092).
    #[arg(long)]
    kafka_addr: Option<String>,
    /// Host name Metadata gives clients (default: the listener's address).
    #[arg(long)]
    advertised_host: Option<String>,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
                None => FileConfig::default(),
            };
            let kafka = KafkaFlags {
                kafka_addr: args.kafka_addr,
                advertised_host: args.advertised_host,
            };
            let settings =
                Settings::resolve(file, args.data_dir, args.cores, &args.storage, &kafka)?;
            server::serve(settings)
        }
        Command::Log(cmd) => log_command(cmd),
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
