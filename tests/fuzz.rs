//! Fuzz targets: what a hostile client or a damaged disk can hand the server, each
//! driven by a mutation loop over a seed corpus for a bounded time.
//!
//! Targets: the request decoder (every API and version we serve), the dispatcher
//! (a real server over TCP), record-batch validation and reading (every codec), the
//! Avro and JSON projections, and journal and ledger recovery from damaged files.
//! Each must never panic, never abort, never allocate more than `ALLOC_BYTES_MAX` at
//! once (the allocator below refuses, which aborts with the size named), and keep
//! what it promises (a recovered partition is dense; a served request answers or
//! closes).
//!
//! `scripts/test` runs each for `TIDEWATER_FUZZ_SECONDS` (default 5). For an hour:
//! `TIDEWATER_FUZZ_SECONDS=3600 cargo test --release --test fuzz -- --test-threads 1`.
//! Seeds: built here, plus every file in `fuzz/corpus/<target>/` (add an input that
//! once failed there). A run writes its RNG seed to `target/fuzz/<target>.seed`
//! first; `TIDEWATER_FUZZ_SEED=N` replays the same inputs in the same order.

mod common;

use common::requests::valid_requests;
use glommio::LocalExecutorBuilder;
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest single allocation a target may make: the request and inflate limits are
/// far below it; what the wire or a disk declares must never reach it.
const ALLOC_BYTES_MAX: usize = 512 << 20;

struct Capped;

// SAFETY: forwards to the system allocator; refusing (null) is allowed by
// GlobalAlloc and makes the caller abort with the size it asked for.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_BYTES_MAX {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_BYTES_MAX {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_BYTES_MAX {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `dealloc`; the new size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Values that break length and count fields.
const INTERESTING: &[&[u8]] = &[
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x80, 0x00, 0x00, 0x00],
    &[0x00, 0x00, 0x00, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x7f, 0xff],
    &[0xff, 0xff],
    &[0x00],
];

/// One to four random edits: bit flips, bytes, planted lengths, cuts, inserts.
fn mutate(rng: &mut rand::rngs::StdRng, input: &mut Vec<u8>, len_max: usize) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let at = rng.gen_range(0..len);
                input[at] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.gen_range(0..len);
                input[at] = rng.gen();
            }
            2 | 3 if len > 0 => {
                let plant = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let at = rng.gen_range(0..len);
                let end = (at + plant.len()).min(len);
                input[at..end].copy_from_slice(&plant[..end - at]);
            }
            4 if len > 1 => {
                let at = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - at).min(64));
                input.drain(at..at + n);
            }
            5 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=64);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            _ if len > 0 => {
                let at = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - at).min(256));
                let chunk = input[at..at + n].to_vec();
                let to = rng.gen_range(0..=len);
                input.splice(to..to, chunk);
            }
            _ => input.push(rng.gen()),
        }
    }
    input.truncate(len_max);
}

/// Runs `target` on mutations of `seeds` (and of `fuzz/corpus/<name>/*`) until the
/// time budget is spent; returns how many inputs ran.
fn drive(name: &str, mut seeds: Vec<Vec<u8>>, len_max: usize, mut target: impl FnMut(&[u8])) {
    let secs: u64 = std::env::var("TIDEWATER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("TIDEWATER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let out = repo().join("target/fuzz");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("{name}.seed")), seed.to_string()).unwrap();
    if let Ok(dir) = std::fs::read_dir(repo().join("fuzz/corpus").join(name)) {
        for e in dir.flatten() {
            seeds.push(std::fs::read(e.path()).unwrap());
        }
    }
    assert!(!seeds.is_empty(), "{name}: no seeds");
    // The seeds themselves first: each must pass as it is.
    for s in &seeds {
        target(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
        mutate(&mut rng, &mut input, len_max);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if let Err(panic) = outcome {
            let path = out.join(format!("{name}-failure-{seed}-{runs}"));
            std::fs::write(&path, &input).unwrap();
            std::panic::resume_unwind(Box::new(format!(
                "{name}: input {} failed: {panic:?}",
                path.display()
            )));
        }
        runs += 1;
    }
    eprintln!("{name}: {runs} mutated inputs in {secs} s (seed {seed})");
    assert!(runs > 0);
}

/// The requests without their size prefix: what the decoder is handed.
fn request_seeds() -> Vec<Vec<u8>> {
    valid_requests()
        .into_iter()
        .map(|(_, _, framed)| framed[4..].to_vec())
        .collect()
}

