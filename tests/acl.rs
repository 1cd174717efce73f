//! The ACL authorizer with a real client (confluent-kafka): ACLs made, listed and
//! deleted through CreateAcls, DescribeAcls and DeleteAcls by a super user, and
//! enforced on produce, fetch, consumer groups, Metadata, CreateTopics,
//! DeleteTopics, configs and the ACL APIs themselves (TOPIC_, GROUP_ and
//! CLUSTER_AUTHORIZATION_FAILED), on every core, across a restart.

mod common;

#[test]
fn acls_allow_and_deny_each_api_for_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    for user in ["admin", "alice", "bob", "carol"] {
        let args = ["add", user, "--password-stdin", "--data-dir", data];
        let (ok, said) = common::users(&args, &format!("{user}-secret\n"));
        assert!(ok, "{said}");
    }
    let base = tidewater_tools::ports::free(4).expect("free ports");
    let (plain, sasl) = (base, base + 2);
    let cfg = dir.path().join("acl.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"authorizer = "acl"
super_users = ["User:admin"]

[[topics]]
name = "events"
partitions = 2

[[listeners]]
name = "INTERNAL"
addr = "127.0.0.1:{plain}"

[[listeners]]
name = "SASL"
addr = "127.0.0.1:{sasl}"
protocol = "SASL_PLAINTEXT"
"#
        ),
    )
    .unwrap();
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data,
        "--cores",
        common::cores(),
    ];
    let admin = common::free_ports();
    let (child, _log) = common::serve_exactly(&args, admin);
    let server = common::KilledOnDrop(child);
    let sasl_broker = format!("127.0.0.1:{sasl}");
    let plain_broker = format!("127.0.0.1:{plain}");
    let (ok, said) = common::python("acl.py", &["scenario", &sasl_broker, &plain_broker]);
    assert!(ok && said.contains("scenario done"), "{said}");
    let refused = common::metric_sum(
        &common::scrape_when(admin, |t| {
            common::metric_sum(t, "tidewater_kafka_authorization_failures_total") > 0.0
        }),
        "tidewater_kafka_authorization_failures_total",
    );
    assert!(refused > 0.0, "refusals are counted");
    let text = std::fs::read_to_string(dir.path().join("data/acls.json")).unwrap();
    assert!(text.contains("\"User:alice\""), "{text}");

    // The ACLs are on disk: a new server enforces them.
    drop(server);
    let (child, _log) = common::serve_exactly(&args, admin);
    let _server = common::KilledOnDrop(child);
    let (ok, said) = common::python("acl.py", &["after-restart", &sasl_broker]);
    assert!(ok && said.contains("after restart done"), "{said}");
}
