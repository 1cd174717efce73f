//! Run indexes of real journal segments (`docs/write-once.md`): built from the
//! segments a log wrote on O_DIRECT files, they find every batch the log holds,
//! read them back byte for byte, survive their own encoding, and report damage
//! instead of returning wrong bytes.

use glommio::io::DmaFile;
use glommio::LocalExecutorBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tidewater_io::journal::{Journal, SegmentHeader};
use tidewater_io::ledger::mixed::{read_run, RunIndex};
use tidewater_io::{Entry, JournalAdopt, LogConfig, LogError, ShardLog};

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f)
}

/// Segments enough that nothing is recycled: every frame written is still there.
fn config(root: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(root.join("journal"), root.join("ledger"), 0);
    cfg.journal_segment_bytes = 256 << 10;
    cfg.journal_segments = 16;
    cfg.journal_flush_bytes_max = 64 << 10;
    cfg.batch_bytes_max = 16 << 10;
    cfg.ledger_segment_bytes = 128 << 10;
    cfg.ledger_flush_bytes = 32 << 10;
    cfg.ledger_pending_bytes_max = 1 << 20;
    // Indexes built here from the segments the journal keeps, copying.
    cfg.journal_adopt = JournalAdopt::Off;
    cfg
}

fn payload(p: u32, i: u64) -> Vec<u8> {
    let len = 200 + (i as usize * 397 + p as usize * 131) % 2800;
    let mut v = format!("p{p} i{i} ").into_bytes();
    v.extend((0..len).map(|k| (k as u64 ^ i ^ u64::from(p) << 5) as u8));
    v
}

/// Every sealed journal segment in `dir` with its run index.
fn indexed_segments(dir: &Path) -> Vec<(PathBuf, RunIndex, usize)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("journal-") && name.ends_with(".seg")) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if bytes[..4096].iter().all(|&b| b == 0) {
            continue; // never used
        }
        let header = SegmentHeader::decode(&bytes).unwrap();
        if header.segment_seq == 0 {
            continue;
        }
        let scan = Journal::scan(&path, &bytes, header.first_seq, false);
        assert!(
            scan.damage.is_none() && scan.sealed,
            "{path:?}: {:?}",
            scan.damage
        );
        let index = RunIndex::from_frames(0, header.segment_seq, &scan.frames, 64 << 10);
        out.push((path, index, scan.frames.len()));
    }
    out
}

async fn read_all(log: &ShardLog, p: u32) -> Vec<Entry> {
    let (mut next, mut out) = (0, Vec::new());
    while next < log.high_watermark(p).unwrap() {
        for e in log.read(p, next, 1 << 20).await.unwrap() {
            next = e.end_offset();
            out.push(e);
        }
    }
    out
}

