//! Checkpoint files of a job: each core's part (its window state, source positions,
//! watermarks and where its outputs stood), written with rkyv, and the manifest that
//! makes a checkpoint complete.
//!
//! Layout: `<root>/<job>/<id, 20 digits>/shard-<n>.ckpt` and `MANIFEST`. A part is
//! `TWCKPT01`, its length (u64 LE), its CRC32C (u32 LE), 4 bytes of padding, then the
//! rkyv bytes; written under a temporary name, synced, renamed, the directory synced.
//! A serving core encodes and writes a part on its executor's blocking thread and
//! the rest through the async calls of `tidewater_io::fs` (off its reactor);
//! start-up reads and the rescale's writes, which run before any core serves, use
//! [`blocking`] and `fs::blocking`.
//! A checkpoint is complete when its MANIFEST exists and every part it names reads
//! back with a good checksum; recovery takes the newest complete one and says why it
//! skipped any newer. Never deletes a checkpoint that recovery could still pick: the
//! two newest complete ones are kept.

use rkyv::{Archive, Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tidewater_io::{fs, FsError};

const MAGIC: &[u8; 8] = b"TWCKPT02";
/// Parts written before key-group lines existed; read and converted.
const MAGIC_V1: &[u8; 8] = b"TWCKPT01";
const HEAD: usize = 24;
const MANIFEST: &str = "MANIFEST";
const SAVEPOINT: &str = "SAVEPOINT";
/// Complete checkpoints kept per job.
pub const KEEP: usize = 2;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SourceSnap {
    /// Kafka partition index of the source topic.
    pub partition: u32,
    pub next: u64,
    pub max_ts: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RemoteSnap {
    pub from: u32,
    pub wm: i64,
    pub idle: bool,
}

/// One open window: keys back to back (`key_lens` says where each ends) and
/// `words` accumulator words per key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WindowSnap {
    pub start: i64,
    pub keys: Vec<u8>,
    pub key_lens: Vec<u32>,
    pub accs: Vec<u64>,
}

/// Where an output stood: a topic partition's end offset (topic sink, side
/// outputs) or a file's length (file sink).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OutputSnap {
    pub name: String,
    pub partition: u32,
    pub end: u64,
}

/// After a rescale, the line late events of a key group are judged by, where the
/// core that owned the group before had fired further than its new owner has.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GroupLine {
    /// The key group: the source partition Kafka's default partitioner gives a key.
    pub group: u32,
    pub upto: i64,
}

/// One core's part of a checkpoint.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CoreSnapshot {
    pub job: String,
    pub id: u64,
    pub shard: u32,
    pub shards: u32,
    pub words: u32,
    pub sources: Vec<SourceSnap>,
    pub remote: Vec<RemoteSnap>,
    pub core_wm: i64,
    pub fired_upto: i64,
    /// Key groups whose line is past `fired_upto` (only after a rescale).
    pub group_lines: Vec<GroupLine>,
    pub windows: Vec<WindowSnap>,
    pub outputs: Vec<OutputSnap>,
}

/// A part as `TWCKPT01` wrote it: [`CoreSnapshot`] without `group_lines`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct CoreSnapshotV1 {
    job: String,
    id: u64,
    shard: u32,
    shards: u32,
    words: u32,
    sources: Vec<SourceSnap>,
    remote: Vec<RemoteSnap>,
    core_wm: i64,
    fired_upto: i64,
    windows: Vec<WindowSnap>,
    outputs: Vec<OutputSnap>,
}

impl From<CoreSnapshotV1> for CoreSnapshot {
    fn from(v: CoreSnapshotV1) -> Self {
        CoreSnapshot {
            job: v.job,
            id: v.id,
            shard: v.shard,
            shards: v.shards,
            words: v.words,
            sources: v.sources,
            remote: v.remote,
            core_wm: v.core_wm,
            fired_upto: v.fired_upto,
            group_lines: Vec::new(),
            windows: v.windows,
            outputs: v.outputs,
        }
    }
}

