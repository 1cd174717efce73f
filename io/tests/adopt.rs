//! Adopted journal segments (`journal_adopt`, `docs/write-once.md` step 2b) on real
//! O_DIRECT files: what the journal wrote is the ledger's data, never copied; every
//! batch reads back the same through a clean stop, a crash, and each state an
//! interrupted adoption can leave.

use glommio::LocalExecutorBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tidewater_io::ledger::mixed::RunIndex;
use tidewater_io::{Entry, JournalAdopt, LogConfig, LogError, ShardLog};

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f)
}

/// `config` with 200 KiB of retention a partition, applied every 20 ms.
fn retained(root: &Path) -> LogConfig {
    let mut cfg = config(root);
    cfg.retention_bytes = Some(200 << 10);
    cfg.ledger_flush_interval_ms = 20;
    cfg
}

/// Small segments in a ring of four, so slots are reused many times over.
fn config(root: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(root.join("journal"), root.join("ledger"), 0);
    cfg.journal_segment_bytes = 256 << 10;
    cfg.journal_segments = 4;
    cfg.journal_flush_bytes_max = 64 << 10;
    cfg.batch_bytes_max = 16 << 10;
    cfg.ledger_segment_bytes = 128 << 10;
    cfg.ledger_flush_bytes = 32 << 10;
    cfg.ledger_pending_bytes_max = 1 << 20;
    cfg.journal_adopt = JournalAdopt::On;
    cfg
}

fn payload(p: u32, i: u64) -> Vec<u8> {
    let len = 200 + (i as usize * 397 + p as usize * 131) % 2800;
    let mut v = format!("p{p} i{i} ").into_bytes();
    v.extend((0..len).map(|k| (k as u64 ^ i ^ u64::from(p) << 5) as u8));
    v
}

async fn read_all(log: &ShardLog, p: u32) -> Vec<Entry> {
    let (mut next, mut out) = (0, Vec::new());
    while next < log.high_watermark(p).unwrap() {
        for e in log.read(p, next, 1 << 20).await.unwrap() {
            assert_eq!(e.base_offset, next, "dense");
            next = e.end_offset();
            out.push(e);
        }
    }
    out
}

/// Appends from twelve interleaved appenders, `per` batches each, to partitions
/// a, b, c; returns the log and the partition ids.
async fn fill(log: Rc<ShardLog>, per: u64, round: u64) -> Vec<u32> {
    fill_by(log, per, round, |k| k as usize % 3).await
}

/// Appends from twelve interleaved appenders, `per` batches each; appender `k`
/// to partition `["a", "b", "c"][of(k)]`. Returns the partition ids.
async fn fill_by(log: Rc<ShardLog>, per: u64, round: u64, of: fn(u32) -> usize) -> Vec<u32> {
    let parts: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            log.partition_id(n)
                .unwrap_or_else(|| log.create_partition(n).unwrap())
        })
        .collect();
    let tasks: Vec<_> = (0..12u32)
        .map(|k| {
            let (log, p) = (log.clone(), parts[of(k)]);
            glommio::spawn_local(async move {
                for i in 0..per {
                    let id = round << 48 | u64::from(k) << 32 | i;
                    log.append(p, payload(p, id), 1 + (i % 3) as u32, i as i64)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    parts
}

async fn everything(log: &ShardLog, parts: &[u32]) -> HashMap<u32, Vec<Entry>> {
    let mut out = HashMap::new();
    for &p in parts {
        out.insert(p, read_all(log, p).await);
    }
    out
}

/// The same batches: compared as (offset, count, length) first, so a failure
/// names the first difference instead of printing every payload.
fn assert_same(got: &HashMap<u32, Vec<Entry>>, want: &HashMap<u32, Vec<Entry>>) {
    type Shape = Vec<(u32, Vec<(u64, u32, usize)>)>;
    let shape = |m: &HashMap<u32, Vec<Entry>>| -> Shape {
        let mut v: Vec<_> = m
            .iter()
            .map(|(p, es)| {
                let s = es
                    .iter()
                    .map(|e| (e.base_offset, e.record_count, e.payload.len()));
                (*p, s.collect())
            })
            .collect();
        v.sort();
        v
    };
    let (g, w) = (shape(got), shape(want));
    for ((gp, gs), (wp, ws)) in g.iter().zip(&w) {
        assert_eq!(gp, wp);
        let first = gs.iter().zip(ws).position(|(a, b)| a != b);
        assert!(
            first.is_none() && gs.len() == ws.len(),
            "partition {gp}: {} entries, {} wanted; first difference at entry {first:?}: {:?} vs {:?}",
            gs.len(),
            ws.len(),
            first.map(|i| gs[i]),
            first.map(|i| ws[i])
        );
    }
    assert_eq!(g.len(), w.len());
    assert!(got == want, "payloads differ");
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// Every per-partition segment file and the CRC of its bytes.
fn log_files(ledger: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(ledger).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() && path.file_name().unwrap() != "mixed" {
            for f in files_in(&path, "log") {
                let crc = crc32c::crc32c(&std::fs::read(&f).unwrap());
                out.push((f, crc));
            }
        }
    }
    out.sort();
    out
}

/// No partition directory holds a segment: nothing was copied.
fn assert_nothing_copied(ledger: &Path) {
    for e in std::fs::read_dir(ledger).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() && path.file_name().unwrap() != "mixed" {
            assert!(files_in(&path, "log").is_empty(), "{path:?} holds a copy");
        }
    }
}

#[test]
fn adopted_segments_hold_every_batch_once_through_a_clean_stop_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mixed = cfg.ledger_dir.join("mixed");
    let ledger_dir = cfg.ledger_dir.clone();
    let want = run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 150, 0).await;
        let want = everything(&log, &parts).await;
        let st = log.stats();
        assert_eq!(st.ledger_write_bytes, 0, "nothing copied");
        // Far more segments than the ring holds: slots were reused after adoption.
        assert!(st.journal_segments_adopted > 8, "{st:?}");
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        assert_nothing_copied(&ledger_dir);
        let segs = files_in(&mixed, "seg");
        assert_eq!(segs.len(), files_in(&mixed, "index").len());
        assert!(segs.len() as u64 > st.journal_segments_adopted - 1);

        // A clean start reads it all back, and goes on numbering above it.
        let (log, report) = ShardLog::open(cfg.clone()).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert_same(&everything(&log, &parts).await, &want);
        let log = Rc::new(log);
        fill(log.clone(), 40, 1).await;
        let want = everything(&log, &parts).await;
        // A crash: dropped, not closed; the journal holds the newest segments.
        drop(log);
        want
    });
    let cfg = config(dir.path());
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert!(!report.clean_stop);
        assert!(
            report.frames_restored > 0,
            "the newest frames came from the journal"
        );
        let parts: Vec<u32> = want.keys().copied().collect();
        assert_same(&everything(&log, &parts).await, &want);
        assert_eq!(log.stats().ledger_write_bytes, 0);
        log.close().await.unwrap();
    });
    assert_nothing_copied(&dir.path().join("ledger"));
}

