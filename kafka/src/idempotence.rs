//! Idempotent produce: per (producer id, partition) on the owning core, the last
//! sequence number and the last five batches, as Kafka keeps them. A retry
//! of one of those batches is answered with its original offset and not appended
//! again; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is
//! INVALID_PRODUCER_EPOCH.
//!
//! A batch counts from when it has its offsets (requests on one connection are
//! pipelined, so the next batch of a producer may arrive before the last is
//! durable); a failed append takes it and every later batch of its producer back
//! out. A retry of a batch still on its way to the device is answered
//! REQUEST_TIMED_OUT (retriable: the client asks again and then gets its offset).
//!
//! The state is in memory: after a restart a producer's next batch is accepted as is
//! (a retry that straddles the restart may be stored twice). Bounded by
//! `PRODUCER_STATES_MAX` entries per core.

use crate::error::KafkaError;
use kafka_protocol::ResponseError;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer and partition (Kafka's value).
const RECENT_BATCHES: usize = 5;
/// Producer states one core keeps; beyond it the least recently used is forgotten.
pub const PRODUCER_STATES_MAX: usize = 100_000;

#[derive(Debug)]
struct Recent {
    first: i32,
    last: i32,
    offset: u64,
    durable: bool,
}

#[derive(Debug)]
struct State {
    epoch: i16,
    last_seq: i32,
    /// Recent batches, oldest first.
    recent: VecDeque<Recent>,
    used: u64,
}

/// What to do with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it (not an idempotent batch, or the next in sequence).
    Append,
    /// Already appended at this base offset: answer with it, append nothing.
    Duplicate(u64),
    /// Already reserved and not yet durable: answer with a retriable error.
    InFlight,
    /// Refuse with this error.
    Refuse(KafkaError),
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
            return Verdict::Refuse(KafkaError::new(
                ResponseError::InvalidProducerEpoch,
                format!("producer {pid} epoch {epoch} is older than {}", s.epoch),
            ));
        }
        if epoch > s.epoch {
            return if first == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(KafkaError::new(
                    ResponseError::OutOfOrderSequenceNumber,
                    format!(
                        "producer {pid} new epoch {epoch} must start at sequence 0, not {first}"
                    ),
                ))
            };
        }
        if let Some(r) = s.recent.iter().find(|r| r.first == first && r.last == last) {
            return if r.durable {
                Verdict::Duplicate(r.offset)
            } else {
                Verdict::InFlight
            };
        }
        if first != s.last_seq.wrapping_add(1) {
            return Verdict::Refuse(KafkaError::new(
                ResponseError::OutOfOrderSequenceNumber,
                format!(
                    "producer {pid}: sequence {first} where {} was expected",
                    s.last_seq.wrapping_add(1)
                ),
            ));
        }
        Verdict::Append
    }

    /// Records a batch that got its offsets (not yet durable).
    pub fn reserved(&mut self, b: &BatchId, offset: u64) {
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
        s.recent.push_back(Recent {
            first,
            last,
            offset,
            durable: false,
        });
    }

    /// The batch is durable: a retry of it is answered with its offset from now on.
    pub fn durable(&mut self, b: &BatchId) {
        if let Some(r) = self.recent_mut(b) {
            r.durable = true;
        }
    }

    /// The batch's append failed: it and the producer's later batches (the log gives
    /// their offsets out again) are forgotten, and the producer's next batch must be
    /// this one again.
    pub fn failed(&mut self, b: &BatchId) {
        if b.pid < 0 {
            return;
        }
        let Some(s) = self.states.get_mut(&(b.pid, b.partition)) else {
            return;
        };
        if s.epoch != b.epoch {
            return;
        }
        if let Some(i) = s
            .recent
            .iter()
            .position(|r| r.first == b.first && r.last == b.last)
        {
            s.recent.truncate(i);
            s.last_seq = b.first.wrapping_sub(1);
        }
    }

    fn recent_mut(&mut self, b: &BatchId) -> Option<&mut Recent> {
        let s = self.states.get_mut(&(b.pid, b.partition))?;
        if s.epoch != b.epoch {
            return None;
        }
        s.recent
            .iter_mut()
            .find(|r| r.first == b.first && r.last == b.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(p: &mut Producers, b: &BatchId, offset: u64) {
        p.reserved(b, offset);
        p.durable(b);
    }

    fn batch(first: i32, last: i32) -> BatchId {
        BatchId {
            pid: 7,
            epoch: 0,
            partition: 1,
            first,
            last,
        }
    }

    #[test]
    fn a_batch_counts_from_its_reservation_and_a_failure_takes_it_back() {
        let mut p = Producers::default();
        p.reserved(&batch(0, 9), 100);
        // The next batch of a pipelined producer follows the reserved one...
        assert_eq!(p.check(&batch(10, 19)), Verdict::Append);
        p.reserved(&batch(10, 19), 110);
        // ...a retry of a batch still on its way is not answered with an offset yet...
        assert_eq!(p.check(&batch(0, 9)), Verdict::InFlight);
        p.durable(&batch(0, 9));
        assert_eq!(p.check(&batch(0, 9)), Verdict::Duplicate(100));
        // ...and a failed append forgets it and what followed: the producer resends it.
        p.failed(&batch(10, 19));
        assert_eq!(p.check(&batch(10, 19)), Verdict::Append);
        assert!(matches!(
            p.check(&batch(20, 29)),
            Verdict::Refuse(e) if e.kind() == ResponseError::OutOfOrderSequenceNumber
        ));
        assert_eq!(p.check(&batch(0, 9)), Verdict::Duplicate(100));
    }

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
        appended(
            &mut p,
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
        appended(
            &mut p,
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
            Verdict::Refuse(e) if e.kind() == ResponseError::OutOfOrderSequenceNumber
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
        appended(
            &mut p,
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
            Verdict::Refuse(e) if e.kind() == ResponseError::InvalidProducerEpoch
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
