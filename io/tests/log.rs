//! Whole-log behaviour on real O_DIRECT files: round trips across segment and ring
//! wrap-around, restarts, torn and flipped journal bytes, retention, lost indexes,
//! foreign files and a full device.

use glommio::LocalExecutorBuilder;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tidewater_io::frame::{self, Step};
use tidewater_io::{Durability, JournalAdopt, LogConfig, LogError, Payload, ShardLog};

/// Runs `f` on a fresh single-core executor.
fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f)
}

/// Small segments so that a test crosses many of them.
fn small_config(root: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(root.join("journal"), root.join("ledger"), 0);
    cfg.journal_segment_bytes = 256 << 10;
    cfg.journal_segments = 3;
    cfg.journal_flush_bytes_max = 64 << 10;
    cfg.batch_bytes_max = 16 << 10;
    cfg.ledger_segment_bytes = 128 << 10;
    cfg.ledger_flush_bytes = 32 << 10;
    cfg.ledger_pending_bytes_max = 1 << 20;
    cfg.ledger_flush_interval_ms = 50;
    // The copy path (journal, then ledger segments), with its repairs of one copy
    // from the other; `adopt.rs` covers adopted journal segments.
    cfg.journal_adopt = JournalAdopt::Off;
    cfg
}

/// The payload of batch `i` of partition `p`: its identity, then filler from a seed.
fn payload(p: u32, i: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(p) << 32 ^ i);
    let mut v = format!("p{p} i{i} ").into_bytes();
    v.extend((0..len).map(|_| rng.gen::<u8>()));
    v
}

/// Reads a partition from 0 to its end and returns every entry.
async fn read_all(log: &ShardLog, p: u32) -> Vec<tidewater_io::Entry> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset(p).unwrap();
    let hw = log.high_watermark(p).unwrap();
    while next < hw {
        let batch = log.read(p, next, 50_000).await.unwrap();
        assert!(
            !batch.is_empty(),
            "read at {next} below hw {hw} returned nothing"
        );
        for e in batch {
            assert!(e.end_offset() > next);
            next = e.end_offset();
            out.push(e);
        }
    }
    out
}

/// Closes a log its tasks shared, once they are done with it.
async fn close_shared(log: std::rc::Rc<ShardLog>) {
    std::rc::Rc::try_unwrap(log)
        .ok()
        .expect("no task holds the log any more")
        .close()
        .await
        .unwrap();
}

/// Checks that entries are dense from the start and match `payload`.
fn check_dense(entries: &[tidewater_io::Entry], p: u32, counts: &[u32]) {
    let mut expect = 0u64;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.base_offset, expect, "partition {p} entry {i}");
        assert_eq!(e.record_count, counts[i]);
        assert_eq!(
            e.payload,
            payload(p, i as u64, e.payload.len() - format!("p{p} i{i} ").len())
        );
        expect = e.end_offset();
    }
}

#[test]
fn round_trip_across_segments_ring_wrap_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let parts = 5u32;
    let mut counts: Vec<Vec<u32>> = vec![Vec::new(); parts as usize];
    // Three runs; each appends ~1.2 MiB so the 768 KiB journal ring wraps every run.
    for run_no in 0..3u64 {
        let cfg = cfg.clone();
        let before = counts.clone();
        let added: Vec<Vec<u32>> = run(async move {
            let (log, report) = ShardLog::open(cfg).await.unwrap();
            assert!(report.dropped.is_empty(), "{:?}", report.dropped);
            let log = std::rc::Rc::new(log);
            let ids: Vec<u32> = (0..parts)
                .map(|p| log.create_partition(&format!("t-{p}")).unwrap())
                .collect();
            assert_eq!(ids, (0..parts).collect::<Vec<_>>());
            // Everything from earlier runs is still there.
            for p in 0..parts {
                check_dense(&read_all(&log, p).await, p, &before[p as usize]);
            }
            // Concurrent appenders, one per partition, so group commit batches them.
            let mut tasks = Vec::new();
            for p in 0..parts {
                let log = log.clone();
                let start = before[p as usize].len() as u64;
                tasks.push(glommio::spawn_local(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(run_no * 100 + u64::from(p));
                    let mut counts = Vec::new();
                    for i in start..start + 60 {
                        let len = rng.gen_range(10..8000);
                        let count = rng.gen_range(1..50);
                        let a = log
                            .append(p, payload(p, i, len), count, 1000)
                            .await
                            .unwrap();
                        assert_eq!(a.durability, Durability::Always);
                        counts.push(count);
                    }
                    counts
                }));
            }
            let mut added = Vec::new();
            for t in tasks {
                added.push(t.await);
            }
            let stats = log.stats();
            assert!(
                stats.journal_writes < stats.appends,
                "group commit coalesced: {stats:?}"
            );
            close_shared(log).await;
            added
        });
        for (p, a) in added.into_iter().enumerate() {
            counts[p].extend(a);
        }
    }
    let cfg2 = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(cfg2).await.unwrap();
        for p in 0..parts {
            let entries = read_all(&log, p).await;
            assert_eq!(entries.len(), counts[p as usize].len());
            check_dense(&entries, p, &counts[p as usize]);
            assert!(log.ledger_segments(p) > 2, "ledger rolled segments");
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_reader_following_appends_sees_every_batch_once_while_chunks_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let log = std::rc::Rc::new(log);
        let p = log.create_partition("tail").unwrap();
        let n = 400u64;
        let appender = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                let mut counts = Vec::new();
                for i in 0..n {
                    // Up to the batch limit: some frames do not fit a chunk's rest.
                    let len = rng.gen_range(10..16_000);
                    let count = rng.gen_range(1..20);
                    log.append(p, payload(p, i, len), count, 1000)
                        .await
                        .unwrap();
                    counts.push(count);
                }
                counts
            })
        };
        // Reads the tail as it grows, while the chunks behind it are sealed and
        // written (the ledger's unit test pins down a read during a write).
        let mut seen = Vec::new();
        let mut next = 0u64;
        while seen.len() < n as usize {
            let epoch = log.append_epoch();
            let batch = log.read(p, next, 20_000).await.unwrap();
            if batch.is_empty() {
                log.wait_for_append(epoch).await;
                continue;
            }
            for e in batch {
                assert_eq!(e.base_offset, next, "dense, each batch once");
                next = e.end_offset();
                seen.push(e);
            }
        }
        let counts = appender.await;
        check_dense(&seen, p, &counts);
        let stats = log.stats();
        assert!(
            stats.ledger_writes > 20,
            "chunks were written meanwhile: {stats:?}"
        );
        close_shared(log).await;
    });
}

