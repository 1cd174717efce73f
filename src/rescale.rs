//! Moving a data directory to another number of cores, before the cores start.
//!
//! Owns the one step that changes which core holds what. Partition `p` lives on core
//! `p % cores`, and a job's keyed state lives with its key group (the source partition
//! a key hashes to), so a new core count moves whole partitions and whole key groups:
//!
//! 1. **Copy**: every partition of every old core's log is copied, batch by batch with
//!    its offsets, into a new log for its new owner under `shard-<j>.rescale` beside
//!    the old `shard-<k>` directories (journal and ledger directories alike). Each
//!    job's newest complete checkpoint is cut for the new cores
//!    ([`checkpoint::regroup`]) as a new checkpoint id, without its manifest yet.
//! 2. **Commit**: a `RESCALE` file in the data directory records the step (from, to,
//!    the manifests to write, the file-sink files to cut back); written whole and
//!    synced, it is the point of no return.
//! 3. **Switch**: the old directories become `shard-<k>.old`, the new ones take their
//!    names, the manifests and the core count are written, file-sink files are cut
//!    back to their checkpoint, `RESCALE` is removed, then the old directories. An
//!    old directory is moved aside only while its replacement waits beside it, and
//!    nothing is removed before every new directory is in place and the record is
//!    gone, so after a crash at any point the next start finds `RESCALE` and finishes.
//!
//! A crash before the commit leaves the old layout whole; the `.rescale` directories
//! are removed at the next attempt. Never writes into an old core's directories
//! except by opening its log (which recovers it as a normal start would), and never
//! removes them before the new layout is in place.

use crate::config::Settings;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tidewater_io::{fs, Durability, ShardLog};
use tidewater_shards::pipeline::checkpoint;
use tidewater_shards::pipeline::spec::SinkConfig;
use tidewater_shards::{partition_owner, sink, Topic};

const MARKER: &str = "RESCALE";
/// Bytes read from an old partition at a time.
const COPY_READ_BYTES: usize = 8 << 20;

/// What the commit file records.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    from: u32,
    to: u32,
    /// (job, checkpoint id) to mark complete.
    manifests: Vec<(String, u64)>,
    /// Files to cut back to a length.
    truncate: Vec<(u64, PathBuf)>,
}

impl Plan {
    fn encode(&self) -> String {
        let mut s = format!("tidewater rescale\nfrom {}\nto {}\n", self.from, self.to);
        for (job, id) in &self.manifests {
            s.push_str(&format!("manifest {id} {job}\n"));
        }
        for (len, path) in &self.truncate {
            s.push_str(&format!("truncate {len} {}\n", path.display()));
        }
        s
    }

    fn decode(text: &str) -> Option<Plan> {
        let mut lines = text.lines();
        if lines.next()? != "tidewater rescale" {
            return None;
        }
        let mut plan = Plan::default();
        for line in lines {
            let (what, rest) = line.split_once(' ')?;
            match what {
                "from" => plan.from = rest.parse().ok()?,
                "to" => plan.to = rest.parse().ok()?,
                "manifest" => {
                    let (id, job) = rest.split_once(' ')?;
                    plan.manifests.push((job.to_string(), id.parse().ok()?));
                }
                "truncate" => {
                    let (len, path) = rest.split_once(' ')?;
                    plan.truncate.push((len.parse().ok()?, PathBuf::from(path)));
                }
                _ => return None,
            }
        }
        (plan.from > 0 && plan.to > 0).then_some(plan)
    }
}

