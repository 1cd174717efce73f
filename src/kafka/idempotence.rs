//! Idempotent produce: per (producer id, partition) on the owning core, the last
//! sequence number and the last five batches appended, as Kafka keeps them. A retry
//! of one of those batches is answered with its original offset and not appended
//! again; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is
//! INVALID_PRODUCER_EPOCH.
//!
//! The state is in memory: after a restart a producer's next batch is accepted as is
//! (a retry that straddles the restart may be stored twice). Bounded by
//! `PRODUCER_STATES_MAX` entries per core.

use super::code;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer and partition (Kafka's value).
const RECENT_BATCHES: usize = 5;
/// Producer states one core keeps; beyond it the least recently used is forgotten.
pub const PRODUCER_STATES_MAX: usize = 100_000;

#[derive(Debug)]
struct State {
    epoch: i16,
    last_seq: i32,
    /// (first seq, last seq, base offset) of recent batches.
    recent: VecDeque<(i32, i32, u64)>,
    used: u64,
}

/// What to do with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it (not an idempotent batch, or the next in sequence).
    Append,
    /// Already appended at this base offset: answer with it, append nothing.
    Duplicate(u64),
    /// Refuse with this error code and message.
    Refuse(i16, String),
}

/// Which producer batch: its producer, epoch, partition and sequence range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchId {
    pub pid: i64,
    pub epoch: i16,
    pub partition: u32,
    pub first: i32,
    pub last: i32,
}

#[derive(Default)]
pub struct Producers {
    states: HashMap<(i64, u32), State>,
    clock: u64,
}

impl Producers {
    pub fn check(&mut self, b: &BatchId) -> Verdict {
        let BatchId {
            pid,
            epoch,
            partition,
            first,
            last,
        } = *b;
        if pid < 0 {
            return Verdict::Append;
        }
        self.clock += 1;
        let Some(s) = self.states.get_mut(&(pid, partition)) else {
            return Verdict::Append;
        };
        s.used = self.clock;
        if epoch < s.epoch {
            return Verdict::Refuse(
                code::INVALID_PRODUCER_EPOCH,
                format!("producer {pid} epoch {epoch} is older than {}", s.epoch),
            );
        }
        if epoch > s.epoch {
            return if first == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(
                    code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!(
                        "producer {pid} new epoch {epoch} must start at sequence 0, not {first}"
                    ),
                )
            };
        }
        if let Some(&(_, _, offset)) = s.recent.iter().find(|&&(f, l, _)| f == first && l == last) {
            return Verdict::Duplicate(offset);
        }
        if first != s.last_seq.wrapping_add(1) {
            return Verdict::Refuse(
                code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!(
                    "producer {pid}: sequence {first} where {} was expected",
                    s.last_seq.wrapping_add(1)
                ),
            );
        }
        Verdict::Append
    }

    /// Records an appended batch.
    pub fn appended(&mut self, b: &BatchId, offset: u64) {
        let BatchId {
            pid,
            epoch,
            partition,
            first,
            last,
        } = *b;
        if pid < 0 {
            return;
        }
        if self.states.len() >= PRODUCER_STATES_MAX && !self.states.contains_key(&(pid, partition))
        {
            if let Some(&oldest) = self
                .states
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k)
            {
                self.states.remove(&oldest);
            }
        }
        self.clock += 1;
        let s = self.states.entry((pid, partition)).or_insert(State {
            epoch,
            last_seq: -1,
            recent: VecDeque::new(),
            used: 0,
        });
        if epoch != s.epoch {
            s.epoch = epoch;
            s.recent.clear();
        }
        s.last_seq = last;
        s.used = self.clock;
        if s.recent.len() == RECENT_BATCHES {
            s.recent.pop_front();
        }
        s.recent.push_back((first, last, offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_answered_not_appended_and_gaps_are_refused() {
        let mut p = Producers::default();
        assert_eq!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 0,
                last: 9
            }),
            Verdict::Append
        );
        p.appended(
            &BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 0,
                last: 9,
            },
            100,
        );
        assert_eq!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 10,
                last: 19
            }),
            Verdict::Append
        );
        p.appended(
            &BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 10,
                last: 19,
            },
            110,
        );
        assert_eq!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 0,
                last: 9
            }),
            Verdict::Duplicate(100)
        );
        assert_eq!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 10,
                last: 19
            }),
            Verdict::Duplicate(110)
        );
        assert!(matches!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 30,
                last: 39
            }),
            Verdict::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 20,
                last: 29
            }),
            Verdict::Append
        );
        p.appended(
            &BatchId {
                pid: 7,
                epoch: 1,
                partition: 1,
                first: 0,
                last: 4,
            },
            120,
        );
        assert!(matches!(
            p.check(&BatchId {
                pid: 7,
                epoch: 0,
                partition: 1,
                first: 20,
                last: 29
            }),
            Verdict::Refuse(code::INVALID_PRODUCER_EPOCH, _)
        ));
        assert_eq!(
            p.check(&BatchId {
                pid: -1,
                epoch: -1,
                partition: 1,
                first: 0,
                last: 0
            }),
            Verdict::Append
        );
    }
}
