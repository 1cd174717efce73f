//! FindCoordinator: the core that coordinates a group (per-core brokers), or the one
//! broker (single port, which forwards group requests to the owning core). Batched
//! keys from v4. Transactions are not served: a transactional key gets
//! INVALID_REQUEST saying so.

use crate::broker::{Broker, Mode};
use crate::groups::coordinator_of;
use crate::listener::Endpoint;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Kafka's key type of a consumer group.
const GROUP_KEY: i8 = 0;

pub fn handle(
    broker: &Broker,
    endpoint: &Endpoint,
    req: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys = if version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let shards = broker.table().shard_count();
    let found: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let c = Coordinator::default().with_key(key.clone());
            if req.key_type != GROUP_KEY {
                return c
                    .with_node_id(BrokerId(-1))
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "this server has no transaction coordinator: transactions are not supported",
                    )));
            }
            if key.is_empty() {
                return c
                    .with_node_id(BrokerId(-1))
                    .with_error_code(ResponseError::InvalidGroupId.code());
            }
            let node = match broker.mode {
                Mode::SinglePort => 0,
                Mode::PerCore => coordinator_of(&key, shards),
            };
            c.with_node_id(BrokerId(node as i32))
                .with_host(StrBytes::from_string(endpoint.advertised_host.clone()))
                .with_port(endpoint.port_of(node))
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(found);
    }
    let Some(c) = found.into_iter().next() else {
        return FindCoordinatorResponse::default();
    };
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message.filter(|_| version >= 1))
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}