/// What reading or writing a checkpoint can fail with; each names the checkpoint
/// or the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system call failed (it names the call and the path).
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot encode checkpoint {id}: {reason}")]
    Encode { id: u64, reason: String },
    /// A part on disk is not a valid checkpoint part.
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    /// A checkpoint that cannot be resumed from: why, in words.
    #[error("checkpoint {id} of {job}{what}")]
    Unusable { job: String, id: u64, what: String },
}

fn invalid(path: &Path, what: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The directory of checkpoint `id` of a job.
pub fn dir_of(root: &Path, job: &str, id: u64) -> PathBuf {
    root.join(job).join(format!("{id:020}"))
}

/// A core's part as it goes to disk: its directory, its path and its bytes.
fn encode_part(
    root: &Path,
    snap: &CoreSnapshot,
) -> Result<(PathBuf, PathBuf, Vec<u8>), CheckpointError> {
    let dir = dir_of(root, &snap.job, snap.id);
    let body =
        rkyv::to_bytes::<rkyv::rancor::Error>(snap).map_err(|e| CheckpointError::Encode {
            id: snap.id,
            reason: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(HEAD + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&body);
    let path = dir.join(format!("shard-{}.ckpt", snap.shard));
    Ok((dir, path, out))
}

fn manifest_of(root: &Path, job: &str, id: u64, shards: u32) -> (PathBuf, Vec<u8>) {
    let path = dir_of(root, job, id).join(MANIFEST);
    let text = format!("tidewater checkpoint\nid {id}\nshards {shards}\n");
    (path, text.into_bytes())
}

/// Writes one core's part, durably; returns its size in bytes.
pub async fn write_part(root: &Path, snap: CoreSnapshot) -> Result<u64, CheckpointError> {
    let root = root.to_path_buf();
    // Encoding the part of a large state is milliseconds of work: it runs with the
    // writes on the executor's blocking thread, so the core goes on serving.
    glommio::executor()
        .spawn_blocking(move || blocking::write_part(&root, &snap))
        .await
}

/// Marks checkpoint `id` complete (every part is durable).
pub async fn write_manifest(
    root: &Path,
    job: &str,
    id: u64,
    shards: u32,
) -> Result<(), CheckpointError> {
    let (path, text) = manifest_of(root, job, id, shards);
    Ok(fs::write_durable(&path, text).await?)
}

/// Marks a complete checkpoint as a savepoint: pruning keeps it until removed by
/// hand.
pub async fn mark_savepoint(root: &Path, job: &str, id: u64) -> Result<(), CheckpointError> {
    let dir = dir_of(root, job, id);
    let path = dir.join(SAVEPOINT);
    let text = b"taken on request; remove this file to let it be pruned\n";
    fs::write(&path, text.to_vec()).await?;
    Ok(fs::sync_dir(&dir).await?)
}

/// The same writes as blocking calls: for code that runs before any core serves
/// (the rescale at start-up) and for an executor's blocking thread
/// ([`write_part`]); never on a serving core's own thread.
pub mod blocking {
    use super::{encode_part, manifest_of, CheckpointError, CoreSnapshot};
    use std::path::Path;
    use tidewater_io::fs::blocking;

    /// Writes one core's part, durably; returns its size in bytes.
    pub fn write_part(root: &Path, snap: &CoreSnapshot) -> Result<u64, CheckpointError> {
        let (dir, path, out) = encode_part(root, snap)?;
        blocking::create_dir_all(&dir)?;
        blocking::write_durable(&path, &out)?;
        Ok(out.len() as u64)
    }

    /// Marks checkpoint `id` complete (every part is durable).
    pub fn write_manifest(
        root: &Path,
        job: &str,
        id: u64,
        shards: u32,
    ) -> Result<(), CheckpointError> {
        let (path, text) = manifest_of(root, job, id, shards);
        Ok(blocking::write_durable(&path, &text)?)
    }
}

/// One core's checkpoint part as read from disk and validated: only [`read_part`]
/// makes one, so [`Part::view`] can read it in place without checking again.
pub struct Part(rkyv::util::AlignedVec);

impl Part {
    /// The archived snapshot, read in place.
    pub fn view(&self) -> &ArchivedCoreSnapshot {
        // The field is private: nothing else can make a `Part`.
        // SAFETY: only `read_part` makes one, after `rkyv::access` validated these bytes.
        unsafe { rkyv::access_unchecked::<ArchivedCoreSnapshot>(&self.0) }
    }
}

/// Reads and checks one part: its bytes, aligned for rkyv.
pub fn read_part(path: &Path) -> Result<Part, CheckpointError> {
    // Start-up only (before the core serves): see the module doc.
    let bytes = fs::blocking::read(path)?;
    let v1 = bytes.get(..8) == Some(MAGIC_V1);
    if bytes.len() < HEAD || (&bytes[..8] != MAGIC && !v1) {
        return Err(invalid(path, "not a checkpoint part"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let body = bytes.get(HEAD..HEAD + len).ok_or_else(|| {
        invalid(
            path,
            format!("truncated ({} of {len} bytes)", bytes.len() - HEAD),
        )
    })?;
    if crc32c::crc32c(body) != crc {
        return Err(invalid(path, "checksum mismatch"));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len);
    aligned.extend_from_slice(body);
    if v1 {
        let old = rkyv::from_bytes::<CoreSnapshotV1, rkyv::rancor::Error>(&aligned)
            .map_err(|e| invalid(path, format!("not a valid checkpoint: {e}")))?;
        aligned = rkyv::to_bytes::<rkyv::rancor::Error>(&CoreSnapshot::from(old))
            .map_err(|e| invalid(path, format!("cannot convert: {e}")))?;
    }
    rkyv::access::<ArchivedCoreSnapshot, rkyv::rancor::Error>(&aligned)
        .map_err(|e| invalid(path, format!("not a valid checkpoint: {e}")))?;
    Ok(Part(aligned))
}

/// Checkpoint ids of a job on disk, newest first (start-up).
fn ids(root: &Path, job: &str) -> Vec<u64> {
    ids_of(fs::blocking::read_dir(&root.join(job)).unwrap_or_default())
}

/// The checkpoint ids among a job directory's entries, newest first.
fn ids_of(entries: Vec<PathBuf>) -> Vec<u64> {
    let mut v: Vec<u64> = entries
        .iter()
        .filter_map(|e| e.file_name()?.to_str()?.parse().ok())
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Whether checkpoint `id` is complete and readable for `shards` cores.
fn usable(root: &Path, job: &str, id: u64, shards: u32) -> Result<(), CheckpointError> {
    let dir = dir_of(root, job, id);
    let unusable = |what: String| CheckpointError::Unusable {
        job: job.to_string(),
        id,
        what,
    };
    let manifest = fs::blocking::read_to_string(&dir.join(MANIFEST))
        .map_err(|_| unusable(" has no manifest (it did not complete)".into()))?;
    let found = manifest
        .lines()
        .find_map(|l| l.strip_prefix("shards "))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| unusable(": unreadable manifest".into()))?;
    if found != shards {
        return Err(unusable(format!(
            " was taken on {found} cores, this server runs {shards}"
        )));
    }
    for s in 0..shards {
        read_part(&dir.join(format!("shard-{s}.ckpt")))?;
    }
    Ok(())
}

/// The newest complete checkpoint of `job` for `shards` cores, with a line for
/// each newer one skipped and why.
pub fn latest(root: &Path, job: &str, shards: u32) -> (Option<u64>, Vec<String>) {
    let mut skipped = Vec::new();
    for id in ids(root, job) {
        match usable(root, job, id, shards) {
            Ok(()) => return (Some(id), skipped),
            Err(why) => skipped.push(why.to_string()),
        }
    }
    (None, skipped)
}

/// The highest id present (complete or not), so new ids never reuse one.
pub fn highest(root: &Path, job: &str) -> u64 {
    ids(root, job).first().copied().unwrap_or(0)
}

/// Removes all but the `KEEP` newest complete checkpoints, and incomplete ones
/// older than the newest complete.
pub async fn prune(root: &Path, job: &str, newest_complete: u64) {
    let mut complete = 0;
    let entries = fs::read_dir(&root.join(job)).await.unwrap_or_default();
    for id in ids_of(entries) {
        if id > newest_complete {
            continue; // in progress
        }
        let dir = dir_of(root, job, id);
        let keep = if fs::exists(&dir.join(SAVEPOINT)).await {
            true
        } else if fs::exists(&dir.join(MANIFEST)).await {
            complete += 1;
            complete <= KEEP
        } else {
            false
        };
        if !keep {
            if let Err(e) = fs::remove_dir_all(&dir).await {
                tracing::warn!(path = %dir.display(), "cannot remove an old checkpoint: {}", e.source);
            }
        }
    }
}

/// Checkpoint `id`'s parts for `shards` cores, read and decoded (for a rescale).
pub fn read_all(
    root: &Path,
    job: &str,
    id: u64,
    shards: u32,
) -> Result<Vec<CoreSnapshot>, CheckpointError> {
    (0..shards)
        .map(|s| {
            let path = dir_of(root, job, id).join(format!("shard-{s}.ckpt"));
            let bytes = read_part(&path)?;
            rkyv::deserialize::<CoreSnapshot, rkyv::rancor::Error>(bytes.view())
                .map_err(|e| invalid(&path, format!("cannot decode: {e}")))
        })
        .collect()
}

/// A checkpoint taken on `parts.len()` cores, cut for `to` cores as checkpoint `id`.
///
/// State is partitioned by key group, as Flink does: a key's group is the partition
/// of the source (`groups` of them) Kafka's default partitioner gives it, and the
/// group lives on the core that owns that partition. Source positions, window
/// entries and topic output positions (the side outputs too) move with their group
/// or partition. A group's late line is what its old owner had fired to; a new core
/// starts from the least line of its groups and keeps the others per group, so an
/// event its old owner would have judged late still is. File outputs are per core:
/// the caller adds those. Watermarks start from the least of the old cores' and
/// move on as the sources replay.
pub fn regroup(parts: &[CoreSnapshot], to: u32, groups: u32, id: u64) -> Vec<CoreSnapshot> {
    let from = parts.len() as u32;
    let least = |f: fn(&CoreSnapshot) -> i64| parts.iter().map(f).min().unwrap_or(i64::MIN);
    let core_wm = least(|p| p.core_wm);
    // Each group's line, from the core that owned it.
    let line: Vec<i64> = (0..groups)
        .map(|g| {
            let old = &parts[(g % from) as usize];
            old.group_lines
                .iter()
                .filter(|l| l.group == g)
                .map(|l| l.upto)
                .fold(old.fired_upto, i64::max)
        })
        .collect();
    let mut out: Vec<CoreSnapshot> = (0..to)
        .map(|shard| {
            let mine = (0..groups).filter(|g| g % to == shard);
            let fired_upto = mine
                .clone()
                .map(|g| line[g as usize])
                .min()
                .unwrap_or_else(|| least(|p| p.fired_upto));
            CoreSnapshot {
                job: parts[0].job.clone(),
                id,
                shard,
                shards: to,
                words: parts[0].words,
                sources: Vec::new(),
                remote: Vec::new(),
                core_wm,
                fired_upto,
                group_lines: mine
                    .filter(|&g| line[g as usize] > fired_upto)
                    .map(|g| GroupLine {
                        group: g,
                        upto: line[g as usize],
                    })
                    .collect(),
                windows: Vec::new(),
                outputs: Vec::new(),
            }
        })
        .collect();
    let mut windows: Vec<std::collections::BTreeMap<i64, WindowSnap>> =
        (0..to).map(|_| Default::default()).collect();
    let words = parts[0].words as usize;
    for p in parts {
        for s in &p.sources {
            out[(s.partition % to) as usize].sources.push(s.clone());
        }
        for o in p.outputs.iter().filter(|o| o.name.starts_with("topic:")) {
            out[(o.partition % to) as usize].outputs.push(o.clone());
        }
        for w in &p.windows {
            let mut at = 0usize;
            for (i, &len) in w.key_lens.iter().enumerate() {
                let key = &w.keys[at..at + len as usize];
                at += len as usize;
                let shard = crate::partitioner::partition_for(key, groups) % to;
                let n = windows[shard as usize]
                    .entry(w.start)
                    .or_insert_with(|| WindowSnap {
                        start: w.start,
                        ..Default::default()
                    });
                n.keys.extend_from_slice(key);
                n.key_lens.push(len);
                n.accs
                    .extend_from_slice(&w.accs[i * words..(i + 1) * words]);
            }
        }
    }
    for (o, w) in out.iter_mut().zip(windows) {
        o.sources.sort_by_key(|s| s.partition);
        o.windows = w.into_values().collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: u64, shard: u32) -> CoreSnapshot {
        CoreSnapshot {
            job: "j".into(),
            id,
            shard,
            shards: 2,
            words: 2,
            sources: vec![SourceSnap {
                partition: shard,
                next: 10 * id,
                max_ts: 7,
            }],
            remote: vec![],
            core_wm: 5,
            fired_upto: 4,
            group_lines: vec![GroupLine { group: 1, upto: 9 }],
            windows: vec![WindowSnap {
                start: 0,
                keys: b"abcd".to_vec(),
                key_lens: vec![1, 3],
                accs: vec![1, 2, 3, 4],
            }],
            outputs: vec![OutputSnap {
                name: "t".into(),
                partition: 0,
                end: 9,
            }],
        }
    }

    #[test]
    fn parts_round_trip_and_only_complete_checkpoints_count() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move { round_trip_and_prune(&r).await });
    }

    async fn round_trip_and_prune(r: &Path) {
        for id in 1..=3 {
            for s in 0..2 {
                write_part(r, snap(id, s)).await.unwrap();
            }
            if id < 3 {
                write_manifest(r, "j", id, 2).await.unwrap();
            }
        }
        let (id, skipped) = latest(r, "j", 2);
        assert_eq!(id, Some(2));
        assert!(skipped[0].contains("no manifest"), "{skipped:?}");
        let bytes = read_part(&dir_of(r, "j", 2).join("shard-1.ckpt")).unwrap();
        let got: CoreSnapshot =
            rkyv::deserialize::<CoreSnapshot, rkyv::rancor::Error>(bytes.view()).unwrap();
        assert_eq!(got, snap(2, 1));
        assert_eq!(latest(r, "j", 3).0, None, "another core count is refused");
        // A flipped byte in the newest complete one: the previous one is used.
        let p = dir_of(r, "j", 2).join("shard-0.ckpt");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 3] ^= 0x40;
        std::fs::write(&p, b).unwrap();
        let (id, skipped) = latest(r, "j", 2);
        assert_eq!(id, Some(1));
        assert!(
            skipped.iter().any(|s| s.contains("checksum")),
            "{skipped:?}"
        );
        // Pruning keeps the two newest complete and what is in progress.
        write_manifest(r, "j", 3, 2).await.unwrap();
        prune(r, "j", 3).await;
        assert_eq!(ids(r, "j"), vec![3, 2]);
        assert_eq!(highest(r, "j"), 3);
    }

    #[test]
    fn regrouping_moves_each_key_group_with_its_partition() {
        use crate::partitioner::partition_for;
        let groups = 4;
        // Keys of every group, on the core that owns the group with 2 cores.
        let keys: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("device-{i:06}").into_bytes())
            .collect();
        let mut parts: Vec<CoreSnapshot> = (0..2)
            .map(|s| CoreSnapshot {
                job: "j".into(),
                id: 7,
                shard: s,
                shards: 2,
                words: 1,
                sources: (0..groups)
                    .filter(|p| p % 2 == s)
                    .map(|p| SourceSnap {
                        partition: p,
                        next: 100 + u64::from(p),
                        max_ts: 1_000,
                    })
                    .collect(),
                remote: vec![],
                core_wm: 60_000 * (i64::from(s) + 1),
                fired_upto: 60_000 * (i64::from(s) + 1),
                group_lines: vec![],
                windows: vec![WindowSnap {
                    start: 120_000,
                    ..Default::default()
                }],
                outputs: (0..groups)
                    .filter(|p| p % 2 == s)
                    .map(|p| OutputSnap {
                        name: "topic:out".into(),
                        partition: p,
                        end: 5,
                    })
                    .chain([OutputSnap {
                        name: format!("file:x.shard-{s}"),
                        partition: 0,
                        end: 9,
                    }])
                    .collect(),
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let s = (partition_for(k, groups) % 2) as usize;
            let w = &mut parts[s].windows[0];
            w.keys.extend_from_slice(k);
            w.key_lens.push(k.len() as u32);
            w.accs.push(i as u64);
        }
        let one = regroup(&parts, 1, groups, 8);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].id, one[0].shards), (8, 1));
        assert_eq!(one[0].sources.len(), 4);
        assert_eq!(one[0].windows[0].key_lens.len(), keys.len());
        assert_eq!(one[0].outputs.len(), 4, "file outputs are the caller's");
        // Core 1 had fired further: its groups keep its line, the core starts
        // from core 0's.
        assert_eq!(one[0].fired_upto, 60_000);
        assert_eq!(
            one[0].group_lines,
            vec![
                GroupLine {
                    group: 1,
                    upto: 120_000
                },
                GroupLine {
                    group: 3,
                    upto: 120_000
                }
            ]
        );
        // And back to 2: the lines go home, each core's own again.
        let two = regroup(&one, 2, groups, 9);
        for (s, p) in two.iter().enumerate() {
            assert_eq!(p.fired_upto, parts[s].fired_upto);
            assert!(p.group_lines.is_empty());
            assert_eq!(p.sources, parts[s].sources);
            let mut got: Vec<(&[u8], u64)> = Vec::new();
            let w = &p.windows[0];
            let mut at = 0;
            for (i, &l) in w.key_lens.iter().enumerate() {
                got.push((&w.keys[at..at + l as usize], w.accs[i]));
                at += l as usize;
            }
            for (k, _) in &got {
                assert_eq!(partition_for(k, groups) % 2, s as u32);
            }
            assert_eq!(got.len(), parts[s].windows[0].key_lens.len());
        }
    }

    #[test]
    fn parts_written_before_key_group_lines_still_read() {
        let root = tempfile::tempdir().unwrap();
        let want = snap(4, 1);
        let old = CoreSnapshotV1 {
            job: want.job.clone(),
            id: want.id,
            shard: want.shard,
            shards: want.shards,
            words: want.words,
            sources: want.sources.clone(),
            remote: want.remote.clone(),
            core_wm: want.core_wm,
            fired_upto: want.fired_upto,
            windows: want.windows.clone(),
            outputs: want.outputs.clone(),
        };
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let mut out = MAGIC_V1.to_vec();
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body);
        let path = root.path().join("shard-1.ckpt");
        std::fs::write(&path, out).unwrap();
        let bytes = read_part(&path).unwrap();
        let got: CoreSnapshot =
            rkyv::deserialize::<CoreSnapshot, rkyv::rancor::Error>(bytes.view()).unwrap();
        assert_eq!(
            got,
            CoreSnapshot {
                group_lines: vec![],
                ..want
            }
        );
    }
}
