//! `tidewater serve`: one pinned glommio executor per selected core, each owning its
//! log and its partitions, until SIGINT or SIGTERM.
//!
//! Owns start-up (checking the data directory was made for this many cores, opening
//! every core's log and creating its partitions) and shutdown (stop, finish in-flight
//! appends, sync, exit 0). Cores share nothing but the stop flag and their join
//! handles; a storage fault on any core stops the whole process with
//! [`EXIT_STORAGE_FAULT`], never leaving a dead core beside live ones.

use crate::config::Settings;
use crate::metrics::{CoreSources, KafkaSeries, Metrics};
use anyhow::{bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tidewater_io::wait::{Signal, Stop};
use tidewater_io::ShardLog;
use tidewater_kafka as kafka;
use tidewater_shards::pipeline::checkpoint;
use tidewater_shards::pipeline::spec::{Job, SinkConfig};
use tidewater_shards::pipeline::window::Layout;
use tidewater_shards::{partition_name, pipeline, sink, PartitionTable, Topic};

/// Exit code when a core's storage failed (EIO, a failed sync): systemd restarts us.
pub const EXIT_STORAGE_FAULT: i32 = 3;
/// Exit code when a core cannot use what it found on disk (a file of another format,
/// or made with other settings): a restart would fail the same way, so the unit's
/// `RestartPreventExitStatus=` lists it beside 2 (bad settings).
pub const EXIT_DATA_MISMATCH: i32 = 4;

/// Files that say a directory is a Kafka (or Redpanda) log directory.
const KAFKA_MARKERS: &[&str] = &[
    "meta.properties",
    "recovery-point-offset-checkpoint",
    ".kafka_cleanshutdown",
];

/// What Tidewater itself puts in a data directory.
const OWN_ENTRIES: &[&str] = &[
    crate::rescale::CLUSTER_META,
    TOPICS_FILE,
    TOPIC_CONFIGS_FILE,
    LOCK_FILE,
    kafka::sasl::users::FILE,
    kafka::acl::FILE,
    kafka::quota::FILE,
    "journal",
    "ledger",
    "checkpoints",
];

/// Refuses, before anything is written, directories another program made: a Kafka
/// log directory, or a data directory that is not empty and holds nothing of ours.
fn check_foreign(data_dir: &Path, dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        if let Some(m) = KAFKA_MARKERS.iter().find(|m| dir.join(m).exists()) {
            bail!(
                "{} holds {m}: it is a Kafka log directory, not Tidewater's; give Tidewater a directory of its own",
                dir.display()
            );
        }
    }
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Ok(()); // made fresh below
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // A data directory is often a file system's root of its own.
        .filter(|n| n != "lost+found")
        .collect();
    let ours = |n: &String| OWN_ENTRIES.contains(&n.as_str()) || n.starts_with('.');
    if !names.is_empty() && !names.iter().any(ours) {
        let mut shown = names.clone();
        shown.sort();
        shown.truncate(5);
        bail!(
            "data_dir {} is not empty and holds nothing of Tidewater's (found {}); use an empty directory or one Tidewater made",
            data_dir.display(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// Topics' own configs (CreateTopics, AlterConfigs) of the topics there are.
fn topic_configs_at_start(
    file: &Path,
    table: &PartitionTable,
) -> Result<std::collections::HashMap<String, kafka::topic_config::TopicConfig>> {
    let mut configs =
        kafka::topics_file::configs_at_start(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    configs.retain(|name, _| table.topic(name).is_some());
    Ok(configs)
}

/// Puts topics' own segment size and retention in a core's log config, so they
/// are in force from the moment the log opens.
fn with_topic_limits(
    cfg: &mut tidewater_io::LogConfig,
    configs: &std::collections::HashMap<String, kafka::topic_config::TopicConfig>,
    table: &PartitionTable,
) {
    let defaults = kafka::topic_config::ServerDefaults::of(cfg);
    for (name, config) in configs {
        if let (Some(limits), Some(t)) = (config.limits(&defaults), table.topic(name)) {
            for p in 0..t.partitions {
                cfg.partition_limits.insert(partition_name(name, p), limits);
            }
        }
    }
}

/// Says which partitions in a core's log belong to no topic: a topic taken out of
/// the config, or one an earlier version left half-made. They are kept (deleting
/// data because a config line went missing would be worse) but count toward the
/// core's partitions_max, so an operator must decide.
fn warn_of_strays(shard: u32, log: &ShardLog, owned: &[String]) {
    let mut strays: Vec<String> = log
        .partitions()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !owned.contains(name))
        // Committed offsets and the schema registry's records: made on first use.
        .filter(|name| {
            name.rsplit_once('-').is_none_or(|(topic, _)| {
                topic != kafka::OFFSETS_TOPIC && topic != tidewater_registry::SCHEMAS_TOPIC
            })
        })
        .collect();
    if strays.is_empty() {
        return;
    }
    strays.sort();
    let count = strays.len();
    strays.truncate(5);
    tracing::warn!(
        shard,
        count,
        "partitions that belong to no topic, e.g. {}: a topic taken out of the config, or a creation an earlier version left half-made; they count toward partitions_max. Declare the topic again to keep them, or delete their directories under the ledger directory with the server stopped",
        strays.join(", ")
    );
}

/// The exit code for a core that failed: [`EXIT_DATA_MISMATCH`] when what it found
/// on disk cannot be used as it is, else 1 (systemd restarts it).
fn failed_core_code(e: &anyhow::Error) -> i32 {
    let mismatch = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<tidewater_io::LogError>(),
            Some(tidewater_io::LogError::Corrupt { .. } | tidewater_io::LogError::Config(_))
        )
    });
    if mismatch {
        EXIT_DATA_MISMATCH
    } else {
        1
    }
}
const TOPICS_FILE: &str = "topics.json";
const TOPIC_CONFIGS_FILE: &str = "topic_configs.json";
const LOCK_FILE: &str = "tidewater.lock";

/// What a core's Kafka front end needs to start.
struct FrontEnd {
    table: PartitionTable,
    /// Each listener: the address this core binds, and what its connections see.
    listeners: Vec<(std::net::SocketAddr, kafka::Endpoint)>,
    limits: kafka::Limits,
    mode: kafka::Mode,
    /// This core's ends of the mesh between the cores' front ends.
    forwarding: Option<kafka::ForwardMail>,
    /// Single-port mode: the cores' listeners, placed by receiving CPU.
    placement: Option<Arc<crate::placement::Groups>>,
    topics: kafka::TopicPolicy,
    /// The SASL users, the ACLs and the quotas, shared by every core.
    security: Security,
    registry: RegistryFront,
}

/// The schema registry as a core sees it.
#[derive(Clone)]
struct RegistryFront {
    shared: tidewater_registry::Shared,
    /// Raised by core 0 once it replayed the records: no job reads before.
    loaded: Arc<Signal>,
    /// Where core 0 serves the REST API, if anywhere.
    addr: Option<std::net::SocketAddr>,
    /// HTTPS, when configured.
    tls: Option<crate::listeners::Tls>,
}

/// How one core ended.
enum ShardEnd {
    Clean,
    /// The core's log stopped for good (EIO, a failed sync): its error.
    StorageFault(Arc<tidewater_io::LogError>),
}

pub fn serve(settings: Settings) -> Result<i32> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .context("cannot list the CPUs this process may use")?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cpus = settings.cores.resolve(&available)?;
    let shard_count = cpus.len() as u32;
    let single_port = settings.kafka_mode == kafka::Mode::SinglePort;
    crate::listeners::check_ports(&settings.listeners, shard_count, single_port)?;
    check_foreign(
        &settings.data_dir,
        &[
            &settings.data_dir,
            &settings.journal_dir,
            &settings.ledger_dir,
        ],
    )?;
    // One server per directory: held until the process exits.
    let _locks = lock_dirs(&[
        &settings.data_dir,
        &settings.journal_dir,
        &settings.ledger_dir,
    ])?;
    // Topics created at run time (CreateTopics) are recorded beside tidewater.meta.
    let topics_file = settings.data_dir.join(TOPICS_FILE);
    let (declared, deleting) = topics_at_start(&settings, &topics_file)?;
    let topics = with_job_topics(&declared, &settings.jobs, shard_count)?;
    // Written by another number of cores: partitions and state move first.
    let found = crate::rescale::recorded_shard_count(&settings.data_dir)?;
    crate::rescale::ensure(&settings, &topics, found, shard_count)?;
    if found.is_none() {
        crate::rescale::write_shard_count(&settings.data_dir, shard_count)?;
    }
    // Each job resumes from its newest complete checkpoint, the same one on every core.
    let checkpoints_root = settings.data_dir.join("checkpoints");
    let resume = resume_points(&settings, &checkpoints_root, shard_count);
    let table = PartitionTable::new(shard_count, topics);
    // Per job, shared by its cores: the checkpoint taken at shutdown is done.
    let finished: Vec<Arc<Signal>> = settings.jobs.iter().map(|_| Default::default()).collect();
    // Each job's mailboxes, core by core.
    let mut meshes: Vec<std::collections::VecDeque<pipeline::CoreMail>> = settings
        .jobs
        .iter()
        .map(|_| pipeline::mesh(shard_count).into())
        .collect();
    let mut forwarding: std::collections::VecDeque<kafka::ForwardMail> =
        kafka::mesh(shard_count).into();
    let configs_file = settings.data_dir.join(TOPIC_CONFIGS_FILE);
    let topic_configs = topic_configs_at_start(&configs_file, &table)?;
    let topic_policy = kafka::TopicPolicy {
        configs_file: Some(configs_file),
        configs: topic_configs.clone(),
        file: Some(topics_file.clone()),
        auto_create_partitions: settings
            .auto_create_topics
            .then(|| settings.default_partitions.unwrap_or(shard_count)),
        default_partitions: settings.default_partitions.unwrap_or(shard_count),
        protected: protected_topics(&settings),
    };
    let stop = Stop::new();
    on_signals(&stop, &settings)?;
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Cores that have finished the deletions an interrupted DeleteTopics left.
    let cleaned: Arc<Signal> = Default::default();
    let any_deleting = !deleting.is_empty();
    let metrics = Arc::new(Metrics::new(cpus.len()).with_sync_interval(settings.metrics_interval));
    let security = security_at_start(&settings)?;
    serve_admin(&settings, &metrics)?;
    let (registry, link) = registry_front(&settings, &metrics);
    let placement = single_port.then(|| Arc::new(crate::placement::Groups::new(cpus.len())));
    let mut handles = Vec::new();
    for (shard, &cpu) in cpus.iter().enumerate() {
        let shard = shard as u32;
        let mut cfg = settings.log_config(shard);
        with_topic_limits(&mut cfg, &topic_configs, &table);
        let owned: Vec<String> = table
            .owned_by(shard)
            .into_iter()
            .map(|(t, p)| partition_name(t, p))
            .collect();
        let deleted: Vec<String> = PartitionTable::new(shard_count, deleting.clone())
            .owned_by(shard)
            .into_iter()
            .map(|(t, p)| partition_name(t, p))
            .collect();
        let stop = stop.clone();
        let ready = ready.clone();
        let cleaned = cleaned.clone();
        let metrics = metrics.clone();
        let jobs = job_starts(
            &settings.jobs,
            &mut meshes,
            &resume,
            &finished,
            &checkpoints_root,
            &link,
        );
        let front = FrontEnd {
            table: table.clone(),
            listeners: settings
                .listeners
                .iter()
                .map(|l| {
                    let port = l.addr.port() + if single_port { 0 } else { shard as u16 };
                    (std::net::SocketAddr::new(l.addr.ip(), port), l.endpoint())
                })
                .collect(),
            mode: settings.kafka_mode,
            forwarding: forwarding.pop_front(),
            placement: placement.clone(),
            topics: topic_policy.clone(),
            security: security.clone(),
            limits: settings.kafka_limits,
            registry: registry.clone(),
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("tw-shard-{shard}"))
            .io_memory(cfg.io_memory_bytes())
            .spawn(move || async move {
                let end = run_shard(
                    shard,
                    cpu,
                    (cfg, owned, deleted),
                    front,
                    jobs,
                    (stop.clone(), metrics),
                    (ready, shard_count as usize, (cleaned, any_deleting)),
                )
                .await;
                // A core that ends for any reason but a clean stop takes the others
                // with it: never a dead core beside live ones.
                if !matches!(end, Ok(ShardEnd::Clean)) {
                    stop.set();
                }
                end
            })
            .map_err(|e| {
                anyhow::anyhow!("cannot start the executor of core {shard} on CPU {cpu}: {e}")
            })?;
        handles.push(handle);
    }
    let code = join_cores(handles, &stop);
    Ok(code)
}