#[test]
fn a_crash_mid_load_keeps_exactly_what_was_acknowledged() {
    for cut in [37u64, 211, 503] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let c = cfg.clone();
        // Appends stop being counted as acknowledged at the crash: each appender
        // records what completed before the log went away.
        let acked = run(async move {
            let (log, _) = ShardLog::open(c).await.unwrap();
            let log = Rc::new(log);
            let p = log.create_partition("p").unwrap();
            let done = Rc::new(std::cell::RefCell::new(Vec::new()));
            for k in 0..6u64 {
                let (log, done) = (log.clone(), done.clone());
                glommio::spawn_local(async move {
                    for i in 0.. {
                        let data = payload(p, k << 32 | i);
                        match log.append(p, data.clone(), 1, 0).await {
                            Ok(a) => done.borrow_mut().push((a.base_offset, data)),
                            Err(_) => break,
                        }
                    }
                })
                .detach();
            }
            while (done.borrow().len() as u64) < cut * 6 {
                glommio::timer::sleep(std::time::Duration::from_micros(200)).await;
            }
            let acked = done.borrow().clone();
            drop(log);
            acked
        });
        run(async move {
            let (log, report) = ShardLog::open(cfg).await.unwrap();
            assert!(report.dropped.is_empty(), "{:?}", report.dropped);
            let p = log.partition_id("p").unwrap();
            let got = read_all(&log, p).await;
            let by_offset: HashMap<u64, &Entry> = got.iter().map(|e| (e.base_offset, e)).collect();
            for (offset, data) in &acked {
                let e = by_offset
                    .get(offset)
                    .expect("an acknowledged batch is kept");
                assert_eq!(e.payload, *data, "offset {offset}");
            }
            // And the log goes on from there.
            let next = log.high_watermark(p).unwrap();
            let a = log.append(p, b"after".to_vec(), 1, 0).await.unwrap();
            assert_eq!(a.base_offset, next);
            log.close().await.unwrap();
        });
    }
}

/// A log with adopted segments, closed cleanly; returns what it holds.
fn adopted_log(root: &Path) -> HashMap<u32, Vec<Entry>> {
    let cfg = config(root);
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 60, 0).await;
        let want = everything(&log, &parts).await;
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        want
    })
}

/// Reopens, checks `want`, appends one more batch and closes; returns the report
/// and what the log now holds.
fn reopen_and_check(
    root: &Path,
    want: HashMap<u32, Vec<Entry>>,
) -> (tidewater_io::RecoveryReport, HashMap<u32, Vec<Entry>>) {
    let cfg = config(root);
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        let parts: Vec<u32> = want.keys().copied().collect();
        assert_same(&everything(&log, &parts).await, &want);
        let p = parts[0];
        let next = log.high_watermark(p).unwrap();
        assert_eq!(
            log.append(p, b"more".to_vec(), 1, 0)
                .await
                .unwrap()
                .base_offset,
            next
        );
        let now = everything(&log, &parts).await;
        log.close().await.unwrap();
        (report, now)
    })
}

