//! A request's way through the front end once its frame is read: its header and
//! version checked, the SASL gate, its body decoded (within the memory it may
//! take), the authorizer's cut (`authorize`), its handler, and its response
//! framed. The connection (`connection.rs`) reads frames and writes what this
//! returns, in order.
//!
//! Never: panics on what a client sends, or lets a request past the SASL gate or
//! the authorizer that they refuse.

use crate::acl::Operation;
use crate::authorize::{self, Who};
use crate::broker::Broker;
use crate::budget;
use crate::error::KafkaError;
use crate::handlers::{acls, client_quotas};
use crate::handlers::{
    api_versions, configs, create_partitions, create_topics, delete_records, delete_topics, fetch,
    find_coordinator, group_admin, init_producer_id, list_offsets, membership, metadata, offsets,
    produce, sasl, scram_credentials,
};
use crate::listener::{Client, Endpoint};
use crate::quota::Kind;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use std::rc::Rc;
use std::time::Duration;

/// Why the server closed a connection.
#[derive(Debug)]
pub enum Closed {
    /// The peer broke the protocol: a malformed, oversized or unknown request, or a
    /// version we do not serve. Logged at WARN with the peer, as Kafka does.
    Refused(String),
    /// The socket failed, or an answer could not be made: logged at INFO.
    Failed(String),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Refused(why) | Closed::Failed(why) => f.write_str(why),
        }
    }
}

/// An answer (`None`: nothing to send, acks=0), or why the connection closes.
pub type Answered = Result<Option<BytesMut>, Closed>;

/// A request handled: its framed response (`None`: nothing to send, acks=0), now or
/// once a produce is durable.
pub enum Handled {
    Now(Option<BytesMut>),
    /// The connection closes once this answer is written.
    Last(BytesMut),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Answered>>>),
}

/// Decodes one request, runs its handler, encodes the framed response; a produce
/// returns once its offsets are reserved. `Err`: the connection must close (the
/// reason is logged). The time it took counts against the client's
/// `request_percentage` quota, if one applies (the connection is then muted);
/// its bytes against a produce or fetch byte rate (answered in
/// `throttle_time_ms`).
pub async fn handle(
    broker: &Rc<Broker>,
    body: Bytes,
    budget: &mut budget::Budget,
    client: &Client,
) -> Result<Handled, Closed> {
    // Requests that wait for data or for a group (a long poll, a rebalance) are
    // not charged their waiting: Kafka's request quota counts a thread's work,
    // not a request's time in purgatory.
    // Nor are ApiVersions and SASL: before a client authenticated, it is nobody's.
    let uncharged = matches!(
        ApiKey::try_from(body.clone().get_i16()),
        Ok(ApiKey::Fetch
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::ApiVersions
            | ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate)
    );
    let started = std::time::Instant::now();
    let handled = handle_request(broker, body, budget, client).await;
    if !uncharged && broker.quotas.any() {
        let took = started.elapsed().as_secs_f64();
        let client_id = client.client_id.borrow().clone();
        charge(broker, client, &client_id, Kind::Request, took);
    }
    handled
}

/// Charges `amount` of `kind` to the client's quota, if one applies: the
/// throttle, which also mutes the connection (zero: none).
fn charge(broker: &Broker, client: &Client, client_id: &str, kind: Kind, amount: f64) -> Duration {
    let Some(applied) = quota_of(broker, client, client_id, kind) else {
        return Duration::ZERO;
    };
    let now = std::time::Instant::now();
    let throttle = broker.quota_usage.record(kind, &applied, amount, now);
    let stats = &broker.stats;
    stats
        .quota_entities
        .set(broker.quota_usage.tracked() as u64);
    if !throttle.is_zero() {
        let i = kind as usize;
        let n = &stats.throttled_requests[i];
        n.set(n.get() + 1);
        client.mute_for(throttle);
    }
    throttle
}