/// Finishes a rescale a crash interrupted; then, if the data directory was written
/// by another number of cores than `to`, moves it to `to`. `found` is the count the
/// directory records (None: a new directory).
pub fn ensure(settings: &Settings, topics: &[Topic], found: Option<u32>, to: u32) -> Result<u32> {
    let marker = settings.data_dir.join(MARKER);
    let mut found = found;
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let plan = Plan::decode(&text)
                .with_context(|| format!("{}: not a rescale record", marker.display()))?;
            tracing::warn!(
                from = plan.from,
                to = plan.to,
                "finishing a rescale that was interrupted"
            );
            switch(settings, &plan)?;
            found = Some(plan.to);
        }
        // No record: what a finished switch had not removed yet goes now.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => remove_old(&parents(settings))?,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", marker.display())),
    }
    let Some(from) = found.filter(|&f| f != to) else {
        return Ok(to);
    };
    let started = std::time::Instant::now();
    tracing::info!(
        from,
        to,
        "the data directory was written by {from} cores: moving partitions and state to {to}"
    );
    let plan = prepare(settings, topics, from, to)?;
    // The new directories and checkpoint parts are durable before the record is.
    for parent in parents(settings) {
        sync_dir(&parent)?;
    }
    let root = settings.data_dir.join("checkpoints");
    for (job, _) in &plan.manifests {
        sync_dir(&root.join(job))?;
        sync_dir(&root)?;
    }
    fs::blocking::write_durable(&marker, plan.encode().as_bytes())
        .with_context(|| format!("cannot write {}", marker.display()))?;
    switch(settings, &plan)?;
    tracing::info!(
        from,
        to,
        secs = started.elapsed().as_secs_f64(),
        "rescaled: partitions, checkpoints and outputs now belong to {to} cores"
    );
    Ok(to)
}

/// The journal and ledger parents (one when they are the same directory).
fn parents(settings: &Settings) -> Vec<PathBuf> {
    let mut v = vec![settings.journal_dir.clone(), settings.ledger_dir.clone()];
    v.dedup();
    v
}

fn shard_dir(parent: &Path, shard: u32, suffix: &str) -> PathBuf {
    parent.join(format!("shard-{shard}{suffix}"))
}

/// Step 1: the new logs and checkpoints, beside the old ones.
fn prepare(settings: &Settings, topics: &[Topic], from: u32, to: u32) -> Result<Plan> {
    for parent in parents(settings) {
        for j in 0..to.max(from) {
            let d = shard_dir(&parent, j, ".rescale");
            if d.exists() {
                tracing::warn!(path = %d.display(), "removing what an interrupted rescale left");
                std::fs::remove_dir_all(&d)
                    .with_context(|| format!("cannot remove {}", d.display()))?;
            }
        }
    }
    copy_logs(settings, from, to)?;
    let mut plan = Plan {
        from,
        to,
        ..Plan::default()
    };
    let root = settings.data_dir.join("checkpoints");
    for job in &settings.jobs {
        let groups = topics
            .iter()
            .find(|t| t.name == job.source)
            .map_or(0, |t| t.partitions);
        let files: Vec<&Path> = job
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::File { path } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        let (latest, _) = if job.checkpoint_ms > 0 {
            checkpoint::latest(&root, &job.name, from)
        } else {
            (None, Vec::new())
        };
        let old = match latest {
            Some(id) => Some(
                checkpoint::read_all(&root, &job.name, id, from)
                    .with_context(|| format!("job {}: checkpoint {id}", job.name))?,
            ),
            None => {
                tracing::info!(job = %job.name, "no checkpoint to move: the job will replay its source from the start of the log");
                None
            }
        };
        // Each old core's file goes back to where its checkpoint saw it (all of it
        // when there is none): what came after is written again by the new owners.
        let file_end = |path: &Path, k: u32| -> u64 {
            let file = sink::file_of(path, k);
            let name = sink::file_output_name(&file);
            old.as_ref()
                .and_then(|parts| parts[k as usize].outputs.iter().find(|o| o.name == name))
                .map_or(0, |o| o.end)
        };
        for path in &files {
            for k in 0..from {
                plan.truncate
                    .push((file_end(path, k), sink::file_of(path, k)));
            }
        }
        for s in &job.sinks {
            if let SinkConfig::Topic { topic } = s {
                let n = topics
                    .iter()
                    .find(|t| &t.name == topic)
                    .map_or(0, |t| t.partitions);
                if n != groups {
                    // A row goes to its key's partition only when the counts agree;
                    // otherwise to one of its core's, which the move changes.
                    tracing::warn!(job = %job.name, topic = %topic,
                        "the sink topic has {n} partitions, the source {groups}: windows replayed after this move may be written to it twice");
                }
            }
        }
        let Some(old) = &old else { continue };
        if groups == 0 {
            bail!(
                "job {}: its source {} is not a topic of this server",
                job.name,
                job.source
            );
        }
        let id = checkpoint::highest(&root, &job.name) + 1;
        let mut parts = checkpoint::regroup(old, to, groups, id);
        for (j, part) in parts.iter_mut().enumerate() {
            let j = j as u32;
            for path in &files {
                let file = sink::file_of(path, j);
                // A core that wrote this file before keeps what its checkpoint saw;
                // a file no old core wrote is whole history, kept as it is.
                let end = if j < from {
                    file_end(path, j)
                } else {
                    std::fs::metadata(&file).map_or(0, |m| m.len())
                };
                part.outputs.push(checkpoint::OutputSnap {
                    name: sink::file_output_name(&file),
                    partition: 0,
                    end,
                });
            }
            checkpoint::blocking::write_part(&root, part)?;
        }
        tracing::info!(job = %job.name, from_checkpoint = old[0].id, checkpoint = id, "checkpoint cut for {to} cores");
        plan.manifests.push((job.name.clone(), id));
    }
    Ok(plan)
}

