//! Tidewater's storage: the durable per-core log.
//!
//! Each core owns one [`ShardLog`]: a journal ring (write-ahead log with group commit
//! on preallocated O_DIRECT segments) and a ledger (per-partition segment files with a
//! sparse offset index, written behind the journal). The journal and the ledger take
//! separate directories so that they can sit on separate devices.
//!
//! This crate knows nothing of Kafka, topics or jobs: a partition is a name and an id,
//! a batch is opaque bytes covering `record_count` offsets. Everything here runs on
//! one glommio executor; no type is `Send` but the cross-core wake-ups in [`wait`].
//!
//! Every other file-system call of the workspace (small files written durably,
//! directory syncs, removals) goes through [`fs`], which keeps it off the core.
//!
//! On-disk formats: `docs/storage-format.md` in the repository.

pub mod checksum;
pub mod config;
pub mod error;
pub mod frame;
pub mod fs;
pub mod journal;
pub mod ledger;
pub mod log;
pub mod wait;

pub use config::{Durability, JournalAdopt, LogConfig};
pub use error::{FsError, LogError, Result};
pub use journal::{Damaged, Dropped};
pub use ledger::{Entry, PartitionLimits, Payload};
pub use log::{Appended, LogStats, Lost, RecoveryReport, Reserved, ShardLog, CLEAN_STOP_FILE};