/// A log with adopted segments that crashed under load (dropped, not closed): the
/// newest segments are still in the journal. Returns what it acknowledged.
fn crashed_log(root: &Path, round: u64) -> HashMap<u32, Vec<Entry>> {
    let cfg = config(root);
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 60, round).await;
        let want = everything(&log, &parts).await;
        drop(log);
        want
    })
}

/// The journal slots holding no segment (a new file in place of an adopted one).
fn fresh_slots(journal: &Path) -> Vec<PathBuf> {
    files_in(journal, "seg")
        .into_iter()
        .filter(|s| std::fs::read(s).unwrap()[..4096].iter().all(|&b| b == 0))
        .collect()
}

/// The newest adopted segment and its index.
fn newest_adopted(mixed: &Path) -> (PathBuf, PathBuf) {
    let seg = files_in(mixed, "seg").pop().unwrap();
    let index = seg.with_extension("index");
    assert!(index.exists());
    (seg, index)
}

#[test]
fn each_state_an_interrupted_adoption_leaves_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mixed = root.join("ledger").join("mixed");
    let journal = root.join("journal");

    // Index written, segment not yet renamed: the segment is back in a journal
    // slot beside later live segments, its index in `mixed/`. The index is
    // removed, the segment replayed from the journal and adopted again.
    let want = crashed_log(root, 0);
    let (seg, index) = newest_adopted(&mixed);
    let slot = fresh_slots(&journal)
        .pop()
        .expect("a slot adoption replaced");
    std::fs::rename(&seg, &slot).unwrap();
    // As it was in the journal: adoption cuts a segment only once it is out.
    let file = std::fs::OpenOptions::new().write(true).open(&slot).unwrap();
    file.set_len(256 << 10).unwrap();
    // Whatever the index says, it goes: the segment's frames come from the journal.
    std::fs::write(&index, b"an index whose segment is still in the journal").unwrap();
    std::fs::write(mixed.join("x.index.tmp"), b"half").unwrap();
    let (report, want) = reopen_and_check(root, want);
    assert!(report.frames_restored > 0, "{report:?}");
    assert!(seg.exists(), "adopted again");
    RunIndex::decode(&std::fs::read(&index).unwrap()).expect("written again");
    assert!(!mixed.join("x.index.tmp").exists());

    // Renamed, but its journal slot not yet replaced, later segments live in the
    // journal: the slot is created again, nothing is lost.
    let more = crashed_log(root, 1);
    let slot = fresh_slots(&journal)
        .pop()
        .expect("a slot adoption replaced");
    std::fs::remove_file(&slot).unwrap();
    let (report, got) = reopen_and_check(root, more);
    assert!(report.dropped.is_empty(), "{report:?}");
    assert!(slot.exists());
    // What the first crash kept is still there, first.
    for (p, es) in &want {
        assert_same(
            &HashMap::from([(*p, got[p][..es.len()].to_vec())]),
            &HashMap::from([(*p, es.clone())]),
        );
    }

    // An index lost or damaged: rebuilt from its segment.
    let want = adopted_log_more(root, got);
    let indexes = files_in(&mixed, "index");
    std::fs::remove_file(&indexes[0]).unwrap();
    let mut bytes = std::fs::read(&indexes[1]).unwrap();
    bytes[50] ^= 1;
    std::fs::write(&indexes[1], bytes).unwrap();
    let (report, _) = reopen_and_check(root, want);
    assert_eq!(report.indexes_rebuilt.len(), 2, "{report:?}");
    assert!(indexes[0].exists());
}

/// Reopens, checks `want`, appends more and closes; returns what the log holds.
fn adopted_log_more(root: &Path, want: HashMap<u32, Vec<Entry>>) -> HashMap<u32, Vec<Entry>> {
    let cfg = config(root);
    run(async move {
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        let parts: Vec<u32> = want.keys().copied().collect();
        assert_same(&everything(&log, &parts).await, &want);
        let log = Rc::new(log);
        fill(log.clone(), 30, 1).await;
        let now = everything(&log, &parts).await;
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        now
    })
}

