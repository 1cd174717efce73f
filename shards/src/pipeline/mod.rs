//! The window pipeline: what replaces the Flink job. `spec` checks and compiles a
//! job, `records` reads stored Kafka batches, `avro` projects the fields a job needs
//! (`by_id` per writer schema id, from the schema registry),
//! `window` keeps the per-core state, `job` drives one job on one core.

pub mod avro;
pub mod by_id;
pub mod checkpoint;
mod error;
mod job;
pub mod json;
pub mod records;
pub mod spec;
pub mod window;

pub use error::PipelineError;
pub use job::{mesh, run, Checkpoints, CoreMail, JobContext, JobStats, Mail, MailboxStats};
