//! SaslHandshake and SaslAuthenticate (and the bare tokens that follow a v0
//! handshake): a connection's way to a principal on a SASL listener.

use crate::broker::{Broker, APPEND_FAILURE_LOG_EVERY};
use crate::error::KafkaError;
use crate::listener::Client;
use crate::sasl::{self, scram, Mechanism, Next};
use kafka_protocol::messages::SaslHandshakeResponse;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::time::{Duration, Instant};

/// Largest SASL token a client may send as a bare frame (after a v0 handshake),
/// and largest request before a client authenticated on a SASL listener (Kafka's
/// sasl.server.max.receive.size).
pub const TOKEN_BYTES_MAX: usize = 512 << 10;

/// SaslHandshake: the mechanism, if the listener offers it. `true` with the answer:
/// the connection closes after it (Kafka's broker does the same).
pub fn handshake(client: &Client, mechanism: &str, version: i16) -> (SaslHandshakeResponse, bool) {
    let offered = client.endpoint.sasl.as_deref().unwrap_or_default();
    let names = offered
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let resp = SaslHandshakeResponse::default().with_mechanisms(names);
    let mut session = client.session.borrow_mut();
    let refuse = |error: ResponseError| (resp.clone().with_error_code(error.code()), true);
    if offered.is_empty() || session.exchanging() {
        return refuse(ResponseError::IllegalSaslState);
    }
    if version == 0 && session.authenticated.is_some() {
        // Re-authentication needs SaslAuthenticate (KIP-368): a v0 client has none.
        return refuse(ResponseError::IllegalSaslState);
    }
    match Mechanism::of_name(mechanism).filter(|m| offered.contains(m)) {
        Some(m) => {
            session.choose(m, version == 0);
            (resp, false)
        }
        None => refuse(ResponseError::UnsupportedSaslMechanism),
    }
}

/// The answer to one token of an exchange.
pub struct Answer {
    /// The server's token (empty when the mechanism has none to send).
    pub token: Vec<u8>,
    /// Set: the exchange failed; the connection closes after the answer.
    pub error: Option<KafkaError>,
    /// When the session must be renewed, from now (0: never); on success only.
    pub session_lifetime_ms: i64,
}

impl Answer {
    fn failed(error: KafkaError) -> Answer {
        Answer {
            token: Vec::new(),
            error: Some(error),
            session_lifetime_ms: 0,
        }
    }
}

/// One token of the exchange the handshake began.
pub async fn token(broker: &Broker, client: &Client, token: &[u8]) -> Answer {
    let raw = client.session.borrow().expects_raw_token();
    let Some(next) = client.session.borrow_mut().take_step() else {
        return Answer::failed(KafkaError::new(
            ResponseError::IllegalSaslState,
            "SaslAuthenticate before a SaslHandshake",
        ));
    };
    let mechanism = next.mechanism();
    let now_s = unix_seconds();
    if let Some(ip) = client.peer_ip {
        if broker.failed_logins.exceeded(ip, now_s / 60) {
            let why = format!(
                "{ip} failed to authenticate more than {} times this minute (failed_authentications_per_ip_per_minute)",
                broker.limits.failed_authentications_per_ip_per_minute
            );
            return fail(broker, client, mechanism, why).await;
        }
    }
    let users = &broker.users;
    let checked = match next {
        Next::Plain => sasl::parse_plain(token).and_then(|(user, password)| {
            // An unknown user costs the same PBKDF2 as a known one.
            let (m, credential, known) = users.plain_credential(&user);
            match (credential.verifies(m, password), known) {
                (true, true) => Ok((user, Vec::new())),
                (_, false) => Err(format!("no user {user:?}")),
                (false, true) => Err(format!("wrong password for user {user:?}")),
            }
        }),
        Next::ScramFirst(m) => {
            let started = scram::ServerFirst::start(
                m,
                token,
                |user| users.credential(user, m),
                |user| users.fake_salt(user),
            );
            return match started {
                Ok((first, challenge)) => {
                    client.session.borrow_mut().sent_scram_first(first, raw);
                    Answer {
                        token: challenge,
                        error: None,
                        session_lifetime_ms: 0,
                    }
                }
                Err(scram::Failed(why)) => fail(broker, client, mechanism, why).await,
            };
        }
        Next::ScramFinal(first) => first.finish(token).map_err(|scram::Failed(why)| why),
    };
    match checked {
        Ok((user, last)) => authenticated(broker, client, mechanism, &user, last).await,
        Err(why) => fail(broker, client, mechanism, why).await,
    }
}

