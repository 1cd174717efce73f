//! TLS listeners with real clients: kcat (librdkafka on OpenSSL) and kafka-python
//! (Python's ssl) produce and read over `SSL` with client certificates, beside a
//! PLAINTEXT listener; the wrong clients (no certificate, an untrusted or expired
//! one, plaintext on the TLS port, TLS on the plaintext port) fail and the server
//! stays up; SIGHUP swaps the certificate without closing connections. The
//! certificates are made by `openssl`, as docs/security.md shows.

mod common;

use common::pki::Pki;

use std::process::Command;

/// A server with a PLAINTEXT listener on `plain` and an SSL one (client certificates
/// required) on `tls`, each core on its port + its number.
fn start(pki: &Pki, cores: &str, plain: u16, tls: u16) -> (std::process::Child, u16, Receiver) {
    let cfg = pki.dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[topics]]
name = "events"
partitions = 2

[[listeners]]
name = "INTERNAL"
addr = "127.0.0.1:{plain}"

[[listeners]]
name = "EXTERNAL"
addr = "127.0.0.1:{tls}"
protocol = "SSL"
tls_cert_file = "server.pem"
tls_key_file = "server.key"
tls_client_ca_file = "ca.pem"
"#
        ),
    )
    .unwrap();
    let admin = common::free_ports();
    let (child, log) = serve_in(pki, &cfg, &["--cores", cores], admin);
    (child, admin, log)
}

type Receiver = std::sync::mpsc::Receiver<String>;

/// A one-core server whose config (in the PKI's directory, so its relative paths
/// name the PKI's files) is `config`, with `extra` flags and its admin listener on
/// `admin`.
fn start_one(
    pki: &Pki,
    config: &str,
    extra: &[&str],
    admin: u16,
) -> (std::process::Child, Receiver) {
    let cfg = pki.dir.path().join("one.toml");
    std::fs::write(&cfg, config).unwrap();
    let kafka = format!("127.0.0.1:{}", common::free_ports());
    let mut args = vec!["--cores", "1", "--kafka-addr", &kafka];
    args.extend_from_slice(extra);
    serve_in(pki, &cfg, &args, admin)
}