/// The `kind` quota that applies to a client, if any (quotas name users without
/// `User:`).
fn quota_of(
    broker: &Broker,
    client: &Client,
    client_id: &str,
    kind: Kind,
) -> Option<crate::quota::Applied> {
    if !broker.quotas.any() {
        return None;
    }
    let principal = client.principal();
    let user = principal.strip_prefix("User:").unwrap_or(&principal);
    broker.quotas.applied(kind, user, client_id)
}

/// A throttle as a response's `throttle_time_ms`.
fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

async fn handle_request(
    broker: &Rc<Broker>,
    mut body: Bytes,
    budget: &mut budget::Budget,
    client: &Client,
) -> Result<Handled, Closed> {
    let size = body.len();
    let key = body.clone().get_i16();
    let version = body.clone().slice(2..).get_i16();
    let Ok(api) = ApiKey::try_from(key) else {
        return Err(Closed::Refused(format!("unknown API key {key}")));
    };
    let header_version = api.request_header_version(version);
    let header = RequestHeader::decode(&mut body, header_version)
        .map_err(|e| Closed::Refused(format!("malformed {api:?} request header: {e}")))?;
    let supported = api_versions::supported(api);
    let in_range = supported.is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
    if api == ApiKey::ApiVersions && !in_range {
        // KIP-511: answer in v0 with UNSUPPORTED_VERSION so the client can retry.
        let r = api_versions::response(Some(ResponseError::UnsupportedVersion));
        return frame(api, 0, header.correlation_id, &r).map(|f| Handled::Now(Some(f)));
    }
    if !in_range {
        let client = header.client_id.as_deref().unwrap_or("");
        return Err(Closed::Refused(match supported {
            Some((lo, hi)) => format!(
                "client {client:?} sent {api:?} v{version}; this server serves v{lo} to v{hi}"
            ),
            None => format!("client {client:?} sent {api:?}, which this server does not serve"),
        }));
    }
    let cid = header.correlation_id;
    let client_id = header.client_id.as_deref().unwrap_or("");
    if client.client_id.borrow().as_str() != client_id {
        *client.client_id.borrow_mut() = client_id.into();
    }
    sasl_gate(client, api)?;
    let who = Who::of(broker, client);
    let who = who.as_ref();
    macro_rules! decode {
        ($t:ty) => {
            decode::<$t>(&mut body, api, version)?
        };
    }
    match api {
        ApiKey::ApiVersions => frame(api, version, cid, &api_versions::response(None)),
        ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::DescribeUserScramCredentials
        | ApiKey::AlterUserScramCredentials
        | ApiKey::CreateAcls
        | ApiKey::DescribeAcls
        | ApiKey::DeleteAcls
        | ApiKey::DescribeClientQuotas
        | ApiKey::AlterClientQuotas => {
            return handle_security(broker, client, who, api, (version, cid), body).await
        }
        ApiKey::Produce => {
            let mut req = decode!(m::ProduceRequest);
            let acks = req.acks;
            if !matches!(acks, -1..=1) {
                let why = format!("acks={acks}: use -1 (all), 0 or 1");
                let resp = produce::refuse_all(
                    &req,
                    &KafkaError::new(ResponseError::InvalidRequiredAcks, why),
                );
                return frame(api, version, cid, &resp).map(|f| Handled::Now(Some(f)));
            }
            let denied = who
                .map(|w| authorize::produce(w, &mut req))
                .unwrap_or_default();
            let throttle = charge(broker, client, client_id, Kind::Produce, size as f64);
            let later = produce::begin(broker, req).await;
            return Ok(Handled::Later(Box::pin(async move {
                let mut resp = later.await;
                if acks == 0 && !denied.is_empty() {
                    // Without an answer to carry the error, the connection closes
                    // (as Kafka's broker closes it).
                    return Err(Closed::Failed(
                        "an acks=0 produce to a topic its principal may not write".into(),
                    ));
                }
                if acks == 0 {
                    return Ok(None);
                }
                authorize::produce_answer(&mut resp, denied);
                resp.throttle_time_ms = millis(throttle);
                frame(api, version, cid, &resp).map(Some)
            })));
        }
        ApiKey::Fetch => {
            let mut req = decode!(m::FetchRequest);
            let denied = who
                .map(|w| authorize::fetch(w, &mut req))
                .unwrap_or_default();
            if !denied.is_empty() && req.topics.is_empty() {
                // Nothing left to wait for: answer the refusals now.
                req.max_wait_ms = 0;
            }
            if let Some(applied) = quota_of(broker, client, client_id, Kind::Fetch) {
                let cap = crate::quota::Usage::fetch_cap(&applied);
                req.max_bytes = req.max_bytes.min(i32::try_from(cap).unwrap_or(i32::MAX));
            }
            let mut resp = fetch::handle(broker, &req, budget).await;
            authorize::fetch_answer(&mut resp, denied);
            let bytes: usize = resp
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter_map(|p| p.records.as_ref().map(Bytes::len))
                .sum();
            if bytes > 0 {
                let throttle = charge(broker, client, client_id, Kind::Fetch, bytes as f64);
                resp.throttle_time_ms = millis(throttle);
            }
            frame(api, version, cid, &resp)
        }
        ApiKey::Metadata
        | ApiKey::ListOffsets
        | ApiKey::InitProducerId
        | ApiKey::DeleteTopics
        | ApiKey::CreateTopics
        | ApiKey::DeleteRecords
        | ApiKey::CreatePartitions => {
            handle_topics(broker, client, who, api, (version, cid), body).await
        }
        ApiKey::FindCoordinator => {
            let req = decode!(m::FindCoordinatorRequest);
            let refused = who.and_then(|w| authorize::find_coordinator(w, &req, version));
            let resp = refused.unwrap_or_else(|| {
                find_coordinator::handle(broker, &client.endpoint, &req, version)
            });
            frame(api, version, cid, &resp)
        }
        ApiKey::DescribeConfigs
        | ApiKey::AlterConfigs
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::DescribeCluster => {
            handle_admin(broker, &client.endpoint, who, api, (version, cid), body).await
        }
        other => {
            let id = header.client_id.as_deref().unwrap_or("").to_string();
            let from = (id, &*client.host);
            handle_group(broker, who, other, (version, cid), body, from).await
        }
    }
    .map(|f| Handled::Now(Some(f)))
}

