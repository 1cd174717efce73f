//! What the whole-server tests share: starting `tidewater serve` on free ports and
//! waiting until it says it is ready.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod pki;
pub mod requests;

use std::io::{BufRead, BufReader, Write};
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
    // Never the default 8081: tests run side by side. A test of the registry
    // passes --schema-registry-addr, which wins.
    c.env("TIDEWATER_SCHEMA_REGISTRY_ADDR", "127.0.0.1:0");
    c
}

/// Two free consecutive ports (per-core listeners use PORT and PORT+1), below the
/// ephemeral range so a client's socket never takes one between restarts.
pub fn free_ports() -> u16 {
    tidewater_tools::ports::free(2).expect("free ports")
}

/// Starts `tidewater serve ARGS` (plus SMALL and a free --kafka-addr) and waits for
/// its `ready` line. Returns the child, its base port, and its stderr so far.
pub fn serve(args: &[&str]) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let (child, port, _, log) = serve_with_admin(args);
    (child, port, log)
}

/// [`serve`], also returning the admin (metrics) port.
pub fn serve_with_admin(args: &[&str]) -> (Child, u16, u16, std::sync::mpsc::Receiver<String>) {
    serve_on(args, free_ports(), free_ports())
}

/// [`serve`] on given Kafka and admin ports (a restart on the same ports).
pub fn serve_on(
    args: &[&str],
    port: u16,
    admin: u16,
) -> (Child, u16, u16, std::sync::mpsc::Receiver<String>) {
    let kafka_addr = format!("127.0.0.1:{port}");
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--kafka-addr", &kafka_addr])
        .collect();
    let (child, log) = serve_exactly(&args, admin);
    (child, port, admin, log)
}

/// `tidewater serve ARGS` plus SMALL and `--admin-addr` (the listeners are ARGS' or
/// the config's), once its `ready` line is out; and its stderr so far.
pub fn serve_exactly(args: &[&str], admin: u16) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = tidewater()
        .arg("serve")
        .args(args)
        .args(SMALL)
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
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
    (child, log_rx)
}

/// Runs a client script from tests/clients with python3; (success, stdout + stderr).
pub fn python(script: &str, args: &[&str]) -> (bool, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A real ClickHouse server (Debian's `clickhouse-server`) of its own, on free
/// loopback ports, its data in a temporary directory. Stops when dropped.
pub struct ClickHouse {
    child: Option<Child>,
    pub http_port: u16,
    dir: tempfile::TempDir,
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        let installed = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|d| d.join("clickhouse-server").is_file())
        });
        assert!(
            installed,
            "clickhouse-server is not installed: scripts/test installs it (apt-get install clickhouse-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_ports();
        let tcp_port = free_ports();
        std::fs::write(
            dir.path().join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>log/server.log</log><errorlog>log/error.log</errorlog><console>0</console></logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>./data/</path>
    <tmp_path>./tmp/</tmp_path>
    <user_files_path>./user_files/</user_files_path>
    <format_schema_path>./format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#,
        )
        .unwrap();
        let mut ch = ClickHouse {
            child: None,
            http_port,
            dir,
        };
        ch.restart();
        ch
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again, on the same data) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("clickhouse-server")
            .arg("--config-file=config.xml")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.ends_with("Ok.\n") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "clickhouse-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server, as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The text of `GET /metrics` on an admin port.
pub fn scrape(admin: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Every answer on one connection, read until the server closes it or `want`
/// answers came: (status, body) pairs.
pub fn http_answers(stream: &mut std::net::TcpStream, want: usize) -> Vec<(u16, String)> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while got.len() < want {
        // Parse what is there: "HTTP/1.1 NNN ...\r\n...Content-Length: N\r\n\r\nbody".
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = &text[..head_end];
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= head_end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = text[head_end + 4..head_end + 4 + len].to_string();
                got.push((status, body));
                buf.drain(..head_end + 4 + len);
                continue;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    got
}

/// The first scrape `ready` holds for, or the last one after 10 s: the cores copy
/// their counters into the registry every 500 ms, not as they move.
pub fn scrape_when(admin: u16, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(admin);
        if ready(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The sum of every sample of `name` (all labels) in a scrape.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A server on one topic `events`, stopped (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    /// Its stderr, line by line.
    pub log: std::sync::mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server again on its ports, data directory and config, on `cores`
    /// with `extra` flags, once it has stopped (or been killed).
    pub fn start_again(&mut self, cores: &str, extra: &[&str]) {
        let args = server_args(self.dir.path(), cores, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, _, _, log) = serve_on(&args, self.port, self.admin);
        self.child = child;
        self.log = log;
    }

    /// kill -9, then [`Server::start_again`].
    pub fn kill_and_start_again(&mut self, cores: &str, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.start_again(cores, extra);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags of a [`Server`] in `dir` (its `t.toml` and `data`), on `cores`, then
/// `extra`.
fn server_args(dir: &std::path::Path, cores: &str, extra: &[&str]) -> Vec<String> {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut args = vec![
        "--cores".to_string(),
        cores.to_string(),
        "--config".to_string(),
        path("t.toml"),
        "--data-dir".to_string(),
        path("data"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Starts a server on `cores` with topic `events` of `partitions` partitions.
pub fn start(cores: &str, partitions: u32) -> Server {
    start_with(cores, partitions, &[])
}

/// [`start`] with more flags.
pub fn start_with(cores: &str, partitions: u32, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!("[[topics]]\nname = \"events\"\npartitions = {partitions}\n"),
    )
    .unwrap();
    let args = server_args(dir.path(), cores, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (child, port, admin, log) = serve_with_admin(&args);
    Server {
        child,
        port,
        admin,
        log,
        dir,
    }
}

/// A server that is stopped however the test ends.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// kcat with `flags` then `args`, stopped after 60 s: an answer stuck on its way
/// must fail the test, not hang it.
pub fn kcat_within(flags: &[String], args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("timeout")
        .args(["60", "kcat"])
        .args(flags)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.unwrap_or("").to_string();
    let feeding = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    feeding.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tidewater users ARGS` with `stdin`: (success, what it said).
pub fn users(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = tidewater()
        .arg("users")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The standard output of a command that must have succeeded; its outputs when it
/// did not.
pub fn succeeded(out: std::process::Output) -> String {
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// Two cores where the machine has them, else one.
pub fn cores() -> &'static str {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        "2"
    } else {
        "1"
    }
}

/// Runs kcat; (success, stdout, stderr).
pub fn kcat(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a whole topic from the beginning with kcat, one line per message in `format`.
pub fn consume(broker: &str, topic: &str, format: &str) -> String {
    let (ok, out, err) = kcat(
        &[
            "-C",
            "-b",
            broker,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-f",
            format,
        ],
        None,
    );
    assert!(ok, "consume failed: {err}");
    out
}
