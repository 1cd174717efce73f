//! Window state of one job on one core: per open tumbling window, a hashbrown table
//! of entry indexes into a slab where each entry holds its key inline (up to 30
//! bytes; longer keys live beside it) followed by its fixed-size accumulators.
//!
//! Owns the accumulators and the firing order. An event hashes its key once, probes
//! the index and touches one slab entry (key compare and update in the same cache
//! lines); it allocates only when its (key, window) is new and the slab grows. Windows fire in start order when the
//! watermark passes their end plus the allowed lateness; an event whose window already
//! fired is late and is handed back to the caller, never dropped here. The number of
//! open (key, window) entries is bounded; reaching the bound is an error the job
//! reports, not a silent eviction.

use super::avro::{Num, SlotKind, SLOTS_MAX};
use super::spec::{Aggregate, Func};
use hashbrown::{DefaultHashBuilder, HashTable};
use std::collections::BTreeMap;
use std::hash::BuildHasher;

/// Where an event's position in the input orders it, for first/last: event time,
/// then partition, then offset — the same answer on every replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub ts: i64,
    pub partition: u32,
    pub offset: u64,
}

/// The slab layout: for each aggregate, its first word.
#[derive(Clone, Debug)]
pub struct Layout {
    pub aggs: Vec<Aggregate>,
    at: Vec<usize>,
    pub words: usize,
}

fn words_of(f: Func) -> usize {
    match f {
        Func::Count => 1,
        // seen, value
        Func::Sum | Func::Min | Func::Max | Func::Avg => 2,
        // seen, value, ts, partition, offset
        Func::First | Func::Last => 5,
    }
}

impl Layout {
    pub fn new(aggs: Vec<Aggregate>) -> Layout {
        let mut at = Vec::with_capacity(aggs.len());
        let mut words = 0;
        for a in &aggs {
            at.push(words);
            words += words_of(a.func);
        }
        Layout { aggs, at, words }
    }

    #[inline]
    fn update(&self, acc: &mut [u64], vals: &[Option<Num>; SLOTS_MAX], pos: Position) {
        for (a, &at) in self.aggs.iter().zip(&self.at) {
            let w = &mut acc[at..at + words_of(a.func)];
            if a.func == Func::Count {
                w[0] += 1;
                continue;
            }
            let Some(v) = vals[a.slot.expect("non-count aggregates read a field") as usize] else {
                continue; // a null: ignored, as SQL aggregates do
            };
            let first = w[0] == 0;
            w[0] += 1;
            match (a.func, v) {
                (Func::Sum | Func::Avg, Num::I(x)) => w[1] = (w[1] as i64).wrapping_add(x) as u64,
                (Func::Sum | Func::Avg, Num::F(x)) => w[1] = (f64::from_bits(w[1]) + x).to_bits(),
                (Func::Min, Num::I(x)) if first || x < w[1] as i64 => w[1] = x as u64,
                (Func::Max, Num::I(x)) if first || x > w[1] as i64 => w[1] = x as u64,
                (Func::Min, Num::F(x)) if first || x < f64::from_bits(w[1]) => w[1] = x.to_bits(),
                (Func::Max, Num::F(x)) if first || x > f64::from_bits(w[1]) => w[1] = x.to_bits(),
                (Func::First | Func::Last, _) => {
                    let old = Position {
                        ts: w[2] as i64,
                        partition: w[3] as u32,
                        offset: w[4],
                    };
                    let take = first
                        || (a.func == Func::First && pos < old)
                        || (a.func == Func::Last && pos > old);
                    if take {
                        w[1] = match v {
                            Num::I(x) => x as u64,
                            Num::F(x) => x.to_bits(),
                        };
                        w[2] = pos.ts as u64;
                        w[3] = u64::from(pos.partition);
                        w[4] = pos.offset;
                    }
                }
                _ => {}
            }
        }
    }

    /// Aggregate `i`'s output value from an accumulator; `None` when it saw no value.
    pub fn value(&self, acc: &[u64], i: usize) -> Option<Num> {
        let a = &self.aggs[i];
        let w = &acc[self.at[i]..self.at[i] + words_of(a.func)];
        if a.func == Func::Count {
            return Some(Num::I(w[0] as i64));
        }
        if w[0] == 0 {
            return None;
        }
        let v = match a.kind {
            SlotKind::Float => Num::F(f64::from_bits(w[1])),
            _ => Num::I(w[1] as i64),
        };
        Some(match a.func {
            Func::Avg => Num::F(v.as_f64() / w[0] as f64),
            _ => v,
        })
    }
}

