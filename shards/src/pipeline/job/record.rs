//! One stored record into the job: decode the fields the job needs, check its event
//! time, then apply it to this core's windows or route it by key to the core that
//! owns the key. A record that cannot be used becomes a dead letter with the reason.
//!
//! keyBy: the owner of a key is `partition_owner(partition_for(key, P), cores)` —
//! the core that owns the partition Kafka's default partitioner gives the key — so
//! records a client partitioned by the job key never leave their core.
//!
//! Owns nothing across records; never awaits.

use super::context::{JobContext, JobStats};
use super::mailbox::Outboxes;
use super::side_output::SOURCE_HEADER;
use super::state::State;
use crate::pipeline::avro::Projected;
use crate::pipeline::records::{bump, BadBatch, RecordRef};
use crate::pipeline::spec::{EventTime, Job};
use crate::pipeline::window::Position;
use crate::sink::topic::OutRecord;
use crate::{partition_owner, partitioner};
use bytes::Bytes;

/// Everything one record touches, borrowed for the length of a log entry.
pub(super) struct RecordCx<'a> {
    pub job: &'a Job,
    pub ctx: &'a JobContext,
    pub stats: &'a JobStats,
    pub state: &'a mut State,
    pub dead: &'a mut Vec<(u32, OutRecord)>,
    pub outboxes: &'a mut Outboxes,
    pub src_index: u32,
    pub max_ts: &'a mut i64,
    pub slots: usize,
}

/// Why an event time cannot be believed, if it cannot: before 1970, or further
/// ahead of its record's timestamp (fixed in the log, so a replay decides the same)
/// than `ahead_ms_max`. Such an event would move the watermark there for good and
/// make every later event late.
fn time_out_of_bounds(ts: i64, record_ms: i64, ahead_ms_max: i64) -> Option<String> {
    if ts < 0 {
        return Some(format!("event time {ts} is before 1970"));
    }
    let ahead = ts.saturating_sub(record_ms);
    (ahead > ahead_ms_max).then(|| {
        format!(
            "event time {ts} is {ahead} ms ahead of the record's timestamp {record_ms}; event_time_ahead_max allows {ahead_ms_max} ms"
        )
    })
}

impl RecordCx<'_> {
    #[inline]
    pub fn on_record(&mut self, r: RecordRef<'_>) {
        bump(&self.stats.records_in, 1);
        let Some(value) = r.value else {
            return self.dead(r, "the record has no value (null)");
        };
        // Only a JSON key with escapes is written here (no allocation otherwise).
        let mut scratch = Vec::new();
        let mut p = Projected::default();
        if let Err(e) = self.job.decode(value, &mut p, &mut scratch) {
            return self.dead(r, &format!("cannot decode: {e}"));
        }
        let Some(key) = p.key else {
            return self.dead(
                r,
                &format!("the key field `{}` is null or missing", self.job.key_field),
            );
        };
        let ts = match self.job.event_time {
            EventTime::KafkaTimestamp => r.timestamp_ms,
            EventTime::Field(slot) => match p.vals[slot as usize] {
                Some(crate::pipeline::avro::Num::I(t)) => t,
                _ => return self.dead(r, "the event time field is null or missing"),
            },
        };
        if let Some(why) = time_out_of_bounds(ts, r.timestamp_ms, self.job.ahead_ms_max) {
            return self.dead(r, &why);
        }
        if ts > *self.max_ts {
            *self.max_ts = ts;
        }
        let pos = Position {
            ts,
            partition: self.src_index,
            offset: r.offset,
        };
        let owner = partition_owner(
            partitioner::partition_for(key, self.ctx.source_partitions),
            self.ctx.shards,
        );
        if owner == self.ctx.shard {
            self.state.apply(self.job, self.stats, key, &p.vals, pos);
            return;
        }
        let Some(o) = &mut self.outboxes.0[owner as usize] else {
            unreachable!("every other core has a mailbox");
        };
        o.pending.push(key, pos, &p.vals[..self.slots]);
        bump(&self.stats.routed_out, 1);
    }

    fn dead(&mut self, r: RecordRef<'_>, reason: &str) {
        bump(&self.stats.dlq, 1);
        self.dead.push((
            self.src_index,
            OutRecord {
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(r.value.unwrap_or_default()),
                timestamp_ms: r.timestamp_ms,
                headers: vec![
                    ("tidewater.error", Bytes::copy_from_slice(reason.as_bytes())),
                    (
                        SOURCE_HEADER,
                        Bytes::from(format!(
                            "{}/{}/{}",
                            self.job.source, self.src_index, r.offset
                        )),
                    ),
                ],
            },
        ));
    }

    pub fn dead_batch(&mut self, b: BadBatch) {
        bump(&self.stats.dlq, u64::from(b.offsets));
        tracing::warn!(job = %self.job.name, partition = self.src_index, offset = b.base_offset, "unreadable batch of {} offsets: {}", b.offsets, b.reason);
        self.dead.push((
            self.src_index,
            OutRecord {
                key: None,
                value: Bytes::new(),
                timestamp_ms: 0,
                headers: vec![
                    (
                        "tidewater.error",
                        Bytes::from(format!(
                            "unreadable batch of {} offsets: {}",
                            b.offsets, b.reason
                        )),
                    ),
                    (
                        SOURCE_HEADER,
                        Bytes::from(format!(
                            "{}/{}/{}",
                            self.job.source, self.src_index, b.base_offset
                        )),
                    ),
                ],
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_times_before_1970_or_too_far_ahead_are_refused() {
        use super::time_out_of_bounds as check;
        let day = 86_400_000;
        let now = 1_800_000_000_000;
        assert_eq!(check(now, now, day), None);
        assert_eq!(check(now + day, now, day), None);
        assert_eq!(
            check(now - 365 * day, now, day),
            None,
            "old events are late, not wrong"
        );
        assert!(check(now + day + 1, now, day)
            .unwrap()
            .contains("event_time_ahead_max"));
        assert!(
            check(4_102_444_800_000, now, day).is_some(),
            "the year 2100"
        );
        assert!(check(-1, now, day).unwrap().contains("before 1970"));
        assert!(check(i64::MAX, i64::MIN, day).is_some(), "no overflow");
    }
}