/// A WARN for each listener reachable from other hosts without authentication.
/// What every core shares to decide who a client is and what it may do.
#[derive(Clone)]
struct Security {
    users: Arc<kafka::sasl::users::Users>,
    authorizer: Arc<kafka::acl::Authorizer>,
    quotas: Arc<kafka::quota::Quotas>,
}

/// The SASL users, the ACLs and the client quotas, read once before any core
/// serves, and what the listeners are open to.
fn security_at_start(settings: &Settings) -> Result<Security> {
    let users = kafka::sasl::users::Users::open(&settings.data_dir)
        .map_err(|e| anyhow::anyhow!("the SASL users: {e}"))?;
    warn_of_open_listeners(settings, &users);
    let authorizer = kafka::acl::Authorizer::open(&settings.data_dir, &settings.authorizer)
        .map_err(|e| anyhow::anyhow!("the ACLs: {e}"))?;
    let acls = authorizer.acls().acls.len();
    if settings.authorizer.on {
        tracing::info!(acls, super_users = ?settings.authorizer.super_users, allow_everyone_if_no_acl_found = settings.authorizer.allow_everyone_if_no_acl_found, "authorizer on: every Kafka request is checked against the ACLs");
    } else if acls > 0 {
        tracing::warn!(
            acls,
            "acls.json holds ACLs but authorizer is \"none\": nothing is enforced"
        );
    }
    let quotas = kafka::quota::Quotas::open(&settings.data_dir)
        .map_err(|e| anyhow::anyhow!("the client quotas: {e}"))?;
    Ok(Security {
        users: Arc::new(users),
        authorizer: Arc::new(authorizer),
        quotas: Arc::new(quotas),
    })
}

