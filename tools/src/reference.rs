//! The reference job as a config file: `iot-sensor-data` (8 partitions), keyBy
//! `device_id`, 1-minute tumbling windows, count/min/max/avg/sum, and its sinks.
//! The demo, the benchmark and the tests all run this one text.

use std::path::Path;

/// How the job reads its records and how often it checkpoints.
pub struct Job<'a> {
    /// `format = ...` and its schema keys (`schema_file`, `schemas`), as TOML lines.
    pub format: String,
    pub idle_timeout: &'a str,
    pub checkpoint_interval: &'a str,
}

impl Job<'_> {
    /// Raw Avro records written with `schema`.
    pub fn avro(schema: &Path) -> String {
        format!(
            "format = \"avro\"\nschema_file = {:?}\n",
            schema.display().to_string()
        )
    }
}

/// The whole config: the topic, the job, then `sinks` (TOML, see [`sinks`]).
pub fn config(job: &Job<'_>, sinks: &str) -> String {
    format!(
        r#"[[topics]]
name = "iot-sensor-data"
partitions = 8

[[jobs]]
name = "device_minute"
source = "iot-sensor-data"
{format}key = "device_id"
event_time = "timestamp"
window = {{ type = "tumbling", size = "1m" }}
max_out_of_orderness = "5s"
allowed_lateness = "0s"
idle_timeout = "{idle}"
checkpoint_interval = "{checkpoint}"
aggregates = [
  {{ fn = "count", as = "events" }},
  {{ fn = "min", field = "temperature", as = "temperature_min" }},
  {{ fn = "max", field = "temperature", as = "temperature_max" }},
  {{ fn = "avg", field = "temperature", as = "temperature_avg" }},
  {{ fn = "avg", field = "humidity", as = "humidity_avg" }},
  {{ fn = "sum", field = "pressure", as = "pressure_sum" }},
]
{sinks}"#,
        format = job.format,
        idle = job.idle_timeout,
        checkpoint = job.checkpoint_interval,
    )
}

/// The reference sinks: the output topic `device_minute`, JSON-lines files under
/// `out`, and ClickHouse (`iot.device_minute`) when a URL is given.
pub fn sinks(out: &Path, clickhouse: Option<&str>) -> String {
    let mut s = format!(
        "\n[[jobs.sinks]]\ntype = \"topic\"\ntopic = \"device_minute\"\n\n[[jobs.sinks]]\ntype = \"file\"\npath = {:?}\n",
        out.join("device_minute.jsonl").display().to_string()
    );
    if let Some(url) = clickhouse {
        s.push_str(&format!(
            "\n[[jobs.sinks]]\ntype = \"clickhouse\"\nurl = \"{url}\"\ntable = \"iot.device_minute\"\n"
        ));
    }
    s
}
