//! ListGroups (every core's groups), DescribeGroups and DeleteGroups (each group on
//! the core that coordinates it).

use crate::broker::Broker;
use crate::groups::group::State;
use crate::handlers::coordinated::forward;
use crate::remote::{GroupCall, GroupReply};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub async fn handle_list(broker: &Rc<Broker>, req: &ListGroupsRequest) -> ListGroupsResponse {
    let mut groups = Vec::new();
    let mut error = 0;
    let cores = broker.table().shard_count();
    for core in 0..cores {
        if core == broker.shard {
            groups.extend(list_here(broker));
            continue;
        }
        match forward(broker, core, GroupCall::List).await {
            Some(GroupReply::List(theirs)) => groups.extend(theirs),
            _ => error = ResponseError::CoordinatorNotAvailable.code(),
        }
    }
    let wanted = |filter: &[StrBytes], v: &StrBytes| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(v))
    };
    groups.retain(|g| {
        wanted(&req.states_filter, &g.group_state) && wanted(&req.types_filter, &g.group_type)
    });
    ListGroupsResponse::default()
        .with_error_code(error)
        .with_groups(groups)
}

/// This core's groups.
pub fn list_here(broker: &Rc<Broker>) -> Vec<ListedGroup> {
    let groups = &broker.groups;
    groups
        .group_ids()
        .into_iter()
        .map(|id| {
            let (state, protocol_type) = groups
                .with_group(&id, false, |g| {
                    (g.state, g.protocol_type.clone().unwrap_or_default())
                })
                .unwrap_or((State::Empty, String::new()));
            ListedGroup::default()
                .with_group_id(GroupId(s(&id)))
                .with_protocol_type(s(&protocol_type))
                .with_group_state(s(state.name()))
                .with_group_type(s("classic"))
        })
        .collect()
}

pub async fn handle_describe(
    broker: &Rc<Broker>,
    req: &DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut described = Vec::new();
    for g in &req.groups {
        let owner = broker.groups.owner(g);
        let mut d = if owner == broker.shard {
            describe_here(broker, g)
        } else {
            match forward(broker, owner, GroupCall::Describe(g.to_string())).await {
                Some(GroupReply::Describe(d)) => d,
                _ => DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
            }
        };
        let members = std::mem::take(&mut d.members)
            .into_iter()
            .map(|m| {
                let instance = m.group_instance_id.clone().filter(|_| version >= 4);
                m.with_group_instance_id(instance)
            })
            .collect();
        described.push(d.with_members(members));
    }
    DescribeGroupsResponse::default().with_groups(described)
}

/// One group as DescribeGroups shows it; a group this core does not know is `Dead`,
/// as Kafka answers.
pub fn describe_here(broker: &Rc<Broker>, id: &str) -> DescribedGroup {
    let base = DescribedGroup::default().with_group_id(GroupId(s(id)));
    let found = broker.groups.with_group(id, false, |g| {
        let members = g
            .members()
            .map(|m| {
                let protocol = g.protocol.as_deref().unwrap_or_default();
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| n == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                DescribedGroupMember::default()
                    .with_member_id(s(&m.id))
                    .with_group_instance_id(m.instance_id.as_deref().map(s))
                    .with_client_id(s(&m.client_id))
                    .with_client_host(s(&m.client_host))
                    .with_member_metadata(metadata)
                    .with_member_assignment(m.assignment.clone())
            })
            .collect::<Vec<_>>();
        (
            g.state.name(),
            g.protocol_type.clone().unwrap_or_default(),
            g.protocol.clone().unwrap_or_default(),
            members,
        )
    });
    match found {
        Ok((state, protocol_type, protocol, members)) => base
            .with_group_state(s(state))
            .with_protocol_type(s(&protocol_type))
            .with_protocol_data(s(&protocol))
            .with_members(members),
        Err(ResponseError::GroupIdNotFound) => base.with_group_state(s("Dead")),
        Err(e) => base.with_error_code(e.code()),
    }
}

pub async fn handle_delete(broker: &Rc<Broker>, req: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for g in &req.groups_names {
        let owner = broker.groups.owner(g);
        let code = if owner == broker.shard {
            delete_here(broker, g).await
        } else {
            match forward(broker, owner, GroupCall::Delete(g.to_string())).await {
                Some(GroupReply::Delete(code)) => code,
                _ => ResponseError::CoordinatorNotAvailable.code(),
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Deletes a group without members, and its commits.
pub async fn delete_here(broker: &Rc<Broker>, id: &str) -> i16 {
    match broker.groups.delete(id).await {
        Ok(()) => 0,
        Err(e) => {
            if e.kind() != ResponseError::GroupIdNotFound
                && e.kind() != ResponseError::NonEmptyGroup
            {
                tracing::warn!(group = id, "group deletion failed: {e}");
            }
            match e.kind() {
                ResponseError::GroupIdNotFound | ResponseError::NonEmptyGroup => e.code(),
                _ => ResponseError::CoordinatorNotAvailable.code(),
            }
        }
    }
}
