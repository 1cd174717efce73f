//! Topic changes across cores: CreateTopics, DeleteTopics, the auto-creation
//! Metadata asks for, and a topic's own configs (CreateTopics, AlterConfigs). Core 0
//! coordinates, one change at a time; every core creates or deletes the partitions
//! it owns (`p % cores`) and puts configs in force on them; `topics.json` and
//! `topic_configs.json` record the result so it holds after a restart. A config is
//! recorded before any core applies it, so a crash in between leaves the record,
//! which every core applies at the next start.
//!
//! Creation is checked whole before anything is made (Kafka's name rules, the
//! partition count, room on every core: `partitions_max` each) and is all or
//! nothing: the topic is recorded as unfinished first, so a failure on any core, or
//! a crash, deletes the partitions already made, then or at the next start.
//! Deletion marks the topic `deleting` first, then every core takes it out of its
//! table (new requests get UNKNOWN_TOPIC_OR_PARTITION) and deletes its partitions
//! (appends already accepted finish first; log ids are never reused), then the
//! record goes; a crash in between leaves the mark, and every core finishes the
//! deletion at the next start. Topics the config declares or a job uses are
//! refused with POLICY_VIOLATION, saying why.
//!
//! Never: two changes at once, or a change that leaves a core out.

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::remote::{Reply, Request};
use crate::topic_config::{Change, TopicConfig};
use crate::topics_file;
use kafka_protocol::ResponseError;

/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Longest topic name. Kafka allows 249; a partition's directory adds its number,
/// and its temporary name a prefix and suffix, within a file name's 255 bytes.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;

/// Kafka's rules for a topic name, with our length limit and no leading dot (a
/// hidden directory).
pub fn check_name(name: &str) -> Result<(), KafkaError> {
    let legal = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-';
    if name.is_empty()
        || name.len() > TOPIC_NAME_BYTES_MAX
        || name.starts_with('.')
        || !name.bytes().all(legal)
    {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?}: 1 to {TOPIC_NAME_BYTES_MAX} characters of [a-zA-Z0-9._-], not starting with a dot"),
        ));
    }
    if name == crate::groups::OFFSETS_TOPIC {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} is reserved for the consumer groups' committed offsets"),
        ));
    }
    if name == tidewater_registry::SCHEMAS_TOPIC {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} is reserved for the schema registry's records"),
        ));
    }
    Ok(())
}

/// A new topic's name and partition count, checked on their own.
pub fn validate(name: &str, partitions: u32) -> Result<(), KafkaError> {
    check_name(name)?;
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err(KafkaError::new(
            ResponseError::InvalidPartitions,
            format!("{partitions} partitions: use 1 to {PARTITIONS_MAX}"),
        ));
    }
    Ok(())
}

/// Whether a topic could be made now, as this core sees it: it does not exist, and
/// every core has room for its share (CreateTopics with `validate_only`).
pub fn check_new(broker: &Broker, name: &str, partitions: u32) -> Result<(), KafkaError> {
    match broker.table().topic(name) {
        Some(_) => Err(exists(name)),
        None => check_room(broker, partitions),
    }
}

fn exists(name: &str) -> KafkaError {
    KafkaError::new(
        ResponseError::TopicAlreadyExists,
        format!("topic {name} exists"),
    )
}

/// Whether every core has room for its share of `partitions` new partitions.
fn check_room(broker: &Broker, partitions: u32) -> Result<(), KafkaError> {
    check_room_for(broker, 0..partitions)
}

/// Whether every core has room for its share of the new partitions `range`.
fn check_room_for(broker: &Broker, range: std::ops::Range<u32>) -> Result<(), KafkaError> {
    let partitions = range.end;
    let table = broker.table();
    let shards = table.shard_count();
    let max = broker.log.partitions_max();
    for core in 0..shards {
        let new = range
            .clone()
            .filter(|&p| tidewater_shards::partition_owner(p, shards) == core)
            .count();
        let held = table.owned_by(core).len();
        if held + new > max {
            return Err(KafkaError::new(
                ResponseError::PolicyViolation,
                format!(
                    "{partitions} partitions would put {} on core {core}; partitions_max is {max} per core",
                    held + new
                ),
            ));
        }
    }
    Ok(())
}

/// Creates a topic with its own `config` on every core (through core 0).
pub async fn create(
    broker: &Broker,
    name: &str,
    partitions: u32,
    config: TopicConfig,
) -> Result<(), KafkaError> {
    validate(name, partitions)?;
    if broker.shard == 0 {
        return coordinate_create(broker, name, partitions, config).await;
    }
    let req = Request::CreateTopic {
        name: name.to_string(),
        partitions,
        config,
    };
    ask(broker, 0, req).await
}

