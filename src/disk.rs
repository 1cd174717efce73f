//! How much a `tidewater bench` run writes, and the guard that keeps it from
//! filling the device: a check before it starts, and a watch during the live test
//! that stops the load when free space falls to a reserve.
//!
//! Never: lets a run start that cannot finish its fixed part (the servers'
//! preallocation and the backlog) with the reserve left, or keeps loading once the
//! reserve is reached.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Device bytes a run writes per event ingested: the event (about 330 bytes in its
/// batch) in the journal and again in the ledger, with room for the output topic,
/// the checkpoints and the file sink.
pub const BYTES_PER_EVENT: u64 = 700;

/// The fastest ingest the estimate assumes, per core (above what the development
/// machines reach).
pub const EVENTS_PER_SEC_PER_CORE_MAX: u64 = 1_500_000;

/// Space a server takes before its first event: each partition's first ledger
/// segment (the reference job's 8 input and 8 output partitions, and the offsets
/// partition) and each core's journal ring, at the default sizes.
pub fn preallocated_bytes(cores: u64) -> u64 {
    let d = tidewater_io::LogConfig::new(Default::default(), Default::default(), 0);
    let ledger = 17 * d.ledger_segment_bytes;
    let journal = cores * u64::from(d.journal_segments) * d.journal_segment_bytes;
    ledger + journal
}

/// Bytes free to an unprivileged writer, and the size, of the file system holding
/// `path`.
pub fn space(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL in its name", path.display()))?;
    // statvfs is plain data: all zeroes is a valid value of it.
    // SAFETY: zeroed plain data.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // statvfs writes the struct it is given; `c` is NUL-terminated and outlives it.
    // SAFETY: valid pointers for the call's duration.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot stat the file system of {}", path.display()));
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// What is kept free while a run loads: 5% of the device, at least 2 GiB and at
/// most 10 GiB.
pub fn reserve(total: u64) -> u64 {
    (total / 20).clamp(2 << 30, 10 << 30)
}

/// `n` bytes as GB with one decimal.
pub fn gb(n: u64) -> String {
    format!("{:.1} GB", n as f64 / 1e9)
}

/// Watches the free space under `dirs` every 250 ms while a load runs; raises
/// `stop` (the load generator's) and says why once one falls to its reserve.
pub struct Guard {
    done: Arc<AtomicBool>,
    why: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Guard {
    pub fn watch(dirs: Vec<std::path::PathBuf>, stop: Arc<AtomicBool>) -> Guard {
        Guard::watch_with(dirs, stop, reserve)
    }

    /// [`Guard::watch`] with the reserve `keep` gives for a device of that size.
    fn watch_with(
        dirs: Vec<std::path::PathBuf>,
        stop: Arc<AtomicBool>,
        keep: fn(u64) -> u64,
    ) -> Guard {
        let done = Arc::new(AtomicBool::new(false));
        let why = Arc::new(Mutex::new(None));
        let (d, w) = (done.clone(), why.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                for dir in &dirs {
                    let Ok((free, total)) = space(dir) else {
                        continue;
                    };
                    let keep = keep(total);
                    if free <= keep {
                        let said = format!(
                            "the live test stopped early: {} free under {} (the reserve is {}); \
                             give --dir (and --ledger-dir) more room or a shorter --duration",
                            gb(free),
                            dir.display(),
                            gb(keep)
                        );
                        if let Ok(mut w) = w.lock() {
                            *w = Some(said);
                        }
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Guard {
            done,
            why,
            thread: Some(thread),
        }
    }

    /// Stops watching: why the load was stopped, if it was.
    pub fn finish(mut self) -> Option<String> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.why.lock().ok().and_then(|w| w.clone())
    }
}

impl Drop for Guard {
    /// A guard dropped without [`Guard::finish`] (an early return) stops watching;
    /// its thread ends at its next look.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_and_the_space_of_a_real_file_system() {
        assert_eq!(reserve(10 << 30), 2 << 30);
        assert_eq!(reserve(100 << 30), 5 << 30);
        assert_eq!(reserve(1000 << 30), 10 << 30);
        let (free, total) = space(Path::new(".")).unwrap();
        assert!(total > 0 && free <= total);
        assert!(space(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn the_guard_stops_a_load_when_the_reserve_is_reached() {
        // A reserve of the whole device: never that much is free, so it stops.
        let stop = Arc::new(AtomicBool::new(false));
        let g = Guard::watch_with(vec![std::env::temp_dir()], stop.clone(), |total| total);
        let t = std::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the guard did not stop the load"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(g.finish().is_some_and(|w| w.contains("stopped early")));
        // A reserve of nothing: it watches and lets the load run.
        let stop = Arc::new(AtomicBool::new(false));
        let g = Guard::watch_with(vec![std::env::temp_dir()], stop.clone(), |_| 0);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!stop.load(Ordering::SeqCst));
        assert_eq!(g.finish(), None);
    }
}