/// The topic APIs but Produce and Fetch: each request's refused topics are taken
/// out before its handler runs and answered after.
async fn handle_topics(
    broker: &Rc<Broker>,
    client: &Client,
    who: Option<&Who<'_>>,
    api: ApiKey,
    (version, cid): (i16, i32),
    mut body: Bytes,
) -> Result<BytesMut, Closed> {
    macro_rules! decode {
        ($t:ty) => {
            decode::<$t>(&mut body, api, version)?
        };
    }
    macro_rules! guarded {
        ($t:ty, $cut:path, $answer:path, $run:expr) => {{
            let mut req = decode!($t);
            let denied = who.map(|w| $cut(w, &mut req)).unwrap_or_default();
            let mut resp = ($run)(req).await;
            $answer(&mut resp, denied);
            frame(api, version, cid, &resp)
        }};
    }
    match api {
        ApiKey::Metadata => {
            let mut req = decode!(m::MetadataRequest);
            let denied = who.map(|w| authorize::metadata(w, &mut req));
            let mut resp = metadata::handle(broker, &client.endpoint, &req).await;
            if let (Some(w), Some(denied)) = (who, denied) {
                authorize::metadata_answer(w, &mut resp, denied);
            }
            frame(api, version, cid, &resp)
        }
        ApiKey::ListOffsets => guarded!(
            m::ListOffsetsRequest,
            authorize::list_offsets,
            authorize::list_offsets_answer,
            |req| async move { list_offsets::handle(broker, &req).await }
        ),
        ApiKey::InitProducerId => {
            let req = decode!(m::InitProducerIdRequest);
            let refused = who.and_then(authorize::init_producer_id);
            let resp = refused.unwrap_or_else(|| init_producer_id::handle(&req));
            frame(api, version, cid, &resp)
        }
        ApiKey::DeleteTopics => guarded!(
            m::DeleteTopicsRequest,
            authorize::delete_topics,
            authorize::delete_topics_answer,
            |req| async move { delete_topics::handle(broker, &req).await }
        ),
        ApiKey::CreateTopics => guarded!(
            m::CreateTopicsRequest,
            authorize::create_topics,
            authorize::create_topics_answer,
            |req| async move { create_topics::handle(broker, &req, version).await }
        ),
        ApiKey::DeleteRecords => guarded!(
            m::DeleteRecordsRequest,
            authorize::delete_records,
            authorize::delete_records_answer,
            |req| async move { delete_records::handle(broker, &req).await }
        ),
        ApiKey::CreatePartitions => guarded!(
            m::CreatePartitionsRequest,
            authorize::create_partitions,
            authorize::create_partitions_answer,
            |req| async move { create_partitions::handle(broker, &req).await }
        ),
        other => Err(Closed::Refused(format!("{other:?} is not implemented"))),
    }
}

