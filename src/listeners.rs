//! The Kafka listeners: `[[listeners]]` in the config file (or `kafka_addr`, the
//! shorthand for one PLAINTEXT listener), checked before anything starts, and the
//! TLS configuration of each TLS listener, built from PEM files at start and built
//! again on SIGHUP.
//!
//! Never: starts a listener whose certificate, key or client CA cannot be read; lets
//! a failed reload take away the configuration that works (it logs why and keeps
//! it); or offers TLS below 1.2.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tidewater_kafka::sasl::{scram::Scram, Mechanism};

/// One `[[listeners]]` entry as written.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `IP:PORT`; core `i` of a per-core server listens on PORT + `i`.
    pub addr: String,
    /// `HOST:PORT` clients are told (per-core: core `i` at PORT + `i`). Default: `addr`.
    pub advertised_addr: Option<String>,
    /// `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub protocol: Option<String>,
    /// The SASL mechanisms a SASL listener offers (default SCRAM-SHA-512 and
    /// SCRAM-SHA-256).
    pub sasl_mechanisms: Option<Vec<String>>,
    /// Lets PLAIN (passwords in the clear) be offered on SASL_PLAINTEXT.
    pub sasl_plain_without_tls: Option<bool>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Clients must show a certificate signed by one of these CAs (mTLS).
    pub tls_client_ca_file: Option<PathBuf>,
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    const ALL: [Protocol; 4] = [
        Protocol::Plaintext,
        Protocol::Ssl,
        Protocol::SaslPlaintext,
        Protocol::SaslSsl,
    ];

    fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A listener, checked.
#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub protocol: Protocol,
    pub tls: Option<Tls>,
    /// The SASL mechanisms of a SASL listener.
    pub sasl: Option<Vec<Mechanism>>,
}

impl Listener {
    /// Whether a client must prove who it is to use this listener.
    pub fn authenticates(&self) -> bool {
        self.sasl.is_some() || self.tls.as_ref().is_some_and(Tls::authenticates)
    }

    /// The listener as core `shard`'s connections see it.
    pub fn endpoint(&self) -> tidewater_kafka::Endpoint {
        tidewater_kafka::Endpoint {
            name: self.name.clone(),
            advertised_host: self.advertised_host.clone(),
            advertised_port: self.advertised_port,
            tls: self.tls.as_ref().map(|t| t.config.clone()),
            sasl: self.sasl.clone(),
        }
    }
}

/// A listener's TLS: where its files are, and the configuration new connections get.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    pub config: tidewater_kafka::TlsConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

#[derive(Clone, Debug)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    /// A client may also come without a certificate (one it shows must verify).
    client_optional: bool,
}

impl Tls {
    fn load(files: TlsFiles) -> Result<Tls> {
        let config = Arc::new(RwLock::new(Arc::new(files.build()?)));
        Ok(Tls { files, config })
    }

