//! SASL listeners with real clients: kcat and confluent-kafka (librdkafka) and
//! kafka-python authenticate with SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN over
//! SASL_SSL and SASL_PLAINTEXT; users are added with `tidewater users` while the
//! server is stopped and with Kafka's AlterUserScramCredentials while it runs (on
//! one core, used on the other); a wrong password, an unknown user and a client that
//! skips SASL each get a clear failure, counted, and the server stays up; failed
//! logins are delayed and limited per IP; sessions are renewed (KIP-368).

mod common;

use common::pki::Pki;

/// kcat's flags for SASL as `user` with `mechanism`; over TLS when `ca` is given.
fn kcat_sasl(ca: Option<&str>, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    let protocol = if ca.is_some() {
        "SASL_SSL"
    } else {
        "SASL_PLAINTEXT"
    };
    let mut flags = vec![
        format!("security.protocol={protocol}"),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ];
    if let Some(ca) = ca {
        flags.push(format!("ssl.ca.location={ca}"));
    }
    flags
        .into_iter()
        .flat_map(|f| ["-X".to_string(), f])
        .collect()
}

/// Waits until the metric `name` summed over cores is at least `least` (or the
/// wait ends); its value.
fn metric_at_least(admin: u16, name: &str, least: f64) -> f64 {
    let text = common::scrape_when(admin, |t| common::metric_sum(t, name) >= least);
    common::metric_sum(&text, name)
}

/// What a server logged, read as it comes.
struct Log {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Log {
    fn new(rx: std::sync::mpsc::Receiver<String>) -> Log {
        Log {
            rx,
            seen: String::new(),
        }
    }

