//! A topic's own configs, by Kafka's topic-level names: what CreateTopics,
//! AlterConfigs and IncrementalAlterConfigs may set, what DescribeConfigs shows
//! (the value in force and where it comes from), and the partition limits they mean
//! for the log.
//!
//! Served: `retention.ms`, `retention.bytes`, `segment.bytes`, `max.message.bytes`
//! and `cleanup.policy` (`delete`; `compact` is refused until compaction exists).
//! Any other name is refused with INVALID_CONFIG naming those that are served: a
//! setting that is accepted and does nothing would be a lie.
//!
//! Never: holds a value it has not checked; knows about files or cores.

use crate::error::KafkaError;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use tidewater_io::{LogConfig, PartitionLimits};

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// The largest segment a topic may ask for: Kafka's bound (an int), a multiple of
/// the 4 KiB block. Each new segment is preallocated to its size.
pub const SEGMENT_BYTES_MAX: i64 = (i32::MAX as i64) / 4096 * 4096;
/// Every topic config this server serves.
pub const SERVED: [&str; 5] = [
    CLEANUP_POLICY,
    MAX_MESSAGE_BYTES,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
];

/// IncrementalAlterConfigs' operations.
pub const SET: i8 = 0;
pub const DELETE: i8 = 1;
pub const APPEND: i8 = 2;
pub const SUBTRACT: i8 = 3;

/// One operation of an IncrementalAlterConfigs, as it crosses to core 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub name: String,
    pub op: i8,
    pub value: Option<String>,
}

/// What a topic's configs become: these, or the current ones edited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Replace(TopicConfig),
    Edit(Vec<Edit>),
}

/// Where a value in force comes from (Kafka's `ConfigSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Set on the topic (DYNAMIC_TOPIC_CONFIG).
    Topic = 1,
    /// The server's setting (STATIC_BROKER_CONFIG).
    Server = 4,
    /// Nobody set it (DEFAULT_CONFIG).
    Default = 5,
}

/// The server's settings a topic falls back to.
#[derive(Clone, Copy, Debug)]
pub struct ServerDefaults {
    pub segment_bytes: u64,
    /// Smallest segment the log can take (a flush and a batch, plus a block).
    pub segment_bytes_min: u64,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    /// Largest batch the log takes.
    pub max_message_bytes: usize,
}

impl ServerDefaults {
    pub fn of(cfg: &LogConfig) -> ServerDefaults {
        ServerDefaults {
            segment_bytes: cfg.ledger_segment_bytes,
            segment_bytes_min: (cfg.ledger_flush_bytes + cfg.batch_bytes_max + 4096) as u64,
            retention_bytes: cfg.retention_bytes,
            retention_ms: cfg.retention_ms,
            max_message_bytes: cfg.batch_bytes_max,
        }
    }
}

/// One config as DescribeConfigs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub name: &'static str,
    /// `None`: unlimited shown as Kafka does (`-1`) is `Some("-1")`; `None` is not
    /// used for topic configs.
    pub value: String,
    pub source: Source,
}

/// A topic's own settings (checked), by name; what is not here falls back to the
/// server's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TopicConfig(BTreeMap<String, String>);

fn invalid(message: String) -> KafkaError {
    KafkaError::new(ResponseError::InvalidConfig, message)
}

/// A whole number of at least `min`, or -1 (unlimited) when `unlimited`.
fn number(name: &str, value: &str, min: i64, unlimited: bool) -> Result<i64, KafkaError> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{name}={value:?}: a whole number")))?;
    if (unlimited && n == -1) || n >= min {
        Ok(n)
    } else {
        let also = if unlimited { " or -1 (unlimited)" } else { "" };
        Err(invalid(format!("{name}={n}: at least {min}{also}")))
    }
}

impl TopicConfig {
    /// Checks one setting; the value as kept.
    pub fn check(name: &str, value: &str, d: &ServerDefaults) -> Result<String, KafkaError> {
        match name {
            RETENTION_MS | RETENTION_BYTES => Ok(number(name, value, 0, true)?.to_string()),
            SEGMENT_BYTES => {
                let n = number(name, value, d.segment_bytes_min as i64, false)?;
                if n % 4096 != 0 || n > SEGMENT_BYTES_MAX {
                    return Err(invalid(format!(
                        "{name}={n}: a multiple of 4096, at most {SEGMENT_BYTES_MAX} (as Kafka's, an int)"
                    )));
                }
                Ok(n.to_string())
            }
            MAX_MESSAGE_BYTES => {
                let n = number(name, value, 1, false)?;
                if n as u64 > d.max_message_bytes as u64 {
                    return Err(invalid(format!(
                        "{name}={n}: at most the server's batch_bytes_max ({})",
                        d.max_message_bytes
                    )));
                }
                Ok(n.to_string())
            }
            CLEANUP_POLICY => match value.trim() {
                "delete" => Ok("delete".into()),
                other => Err(invalid(format!(
                    "{name}={other:?}: only delete is served (log compaction is not)"
                ))),
            },
            other => Err(invalid(format!(
                "{other} is not a topic config this server serves; it serves {}",
                SERVED.join(", ")
            ))),
        }
    }

