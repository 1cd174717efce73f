//! Settings: one TOML file, every setting also a flag, defaults that run on a laptop.
//!
//! Owns parsing and validation of the server's settings and their precedence
//! (flag > file > default). Unknown keys in the file are errors, never ignored.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tidewater_io::{Durability, JournalAdopt, LogConfig};
use tidewater_shards::pipeline::spec::{Job, JobConfig};
use tidewater_shards::Topic;

/// Storage settings shared by `serve` and `log` (flags; the file has the same keys).
#[derive(Args, Clone, Debug, Default)]
pub struct StorageFlags {
    /// Journal directory (default: <data-dir>/journal); one sub-directory per core.
    #[arg(long)]
    pub journal_dir: Option<PathBuf>,
    /// Ledger directory (default: <data-dir>/ledger); one sub-directory per core.
    #[arg(long)]
    pub ledger_dir: Option<PathBuf>,
    /// When an append is acknowledged: always (after fdatasync), interval, never.
    #[arg(long)]
    pub durability: Option<Durability>,
    /// With --durability interval: longest time written data stays unsynced.
    #[arg(long)]
    pub journal_sync_interval_ms: Option<u64>,
    /// Size of one journal segment file.
    #[arg(long)]
    pub journal_segment_bytes: Option<u64>,
    /// Journal segment files per core.
    #[arg(long)]
    pub journal_segments: Option<u32>,
    /// Largest single journal write (group commit batch).
    #[arg(long)]
    pub journal_flush_bytes_max: Option<usize>,
    /// A ledger segment is sealed when it would grow beyond this.
    #[arg(long)]
    pub ledger_segment_bytes: Option<u64>,
    /// A partition's unwritten ledger data is written when it reaches this.
    #[arg(long)]
    pub ledger_flush_bytes: Option<usize>,
    /// Every partition's ledger data is written and synced at least this often.
    #[arg(long)]
    pub ledger_flush_interval_ms: Option<u64>,
    /// Unwritten ledger bytes per core beyond which appends wait.
    #[arg(long)]
    pub ledger_pending_bytes_max: Option<usize>,
    /// Keep sealed journal segments as the ledger's data instead of copying them,
    /// so every byte is written once: auto (the default: when journal and ledger
    /// are on one file system), true or false (docs/write-once.md).
    #[arg(long)]
    pub journal_adopt: Option<JournalAdopt>,
    /// Delete a partition's oldest segments beyond this many bytes.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest batch is older than this.
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Largest batch one append may carry.
    #[arg(long)]
    pub batch_bytes_max: Option<usize>,
}

/// The config file. Every key is optional; unknown keys are refused.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub cores: Option<String>,
    pub journal_dir: Option<PathBuf>,
    pub ledger_dir: Option<PathBuf>,
    pub durability: Option<String>,
    pub journal_sync_interval_ms: Option<u64>,
    pub journal_segment_bytes: Option<u64>,
    pub journal_segments: Option<u32>,
    pub journal_flush_bytes_max: Option<usize>,
    pub ledger_segment_bytes: Option<u64>,
    pub ledger_flush_bytes: Option<usize>,
    pub ledger_flush_interval_ms: Option<u64>,
    pub ledger_pending_bytes_max: Option<usize>,
    /// `true`, `false` or `"auto"`.
    pub journal_adopt: Option<toml::Value>,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub batch_bytes_max: Option<usize>,
    pub kafka_addr: Option<String>,
    pub advertised_host: Option<String>,
    pub request_bytes_max: Option<usize>,
    pub request_memory_bytes_max: Option<usize>,
    pub connections_max: Option<usize>,
    pub in_flight_requests_max: Option<usize>,
    pub fetch_wait_ms_max: Option<u64>,
    pub fetch_bytes_max: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub connections_max_idle_ms: Option<u64>,
    pub connection_creation_rate_per_ip: Option<u32>,
    pub connections_max_reauth_ms: Option<u64>,
    pub connection_failed_authentication_delay_ms: Option<u64>,
    pub failed_authentications_per_ip_per_minute: Option<u32>,
    pub authorizer: Option<String>,
    pub super_users: Option<Vec<String>>,
    pub allow_everyone_if_no_acl_found: Option<bool>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
    pub group_min_session_timeout_ms: Option<u64>,
    pub group_max_session_timeout_ms: Option<u64>,
    pub group_max_size: Option<usize>,
    pub offsets_retention_minutes: Option<u64>,
    pub offsets_compact_bytes: Option<u64>,
    pub admin_addr: Option<String>,
    pub metrics_interval_ms: Option<u64>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_open_paths: Option<Vec<String>>,
    pub admin_tls_cert_file: Option<PathBuf>,
    pub admin_tls_key_file: Option<PathBuf>,
    pub admin_tls_client_ca_file: Option<PathBuf>,
    pub schema_registry_addr: Option<String>,
    pub schema_registry_tls_cert_file: Option<PathBuf>,
    pub schema_registry_tls_key_file: Option<PathBuf>,
    pub schema_registry_tls_client_ca_file: Option<PathBuf>,
    pub kafka_mode: Option<String>,
    pub auto_create_topics: Option<bool>,
    pub default_partitions: Option<u32>,
    #[serde(default)]
    pub listeners: Vec<crate::listeners::ListenerConfig>,
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    #[serde(default)]
    pub jobs: Vec<JobConfig>,
    /// Where relative paths in the file (schemas) are resolved: the file's directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: u32,
}

