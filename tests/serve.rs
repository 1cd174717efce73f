//! `tidewater serve` as a user runs it: starts, says ready, stops cleanly on SIGTERM
//! and SIGINT; refuses bad settings and a data directory made for another core count
//! with an error that says what to do.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SMALL: &[&str] = &[
    "--journal-segment-bytes",
    "4194304",
    "--journal-segments",
    "2",
];

fn tidewater() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidewater"));
    c.env("RUST_LOG", "info");
    c
}

/// Starts serve, waits for `ready`, sends `signal`, returns (exit code, stderr).
fn serve_until(signal: i32, args: &[&str]) -> (Option<i32>, String) {
    let mut child = tidewater()
        .arg("serve")
        .args(args)
        .args(SMALL)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" ready") && !line.contains("core ready") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.try_recv().is_err() {
        assert!(Instant::now() < deadline, "serve did not become ready");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited early: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    let mut out = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut out);
    }
    (status.code(), out)
}

#[test]
fn serve_starts_and_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[[topics]]\nname = \"events\"\npartitions = 3\n").unwrap();
    let data = dir.path().join("data");
    let args = [
        "--cores",
        "1",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (code, _) = serve_until(libc::SIGTERM, &args);
    assert_eq!(code, Some(0));
    for p in 0..3 {
        assert!(data
            .join(format!("ledger/shard-0/events-{p}/partition.meta"))
            .is_file());
    }
    // A restart recovers the same directory; SIGINT stops it too.
    let (code, _) = serve_until(libc::SIGINT, &args);
    assert_eq!(code, Some(0));

    // Another core count is refused, saying which count wrote the directory.
    let out = tidewater()
        .args([
            "serve",
            "--cores",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--cores 1"), "{err}");
    }
}

#[test]
fn bad_settings_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "journal_segmnets = 4\n").unwrap();
    let out = tidewater()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("journal_segmnets"),
        "{err}"
    );

    let out = tidewater()
        .args(["serve", "--durability", "sometimes"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("always, interval or never"));

    let out = tidewater()
        .args(["serve", "--config", "/nonexistent/tidewater.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tidewater.toml"));
}
