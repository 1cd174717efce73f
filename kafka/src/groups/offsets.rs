//! The committed offsets of the groups one core coordinates, and the records that
//! keep them (and each group's generation) in the core's own log.
//!
//! A record is a JSON object in a batch of the internal partition
//! `__consumer_offsets-<n>` ([`super::OFFSETS_TOPIC`]); the state is what the
//! records say, applied in log order. Records are small and written at the rate of
//! commits (a client commits every few seconds), so a readable format costs
//! nothing measurable and can be inspected with any tool.
//!
//! Never: holds a commit that is not durable in the log (the coordinator applies a
//! commit only once its append is durable), or reads the log itself.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One committed offset.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// When it was committed (ms since the epoch): offset retention counts from it.
    pub at_ms: i64,
}

/// One change to the coordinator's durable state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Record {
    /// Group `g` committed offset `o` (leader epoch `e`, metadata `m`) for partition
    /// `p` of topic `t` at `ts`.
    Commit {
        g: String,
        t: String,
        p: i32,
        o: i64,
        e: i32,
        m: Option<String>,
        ts: i64,
    },
    /// The commit of `g` for `t`/`p` is gone (OffsetDelete, retention, a deleted
    /// topic); with `ts`, only a commit made at or before it (retention: a commit
    /// made since the sweep looked stays).
    Forget {
        g: String,
        t: String,
        p: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<i64>,
    },
    /// Group `g` reached generation `n`: a group that comes back after a restart
    /// continues from it, so a generation never repeats.
    Generation { g: String, n: i32 },
    /// Group `g` and all its commits are deleted (DeleteGroups).
    DeleteGroup { g: String },
}

impl Record {
    pub fn group(&self) -> &str {
        match self {
            Record::Commit { g, .. }
            | Record::Forget { g, .. }
            | Record::Generation { g, .. }
            | Record::DeleteGroup { g } => g,
        }
    }
}

/// A batch of records as the log stores it.
pub fn encode(records: &[Record]) -> Vec<u8> {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(records).unwrap_or_default()
}

