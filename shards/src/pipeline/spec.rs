//! A job as the config declares it (`[[jobs]]`), and the checked, compiled form the
//! cores run.
//!
//! Owns validation: every name, field, duration and sink is checked at start-up, with
//! an error that names the job and the key, so a bad job never starts half-way.

use super::avro::{self, Projected, Projection, ReaderFields, SlotKind};
use super::json::{JsonProjection, TimeFormat};
use apache_avro::Schema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[[jobs]]` in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    /// The topic the job reads.
    pub source: String,
    #[serde(default)]
    pub format: Format,
    /// The reader schema (Avro formats); relative paths are from the config file.
    pub schema_file: Option<PathBuf>,
    /// The reader schema inline (Avro JSON), instead of `schema_file`.
    #[serde(default)]
    pub schema: Option<String>,
    /// The reader schema from the schema registry instead: a subject and one of
    /// its version numbers, read on every core when the server starts.
    #[serde(default)]
    pub schema_subject: Option<String>,
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// `avro-confluent`: writer schemas by schema-registry id (`{ 1 = "v1.avsc" }`),
    /// for setups without the registry; ids not listed are looked up in the
    /// server's schema registry. The reader schema's own id may be listed too.
    /// (TOML keys are strings: `{ "1" = ... }` and `{ 1 = ... }` both work.)
    #[serde(default)]
    pub schemas: BTreeMap<String, PathBuf>,
    /// The field the job is keyed by (string or bytes).
    pub key: String,
    /// An epoch-ms field, or `kafka_timestamp` for the record's timestamp.
    pub event_time: String,
    /// How a JSON event-time field is written: `epoch_ms` (a number, the default)
    /// or `rfc3339` (a string such as `2023-11-14T22:13:20.200Z`).
    #[serde(default)]
    pub event_time_format: Option<String>,
    pub window: WindowConfig,
    #[serde(default = "default_ooo")]
    pub max_out_of_orderness: String,
    #[serde(default = "zero")]
    pub allowed_lateness: String,
    #[serde(default = "default_idle")]
    pub idle_timeout: String,
    /// How far an event-time field may run ahead of its record's Kafka timestamp
    /// (the producer's clock when it sent it); records beyond it, or before 1970,
    /// go to `<job>.dlq` instead of moving the watermark there for good.
    #[serde(default = "default_ahead")]
    pub event_time_ahead_max: String,
    pub aggregates: Vec<AggregateConfig>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Open (key, window) entries one core may hold; the job stops with an error
    /// naming this key when it is reached.
    #[serde(default = "default_state_max")]
    pub state_entries_max: usize,
    /// How often a checkpoint is taken; "0s" turns checkpoints off (a restart then
    /// replays the source from the start of the log).
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval: String,
}

fn default_checkpoint() -> String {
    "10s".into()
}

fn default_ooo() -> String {
    "5s".into()
}
fn zero() -> String {
    "0s".into()
}
fn default_ahead() -> String {
    "1d".into()
}

fn default_idle() -> String {
    "10s".into()
}
fn default_state_max() -> usize {
    4_000_000
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A raw Avro datum per record value, written with `schema_file`.
    #[default]
    Avro,
    /// Confluent framing: magic byte 0, 4-byte schema id, Avro datum.
    AvroConfluent,
    /// One JSON object per record value.
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub size: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    #[serde(rename = "fn")]
    pub func: String,
    pub field: Option<String>,
    #[serde(rename = "as")]
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// Rows as JSON objects to a topic of this server, key = the job key.
    Topic { topic: String },
    /// Rows to a ClickHouse table over HTTP (RowBinary).
    Clickhouse {
        url: String,
        table: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password: Option<String>,
    },
    /// Rows as JSON lines appended to a file (one per core: `<path>.shard-N`).
    File { path: PathBuf },
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
}

/// One aggregate, compiled: what it reads and the type of its output column.
#[derive(Clone, Debug)]
pub struct Aggregate {
    pub func: Func,
    /// The slot it reads (`None` for count).
    pub slot: Option<u8>,
    /// The kind of the field it reads.
    pub kind: SlotKind,
    pub name: String,
}

impl Aggregate {
    /// The output column's type: integers stay exact except in averages.
    pub fn output(&self) -> SlotKind {
        match self.func {
            Func::Count => SlotKind::Int,
            Func::Avg => SlotKind::Float,
            _ => self.kind,
        }
    }
}

/// Where event time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTime {
    Field(u8),
    KafkaTimestamp,
}

/// How record values are decoded.
#[derive(Clone, Debug)]
pub enum Decoder {
    Avro(Projection),
    /// Projections by writer schema id: the static table, then the registry.
    AvroConfluent(Box<super::by_id::ByIds>),
    /// The fields wanted of each JSON object.
    Json(super::json::JsonProjection),
    /// A reader schema the registry holds, not yet read (`Job::resolve_reader`).
    Pending(Box<PendingReader>),
}

/// A job whose reader schema is a subject's version in the schema registry: the
/// job is compiled again, with that schema, once the registry is loaded.
#[derive(Clone, Debug)]
pub struct PendingReader {
    subject: String,
    version: u32,
    config: JobConfig,
    base: PathBuf,
    link: Option<super::by_id::RegistryLink>,
}

/// A job ready to run.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub source: String,
    pub key_field: String,
    pub key_slot: u8,
    pub event_time: EventTime,
    pub decoder: Decoder,
    pub window_ms: i64,
    pub out_of_orderness_ms: i64,
    pub lateness_ms: i64,
    pub idle_ms: i64,
    /// Event time may run at most this far ahead of the record's timestamp.
    pub ahead_ms_max: i64,
    pub aggregates: Vec<Aggregate>,
    pub sinks: Vec<SinkConfig>,
    pub state_entries_max: usize,
    /// 0: no checkpoints.
    pub checkpoint_ms: i64,
}

fn duration_ms(job: &str, key: &str, text: &str) -> Result<i64, String> {
    let d: Duration = humantime::parse_duration(text).map_err(|e| {
        format!("job `{job}`: {key} = \"{text}\": {e} (e.g. \"1m\", \"5s\", \"250ms\")")
    })?;
    i64::try_from(d.as_millis()).map_err(|_| format!("job `{job}`: {key} is too long"))
}

fn read_schema(job: &str, path: &Path) -> Result<Schema, String> {
    // Read while the configuration loads, before any core serves.
    let text = tidewater_io::fs::blocking::read_to_string(path).map_err(|e| {
        format!(
            "job `{job}`: cannot read schema {}: {}",
            path.display(),
            e.source
        )
    })?;
    parse_schema(&text).map_err(|e| {
        format!(
            "job `{job}`: schema {} is not valid Avro: {e}",
            path.display()
        )
    })
}

/// The kinds of the fields read without a schema (JSON, or a reader schema not yet
/// read): the key a string, the event time (slot 1, when a field) an integer, every
/// other field a number.
fn untyped_kinds(fields: usize, time_field: bool) -> Vec<SlotKind> {
    (0..fields)
        .map(|i| match i {
            0 => SlotKind::Bytes,
            1 if time_field => SlotKind::Int,
            _ => SlotKind::Float,
        })
        .collect()
}

/// A schema, its names checked first and the parser's panics contained
/// (`apache_avro` panics on some invalid schemas instead of failing).
fn parse_schema(text: &str) -> Result<Schema, String> {
    tidewater_registry::valid::check_names(text)?;
    tidewater_registry::guard::contained("parsing the schema", || {
        Schema::parse_str(text).map_err(|e| e.to_string())
    })
    .and_then(|parsed| parsed)
}

/// A job name: letters, digits, `_`, `-` and `.`.
fn check_name(job: &str) -> Result<(), String> {
    let valid_name = !job.is_empty()
        && job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_name {
        return Err(format!(
            "job name `{job}`: use letters, digits, `_`, `-` and `.` only"
        ));
    }
    Ok(())
}

impl JobConfig {
    /// Checks and compiles the job; `base` resolves relative schema paths.
    pub fn compile(&self, base: &Path) -> Result<Job, String> {
        let job = self.name.as_str();
        check_name(job)?;
        if self.window.kind != "tumbling" {
            return Err(format!(
                "job `{job}`: window type `{}` is not supported (only \"tumbling\")",
                self.window.kind
            ));
        }
        let window_ms = duration_ms(job, "window.size", &self.window.size)?;
        if window_ms <= 0 {
            return Err(format!("job `{job}`: window.size must be positive"));
        }
        let out_of_orderness_ms =
            duration_ms(job, "max_out_of_orderness", &self.max_out_of_orderness)?;
        let lateness_ms = duration_ms(job, "allowed_lateness", &self.allowed_lateness)?;
        let idle_ms = duration_ms(job, "idle_timeout", &self.idle_timeout)?;
        let ahead_ms_max = duration_ms(job, "event_time_ahead_max", &self.event_time_ahead_max)?;
        if self.aggregates.is_empty() {
            return Err(format!("job `{job}`: declare at least one aggregate"));
        }
        let (fields, time_field, parsed) = self.fields_read(job)?;
        self.time_format(job)?;
        let (decoder, kinds) = self.decoder(job, base, &fields, time_field)?;
        if let (Some(t), Some(k)) = (time_field, kinds.get(1)) {
            if *k != SlotKind::Int {
                return Err(format!(
                    "job `{job}`: event_time field `{t}` must be an integer (epoch ms)"
                ));
            }
        }
        let aggregates = parsed
            .into_iter()
            .map(|(func, a)| {
                let slot = a
                    .field
                    .as_ref()
                    .map(|f| fields.iter().position(|x| x == f).expect("added above") as u8);
                Aggregate {
                    func,
                    slot,
                    kind: slot.map_or(SlotKind::Int, |s| kinds[s as usize]),
                    name: a.name.clone(),
                }
            })
            .collect();
        self.check_sinks(job)?;
        if self.state_entries_max == 0 {
            return Err(format!("job `{job}`: state_entries_max must be positive"));
        }
        Ok(Job {
            name: self.name.clone(),
            source: self.source.clone(),
            key_field: self.key.clone(),
            key_slot: 0,
            event_time: match time_field {
                Some(_) => EventTime::Field(1),
                None => EventTime::KafkaTimestamp,
            },
            decoder,
            window_ms,
            out_of_orderness_ms,
            lateness_ms,
            idle_ms,
            ahead_ms_max,
            aggregates,
            sinks: self.sinks.clone(),
            state_entries_max: self.state_entries_max,
            checkpoint_ms: duration_ms(job, "checkpoint_interval", &self.checkpoint_interval)?,
        })
    }

    /// The fields the job reads (the key, the event time unless it is the Kafka
    /// timestamp, then each aggregate's field), the event time field, and the
    /// aggregates checked.
    #[allow(clippy::type_complexity)] // named once, here
    fn fields_read(
        &self,
        job: &str,
    ) -> Result<(Vec<&str>, Option<&str>, Vec<(Func, &AggregateConfig)>), String> {
        let mut fields: Vec<&str> = vec![self.key.as_str()];
        let time_field = (self.event_time != "kafka_timestamp").then_some(self.event_time.as_str());
        if let Some(t) = time_field {
            if t == self.key {
                return Err(format!("job `{job}`: the key cannot be the event time"));
            }
            fields.push(t);
        }
        let mut names = std::collections::HashSet::new();
        for name in [self.key.as_str(), "window_start", "window_end"] {
            names.insert(name);
        }
        let mut parsed = Vec::new();
        for a in &self.aggregates {
            let func = match a.func.as_str() {
                "count" => Func::Count,
                "sum" => Func::Sum,
                "min" => Func::Min,
                "max" => Func::Max,
                "avg" => Func::Avg,
                "first" => Func::First,
                "last" => Func::Last,
                other => {
                    return Err(format!(
                        "job `{job}`: aggregate fn `{other}` is not one of count, sum, min, max, avg, first, last"
                    ))
                }
            };
            if !names.insert(a.name.as_str()) {
                return Err(format!(
                    "job `{job}`: output column `{}` is named twice",
                    a.name
                ));
            }
            match (&a.field, func) {
                (None, Func::Count) => {}
                (None, _) => {
                    return Err(format!("job `{job}`: aggregate `{}` needs a field", a.name))
                }
                (Some(f), _) => {
                    if *f == self.key {
                        return Err(format!(
                            "job `{job}`: aggregate `{}` cannot read the key",
                            a.name
                        ));
                    }
                    if !fields.contains(&f.as_str()) {
                        fields.push(f);
                    }
                }
            }
            parsed.push((func, a));
        }
        Ok((fields, time_field, parsed))
    }

    /// How a record's value becomes the fields read, and each field's kind.
    fn decoder(
        &self,
        job: &str,
        base: &Path,
        fields: &[&str],
        time_field: Option<&str>,
    ) -> Result<(Decoder, Vec<SlotKind>), String> {
        match self.format {
            Format::Avro | Format::AvroConfluent => {
                let reader = match (&self.schema, &self.schema_file, &self.schema_subject) {
                    (Some(text), None, None) => parse_schema(text).map_err(|e| {
                        format!("job `{job}`: its inline schema is not valid Avro: {e}")
                    })?,
                    (None, Some(path), None) => read_schema(job, &base.join(path))?,
                    (None, None, Some(subject)) => {
                        return self.pending(job, base, subject, fields, time_field)
                    }
                    _ => {
                        return Err(format!(
                            "job `{job}`: Avro formats need exactly one of schema_file, schema and schema_subject"
                        ))
                    }
                };
                if self.schema_version.is_some() {
                    return Err(format!(
                        "job `{job}`: schema_version goes with schema_subject"
                    ));
                }
                let rf: ReaderFields = avro::reader_fields(&reader, fields, &self.key)
                    .map_err(|e| format!("job `{job}`: {e}"))?;
                let decoder = if self.format == Format::Avro {
                    if !self.schemas.is_empty() {
                        return Err(format!(
                            "job `{job}`: `schemas` is for format \"avro-confluent\""
                        ));
                    }
                    Decoder::Avro(
                        Projection::compile(&reader, &reader, &rf)
                            .map_err(|e| format!("job `{job}`: {e}"))?,
                    )
                } else {
                    let mut by_id = BTreeMap::new();
                    for (id_text, path) in &self.schemas {
                        let id: u32 = id_text.parse().map_err(|_| {
                            format!("job `{job}`: schemas key `{id_text}` is not a schema id (a number)")
                        })?;
                        let writer = read_schema(job, &base.join(path))?;
                        let p = Projection::compile(&writer, &reader, &rf).map_err(|e| {
                            format!("job `{job}`: schema id {id} ({}): {e}", path.display())
                        })?;
                        by_id.insert(id, p);
                    }
                    Decoder::AvroConfluent(Box::new(super::by_id::ByIds::new(
                        by_id,
                        reader,
                        rf.clone(),
                    )))
                };
                Ok((decoder, rf.kinds))
            }
            Format::Json => {
                let kinds = untyped_kinds(fields.len(), time_field.is_some());
                let table = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.to_string(), i as u8, kinds[i]))
                    .collect();
                let format = self.time_format(job)?;
                let time = time_field.map(|_| (1u8, format));
                Ok((Decoder::Json(JsonProjection::new(table, time)), kinds))
            }
        }
    }

    /// A job whose reader schema is read from the registry at start: checked as far
    /// as it can be without it; the fields' kinds until then are the JSON ones.
    fn pending(
        &self,
        job: &str,
        base: &Path,
        subject: &str,
        fields: &[&str],
        time_field: Option<&str>,
    ) -> Result<(Decoder, Vec<SlotKind>), String> {
        let version = match self.schema_version {
            Some(v) if v >= 1 => v,
            _ => {
                return Err(format!(
                    "job `{job}`: schema_subject needs schema_version, a version number (not latest: every core and every restart must read the same reader schema)"
                ))
            }
        };
        if !self.schemas.is_empty() && self.format == Format::Avro {
            return Err(format!(
                "job `{job}`: `schemas` is for format \"avro-confluent\""
            ));
        }
        let kinds = untyped_kinds(fields.len(), time_field.is_some());
        let pending = PendingReader {
            subject: subject.to_string(),
            version,
            config: self.clone(),
            base: base.to_path_buf(),
            link: None,
        };
        Ok((Decoder::Pending(Box::new(pending)), kinds))
    }

    /// How the event time is written (`event_time_format`): JSON jobs only.
    fn time_format(&self, job: &str) -> Result<TimeFormat, String> {
        match self.event_time_format.as_deref() {
            None | Some("epoch_ms") => Ok(TimeFormat::EpochMs),
            Some("rfc3339") if self.format == Format::Json => Ok(TimeFormat::Rfc3339),
            Some("rfc3339") => Err(format!(
                "job `{job}`: event_time_format = \"rfc3339\" is for format = \"json\"; an Avro event time is a long (epoch ms)"
            )),
            Some(other) => Err(format!(
                "job `{job}`: event_time_format = \"{other}\": use epoch_ms or rfc3339"
            )),
        }
    }

    fn check_sinks(&self, job: &str) -> Result<(), String> {
        for s in &self.sinks {
            match s {
                SinkConfig::Clickhouse { url, table, .. } => {
                    if !url.starts_with("http://") {
                        return Err(format!(
                            "job `{job}`: ClickHouse url `{url}` must start with http://"
                        ));
                    }
                    let ok = table.split('.').count() <= 2
                        && table.split('.').all(|p| {
                            !p.is_empty()
                                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        });
                    if !ok {
                        return Err(format!(
                            "job `{job}`: ClickHouse table `{table}`: use `db.table` with letters, digits and `_`"
                        ));
                    }
                }
                SinkConfig::Topic { topic } if *topic == self.source => {
                    return Err(format!(
                        "job `{job}`: the sink topic cannot be the source topic"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Job {
    /// Whether the job reads schemas only from the schema registry.
    pub fn needs_registry(&self) -> bool {
        match &self.decoder {
            Decoder::AvroConfluent(b) => !b.has_fixed(),
            Decoder::Pending(_) => true,
            _ => false,
        }
    }

    /// Lets an `avro-confluent` job look ids up in the server's registry.
    pub fn link_registry(&mut self, link: super::by_id::RegistryLink) {
        match &mut self.decoder {
            Decoder::AvroConfluent(b) => b.link(link),
            Decoder::Pending(p) => p.link = Some(link),
            _ => {}
        }
    }

    /// A job whose reader schema is a subject's version in the registry, compiled
    /// again with it (every core does the same, from the same loaded registry).
    /// A version soft-deleted since is still read: the job was written for it.
    pub fn resolve_reader(&mut self, reg: &tidewater_registry::Registry) -> Result<(), String> {
        let Decoder::Pending(p) = &self.decoder else {
            return Ok(());
        };
        let which = tidewater_registry::store::VersionRef::Number(p.version);
        let found = reg.version(&p.subject, which, true).map_err(|e| {
            format!(
                "job `{}`: reader schema subject '{}' version {}: {} (register it in the schema registry, then start again)",
                self.name, p.subject, p.version, e.message
            )
        })?;
        let text = reg
            .whole_schema(found.id)
            .map_err(|e| format!("job `{}`: reader schema: {}", self.name, e.message))?;
        let mut config = p.config.clone();
        (config.schema, config.schema_subject, config.schema_version) = (Some(text), None, None);
        let mut job = config.compile(&p.base)?;
        if let Some(link) = p.link.clone() {
            job.link_registry(link);
        }
        *self = job;
        Ok(())
    }

    /// Topics the job writes besides its sinks: dead letters and late events.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.name)
    }

    pub fn late_topic(&self) -> String {
        format!("{}.late", self.name)
    }

    /// Decodes one record value into `out`; a JSON key with escapes is unescaped
    /// into `scratch`, which `out` then borrows.
    pub fn decode<'a>(
        &self,
        value: &'a [u8],
        out: &mut Projected<'a>,
        scratch: &'a mut Vec<u8>,
    ) -> Result<(), avro::DecodeError> {
        match &self.decoder {
            Decoder::Avro(p) => p.project(value, out),
            Decoder::AvroConfluent(by_id) => by_id.project(value, out),
            Decoder::Json(p) => p.project(value, out, scratch),
            Decoder::Pending(p) => Err(avro::DecodeError(format!(
                "the reader schema (subject '{}' version {}) was not read from the registry",
                p.subject, p.version
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::avro::Num;

    pub fn reference_job_toml() -> &'static str {
        r#"
name = "device_minute"
source = "iot-sensor-data"
format = "avro"
schema_file = "schemas/sensor.avsc"
key = "device_id"
event_time = "timestamp"
window = { type = "tumbling", size = "1m" }
max_out_of_orderness = "5s"
allowed_lateness = "0s"
idle_timeout = "10s"
aggregates = [
  { fn = "count", as = "events" },
  { fn = "min", field = "temperature", as = "temperature_min" },
  { fn = "max", field = "temperature", as = "temperature_max" },
  { fn = "avg", field = "temperature", as = "temperature_avg" },
  { fn = "avg", field = "humidity", as = "humidity_avg" },
  { fn = "sum", field = "pressure", as = "pressure_sum" },
]

[[sinks]]
type = "topic"
topic = "device_minute"

[[sinks]]
type = "clickhouse"
url = "http://127.0.0.1:8123"
table = "iot.device_minute"
"#
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_reference_job_compiles() {
        let c: JobConfig = toml_like(reference_job_toml());
        let j = c.compile(&root()).unwrap();
        assert_eq!(j.window_ms, 60_000);
        assert_eq!(j.out_of_orderness_ms, 5_000);
        assert_eq!(j.idle_ms, 10_000);
        assert_eq!(j.event_time, EventTime::Field(1));
        assert_eq!(j.aggregates.len(), 6);
        assert_eq!(j.aggregates[1].slot, Some(2));
        assert_eq!(j.aggregates[4].slot, Some(3));
        assert_eq!(j.sinks.len(), 2);
    }

    #[test]
    fn mistakes_are_named() {
        let base = reference_job_toml();
        for (from, to, says) in [
            ("size = \"1m\"", "size = \"1 fortnight\"", "window.size"),
            ("\"tumbling\"", "\"session\"", "not supported"),
            ("fn = \"sum\"", "fn = \"median\"", "median"),
            (
                "field = \"pressure\"",
                "field = \"nope\"",
                "no field `nope`",
            ),
            (
                "field = \"pressure\"",
                "field = \"firmware\"",
                "only the key",
            ),
            ("as = \"humidity_avg\"", "as = \"events\"", "named twice"),
            ("http://127", "https://127", "http://"),
            ("iot.device_minute", "iot.dev;ice", "db.table"),
        ] {
            let text = base.replace(from, to);
            assert_ne!(text, base, "{from}");
            let e = toml_like(&text).compile(&root()).unwrap_err();
            assert!(
                e.contains(says) && e.contains("device_minute"),
                "{from}: {e}"
            );
        }
    }

    #[test]
    fn a_reader_schema_from_the_registry_is_read_at_start() {
        let text = reference_job_toml().replace(
            "schema_file = \"schemas/sensor.avsc\"",
            "schema_subject = \"sensor-reader\"\nschema_version = 1",
        );
        let text = text.replace("format = \"avro\"", "format = \"avro-confluent\"");
        let mut job = toml_like(&text).compile(&root()).unwrap();
        assert!(job.needs_registry());
        let mut out = Projected::default();
        let mut scratch = Vec::new();
        assert!(job
            .decode(&[0, 0, 0, 0, 1], &mut out, &mut scratch)
            .is_err());
        let mut reg = tidewater_registry::Registry::default();
        let e = job.resolve_reader(&reg).unwrap_err();
        assert!(
            e.contains("sensor-reader") && e.contains("version 1"),
            "{e}"
        );
        let schema = std::fs::read_to_string(root().join("schemas/sensor.avsc")).unwrap();
        let (_, records) = reg.register("sensor-reader", &schema, None, &[]).unwrap();
        records.into_iter().for_each(|r| reg.apply(r));
        job.resolve_reader(&reg).unwrap();
        let from_file = toml_like(reference_job_toml()).compile(&root()).unwrap();
        let kinds = |j: &Job| j.aggregates.iter().map(|a| a.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&job), kinds(&from_file));
        assert!(matches!(job.decoder, Decoder::AvroConfluent(_)));
        for (from, to, says) in [
            ("schema_version = 1", "", "needs schema_version"),
            (
                "schema_subject = \"sensor-reader\"\n",
                "schema_file = \"schemas/sensor.avsc\"\n",
                "schema_version goes with schema_subject",
            ),
            (
                "schema_version = 1",
                "schema_version = 1\nschema = \"{}\"",
                "exactly one of",
            ),
        ] {
            let bad = text.replace(from, to);
            let e = toml_like(&bad).compile(&root()).unwrap_err();
            assert!(e.contains(says), "{from}: {e}");
        }
    }

    #[test]
    fn json_records_decode() {
        let mut c: JobConfig = toml_like(reference_job_toml());
        c.format = Format::Json;
        c.schema_file = None;
        let j = c.compile(&root()).unwrap();
        let mut out = Projected::default();
        let mut scratch = Vec::new();
        j.decode(
            br#"{"device_id":"d-1","timestamp":1700000000000,"temperature":21.5,"humidity":null,"pressure":3}"#,
            &mut out,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(out.key, Some(&b"d-1"[..]));
        assert_eq!(out.vals[1], Some(Num::I(1_700_000_000_000)));
        assert_eq!(out.vals[2], Some(Num::F(21.5)));
        assert_eq!(out.vals[3], None);
        assert_eq!(out.vals[4], Some(Num::F(3.0)));
        let mut scratch = Vec::new();
        assert!(j.decode(b"[1,2]", &mut out, &mut scratch).is_err());
        let mut scratch = Vec::new();
        assert!(j
            .decode(br#"{"timestamp":"x"}"#, &mut out, &mut scratch)
            .is_err());
        c.event_time_format = Some("rfc3339".into());
        let j = c.compile(&root()).unwrap();
        let mut scratch = Vec::new();
        j.decode(
            br#"{"device_id":"d\u002d1","timestamp":"2023-11-14T22:13:20Z"}"#,
            &mut out,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(out.key, Some(&b"d-1"[..]));
        assert_eq!(out.vals[1], Some(Num::I(1_700_000_000_000)));
        c.format = Format::Avro;
        c.schema_file = Some("schemas/sensor.avsc".into());
        assert!(c
            .compile(&root())
            .unwrap_err()
            .contains("event_time_format"));
    }

    fn toml_like(text: &str) -> JobConfig {
        toml::from_str(text).unwrap()
    }
}
