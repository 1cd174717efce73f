//! Errors of the storage crate. Every error names the file (and offset) it is about
//! and says what an operator can do.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An error of the per-core log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed on a file.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A device is full: nothing was acknowledged for the failed appends.
    #[error("no space left: {op} {path}: {source}; {}", no_space_advice(op))]
    NoSpace {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file in a data directory is not what it must be.
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    /// A setting is out of range or inconsistent.
    #[error("invalid storage setting: {0}")]
    Config(String),
    #[error("unknown partition id {0}")]
    UnknownPartition(u32),
    #[error("batch of {len} bytes exceeds batch_bytes_max = {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("batch must cover at least one record and hold at least one byte")]
    EmptyBatch,
    #[error("partition limit reached: partitions_max = {0} per core")]
    TooManyPartitions(usize),
    #[error("invalid partition name {0:?}: use 1-240 characters of [A-Za-z0-9._-], not starting with a dot")]
    BadPartitionName(String),
    /// A read asked for an offset the partition does not hold.
    #[error("partition {partition}: offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        partition: String,
        offset: u64,
        start: u64,
        end: u64,
    },
    /// The log is closing or closed.
    #[error("the log is shut down")]
    Closed,
    /// A shared failure reported to every append of one flush.
    #[error("{0}")]
    Shared(Arc<LogError>),
}

/// What an operator can do about a full device, by what was being written.
fn no_space_advice(op: &str) -> &'static str {
    if op.ends_with("journal segment") {
        "the journal ring is allocated whole at first start (journal_segment_bytes x journal_segments per core): free space on that device or lower those settings"
    } else {
        "free space on that device or lower retention; appends resume once the ledger can be written"
    }
}

impl LogError {
    /// Wraps an `io::Error` for a file; ENOSPC becomes [`LogError::NoSpace`].
    pub fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        let path = path.to_path_buf();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            LogError::NoSpace { op, path, source }
        } else {
            LogError::Io { op, path, source }
        }
    }

    pub fn corrupt(path: &Path, what: impl Into<String>) -> Self {
        LogError::Corrupt {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// True when the failure is a full device (retrying later may succeed).
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::NoSpace { .. } => true,
            LogError::Shared(inner) => inner.is_no_space(),
            _ => false,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// A file-system call of the `fs` module that failed: which call, on which path,
/// and the system's answer.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        FsError {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// The same failure, named for what the caller was doing.
    pub fn with_op(self, op: &'static str) -> Self {
        FsError { op, ..self }
    }

    /// True when the path was not there.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// The log's own form of a file-system failure: a full device becomes
/// [`LogError::NoSpace`], with its advice.
impl From<FsError> for LogError {
    fn from(e: FsError) -> Self {
        LogError::io(e.op, &e.path, e.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_device_is_explained_by_what_was_being_written() {
        let full = || io::Error::from_raw_os_error(libc::ENOSPC);
        let journal = LogError::io("allocating journal segment", Path::new("j"), full());
        assert!(journal.is_no_space());
        let text = journal.to_string();
        assert!(
            text.contains("journal_segments") && !text.contains("retention"),
            "{text}"
        );
        let ledger = LogError::io("allocating", Path::new("l"), full()).to_string();
        assert!(ledger.contains("retention"), "{ledger}");
        let fs = LogError::from(FsError::new("writing", Path::new("m"), full()));
        assert!(fs.is_no_space(), "{fs}");
    }
}
