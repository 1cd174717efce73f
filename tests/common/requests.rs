//! Kafka requests as clients encode them, for the tests that probe the front end
//! with valid requests and with mutations of them.

use bytes::BytesMut;
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::io::{Read, Write};

/// One request on a fresh connection to `port` and its decoded answer.
pub fn call<Q: Encodable, A: Decodable>(port: u16, api: ApiKey, version: i16, req: &Q) -> A {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    c.write_all(&framed(api, version, req)).unwrap();
    let mut len = [0u8; 4];
    c.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    c.read_exact(&mut body).unwrap();
    let mut buf = bytes::Bytes::from(body);
    m::ResponseHeader::decode(&mut buf, api.response_header_version(version)).unwrap();
    A::decode(&mut buf, version).unwrap()
}

/// A framed request: size prefix, header, body.
pub fn framed<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

pub fn topic(name: &str) -> m::TopicName {
    m::TopicName(StrBytes::from_string(name.to_string()))
}

/// One valid request of each API the front end serves, in its lowest and highest
/// version, as a client would send it.
pub fn valid_requests() -> Vec<(ApiKey, i16, Vec<u8>)> {
    let mut out = Vec::new();
    for v in [0, 3] {
        out.push((
            ApiKey::ApiVersions,
            v,
            framed(ApiKey::ApiVersions, v, &m::ApiVersionsRequest::default()),
        ));
    }
    for v in [0, 9] {
        let req = m::MetadataRequest::default().with_topics(Some(vec![
            m::metadata_request::MetadataRequestTopic::default().with_name(Some(topic("events"))),
        ]));
        out.push((ApiKey::Metadata, v, framed(ApiKey::Metadata, v, &req)));
    }
    for v in [3, 9] {
        let part = m::produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(bytes::Bytes::from(vec![0u8; 70])));
        let req = m::ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![m::produce_request::TopicProduceData::default()
                .with_name(topic("events"))
                .with_partition_data(vec![part])]);
        out.push((ApiKey::Produce, v, framed(ApiKey::Produce, v, &req)));
    }
    for v in [4, 12] {
        let req = m::FetchRequest::default()
            .with_max_wait_ms(10)
            .with_max_bytes(1 << 20)
            .with_topics(vec![m::fetch_request::FetchTopic::default()
                .with_topic(topic("events"))
                .with_partitions(vec![m::fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_partition_max_bytes(1 << 20)])]);
        out.push((ApiKey::Fetch, v, framed(ApiKey::Fetch, v, &req)));
    }
    for v in [1, 7] {
        let req = m::ListOffsetsRequest::default().with_topics(vec![
            m::list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic("events"))
                .with_partitions(vec![
                    m::list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                ]),
        ]);
        out.push((ApiKey::ListOffsets, v, framed(ApiKey::ListOffsets, v, &req)));
    }
    for v in [0, 7] {
        let req = m::CreateTopicsRequest::default()
            .with_timeout_ms(1000)
            .with_validate_only(v >= 1)
            .with_topics(vec![m::create_topics_request::CreatableTopic::default()
                .with_name(topic("made-by-mutation"))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
        out.push((
            ApiKey::CreateTopics,
            v,
            framed(ApiKey::CreateTopics, v, &req),
        ));
    }
    for v in [0, 4] {
        let req = m::DeleteTopicsRequest::default()
            .with_timeout_ms(1000)
            .with_topic_names(vec![topic("no-such-topic")]);
        out.push((
            ApiKey::DeleteTopics,
            v,
            framed(ApiKey::DeleteTopics, v, &req),
        ));
    }
    for v in [0, 4] {
        let req = m::InitProducerIdRequest::default().with_transaction_timeout_ms(1000);
        out.push((
            ApiKey::InitProducerId,
            v,
            framed(ApiKey::InitProducerId, v, &req),
        ));
    }
    out.extend(group_requests());
    out.extend(config_requests());
    out
}

/// DescribeConfigs, AlterConfigs and IncrementalAlterConfigs (validate only) and
/// DescribeCluster.
fn config_requests() -> Vec<(ApiKey, i16, Vec<u8>)> {
    let mut out = Vec::new();
    for v in [0, 4] {
        let req = m::DescribeConfigsRequest::default().with_resources(vec![
            m::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("events"))
                .with_configuration_keys(None),
            m::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("0"))
                .with_configuration_keys(Some(vec![s("log.segment.bytes")])),
        ]);
        out.push((
            ApiKey::DescribeConfigs,
            v,
            framed(ApiKey::DescribeConfigs, v, &req),
        ));
    }
    for v in [0, 2] {
        let req = m::AlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![
                m::alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("events"))
                    .with_configs(vec![m::alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("60000")))]),
            ]);
        out.push((
            ApiKey::AlterConfigs,
            v,
            framed(ApiKey::AlterConfigs, v, &req),
        ));
    }
    for v in [0, 1] {
        let req = m::IncrementalAlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![
                m::incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("events"))
                    .with_configs(vec![
                        m::incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("cleanup.policy"))
                            .with_config_operation(2)
                            .with_value(Some(s("delete"))),
                    ]),
            ]);
        out.push((
            ApiKey::IncrementalAlterConfigs,
            v,
            framed(ApiKey::IncrementalAlterConfigs, v, &req),
        ));
    }
    for v in [0, 3] {
        let req = m::CreatePartitionsRequest::default()
            .with_timeout_ms(1000)
            .with_validate_only(true)
            .with_topics(vec![
                m::create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic("events"))
                    .with_count(4)
                    .with_assignments(None),
            ]);
        out.push((
            ApiKey::CreatePartitions,
            v,
            framed(ApiKey::CreatePartitions, v, &req),
        ));
    }
    for v in [0, 2] {
        let req = m::DeleteRecordsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![
                m::delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic("no-such-topic"))
                    .with_partitions(vec![
                        m::delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(1),
                    ]),
            ]);
        out.push((
            ApiKey::DeleteRecords,
            v,
            framed(ApiKey::DeleteRecords, v, &req),
        ));
    }
    for v in [0, 1] {
        let req = m::DescribeClusterRequest::default().with_endpoint_type(1);
        out.push((
            ApiKey::DescribeCluster,
            v,
            framed(ApiKey::DescribeCluster, v, &req),
        ));
    }
    out
}

