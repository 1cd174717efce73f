//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them
//! (KIP-84): a user's stored credential, the server's side of one exchange, and the
//! client's side (for the load generator and the tests).
//!
//! Never: keeps or logs a password (a credential holds the salt, the iteration count
//! and two keys derived from them); compares keys in time that depends on where
//! they differ; tells a client whether the user or the password was wrong (an
//! unknown user gets a made-up salt and fails at the proof, as a wrong password
//! does).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// Kafka's bounds on a credential's iteration count (AlterUserScramCredentials
/// refuses others); 4096 is also its default.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// Bytes of the salts made here (`tidewater users`, and made-up ones).
pub const SALT_BYTES: usize = 32;

/// Longest salt AlterUserScramCredentials may set.
pub const SALT_BYTES_MAX: usize = 128;

/// A SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scram {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Scram {
    pub const ALL: [Scram; 2] = [Scram::Sha256, Scram::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn of_name(name: &str) -> Option<Scram> {
        Scram::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's code for it in the SCRAM credential APIs (`ScramMechanism`).
    pub fn code(self) -> i8 {
        match self {
            Scram::Sha256 => 1,
            Scram::Sha512 => 2,
        }
    }

    pub fn of_code(code: i8) -> Option<Scram> {
        Scram::ALL.into_iter().find(|m| m.code() == code)
    }

    /// Bytes of its hash, and of every key.
    pub fn key_len(self) -> usize {
        match self {
            Scram::Sha256 => 32,
            Scram::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Scram::Sha256 => hmac::HMAC_SHA256,
            Scram::Sha512 => hmac::HMAC_SHA512,
        };
        hmac::sign(&hmac::Key::new(alg, key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Scram::Sha256 => &digest::SHA256,
            Scram::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    /// `Hi(password, salt, i)`: the salted password.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let alg = match self {
            Scram::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Scram::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let mut out = vec![0; self.key_len()];
        let i = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(alg, i, salt, password, &mut out);
        out
    }
}

/// What the server keeps of one user's password for one mechanism (RFC 5802 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl Credential {
    /// From a password, with a fresh random salt.
    pub fn new(mechanism: Scram, password: &[u8], iterations: u32) -> Credential {
        let salt = random_bytes(SALT_BYTES);
        let salted = mechanism.salted_password(password, &salt, iterations);
        Credential::of_salted(mechanism, salt, iterations, &salted)
    }

    /// From a salted password, as AlterUserScramCredentials carries it.
    pub fn of_salted(
        mechanism: Scram,
        salt: Vec<u8>,
        iterations: u32,
        salted: &[u8],
    ) -> Credential {
        let client_key = mechanism.hmac(salted, b"Client Key");
        Credential {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was made from (SASL/PLAIN
    /// checks a password against the SCRAM credentials: the server keeps no other).
    pub fn verifies(&self, mechanism: Scram, password: &[u8]) -> bool {
        let salted = mechanism.salted_password(password, &self.salt, self.iterations);
        let made = Credential::of_salted(mechanism, self.salt.clone(), self.iterations, &salted);
        bool::from(made.stored_key.ct_eq(&self.stored_key))
    }
}

pub(crate) mod base64_bytes {
    use super::{Engine, B64};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// `n` bytes from the system's secure random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    // The system source fails only where there is no getrandom and no /dev/urandom;
    // a server there could not make a TLS handshake either.
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        panic!("the system's secure random source failed");
    }
    out
}

/// A server's exchange after the client's first message.
pub struct ServerFirst {
    mechanism: Scram,
    user: String,
    /// None: the user does not exist (the exchange goes on and fails at the proof).
    credential: Option<Credential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Why an exchange failed: for the log, never for the client.
#[derive(Debug)]
pub struct Failed(pub String);

impl ServerFirst {
    /// Reads the client's first message and makes the server's; `lookup` gives the
    /// user's credential; `fake_salt` a salt for users that do not exist (the same
    /// for the same name, so that asking twice tells nothing).
    pub fn start(
        mechanism: Scram,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<(ServerFirst, Vec<u8>), Failed> {
        let text = std::str::from_utf8(message)
            .map_err(|_| Failed("the client's first message is not UTF-8".into()))?;
        // gs2-header: "n," (no channel binding), an optional authzid, ",".
        let rest = text.strip_prefix("n,").ok_or_else(|| {
            Failed(
                "the client's first message does not start with n, (channel binding is not served)"
                    .into(),
            )
        })?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| Failed("the client's first message has no gs2 header".into()))?;
        let gs2_header = format!("n,{authzid},");
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) if user.is_none() => user = Some(sasl_name(v)?),
                Some(("r", v)) if client_nonce.is_none() && !v.is_empty() => client_nonce = Some(v),
                Some(("m", _)) => {
                    return Err(Failed("mandatory extension m= is not served".into()))
                }
                Some(("tokenauth", _)) => {
                    return Err(Failed("delegation tokens are not served".into()))
                }
                // Other extensions (KIP-342) carry nothing a credential checks.
                _ => {}
            }
        }
        let user = user.ok_or_else(|| Failed("no user name (n=)".into()))?;
        let client_nonce = client_nonce.ok_or_else(|| Failed("no client nonce (r=)".into()))?;
        match authzid.strip_prefix("a=") {
            None if authzid.is_empty() => {}
            Some(a) if sasl_name(a)? == user => {}
            _ => {
                return Err(Failed(format!(
                    "authorization id {authzid:?} is not the user {user:?}"
                )))
            }
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt(&user), ITERATIONS_MIN),
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(24)));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let first = ServerFirst {
            mechanism,
            user,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((first, server_first.into_bytes()))
    }

    /// Checks the client's final message: the user and the server's final message
    /// (its signature, which proves to the client the server knows the credential).
    pub fn finish(self, message: &[u8]) -> Result<(String, Vec<u8>), Failed> {
        let text = std::str::from_utf8(message)
            .map_err(|_| Failed("the client's final message is not UTF-8".into()))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| Failed("the client's final message has no proof (p=)".into()))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs.next().and_then(|a| a.strip_prefix("c="));
        if binding != Some(B64.encode(&self.gs2_header).as_str()) {
            return Err(Failed(
                "the channel binding (c=) is not the gs2 header".into(),
            ));
        }
        // RFC 5802 has the client send the server's nonce back as it came; librdkafka
        // (up to 2.x at least) sends its own nonce before it again. Kafka's broker
        // checks that the nonce ends with the one it sent, and so does this one: the
        // proof covers the message as sent either way.
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
        if !nonce.is_some_and(|n| n.ends_with(&self.nonce)) {
            return Err(Failed(
                "the nonce (r=) does not end with the one of this exchange".into(),
            ));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| Failed("the proof (p=) is not base64".into()))?;
        let credential = self
            .credential
            .ok_or_else(|| Failed(format!("no user {:?}", self.user)))?;
        let m = self.mechanism;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(Failed("the proof has the wrong length".into()));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !bool::from(m.hash(&client_key).ct_eq(&credential.stored_key)) {
            return Err(Failed(format!("wrong password for user {:?}", self.user)));
        }
        let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
        let last = format!("v={}", B64.encode(server_signature));
        Ok((self.user, last.into_bytes()))
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn mechanism(&self) -> Scram {
        self.mechanism
    }
}

/// A saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn sasl_name(text: &str) -> Result<String, Failed> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(Failed(format!("user name {text:?} has a bare '='"))),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(Failed("empty user name".into()));
    }
    Ok(out)
}