/// The topic every default run declares: the reference workload's.
pub const REFERENCE_TOPIC: &str = "iot-sensor-data";
const REFERENCE_PARTITIONS: u32 = 8;

impl FileConfig {
    /// What `serve` runs with when no config file is given: the defaults, and the
    /// reference topic, so a first run has something to produce to.
    pub fn embedded_defaults() -> Self {
        FileConfig {
            topics: vec![TopicConfig {
                name: REFERENCE_TOPIC.to_string(),
                partitions: REFERENCE_PARTITIONS,
            }],
            ..FileConfig::default()
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text)
            .with_context(|| format!("config file {} is invalid", path.display()))?;
        file.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(file)
    }
}

/// Which cores to run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreSelection {
    All,
    Count(usize),
    List(Vec<usize>),
}

impl std::str::FromStr for CoreSelection {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("--cores {s:?}: use `all`, a count like `2`, or a list like `0,2-3`");
        if s == "all" {
            return Ok(CoreSelection::All);
        }
        if !s.contains([',', '-']) {
            let n: usize = s.parse().map_err(|_| bad())?;
            return if n == 0 {
                Err(bad())
            } else {
                Ok(CoreSelection::Count(n))
            };
        }
        let mut cores = Vec::new();
        for part in s.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (usize, usize) =
                        (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    if a > b {
                        return Err(bad());
                    }
                    cores.extend(a..=b);
                }
                None => cores.push(part.parse().map_err(|_| bad())?),
            }
        }
        cores.sort_unstable();
        cores.dedup();
        Ok(CoreSelection::List(cores))
    }
}

impl CoreSelection {
    /// The CPU ids to pin to, checked against the CPUs this process may use.
    pub fn resolve(&self, available: &[usize]) -> Result<Vec<usize>> {
        match self {
            CoreSelection::All => Ok(available.to_vec()),
            CoreSelection::Count(n) if *n <= available.len() => Ok(available[..*n].to_vec()),
            CoreSelection::Count(n) => bail!(
                "--cores {n}: only {} CPUs are available ({available:?})",
                available.len()
            ),
            CoreSelection::List(list) => {
                if let Some(c) = list.iter().find(|c| !available.contains(c)) {
                    bail!("--cores: CPU {c} is not available (available: {available:?})");
                }
                Ok(list.clone())
            }
        }
    }
}

/// The settings the server runs with, after precedence and validation.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub cores: CoreSelection,
    pub journal_dir: PathBuf,
    pub ledger_dir: PathBuf,
    /// The log settings of core 0; [`Settings::log_config`] makes each core's.
    pub log: LogConfig,
    pub topics: Vec<Topic>,
    /// The jobs, checked and compiled.
    pub jobs: Vec<Job>,
    /// The Kafka listeners; core `i` of a per-core server listens on each one's
    /// port + `i`.
    pub listeners: Vec<crate::listeners::Listener>,
    pub kafka_limits: tidewater_kafka::Limits,
    /// Where /metrics and /health are served.
    pub admin_addr: std::net::SocketAddr,
    /// How often each core copies its counters into the registry.
    pub metrics_interval: std::time::Duration,
    /// Who may use the admin listener.
    pub admin_auth: crate::admin_auth::AdminAuth,
    /// The admin listener's TLS, when it has some.
    pub admin_tls: Option<crate::listeners::Tls>,
    /// Where the schema registry's REST API is served (core 0); None: not at all.
    pub schema_registry_addr: Option<std::net::SocketAddr>,
    /// The registry's TLS, when it has some.
    pub schema_registry_tls: Option<crate::listeners::Tls>,
    pub kafka_mode: tidewater_kafka::Mode,
    pub auto_create_topics: bool,
    pub default_partitions: Option<u32>,
    /// Who may do what on the Kafka listeners.
    pub authorizer: tidewater_kafka::acl::AuthorizerConfig,
}