/// On a SASL listener, nothing but ApiVersions and SASL before the client has
/// authenticated, and nothing else once its session has ended.
fn sasl_gate(client: &Client, api: ApiKey) -> Result<(), Closed> {
    if client.endpoint.sasl.is_none() || api == ApiKey::ApiVersions {
        return Ok(());
    }
    let sasl = matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    let listener = &client.endpoint.name;
    match client
        .session
        .borrow()
        .may_proceed(std::time::Instant::now())
    {
        Ok(()) => Ok(()),
        Err(crate::sasl::Refusal::NotAuthenticated) if sasl => Ok(()),
        Err(crate::sasl::Refusal::NotAuthenticated) => Err(Closed::Refused(format!(
            "{api:?} before SASL authentication: a client of listener {listener} must authenticate first (security.protocol SASL_*, sasl.mechanism, sasl.username, sasl.password)"
        ))),
        Err(crate::sasl::Refusal::Expired) => Err(Closed::Failed(format!(
            "{api:?} after the client's SASL session ended: it did not authenticate again within connections_max_reauth_ms"
        ))),
    }
}

/// SaslHandshake, SaslAuthenticate, the SCRAM credential APIs and the ACL APIs.
/// A failed handshake or authentication is answered, then the connection closes.
async fn handle_security(
    broker: &Rc<Broker>,
    client: &Client,
    who: Option<&Who<'_>>,
    api: ApiKey,
    (version, cid): (i16, i32),
    mut body: Bytes,
) -> Result<Handled, Closed> {
    macro_rules! decode {
        ($t:ty) => {
            decode::<$t>(&mut body, api, version)?
        };
    }
    let answer = |resp: &dyn Fn() -> Result<BytesMut, Closed>, close: bool| {
        resp().map(|f| {
            if close {
                Handled::Last(f)
            } else {
                Handled::Now(Some(f))
            }
        })
    };
    // Users and quotas are the cluster's to manage once the authorizer is on;
    // before, only clients on this host may manage them.
    let users_refusal = |operation: Operation| match who {
        Some(w) => (!w.can_cluster(operation)).then(|| {
            KafkaError::new(
                ResponseError::ClusterAuthorizationFailed,
                format!("this needs {operation:?} on the cluster"),
            )
        }),
        None => scram_credentials::loopback_only(client),
    };
    let acl_refusal = |operation| {
        acls::refused(
            broker,
            |op| who.is_some_and(|w| w.can_cluster(op)),
            operation,
        )
    };
    match api {
        ApiKey::SaslHandshake => {
            let req = decode!(m::SaslHandshakeRequest);
            let (resp, close) = sasl::handshake(client, req.mechanism.as_str(), version);
            answer(&|| frame(api, version, cid, &resp), close)
        }
        ApiKey::SaslAuthenticate => {
            let req = decode!(m::SaslAuthenticateRequest);
            let a = sasl::token(broker, client, &req.auth_bytes).await;
            let mut resp = m::SaslAuthenticateResponse::default().with_auth_bytes(a.token.into());
            if version >= 1 {
                resp.session_lifetime_ms = a.session_lifetime_ms;
            }
            let close = a.error.is_some();
            if let Some(e) = a.error {
                resp = resp
                    .with_error_code(e.code())
                    .with_error_message(e.message());
            }
            answer(&|| frame(api, version, cid, &resp), close)
        }
        ApiKey::DescribeUserScramCredentials => {
            let req = decode!(m::DescribeUserScramCredentialsRequest);
            let refusal = users_refusal(Operation::Describe);
            let resp = scram_credentials::describe(broker, refusal, &req);
            answer(&|| frame(api, version, cid, &resp), false)
        }
        ApiKey::AlterUserScramCredentials => {
            let req = decode!(m::AlterUserScramCredentialsRequest);
            let refusal = users_refusal(Operation::Alter);
            let resp = scram_credentials::alter(broker, refusal, &req).await;
            answer(&|| frame(api, version, cid, &resp), false)
        }
        ApiKey::DescribeClientQuotas => {
            let req = decode!(m::DescribeClientQuotasRequest);
            let refusal = users_refusal(Operation::DescribeConfigs);
            let resp = client_quotas::describe(broker, refusal, &req);
            answer(&|| frame(api, version, cid, &resp), false)
        }
        ApiKey::AlterClientQuotas => {
            let req = decode!(m::AlterClientQuotasRequest);
            let refusal = users_refusal(Operation::AlterConfigs);
            let resp = client_quotas::alter(broker, refusal, &req).await;
            answer(&|| frame(api, version, cid, &resp), false)
        }
        ApiKey::CreateAcls => {
            let req = decode!(m::CreateAclsRequest);
            let resp = acls::create(broker, acl_refusal(Operation::Alter), &req).await;
            answer(&|| frame(api, version, cid, &resp), false)
        }
        ApiKey::DescribeAcls => {
            let req = decode!(m::DescribeAclsRequest);
            let resp = acls::describe(broker, acl_refusal(Operation::Describe), &req);
            answer(&|| frame(api, version, cid, &resp), false)
        }
        ApiKey::DeleteAcls => {
            let req = decode!(m::DeleteAclsRequest);
            let resp = acls::delete(broker, acl_refusal(Operation::Alter), &req).await;
            answer(&|| frame(api, version, cid, &resp), false)
        }
        other => Err(Closed::Refused(format!("{other:?} is not implemented"))),
    }
}