    /// Whether `needle` was logged, or is within 10 s.
    fn wait_for(&mut self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// The SASL_PLAINTEXT listener both tests use: SCRAM-SHA-512, and PLAIN allowed.
fn lan_listener(port: u16) -> String {
    format!(
        r#"
[[listeners]]
name = "LAN"
addr = "127.0.0.1:{port}"
protocol = "SASL_PLAINTEXT"
sasl_mechanisms = ["SCRAM-SHA-512", "PLAIN"]
sasl_plain_without_tls = true
"#
    )
}

/// A server on topic `events` (`partitions`) with `listeners`, its config and data
/// in the PKI's directory (relative paths name the PKI's files), and `flags`.
fn serve(
    pki: &Pki,
    partitions: u32,
    listeners: &str,
    flags: &[&str],
) -> (common::KilledOnDrop, u16, std::sync::mpsc::Receiver<String>) {
    let cfg = pki.dir.path().join("sasl.toml");
    let text = format!("[[topics]]\nname = \"events\"\npartitions = {partitions}\n{listeners}");
    std::fs::write(&cfg, text).unwrap();
    let admin = common::free_ports();
    let data = pki.dir.path().join("data");
    let mut args = vec![
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let (child, log) = common::serve_exactly(&args, admin);
    (common::KilledOnDrop(child), admin, log)
}

#[test]
fn sasl_listeners_authenticate_real_clients_and_refuse_the_rest() {
    let pki = Pki::new();
    let base = tidewater_tools::ports::free(6).expect("free ports");
    let (internal, sasl_ssl, sasl_plain) = (base, base + 2, base + 4);
    let data = pki.dir.path().join("data");
    let data = data.to_str().unwrap();

    // A user before the first start, as an operator adds one.
    let (ok, said) = common::users(
        &["add", "alice", "--password-stdin", "--data-dir", data],
        "alice-secret\n",
    );
    assert!(ok && said.contains("user alice added"), "{said}");
    let (ok, said) = common::users(&["list", "--data-dir", data], "");
    assert!(
        ok && said.contains("alice\tSCRAM-SHA-256 (iterations 4096), SCRAM-SHA-512"),
        "{said}"
    );
    let (ok, said) = common::users(&["add", "x", "--password-stdin", "--data-dir", data], "\n");
    assert!(!ok && said.contains("empty"), "{said}");
    let text = std::fs::read_to_string(pki.dir.path().join("data/users.json")).unwrap();
    assert!(!text.contains("alice-secret"), "no password on disk");

    let listeners = format!(
        r#"
[[listeners]]
name = "INTERNAL"
addr = "127.0.0.1:{internal}"

[[listeners]]
name = "EXTERNAL"
addr = "127.0.0.1:{sasl_ssl}"
protocol = "SASL_SSL"
sasl_mechanisms = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
tls_cert_file = "server.pem"
tls_key_file = "server.key"
{}"#,
        lan_listener(sasl_plain)
    );
    let (mut server, admin, log) = serve(&pki, 2, &listeners, &["--cores", common::cores()]);
    let ca = pki.path("ca.pem");
    let external = format!("127.0.0.1:{sasl_ssl}");
    let lan = format!("127.0.0.1:{sasl_plain}");

    // The users file belongs to the running server.
    let (ok, said) = common::users(
        &["add", "carol", "--password-stdin", "--data-dir", data],
        "pw\n",
    );
    assert!(!ok && said.contains("AlterUserScramCredentials"), "{said}");

    // kcat with each mechanism over SASL_SSL, and SCRAM over SASL_PLAINTEXT.
    let produce = |flags: &[String], broker: &str, lines: &str| {
        let args = ["-P", "-b", broker, "-t", "events", "-p", "-1"];
        let (ok, _, err) = common::kcat_within(flags, &args, Some(lines));
        assert!(ok, "{flags:?}: {err}");
    };
    let scram512 = kcat_sasl(Some(&ca), "SCRAM-SHA-512", "alice", "alice-secret");
    produce(&scram512, &external, "k512-a\nk512-b\n");
    let scram256 = kcat_sasl(Some(&ca), "SCRAM-SHA-256", "alice", "alice-secret");
    produce(&scram256, &external, "k256\n");
    let plain = kcat_sasl(Some(&ca), "PLAIN", "alice", "alice-secret");
    produce(&plain, &external, "kplain\n");
    let lan_scram = kcat_sasl(None, "SCRAM-SHA-512", "alice", "alice-secret");
    produce(&lan_scram, &lan, "klan\n");

    // confluent-kafka and kafka-python.
    let python = |args: &[&str]| {
        let (ok, said) = common::python("sasl.py", args);
        assert!(ok, "{args:?}: {said}");
        said
    };
    let said = python(&[
        "confluent-produce",
        &external,
        "SASL_SSL",
        &ca,
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
        "events",
        "3",
        "0",
    ]);
    assert!(said.contains("sent 3"), "{said}");
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let said = python(&[
            "python-produce",
            &external,
            "SASL_SSL",
            &ca,
            mechanism,
            "alice",
            "alice-secret",
            "events",
            "2",
        ]);
        assert!(said.contains("sent 2"), "{said}");
    }
    // A client from before KIP-152: SaslHandshake v0, then a bare PLAIN token.
    let said = python(&["raw-v0", &lan, "alice", "alice-secret"]);
    assert!(said.contains("metadata after v0"), "{said}");

    // A user added through Kafka's API on one listener, used on another (and on
    // every core), then deleted.
    let plain_broker = format!("127.0.0.1:{internal}");
    let said = python(&["users", &plain_broker, "add", "bob", "bob-secret"]);
    assert!(said.contains("added bob"), "{said}");
    let said = python(&["users", &plain_broker, "describe", "bob"]);
    assert!(said.contains("bob SCRAM_SHA_512 4096"), "{said}");
    let said = python(&[
        "confluent-produce",
        &external,
        "SASL_SSL",
        &ca,
        "SCRAM-SHA-512",
        "bob",
        "bob-secret",
        "events",
        "2",
        "0",
    ]);
    assert!(said.contains("sent 2"), "{said}");
    let said = python(&["users", &plain_broker, "delete", "bob"]);
    assert!(said.contains("deleted bob"), "{said}");

    let consume = [
        "-C",
        "-b",
        &external,
        "-t",
        "events",
        "-o",
        "beginning",
        "-e",
    ];
    let (ok, out, err) = common::kcat_within(&scram512, &consume, None);
    assert!(ok, "{err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let want = [
        "alice-0",
        "alice-1",
        "alice-2",
        "bob-0",
        "bob-1",
        "k256",
        "k512-a",
        "k512-b",
        "klan",
        "kplain",
        "py-alice-0",
        "py-alice-0",
        "py-alice-1",
        "py-alice-1",
    ];
    assert_eq!(got, want);

    // The load generator with SCRAM over TLS, on every core (a password file).
    let password = pki.dir.path().join("alice.password");
    std::fs::write(&password, "alice-secret\n").unwrap();
    let out = common::tidewater()
        .args(["loadgen", "--brokers", &external, "--topic", "events"])
        .args(["--events", "1000", "--devices", "50", "--quiet"])
        .args(["--tls-ca-file", &ca, "--sasl-mechanism", "SCRAM-SHA-512"])
        .args(["--sasl-username", "alice", "--sasl-password-file"])
        .arg(&password)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("acked 1000"),
        "{said}{err}"
    );
    std::fs::write(&password, "wrong\n").unwrap();
    let out = common::tidewater()
        .args([
            "loadgen",
            "--brokers",
            &lan,
            "--topic",
            "events",
            "--events",
            "10",
        ])
        .args([
            "--quiet",
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "alice",
        ])
        .arg("--sasl-password-file")
        .arg(&password)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SASL authentication failed"),
        "{err}"
    );

