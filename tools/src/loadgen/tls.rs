//! The load generator's connections: plain TCP, or TLS (rustls) when a CA is given,
//! with an optional client certificate, so ingest over an `SSL` listener is measured
//! with the same generator as over `PLAINTEXT`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// How to reach the brokers over TLS: whom to trust, and who to be.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn io_err(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

impl Tls {
    /// From PEM files: the CA that signed the server's certificate, and optionally
    /// this client's certificate and key.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> std::io::Result<Tls> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io_err(format!("cannot read {}: {e}", p.display())))
        };
        let ca_pem = read(ca)?;
        let client_pems = match client {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        let client = client_pems
            .as_ref()
            .map(|(c, k)| (c.as_slice(), k.as_slice()));
        Tls::from_pem(&ca_pem, client)
    }

    /// From PEM text, as [`Tls::from_files`].
    pub fn from_pem(ca: &[u8], client: Option<(&[u8], &[u8])>) -> std::io::Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| io_err(format!("the CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| io_err(format!("the CA file: {e}")))?;
        }
        if roots.is_empty() {
            return Err(io_err("the CA file holds no certificate".into()));
        }
        // ring, as the server (docs/decisions.md).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io_err(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| io_err(format!("the client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| io_err(format!("the client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| io_err(format!("the client certificate and key: {e}")))?
            }
        };
        Ok(Tls {
            config: Arc::new(config),
        })
    }
}

/// One connection to a broker.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// How long a TLS handshake may take before [`connect`] gives up.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `addr` (`HOST:PORT`) with TCP_NODELAY, over TLS when `tls` is given
/// (the server's certificate must name HOST); the TLS handshake completes here,
/// within [`HANDSHAKE_TIMEOUT`].
pub fn connect(addr: &str, tls: Option<&Tls>) -> std::io::Result<Conn> {
    let socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Conn::Plain(socket));
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io_err(format!("{host}: not a server name: {e}")))?;
    let session = rustls::ClientConnection::new(tls.config.clone(), name)
        .map_err(|e| io_err(format!("TLS to {addr}: {e}")))?;
    socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    socket.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let started = std::time::Instant::now();
    let mut stream = rustls::StreamOwned::new(session, socket);
    while stream.conn.is_handshaking() {
        if started.elapsed() > HANDSHAKE_TIMEOUT {
            return Err(io_err(format!(
                "TLS handshake with {addr}: no answer in time"
            )));
        }
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| io_err(format!("TLS handshake with {addr}: {e}")))?;
    }
    stream.sock.set_read_timeout(None)?;
    stream.sock.set_write_timeout(None)?;
    Ok(Conn::Tls(Box::new(stream)))
}

impl Conn {
    /// How long a read may wait, on the socket under TLS too.
    pub fn set_read_timeout(&self, limit: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.set_read_timeout(limit),
            Conn::Tls(s) => s.sock.set_read_timeout(limit),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}