/// Copies every partition of the `from` old logs into `to` new logs.
fn copy_logs(settings: &Settings, from: u32, to: u32) -> Result<()> {
    let settings = settings.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("tw-rescale")
        .io_memory(settings.log_config(0).io_memory_bytes())
        .spawn(move || async move { copy_logs_on(&settings, from, to).await })
        .map_err(|e| anyhow::anyhow!("cannot start the rescale executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("the rescale executor failed: {e}"))?
}

async fn copy_logs_on(settings: &Settings, from: u32, to: u32) -> Result<()> {
    let mut new = Vec::new();
    for j in 0..to {
        let mut cfg = settings.log_config(j);
        cfg.journal_dir = shard_dir(&settings.journal_dir, j, ".rescale");
        cfg.ledger_dir = shard_dir(&settings.ledger_dir, j, ".rescale");
        // Made durable by close(), before the commit.
        cfg.durability = Durability::Never;
        let (log, _) = ShardLog::open(cfg)
            .await
            .with_context(|| format!("cannot create the log of new core {j}"))?;
        new.push(log);
    }
    let (mut partitions, mut bytes) = (0u64, 0u64);
    for k in 0..from {
        let cfg = settings.log_config(k);
        let (old, report) = ShardLog::open(cfg.clone())
            .await
            .with_context(|| format!("cannot open the log of old core {k}"))?;
        if !report.dropped.is_empty() {
            tracing::warn!(
                core = k,
                dropped = report.dropped.len(),
                "recovery of an old core's log dropped damaged frames"
            );
        }
        for (name, id) in old.partitions() {
            let index: u32 = name
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse().ok())
                .with_context(|| {
                    format!(
                        "{}: partition {name} has no index",
                        cfg.ledger_dir.display()
                    )
                })?;
            let to_core = partition_owner(index, to);
            let dest = &new[to_core as usize];
            let start = old.log_start_offset(id)?;
            let end = old.high_watermark(id)?;
            let new_id = dest.create_partition_at(&name, start)?;
            let mut next = start;
            while next < end {
                for e in old.read(id, next, COPY_READ_BYTES).await? {
                    // Read buffers live on the core that read them: the batch is copied.
                    let batch = bytes::Bytes::copy_from_slice(&e.payload);
                    let got = dest
                        .append(new_id, batch, e.record_count, e.timestamp_ms)
                        .await?;
                    if got.base_offset != e.base_offset {
                        bail!(
                            "partition {name}: batch at offset {} landed at {} in the new log",
                            e.base_offset,
                            got.base_offset
                        );
                    }
                    bytes += e.payload.len() as u64;
                    next = e.end_offset();
                }
            }
            if dest.high_watermark(new_id)? != end || dest.log_start_offset(new_id)? != start {
                bail!("partition {name}: the copy does not span offsets {start}..{end}");
            }
            partitions += 1;
            tracing::info!(partition = %name, from_core = k, to_core, start, end, "partition copied");
        }
        old.close().await?;
    }
    for log in &new {
        log.close().await?;
    }
    tracing::info!(partitions, bytes, "every partition copied");
    Ok(())
}

/// Step 3 after the commit; safe to run again after a crash at any point: a
/// directory is moved aside only while its replacement is still waiting beside it
/// (or when no new core takes its name), nothing is removed until every new
/// directory is in place and the record is gone.
fn switch(settings: &Settings, plan: &Plan) -> Result<()> {
    move_dirs(&parents(settings), plan.from, plan.to)?;
    let root = settings.data_dir.join("checkpoints");
    for (job, id) in &plan.manifests {
        checkpoint::blocking::write_manifest(&root, job, *id, plan.to)?;
    }
    for (len, path) in &plan.truncate {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > *len) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(*len).and(f.sync_all()))
                .with_context(|| format!("cannot cut {} back to {len} bytes", path.display()))?;
            tracing::info!(path = %path.display(), to = len, "file sink cut back to its checkpoint");
        }
    }
    write_shard_count(&settings.data_dir, plan.to)?;
    let marker = settings.data_dir.join(MARKER);
    std::fs::remove_file(&marker).with_context(|| format!("cannot remove {}", marker.display()))?;
    sync_dir(&settings.data_dir)?;
    remove_old(&parents(settings))
}