/// A consumer's JoinGroup (protocol `range`, an empty subscription) from `member`
/// ("": a new member).
pub fn join_request(group_id: &str, member: &str, session_ms: i32) -> m::JoinGroupRequest {
    m::JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            m::join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        ])
}

/// An OffsetCommit of one partition's `offset` by `member` of `generation` (-1 and
/// "": from outside the group, as a consumer with assign() commits).
pub fn commit_request(
    group_id: &str,
    (generation, member): (i32, &str),
    (topic_name, partition, offset): (&str, i32, i64),
    metadata: Option<&str>,
) -> m::OffsetCommitRequest {
    m::OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            m::offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic(topic_name))
                .with_partitions(vec![
                    m::offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)
                        .with_committed_metadata(metadata.map(s)),
                ]),
        ])
}

fn group(id: &str) -> m::GroupId {
    m::GroupId(StrBytes::from_string(id.to_string()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The consumer group APIs, none of which waits: a JoinGroup from v4 answers a new
/// member MEMBER_ID_REQUIRED at once, the others name a member the group does not
/// have.
fn group_requests() -> Vec<(ApiKey, i16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut push = |api: ApiKey, versions: [i16; 2], body: &dyn Fn(i16) -> Vec<u8>| {
        for v in versions {
            out.push((api, v, body(v)));
        }
    };
    push(ApiKey::FindCoordinator, [0, 4], &|v| {
        let req = if v >= 4 {
            m::FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")])
        } else {
            m::FindCoordinatorRequest::default().with_key(s("g"))
        };
        framed(ApiKey::FindCoordinator, v, &req)
    });
    push(ApiKey::JoinGroup, [4, 9], &|v| {
        framed(ApiKey::JoinGroup, v, &join_request("g", "", 10_000))
    });
    push(ApiKey::SyncGroup, [0, 5], &|v| {
        let req = m::SyncGroupRequest::default()
            .with_group_id(group("g"))
            .with_generation_id(1)
            .with_member_id(s("nobody"))
            .with_protocol_type((v >= 5).then(|| s("consumer")))
            .with_protocol_name((v >= 5).then(|| s("range")))
            .with_assignments(vec![
                m::sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("nobody"))
                    .with_assignment(bytes::Bytes::from_static(b"assignment")),
            ]);
        framed(ApiKey::SyncGroup, v, &req)
    });
    push(ApiKey::Heartbeat, [0, 4], &|v| {
        let req = m::HeartbeatRequest::default()
            .with_group_id(group("g"))
            .with_generation_id(1)
            .with_member_id(s("nobody"));
        framed(ApiKey::Heartbeat, v, &req)
    });
    push(ApiKey::LeaveGroup, [0, 5], &|v| {
        let req = if v >= 3 {
            m::LeaveGroupRequest::default()
                .with_group_id(group("g"))
                .with_members(vec![
                    m::leave_group_request::MemberIdentity::default().with_member_id(s("nobody"))
                ])
        } else {
            m::LeaveGroupRequest::default()
                .with_group_id(group("g"))
                .with_member_id(s("nobody"))
        };
        framed(ApiKey::LeaveGroup, v, &req)
    });
    push(ApiKey::OffsetCommit, [2, 9], &|v| {
        let req = commit_request("simple", (-1, ""), ("events", 0, 1), Some("m"));
        framed(ApiKey::OffsetCommit, v, &req)
    });
    push(ApiKey::OffsetFetch, [1, 9], &|v| {
        let topics = || {
            vec![m::offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic("events"))
                .with_partition_indexes(vec![0, 1])]
        };
        let req = if v >= 8 {
            m::OffsetFetchRequest::default().with_groups(vec![
                m::offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group("simple"))
                    .with_topics(Some(vec![
                        m::offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic("events"))
                            .with_partition_indexes(vec![0, 1]),
                    ])),
            ])
        } else {
            m::OffsetFetchRequest::default()
                .with_group_id(group("simple"))
                .with_topics(Some(topics()))
        };
        framed(ApiKey::OffsetFetch, v, &req)
    });
    push(ApiKey::OffsetDelete, [0, 0], &|v| {
        let req = m::OffsetDeleteRequest::default()
            .with_group_id(group("no-such-group"))
            .with_topics(vec![
                m::offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(topic("events"))
                    .with_partitions(vec![
                        m::offset_delete_request::OffsetDeleteRequestPartition::default(),
                    ]),
            ]);
        framed(ApiKey::OffsetDelete, v, &req)
    });
    push(ApiKey::ListGroups, [0, 5], &|v| {
        framed(ApiKey::ListGroups, v, &m::ListGroupsRequest::default())
    });
    push(ApiKey::DescribeGroups, [0, 5], &|v| {
        let req = m::DescribeGroupsRequest::default().with_groups(vec![group("g")]);
        framed(ApiKey::DescribeGroups, v, &req)
    });
    push(ApiKey::DeleteGroups, [0, 2], &|v| {
        let req = m::DeleteGroupsRequest::default().with_groups_names(vec![group("nobody's")]);
        framed(ApiKey::DeleteGroups, v, &req)
    });
    security_requests(&mut push);
    out
}