/// `records` cut into runs that each encode to at most `max_bytes` (a record
/// larger than that alone in its run).
pub fn batches(records: &[Record], max_bytes: usize) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut from, mut bytes) = (0, 2);
    for (i, r) in records.iter().enumerate() {
        let len = serde_json::to_vec(r).map_or(0, |v| v.len()) + 1;
        if i > from && bytes + len > max_bytes {
            out.push(&records[from..i]);
            (from, bytes) = (i, 2);
        }
        bytes += len;
    }
    if from < records.len() {
        out.push(&records[from..]);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// A group's commits, by (topic, partition).
pub type GroupOffsets = HashMap<(String, i32), Committed>;

/// Every commit and generation this core keeps.
#[derive(Default)]
pub struct Offsets {
    by_group: HashMap<String, GroupOffsets>,
    generations: HashMap<String, i32>,
    count: usize,
}

impl Offsets {
    pub fn apply(&mut self, r: Record) {
        match r {
            Record::Commit {
                g,
                t,
                p,
                o,
                e,
                m,
                ts,
            } => {
                let c = Committed {
                    offset: o,
                    leader_epoch: e,
                    metadata: m,
                    at_ms: ts,
                };
                if self
                    .by_group
                    .entry(g)
                    .or_default()
                    .insert((t, p), c)
                    .is_none()
                {
                    self.count += 1;
                }
            }
            Record::Forget { g, t, p, ts } => {
                if let Some(offsets) = self.by_group.get_mut(&g) {
                    let key = (t, p);
                    let stale = offsets
                        .get(&key)
                        .is_some_and(|c| ts.is_none_or(|ts| c.at_ms <= ts));
                    if stale && offsets.remove(&key).is_some() {
                        self.count -= 1;
                    }
                    if offsets.is_empty() {
                        self.by_group.remove(&g);
                    }
                }
            }
            Record::Generation { g, n } => {
                let known = self.generations.entry(g).or_insert(n);
                *known = (*known).max(n);
            }
            Record::DeleteGroup { g } => {
                if let Some(offsets) = self.by_group.remove(&g) {
                    self.count -= offsets.len();
                }
                self.generations.remove(&g);
            }
        }
    }

    pub fn group(&self, g: &str) -> Option<&GroupOffsets> {
        self.by_group.get(g)
    }

    /// The generation a group reached before (0 for a new group).
    pub fn generation(&self, g: &str) -> i32 {
        self.generations.get(g).copied().unwrap_or(0)
    }

    /// Groups that have commits.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.by_group.keys()
    }

    /// Committed offsets held, over all groups.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The records that say all there is of the groups `of` selects: each one's
    /// generation and commits.
    pub fn snapshot(&self, of: impl Fn(&str) -> bool) -> Vec<Record> {
        let mut out = Vec::new();
        for (g, &n) in self.generations.iter().filter(|(g, _)| of(g)) {
            out.push(Record::Generation { g: g.clone(), n });
        }
        for (g, offsets) in self.by_group.iter().filter(|(g, _)| of(g)) {
            for ((t, p), c) in offsets {
                out.push(Record::Commit {
                    g: g.clone(),
                    t: t.clone(),
                    p: *p,
                    o: c.offset,
                    e: c.leader_epoch,
                    m: c.metadata.clone(),
                    ts: c.at_ms,
                });
            }
        }
        out
    }

    /// Records that forget the commits older than `retention_ms` of the groups
    /// `idle` says have no members (Kafka's `offsets.retention.minutes`: a group
    /// with members keeps its offsets).
    pub fn expired(
        &self,
        now_ms: i64,
        retention_ms: u64,
        idle: impl Fn(&str) -> bool,
    ) -> Vec<Record> {
        let before = now_ms.saturating_sub(retention_ms.min(i64::MAX as u64) as i64);
        let mut out = Vec::new();
        for (g, offsets) in self.by_group.iter().filter(|(g, _)| idle(g)) {
            for ((t, p), c) in offsets {
                if c.at_ms < before {
                    out.push(Record::Forget {
                        g: g.clone(),
                        t: t.clone(),
                        p: *p,
                        ts: Some(c.at_ms),
                    });
                }
            }
        }
        out
    }

    /// Records that forget every commit for `topic`.
    pub fn of_topic(&self, topic: &str) -> Vec<Record> {
        let mut out = Vec::new();
        for (g, offsets) in &self.by_group {
            for (t, p) in offsets.keys().filter(|(t, _)| t == topic) {
                out.push(Record::Forget {
                    g: g.clone(),
                    t: t.clone(),
                    p: *p,
                    ts: None,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(g: &str, p: i32, o: i64, ts: i64) -> Record {
        Record::Commit {
            g: g.into(),
            t: "t".into(),
            p,
            o,
            e: -1,
            m: None,
            ts,
        }
    }

    #[test]
    fn records_replay_to_the_latest_commit_and_round_trip_through_bytes() {
        let records = vec![
            commit("g", 0, 5, 1),
            commit("g", 1, 7, 1),
            commit("g", 0, 9, 2),
            Record::Generation {
                g: "g".into(),
                n: 4,
            },
            Record::Generation {
                g: "g".into(),
                n: 3,
            },
            commit("h", 0, 1, 1),
            Record::Forget {
                g: "g".into(),
                t: "t".into(),
                p: 1,
                ts: None,
            },
            // Retention's forget of an older commit leaves the newer one.
            Record::Forget {
                g: "g".into(),
                t: "t".into(),
                p: 0,
                ts: Some(1),
            },
            Record::DeleteGroup { g: "h".into() },
        ];
        let bytes = encode(&records);
        assert_eq!(decode(&bytes).unwrap(), records);
        let mut o = Offsets::default();
        for r in decode(&bytes).unwrap() {
            o.apply(r);
        }
        let g = o.group("g").unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[&("t".to_string(), 0)].offset, 9);
        assert_eq!(o.generation("g"), 4, "a generation never goes back");
        assert!(o.group("h").is_none());
        assert_eq!(o.count(), 1);
        assert!(decode(b"{not json").is_err());
        // A snapshot replays to the same state.
        let mut again = Offsets::default();
        for r in o.snapshot(|_| true) {
            again.apply(r);
        }
        assert_eq!(again.group("g"), o.group("g"));
        assert_eq!((again.generation("g"), again.count()), (4, 1));
        assert!(o.snapshot(|g| g == "other").is_empty());
        let many: Vec<Record> = (0..100).map(|i| commit("g", i, i as i64, 1)).collect();
        let runs = batches(&many, 1000);
        assert!(runs.len() > 5);
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 100);
        assert!(runs.iter().all(|r| encode(r).len() <= 1000));
    }

    #[test]
    fn retention_forgets_old_commits_of_idle_groups_only() {
        let mut o = Offsets::default();
        o.apply(commit("idle", 0, 1, 1_000));
        o.apply(commit("idle", 1, 1, 9_000));
        o.apply(commit("busy", 0, 1, 1_000));
        let gone = o.expired(10_000, 5_000, |g| g == "idle");
        assert_eq!(
            gone,
            vec![Record::Forget {
                g: "idle".into(),
                t: "t".into(),
                p: 0,
                ts: Some(1_000)
            }]
        );
    }
}
