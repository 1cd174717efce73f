//! What one core's job loop and its mailbox receivers share: the window state, the
//! other cores' watermarks and barriers, late events waiting to be written, and the
//! wake-ups between them. Borrowed only between awaits, never across one.
//!
//! Owns applying an event to the windows (late ones become side-output records) and
//! putting a checkpoint's state back; never reads the log or sends mail.

use super::context::JobStats;
use super::side_output::SOURCE_HEADER;
use crate::partitioner;
use crate::pipeline::avro::{Num, SLOTS_MAX};
use crate::pipeline::checkpoint;
use crate::pipeline::records::bump;
use crate::pipeline::spec::Job;
use crate::pipeline::window::{Applied, Layout, Position, RestoreError, Windows};
use crate::sink::topic::OutRecord;
use bytes::Bytes;
use std::cell::RefCell;
use tidewater_io::wait::Notify;

/// The state and the two wake-ups: `changed` when a receiver applied a message
/// (the loop may have work), `resumed_moved` when the loop finished its part of a
/// checkpoint (receivers holding after that barrier may go on).
pub(super) struct StateCell {
    pub state: RefCell<State>,
    pub changed: Notify,
    pub resumed_moved: Notify,
}

/// Another core's watermark as it last said.
pub(super) struct Remote {
    pub wm: i64,
    pub idle: bool,
}

/// Per key group, the line late events are judged by where it is past the core's
/// own: after a rescale, a group's old owner may have fired further than its new one.
/// Empty otherwise, and emptied once the core's own line passes every group's.
#[derive(Default)]
pub(super) struct GroupLines {
    pub by_group: Vec<i64>,
    pub max: i64,
}

impl GroupLines {
    #[inline]
    fn line(&self, key: &[u8]) -> i64 {
        if self.by_group.is_empty() {
            return i64::MIN;
        }
        self.by_group[partitioner::partition_for(key, self.by_group.len() as u32) as usize]
    }
}

pub(super) struct State {
    pub windows: Windows,
    pub lines: GroupLines,
    pub remote: Vec<Option<Remote>>,
    pub late: Vec<OutRecord>,
    /// Why the job must stop: the window state is full.
    pub full: Option<String>,
    /// The checkpoint barrier each other core delivered last.
    pub barriers: Vec<u64>,
    /// Receivers hold after barrier `n` until this reaches `n`.
    pub resumed: u64,
    /// Core 0: parts done per checkpoint (count, bytes).
    pub done: std::collections::BTreeMap<u64, (u32, u64)>,
}

impl State {
    pub fn new(job: &Job, layout: &Layout, shards: u32, first_id: u64) -> State {
        State {
            windows: Windows::new(
                layout.clone(),
                job.window_ms,
                job.lateness_ms,
                job.state_entries_max,
            ),
            lines: GroupLines::default(),
            remote: (0..shards).map(|_| None).collect(),
            late: Vec::new(),
            full: None,
            barriers: vec![first_id; shards as usize],
            resumed: first_id,
            done: Default::default(),
        }
    }

    /// Core 0: the checkpoints every one of `shards` cores wrote its part of,
    /// oldest first, forgotten here.
    pub fn take_complete(&mut self, shards: u32) -> Vec<u64> {
        let complete: Vec<u64> = self
            .done
            .iter()
            .filter(|(_, (n, _))| *n == shards)
            .map(|(&id, _)| id)
            .collect();
        if let Some(&last) = complete.last() {
            self.done.retain(|&k, _| k > last);
        }
        complete
    }

    /// Applies one event to the windows; a late one becomes a side-output record.
    pub fn apply(
        &mut self,
        job: &Job,
        stats: &JobStats,
        key: &[u8],
        vals: &[Option<Num>; SLOTS_MAX],
        pos: Position,
    ) {
        match self
            .windows
            .apply_after(key, vals, pos, self.lines.line(key))
        {
            Applied::Added => {}
            Applied::Late(start) => {
                bump(&stats.late, 1);
                self.late.push(late_record(job, key, start, pos));
            }
            Applied::Full => {
                if self.full.is_none() {
                    self.full = Some(format!(
                        "window state is full ({} open key-windows = state_entries_max of job `{}`); \
                         raise state_entries_max or use fewer keys/shorter windows",
                        self.windows.entries(),
                        job.name
                    ));
                }
            }
        }
    }