/// Puts each `shard-<j>.rescale` in the place of `shard-<j>` and the old ones aside
/// as `shard-<k>.old`, in every parent; idempotent.
fn move_dirs(parents: &[PathBuf], from: u32, to: u32) -> Result<()> {
    for parent in parents {
        for k in 0..from {
            let cur = shard_dir(parent, k, "");
            let waiting = shard_dir(parent, k, ".rescale").exists();
            // `shard-k` is old while its replacement waits, or when no new core is k;
            // otherwise it already is the new one.
            if cur.exists() && (waiting || k >= to) {
                let old = shard_dir(parent, k, ".old");
                if old.exists() {
                    bail!(
                        "{} and {} both exist: move one away by hand",
                        cur.display(),
                        old.display()
                    );
                }
                rename(&cur, &old)?;
            }
        }
        for j in 0..to {
            let (new, cur) = (shard_dir(parent, j, ".rescale"), shard_dir(parent, j, ""));
            if new.exists() {
                if cur.exists() {
                    bail!(
                        "{} and {} both exist: move one away by hand",
                        new.display(),
                        cur.display()
                    );
                }
                rename(&new, &cur)?;
            }
            if !cur.is_dir() {
                bail!(
                    "{} is missing after a rescale to {to} cores; the old data is kept as shard-*.old beside it",
                    cur.display(),
                );
            }
        }
        sync_dir(parent)?;
    }
    Ok(())
}

/// Removes the old directories a finished switch left (only ever called with no
/// `RESCALE` record on disk: they are garbage by then).
fn remove_old(parents: &[PathBuf]) -> Result<()> {
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("shard-") && name.ends_with(".old") {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::blocking::sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))
}

/// The file that records the core count a data directory is laid out for.
pub(crate) const CLUSTER_META: &str = "tidewater.meta";

/// The core count the data directory was written by (None: a new directory).
/// Partitions live on core `partition % cores`, so another count must move them
/// first (below).
pub(crate) fn recorded_shard_count(data_dir: &Path) -> Result<Option<u32>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let meta = data_dir.join(CLUSTER_META);
    match std::fs::read_to_string(&meta) {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("shards "))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&n| n > 0)
            .map(Some)
            .with_context(|| format!("{}: not a Tidewater meta file", meta.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", meta.display())),
    }
}