#[test]
fn adoption_is_refused_across_file_systems_and_cannot_be_turned_off_silently() {
    let dir = tempfile::tempdir().unwrap();
    adopted_log(dir.path());
    let mut cfg = config(dir.path());
    cfg.journal_adopt = JournalAdopt::Off;
    let err = run(async move { ShardLog::open(cfg).await.err().unwrap() });
    match err {
        LogError::Config(what) => assert!(what.contains("journal_adopt = true"), "{what}"),
        other => panic!("{other:?}"),
    }
    // /dev/shm is a tmpfs: another file system than the temporary directory's.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let other = tempfile::tempdir_in(shm).unwrap();
        let mut cfg = config(dir.path());
        cfg.journal_dir = other.path().join("journal");
        let err = run(async move { ShardLog::open(cfg).await.err().unwrap() });
        match err {
            LogError::Config(what) => assert!(what.contains("one file system"), "{what}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_damaged_frame_is_kept_as_lost_in_the_adopted_index_and_stays_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // One segment holds it all: the damage is in the segment recovery adopts.
    cfg.journal_segment_bytes = 1 << 20;
    let c = cfg.clone();
    let n = 30u64;
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("p").unwrap();
        for i in 0..n {
            log.append(p, payload(p, i), 1, i as i64).await.unwrap();
        }
        drop(log); // a crash: everything is in the journal's active segment
    });
    // Flip one byte in the payload of the frame at offset 11.
    let active = files_in(&cfg.journal_dir, "seg")
        .into_iter()
        .find(|s| std::fs::read(s).unwrap()[..4096].iter().any(|&b| b != 0))
        .unwrap();
    let mut bytes = std::fs::read(&active).unwrap();
    let needle = b"p0 i11 ";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + 100] ^= 0x21;
    std::fs::write(&active, bytes).unwrap();
    let check = |entries: Vec<Entry>| {
        assert_eq!(entries.len() as u64, n, "dense");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.base_offset, i as u64);
            if i == 11 {
                assert!(e.payload.is_empty(), "the lost frame reads as no payload");
            } else {
                assert_eq!(e.payload, payload(0, i as u64), "offset {i}");
            }
        }
    };
    for round in 0..2 {
        let c = cfg.clone();
        let entries = run(async move {
            let (log, report) = ShardLog::open(c).await.unwrap();
            if round == 0 {
                assert_eq!(report.lost.len(), 1, "{report:?}");
                assert_eq!((report.lost[0].from, report.lost[0].to), (11, 12));
            }
            let p = log.partition_id("p").unwrap();
            let got = read_all(&log, p).await;
            log.close().await.unwrap();
            got
        });
        // Once adopted, the loss is in the index: the next start says the same.
        check(entries);
    }
    assert_nothing_copied(&cfg.ledger_dir);
}