#[test]
fn the_newest_batches_are_read_out_of_recent_journal_writes_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    // Chunks stay in memory for the whole test: no read is served by a segment.
    cfg.ledger_flush_interval_ms = 600_000;
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let (a, b) = (
            log.create_partition("a").unwrap(),
            log.create_partition("b").unwrap(),
        );
        // Ten journal writes, each holding one batch of each partition.
        for i in 0..10 {
            let ra = log.reserve(a, payload(a, i, 100), 1, 1).await.unwrap();
            let rb = log.reserve(b, payload(b, i, 300), 2, 1).await.unwrap();
            ra.durable().await.unwrap();
            rb.durable().await.unwrap();
        }
        assert_eq!(log.stats().journal_writes, 10);
        let written = |e: &tidewater_io::Entry| matches!(e.payload, Payload::Written(_));
        // The last four writes are kept: a's offsets 6.., b's 12...
        for (p, from, size, count) in [(a, 6, 100, 1), (b, 12, 300, 2), (b, 13, 300, 2)] {
            let got = log.read(p, from, 1 << 20).await.unwrap();
            assert_eq!(got.len(), 4, "partition {p} from {from}");
            for (k, e) in got.iter().enumerate() {
                let i = 6 + k as u64;
                assert!(written(e), "{p}@{from}: batch {i} copied");
                assert_eq!((e.base_offset, e.record_count), (i * count, count as u32));
                assert_eq!(e.payload, payload(p, i, size));
            }
        }
        // Older than what they hold: every batch from the chunks, as before.
        let got = log.read(b, 2, 1 << 20).await.unwrap();
        assert_eq!(got.len(), 9);
        assert!(got.iter().all(|e| !written(e)));
        for (k, e) in got.iter().enumerate() {
            assert_eq!(e.payload, payload(b, 1 + k as u64, 300));
        }
        // A small read still ends at its size, from either source.
        assert_eq!(log.read(a, 7, 1).await.unwrap().len(), 1);
        assert_eq!(log.read(a, 0, 1).await.unwrap().len(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn a_clean_stop_leaves_no_stale_journal_bytes_to_mistake_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    for round in 0..3u64 {
        let cfg = cfg.clone();
        run(async move {
            let (log, report) = ShardLog::open(cfg).await.unwrap();
            assert!(
                report.dropped.is_empty(),
                "round {round}: {:?}",
                report.dropped
            );
            let p = log.create_partition("p").unwrap();
            // One write per append, 20 KiB each (a 16 KiB frame spans blocks): the
            // 768 KiB ring wraps, so segments are reused and what follows the last
            // write is the inside of an older frame.
            for i in 0..50 {
                log.append(p, payload(p, round * 100 + i, 16_000), 1, 0)
                    .await
                    .unwrap();
            }
            // A small last write ends in the middle of the older writes' frames.
            log.append(p, payload(p, round * 100 + 99, 10), 1, 0)
                .await
                .unwrap();
            log.close().await.unwrap();
        });
    }
}

#[test]
fn large_one_partition_journal_writes_become_ledger_chunks_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let (cfg1, cfg2) = (cfg.clone(), cfg.clone());
    // 64 appenders of 2 KiB to one partition: group commits fill the 64 KiB journal
    // writes, so the ledger takes them whole.
    let counts = run(async move {
        let (log, _) = ShardLog::open(cfg1).await.unwrap();
        let log = std::rc::Rc::new(log);
        let p = log.create_partition("one").unwrap();
        let q = log.create_partition("other").unwrap();
        let mut tasks = Vec::new();
        for t in 0..64u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut out = Vec::new();
                for n in 0..40u64 {
                    let i = n * 64 + t;
                    let o = log.append(p, payload(p, i, 2000), 1, 1000).await.unwrap();
                    out.push((o.base_offset, i));
                }
                out
            }));
        }
        let mut acked: Vec<(u64, u64)> = Vec::new();
        for t in tasks {
            acked.extend(t.await);
        }
        let stats = log.stats();
        assert!(
            stats.ledger_adopted_writes * 2 > stats.journal_writes,
            "most journal writes were taken whole: {stats:?}"
        );
        // Then small writes mixing two partitions: copied, after the adopted chunks.
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let part = if t % 2 == 0 { p } else { q };
                for n in 0..10u64 {
                    let i = 10_000 + n * 8 + t;
                    log.append(part, payload(part, i, 3000), 1, 1000)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let adopted = log.stats().ledger_adopted_writes;
        assert_eq!(
            adopted, stats.ledger_adopted_writes,
            "small writes are copied"
        );
        // Readable before the restart too, from chunks and segments alike.
        assert_eq!(read_all(&log, p).await.len(), 64 * 40 + 40);
        acked.sort_unstable();
        close_shared(log).await;
        acked
    });
    // After a restart, from the ledger's segments: every acknowledged batch at its
    // offset, byte for byte, and the partition dense.
    run(async move {
        let (log, report) = ShardLog::open(cfg2).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        let entries = read_all(&log, 0).await;
        assert_eq!(entries.len(), counts.len() + 40);
        for (e, &(offset, i)) in entries.iter().zip(&counts) {
            assert_eq!(e.base_offset, offset);
            assert_eq!(e.payload, payload(0, i, 2000), "offset {offset}");
        }
        assert_eq!(read_all(&log, 1).await.len(), 40);
        log.close().await.unwrap();
    });
}

/// [`small_config`] with the ledger held back (an hour between writes, and room for
/// everything a test appends): what was appended lives only in the journal.
fn held_back_config(root: &Path) -> LogConfig {
    let mut cfg = small_config(root);
    cfg.ledger_flush_interval_ms = 3_600_000;
    cfg.ledger_flush_bytes = 1 << 20;
    cfg.ledger_segment_bytes = 4 << 20;
    cfg
}

/// Appends `n` small batches to one partition and leaves them in the journal only (the
/// ledger is never written after recovery): the state a crash leaves.
fn journal_only_log(root: &Path, n: u64) -> LogConfig {
    let cfg = held_back_config(root);
    let c = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("p").unwrap();
        for i in 0..n {
            log.append(p, payload(p, i, 100), 1, 7).await.unwrap();
        }
        // Nothing is in a ledger segment yet: the start is still offset 0.
        assert_eq!(log.log_start_offset(p).unwrap(), 0);
        assert_eq!(log.read(p, 0, 1).await.unwrap()[0].base_offset, 0);
        // Dropped, not closed: nothing more is written.
        drop(log);
    });
    cfg
}

