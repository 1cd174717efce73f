//! Crash test: a child process appends under `durability = always` and reports every
//! completed append; it is killed with SIGKILL at random moments. After each kill the
//! log is reopened (recovery runs) and every reported offset must read back
//! byte-identical, with every partition dense from its start to its high watermark.
//!
//! `TIDEWATER_CRASH_ROUNDS` sets the number of rounds (default 20; the long variant is
//! run by hand with more).

use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tidewater_tools::logtool;

const SMALL: &[&str] = &[
    "--durability",
    "always",
    "--journal-segment-bytes",
    "1048576",
    "--journal-segments",
    "3",
    "--journal-flush-bytes-max",
    "131072",
    "--batch-bytes-max",
    "65536",
    "--ledger-segment-bytes",
    "524288",
    "--ledger-flush-bytes",
    "65536",
    "--ledger-flush-interval-ms",
    "20",
];

/// Starts `tidewater log append` for round `run` and kills it after `after`.
/// Odd rounds append to one partition from 64 tasks, so group commits fill more
/// than half a journal write and the ledger takes them whole; even rounds mix
/// three partitions, whose frames the ledger copies.
/// Returns every (partition, offset, index) it reported.
fn append_then_kill(dir: &Path, run: u32, after: Duration, extra: &[&str]) -> Vec<(u32, u64, u64)> {
    let (partitions, tasks) = if run % 2 == 1 {
        ("1", "64")
    } else {
        ("3", "8")
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args([
            "log",
            "append",
            "--partitions",
            partitions,
            "--tasks-per-partition",
            tasks,
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--run", &run.to_string()])
        .args(SMALL)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidewater log append");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 4 && f[0] == "ack" {
                acks.push((
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                ));
            }
        }
        acks
    });
    // Wait for the first ack, so every round kills a process that is appending.
    let start = Instant::now();
    std::thread::sleep(after);
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    let acks = reader.join().unwrap();
    if acks.is_empty() {
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(50) || status.code().is_none(),
            "child reported nothing and exited {status:?}: {err}"
        );
    }
    acks
}

/// Opens the log in this process (recovery) and checks everything acknowledged.
fn verify(dir: &Path, acked: &HashMap<(u32, u64), u64>, adopt: bool) -> usize {
    let mut cfg = tidewater_io::LogConfig::new(dir.join("journal"), dir.join("ledger"), 0);
    cfg.journal_adopt = if adopt {
        tidewater_io::JournalAdopt::On
    } else {
        tidewater_io::JournalAdopt::Off
    };
    let mut it = SMALL.iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let n = || v.parse::<u64>().unwrap();
        match *k {
            "--journal-segment-bytes" => cfg.journal_segment_bytes = n(),
            "--journal-segments" => cfg.journal_segments = n() as u32,
            "--journal-flush-bytes-max" => cfg.journal_flush_bytes_max = n() as usize,
            "--batch-bytes-max" => cfg.batch_bytes_max = n() as usize,
            "--ledger-segment-bytes" => cfg.ledger_segment_bytes = n(),
            "--ledger-flush-bytes" => cfg.ledger_flush_bytes = n() as usize,
            "--ledger-flush-interval-ms" => cfg.ledger_flush_interval_ms = n(),
            _ => {}
        }
    }
    let acked = acked.clone();
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async move {
            let (log, report) = tidewater_io::ShardLog::open(cfg).await.unwrap();
            let parts = logtool::check(&log)
                .await
                .unwrap_or_else(|e| panic!("log inconsistent: {e}"));
            let mut by_offset: HashMap<(u32, u64), &tidewater_io::Entry> = HashMap::new();
            for p in &parts {
                for e in &p.entries {
                    by_offset.insert((p.id, e.base_offset), e);
                }
            }
            for (&(p, offset), &index) in &acked {
                let e = by_offset.get(&(p, offset)).unwrap_or_else(|| {
                    panic!(
                        "acknowledged offset {offset} of partition {p} is missing; recovery: {:?}",
                        report.dropped
                    )
                });
                assert_eq!(
                    e.payload,
                    logtool::payload(p, index),
                    "partition {p} offset {offset}"
                );
            }
            log.close().await.unwrap();
            parts.iter().map(|p| p.entries.len()).sum()
        })
}

/// The copy path: each frame written to the journal, then to a ledger segment.
#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    crash_rounds(&["--journal-adopt", "false"]);
}

/// The same with sealed journal segments adopted as the ledger's data instead of
/// copied (`--journal-adopt true`, `docs/write-once.md`): a kill may land between
/// any two steps of an adoption.
#[test]
fn sigkill_with_adopted_journal_segments_loses_nothing_acknowledged() {
    crash_rounds(&["--journal-adopt", "true"]);
}

fn crash_rounds(extra: &[&str]) {
    let adopt = extra.contains(&"true");
    let rounds: u32 = std::env::var("TIDEWATER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x71de);
    let mut acked: HashMap<(u32, u64), u64> = HashMap::new();
    let mut kills_with_acks = 0;
    for run in 0..rounds {
        let after = Duration::from_millis(rng.gen_range(150..900));
        let acks = append_then_kill(dir.path(), run, after, extra);
        if !acks.is_empty() {
            kills_with_acks += 1;
        }
        for (p, offset, index) in acks {
            assert!(
                acked.insert((p, offset), index).is_none(),
                "offset {offset} of partition {p} acknowledged twice"
            );
        }
        let stored = verify(dir.path(), &acked, adopt);
        assert!(stored >= acked.len());
    }
    assert!(
        kills_with_acks * 2 > rounds,
        "most rounds appended before the kill"
    );
    assert!(
        acked.len() > 1000,
        "{} appends acknowledged in all",
        acked.len()
    );
    if adopt {
        // Every byte was written once: the data is in adopted journal segments,
        // no partition directory holds a copy.
        let ledger = dir.path().join("ledger");
        let count = |d: &Path, ext: &str| {
            std::fs::read_dir(d)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == ext)
                })
                .count()
        };
        assert!(
            count(&ledger.join("mixed"), "seg") > 3,
            "segments were adopted"
        );
        for e in std::fs::read_dir(&ledger).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() && !path.ends_with("mixed") {
                assert_eq!(count(&path, "log"), 0, "{} holds a copy", path.display());
            }
        }
    }
}