fn warn_of_open_listeners(settings: &Settings, users: &kafka::sasl::users::Users) {
    let exposed = |a: &std::net::SocketAddr| !a.ip().is_loopback();
    for l in &settings.listeners {
        let mechanisms: Vec<&str> = l.sasl.iter().flatten().map(|m| m.name()).collect();
        tracing::info!(
            listener = %l.name,
            protocol = %l.protocol,
            addr = %l.addr,
            advertised = %format!("{}:{}", l.advertised_host, l.advertised_port),
            authenticates = l.authenticates(),
            sasl_mechanisms = ?mechanisms,
            "kafka listener configured"
        );
        if exposed(&l.addr) && !l.authenticates() {
            tracing::warn!(listener = %l.name, addr = %l.addr, "the Kafka listener is not on loopback and asks for no authentication (neither SASL nor tls_client_ca_file): anyone who reaches it can produce, read, and create or delete topics made at run time (docs/security.md)");
        }
        if l.sasl.is_some() && users.table().is_empty() {
            tracing::warn!(listener = %l.name, "the SASL listener has no users to authenticate yet: stop the server and add one as its user, `runuser -u tidewater -- tidewater users add NAME --mechanism SCRAM-SHA-512 --password-stdin --config FILE` (docs/security.md)");
        }
    }
    if exposed(&settings.admin_addr) && !settings.admin_auth.protects() {
        tracing::warn!(addr = %settings.admin_addr, "the admin listener is not on loopback and has neither admin_token_file nor admin_tls_client_ca_file: anyone who reaches it can take savepoints (docs/security.md)");
    }
    let registry_authenticates = settings
        .schema_registry_tls
        .as_ref()
        .is_some_and(crate::listeners::Tls::authenticates);
    if let Some(addr) = settings
        .schema_registry_addr
        .filter(|a| exposed(a) && !registry_authenticates)
    {
        tracing::warn!(%addr, "the schema registry is not on loopback and asks for no authentication: anyone who reaches it can register and delete schemas (docs/security.md)");
    }
}