/// Byte ranges (start, end) of the data frames in the journal's active segment.
fn journal_frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    frame::Scanner::new(&bytes, frame::BLOCK, bytes.len())
        .filter_map(|s| match s {
            Step::Frame { pos, header } if header.kind == frame::Kind::Data => {
                Some((pos, pos + header.frame_len()))
            }
            _ => None,
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The newest segment file of `partition` in a ledger directory.
fn last_ledger_segment(ledger_dir: &Path, partition: &str) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(ledger_dir.join(partition))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

/// The journal segment holding frames (the one with the newest header).
fn active_segment(journal_dir: &Path) -> PathBuf {
    let mut best = None;
    for e in std::fs::read_dir(journal_dir).unwrap() {
        let path = e.unwrap().path();
        let frames = journal_frames(&path);
        if !frames.is_empty() {
            assert!(best.is_none(), "one segment holds the frames in this test");
            best = Some(path);
        }
    }
    best.unwrap()
}

/// Checks a partition read back after one frame (`lost`) was lost to damage: every
/// other entry as appended, the lost one kept as an entry of no payload.
fn check_dense_but_lost(entries: &[tidewater_io::Entry], p: u32, n: usize, lost: usize) {
    assert_eq!(entries.len(), n, "one entry per frame");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.base_offset, i as u64, "partition {p} entry {i}");
        assert_eq!(e.record_count, 1);
        if i == lost {
            assert!(e.payload.is_empty(), "the lost frame's entry holds nothing");
        } else {
            assert_eq!(
                e.payload,
                payload(p, i as u64, e.payload.len() - format!("p{p} i{i} ").len())
            );
        }
    }
}

#[test]
fn torn_tails_keep_the_valid_prefix_and_flipped_frames_lose_only_themselves() {
    let pristine = tempfile::tempdir().unwrap();
    let n = 40u64;
    let cfg = journal_only_log(pristine.path(), n);
    let seg = active_segment(&cfg.journal_dir);
    let frames = journal_frames(&seg);
    assert_eq!(frames.len() as u64, n);
    let seg_name = seg.file_name().unwrap().to_owned();
    let last3 = &frames[frames.len() - 3..];
    let root = pristine.path().to_path_buf();
    let frames2 = frames.clone();
    let (first, end) = (last3[0].0, last3[2].1);
    run(async move {
        let work = tempfile::tempdir().unwrap();
        // Every byte of the last three frames, and the padding edges after each.
        let mut positions: Vec<usize> = Vec::new();
        for &(s, e) in &frames2[frames2.len() - 3..] {
            positions.extend(s..e);
            positions.extend([e, e + 1, e + 47, e + 48, frame::align_up(e) - 1]);
        }
        positions.retain(|&p| p >= first && p < frame::align_up(end));
        for case in ["cut", "flip"] {
            for &pos in &positions {
                let w = work.path().join(format!("{case}-{pos}"));
                copy_dir(&root, &w);
                let seg = w.join("journal").join(&seg_name);
                let mut bytes = std::fs::read(&seg).unwrap();
                match case {
                    "cut" => bytes[pos..frame::align_up(end)].fill(0),
                    _ => bytes[pos] ^= 0x5a,
                }
                std::fs::write(&seg, &bytes).unwrap();
                // The frame the damage is in, if any; a flip is only tried inside
                // frames, a cut anywhere (zeroing everything after it).
                let hit = frames2.iter().position(|&(s, e)| pos >= s && pos < e);
                if case == "flip" && hit.is_none() {
                    std::fs::remove_dir_all(&w).unwrap();
                    continue;
                }
                // A flip in any frame but the last has valid frames after it: media
                // damage, where only that frame is lost. A flip in the last frame
                // cannot be told from a torn write: the valid prefix is kept.
                let resynced = case == "flip" && hit.unwrap() + 1 < frames2.len();
                let keep = match case {
                    "cut" => frames2.iter().filter(|&&(_, e)| e <= pos).count(),
                    _ if resynced => frames2.len(),
                    _ => hit.unwrap(),
                } as u64;
                let c = held_back_config(&w);
                let (log, report) = ShardLog::open(c.clone()).await.unwrap();
                let p = log.partition_id("p").unwrap();
                assert_eq!(
                    log.high_watermark(p).unwrap(),
                    keep,
                    "{case} at {pos}: {:?}",
                    report.dropped
                );
                let entries = read_all(&log, p).await;
                if resynced {
                    let lost = hit.unwrap();
                    check_dense_but_lost(&entries, p, keep as usize, lost);
                    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
                    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
                    assert_eq!(report.damaged[0].offset as usize, frames2[lost].0);
                    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
                    let l = &report.lost[0];
                    assert_eq!(
                        (l.partition.as_str(), l.from, l.to),
                        ("p", lost as u64, lost as u64 + 1)
                    );
                    assert!(report.degraded());
                    // The segment as it was found, copied aside before any write.
                    let aside: Vec<_> = std::fs::read_dir(w.join("journal.damaged"))
                        .unwrap()
                        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                        .collect();
                    assert_eq!(aside, vec![bytes.clone()]);
                } else {
                    check_dense(&entries, p, &vec![1; keep as usize]);
                }
                match hit.map(|h| frames2[h].0) {
                    _ if resynced => {}
                    // Damage inside a frame: reported with the frame's file and offset.
                    Some(start) if start != pos || case == "flip" => {
                        assert_eq!(
                            report.dropped.len(),
                            1,
                            "{case} at {pos}: {:?}",
                            report.dropped
                        );
                        let d = &report.dropped[0];
                        assert!(d.path.ends_with(&seg_name), "{d}");
                        assert_eq!(d.offset as usize, start, "{d}");
                        assert!(!d.reason.is_empty());
                    }
                    // A cut at a frame's start leaves zeros: a clean end.
                    Some(_) => assert!(report.dropped.is_empty(), "{:?}", report.dropped),
                    // A cut in the padding after a frame may tear the pad frame: at
                    // most that is reported, at the pad's position.
                    None => {
                        let prev_end = frames2.iter().map(|&(_, e)| e).filter(|&e| e <= pos).max();
                        assert!(report.dropped.len() <= 1, "{:?}", report.dropped);
                        if let Some(d) = report.dropped.first() {
                            assert_eq!(Some(d.offset as usize), prev_end, "{d}");
                        }
                    }
                }
                // New appends continue the dense offsets, and a second recovery
                // keeps them and drops nothing more.
                log.append(p, payload(p, keep, 100), 1, 7).await.unwrap();
                drop(log);
                let (log, report) = ShardLog::open(c).await.unwrap();
                assert!(
                    report.dropped.is_empty() && report.lost.is_empty(),
                    "{case} at {pos}: second recovery {:?} {:?}",
                    report.dropped,
                    report.lost
                );
                let entries = read_all(&log, p).await;
                if resynced {
                    check_dense_but_lost(&entries[..keep as usize], p, keep as usize, hit.unwrap());
                    assert_eq!(entries.len() as u64, keep + 1);
                } else {
                    check_dense(&entries, p, &vec![1; keep as usize + 1]);
                }
                log.close().await.unwrap();
                std::fs::remove_dir_all(&w).unwrap();
            }
        }
    });
}

