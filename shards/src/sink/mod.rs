//! Where fired windows go: an output topic of this server, a ClickHouse table, a
//! JSON-lines file. One task per sink per core, fed by a bounded queue of fired
//! windows.
//!
//! A sink retries a failed delivery with backoff (100 ms doubling to 5 s) until it
//! succeeds or the server stops; it never drops a window. While it retries, its queue
//! fills and the pipeline stops firing and reading (it falls behind, the log keeps
//! the backlog, ingest goes on); when the sink comes back it catches up.
//!
//! Exactly once across restarts: a restarted job replays from its checkpoint and
//! fires the same windows again with the same rows. ClickHouse collapses them
//! (ReplacingMergeTree keyed by key + window_start; read with `FINAL`, which also
//! hides a retried insert); the topic sink first reads what it wrote after the
//! checkpoint and skips those rows; the file sink cuts its file back to its length
//! at the checkpoint.
//!
//! The file sink opens (and cuts back) its file while its job starts, before the
//! core serves, with `fs::blocking`; each window's write then runs on the
//! executor's blocking thread (`fs::append`), never on the core, and is synced
//! (`fdatasync`) before the window counts as delivered, so the length a checkpoint
//! records is on the device: a power loss cannot leave the file shorter than the
//! checkpoint says (one sync per fired window per core, off the core).

pub mod http;
pub mod rows;
pub mod topic;

use crate::pipeline::spec::{Job, SinkConfig};
use crate::pipeline::window::{Fired, Layout};
use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidewater_io::fs::{self, blocking};
use tidewater_io::ShardLog;

/// Fired windows a sink may hold queued per core before the pipeline waits.
pub const QUEUE_FIRES: usize = 16;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CLICKHOUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of one sink on one core.
#[derive(Default, Debug)]
pub struct SinkStats {
    pub fires: Cell<u64>,
    pub rows: Cell<u64>,
    pub errors: Cell<u64>,
    pub retries: Cell<u64>,
    /// Windows queued, not yet delivered.
    pub queued: Cell<u64>,
    /// Fire latency samples (watermark passed → delivered), microseconds; the
    /// reader drains them.
    pub latencies_us: std::cell::RefCell<Vec<u64>>,
    /// Notified after each delivery: a pipeline waiting for room wakes here.
    pub delivered: tidewater_io::wait::Notify,
}

use crate::pipeline::records::bump;

/// A fired window on its way to the sinks, with its rows encoded as JSON once for
/// all the sinks that write JSON (none: `json` is `None`).
#[derive(Debug)]
pub struct Outgoing {
    pub fired: Fired,
    pub json: Option<rows::JsonRows>,
}

/// The pipeline's end of a sink.
pub struct SinkHandle {
    /// `topic:NAME`, `clickhouse:TABLE` or `file:PATH`.
    pub name: String,
    pub tx: LocalSender<Rc<Outgoing>>,
    /// It writes JSON rows (topic and file sinks): give it [`Outgoing::json`].
    pub json: bool,
    pub stats: Rc<SinkStats>,
    /// What a checkpoint records of this sink's position.
    pub outputs: Vec<Output>,
}

/// A place a sink writes whose position a checkpoint records.
#[derive(Clone, Debug)]
pub enum Output {
    /// A local partition of an output topic: (Kafka index, log id).
    Topic(u32, u32),
    /// A file and its length after the sink's last write.
    File(std::path::PathBuf, Rc<Cell<u64>>),
}

impl SinkHandle {
    /// Where each output stands now: (sink name, partition, end offset or length).
    pub fn positions(&self, log: &ShardLog) -> Vec<crate::pipeline::checkpoint::OutputSnap> {
        self.outputs
            .iter()
            .map(|o| match o {
                Output::Topic(p, id) => crate::pipeline::checkpoint::OutputSnap {
                    name: self.name.clone(),
                    partition: *p,
                    end: log.high_watermark(*id).unwrap_or(0),
                },
                Output::File(_, len) => crate::pipeline::checkpoint::OutputSnap {
                    name: self.name.clone(),
                    partition: 0,
                    end: len.get(),
                },
            })
            .collect()
    }
}

/// What a topic sink needs: the topic's partition count and this core's partitions
/// of it (Kafka partition index → log partition id).
#[derive(Clone, Debug)]
pub struct TopicTarget {
    pub partitions: u32,
    pub local: Vec<(u32, u32)>,
}