/// Records the core count the data directory is laid out for (whole and synced).
pub(crate) fn write_shard_count(data_dir: &Path, shard_count: u32) -> Result<()> {
    let meta = data_dir.join(CLUSTER_META);
    let text = format!("tidewater 1\nshards {shard_count}\n");
    // Start-up, before any core serves.
    tidewater_io::fs::blocking::write_durable(&meta, text.as_bytes())
        .with_context(|| format!("cannot write {}", meta.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_record_round_trips_and_refuses_garbage() {
        let plan = Plan {
            from: 2,
            to: 1,
            manifests: vec![("device_minute".into(), 12)],
            truncate: vec![(77, PathBuf::from("out/rows with space.jsonl.shard-1"))],
        };
        assert_eq!(Plan::decode(&plan.encode()), Some(plan));
        assert_eq!(Plan::decode("tidewater rescale\nfrom 2\n"), None);
        assert_eq!(Plan::decode("something else\nfrom 2\nto 1\n"), None);
    }

    /// Each old `shard-*` directory holds a file naming its generation.
    fn layout(parent: &Path, dirs: &[(&str, &str)]) {
        for (name, tag) in dirs {
            std::fs::create_dir_all(parent.join(name)).unwrap();
            std::fs::write(parent.join(name).join("tag"), tag).unwrap();
        }
    }

    fn tag(parent: &Path, name: &str) -> Option<String> {
        std::fs::read_to_string(parent.join(name).join("tag")).ok()
    }

    #[test]
    fn the_switch_can_be_cut_anywhere_and_run_again() {
        for (from, to) in [(2, 1), (1, 2), (2, 3)] {
            // Every prefix of the moves a first run makes, then the whole switch,
            // then once more (a crash before the record was removed).
            for cut in 0..=(from + to) as usize {
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path();
                let mut dirs: Vec<(String, String)> = (0..from)
                    .map(|k| (format!("shard-{k}"), format!("old-{k}")))
                    .collect();
                dirs.extend((0..to).map(|j| (format!("shard-{j}.rescale"), format!("new-{j}"))));
                let dirs_ref: Vec<(&str, &str)> =
                    dirs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                layout(p, &dirs_ref);
                // The first `cut` renames of a run, as a crash would leave them.
                let mut moves: Vec<(String, String)> = (0..from)
                    .map(|k| (format!("shard-{k}"), format!("shard-{k}.old")))
                    .collect();
                moves.extend((0..to).map(|j| (format!("shard-{j}.rescale"), format!("shard-{j}"))));
                for (a, b) in moves.iter().take(cut) {
                    std::fs::rename(p.join(a), p.join(b)).unwrap();
                }
                let parents = vec![p.to_path_buf()];
                move_dirs(&parents, from, to).unwrap();
                move_dirs(&parents, from, to).unwrap();
                for j in 0..to {
                    assert_eq!(
                        tag(p, &format!("shard-{j}")).as_deref(),
                        Some(format!("new-{j}").as_str()),
                        "{from}->{to} cut {cut}"
                    );
                }
                for k in 0..from {
                    assert_eq!(
                        tag(p, &format!("shard-{k}.old")).as_deref(),
                        Some(format!("old-{k}").as_str())
                    );
                }
                remove_old(&parents).unwrap();
                let mut left: Vec<String> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                left.sort();
                let want: Vec<String> = (0..to).map(|j| format!("shard-{j}")).collect();
                assert_eq!(left, want);
            }
        }
    }

    #[test]
    fn a_missing_new_directory_stops_the_switch_and_keeps_the_old_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        layout(p, &[("shard-0", "old-0"), ("shard-0.rescale", "new-0")]);
        let err = move_dirs(&[p.to_path_buf()], 1, 2).unwrap_err().to_string();
        assert!(err.contains("shard-1 is missing"), "{err}");
        assert_eq!(tag(p, "shard-0.old").as_deref(), Some("old-0"));
    }
}