    /// The TLS of an HTTP listener whose config keys are `<keys>_tls_cert_file`,
    /// `<keys>_tls_key_file` and `<keys>_tls_client_ca_file`: None when none is
    /// given; the certificate and key go together, and the CA needs them. With
    /// `client_optional`, clients of the CA may show a certificate and others may
    /// come without one (the admin listener's rules then judge them); without it,
    /// the CA makes a certificate every client's way in.
    pub fn of_http(
        what: &str,
        keys: &str,
        (cert, key, client_ca): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
        client_optional: bool,
    ) -> Result<Option<Tls>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(
                Tls::load(TlsFiles {
                    cert,
                    key,
                    client_ca,
                    client_optional,
                })
                .with_context(|| format!("the {what}'s TLS"))?,
            )),
            (None, None) if client_ca.is_none() => Ok(None),
            _ => bail!("{what} TLS needs {keys}_tls_cert_file and {keys}_tls_key_file ({keys}_tls_client_ca_file works only with them)"),
        }
    }

    /// Whether clients show certificates a CA of ours signed.
    pub fn authenticates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration a connection accepted now handshakes with.
    pub fn now(&self) -> Arc<rustls::ServerConfig> {
        tidewater_kafka::listener::current(&self.config)
    }

    /// Reads the files again; new connections handshake with what they hold now,
    /// connections already up keep theirs. On an error nothing changes.
    pub fn reload(&self) -> Result<()> {
        let fresh = Arc::new(self.files.build()?);
        match self.config.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

impl TlsFiles {
    fn build(&self) -> Result<rustls::ServerConfig> {
        // Deprecated in favour of aws-lc-rs for its post-quantum key exchange, which
        // the Kafka clients in use (librdkafka on OpenSSL 3.0, Java before 24) do not
        // offer; ring spares a second C crypto library in the build
        // (docs/decisions.md).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).with_context(|| {
            format!(
                "tls_key_file {}: no readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                self.key.display()
            )
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3 with ring")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(path)? {
                    roots.add(cert).with_context(|| {
                        format!(
                            "tls_client_ca_file {}: a certificate that cannot be a trust anchor",
                            path.display()
                        )
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = if self.client_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .with_context(|| format!("tls_client_ca_file {}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "tls_cert_file {} and tls_key_file {} do not make a usable pair",
                self.cert.display(),
                self.key.display()
            )
        })
    }
}

/// Every certificate of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{}: cannot read PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The listeners of a config: `[[listeners]]`, or one PLAINTEXT listener named
/// `PLAINTEXT` on `kafka_addr` (default 127.0.0.1:9092) advertised as
/// `advertised_host`. Relative file paths are from `base_dir`.
pub fn settle(
    entries: &[ListenerConfig],
    kafka_addr: Option<String>,
    advertised_host: Option<String>,
    base_dir: &Path,
) -> Result<Vec<Listener>> {
    if entries.is_empty() {
        let text = kafka_addr.unwrap_or_else(|| "127.0.0.1:9092".to_string());
        let addr: SocketAddr = text
            .parse()
            .with_context(|| format!("kafka_addr {text:?}: use HOST:PORT with an IP address"))?;
        if addr.ip().is_unspecified() && advertised_host.is_none() {
            // Kept for the configs that rely on it (a client on this host reaches
            // 0.0.0.0), but clients elsewhere cannot.
            tracing::warn!(%addr, "kafka_addr listens on every address without advertised_host: Metadata tells clients to connect to {}, which only works on this host; set advertised_host", addr.ip());
        }
        return Ok(vec![Listener {
            name: "PLAINTEXT".into(),
            addr,
            advertised_host: advertised_host.unwrap_or_else(|| addr.ip().to_string()),
            advertised_port: addr.port(),
            protocol: Protocol::Plaintext,
            tls: None,
            sasl: None,
        }]);
    }
    if kafka_addr.is_some() || advertised_host.is_some() {
        bail!("kafka_addr and advertised_host are the shorthand for one listener: with [[listeners]], give each its addr and advertised_addr instead");
    }
    let mut seen = std::collections::HashSet::new();
    let mut listeners = Vec::new();
    for e in entries {
        let l = settle_one(e, base_dir).with_context(|| format!("listener {:?}", e.name))?;
        if !seen.insert(l.name.to_ascii_uppercase()) {
            bail!("two listeners are named {:?}", l.name);
        }
        listeners.push(l);
    }
    Ok(listeners)
}

fn settle_one(e: &ListenerConfig, base_dir: &Path) -> Result<Listener> {
    let name_ok = !e.name.is_empty()
        && e.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        bail!("a listener's name is letters, digits, `_` and `-`");
    }
    let addr: SocketAddr = e
        .addr
        .parse()
        .with_context(|| format!("addr {:?}: use IP:PORT", e.addr))?;
    let (advertised_host, advertised_port) = match &e.advertised_addr {
        Some(text) => advertised(text)?,
        None if addr.ip().is_unspecified() => {
            bail!("addr {addr} is every address: set advertised_addr to the HOST:PORT clients reach it by")
        }
        None => (addr.ip().to_string(), addr.port()),
    };
    let text = e.protocol.as_deref().unwrap_or("PLAINTEXT");
    let Some(protocol) = Protocol::ALL.into_iter().find(|p| p.name() == text) else {
        bail!("protocol {text:?}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL");
    };
    let sasl = sasl_of(e, protocol)?;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| base_dir.join(p));
    let (cert, key, client_ca) = (
        path(&e.tls_cert_file),
        path(&e.tls_key_file),
        path(&e.tls_client_ca_file),
    );
    let tls = match (protocol.tls(), cert, key) {
        (true, Some(cert), Some(key)) => Some(Tls::load(TlsFiles {
            cert,
            key,
            client_ca,
            client_optional: false,
        })?),
        (true, _, _) => bail!("protocol {protocol} needs tls_cert_file and tls_key_file"),
        (false, None, None) if client_ca.is_none() => None,
        (false, _, _) => {
            bail!("tls_* files are given but the protocol is {protocol}: use SSL or SASL_SSL")
        }
    };
    Ok(Listener {
        name: e.name.clone(),
        addr,
        advertised_host,
        advertised_port,
        protocol,
        tls,
        sasl,
    })
}

