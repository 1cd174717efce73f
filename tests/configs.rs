//! Topic and broker configs with real admin clients (confluent-kafka, kafka-python),
//! and a topic's own retention and segment size in force in the log, kept across a
//! restart.

mod common;

use common::requests::{call, commit_request, topic};
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::StrBytes;
use std::time::{Duration, Instant};

#[test]
fn admin_clients_create_describe_and_alter_topic_configs_in_both_modes() {
    for mode in ["per-core", "single-port"] {
        let s = common::start_with("2", 2, &["--kafka-mode", mode]);
        let broker = format!("127.0.0.1:{}", s.port);
        let (ok, out) = common::python("topic_configs.py", &[&broker]);
        assert!(ok, "{mode}: {out}");
    }
}

/// The earliest offset of partition 0 of `t`.
fn earliest(port: u16, t: &str) -> i64 {
    let req = m::ListOffsetsRequest::default().with_topics(vec![
        m::list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic(t))
            .with_partitions(vec![
                m::list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2),
            ]),
    ]);
    let r: m::ListOffsetsResponse = call(port, ApiKey::ListOffsets, 1, &req);
    r.topics[0].partitions[0].offset
}

fn describe(port: u16, t: &str) -> Vec<(String, String, i8)> {
    let req = m::DescribeConfigsRequest::default().with_resources(vec![
        m::describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(t.to_string()))
            .with_configuration_keys(None),
    ]);
    let r: m::DescribeConfigsResponse = call(port, ApiKey::DescribeConfigs, 4, &req);
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_deref().unwrap_or_default().to_string(),
                c.config_source,
            )
        })
        .collect()
}

#[test]
fn a_topics_own_retention_is_in_force_and_kept_across_a_restart() {
    let mut s = common::start_with("1", 1, &[]);
    // Segments of 2 MiB (the smallest the log takes here), 4 MiB kept.
    let create = m::CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![m::create_topics_request::CreatableTopic::default()
            .with_name(topic("short"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(
                [("segment.bytes", "2101248"), ("retention.bytes", "4194304")]
                    .iter()
                    .map(|(k, v)| {
                        m::create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str(k))
                            .with_value(Some(StrBytes::from_static_str(v)))
                    })
                    .collect(),
            )]);
    let r: m::CreateTopicsResponse = call(s.port, ApiKey::CreateTopics, 5, &create);
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    let shown = r.topics[0]
        .configs
        .as_ref()
        .expect("v5 answers with the configs");
    assert!(shown.iter().any(|c| c.name.as_str() == "retention.bytes"
        && c.value.as_deref() == Some("4194304")
        && c.config_source == 1));
    let broker = format!("127.0.0.1:{}", s.port);
    // 12 MiB in 6000 records of 2 KiB: six segments, two kept.
    let input: String = (0..6000).map(|i| format!("{i:0>2048}\n")).collect();
    let (ok, _, err) = common::kcat(
        &["-P", "-b", &broker, "-t", "short", "-X", "acks=all"],
        Some(&input),
    );
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while earliest(s.port, "short") == 0 {
        assert!(
            Instant::now() < deadline,
            "retention.bytes never deleted a segment"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        earliest(s.port, "events"),
        0,
        "the server's retention (none) elsewhere"
    );
    // The configs outlive a restart (topic_configs.json).
    s.kill_and_start_again("1", &[]);
    let after = describe(s.port, "short");
    assert!(
        after.contains(&("retention.bytes".into(), "4194304".into(), 1)),
        "{after:?}"
    );
    assert!(
        after.contains(&("segment.bytes".into(), "2101248".into(), 1)),
        "{after:?}"
    );
    // Deleting the topic takes its configs: a new one by that name has none.
    let del = m::DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![topic("short")]);
    let r: m::DeleteTopicsResponse = call(s.port, ApiKey::DeleteTopics, 4, &del);
    assert_eq!(r.responses[0].error_code, 0, "{r:?}");
    let plain = m::CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![m::create_topics_request::CreatableTopic::default()
            .with_name(topic("short"))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    let r: m::CreateTopicsResponse = call(s.port, ApiKey::CreateTopics, 5, &plain);
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    let fresh = describe(s.port, "short");
    assert!(fresh.iter().all(|(_, _, source)| *source != 1), "{fresh:?}");
}

fn grow(port: u16, t: &str, count: i32, validate_only: bool) -> i16 {
    let req = m::CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only)
        .with_topics(vec![
            m::create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic(t))
                .with_count(count)
                .with_assignments(None),
        ]);
    let r: m::CreatePartitionsResponse = call(port, ApiKey::CreatePartitions, 3, &req);
    r.results[0].error_code
}

