//! Checkpoints and exactly-once recovery: the reference job under a producer that
//! keeps going while the server is SIGKILLed at random moments and restarted; at
//! the end every acknowledged event is in the log, and the output topic, ClickHouse
//! (`FINAL`) and the files hold each window's row exactly once, equal to aggregates
//! computed independently over the log (tests/clients/crash_loop.py). Before the last
//! restart the newest checkpoint is damaged: recovery falls back to the one before.
//!
//! `TIDEWATER_EXACTLY_ONCE_KILLS=50 cargo test --release --test exactly_once` runs
//! the long variant.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tidewater_tools::reference;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The reference job's config in `dir` (ClickHouse as a sink when given).
fn config(dir: &Path, clickhouse: Option<&str>, interval: &str) -> std::path::PathBuf {
    let job = reference::Job {
        format: reference::Job::avro(&repo().join("schemas/sensor.avsc")),
        idle_timeout: "2s",
        checkpoint_interval: interval,
    };
    let text = reference::config(&job, &reference::sinks(&dir.join("out"), clickhouse));
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `serve` arguments: `cores` cores, the config, the data directory.
fn serve_args(cores: u32, cfg: &Path, data: &Path) -> Vec<String> {
    vec![
        "--cores".into(),
        cores.to_string(),
        "--config".into(),
        cfg.to_str().unwrap().into(),
        "--data-dir".into(),
        data.to_str().unwrap().into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Flips a byte in the newest complete checkpoint's part of core 0.
fn damage_newest_checkpoint(data: &Path) -> u64 {
    let root = data.join("checkpoints/device_minute");
    let mut ids: Vec<u64> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|id: &u64| root.join(format!("{id:020}/MANIFEST")).exists())
        .collect();
    ids.sort_unstable();
    let newest = *ids.last().expect("a complete checkpoint");
    assert!(ids.len() >= 2, "two complete checkpoints kept: {ids:?}");
    let part = root.join(format!("{newest:020}/shard-0.ckpt"));
    let mut b = std::fs::read(&part).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x5a;
    std::fs::write(&part, b).unwrap();
    newest
}

#[test]
fn kill_9_under_load_loses_nothing_and_counts_nothing_twice() {
    let kills: u32 = std::env::var("TIDEWATER_EXACTLY_ONCE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    crash_loop(kills, |_| 2, true, &[]);
}

/// Rescaling: killed under load on 2 cores, restarted on 1 (partitions, key groups
/// and output positions move to the one core), killed again, restarted on 2, and so
/// on; the results are the same exactly-once results.
#[test]
fn kill_9_and_restart_on_another_core_count_moves_state_exactly_once() {
    let cores = |round| if round % 2 == 0 { 2 } else { 1 };
    crash_loop(4, cores, false, &["--journal-adopt", "false"]);
}

/// Both at once with sealed journal segments adopted as the ledger's data
/// (`--journal-adopt true`, `docs/write-once.md`): kills under load, restarts on
/// 2, 1, 2 cores (a rescale copies the partitions into new adopting logs).
#[test]
fn kill_9_and_rescale_with_adopted_journal_segments_stays_exactly_once() {
    let cores = |round| if round % 2 == 0 { 2 } else { 1 };
    crash_loop(4, cores, false, &["--journal-adopt", "true"]);
}

/// The reference job under load; `kills` SIGKILLs at random moments, restart `r`
/// on `cores(r)` cores (start: `cores(0)`); optionally the newest checkpoint is
/// damaged before the last restart. Then every sink is checked.
/// `extra`: more `serve` arguments, on every start.
fn crash_loop(kills: u32, cores: impl Fn(u32) -> u32, damage: bool, extra: &[&str]) {
    let ch = common::ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Some(&ch.url()), "1s");
    let data = dir.path().join("data");
    let (port, admin) = (common::free_ports(), common::free_ports());
    let serve = |n: u32| {
        let mut args = serve_args(n, &cfg, &data);
        args.extend(extra.iter().map(|a| a.to_string()));
        common::serve_on(&strs(&args), port, admin)
    };
    let bootstrap = format!("127.0.0.1:{port}");
    let (mut server, ..) = serve(cores(0));
    let state = dir.path().join("acked.json");
    let stop = dir.path().join("stop");
    let schema = repo().join("schemas/sensor.avsc");
    let script = repo().join("tests/clients/crash_loop.py");
    let producer = Command::new("python3")
        .arg(&script)
        .args([
            "produce",
            state.to_str().unwrap(),
            "--bootstrap",
            &bootstrap,
        ])
        .args([
            "--schema",
            schema.to_str().unwrap(),
            "--stop",
            stop.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut damaged = None;
    for round in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Between 1.5 and 4 s of load, then SIGKILL at whatever moment that is.
        std::thread::sleep(Duration::from_millis(1_500 + rng % 2_500));
        let _ = server.kill();
        let _ = server.wait();
        if damage && round + 1 == kills {
            damaged = Some(damage_newest_checkpoint(&data));
        }
        let (before, after) = (cores(round), cores(round + 1));
        let (s, _, _, log) = serve(after);
        server = s;
        let lines: Vec<String> = log.try_iter().collect();
        if let Some(id) = damaged {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("checkpoint skipped") && l.contains(&format!("{id:020}"))),
                "recovery names the damaged checkpoint {id}:\n{}",
                lines.join("\n")
            );
        }
        if before != after {
            assert!(
                lines.iter().any(|l| l.contains("rescaled")),
                "a start on {after} cores after {before} says it rescaled:\n{}",
                lines.join("\n")
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop, "").unwrap();
    let out = producer.wait_with_output().unwrap();
    assert!(out.status.success());
    let files = dir.path().join("out");
    let (ok, report) = common::python(
        "crash_loop.py",
        &[
            "verify",
            state.to_str().unwrap(),
            "--bootstrap",
            &bootstrap,
            "--schema",
            schema.to_str().unwrap(),
            "--clickhouse",
            &ch.url(),
            "--files",
            files.to_str().unwrap(),
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        ok,
        "{report}\nproducer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    if extra.contains(&"true") {
        // The data was read back from adopted journal segments, never copied.
        let mixed = data.join("ledger/shard-0/mixed");
        let adopted = std::fs::read_dir(&mixed)
            .unwrap_or_else(|e| panic!("{}: {e}", mixed.display()))
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(adopted > 0, "no segment adopted in {}", mixed.display());
    }
}

/// User + system CPU time of a process so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn checkpoint_now_takes_a_savepoint_that_pruning_keeps() {
    let ch = common::ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    // No periodic checkpoint within the test: only the ones asked for.
    let cfg = config(dir.path(), Some(&ch.url()), "1h");
    let data = dir.path().join("data");
    let args = serve_args(2, &cfg, &data);
    let (mut server, _, admin, _) = common::serve_with_admin(&strs(&args));
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut taken = Vec::new();
    for _ in 0..4 {
        let out = common::tidewater()
            .args(["checkpoint", "--now", "--admin-addr", &admin_addr])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("job device_minute: savepoint"), "{text}");
        taken.push(text);
    }
    let root = data.join("checkpoints/device_minute");
    let kept: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("SAVEPOINT").exists() && e.path().join("MANIFEST").exists())
        .collect();
    // Four savepoints, all kept although only two checkpoints are kept otherwise.
    assert_eq!(kept.len(), 4, "{taken:?}");
    // Idle after savepoints, the server waits on wake-ups: a core that spun (a wait
    // that is always ready) would burn about a CPU-second per second here.
    let before = cpu_seconds(server.id());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(server.id()) - before;
    assert!(used < 1.0, "an idle server used {used:.2} CPU-s in 3 s");
    let _ = server.kill();
    let _ = server.wait();
    // Without --now it refuses, saying why.
    let out = common::tidewater()
        .args(["checkpoint", "--admin-addr", &admin_addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--now"));
}

/// A clean stop takes a checkpoint of everything read, so the next start replays
/// nothing (here no periodic checkpoint is due within the test).
#[test]
fn a_clean_stop_checkpoints_so_a_restart_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), None, "1h");
    let args = serve_args(2, &cfg, &dir.path().join("data"));
    let args = strs(&args);
    let (port, admin) = (common::free_ports(), common::free_ports());
    let (mut server, _, _, first_log) = common::serve_on(&args, port, admin);
    let events = 20_000;
    let out = common::tidewater()
        .args(["loadgen", "--brokers", &format!("127.0.0.1:{port}")])
        .args([
            "--topic",
            "iot-sensor-data",
            "--events",
            &events.to_string(),
        ])
        .args(["--devices", "1000", "--batch-events", "100", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let read =
        |admin: u16| common::metric_sum(&common::scrape(admin), "tidewater_pipeline_records_total");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read(admin) < f64::from(events) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not read every event"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
    let status = server.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let log: Vec<String> = first_log.try_iter().collect();
    let log = log.join("\n");
    assert!(status.success(), "{log}");
    assert!(log.contains("checkpoint taken at shutdown"), "{log}");
    let (mut server, _, _, log) = common::serve_on(&args, port, admin);
    std::thread::sleep(Duration::from_secs(3));
    let replayed = read(admin);
    let lines: Vec<String> = log.try_iter().collect();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        lines.iter().any(|l| l.contains("resuming from checkpoint")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(replayed, 0.0, "records read again after a clean stop");
}
