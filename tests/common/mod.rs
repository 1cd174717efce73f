//! What the whole-server tests share: starting `tidewater serve` on free ports and
//! waiting until it says it is ready.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Small journal segments, so start-up zero-fills little.
pub const SMALL: &[&str] = &[
    "--journal-segment-bytes",
    "4194304",
    "--journal-segments",
    "2",
];

pub fn tidewater() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidewater"));
    c.env("RUST_LOG", "info");
    c
}

/// Two free consecutive ports (per-core listeners use PORT and PORT+1).
pub fn free_ports() -> u16 {
    for _ in 0..100 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < 65000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free ports");
}

/// Starts `tidewater serve ARGS` (plus SMALL and a free --kafka-addr) and waits for
/// its `ready` line. Returns the child, its base port, and its stderr so far.
pub fn serve(args: &[&str]) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let port = free_ports();
    let mut child = tidewater()
        .arg("serve")
        .args(args)
        .args(SMALL)
        .args(["--kafka-addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" ready") && !line.contains("core ready") {
                let _ = ready_tx.send(());
            }
            let _ = log_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_rx.try_recv().is_err() {
        assert!(Instant::now() < deadline, "serve did not become ready");
        if let Some(status) = child.try_wait().unwrap() {
            let log: Vec<String> = log_rx.try_iter().collect();
            panic!("serve exited early: {status:?}\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port, log_rx)
}
