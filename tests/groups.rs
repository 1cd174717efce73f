//! Consumer groups with real clients: kcat (librdkafka), confluent-kafka with each
//! assignor, kafka-python, aiokafka, KafkaJS and sarama consume with their default
//! group settings in both Kafka modes; committed offsets survive kill -9; bad group input
//! gets the protocol's error codes.

mod common;

use common::requests::{call, commit_request, framed, join_request, topic};
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::StrBytes;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server of `cores` cores on topic `events` (`partitions` partitions) whose
/// groups rebalance without the 3 s wait for more members.
fn server(cores: &str, partitions: u32, extra: &[&str]) -> common::Server {
    let mut args = vec!["--group-initial-rebalance-delay-ms", "200"];
    args.extend_from_slice(extra);
    common::start_with(cores, partitions, &args)
}

fn two_cpus() -> bool {
    let ok = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !ok {
        eprintln!("SKIPPED: needs 2 CPUs");
    }
    ok
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(id: &str) -> m::GroupId {
    m::GroupId(s(id))
}

fn produce(broker: &str, from: usize, to: usize) {
    let input: String = (from..to).map(|i| format!("k{i}\tv{i}\n")).collect();
    let (ok, _, err) = common::kcat(
        &[
            "-P", "-b", broker, "-t", "events", "-K", "\t", "-X", "acks=all",
        ],
        Some(&input),
    );
    assert!(ok, "produce failed: {err}");
}

/// A kcat group member printing `partition value` per message, until stopped.
fn kcat_member(broker: &str, group_id: &str, extra: &[&str]) -> Child {
    Command::new("kcat")
        .args([
            "-b", broker, "-G", group_id, "events", "-f", "%p %s\n", "-u",
        ])
        .args([
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            "auto.commit.interval.ms=100",
        ])
        .args([
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=300",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat is installed (scripts/test installs it)")
}

/// The lines a child prints, as they come.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Stops a kcat member the way a person does (SIGINT): it commits and leaves.
fn interrupt(child: &mut Child) {
    // SAFETY: kill(2) on a child of ours that has not been waited for.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kcat did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kcat_members_split_a_topic_and_a_new_one_resumes_after_a_kill_9() {
    if !two_cpus() {
        return;
    }
    let mut s = server("2", 4, &[]);
    let broker = format!("127.0.0.1:{}", s.port);
    produce(&broker, 0, 400);
    let mut members = [
        kcat_member(&broker, "kc", &[]),
        kcat_member(&broker, "kc", &[]),
    ];
    let outputs: Vec<_> = members.iter_mut().map(lines_of).collect();
    let mut got: Vec<Vec<(u32, String)>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.iter().map(Vec::len).sum::<usize>() < 400 {
        assert!(
            Instant::now() < deadline,
            "consumed {:?} of 400",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, rx) in outputs.iter().enumerate() {
            while let Ok(line) = rx.try_recv() {
                let (p, v) = line.split_once(' ').unwrap();
                got[i].push((p.parse().unwrap(), v.to_string()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the last auto-commit go out, then stop both: each commits and leaves.
    std::thread::sleep(Duration::from_millis(500));
    for m in &mut members {
        interrupt(m);
    }
    let mut values: Vec<String> = got.iter().flatten().map(|(_, v)| v.clone()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 400, "every message, each once");
    let parts: Vec<std::collections::BTreeSet<u32>> = got
        .iter()
        .map(|g| g.iter().map(|(p, _)| *p).collect())
        .collect();
    assert!(
        !parts[0].is_empty() && !parts[1].is_empty() && parts[0].is_disjoint(&parts[1]),
        "the members split the partitions: {parts:?}"
    );

    // kill -9, restart on the same ports: a new member resumes at the commits.
    s.kill_and_start_again("2", &["--group-initial-rebalance-delay-ms", "200"]);
    produce(&broker, 400, 450);
    let mut late = kcat_member(&broker, "kc", &["-e"]);
    let rx = lines_of(&mut late);
    let status = late.wait().unwrap();
    assert!(status.success());
    let mut after: Vec<String> = rx
        .try_iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    after.sort();
    let mut want: Vec<String> = (400..450).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(after, want, "only what came after the commits");
}

#[test]
fn confluent_kafka_groups_with_each_assignor_in_both_modes() {
    if !two_cpus() {
        return;
    }
    for (strategy, mode) in [
        ("range", "per-core"),
        ("cooperative-sticky", "per-core"),
        ("roundrobin", "single-port"),
        ("cooperative-sticky", "single-port"),
    ] {
        group_script("group_confluent.py", strategy, mode);
    }
}

/// Runs a client script of tests/clients against a fresh 2-core server in `mode`,
/// on topic `events` (4 partitions), with `variant` (an assignor, a client).
fn group_script(script: &str, variant: &str, mode: &str) {
    let s = server("2", 4, &["--kafka-mode", mode]);
    let broker = format!("127.0.0.1:{}", s.port);
    let (ok, out) = common::python(script, &[&broker, "events", "4", variant]);
    assert!(ok, "{script} {variant}, {mode}: {out}");
}

#[test]
fn kafka_python_and_aiokafka_groups() {
    if !two_cpus() {
        return;
    }
    for (client, mode) in [
        ("kafka-python", "per-core"),
        ("aiokafka", "single-port"),
        ("kafka-python", "single-port"),
        ("aiokafka", "per-core"),
    ] {
        group_script("group_python.py", client, mode);
    }
}

#[test]
fn kafkajs_consumes_with_a_group() {
    if !two_cpus() {
        return;
    }
    // scripts/test installs kafkajs here (npm).
    let modules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-node/node_modules");
    assert!(
        modules.join("kafkajs").is_dir(),
        "kafkajs is not installed: scripts/test installs it (npm install --prefix target/test-node kafkajs)"
    );
    for mode in ["per-core", "single-port"] {
        let s = server("2", 4, &["--kafka-mode", mode]);
        let broker = format!("127.0.0.1:{}", s.port);
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/group_kafkajs.js");
        let out = Command::new("node")
            .arg(script)
            .args([&broker, "events", "4"])
            .env("NODE_PATH", &modules)
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
            .output()
            .expect("node is installed (scripts/test installs nodejs)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "KafkaJS, {mode}: {text}");
    }
}

#[test]
fn loadgen_consume_reads_a_topic_as_a_group_and_commits_where_it_stopped() {
    let s = server("2", 4, &[]);
    let broker = format!("127.0.0.1:{}", s.port);
    let loadgen = |args: &[&str]| {
        let out = common::tidewater()
            .args([
                "loadgen",
                "--brokers",
                &broker,
                "--topic",
                "events",
                "--quiet",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    loadgen(&["--events", "20000", "--devices", "500"]);
    let report = s.dir.path().join("consume.json");
    loadgen(&[
        "--consume",
        "--group",
        "lg",
        "--consumers",
        "3",
        "--events",
        "20000",
        "--report",
        report.to_str().unwrap(),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["consumed"].as_u64(), Some(20000), "{r}");
    assert!(r["commits"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    // The members committed the end of every partition before they left.
    let req = m::OffsetFetchRequest::default()
        .with_group_id(group("lg"))
        .with_topics(None);
    let got: m::OffsetFetchResponse = call(s.port, ApiKey::OffsetFetch, 7, &req);
    let total: i64 = got
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
        .sum();
    assert_eq!(total, 20000, "{got:?}");
}

#[test]
fn sarama_consumes_with_a_group_and_returns_when_cancelled() {
    if !two_cpus() {
        return;
    }
    // scripts/test builds it from tests/clients/sarama with Debian's sarama.
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-go/sarama-group");
    assert!(
        bin.is_file(),
        "the sarama client is not built: scripts/test builds it (apt-get install golang-go golang-github-shopify-sarama-dev)"
    );
    for mode in ["per-core", "single-port"] {
        let srv = server("2", 4, &["--kafka-mode", mode]);
        let broker = format!("127.0.0.1:{}", srv.port);
        let out = Command::new(&bin)
            .args([&broker, "events", "500"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("OK"),
            "sarama, {mode}: {text}"
        );
    }
}

/// Commits offset `offset` of partition 0 for group `g` from outside the group
/// (generation -1, as a consumer with assign() does); the partition's error code.
fn commit(port: u16, g: &str, offset: i64) -> i16 {
    let req = commit_request(g, (-1, ""), ("events", 0, offset), Some("meta"));
    let r: m::OffsetCommitResponse = call(port, ApiKey::OffsetCommit, 8, &req);
    r.topics[0].partitions[0].error_code
}

/// The committed offset of partition 0 for group `g` (-1: none), asked in v8.
fn committed(port: u16, g: &str) -> i64 {
    let req = m::OffsetFetchRequest::default().with_groups(vec![
        m::offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(group(g))
            .with_topics(Some(vec![
                m::offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(topic("events"))
                    .with_partition_indexes(vec![0]),
            ])),
    ]);
    let r: m::OffsetFetchResponse = call(port, ApiKey::OffsetFetch, 8, &req);
    assert_eq!(r.groups[0].error_code, 0);
    let p = &r.groups[0].topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.committed_offset
}

#[test]
fn an_acknowledged_commit_survives_kill_9_every_time() {
    let mut s = server("2", 2, &["--durability", "always"]);
    // Several groups, so that both cores coordinate some.
    let groups: Vec<String> = (0..6).map(|i| format!("durable-{i}")).collect();
    for round in 1..=4i64 {
        for g in &groups {
            assert_eq!(commit(s.port, g, round * 100), 0);
        }
        // Killed right after the last acknowledgement.
        s.kill_and_start_again("2", &["--durability", "always"]);
        for g in &groups {
            assert_eq!(
                committed(s.port, g),
                round * 100,
                "group {g}, round {round}"
            );
        }
    }
    assert_eq!(committed(s.port, "never-committed"), -1);
}

/// Stops a server as systemd does (SIGTERM) and waits for it.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on a child of ours that has not been waited for.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success(), "a clean stop");
}

#[test]
fn compaction_keeps_each_groups_last_commit_and_deletes_the_rest() {
    // Small ledger segments so that compacted ones are sealed and deleted.
    let storage = [
        "--durability",
        "interval",
        "--offsets-compact-bytes",
        "16384",
        "--ledger-flush-bytes",
        "16384",
        "--batch-bytes-max",
        "16384",
        "--ledger-segment-bytes",
        "40960",
        "--ledger-flush-interval-ms",
        "50",
    ];
    let mut s = server("1", 2, &storage);
    let groups: Vec<String> = (0..2).map(|i| format!("compacted-{i}")).collect();
    for round in 1..=1000i64 {
        for g in &groups {
            assert_eq!(commit(s.port, g, round), 0);
        }
    }
    let compactions = || {
        s.log
            .try_iter()
            .filter(|l| l.contains("committed offsets compacted"))
            .count()
    };
    let seen = compactions();
    assert!(seen >= 8, "{seen} compactions of about 180 KiB of commits");
    // Each offsets partition keeps at most its active segment and the one its last
    // snapshot began in; 1000 commits of a group take about 90 KiB, three segments.
    let ledger = s.dir.path().join("data/ledger/shard-0");
    let segments = || -> Vec<(String, usize)> {
        std::fs::read_dir(&ledger)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("__consumer_offsets-")
            })
            .map(|p| {
                let n = std::fs::read_dir(&p)
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .path()
                            .extension()
                            .is_some_and(|x| x == "log")
                    })
                    .count();
                (p.file_name().unwrap().to_string_lossy().into_owned(), n)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments().iter().any(|(_, n)| *n > 2) {
        assert!(
            Instant::now() < deadline,
            "compacted segments are deleted: {:?}",
            segments()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // After a restart, each group's last commit, replayed from what is left.
    stop(&mut s.child);
    s.start_again("1", &storage);
    for g in &groups {
        assert_eq!(committed(s.port, g), 1000, "group {g}");
    }
}

/// JoinGroup v5 of a consumer that names its member id (empty: a new member).
fn join(port: u16, g: &str, member: &str, session_ms: i32) -> m::JoinGroupResponse {
    call(
        port,
        ApiKey::JoinGroup,
        5,
        &join_request(g, member, session_ms),
    )
}

fn sync(port: u16, g: &str, member: &str, generation: i32, assignment: Vec<u8>) -> i16 {
    let req = m::SyncGroupRequest::default()
        .with_group_id(group(g))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(vec![
            m::sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(bytes::Bytes::from(assignment)),
        ]);
    let r: m::SyncGroupResponse = call(port, ApiKey::SyncGroup, 3, &req);
    r.error_code
}

fn heartbeat(port: u16, g: &str, member: &str, generation: i32) -> i16 {
    let req = m::HeartbeatRequest::default()
        .with_group_id(group(g))
        .with_generation_id(generation)
        .with_member_id(s(member));
    let r: m::HeartbeatResponse = call(port, ApiKey::Heartbeat, 3, &req);
    r.error_code
}

#[test]
fn bad_group_input_gets_the_protocol_errors_in_both_modes() {
    if !two_cpus() {
        return;
    }
    for mode in ["per-core", "single-port"] {
        let srv = server("2", 2, &["--kafka-mode", mode]);
        let port = srv.port;
        // Unknown members, groups and generations.
        assert_eq!(heartbeat(port, "g", "nobody", 1), 25, "UNKNOWN_MEMBER_ID");
        assert_eq!(sync(port, "g", "nobody", 1, vec![]), 25);
        assert_eq!(
            join(port, "g", "", 100).error_code,
            26,
            "INVALID_SESSION_TIMEOUT"
        );
        assert_eq!(
            join(port, "", "", 10_000).error_code,
            24,
            "INVALID_GROUP_ID"
        );
        assert_eq!(join(port, "g", "made-up", 10_000).error_code, 25);
        // A member joins in two steps (KIP-394), then errs.
        let first = join(port, "g", "", 10_000);
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        let id = first.member_id.to_string();
        let joined = join(port, "g", &id, 10_000);
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.leader.as_str(), id, "alone, it leads");
        assert_eq!(heartbeat(port, "g", &id, 7), 22, "ILLEGAL_GENERATION");
        assert_eq!(sync(port, "g", &id, 7, vec![]), 22);
        // An assignment beyond the member's share: refused, the group starts over.
        assert_eq!(
            sync(port, "g", &id, 1, vec![0; 2 << 20]),
            42,
            "INVALID_REQUEST"
        );
        let again = join(port, "g", &id, 10_000);
        assert_eq!((again.error_code, again.generation_id), (0, 2));
        assert_eq!(sync(port, "g", &id, 2, b"ok".to_vec()), 0);
        assert_eq!(heartbeat(port, "g", &id, 2), 0);
        // Commits: an unknown topic, a generation the group never had.
        let req = m::OffsetCommitRequest::default()
            .with_group_id(group("g"))
            .with_generation_id_or_member_epoch(2)
            .with_member_id(s(&id))
            .with_topics(vec![
                m::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic("no-such-topic"))
                    .with_partitions(vec![Default::default()]),
                m::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic("events"))
                    .with_partitions(vec![
                        m::offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(3),
                        m::offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(9),
                    ]),
            ]);
        let r: m::OffsetCommitResponse = call(port, ApiKey::OffsetCommit, 7, &req);
        let codes: Vec<i16> = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        assert_eq!(
            codes,
            vec![3, 0, 3],
            "UNKNOWN_TOPIC_OR_PARTITION beside a good commit"
        );
        let stale = req
            .clone()
            .with_group_id(group("fresh"))
            .with_generation_id_or_member_epoch(5);
        let r: m::OffsetCommitResponse = call(port, ApiKey::OffsetCommit, 7, &stale);
        assert_eq!(r.topics[1].partitions[0].error_code, 22);
        // Admin calls.
        let r: m::DeleteGroupsResponse = call(
            port,
            ApiKey::DeleteGroups,
            2,
            &m::DeleteGroupsRequest::default().with_groups_names(vec![group("g"), group("nope")]),
        );
        let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
        assert_eq!(codes, vec![68, 69], "NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND");
        let r: m::DescribeGroupsResponse = call(
            port,
            ApiKey::DescribeGroups,
            5,
            &m::DescribeGroupsRequest::default().with_groups(vec![group("g"), group("nope")]),
        );
        assert_eq!(r.groups[0].group_state.as_str(), "Stable");
        assert_eq!(r.groups[0].members.len(), 1);
        assert_eq!(r.groups[0].members[0].member_assignment.as_ref(), b"ok");
        assert_eq!(r.groups[1].group_state.as_str(), "Dead");
        let r: m::FindCoordinatorResponse = call(
            port,
            ApiKey::FindCoordinator,
            4,
            &m::FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_coordinator_keys(vec![s("txn")]),
        );
        assert_eq!(r.coordinators[0].error_code, 42, "no transactions");
        // The member leaves: the group is empty and can go, with its commits.
        let leave = m::LeaveGroupRequest::default()
            .with_group_id(group("g"))
            .with_members(vec![
                m::leave_group_request::MemberIdentity::default().with_member_id(s(&id))
            ]);
        let r: m::LeaveGroupResponse = call(port, ApiKey::LeaveGroup, 4, &leave);
        assert_eq!((r.error_code, r.members[0].error_code), (0, 0));
        let r: m::DeleteGroupsResponse = call(
            port,
            ApiKey::DeleteGroups,
            2,
            &m::DeleteGroupsRequest::default().with_groups_names(vec![group("g")]),
        );
        assert_eq!(r.results[0].error_code, 0);
        assert_eq!(committed(port, "g"), -1, "its commits went with it");
    }
}

/// A group keeps consuming across a kill -9 of the server in the middle of its
/// commits and rebalances: the members rejoin, nothing is lost, and no committed
/// offset ever goes back.
#[test]
fn a_group_rides_out_kill_9_and_no_commit_goes_back() {
    if !two_cpus() {
        return;
    }
    let mut s = server("2", 4, &["--durability", "always"]);
    let broker = format!("127.0.0.1:{}", s.port);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/group_restart.py");
    let mut py = Command::new("python3")
        .arg(script)
        .args([&broker, "events", "4", "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut py);
    // Kill the server twice while the members consume and commit.
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the script reports progress");
            if line.starts_with("progress") || Instant::now() > deadline {
                break;
            }
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
        std::thread::sleep(Duration::from_millis(500));
        s.start_again(
            "2",
            &[
                "--durability",
                "always",
                "--group-initial-rebalance-delay-ms",
                "200",
            ],
        );
    }
    let status = py.wait().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    let mut err = String::new();
    py.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{}\n{err}", rest.join("\n"));
    assert!(rest.iter().any(|l| l == "OK"), "{}", rest.join("\n"));
}

#[test]
fn a_kill_9_in_the_middle_of_a_rebalance_loses_no_commit_and_members_join_again() {
    let mut srv = server("2", 2, &["--durability", "always"]);
    // A joins alone, syncs, commits offset 7 as a member of generation 1.
    let id = join(srv.port, "mid", "", 10_000).member_id.to_string();
    let a = join(srv.port, "mid", &id, 10_000);
    assert_eq!((a.error_code, a.generation_id), (0, 1));
    assert_eq!(sync(srv.port, "mid", &id, 1, vec![]), 0);
    let req = commit_request("mid", (1, &id), ("events", 0, 7), None);
    let r: m::OffsetCommitResponse = call(srv.port, ApiKey::OffsetCommit, 7, &req);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    // B joins: the group is rebalancing, B's JoinGroup waits for A.
    let b_id = join(srv.port, "mid", "", 10_000).member_id.to_string();
    let port = srv.port;
    let waiting = std::thread::spawn(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = join_request("mid", &b_id, 10_000);
        c.write_all(&framed(ApiKey::JoinGroup, 5, &req)).unwrap();
        let mut len = [0u8; 4];
        // The server dies before it answers: the read fails or ends.
        c.read_exact(&mut len).is_err()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while heartbeat(srv.port, "mid", &id, 1) != 27 {
        assert!(Instant::now() < deadline, "the rebalance never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    assert!(
        waiting.join().unwrap(),
        "B's JoinGroup was cut off with the server"
    );
    srv.start_again("2", &["--group-initial-rebalance-delay-ms", "200"]);
    // The commit stands; the old member is unknown and joins again as a new one, in
    // a generation past every one before.
    assert_eq!(committed(srv.port, "mid"), 7);
    assert_eq!(
        heartbeat(srv.port, "mid", &id, 1),
        25,
        "UNKNOWN_MEMBER_ID: join again"
    );
    let again = join(srv.port, "mid", "", 10_000).member_id.to_string();
    let rejoined = join(srv.port, "mid", &again, 10_000);
    assert_eq!(rejoined.error_code, 0);
    assert!(
        rejoined.generation_id >= 2,
        "generation {} repeats one before the kill",
        rejoined.generation_id
    );
    assert_eq!(committed(srv.port, "mid"), 7);
}