/// The mechanisms of a SASL listener: `sasl_mechanisms`, or SCRAM-SHA-512 and
/// SCRAM-SHA-256; PLAIN sends the password itself, so on SASL_PLAINTEXT it needs
/// `sasl_plain_without_tls = true`.
fn sasl_of(e: &ListenerConfig, protocol: Protocol) -> Result<Option<Vec<Mechanism>>> {
    if !protocol.sasl() {
        if e.sasl_mechanisms.is_some() || e.sasl_plain_without_tls.is_some() {
            bail!("sasl_* settings need protocol SASL_PLAINTEXT or SASL_SSL");
        }
        return Ok(None);
    }
    let mut mechanisms = Vec::new();
    match &e.sasl_mechanisms {
        None => mechanisms.extend([Scram::Sha512, Scram::Sha256].map(Mechanism::Scram)),
        Some(names) => {
            for name in names {
                let m = Mechanism::of_name(name).with_context(|| {
                    format!("sasl_mechanisms: {name:?} is not served; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
                })?;
                if mechanisms.contains(&m) {
                    bail!("sasl_mechanisms names {name} twice");
                }
                mechanisms.push(m);
            }
        }
    }
    if mechanisms.is_empty() {
        bail!("sasl_mechanisms is empty: a SASL listener offers at least one");
    }
    let plain_allowed = protocol.tls() || e.sasl_plain_without_tls == Some(true);
    if mechanisms.contains(&Mechanism::Plain) && !plain_allowed {
        bail!("PLAIN sends passwords in the clear on SASL_PLAINTEXT: use SASL_SSL, or set sasl_plain_without_tls = true on a network you trust");
    }
    Ok(Some(mechanisms))
}

/// `HOST:PORT`, `[IPv6]:PORT`: the host as clients write it, and a port above 0.
fn advertised(text: &str) -> Result<(String, u16)> {
    let usage = || format!("advertised_addr {text:?}: use HOST:PORT, or [IPv6]:PORT");
    let (host, port) = text.rsplit_once(':').with_context(usage)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
        Some(_) => bail!(usage()),
        None if host.is_empty() || host.contains([':', '[', ']']) => bail!(usage()),
        None => host,
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => bail!("{}: the port is a number from 1 to 65535", usage()),
    }
}