    // The wrong clients: each fails, is counted, and the server stays up.
    let failures = "tidewater_kafka_sasl_authentication_failures_total";
    let violations = "tidewater_kafka_protocol_violations_total";
    let before = common::metric_sum(&common::scrape(admin), failures);
    let said = python(&[
        "fails",
        &external,
        "SASL_SSL",
        &ca,
        "SCRAM-SHA-512",
        "alice",
        "wrong",
    ]);
    assert!(said.contains("Authentication failed"), "{said}");
    let said = python(&["fails", &external, "SASL_SSL", &ca, "PLAIN", "mallory", "x"]);
    assert!(said.contains("Authentication failed"), "{said}");
    let said = python(&[
        "fails",
        &external,
        "SASL_SSL",
        &ca,
        "SCRAM-SHA-512",
        "bob",
        "bob-secret",
    ]);
    assert!(said.contains("Authentication failed"), "deleted: {said}");
    assert!(metric_at_least(admin, failures, before + 3.0) >= before + 3.0);
    // Each client that skips SASL is closed and counted on its own.
    let tls_only = pki.kcat_tls(None);
    for (what, flags, broker) in [
        ("no SASL on a SASL listener", vec![], &lan),
        ("TLS without SASL", tls_only, &external),
    ] {
        let before = common::metric_sum(&common::scrape(admin), violations);
        let (ok, out, err) = common::kcat_within(&flags, &["-L", "-b", broker, "-m", "3"], None);
        assert!(!ok, "{what}: {out}{err}");
        let after = metric_at_least(admin, violations, before + 1.0);
        assert!(after > before, "{what}: not counted");
    }
    let said = python(&["raw-early", &lan]);
    assert!(said.contains("closed 2"), "{said}");
    // Bad changes get Kafka's errors.
    let said = python(&["users", &plain_broker, "errors", "erin"]);
    assert!(
        said.contains("erin refused UNACCEPTABLE_CREDENTIAL"),
        "{said}"
    );
    assert!(said.contains("nobody refused RESOURCE_NOT_FOUND"), "{said}");
    assert!(server.0.try_wait().unwrap().is_none(), "the server stopped");
    let mut log = Log::new(log);
    for line in [
        "wrong password for user \"alice\"",
        "Metadata before SASL authentication",
        "Produce before SASL authentication",
        "outside 8..=524288",
        "listener=\"LAN\"",
    ] {
        assert!(log.wait_for(line), "no {line:?} in\n{}", log.seen);
    }
    assert!(!log.seen.contains("alice-secret"), "a password in the log");

