//! The group coordinator of one core: the consumer groups it owns (membership,
//! rebalances, sessions: `group`) and their committed offsets (`offsets`), kept in
//! this core's own log.
//!
//! Ownership: group `g` belongs to partition `crc32c(g) % OFFSETS_PARTITIONS` of the
//! internal topic `__consumer_offsets`, and so to the core that owns that partition
//! by the one placement rule (`partition % cores`); FindCoordinator names that core.
//! The partition moves with a rescale like any other, so a group's offsets follow
//! it. A group request that reaches another core is forwarded to the owner.
//!
//! Durability: a commit is answered once its record is durable in the log under the
//! log's policy, as a produce is. Membership is not stored: after a restart members
//! find their member id unknown and join again, as after a coordinator failover in
//! Kafka; the generation is stored, so it never repeats. At start the core replays
//! its `__consumer_offsets` partitions ([`Coordinator::load`]).
//!
//! Timers: one task per core ([`Coordinator::run`]) sleeps until the earliest group
//! deadline (a session, a join phase) or until a change brings one nearer, and
//! sweeps expired offsets (`offsets_retention_ms`) every `RETENTION_SWEEP`. The same
//! task stores new generations and compacts an offsets partition that grew by
//! `compact_bytes` since its last snapshot: the live commits are written again and
//! the log deletes what came before, segment by segment, retention limits or not;
//! until a snapshot, retention never deletes a commit.
//!
//! Never: waits while holding a group borrowed (answers are awaited after the
//! borrow ends), or keeps more than `groups_max` groups.

pub mod group;
pub mod offsets;

use crate::error::KafkaError;
use crate::stats::GroupCounts;
use group::{Group, GroupLimits};
use kafka_protocol::ResponseError;
use offsets::{Offsets, Record};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tidewater_io::wait::Notify;
use tidewater_io::{PartitionLimits, ShardLog};
use tidewater_shards::{partition_name, partition_owner};

/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partitions (Kafka's `offsets.topic.num.partitions`). Fixed: a group's
/// partition must not change. Each is made in the log on its first record.
pub const OFFSETS_PARTITIONS: u32 = 16;
/// How often expired offsets are looked for (Kafka's
/// `offsets.retention.check.interval.ms`).
const RETENTION_SWEEP: Duration = Duration::from_secs(600);

/// The partition of `__consumer_offsets` that keeps group `group`.
pub fn offsets_partition(group: &str) -> u32 {
    crc32c::crc32c(group.as_bytes()) % OFFSETS_PARTITIONS
}

/// The log limits of the `__consumer_offsets` partitions: no retention (their
/// snapshots say what is superseded), set from the moment the log opens, so no
/// retention pass can delete a live commit before the coordinator has loaded it.
pub fn offsets_partition_limits(cfg: &tidewater_io::LogConfig) -> Vec<(String, PartitionLimits)> {
    (0..OFFSETS_PARTITIONS)
        .map(|p| {
            let limits = PartitionLimits::without_retention(cfg);
            (partition_name(OFFSETS_TOPIC, p), limits)
        })
        .collect()
}

/// The core that coordinates `group` among `shards` cores.
pub fn coordinator_of(group: &str, shards: u32) -> u32 {
    partition_owner(offsets_partition(group), shards)
}

/// The coordinator's settings (per core).
#[derive(Clone, Copy, Debug)]
pub struct GroupConfig {
    pub limits: GroupLimits,
    /// Session timeouts a member may ask for (Kafka's `group.min.session.timeout.ms`
    /// and `group.max.session.timeout.ms`).
    pub session_timeout_ms: (u64, u64),
    /// An idle group's commits are forgotten this long after they were made
    /// (Kafka's `offsets.retention.minutes`, 7 days).
    pub offsets_retention_ms: u64,
    /// Largest metadata string of one commit (Kafka's `offset.metadata.max.bytes`).
    pub offset_metadata_bytes_max: usize,
    /// Groups one core keeps at once, with members or with commits.
    pub groups_max: usize,
    /// Bytes of members' protocol metadata and assignments one core keeps, over
    /// all its groups; a JoinGroup beyond it gets COORDINATOR_NOT_AVAILABLE.
    pub group_bytes_max: usize,
    /// An offsets partition is compacted (its live commits written again as a
    /// snapshot, what came before deleted) once this many bytes, or four times
    /// its last snapshot, were appended since that snapshot.
    pub compact_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            limits: GroupLimits {
                initial_rebalance_delay: Duration::from_millis(3000),
                members_max: 1000,
                member_bytes_max: 1 << 20,
            },
            session_timeout_ms: (6_000, 1_800_000),
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offset_metadata_bytes_max: 4096,
            groups_max: 100_000,
            group_bytes_max: 256 << 20,
            compact_bytes: 64 << 20,
        }
    }
}

