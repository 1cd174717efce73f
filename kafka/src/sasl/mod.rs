//! SASL on the Kafka listeners (KIP-43, KIP-152, KIP-368): the mechanisms
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the users they check against, and where
//! one connection is in its authentication.
//!
//! A connection on a SASL listener may send ApiVersions, SaslHandshake and
//! SaslAuthenticate, and nothing else until it has authenticated; with
//! `connections_max_reauth_ms`, a session ends that long after it began unless the
//! client authenticated again (as the same principal) on the same connection.
//!
//! Never: keeps a password (PLAIN checks the one it is given against the user's
//! SCRAM credential); lets a connection change its principal by authenticating
//! again; or answers a failed authentication at once (the answer waits
//! `connection_failed_authentication_delay_ms`, then the connection closes).

pub mod scram;
pub mod users;

use scram::{Scram, ServerFirst};
use std::rc::Rc;
use std::time::Instant;

/// A SASL mechanism a listener may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(Scram),
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(s) => s.name(),
        }
    }

    pub fn of_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            other => Scram::of_name(other).map(Mechanism::Scram),
        }
    }
}

/// Where a connection is in its authentication.
#[derive(Default)]
pub struct Session {
    pub authenticated: Option<Authenticated>,
    step: Step,
}

/// A connection's authenticated session.
#[derive(Clone)]
pub struct Authenticated {
    pub principal: Rc<str>,
    /// Re-authentication must use the same one (as Kafka requires).
    pub mechanism: Mechanism,
    /// When the session ends (`None`: with the connection).
    pub ends: Option<Instant>,
}

#[derive(Default)]
enum Step {
    /// No exchange under way.
    #[default]
    Idle,
    /// SaslHandshake chose the mechanism; `raw`: v0, so the tokens come as bare
    /// frames, not SaslAuthenticate requests.
    Chosen { mechanism: Mechanism, raw: bool },
    /// SCRAM's server-first message went out.
    ScramSent { first: Box<ServerFirst>, raw: bool },
}

/// What to do with a token of an exchange.
pub enum Next {
    /// Check a PLAIN message.
    Plain,
    /// Start a SCRAM exchange with the client's first message.
    ScramFirst(Scram),
    /// Finish one with the client's final message.
    ScramFinal(Box<ServerFirst>),
}

impl Next {
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Next::Plain => Mechanism::Plain,
            Next::ScramFirst(s) => Mechanism::Scram(*s),
            Next::ScramFinal(first) => Mechanism::Scram(first.mechanism()),
        }
    }
}

impl Session {
    /// Whether the next frame is a bare token (after a v0 handshake).
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.step,
            Step::Chosen { raw: true, .. } | Step::ScramSent { raw: true, .. }
        )
    }

    /// Whether an exchange is under way (a handshake now is out of place).
    pub fn exchanging(&self) -> bool {
        !matches!(self.step, Step::Idle)
    }

    /// A handshake chose `mechanism`.
    pub fn choose(&mut self, mechanism: Mechanism, raw: bool) {
        self.step = Step::Chosen { mechanism, raw };
    }

    /// Takes the exchange's state for the token that came (`None`: no mechanism was
    /// chosen); the session is idle again until [`Session::sent_scram_first`].
    pub fn take_step(&mut self) -> Option<Next> {
        match std::mem::take(&mut self.step) {
            Step::Idle => None,
            Step::Chosen {
                mechanism: Mechanism::Plain,
                ..
            } => Some(Next::Plain),
            Step::Chosen {
                mechanism: Mechanism::Scram(s),
                ..
            } => Some(Next::ScramFirst(s)),
            Step::ScramSent { first, .. } => Some(Next::ScramFinal(first)),
        }
    }

    pub fn sent_scram_first(&mut self, first: ServerFirst, raw: bool) {
        self.step = Step::ScramSent {
            first: Box::new(first),
            raw,
        };
    }

    /// Whether the client may send other requests now: `Err` says why not.
    pub fn may_proceed(&self, now: Instant) -> Result<(), Refusal> {
        match &self.authenticated {
            None => Err(Refusal::NotAuthenticated),
            Some(Authenticated {
                ends: Some(ends), ..
            }) if now >= *ends => Err(Refusal::Expired),
            Some(_) => Ok(()),
        }
    }
}

/// Why a request on a SASL listener is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotAuthenticated,
    Expired,
}

/// A PLAIN message (RFC 4616): `authzid NUL authcid NUL password`, the authzid
/// empty or the user itself. Returns the user and the password.
pub fn parse_plain(message: &[u8]) -> Result<(String, &[u8]), String> {
    let mut parts = message.splitn(3, |b| *b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("a PLAIN message is authzid NUL user NUL password".into());
    };
    let user = std::str::from_utf8(user).map_err(|_| "the user name is not UTF-8".to_string())?;
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if password.contains(&0) {
        return Err("the password holds a NUL".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err("the authorization id is not the user".into());
    }
    Ok((user.to_string(), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".into(), &b"pw"[..])
        );
        for bad in [
            &b"alice\0alice\0p\0w"[..],
            b"",
            b"alice",
            b"\0alice",
            b"bob\0alice\0pw",
            b"\0\0pw",
            b"\0\xff\0pw",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_session_serves_only_once_authenticated_and_until_it_ends() {
        let now = Instant::now();
        let mut s = Session::default();
        assert_eq!(s.may_proceed(now), Err(Refusal::NotAuthenticated));
        assert!(s.take_step().is_none());
        s.choose(Mechanism::Plain, true);
        assert!(s.expects_raw_token() && s.exchanging());
        assert!(matches!(s.take_step(), Some(Next::Plain)));
        assert!(!s.exchanging());
        let later = now + std::time::Duration::from_secs(1);
        s.authenticated = Some(Authenticated {
            principal: "User:a".into(),
            mechanism: Mechanism::Plain,
            ends: Some(later),
        });
        assert_eq!(s.may_proceed(now), Ok(()));
        assert_eq!(s.may_proceed(later), Err(Refusal::Expired));
        assert_eq!(
            Mechanism::of_name("SCRAM-SHA-512"),
            Some(Mechanism::Scram(Scram::Sha512))
        );
        assert_eq!(Mechanism::of_name("GSSAPI"), None);
    }
}
