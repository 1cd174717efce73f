//! CreateAcls, DescribeAcls and DeleteAcls: the ACLs, managed with Kafka's own
//! tools (`kafka-acls`, AdminClient). Served only while the authorizer is on
//! (SECURITY_DISABLED otherwise, as Kafka answers), to principals with ALTER
//! (create, delete) or DESCRIBE (describe) on the cluster.

use crate::acl::{Acl, Filter, Operation, PatternType, Permission, ResourceType};
use crate::broker::Broker;
use crate::error::KafkaError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

/// Why a request cannot be served at all: the authorizer is off, or the principal
/// may not do `operation` on the cluster.
pub fn refused(
    broker: &Broker,
    allowed: impl Fn(Operation) -> bool,
    operation: Operation,
) -> Option<KafkaError> {
    if !broker.authorizer.is_on() {
        return Some(KafkaError::new(
            ResponseError::SecurityDisabled,
            "no authorizer is configured (authorizer = \"acl\" turns it on)",
        ));
    }
    (!allowed(operation)).then(|| {
        KafkaError::new(
            ResponseError::ClusterAuthorizationFailed,
            format!("managing ACLs needs {operation:?} on the cluster"),
        )
    })
}

pub async fn create(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &CreateAclsRequest,
) -> CreateAclsResponse {
    let result = |e: Option<&KafkaError>| match e {
        None => AclCreationResult::default(),
        Some(e) => AclCreationResult::default()
            .with_error_code(e.code())
            .with_error_message(e.message()),
    };
    if let Some(e) = refusal {
        let results = req.creations.iter().map(|_| result(Some(&e))).collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let checked: Vec<Result<Acl, KafkaError>> = req
        .creations
        .iter()
        .map(|c| {
            let invalid = |why: String| KafkaError::new(ResponseError::InvalidRequest, why);
            let acl = Acl {
                resource_type: ResourceType::of_code(c.resource_type).ok_or_else(|| {
                    invalid(format!("resource type {} is not served", c.resource_type))
                })?,
                name: c.resource_name.to_string(),
                pattern: PatternType::of_code(c.resource_pattern_type)
                    .ok_or_else(|| invalid("the pattern type is LITERAL or PREFIXED".into()))?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: Operation::of_code(c.operation)
                    .ok_or_else(|| invalid(format!("operation {} is not served", c.operation)))?,
                permission: Permission::of_code(c.permission_type)
                    .ok_or_else(|| invalid("the permission is ALLOW or DENY".into()))?,
            };
            acl.check().map_err(invalid)?;
            Ok(acl.canonical())
        })
        .collect();
    let valid: Vec<Acl> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        broker.authorizer.create(valid.clone()).await
    };
    match &stored {
        Ok(()) if !valid.is_empty() => {
            tracing::info!(shard = broker.shard, acls = ?valid, "ACLs created")
        }
        Ok(()) => {}
        Err(e) => tracing::error!(shard = broker.shard, "cannot store ACLs: {e}"),
    }
    let results = checked
        .iter()
        .map(|c| match c {
            Err(e) => result(Some(e)),
            Ok(_) => result(stored.as_ref().err()),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    let fail = |e: KafkaError| {
        DescribeAclsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message())
    };
    if let Some(e) = refusal {
        return fail(e);
    }
    let filter = match Filter::of_codes(
        (
            req.resource_type_filter,
            req.resource_name_filter.as_deref(),
            req.pattern_type_filter,
        ),
        (req.principal_filter.as_deref(), req.host_filter.as_deref()),
        (req.operation, req.permission_type),
    ) {
        Ok(f) => f,
        Err(why) => return fail(KafkaError::new(ResponseError::InvalidRequest, why)),
    };
    let acls = broker.authorizer.acls();
    let mut by_resource: BTreeMap<(ResourceType, &str, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for a in acls.acls.iter().filter(|a| filter.matches(a)) {
        by_resource
            .entry((a.resource_type, a.name.as_str(), a.pattern))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(a.principal.clone()))
                    .with_host(StrBytes::from_string(a.host.clone()))
                    .with_operation(a.operation.code())
                    .with_permission_type(a.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((t, name, p), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(t.code())
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_pattern_type(p.code())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |e: &KafkaError| {
        DeleteAclsFilterResult::default()
            .with_error_code(e.code())
            .with_error_message(e.message())
    };
    if let Some(e) = refusal {
        let results = req.filters.iter().map(|_| failed(&e)).collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let checked: Vec<Result<Filter, KafkaError>> = req
        .filters
        .iter()
        .map(|f| {
            Filter::of_codes(
                (
                    f.resource_type_filter,
                    f.resource_name_filter.as_deref(),
                    f.pattern_type_filter,
                ),
                (f.principal_filter.as_deref(), f.host_filter.as_deref()),
                (f.operation, f.permission_type),
            )
            .map_err(|why| KafkaError::new(ResponseError::InvalidRequest, why))
        })
        .collect();
    let valid: Vec<Filter> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let removed = broker.authorizer.delete(valid).await;
    if let Err(e) = &removed {
        tracing::error!(shard = broker.shard, "cannot delete ACLs: {e}");
    }
    let mut removed = removed.map(Vec::into_iter);
    let results = checked
        .iter()
        .map(|c| match (c, &mut removed) {
            (Err(e), _) => failed(e),
            (Ok(_), Err(e)) => failed(e),
            (Ok(_), Ok(each)) => {
                let acls: Vec<Acl> = each.next().unwrap_or_default();
                if !acls.is_empty() {
                    tracing::info!(shard = broker.shard, ?acls, "ACLs deleted");
                }
                DeleteAclsFilterResult::default()
                    .with_matching_acls(acls.iter().map(matching).collect())
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

fn matching(a: &Acl) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(a.resource_type.code())
        .with_resource_name(StrBytes::from_string(a.name.clone()))
        .with_pattern_type(a.pattern.code())
        .with_principal(StrBytes::from_string(a.principal.clone()))
        .with_host(StrBytes::from_string(a.host.clone()))
        .with_operation(a.operation.code())
        .with_permission_type(a.permission.code())
}
