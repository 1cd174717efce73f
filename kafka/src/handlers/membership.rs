//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup (the classic protocol). Each
//! `handle_*` takes the client's request to the coordinating core; the functions
//! without the prefix run there, on the group (`groups::group`).

use crate::broker::Broker;
use crate::groups::group::{JoinArgs, Step};
use crate::handlers::coordinated::forward;
use crate::remote::{GroupCall, GroupReply};
use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The error a request gets when the coordinating core did not answer.
const GONE: ResponseError = ResponseError::CoordinatorNotAvailable;

pub async fn handle_join(
    broker: &Rc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let owner = broker.groups.owner(&req.group_id);
    if owner == broker.shard {
        return join(broker, req, version, client_id, client_host).await;
    }
    let member = req.member_id.clone();
    let call = GroupCall::Join {
        req,
        version,
        client_id,
        client_host,
    };
    match forward(broker, owner, call).await {
        Some(GroupReply::Join(r)) => r,
        _ => join_error(GONE, member, version),
    }
}

fn join_error(e: ResponseError, member_id: StrBytes, version: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(e.code())
        .with_generation_id(-1)
        .with_protocol_name((version < 7).then(StrBytes::default))
        .with_member_id(member_id)
}

pub async fn join(
    broker: &Rc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let groups = &broker.groups;
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return join_error(ResponseError::InvalidGroupId, req.member_id, version);
    }
    let (lo, hi) = groups.cfg.session_timeout_ms;
    let session = u64::try_from(req.session_timeout_ms).unwrap_or(0);
    if !(lo..=hi).contains(&session) {
        return join_error(ResponseError::InvalidSessionTimeout, req.member_id, version);
    }
    // v0 has no rebalance timeout: the session timeout is both.
    let rebalance = u64::try_from(req.rebalance_timeout_ms)
        .ok()
        .filter(|_| version >= 1)
        .unwrap_or(session);
    let args = JoinArgs {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client_id.clone(),
        client_host,
        session_timeout: Duration::from_millis(session),
        rebalance_timeout: Duration::from_millis(rebalance),
        protocol_type: req.protocol_type.to_string(),
        // Copied out: a slice would keep the whole request's buffer alive.
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let incoming: usize = args.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
    if !groups.has_room(incoming) {
        tracing::warn!(
            group,
            bytes = incoming,
            max = groups.cfg.group_bytes_max,
            "join refused: this core's groups hold group_bytes_max of member metadata"
        );
        return join_error(
            ResponseError::CoordinatorNotAvailable,
            req.member_id,
            version,
        );
    }
    let now = Instant::now();
    let step = groups.with_group(&group, true, |g| {
        g.join(args, now, || groups.member_id(&client_id))
    });
    let result = match step {
        Err(e) => return join_error(e, req.member_id, version),
        Ok(Step::Now(r)) => r,
        Ok(Step::Wait(rx)) => match rx.recv().await {
            Some(r) => r,
            // A newer JoinGroup of the same member took its place.
            None => return join_error(ResponseError::RebalanceInProgress, req.member_id, version),
        },
    };
    match result {
        Err(refused) => join_error(refused.error, s(&refused.member_id), version),
        Ok(j) => {
            let members = j
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(&id))
                        .with_group_instance_id(instance.filter(|_| version >= 5).map(|i| s(&i)))
                        .with_metadata(metadata)
                })
                .collect();
            JoinGroupResponse::default()
                .with_generation_id(j.generation)
                .with_protocol_type((version >= 7).then(|| s(&j.protocol_type)))
                .with_protocol_name(Some(s(&j.protocol)))
                .with_leader(s(&j.leader))
                .with_member_id(s(&j.member_id))
                .with_members(members)
        }
    }
}