/// The client's side of an exchange.
pub mod client {
    use super::*;

    /// The first message and what the client keeps for the next step.
    pub fn first(user: &str) -> (String, String) {
        let nonce = B64.encode(random_bytes(24));
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={name},r={nonce}");
        (format!("n,,{bare}"), bare)
    }

    /// The final message for the server's first, and the server signature to expect.
    pub fn last(
        mechanism: Scram,
        password: &[u8],
        client_first_bare: &str,
        server_first: &[u8],
    ) -> Result<(String, Vec<u8>), String> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = B64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("server-first {server_first:?} lacks r, s or i"));
        };
        let salted = mechanism.salted_password(password, &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let expected = mechanism.hmac(&server_key, auth_message.as_bytes());
        Ok((format!("{without_proof},p={}", B64.encode(proof)), expected))
    }

    /// Whether the server's final message carries the expected signature.
    pub fn verify(server_final: &[u8], expected: &[u8]) -> bool {
        std::str::from_utf8(server_final)
            .ok()
            .and_then(|t| t.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .is_some_and(|v| bool::from(v.ct_eq(expected)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(
        m: Scram,
        stored: &Credential,
        user: &str,
        password: &str,
    ) -> Result<String, Failed> {
        let (first, bare) = client::first(user);
        let (server, server_first) = ServerFirst::start(
            m,
            first.as_bytes(),
            |u| (u == "alice").then(|| stored.clone()),
            |_| vec![7; 32],
        )?;
        let (last, expected) = client::last(m, password.as_bytes(), &bare, &server_first).unwrap();
        let (who, server_final) = server.finish(last.as_bytes())?;
        assert!(
            client::verify(&server_final, &expected),
            "the server proves itself"
        );
        Ok(who)
    }

    #[test]
    fn a_right_password_passes_and_a_wrong_one_or_unknown_user_fails() {
        for m in Scram::ALL {
            let stored = Credential::new(m, b"alice-secret", ITERATIONS_MIN);
            assert_eq!(
                exchange(m, &stored, "alice", "alice-secret").unwrap(),
                "alice"
            );
            assert!(exchange(m, &stored, "alice", "wrong").is_err());
            assert!(exchange(m, &stored, "mallory", "alice-secret").is_err());
            assert!(stored.verifies(m, b"alice-secret"));
            assert!(!stored.verifies(m, b"alice-secret "));
        }
    }

    /// RFC 7677's test vector: user "user", password "pencil".
    #[test]
    fn rfc_7677_vector() {
        let m = Scram::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let c = Credential::of_salted(m, salt, 4096, &salted);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{bare},{server_first},{without_proof}");
        let signature = m.hmac(&c.stored_key, auth.as_bytes());
        let client_key = m.hmac(&salted, b"Client Key");
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = m.hmac(&c.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn malformed_messages_fail_without_a_panic() {
        let m = Scram::Sha512;
        let stored = Credential::new(m, b"p", ITERATIONS_MIN);
        for first in [
            &b""[..],
            b"y,,n=alice,r=x",
            b"n,,r=x",
            b"n,,n=alice",
            b"n,,n=al=ice,r=x",
            b"n,a=bob,n=alice,r=x",
            b"\xff\xfe",
            b"n,,n=alice,r=x,m=ext",
        ] {
            let r = ServerFirst::start(m, first, |_| Some(stored.clone()), |_| vec![0; 8]);
            assert!(r.is_err(), "{first:?}");
        }
        let (server, _) = ServerFirst::start(
            m,
            b"n,,n=a=2Cb=3D,r=x",
            |_| Some(stored.clone()),
            |_| vec![0; 8],
        )
        .unwrap();
        assert_eq!(server.user(), "a,b=");
        for last in [&b""[..], b"c=biws,r=x,p=!!", b"c=eHh4,r=x,p=AAAA"] {
            let (s, _) =
                ServerFirst::start(m, b"n,,n=a,r=x", |_| Some(stored.clone()), |_| vec![0; 8])
                    .unwrap();
            assert!(s.finish(last).is_err(), "{last:?}");
        }
    }
}