/// Words of an entry's key area: a length byte, then up to [`KEY_INLINE`] bytes.
const KEY_WORDS: usize = 4;
const KEY_INLINE: usize = KEY_WORDS * 8 - 2;
/// Length byte of a key kept in `long_keys` (its index in bytes 1..5).
const LONG: u8 = 0xff;

/// A key as it sits in the slab; `long` when it does not fit inline.
fn key_words(key: &[u8]) -> Option<[u64; KEY_WORDS]> {
    if key.len() > KEY_INLINE {
        return None;
    }
    let mut b = [0u8; KEY_WORDS * 8];
    b[0] = key.len() as u8;
    b[1..1 + key.len()].copy_from_slice(key);
    let mut w = [0u64; KEY_WORDS];
    for (i, c) in b.chunks_exact(8).enumerate() {
        w[i] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
    }
    Some(w)
}

/// One window's table.
struct Table {
    index: HashTable<u32>,
    /// `KEY_WORDS + words` per entry.
    slab: Vec<u64>,
    hashes: Vec<u64>,
    long_keys: Vec<Box<[u8]>>,
    len: usize,
}

impl Table {
    fn new() -> Table {
        Table {
            index: HashTable::new(),
            slab: Vec::new(),
            hashes: Vec::new(),
            long_keys: Vec::new(),
            len: 0,
        }
    }

    fn key(&self, i: usize, stride: usize) -> &[u8] {
        let w = &self.slab[i * stride..i * stride + KEY_WORDS];
        let first = w[0].to_ne_bytes();
        if first[0] == LONG {
            let at = u32::from_ne_bytes(first[1..5].try_into().expect("4 bytes"));
            return &self.long_keys[at as usize];
        }
        // SAFETY: KEY_WORDS u64s are KEY_WORDS * 8 initialized bytes.
        let bytes = unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), KEY_WORDS * 8) };
        &bytes[1..1 + first[0] as usize]
    }
}

/// A window that fired: its rows, sorted by key.
#[derive(Debug)]
pub struct Fired {
    pub start: i64,
    pub end: i64,
    pub keys: Vec<Box<[u8]>>,
    /// `layout.words` per key, in `keys` order.
    pub slab: Vec<u64>,
    /// The watermark that fired it, and when that watermark was reached (fire
    /// latency is measured from there to the row in the sink).
    pub watermark: i64,
    pub due: std::time::Instant,
}

impl Fired {
    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    pub fn acc(&self, i: usize, words: usize) -> &[u64] {
        &self.slab[i * words..(i + 1) * words]
    }
}

/// What happened to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Added,
    /// Its window fired already (window start given).
    Late(i64),
    /// The state is at `state_entries_max`.
    Full,
}

/// Why a checkpointed entry cannot be put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// Its accumulators have another number of words than this job's layout (a
    /// checkpoint of the job with other aggregates).
    Shape { words: usize, found: usize },
    /// The state is at `state_entries_max`.
    Full,
}

/// All open windows of one job on one core.
pub struct Windows {
    pub layout: Layout,
    size_ms: i64,
    lateness_ms: i64,
    open: BTreeMap<i64, Table>,
    hasher: DefaultHashBuilder,
    entries: usize,
    entries_max: usize,
    key_bytes: usize,
    /// Windows ending at or before this (+ lateness) have fired.
    fired_upto: i64,
}

impl Windows {
    pub fn new(layout: Layout, size_ms: i64, lateness_ms: i64, entries_max: usize) -> Windows {
        Windows {
            layout,
            size_ms,
            lateness_ms,
            open: BTreeMap::new(),
            hasher: DefaultHashBuilder::default(),
            entries: 0,
            entries_max,
            key_bytes: 0,
            fired_upto: i64::MIN,
        }
    }

