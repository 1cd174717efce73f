//! Authorization of every API, as Kafka's broker does it: before a request reaches
//! its handler, the parts its principal may not touch are taken out of it, and
//! after, their answers go back in with TOPIC_, GROUP_ or
//! CLUSTER_AUTHORIZATION_FAILED. A request its principal may not make at all is
//! answered with that error and never reaches a handler. Metadata lists only the
//! topics the principal may describe.
//!
//! Which operation each API needs (Kafka's table): Produce WRITE on the topic;
//! Fetch READ; ListOffsets, Metadata DESCRIBE; CreateTopics CREATE on the cluster
//! or the topic; DeleteTopics, DeleteRecords DELETE; CreatePartitions ALTER;
//! DescribeConfigs / AlterConfigs (and Incremental) DESCRIBE_CONFIGS /
//! ALTER_CONFIGS on the topic, or on the cluster for the broker's; DescribeCluster
//! DESCRIBE on the cluster; InitProducerId IDEMPOTENT_WRITE on the cluster, or
//! WRITE on some topic; FindCoordinator DESCRIBE on the group; JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup READ on the group; OffsetCommit READ on the
//! group and the topic; OffsetFetch DESCRIBE on the group and the topic;
//! ListGroups DESCRIBE on the cluster, or lists the groups the principal may
//! describe; DescribeGroups DESCRIBE, DeleteGroups DELETE on each group;
//! OffsetDelete DELETE on the group and READ on the topic; the ACL and SCRAM
//! credential APIs DESCRIBE / ALTER on the cluster.
//!
//! Never: costs anything when the authorizer is off ([`Who::of`] is `None`), or
//! lets a refused part reach a handler (nothing is created, written or read for it).

use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::listener::Client;
use kafka_protocol::messages as m;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;

/// A request's principal and host, when the authorizer is on.
pub struct Who<'a> {
    broker: &'a Broker,
    principal: Rc<str>,
    host: String,
}

impl<'a> Who<'a> {
    /// `None` when the authorizer is off: nothing is checked.
    pub fn of(broker: &'a Broker, client: &Client) -> Option<Who<'a>> {
        broker.authorizer.is_on().then(|| Who {
            broker,
            principal: client.principal(),
            // As ACLs store hosts: an IPv4 client of a dual-stack listener is its
            // IPv4 address.
            host: client
                .peer_ip
                .map(|ip| ip.to_canonical().to_string())
                .unwrap_or_default(),
        })
    }

    pub fn can(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let allowed = self.broker.authorizer.allows(
            (&self.principal, &self.host),
            operation,
            (resource_type, name),
        );
        if !allowed {
            let stats = &self.broker.stats;
            stats
                .authorization_failures
                .set(stats.authorization_failures.get() + 1);
            tracing::debug!(principal = %self.principal, host = self.host, ?operation, ?resource_type, name, "denied");
        }
        allowed
    }

    /// Whether the principal may see (DESCRIBE) a resource in a listing; one it may
    /// not is left out, not counted as a refusal (as Kafka lists).
    pub fn sees(&self, resource_type: ResourceType, name: &str) -> bool {
        self.quietly(Operation::Describe, resource_type, name)
    }

    /// [`Who::can`] for a check whose refusal only narrows an answer (Kafka's
    /// `logIfDenied = false`): not counted, not logged.
    pub fn quietly(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.broker.authorizer.allows(
            (&self.principal, &self.host),
            operation,
            (resource_type, name),
        )
    }

    pub fn can_topic(&self, operation: Operation, topic: &str) -> bool {
        self.can(operation, ResourceType::Topic, topic)
    }

    pub fn can_group(&self, operation: Operation, group: &str) -> bool {
        self.can(operation, ResourceType::Group, group)
    }

    pub fn can_cluster(&self, operation: Operation) -> bool {
        self.can(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the principal may do `operation` on some resource of the type (for
    /// InitProducerId's "WRITE on any topic", KIP-679).
    pub fn can_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        self.broker
            .authorizer
            .allows_some((&self.principal, &self.host), operation, resource_type)
    }
}

/// The topics taken out of a request, with their partitions.
pub type Denied = Vec<(StrBytes, Vec<i32>)>;

/// Takes the entries `allowed` refuses out of `entries` (an entry without a name,
/// a topic named by id, stays: the handler refuses it).
fn strip<T>(
    entries: &mut Vec<T>,
    name: impl Fn(&T) -> Option<&StrBytes>,
    partitions: impl Fn(&T) -> Vec<i32>,
    allowed: impl Fn(&str) -> bool,
) -> Denied {
    let mut denied = Vec::new();
    entries.retain(|e| match name(e) {
        Some(n) if !allowed(n.as_str()) => {
            denied.push((n.clone(), partitions(e)));
            false
        }
        _ => true,
    });
    denied
}

pub fn produce(who: &Who, req: &mut m::ProduceRequest) -> Denied {
    strip(
        &mut req.topic_data,
        |t| Some(&t.name.0),
        |t| t.partition_data.iter().map(|p| p.index).collect(),
        |n| who.can_topic(Operation::Write, n),
    )
}

pub fn produce_answer(resp: &mut m::ProduceResponse, denied: Denied) {
    use m::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    resp.responses
        .extend(denied.into_iter().map(|(name, parts)| {
            TopicProduceResponse::default()
                .with_name(m::TopicName(name))
                .with_partition_responses(
                    parts
                        .into_iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p)
                                .with_error_code(TOPIC_DENIED)
                        })
                        .collect(),
                )
        }));
}