/// POLICY_VIOLATION for a topic the config declares or a job uses, saying why and
/// `what` cannot happen while it is.
pub fn unprotected(broker: &Broker, name: &str, what: &str) -> Result<(), KafkaError> {
    match broker.topics.protected.get(name) {
        Some(why) => Err(KafkaError::new(
            ResponseError::PolicyViolation,
            format!("topic {name} {why}; {what} while it is"),
        )),
        None => Ok(()),
    }
}

/// Whether a topic may grow to `to` partitions now, as this core sees it
/// (CreatePartitions, `validate_only` too).
pub fn check_growth(broker: &Broker, name: &str, to: u32) -> Result<(), KafkaError> {
    let Some(from) = broker.table().topic(name).map(|t| t.partitions) else {
        return Err(KafkaError::unknown_topic(name));
    };
    unprotected(broker, name, "its partition count cannot change")?;
    if to <= from || to > PARTITIONS_MAX {
        return Err(KafkaError::new(
            ResponseError::InvalidPartitions,
            format!("topic {name} has {from} partitions: ask for more, at most {PARTITIONS_MAX}"),
        ));
    }
    check_room_for(broker, from..to)
}

/// Gives a topic `to` partitions on every core (through core 0); new partition `p`
/// goes to core `p % cores`, as every partition does.
pub async fn grow(broker: &Broker, name: &str, to: u32) -> Result<(), KafkaError> {
    check_growth(broker, name, to)?;
    if broker.shard == 0 {
        return coordinate_grow(broker, name, to).await;
    }
    let req = Request::GrowTopic {
        name: name.to_string(),
        to,
    };
    ask(broker, 0, req).await
}

/// On core 0: the new count recorded (a start creates partitions a crash left
/// unmade), every core's new partitions; all or nothing.
pub async fn coordinate_grow(broker: &Broker, name: &str, to: u32) -> Result<(), KafkaError> {
    let _one_at_a_time = one_topic_change(broker).await?;
    check_growth(broker, name, to)?;
    let from = broker.table().topic(name).map_or(0, |t| t.partitions);
    let file = broker.topics.file.as_deref();
    if let Some(file) = file {
        topics_file::record(file, name, to, false).await?;
    }
    let grown = on_every_core(broker, broker.grow_topic(name, to), || {
        Request::AddPartitions {
            name: name.to_string(),
            to,
        }
    })
    .await;
    if let Err(failed) = grown {
        tracing::warn!(
            topic = name,
            from,
            to,
            "adding partitions failed, undoing it: {failed}"
        );
        on_every_core(broker, broker.shrink_topic(name, from), || {
            Request::RemovePartitions {
                name: name.to_string(),
                to: from,
            }
        })
        .await?;
        if let Some(file) = file {
            topics_file::record(file, name, from, false).await?;
        }
        return Err(failed);
    }
    tracing::info!(topic = name, from, to, "partitions added");
    Ok(())
}

/// Puts a topic's new configs in force on every core (through core 0).
pub async fn alter_config(broker: &Broker, name: &str, change: Change) -> Result<(), KafkaError> {
    if broker.shard == 0 {
        return coordinate_alter(broker, name, change).await;
    }
    let req = Request::AlterTopicConfig {
        name: name.to_string(),
        change,
    };
    ask(broker, 0, req).await
}

/// On core 0: the new configs (an edit applied to those in force) recorded, then
/// in force on every core.
pub async fn coordinate_alter(
    broker: &Broker,
    name: &str,
    change: Change,
) -> Result<(), KafkaError> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_none() {
        return Err(KafkaError::unknown_topic(name));
    }
    let config = match change {
        Change::Replace(c) => c,
        Change::Edit(ops) => {
            let mut c = broker.topic_config(name);
            c.edit(&ops, &broker.defaults)?;
            c
        }
    };
    record_config(broker, name, Some(&config)).await?;
    let apply = async { broker.apply_topic_config(name, config.clone()) };
    on_every_core(broker, apply, || Request::SetTopicConfig {
        name: name.to_string(),
        config: config.clone(),
    })
    .await?;
    tracing::info!(topic = name, ?config, "topic configs changed");
    Ok(())
}