    /// The start of the window holding `ts`.
    #[inline]
    pub fn start_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_ms) * self.size_ms
    }

    /// Adds one event.
    #[inline]
    pub fn apply(&mut self, key: &[u8], vals: &[Option<Num>; SLOTS_MAX], pos: Position) -> Applied {
        self.apply_after(key, vals, pos, i64::MIN)
    }

    /// Adds one event, late also when its window is at or below `line` (a key
    /// group's line after a rescale, when that is past this core's own).
    #[inline]
    pub fn apply_after(
        &mut self,
        key: &[u8],
        vals: &[Option<Num>; SLOTS_MAX],
        pos: Position,
        line: i64,
    ) -> Applied {
        let start = self.start_of(pos.ts);
        let end = start.saturating_add(self.size_ms);
        if end.saturating_add(self.lateness_ms) <= self.fired_upto.max(line) {
            return Applied::Late(start);
        }
        let words = self.layout.words;
        let (open, layout) = (&mut self.open, &self.layout);
        match entry(
            open,
            EntryLimits {
                hasher: &self.hasher,
                entries: &mut self.entries,
                entries_max: self.entries_max,
                key_bytes: &mut self.key_bytes,
                words,
            },
            start,
            key,
        ) {
            Ok((table, at)) => {
                layout.update(&mut table.slab[at..at + words], vals, pos);
                Applied::Added
            }
            Err(full) => full,
        }
    }
}

/// The parts of [`Windows`] that finding or creating an entry touches.
struct EntryLimits<'a> {
    hasher: &'a DefaultHashBuilder,
    entries: &'a mut usize,
    entries_max: usize,
    key_bytes: &'a mut usize,
    words: usize,
}

/// The accumulators of (window `start`, `key`), created empty when new: the window's
/// table and the slab position of the first accumulator word.
#[inline]
fn entry<'t>(
    open: &'t mut BTreeMap<i64, Table>,
    l: EntryLimits<'_>,
    start: i64,
    key: &[u8],
) -> Result<(&'t mut Table, usize), Applied> {
    {
        let words = l.words;
        let stride = KEY_WORDS + words;
        let hash = l.hasher.hash_one(key);
        let inline = key_words(key);
        let table = open.entry(start).or_insert_with(Table::new);
        let found = {
            let (slab, long_keys) = (&table.slab, &table.long_keys);
            table
                .index
                .find(hash, |&i| {
                    let e = &slab[i as usize * stride..i as usize * stride + KEY_WORDS];
                    match &inline {
                        Some(w) => e == w,
                        None => {
                            let first = e[0].to_ne_bytes();
                            first[0] == LONG && {
                                let at =
                                    u32::from_ne_bytes(first[1..5].try_into().expect("4 bytes"));
                                *long_keys[at as usize] == *key
                            }
                        }
                    }
                })
                .copied()
        };
        let i = match found {
            Some(i) => i as usize,
            None => {
                if *l.entries >= l.entries_max {
                    return Err(Applied::Full);
                }
                let i = table.len;
                let kw = inline.unwrap_or_else(|| {
                    let mut b = [0u8; KEY_WORDS * 8];
                    b[0] = LONG;
                    b[1..5].copy_from_slice(&(table.long_keys.len() as u32).to_ne_bytes());
                    table.long_keys.push(key.into());
                    let mut w = [0u64; KEY_WORDS];
                    for (j, c) in b.chunks_exact(8).enumerate() {
                        w[j] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
                    }
                    w
                });
                table.slab.extend_from_slice(&kw);
                // All-zero is every accumulator's empty state (`seen` = 0).
                table.slab.resize(table.slab.len() + words, 0);
                table.hashes.push(hash);
                let hashes = &table.hashes;
                table
                    .index
                    .insert_unique(hash, i as u32, |&j| hashes[j as usize]);
                table.len += 1;
                *l.entries += 1;
                *l.key_bytes += key.len();
                i
            }
        };
        Ok((table, i * stride + KEY_WORDS))
    }
}