pub fn fetch(who: &Who, req: &mut m::FetchRequest) -> Denied {
    strip(
        &mut req.topics,
        |t| Some(&t.topic.0),
        |t| t.partitions.iter().map(|p| p.partition).collect(),
        |n| who.can_topic(Operation::Read, n),
    )
}

pub fn fetch_answer(resp: &mut m::FetchResponse, denied: Denied) {
    use m::fetch_response::{FetchableTopicResponse, PartitionData};
    resp.responses
        .extend(denied.into_iter().map(|(name, parts)| {
            FetchableTopicResponse::default()
                .with_topic(m::TopicName(name))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p)
                                .with_error_code(TOPIC_DENIED)
                                .with_high_watermark(-1)
                                .with_last_stable_offset(-1)
                        })
                        .collect(),
                )
        }));
}

pub fn list_offsets(who: &Who, req: &mut m::ListOffsetsRequest) -> Denied {
    strip(
        &mut req.topics,
        |t| Some(&t.name.0),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
        |n| who.can_topic(Operation::Describe, n),
    )
}

pub fn list_offsets_answer(resp: &mut m::ListOffsetsResponse, denied: Denied) {
    use m::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    resp.topics.extend(denied.into_iter().map(|(name, parts)| {
        ListOffsetsTopicResponse::default()
            .with_name(m::TopicName(name))
            .with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(TOPIC_DENIED)
                            .with_offset(-1)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )
    }));
}