#[test]
fn sealed_journal_segments_read_through_their_runs_as_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let journal_dir = cfg.journal_dir.clone();
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let parts: Vec<u32> = ["a", "b", "c"]
            .iter()
            .map(|n| log.create_partition(n).unwrap())
            .collect();
        let log = Rc::new(log);
        // Twelve appenders, four per partition, interleaved in every journal write.
        let tasks: Vec<_> = (0..12u32)
            .map(|k| {
                let (log, p) = (log.clone(), parts[k as usize % 3]);
                glommio::spawn_local(async move {
                    for i in 0..60u64 {
                        let n = 1 + (i % 3) as u32;
                        log.append(p, payload(p, u64::from(k) << 32 | i), n, i as i64)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let writes = log.stats().journal_writes;
        let mut expected = HashMap::new();
        for &p in &parts {
            expected.insert(p, read_all(&log, p).await);
        }
        log.close().await.unwrap();

        let segments = indexed_segments(&journal_dir);
        let runs: usize = segments.iter().map(|(_, x, _)| x.runs().len()).sum();
        let frames: usize = segments.iter().map(|(_, _, n)| *n).sum();
        assert_eq!(frames, 12 * 60, "every batch is in a sealed segment");
        // At most one run per partition per write, where interleaved frames would
        // have made a run of almost every frame.
        assert!(runs as u64 <= 3 * writes, "{runs} runs for {writes} writes");
        assert!(frames >= 3 * runs, "{frames} frames in {runs} runs");

        let mut found = HashMap::<u32, Vec<Entry>>::new();
        for (path, index, _) in &segments {
            assert_eq!(RunIndex::decode(&index.encode()).unwrap(), *index);
            let file = Rc::new(DmaFile::open(path).await.unwrap());
            for r in index.runs() {
                let got = read_run(&file, path, r, r.base_offset, usize::MAX)
                    .await
                    .unwrap();
                assert_eq!(got.first().unwrap().base_offset, r.base_offset);
                assert_eq!(got.last().unwrap().end_offset(), r.end_offset);
                let max_ts = got.iter().map(|e| e.timestamp_ms).max().unwrap();
                assert_eq!(max_ts, r.max_timestamp_ms);
                // From the middle of the run, with room for one batch.
                let mid = &got[got.len() / 2];
                let one = read_run(&file, path, r, mid.base_offset, 1).await.unwrap();
                assert_eq!(one, std::slice::from_ref(mid));
                for e in &got {
                    let hit = index.find(r.partition, e.base_offset).unwrap();
                    assert_eq!(hit, r);
                }
                found.entry(r.partition).or_default().extend(got);
            }
        }
        for &p in &parts {
            let got = found.get_mut(&p).unwrap();
            got.sort_by_key(|e| e.base_offset);
            assert_eq!(*got, expected[&p], "partition {p} through its runs");
            let end = got.last().unwrap().end_offset();
            let in_some = |o| segments.iter().any(|(_, x, _)| x.find(p, o).is_some());
            assert!(!in_some(end), "past the partition's end");
        }
    });
}

#[test]
fn a_damaged_run_or_index_is_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let journal_dir = cfg.journal_dir.clone();
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let (a, b) = (
            log.create_partition("a").unwrap(),
            log.create_partition("b").unwrap(),
        );
        for i in 0..20 {
            let ra = log.reserve(a, payload(a, i), 1, 1).await.unwrap();
            let rb = log.reserve(b, payload(b, i), 1, 1).await.unwrap();
            ra.durable().await.unwrap();
            rb.durable().await.unwrap();
        }
        log.close().await.unwrap();
        let (path, index, _) = indexed_segments(&journal_dir).remove(0);

        // One flipped byte in the middle of a run's last frame.
        let r = *index.runs_of(b).last().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(r.pos + u64::from(r.len) - 10) as usize] ^= 0x40;
        let copy = dir.path().join("damaged.seg");
        std::fs::write(&copy, &bytes).unwrap();
        let file = Rc::new(DmaFile::open(&copy).await.unwrap());
        match read_run(&file, &copy, &r, r.base_offset, usize::MAX).await {
            Err(LogError::Corrupt { path, what }) => {
                assert_eq!(path, copy);
                assert!(what.contains("run index promised"), "{what}");
            }
            other => panic!("damage read as {other:?}"),
        }

        // An index that does not match the segment (another lap's, say) is caught.
        let file = Rc::new(DmaFile::open(&path).await.unwrap());
        let r = *index.runs_of(a).first().unwrap();
        for wrong in [
            tidewater_io::ledger::mixed::Run {
                base_offset: r.base_offset + 1,
                ..r
            },
            tidewater_io::ledger::mixed::Run {
                end_offset: r.end_offset + 1,
                ..r
            },
            tidewater_io::ledger::mixed::Run {
                len: r.len + 4096,
                ..r
            },
            tidewater_io::ledger::mixed::Run { partition: b, ..r },
        ] {
            let got = read_run(&file, &path, &wrong, wrong.base_offset, usize::MAX).await;
            assert!(
                matches!(got, Err(LogError::Corrupt { .. })),
                "{wrong:?}: {got:?}"
            );
        }
        assert_eq!(read_run(&file, &path, &r, 0, 1).await.unwrap().len(), 1);

        let good = index.encode();
        let mut flipped = good.clone();
        flipped[60] ^= 1;
        assert!(RunIndex::decode(&flipped).unwrap_err().contains("checksum"));
        assert!(RunIndex::decode(&good[..good.len() - 1]).is_err());
        assert!(
            RunIndex::decode(b"TWJOURN1 and more bytes than a header holds at all")
                .unwrap_err()
                .contains("magic")
        );
    });
}

#[test]
fn a_partition_alone_on_its_core_gets_a_run_per_write_not_one_per_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let journal_dir = cfg.journal_dir.clone();
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let p = log.create_partition("alone").unwrap();
        // Each write: one frame of 1048 bytes, then a PAD frame to the block's end.
        for i in 0..30u8 {
            log.append(p, vec![i; 1000], 1, 1).await.unwrap();
        }
        assert_eq!(log.stats().journal_writes, 30);
        log.close().await.unwrap();
        let (_, index, frames) = indexed_segments(&journal_dir).remove(0);
        assert_eq!((frames, index.runs_of(p).len()), (30, 30));
    });
}