async fn authenticated(
    broker: &Broker,
    client: &Client,
    mechanism: Mechanism,
    user: &str,
    last: Vec<u8>,
) -> Answer {
    let principal: std::rc::Rc<str> = format!("User:{user}").into();
    let before = client.session.borrow().authenticated.clone();
    let again = before.is_some();
    if let Some(before) = before.filter(|b| b.principal != principal || b.mechanism != mechanism) {
        let why = format!(
            "re-authentication as {principal} with {} on a connection of {} with {} (the principal and the mechanism stay)",
            mechanism.name(),
            before.principal,
            before.mechanism.name()
        );
        return fail(broker, client, mechanism, why).await;
    }
    let lifetime_ms = broker.limits.connections_max_reauth_ms;
    let ends = (lifetime_ms > 0)
        .then(|| Instant::now().checked_add(Duration::from_millis(lifetime_ms)))
        .flatten();
    client.session.borrow_mut().authenticated = Some(sasl::Authenticated {
        principal: principal.clone(),
        mechanism,
        ends,
    });
    let stats = &broker.stats;
    let counter = if again {
        &stats.sasl_reauthentications
    } else {
        &stats.sasl_authentications
    };
    counter.set(counter.get() + 1);
    tracing::debug!(
        shard = broker.shard,
        peer = %client.host,
        listener = client.endpoint.name,
        mechanism = mechanism.name(),
        %principal,
        again,
        "SASL authentication succeeded"
    );
    Answer {
        token: last,
        error: None,
        session_lifetime_ms: i64::try_from(lifetime_ms).unwrap_or(i64::MAX),
    }
}

/// A failed authentication: counted, noted against the client's IP, logged (a line
/// per period), and answered after `connection_failed_authentication_delay_ms`.
/// The client is told only that its credentials were not accepted.
async fn fail(broker: &Broker, client: &Client, mechanism: Mechanism, why: String) -> Answer {
    let stats = &broker.stats;
    stats
        .sasl_authentication_failures
        .set(stats.sasl_authentication_failures.get() + 1);
    if let Some(ip) = client.peer_ip {
        let within = broker.failed_logins.admit(ip, unix_seconds() / 60);
        stats
            .sasl_failed_login_ips
            .set(broker.failed_logins.tracked() as u64);
        let now = Instant::now();
        if !within {
            if let Some(more) = broker.sasl_limited.admit(now, APPEND_FAILURE_LOG_EVERY) {
                tracing::warn!(
                    shard = broker.shard,
                    peer = %client.host,
                    listener = client.endpoint.name,
                    limit = broker.limits.failed_authentications_per_ip_per_minute,
                    "client IP {ip} failed to authenticate more often than failed_authentications_per_ip_per_minute: its authentications fail unchecked until the minute ends ({more} more such lines left out)"
                );
            }
        }
    }
    if let Some(more) = broker
        .sasl_failures
        .admit(Instant::now(), APPEND_FAILURE_LOG_EVERY)
    {
        tracing::warn!(
            shard = broker.shard,
            peer = %client.host,
            listener = client.endpoint.name,
            mechanism = mechanism.name(),
            "SASL authentication failed: {why} ({more} more since the last line; tidewater_kafka_sasl_authentication_failures_total counts them all)"
        );
    }
    let delay = broker.limits.connection_failed_authentication_delay_ms;
    if delay > 0 {
        glommio::timer::sleep(Duration::from_millis(delay)).await;
    }
    Answer::failed(KafkaError::new(
        ResponseError::SaslAuthenticationFailed,
        format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            mechanism.name()
        ),
    ))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