#[test]
fn retention_deletes_old_segments_and_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.retention_bytes = Some(300 << 10);
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let p = log.create_partition("r").unwrap();
        for i in 0..400 {
            log.append(p, payload(p, i, 4000), 1, 1).await.unwrap();
        }
        log.close().await.unwrap();
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let start = log.log_start_offset(p).unwrap();
        assert!(start > 0, "retention moved the start");
        assert!(log.ledger_segments(p) <= 4, "{}", log.ledger_segments(p));
        match log.read(p, start - 1, 1000).await {
            Err(LogError::OffsetOutOfRange { .. }) => {}
            other => panic!("expected out of range, got {other:?}"),
        }
        let entries = read_all(&log, p).await;
        assert_eq!(entries.last().unwrap().end_offset(), 400);
        assert_eq!(entries[0].base_offset, start);
        log.close().await.unwrap();
    });
}

/// Runs `appenders` tasks appending 4000-byte batches to `p` until `busy` has
/// passed, so that the driver has writes in flight the whole time.
async fn append_for(
    log: &std::rc::Rc<ShardLog>,
    p: u32,
    appenders: u64,
    busy: std::time::Duration,
) {
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut i = 0;
                while start.elapsed() < busy {
                    log.append(p, payload(p, a << 32 | i, 4000), 1, 1)
                        .await
                        .unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

/// `never` syncs the journal nowhere but at a clean close, idle or not; `interval`
/// syncs at least every `sync_interval_ms`, also while writes are always in flight.
#[test]
fn each_durability_syncs_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let mut never = small_config(&dir.path().join("never"));
    never.durability = Durability::Never;
    let mut interval = small_config(&dir.path().join("interval"));
    interval.durability = Durability::Interval;
    interval.sync_interval_ms = 5;
    run(async move {
        let busy = std::time::Duration::from_millis(300);
        let (log, _) = ShardLog::open(never).await.unwrap();
        let log = std::rc::Rc::new(log);
        let p = log.create_partition("n").unwrap();
        append_for(&log, p, 16, busy).await;
        glommio::timer::sleep(std::time::Duration::from_millis(60)).await;
        let stats = log.stats();
        assert!(stats.journal_writes > 0);
        assert_eq!(
            stats.journal_syncs, 0,
            "never synced before close: {stats:?}"
        );
        log.close().await.unwrap();
        assert!(log.stats().journal_syncs >= 1, "synced at close");

        let (log, _) = ShardLog::open(interval).await.unwrap();
        let log = std::rc::Rc::new(log);
        let p = log.create_partition("i").unwrap();
        // Enough appenders that the driver is never idle (the old code synced only
        // then, and so almost never here).
        append_for(&log, p, 64, busy).await;
        let stats = log.stats();
        // 300 ms at one sync per 5 ms is 60, fewer when writes and syncs are slow (a
        // busy machine): a third of that, or a quarter of the writes.
        let floor = 20.min(stats.journal_writes / 4);
        assert!(
            stats.journal_syncs >= floor,
            "{} syncs in {busy:?} of writes in flight (at least {floor} due): {stats:?}",
            stats.journal_syncs
        );
        log.close().await.unwrap();
    });
}

/// A partition moved from another core's log starts at the offset retention had
/// left it at, empty or not, and keeps it across restarts.
#[test]
fn a_partition_can_start_at_a_later_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let empty = log.create_partition_at("empty", 1_000).unwrap();
        let moved = log.create_partition_at("moved", 500).unwrap();
        for i in 0..100 {
            let got = log
                .append(moved, payload(moved, i, 4000), 2, 1)
                .await
                .unwrap();
            assert_eq!(got.base_offset, 500 + 2 * i);
        }
        log.close().await.unwrap();
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        assert_eq!(log.log_start_offset(empty).unwrap(), 1_000);
        assert_eq!(log.high_watermark(empty).unwrap(), 1_000);
        assert_eq!(log.log_start_offset(moved).unwrap(), 500);
        let entries = read_all(&log, moved).await;
        assert_eq!(entries.len(), 100);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.base_offset, 500 + 2 * i as u64);
            assert_eq!(e.payload, payload(moved, i as u64, 4000));
        }
        match log.read(moved, 499, 1000).await {
            Err(LogError::OffsetOutOfRange { .. }) => {}
            other => panic!("expected out of range, got {other:?}"),
        }
        // An existing partition is returned as it is, whatever start is asked.
        assert_eq!(log.create_partition_at("moved", 7).unwrap(), moved);
        let got = log
            .append(empty, payload(empty, 0, 10), 1, 1)
            .await
            .unwrap();
        assert_eq!(got.base_offset, 1_000);
        log.close().await.unwrap();
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        assert_eq!(log.high_watermark(empty).unwrap(), 1_001);
        assert_eq!(log.high_watermark(moved).unwrap(), 700);
        log.close().await.unwrap();
    });
}

/// Deleting a partition: appends already accepted finish, new ones are refused, its
/// data goes, its id is never reused (its frames still in the journal are skipped,
/// not restored into a newer partition), and the others are untouched.
#[test]
fn a_deleted_partition_is_gone_and_its_id_never_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let log = std::rc::Rc::new(log);
        let a = log.create_partition("a").unwrap();
        let b = log.create_partition("b").unwrap();
        for i in 0..50 {
            log.append(a, payload(a, i, 3000), 1, 1).await.unwrap();
            log.append(b, payload(b, i, 3000), 1, 1).await.unwrap();
        }
        // Appends in flight while the delete starts.
        let inflight: Vec<_> = (50..60)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move { log.append(a, payload(a, i, 3000), 1, 1).await })
            })
            .collect();
        glommio::executor().yield_now().await;
        assert!(log.delete_partition("a").await.unwrap());
        for t in inflight {
            t.await.unwrap();
        }
        assert!(matches!(
            log.append(a, &b"late"[..], 1, 1).await,
            Err(LogError::UnknownPartition(_))
        ));
        assert!(log.read(a, 0, 1000).await.is_err());
        assert!(!log.delete_partition("a").await.unwrap(), "already gone");
        assert!(!dir.path().join("ledger/a").exists());
        log.close().await.unwrap();
        drop(log);
        let (log, report) = ShardLog::open(cfg.clone()).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert_eq!(log.partition_id("a"), None);
        assert_eq!(read_all(&log, b).await.len(), 50);
        // A new partition by the same name: a new id, empty.
        let a2 = log.create_partition("a").unwrap();
        assert!(a2 != a && a2 != b, "{a2}");
        assert_eq!(log.high_watermark(a2).unwrap(), 0);
        log.append(a2, payload(a2, 0, 100), 1, 1).await.unwrap();
        log.close().await.unwrap();
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert_eq!(
            log.high_watermark(log.partition_id("a").unwrap()).unwrap(),
            1
        );
        log.close().await.unwrap();
    });
}