impl Windows {
    /// Fires every window whose end + lateness is at or below `watermark`, oldest
    /// first; `fire` returns false to stop (a sink queue is full), and the rest stay
    /// open until the next call.
    pub fn fire(
        &mut self,
        watermark: i64,
        due: std::time::Instant,
        mut fire: impl FnMut(Fired) -> bool,
    ) {
        while let Some((&start, _)) = self.open.first_key_value() {
            let end = start + self.size_ms;
            if end.saturating_add(self.lateness_ms) > watermark {
                break;
            }
            let table = self.open.pop_first().expect("present").1;
            let stride = KEY_WORDS + self.layout.words;
            self.entries -= table.len;
            self.key_bytes -= (0..table.len)
                .map(|i| table.key(i, stride).len())
                .sum::<usize>();
            self.fired_upto = self.fired_upto.max(end + self.lateness_ms);
            let fired = sorted(table, start, end, (watermark, due), self.layout.words);
            if !fire(fired) {
                return;
            }
        }
        // Windows with no events still move the line late events are judged by.
        self.fired_upto = self.fired_upto.max(watermark);
    }

    /// The line late events are judged by: windows ending (plus lateness) at or
    /// below it have fired.
    pub fn fired_upto(&self) -> i64 {
        self.fired_upto
    }

    /// Every open window, for a checkpoint, and the line late events are judged by.
    pub fn snapshot(&self) -> (Vec<super::checkpoint::WindowSnap>, i64) {
        let stride = KEY_WORDS + self.layout.words;
        let windows = self
            .open
            .iter()
            .map(|(&start, t)| {
                // Sized up front (this runs on the core while its part of a
                // checkpoint is pending); only keys stored out of line can
                // make `keys` grow.
                let mut w = super::checkpoint::WindowSnap {
                    start,
                    keys: Vec::with_capacity(self.key_bytes.min(t.len * (KEY_WORDS * 8 - 1))),
                    key_lens: Vec::with_capacity(t.len),
                    accs: Vec::with_capacity(t.len * self.layout.words),
                };
                for i in 0..t.len {
                    let k = t.key(i, stride);
                    w.keys.extend_from_slice(k);
                    w.key_lens.push(k.len() as u32);
                    w.accs
                        .extend_from_slice(&t.slab[i * stride + KEY_WORDS..(i + 1) * stride]);
                }
                w
            })
            .collect();
        (windows, self.fired_upto)
    }

    /// Puts back one (key, window) entry from a checkpoint.
    pub fn restore_entry(
        &mut self,
        start: i64,
        key: &[u8],
        acc: &[u64],
    ) -> Result<(), RestoreError> {
        let words = self.layout.words;
        if acc.len() != words {
            return Err(RestoreError::Shape {
                words,
                found: acc.len(),
            });
        }
        let limits = EntryLimits {
            hasher: &self.hasher,
            entries: &mut self.entries,
            entries_max: self.entries_max,
            key_bytes: &mut self.key_bytes,
            words,
        };
        let (table, at) =
            entry(&mut self.open, limits, start, key).map_err(|_| RestoreError::Full)?;
        table.slab[at..at + words].copy_from_slice(acc);
        Ok(())
    }

    /// Sets the line late events are judged by (restoring a checkpoint).
    pub fn set_fired_upto(&mut self, v: i64) {
        self.fired_upto = v;
    }

    /// Can a window fire at `watermark`? (Cheap check before taking sink room.)
    pub fn due(&self, watermark: i64) -> bool {
        self.open
            .first_key_value()
            .is_some_and(|(&s, _)| (s + self.size_ms).saturating_add(self.lateness_ms) <= watermark)
    }