/// The schema registry every core shares, and the jobs' link to it.
fn registry_front(
    settings: &Settings,
    metrics: &Metrics,
) -> (RegistryFront, pipeline::by_id::RegistryLink) {
    let front = RegistryFront {
        shared: Default::default(),
        loaded: Default::default(),
        addr: settings.schema_registry_addr,
        tls: settings.schema_registry_tls.clone(),
    };
    let link = pipeline::by_id::RegistryLink {
        registry: front.shared.clone(),
        entries: metrics.schema_registry.job_cache_entries.clone(),
        misses: metrics.schema_registry.job_cache_misses.clone(),
    };
    (front, link)
}

/// Where a job resumes: the checkpoint every core resumes from, and the highest
/// id on disk.
type Resume = (Option<u64>, u64);

/// One core's part of each job: the job (reading writer schemas from the
/// registry), its mailboxes, and where it resumes.
fn job_starts(
    jobs: &[Job],
    meshes: &mut [std::collections::VecDeque<pipeline::CoreMail>],
    resume: &[Resume],
    finished: &[Arc<Signal>],
    checkpoints: &Path,
    link: &pipeline::by_id::RegistryLink,
) -> Vec<JobStart> {
    jobs.iter()
        .zip(meshes.iter_mut())
        .zip(resume)
        .zip(finished)
        .map(|(((j, m), &(restore, highest)), finished)| JobStart {
            job: {
                let mut job = j.clone();
                job.link_registry(link.clone());
                job
            },
            mail: m.pop_front().expect("one per core"),
            checkpoints: checkpoints.to_path_buf(),
            restore,
            highest,
            finished: finished.clone(),
        })
        .collect()
}

/// Core 0 replays the schema registry's records; every core's jobs wait for
/// that. False: stopped while waiting.
async fn registry_loaded(
    shard: u32,
    r: &RegistryFront,
    log: &ShardLog,
    stop: &Stop,
) -> Result<bool> {
    if shard == 0 {
        let reg = crate::schema_registry::load(log)
            .await
            .context("core 0: cannot load the schema registry")?;
        r.shared.replace(reg);
        r.loaded.add_one();
    }
    futures_lite::future::or(r.loaded.reached(1), stop.wait()).await;
    Ok(!stop.is_set())
}

/// The admin listener (`/metrics`, `/health`, `POST /checkpoint`), before any core.
fn serve_admin(settings: &Settings, metrics: &Arc<Metrics>) -> Result<()> {
    crate::metrics::serve_admin(
        metrics.clone(),
        settings.admin_addr,
        settings.admin_auth.clone(),
        settings.admin_tls.clone(),
    )
    .with_context(|| format!("cannot listen on admin_addr {}", settings.admin_addr))
}

/// Jobs whose reader schema is a subject's version read it now, from the loaded
/// registry: the same on every core.
fn resolve_readers(shard: u32, r: &RegistryFront, jobs: &mut [JobStart]) -> Result<()> {
    for j in jobs {
        j.job
            .resolve_reader(&r.shared.read())
            .map_err(|e| anyhow::anyhow!("core {shard}: {e}"))?;
    }
    Ok(())
}