/// Metadata: named topics the principal may not describe, and unknown ones it
/// may not create when they would be created, are answered refused.
pub fn metadata(who: &Who, req: &mut m::MetadataRequest) -> Denied {
    let Some(topics) = req.topics.as_mut() else {
        return Vec::new();
    };
    let creating = req.allow_auto_topic_creation
        && who.broker.topics.auto_create_partitions.is_some()
        && !who.quietly(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
    strip(
        topics,
        |t| t.name.as_ref().map(|n| &n.0),
        |_| Vec::new(),
        |n| {
            who.can_topic(Operation::Describe, n)
                && (!creating
                    || who.broker.topic(n).is_some()
                    || who.can_topic(Operation::Create, n))
        },
    )
}

/// Leaves out every topic the principal may not describe, and answers the
/// refused ones.
pub fn metadata_answer(who: &Who, resp: &mut m::MetadataResponse, denied: Denied) {
    resp.topics.retain(|t| {
        t.name
            .as_ref()
            .is_some_and(|n| who.sees(ResourceType::Topic, n.as_str()))
    });
    resp.topics.extend(denied.into_iter().map(|(name, _)| {
        m::metadata_response::MetadataResponseTopic::default()
            .with_name(Some(m::TopicName(name)))
            .with_error_code(TOPIC_DENIED)
    }));
}

pub fn create_topics(who: &Who, req: &mut m::CreateTopicsRequest) -> Denied {
    let cluster = who.can_cluster(Operation::Create);
    strip(
        &mut req.topics,
        |t| Some(&t.name.0),
        |_| Vec::new(),
        |n| cluster || who.can_topic(Operation::Create, n),
    )
}

pub fn create_topics_answer(resp: &mut m::CreateTopicsResponse, denied: Denied) {
    resp.topics.extend(denied.into_iter().map(|(name, _)| {
        m::create_topics_response::CreatableTopicResult::default()
            .with_name(m::TopicName(name))
            .with_error_code(TOPIC_DENIED)
            .with_error_message(Some(StrBytes::from_static_str(
                "needs CREATE on the cluster or the topic",
            )))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }));
}

pub fn delete_topics(who: &Who, req: &mut m::DeleteTopicsRequest) -> Denied {
    let allowed = |n: &str| who.can_topic(Operation::Delete, n);
    let mut denied = strip(
        &mut req.topic_names,
        |t| Some(&t.0),
        |_| Vec::new(),
        allowed,
    );
    denied.extend(strip(
        &mut req.topics,
        |t| t.name.as_ref().map(|n| &n.0),
        |_| Vec::new(),
        allowed,
    ));
    denied
}

pub fn delete_topics_answer(resp: &mut m::DeleteTopicsResponse, denied: Denied) {
    resp.responses.extend(denied.into_iter().map(|(name, _)| {
        m::delete_topics_response::DeletableTopicResult::default()
            .with_name(Some(m::TopicName(name)))
            .with_error_code(TOPIC_DENIED)
    }));
}

pub fn delete_records(who: &Who, req: &mut m::DeleteRecordsRequest) -> Denied {
    strip(
        &mut req.topics,
        |t| Some(&t.name.0),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
        |n| who.can_topic(Operation::Delete, n),
    )
}

pub fn delete_records_answer(resp: &mut m::DeleteRecordsResponse, denied: Denied) {
    use m::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    resp.topics.extend(denied.into_iter().map(|(name, parts)| {
        DeleteRecordsTopicResult::default()
            .with_name(m::TopicName(name))
            .with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(p)
                            .with_low_watermark(-1)
                            .with_error_code(TOPIC_DENIED)
                    })
                    .collect(),
            )
    }));
}

pub fn create_partitions(who: &Who, req: &mut m::CreatePartitionsRequest) -> Denied {
    strip(
        &mut req.topics,
        |t| Some(&t.name.0),
        |_| Vec::new(),
        |n| who.can_topic(Operation::Alter, n),
    )
}

pub fn create_partitions_answer(resp: &mut m::CreatePartitionsResponse, denied: Denied) {
    resp.results.extend(denied.into_iter().map(|(name, _)| {
        m::create_partitions_response::CreatePartitionsTopicResult::default()
            .with_name(m::TopicName(name))
            .with_error_code(TOPIC_DENIED)
    }));
}

/// A config resource's type code and name, refused: its code and its error.
pub type DeniedConfigs = Vec<(i8, StrBytes, i16)>;

/// Whether the principal may do `operation` to a config resource (2: a topic; 4
/// and 8: the broker and its loggers, which are the cluster's); the error if not.
fn config_error(who: &Who, operation: Operation, resource_type: i8, name: &str) -> Option<i16> {
    match resource_type {
        2 => (!who.can_topic(operation, name)).then_some(TOPIC_DENIED),
        _ => (!who.can_cluster(operation)).then_some(CLUSTER_DENIED),
    }
}

pub fn describe_configs(who: &Who, req: &mut m::DescribeConfigsRequest) -> DeniedConfigs {
    let mut denied = Vec::new();
    req.resources.retain(|r| {
        match config_error(
            who,
            Operation::DescribeConfigs,
            r.resource_type,
            &r.resource_name,
        ) {
            Some(code) => {
                denied.push((r.resource_type, r.resource_name.clone(), code));
                false
            }
            None => true,
        }
    });
    denied
}

pub fn describe_configs_answer(resp: &mut m::DescribeConfigsResponse, denied: DeniedConfigs) {
    resp.results
        .extend(denied.into_iter().map(|(t, name, code)| {
            m::describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(t)
                .with_resource_name(name)
                .with_error_code(code)
        }));
}

/// AlterConfigs and IncrementalAlterConfigs: the resources refused, by position.
pub fn alter_configs(who: &Who, resources: &[(i8, &str)]) -> Vec<Option<i16>> {
    resources
        .iter()
        .map(|(t, name)| config_error(who, Operation::AlterConfigs, *t, name))
        .collect()
}

