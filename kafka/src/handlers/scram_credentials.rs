//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the SASL
//! users, managed with Kafka's own tools (`kafka-configs --entity-type users`,
//! AdminClient) while the server runs.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::listener::Client;
use crate::sasl::scram::{Credential, Scram, ITERATIONS_MAX, ITERATIONS_MIN, SALT_BYTES_MAX};
use crate::sasl::users;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashSet};

/// Without the authorizer, only a client on this host may manage users: one that
/// reaches a listener from a loopback address.
pub fn loopback_only(client: &Client) -> Option<KafkaError> {
    if client.peer_ip.is_some_and(|ip| ip.is_loopback()) {
        return None;
    }
    Some(KafkaError::new(
        ResponseError::ClusterAuthorizationFailed,
        "without an authorizer, SASL users and client quotas are managed from this host only (a client on a loopback address)",
    ))
}

/// `refusal`: why the principal may not (the caller's judgement).
pub fn describe(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if let Some(e) = refusal {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let table = broker.users.table();
    let infos = |creds: &BTreeMap<Scram, Credential>| {
        creds
            .iter()
            .map(|(m, c)| {
                CredentialInfo::default()
                    .with_mechanism(m.code())
                    .with_iterations(c.iterations as i32)
            })
            .collect()
    };
    // An empty list asks for every user, as null does (Kafka reads it so).
    let results = match req.users.as_ref().filter(|u| !u.is_empty()) {
        None => table
            .iter()
            .map(|(name, creds)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(name.clone()))
                    .with_credential_infos(infos(creds))
            })
            .collect(),
        Some(asked) => {
            let mut seen = HashSet::new();
            let twice: HashSet<&str> = asked
                .iter()
                .filter(|u| !seen.insert(u.name.as_str()))
                .map(|u| u.name.as_str())
                .collect();
            let mut answered = HashSet::new();
            asked
                .iter()
                .filter(|u| answered.insert(u.name.as_str()))
                .map(|u| {
                    let r = DescribeUserScramCredentialsResult::default().with_user(u.name.clone());
                    let error = if twice.contains(u.name.as_str()) {
                        KafkaError::new(
                            ResponseError::DuplicateResource,
                            format!("user {:?} is asked for twice", u.name.as_str()),
                        )
                    } else if let Some(creds) = table.get(u.name.as_str()) {
                        return r.with_credential_infos(infos(creds));
                    } else {
                        KafkaError::new(
                            ResponseError::ResourceNotFound,
                            format!("no user {:?}", u.name.as_str()),
                        )
                    };
                    r.with_error_code(error.code())
                        .with_error_message(error.message())
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One change to one user's credentials.
enum Change {
    Delete(Scram),
    Upsert(Scram, Credential),
}

pub async fn alter(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if let Some(e) = refusal {
        let names: std::collections::BTreeSet<&str> = req
            .deletions
            .iter()
            .map(|d| d.name.as_str())
            .chain(req.upsertions.iter().map(|u| u.name.as_str()))
            .collect();
        let results = names.into_iter().map(|n| result(n, Some(&e))).collect();
        return AlterUserScramCredentialsResponse::default().with_results(results);
    }
    // Every user's changes, checked; a user with one bad change gets its error and
    // none of its changes are made.
    let mut users: BTreeMap<String, Result<Vec<Change>, KafkaError>> = BTreeMap::new();
    let mut pairs = HashSet::new();
    let table = broker.users.table();
    let deletions = req.deletions.iter().map(|d| (&d.name, d.mechanism, None));
    let upsertions = req
        .upsertions
        .iter()
        .map(|u| (&u.name, u.mechanism, Some(u)));
    for (name, code, upsert) in deletions.chain(upsertions) {
        let checked = check(&table, name.as_str(), code, upsert, &mut pairs);
        let entry = users.entry(name.to_string()).or_insert(Ok(Vec::new()));
        match (entry, checked) {
            (Ok(changes), Ok(change)) => changes.push(change),
            (entry @ Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    }
    let mut valid: Vec<(String, Vec<Change>)> = Vec::new();
    let mut results = Vec::new();
    for (name, checked) in users {
        match checked {
            Ok(changes) => valid.push((name, changes)),
            Err(e) => results.push(result(&name, Some(&e))),
        }
    }
    let names: Vec<String> = valid.iter().map(|(n, _)| n.clone()).collect();
    let applied = broker
        .users
        .change(move |table| {
            for (name, changes) in valid {
                let creds = table.entry(name.clone()).or_default();
                for change in changes {
                    match change {
                        Change::Delete(m) => creds.remove(&m),
                        Change::Upsert(m, c) => creds.insert(m, c),
                    };
                }
                if creds.is_empty() {
                    table.remove(&name);
                }
            }
        })
        .await;
    if let Err(e) = &applied {
        tracing::error!(shard = broker.shard, "cannot change the SASL users: {e}");
    } else if !names.is_empty() {
        tracing::info!(shard = broker.shard, users = ?names, "SASL users changed");
    }
    results.extend(names.iter().map(|n| result(n, applied.as_ref().err())));
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn result(name: &str, error: Option<&KafkaError>) -> AlterUserScramCredentialsResult {
    let r =
        AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(name.into()));
    match error {
        None => r,
        Some(e) => r.with_error_code(e.code()).with_error_message(e.message()),
    }
}

fn check(
    table: &users::Table,
    name: &str,
    code: i8,
    upsert: Option<
        &kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion,
    >,
    pairs: &mut HashSet<(String, i8)>,
) -> Result<Change, KafkaError> {
    let unacceptable = |why: String| KafkaError::new(ResponseError::UnacceptableCredential, why);
    users::name_ok(name).map_err(unacceptable)?;
    let mechanism = Scram::of_code(code).ok_or_else(|| {
        KafkaError::new(
            ResponseError::UnsupportedSaslMechanism,
            format!("mechanism {code}: use 1 (SCRAM-SHA-256) or 2 (SCRAM-SHA-512)"),
        )
    })?;
    if !pairs.insert((name.to_string(), code)) {
        return Err(KafkaError::new(
            ResponseError::DuplicateResource,
            format!(
                "{} of user {name:?} is changed twice in one request",
                mechanism.name()
            ),
        ));
    }
    let Some(u) = upsert else {
        let exists = table.get(name).is_some_and(|c| c.contains_key(&mechanism));
        if !exists {
            return Err(KafkaError::new(
                ResponseError::ResourceNotFound,
                format!(
                    "user {name:?} has no {} credential to delete",
                    mechanism.name()
                ),
            ));
        }
        return Ok(Change::Delete(mechanism));
    };
    let iterations = u32::try_from(u.iterations).unwrap_or(0);
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(unacceptable(format!(
            "iterations {}: use {ITERATIONS_MIN} to {ITERATIONS_MAX}",
            u.iterations
        )));
    }
    if u.salt.is_empty()
        || u.salt.len() > SALT_BYTES_MAX
        || u.salted_password.len() != mechanism.key_len()
    {
        return Err(unacceptable(format!(
            "a {} credential needs a salt of 1 to {} bytes and a salted password of {} bytes",
            mechanism.name(),
            SALT_BYTES_MAX,
            mechanism.key_len()
        )));
    }
    let credential =
        Credential::of_salted(mechanism, u.salt.to_vec(), iterations, &u.salted_password);
    Ok(Change::Upsert(mechanism, credential))
}