/// Records a topic's configs in `topic_configs.json` (`None`, or empty: none).
async fn record_config(
    broker: &Broker,
    name: &str,
    config: Option<&TopicConfig>,
) -> Result<(), KafkaError> {
    let Some(file) = broker.topics.configs_file.as_deref() else {
        return Ok(());
    };
    let mut all = broker.topic_configs();
    match config {
        Some(c) if !c.is_empty() => {
            all.insert(name.to_string(), c.clone());
        }
        _ => {
            all.remove(name);
        }
    }
    topics_file::write_configs(file, &all).await
}

/// Deletes a topic on every core (through core 0).
pub async fn delete(broker: &Broker, name: &str) -> Result<(), KafkaError> {
    if broker.shard == 0 {
        return coordinate_delete(broker, name).await;
    }
    let req = Request::DeleteTopic {
        name: name.to_string(),
    };
    ask(broker, 0, req).await
}

/// Has core `core` run a step of a topic change and waits for its answer.
async fn ask(broker: &Broker, core: u32, req: Request) -> Result<(), KafkaError> {
    match broker.control().map(|c| c.call(core, req)) {
        Some(call) => match call.await {
            Some(Reply::Admin(r)) => r,
            _ => Err(KafkaError::storage(format!("core {core} is not answering"))),
        },
        None => Err(KafkaError::storage("the cores are not connected yet")),
    }
}

/// On core 0: the one topic creation or deletion under way.
async fn one_topic_change(broker: &Broker) -> Result<glommio::sync::Permit<'_>, KafkaError> {
    broker
        .topic_changes()
        .acquire_permit(1)
        .await
        .map_err(|e| KafkaError::storage(e.to_string()))
}

/// On core 0: a topic change on every core in turn, `here` on this one and
/// `request` asked of the others; stops at the first core that fails.
async fn on_every_core(
    broker: &Broker,
    here: impl std::future::Future<Output = Result<(), KafkaError>>,
    request: impl Fn() -> Request,
) -> Result<(), KafkaError> {
    let mut here = Some(here);
    // Read apart from the loop: a borrow in its head would last across the awaits.
    let shards = broker.table().shard_count();
    for core in 0..shards {
        if core == broker.shard {
            let here = here.take().expect("this core comes once");
            here.await?;
        } else {
            ask(broker, core, request()).await?;
        }
    }
    Ok(())
}

/// On core 0: one creation at a time; the topic recorded as unfinished, every
/// core's partitions, then the record made whole. A core that fails undoes its own
/// part; then every core's part is deleted and the record goes.
pub async fn coordinate_create(
    broker: &Broker,
    name: &str,
    partitions: u32,
    config: TopicConfig,
) -> Result<(), KafkaError> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_some() {
        return Err(exists(name));
    }
    check_room(broker, partitions)?;
    let file = broker.topics.file.as_deref();
    if let Some(file) = file {
        topics_file::record(file, name, partitions, true).await?;
    }
    record_config(broker, name, Some(&config)).await?;
    let made = on_every_core(broker, broker.add_topic(name, partitions, &config), || {
        Request::AddTopic {
            name: name.to_string(),
            partitions,
            config: config.clone(),
        }
    })
    .await;
    if let Err(failed) = made {
        tracing::warn!(
            topic = name,
            partitions,
            "topic creation failed, undoing it: {failed}"
        );
        let undone = on_every_core(broker, broker.remove_topic(name), || Request::RemoveTopic {
            name: name.to_string(),
        })
        .await;
        // Left marked when the undo failed: the next start finishes it.
        if let (Ok(()), Some(file)) = (undone, file) {
            topics_file::forget(file, name).await?;
            record_config(broker, name, None).await?;
        }
        return Err(failed);
    }
    if let Some(file) = file {
        topics_file::record(file, name, partitions, false).await?;
    }
    tracing::info!(topic = name, partitions, "topic created");
    Ok(())
}

/// On core 0: the mark, every core's partitions, then the record goes.
pub async fn coordinate_delete(broker: &Broker, name: &str) -> Result<(), KafkaError> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_none() {
        return Err(KafkaError::unknown_topic(name));
    }
    unprotected(broker, name, "it cannot be deleted")?;
    let file = broker.topics.file.as_deref();
    if let Some(file) = file {
        topics_file::mark_deleting(file, name).await?;
    }
    on_every_core(broker, broker.remove_topic(name), || Request::RemoveTopic {
        name: name.to_string(),
    })
    .await?;
    if let Some(file) = file {
        topics_file::forget(file, name).await?;
    }
    record_config(broker, name, None).await?;
    tracing::info!(topic = name, "topic deleted");
    Ok(())
}