/// A bare token after a v0 SaslHandshake: the answer is the server's token with
/// its size and no header; a failure closes the connection with no answer (v0 has
/// no way to send one).
pub async fn raw_token(
    broker: &Rc<Broker>,
    client: &Client,
    token: &[u8],
) -> Result<Handled, Closed> {
    let a = sasl::token(broker, client, token).await;
    if a.error.is_some() {
        return Err(Closed::Failed(
            "SASL authentication failed (after a v0 handshake the connection closes without an answer)".into(),
        ));
    }
    let mut out = BytesMut::with_capacity(4 + a.token.len());
    out.put_i32(a.token.len() as i32);
    out.put_slice(&a.token);
    Ok(Handled::Now(Some(out)))
}

/// Configs and the cluster's description.
async fn handle_admin(
    broker: &Rc<Broker>,
    endpoint: &Endpoint,
    who: Option<&Who<'_>>,
    api: ApiKey,
    (version, cid): (i16, i32),
    mut body: Bytes,
) -> Result<BytesMut, Closed> {
    macro_rules! decode {
        ($t:ty) => {
            decode::<$t>(&mut body, api, version)?
        };
    }
    // The resources of an alter the principal may not alter: taken out, answered.
    macro_rules! alter_refused {
        ($req:ident, $refused:path) => {{
            let codes = who.map(|w| {
                let named: Vec<(i8, &str)> = $req
                    .resources
                    .iter()
                    .map(|r| (r.resource_type, r.resource_name.as_str()))
                    .collect();
                authorize::alter_configs(w, &named)
            });
            let mut refused = Vec::new();
            if let Some(codes) = codes {
                let mut codes = codes.into_iter();
                $req.resources.retain(|r| match codes.next().flatten() {
                    Some(code) => {
                        refused.push($refused(r.resource_type, r.resource_name.clone(), code));
                        false
                    }
                    None => true,
                });
            }
            refused
        }};
    }
    match api {
        ApiKey::DescribeConfigs => {
            let mut req = decode!(m::DescribeConfigsRequest);
            let denied = who.map(|w| authorize::describe_configs(w, &mut req));
            let mut resp = configs::describe(broker, &req, version);
            authorize::describe_configs_answer(&mut resp, denied.unwrap_or_default());
            frame(api, version, cid, &resp)
        }
        ApiKey::AlterConfigs => {
            let mut req = decode!(m::AlterConfigsRequest);
            let refused = alter_refused!(req, authorize::alter_configs_refused);
            let mut resp = configs::alter(broker, &req).await;
            resp.responses.extend(refused);
            frame(api, version, cid, &resp)
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut req = decode!(m::IncrementalAlterConfigsRequest);
            let refused = alter_refused!(req, authorize::incremental_refused);
            let mut resp = configs::incremental_alter(broker, &req).await;
            resp.responses.extend(refused);
            frame(api, version, cid, &resp)
        }
        ApiKey::DescribeCluster => {
            let req = decode!(m::DescribeClusterRequest);
            // Any principal may learn the cluster's id and brokers, as in Kafka (its
            // authorized operations are not reported).
            let resp = metadata::describe_cluster(broker, endpoint, &req);
            frame(api, version, cid, &resp)
        }
        other => Err(Closed::Refused(format!("{other:?} is not implemented"))),
    }
}

