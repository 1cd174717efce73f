//! CreateTopics, and the auto-creation Metadata asks for: core 0 coordinates, one
//! topic at a time; every core creates the partitions it owns (`p % cores`); the
//! topic is then recorded in the data directory (`topics.json`) so it exists after a
//! restart. Replication factor is 1 (one machine); per-topic configs and manual
//! replica assignments are refused with their error codes rather than ignored.

use super::{code, forward, Broker};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use std::path::Path;

/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;

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
            Err((
                code::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {}: one machine keeps one copy (use 1)",
                    t.replication_factor
                ),
            ))
        } else if !t.assignments.is_empty() {
            Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                "partitions are placed by the server (partition p on core p % cores)".to_string(),
            ))
        } else if !t.configs.is_empty() {
            Err((
                code::INVALID_CONFIG,
                "per-topic configs are not supported; retention and limits are server settings"
                    .to_string(),
            ))
        } else {
            validate(name, partitions)
        };
        let res = match checked {
            Err(e) => Err(e),
            Ok(()) if req.validate_only => match broker.table().topic(name) {
                Some(_) => Err((code::TOPIC_ALREADY_EXISTS, format!("topic {name} exists"))),
                None => Ok(()),
            },
            Ok(()) => create(broker, name, partitions).await,
        };
        results.push(match res {
            Ok(()) => r
                .with_num_partitions(partitions as i32)
                .with_replication_factor(1),
            Err((code, why)) => {
                tracing::info!(topic = name, code, "topic not created: {why}");
                r.with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(why)))
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn validate(name: &str, partitions: u32) -> Result<(), (i16, String)> {
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err((
            code::INVALID_PARTITIONS,
            format!("{partitions} partitions: use 1 to {PARTITIONS_MAX}"),
        ));
    }
    let probe = tidewater_shards::partition_name(name, partitions - 1);
    if !tidewater_io::ledger::valid_partition_name(&probe) {
        return Err((
            code::INVALID_TOPIC_EXCEPTION,
            format!(
                "topic name {name:?}: 1-200 characters of [A-Za-z0-9._-], not starting with a dot"
            ),
        ));
    }
    Ok(())
}

/// Creates a topic on every core (through core 0).
pub async fn create(broker: &Broker, name: &str, partitions: u32) -> Result<(), (i16, String)> {
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
pub async fn ask(broker: &Broker, core: u32, req: forward::Request) -> Result<(), (i16, String)> {
    match broker.control().map(|c| c.call(core, req)) {
        Some(call) => match call.await {
            Some(forward::Reply::Admin(r)) => r,
            _ => Err((
                code::KAFKA_STORAGE_ERROR,
                format!("core {core} is not answering"),
            )),
        },
        None => Err((
            code::KAFKA_STORAGE_ERROR,
            "the cores are not connected yet".into(),
        )),
    }
}

/// On core 0: the one topic creation or deletion under way.
pub async fn one_topic_change(broker: &Broker) -> Result<glommio::sync::Permit<'_>, (i16, String)> {
    broker
        .topic_changes
        .acquire_permit(1)
        .await
        .map_err(|e| (code::KAFKA_STORAGE_ERROR, e.to_string()))
}

/// On core 0: a topic change on every core in turn, `here` on this one and
/// `request` asked of the others; stops at the first core that fails.
pub async fn on_every_core(
    broker: &Broker,
    here: impl std::future::Future<Output = Result<(), String>>,
    request: impl Fn() -> forward::Request,
) -> Result<(), (i16, String)> {
    let mut here = Some(here);
    // Read apart from the loop: a borrow in its head would last across the awaits.
    let shards = broker.table().shard_count();
    for core in 0..shards {
        if core == broker.shard {
            let here = here.take().expect("this core comes once");
            here.await.map_err(|e| (code::KAFKA_STORAGE_ERROR, e))?;
        } else {
            ask(broker, core, request()).await?;
        }
    }
    Ok(())
}

/// On core 0: one creation at a time, every core's partitions, then the record.
pub async fn coordinate(broker: &Broker, name: &str, partitions: u32) -> Result<(), (i16, String)> {
    let _one_at_a_time = one_topic_change(broker).await?;
    if broker.table().topic(name).is_some() {
        return Err((code::TOPIC_ALREADY_EXISTS, format!("topic {name} exists")));
    }
    let here = async { broker.add_topic(name, partitions) };
    on_every_core(broker, here, || forward::Request::AddTopic {
        name: name.to_string(),
        partitions,
    })
    .await?;
    if let Some(file) = &broker.topics.file {
        record(file, name, partitions).map_err(|e| (code::KAFKA_STORAGE_ERROR, e))?;
    }
    tracing::info!(topic = name, partitions, "topic created");
    Ok(())
}

/// A topic created at run time, as `topics.json` records it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub partitions: u32,
    /// A DeleteTopics was under way: every core deletes its partitions at start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// The topics recorded in `file` (none when it does not exist).
pub fn recorded(file: &Path) -> Result<Vec<Recorded>, String> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a topics file: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Adds a topic to `file` (in place of a deleted one by that name, whose partitions
/// are gone by now).
fn record(file: &Path, name: &str, partitions: u32) -> Result<(), String> {
    let mut all = recorded(file)?;
    all.retain(|t| t.name != name);
    all.push(Recorded {
        name: name.to_string(),
        partitions,
        deleting: false,
    });
    rewrite(file, &all)
}

/// Writes `file` whole: under a temporary name, synced, renamed.
pub fn rewrite(file: &Path, all: &[Recorded]) -> Result<(), String> {
    let text = serde_json::to_string_pretty(all).map_err(|e| e.to_string())?;
    crate::durable::write_whole(file, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}