/// A listening socket on `addr` for this core's executor: see
/// [`crate::placement::listen`] (`group`: single-port mode, this core's CPU).
fn listen(
    addr: std::net::SocketAddr,
    group: Option<(&crate::placement::Groups, usize)>,
) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = crate::placement::listen(addr, group)?;
    let fd = socket.into_raw_fd();
    // `into_raw_fd` gave up ownership of `fd`; glommio's listener takes it (and closes it).
    // SAFETY: `fd` is a bound, listening TCP socket that nothing else owns.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(fd) })
}

/// This core's socket on each Kafka listener, with what its connections see.
fn bind_listeners(
    (shard, cpu): (u32, usize),
    listeners: Vec<(std::net::SocketAddr, kafka::Endpoint)>,
    placement: Option<&crate::placement::Groups>,
) -> Result<Vec<(glommio::net::TcpListener, Rc<kafka::Endpoint>)>> {
    let mut bound = Vec::new();
    for (addr, endpoint) in listeners {
        let l = listen(addr, placement.map(|g| (g, cpu))).map_err(|e| {
            anyhow::anyhow!(
                "core {shard}: cannot listen on {addr} ({}): {e}",
                endpoint.name
            )
        })?;
        let tls = endpoint.tls.is_some();
        tracing::info!(shard, listener = %endpoint.name, %addr, tls, "kafka listener up");
        bound.push((l, Rc::new(endpoint)));
    }
    Ok(bound)
}

/// Core 0's listener for the schema registry's REST API, when it has an address;
/// bound before any job starts, so a taken port stops the start cleanly.
fn bind_registry(shard: u32, r: &RegistryFront) -> Result<Option<glommio::net::TcpListener>> {
    let Some(addr) = r.addr.filter(|_| shard == 0) else {
        return Ok(None);
    };
    let listener = listen(addr, None).map_err(|e| {
        anyhow::anyhow!("core 0: cannot listen on schema_registry_addr {addr}: {e}")
    })?;
    Ok(Some(listener))
}

/// Serves the schema registry's REST API on `listener`.
fn serve_registry(
    listener: glommio::net::TcpListener,
    r: &RegistryFront,
    log: &Rc<ShardLog>,
    metrics: &Metrics,
    stop: &Stop,
) -> glommio::Task<()> {
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(addr = %bound, "schema registry listener up");
    }
    glommio::spawn_local(crate::schema_registry::serve(
        listener,
        log.clone(),
        r.shared.clone(),
        metrics.schema_registry.clone(),
        stop.clone(),
        r.tls.clone(),
    ))
}

/// The declared topics with those CreateTopics recorded in `topics_file`, and the
/// topics whose deletion a crash interrupted (each core finishes it at start).
fn topics_at_start(settings: &Settings, topics_file: &Path) -> Result<(Vec<Topic>, Vec<Topic>)> {
    let mut declared = settings.topics.clone();
    // Topics whose deletion a crash interrupted: each core finishes it at start.
    let mut deleting = Vec::new();
    for t in kafka::topics_file::read_at_start(topics_file)? {
        if t.deleting {
            deleting.push(Topic {
                name: t.name,
                partitions: t.partitions,
            });
            continue;
        }
        match declared.iter().find(|d| d.name == t.name) {
            Some(d) if d.partitions != t.partitions => bail!(
                "topic {:?} is declared with {} partitions but was created with {} ({}); make them agree",
                t.name,
                d.partitions,
                t.partitions,
                topics_file.display()
            ),
            Some(_) => {}
            None => declared.push(Topic {
                name: t.name,
                partitions: t.partitions,
            }),
        }
    }
    Ok((declared, deleting))
}

/// Per job: the newest complete checkpoint to resume from (the same one on every
/// core) and the highest id on disk.
fn resume_points(settings: &Settings, root: &Path, shard_count: u32) -> Vec<Resume> {
    settings
        .jobs
        .iter()
        .map(|j| {
            if j.checkpoint_ms <= 0 {
                return (None, 0);
            }
            let (id, skipped) = checkpoint::latest(root, &j.name, shard_count);
            for why in skipped {
                tracing::warn!(job = %j.name, "checkpoint skipped: {why}");
            }
            match id {
                Some(id) => tracing::info!(job = %j.name, checkpoint = id, "resuming from checkpoint"),
                None => tracing::info!(job = %j.name, "no usable checkpoint: reading the source from the start of the log"),
            }
            (id, checkpoint::highest(root, &j.name))
        })
        .collect()
}

