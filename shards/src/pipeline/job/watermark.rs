//! Watermarks: per source partition, max event time − max_out_of_orderness; a core's
//! watermark is the least over its partitions and the watermarks that arrived from
//! the other cores, leaving out inputs idle for `idle_timeout` (all idle: the
//! greatest, so the last windows fire once the data stops).
//!
//! Owns combining inputs and the core's watermark, which never goes back; never
//! reads the log or sends mail.

use std::time::{Duration, Instant};

/// How often a core tells the others its watermark when nothing else moves.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(100);

/// The watermark of a set of inputs (watermark, idle): the least of the active ones;
/// when all are idle, the greatest.
pub(super) fn combine(inputs: impl Iterator<Item = (i64, bool)>) -> i64 {
    let mut active = i64::MAX;
    let mut any_active = false;
    let mut all = i64::MIN;
    for (wm, idle) in inputs {
        all = all.max(wm);
        if !idle {
            any_active = true;
            active = active.min(wm);
        }
    }
    if any_active {
        active
    } else {
        all
    }
}

/// The core's watermark, which fires windows. Inputs may go back (an idle input
/// that wakes up holds the others back again); this never does: `advance` is its
/// only way to move, and it ignores an earlier candidate.
pub(super) struct CoreWatermark {
    at: i64,
    /// When it last moved (fire latency is measured from here).
    moved_at: Instant,
}

impl CoreWatermark {
    pub fn new(at: i64) -> CoreWatermark {
        CoreWatermark {
            at,
            moved_at: Instant::now(),
        }
    }

    pub fn get(&self) -> i64 {
        self.at
    }

    pub fn moved_at(&self) -> Instant {
        self.moved_at
    }

    /// Moves to `wm` if that is later; returns whether it moved.
    pub fn advance(&mut self, wm: i64, now: Instant) -> bool {
        if wm <= self.at {
            return false;
        }
        self.at = wm;
        self.moved_at = now;
        true
    }
}

/// What this core last told the others, so that it says it again only when it
/// changed or a heartbeat is due.
pub(super) struct Published {
    sent: Option<(i64, bool)>,
    at: Instant,
}

impl Published {
    pub fn new() -> Published {
        Published {
            sent: None,
            at: Instant::now(),
        }
    }

    pub fn due(&self, wm: i64, all_idle: bool, now: Instant) -> bool {
        self.sent != Some((wm, all_idle)) || now.duration_since(self.at) >= HEARTBEAT
    }

    pub fn sent(&mut self, wm: i64, all_idle: bool, now: Instant) {
        self.sent = Some((wm, all_idle));
        self.at = now;
    }

    /// When the next heartbeat is due.
    pub fn next(&self) -> Instant {
        self.at + HEARTBEAT
    }
}

#[cfg(test)]
mod tests {
    use super::{combine, CoreWatermark};
    use std::time::Instant;

    #[test]
    fn the_watermark_is_the_least_active_input_or_else_the_greatest() {
        // (watermark, idle) per input.
        assert_eq!(
            combine([(10, false), (5, false), (99, true)].into_iter()),
            5
        );
        assert_eq!(
            combine([(10, false), (5, true)].into_iter()),
            10,
            "an idle input does not hold the others back"
        );
        assert_eq!(
            combine([(10, true), (5, true)].into_iter()),
            10,
            "all idle: the greatest, so the last windows fire"
        );
        assert_eq!(
            combine([(i64::MIN, false), (7, false)].into_iter()),
            i64::MIN,
            "an input that has seen nothing yet holds everything back"
        );
        assert_eq!(combine(std::iter::empty()), i64::MIN);
    }

    #[test]
    fn the_core_watermark_never_goes_back() {
        let t0 = Instant::now();
        let mut wm = CoreWatermark::new(i64::MIN);
        assert!(wm.advance(100, t0));
        // An input that woke up: the combined watermark drops; the core's does not.
        assert!(!wm.advance(combine([(50, false), (100, false)].into_iter()), t0));
        assert_eq!(wm.get(), 100);
        assert!(!wm.advance(100, t0), "the same is not a move");
        assert!(wm.advance(101, t0));
        assert_eq!(wm.get(), 101);
    }
}