#[test]
fn retention_keeps_what_a_checkpoint_may_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.retention_bytes = Some(300 << 10);
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let p = log.create_partition("r").unwrap();
        log.retain_from(p, Some(250));
        for i in 0..400 {
            log.append(p, payload(p, i, 4000), 1, 1).await.unwrap();
        }
        // The ledger syncs (and applies retention) every 50 ms here.
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        let held = log.log_start_offset(p).unwrap();
        assert!(
            held > 0 && held <= 250,
            "deleted up to the hold, not past it: {held}"
        );
        // The hold lifted, retention alone decides (as without a hold: start > 250).
        log.retain_from(p, None);
        log.append(p, payload(p, 400, 4000), 1, 1).await.unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        let free = log.log_start_offset(p).unwrap();
        assert!(free > 250, "{free}");
        log.close().await.unwrap();
    });
}

#[test]
fn superseded_segments_go_without_a_retention_limit_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    assert!(cfg.retention_bytes.is_none() && cfg.retention_ms.is_none());
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let p = log.create_partition("compacted").unwrap();
        for i in 0..400 {
            log.append(p, payload(p, i, 4000), 1, 1).await.unwrap();
        }
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            log.log_start_offset(p).unwrap(),
            0,
            "no limit, nothing goes"
        );
        log.supersede_before(p, 250);
        log.append(p, payload(p, 400, 4000), 1, 1).await.unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        let start = log.log_start_offset(p).unwrap();
        assert!(
            start > 0 && start <= 250,
            "whole segments before 250 went: {start}"
        );
        assert_eq!(
            read_all(&log, p).await.last().map(|e| e.base_offset),
            Some(400)
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_partition_keeps_its_own_segment_size_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    let own = |segment_bytes, retention_bytes| tidewater_io::PartitionLimits {
        segment_bytes,
        retention_bytes,
        retention_ms: None,
    };
    // "small": half-size segments, no retention; "kept": 300 KiB of retention.
    cfg.partition_limits
        .insert("small".into(), own(64 << 10, None));
    cfg.partition_limits
        .insert("kept".into(), own(128 << 10, Some(300 << 10)));
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let ids: Vec<u32> = ["small", "kept", "plain"]
            .iter()
            .map(|n| log.create_partition(n).unwrap())
            .collect();
        for i in 0..200 {
            for &p in &ids {
                log.append(p, payload(p, i, 4000), 1, 1).await.unwrap();
            }
        }
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        let (small, kept, plain) = (ids[0], ids[1], ids[2]);
        assert!(
            log.ledger_segments(small) > log.ledger_segments(plain) + 2,
            "half-size segments: {} against {}",
            log.ledger_segments(small),
            log.ledger_segments(plain)
        );
        assert!(
            log.log_start_offset(kept).unwrap() > 0,
            "its retention applied"
        );
        assert_eq!(
            log.log_start_offset(plain).unwrap(),
            0,
            "no limit of its own"
        );
        // A change at run time: plain takes the same retention.
        log.set_limits(plain, Some(own(128 << 10, Some(300 << 10))));
        log.append(plain, payload(plain, 200, 4000), 1, 1)
            .await
            .unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        assert!(log.log_start_offset(plain).unwrap() > 0);
        log.close().await.unwrap();
        drop(log);
        // After a restart the limits come from the config again, before any pass.
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        assert!(
            log.log_start_offset(log.partition_id("kept").unwrap())
                .unwrap()
                > 0
        );
        log.close().await.unwrap();
    });
}

#[test]
fn deleted_records_stay_deleted_and_their_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let p = log.create_partition("trimmed").unwrap();
        for i in 0..200 {
            log.append(p, payload(p, i, 4000), 1, 1).await.unwrap();
        }
        let segments = log.ledger_segments(p);
        assert!(log.delete_records(p, 300).await.is_err(), "past the end");
        assert_eq!(log.delete_records(p, 150).await.unwrap(), 150);
        assert_eq!(log.log_start_offset(p).unwrap(), 150);
        assert!(log.read(p, 149, 1000).await.is_err(), "below the start");
        assert_eq!(log.read(p, 150, 1000).await.unwrap()[0].base_offset, 150);
        assert_eq!(log.delete_records(p, 10).await.unwrap(), 150, "never back");
        glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            log.ledger_segments(p) < segments,
            "segments before 150 went"
        );
        log.close().await.unwrap();
        drop(log);
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty());
        assert_eq!(
            log.log_start_offset(p).unwrap(),
            150,
            "kept across a restart"
        );
        assert_eq!(log.high_watermark(p).unwrap(), 200);
        log.close().await.unwrap();
    });
}

#[test]
fn lost_and_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let c = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("x").unwrap();
        for i in 0..300 {
            log.append(p, payload(p, i, 2000), 2, 1).await.unwrap();
        }
        log.close().await.unwrap();
    });
    let pdir = cfg.ledger_dir.join("x");
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 3, "{indexes:?}");
    std::fs::remove_file(&indexes[0]).unwrap();
    let mut bytes = std::fs::read(&indexes[1]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&indexes[1], bytes).unwrap();
    let (i0, i1) = (indexes[0].clone(), indexes[1].clone());
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(
            report.indexes_rebuilt.contains(&i0),
            "{:?}",
            report.indexes_rebuilt
        );
        assert!(
            report.indexes_rebuilt.contains(&i1),
            "{:?}",
            report.indexes_rebuilt
        );
        assert!(i0.exists());
        let p = log.partition_id("x").unwrap();
        // Reads from every offset, including inside batches, find the right batch.
        for from in [0u64, 1, 77, 301, 599] {
            let e = &log.read(p, from, 1).await.unwrap()[0];
            assert!(
                e.base_offset <= from && from < e.end_offset(),
                "from {from}: {}",
                e.base_offset
            );
            assert_eq!(e.payload, payload(p, e.base_offset / 2, 2000));
        }
        log.close().await.unwrap();
    });
}