/// The consumer group APIs: decoded here, authorized, run on the core that
/// coordinates the group.
async fn handle_group(
    broker: &Rc<Broker>,
    who: Option<&Who<'_>>,
    api: ApiKey,
    (version, cid): (i16, i32),
    mut body: Bytes,
    (client_id, host): (String, &str),
) -> Result<BytesMut, Closed> {
    macro_rules! decode {
        ($t:ty) => {
            decode::<$t>(&mut body, api, version)?
        };
    }
    // A membership request whose principal may not READ its group gets this.
    let refused = |group: &str| who.and_then(|w| authorize::group_read(w, group));
    match api {
        ApiKey::JoinGroup => {
            let req = decode!(m::JoinGroupRequest);
            let resp = match refused(&req.group_id) {
                Some(code) => m::JoinGroupResponse::default()
                    .with_error_code(code)
                    .with_generation_id(-1)
                    .with_protocol_name(Some(Default::default())),
                None => membership::handle_join(broker, req, version, client_id, host.into()).await,
            };
            frame(api, version, cid, &resp)
        }
        ApiKey::SyncGroup => {
            let req = decode!(m::SyncGroupRequest);
            let resp = match refused(&req.group_id) {
                Some(code) => m::SyncGroupResponse::default().with_error_code(code),
                None => membership::handle_sync(broker, req).await,
            };
            frame(api, version, cid, &resp)
        }
        ApiKey::Heartbeat => {
            let req = decode!(m::HeartbeatRequest);
            let resp = match refused(&req.group_id) {
                Some(code) => m::HeartbeatResponse::default().with_error_code(code),
                None => membership::handle_heartbeat(broker, req).await,
            };
            frame(api, version, cid, &resp)
        }
        ApiKey::LeaveGroup => {
            let req = decode!(m::LeaveGroupRequest);
            let resp = match refused(&req.group_id) {
                Some(code) => m::LeaveGroupResponse::default().with_error_code(code),
                None => membership::handle_leave(broker, req, version).await,
            };
            frame(api, version, cid, &resp)
        }
        _ => handle_group_offsets(broker, who, api, (version, cid), body).await,
    }
}

