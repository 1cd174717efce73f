//! `tidewater serve` as a user runs it: starts, says ready, stops cleanly on SIGTERM
//! and SIGINT; refuses bad settings, and a data directory another server is using,
//! with an error that says what to do.

mod common;

use common::tidewater;
use std::path::Path;

/// Starts serve, waits for `ready`, sends `signal`, returns the exit code.
fn serve_until(signal: i32, args: &[&str]) -> Option<i32> {
    let (mut child, _, _) = common::serve(args);
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap().code()
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
    let code = serve_until(libc::SIGTERM, &args);
    assert_eq!(code, Some(0));
    for p in 0..3 {
        assert!(data
            .join(format!("ledger/shard-0/events-{p}/partition.meta"))
            .is_file());
    }
    // A restart recovers the same directory; SIGINT stops it too.
    let code = serve_until(libc::SIGINT, &args);
    assert_eq!(code, Some(0));

    // A second server on the same directory is refused while the first runs,
    // naming the process that holds it.
    let (mut first, _, _) = common::serve(&args);
    let out = tidewater()
        .args([
            "serve",
            "--cores",
            "1",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in use by another Tidewater process")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert_eq!(first.wait().unwrap().code(), Some(0));
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

    // The schema registry's settings and names.
    let job = |extra: &str| {
        format!(
            "[[topics]]\nname = \"in\"\npartitions = 1\n[[jobs]]\nname = \"j\"\nsource = \"in\"\nformat = \"avro-confluent\"\nschema = '{{\"type\":\"record\",\"name\":\"R\",\"fields\":[{{\"name\":\"k\",\"type\":\"string\"}}]}}'\nkey = \"k\"\nevent_time = \"kafka_timestamp\"\nwindow = {{ type = \"tumbling\", size = \"1m\" }}\naggregates = [{{ fn = \"count\", as = \"n\" }}]\n{extra}"
        )
    };
    for (text, flag, says) in [
        (job(""), "none", "schema_registry_addr is \"none\""),
        (job(""), "localhost", "schema_registry_addr \"localhost\""),
        (
            job("[[jobs.sinks]]\ntype = \"topic\"\ntopic = \"_schemas\"\n"),
            "127.0.0.1:0",
            "reserved",
        ),
        (
            "[[topics]]\nname = \"_schemas\"\npartitions = 1\n".to_string(),
            "127.0.0.1:0",
            "reserved",
        ),
        (
            job("").replace("\"name\":\"R\"", "\"name\":\"my-record\""),
            "127.0.0.1:0",
            "not a valid Avro name",
        ),
    ] {
        std::fs::write(&cfg, &text).unwrap();
        let out = tidewater()
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .args(["--schema-registry-addr", flag])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn a_taken_schema_registry_port_stops_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = tidewater()
        .args(["serve", "--cores", "1", "--admin-addr", "127.0.0.1:0"])
        .args([
            "--kafka-addr",
            &format!("127.0.0.1:{}", common::free_ports()),
        ])
        .args(["--schema-registry-addr", &addr])
        .arg("--data-dir")
        .arg(dir.path())
        .args(common::SMALL)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on schema_registry_addr {addr}")),
        "{err}"
    );
}

#[test]
fn a_core_that_cannot_start_stops_the_whole_server() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: needs 2 CPUs");
        return;
    }
    // Core 1's port (base + 1) is taken: core 0 starts, core 1 cannot listen.
    let port = common::free_ports();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_serve("2", port, dir.path());
    // It must exit by itself; a live core 0 beside a dead core 1 would hang here.
    let (status, err) = exits_by_itself(child, "serve kept running with a failed core");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
}

#[test]
fn a_second_server_on_a_taken_port_refuses_to_start() {
    // Per-core listeners do not share their port: a second server on it must fail,
    // not take half of the first one's connections.
    let mut first = common::start("1", 1);
    let dir = tempfile::tempdir().unwrap();
    let second = spawn_serve("1", first.port, dir.path());
    let (status, err) = exits_by_itself(second, "a second server runs on the port");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{}", first.port)),
        "{err}"
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first server stopped"
    );
}

