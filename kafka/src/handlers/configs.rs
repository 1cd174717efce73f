//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (their own
//! configs, `topic_config.rs`, changed on every core through core 0) and the broker
//! (its settings, read-only: they come from the config file and flags of
//! `tidewater serve`).
//!
//! AlterConfigs replaces a topic's own configs with those given, as Kafka's does;
//! IncrementalAlterConfigs sets, deletes, appends to or subtracts from single
//! configs (append and subtract only for `cleanup.policy`, a list). `validate_only`
//! checks and changes nothing.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::groups::OFFSETS_PARTITIONS;
use crate::topic_changes;
use crate::topic_config::{self, Change, Edit, Source, TopicConfig};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Kafka's config types, for DescribeConfigs v3+.
const LIST: i8 = 7;
const INT: i8 = 3;
const LONG: i8 = 5;
const STRING: i8 = 2;
const BOOLEAN: i8 = 1;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A config's type and what it means (DescribeConfigs v3 `documentation`).
fn about(name: &str) -> (i8, &'static str) {
    match name {
        topic_config::CLEANUP_POLICY => (
            LIST,
            "What happens to old segments: delete (compaction is not served).",
        ),
        topic_config::MAX_MESSAGE_BYTES => (
            INT,
            "The largest record batch a producer may send to the topic.",
        ),
        topic_config::RETENTION_BYTES => (
            LONG,
            "A partition's oldest segments are deleted beyond this size (-1: no limit).",
        ),
        topic_config::RETENTION_MS => (
            LONG,
            "Segments whose newest record is older than this are deleted (-1: no limit).",
        ),
        topic_config::SEGMENT_BYTES => (INT, "A partition's segment file is sealed at this size."),
        _ => (
            STRING,
            "A setting of tidewater serve (its config file and flags).",
        ),
    }
}

/// The broker setting a topic config falls back to.
fn synonym(name: &str) -> Option<&'static str> {
    match name {
        topic_config::CLEANUP_POLICY => Some("log.cleanup.policy"),
        topic_config::MAX_MESSAGE_BYTES => Some("message.max.bytes"),
        topic_config::RETENTION_BYTES => Some("log.retention.bytes"),
        topic_config::RETENTION_MS => Some("log.retention.ms"),
        topic_config::SEGMENT_BYTES => Some("log.segment.bytes"),
        _ => None,
    }
}

/// One config entry as DescribeConfigs answers it in `version`.
fn entry(
    name: &str,
    value: String,
    source: Source,
    read_only: bool,
    (version, synonyms, docs): (i16, bool, bool),
) -> DescribeConfigsResourceResult {
    let (kind, doc) = about(name);
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(s(name))
        .with_value(Some(s(&value)))
        .with_read_only(read_only)
        .with_is_default(version == 0 && source == Source::Default)
        .with_config_source(source as i8)
        .with_config_type(kind)
        .with_documentation(docs.then(|| s(doc)));
    if synonyms && version >= 1 {
        let mut list = vec![DescribeConfigsSynonym::default()
            .with_name(s(name))
            .with_value(Some(s(&value)))
            .with_source(source as i8)];
        if let (Some(server), Source::Topic) = (synonym(name), source) {
            list.push(
                DescribeConfigsSynonym::default()
                    .with_name(s(server))
                    .with_source(Source::Server as i8),
            );
        }
        e = e.with_synonyms(list);
    }
    e
}

/// The broker's settings, as Kafka names them.
fn broker_settings(broker: &Broker) -> Vec<(&'static str, String)> {
    let d = &broker.defaults;
    let g = &broker.groups.cfg;
    let unlimited = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    vec![
        ("broker.id", broker.shard.to_string()),
        (
            "num.partitions",
            broker.topics.default_partitions.to_string(),
        ),
        (
            "auto.create.topics.enable",
            broker.topics.auto_create_partitions.is_some().to_string(),
        ),
        ("default.replication.factor", "1".into()),
        ("min.insync.replicas", "1".into()),
        ("log.cleanup.policy", "delete".into()),
        ("log.retention.bytes", unlimited(d.retention_bytes)),
        ("log.retention.ms", unlimited(d.retention_ms)),
        ("log.segment.bytes", d.segment_bytes.to_string()),
        ("message.max.bytes", d.max_message_bytes.to_string()),
        (
            "socket.request.max.bytes",
            broker.limits.request_bytes_max.to_string(),
        ),
        ("max.connections", broker.limits.connections_max.to_string()),
        (
            "connections.max.idle.ms",
            broker.limits.connections_max_idle_ms.to_string(),
        ),
        ("fetch.max.bytes", broker.limits.fetch_bytes_max.to_string()),
        (
            "offsets.topic.num.partitions",
            OFFSETS_PARTITIONS.to_string(),
        ),
        (
            "offsets.retention.minutes",
            (g.offsets_retention_ms / 60_000).to_string(),
        ),
        (
            "offset.metadata.max.bytes",
            g.offset_metadata_bytes_max.to_string(),
        ),
        (
            "group.initial.rebalance.delay.ms",
            g.limits.initial_rebalance_delay.as_millis().to_string(),
        ),
        (
            "group.min.session.timeout.ms",
            g.session_timeout_ms.0.to_string(),
        ),
        (
            "group.max.session.timeout.ms",
            g.session_timeout_ms.1.to_string(),
        ),
        ("group.max.size", g.limits.members_max.to_string()),
    ]
}

