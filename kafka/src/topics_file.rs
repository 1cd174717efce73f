//! `topics.json`: the topics created at run time, so they exist after a restart,
//! each with the mark (`deleting`) an unfinished creation or deletion leaves for the
//! next start. Read and written whole; a write goes under a temporary name, synced,
//! renamed, the directory synced.
//!
//! Only core 0 writes it, one topic change at a time (`topic_changes.rs`).

use crate::error::KafkaError;
use std::path::Path;

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
pub fn record(
    file: &Path,
    name: &str,
    partitions: u32,
    unfinished: bool,
) -> Result<(), KafkaError> {
    let mut all = recorded(file)?;
    all.retain(|t| t.name != name);
    all.push(Recorded {
        name: name.to_string(),
        partitions,
        deleting: unfinished,
    });
    rewrite(file, &all)
}

/// Marks a topic in `file` for deletion at the next start.
pub fn mark_deleting(file: &Path, name: &str) -> Result<(), KafkaError> {
    let mut all = recorded(file)?;
    for t in all.iter_mut().filter(|t| t.name == name) {
        t.deleting = true;
    }
    rewrite(file, &all)
}

/// Takes a topic out of `file`.
pub fn forget(file: &Path, name: &str) -> Result<(), KafkaError> {
    let mut all = recorded(file)?;
    all.retain(|t| t.name != name);
    rewrite(file, &all)
}

/// Writes `file` whole: under a temporary name, synced, renamed.
pub fn rewrite(file: &Path, all: &[Recorded]) -> Result<(), KafkaError> {
    let text = serde_json::to_string_pretty(all).map_err(|e| KafkaError::storage(e.to_string()))?;
    tidewater_io::fs::blocking::write_durable(file, text.as_bytes())
        .map_err(|e| KafkaError::storage(format!("cannot write {}: {e}", file.display())))
}