/// `serve` with the config `cfg`, its data in the PKI's directory, and `args`.
fn serve_in(
    pki: &Pki,
    cfg: &std::path::Path,
    args: &[&str],
    admin: u16,
) -> (std::process::Child, Receiver) {
    let data = pki.dir.path().join("data");
    let mut all = vec![
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    common::serve_exactly(&all, admin)
}

/// Two pairs of free ports, far enough apart for two cores each.
fn two_listeners() -> (u16, u16) {
    let base = tidewater_tools::ports::free(4).expect("free ports");
    (base, base + 2)
}

/// kcat -L against `broker`: whether it got the metadata, and what it said.
fn metadata(flags: &[String], broker: &str) -> (bool, String) {
    let (ok, out, err) = common::kcat_within(flags, &["-L", "-b", broker, "-m", "4"], None);
    (ok, format!("{out}{err}"))
}

#[test]
fn tls_listeners_serve_real_clients_and_refuse_the_wrong_ones() {
    let pki = Pki::new();
    let (plain, tls) = two_listeners();
    let (child, admin, log) = start(&pki, common::cores(), plain, tls);
    let mut server = common::KilledOnDrop(child);
    let tls_broker = format!("127.0.0.1:{tls}");
    let plain_broker = format!("127.0.0.1:{plain}");
    let writer = pki.kcat_tls(Some("writer"));

    // Each listener's Metadata names its own ports: a TLS client reaches every core
    // over TLS, a plaintext one over plaintext.
    let (ok, said) = metadata(&writer, &tls_broker);
    assert!(ok, "{said}");
    assert!(said.contains(&format!("at 127.0.0.1:{tls}")), "{said}");
    assert!(!said.contains(&format!("at 127.0.0.1:{plain}")), "{said}");
    let (ok, said) = metadata(&[], &plain_broker);
    assert!(
        ok && said.contains(&format!("at 127.0.0.1:{plain}")),
        "{said}"
    );

    // Produce over both, kafka-python over TLS too; read it all back over TLS.
    let produce = ["-P", "-b", &tls_broker, "-t", "events", "-p", "-1"];
    let (ok, _, err) = common::kcat_within(&writer, &produce, Some("tls-a\ntls-b\ntls-c\n"));
    assert!(ok, "{err}");
    let (ok, _, err) = common::kcat_within(
        &[],
        &["-P", "-b", &plain_broker, "-t", "events", "-p", "-1"],
        Some("plain-a\nplain-b\n"),
    );
    assert!(ok, "{err}");
    let (ok, said) = common::python(
        "tls.py",
        &[
            "produce",
            &tls_broker,
            &pki.path("ca.pem"),
            &pki.path("writer.pem"),
            &pki.path("writer.key"),
            "events",
            "4",
        ],
    );
    assert!(ok && said.contains("sent 4"), "{said}");
    let consume = [
        "-C",
        "-b",
        &tls_broker,
        "-t",
        "events",
        "-o",
        "beginning",
        "-e",
    ];
    let (ok, out, err) = common::kcat_within(&writer, &consume, None);
    assert!(ok, "{err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    assert_eq!(
        got,
        ["plain-a", "plain-b", "tls-0", "tls-1", "tls-2", "tls-3", "tls-a", "tls-b", "tls-c"]
    );

    // The load generator over TLS with a client certificate, as `bench --tls` uses it.
    let out = common::tidewater()
        .args(["loadgen", "--brokers", &tls_broker, "--topic", "events"])
        .args(["--events", "1000", "--devices", "50", "--quiet"])
        .args(["--tls-ca-file", &pki.path("ca.pem")])
        .args(["--tls-cert-file", &pki.path("writer.pem")])
        .args(["--tls-key-file", &pki.path("writer.key")])
        .output()
        .unwrap();
    let said = common::succeeded(out);
    assert!(said.contains("acked 1000"), "{said}");

    // Answers far larger than a socket buffer leave whole over TLS: a consumer reads
    // 4 MB back.
    let big: String = (0..2000)
        .map(|i| format!("{i:04}{}\n", "x".repeat(2000)))
        .collect();
    let (ok, _, err) = common::kcat_within(&writer, &produce, Some(&big));
    assert!(ok, "{err}");
    let (ok, out, err) = common::kcat_within(&writer, &consume, None);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.len() == 2004).count(), 2000);

    // The wrong clients get nothing, each failure is counted where it belongs, and
    // the server stays up for the right ones.
    let tls_failed = "tidewater_kafka_tls_handshake_failures_total";
    let violations = "tidewater_kafka_protocol_violations_total";
    for (what, flags, broker, counted) in [
        (
            "no client certificate",
            pki.kcat_tls(None),
            &tls_broker,
            tls_failed,
        ),
        (
            "an untrusted certificate",
            pki.kcat_tls(Some("stranger")),
            &tls_broker,
            tls_failed,
        ),
        (
            "an expired certificate",
            pki.kcat_tls(Some("expired")),
            &tls_broker,
            tls_failed,
        ),
        ("plaintext on the TLS port", vec![], &tls_broker, tls_failed),
        (
            "TLS on the plaintext port",
            writer.clone(),
            &plain_broker,
            violations,
        ),
    ] {
        // The cores copy their counters out every 500 ms: let the last case's land.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let before = common::metric_sum(&common::scrape(admin), counted);
        let (ok, said) = metadata(&flags, broker);
        assert!(!ok, "{what}: {said}");
        let after = common::scrape_when(admin, |t| common::metric_sum(t, counted) > before);
        assert!(
            common::metric_sum(&after, counted) > before,
            "{what}: not in {counted}"
        );
    }
    assert!(server.0.try_wait().unwrap().is_none(), "the server stopped");
    let (ok, said) = metadata(&writer, &tls_broker);
    assert!(ok, "{said}");
    let said: Vec<String> = log.try_iter().collect();
    let said = said.join("\n");
    assert!(said.contains("TLS handshake failed"), "{said}");
    assert!(said.contains("listener=EXTERNAL"), "{said}");
    // A TLS hello read as a Kafka request is refused by its size, on INTERNAL.
    assert!(said.contains("outside 8..="), "{said}");
}

