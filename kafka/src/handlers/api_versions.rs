//! ApiVersions: exactly the APIs and versions this front end implements.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// The versions we implement of each API; `None`: not implemented.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    match api {
        ApiKey::ApiVersions => Some((0, 3)),
        ApiKey::Metadata => Some((0, 9)),
        // v3 is the first with record batch v2; Fetch v13 moves to topic ids.
        ApiKey::Produce => Some((3, 9)),
        ApiKey::Fetch => Some((4, 12)),
        ApiKey::ListOffsets => Some((1, 7)),
        ApiKey::InitProducerId => Some((0, 4)),
        ApiKey::CreateTopics => Some((0, 7)),
        ApiKey::DeleteTopics => Some((0, 6)),
        // The classic group protocol; v5 of FindCoordinator adds transaction errors.
        ApiKey::FindCoordinator => Some((0, 4)),
        ApiKey::JoinGroup => Some((0, 9)),
        ApiKey::SyncGroup => Some((0, 5)),
        ApiKey::Heartbeat => Some((0, 4)),
        ApiKey::LeaveGroup => Some((0, 5)),
        ApiKey::OffsetCommit => Some((0, 9)),
        ApiKey::OffsetFetch => Some((0, 9)),
        ApiKey::OffsetDelete => Some((0, 0)),
        ApiKey::ListGroups => Some((0, 5)),
        ApiKey::DescribeGroups => Some((0, 5)),
        ApiKey::DeleteGroups => Some((0, 2)),
        ApiKey::DescribeConfigs => Some((0, 4)),
        ApiKey::AlterConfigs => Some((0, 2)),
        ApiKey::IncrementalAlterConfigs => Some((0, 1)),
        ApiKey::DescribeCluster => Some((0, 1)),
        ApiKey::CreatePartitions => Some((0, 3)),
        ApiKey::DeleteRecords => Some((0, 2)),
        // v0 of SaslHandshake: bare tokens follow; v1: SaslAuthenticate requests.
        ApiKey::SaslHandshake => Some((0, 1)),
        // v1 adds the session lifetime (KIP-368), v2 is its flexible form.
        ApiKey::SaslAuthenticate => Some((0, 2)),
        ApiKey::DescribeUserScramCredentials => Some((0, 0)),
        ApiKey::AlterUserScramCredentials => Some((0, 0)),
        // v1 adds prefixed patterns, which every current client sends.
        ApiKey::CreateAcls | ApiKey::DescribeAcls | ApiKey::DeleteAcls => Some((1, 3)),
        ApiKey::DescribeClientQuotas | ApiKey::AlterClientQuotas => Some((0, 1)),
        _ => None,
    }
}

/// The answer: every API we serve, or `error` (with the same list).
pub fn response(error: Option<ResponseError>) -> ApiVersionsResponse {
    let keys = [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
        ApiKey::InitProducerId,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::OffsetDelete,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
        ApiKey::DescribeConfigs,
        ApiKey::AlterConfigs,
        ApiKey::IncrementalAlterConfigs,
        ApiKey::DescribeCluster,
        ApiKey::CreatePartitions,
        ApiKey::DeleteRecords,
        ApiKey::SaslHandshake,
        ApiKey::SaslAuthenticate,
        ApiKey::DescribeUserScramCredentials,
        ApiKey::AlterUserScramCredentials,
        ApiKey::CreateAcls,
        ApiKey::DescribeAcls,
        ApiKey::DeleteAcls,
        ApiKey::DescribeClientQuotas,
        ApiKey::AlterClientQuotas,
    ];
    let api_keys = keys
        .iter()
        .filter_map(|&k| {
            supported(k).map(|(lo, hi)| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(lo)
                    .with_max_version(hi)
            })
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(api_keys)
}