#[test]
fn a_read_through_runs_far_apart_in_the_file_takes_each_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Writes of up to 512 KiB, most of each one a busy partition's: the quiet
    // partition's runs lie far apart, each read in a read of its own.
    cfg.journal_segment_bytes = 4 << 20;
    cfg.journal_flush_bytes_max = 512 << 10;
    cfg.ledger_pending_bytes_max = 4 << 20;
    run(async move {
        let (log, _) = ShardLog::open(cfg.clone()).await.unwrap();
        let log = Rc::new(log);
        let busy = log.create_partition("busy").unwrap();
        let quiet = log.create_partition("quiet").unwrap();
        let mut tasks = Vec::new();
        for k in 0..10u64 {
            let log = log.clone();
            let (p, len) = if k < 8 {
                (busy, 15 << 10)
            } else {
                (quiet, 300)
            };
            tasks.push(glommio::spawn_local(async move {
                for i in 0..60u64 {
                    let mut data = payload(p, k << 32 | i);
                    data.resize(len, k as u8);
                    log.append(p, data, 1, 0).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let want = everything(&log, &[busy, quiet]).await;
        let log = Rc::try_unwrap(log).ok().unwrap();
        log.close().await.unwrap();
        let (log, _) = ShardLog::open(cfg).await.unwrap();
        // Everything now reads from adopted segments, by runs.
        assert_same(&everything(&log, &[busy, quiet]).await, &want);
        // From the middle, with room for one batch.
        let mid = &want[&quiet][77];
        let one = log.read(quiet, mid.base_offset, 1).await.unwrap();
        assert_eq!(one, std::slice::from_ref(mid));
        log.close().await.unwrap();
    });
}

#[test]
fn turning_adoption_on_keeps_what_was_copied_and_writes_once_from_there() {
    // A long run laps the journal ring; a short one crashes with segments of the
    // copying history still in journal slots beside the adopted one.
    for (crash, per) in [(false, 100), (true, 100), (false, 25), (true, 25)] {
        let dir = tempfile::tempdir().unwrap();
        let mut copying = config(dir.path());
        copying.journal_adopt = JournalAdopt::Off;
        let c = copying.clone();
        // Written with copies: per-partition segments, and (after a crash) frames
        // only the journal holds (120 KB or so: less than the 1 MiB of memory the
        // ledger fills before it writes).
        let want = run(async move {
            let (log, _) = ShardLog::open(c).await.unwrap();
            let log = Rc::new(log);
            let parts = fill(log.clone(), 40, 0).await;
            let want = everything(&log, &parts).await;
            let log = Rc::try_unwrap(log).ok().unwrap();
            if crash {
                drop(log);
            } else {
                log.close().await.unwrap();
            }
            want
        });
        let before = log_files(&dir.path().join("ledger"));
        assert!(!before.is_empty(), "the copying history wrote segments");
        let cfg = config(dir.path());
        let (want, copied) = run(async move {
            let (log, _) = ShardLog::open(cfg).await.unwrap();
            let parts: Vec<u32> = want.keys().copied().collect();
            assert_same(&everything(&log, &parts).await, &want);
            let copied = log.stats().ledger_write_bytes;
            // After a crash, the segments the journal held are adopted, not copied.
            let adopted = log.stats().journal_segments_adopted;
            assert_eq!(adopted > 0, crash, "{:?}", log.stats());
            // Enough to lap the journal ring several times.
            let log = Rc::new(log);
            fill(log.clone(), per, 1).await;
            let st = log.stats();
            assert_eq!(st.ledger_write_bytes, copied, "nothing more is copied");
            assert!(st.journal_segments_adopted >= per / 25, "{st:?}");
            let want = everything(&log, &parts).await;
            // A crash, with segments of the copying history still in journal
            // slots behind the adopted ones.
            drop(log);
            (want, copied)
        });
        assert_eq!(copied, 0);
        reopen_and_check(dir.path(), want);
        assert_eq!(
            log_files(&dir.path().join("ledger")),
            before,
            "the copies made before adoption are all the copies there are"
        );
    }
}

/// Every batch read back from a partition is one `fill` wrote: its payload
/// regenerated from the id at its start.
fn assert_well_formed(p: u32, entries: &[Entry]) {
    for e in entries {
        let text = String::from_utf8_lossy(&e.payload[..40.min(e.payload.len())]).into_owned();
        let id: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.strip_prefix('i'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("offset {}: {text:?}", e.base_offset));
        assert_eq!(e.payload, payload(p, id), "offset {}", e.base_offset);
    }
}

async fn read_from_start(log: &ShardLog, p: u32) -> Vec<Entry> {
    let (mut next, mut out) = (log.log_start_offset(p).unwrap(), Vec::new());
    while next < log.high_watermark(p).unwrap() {
        for e in log.read(p, next, 1 << 20).await.unwrap() {
            // The first batch may begin before a start inside it.
            let covers = out.is_empty() && e.base_offset < next && e.end_offset() > next;
            assert!(
                e.base_offset == next || covers,
                "dense at {next}: {}",
                e.base_offset
            );
            next = e.end_offset();
            out.push(e);
        }
    }
    out
}

/// Reopens: nothing dropped, each partition's start at or past `starts`, and what
/// it holds from there is what `fill` wrote.
fn reopen_with_starts_kept(cfg: LogConfig, starts: Vec<(u32, u64)>) {
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        for (p, start) in starts {
            let now = log.log_start_offset(p).unwrap();
            assert!(
                now >= start,
                "partition {p}: the start went back to {now} from {start}"
            );
            assert_well_formed(p, &read_from_start(&log, p).await);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn retention_drops_runs_and_deletes_the_adopted_segments_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = retained(dir.path());
    let mixed = cfg.ledger_dir.join("mixed");
    let c = cfg.clone();
    let starts = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 300, 0).await;
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        let st = log.stats();
        assert!(st.segments_deleted > 5, "{st:?}");
        let mut starts = Vec::new();
        for &p in &parts {
            let start = log.log_start_offset(p).unwrap();
            assert!(start > 0, "retention moved the start");
            match log.read(p, start - 1, 1 << 20).await {
                Err(LogError::OffsetOutOfRange { .. }) => {}
                other => panic!("below the start: {other:?}"),
            }
            let kept = read_from_start(&log, p).await;
            assert_well_formed(p, &kept);
            let bytes: usize = kept.iter().map(|e| e.payload.len()).sum();
            // Runs go whole: at most a journal write's worth under the limit.
            assert!(
                bytes <= 200 << 10 && bytes > 100 << 10,
                "{bytes} bytes kept"
            );
            starts.push((p, start));
        }
        // Three partitions' 200 KiB in segments of 256 KiB, where the load
        // wrote about 6 MB.
        let segs = files_in(&mixed, "seg").len();
        assert!(segs <= 8, "{segs} adopted segments kept");
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        starts
    });
    reopen_with_starts_kept(cfg, starts);
}

#[test]
fn a_segment_goes_only_once_every_partition_is_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ledger_flush_interval_ms = 20;
    let mixed = cfg.ledger_dir.join("mixed");
    let c = cfg.clone();
    let (a, ends) = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 100, 0).await;
        let (a, b) = (parts[0], parts[1]);
        // `a` deleted up to its end but held by a checkpoint, `b` deleted up to
        // its end, `c` deleted.
        log.retain_from(a, Some(0));
        let end_a = log.high_watermark(a).unwrap();
        log.delete_records(a, end_a).await.unwrap();
        let end_b = log.high_watermark(b).unwrap();
        assert_eq!(log.delete_records(b, end_b).await.unwrap(), end_b);
        let c_name = ["a", "b", "c"][2];
        assert!(log.delete_partition(c_name).await.unwrap());
        let adopted = files_in(&mixed, "seg").len();
        assert!(adopted > 4);
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            files_in(&mixed, "seg").len(),
            adopted,
            "the hold keeps them all"
        );
        assert_eq!(log.log_start_offset(a).unwrap(), end_a);
        // The hold lifted: no adopted segment is needed.
        log.retain_from(a, None);
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        // Every adopted segment deleted but the newest, which keeps the floor the
        // journal numbers above.
        assert_eq!(
            files_in(&mixed, "seg").len(),
            1,
            "all but the newest deleted"
        );
        assert_eq!(files_in(&mixed, "index").len(), 1);
        // The log goes on from where it was.
        assert_eq!(
            log.append(a, b"on".to_vec(), 1, 0)
                .await
                .unwrap()
                .base_offset,
            end_a
        );
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        (a, (end_a, end_b, b))
    });
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        let (end_a, end_b, b) = ends;
        assert_eq!(log.log_start_offset(a).unwrap(), end_a);
        assert_eq!(log.high_watermark(a).unwrap(), end_a + 1);
        assert_eq!(read_from_start(&log, a).await[0].payload, b"on".to_vec());
        assert_eq!(log.log_start_offset(b).unwrap(), end_b);
        assert_eq!(log.high_watermark(b).unwrap(), end_b);
        assert_eq!(
            log.append(b, b"b".to_vec(), 1, 0)
                .await
                .unwrap()
                .base_offset,
            end_b
        );
        assert!(log.partition_id("c").is_none());
        log.close().await.unwrap();
    });
}

