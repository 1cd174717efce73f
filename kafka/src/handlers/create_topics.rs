//! CreateTopics: each topic is checked, then made on every core through core 0
//! (`topic_changes.rs`) with its own configs (`topic_config.rs`: a config this
//! server does not serve gets INVALID_CONFIG). Replication factor is 1 (one
//! machine); manual replica assignments are refused with their error code rather
//! than ignored. `validate_only` checks everything a creation would, and makes
//! nothing. From v5 the answer carries the topic's configs, as Kafka's does.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::topic_changes;
use crate::topic_config::TopicConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

pub async fn handle(
    broker: &Broker,
    req: &CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str();
        let r = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let partitions = if t.num_partitions == -1 {
            broker.topics.default_partitions
        } else {
            t.num_partitions.max(0) as u32
        };
        let config = TopicConfig::of(
            t.configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_deref())),
            &broker.defaults,
        );
        let res = match (check(t, partitions), config.clone()) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(()), Ok(_)) if req.validate_only => {
                topic_changes::check_new(broker, name, partitions)
            }
            (Ok(()), Ok(c)) => topic_changes::create(broker, name, partitions, c).await,
        };
        results.push(match res {
            Ok(()) => {
                let shown = config.unwrap_or_default().describe(&broker.defaults);
                let configs = (version >= 5).then(|| {
                    shown
                        .into_iter()
                        .map(|d| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_static_str(d.name))
                                .with_value(Some(StrBytes::from_string(d.value)))
                                .with_config_source(d.source as i8)
                        })
                        .collect()
                });
                r.with_num_partitions(partitions as i32)
                    .with_replication_factor(1)
                    .with_configs(configs)
            }
            Err(e) => {
                tracing::info!(topic = name, code = e.code(), "topic not created: {e}");
                r.with_error_code(e.code()).with_error_message(e.message())
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// What one topic of the request asks for, checked on its own.
fn check(t: &CreatableTopic, partitions: u32) -> Result<(), KafkaError> {
    if t.replication_factor != -1 && t.replication_factor != 1 {
        Err(KafkaError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {}: one machine keeps one copy (use 1)",
                t.replication_factor
            ),
        ))
    } else if !t.assignments.is_empty() {
        Err(KafkaError::new(
            ResponseError::InvalidReplicaAssignment,
            "partitions are placed by the server (partition p on core p % cores)",
        ))
    } else {
        topic_changes::validate(&t.name.0, partitions)
    }
}
