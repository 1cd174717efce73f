//! The security checks on the request path, per call: an ACL decision (off, and on
//! with 1000 ACLs of which a few cover the topic) and a quota charge; and a PLAIN
//! login's password check (PBKDF2-SHA-512 with 4096 rounds: the cost of a login,
//! not of a request; a SCRAM login costs the server a few HMACs instead).
//! `cargo bench --bench security`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Instant;
use tidewater_kafka::acl::{Authorizer, AuthorizerConfig, Operation, ResourceType};
use tidewater_kafka::quota::{Applied, Kind, Usage};
use tidewater_kafka::sasl::scram::{Credential, Scram};

/// An authorizer over `acls` ACLs on topics `t0`.. (one allow each), plus a
/// prefixed allow and a deny of another user on `events`.
fn authorizer(on: bool, acls: usize) -> (Authorizer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut list: Vec<String> = (0..acls)
        .map(|i| {
            format!(
                r#"{{"resource_type":"TOPIC","name":"t{i}","pattern":"LITERAL","principal":"User:u{i}","host":"*","operation":"WRITE","permission":"ALLOW"}}"#
            )
        })
        .collect();
    list.push(r#"{"resource_type":"TOPIC","name":"ev","pattern":"PREFIXED","principal":"User:alice","host":"*","operation":"WRITE","permission":"ALLOW"}"#.into());
    list.push(r#"{"resource_type":"TOPIC","name":"events","pattern":"LITERAL","principal":"User:bob","host":"*","operation":"ALL","permission":"DENY"}"#.into());
    let text = format!(r#"{{"acls":[{}]}}"#, list.join(","));
    std::fs::write(dir.path().join("acls.json"), text).expect("acls.json written");
    let config = AuthorizerConfig {
        on,
        ..AuthorizerConfig::default()
    };
    let a = Authorizer::open(dir.path(), &config).expect("the ACLs load");
    (a, dir)
}

fn acl_checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("security");
    let (off, _d1) = authorizer(false, 0);
    g.bench_function("acl_off", |b| {
        b.iter(|| {
            off.allows(
                ("User:alice", "10.0.0.1"),
                Operation::Write,
                (ResourceType::Topic, "events"),
            )
        })
    });
    let (on, _d2) = authorizer(true, 1000);
    assert!(on.allows(
        ("User:alice", "10.0.0.1"),
        Operation::Write,
        (ResourceType::Topic, "events")
    ));
    g.bench_function("acl_on_1000_acls", |b| {
        b.iter(|| {
            on.allows(
                ("User:alice", "10.0.0.1"),
                Operation::Write,
                (ResourceType::Topic, "events"),
            )
        })
    });
    let usage = Usage::default();
    let applied = Applied {
        limit: 1e12,
        key: ("alice".into(), String::new()),
    };
    g.bench_function("quota_charge", |b| {
        b.iter(|| usage.record(Kind::Produce, &applied, 300_000.0, Instant::now()))
    });
    g.finish();
}

fn logins(c: &mut Criterion) {
    let mut g = c.benchmark_group("security");
    g.sample_size(20);
    let m = Scram::Sha512;
    let stored = Credential::new(m, b"secret", 4096);
    g.bench_function("plain_login_pbkdf2_4096", |b| {
        b.iter(|| stored.verifies(m, b"secret"))
    });
    g.finish();
}

criterion_group!(benches, acl_checks, logins);
criterion_main!(benches);