/// SIGINT or SIGTERM sets the stop; SIGHUP reads the TLS listeners' certificate,
/// key and client CA files again. A thread of its own waits for them (and does the
/// reading: no core blocks on it).
fn on_signals(stop: &Stop, settings: &Settings) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let admin = settings.admin_tls.clone().map(|t| ("admin".to_string(), t));
    let registry =
        (settings.schema_registry_tls.clone()).map(|t| ("schema registry".to_string(), t));
    let tls: Vec<_> = settings
        .listeners
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.tls.clone()?)))
        .chain(admin)
        .chain(registry)
        .collect();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("tw-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig != SIGHUP {
                    tracing::info!(signal = sig, "stopping: finishing in-flight appends");
                    stop.set();
                    return;
                }
                if tls.is_empty() {
                    tracing::info!("SIGHUP: no TLS listener to reload");
                }
                for (name, t) in &tls {
                    match t.reload() {
                        Ok(()) => tracing::info!(listener = %name, "TLS files reloaded: new connections use them"),
                        Err(e) => tracing::error!(listener = %name, "TLS reload failed, the files in use stay: {e:#}"),
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Waits for every core; the exit code says how the worst one ended.
fn join_cores(handles: Vec<glommio::ExecutorJoinHandle<Result<ShardEnd>>>, stop: &Stop) -> i32 {
    let mut code = 0;
    for (shard, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(ShardEnd::Clean)) => {}
            Ok(Ok(ShardEnd::StorageFault(e))) => {
                tracing::error!(shard, "storage fault: {e}");
                stop.set();
                code = EXIT_STORAGE_FAULT;
            }
            Ok(Err(e)) => {
                tracing::error!(shard, "core failed: {e:#}");
                stop.set();
                code = code.max(failed_core_code(&e));
            }
            Err(e) => {
                tracing::error!(shard, "core's executor failed: {e}");
                stop.set();
                code = code.max(1);
            }
        }
    }
    if code == 0 {
        tracing::info!("stopped cleanly");
    }
    code
}

async fn run_shard(
    shard: u32,
    cpu: usize,
    (cfg, owned, deleted): (tidewater_io::LogConfig, Vec<String>, Vec<String>),
    front: FrontEnd,
    mut jobs: Vec<JobStart>,
    (stop, metrics): (Stop, Arc<Metrics>),
    (ready, shard_count, (cleaned, any_deleting)): (
        Arc<std::sync::atomic::AtomicUsize>,
        usize,
        (Arc<Signal>, bool),
    ),
) -> Result<ShardEnd> {
    let (log, report) = ShardLog::open(cfg.clone()).await.with_context(|| {
        format!(
            "core {shard}: cannot open its log (journal {}, ledger {})",
            cfg.journal_dir.display(),
            cfg.ledger_dir.display()
        )
    })?;
    metrics.recovered(shard, &report);
    for name in &deleted {
        if log
            .delete_partition(name)
            .await
            .with_context(|| format!("core {shard}: cannot delete partition {name}"))?
        {
            tracing::info!(shard, partition = %name, "deleted: its topic's deletion was interrupted");
        }
    }
    cleaned.add_one();
    // Core 0 drops the marks once every core has finished, before anything (a
    // forwarded CreateTopics included) can rewrite the file: a mark left behind
    // would delete a topic of that name made later at every start.
    if shard == 0 && any_deleting {
        futures_lite::future::or(cleaned.reached(shard_count as u64), stop.wait()).await;
        if stop.is_set() {
            return Ok(ShardEnd::Clean);
        }
        if let Some(file) = &front.topics.file {
            kafka::topics_file::forget_deleted(file).await?;
        }
    }
    for name in &owned {
        log.create_partition(name)
            .with_context(|| format!("core {shard}: cannot create partition {name}"))?;
    }
    warn_of_strays(shard, &log, &owned);
    if !registry_loaded(shard, &front.registry, &log, &stop).await? {
        return Ok(ShardEnd::Clean);
    }
    let registry_listener = bind_registry(shard, &front.registry)?;
    resolve_readers(shard, &front.registry, &mut jobs)?;
    tracing::info!(
        shard,
        cpu,
        partitions = log.partitions().len(),
        journal_segments_scanned = report.journal_segments_scanned,
        frames_restored = report.frames_restored,
        dropped = report.dropped.len(),
        indexes_rebuilt = report.indexes_rebuilt.len(),
        "core ready"
    );
    let log = Rc::new(log);
    let table = front.table.clone();
    let mut sources = CoreSources::new(log.clone());
    // The front end's counters, exported by the metrics sync from the start.
    let topic_names: Vec<String> = table.topics().iter().map(|t| t.name.clone()).collect();
    let kafka_stats = Rc::new(kafka::KafkaStats::new(&topic_names));
    sources.add_kafka(KafkaSeries::new(&metrics, shard, kafka_stats.clone()));
    let mut drivers = Vec::new();
    for j in jobs {
        let driver = start_job(
            shard,
            &table,
            &log,
            j,
            &stop,
            &mut sources,
            metrics.savepoints.clone(),
        )
        .with_context(|| format!("core {shard}: cannot start its part of a job"))?;
        drivers.push(driver);
    }
    {
        let stop = stop.clone();
        glommio::spawn_local(crate::metrics::sync(
            metrics.clone(),
            shard,
            sources,
            move || stop.is_set(),
        ))
        .detach();
    }
    let listeners = bind_listeners((shard, cpu), front.listeners, front.placement.as_deref())?;
    let broker = Rc::new(kafka::Broker::new(
        shard,
        front.table,
        log.clone(),
        kafka_stats,
        kafka::Serving {
            mode: front.mode,
            limits: front.limits,
            topics: front.topics,
            users: front.security.users,
            authorizer: front.security.authorizer,
            quotas: front.security.quotas,
        },
    ));
    broker
        .groups
        .load()
        .await
        .map_err(|e| anyhow::anyhow!("core {shard}: cannot load committed offsets: {e}"))?;
    if let Some(mail) = front.forwarding {
        kafka::connect_forwarding(&broker, mail).await;
    }
    let accepting = glommio::spawn_local(kafka::serve(broker, listeners, stop.clone()));
    let registry_serving =
        registry_listener.map(|l| serve_registry(l, &front.registry, &log, &metrics, &stop));
    metrics.ready_cores.fetch_add(1, Ordering::SeqCst);
    if ready.fetch_add(1, Ordering::SeqCst) + 1 == shard_count {
        tracing::info!("ready");
    }
    let end = futures_lite::future::or(
        async { ShardEnd::StorageFault(log.failed().await) },
        async {
            stop.wait().await;
            ShardEnd::Clean
        },
    )
    .await;
    stop.set();
    metrics.stopping.store(true, Ordering::SeqCst);
    accepting.await;
    if let Some(r) = registry_serving {
        r.await;
    }
    // The jobs take their checkpoint at shutdown (bounded by
    // SHUTDOWN_CHECKPOINT_WAIT) while the log is still open.
    for d in drivers {
        let _ = d.await;
    }
    match (end, log.close().await) {
        (ShardEnd::Clean, Ok(())) => Ok(ShardEnd::Clean),
        (ShardEnd::Clean, Err(e)) => Ok(ShardEnd::StorageFault(Arc::new(e))),
        (fault, _) => Ok(fault),
    }
}

