//! What `demo` and `bench` share: the reference job's config, a server run as a
//! child process of this same binary, its metrics scraped and read back, and its
//! CPU time from /proc.
//!
//! The server is a separate process on purpose: what the demo shows and the bench
//! measures is exactly what `serve` does, metrics included.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidewater_tools::reference;

/// The reference job (`schemas/sensor.avsc`, 1-minute tumbling windows on
/// `device_id`), with `sinks` appended as TOML.
pub fn reference_config(
    schema_path: &Path,
    idle_timeout: &str,
    checkpoint_interval: &str,
    sinks: &str,
) -> String {
    reference::config(
        &reference::Job {
            format: reference::Job::avro(schema_path),
            idle_timeout,
            checkpoint_interval,
        },
        sinks,
    )
}

/// Writes the embedded reference schema next to a config, returning its path.
pub fn write_schema(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("sensor.avsc");
    std::fs::write(&path, tidewater_tools::loadgen::event::SCHEMA)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `count` consecutive free loopback ports (per-core listeners).
pub fn free_ports(count: u16) -> Result<u16> {
    tidewater_tools::ports::free(count).context("no free ports on 127.0.0.1")
}

/// An `SSL` listener's files for a server the harness starts, made for the run: a
/// CA and a certificate for 127.0.0.1 it signed; and the client side, trusting it.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    pub client: tidewater_tools::loadgen::tls::Tls,
}

/// Makes [`TlsFiles`] in `dir` (ECDSA P-256 keys, rcgen).
pub fn make_tls(dir: &Path) -> Result<TlsFiles> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Tidewater bench CA");
    let ca = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_string()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    server
        .distinguished_name
        .push(DnType::CommonName, "tidewater bench");
    let cert = server.signed_by(&key, &ca, &ca_key)?;
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client: tidewater_tools::loadgen::tls::Tls::from_pem(ca.pem().as_bytes(), None)
            .map_err(|e| anyhow::anyhow!("the bench's TLS client: {e}"))?,
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    Ok(files)
}

impl TlsFiles {
    /// `config` with an `SSL` listener on `addr` added, written beside it.
    fn listener_config(&self, config: &Path, addr: &str) -> Result<PathBuf> {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("cannot read {}", config.display()))?;
        // A JSON string is a TOML basic string for every path written here.
        let quoted = |p: &Path| serde_json::Value::String(p.display().to_string()).to_string();
        let with_tls = format!(
            "{text}\n[[listeners]]\nname = \"BENCH\"\naddr = \"{addr}\"\nprotocol = \"SSL\"\ntls_cert_file = {}\ntls_key_file = {}\n",
            quoted(&self.cert),
            quoted(&self.key)
        );
        let path = config.with_extension("tls.toml");
        std::fs::write(&path, with_tls)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// The ports a started server takes: `None`, free ones (core `i` of a per-core
/// server listens on the Kafka port + `i`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub kafka: Option<u16>,
    pub admin: Option<u16>,
}

/// `tidewater serve` as a child process.
pub struct Server {
    child: Child,
    pub kafka_port: u16,
    pub admin_port: u16,
    pub started: Instant,
    log: PathBuf,
}

impl Server {
    /// Where the server logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts `serve --config CONFIG --data-dir DATA` plus `extra`, logging to
    /// `log`, and waits until /health says ready. Ports are checked free before the
    /// server binds them, and another program can take one in between: a start that
    /// failed on a taken port is tried again on other ports, twice.
    pub fn start(
        config: &Path,
        data: &Path,
        cores: &str,
        extra: &[&str],
        log: &Path,
    ) -> Result<Server> {
        Server::start_with(config, data, cores, extra, log, None, Ports::default())
    }