#[test]
fn foreign_files_and_bad_settings_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    std::fs::create_dir_all(&cfg.journal_dir).unwrap();
    let stray = cfg.journal_dir.join("notes.txt");
    std::fs::write(&stray, "hello").unwrap();
    let c = cfg.clone();
    let err = run(async move { ShardLog::open(c).await.err().unwrap().to_string() });
    assert!(
        err.contains("notes.txt") && err.contains("foreign"),
        "{err}"
    );
    std::fs::remove_file(&stray).unwrap();

    std::fs::create_dir_all(cfg.ledger_dir.join("junk")).unwrap();
    let c = cfg.clone();
    let err = run(async move { ShardLog::open(c).await.err().unwrap().to_string() });
    assert!(err.contains("junk"), "{err}");
    std::fs::remove_dir_all(cfg.ledger_dir.join("junk")).unwrap();

    // Files a crash left half-written are cleaned up, not refused.
    let c = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        log.create_partition("keep").unwrap();
        log.close().await.unwrap();
    });
    let leftover = cfg.ledger_dir.join("keep/00000000000000000000.index.tmp");
    std::fs::write(&leftover, "half").unwrap();
    let unfinished = cfg.ledger_dir.join(".half-made.creating");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join("partition.meta.tmp"), "tidewater").unwrap();
    let c = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        assert!(log.partition_id("keep").is_some());
        assert!(log.partition_id("half-made").is_none());
        log.close().await.unwrap();
    });
    assert!(!leftover.exists() && !unfinished.exists());

    // A journal made with one segment size refuses another.
    let c = cfg.clone();
    run(async move { ShardLog::open(c).await.unwrap().0.close().await.unwrap() });
    let mut c = cfg.clone();
    c.journal_segment_bytes = 512 << 10;
    let err = run(async move { ShardLog::open(c).await.err().unwrap().to_string() });
    assert!(
        err.contains("journal-0000.seg") && err.contains("journal_segment_bytes"),
        "{err}"
    );

    let mut c = cfg.clone();
    c.journal_segments = 1;
    let err = run(async move { ShardLog::open(c).await.err().unwrap().to_string() });
    assert!(err.contains("journal_segments"), "{err}");

    // Bad input to append gets an error, not a panic.
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let p = log.create_partition("ok").unwrap();
        assert!(matches!(
            log.append(p, vec![0u8; 17 << 10], 1, 0).await,
            Err(LogError::BatchTooLarge { .. })
        ));
        assert!(matches!(
            log.append(p, &b"x"[..], 0, 0).await,
            Err(LogError::EmptyBatch)
        ));
        assert!(matches!(
            log.append(99, &b"x"[..], 1, 0).await,
            Err(LogError::UnknownPartition(99))
        ));
        assert!(matches!(
            log.create_partition("../x"),
            Err(LogError::BadPartitionName(_))
        ));
        log.close().await.unwrap();
    });
}

/// Mounts a small tmpfs (root only); `None` where that is not allowed.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(bytes: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_device_fails_appends_clearly_and_harms_nothing_acknowledged() {
    // Mounting needs root, which CI has; elsewhere this says so and does nothing.
    let Some(fs) = SmallFs::mount(3 << 20) else {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    };
    let cfg = small_config(&fs.0);
    let c = cfg.clone();
    let acked = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("full").unwrap();
        let mut acked = 0u64;
        let mut first_err = None;
        for i in 0..2000u64 {
            match log.append(p, payload(p, i, 8000), 1, 1).await {
                Ok(a) => {
                    assert_eq!(a.base_offset, acked, "offsets stay dense across failures");
                    acked += 1;
                }
                Err(e) => {
                    first_err.get_or_insert(e.to_string());
                    if first_err.is_some() && i > acked + 20 {
                        break;
                    }
                }
            }
        }
        let err = first_err.expect("the device filled up");
        assert!(err.contains("no space left"), "{err}");
        assert!(acked > 50, "{acked} appends before the device filled");
        check_dense(&read_all(&log, p).await, p, &vec![1; acked as usize]);
        let _ = log.close().await;
        acked
    });
    // After a restart on the same full device every acknowledged batch reads back
    // (closing may fail there: it cannot write the ledger).
    let _ = run(restarted_holds(cfg, "full", acked));
    drop(fs);
}

/// Opens the log again and checks that partition `name` holds exactly `acked`
/// one-record batches, dense and byte-identical; returns how closing went.
async fn restarted_holds(
    cfg: LogConfig,
    name: &'static str,
    acked: u64,
) -> tidewater_io::Result<()> {
    let (log, _) = ShardLog::open(cfg).await.unwrap();
    let p = log.partition_id(name).unwrap();
    assert_eq!(log.high_watermark(p).unwrap(), acked);
    check_dense(&read_all(&log, p).await, p, &vec![1; acked as usize]);
    log.close().await
}

/// A small ext4 file system in an image file, loop-mounted (root only; `None` where
/// that is not possible). Unlike tmpfs, ext4 really preallocates segment files.
struct SmallExt4 {
    dir: tempfile::TempDir,
}

impl SmallExt4 {
    fn mount(bytes: u64) -> Option<SmallExt4> {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let ok = |c: &mut std::process::Command| c.status().is_ok_and(|s| s.success());
        let made = ok(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal", "-m", "0"])
            .arg(&image))
            && ok(std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mnt));
        made.then_some(SmallExt4 { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a properly sized out-parameter.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallExt4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.path())
            .status();
    }
}