/// The declared topics plus those the jobs write: each sink topic not declared (as
/// many partitions as the job's source, so a key's row lands on the core that owns
/// the key), and `<job>.dlq` and `<job>.late` (as many partitions as the source too:
/// a side record goes to the partition of its key group or source partition, so it
/// stays with that group when the job moves to another number of cores).
fn with_job_topics(declared: &[Topic], jobs: &[Job], shards: u32) -> Result<Vec<Topic>> {
    let mut topics = declared.to_vec();
    let mut add = |name: String, partitions: u32| {
        if !topics.iter().any(|t| t.name == name) {
            topics.push(Topic { name, partitions });
        }
    };
    for job in jobs {
        let source = declared
            .iter()
            .find(|t| t.name == job.source)
            .map_or(shards, |t| t.partitions);
        for s in &job.sinks {
            if let SinkConfig::Topic { topic } = s {
                add(topic.clone(), source);
            }
        }
        add(job.dlq_topic(), source);
        add(job.late_topic(), source);
    }
    for t in &topics {
        let probe = partition_name(&t.name, t.partitions.saturating_sub(1));
        if !tidewater_io::ledger::valid_partition_name(&probe) {
            bail!("topic {:?}: not a valid topic name", t.name);
        }
    }
    Ok(topics)
}

/// Topics DeleteTopics must refuse, and why: the config would bring them back, or a
/// job reads or writes them.
fn protected_topics(settings: &Settings) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
    for t in &settings.topics {
        m.insert(
            t.name.clone(),
            "is declared in the config file (remove it there)".to_string(),
        );
    }
    for job in &settings.jobs {
        m.insert(
            job.source.clone(),
            format!("is the source of job {}", job.name),
        );
        let mut written = vec![job.dlq_topic(), job.late_topic()];
        for s in &job.sinks {
            if let SinkConfig::Topic { topic } = s {
                written.push(topic.clone());
            }
        }
        for t in written {
            m.entry(t)
                .or_insert_with(|| format!("is written by job {}", job.name));
        }
    }
    m
}

/// What a core needs to run its part of a job.
struct JobStart {
    job: Job,
    mail: pipeline::CoreMail,
    checkpoints: std::path::PathBuf,
    /// The checkpoint every core resumes from, and the highest id on disk.
    restore: Option<u64>,
    highest: u64,
    finished: Arc<Signal>,
}