/// Starts the sink's task on this core.
pub fn start(
    cfg: &SinkConfig,
    job: Rc<Job>,
    layout: Rc<Layout>,
    (shard, log): (u32, Rc<ShardLog>),
    topic: Option<TopicTarget>,
    stop: Rc<dyn Fn() -> bool>,
    restored: &[crate::pipeline::checkpoint::OutputSnap],
) -> Result<SinkHandle, String> {
    let (tx, rx) = local_channel::new_bounded(QUEUE_FIRES);
    let stats = Rc::new(SinkStats::default());
    let (name, target) = match cfg {
        SinkConfig::Topic { topic: t } => {
            let target =
                topic.ok_or_else(|| format!("sink topic `{t}` is not a topic of this server"))?;
            if target.local.is_empty() {
                return Err(format!(
                    "sink topic `{t}` has {} partitions, fewer than the cores; give it at least one per core",
                    target.partitions
                ));
            }
            (
                format!("topic:{t}"),
                Target::Topic(target, Default::default()),
            )
        }
        SinkConfig::Clickhouse {
            url,
            table,
            user,
            password,
        } => {
            let ep = http::Endpoint::parse(url, user.as_deref(), password.as_deref())?;
            (
                format!("clickhouse:{table}"),
                Target::Clickhouse {
                    client: http::Client::new(ep, CLICKHOUSE_TIMEOUT),
                    table: table.clone(),
                    ready: false,
                },
            )
        }
        SinkConfig::File { path } => {
            let path = file_of(path, shard);
            let sink_name = file_output_name(&path);
            // The job is starting, the core does not serve yet: blocking calls.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                blocking::create_dir_all(dir).map_err(|e| {
                    format!("file sink: cannot create {}: {}", dir.display(), e.source)
                })?;
            }
            let file = blocking::open_append(&path)
                .map_err(|e| format!("file sink: cannot open {}: {}", path.display(), e.source))?;
            // Back to where the checkpoint saw it (the start when there is none): the
            // windows after it fire again and are written again.
            let keep = restored
                .iter()
                .find(|o| o.name == sink_name)
                .map_or(0, |o| o.end);
            let len = blocking::file_len(&file, &path).unwrap_or(0);
            if len > keep {
                blocking::set_len(&file, &path, keep).map_err(|e| {
                    format!(
                        "file sink: cannot cut {} back to {keep} bytes: {}",
                        path.display(),
                        e.source
                    )
                })?;
                tracing::info!(path = %path.display(), from = len, to = keep, "file sink cut back to its checkpoint");
            }
            let len = Rc::new(Cell::new(len.min(keep)));
            (sink_name, Target::File(Arc::new(file), path, len))
        }
    };
    let outputs = match &target {
        Target::Topic(t, _) => t
            .local
            .iter()
            .map(|&(p, id)| Output::Topic(p, id))
            .collect(),
        Target::File(_, path, len) => vec![Output::File(path.clone(), len.clone())],
        Target::Clickhouse { .. } => Vec::new(),
    };
    let replay_from: Vec<(u32, u64)> = match &target {
        Target::Topic(t, _) => t
            .local
            .iter()
            .map(|&(p, id)| {
                let from = restored
                    .iter()
                    .find(|o| o.name == name && o.partition == p)
                    .map_or(0, |o| o.end);
                (id, from)
            })
            .collect(),
        _ => Vec::new(),
    };
    let json = !matches!(target, Target::Clickhouse { .. });
    let task = SinkTask {
        name: name.clone(),
        job,
        layout,
        log,
        stats: stats.clone(),
        target,
    };
    glommio::spawn_local(task.run(rx, stop, replay_from)).detach();
    Ok(SinkHandle {
        name,
        tx,
        json,
        stats,
        outputs,
    })
}

/// The file core `shard` writes for a file sink configured with `path`.
pub fn file_of(path: &std::path::Path, shard: u32) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".shard-{shard}"));
    name.into()
}

/// The name a file's position has in a checkpoint.
pub fn file_output_name(file: &std::path::Path) -> String {
    format!("file:{}", file.display())
}

/// Rows (key, window_start) already in the output topic after the checkpoint.
type Written = std::collections::HashSet<(Box<[u8]>, i64)>;

/// The rows of `f` to write: those not in the output topic since the checkpoint.
/// Reads `written` only, so a delivery retried after a failure skips the same rows.
fn unwritten_rows<'f>(written: &'f Written, f: &'f Fired) -> impl Iterator<Item = usize> + 'f {
    (0..f.rows())
        .filter(move |&i| written.is_empty() || !written.contains(&(f.keys[i].clone(), f.start)))
}

