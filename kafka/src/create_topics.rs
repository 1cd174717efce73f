//! CreateTopics, and the auto-creation Metadata asks for: core 0 coordinates, one
//! topic at a time; every core creates the partitions it owns (`p % cores`); the
//! topic is then recorded in the data directory (`topics.json`) so it exists after a
//! restart. Replication factor is 1 (one machine); per-topic configs and manual
//! replica assignments are refused with their error codes rather than ignored.
//!
//! A request is checked whole before anything is made: Kafka's name rules, the
//! partition count, and room on every core (`partitions_max` each). Creation is all
//! or nothing: the topic is recorded as unfinished first (the mark an interrupted
//! DeleteTopics uses), so a failure on any core, or a crash, deletes the partitions
//! already made, then or at the next start.

use super::{forward, Broker, KafkaError};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;
use std::path::Path;

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
    Ok(())
}

pub async fn handle(broker: &Broker, req: &CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str();
        let r = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let partitions = if t.num_partitions == -1 {
            broker.topics.default_partitions
        } else {
            t.num_partitions.max(0) as u32
        };
        let checked = if t.replication_factor != -1 && t.replication_factor != 1 {
            Err(KafkaError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {}: one machine keeps one copy (use 1)",
                    t.replication_factor
                ),
            ))
        } else if !t.assignments.is_empty() {
            Err(KafkaError::new(
                ResponseError::InvalidReplicaAssignment,
                "partitions are placed by the server (partition p on core p % cores)",
            ))
        } else if !t.configs.is_empty() {
            Err(KafkaError::new(
                ResponseError::InvalidConfig,
                "per-topic configs are not supported; retention and limits are server settings",
            ))
        } else {
            validate(name, partitions)
        };
        let res = match checked {
            Err(e) => Err(e),
            Ok(()) if req.validate_only => match broker.table().topic(name) {
                Some(_) => Err(exists(name)),
                None => check_room(broker, partitions),
            },
            Ok(()) => create(broker, name, partitions).await,
        };
        results.push(match res {
            Ok(()) => r
                .with_num_partitions(partitions as i32)
                .with_replication_factor(1),
            Err(e) => {
                tracing::info!(topic = name, code = e.code(), "topic not created: {e}");
                r.with_error_code(e.code()).with_error_message(e.message())
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn exists(name: &str) -> KafkaError {
    KafkaError::new(
        ResponseError::TopicAlreadyExists,
        format!("topic {name} exists"),
    )
}

fn validate(name: &str, partitions: u32) -> Result<(), KafkaError> {
    check_name(name)?;
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err(KafkaError::new(
            ResponseError::InvalidPartitions,
            format!("{partitions} partitions: use 1 to {PARTITIONS_MAX}"),
        ));
    }
    Ok(())
}

/// Whether every core has room for its share of `partitions` new partitions.
fn check_room(broker: &Broker, partitions: u32) -> Result<(), KafkaError> {
    let table = broker.table();
    let shards = table.shard_count();
    let max = broker.log.partitions_max();
    for core in 0..shards {
        let new = (0..partitions)
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

/// Creates a topic on every core (through core 0).
pub async fn create(broker: &Broker, name: &str, partitions: u32) -> Result<(), KafkaError> {
    validate(name, partitions)?;
    if broker.shard == 0 {
        return coordinate(broker, name, partitions).await;
    }
    let req = forward::Request::CreateTopic {
        name: name.to_string(),
        partitions,
    };
    ask(broker, 0, req).await
}

/// Has core `core` run an admin request and waits for its answer.
pub async fn ask(broker: &Broker, core: u32, req: forward::Request) -> Result<(), KafkaError> {
    match broker.control().map(|c| c.call(core, req)) {
        Some(call) => match call.await {
            Some(forward::Reply::Admin(r)) => r,
            _ => Err(KafkaError::storage(format!("core {core} is not answering"))),
        },
        None => Err(KafkaError::storage("the cores are not connected yet")),
    }
}

/// On core 0: the one topic creation or deletion under way.
pub async fn one_topic_change(broker: &Broker) -> Result<glommio::sync::Permit<'_>, KafkaError> {
    broker
        .topic_changes
        .acquire_permit(1)
        .await
        .map_err(|e| KafkaError::storage(e.to_string()))
}

/// On core 0: a topic change on every core in turn, `here` on this one and
/// `request` asked of the others; stops at the first core that fails.
pub async fn on_every_core(
    broker: &Broker,
    here: impl std::future::Future<Output = Result<(), KafkaError>>,
    request: impl Fn() -> forward::Request,
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
pub async fn coordinate(broker: &Broker, name: &str, partitions: u32) -> Result<(), KafkaError> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_some() {
        return Err(exists(name));
    }
    check_room(broker, partitions)?;
    let file = broker.topics.file.as_deref();
    if let Some(file) = file {
        record(file, name, partitions, true)?;
    }
    let made = on_every_core(broker, broker.add_topic(name, partitions), || {
        forward::Request::AddTopic {
            name: name.to_string(),
            partitions,
        }
    })
    .await;
    if let Err(failed) = made {
        tracing::warn!(
            topic = name,
            partitions,
            "topic creation failed, undoing it: {failed}"
        );
        let undone = on_every_core(broker, broker.remove_topic(name), || {
            forward::Request::RemoveTopic {
                name: name.to_string(),
            }
        })
        .await;
        // Left marked when the undo failed: the next start finishes it.
        if let (Ok(()), Some(file)) = (undone, file) {
            let mut all = recorded(file)?;
            all.retain(|t| t.name != name);
            rewrite(file, &all)?;
        }
        return Err(failed);
    }
    if let Some(file) = file {
        record(file, name, partitions, false)?;
    }
    tracing::info!(topic = name, partitions, "topic created");
    Ok(())
}

/// A topic created at run time, as `topics.json` records it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub partitions: u32,
    /// A DeleteTopics was under way, or a CreateTopics had not finished on every
    /// core: either way every core deletes its partitions at start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// The topics recorded in `file` (none when it does not exist).
pub fn recorded(file: &Path) -> Result<Vec<Recorded>, KafkaError> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            KafkaError::storage(format!("{}: not a topics file: {e}", file.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(KafkaError::storage(format!(
            "cannot read {}: {e}",
            file.display()
        ))),
    }
}

/// Adds a topic to `file` (in place of a deleted one by that name, whose partitions
/// are gone by now); `unfinished`: marked for deletion at start until it is whole.
fn record(file: &Path, name: &str, partitions: u32, unfinished: bool) -> Result<(), KafkaError> {
    let mut all = recorded(file)?;
    all.retain(|t| t.name != name);
    all.push(Recorded {
        name: name.to_string(),
        partitions,
        deleting: unfinished,
    });
    rewrite(file, &all)
}

/// Writes `file` whole: under a temporary name, synced, renamed.
pub fn rewrite(file: &Path, all: &[Recorded]) -> Result<(), KafkaError> {
    let text = serde_json::to_string_pretty(all).map_err(|e| KafkaError::storage(e.to_string()))?;
    tidewater_io::fs::blocking::write_durable(file, text.as_bytes())
        .map_err(|e| KafkaError::storage(format!("cannot write {}: {e}", file.display())))
}