/// Decodes a request as the front end does; `Err` is a refusal, never a panic.
fn decode_request(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 4 {
        return Err("short".into());
    }
    let key = i16::from_be_bytes([bytes[0], bytes[1]]);
    let version = i16::from_be_bytes([bytes[2], bytes[3]]);
    let api = ApiKey::try_from(key).map_err(|_| "unknown API")?;
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    let header_version = api.request_header_version(version);
    RequestHeader::decode(&mut buf, header_version).map_err(|e| e.to_string())?;
    macro_rules! decode {
        ($t:ty) => {
            <$t>::decode(&mut buf, version)
                .map(drop)
                .map_err(|e| e.to_string())
        };
    }
    match api {
        ApiKey::ApiVersions => decode!(m::ApiVersionsRequest),
        ApiKey::Metadata => decode!(m::MetadataRequest),
        ApiKey::Produce => decode!(m::ProduceRequest),
        ApiKey::Fetch => decode!(m::FetchRequest),
        ApiKey::ListOffsets => decode!(m::ListOffsetsRequest),
        ApiKey::InitProducerId => decode!(m::InitProducerIdRequest),
        ApiKey::CreateTopics => decode!(m::CreateTopicsRequest),
        ApiKey::DeleteTopics => decode!(m::DeleteTopicsRequest),
        ApiKey::FindCoordinator => decode!(m::FindCoordinatorRequest),
        ApiKey::JoinGroup => decode!(m::JoinGroupRequest),
        ApiKey::SyncGroup => decode!(m::SyncGroupRequest),
        ApiKey::Heartbeat => decode!(m::HeartbeatRequest),
        ApiKey::LeaveGroup => decode!(m::LeaveGroupRequest),
        ApiKey::OffsetCommit => decode!(m::OffsetCommitRequest),
        ApiKey::OffsetFetch => decode!(m::OffsetFetchRequest),
        ApiKey::OffsetDelete => decode!(m::OffsetDeleteRequest),
        ApiKey::ListGroups => decode!(m::ListGroupsRequest),
        ApiKey::DescribeGroups => decode!(m::DescribeGroupsRequest),
        ApiKey::DeleteGroups => decode!(m::DeleteGroupsRequest),
        ApiKey::DescribeConfigs => decode!(m::DescribeConfigsRequest),
        ApiKey::AlterConfigs => decode!(m::AlterConfigsRequest),
        ApiKey::IncrementalAlterConfigs => decode!(m::IncrementalAlterConfigsRequest),
        ApiKey::DescribeCluster => decode!(m::DescribeClusterRequest),
        ApiKey::CreatePartitions => decode!(m::CreatePartitionsRequest),
        ApiKey::DeleteRecords => decode!(m::DeleteRecordsRequest),
        ApiKey::SaslHandshake => decode!(m::SaslHandshakeRequest),
        ApiKey::SaslAuthenticate => decode!(m::SaslAuthenticateRequest),
        ApiKey::DescribeUserScramCredentials => decode!(m::DescribeUserScramCredentialsRequest),
        ApiKey::AlterUserScramCredentials => decode!(m::AlterUserScramCredentialsRequest),
        ApiKey::CreateAcls => decode!(m::CreateAclsRequest),
        ApiKey::DescribeAcls => decode!(m::DescribeAclsRequest),
        ApiKey::DeleteAcls => decode!(m::DeleteAclsRequest),
        ApiKey::DescribeClientQuotas => decode!(m::DescribeClientQuotasRequest),
        ApiKey::AlterClientQuotas => decode!(m::AlterClientQuotasRequest),
        _ => Err("not served".into()),
    }
}

#[test]
fn fuzz_request_decoder() {
    drive("request_decoder", request_seeds(), 1 << 16, |input| {
        // Versions the crate knows but we do not serve are decoded too: a
        // version outside the crate's table may only be refused.
        let mut any = input.to_vec();
        let _ = decode_request(&any);
        if any.len() >= 4 {
            any[2] = 0;
            any[3] = 0;
            let _ = decode_request(&any);
        }
    });
}

#[test]
fn fuzz_request_dispatcher_on_a_real_server() {
    let mut s = common::start_with("2", 2, &["--fetch-wait-ms-max", "20"]);
    let port = s.port;
    let mut sent = 0u64;
    let seeds: Vec<Vec<u8>> = valid_requests()
        .into_iter()
        // Creating topics for real would fill the disk with partitions: only
        // validate_only creations (v1 and later) are sent.
        .filter(|(api, v, _)| *api != ApiKey::CreateTopics || *v >= 1)
        .map(|(_, _, framed)| framed)
        .collect();
    drive("request_dispatcher", seeds, 1 << 16, |input| {
        // The size prefix stays true to the bytes sent, so each input reaches the
        // decoder whole.
        let mut framed = input.to_vec();
        if framed.len() >= 4 {
            let len = (framed.len() - 4) as i32;
            framed[..4].copy_from_slice(&len.to_be_bytes());
        }
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&framed);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut buf = [0u8; 4096];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        sent += 1;
        if sent % 64 == 0 {
            assert!(s.child.try_wait().unwrap().is_none(), "the server died");
        }
    });
    assert!(s.child.try_wait().unwrap().is_none(), "the server died");
    let _ = s.child.kill();
}

