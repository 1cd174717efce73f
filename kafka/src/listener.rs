//! A Kafka listener as its connections see it: its name, the address Metadata
//! tells clients, and its TLS configuration; and who a connection's client is.
//!
//! Never: reads a certificate or key file (the binary builds the TLS configuration
//! and swaps in a new one when its files change), or accepts a TLS version below 1.2
//! (rustls has none).

use std::sync::{Arc, RwLock};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// The TLS configuration a listener's new connections handshake with. Shared by every
/// core; a reload replaces the inner `Arc`, and connections already up keep theirs.
pub type TlsConfig = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// The configuration in `tls` now. A poisoned lock still holds a whole
/// configuration: a reload only swaps an `Arc`.
pub fn current(tls: &TlsConfig) -> Arc<rustls::ServerConfig> {
    match tls.read() {
        Ok(c) => c.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// One listener: core `i` of a per-core server listens on its port + `i`.
pub struct Endpoint {
    /// As configured, e.g. `EXTERNAL`; in logs.
    pub name: String,
    /// The host Metadata, FindCoordinator and DescribeCluster name.
    pub advertised_host: String,
    /// The port they name for core 0 (per-core mode adds the core's number).
    pub advertised_port: u16,
    /// None: plaintext.
    pub tls: Option<TlsConfig>,
    /// The SASL mechanisms it offers; None: no SASL (the transport's principal).
    pub sasl: Option<Vec<crate::sasl::Mechanism>>,
}

impl Endpoint {
    /// The port clients reach core `shard` on through this listener.
    pub fn port_of(&self, shard: u32) -> i32 {
        i32::from(self.advertised_port) + shard as i32
    }

    /// The configuration a connection accepted now handshakes with.
    pub fn tls_now(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(current)
    }
}

/// Who a connection's client is, for the logs and for what it may do.
pub struct Client {
    /// `/IP` as DescribeGroups shows a member's host.
    pub host: std::rc::Rc<str>,
    pub peer_ip: Option<std::net::IpAddr>,
    /// `User:ANONYMOUS`, or `User:<subject>` of a verified client certificate.
    pub transport_principal: std::rc::Rc<str>,
    pub endpoint: std::rc::Rc<Endpoint>,
    /// Its SASL authentication, on a SASL listener.
    pub session: std::cell::RefCell<crate::sasl::Session>,
    /// How long the connection is muted after the request being handled: the
    /// longest throttle a quota gave it (KIP-219).
    pub mute: std::cell::Cell<std::time::Duration>,
    /// The client id of its latest request (quotas may be per client id).
    pub client_id: std::cell::RefCell<String>,
}

impl Client {
    /// Mutes the connection for at least `d` after this request.
    pub fn mute_for(&self, d: std::time::Duration) {
        self.mute.set(self.mute.get().max(d));
    }

    pub fn new(
        host: std::rc::Rc<str>,
        peer_ip: Option<std::net::IpAddr>,
        transport_principal: std::rc::Rc<str>,
        endpoint: std::rc::Rc<Endpoint>,
    ) -> Client {
        Client {
            host,
            peer_ip,
            transport_principal,
            endpoint,
            session: Default::default(),
            mute: Default::default(),
            client_id: Default::default(),
        }
    }

    /// Whom the client's requests act for: the SASL user on a SASL listener, else
    /// the transport's principal.
    pub fn principal(&self) -> std::rc::Rc<str> {
        match &self.session.borrow().authenticated {
            Some(a) => a.principal.clone(),
            None => self.transport_principal.clone(),
        }
    }
}

/// Kafka's name for a client nobody authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The principal of a verified client certificate (DER): `User:` and its subject's
/// distinguished name as Kafka writes it by default (RFC 2253: the most specific
/// part first, `CN=writer,OU=iot,O=Example`). None when the certificate cannot be
/// read (rustls verified it, so that means a field this parser does not know).
pub fn principal_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    Some(format!("User:{}", rfc2253(cert.subject())))
}

fn rfc2253(name: &X509Name<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in name.iter().collect::<Vec<_>>().into_iter().rev() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type().to_id_string();
                let value = attr.attr_value();
                // RFC 2253 2.3-2.4, as Java's X500Principal writes it: a keyword and
                // the string for the attributes it names, the dotted OID and `#` with
                // the value's whole DER encoding in hex for the others.
                match (keyword(&oid), attr.as_str()) {
                    (Some(key), Ok(text)) => format!("{key}={}", escape(text)),
                    (key, _) => format!(
                        "{}=#{}",
                        key.map_or(oid.clone(), str::to_string),
                        hex(&der_of(value.header.tag().0, value.data))
                    ),
                }
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.join(",")
}

/// RFC 2253's keywords (section 2.3).
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// A universal, primitive value's DER encoding: tag, length, content.
fn der_of(tag: u32, content: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(tag).unwrap_or(0)];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// RFC 2253 section 2.4, as Java escapes: the special characters anywhere, spaces
/// at either end, NUL as `\00`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let chars: Vec<char> = value.chars().collect();
    let first_kept = chars.iter().position(|c| *c != ' ').unwrap_or(chars.len());
    let last_kept = chars.iter().rposition(|c| *c != ' ').map_or(0, |i| i + 1);
    for (i, c) in chars.into_iter().enumerate() {
        match c {
            '\0' => out.push_str("\\00"),
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i < first_kept || i >= last_kept => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{escape, principal_of};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn a_certificate_s_principal_is_its_subject_most_specific_first() {
        // As `openssl x509 -noout -subject -nameopt RFC2253` prints it, but for
        // emailAddress, which has no RFC 2253 keyword (Java writes it so too), and
        // the order of the attributes inside a multi-valued part.
        let pem = include_bytes!("testdata/client-writer.pem");
        let der = CertificateDer::from_pem_slice(pem).unwrap();
        assert_eq!(
            principal_of(&der).unwrap(),
            "User:1.2.840.113549.1.9.1=#160d77406578616d706c652e636f6d,CN=writer\\, one,OU=iot+UID=7,O=Example,C=US"
        );
        assert_eq!(principal_of(b"not a certificate"), None);
    }

    #[test]
    fn special_characters_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape("writer"), "writer");
        assert_eq!(escape("a,b+c=d"), "a\\,b\\+c\\=d");
        assert_eq!(escape("#x y#  "), "\\#x y\\#\\ \\ ");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("nul\0"), "nul\\00");
    }
}