/// `authorizer`, `super_users` and `allow_everyone_if_no_acl_found`, checked.
fn authorizer_of(file: &FileConfig) -> Result<tidewater_kafka::acl::AuthorizerConfig> {
    let on = match file.authorizer.as_deref().unwrap_or("none") {
        "none" => false,
        "acl" => true,
        other => bail!("authorizer {other:?}: use \"acl\" or \"none\""),
    };
    let super_users = file.super_users.clone().unwrap_or_default();
    for p in &super_users {
        if p.strip_prefix("User:").is_none_or(str::is_empty) {
            bail!("super_users: {p:?} is not a principal; write User:<name>, e.g. \"User:admin\" or \"User:CN=ops,O=Example\"");
        }
    }
    let allow_if_none = file.allow_everyone_if_no_acl_found.unwrap_or(false);
    if !on && (!super_users.is_empty() || allow_if_none) {
        bail!("super_users and allow_everyone_if_no_acl_found need authorizer = \"acl\"");
    }
    Ok(tidewater_kafka::acl::AuthorizerConfig {
        on,
        super_users,
        allow_everyone_if_no_acl_found: allow_if_none,
    })
}

/// Kafka front-end flags (the file has the same keys).
#[derive(Args, Clone, Debug, Default)]
pub struct KafkaFlags {
    /// Kafka listener: core i listens on PORT+i (default 127.0.0.1:9092).
    #[arg(long)]
    pub kafka_addr: Option<String>,
    /// Host name Metadata gives clients (default: the listener's address).
    #[arg(long)]
    pub advertised_host: Option<String>,
    /// Largest request a client may send (default 100 MiB).
    #[arg(long)]
    pub request_bytes_max: Option<usize>,
    /// Request bodies held at once per core before connections wait (default 256 MiB).
    #[arg(long)]
    pub request_memory_bytes_max: Option<usize>,
    /// Connections per core (default 10000).
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// Requests a connection may have read and not yet answered (default 16).
    #[arg(long)]
    pub in_flight_requests_max: Option<usize>,
    /// Longest a Fetch long poll waits (default 30000).
    #[arg(long)]
    pub fetch_wait_ms_max: Option<u64>,
    /// Largest Fetch answer, over all its partitions (default 57671680, 55 MiB, as
    /// Kafka's fetch.max.bytes); at most request_memory_bytes_max.
    #[arg(long)]
    pub fetch_bytes_max: Option<usize>,
    /// Longest a request may take to arrive once its size is read, and an answer to
    /// be taken by the client; the connection closes after it (default 30000).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// A connection with no request for this long is closed (default 600000, as
    /// Kafka's connections.max.idle.ms).
    #[arg(long)]
    pub connections_max_idle_ms: Option<u64>,
    /// New connections one client IP may open to a core per second; more are closed
    /// at accept (default 0: no limit).
    #[arg(long)]
    pub connection_creation_rate_per_ip: Option<u32>,
    /// A SASL session ends this long after it began unless the client
    /// authenticates again on its connection (default 0: it lasts as long as the
    /// connection; as Kafka's connections.max.reauth.ms).
    #[arg(long)]
    pub connections_max_reauth_ms: Option<u64>,
    /// The answer to a failed SASL authentication waits this long, then the
    /// connection closes (default 100, as Kafka's
    /// connection.failed.authentication.delay.ms).
    #[arg(long)]
    pub connection_failed_authentication_delay_ms: Option<u64>,
    /// Failed SASL authentications one client IP may make on a core per minute;
    /// beyond it its authentications fail unchecked until the minute ends (default
    /// 30; 0: no limit).
    #[arg(long)]
    pub failed_authentications_per_ip_per_minute: Option<u32>,
    /// A new consumer group's first rebalance waits this long for more members
    /// (default 3000, as Kafka's group.initial.rebalance.delay.ms).
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Shortest session timeout a group member may ask for (default 6000).
    #[arg(long)]
    pub group_min_session_timeout_ms: Option<u64>,
    /// Longest session timeout a group member may ask for (default 1800000).
    #[arg(long)]
    pub group_max_session_timeout_ms: Option<u64>,
    /// Members one consumer group may have (default 1000).
    #[arg(long)]
    pub group_max_size: Option<usize>,
    /// Committed offsets of a group with no members are forgotten this long after
    /// their commit (default 10080, 7 days, as Kafka's offsets.retention.minutes).
    #[arg(long)]
    pub offsets_retention_minutes: Option<u64>,
    /// A core's committed-offsets partition is compacted once this many bytes were
    /// appended since its last compaction (default 67108864, 64 MiB).
    #[arg(long)]
    pub offsets_compact_bytes: Option<u64>,
    /// Admin listener for GET /metrics and /health (default 127.0.0.1:9644).
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// How often each core copies its counters into what /metrics serves, in ms
    /// (default 500; 10 to 60000). Lower it to time short runs finely.
    #[arg(long)]
    pub metrics_interval_ms: Option<u64>,
    /// A file holding the admin listener's bearer token: every admin path but
    /// admin_open_paths (default /metrics and /health) then needs
    /// `Authorization: Bearer <token>`.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// HTTPS on the admin listener: its certificate chain (PEM).
    #[arg(long, requires = "admin_tls_key_file")]
    pub admin_tls_cert_file: Option<PathBuf>,
    /// The key of --admin-tls-cert-file (PEM).
    #[arg(long, requires = "admin_tls_cert_file")]
    pub admin_tls_key_file: Option<PathBuf>,
    /// With admin TLS: a client certificate this CA signed stands for the admin token.
    #[arg(long)]
    pub admin_tls_client_ca_file: Option<PathBuf>,
    /// Schema registry REST listener, Confluent's API (default 127.0.0.1:8081;
    /// "none" serves none).
    #[arg(long, env = "TIDEWATER_SCHEMA_REGISTRY_ADDR")]
    pub schema_registry_addr: Option<String>,
    /// per-core (core i is broker i on PORT+i) or single-port (every core on PORT,
    /// other cores' partitions forwarded); default per-core.
    #[arg(long)]
    pub kafka_mode: Option<String>,
    /// Create unknown topics clients ask for in Metadata (default false).
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics and of CreateTopics asking for the default
    /// (default: one per core).
    #[arg(long)]
    pub default_partitions: Option<u32>,
}