pub async fn handle_sync(broker: &Rc<Broker>, req: SyncGroupRequest) -> SyncGroupResponse {
    let owner = broker.groups.owner(&req.group_id);
    if owner == broker.shard {
        return sync(broker, req).await;
    }
    match forward(broker, owner, GroupCall::Sync(req)).await {
        Some(GroupReply::Sync(r)) => r,
        _ => SyncGroupResponse::default().with_error_code(GONE.code()),
    }
}

pub async fn sync(broker: &Rc<Broker>, req: SyncGroupRequest) -> SyncGroupResponse {
    let error = |e: ResponseError| SyncGroupResponse::default().with_error_code(e.code());
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| {
            (
                a.member_id.to_string(),
                Bytes::copy_from_slice(&a.assignment),
            )
        })
        .collect();
    let now = Instant::now();
    let step = broker.groups.with_group(&req.group_id, false, |g| {
        g.sync(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            (req.protocol_type.as_deref(), req.protocol_name.as_deref()),
            assignments,
            now,
        )
    });
    let result = match step {
        Err(ResponseError::GroupIdNotFound) => return error(ResponseError::UnknownMemberId),
        Err(e) => return error(e),
        Ok(Step::Now(r)) => r,
        Ok(Step::Wait(rx)) => match rx.recv().await {
            Some(r) => r,
            None => return error(ResponseError::RebalanceInProgress),
        },
    };
    match result {
        Err(e) => error(e),
        Ok(synced) => SyncGroupResponse::default()
            .with_protocol_type(req.protocol_type.as_ref().map(|_| s(&synced.protocol_type)))
            .with_protocol_name(req.protocol_name.as_ref().map(|_| s(&synced.protocol)))
            .with_assignment(synced.assignment),
    }
}

pub async fn handle_heartbeat(broker: &Rc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    let owner = broker.groups.owner(&req.group_id);
    if owner == broker.shard {
        return heartbeat(broker, &req);
    }
    match forward(broker, owner, GroupCall::Heartbeat(req)).await {
        Some(GroupReply::Heartbeat(r)) => r,
        _ => HeartbeatResponse::default().with_error_code(GONE.code()),
    }
}

pub fn heartbeat(broker: &Rc<Broker>, req: &HeartbeatRequest) -> HeartbeatResponse {
    let now = Instant::now();
    let beat = broker.groups.with_group(&req.group_id, false, |g| {
        g.heartbeat(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            now,
        )
    });
    let code = match beat {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.code(),
        Err(ResponseError::GroupIdNotFound) => ResponseError::UnknownMemberId.code(),
        Err(e) => e.code(),
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub async fn handle_leave(
    broker: &Rc<Broker>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let owner = broker.groups.owner(&req.group_id);
    if owner == broker.shard {
        return leave(broker, &req, version);
    }
    match forward(broker, owner, GroupCall::Leave(req, version)).await {
        Some(GroupReply::Leave(r)) => r,
        _ => LeaveGroupResponse::default().with_error_code(GONE.code()),
    }
}

pub fn leave(broker: &Rc<Broker>, req: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    // v0-2 name one member; v3+ a list, each by member id or instance id.
    let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(req.member_id.clone(), None)]
    };
    let now = Instant::now();
    let mut members = Vec::new();
    for (member_id, instance_id) in leaving {
        let left = broker.groups.with_group(&req.group_id, false, |g| {
            g.leave(&member_id, instance_id.as_deref(), now)
        });
        let code = match left {
            Ok(Ok(())) => 0,
            Ok(Err(e)) | Err(e) if e != ResponseError::GroupIdNotFound => e.code(),
            _ => ResponseError::UnknownMemberId.code(),
        };
        members.push(
            MemberResponse::default()
                .with_member_id(member_id)
                .with_group_instance_id(instance_id)
                .with_error_code(code),
        );
    }
    if version >= 3 {
        LeaveGroupResponse::default().with_members(members)
    } else {
        let code = members.first().map_or(0, |m| m.error_code);
        LeaveGroupResponse::default().with_error_code(code)
    }
}