#[test]
fn directories_another_program_made_are_refused_before_anything_is_written() {
    // A Kafka log directory, as data_dir and as journal_dir.
    let kafka = tempfile::tempdir().unwrap();
    std::fs::write(kafka.path().join("meta.properties"), "version=1\n").unwrap();
    std::fs::create_dir(kafka.path().join("events-0")).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("notes.txt"), "mine\n").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let fresh_data = fresh.path().join("data");
    let cases: [(Vec<&str>, &str, &Path); 3] = [
        (
            vec!["--data-dir", kafka.path().to_str().unwrap()],
            "Kafka log directory",
            kafka.path(),
        ),
        (
            vec![
                "--data-dir",
                fresh_data.to_str().unwrap(),
                "--journal-dir",
                kafka.path().to_str().unwrap(),
            ],
            "Kafka log directory",
            kafka.path(),
        ),
        (
            vec!["--data-dir", other.path().to_str().unwrap()],
            "holds nothing of Tidewater's",
            other.path(),
        ),
    ];
    for (args, why, dir) in cases {
        let before = std::fs::read_dir(dir).unwrap().count();
        let out = tidewater().arg("serve").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(why), "{err}");
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            before,
            "nothing written"
        );
    }
}

#[test]
fn a_journal_of_other_settings_exits_4_which_systemd_does_not_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Made with journal segments of 4 MiB (common::SMALL)...
    assert_eq!(
        serve_until(libc::SIGTERM, &["--cores", "1", "--data-dir", data]),
        Some(0)
    );
    // ...and started with 8 MiB ones.
    let out = tidewater()
        .args(["serve", "--cores", "1", "--data-dir", data])
        .args([
            "--journal-segment-bytes",
            "8388608",
            "--journal-segments",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("journal_segment_bytes"), "{err}");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tidewater.service"),
    )
    .unwrap();
    assert!(unit.contains("RestartPreventExitStatus=2 4"));
}

#[test]
fn partitions_of_no_topic_are_kept_and_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cfg_path = cfg.to_str().unwrap();
    std::fs::write(&cfg, "[[topics]]\nname = \"events\"\npartitions = 2\n").unwrap();
    let args = ["--cores", "1", "--config", cfg_path, "--data-dir", data];
    assert_eq!(serve_until(libc::SIGTERM, &args), Some(0));
    // The topic taken out of the config: its partitions stay, and the start says so.
    std::fs::write(&cfg, "[[topics]]\nname = \"other\"\npartitions = 1\n").unwrap();
    let (mut child, _, log) = common::serve(&args);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let lines: Vec<String> = log.try_iter().collect();
    assert!(
        lines.iter().any(
            |l| l.contains("WARN") && l.contains("belong to no topic, e.g. events-0, events-1")
        ),
        "{}",
        lines.join("\n")
    );
    assert!(Path::new(data).join("ledger/shard-0/events-1").is_dir());
}

/// One HTTP/1.0 request to the admin listener: (status, body).
fn admin(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(c, "{method} {path} HTTP/1.0\r\n{auth}\r\n").unwrap();
    common::http_answers(&mut c, 1).remove(0)
}