    /// Puts a checkpoint's window state and watermarks back.
    pub fn restore(
        &mut self,
        job: &Job,
        snap: &checkpoint::ArchivedCoreSnapshot,
        groups: u32,
    ) -> Result<(), String> {
        let words = snap.words.to_native() as usize;
        if words != self.windows.layout.words {
            return Err(format!(
                "it holds {words} accumulator words per key, job {} now needs {} (were its aggregates changed?)",
                job.name, self.windows.layout.words
            ));
        }
        self.windows.set_fired_upto(snap.fired_upto.to_native());
        if !snap.group_lines.is_empty() {
            let mut by_group = vec![i64::MIN; groups as usize];
            for l in snap.group_lines.iter() {
                let slot = by_group
                    .get_mut(l.group.to_native() as usize)
                    .ok_or("a key group past the source's partitions")?;
                *slot = l.upto.to_native();
            }
            let max = by_group.iter().copied().max().unwrap_or(i64::MIN);
            self.lines = GroupLines { by_group, max };
        }
        for w in snap.windows.iter() {
            self.restore_window(job, w, words)?;
        }
        for r in snap.remote.iter() {
            if let Some(slot) = self.remote.get_mut(r.from.to_native() as usize) {
                *slot = Some(Remote {
                    wm: r.wm.to_native(),
                    idle: r.idle,
                });
            }
        }
        Ok(())
    }

    fn restore_window(
        &mut self,
        job: &Job,
        w: &checkpoint::ArchivedWindowSnap,
        words: usize,
    ) -> Result<(), String> {
        let start = w.start.to_native();
        let mut at = 0usize;
        for (i, len) in w.key_lens.iter().enumerate() {
            let len = len.to_native() as usize;
            let key = w
                .keys
                .get(at..at + len)
                .ok_or("window keys are cut short")?;
            at += len;
            let acc: Vec<u64> = w
                .accs
                .get(i * words..(i + 1) * words)
                .ok_or("window accumulators are cut short")?
                .iter()
                .map(|v| v.to_native())
                .collect();
            self.windows
                .restore_entry(start, key, &acc)
                .map_err(|e| match e {
                    RestoreError::Full => format!(
                        "more open windows than state_entries_max of job {}",
                        job.name
                    ),
                    RestoreError::Shape { words, found } => format!(
                        "job {}: a checkpointed window holds {found} accumulator words where the job's aggregates need {words}: the checkpoint is of other aggregates",
                        job.name
                    ),
                })?;
        }
        Ok(())
    }
}

/// The side-output record of an event whose window had fired.
fn late_record(job: &Job, key: &[u8], window_start: i64, pos: Position) -> OutRecord {
    let mut v = Vec::with_capacity(160);
    v.extend_from_slice(b"{\"key\":");
    json_bytes(&mut v, key);
    v.extend_from_slice(
        format!(
            ",\"event_time\":{},\"window_start\":{window_start},\"source_partition\":{},\"source_offset\":{},\"reason\":\"its window had fired\"}}",
            pos.ts, pos.partition, pos.offset
        )
        .as_bytes(),
    );
    OutRecord {
        key: Some(Bytes::copy_from_slice(key)),
        value: Bytes::from(v),
        timestamp_ms: pos.ts,
        headers: vec![(
            SOURCE_HEADER,
            Bytes::from(format!("{}/{}/{}", job.source, pos.partition, pos.offset)),
        )],
    }
}

fn json_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(
        serde_json::to_string(&String::from_utf8_lossy(b))
            .unwrap_or_default()
            .as_bytes(),
    );
}