/// Offsets and the group admin APIs, authorized per group and per topic.
async fn handle_group_offsets(
    broker: &Rc<Broker>,
    who: Option<&Who<'_>>,
    api: ApiKey,
    (version, cid): (i16, i32),
    mut body: Bytes,
) -> Result<BytesMut, Closed> {
    macro_rules! decode {
        ($t:ty) => {
            decode::<$t>(&mut body, api, version)?
        };
    }
    // A request refused whole by its group is answered so; otherwise its refused
    // topics are taken out before the handler and answered after.
    macro_rules! group_guarded {
        ($t:ty, $cut:path, $answer:path, $run:path) => {{
            let mut req = decode!($t);
            let resp = match who.map(|w| $cut(w, &mut req)) {
                Some(Err(refused)) => refused,
                checked => {
                    let denied = checked.and_then(Result::ok).unwrap_or_default();
                    let mut resp = $run(broker, req).await;
                    $answer(&mut resp, denied);
                    resp
                }
            };
            frame(api, version, cid, &resp)
        }};
    }
    match api {
        ApiKey::OffsetCommit => group_guarded!(
            m::OffsetCommitRequest,
            authorize::offset_commit,
            authorize::offset_commit_answer,
            offsets::handle_commit
        ),
        ApiKey::OffsetFetch => {
            let req = decode!(m::OffsetFetchRequest);
            let resp = match who.and_then(|w| authorize::offset_fetch_refused(w, &req, version)) {
                Some(refused) => refused,
                None => {
                    let mut resp = offsets::handle_fetch(broker, &req, version).await;
                    if let Some(w) = who {
                        authorize::offset_fetch_answer(w, &req, &mut resp);
                    }
                    resp
                }
            };
            frame(api, version, cid, &resp)
        }
        ApiKey::OffsetDelete => group_guarded!(
            m::OffsetDeleteRequest,
            authorize::offset_delete,
            authorize::offset_delete_answer,
            offsets::handle_delete
        ),
        ApiKey::ListGroups => {
            let req = decode!(m::ListGroupsRequest);
            let mut resp = group_admin::handle_list(broker, &req).await;
            if let Some(w) = who {
                authorize::list_groups_answer(w, &mut resp);
            }
            frame(api, version, cid, &resp)
        }
        ApiKey::DescribeGroups => {
            let mut req = decode!(m::DescribeGroupsRequest);
            let denied = who.map(|w| authorize::groups(w, Operation::Describe, &mut req.groups));
            let mut resp = group_admin::handle_describe(broker, &req, version).await;
            authorize::describe_groups_answer(&mut resp, denied.unwrap_or_default());
            frame(api, version, cid, &resp)
        }
        ApiKey::DeleteGroups => {
            let mut req = decode!(m::DeleteGroupsRequest);
            let denied =
                who.map(|w| authorize::groups(w, Operation::Delete, &mut req.groups_names));
            let mut resp = group_admin::handle_delete(broker, &req).await;
            authorize::delete_groups_answer(&mut resp, denied.unwrap_or_default());
            frame(api, version, cid, &resp)
        }
        other => Err(Closed::Refused(format!("{other:?} is not implemented"))),
    }
}

/// Decodes a request body of `api` in `version`, within the memory it may take
/// ([`decoded_bytes_max`]); a body that does not decode closes the connection.
fn decode<T: Decodable>(body: &mut Bytes, api: ApiKey, version: i16) -> Result<T, Closed> {
    let decoded_max = decoded_bytes_max(body.len());
    kafka_protocol::protocol::with_decode_budget(decoded_max, || T::decode(body, version))
        .map_err(|e| Closed::Refused(format!("malformed {api:?} v{version} request: {e}")))
}

/// Bytes of array elements decoding a request of `body_bytes` may allocate: what
/// real requests need (a Fetch of 10,000 partitions or a Metadata of 10,000 topics
/// decodes to 2-4 times its size) with room to spare, while a request of tiny
/// elements (one byte on the wire, 50 or more in memory) is refused. Records are
/// slices of the body and cost nothing here. The request memory budget bounds the
/// bodies, so this bounds what their decoded forms hold too.
fn decoded_bytes_max(body_bytes: usize) -> usize {
    const PER_BODY_BYTE: usize = 8;
    const FLOOR_BYTES: usize = 256 << 10;
    body_bytes
        .saturating_mul(PER_BODY_BYTE)
        .saturating_add(FLOOR_BYTES)
}

/// Encodes a response with its size prefix and header.
fn frame<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<BytesMut, Closed> {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version))
        .map_err(|e| Closed::Failed(format!("cannot encode {api:?} v{version} response: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}