#[test]
fn a_start_retention_moved_stays_while_a_neighbour_keeps_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = retained(dir.path());
    // `b` keeps everything: every adopted segment stays, `a`'s and `c`'s runs in
    // them are dropped all the same.
    cfg.partition_limits.insert(
        "b".into(),
        tidewater_io::PartitionLimits::without_retention(&cfg),
    );
    let c = cfg.clone();
    let starts = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 200, 0).await;
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        let starts: Vec<(u32, u64)> = parts
            .iter()
            .map(|&p| (p, log.log_start_offset(p).unwrap()))
            .collect();
        let b = log.partition_id("b").unwrap();
        for &(p, start) in &starts {
            assert_eq!(start > 0, p != b, "partition {p} starts at {start}");
        }
        // A crash: the starts must come from what was recorded, not from the
        // segments that still hold the dropped runs. (Copy-out may have taken `b`
        // out of the oldest, where its share happened to be small.)
        let st = log.stats();
        assert!(
            st.segments_deleted < st.journal_segments_adopted / 2,
            "`b` holds the segments: {st:?}"
        );
        drop(log);
        starts
    });
    // Retention lifted: what it dropped stays dropped, though the segments that
    // held it are all still there.
    cfg.retention_bytes = None;
    reopen_with_starts_kept(cfg, starts);
}

#[test]
fn deleted_records_and_a_crash_with_everything_in_the_journal_lose_nothing_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.clone();
    // Ten batches of ten records, all in the journal's active segment; records
    // deleted up to offset 45, inside the fifth batch; then a crash.
    let want = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let p = log.create_partition("p").unwrap();
        for i in 0..10u64 {
            log.append(p, payload(p, i), 10, 0).await.unwrap();
        }
        assert_eq!(log.delete_records(p, 45).await.unwrap(), 45);
        let want = read_from_start(&log, p).await;
        assert_eq!(want[0].base_offset, 40, "the batch holding the start");
        drop(log);
        want
    });
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        let p = log.partition_id("p").unwrap();
        assert_eq!(log.log_start_offset(p).unwrap(), 45);
        assert_eq!(log.high_watermark(p).unwrap(), 100);
        assert_eq!(read_from_start(&log, p).await, want);
        assert_eq!(
            log.append(p, b"on".to_vec(), 1, 0)
                .await
                .unwrap()
                .base_offset,
            100
        );
        log.close().await.unwrap();
    });
}

/// Appends `per` batches from each of five appenders to `a` and to `c`, and from
/// two to `b`: `b` has about a sixth of every segment.
async fn fill_b_small(log: Rc<ShardLog>, per: u64, round: u64) -> Vec<u32> {
    fill_by(log, per, round, |k| {
        if k >= 10 {
            1
        } else {
            [0, 2][k as usize % 2]
        }
    })
    .await
}