    /// [`Server::start`]; with `tls`, its Kafka listener is `SSL` with those files.
    /// With `ports` given, the server takes them and a taken one is an error.
    pub fn start_with(
        config: &Path,
        data: &Path,
        cores: &str,
        extra: &[&str],
        log: &Path,
        tls: Option<&TlsFiles>,
        ports: Ports,
    ) -> Result<Server> {
        let mut tries = 1;
        loop {
            match Server::start_once(config, data, cores, extra, log, tls, ports) {
                Err(e)
                    if tries < 3
                        && ports == Ports::default()
                        && format!("{e:#}").contains("Address already in use") =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(
        config: &Path,
        data: &Path,
        cores: &str,
        extra: &[&str],
        log: &Path,
        tls: Option<&TlsFiles>,
        ports: Ports,
    ) -> Result<Server> {
        let kafka_port = ports.kafka.map_or_else(|| free_ports(16), Ok)?;
        let admin_port = ports.admin.map_or_else(|| free_ports(1), Ok)?;
        let kafka_addr = format!("127.0.0.1:{kafka_port}");
        let (config, listener) = match tls {
            None => (
                config.to_path_buf(),
                vec!["--kafka-addr", kafka_addr.as_str()],
            ),
            Some(t) => (t.listener_config(config, &kafka_addr)?, vec![]),
        };
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(exe)
            .args(["serve", "--cores", cores])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data)
            .args(listener)
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            // Any free port: a registry on the default 8081 may already run here.
            .args(["--schema-registry-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("cannot start the server")?;
        let mut s = Server {
            child,
            kafka_port,
            admin_port,
            started,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "the server exited during start-up ({status}); its log: {}\n{}",
                    s.log.display(),
                    tail(&s.log, 15)
                );
            }
            if http_get(admin_port, "/health").is_ok_and(|(code, _)| code == 200) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not become ready in 180 s; see {}",
                    s.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes the server has caused to be written to storage so far (`write_bytes`
    /// of `/proc/PID/io`: what reached the block layer, O_DIRECT writes included).
    pub fn device_bytes_written(&self) -> Result<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid()))
            .context("cannot read the server's /proc/PID/io")?;
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no write_bytes in /proc/PID/io")
    }

    pub fn scrape(&self) -> Result<Scrape> {
        let (code, body) = http_get(self.admin_port, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(Scrape::parse(&body))
    }

    /// SIGTERM, then wait for the clean stop.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "the server stopped with {status}; see {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http(&format!("127.0.0.1:{port}"), "GET", path)
}

/// A plain HTTP/1.0 request without a body: (status, body).
pub fn http(addr: &str, method: &str, path: &str) -> Result<(u16, String)> {
    http_with_token(addr, method, path, None)
}

/// [`http`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_with_token(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    http_as(addr, method, path, token, None)
}

/// [`http_with_token`], over TLS (HTTPS) when `tls` is given.
pub fn http_as(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    tls: Option<&tidewater_tools::loadgen::tls::Tls>,
) -> Result<(u16, String)> {
    let mut s = tidewater_tools::loadgen::tls::connect(addr, tls)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // One write: a server may answer as soon as it has the request line.
    let req =
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// One scrape of the Prometheus text exposition.
#[derive(Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut map = BTreeMap::new();
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                if let Some((k, v)) = pair.split_once("=\"") {
                    map.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
            }
            samples.push((name.to_string(), map, value));
        }
        Scrape { samples }
    }

    /// Every series of `name`: its labels and value.
    pub fn series(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l, *v))
            .collect()
    }

    /// The sum of every series of `name` whose labels include `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && matching
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Quantile `q` of histogram `name` over every matching series, by linear
    /// interpolation within buckets (as Prometheus' histogram_quantile).
    pub fn quantile(&self, name: &str, matching: &[(&str, &str)], q: f64) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (n, l, v) in &self.samples {
            if *n != bucket
                || !matching
                    .iter()
                    .all(|(k, w)| l.get(*k).map(String::as_str) == Some(*w))
            {
                continue;
            }
            let le = match l.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(x) => x.parse().ok()?,
                None => continue,
            };
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += v;
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, count) in &buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let within = (rank - prev.1) / (count - prev.1).max(f64::MIN_POSITIVE);
                return Some(prev.0 + (le - prev.0) * within);
            }
            prev = (le, count);
        }
        None
    }
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}

/// Sums `events` per window_start over the JSON-lines files a file sink wrote.
pub fn file_sink_counts(dir: &Path) -> Result<BTreeMap<i64, u64>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not JSON: {line}", path.display()))?;
            let start = v["window_start"]
                .as_i64()
                .context("row without window_start")?;
            let n = v["events"].as_u64().context("row without events")?;
            *out.entry(start).or_default() += n;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_exposition() {
        let s = Scrape::parse(
            "# TYPE x counter\nx_total{shard=\"0\",topic=\"a\"} 3\nx_total{shard=\"1\",topic=\"a\"} 4\n\
             h_bucket{shard=\"0\",le=\"1.0\"} 5\nh_bucket{shard=\"0\",le=\"2.0\"} 10\nh_bucket{shard=\"0\",le=\"+Inf\"} 10\n",
        );
        assert_eq!(s.sum("x_total", &[("topic", "a")]), 7.0);
        assert_eq!(s.sum("x_total", &[("shard", "1")]), 4.0);
        assert_eq!(s.quantile("h", &[], 0.5), Some(1.0));
        assert_eq!(s.quantile("h", &[], 0.75), Some(1.5));
        assert_eq!(s.quantile("nope", &[], 0.5), None);
    }
}