/// After `f` is delivered: its window will not come again, so what was written of
/// it before the restart need not be remembered.
fn forget_window(written: &mut Written, f: &Fired) {
    if !written.is_empty() {
        written.retain(|&(_, start)| start != f.start);
    }
}

enum Target {
    Topic(TopicTarget, Written),
    Clickhouse {
        client: http::Client,
        table: String,
        ready: bool,
    },
    /// The file (shared with the blocking thread while a write runs), its path,
    /// and its length after the last write.
    File(Arc<fs::File>, std::path::PathBuf, Rc<Cell<u64>>),
}

struct SinkTask {
    name: String,
    job: Rc<Job>,
    layout: Rc<Layout>,
    log: Rc<ShardLog>,
    stats: Rc<SinkStats>,
    target: Target,
}

impl SinkTask {
    async fn run(
        mut self,
        rx: LocalReceiver<Rc<Outgoing>>,
        stop: Rc<dyn Fn() -> bool>,
        replay_from: Vec<(u32, u64)>,
    ) {
        if let Target::Topic(_, written) = &mut self.target {
            match written_since(&self.log, &replay_from).await {
                Ok(w) => {
                    if !w.is_empty() {
                        tracing::info!(job = %self.job.name, sink = %self.name, rows = w.len(),
                            "rows written after the checkpoint will not be written again");
                    }
                    *written = w;
                }
                Err(e) => tracing::error!(job = %self.job.name, sink = %self.name,
                    "cannot read what was written after the checkpoint; replayed rows may repeat: {e}"),
            }
        }
        while let Some(out) = rx.recv().await {
            let fired = &out.fired;
            let mut backoff = BACKOFF_FIRST;
            let mut failures = 0u32;
            loop {
                match self.deliver(&out).await {
                    Ok(()) => break,
                    Err(e) => {
                        bump(&self.stats.errors, 1);
                        failures += 1;
                        // One line per failure at first, then one per ~30 s.
                        if failures <= 3 || failures.is_multiple_of(8) {
                            tracing::warn!(
                                job = %self.job.name,
                                sink = %self.name,
                                window_start = fired.start,
                                failures,
                                "sink delivery failed, retrying in {backoff:?}: {e}"
                            );
                        }
                        if stop() {
                            return;
                        }
                        glommio::timer::sleep(backoff).await;
                        bump(&self.stats.retries, 1);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if failures > 0 {
                tracing::info!(job = %self.job.name, sink = %self.name, failures, "sink delivering again");
            }
            bump(&self.stats.fires, 1);
            bump(&self.stats.rows, fired.rows() as u64);
            self.stats
                .queued
                .set(self.stats.queued.get().saturating_sub(1));
            self.stats.delivered.notify();
            let mut l = self.stats.latencies_us.borrow_mut();
            if l.len() < 100_000 {
                l.push(fired.due.elapsed().as_micros() as u64);
            }
        }
    }

    async fn deliver(&mut self, out: &Outgoing) -> Result<(), String> {
        let (job, layout) = (&*self.job, &*self.layout);
        let f = &out.fired;
        let encoded;
        let json = match (&out.json, &self.target) {
            (Some(j), _) => j,
            (None, Target::Clickhouse { .. }) => &rows::JsonRows::default(),
            (None, _) => {
                // The pipeline encodes for JSON sinks; this only guards the contract.
                encoded = rows::JsonRows::encode(job, layout, f).await;
                &encoded
            }
        };
        match &mut self.target {
            Target::Topic(t, written) => {
                // Rows by partition: the key's partition when this core owns it (always,
                // when the sink topic has as many partitions as the source), else one of
                // this core's partitions chosen by the key.
                let mut by_partition: Vec<Vec<topic::OutRecord>> = vec![Vec::new(); t.local.len()];
                for i in unwritten_rows(written, f) {
                    let key = &f.keys[i];
                    let p = crate::partitioner::partition_for(key, t.partitions);
                    let slot = t
                        .local
                        .iter()
                        .position(|&(kp, _)| kp == p)
                        .unwrap_or(p as usize % t.local.len());
                    by_partition[slot].push(topic::OutRecord {
                        key: Some(Bytes::copy_from_slice(key)),
                        value: json.row(i),
                        timestamp_ms: f.end,
                        headers: Vec::new(),
                    });
                    if i % 1024 == 1023 {
                        glommio::yield_if_needed().await;
                    }
                }
                let parts: Vec<(u32, &[topic::OutRecord])> = by_partition
                    .iter()
                    .enumerate()
                    .filter(|(_, recs)| !recs.is_empty())
                    .map(|(slot, recs)| (t.local[slot].1, recs.as_slice()))
                    .collect();
                topic::append_all(&self.log, &parts)
                    .await
                    .map_err(|e| e.to_string())?;
                // Only once the rows are in: a retry after a failed append must
                // skip the same rows again.
                forget_window(written, f);
                Ok(())
            }
            Target::Clickhouse {
                client,
                table,
                ready,
            } => {
                if !*ready {
                    if let Some((db, _)) = table.split_once('.') {
                        clickhouse(client, &format!("CREATE DATABASE IF NOT EXISTS {db}"), &[])
                            .await?;
                    }
                    clickhouse(client, &rows::create_table(job, layout, table), &[]).await?;
                    *ready = true;
                }
                let mut body = Vec::with_capacity(f.rows() * 96);
                rows::row_binary(&mut body, layout, f);
                let q = format!(
                    "INSERT INTO {table} ({}) FORMAT RowBinary",
                    rows::columns(job, layout)
                );
                clickhouse(client, &q, &body).await
            }
            Target::File(file, path, len) => {
                // One write per window: O_APPEND keeps it whole. It runs on the
                // executor's blocking thread; the core goes on meanwhile.
                let after = fs::append(file.clone(), path, json.lines())
                    .await
                    .map_err(|e| format!("cannot write: {}", e.source))?;
                len.set(after);
                Ok(())
            }
        }
    }
}

/// (key, window_start) of every row in the given partitions from the given offsets.
async fn written_since(log: &ShardLog, from: &[(u32, u64)]) -> Result<Written, String> {
    let mut out = Written::new();
    for &(id, start) in from {
        crate::pipeline::records::read_from(log, id, start, |r| {
            if let (Some(k), Some(ws)) = (r.key, r.value.and_then(window_start)) {
                out.insert((k.into(), ws));
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `window_start` of a JSON row as the topic sink writes it, parsed as JSON: a key
/// whose text holds `"window_start":` cannot fool it.
fn window_start(row: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Start {
        window_start: i64,
    }
    serde_json::from_slice::<Start>(row)
        .ok()
        .map(|s| s.window_start)
}

async fn clickhouse(client: &mut http::Client, query: &str, body: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    let r = client
        .post(&format!("/?query={}", http::encode_query(query)), body)
        .await?;
    if r.status == 200 {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&r.body);
    Err(format!(
        "ClickHouse answered {} after {:?}: {}",
        r.status,
        started.elapsed(),
        text.trim().chars().take(500).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::{forget_window, unwritten_rows, window_start, Written};
    use crate::pipeline::window::Fired;

    #[test]
    fn a_retried_delivery_skips_the_same_rows_until_one_succeeds() {
        let fired = |start: i64| Fired {
            start,
            end: start + 60_000,
            keys: vec![
                b"a".to_vec().into(),
                b"b".to_vec().into(),
                b"c".to_vec().into(),
            ],
            slab: vec![0; 3],
            watermark: start + 60_000,
            due: std::time::Instant::now(),
        };
        let (w1, w2) = (fired(0), fired(60_000));
        let mut written: Written = [(b"b".to_vec().into(), 0), (b"a".to_vec().into(), 60_000)]
            .into_iter()
            .collect();
        // A failed append and its retry: the same rows both times.
        for _ in 0..2 {
            assert_eq!(
                unwritten_rows(&written, &w1).collect::<Vec<_>>(),
                vec![0, 2]
            );
        }
        forget_window(&mut written, &w1);
        assert_eq!(written.len(), 1, "only the delivered window is forgotten");
        assert_eq!(
            unwritten_rows(&written, &w2).collect::<Vec<_>>(),
            vec![1, 2]
        );
        forget_window(&mut written, &w2);
        assert!(written.is_empty());
        assert_eq!(unwritten_rows(&written, &w2).count(), 3);
    }

    #[test]
    fn window_start_is_read_as_json_not_found_in_text() {
        let row = br#"{"device_id":"a\"window_start\":1","window_start":1700000040000,"window_end":1700000100000,"n":3}"#;
        assert_eq!(window_start(row), Some(1_700_000_040_000));
        assert_eq!(window_start(b"not json"), None);
        assert_eq!(window_start(br#"{"n":1}"#), None);
    }
}
