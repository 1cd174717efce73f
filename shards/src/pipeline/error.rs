//! Why a job stops on a core. Each error names what the job was doing and on what;
//! the job's input stays in the log, the error goes to one ERROR line and to the
//! job's `failed` state in the metrics.
//!
//! Per-record problems are not errors here: an undecodable record or an event time
//! that cannot be believed is a dead letter with its reason in words (`record.rs`).

use super::checkpoint::CheckpointError;
use tidewater_io::LogError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The log refused a read or an append.
    #[error("{what}: {source}")]
    Log {
        what: String,
        #[source]
        source: LogError,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint resumed from does not fit the job.
    #[error("checkpoint {id}: {reason}")]
    Restore { id: u64, reason: String },
    /// Another core's end of a mailbox is gone (that core stopped).
    #[error("core {0} stopped taking records")]
    PeerGone(usize),
    /// The window state reached `state_entries_max`; the text says what to change.
    #[error("{0}")]
    StateFull(String),
    #[error("cannot encode a record batch: {0}")]
    Encode(String),
    /// A side-output record for a partition another core owns (a routing bug).
    #[error("partition {0} is not on this core")]
    NotHere(u32),
    #[error("cannot write {what} to {topic}: {source}")]
    SideOutput {
        what: &'static str,
        topic: String,
        #[source]
        source: Box<PipelineError>,
    },
}

impl PipelineError {
    /// A log error while doing `what`.
    pub fn log(what: impl Into<String>) -> impl FnOnce(LogError) -> PipelineError {
        let what = what.into();
        move |source| PipelineError::Log { what, source }
    }
}