#[test]
fn the_admin_token_guards_savepoints_and_leaves_metrics_open() {
    let dir = tempfile::tempdir().unwrap();
    let token = "5f0e8a1c2b7d4e9f8a6b3c1d0e2f4a5b";
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let cfg = dir.path().join("job.toml");
    let job = r#"[[topics]]
name = "in"
partitions = 1

[[jobs]]
name = "j"
source = "in"
format = "json"
key = "k"
event_time = "kafka_timestamp"
window = { type = "tumbling", size = "1m" }
checkpoint_interval = "1h"
aggregates = [{ fn = "count", as = "n" }]
"#;
    std::fs::write(&cfg, job).unwrap();
    let short = dir.path().join("short.token");
    std::fs::write(&short, "letmein\n").unwrap();
    let out = tidewater()
        .args(["serve", "--admin-token-file"])
        .arg(&short)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    let data = dir.path().join("data");
    let (child, _, port, _log) = common::serve_with_admin(&[
        "--cores",
        "1",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    let _server = common::KilledOnDrop(child);
    assert_eq!(admin(port, "GET", "/health", None).0, 200, "open");
    assert_eq!(admin(port, "GET", "/metrics", None).0, 200, "open");
    assert_eq!(admin(port, "POST", "/checkpoint", None).0, 401);
    let wrong = Some("5f0e8a1c2b7d4e9f8a6b3c1d0e2f4a5c");
    assert_eq!(admin(port, "POST", "/checkpoint", wrong).0, 401);
    let (_, metrics) = admin(port, "GET", "/metrics", None);
    assert_eq!(
        common::metric_sum(&metrics, "tidewater_admin_auth_failures_total"),
        2.0,
        "both refusals counted"
    );
    // The CLI with the token file takes a savepoint; without it, it is refused.
    let addr = format!("127.0.0.1:{port}");
    let out = tidewater()
        .args(["checkpoint", "--now", "--admin-addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = tidewater()
        .args([
            "checkpoint",
            "--now",
            "--admin-addr",
            &addr,
            "--admin-token-file",
        ])
        .arg(&token_file)
        .output()
        .unwrap();
    let said = common::succeeded(out);
    assert!(said.contains("savepoint"), "{said}");
    assert_eq!(admin(port, "POST", "/checkpoint", Some(token)).0, 202);
}

/// `serve` on `cores` with its Kafka listener on `port` and its data in `dir`, its
/// stderr piped.
fn spawn_serve(cores: &str, port: u16, dir: &std::path::Path) -> std::process::Child {
    tidewater()
        .args(["serve", "--cores", cores, "--admin-addr", "127.0.0.1:0"])
        .args(["--kafka-addr", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args(common::SMALL)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// How `child` (its stderr piped) ended by itself within 60 s, and its stderr;
/// `why` when it did not (it is killed).
fn exits_by_itself(child: std::process::Child, why: &str) -> (std::process::ExitStatus, String) {
    let mut child = common::KilledOnDrop(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "{why}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

/// Whether a new connection to `port` answers an ApiVersions request.
fn answers_api_versions(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    // ApiVersions v0: size, api key 18, version 0, correlation id 7, client id "t".
    let request = [0, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 7, 0, 1, b't'];
    let mut size = [0u8; 4];
    s.write_all(&request).is_ok() && s.read_exact(&mut size).is_ok()
}

#[test]
fn an_ip_that_opens_connections_too_fast_is_refused_and_counted() {
    let server = common::start_with("1", 1, &["--connection-creation-rate-per-ip", "5"]);
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as usize
    };
    let first = second();
    let answered = (0..20)
        .filter(|_| answers_api_versions(server.port))
        .count();
    // Five in each second the twenty connections spanned (usually one or two).
    let seconds = second() - first + 1;
    assert!(
        answered >= 5 && answered <= 5 * seconds,
        "{answered} of 20 answered in {seconds} s"
    );
    let text = common::scrape_when(server.admin, |t| {
        common::metric_sum(t, "tidewater_kafka_connections_throttled_total")
            >= (20 - answered) as f64
    });
    let throttled = common::metric_sum(&text, "tidewater_kafka_connections_throttled_total");
    assert_eq!(throttled as usize, 20 - answered, "{text}");
    assert_eq!(
        common::metric_sum(&text, "tidewater_kafka_connection_rate_ips"),
        1.0
    );
    // The next second lets it in again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(answers_api_versions(server.port));
}