impl Settings {
    /// Merges flags over the file over defaults.
    pub fn resolve(
        file: FileConfig,
        data_dir: Option<PathBuf>,
        cores: Option<CoreSelection>,
        flags: &StorageFlags,
        kafka: &KafkaFlags,
    ) -> Result<Self> {
        let data_dir = data_dir
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./tidewater-data"));
        let cores = match (cores, file.cores.as_deref()) {
            (Some(c), _) => c,
            (None, Some(s)) => s.parse().map_err(anyhow::Error::msg)?,
            (None, None) => CoreSelection::All,
        };
        let journal_dir = flags
            .journal_dir
            .clone()
            .or(file.journal_dir.clone())
            .unwrap_or_else(|| data_dir.join("journal"));
        let ledger_dir = flags
            .ledger_dir
            .clone()
            .or(file.ledger_dir.clone())
            .unwrap_or_else(|| data_dir.join("ledger"));
        let log = log_config(&file, flags, journal_dir.clone(), ledger_dir.clone())?;
        let topics = topics_of(&file.topics)?;
        let jobs = jobs_of(&file, &topics)?;
        let listeners = crate::listeners::settle(
            &file.listeners,
            kafka.kafka_addr.clone().or(file.kafka_addr.clone()),
            kafka
                .advertised_host
                .clone()
                .or(file.advertised_host.clone()),
            &file.base_dir,
        )?;
        let kafka_limits = kafka_limits(kafka, &file)?;
        let admin_text = kafka
            .admin_addr
            .clone()
            .or(file.admin_addr.clone())
            .unwrap_or_else(|| "127.0.0.1:9644".to_string());
        let admin_addr: std::net::SocketAddr = admin_text.parse().with_context(|| {
            format!("admin_addr {admin_text:?}: use HOST:PORT with an IP address")
        })?;
        let (admin_auth, admin_tls) = admin_access(kafka, &file)?;
        let metrics_interval_ms = kafka
            .metrics_interval_ms
            .or(file.metrics_interval_ms)
            .unwrap_or(crate::metrics::SYNC_INTERVAL.as_millis() as u64);
        if !(10..=60_000).contains(&metrics_interval_ms) {
            bail!("metrics_interval_ms must be between 10 and 60000, not {metrics_interval_ms}");
        }
        let registry_text = kafka
            .schema_registry_addr
            .clone()
            .or(file.schema_registry_addr.clone())
            .unwrap_or_else(|| "127.0.0.1:8081".to_string());
        let schema_registry_addr = match registry_text.as_str() {
            "none" => None,
            text => Some(text.parse().with_context(|| {
                format!(
                    "schema_registry_addr {text:?}: use HOST:PORT with an IP address, or \"none\""
                )
            })?),
        };
        if schema_registry_addr.is_none() {
            if let Some(j) = jobs.iter().find(|j| j.needs_registry()) {
                bail!(
                    "job {:?} reads schemas from the schema registry (format \"avro-confluent\" without a `schemas` table, or schema_subject), but schema_registry_addr is \"none\"",
                    j.name
                );
            }
        }
        let kafka_mode = kafka
            .kafka_mode
            .clone()
            .or(file.kafka_mode.clone())
            .map_or(Ok(tidewater_kafka::Mode::PerCore), |m| m.parse())
            .map_err(anyhow::Error::msg)?;
        let default_partitions = kafka.default_partitions.or(file.default_partitions);
        if default_partitions.is_some_and(|p| p == 0 || p > 10_000) {
            bail!("default_partitions must be between 1 and 10000");
        }
        Ok(Settings {
            authorizer: authorizer_of(&file)?,
            auto_create_topics: kafka
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(false),
            default_partitions,
            kafka_mode,
            admin_addr,
            metrics_interval: std::time::Duration::from_millis(metrics_interval_ms),
            admin_auth,
            admin_tls,
            schema_registry_addr,
            schema_registry_tls: registry_tls(&file)?,
            data_dir,
            cores,
            journal_dir,
            ledger_dir,
            log,
            topics,
            jobs,
            listeners,
            kafka_limits,
        })
    }