#[test]
fn sighup_swaps_the_certificate_and_keeps_the_connections() {
    let pki = Pki::new();
    let (plain, tls) = two_listeners();
    let (child, _admin, log) = start(&pki, "1", plain, tls);
    let server = common::KilledOnDrop(child);
    let (ok, said) = common::python(
        "tls.py",
        &[
            "reload",
            &server.0.id().to_string(),
            &format!("127.0.0.1:{tls}"),
            &pki.path("ca.pem"),
            &pki.path("writer.pem"),
            &pki.path("writer.key"),
            &pki.path("server.pem"),
            &pki.path("server.key"),
            &pki.path("server2.pem"),
            &pki.path("server2.key"),
        ],
    );
    assert!(ok && said.contains("reloaded"), "{said}");
    // Files that do not load are refused; the certificate in use stays.
    std::fs::write(pki.dir.path().join("server.key"), "not a key").unwrap();
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut said = String::new();
    while !said.contains("TLS reload failed") && std::time::Instant::now() < deadline {
        said.extend(log.try_iter().map(|l| l + "\n"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(said.contains("TLS reload failed"), "{said}");
    assert!(said.contains(&pki.path("server.key")), "{said}");
    let (ok, said) = metadata(&pki.kcat_tls(Some("writer")), &format!("127.0.0.1:{tls}"));
    assert!(ok, "{said}");
}

/// curl's status code for `method url` with `flags`; None when the request failed.
fn curl(flags: &[&str], method: &str, url: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(["-X", method])
        .args(flags)
        .arg(url)
        .output()
        .expect("curl is installed (scripts/test installs it)");
    let code = String::from_utf8_lossy(&out.stdout).parse().ok();
    code.filter(|c| out.status.success() && *c != 0)
}

#[test]
fn the_admin_listener_speaks_https_and_takes_client_certificates_for_the_token() {
    let pki = Pki::new();
    let admin = common::free_ports();
    // Only /health stays open: /metrics needs a certificate too.
    let (child, log) = start_one(
        &pki,
        "admin_open_paths = [\"/health\"]\n",
        &[
            "--admin-tls-cert-file",
            &pki.path("server.pem"),
            "--admin-tls-key-file",
            &pki.path("server.key"),
            "--admin-tls-client-ca-file",
            &pki.path("ca.pem"),
        ],
        admin,
    );
    let mut server = common::KilledOnDrop(child);
    let base = format!("https://127.0.0.1:{admin}");
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("writer.pem"), pki.path("writer.key"));
    let trusting = ["--cacert", ca.as_str()];
    let certified = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    assert_eq!(curl(&trusting, "GET", &format!("{base}/health")), Some(200));
    assert_eq!(
        curl(&trusting, "GET", &format!("{base}/metrics")),
        Some(401)
    );
    assert_eq!(
        curl(&trusting, "POST", &format!("{base}/checkpoint")),
        Some(401)
    );
    assert_eq!(
        curl(&certified, "GET", &format!("{base}/metrics")),
        Some(200)
    );
    assert_eq!(
        curl(&certified, "POST", &format!("{base}/checkpoint")),
        Some(202)
    );
    // Certificates the CA did not sign, or that expired, fail the handshake.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // "expired" has.
    for who in ["stranger", "expired"] {
        let (c, k) = (
            pki.path(&format!("{who}.pem")),
            pki.path(&format!("{who}.key")),
        );
        let flags = ["--cacert", ca.as_str(), "--cert", &c, "--key", &k];
        assert_eq!(
            curl(&flags, "POST", &format!("{base}/checkpoint")),
            None,
            "{who}"
        );
    }
    let said: Vec<String> = log.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("TLS handshake failed")),
        "{}",
        said.join("\n")
    );
    // Plain HTTP gets nothing, and the listener stays up.
    assert_eq!(
        curl(&[], "GET", &format!("http://127.0.0.1:{admin}/health")),
        None
    );
    assert_eq!(curl(&trusting, "GET", &format!("{base}/health")), Some(200));
    assert!(server.0.try_wait().unwrap().is_none(), "the server stopped");
    // The CLI over TLS: refused without a certificate; with one it reads /metrics
    // (and says this server runs no job to checkpoint).
    let addr = format!("127.0.0.1:{admin}");
    let cli = |client: &[&str]| {
        let out = common::tidewater()
            .args([
                "checkpoint",
                "--now",
                "--admin-addr",
                &addr,
                "--admin-tls-ca-file",
                &ca,
            ])
            .args(client)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = cli(&[]);
    assert!(err.contains("answered 401"), "{err}");
    let err = cli(&["--admin-tls-cert-file", &cert, "--admin-tls-key-file", &key]);
    assert!(err.contains("runs no job with checkpoints"), "{err}");
}

#[test]
fn the_schema_registry_speaks_https_to_clients_with_certificates() {
    let pki = Pki::new();
    let registry = common::free_ports();
    let admin = common::free_ports();
    let (child, log) = start_one(
        &pki,
        "schema_registry_tls_cert_file = \"server.pem\"\nschema_registry_tls_key_file = \"server.key\"\nschema_registry_tls_client_ca_file = \"ca.pem\"\n",
        &["--schema-registry-addr", &format!("127.0.0.1:{registry}")],
        admin,
    );
    let mut server = common::KilledOnDrop(child);
    let url = format!("https://127.0.0.1:{registry}");
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("writer.pem"), pki.path("writer.key"));
    // confluent-kafka's client, as serializers use it.
    let (ok, said) = common::python("tls.py", &["registry", &url, &ca, &cert, &key]);
    assert!(ok && said.contains("registered"), "{said}");
    let certified = ["--cacert", ca.as_str(), "--cert", &cert, "--key", &key];
    assert_eq!(
        curl(&certified, "GET", &format!("{url}/subjects")),
        Some(200)
    );
    // Without a certificate, with one the CA did not sign, or in plain HTTP: nothing.
    let (sc, sk) = (pki.path("stranger.pem"), pki.path("stranger.key"));
    let stranger = ["--cacert", ca.as_str(), "--cert", &sc, "--key", &sk];
    let plain = format!("http://127.0.0.1:{registry}/subjects");
    let subjects = format!("{url}/subjects");
    for (who, flags, at) in [
        ("no certificate", &["--cacert", ca.as_str()][..], &subjects),
        ("stranger", &stranger[..], &subjects),
        ("plain HTTP", &[][..], &plain),
    ] {
        // Refused at once, not left to curl's own time limit.
        let asked = std::time::Instant::now();
        assert_eq!(curl(flags, "GET", at), None, "{who}");
        assert!(asked.elapsed() < std::time::Duration::from_secs(5), "{who}");
    }
    // The cores copy their counters into the registry every 500 ms.
    let counted =
        |m: &str| common::metric_sum(m, "tidewater_schema_registry_tls_handshake_failures_total");
    let failed = counted(&common::scrape_when(admin, |m| counted(m) >= 3.0));
    assert!(failed >= 3.0, "{failed} failed handshakes counted");
    let said: Vec<String> = log.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("TLS handshake failed")),
        "{}",
        said.join("\n")
    );
    assert!(server.0.try_wait().unwrap().is_none(), "the server stopped");
    assert_eq!(
        curl(&certified, "GET", &format!("{url}/subjects")),
        Some(200)
    );
}