/// Starts this core's part of a job: its sinks, then its driver.
fn start_job(
    shard: u32,
    table: &PartitionTable,
    log: &Rc<ShardLog>,
    start: JobStart,
    stop: &Stop,
    sources: &mut CoreSources,
    savepoints: Arc<Signal>,
) -> Result<glommio::task::JoinHandle<Result<(), pipeline::PipelineError>>> {
    let JobStart {
        job,
        mail,
        checkpoints: root,
        restore,
        highest,
        finished,
    } = start;
    // This core's part of the checkpoint to resume from (checked at start-up).
    let restored = match restore.filter(|_| job.checkpoint_ms > 0) {
        Some(id) => {
            let path = checkpoint::dir_of(&root, &job.name, id).join(format!("shard-{shard}.ckpt"));
            let bytes = checkpoint::read_part(&path)?;
            Some((id, Rc::new(bytes)))
        }
        None => None,
    };
    let outputs: Vec<checkpoint::OutputSnap> = restored
        .as_ref()
        .map(|(_, b)| {
            b.view()
                .outputs
                .iter()
                .map(|o| checkpoint::OutputSnap {
                    name: o.name.to_string(),
                    partition: o.partition.to_native(),
                    end: o.end.to_native(),
                })
                .collect()
        })
        .unwrap_or_default();
    let local = |topic: &str| -> Vec<(u32, u32)> {
        table
            .owned_by(shard)
            .into_iter()
            .filter(|(t, _)| *t == topic)
            .filter_map(|(t, p)| log.partition_id(&partition_name(t, p)).map(|id| (p, id)))
            .collect()
    };
    let partitions_of = |topic: &str| {
        table
            .topics()
            .iter()
            .find(|t| t.name == topic)
            .map_or(0, |t| t.partitions)
    };
    // Sinks deliver until the driver is done (its checkpoint at shutdown waits for
    // them), not merely until the server stops.
    let driver_done: Rc<std::cell::Cell<bool>> = Default::default();
    let sink_stop: Rc<dyn Fn() -> bool> = {
        let (stop, done) = (stop.clone(), driver_done.clone());
        Rc::new(move || stop.is_set() && done.get())
    };
    let job = Rc::new(job);
    let layout = Rc::new(Layout::new(job.aggregates.clone()));
    let mut sinks = Vec::new();
    for cfg in &job.sinks {
        let target = match cfg {
            SinkConfig::Topic { topic } => Some(sink::TopicTarget {
                partitions: partitions_of(topic),
                local: local(topic),
            }),
            _ => None,
        };
        let h = sink::start(
            cfg,
            job.clone(),
            layout.clone(),
            (shard, log.clone()),
            target,
            sink_stop.clone(),
            &outputs,
        )
        .map_err(|e| anyhow::anyhow!("job {:?}: {e}", job.name))?;
        sinks.push(h);
    }
    let source_partitions = partitions_of(&job.source);
    let side = |topic: String| -> Result<Vec<Option<u32>>> {
        if partitions_of(&topic) != source_partitions {
            bail!(
                "job {:?}: topic {topic} has {} partitions, its source {} has {source_partitions}; they must agree",
                job.name,
                partitions_of(&topic),
                job.source
            );
        }
        let mut ids = vec![None; source_partitions as usize];
        for (p, id) in local(&topic) {
            ids[p as usize] = Some(id);
        }
        Ok(ids)
    };
    let ctx = pipeline::JobContext {
        shard,
        shards: table.shard_count(),
        log: log.clone(),
        source_partitions,
        sources: local(&job.source),
        late_ids: side(job.late_topic())?,
        dlq_ids: side(job.dlq_topic())?,
        sinks,
        stop: stop.clone(),
        checkpoints: (job.checkpoint_ms > 0).then(|| pipeline::Checkpoints {
            root,
            interval: Duration::from_millis(job.checkpoint_ms as u64),
            restore: restored,
            highest,
            requested: savepoints,
            finished,
        }),
    };
    let stats = Rc::new(pipeline::JobStats::default());
    let mailboxes = mail
        .out
        .iter()
        .enumerate()
        .filter_map(|(to, o)| o.as_ref().map(|(_, st)| (to as u32, st.clone())))
        .collect();
    sources.add_job(&job.name, stats.clone(), &ctx.sinks, mailboxes);
    tracing::info!(shard, job = %job.name, sources = ctx.sources.len(), "job running");
    Ok(glommio::spawn_local(async move {
        let res = pipeline::run(job, layout, ctx, mail, stats).await;
        driver_done.set(true);
        res
    })
    .detach())
}

/// Takes an exclusive lock (`flock`) on `tidewater.lock` in each directory: a
/// second server on the same data would interleave two journals, or rescale a
/// directory under a running server. The lock goes with the process, however it ends.
pub fn lock_dirs(dirs: &[&Path]) -> Result<Vec<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let mut seen = Vec::new();
    let mut locks = Vec::new();
    for dir in dirs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        let real = std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        if seen.contains(&real) {
            continue;
        }
        let path = real.join(LOCK_FILE);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            bail!(
                "{} is in use by another Tidewater process ({}); stop it first",
                real.display(),
                holder.trim()
            );
        }
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| write!(f, "pid {}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        seen.push(real);
        locks.push(f);
    }
    Ok(locks)
}