/// Waits until `done` says so, up to ten seconds (the ledger's passes run every
/// 20 ms in these tests; a busy machine may make them late).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed().as_secs() < 10, "never: {what}");
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Every adopted segment file (segment and index) and its bytes.
fn mixed_files(mixed: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = ["seg", "index"]
        .iter()
        .flat_map(|ext| files_in(mixed, ext))
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_partition_kept_longer_is_copied_out_and_the_segments_it_shared_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ledger_flush_interval_ms = 20;
    let (ledger, mixed) = (cfg.ledger_dir.clone(), cfg.ledger_dir.join("mixed"));
    // Written with no retention: nothing is dropped, nothing copied. First `b`
    // alone, in a segment sealed at a clean stop: `b` is all of the oldest
    // segment, which alone is never a small share.
    let c = cfg.clone();
    let (ids, want) = run(async move {
        let (log, _) = ShardLog::open(c.clone()).await.unwrap();
        let b = log.create_partition("b").unwrap();
        for i in 0..20 {
            let id = 99 << 48 | i;
            log.append(b, payload(b, id), 1, i as i64).await.unwrap();
        }
        log.close().await.unwrap();
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        let ids = fill_b_small(log.clone(), 120, 0).await;
        let want = everything(&log, &ids).await;
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        (ids, want)
    });
    assert_nothing_copied(&ledger);
    let saved = mixed_files(&mixed);
    assert!(saved.len() >= 16, "{} adopted files", saved.len());
    let oldest = files_in(&mixed, "seg")[0].clone();
    // Retention for `a` and `c`; `b` keeps everything, so it is copied out of the
    // segments it alone keeps, and they go.
    cfg.retention_bytes = Some(200 << 10);
    cfg.partition_limits.insert(
        "b".into(),
        tidewater_io::PartitionLimits::without_retention(&cfg),
    );
    let b = ids[1];
    let (c, m) = (cfg.clone(), mixed.clone());
    let want_b = want[&b].clone();
    let starts = run(async move {
        let mixed = m;
        let (log, report) = ShardLog::open(c).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        // Under a checkpoint's hold nothing is copied: the hold goes soon.
        log.retain_from(b, Some(0));
        eventually("a's start moved", || {
            log.log_start_offset(ids[0]).unwrap() > 0
        })
        .await;
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(log.stats().copied_out_bytes, 0);
        log.retain_from(b, None);
        eventually("the oldest segment copied out and deleted", || {
            !oldest.exists()
        })
        .await;
        eventually("segments freed", || files_in(&mixed, "seg").len() <= 6).await;
        assert!(log.stats().copied_out_bytes > 0);
        assert_eq!(read_all(&log, b).await, want_b);
        let starts: Vec<(u32, u64)> = ids
            .iter()
            .map(|&p| (p, log.log_start_offset(p).unwrap()))
            .collect();
        // A crash, with the copies as the last writes.
        drop(log);
        starts
    });
    let kept = files_in(&mixed, "seg").len();
    let copies = log_files(&ledger);
    assert!(
        !copies.is_empty() && copies.iter().all(|(f, _)| f.starts_with(ledger.join("b"))),
        "{copies:?}"
    );
    reopen_with_starts_kept(cfg.clone(), starts.clone());
    let want_b = want[&b].clone();
    let c = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        assert_eq!(
            read_all(&log, b).await,
            want_b,
            "after a crash and a clean stop"
        );
        log.close().await.unwrap();
    });
    // As a crash in the middle of a copy-out leaves it: the adopted segments back,
    // and `b`'s copy cut short.
    let (newest, _) = copies.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap();
    file.set_len(len / 2 / 4096 * 4096).unwrap();
    for (f, bytes) in &saved {
        if !f.exists() {
            std::fs::write(f, bytes).unwrap();
        }
    }
    let (c, cut, m) = (cfg.clone(), newest.clone(), mixed.clone());
    let restored = files_in(&mixed, "seg").len();
    run(async move {
        let mixed = m;
        let (log, report) = ShardLog::open(c).await.unwrap();
        // The torn copy is reported; its runs still hold every batch.
        let torn = report.dropped.iter().all(|d| d.path == cut);
        assert!(torn, "{:?}", report.dropped);
        assert_eq!(read_all(&log, b).await, want[&b], "before the copy again");
        // What the cut took is copied again from the segments put back.
        eventually("copied again", || log.stats().copied_out_bytes > 0).await;
        eventually("freed again", || files_in(&mixed, "seg").len() <= kept).await;
        assert!(restored > kept);
        assert_eq!(read_all(&log, b).await, want[&b], "after the copy again");
        log.close().await.unwrap();
    });
    reopen_with_starts_kept(cfg, starts);
}