    // A user added while the server runs is on disk once the answer came: it is
    // there after a kill -9.
    let said = python(&["users", &plain_broker, "add", "dave", "dave-secret"]);
    assert!(said.contains("added dave"), "{said}");
    drop(server);
    let (ok, said) = common::users(&["list", "--data-dir", data], "");
    assert!(
        ok && said.contains("alice\t") && said.contains("dave\tSCRAM-SHA-512"),
        "{said}"
    );
    assert!(!said.contains("bob"), "{said}");
    let (ok, said) = common::users(&["remove", "dave", "--data-dir", data], "");
    assert!(ok, "{said}");
    let (ok, said) = common::users(&["list", "--data-dir", data], "");
    assert!(ok && !said.contains("dave"), "{said}");
}

#[test]
fn failed_logins_wait_are_limited_per_ip_and_sessions_are_renewed() {
    let pki = Pki::new();
    let data = pki.dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, said) = common::users(
        &[
            "add",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password-stdin",
            "--data-dir",
            data,
        ],
        "alice-secret\n",
    );
    assert!(ok, "{said}");
    let (ok, said) = common::users(
        &["add", "eve", "--password-stdin", "--data-dir", data],
        "eve-secret\n",
    );
    assert!(ok, "{said}");
    let port = common::free_ports();
    let flags = [
        "--cores",
        "1",
        "--connections-max-reauth-ms",
        "1500",
        "--failed-authentications-per-ip-per-minute",
        "3",
    ];
    let (_server, admin, log) = serve(&pki, 1, &lan_listener(port), &flags);
    let broker = format!("127.0.0.1:{port}");

    // librdkafka renews its session before it ends and keeps producing.
    let (ok, said) = common::python(
        "sasl.py",
        &[
            "confluent-produce",
            &broker,
            "SASL_PLAINTEXT",
            "-",
            "SCRAM-SHA-512",
            "alice",
            "alice-secret",
            "events",
            "10",
            "5",
        ],
    );
    assert!(ok && said.contains("sent 10"), "{said}");
    let renewed = "tidewater_kafka_sasl_reauthentications_total";
    assert!(metric_at_least(admin, renewed, 1.0) >= 1.0);
    // A connection keeps its principal: authenticating again as another user fails
    // and closes it.
    let (ok, said) = common::python(
        "sasl.py",
        &[
            "raw-reauth",
            &broker,
            "alice",
            "alice-secret",
            "eve",
            "eve-secret",
        ],
    );
    assert!(ok && said.contains("reauth error 58 closed True"), "{said}");

    // Failed logins from one IP: each answered after the delay, with
    // SASL_AUTHENTICATION_FAILED (58), and the connection closed; past the limit
    // even the right password fails until the minute ends. (The limit counts per
    // minute of the clock: start early in one.)
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 40 {
        std::thread::sleep(std::time::Duration::from_secs(61 - second));
    }
    let (ok, said) = common::python("sasl.py", &["raw-wrong", &broker, "alice", "wrong", "4"]);
    assert!(ok, "{said}");
    for line in said.lines().filter(|l| l.starts_with("attempt")) {
        let took: f64 = line
            .split(" took ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            line.contains("error 58") && line.ends_with("closed True"),
            "{line}"
        );
        assert!(took >= 0.09, "answered without the delay: {line}");
    }
    assert_eq!(said.lines().filter(|l| l.starts_with("attempt")).count(), 4);
    let (ok, said) = common::python(
        "sasl.py",
        &["raw-wrong", &broker, "alice", "alice-secret", "1"],
    );
    assert!(
        ok && said.contains("error 58"),
        "the limit lets the right password in: {said}"
    );
    let mut log = Log::new(log);
    for line in [
        "re-authentication as User:eve",
        "failed_authentications_per_ip_per_minute",
    ] {
        assert!(log.wait_for(line), "no {line:?} in\n{}", log.seen);
    }
}
