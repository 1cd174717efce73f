//! Metadata. Per-core brokers: every core is a broker (node id = core index, port =
//! base + index) and every partition's leader is the core that owns it. Single port:
//! one broker, node 0 on the shared port, leading every partition.

use crate::broker::{Broker, Mode};
use crate::listener::Endpoint;
use crate::topic_changes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidewater_shards::partition_owner;

/// DescribeCluster: the brokers as Metadata names them (admin clients' describeCluster).
pub fn describe_cluster(
    broker: &Broker,
    endpoint: &Endpoint,
    req: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    // Endpoint type 2 asks for controllers: this server has none apart.
    if req.endpoint_type == 2 {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "this server has no controllers apart from its brokers (endpoint type 1)",
            )))
            .with_endpoint_type(req.endpoint_type);
    }
    let brokers = (0..broker.brokers())
        .map(|s| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(s as i32))
                .with_host(StrBytes::from_string(endpoint.advertised_host.clone()))
                .with_port(endpoint.port_of(s))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_static_str("tidewater"))
        .with_controller_id(BrokerId(0))
        .with_brokers(brokers)
}

pub async fn handle(
    broker: &Broker,
    endpoint: &Endpoint,
    req: &MetadataRequest,
) -> MetadataResponse {
    // Unknown topics asked for by name are created first when auto-creation is on
    // (and the client allows it, v4+).
    if let (Some(partitions), Some(topics)) = (broker.topics.auto_create_partitions, &req.topics) {
        if req.allow_auto_topic_creation {
            for t in topics.iter().filter_map(|t| t.name.as_ref()) {
                if broker.table().topic(&t.0).is_none() {
                    if let Err(e) =
                        topic_changes::create(broker, &t.0, partitions, Default::default()).await
                    {
                        tracing::info!(topic = %t.0.as_str(), code = e.code(), "auto-creation refused: {e}");
                    }
                }
            }
        }
    }
    let table = broker.table();
    let shards = table.shard_count();
    let single = broker.mode == Mode::SinglePort;
    let brokers = (0..broker.brokers())
        .map(|s| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(s as i32))
                .with_host(StrBytes::from_string(endpoint.advertised_host.clone()))
                .with_port(endpoint.port_of(s))
        })
        .collect();
    let wanted: Option<Vec<String>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect()
    });
    let mut topics = Vec::new();
    let declared = table.topics();
    let names: Vec<String> = match &wanted {
        Some(w) => w.clone(),
        None => declared.iter().map(|t| t.name.clone()).collect(),
    };
    for name in names {
        let topic = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
        let Some(t) = declared.iter().find(|t| t.name == name) else {
            topics.push(topic.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
            continue;
        };
        let partitions = (0..t.partitions)
            .map(|p| {
                let leader = BrokerId(if single {
                    0
                } else {
                    partition_owner(p, shards) as i32
                });
                MetadataResponsePartition::default()
                    .with_partition_index(p as i32)
                    .with_leader_id(leader)
                    .with_replica_nodes(vec![leader])
                    .with_isr_nodes(vec![leader])
            })
            .collect();
        topics.push(topic.with_partitions(partitions));
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str("tidewater")))
        .with_controller_id(BrokerId(0))
        .with_topics(topics)
}