/// One core's group coordinator.
pub struct Coordinator {
    shard: u32,
    shards: u32,
    log: Rc<ShardLog>,
    pub cfg: GroupConfig,
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<Offsets>,
    /// Raised when a group's next deadline comes nearer than the timer's.
    changed: Notify,
    /// The deadline the timer task sleeps until.
    armed: Cell<Option<Instant>>,
    /// Member ids: a per-start prefix and a counter.
    start_id: u64,
    next_id: Cell<u64>,
    /// Rebalances of groups since forgotten, for the metrics' total.
    rebalances_done: Cell<u64>,
    /// Bytes of metadata and assignments over all groups (`group_bytes_max`).
    bytes: Cell<usize>,
    /// The `__consumer_offsets` partitions this core has written or loaded, by
    /// index.
    partitions: RefCell<HashMap<u32, Rc<OffsetsPartition>>>,
    /// Generations to store, in the background (the timer task writes them).
    generations: RefCell<Vec<Record>>,
}

/// One `__consumer_offsets` partition of this core.
struct OffsetsPartition {
    /// The log's id of it.
    id: u32,
    /// Appends take the read side, a snapshot the write side: no append falls
    /// between the state a snapshot captures and the snapshot in the log, where
    /// replaying would put an older commit after a newer one.
    order: glommio::sync::RwLock<()>,
    /// Bytes appended since the last snapshot (or loaded at start).
    since_snapshot: Cell<u64>,
    /// A snapshot is due past this many.
    snapshot_at: Cell<u64>,
}

impl Coordinator {
    pub fn new(shard: u32, shards: u32, log: Rc<ShardLog>, cfg: GroupConfig) -> Coordinator {
        let start_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Coordinator {
            shard,
            shards,
            log,
            cfg,
            groups: RefCell::default(),
            offsets: RefCell::default(),
            changed: Notify::default(),
            armed: Cell::new(None),
            start_id,
            next_id: Cell::new(0),
            rebalances_done: Cell::new(0),
            bytes: Cell::new(0),
            partitions: RefCell::default(),
            generations: RefCell::default(),
        }
    }

    /// The core that coordinates `group`.
    pub fn owner(&self, group: &str) -> u32 {
        coordinator_of(group, self.shards)
    }

    /// Whether this core coordinates `group`.
    pub fn owns(&self, group: &str) -> bool {
        self.owner(group) == self.shard
    }

    /// Replays this core's `__consumer_offsets` partitions; a batch that cannot be
    /// read is skipped with an error in the log (its commits are lost, the rest
    /// stand). Runs before the listener opens.
    pub async fn load(&self) -> Result<(), KafkaError> {
        let mut batches = 0u64;
        for p in (0..OFFSETS_PARTITIONS).filter(|&p| partition_owner(p, self.shards) == self.shard)
        {
            let name = partition_name(OFFSETS_TOPIC, p);
            let Some(id) = self.log.partition_id(&name) else {
                continue;
            };
            let mut bytes = 0u64;
            let end = self
                .log
                .high_watermark(id)
                .map_err(|e| KafkaError::from(&e))?;
            let mut next = self
                .log
                .log_start_offset(id)
                .map_err(|e| KafkaError::from(&e))?;
            while next < end {
                let entries = self
                    .log
                    .read(id, next, 1 << 20)
                    .await
                    .map_err(|e| KafkaError::from(&e))?;
                let Some(last) = entries.last() else { break };
                next = last.end_offset();
                for e in entries {
                    batches += 1;
                    bytes += e.payload.len() as u64;
                    match offsets::decode(&e.payload) {
                        Ok(records) => {
                            let mut o = self.offsets.borrow_mut();
                            records.into_iter().for_each(|r| o.apply(r));
                        }
                        Err(why) => tracing::error!(
                            shard = self.shard,
                            partition = %name,
                            offset = e.base_offset,
                            "a committed-offsets batch cannot be read and is skipped: {why}"
                        ),
                    }
                }
            }
            let part = self.add_partition(p, id);
            part.since_snapshot.set(bytes);
        }
        let o = self.offsets.borrow();
        tracing::info!(
            shard = self.shard,
            batches,
            groups = o.groups().count(),
            offsets = o.count(),
            "committed offsets loaded"
        );
        Ok(())
    }