    /// Sets `name` (checked); `None` removes it (back to the server's).
    pub fn set(
        &mut self,
        name: &str,
        value: Option<&str>,
        d: &ServerDefaults,
    ) -> Result<(), KafkaError> {
        match value {
            Some(v) => {
                let v = TopicConfig::check(name, v, d)?;
                self.0.insert(name.to_string(), v);
            }
            None => {
                if !SERVED.contains(&name) {
                    TopicConfig::check(name, "", d)?;
                }
                self.0.remove(name);
            }
        }
        Ok(())
    }

    /// A config of the settings given, each checked.
    pub fn of<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
        d: &ServerDefaults,
    ) -> Result<TopicConfig, KafkaError> {
        let mut c = TopicConfig::default();
        for (name, value) in pairs {
            c.set(name, value, d)?;
        }
        Ok(c)
    }

    /// Applies IncrementalAlterConfigs' operations in order, each checked: SET (0),
    /// DELETE (1), APPEND (2) and SUBTRACT (3), the last two for `cleanup.policy`
    /// only (a list whose one value served is `delete`).
    pub fn edit(&mut self, ops: &[Edit], d: &ServerDefaults) -> Result<(), KafkaError> {
        for op in ops {
            let (key, value) = (op.name.as_str(), op.value.as_deref());
            match (op.op, key) {
                (SET, _) => self.set(key, value, d)?,
                (DELETE, _) => self.set(key, None, d)?,
                (SUBTRACT, CLEANUP_POLICY) if value.is_some_and(|v| v.trim() == "delete") => {
                    return Err(invalid(
                        "cleanup.policy cannot be empty: delete is the one policy served".into(),
                    ))
                }
                (APPEND, CLEANUP_POLICY) => self.set(key, value, d)?,
                (SUBTRACT, CLEANUP_POLICY) => {}
                (APPEND | SUBTRACT, _) => {
                    TopicConfig::check(key, value.unwrap_or_default(), d)?;
                    return Err(invalid(format!(
                        "{key} is not a list: APPEND and SUBTRACT are for cleanup.policy"
                    )));
                }
                (other, _) => {
                    return Err(KafkaError::new(
                        ResponseError::InvalidRequest,
                        format!("config operation {other}: use SET (0), DELETE (1), APPEND (2) or SUBTRACT (3)"),
                    ))
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(|v| v.parse().ok())
    }

    /// The partition limits these settings mean for the log; `None` when the
    /// server's apply.
    pub fn limits(&self, d: &ServerDefaults) -> Option<PartitionLimits> {
        let own = [RETENTION_MS, RETENTION_BYTES, SEGMENT_BYTES]
            .iter()
            .any(|k| self.0.contains_key(*k));
        let limit = |name, server: Option<u64>| match self.get(name) {
            Some(n) => u64::try_from(n).ok(),
            None => server,
        };
        own.then(|| PartitionLimits {
            segment_bytes: self
                .get(SEGMENT_BYTES)
                .map_or(d.segment_bytes, |n| n as u64),
            retention_bytes: limit(RETENTION_BYTES, d.retention_bytes),
            retention_ms: limit(RETENTION_MS, d.retention_ms),
        })
    }

    /// The largest batch a producer may send to the topic.
    pub fn max_message_bytes(&self, d: &ServerDefaults) -> usize {
        self.get(MAX_MESSAGE_BYTES)
            .map_or(d.max_message_bytes, |n| n as usize)
    }

    /// Every served config with the value in force and its source.
    pub fn describe(&self, d: &ServerDefaults) -> Vec<Described> {
        let show = |name: &'static str, server: Option<String>, default: &str| match (
            self.0.get(name),
            server,
        ) {
            (Some(v), _) => Described {
                name,
                value: v.clone(),
                source: Source::Topic,
            },
            (None, Some(v)) => Described {
                name,
                value: v,
                source: Source::Server,
            },
            (None, None) => Described {
                name,
                value: default.to_string(),
                source: Source::Default,
            },
        };
        vec![
            show(CLEANUP_POLICY, None, "delete"),
            show(MAX_MESSAGE_BYTES, Some(d.max_message_bytes.to_string()), ""),
            show(
                RETENTION_BYTES,
                d.retention_bytes.map(|b| b.to_string()),
                "-1",
            ),
            show(RETENTION_MS, d.retention_ms.map(|b| b.to_string()), "-1"),
            show(SEGMENT_BYTES, Some(d.segment_bytes.to_string()), ""),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> ServerDefaults {
        ServerDefaults {
            segment_bytes: 128 << 20,
            segment_bytes_min: 2 << 20,
            retention_bytes: None,
            retention_ms: Some(86_400_000),
            max_message_bytes: 1 << 20,
        }
    }

    #[test]
    fn settings_are_checked_and_mean_partition_limits() {
        let d = d();
        let c = TopicConfig::of(
            [
                (RETENTION_MS, Some("60000")),
                (SEGMENT_BYTES, Some("4194304")),
            ],
            &d,
        )
        .unwrap();
        assert_eq!(
            c.limits(&d),
            Some(PartitionLimits {
                segment_bytes: 4 << 20,
                retention_bytes: None,
                retention_ms: Some(60_000)
            })
        );
        let unlimited = TopicConfig::of([(RETENTION_MS, Some("-1"))], &d).unwrap();
        assert_eq!(
            unlimited.limits(&d).unwrap().retention_ms,
            None,
            "-1 is no limit"
        );
        assert_eq!(TopicConfig::default().limits(&d), None);
        for (name, value) in [
            (RETENTION_MS, "-2"),
            (RETENTION_MS, "soon"),
            (SEGMENT_BYTES, "4096"),
            (SEGMENT_BYTES, "4194305"),
            (SEGMENT_BYTES, "9223372036854771712"),
            (MAX_MESSAGE_BYTES, "2000000"),
            (CLEANUP_POLICY, "compact"),
            ("min.insync.replicas", "1"),
        ] {
            let e = TopicConfig::of([(name, Some(value))], &d).unwrap_err();
            assert_eq!(e.kind(), ResponseError::InvalidConfig, "{name}={value}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn edits_apply_in_order_and_lists_are_only_cleanup_policy() {
        let d = d();
        let edit = |name: &str, op, value: Option<&str>| Edit {
            name: name.into(),
            op,
            value: value.map(String::from),
        };
        let mut c = TopicConfig::of([(RETENTION_MS, Some("1000"))], &d).unwrap();
        c.edit(
            &[
                edit(SEGMENT_BYTES, SET, Some("4194304")),
                edit(RETENTION_MS, DELETE, None),
                edit(CLEANUP_POLICY, APPEND, Some("delete")),
            ],
            &d,
        )
        .unwrap();
        assert_eq!(
            c,
            TopicConfig::of(
                [
                    (SEGMENT_BYTES, Some("4194304")),
                    (CLEANUP_POLICY, Some("delete"))
                ],
                &d
            )
            .unwrap()
        );
        for bad in [
            edit(CLEANUP_POLICY, APPEND, Some("compact")),
            edit(CLEANUP_POLICY, SUBTRACT, Some("delete")),
            edit(RETENTION_MS, APPEND, Some("5")),
            edit(RETENTION_MS, 9, Some("5")),
        ] {
            assert!(
                c.clone().edit(std::slice::from_ref(&bad), &d).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn describe_says_where_each_value_comes_from() {
        let d = d();
        let c = TopicConfig::of([(MAX_MESSAGE_BYTES, Some("1000"))], &d).unwrap();
        let shown = c.describe(&d);
        let of = |n: &str| shown.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(
            (
                of(MAX_MESSAGE_BYTES).value.as_str(),
                of(MAX_MESSAGE_BYTES).source
            ),
            ("1000", Source::Topic)
        );
        assert_eq!(
            (of(RETENTION_MS).value.as_str(), of(RETENTION_MS).source),
            ("86400000", Source::Server)
        );
        assert_eq!(
            (
                of(RETENTION_BYTES).value.as_str(),
                of(RETENTION_BYTES).source
            ),
            ("-1", Source::Default)
        );
        assert_eq!(shown.len(), SERVED.len());
        assert_eq!(c.max_message_bytes(&d), 1000);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"max.message.bytes":"1000"}"#);
    }
}