/// A reference batch (loadgen events) in each codec.
fn batch_seeds() -> Vec<Vec<u8>> {
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let records: Vec<_> = (0..20)
        .map(|i| {
            let mut key = Vec::new();
            tidewater_tools::loadgen::event::device_key(i, &mut key);
            let value = event_bytes(i);
            tidewater_tools::loadgen::record(&key, &value, 1_700_000_000_000 + i as i64, i as i64)
        })
        .collect();
    [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .map(|compression| {
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out.to_vec()
    })
    .collect()
}

/// One reference event, Avro-encoded as the load generator sends it.
fn event_bytes(device: u32) -> Vec<u8> {
    let r = tidewater_tools::loadgen::event::Reading::sample(device);
    let mut out = Vec::new();
    tidewater_tools::loadgen::event::encode(&r, &mut out);
    out
}

#[test]
fn fuzz_record_batches_in_every_codec() {
    use tidewater_shards::pipeline::records::{for_each_record, validate};
    let mut scratch = Vec::new();
    drive("record_batch", batch_seeds(), 1 << 20, |input| {
        if input.len() < 61 {
            return;
        }
        let last_delta = i32::from_be_bytes([input[23], input[24], input[25], input[26]]);
        let offsets = u32::try_from(last_delta).map_or(1, |d| d.saturating_add(1).min(1 << 20));
        let mut seen = 0u32;
        let mut bad = Vec::new();
        let whole = i32::from_be_bytes([input[8], input[9], input[10], input[11]]);
        let batch = usize::try_from(whole)
            .ok()
            .and_then(|w| input.get(..w.checked_add(12)?))
            .unwrap_or(input);
        let valid = validate(batch, &mut scratch).is_ok();
        let _ = validate(input, &mut scratch);
        for_each_record(batch, 0, offsets, &mut scratch, |_| seen += 1, &mut bad);
        // What validation accepts, the reader reads whole: every offset a record.
        if valid && batch.len() == input.len() {
            assert!(bad.is_empty(), "{bad:?}");
            assert_eq!(seen, offsets);
        }
    });
}

#[test]
fn fuzz_avro_and_json_projections() {
    use tidewater_shards::pipeline::spec::JobConfig;
    let job = |format: &str| -> JobConfig {
        toml::from_str(&format!(
            r#"
name = "j"
source = "s"
{format}
key = "device_id"
event_time = "timestamp"
window = {{ type = "tumbling", size = "1m" }}
aggregates = [{{ fn = "count", as = "n" }}, {{ fn = "avg", field = "temperature", as = "t" }}, {{ fn = "sum", field = "status", as = "s" }}]
"#
        ))
        .unwrap()
    };
    let schema = repo().join("schemas/sensor.avsc");
    let avro = job(&format!("format = \"avro\"\nschema_file = {schema:?}"))
        .compile(repo())
        .unwrap();
    let json = job(&format!("format = \"json\"\nschema_file = {schema:?}"))
        .compile(repo())
        .unwrap();
    let mut seeds: Vec<Vec<u8>> = (0..4).map(event_bytes).collect();
    seeds.push(
        br#"{"device_id":"device-000001","timestamp":1700000000000,"temperature":21.5,"status":2}"#
            .to_vec(),
    );
    drive("projection", seeds, 1 << 16, |input| {
        let mut p = Default::default();
        let mut scratch = Vec::new();
        let _ = avro.decode(input, &mut p, &mut scratch);
        let mut p = Default::default();
        let mut scratch = Vec::new();
        let _ = json.decode(input, &mut p, &mut scratch);
    });
}

/// Small segments and buffers, so a damaged file is quick to recover from.
fn log_config(root: &Path) -> tidewater_io::LogConfig {
    let mut cfg = tidewater_io::LogConfig::new(root.join("journal"), root.join("ledger"), 0);
    cfg.journal_segment_bytes = 256 << 10;
    cfg.journal_segments = 2;
    cfg.batch_bytes_max = 16 << 10;
    cfg.journal_flush_bytes_max = 64 << 10;
    cfg.ledger_segment_bytes = 64 << 10;
    cfg.ledger_flush_bytes = 16 << 10;
    cfg.ledger_pending_bytes_max = 1 << 20;
    // Damage to either copy of the copy path (journal and ledger segments).
    cfg.journal_adopt = tidewater_io::JournalAdopt::Off;
    cfg
}

/// A log of two partitions written and left as a crash leaves it (journal only), or
/// closed cleanly (ledger too); returns its directory and what each partition held.
fn written_log(root: &Path, closed: bool) -> tidewater_io::LogConfig {
    let mut cfg = log_config(root);
    cfg.ledger_flush_interval_ms = 3_600_000;
    let c = cfg.clone();
    run(async move {
        let (log, _) = tidewater_io::ShardLog::open(c).await.unwrap();
        let a = log.create_partition("a").unwrap();
        let b = log.create_partition("b").unwrap();
        for i in 0..24u32 {
            let p = if i % 3 == 0 { b } else { a };
            log.append(p, vec![i as u8; 300 + i as usize * 7], 1 + i % 3, 7)
                .await
                .unwrap();
        }
        if closed {
            log.close().await.unwrap();
        }
    });
    cfg
}

thread_local! {
    /// One executor for every run of a thread: a glommio executor keeps a file
    /// descriptor after it is dropped, and files dropped without `close` are closed
    /// by the reactor later, so a fresh executor per input ran out of descriptors
    /// after a few thousand inputs.
    static EXECUTOR: glommio::LocalExecutor = LocalExecutorBuilder::default().make().unwrap();
}

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    EXECUTOR.with(|ex| ex.run(f))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Recovery from a log whose files hold `input` in place of one of them: opens, and
/// every partition it keeps reads back dense; or it refuses with an error.
fn recover_from(root: &Path, pristine: &Path, target: &Path, input: &[u8]) {
    let _ = std::fs::remove_dir_all(root);
    copy_dir(pristine, root);
    let rel = target.strip_prefix(pristine).unwrap();
    std::fs::write(root.join(rel), input).unwrap();
    let cfg = log_config(root);
    run(async move {
        let Ok((log, _)) = tidewater_io::ShardLog::open(cfg).await else {
            return; // refused, with an error naming the file
        };
        for (_, id) in log.partitions() {
            let mut next = log.log_start_offset(id).unwrap();
            let hw = log.high_watermark(id).unwrap();
            while next < hw {
                let entries = log.read(id, next, 1 << 16).await.unwrap();
                assert!(!entries.is_empty(), "a read below the high watermark");
                for e in entries {
                    assert_eq!(e.base_offset, next, "dense offsets");
                    next = e.end_offset();
                }
            }
        }
        let _ = log.close().await;
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn fuzz_recovery(name: &str, closed: bool, pick: impl Fn(&Path) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    written_log(&pristine, closed);
    let mut files = Vec::new();
    files_under(&pristine, &mut files);
    files.retain(|f| pick(f));
    assert!(!files.is_empty(), "{name}: nothing to damage");
    let work = dir.path().join("work");
    // One file is damaged in each run; which one is the mutation's first byte.
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut s = vec![i as u8];
            s.extend(std::fs::read(f).unwrap());
            s
        })
        .collect();
    drive(name, seeds, 1 << 20, |input| {
        let Some((&which, bytes)) = input.split_first() else {
            return;
        };
        let target = &files[which as usize % files.len()];
        recover_from(&work, &pristine, target, bytes);
    });
}

#[test]
fn fuzz_journal_recovery() {
    fuzz_recovery("journal_recovery", false, |f| {
        f.extension().is_some_and(|e| e == "seg")
    });
}

#[test]
fn fuzz_ledger_recovery() {
    fuzz_recovery("ledger_recovery", true, |f| {
        f.to_string_lossy().contains("ledger")
    });
}

/// Recovery gives back every file it opened, whether it succeeds or refuses: a
/// fuzz run of thousands of recoveries in one process would otherwise run out.
#[test]
fn recovery_releases_every_file_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    written_log(&pristine, false);
    let mut files = Vec::new();
    files_under(&pristine, &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "seg"));
    let work = dir.path().join("work");
    // Only descriptors of this test's files: the other tests of this binary run
    // beside it in the same process and open their own.
    let root = dir.path().canonicalize().unwrap();
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(&root))
            .count()
    };
    let good = std::fs::read(&files[0]).unwrap();
    // Once first: the executor and its rings.
    recover_from(&work, &pristine, &files[0], &good);
    let before = fds();
    for _ in 0..10 {
        recover_from(&work, &pristine, &files[0], &good);
        recover_from(&work, &pristine, &files[0], b"not a segment");
    }
    // Closes of dropped files may still be on their way: never more than before.
    let after = fds();
    assert!(
        after <= before,
        "{after} file descriptors open, {before} before"
    );
}
