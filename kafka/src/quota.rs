//! Client quotas (KIP-13, KIP-124, KIP-546): produce and fetch byte rates and a
//! share of request handling time, per user, per client id, or per both, with
//! Kafka's defaults and precedence; stored in `quotas.json` (a [`SharedFile`]) and
//! managed with DescribeClientQuotas and AlterClientQuotas.
//!
//! Each core measures what each client entity used, as each Kafka broker does (a
//! quota is per core: a client that spreads its partitions over the cores of a
//! per-core server gets it once per core). The measure is a bucket of what the
//! quota allows per second that starts empty and holds at most one second's worth:
//! a request that takes more than the bucket holds is served, answered with
//! `throttle_time_ms` for the time the debt takes to pay off, and its connection
//! is muted (nothing more is read from it) for that time, as KIP-219 describes.
//! Over any stretch of time an entity gets at most its quota and one second's
//! worth.
//!
//! Never: tracks more than [`ENTITIES_MAX`] entities per core (the longest idle
//! goes first), throttles anything when no quota applies, or throttles one request
//! longer than [`THROTTLE_MAX`].

use crate::error::KafkaError;
use crate::shared_file::SharedFile;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The file's name in the data directory.
pub const FILE: &str = "quotas.json";

/// Entities one core measures at once.
pub const ENTITIES_MAX: usize = 10_000;

/// Quota entries the file may hold.
pub const QUOTAS_MAX: usize = 10_000;

/// Longest a single request is throttled (Kafka's default: a quota window of 11 s).
pub const THROTTLE_MAX: Duration = Duration::from_secs(11);

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Bytes of Produce requests per second.
    Produce,
    /// Bytes of Fetch answers per second.
    Fetch,
    /// Percent of one thread's time spent on the entity's requests.
    Request,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Produce, Kind::Fetch, Kind::Request];

    /// Kafka's config key.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Produce => "producer_byte_rate",
            Kind::Fetch => "consumer_byte_rate",
            Kind::Request => "request_percentage",
        }
    }

    pub fn of_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// One part of an entity: a name, or the default for every name without its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Name {
    Default,
    Named(String),
}

/// A quota's entity: a user, a client id, or both (at least one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    pub user: Option<Name>,
    pub client_id: Option<Name>,
}

/// One entity's quotas; `None`: not set at this entity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub producer_byte_rate: Option<f64>,
    pub consumer_byte_rate: Option<f64>,
    pub request_percentage: Option<f64>,
}

impl Limits {
    pub fn get(&self, kind: Kind) -> Option<f64> {
        match kind {
            Kind::Produce => self.producer_byte_rate,
            Kind::Fetch => self.consumer_byte_rate,
            Kind::Request => self.request_percentage,
        }
    }

    pub fn set(&mut self, kind: Kind, value: Option<f64>) {
        match kind {
            Kind::Produce => self.producer_byte_rate = value,
            Kind::Fetch => self.consumer_byte_rate = value,
            Kind::Request => self.request_percentage = value,
        }
    }

    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|k| self.get(*k).is_none())
    }
}

/// `quotas.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaFile {
    pub entries: Vec<(Entity, Limits)>,
}

impl QuotaFile {
    fn limits(&self, entity: &Entity) -> Option<&Limits> {
        self.entries
            .iter()
            .find(|(e, _)| e == entity)
            .map(|(_, l)| l)
    }
}

/// A change to one entity's quotas: per kind, the new value, or `None` to remove
/// it.
pub type Change = (Entity, Vec<(Kind, Option<f64>)>);

/// The quotas of one server.
pub struct Quotas {
    file: Arc<SharedFile<QuotaFile>>,
    /// Whether any quota is set: read without a lock on every request.
    any: std::sync::atomic::AtomicBool,
}

/// The quota that applies to a client, and the key its use is measured under
/// (Kafka's sensor: the user and client id as far as the matched entity names
/// them).
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub limit: f64,
    pub key: (String, String),
}

impl Quotas {
    /// The quotas in `data_dir`. Blocking: at start.
    pub fn open(data_dir: &Path) -> Result<Quotas, KafkaError> {
        let file = SharedFile::open(&data_dir.join(FILE), "a quota file")?;
        Ok(Quotas::of(file))
    }

    fn of(file: SharedFile<QuotaFile>) -> Quotas {
        let any = !file.get().entries.is_empty();
        Quotas {
            file: Arc::new(file),
            any: any.into(),
        }
    }

