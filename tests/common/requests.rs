//! Kafka requests as clients encode them, for the tests that probe the front end
//! with valid requests and with mutations of them.

use bytes::BytesMut;
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

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
    out
}