    /// A new member id for a client.
    pub fn member_id(&self, client_id: &str) -> String {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        format!("{client_id}-{:x}-{}-{n}", self.start_id, self.shard)
    }

    /// Runs `f` on group `id` (made when `create` and it does not exist yet, with
    /// the generation it last reached); then stores a new generation and arms the
    /// timer for a nearer deadline. `None`: no such group (or no room for it).
    pub fn with_group<T>(
        &self,
        id: &str,
        create: bool,
        f: impl FnOnce(&mut Group) -> T,
    ) -> Result<T, ResponseError> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(id) {
            let known = self.offsets.borrow().group(id).is_some();
            if !create && !known {
                return Err(ResponseError::GroupIdNotFound);
            }
            if groups.len() >= self.cfg.groups_max {
                tracing::warn!(
                    shard = self.shard,
                    group = id,
                    max = self.cfg.groups_max,
                    "group refused: this core keeps groups_max groups"
                );
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            let generation = self.offsets.borrow().generation(id);
            groups.insert(
                id.to_string(),
                Group::new(id.to_string(), generation, self.cfg.limits),
            );
        }
        let g = groups.get_mut(id).ok_or(ResponseError::GroupIdNotFound)?;
        let generation = g.generation;
        let bytes = g.bytes();
        let out = f(g);
        self.bytes
            .set(self.bytes.get().saturating_sub(bytes) + g.bytes());
        let (changed, deadline) = (g.generation != generation, g.next_deadline());
        if changed {
            self.store_generation(id, g.generation);
        }
        // A group with no members, none on the way and no commits holds nothing:
        // it goes now (a refused JoinGroup leaves none behind to fill groups_max).
        if g.is_empty() && self.offsets.borrow().group(id).is_none() {
            if let Some(gone) = groups.remove(id) {
                self.rebalances_done
                    .set(self.rebalances_done.get() + gone.rebalances);
            }
        }
        drop(groups);
        self.arm(deadline);
        Ok(out)
    }

    /// Whether `more` bytes of member metadata fit this core's budget.
    pub fn has_room(&self, more: usize) -> bool {
        self.bytes.get() + more <= self.cfg.group_bytes_max
    }