    /// Whether any quota is set (when not, nothing is measured).
    pub fn any(&self) -> bool {
        self.any.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn all(&self) -> Arc<QuotaFile> {
        self.file.get()
    }

    /// The `kind` quota of a client (`user`: its principal's name), by Kafka's
    /// precedence: user and client id, user and default client, user, default user
    /// and client id, default user and default client, default user, client id,
    /// default client.
    pub fn applied(&self, kind: Kind, user: &str, client_id: &str) -> Option<Applied> {
        if !self.any() {
            return None;
        }
        let file = self.file.get();
        if file.entries.is_empty() {
            return None;
        }
        let named = |n: &str| Some(Name::Named(n.to_string()));
        let default = || Some(Name::Default);
        let order = [
            (named(user), named(client_id)),
            (named(user), default()),
            (named(user), None),
            (default(), named(client_id)),
            (default(), default()),
            (default(), None),
            (None, named(client_id)),
            (None, default()),
        ];
        for (u, c) in order {
            let key = (
                if u.is_some() { user } else { "" }.to_string(),
                if c.is_some() { client_id } else { "" }.to_string(),
            );
            let entity = Entity {
                user: u,
                client_id: c,
            };
            if let Some(limit) = file.limits(&entity).and_then(|l| l.get(kind)) {
                return Some(Applied { limit, key });
            }
        }
        None
    }

    /// Applies `changes` (an entity and, per kind, the new value or `None` to
    /// remove it), durably.
    pub async fn alter(&self, changes: Vec<Change>) -> Result<(), KafkaError> {
        let changed = self
            .file
            .change(move |file| {
                for (entity, ops) in changes {
                    let at = file.entries.iter().position(|(e, _)| *e == entity);
                    let at = match at {
                        Some(i) => i,
                        None => {
                            file.entries.push((entity, Limits::default()));
                            file.entries.len() - 1
                        }
                    };
                    for (kind, value) in ops {
                        file.entries[at].1.set(kind, value);
                    }
                }
                file.entries.retain(|(_, l)| !l.is_empty());
                file.entries.sort_by(|a, b| a.0.cmp(&b.0));
                if file.entries.len() > QUOTAS_MAX {
                    return Err(KafkaError::new(
                        kafka_protocol::ResponseError::PolicyViolation,
                        format!("a server holds at most {QUOTAS_MAX} quota entities"),
                    ));
                }
                Ok(())
            })
            .await;
        let any = !self.file.get().entries.is_empty();
        self.any.store(any, std::sync::atomic::Ordering::Relaxed);
        changed
    }
}

/// What one core's clients used against their quotas.
#[derive(Default)]
pub struct Usage {
    buckets: RefCell<HashMap<(Kind, String, String), Bucket>>,
}

struct Bucket {
    /// What the quota allows now: negative is a debt.
    level: f64,
    at: Instant,
}

impl Usage {
    /// Records `amount` (bytes, or seconds for [`Kind::Request`]) against `applied`
    /// at `now`: how long the client must now wait (zero: within its quota).
    pub fn record(&self, kind: Kind, applied: &Applied, amount: f64, now: Instant) -> Duration {
        // A request percentage is seconds of handling per second, times 100.
        let per_second = match kind {
            Kind::Request => applied.limit / 100.0,
            _ => applied.limit,
        };
        if per_second <= 0.0 {
            return THROTTLE_MAX;
        }
        let mut buckets = self.buckets.borrow_mut();
        let key = (kind, applied.key.0.clone(), applied.key.1.clone());
        if !buckets.contains_key(&key) && buckets.len() >= ENTITIES_MAX {
            // The longest idle goes: its bucket has refilled by now, most likely.
            if let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * per_second;
        b.level = (b.level + refill).min(per_second);
        b.at = now;
        // A debt is never more than THROTTLE_MAX's worth: what is over that is
        // forgotten, as Kafka forgets what left its window.
        let max = THROTTLE_MAX.as_secs_f64();
        b.level = (b.level - amount).max(-per_second * max);
        if b.level >= 0.0 {
            return Duration::ZERO;
        }
        // Clamped before it becomes a Duration: a tiny quota makes a huge number.
        Duration::from_secs_f64((-b.level / per_second).min(max))
    }

    /// The most a Fetch answer may carry for `applied` now: one second's worth of
    /// the quota (at least 1 KiB), so that one answer cannot take far more than the
    /// quota before the throttle comes.
    pub fn fetch_cap(applied: &Applied) -> usize {
        applied.limit.clamp(1024.0, f64::from(i32::MAX)) as usize
    }

    /// Entities measured now.
    pub fn tracked(&self) -> usize {
        self.buckets.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_client_to_its_rate() {
        let usage = Usage::default();
        let applied = Applied {
            limit: 1000.0,
            key: ("alice".into(), String::new()),
        };
        let t0 = Instant::now();
        // Starts empty: the first 500 bytes put it half a second in debt.
        let wait = usage.record(Kind::Produce, &applied, 500.0, t0);
        assert_eq!(wait, Duration::from_millis(500));
        // A client that waits as told and sends again gets the same answer: it
        // moves 500 bytes a half second, its quota.
        let wait = usage.record(Kind::Produce, &applied, 500.0, t0 + wait);
        assert_eq!(wait, Duration::from_millis(500));
        // Idle for long, it may not bank more than one second's worth.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            usage.record(Kind::Produce, &applied, 1000.0, later),
            Duration::ZERO
        );
        assert!(usage.record(Kind::Produce, &applied, 1.0, later) > Duration::ZERO);
        let percent = Applied {
            limit: 50.0,
            key: (String::new(), "c".into()),
        };
        // 50%: 0.1 s of handling costs 0.2 s of waiting.
        let wait = usage.record(Kind::Request, &percent, 0.1, t0);
        assert!(wait.abs_diff(Duration::from_millis(200)) < Duration::from_micros(1));
        assert_eq!(usage.tracked(), 2);
        // A vanishing quota throttles for the longest, and panics nowhere.
        let tiny = Applied {
            limit: 1e-300,
            key: ("t".into(), String::new()),
        };
        assert_eq!(usage.record(Kind::Produce, &tiny, 100.0, t0), THROTTLE_MAX);
        // A debt past THROTTLE_MAX's worth is forgotten: eleven seconds pay it off.
        let big = Applied {
            limit: 10.0,
            key: ("b".into(), String::new()),
        };
        assert_eq!(usage.record(Kind::Fetch, &big, 1e9, t0), THROTTLE_MAX);
        let paid = t0 + THROTTLE_MAX + Duration::from_millis(100);
        assert_eq!(usage.record(Kind::Fetch, &big, 1.0, paid), Duration::ZERO);
    }

    #[test]
    fn kafkas_precedence_picks_the_most_specific_entity_per_kind() {
        let dir = std::env::temp_dir().join("tidewater-quota-tests-never-written");
        let mut file = SharedFile::<QuotaFile>::open(&dir.join(FILE), "a quota file").unwrap();
        let named = |n: &str| Some(Name::Named(n.into()));
        let limits = |p: f64| Limits {
            producer_byte_rate: Some(p),
            ..Limits::default()
        };
        file.init(|f| {
            f.entries = vec![
                (
                    Entity {
                        user: named("alice"),
                        client_id: None,
                    },
                    limits(100.0),
                ),
                (
                    Entity {
                        user: Some(Name::Default),
                        client_id: None,
                    },
                    limits(50.0),
                ),
                (
                    Entity {
                        user: None,
                        client_id: named("loader"),
                    },
                    limits(10.0),
                ),
                (
                    Entity {
                        user: named("alice"),
                        client_id: named("loader"),
                    },
                    Limits {
                        consumer_byte_rate: Some(7.0),
                        ..Limits::default()
                    },
                ),
            ]
        });
        let q = Quotas::of(file);
        let produce = |u: &str, c: &str| q.applied(Kind::Produce, u, c);
        // alice+loader sets only a fetch rate: alice's own produce rate applies.
        assert_eq!(
            produce("alice", "loader"),
            Some(Applied {
                limit: 100.0,
                key: ("alice".into(), String::new())
            })
        );
        assert_eq!(
            produce("bob", "x").map(|a| a.limit),
            Some(50.0),
            "the default user"
        );
        assert_eq!(
            produce("bob", "x").map(|a| a.key),
            Some(("bob".into(), String::new()))
        );
        assert_eq!(
            q.applied(Kind::Fetch, "alice", "loader").map(|a| a.limit),
            Some(7.0)
        );
        assert_eq!(q.applied(Kind::Fetch, "bob", "loader"), None);
        assert_eq!(q.applied(Kind::Request, "alice", "x"), None);
    }
}
