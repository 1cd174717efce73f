//! Side outputs: late events to `<job>.late` (to their key group's partition) and
//! dead letters to `<job>.dlq` (to their source partition's), each record once. A
//! record names its source (`tidewater.source: topic/partition/offset`); after a
//! restart, records already written after the checkpoint are not written again.
//!
//! Owns the dead letters waiting, what was written after the checkpoint, and the
//! appends; never decides what is late or undecodable.

use crate::partitioner;
use crate::pipeline::checkpoint::{self, ArchivedCoreSnapshot};
use crate::pipeline::spec::Job;
use crate::pipeline::PipelineError;
use crate::sink::topic::{self, OutRecord};
use std::collections::{BTreeMap, HashSet};
use tidewater_io::ShardLog;

/// The header naming a side-output record's source: `topic/partition/offset`.
pub(super) const SOURCE_HEADER: &str = "tidewater.source";

/// One side output: its name in a checkpoint, its partitions on this core, and
/// the sources of the records written after the checkpoint resumed from.
struct Output {
    /// "late events" or "dead letters", for errors.
    what: &'static str,
    name: String,
    /// Log id by Kafka index (`None`: not on this core).
    ids: Vec<Option<u32>>,
    topic: String,
    seen: HashSet<Vec<u8>>,
}

impl Output {
    async fn open(
        log: &ShardLog,
        (what, topic): (&'static str, String),
        ids: &[Option<u32>],
        snap: Option<&ArchivedCoreSnapshot>,
    ) -> Result<Output, PipelineError> {
        let name = format!("topic:{topic}");
        let mut seen = HashSet::new();
        for (p, id) in owned(ids) {
            let from = snap.map_or(0, |s| {
                s.outputs
                    .iter()
                    .find(|o| o.name.as_str() == name && o.partition.to_native() == p)
                    .map_or(0, |o| o.end.to_native())
            });
            seen.extend(sources_written(log, id, from).await?);
        }
        Ok(Output {
            what,
            name,
            ids: ids.to_vec(),
            topic,
            seen,
        })
    }

    /// Appends `records` (Kafka index, record) but those written before a restart.
    async fn write(
        &mut self,
        log: &ShardLog,
        mut records: Vec<(u32, OutRecord)>,
    ) -> Result<(), PipelineError> {
        not_again(&mut records, &mut self.seen);
        append(log, &self.ids, records)
            .await
            .map_err(|e| PipelineError::SideOutput {
                what: self.what,
                topic: self.topic.clone(),
                source: Box::new(e),
            })
    }

    fn positions(&self, log: &ShardLog, out: &mut Vec<checkpoint::OutputSnap>) {
        for (p, id) in owned(&self.ids) {
            out.push(checkpoint::OutputSnap {
                name: self.name.clone(),
                partition: p,
                end: log.high_watermark(id).unwrap_or(0),
            });
        }
    }
}

/// A job's two side outputs on one core.
pub(super) struct SideOutputs {
    late: Output,
    dlq: Output,
    /// Dead letters found and not yet written: (source partition, record).
    pub dead: Vec<(u32, OutRecord)>,
}

impl SideOutputs {
    pub async fn open(
        job: &Job,
        log: &ShardLog,
        (late_ids, dlq_ids): (&[Option<u32>], &[Option<u32>]),
        snap: Option<&ArchivedCoreSnapshot>,
    ) -> Result<SideOutputs, PipelineError> {
        Ok(SideOutputs {
            late: Output::open(log, ("late events", job.late_topic()), late_ids, snap).await?,
            dlq: Output::open(log, ("dead letters", job.dlq_topic()), dlq_ids, snap).await?,
            dead: Vec::new(),
        })
    }

    /// Writes `late` events (each to its key group's partition) and the dead
    /// letters waiting.
    pub async fn write(
        &mut self,
        log: &ShardLog,
        late: Vec<OutRecord>,
        groups: u32,
    ) -> Result<(), PipelineError> {
        let late = late
            .into_iter()
            .map(|r| {
                let key = r.key.as_deref().unwrap_or_default();
                (partitioner::partition_for(key, groups), r)
            })
            .collect();
        self.late.write(log, late).await?;
        let dead = std::mem::take(&mut self.dead);
        self.dlq.write(log, dead).await
    }

    /// Where each side-output partition on this core ends, for a checkpoint.
    pub fn positions(&self, log: &ShardLog, out: &mut Vec<checkpoint::OutputSnap>) {
        self.late.positions(log, out);
        self.dlq.positions(log, out);
    }
}

/// Source positions (`tidewater.source` headers) of the records in `partition`
/// from `from` on: side output written after the checkpoint.
async fn sources_written(
    log: &ShardLog,
    partition: u32,
    from: u64,
) -> Result<HashSet<Vec<u8>>, PipelineError> {
    let mut seen = HashSet::new();
    crate::pipeline::records::read_from(log, partition, from, |r| {
        if let Some(src) = crate::pipeline::records::header(r.headers, SOURCE_HEADER) {
            seen.insert(src.to_vec());
        }
    })
    .await?;
    Ok(seen)
}

/// (Kafka index, log id) of each partition in `ids` this core holds.
fn owned(ids: &[Option<u32>]) -> impl Iterator<Item = (u32, u32)> + '_ {
    ids.iter()
        .enumerate()
        .filter_map(|(p, id)| id.map(|id| (p as u32, id)))
}

/// Appends side-output records (Kafka index, record) to their partitions.
async fn append(
    log: &ShardLog,
    ids: &[Option<u32>],
    records: Vec<(u32, OutRecord)>,
) -> Result<(), PipelineError> {
    let mut by_partition: BTreeMap<u32, Vec<OutRecord>> = Default::default();
    for (p, r) in records {
        by_partition.entry(p).or_default().push(r);
    }
    for (p, batch) in by_partition {
        let id = ids
            .get(p as usize)
            .copied()
            .flatten()
            .ok_or(PipelineError::NotHere(p))?;
        topic::append(log, id, &batch).await?;
    }
    Ok(())
}

/// Drops the records already written before a restart (their source in `seen`).
fn not_again(records: &mut Vec<(u32, OutRecord)>, seen: &mut HashSet<Vec<u8>>) {
    if seen.is_empty() {
        return;
    }
    records.retain(|(_, r)| {
        let src = r
            .headers
            .iter()
            .find(|(k, _)| *k == SOURCE_HEADER)
            .map(|(_, v)| v.to_vec());
        !src.is_some_and(|s| seen.remove(&s))
    });
}