    /// Wakes the timer when `deadline` is nearer than the one it sleeps until.
    fn arm(&self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            if self.armed.get().is_none_or(|a| d < a) {
                self.changed.notify();
            }
        }
    }

    /// Stores a group's new generation, in the background (the timer task): losing
    /// the last one to a crash only means the next generation after the restart
    /// reuses its number, and no member of it survives the restart.
    fn store_generation(&self, id: &str, n: i32) {
        let record = Record::Generation {
            g: id.to_string(),
            n,
        };
        self.offsets.borrow_mut().apply(record.clone());
        self.generations.borrow_mut().push(record);
        self.changed.notify();
    }

    /// Makes `records` (all of one group) durable, then applies them.
    pub async fn store(&self, records: Vec<Record>) -> Result<(), KafkaError> {
        self.append(records, true).await
    }

    /// Appends `records` (all of one group) to the group's `__consumer_offsets`
    /// partition, made on first use; once durable, applies them when `apply`.
    async fn append(&self, records: Vec<Record>, apply: bool) -> Result<(), KafkaError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let part = self.partition(offsets_partition(first.group()))?;
        let bytes = offsets::encode(&records);
        let len = bytes.len() as u64;
        {
            let _order = part
                .order
                .read()
                .await
                .map_err(|e| KafkaError::storage(format!("offsets partition closed: {e}")))?;
            self.log
                .append(part.id, bytes, records.len() as u32, now_ms())
                .await
                .map_err(|e| KafkaError::from(&e))?;
            if apply {
                let mut o = self.offsets.borrow_mut();
                records.into_iter().for_each(|r| o.apply(r));
            }
        }
        part.since_snapshot.set(part.since_snapshot.get() + len);
        if part.since_snapshot.get() > part.snapshot_at.get() {
            self.changed.notify();
        }
        Ok(())
    }

    /// The `__consumer_offsets` partition `p` of this core, made when new.
    fn partition(&self, p: u32) -> Result<Rc<OffsetsPartition>, KafkaError> {
        if let Some(part) = self.partitions.borrow().get(&p) {
            return Ok(part.clone());
        }
        let name = partition_name(OFFSETS_TOPIC, p);
        let id = match self.log.partition_id(&name) {
            Some(id) => id,
            None => self.log.create_partition(&name).map_err(|e| {
                KafkaError::storage(format!(
                    "core {}: cannot create {name} for committed offsets: {e}",
                    self.shard
                ))
            })?,
        };
        Ok(self.add_partition(p, id))
    }

    fn add_partition(&self, p: u32, id: u32) -> Rc<OffsetsPartition> {
        // Retention never cuts it (a log opened with `offsets_partition_limits`
        // has these already); a snapshot says what is superseded.
        self.log.set_limits(
            id,
            Some(PartitionLimits::without_retention(self.log.config())),
        );
        let part = Rc::new(OffsetsPartition {
            id,
            order: glommio::sync::RwLock::new(()),
            since_snapshot: Cell::new(0),
            snapshot_at: Cell::new(self.cfg.compact_bytes),
        });
        self.partitions.borrow_mut().insert(p, part.clone());
        part
    }

    /// Writes the live state of partition `p`'s groups (their commits and
    /// generations) again as a snapshot; everything before it is superseded, and
    /// the log deletes it segment by segment.
    async fn compact(&self, p: u32) -> Result<(), KafkaError> {
        let part = self.partition(p)?;
        let _order = part
            .order
            .write()
            .await
            .map_err(|e| KafkaError::storage(format!("offsets partition closed: {e}")))?;
        let records = self
            .offsets
            .borrow()
            .snapshot(|g| offsets_partition(g) == p);
        let mut start = None;
        let mut written = 0u64;
        for chunk in offsets::batches(&records, self.log.batch_bytes_max() / 2) {
            let bytes = offsets::encode(chunk);
            let len = bytes.len() as u64;
            let at = self
                .log
                .append(part.id, bytes, chunk.len() as u32, now_ms())
                .await
                .map_err(|e| KafkaError::from(&e))?;
            start.get_or_insert(at.base_offset);
            written += len;
        }
        let start = match start {
            Some(s) => s,
            // Nothing is live: everything so far is superseded.
            None => self
                .log
                .high_watermark(part.id)
                .map_err(|e| KafkaError::from(&e))?,
        };
        self.log.supersede_before(part.id, start);
        part.since_snapshot.set(0);
        part.snapshot_at
            .set(self.cfg.compact_bytes.max(written.saturating_mul(4)));
        tracing::info!(
            shard = self.shard,
            partition = p,
            records = records.len(),
            bytes = written,
            from_offset = start,
            "committed offsets compacted"
        );
        Ok(())
    }

    /// Whether background writes wait: generations to store, a compaction due.
    fn background_due(&self) -> bool {
        !self.generations.borrow().is_empty()
            || self
                .partitions
                .borrow()
                .values()
                .any(|p| p.since_snapshot.get() > p.snapshot_at.get())
    }

    /// The background writes: stored generations and due compactions.
    async fn write_behind(&self) {
        let generations = std::mem::take(&mut *self.generations.borrow_mut());
        let mut by_group: HashMap<String, Vec<Record>> = HashMap::new();
        for r in generations {
            by_group.entry(r.group().to_string()).or_default().push(r);
        }
        for (_, records) in by_group {
            if let Err(e) = self.append(records, false).await {
                tracing::warn!(
                    shard = self.shard,
                    "a group generation could not be stored: {e}"
                );
            }
        }
        let due: Vec<u32> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(_, part)| part.since_snapshot.get() > part.snapshot_at.get())
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            if let Err(e) = self.compact(p).await {
                tracing::warn!(
                    shard = self.shard,
                    partition = p,
                    "committed offsets could not be compacted: {e}"
                );
                // Tried again after as many bytes more, not at once.
                if let Some(part) = self.partitions.borrow().get(&p) {
                    part.snapshot_at
                        .set(part.since_snapshot.get() + self.cfg.compact_bytes);
                }
            }
        }
    }

    /// A group's commits as they are now.
    pub fn committed(&self, group: &str) -> offsets::GroupOffsets {
        self.offsets
            .borrow()
            .group(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Every group this core knows: with members, or with commits only.
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.groups.borrow().keys().cloned().collect();
        for g in self.offsets.borrow().groups() {
            if !self.groups.borrow().contains_key(g) {
                ids.push(g.clone());
            }
        }
        ids.sort();
        ids
    }

    /// Forgets a group with no members: its commits go too (DeleteGroups).
    pub async fn delete(&self, id: &str) -> Result<(), KafkaError> {
        let state = self.with_group(id, false, |g| g.is_empty());
        match state {
            Err(e) => return Err(KafkaError::bare(e)),
            Ok(false) => return Err(KafkaError::bare(ResponseError::NonEmptyGroup)),
            Ok(true) => {}
        }
        // Out of the map before the record is awaited: a JoinGroup meanwhile makes a
        // new group of that name, which the deletion leaves alone.
        if let Some(g) = self.groups.borrow_mut().remove(id) {
            self.rebalances_done
                .set(self.rebalances_done.get() + g.rebalances);
        }
        self.store(vec![Record::DeleteGroup { g: id.to_string() }])
            .await
    }

    /// Forgets every commit of its groups for `topic` (the topic is deleted: a
    /// topic made again by that name starts with none, as in Kafka).
    pub async fn forget_topic(&self, topic: &str) {
        let gone = self.offsets.borrow().of_topic(topic);
        let mut by_group: HashMap<String, Vec<Record>> = HashMap::new();
        for r in gone {
            by_group.entry(r.group().to_string()).or_default().push(r);
        }
        for (group, records) in by_group {
            if let Err(e) = self.store(records).await {
                tracing::warn!(
                    shard = self.shard,
                    group,
                    topic,
                    "the commits of a deleted topic could not be forgotten: {e}"
                );
            }
        }
    }

    pub fn counts(&self) -> GroupCounts {
        let groups = self.groups.borrow();
        let offsets = self.offsets.borrow();
        let only_commits = offsets
            .groups()
            .filter(|g| !groups.contains_key(*g))
            .count();
        GroupCounts {
            groups: (groups.len() + only_commits) as u64,
            members: groups.values().map(|g| g.members().count() as u64).sum(),
            offsets: offsets.count() as u64,
            rebalances: self.rebalances_done.get()
                + groups.values().map(|g| g.rebalances).sum::<u64>(),
        }
    }

    /// The timers: sessions, join phases, forgotten groups and offset retention,
    /// until the task is cancelled.
    pub async fn run(self: Rc<Self>) {
        let mut next_sweep = Instant::now() + RETENTION_SWEEP;
        loop {
            // Read before the queues are looked at: whatever is queued after it
            // wakes the wait below.
            let seen = self.changed.epoch();
            if !self.background_due() {
                let deadline = self
                    .groups
                    .borrow()
                    .values()
                    .filter_map(|g| g.next_deadline())
                    .min();
                let wake = deadline.map_or(next_sweep, |d| d.min(next_sweep));
                self.armed.set(Some(wake));
                let sleep = wake.saturating_duration_since(Instant::now());
                futures_lite::future::or(
                    async { glommio::timer::sleep(sleep).await },
                    self.changed.wait(seen),
                )
                .await;
            }
            let now = Instant::now();
            self.expire(now);
            self.write_behind().await;
            if now >= next_sweep {
                next_sweep = now + RETENTION_SWEEP;
                self.sweep_offsets().await;
            }
        }
    }

    /// Expires sessions and join phases; forgets groups with no members and no
    /// commits.
    fn expire(&self, now: Instant) {
        let mut changed = Vec::new();
        let mut groups = self.groups.borrow_mut();
        for g in groups.values_mut() {
            let before = g.generation;
            let bytes = g.bytes();
            g.expire(now);
            self.bytes
                .set(self.bytes.get().saturating_sub(bytes) + g.bytes());
            if g.generation != before {
                changed.push((g.id.clone(), g.generation));
            }
        }
        let offsets = self.offsets.borrow();
        let mut forgotten = 0;
        groups.retain(|id, g| {
            let keep = !g.is_empty() || offsets.group(id).is_some();
            if !keep {
                forgotten += g.rebalances;
            }
            keep
        });
        self.rebalances_done
            .set(self.rebalances_done.get() + forgotten);
        drop(offsets);
        drop(groups);
        for (id, n) in changed {
            self.store_generation(&id, n);
        }
    }

    /// Forgets the commits of groups without members that are older than
    /// `offsets_retention_ms`.
    async fn sweep_offsets(&self) {
        let now_ms = now_ms();
        let gone = {
            let groups = self.groups.borrow();
            self.offsets
                .borrow()
                .expired(now_ms, self.cfg.offsets_retention_ms, |g| {
                    groups.get(g).is_none_or(|g| g.is_empty())
                })
        };
        let mut by_group: HashMap<String, Vec<Record>> = HashMap::new();
        for r in gone {
            by_group.entry(r.group().to_string()).or_default().push(r);
        }
        for (group, records) in by_group {
            let n = records.len();
            match self.store(records).await {
                Ok(()) => tracing::info!(
                    shard = self.shard,
                    group,
                    offsets = n,
                    "committed offsets expired (offsets_retention_ms)"
                ),
                Err(e) => tracing::warn!(
                    shard = self.shard,
                    group,
                    "expired offsets could not be forgotten: {e}"
                ),
            }
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
