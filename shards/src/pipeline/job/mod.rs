//! One job on one core: read the core's source partitions in offset order, decode,
//! route each record by key to the core that owns the key, keep window state, move
//! the watermark, fire windows into the sinks.
//!
//! keyBy: the owner of a key is `partition_owner(partition_for(key, P), cores)` —
//! the core that owns the partition Kafka's default partitioner gives the key — so
//! records a client partitioned by the job key never leave their core. Other records
//! go, batched, through a bounded SPSC mailbox per (job, from core, to core), followed
//! by the sender's watermark. A receiving task per mailbox applies them at once and
//! never waits, so two cores sending to each other cannot deadlock.
//!
//! Watermarks: per source partition, max event time − max_out_of_orderness; a core's
//! watermark is the minimum over its partitions and the watermarks that arrived from
//! the other cores, leaving out inputs idle for `idle_timeout` (all idle: the maximum,
//! so the last windows fire once the data stops). It never moves back.
//!
//! Checkpoints (aligned barriers): core 0 starts checkpoint `n` every
//! `checkpoint_interval` by sending barrier `n` into its mailboxes after the records
//! before it; a core that sees a barrier sends its own the same way. A core stops
//! reading its sources at its barrier, and a mailbox receiver that delivered barrier
//! `n` takes nothing more from that core until this core's part of `n` is written.
//! When every input has delivered `n` and the sinks have delivered every window fired
//! before it, the core writes its part (window state, source positions, watermarks,
//! output positions; `checkpoint.rs`) and tells core 0, which writes the manifest
//! when all parts are durable. On start, the job resumes from the newest complete
//! checkpoint and skips side-output records it already wrote after it.
//!
//! At a clean stop, core 0 takes one more checkpoint (after the one in progress, if
//! any) and the other cores keep taking part until it is complete, so a restart
//! replays only what was appended or read while that checkpoint was taken; a sink
//! that cannot deliver within `SHUTDOWN_CHECKPOINT_WAIT` abandons it, and the next
//! start replays from the checkpoint before.
//!
//! Never drops a record: undecodable ones go to `<job>.dlq` with the reason, late ones
//! to `<job>.late`; a full state or a failed side-output write stops the job with an
//! error that says so, and the log keeps everything from there.
//!
//! Rooms, each using only those after it (and none of them this file): `driver`,
//! the loop of named steps one core runs; `record`, one stored record into the
//! state or a mailbox; `mailbox`, records, watermarks and barriers between cores;
//! `state`, what the loop and the mailbox receivers share; `side_output`, late
//! events and dead letters written once; `watermark`, inputs combined into the
//! core's watermark; `align`, when a checkpoint starts and when this core's part
//! of it may be written; `context`, what the job gets from its core and its
//! counters. Nothing here blocks the core: every wait is on a notification
//! (appends, mailbox messages, sink deliveries, the stop) or on the next deadline
//! the loop knows of.

mod align;
mod context;
mod driver;
mod mailbox;
mod record;
mod side_output;
mod state;
mod watermark;

pub use context::{Checkpoints, JobContext, JobStats};
pub use mailbox::{mesh, CoreMail, Mail, MailboxStats};

use super::spec::Job;
use super::window::Layout;
use super::PipelineError;
use std::rc::Rc;

/// Runs the job on this core until the server stops; returns why it stopped early.
pub async fn run(
    job: Rc<Job>,
    layout: Rc<Layout>,
    ctx: JobContext,
    mail: CoreMail,
    stats: Rc<JobStats>,
) -> Result<(), PipelineError> {
    let res = match driver::JobCore::start(job.clone(), layout, ctx, mail, stats.clone()).await {
        Ok(core) => core.run().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        tracing::error!(job = %job.name, "job stopped: {e}; its input stays in the log");
        *stats.failed.borrow_mut() = Some(e.to_string());
    }
    res
}