/// The SASL, SCRAM credential, ACL and client quota APIs (on a listener without
/// SASL or an authorizer: they are refused or change nothing that matters).
/// How [`valid_requests`] adds an API's requests: its versions and a body for each.
type Push<'a> = dyn FnMut(ApiKey, [i16; 2], &dyn Fn(i16) -> Vec<u8>) + 'a;

fn security_requests(push: &mut Push<'_>) {
    let s = StrBytes::from_static_str;
    push(ApiKey::SaslHandshake, [0, 1], &|v| {
        let req = m::SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-512"));
        framed(ApiKey::SaslHandshake, v, &req)
    });
    push(ApiKey::SaslAuthenticate, [0, 2], &|v| {
        let req = m::SaslAuthenticateRequest::default()
            .with_auth_bytes(bytes::Bytes::from_static(b"n,,n=user,r=abc"));
        framed(ApiKey::SaslAuthenticate, v, &req)
    });
    push(ApiKey::DescribeUserScramCredentials, [0, 0], &|v| {
        let user =
            m::describe_user_scram_credentials_request::UserName::default().with_name(s("u"));
        let req = m::DescribeUserScramCredentialsRequest::default().with_users(Some(vec![user]));
        framed(ApiKey::DescribeUserScramCredentials, v, &req)
    });
    push(ApiKey::AlterUserScramCredentials, [0, 0], &|v| {
        let gone = m::alter_user_scram_credentials_request::ScramCredentialDeletion::default()
            .with_name(s("nobody"))
            .with_mechanism(2);
        let req = m::AlterUserScramCredentialsRequest::default().with_deletions(vec![gone]);
        framed(ApiKey::AlterUserScramCredentials, v, &req)
    });
    push(ApiKey::CreateAcls, [1, 3], &|v| {
        let acl = m::create_acls_request::AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(s("events"))
            .with_resource_pattern_type(3)
            .with_principal(s("User:alice"))
            .with_host(s("*"))
            .with_operation(4)
            .with_permission_type(3);
        framed(
            ApiKey::CreateAcls,
            v,
            &m::CreateAclsRequest::default().with_creations(vec![acl]),
        )
    });
    push(ApiKey::DescribeAcls, [1, 3], &|v| {
        let req = m::DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1);
        framed(ApiKey::DescribeAcls, v, &req)
    });
    push(ApiKey::DeleteAcls, [1, 3], &|v| {
        let filter = m::delete_acls_request::DeleteAclsFilter::default()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(s("nothing")))
            .with_pattern_type_filter(3)
            .with_operation(1)
            .with_permission_type(1);
        framed(
            ApiKey::DeleteAcls,
            v,
            &m::DeleteAclsRequest::default().with_filters(vec![filter]),
        )
    });
    push(ApiKey::DescribeClientQuotas, [0, 1], &|v| {
        let c = m::describe_client_quotas_request::ComponentData::default()
            .with_entity_type(s("client-id"))
            .with_match_type(2)
            .with_match(None);
        let req = m::DescribeClientQuotasRequest::default().with_components(vec![c]);
        framed(ApiKey::DescribeClientQuotas, v, &req)
    });
    push(ApiKey::AlterClientQuotas, [0, 1], &|v| {
        let entity = m::alter_client_quotas_request::EntityData::default()
            .with_entity_type(s("client-id"))
            .with_entity_name(Some(s("fuzz")));
        let op = m::alter_client_quotas_request::OpData::default()
            .with_key(s("producer_byte_rate"))
            .with_value(1e9);
        let entry = m::alter_client_quotas_request::EntryData::default()
            .with_entity(vec![entity])
            .with_ops(vec![op]);
        // validate_only: a mutation that turns it off sets a quota on a client id
        // no other request uses.
        let req = m::AlterClientQuotasRequest::default()
            .with_entries(vec![entry])
            .with_validate_only(true);
        framed(ApiKey::AlterClientQuotas, v, &req)
    });
}