    /// Open (key, window) entries.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Approximate bytes held (keys, slab, index).
    pub fn bytes(&self) -> usize {
        self.entries * (self.layout.words * 8 + 16 + 16 + 8) + self.key_bytes * 2
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}

fn sorted(
    table: Table,
    start: i64,
    end: i64,
    (watermark, due): (i64, std::time::Instant),
    words: usize,
) -> Fired {
    let stride = KEY_WORDS + words;
    let mut order: Vec<u32> = (0..table.len as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        table
            .key(a as usize, stride)
            .cmp(table.key(b as usize, stride))
    });
    let mut slab = Vec::with_capacity(table.len * words);
    let mut keys = Vec::with_capacity(table.len);
    for i in order {
        let i = i as usize;
        keys.push(Box::from(table.key(i, stride)));
        slab.extend_from_slice(&table.slab[i * stride + KEY_WORDS..(i + 1) * stride]);
    }
    Fired {
        start,
        end,
        keys,
        slab,
        watermark,
        due,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(func: Func, slot: Option<u8>, kind: SlotKind) -> Aggregate {
        Aggregate {
            func,
            slot,
            kind,
            name: format!("{func:?}"),
        }
    }

    fn vals(x: f64, n: i64) -> [Option<Num>; SLOTS_MAX] {
        let mut v = [None; SLOTS_MAX];
        v[2] = Some(Num::F(x));
        v[3] = Some(Num::I(n));
        v
    }

    fn layout() -> Layout {
        Layout::new(vec![
            agg(Func::Count, None, SlotKind::Int),
            agg(Func::Sum, Some(3), SlotKind::Int),
            agg(Func::Min, Some(2), SlotKind::Float),
            agg(Func::Max, Some(2), SlotKind::Float),
            agg(Func::Avg, Some(2), SlotKind::Float),
            agg(Func::First, Some(3), SlotKind::Int),
            agg(Func::Last, Some(3), SlotKind::Int),
            agg(Func::Min, Some(4), SlotKind::Float),
        ])
    }

    fn pos(ts: i64, offset: u64) -> Position {
        Position {
            ts,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn aggregates_fire_in_order_and_late_events_are_handed_back() {
        let mut w = Windows::new(layout(), 60_000, 0, 100);
        assert_eq!(
            w.apply(b"a", &vals(1.5, 10), pos(61_000, 0)),
            Applied::Added
        );
        assert_eq!(
            w.apply(b"a", &vals(-2.0, 20), pos(60_000, 1)),
            Applied::Added
        );
        assert_eq!(
            w.apply(b"a", &vals(4.0, 30), pos(119_999, 2)),
            Applied::Added
        );
        assert_eq!(w.apply(b"b", &vals(0.0, 1), pos(5_000, 3)), Applied::Added);
        assert_eq!(
            w.apply(b"b", &vals(9.0, 1), pos(125_000, 4)),
            Applied::Added
        );
        assert_eq!(w.entries(), 3);
        let mut fired = Vec::new();
        w.fire(119_999, std::time::Instant::now(), |f| {
            fired.push(f);
            true
        });
        assert_eq!(fired.len(), 1, "only [0, 60000) is due");
        w.fire(120_000, std::time::Instant::now(), |f| {
            fired.push(f);
            true
        });
        assert_eq!(fired.len(), 2);
        let l = &w.layout;
        let f = &fired[1];
        assert_eq!((f.start, f.end, f.rows()), (60_000, 120_000, 1));
        let acc = f.acc(0, l.words);
        assert_eq!(l.value(acc, 0), Some(Num::I(3)));
        assert_eq!(l.value(acc, 1), Some(Num::I(60)));
        assert_eq!(l.value(acc, 2), Some(Num::F(-2.0)));
        assert_eq!(l.value(acc, 3), Some(Num::F(4.0)));
        assert_eq!(l.value(acc, 4), Some(Num::F(3.5 / 3.0)));
        assert_eq!(l.value(acc, 5), Some(Num::I(20)), "first by event time");
        assert_eq!(l.value(acc, 6), Some(Num::I(30)));
        assert_eq!(l.value(acc, 7), None, "a field never seen");
        assert_eq!(
            w.apply(b"c", &vals(1.0, 1), pos(100_000, 5)),
            Applied::Late(60_000)
        );
        assert_eq!(w.entries(), 1);
    }

    #[test]
    fn a_key_groups_line_past_the_cores_own_makes_its_events_late() {
        let mut w = Windows::new(layout(), 60_000, 0, 100);
        // The group's old owner had fired up to 120 s; this core only to 60 s.
        w.set_fired_upto(60_000);
        assert_eq!(
            w.apply_after(b"a", &vals(1.0, 1), pos(90_000, 0), 120_000),
            Applied::Late(60_000)
        );
        assert_eq!(
            w.apply_after(b"a", &vals(1.0, 1), pos(120_000, 1), 120_000),
            Applied::Added
        );
        // Another group, no line of its own: only the core's counts.
        assert_eq!(
            w.apply_after(b"b", &vals(1.0, 1), pos(90_000, 2), i64::MIN),
            Applied::Added
        );
        assert_eq!(
            w.apply_after(b"b", &vals(1.0, 1), pos(59_999, 3), i64::MIN),
            Applied::Late(0)
        );
        assert_eq!(w.fired_upto(), 60_000);
    }

    #[test]
    fn rows_are_sorted_by_key_and_the_bound_holds() {
        let mut w = Windows::new(layout(), 1_000, 0, 3);
        for (i, k) in [b"d", b"b", b"c"].iter().enumerate() {
            assert_eq!(
                w.apply(*k, &vals(1.0, 1), pos(10, i as u64)),
                Applied::Added
            );
        }
        assert_eq!(w.apply(b"a", &vals(1.0, 1), pos(10, 9)), Applied::Full);
        assert_eq!(
            w.apply(b"b", &vals(1.0, 1), pos(10, 9)),
            Applied::Added,
            "existing keys still update"
        );
        let mut keys = Vec::new();
        w.fire(1_000, std::time::Instant::now(), |f| {
            keys = f.keys.clone();
            true
        });
        assert_eq!(
            keys,
            vec![
                b"b".to_vec().into_boxed_slice(),
                b"c".to_vec().into(),
                b"d".to_vec().into()
            ]
        );
        assert_eq!(w.entries(), 0);
    }

    #[test]
    fn long_keys_and_inline_keys_never_collide() {
        let mut w = Windows::new(layout(), 1_000, 0, 100);
        let long = vec![b'k'; 100];
        let mut long2 = long.clone();
        long2[99] = b'j';
        let short30 = vec![b'k'; 30];
        for (i, k) in [&long, &long2, &short30, &long].iter().enumerate() {
            assert_eq!(w.apply(k, &vals(1.0, 1), pos(10, i as u64)), Applied::Added);
        }
        assert_eq!(w.entries(), 3);
        let mut got = Vec::new();
        w.fire(1_000, std::time::Instant::now(), |f| {
            for i in 0..f.rows() {
                got.push((f.keys[i].to_vec(), w_count(&f, i)));
            }
            true
        });
        assert_eq!(got, vec![(short30, 1), (long2, 1), (long, 2)]);
    }

    fn w_count(f: &Fired, i: usize) -> u64 {
        f.acc(i, layout().words)[0]
    }

    #[test]
    fn a_snapshot_restores_to_the_same_rows() {
        let mut w = Windows::new(layout(), 1_000, 0, 100);
        let long = vec![b'z'; 64];
        for (i, k) in [&b"a"[..], b"b", &long, b"a"].iter().enumerate() {
            w.apply(
                k,
                &vals(i as f64, i as i64),
                pos(10 + i as i64 * 700, i as u64),
            );
        }
        w.fire(1_000, std::time::Instant::now(), |_| true);
        let (snap, fired) = w.snapshot();
        let mut r = Windows::new(layout(), 1_000, 0, 100);
        r.set_fired_upto(fired);
        let words = layout().words;
        for win in &snap {
            let mut at = 0;
            for (i, &len) in win.key_lens.iter().enumerate() {
                let key = &win.keys[at..at + len as usize];
                at += len as usize;
                r.restore_entry(win.start, key, &win.accs[i * words..(i + 1) * words])
                    .unwrap();
            }
        }
        assert_eq!(r.entries(), w.entries());
        assert_eq!(
            r.apply(b"q", &vals(1.0, 1), pos(500, 9)),
            Applied::Late(0),
            "fired line restored"
        );
        let rows = |mut x: Windows| {
            let mut out = Vec::new();
            x.fire(i64::MAX / 2, std::time::Instant::now(), |f| {
                out.push((f.start, f.keys.clone(), f.slab.clone()));
                true
            });
            out
        };
        assert_eq!(rows(r), rows(w));
    }

    #[test]
    fn a_stopped_fire_leaves_the_rest_open() {
        let mut w = Windows::new(layout(), 10, 5, 100);
        for ts in [1, 11, 21] {
            w.apply(b"k", &vals(1.0, 1), pos(ts, 0));
        }
        let mut n = 0;
        w.fire(100, std::time::Instant::now(), |_| {
            n += 1;
            false
        });
        assert_eq!((n, w.open_windows()), (1, 2));
        assert!(w.due(100));
        assert!(!w.due(24), "[10, 20) waits for lateness: due at 25");
        assert!(w.due(25));
    }
}