#[test]
fn auto_adopts_on_one_file_system_and_copies_across_two() {
    // One file system: adopted, nothing copied.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.journal_adopt = JournalAdopt::Auto;
    let c = cfg.clone();
    run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        fill(log.clone(), 40, 0).await;
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
    });
    assert_nothing_copied(&cfg.ledger_dir);
    assert!(!files_in(&cfg.ledger_dir.join("mixed"), "seg").is_empty());
    // A probe file a crash left at start-up is no foreign file: it goes.
    let probe = cfg.ledger_dir.join("adopt-probe.tmp");
    std::fs::write(&probe, b"").unwrap();
    let c = cfg.clone();
    run(async move { ShardLog::open(c).await.unwrap().0.close().await.unwrap() });
    assert!(!probe.exists());
    // /dev/shm is a tmpfs: another file system than the temporary directory's
    // (unless the temporary directory is there too).
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    if !shm.is_dir() || dev(shm) == dev(dir.path()) {
        return;
    }
    // Moved away from a ledger that holds adopted segments: refused, and told why.
    let other = tempfile::tempdir_in(shm).unwrap();
    let mut moved = cfg.clone();
    moved.journal_dir = other.path().join("journal");
    let err = run(async move { ShardLog::open(moved).await.err().unwrap() });
    match err {
        LogError::Config(what) => assert!(what.contains("move journal_dir back"), "{what}"),
        other => panic!("{other:?}"),
    }
    // Two file systems and a new ledger: copied, as the two-device layout wants.
    let fresh = tempfile::tempdir().unwrap();
    let mut two = config(fresh.path());
    two.journal_adopt = JournalAdopt::Auto;
    two.journal_dir = other.path().join("journal-2");
    let ledger = two.ledger_dir.clone();
    run(async move {
        let (log, _) = ShardLog::open(two).await.unwrap();
        let log = Rc::new(log);
        fill(log.clone(), 40, 0).await;
        assert_eq!(log.stats().journal_segments_adopted, 0);
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
    });
    assert!(
        !log_files(&ledger).is_empty(),
        "copied into ledger segments"
    );
    assert!(!ledger.join("mixed").exists() || files_in(&ledger.join("mixed"), "seg").is_empty());
}

#[test]
fn freed_segments_become_journal_slots_and_a_crash_reads_past_what_they_held() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = retained(dir.path());
    let mixed = cfg.ledger_dir.join("mixed");
    let c = cfg.clone();
    let want = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 300, 0).await;
        let st = log.stats();
        assert!(st.journal_segments_reused > 2, "{st:?}");
        let free = files_in(&mixed, "free").len();
        assert!(free <= 4, "{free} freed segments kept, for 4 journal slots");
        let mut want = HashMap::new();
        for &p in &parts {
            want.insert(p, read_from_start(&log, p).await);
        }
        // A crash: the journal's slots hold frames of the segments they were
        // before, older than anything the journal numbers now.
        drop(log);
        want
    });
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        for (p, w) in want {
            // Retention may have dropped a little more at the start.
            let got = read_from_start(&log, p).await;
            assert!(!got.is_empty() && got.len() <= w.len());
            assert_eq!(got[..], w[w.len() - got.len()..], "partition {p}");
            assert_eq!(
                log.high_watermark(p).unwrap(),
                w.last().unwrap().end_offset()
            );
        }
        log.close().await.unwrap();
    });
}

#[test]
fn once_retention_freed_everything_new_appends_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // `fill`'s batches carry timestamps near 0: each expires once adopted.
    cfg.retention_ms = Some(60_000);
    cfg.ledger_flush_interval_ms = 20;
    let mixed = cfg.ledger_dir.join("mixed");
    let c = cfg.clone();
    let (parts, acked) = run(async move {
        let (log, _) = ShardLog::open(c).await.unwrap();
        let log = Rc::new(log);
        let parts = fill(log.clone(), 150, 0).await;
        eventually("freed segments reused as journal slots", || {
            log.stats().journal_segments_reused > 2
        })
        .await;
        eventually("everything adopted expired", || {
            files_in(&mixed, "seg").len() <= 1
        })
        .await;
        // More passes: nothing more goes (the newest adopted segment stays).
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(files_in(&mixed, "seg").len(), 1);
        // New batches, kept by retention, only in the journal; then a crash.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut acked = Vec::new();
        for i in 0..30u64 {
            let p = parts[i as usize % 3];
            let a = log
                .append(p, payload(p, 7 << 48 | i), 1, now)
                .await
                .unwrap();
            acked.push((p, a.base_offset, i));
        }
        drop(log);
        (parts, acked)
    });
    run(async move {
        let (log, report) = ShardLog::open(cfg).await.unwrap();
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        for &(p, offset, i) in &acked {
            let got = log.read(p, offset, 1).await.unwrap();
            assert_eq!(got[0].base_offset, offset);
            assert_eq!(got[0].payload, payload(p, 7 << 48 | i), "offset {offset}");
        }
        for &p in &parts {
            let last = acked
                .iter()
                .filter(|a| a.0 == p)
                .map(|a| a.1)
                .max()
                .unwrap();
            assert_eq!(log.high_watermark(p).unwrap(), last + 1);
            let next = log.append(p, b"on".to_vec(), 1, 0).await.unwrap();
            assert_eq!(next.base_offset, last + 1);
        }
        log.close().await.unwrap();
    });
}
