//! Journal benchmarks, against the raw disk measured in the same run.
//!
//! - `raw_odirect`: sequential O_DIRECT writes to a preallocated, written file (QD1),
//!   the ceiling for the journal on this disk.
//! - `append_64k/{always,interval,never}`: ShardLog appends of 64 KiB batches from 64
//!   concurrent appenders; journal on the disk under test, ledger in `/dev/shm` (its
//!   own device, as in production where they sit on separate NVMe drives).
//! - `append_6k_4p/never`: appends of 6 KiB to 4 partitions from 64 appenders,
//!   interleaved, under `never`: the CPU path of laying out and handing over a write
//!   of many partitions; CPU per append printed beside it.
//! - `journal_vs_raw`: rounds alternating raw writes and `never` appends of the same
//!   bytes, for a ratio that the disk's drift over a run does not skew.
//! - `group_commit_4k/{odsync,fdatasync}/{1,8,64}`: appends/s of 4 KiB batches under
//!   `always` with 1, 8 and 64 concurrent appenders, in alternating rounds; p50/p99
//!   completion latency printed beside it, and the device's own ceiling for the
//!   ratio: durable writes of one group's bytes against durable 4 KiB writes.
//!
//! `cargo bench --bench journal` measures (a filter such as `-- group_commit_4k`
//! picks parts); `cargo test --benches` runs each once, tiny.
//! A summary with every number goes to `target/bench-reports/journal.json`.
//! `TIDEWATER_BENCH_DIR` picks the directory (the disk) to measure; default `target/`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tidewater_io::{Durability, LogConfig, ShardLog};

const KIB: usize = 1024;
/// Appenders of the 64 KiB benchmark: 4 MiB outstanding, two journal writes' worth,
/// as a busy Kafka front end keeps several batches in flight per partition.
const APPENDERS_64K: usize = 64;
const MIB: usize = 1024 * KIB;

fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Whether the command line's filter (criterion's positional argument) selects
/// `name`: criterion applies it only to its own benchmark functions, and the rounds
/// below run outside them.
fn selected(name: &str) -> bool {
    // Criterion's options that take a value.
    const VALUED: &[&str] = &[
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "-c",
        "--color",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--output-format",
        "--format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter = None;
    let mut i = 0;
    while i < args.len() {
        if VALUED.contains(&args[i].as_str()) {
            i += 1;
        } else if !args[i].starts_with('-') {
            filter = Some(args[i].clone());
        }
        i += 1;
    }
    filter.is_none_or(|f| name.contains(&f) || f.starts_with(name))
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("TIDEWATER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn ledger_dir() -> tempfile::TempDir {
    if let Some(dir) = std::env::var_os("TIDEWATER_BENCH_LEDGER_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        return tempfile::tempdir_in(dir).unwrap();
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        bench_dir()
    }
}

fn executor() -> LocalExecutor {
    // Pinned, as the server's cores are.
    let cfg = LogConfig::new(PathBuf::new(), PathBuf::new(), 0);
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(cfg.io_memory_bytes())
        .make()
        .unwrap()
}

/// Results printed at the end and written to the JSON report.
#[derive(Default)]
struct Report {
    lines: Vec<(String, String)>,
}

thread_local! {
    static REPORT: RefCell<Report> = RefCell::new(Report::default());
}

fn note(key: &str, value: String) {
    println!("{key}: {value}");
    REPORT.with(|r| r.borrow_mut().lines.push((key.to_string(), value)));
}

/// A preallocated file of `file_bytes` in `dir`, written once, as journal segments are.
fn raw_file(ex: &LocalExecutor, dir: &std::path::Path, file_bytes: usize) -> Rc<DmaFile> {
    raw_file_with(ex, dir, file_bytes, 0)
}

/// [`raw_file`], opened with `flags` (e.g. `O_DSYNC`) as well.
fn raw_file_with(
    ex: &LocalExecutor,
    dir: &std::path::Path,
    file_bytes: usize,
    flags: libc::c_int,
) -> Rc<DmaFile> {
    let path = dir.join("raw");
    let probe_dir = dir.to_path_buf();
    Rc::new(ex.run(async move {
        // Let glommio probe this device's polling support on real data first.
        tidewater_io::journal::prime_device(&probe_dir)
            .await
            .unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(flags)
            .dma_open(&path)
            .await
            .unwrap();
        f.pre_allocate(file_bytes as u64, false).await.unwrap();
        // Written once, as journal segments are.
        let mut pos = 0;
        while pos < file_bytes {
            let mut b = f.alloc_dma_buffer(MIB);
            b.as_bytes_mut().fill(0);
            f.write_at(b, pos as u64).await.unwrap();
            pos += MIB;
        }
        f.fdatasync().await.unwrap();
        f
    }))
}

/// Writes `total` bytes sequentially in `write_bytes` writes, `depth` in flight,
/// from `*pos` (wrapping at the file's end); returns the elapsed time.
async fn raw_writes(
    file: Rc<DmaFile>,
    file_bytes: usize,
    pos: &Cell<usize>,
    write_bytes: usize,
    depth: usize,
    total: usize,
) -> Duration {
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    let mut done = 0;
    while done < total {
        let mut p = pos.get();
        if p + write_bytes > file_bytes {
            p = 0;
        }
        pos.set(p + write_bytes);
        let (f, buf) = (file.clone(), file.alloc_dma_buffer(write_bytes));
        in_flight.push_back(glommio::spawn_local(async move {
            f.write_at(buf, p as u64).await.unwrap();
        }));
        if in_flight.len() == depth {
            in_flight.pop_front().unwrap().await;
        }
        done += write_bytes;
    }
    for w in in_flight {
        w.await;
    }
    start.elapsed()
}

/// `count` writes of `size` bytes, one at a time, sequential from `*pos` (wrapping at
/// the file's end), each followed by an fdatasync when `sync` (a file opened
/// `O_DSYNC` needs none); returns the elapsed time.
async fn durable_writes(
    file: Rc<DmaFile>,
    file_bytes: usize,
    pos: &Cell<usize>,
    size: usize,
    count: u64,
    sync: bool,
) -> Duration {
    let start = Instant::now();
    for _ in 0..count {
        let mut p = pos.get();
        if p + size > file_bytes {
            p = 0;
        }
        pos.set(p + size);
        file.write_at(file.alloc_dma_buffer(size), p as u64)
            .await
            .unwrap();
        if sync {
            file.fdatasync().await.unwrap();
        }
    }
    start.elapsed()
}

fn raw_odirect(c: &mut Criterion) {
    if !selected("raw_odirect/") {
        return;
    }
    let ex = executor();
    let dir = bench_dir();
    let file_bytes = if measuring() { 512 * MIB } else { 4 * MIB };
    let file = raw_file(&ex, dir.path(), file_bytes);
    let mut g = c.benchmark_group("raw_odirect");
    for write_bytes in [64 * KIB, 2 * MIB] {
        g.throughput(Throughput::Bytes(write_bytes as u64));
        let file = file.clone();
        let pos = Rc::new(Cell::new(0usize));
        g.bench_function(BenchmarkId::from_parameter(write_bytes), |b| {
            b.iter_custom(|iters| {
                let (file, pos) = (file.clone(), pos.clone());
                let total = iters as usize * write_bytes;
                ex.run(
                    async move { raw_writes(file, file_bytes, &pos, write_bytes, 1, total).await },
                )
            })
        });
    }
    // The device's floor for one durable 4 KiB append: write, then fdatasync.
    g.throughput(Throughput::Elements(1));
    let pos = Rc::new(Cell::new(0usize));
    g.bench_function("4096_fdatasync", |b| {
        b.iter_custom(|iters| {
            let (file, pos) = (file.clone(), pos.clone());
            ex.run(
                async move { durable_writes(file, file_bytes, &pos, 4 * KIB, iters, true).await },
            )
        })
    });
    g.finish();
}

fn log_config(journal: &std::path::Path, ledger: &std::path::Path, d: Durability) -> LogConfig {
    let mut cfg = LogConfig::new(journal.to_path_buf(), ledger.to_path_buf(), 0);
    cfg.durability = d;
    // The ledger (in memory in these benchmarks) keeps only the newest data.
    cfg.retention_bytes = Some(256 * MIB as u64);
    if !measuring() {
        cfg.journal_segment_bytes = 4 * MIB as u64;
        cfg.ledger_segment_bytes = 8 * MIB as u64;
    }
    cfg
}

/// Runs `total` appends of `size` bytes from `appenders` tasks, appender `a` to
/// partition `a % partitions`; returns the elapsed time and every append's
/// completion latency.
async fn drive(
    log: Rc<ShardLog>,
    (size, partitions): (usize, u32),
    appenders: usize,
    total: u64,
) -> (Duration, Vec<u64>) {
    let payload = bytes::Bytes::from(vec![0xabu8; size]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders as u64 {
        let (log, payload) = (log.clone(), payload.clone());
        let n = total / appenders as u64 + u64::from(a < total % appenders as u64);
        tasks.push(glommio::spawn_local(async move {
            let mut lat = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = Instant::now();
                let p = (a % u64::from(partitions)) as u32;
                log.append(p, payload.clone(), 1, 0).await.unwrap();
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await);
    }
    (start.elapsed(), all)
}

fn open_log(ex: &LocalExecutor, cfg: LogConfig) -> Rc<ShardLog> {
    open_log_with(ex, cfg, 1)
}

/// A log with partitions `bench-0` .. `bench-{n-1}`, ids 0 .. n-1.
fn open_log_with(ex: &LocalExecutor, cfg: LogConfig, n: u32) -> Rc<ShardLog> {
    ex.run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        for i in 0..n {
            assert_eq!(log.create_partition(&format!("bench-{i}")).unwrap(), i);
        }
        Rc::new(log)
    })
}

fn append_64k(c: &mut Criterion) {
    let ex = executor();
    let mut g = c.benchmark_group("append_64k");
    g.throughput(Throughput::Bytes(64 * KIB as u64));
    for d in [Durability::Always, Durability::Interval, Durability::Never] {
        if !selected(&format!("append_64k/{d}")) {
            continue;
        }
        let (jdir, ldir) = (bench_dir(), ledger_dir());
        let log = open_log(&ex, log_config(jdir.path(), ldir.path(), d));
        g.bench_function(BenchmarkId::from_parameter(d), |b| {
            b.iter_custom(|iters| {
                let log = log.clone();
                ex.run(async move { drive(log, (64 * KIB, 1), APPENDERS_64K, iters).await.0 })
            })
        });
        let stats = log.stats();
        let mut w: Vec<u64> = log.drain_write_samples().iter().map(|s| s.0).collect();
        w.sort_unstable();
        if !w.is_empty() {
            note(
                &format!("append_64k/{d} journal write p50/p99 us"),
                format!("{:.0} / {:.0}", percentile(&w, 0.5), percentile(&w, 0.99)),
            );
        }
        note(
            &format!("append_64k/{d} bytes per journal write"),
            format!(
                "{}",
                stats.journal_write_bytes / stats.journal_writes.max(1)
            ),
        );
    }
    g.finish();
}

/// Appends of 6 KiB (20 reference events, what `linger.ms=5` gives per partition
/// at 500K events/s) to 4 partitions from 64 appenders, interleaved as a core's
/// connections interleave them, under `never`: the CPU path of a journal write
/// (laying out one run per partition) and of handing its frames to the ledger.
fn append_6k_4p(c: &mut Criterion) {
    if !selected("append_6k_4p/never") {
        return;
    }
    let ex = executor();
    let mut g = c.benchmark_group("append_6k_4p");
    g.throughput(Throughput::Bytes(6 * KIB as u64));
    let (jdir, ldir) = (bench_dir(), ledger_dir());
    let log = open_log_with(
        &ex,
        log_config(jdir.path(), ldir.path(), Durability::Never),
        4,
    );
    let cpu = Rc::new(Cell::new((Duration::ZERO, 0u64)));
    g.bench_function("never", |b| {
        b.iter_custom(|iters| {
            let (log, cpu) = (log.clone(), cpu.clone());
            ex.run(async move {
                let before = thread_cpu();
                let elapsed = drive(log, (6 * KIB, 4), APPENDERS_64K, iters).await.0;
                let (t, n) = cpu.get();
                cpu.set((t + thread_cpu() - before, n + iters));
                elapsed
            })
        })
    });
    g.finish();
    let (t, n) = cpu.get();
    note(
        "append_6k_4p/never CPU us per append (executor thread)",
        format!("{:.2}", t.as_secs_f64() * 1e6 / n.max(1) as f64),
    );
}

/// CPU time of the calling thread, where `LocalExecutor::run` runs its tasks.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The journal against the raw disk, alternating: rounds of raw 2 MiB writes (one
/// and two in flight), of the raw pair (the same writes with the same bytes going
/// to the ledger's device at once, in 1 MiB writes: what the two devices allow a
/// log that writes every byte to both) and of 64 KiB appends under `never`, the
/// same bytes each, so that all see the same devices (this VM's disk bandwidth
/// drifts by 2x over minutes). Reports medians of each round's ratios, and the
/// core's CPU time per GiB of each (the executor's thread; I/O the kernel does
/// elsewhere, like the loop device's workers, is not in it).
fn journal_vs_raw(_: &mut Criterion) {
    if !selected("journal_vs_raw") {
        return;
    }
    let ex = executor();
    let (rounds, bytes, file_bytes) = if measuring() {
        (5, 1024 * MIB, 512 * MIB)
    } else {
        (1, 4 * MIB, 4 * MIB)
    };
    let raw_dir = bench_dir();
    let file = raw_file(&ex, raw_dir.path(), file_bytes);
    let (jdir, ldir) = (bench_dir(), ledger_dir());
    let ledger_bytes = file_bytes.min(256 * MIB);
    let lraw_dir = ledger_dir();
    let ledger_file = raw_file(&ex, lraw_dir.path(), ledger_bytes);
    let log = open_log(&ex, log_config(jdir.path(), ldir.path(), Durability::Never));
    let (pos, lpos) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(0usize)));
    const MODES: [&str; 4] = ["raw QD1", "raw QD2", "raw pair", "append"];
    let mut rates = vec![Vec::new(); MODES.len()];
    let mut cpu = vec![Vec::new(); MODES.len()];
    let (mut vs_raw, mut vs_pair) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut round = [0.0; MODES.len()];
        for (i, slot) in round.iter_mut().enumerate() {
            let (file, pos, log) = (file.clone(), pos.clone(), log.clone());
            let (lfile, lpos) = (ledger_file.clone(), lpos.clone());
            let cpu0 = thread_cpu();
            let took = ex.run(async move {
                match i {
                    0 | 1 => raw_writes(file, file_bytes, &pos, 2 * MIB, i + 1, bytes).await,
                    2 => {
                        let ledger = glommio::spawn_local(async move {
                            raw_writes(lfile, ledger_bytes, &lpos, MIB, 2, bytes).await
                        });
                        let journal = raw_writes(file, file_bytes, &pos, 2 * MIB, 2, bytes).await;
                        journal.max(ledger.await)
                    }
                    _ => {
                        let n = (bytes / (64 * KIB)) as u64;
                        drive(log, (64 * KIB, 1), APPENDERS_64K, n).await.0
                    }
                }
            });
            let used = thread_cpu().saturating_sub(cpu0);
            *slot = bytes as f64 / MIB as f64 / took.as_secs_f64();
            cpu[i].push(used.as_secs_f64() * 1e3 / (bytes as f64 / (1024.0 * MIB as f64)));
        }
        for (i, r) in round.iter().enumerate() {
            rates[i].push(*r);
        }
        vs_raw.push(round[3] / round[0].max(round[1]));
        vs_pair.push(round[3] / round[2]);
    }
    let per_mode: Vec<String> = MODES
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "{m} {:.0} MiB/s ({:.0} CPU-ms/GiB)",
                median(&mut rates[i]),
                median(&mut cpu[i])
            )
        })
        .collect();
    note(
        "journal_vs_raw",
        format!(
            "{rounds} alternating rounds of {} MiB, medians: {}; append / faster raw {:.0}%, append / raw pair {:.0}%",
            bytes / MIB,
            per_mode.join(", "),
            100.0 * median(&mut vs_raw),
            100.0 * median(&mut vs_pair),
        ),
    );
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn group_commit_4k(c: &mut Criterion) {
    let ex = executor();
    let mut g = c.benchmark_group("group_commit_4k");
    g.throughput(Throughput::Elements(1));
    const APPENDERS: [usize; 3] = [1, 8, 64];
    // Appends per run: a second or two each at this disk's rates.
    let per_run = |appenders: usize| -> u64 {
        if measuring() {
            10_000 * (appenders as u64).min(4)
        } else {
            200
        }
    };
    let rounds = if measuring() { 5 } else { 1 };
    // `odsync`: O_DSYNC writes (the default); `fdatasync`: a write, then a sync.
    for odsync in [true, false] {
        let mode = if odsync { "odsync" } else { "fdatasync" };
        if !selected(&format!("group_commit_4k/{mode}/")) {
            continue;
        }
        let logs: Vec<_> = APPENDERS
            .iter()
            .map(|_| {
                let (jdir, ldir) = (bench_dir(), ledger_dir());
                let mut cfg = log_config(jdir.path(), ldir.path(), Durability::Always);
                cfg.journal_odsync = odsync;
                (open_log(&ex, cfg), jdir, ldir)
            })
            .collect();
        // Fixed runs in rounds, each appender count once per round, so the disk's
        // drift over minutes hits the single appender and the groups alike: rates
        // and ratios are medians over the rounds.
        let mut rates = vec![Vec::new(); APPENDERS.len()];
        let mut lats = vec![Vec::new(); APPENDERS.len()];
        let mut ratios = vec![Vec::new(); APPENDERS.len()];
        for _ in 0..rounds {
            let mut single = 0.0;
            for (i, &appenders) in APPENDERS.iter().enumerate() {
                let l = logs[i].0.clone();
                let n = per_run(appenders);
                let (elapsed, lat) =
                    ex.run(async move { drive(l, (4 * KIB, 1), appenders, n).await });
                let rate = n as f64 / elapsed.as_secs_f64();
                if appenders == 1 {
                    single = rate;
                }
                rates[i].push(rate);
                ratios[i].push(rate / single);
                lats[i].extend(lat);
            }
        }
        for (i, &appenders) in APPENDERS.iter().enumerate() {
            let log = logs[i].0.clone();
            let stats = log.stats();
            lats[i].sort_unstable();
            note(
                &format!("group_commit_4k/{mode}/{appenders}"),
                format!(
                    "{:.0} appends/s, p50 {:.1} us, p99 {:.1} us, {:.1} appends per write, {:.1}x one sync per append (medians of {rounds} alternating rounds)",
                    median(&mut rates[i]),
                    percentile(&lats[i], 0.5),
                    percentile(&lats[i], 0.99),
                    stats.appends as f64 / stats.journal_writes.max(1) as f64,
                    median(&mut ratios[i]),
                ),
            );
            if appenders > 1 {
                let group = (stats.journal_write_bytes / stats.journal_writes.max(1)) as usize;
                device_ceiling(&ex, mode, odsync, appenders, group);
            }
            // Criterion's own measurement of the same workload.
            g.bench_function(BenchmarkId::new(mode, appenders), |b| {
                b.iter_custom(|iters| {
                    let log = log.clone();
                    ex.run(async move { drive(log, (4 * KIB, 1), appenders, iters).await.0 })
                })
            });
        }
    }
    g.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The device's own limit for group commit: durable writes of one 4 KiB block
/// against durable writes of `group` bytes (what one group commit of `appenders`
/// wrote), alternating in rounds so drift hits both alike. No log can beat
/// `appenders` x (rate of `group` writes) / (rate of 4 KiB writes) on this device.
fn device_ceiling(ex: &LocalExecutor, mode: &str, odsync: bool, appenders: usize, group: usize) {
    let group = group.next_multiple_of(4 * KIB);
    let (rounds, per_round) = if measuring() { (5, 400u64) } else { (1, 4) };
    let file_bytes = 64 * MIB;
    let dir = bench_dir();
    let flags = if odsync { libc::O_DSYNC } else { 0 };
    let file = raw_file_with(ex, dir.path(), file_bytes, flags);
    let pos = Rc::new(Cell::new(0usize));
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (size, out) in [(4 * KIB, &mut small), (group, &mut large)] {
            let (file, pos) = (file.clone(), pos.clone());
            let took = ex.run(async move {
                durable_writes(file, file_bytes, &pos, size, per_round, !odsync).await
            });
            out.push(took.as_secs_f64() * 1e6 / per_round as f64);
        }
    }
    let (t_small, t_large) = (median(&mut small), median(&mut large));
    note(
        &format!("group_commit_4k/{mode}/{appenders} device ceiling"),
        format!(
            "{:.1}x: one durable 4 KiB write {t_small:.0} us, one of {group} bytes {t_large:.0} us (medians of {rounds} alternating rounds)",
            appenders as f64 * t_small / t_large
        ),
    );
}

fn write_report(_: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    let body = REPORT.with(|r| {
        let r = r.borrow();
        let fields: Vec<String> = r
            .lines
            .iter()
            .map(|(k, v)| format!("  {k:?}: {v:?}"))
            .collect();
        format!("{{\n{}\n}}\n", fields.join(",\n"))
    });
    std::fs::write(dir.join("journal.json"), body).unwrap();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = raw_odirect, append_64k, append_6k_4p, journal_vs_raw, group_commit_4k, write_report
}
criterion_main!(benches);