    /// Core `shard`'s log settings: its own sub-directories.
    pub fn log_config(&self, shard: u32) -> LogConfig {
        let mut cfg = self.log.clone();
        cfg.shard = shard;
        cfg.journal_dir = self.journal_dir.join(format!("shard-{shard}"));
        cfg.ledger_dir = self.ledger_dir.join(format!("shard-{shard}"));
        // Committed offsets are never cut by retention (the server and a rescale
        // alike): their snapshots say what is superseded.
        cfg.partition_limits
            .extend(tidewater_kafka::groups::offsets_partition_limits(&cfg));
        // So are the schema registry's records (core 0 keeps them).
        if shard == 0 {
            let (name, limits) = crate::schema_registry::schemas_limits(&cfg);
            cfg.partition_limits.insert(name, limits);
        }
        cfg
    }
}

/// The schema registry's TLS, from the file's `schema_registry_tls_*` keys.
fn registry_tls(file: &FileConfig) -> Result<Option<crate::listeners::Tls>> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| file.base_dir.join(p));
    let files = (
        path(&file.schema_registry_tls_cert_file),
        path(&file.schema_registry_tls_key_file),
        path(&file.schema_registry_tls_client_ca_file),
    );
    crate::listeners::Tls::of_http("schema registry", "schema_registry", files, false)
}

/// Who may use the admin listener, and its TLS. A flag's path is from where the
/// command runs; the file's, from the file.
fn admin_access(
    kafka: &KafkaFlags,
    file: &FileConfig,
) -> Result<(crate::admin_auth::AdminAuth, Option<crate::listeners::Tls>)> {
    let path = |flag: &Option<PathBuf>, key: &Option<PathBuf>| {
        flag.clone()
            .or_else(|| key.as_ref().map(|p| file.base_dir.join(p)))
    };
    let open = file
        .admin_open_paths
        .clone()
        .unwrap_or_else(|| vec!["/metrics".into(), "/health".into()]);
    let mut auth = match path(&kafka.admin_token_file, &file.admin_token_file) {
        Some(p) => crate::admin_auth::AdminAuth::from_file(&p, open.clone())?,
        None => crate::admin_auth::AdminAuth::open(),
    };
    let files = (
        path(&kafka.admin_tls_cert_file, &file.admin_tls_cert_file),
        path(&kafka.admin_tls_key_file, &file.admin_tls_key_file),
        path(
            &kafka.admin_tls_client_ca_file,
            &file.admin_tls_client_ca_file,
        ),
    );
    let tls = crate::listeners::Tls::of_http("admin listener", "admin", files, true)?;
    if tls
        .as_ref()
        .is_some_and(crate::listeners::Tls::authenticates)
    {
        auth = auth.with_client_certificates(open);
    }
    Ok((auth, tls))
}

