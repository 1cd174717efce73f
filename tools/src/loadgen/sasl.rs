//! SASL for the load generator's connections: SaslHandshake v1 and
//! SaslAuthenticate v1 with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, right after
//! each connection (and its TLS handshake) is made, as a Kafka client does.
//!
//! Never: sends the password with a SCRAM mechanism (only the proof), or takes a
//! server that cannot prove it knows the credential.

use super::{io_err, recv, send, tls::Conn};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tidewater_kafka::sasl::scram::{client, Scram};

/// How to authenticate.
#[derive(Clone, Debug)]
pub struct Sasl {
    mechanism: Mechanism,
    user: String,
    password: String,
}

#[derive(Clone, Copy, Debug)]
enum Mechanism {
    Plain,
    Scram(Scram),
}

impl Sasl {
    pub fn new(mechanism: &str, user: &str, password: &str) -> Result<Sasl, String> {
        let mechanism = match mechanism {
            "PLAIN" => Mechanism::Plain,
            other => Mechanism::Scram(Scram::of_name(other).ok_or_else(|| {
                format!("SASL mechanism {other:?}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
            })?),
        };
        Ok(Sasl {
            mechanism,
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    fn name(&self) -> &'static str {
        match self.mechanism {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(s) => s.name(),
        }
    }
}

/// Authenticates a new connection; its correlation ids start at `-100` (the
/// connection's own requests count up from 0).
pub fn authenticate(s: &mut Conn, sasl: &Sasl) -> std::io::Result<()> {
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(sasl.name()));
    send(s, ApiKey::SaslHandshake, 1, -100, &req)?;
    let (_, mut body) = recv(s, ApiKey::SaslHandshake, 1)?;
    let resp = SaslHandshakeResponse::decode(&mut body, 1)
        .map_err(|e| io_err(format!("SaslHandshake response: {e}")))?;
    if resp.error_code != 0 {
        let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(io_err(format!(
            "SaslHandshake {}: error {} (the listener offers {offered:?})",
            sasl.name(),
            resp.error_code
        )));
    }
    match sasl.mechanism {
        Mechanism::Plain => {
            let token = format!("\0{}\0{}", sasl.user, sasl.password);
            exchange(s, token.into_bytes(), -99)?;
        }
        Mechanism::Scram(m) => {
            let (first, bare) = client::first(&sasl.user);
            let server_first = exchange(s, first.into_bytes(), -99)?;
            let (last, expected) =
                client::last(m, sasl.password.as_bytes(), &bare, &server_first).map_err(io_err)?;
            let server_final = exchange(s, last.into_bytes(), -98)?;
            if !client::verify(&server_final, &expected) {
                return Err(io_err(
                    "SCRAM: the server's signature is wrong (it does not know the credential)",
                ));
            }
        }
    }
    Ok(())
}

/// One SaslAuthenticate round: the server's token.
fn exchange(s: &mut Conn, token: Vec<u8>, correlation: i32) -> std::io::Result<Vec<u8>> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
    send(s, ApiKey::SaslAuthenticate, 1, correlation, &req)?;
    let (_, mut body) = recv(s, ApiKey::SaslAuthenticate, 1)?;
    let resp = SaslAuthenticateResponse::decode(&mut body, 1)
        .map_err(|e| io_err(format!("SaslAuthenticate response: {e}")))?;
    if resp.error_code != 0 {
        return Err(io_err(format!(
            "SASL authentication failed: error {}: {}",
            resp.error_code,
            resp.error_message.as_deref().unwrap_or("")
        )));
    }
    Ok(resp.auth_bytes.to_vec())
}