fn broker_type(name: &str) -> i8 {
    match name {
        "auto.create.topics.enable" => BOOLEAN,
        "log.cleanup.policy" => LIST,
        n if n.ends_with(".ms") || n.ends_with(".bytes") => LONG,
        _ => INT,
    }
}

/// Whether `name` is one of this server's brokers ("" names this one).
fn is_broker(broker: &Broker, name: &str) -> bool {
    name.is_empty() || name.parse::<u32>().is_ok_and(|id| id < broker.brokers())
}

pub fn describe(
    broker: &Broker,
    req: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let how = (
        version,
        req.include_synonyms,
        req.include_documentation && version >= 3,
    );
    let results = req
        .resources
        .iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let name = r.resource_name.as_str();
            let configs: Vec<_> = match r.resource_type {
                TOPIC if broker.table().topic(name).is_some() => broker
                    .topic_config(name)
                    .describe(&broker.defaults)
                    .into_iter()
                    .filter(|d| wanted(d.name))
                    .map(|d| entry(d.name, d.value, d.source, false, how))
                    .collect(),
                TOPIC => {
                    let e = KafkaError::unknown_topic(name);
                    return base
                        .with_error_code(e.code())
                        .with_error_message(e.message());
                }
                BROKER if is_broker(broker, name) => broker_settings(broker)
                    .into_iter()
                    .filter(|(n, _)| wanted(n))
                    .map(|(n, v)| {
                        let mut e = entry(n, v, Source::Server, true, how);
                        if version >= 3 {
                            e = e.with_config_type(broker_type(n));
                        }
                        e
                    })
                    .collect(),
                other => {
                    return base
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(s(&format!(
                            "resource type {other} {name:?}: this server describes topics (2) and its brokers (4)"
                        ))))
                }
            };
            base.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A change to a broker, refused with the reason.
fn broker_change_refused() -> KafkaError {
    KafkaError::new(
        ResponseError::InvalidConfig,
        "broker settings come from the config file and flags of tidewater serve; change them there and restart",
    )
}

/// Checks, and unless `validate_only` puts in force, a topic's new configs (an edit
/// is applied on core 0, to the configs in force there, under its one change at a
/// time: two edits of one topic at once both hold).
async fn change_topic(
    broker: &Broker,
    name: &str,
    change: Result<Change, KafkaError>,
    validate_only: bool,
) -> Result<(), KafkaError> {
    if broker.table().topic(name).is_none() {
        return Err(KafkaError::unknown_topic(name));
    }
    let change = change?;
    if validate_only {
        if let Change::Edit(ops) = &change {
            broker.topic_config(name).edit(ops, &broker.defaults)?;
        }
        return Ok(());
    }
    topic_changes::alter_config(broker, name, change).await
}

pub async fn alter(broker: &Broker, req: &AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in &req.resources {
        // The configs given replace the topic's own, as Kafka's AlterConfigs.
        let config = || {
            TopicConfig::of(
                r.configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.value.as_deref())),
                &broker.defaults,
            )
            .map(Change::Replace)
        };
        let (code, message) = change(
            broker,
            r.resource_type,
            &r.resource_name,
            config,
            req.validate_only,
        )
        .await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs: a topic gets
/// `config()` (checked, and in force unless `validate_only`); the answer's code and
/// message.
async fn change(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    config: impl FnOnce() -> Result<Change, KafkaError>,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    let done = match resource_type {
        TOPIC => change_topic(broker, name, config(), validate_only).await,
        BROKER => Err(broker_change_refused()),
        other => Err(KafkaError::new(
            ResponseError::InvalidRequest,
            format!("resource type {other}: this server changes topics (2)"),
        )),
    };
    match done {
        Ok(()) => (0, None),
        Err(e) => {
            tracing::info!(resource = name, code = e.code(), "configs not changed: {e}");
            (e.code(), e.message())
        }
    }
}

pub async fn incremental_alter(
    broker: &Broker,
    req: &IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in &req.resources {
        let name = r.resource_name.as_str();
        let edits: Vec<Edit> = r
            .configs
            .iter()
            .map(|c| Edit {
                name: c.name.to_string(),
                op: c.config_operation,
                value: c.value.as_ref().map(|v| v.to_string()),
            })
            .collect();
        let config = || Ok(Change::Edit(edits));
        let (code, message) =
            change(broker, r.resource_type, name, config, req.validate_only).await;
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
