//! DescribeClientQuotas and AlterClientQuotas (KIP-546): the client quotas,
//! managed with Kafka's own tools (`kafka-configs --entity-type users|clients`).
//! Who may call them is the caller's judgement (`refusal`).

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::quota::{Change, Entity, Kind, Name};
use kafka_protocol::messages::{
    alter_client_quotas_response as alter_resp, describe_client_quotas_response as describe_resp,
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const USER: &str = "user";
const CLIENT_ID: &str = "client-id";

fn invalid(why: impl Into<String>) -> KafkaError {
    KafkaError::new(ResponseError::InvalidRequest, why)
}

/// What a component of an entity may be: its type is `user` or `client-id`.
fn component(entity_type: &str, name: Option<&StrBytes>) -> Result<(bool, Name), KafkaError> {
    let is_user = match entity_type {
        USER => true,
        CLIENT_ID => false,
        "ip" => {
            return Err(invalid(
                "ip quotas are connection_creation_rate_per_ip in the server's config",
            ))
        }
        other => {
            return Err(invalid(format!(
                "entity type {other:?}: use user or client-id"
            )))
        }
    };
    let name = match name {
        None => Name::Default,
        Some(n) => Name::Named(n.to_string()),
    };
    Ok((is_user, name))
}

pub fn describe(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let fail = |e: KafkaError| {
        DescribeClientQuotasResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message())
    };
    if let Some(e) = refusal {
        return fail(e);
    }
    // Each filter component: (is it the user, None: any name of the type,
    // Some(name)).
    let mut filters: Vec<(bool, Option<Name>)> = Vec::new();
    for c in &req.components {
        let is_user = match component(&c.entity_type, None) {
            Ok((u, _)) => u,
            Err(e) => return fail(e),
        };
        let name = match (c.match_type, &c._match) {
            (0, Some(m)) => Some(Name::Named(m.to_string())),
            (1, None) => Some(Name::Default),
            (2, None) => None,
            _ => {
                return fail(invalid(
                    "a match is EXACT with a name, or DEFAULT or SPECIFIED without one",
                ))
            }
        };
        if filters.iter().any(|(u, _)| *u == is_user) {
            return fail(invalid(format!(
                "entity type {} given twice",
                c.entity_type.as_str()
            )));
        }
        filters.push((is_user, name));
    }
    let all = broker.quotas.all();
    let entries = all
        .entries
        .iter()
        .filter(|(e, _)| {
            let part = |is_user: bool| if is_user { &e.user } else { &e.client_id };
            let matches = filters
                .iter()
                .all(|(is_user, name)| match (part(*is_user), name) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(have), Some(want)) => have == want,
                });
            // Strict: the entity has no part the filter does not name.
            let covered =
                |is_user| part(is_user).is_none() || filters.iter().any(|(u, _)| *u == is_user);
            matches && (!req.strict || (covered(true) && covered(false)))
        })
        .map(|(e, limits)| {
            let mut entity = Vec::new();
            for (t, part) in [(USER, &e.user), (CLIENT_ID, &e.client_id)] {
                if let Some(n) = part {
                    let name = match n {
                        Name::Default => None,
                        Name::Named(n) => Some(StrBytes::from_string(n.clone())),
                    };
                    entity.push(
                        describe_resp::EntityData::default()
                            .with_entity_type(StrBytes::from_static_str(t))
                            .with_entity_name(name),
                    );
                }
            }
            let values = Kind::ALL
                .iter()
                .filter_map(|k| {
                    limits.get(*k).map(|v| {
                        describe_resp::ValueData::default()
                            .with_key(StrBytes::from_static_str(k.key()))
                            .with_value(v)
                    })
                })
                .collect();
            describe_resp::EntryData::default()
                .with_entity(entity)
                .with_values(values)
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

pub async fn alter(
    broker: &Broker,
    refusal: Option<KafkaError>,
    req: &AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let checked: Vec<Result<Change, KafkaError>> = req
        .entries
        .iter()
        .map(|e| {
            if let Some(r) = &refusal {
                return Err(r.clone());
            }
            let mut entity = Entity {
                user: None,
                client_id: None,
            };
            for c in &e.entity {
                let (is_user, name) = component(&c.entity_type, c.entity_name.as_ref())?;
                let slot = if is_user {
                    &mut entity.user
                } else {
                    &mut entity.client_id
                };
                if slot.replace(name).is_some() {
                    return Err(invalid(format!("entity type {} given twice", c.entity_type.as_str())));
                }
            }
            if entity.user.is_none() && entity.client_id.is_none() {
                return Err(invalid("an entity names a user, a client id, or both"));
            }
            let ops = e
                .ops
                .iter()
                .map(|op| {
                    let kind = Kind::of_key(&op.key).ok_or_else(|| {
                        invalid(format!(
                            "quota {:?}: use producer_byte_rate, consumer_byte_rate or request_percentage",
                            op.key.as_str()
                        ))
                    })?;
                    if op.remove {
                        return Ok((kind, None));
                    }
                    // Byte rates are whole bytes per second (a LONG in Kafka); a
                    // percentage may have a fraction. 0 stops the client.
                    let whole = kind == Kind::Request || op.value.fract() == 0.0;
                    if !(op.value.is_finite() && op.value >= 0.0 && whole) {
                        return Err(invalid(format!(
                            "{} must be a non-negative number{}",
                            kind.key(),
                            if kind == Kind::Request { "" } else { " of whole bytes" }
                        )));
                    }
                    Ok((kind, Some(op.value)))
                })
                .collect::<Result<Vec<_>, KafkaError>>()?;
            Ok((entity, ops))
        })
        .collect();
    let valid: Vec<_> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let stored = if req.validate_only || valid.is_empty() {
        Ok(())
    } else {
        broker.quotas.alter(valid.clone()).await
    };
    match &stored {
        Ok(()) if !req.validate_only && !valid.is_empty() => {
            tracing::info!(shard = broker.shard, changes = ?valid, "client quotas changed")
        }
        Ok(()) => {}
        Err(e) => tracing::error!(shard = broker.shard, "cannot change client quotas: {e}"),
    }
    let entries = req
        .entries
        .iter()
        .zip(&checked)
        .map(|(e, c)| {
            let entity = e
                .entity
                .iter()
                .map(|c| {
                    alter_resp::EntityData::default()
                        .with_entity_type(c.entity_type.clone())
                        .with_entity_name(c.entity_name.clone())
                })
                .collect();
            let error = match c {
                Err(e) => Some(e),
                Ok(_) => stored.as_ref().err(),
            };
            let entry = alter_resp::EntryData::default().with_entity(entity);
            match error {
                None => entry,
                Some(e) => entry
                    .with_error_code(e.code())
                    .with_error_message(e.message()),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
