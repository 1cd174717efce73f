//! `topics.json`: the topics created at run time, so they exist after a restart,
//! each with the mark (`deleting`) an unfinished creation or deletion leaves for the
//! next start; and `topic_configs.json`: every topic's own configs (declared topics'
//! too), by topic. Read and written whole; a write goes under a temporary name, synced,
//! renamed, the directory synced.
//!
//! Every call awaits `tidewater_io::fs`, off the core, but [`read_at_start`], which
//! runs before any core serves. Only core 0 writes the file, one topic change at a
//! time (`topic_changes.rs`), or at start before it serves.

use crate::error::KafkaError;
use crate::topic_config::TopicConfig;
use std::collections::HashMap;
use std::path::Path;
use tidewater_io::fs;

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
pub async fn recorded(file: &Path) -> Result<Vec<Recorded>, KafkaError> {
    parse(file, fs::read_to_string(file).await)
}

/// [`recorded`], blocking: for start-up, before any executor runs.
pub fn read_at_start(file: &Path) -> Result<Vec<Recorded>, KafkaError> {
    parse(file, fs::blocking::read_to_string(file))
}

fn parse(file: &Path, read: Result<String, fs::FsError>) -> Result<Vec<Recorded>, KafkaError> {
    match read {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            KafkaError::storage(format!("{}: not a topics file: {e}", file.display()))
        }),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(KafkaError::storage(format!(
            "cannot read {}: {}",
            file.display(),
            e.source
        ))),
    }
}

/// Adds a topic to `file` (in place of a deleted one by that name, whose partitions
/// are gone by now); `unfinished`: marked for deletion at start until it is whole.
pub async fn record(
    file: &Path,
    name: &str,
    partitions: u32,
    unfinished: bool,
) -> Result<(), KafkaError> {
    let mut all = recorded(file).await?;
    all.retain(|t| t.name != name);
    all.push(Recorded {
        name: name.to_string(),
        partitions,
        deleting: unfinished,
    });
    rewrite(file, &all).await
}

/// Marks a topic in `file` for deletion at the next start.
pub async fn mark_deleting(file: &Path, name: &str) -> Result<(), KafkaError> {
    let mut all = recorded(file).await?;
    for t in all.iter_mut().filter(|t| t.name == name) {
        t.deleting = true;
    }
    rewrite(file, &all).await
}

/// Takes a topic out of `file`.
pub async fn forget(file: &Path, name: &str) -> Result<(), KafkaError> {
    let mut all = recorded(file).await?;
    all.retain(|t| t.name != name);
    rewrite(file, &all).await
}

/// Takes every topic marked for deletion out of `file`, once every core has
/// deleted their partitions at start.
pub async fn forget_deleted(file: &Path) -> Result<(), KafkaError> {
    let mut all = recorded(file).await?;
    all.retain(|t| !t.deleting);
    rewrite(file, &all).await
}

/// Writes `file` whole: under a temporary name, synced, renamed.
async fn rewrite(file: &Path, all: &[Recorded]) -> Result<(), KafkaError> {
    let text = serde_json::to_string_pretty(all).map_err(|e| KafkaError::storage(e.to_string()))?;
    fs::write_durable(file, text.into_bytes())
        .await
        .map_err(|e| KafkaError::storage(format!("cannot write {}: {e}", file.display())))
}

/// The topics' own configs recorded in `file` (none when it does not exist),
/// blocking: for start-up, before any executor runs.
pub fn configs_at_start(file: &Path) -> Result<HashMap<String, TopicConfig>, KafkaError> {
    match fs::blocking::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            KafkaError::storage(format!("{}: not a topic configs file: {e}", file.display()))
        }),
        Err(e) if e.is_not_found() => Ok(HashMap::new()),
        Err(e) => Err(KafkaError::storage(format!(
            "cannot read {}: {}",
            file.display(),
            e.source
        ))),
    }
}

/// Writes every topic's own configs to `file` whole (temporary name, synced,
/// renamed).
pub async fn write_configs(
    file: &Path,
    all: &HashMap<String, TopicConfig>,
) -> Result<(), KafkaError> {
    let sorted: std::collections::BTreeMap<&String, &TopicConfig> = all.iter().collect();
    let text =
        serde_json::to_string_pretty(&sorted).map_err(|e| KafkaError::storage(e.to_string()))?;
    fs::write_durable(file, text.into_bytes())
        .await
        .map_err(|e| KafkaError::storage(format!("cannot write {}: {e}", file.display())))
}