/// The answer to one refused config resource of an alter.
pub fn alter_configs_refused(
    t: i8,
    name: StrBytes,
    code: i16,
) -> m::alter_configs_response::AlterConfigsResourceResponse {
    m::alter_configs_response::AlterConfigsResourceResponse::default()
        .with_resource_type(t)
        .with_resource_name(name)
        .with_error_code(code)
}

pub fn incremental_refused(
    t: i8,
    name: StrBytes,
    code: i16,
) -> m::incremental_alter_configs_response::AlterConfigsResourceResponse {
    m::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
        .with_resource_type(t)
        .with_resource_name(name)
        .with_error_code(code)
}

/// Idempotent producers: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic.
pub fn init_producer_id(who: &Who) -> Option<m::InitProducerIdResponse> {
    let allowed = who.can_any(Operation::Write, ResourceType::Topic)
        || who.can_cluster(Operation::IdempotentWrite);
    (!allowed).then(|| {
        m::InitProducerIdResponse::default()
            .with_error_code(CLUSTER_DENIED)
            .with_producer_id(m::ProducerId(-1))
            .with_producer_epoch(-1)
    })
}

/// FindCoordinator: DESCRIBE on each group asked for (transactions are not
/// served, so their keys are the handler's to refuse). A refused key is answered
/// here; `None`: ask the handler.
pub fn find_coordinator(
    who: &Who,
    req: &m::FindCoordinatorRequest,
    version: i16,
) -> Option<m::FindCoordinatorResponse> {
    if req.key_type != 0 {
        return None;
    }
    if version < 4 {
        return (!who.can_group(Operation::Describe, &req.key)).then(|| {
            m::FindCoordinatorResponse::default()
                .with_error_code(GROUP_DENIED)
                .with_node_id(m::BrokerId(-1))
                .with_port(-1)
        });
    }
    let all = req
        .coordinator_keys
        .iter()
        .all(|k| who.can_group(Operation::Describe, k));
    (!all).then(|| {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                m::find_coordinator_response::Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(m::BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(if who.can_group(Operation::Describe, k) {
                        // Asked again on its own, it is answered.
                        ResponseError::CoordinatorNotAvailable.code()
                    } else {
                        GROUP_DENIED
                    })
            })
            .collect();
        m::FindCoordinatorResponse::default().with_coordinators(coordinators)
    })
}

/// The membership APIs: READ on the group, or GROUP_AUTHORIZATION_FAILED.
pub fn group_read(who: &Who, group: &str) -> Option<i16> {
    (!who.can_group(Operation::Read, group)).then_some(GROUP_DENIED)
}

pub fn offset_commit(
    who: &Who,
    req: &mut m::OffsetCommitRequest,
) -> Result<Denied, m::OffsetCommitResponse> {
    use m::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    if who.can_group(Operation::Read, &req.group_id) {
        return Ok(strip(
            &mut req.topics,
            |t| Some(&t.name.0),
            |t| t.partitions.iter().map(|p| p.partition_index).collect(),
            |n| who.can_topic(Operation::Read, n),
        ));
    }
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(GROUP_DENIED)
                        })
                        .collect(),
                )
        })
        .collect();
    Err(m::OffsetCommitResponse::default().with_topics(topics))
}

pub fn offset_commit_answer(resp: &mut m::OffsetCommitResponse, denied: Denied) {
    use m::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    resp.topics.extend(denied.into_iter().map(|(name, parts)| {
        OffsetCommitResponseTopic::default()
            .with_name(m::TopicName(name))
            .with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(TOPIC_DENIED)
                    })
                    .collect(),
            )
    }));
}

/// OffsetFetch: DESCRIBE on the group (else the answer is that error); the
/// topics the principal may not describe are left out of the answer.
pub fn offset_fetch_refused(
    who: &Who,
    req: &m::OffsetFetchRequest,
    version: i16,
) -> Option<m::OffsetFetchResponse> {
    if version >= 8 {
        let all = req
            .groups
            .iter()
            .all(|g| who.can_group(Operation::Describe, &g.group_id));
        if all {
            return None;
        }
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let code = if who.can_group(Operation::Describe, &g.group_id) {
                    ResponseError::CoordinatorLoadInProgress.code()
                } else {
                    GROUP_DENIED
                };
                m::offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code)
            })
            .collect();
        return Some(m::OffsetFetchResponse::default().with_groups(groups));
    }
    if who.can_group(Operation::Describe, &req.group_id) {
        return None;
    }
    // v0 and v1 have no error for the whole answer: each partition asked for
    // carries it.
    let topics = req
        .topics
        .iter()
        .flatten()
        .map(|t| {
            m::offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partition_indexes
                        .iter()
                        .map(|&p| {
                            m::offset_fetch_response::OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(-1)
                                .with_error_code(GROUP_DENIED)
                        })
                        .collect(),
                )
        })
        .collect();
    Some(
        m::OffsetFetchResponse::default()
            .with_error_code(GROUP_DENIED)
            .with_topics(topics),
    )
}