/// The log's settings: flags over the file over the defaults, checked.
fn log_config(
    file: &FileConfig,
    flags: &StorageFlags,
    journal_dir: PathBuf,
    ledger_dir: PathBuf,
) -> Result<LogConfig> {
    let mut log = LogConfig::new(journal_dir, ledger_dir, 0);
    let durability = match (flags.durability, &file.durability) {
        (Some(d), _) => Some(d),
        (None, Some(s)) => Some(s.parse().map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    macro_rules! set {
        ($field:ident, $key:ident) => {
            if let Some(v) = flags.$key.or(file.$key) {
                log.$field = v;
            }
        };
    }
    if let Some(d) = durability {
        log.durability = d;
    }
    log.journal_adopt = match (flags.journal_adopt, &file.journal_adopt) {
        (Some(a), _) => a,
        (None, Some(toml::Value::Boolean(true))) => JournalAdopt::On,
        (None, Some(toml::Value::Boolean(false))) => JournalAdopt::Off,
        (None, Some(toml::Value::String(s))) => s.parse().map_err(anyhow::Error::msg)?,
        (None, Some(other)) => {
            bail!("journal_adopt is true, false or \"auto\", not {other}")
        }
        (None, None) => JournalAdopt::Auto,
    };
    set!(sync_interval_ms, journal_sync_interval_ms);
    set!(journal_segment_bytes, journal_segment_bytes);
    set!(journal_segments, journal_segments);
    set!(journal_flush_bytes_max, journal_flush_bytes_max);
    set!(ledger_segment_bytes, ledger_segment_bytes);
    set!(ledger_flush_bytes, ledger_flush_bytes);
    set!(ledger_flush_interval_ms, ledger_flush_interval_ms);
    set!(ledger_pending_bytes_max, ledger_pending_bytes_max);
    set!(batch_bytes_max, batch_bytes_max);
    if flags
        .ledger_segment_bytes
        .or(file.ledger_segment_bytes)
        .is_none()
    {
        // The default grows to hold the largest batch: only a size given
        // explicitly can be too small for batch_bytes_max.
        let block = tidewater_io::frame::BLOCK as u64;
        log.ledger_segment_bytes = log
            .ledger_segment_bytes
            .max(log.ledger_segment_bytes_min().next_multiple_of(block));
    }
    log.retention_bytes = flags.retention_bytes.or(file.retention_bytes);
    log.retention_ms = flags.retention_ms.or(file.retention_ms);
    log.validate()?;
    Ok(log)
}

/// The declared topics, checked.
fn topics_of(declared: &[TopicConfig]) -> Result<Vec<Topic>> {
    let mut topics: Vec<Topic> = Vec::new();
    for t in declared {
        if t.partitions == 0 || t.partitions > 10_000 {
            bail!("topic {:?}: partitions must be between 1 and 10000", t.name);
        }
        let probe = tidewater_shards::partition_name(&t.name, t.partitions - 1);
        if !tidewater_io::ledger::valid_partition_name(&probe) {
            bail!(
                "topic {:?}: names are 1-200 characters of [A-Za-z0-9._-], not starting with a dot",
                t.name
            );
        }
        if t.name == tidewater_kafka::OFFSETS_TOPIC {
            bail!(
                "topic {:?} is reserved: it keeps the consumer groups' committed offsets",
                t.name
            );
        }
        if t.name == tidewater_registry::SCHEMAS_TOPIC {
            bail!(
                "topic {:?} is reserved: it keeps the schema registry's records",
                t.name
            );
        }
        if topics.iter().any(|o| o.name == t.name) {
            bail!("topic {:?} is declared twice", t.name);
        }
        topics.push(Topic {
            name: t.name.clone(),
            partitions: t.partitions,
        });
    }
    Ok(topics)
}

/// The jobs, checked and compiled; each reads a declared topic.
fn jobs_of(file: &FileConfig, topics: &[Topic]) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    for j in &file.jobs {
        let job = j.compile(&file.base_dir).map_err(anyhow::Error::msg)?;
        if jobs.iter().any(|o| o.name == job.name) {
            bail!("job {:?} is declared twice", job.name);
        }
        for s in &job.sinks {
            if let tidewater_shards::pipeline::spec::SinkConfig::Topic { topic } = s {
                if [
                    tidewater_kafka::OFFSETS_TOPIC,
                    tidewater_registry::SCHEMAS_TOPIC,
                ]
                .contains(&topic.as_str())
                {
                    bail!("job {:?}: sink topic {topic:?} is reserved", job.name);
                }
            }
        }
        if !topics.iter().any(|t| t.name == job.source) {
            bail!(
                "job {:?}: its source topic {:?} is not declared in [[topics]]",
                job.name,
                job.source
            );
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// The group coordinator's settings: flags over the file over the defaults, checked.
fn group_config(kafka: &KafkaFlags, file: &FileConfig) -> Result<tidewater_kafka::GroupConfig> {
    let d = tidewater_kafka::GroupConfig::default();
    let mut g = d;
    if let Some(ms) = kafka
        .group_initial_rebalance_delay_ms
        .or(file.group_initial_rebalance_delay_ms)
    {
        g.limits.initial_rebalance_delay = std::time::Duration::from_millis(ms);
    }
    g.limits.members_max = kafka
        .group_max_size
        .or(file.group_max_size)
        .unwrap_or(d.limits.members_max);
    g.session_timeout_ms = (
        kafka
            .group_min_session_timeout_ms
            .or(file.group_min_session_timeout_ms)
            .unwrap_or(d.session_timeout_ms.0),
        kafka
            .group_max_session_timeout_ms
            .or(file.group_max_session_timeout_ms)
            .unwrap_or(d.session_timeout_ms.1),
    );
    if let Some(min) = kafka
        .offsets_retention_minutes
        .or(file.offsets_retention_minutes)
    {
        g.offsets_retention_ms = min.saturating_mul(60_000);
    }
    g.compact_bytes = kafka
        .offsets_compact_bytes
        .or(file.offsets_compact_bytes)
        .unwrap_or(d.compact_bytes);
    if g.limits.members_max == 0
        || g.session_timeout_ms.0 == 0
        || g.session_timeout_ms.0 > g.session_timeout_ms.1
        || g.offsets_retention_ms == 0
        || g.compact_bytes == 0
    {
        bail!(
            "group_max_size, offsets_retention_minutes and offsets_compact_bytes must be positive, and 0 < group_min_session_timeout_ms ({}) <= group_max_session_timeout_ms ({})",
            g.session_timeout_ms.0,
            g.session_timeout_ms.1
        );
    }
    Ok(g)
}

/// The Kafka front end's limits: flags over the file over the defaults, checked.
fn kafka_limits(kafka: &KafkaFlags, file: &FileConfig) -> Result<tidewater_kafka::Limits> {
    let d = tidewater_kafka::Limits::default();
    let memory_bytes_max = kafka
        .request_memory_bytes_max
        .or(file.request_memory_bytes_max)
        .unwrap_or(d.request_memory_bytes_max);
    let kafka_limits = tidewater_kafka::Limits {
        request_bytes_max: kafka
            .request_bytes_max
            .or(file.request_bytes_max)
            .unwrap_or(d.request_bytes_max),
        request_memory_bytes_max: memory_bytes_max,
        connections_max: kafka
            .connections_max
            .or(file.connections_max)
            .unwrap_or(d.connections_max),
        in_flight_requests_max: kafka
            .in_flight_requests_max
            .or(file.in_flight_requests_max)
            .unwrap_or(d.in_flight_requests_max),
        fetch_wait_ms_max: kafka
            .fetch_wait_ms_max
            .or(file.fetch_wait_ms_max)
            .unwrap_or(d.fetch_wait_ms_max),
        // Unset, it shrinks with a smaller memory budget rather than refuse it.
        fetch_bytes_max: kafka
            .fetch_bytes_max
            .or(file.fetch_bytes_max)
            .unwrap_or(d.fetch_bytes_max.min(memory_bytes_max)),
        request_timeout_ms: kafka
            .request_timeout_ms
            .or(file.request_timeout_ms)
            .unwrap_or(d.request_timeout_ms),
        connections_max_idle_ms: kafka
            .connections_max_idle_ms
            .or(file.connections_max_idle_ms)
            .unwrap_or(d.connections_max_idle_ms),
        connection_creation_rate_per_ip: kafka
            .connection_creation_rate_per_ip
            .or(file.connection_creation_rate_per_ip)
            .unwrap_or(d.connection_creation_rate_per_ip),
        connections_max_reauth_ms: kafka
            .connections_max_reauth_ms
            .or(file.connections_max_reauth_ms)
            .unwrap_or(d.connections_max_reauth_ms),
        connection_failed_authentication_delay_ms: kafka
            .connection_failed_authentication_delay_ms
            .or(file.connection_failed_authentication_delay_ms)
            .unwrap_or(d.connection_failed_authentication_delay_ms),
        failed_authentications_per_ip_per_minute: kafka
            .failed_authentications_per_ip_per_minute
            .or(file.failed_authentications_per_ip_per_minute)
            .unwrap_or(d.failed_authentications_per_ip_per_minute),
        groups: group_config(kafka, file)?,
    };
    if kafka_limits.request_bytes_max < 1024
        || kafka_limits.request_bytes_max > kafka_limits.request_memory_bytes_max
        || kafka_limits.connections_max == 0
        || kafka_limits.in_flight_requests_max == 0
    {
        bail!(
            "request_bytes_max ({}) must be at least 1024 and at most request_memory_bytes_max ({}); connections_max and in_flight_requests_max must be positive",
            kafka_limits.request_bytes_max,
            kafka_limits.request_memory_bytes_max
        );
    }
    if kafka_limits.fetch_bytes_max < 1024
        || kafka_limits.fetch_bytes_max > kafka_limits.request_memory_bytes_max
    {
        bail!(
            "fetch_bytes_max ({}) must be at least 1024 and at most request_memory_bytes_max ({})",
            kafka_limits.fetch_bytes_max,
            kafka_limits.request_memory_bytes_max
        );
    }
    if kafka_limits.request_timeout_ms == 0 || kafka_limits.connections_max_idle_ms == 0 {
        bail!("request_timeout_ms and connections_max_idle_ms must be positive");
    }
    Ok(kafka_limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/example.toml");
        let file = FileConfig::load(&path).unwrap();
        let s = Settings::resolve(
            file,
            None,
            None,
            &StorageFlags::default(),
            &KafkaFlags::default(),
        )
        .unwrap();
        let d = LogConfig::new(PathBuf::new(), PathBuf::new(), 0);
        assert_eq!(s.log.journal_segment_bytes, d.journal_segment_bytes);
        assert_eq!(s.log.journal_flush_bytes_max, d.journal_flush_bytes_max);
        assert_eq!(s.log.ledger_segment_bytes, d.ledger_segment_bytes);
        assert_eq!(s.topics[0].partitions, 8);
    }

    #[test]
    fn the_default_ledger_segment_grows_to_hold_a_flush_and_the_largest_batch() {
        let resolve = |text: &str| {
            let file: FileConfig = toml::from_str(text).unwrap();
            let flags = StorageFlags::default();
            Settings::resolve(file, None, None, &flags, &KafkaFlags::default())
                .map(|s| s.log.ledger_segment_bytes)
                .map_err(|e| e.to_string())
        };
        assert_eq!(resolve(""), Ok(32 << 20));
        // A ledger held back in 64 MiB flushes (as tests/hostile.rs does).
        let big = "ledger_flush_bytes = 67108864\n";
        let grown = resolve(big).unwrap();
        assert!(grown >= (64 << 20) + 48 + (1 << 20) + 4096, "{grown}");
        assert_eq!(grown % 4096, 0);
        let err = resolve(&format!("{big}ledger_segment_bytes = 33554432\n")).unwrap_err();
        assert!(
            err.contains("ledger_segment_bytes (33554432) must be at least"),
            "{err}"
        );
    }

    #[test]
    fn metrics_interval_comes_from_the_flag_then_the_file_and_is_bounded() {
        let resolve = |file: &str, flag: Option<u64>| {
            let kafka = KafkaFlags {
                metrics_interval_ms: flag,
                ..Default::default()
            };
            let file: FileConfig = toml::from_str(file).unwrap();
            Settings::resolve(file, None, None, &StorageFlags::default(), &kafka)
                .map(|s| s.metrics_interval.as_millis())
                .map_err(|e| e.to_string())
        };
        assert_eq!(resolve("", None), Ok(500));
        assert_eq!(resolve("metrics_interval_ms = 50", None), Ok(50));
        assert_eq!(resolve("metrics_interval_ms = 50", Some(20)), Ok(20));
        for bad in [Some(9), Some(60_001)] {
            let err = resolve("", bad).unwrap_err();
            assert!(
                err.contains("metrics_interval_ms must be between 10 and 60000"),
                "{err}"
            );
        }
    }

    #[test]
    fn core_selection_parses() {
        assert_eq!("all".parse(), Ok(CoreSelection::All));
        assert_eq!("2".parse(), Ok(CoreSelection::Count(2)));
        assert_eq!("0,2-3".parse(), Ok(CoreSelection::List(vec![0, 2, 3])));
        assert!("0".parse::<CoreSelection>().is_err());
        assert!("3-1".parse::<CoreSelection>().is_err());
        assert!(CoreSelection::Count(3).resolve(&[0, 1]).is_err());
    }

    #[test]
    fn unknown_keys_are_refused_and_flags_win() {
        let err = toml::from_str::<FileConfig>("data_dirr = 'x'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_dirr"), "{err}");
        let file: FileConfig = toml::from_str(
            "durability = 'never'\njournal_segments = 8\n[[topics]]\nname = 'a'\npartitions = 3\n",
        )
        .unwrap();
        let flags = StorageFlags {
            journal_segments: Some(6),
            ..Default::default()
        };
        let s = Settings::resolve(file, None, None, &flags, &KafkaFlags::default()).unwrap();
        assert_eq!(s.log.durability, Durability::Never);
        assert_eq!(s.log.journal_segments, 6);
        assert_eq!(s.topics.len(), 1);
        assert!(s.log_config(1).journal_dir.ends_with("journal/shard-1"));
    }

    #[test]
    fn journal_adopt_is_auto_unless_set_in_the_file_or_a_flag() {
        let adopt = |text: &str, flag: Option<JournalAdopt>| {
            let file: FileConfig = toml::from_str(text).unwrap();
            let flags = StorageFlags {
                journal_adopt: flag,
                ..Default::default()
            };
            Settings::resolve(file, None, None, &flags, &KafkaFlags::default())
                .map(|s| s.log.journal_adopt)
                .map_err(|e| e.to_string())
        };
        assert_eq!(adopt("", None), Ok(JournalAdopt::Auto));
        assert_eq!(adopt("journal_adopt = true", None), Ok(JournalAdopt::On));
        assert_eq!(adopt("journal_adopt = false", None), Ok(JournalAdopt::Off));
        assert_eq!(
            adopt("journal_adopt = 'auto'", None),
            Ok(JournalAdopt::Auto)
        );
        let off = Some(JournalAdopt::Off);
        assert_eq!(adopt("journal_adopt = true", off), Ok(JournalAdopt::Off));
        let err = adopt("journal_adopt = 'sometimes'", None).unwrap_err();
        assert!(err.contains("auto, true or false"), "{err}");
        let err = adopt("journal_adopt = 1", None).unwrap_err();
        assert!(err.contains("not 1"), "{err}");
    }
}