#[test]
fn create_partitions_adds_partitions_on_their_cores_and_keeps_them() {
    let mut s = common::start_with("2", 2, &[]);
    let broker = format!("127.0.0.1:{}", s.port);
    let create = m::CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![m::create_topics_request::CreatableTopic::default()
            .with_name(topic("growing"))
            .with_num_partitions(2)
            .with_replication_factor(1)]);
    let r: m::CreateTopicsResponse = call(s.port, ApiKey::CreateTopics, 5, &create);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(grow(s.port, "growing", 5, true), 0, "validate only");
    let (_, out, _) = common::kcat(&["-L", "-b", &broker, "-t", "growing"], None);
    assert!(
        out.contains("2 partitions"),
        "validate_only added nothing: {out}"
    );
    assert_eq!(grow(s.port, "growing", 5, false), 0);
    assert_eq!(
        grow(s.port, "growing", 3, false),
        37,
        "INVALID_PARTITIONS: only more"
    );
    assert_eq!(
        grow(s.port, "events", 4, false),
        44,
        "POLICY_VIOLATION: declared"
    );
    assert_eq!(grow(s.port, "nothing", 4, false), 3);
    for p in 0..5 {
        let (ok, _, err) = common::kcat(
            &[
                "-P",
                "-b",
                &broker,
                "-t",
                "growing",
                "-p",
                &p.to_string(),
                "-X",
                "acks=all",
            ],
            Some(&format!("to partition {p}\n")),
        );
        assert!(ok, "{err}");
    }
    let (_, out, _) = common::kcat(&["-L", "-b", &broker, "-t", "growing"], None);
    for p in 0..5 {
        assert!(
            out.contains(&format!("partition {p}, leader {}", p % 2)),
            "{out}"
        );
    }
    // After a restart: five partitions, each with its record.
    s.kill_and_start_again("2", &[]);
    let mut got: Vec<String> = common::consume(&broker, "growing", "%p %s\n")
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let want: Vec<String> = (0..5).map(|p| format!("{p} to partition {p}")).collect();
    assert_eq!(got, want);
}

fn delete_records(port: u16, t: &str, partition: i32, offset: i64) -> (i16, i64) {
    let req = m::DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            m::delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic(t))
                .with_partitions(vec![
                    m::delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(offset),
                ]),
        ]);
    let r: m::DeleteRecordsResponse = call(port, ApiKey::DeleteRecords, 2, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

fn earliest_of(port: u16, t: &str, partition: i32) -> i64 {
    let req = m::ListOffsetsRequest::default().with_topics(vec![
        m::list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic(t))
            .with_partitions(vec![
                m::list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-2),
            ]),
    ]);
    let r: m::ListOffsetsResponse = call(port, ApiKey::ListOffsets, 1, &req);
    r.topics[0].partitions[0].offset
}

#[test]
fn delete_records_moves_the_start_for_good_in_both_modes() {
    for mode in ["per-core", "single-port"] {
        let mut s = common::start_with("2", 2, &["--kafka-mode", mode]);
        let broker = format!("127.0.0.1:{}", s.port);
        let create = m::CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![m::create_topics_request::CreatableTopic::default()
                .with_name(topic("trimmed"))
                .with_num_partitions(2)
                .with_replication_factor(1)]);
        let r: m::CreateTopicsResponse = call(s.port, ApiKey::CreateTopics, 5, &create);
        assert_eq!(r.topics[0].error_code, 0);
        let input: String = (0..100).map(|i| format!("{i}\n")).collect();
        let (ok, _, err) = common::kcat(
            &[
                "-P", "-b", &broker, "-t", "trimmed", "-p", "1", "-X", "acks=all",
            ],
            Some(&input),
        );
        assert!(ok, "{err}");
        // Partition 1 lives on core 1: in single-port mode core 0 forwards.
        let leader = if mode == "per-core" {
            s.port + 1
        } else {
            s.port
        };
        assert_eq!(delete_records(leader, "trimmed", 1, 40), (0, 40), "{mode}");
        assert_eq!(
            delete_records(leader, "trimmed", 1, 101),
            (1, -1),
            "OFFSET_OUT_OF_RANGE"
        );
        assert_eq!(
            delete_records(leader, "events", 0, 0).0,
            44,
            "POLICY_VIOLATION: declared"
        );
        assert_eq!(earliest_of(leader, "trimmed", 1), 40);
        let rest = common::kcat(
            &[
                "-C",
                "-b",
                &broker,
                "-t",
                "trimmed",
                "-p",
                "1",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%o\n",
            ],
            None,
        )
        .1;
        assert_eq!(rest.lines().next(), Some("40"), "{rest}");
        assert_eq!(rest.lines().count(), 60);
        s.kill_and_start_again("2", &["--kafka-mode", mode]);
        assert_eq!(
            earliest_of(leader, "trimmed", 1),
            40,
            "kept across a kill -9"
        );
        assert_eq!(
            delete_records(leader, "trimmed", 1, -1),
            (0, 100),
            "-1: everything"
        );
    }
}

#[test]
fn a_deleted_topics_commits_go_with_it() {
    let s = common::start_with("2", 2, &[]);
    let create = || {
        m::CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![m::create_topics_request::CreatableTopic::default()
                .with_name(topic("reborn"))
                .with_num_partitions(2)
                .with_replication_factor(1)])
    };
    let r: m::CreateTopicsResponse = call(s.port, ApiKey::CreateTopics, 5, &create());
    assert_eq!(r.topics[0].error_code, 0);
    let commit = commit_request("readers", (-1, ""), ("reborn", 1, 5), None);
    let r: m::OffsetCommitResponse = call(s.port, ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let fetch = || {
        let req = m::OffsetFetchRequest::default()
            .with_group_id(m::GroupId(StrBytes::from_static_str("readers")))
            .with_topics(None);
        let r: m::OffsetFetchResponse = call(s.port, ApiKey::OffsetFetch, 7, &req);
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
            .collect::<Vec<i64>>()
    };
    assert_eq!(fetch(), vec![5]);
    let del = m::DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![topic("reborn")]);
    let r: m::DeleteTopicsResponse = call(s.port, ApiKey::DeleteTopics, 4, &del);
    assert_eq!(r.responses[0].error_code, 0);
    let r: m::CreateTopicsResponse = call(s.port, ApiKey::CreateTopics, 5, &create());
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(
        fetch(),
        Vec::<i64>::new(),
        "a topic made again starts with no commits"
    );
}