#[test]
fn a_full_ledger_device_fails_appends_and_they_resume_when_space_returns() {
    // The ledger alone on a device that fills up while the journal has room. The
    // device holds one ledger segment and not two, so the first roll seals the full
    // segment and then cannot create the next; appends fail once the ledger's
    // memory is spent, and all resumes once space is freed.
    let Some(fs) = SmallExt4::mount(16 << 20) else {
        eprintln!("SKIPPED: loop-mounting an ext4 image needs root and mkfs.ext4");
        return;
    };
    let segment = 1u64 << 20;
    let filler = fs.path().join("filler");
    let keep_free = segment + segment / 2;
    let fill = fs.free_bytes().checked_sub(keep_free).expect("room");
    std::fs::write(&filler, vec![1u8; fill as usize]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut cfg = small_config(root.path());
    cfg.ledger_dir = fs.path().join("ledger");
    cfg.ledger_segment_bytes = segment;
    let c = cfg.clone();
    let acked = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("full").unwrap();
        let mut acked = 0u64;
        let err = loop {
            match log.append(p, payload(p, acked, 8000), 1, 1).await {
                Ok(a) => {
                    assert_eq!(a.base_offset, acked);
                    acked += 1;
                }
                Err(e) => break e.to_string(),
            }
            assert!(acked < 2000, "the ledger device never filled");
        };
        assert!(err.contains("no space left"), "{err}");
        assert!(
            err.contains("allocating"),
            "the next segment could not be made: {err}"
        );
        assert!(acked > 100, "{acked} appends before the device filled");
        check_dense(&read_all(&log, p).await, p, &vec![1; acked as usize]);

        std::fs::remove_file(&filler).unwrap();
        let resumed_from = acked;
        let mut failures = 0;
        while acked < resumed_from + 300 {
            match log.append(p, payload(p, acked, 8000), 1, 1).await {
                Ok(a) => {
                    assert_eq!(a.base_offset, acked, "offsets stay dense across failures");
                    acked += 1;
                }
                Err(e) => {
                    // Until the ledger task has retried and written its backlog.
                    assert!(e.to_string().contains("no space left"), "{e}");
                    failures += 1;
                    assert!(failures < 500, "appends did not resume: {e}");
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        check_dense(&read_all(&log, p).await, p, &vec![1; acked as usize]);
        log.close().await.unwrap();
        acked
    });
    run(restarted_holds(cfg, "full", acked)).unwrap();
    drop(fs);
}

/// (start, end, partition id, base offset) of every data frame of a journal segment.
fn frames_with_owner(path: &Path) -> Vec<(usize, usize, u32, u64)> {
    let bytes = std::fs::read(path).unwrap();
    frame::Scanner::new(&bytes, frame::BLOCK, bytes.len())
        .filter_map(|s| match s {
            Step::Frame { pos, header } if header.kind == frame::Kind::Data => Some((
                pos,
                pos + header.frame_len(),
                header.partition,
                header.base_offset,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn media_damage_anywhere_loses_at_most_the_damaged_frame_with_the_ledger_behind_or_ahead() {
    for ledger_ahead in [false, true] {
        let pristine = tempfile::tempdir().unwrap();
        let cfg = held_back_config(pristine.path());
        let c = cfg.clone();
        // a and b interleaved, then b alone: a's last frame has only b's after it.
        let counts = run(async move {
            let (log, _) = ShardLog::open(c).await.unwrap();
            let a = log.create_partition("a").unwrap();
            let b = log.create_partition("b").unwrap();
            let mut n = [0u64; 2];
            // One journal write (a block or more) each: 50 fit one 256 KiB segment.
            for i in 0..50u64 {
                let p = if i < 36 && i % 2 == 0 { a } else { b };
                let k = (p == b) as usize;
                log.append(p, payload(p, n[k], 100), 1, 7).await.unwrap();
                n[k] += 1;
            }
            if ledger_ahead {
                log.close().await.unwrap();
            } else {
                drop(log); // a crash: the ledger holds nothing yet
            }
            n
        });
        let seg = active_segment(&cfg.journal_dir);
        let seg_name = seg.file_name().unwrap().to_owned();
        let frames = frames_with_owner(&seg);
        assert_eq!(frames.len(), 50);
        let last_end = frames.last().unwrap().1;
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut positions: Vec<usize> = (0..40)
            .map(|_| rng.gen_range(frame::BLOCK..last_end))
            .collect();
        // Every frame boundary too: each frame's first and last byte.
        positions.extend(frames.iter().flat_map(|f| [f.0, f.1 - 1]));
        let root = pristine.path().to_path_buf();
        run(async move {
            let work = tempfile::tempdir().unwrap();
            for pos in positions {
                let w = work.path().join(format!("flip-{pos}"));
                copy_dir(&root, &w);
                // The ledger ahead as after a crash that came once it was written:
                // the journal is read (a clean stop's marker would skip it).
                let _ = std::fs::remove_file(w.join("journal").join("clean-stop"));
                let seg = w.join("journal").join(&seg_name);
                let mut bytes = std::fs::read(&seg).unwrap();
                bytes[pos] ^= 0x5a;
                std::fs::write(&seg, &bytes).unwrap();
                let hit = frames.iter().position(|f| pos >= f.0 && pos < f.1);
                // Opened with the settings it was written with.
                let (log, report) = ShardLog::open(held_back_config(&w)).await.unwrap();
                let at = format!(
                    "ledger ahead {ledger_ahead}, flip at {pos} (frame {hit:?}): {:?} {:?} {:?}",
                    report.dropped, report.damaged, report.lost
                );
                let mut empty = 0;
                for (k, name) in ["a", "b"].iter().enumerate() {
                    let p = log.partition_id(name).unwrap();
                    let entries = read_all(&log, p).await;
                    let hw = log.high_watermark(p).unwrap();
                    // Dense from 0, every entry with data exactly as appended.
                    for (i, e) in entries.iter().enumerate() {
                        assert_eq!(e.base_offset, i as u64, "{at}");
                        if e.payload.is_empty() {
                            empty += 1;
                            continue;
                        }
                        let want =
                            payload(p, i as u64, e.payload.len() - format!("p{p} i{i} ").len());
                        assert_eq!(e.payload, want, "{at}");
                    }
                    // Only the damaged frame can be missing, and only when it is the
                    // last of its partition (then its header could not be trusted),
                    // or the last of the journal (a torn tail).
                    let own_hit = hit.filter(|&h| frames[h].2 == p);
                    let missing = counts[k] - hw;
                    match own_hit {
                        _ if ledger_ahead => assert_eq!(missing, 0, "{at}"),
                        None => assert_eq!(missing, 0, "{at}"),
                        Some(h) => {
                            let last_of_partition = frames[h + 1..].iter().all(|f| f.2 != p);
                            let last_of_journal = h + 1 == frames.len();
                            // A flip in the payload leaves the header readable: its
                            // offsets are kept, as lost, unless it is a torn tail.
                            let header_intact = pos >= frames[h].0 + frame::HEADER_LEN;
                            if header_intact && !last_of_journal {
                                assert_eq!(missing, 0, "{at}");
                            }
                            assert!(missing == 0 || (missing == 1 && last_of_partition), "{at}");
                        }
                    }
                }
                assert!(empty <= 1, "{at}");
                if ledger_ahead {
                    assert_eq!(empty, 0, "{at}");
                    assert!(report.lost.is_empty(), "{at}");
                }
                assert_eq!(report.lost.len(), empty, "{at}");
                // Damage inside any frame but the journal's last is media damage,
                // reported as such.
                if hit.is_some_and(|h| h + 1 < frames.len()) {
                    assert!(report.degraded(), "{at}");
                    assert!(report.damaged[0].path.ends_with(&seg_name), "{at}");
                }
                log.close().await.unwrap();
                std::fs::remove_dir_all(&w).unwrap();
            }
        });
    }
}

#[test]
fn a_damaged_segment_header_is_rebuilt_from_its_frames_and_nothing_is_lost() {
    let pristine = tempfile::tempdir().unwrap();
    let n = 40u64;
    let cfg = journal_only_log(pristine.path(), n);
    let seg = active_segment(&cfg.journal_dir);
    let seg_name = seg.file_name().unwrap().to_owned();
    let root = pristine.path().to_path_buf();
    run(async move {
        let work = tempfile::tempdir().unwrap();
        // Each header field, its checksum, and the whole block zeroed.
        for (case, at) in [
            ("crc", 1),
            ("magic", 6),
            ("segment_seq", 17),
            ("first_seq", 25),
            ("zeroed", usize::MAX),
        ] {
            let w = work.path().join(case);
            copy_dir(&root, &w);
            let seg = w.join("journal").join(&seg_name);
            let mut bytes = std::fs::read(&seg).unwrap();
            if at == usize::MAX {
                bytes[..frame::BLOCK].fill(0);
            } else {
                bytes[at] ^= 0x24;
            }
            std::fs::write(&seg, &bytes).unwrap();
            let c = held_back_config(&w);
            let (log, report) = ShardLog::open(c.clone()).await.unwrap();
            let p = log.partition_id("p").unwrap();
            assert_eq!(
                log.high_watermark(p).unwrap(),
                n,
                "{case}: {:?}",
                report.dropped
            );
            check_dense(&read_all(&log, p).await, p, &vec![1; n as usize]);
            assert!(report.degraded(), "{case}");
            assert!(report.damaged[0].reason.contains("header"), "{case}");
            assert!(report.lost.is_empty(), "{case}");
            let copies = std::fs::read_dir(w.join("journal.damaged"))
                .unwrap()
                .count();
            assert_eq!(copies, 1, "{case}: the segment as found, kept");
            // New appends go on densely and survive the next restart.
            log.append(p, payload(p, n, 100), 1, 7).await.unwrap();
            drop(log);
            let (log, report) = ShardLog::open(c).await.unwrap();
            assert!(report.dropped.is_empty(), "{case}: {:?}", report.dropped);
            check_dense(&read_all(&log, p).await, p, &vec![1; n as usize + 1]);
            log.close().await.unwrap();
        }
    });
}

/// After a clean stop the next start reads no journal segment (the marker says
/// where it ends and that the ledger holds it all); a crash after that start is
/// recovered from the journal as always, and a damaged marker, or a ledger found
/// damaged at open, makes the start read the journal.
#[test]
fn a_clean_stop_is_trusted_once_and_a_crash_after_it_reads_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let marker = cfg.journal_dir.join("clean-stop");
    let c = cfg.clone();
    let first = run(async move {
        let (log, report) = ShardLog::open(c).await.unwrap();
        assert!(!report.clean_stop);
        let p = log.create_partition("p").unwrap();
        for i in 0..300u64 {
            log.append(p, payload(p, i, 900), 1, 7).await.unwrap();
        }
        log.close().await.unwrap();
        p
    });
    assert!(marker.exists(), "a clean stop leaves its marker");
    let c = cfg.clone();
    let m = marker.clone();
    run(async move {
        let (log, report) = ShardLog::open(c).await.unwrap();
        assert!(report.clean_stop, "{report:?}");
        assert_eq!(report.journal_segments_scanned, 0);
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert!(
            !m.exists(),
            "the marker is taken before anything is written"
        );
        check_dense(&read_all(&log, first).await, first, &vec![1; 300]);
        // More after the clean start, then a crash: they live in the journal.
        for i in 300..400u64 {
            log.append(first, payload(first, i, 900), 1, 7)
                .await
                .unwrap();
        }
        drop(log);
    });
    assert!(!marker.exists());
    let c = cfg.clone();
    run(async move {
        let (log, report) = ShardLog::open(c).await.unwrap();
        assert!(!report.clean_stop);
        assert!(report.journal_segments_scanned > 0, "{report:?}");
        check_dense(&read_all(&log, first).await, first, &vec![1; 400]);
        log.close().await.unwrap();
    });
    // A damaged marker, and the temporary of a marker a stop died writing: the
    // journal is read, nothing is lost.
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, text.replace("next_seq ", "next_seq 9")).unwrap();
    std::fs::write(cfg.journal_dir.join("clean-stop.tmp"), "tidewater cl").unwrap();
    let c = cfg.clone();
    run(async move {
        let (log, report) = ShardLog::open(c).await.unwrap();
        assert!(!report.clean_stop);
        assert!(report.journal_segments_scanned > 0);
        check_dense(&read_all(&log, first).await, first, &vec![1; 400]);
        log.close().await.unwrap();
    });
    assert!(!cfg.journal_dir.join("clean-stop.tmp").exists());
    // A clean stop, then the ledger's active segment cut short on the disk: the
    // start reads the journal and restores what the cut took.
    let last = last_ledger_segment(&cfg.ledger_dir, "p");
    let mut bytes = std::fs::read(&last).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[used - 100] ^= 0x5a;
    std::fs::write(&last, &bytes).unwrap();
    assert!(marker.exists());
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(!report.clean_stop, "{report:?}");
        assert!(report.frames_restored > 0, "{report:?}");
        check_dense(&read_all(&log, first).await, first, &vec![1; 400]);
        log.close().await.unwrap();
    });
}

/// A lost ledger write: a block of zeros in the middle of a partition's active
/// segment with written bytes after it, every frame still in the journal. The
/// segment is cut where the last whole write before the block ended, and the
/// journal restores everything after it. (The cut used to fall inside a write,
/// leaving the start of a dropped frame in front of the restored ones, where
/// reads stopped below the high watermark.)
#[test]
fn a_lost_ledger_write_in_the_active_segment_is_restored_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let c = cfg.clone();
    let p = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("p").unwrap();
        for i in 0..400u64 {
            log.append(p, payload(p, i, 900), 1, 7).await.unwrap();
        }
        log.close().await.unwrap();
        p
    });
    let _ = std::fs::remove_file(cfg.journal_dir.join("clean-stop"));
    let last = last_ledger_segment(&cfg.ledger_dir, "p");
    let mut bytes = std::fs::read(&last).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap();
    let block = (used / 2) & !4095;
    bytes[block..block + 4096].fill(0);
    std::fs::write(&last, &bytes).unwrap();
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.frames_restored > 0, "{report:?}");
        check_dense(&read_all(&log, p).await, p, &vec![1; 400]);
        log.close().await.unwrap();
    });
}