/// The port ranges the cores bind must fit below 65536 and not overlap: per-core,
/// listener `l` takes `l.addr.port() .. + cores`; single-port, one port each.
pub fn check_ports(listeners: &[Listener], cores: u32, single_port: bool) -> Result<()> {
    let width = if single_port { 1 } else { cores };
    for l in listeners {
        for (what, port) in [
            ("port", l.addr.port()),
            ("advertised port", l.advertised_port),
        ] {
            if u32::from(port) + width > 65_536 {
                bail!(
                    "listener {}: {what} {port} + {width} cores runs past port 65535",
                    l.name
                );
            }
        }
    }
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[i + 1..] {
            let same_host = a.addr.ip() == b.addr.ip()
                || a.addr.ip().is_unspecified()
                || b.addr.ip().is_unspecified();
            let (pa, pb) = (u32::from(a.addr.port()), u32::from(b.addr.port()));
            if same_host && pa < pb + width && pb < pa + width {
                bail!(
                    "listeners {} ({}) and {} ({}) overlap: with {width} cores each takes {width} ports from its own",
                    a.name,
                    a.addr,
                    b.name,
                    b.addr
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, addr: &str) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            addr: addr.into(),
            advertised_addr: None,
            protocol: None,
            sasl_mechanisms: None,
            sasl_plain_without_tls: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }

    fn error(entries: &[ListenerConfig]) -> String {
        format!(
            "{:#}",
            settle(entries, None, None, Path::new(".")).unwrap_err()
        )
    }

    #[test]
    fn kafka_addr_is_one_plaintext_listener() {
        let l = settle(
            &[],
            Some("127.0.0.1:9000".into()),
            Some("h".into()),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].name.as_str(), l[0].protocol),
            ("PLAINTEXT", Protocol::Plaintext)
        );
        assert_eq!(
            (l[0].advertised_host.as_str(), l[0].advertised_port),
            ("h", 9000)
        );
    }

    #[test]
    fn listeners_are_checked_before_anything_starts() {
        let both = settle(
            &[entry("A", "127.0.0.1:1")],
            Some("127.0.0.1:2".into()),
            None,
            Path::new("."),
        );
        assert!(format!("{:#}", both.unwrap_err()).contains("shorthand"));
        assert!(
            error(&[entry("A", "127.0.0.1:1"), entry("a", "127.0.0.1:5")])
                .contains("two listeners")
        );
        assert!(error(&[entry("A B", "127.0.0.1:1")]).contains("letters"));
        assert!(error(&[entry("A", "0.0.0.0:1")]).contains("advertised_addr"));
        let mut ssl = entry("S", "127.0.0.1:1");
        ssl.protocol = Some("SSL".into());
        assert!(error(&[ssl]).contains("needs tls_cert_file"));
        let mut sasl = entry("S", "127.0.0.1:1");
        sasl.protocol = Some("SASL_SSL".into());
        assert!(error(&[sasl.clone()]).contains("needs tls_cert_file"));
        sasl.protocol = Some("SASL_PLAINTEXT".into());
        let l = settle(&[sasl.clone()], None, None, Path::new(".")).unwrap();
        assert_eq!(
            l[0].sasl.as_deref(),
            Some(
                &[
                    Mechanism::Scram(Scram::Sha512),
                    Mechanism::Scram(Scram::Sha256)
                ][..]
            )
        );
        assert!(l[0].authenticates());
        sasl.sasl_mechanisms = Some(vec!["PLAIN".into()]);
        assert!(error(&[sasl.clone()]).contains("sasl_plain_without_tls"));
        sasl.sasl_plain_without_tls = Some(true);
        assert!(settle(&[sasl.clone()], None, None, Path::new(".")).is_ok());
        sasl.sasl_mechanisms = Some(vec!["GSSAPI".into()]);
        assert!(error(&[sasl.clone()]).contains("not served"));
        sasl.sasl_mechanisms = Some(vec![]);
        assert!(error(&[sasl.clone()]).contains("empty"));
        sasl.sasl_mechanisms = Some(vec!["PLAIN".into(), "PLAIN".into()]);
        assert!(error(&[sasl]).contains("twice"));
        let mut mechanisms_on_plaintext = entry("P", "127.0.0.1:1");
        mechanisms_on_plaintext.sasl_mechanisms = Some(vec!["PLAIN".into()]);
        assert!(error(&[mechanisms_on_plaintext]).contains("need protocol SASL"));
        let mut plain = entry("P", "127.0.0.1:1");
        plain.tls_client_ca_file = Some("ca.pem".into());
        assert!(error(&[plain]).contains("use SSL"));
        let mut missing = entry("S", "127.0.0.1:1");
        missing.protocol = Some("SSL".into());
        missing.tls_cert_file = Some("no-such-cert.pem".into());
        missing.tls_key_file = Some("no-such-key.pem".into());
        assert!(error(&[missing]).contains("no-such-cert.pem"));
        let mut advertised = entry("A", "0.0.0.0:9092");
        advertised.advertised_addr = Some("broker.example:19092".into());
        let l = settle(&[advertised], None, None, Path::new(".")).unwrap();
        assert_eq!(
            (l[0].advertised_host.as_str(), l[0].advertised_port),
            ("broker.example", 19092)
        );
        assert_eq!(
            super::advertised("[fe80::1]:9092").unwrap(),
            ("fe80::1".into(), 9092)
        );
        for bad in [
            "fe80::1:9092",
            "::1",
            "[host]:1",
            "h:0",
            "h:x",
            ":9092",
            "h",
        ] {
            assert!(super::advertised(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn per_core_port_ranges_may_not_overlap() {
        let l = settle(
            &[entry("A", "127.0.0.1:9092"), entry("B", "127.0.0.1:9093")],
            None,
            None,
            Path::new("."),
        )
        .unwrap();
        assert!(check_ports(&l, 1, false).is_ok());
        assert!(check_ports(&l, 2, false)
            .unwrap_err()
            .to_string()
            .contains("overlap"));
        assert!(check_ports(&l, 2, true).is_ok());
        let high = settle(&[entry("H", "127.0.0.1:65535")], None, None, Path::new(".")).unwrap();
        assert!(check_ports(&high, 2, false).is_err());
    }
}