/// Topics the principal may not describe: left out of an answer to "every
/// topic", answered TOPIC_AUTHORIZATION_FAILED when asked for by name.
pub fn offset_fetch_answer(
    who: &Who,
    req: &m::OffsetFetchRequest,
    resp: &mut m::OffsetFetchResponse,
) {
    let can = |n: &StrBytes| who.sees(ResourceType::Topic, n);
    let refuse_parts = |parts: &mut [m::offset_fetch_response::OffsetFetchResponsePartition]| {
        for p in parts {
            p.error_code = TOPIC_DENIED;
            p.committed_offset = -1;
            p.metadata = None;
        }
    };
    if req.topics.is_some() {
        resp.topics
            .iter_mut()
            .filter(|t| !can(&t.name.0))
            .for_each(|t| refuse_parts(&mut t.partitions));
    } else {
        resp.topics.retain(|t| can(&t.name.0));
    }
    for g in &mut resp.groups {
        let named = req
            .groups
            .iter()
            .find(|r| r.group_id == g.group_id)
            .is_some_and(|r| r.topics.is_some());
        if named {
            for t in g.topics.iter_mut().filter(|t| !can(&t.name.0)) {
                for p in &mut t.partitions {
                    p.error_code = TOPIC_DENIED;
                    p.committed_offset = -1;
                    p.metadata = None;
                }
            }
        } else {
            g.topics.retain(|t| can(&t.name.0));
        }
    }
}

pub fn list_groups_answer(who: &Who, resp: &mut m::ListGroupsResponse) {
    if !who.quietly(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        resp.groups
            .retain(|g| who.sees(ResourceType::Group, &g.group_id));
    }
}

/// DescribeGroups and DeleteGroups: the groups refused are taken out of the
/// request; their answers are [`groups_refused`]'s.
pub fn groups(who: &Who, operation: Operation, groups: &mut Vec<m::GroupId>) -> Vec<m::GroupId> {
    let mut denied = Vec::new();
    groups.retain(|g| {
        let ok = who.can_group(operation, g);
        if !ok {
            denied.push(g.clone());
        }
        ok
    });
    denied
}

pub fn describe_groups_answer(resp: &mut m::DescribeGroupsResponse, denied: Vec<m::GroupId>) {
    resp.groups.extend(denied.into_iter().map(|g| {
        m::describe_groups_response::DescribedGroup::default()
            .with_group_id(g)
            .with_error_code(GROUP_DENIED)
    }));
}

pub fn delete_groups_answer(resp: &mut m::DeleteGroupsResponse, denied: Vec<m::GroupId>) {
    resp.results.extend(denied.into_iter().map(|g| {
        m::delete_groups_response::DeletableGroupResult::default()
            .with_group_id(g)
            .with_error_code(GROUP_DENIED)
    }));
}

/// OffsetDelete: DELETE on the group, READ on each topic.
pub fn offset_delete(
    who: &Who,
    req: &mut m::OffsetDeleteRequest,
) -> Result<Denied, m::OffsetDeleteResponse> {
    if !who.can_group(Operation::Delete, &req.group_id) {
        return Err(m::OffsetDeleteResponse::default().with_error_code(GROUP_DENIED));
    }
    Ok(strip(
        &mut req.topics,
        |t| Some(&t.name.0),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
        |n| who.can_topic(Operation::Read, n),
    ))
}

pub fn offset_delete_answer(resp: &mut m::OffsetDeleteResponse, denied: Denied) {
    use m::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
    resp.topics.extend(denied.into_iter().map(|(name, parts)| {
        OffsetDeleteResponseTopic::default()
            .with_name(m::TopicName(name))
            .with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(TOPIC_DENIED)
                    })
                    .collect(),
            )
    }));
}
