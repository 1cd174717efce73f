//! `tidewater loadgen --consume`: a consumer group of N members reading a topic as a
//! Kafka client does (FindCoordinator, JoinGroup with the `range` assignor of the
//! consumer protocol, SyncGroup, OffsetFetch, Fetch from each partition's leader,
//! heartbeats, an OffsetCommit every `commit_interval`, LeaveGroup at the end), and
//! what it measured: events/s and produce→consume latency.
//!
//! Each member is one thread with blocking sockets: one to the coordinator, one per
//! broker it fetches from (all brokers' Fetch requests are sent before any answer is
//! read). Batches are checked (CRC-32C, as Java's `check.crcs`) and counted by their
//! headers; records are not decompressed or decoded, so a member costs less than a
//! client that hands each record to an application. Latency is the wall clock at
//! arrival minus the batch's newest record timestamp (the producer's create time):
//! meaningful when the producer stamps records with the time it sends them
//! (`loadgen --time-scale 1`, no skew).

use super::{io_err, recv, send};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, BrokerId, GroupId, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to read and how.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub consumers: u32,
    /// Stop after this long, or once `events` were consumed, or both.
    pub duration: Option<Duration>,
    pub events: Option<u64>,
    pub commit_interval: Duration,
    /// Where a partition without a committed offset starts: the end (`true`) or the
    /// beginning.
    pub from_latest: bool,
    pub progress: bool,
}

/// What the group measured.
#[derive(Debug, Default, Clone)]
pub struct ConsumeReport {
    pub consumed: u64,
    pub bytes: u64,
    /// From the start to the end of the run, joining included.
    pub seconds: f64,
    /// From the start to the first record: finding the coordinator and joining
    /// (a new group waits `group.initial.rebalance.delay.ms`, 3 s by default).
    pub join_seconds: f64,
    /// From the first record to the last.
    pub events_per_sec: f64,
    /// Produce→consume latency p50, p99, p999 in ms.
    pub latency_ms: (f64, f64, f64),
    pub commits: u64,
    /// Join rounds over all members (1 each when nothing moved).
    pub joins: u64,
    pub errors: BTreeMap<String, u64>,
}

impl ConsumeReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "consumed": self.consumed,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "join_seconds": self.join_seconds,
            "events_per_sec": self.events_per_sec,
            "latency_ms": { "p50": self.latency_ms.0, "p99": self.latency_ms.1, "p999": self.latency_ms.2 },
            "commits": self.commits,
            "joins": self.joins,
            "errors": self.errors,
        })
    }
}

const JOIN_VERSION: i16 = 5;
const SYNC_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const COMMIT_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 6;
const FETCH_VERSION: i16 = 11;
const LIST_OFFSETS_VERSION: i16 = 1;
const FIND_COORDINATOR_VERSION: i16 = 2;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(1000);
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// Fetch answers wait this long for data.
const FETCH_WAIT_MS: i32 = 100;
const PARTITION_FETCH_BYTES: i32 = 4 << 20;

/// Runs the group until the duration or the event count is reached.
pub fn run(opts: &ConsumeOptions) -> std::io::Result<ConsumeReport> {
    if opts.duration.is_none() && opts.events.is_none() {
        return Err(io_err("give a duration or an event count"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let members: Vec<_> = (0..opts.consumers)
        .map(|i| {
            let (opts, stop, consumed) = (opts.clone(), stop.clone(), consumed.clone());
            std::thread::spawn(move || Member::run(&opts, i, &stop, &consumed))
        })
        .collect();
    let mut last = (Instant::now(), 0u64);
    let bar = opts.progress.then(indicatif::ProgressBar::new_spinner);
    while !members.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
        let n = consumed.load(Ordering::Relaxed);
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if opts.duration.is_some_and(|d| start.elapsed() >= d)
            || opts.events.is_some_and(|e| n >= e)
        {
            stop.store(true, Ordering::SeqCst);
        }
        if let Some(b) = &bar {
            if last.0.elapsed() >= Duration::from_millis(500) {
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), n);
                b.set_message(format!("consumed {n} ({rate:.0} events/s)"));
                b.tick();
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    let first = first.unwrap_or_else(Instant::now);
    let reading = first.elapsed().as_secs_f64();
    let mut report = ConsumeReport {
        seconds,
        join_seconds: first.duration_since(start).as_secs_f64(),
        ..Default::default()
    };
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| io_err(e.to_string()))?;
    for h in members {
        let r = h
            .join()
            .map_err(|_| io_err("a consumer thread panicked"))??;
        report.consumed += r.consumed;
        report.bytes += r.bytes;
        report.commits += r.commits;
        report.joins += r.joins;
        let _ = hist.add(&r.latency_us);
        for (k, v) in r.errors {
            *report.errors.entry(k).or_default() += v;
        }
    }
    report.events_per_sec = report.consumed as f64 / reading.max(1e-3);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    report.latency_ms = (ms(0.5), ms(0.99), ms(0.999));
    Ok(report)
}

/// One member's connections and position.
struct Member {
    opts: ConsumeOptions,
    coordinator: TcpStream,
    /// Each partition's leader, by partition index.
    leaders: Vec<String>,
    brokers: HashMap<String, TcpStream>,
    member_id: String,
    generation: i32,
    /// Assigned partitions and the next offset of each.
    positions: BTreeMap<i32, i64>,
    correlation: i32,
    out: MemberResult,
}

struct MemberResult {
    consumed: u64,
    bytes: u64,
    commits: u64,
    joins: u64,
    latency_us: hdrhistogram::Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// What a join round ended with.
enum Rejoin {
    Needed,
    Stopped,
}

impl Member {
    fn run(
        opts: &ConsumeOptions,
        index: u32,
        stop: &AtomicBool,
        consumed: &AtomicU64,
    ) -> std::io::Result<MemberResult> {
        let leaders = super::discover(&opts.brokers, &opts.topic, (None, None))?;
        let coordinator = find_coordinator(opts)?;
        let mut me = Member {
            opts: opts.clone(),
            coordinator: connect(&coordinator)?,
            leaders,
            brokers: HashMap::new(),
            member_id: String::new(),
            generation: -1,
            positions: BTreeMap::new(),
            correlation: index as i32 * 1_000_000,
            out: MemberResult {
                consumed: 0,
                bytes: 0,
                commits: 0,
                joins: 0,
                latency_us: hdrhistogram::Histogram::new(3).map_err(|e| io_err(e.to_string()))?,
                errors: BTreeMap::new(),
            },
        };
        while !stop.load(Ordering::Relaxed) {
            me.join()?;
            me.start_positions()?;
            match me.consume(stop, consumed)? {
                Rejoin::Needed => continue,
                Rejoin::Stopped => break,
            }
        }
        me.commit()?;
        me.leave()?;
        Ok(me.out)
    }

    fn next_id(&mut self) -> i32 {
        self.correlation = self.correlation.wrapping_add(1);
        self.correlation
    }

    /// One request to the coordinator and its answer.
    fn ask<Q: Encodable, A: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Q,
    ) -> std::io::Result<A> {
        let id = self.next_id();
        send(&mut self.coordinator, api, version, id, req)?;
        let (_, mut body) = recv(&mut self.coordinator, api, version)?;
        A::decode(&mut body, version).map_err(|e| io_err(format!("{api:?} answer: {e}")))
    }

    fn count(&mut self, what: &str) {
        *self.out.errors.entry(what.to_string()).or_default() += 1;
    }

    /// JoinGroup (twice for a new member, KIP-394) and SyncGroup: the leader assigns
    /// with `range`; every member takes its partitions.
    fn join(&mut self) -> std::io::Result<()> {
        loop {
            self.out.joins += 1;
            let subscription = versioned(
                0,
                &m::ConsumerProtocolSubscription::default()
                    .with_topics(vec![StrBytes::from_string(self.opts.topic.clone())]),
            )?;
            let req = m::JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.opts.group.clone())))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(SESSION_TIMEOUT_MS)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    m::join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(subscription),
                ]);
            let joined: m::JoinGroupResponse = self.ask(ApiKey::JoinGroup, JOIN_VERSION, &req)?;
            self.member_id = joined.member_id.to_string();
            match joined.error_code {
                0 => {}
                // MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS: again, with the id.
                79 | 27 => continue,
                25 | 22 => {
                    self.member_id.clear();
                    continue;
                }
                code => return Err(io_err(format!("JoinGroup: error {code}"))),
            }
            self.generation = joined.generation_id;
            let assignments = if joined.leader == joined.member_id {
                let ids: Vec<String> = joined
                    .members
                    .iter()
                    .map(|m| m.member_id.to_string())
                    .collect();
                range(&ids, self.leaders.len() as i32)
                    .into_iter()
                    .map(|(id, parts)| {
                        let a = m::ConsumerProtocolAssignment::default().with_assigned_partitions(
                            vec![m::consumer_protocol_assignment::TopicPartition::default()
                                .with_topic(TopicName(StrBytes::from_string(
                                    self.opts.topic.clone(),
                                )))
                                .with_partitions(parts)],
                        );
                        Ok(m::sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_assignment(versioned(0, &a)?))
                    })
                    .collect::<std::io::Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            let req = m::SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.opts.group.clone())))
                .with_generation_id(self.generation)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_assignments(assignments);
            let synced: m::SyncGroupResponse = self.ask(ApiKey::SyncGroup, SYNC_VERSION, &req)?;
            if synced.error_code != 0 {
                self.count(&format!("sync_error_{}", synced.error_code));
                continue;
            }
            let mut bytes = synced.assignment.clone();
            self.positions.clear();
            if bytes.len() >= 2 {
                let version = bytes.get_i16();
                let a = m::ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3))
                    .map_err(|e| io_err(format!("assignment: {e}")))?;
                for tp in a
                    .assigned_partitions
                    .iter()
                    .filter(|tp| tp.topic.0.as_str() == self.opts.topic)
                {
                    for &p in &tp.partitions {
                        self.positions.insert(p, -1);
                    }
                }
            }
            return Ok(());
        }
    }

    /// Committed offsets of the assigned partitions; where there is none, the
    /// beginning or the end (ListOffsets on the partition's leader).
    fn start_positions(&mut self) -> std::io::Result<()> {
        let parts: Vec<i32> = self.positions.keys().copied().collect();
        let req = m::OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.opts.group.clone())))
            .with_topics(Some(vec![
                m::offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.opts.topic.clone())))
                    .with_partition_indexes(parts),
            ]));
        let got: m::OffsetFetchResponse =
            self.ask(ApiKey::OffsetFetch, OFFSET_FETCH_VERSION, &req)?;
        for t in &got.topics {
            for p in &t.partitions {
                if p.committed_offset >= 0 {
                    self.positions.insert(p.partition_index, p.committed_offset);
                }
            }
        }
        let missing: Vec<i32> = self
            .positions
            .iter()
            .filter(|(_, &o)| o < 0)
            .map(|(&p, _)| p)
            .collect();
        let timestamp = if self.opts.from_latest { -1 } else { -2 };
        for p in missing {
            let addr = self.leaders[p as usize].clone();
            let req = m::ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![m::list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.opts.topic.clone())))
                    .with_partitions(vec![
                        m::list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp),
                    ])]);
            let id = self.next_id();
            let s = self.broker(&addr)?;
            send(s, ApiKey::ListOffsets, LIST_OFFSETS_VERSION, id, &req)?;
            let (_, mut body) = recv(s, ApiKey::ListOffsets, LIST_OFFSETS_VERSION)?;
            let r = m::ListOffsetsResponse::decode(&mut body, LIST_OFFSETS_VERSION)
                .map_err(|e| io_err(format!("ListOffsets answer: {e}")))?;
            let offset = r
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .map_or(0, |x| x.offset);
            self.positions.insert(p, offset.max(0));
        }
        Ok(())
    }

    fn broker(&mut self, addr: &str) -> std::io::Result<&mut TcpStream> {
        if !self.brokers.contains_key(addr) {
            self.brokers.insert(addr.to_string(), connect(addr)?);
        }
        self.brokers
            .get_mut(addr)
            .ok_or_else(|| io_err("broker connection"))
    }

    /// Fetches until told to stop or the group rebalances; heartbeats and commits on
    /// their schedules.
    fn consume(&mut self, stop: &AtomicBool, consumed: &AtomicU64) -> std::io::Result<Rejoin> {
        let mut beat = Instant::now();
        let mut committed = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Rejoin::Stopped);
            }
            if beat.elapsed() >= HEARTBEAT_EVERY {
                beat = Instant::now();
                let req = m::HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(self.opts.group.clone())))
                    .with_generation_id(self.generation)
                    .with_member_id(StrBytes::from_string(self.member_id.clone()));
                let r: m::HeartbeatResponse =
                    self.ask(ApiKey::Heartbeat, HEARTBEAT_VERSION, &req)?;
                if r.error_code != 0 {
                    // Commit what is consumed before the partitions move.
                    self.commit()?;
                    return Ok(Rejoin::Needed);
                }
            }
            if committed.elapsed() >= self.opts.commit_interval {
                committed = Instant::now();
                self.commit()?;
            }
            if self.positions.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let n = self.fetch_once()?;
            consumed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// One Fetch to every broker leading an assigned partition, sent together; the
    /// records that came back, counted.
    fn fetch_once(&mut self) -> std::io::Result<u64> {
        let mut by_broker: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for &p in self.positions.keys() {
            by_broker
                .entry(self.leaders[p as usize].clone())
                .or_default()
                .push(p);
        }
        let mut asked = Vec::new();
        for (addr, parts) in &by_broker {
            let partitions = parts
                .iter()
                .map(|&p| {
                    m::fetch_request::FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(self.positions[&p])
                        .with_partition_max_bytes(PARTITION_FETCH_BYTES)
                })
                .collect();
            let req = m::FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(FETCH_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(52428800)
                .with_session_epoch(-1)
                .with_topics(vec![m::fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(self.opts.topic.clone())))
                    .with_partitions(partitions)]);
            let id = self.next_id();
            send(self.broker(addr)?, ApiKey::Fetch, FETCH_VERSION, id, &req)?;
            asked.push(addr.clone());
        }
        let mut total = 0;
        for addr in asked {
            let s = self.broker(&addr)?;
            let (_, mut body) = recv(s, ApiKey::Fetch, FETCH_VERSION)?;
            let r = m::FetchResponse::decode(&mut body, FETCH_VERSION)
                .map_err(|e| io_err(format!("Fetch answer: {e}")))?;
            for t in &r.responses {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        self.count(&format!("fetch_error_{}", p.error_code));
                        continue;
                    }
                    let Some(records) = &p.records else { continue };
                    let Some(pos) = self.positions.get(&p.partition_index).copied() else {
                        continue;
                    };
                    let (n, next, bytes) = self.batches(records, pos)?;
                    self.positions.insert(p.partition_index, next);
                    self.out.bytes += bytes;
                    total += n;
                }
            }
        }
        self.out.consumed += total;
        Ok(total)
    }

    /// Counts the records of the whole batches in `data` at or after `from`, checks
    /// each batch's CRC, records its latency; (records, next offset, bytes).
    fn batches(&mut self, data: &Bytes, from: i64) -> std::io::Result<(u64, i64, u64)> {
        let now = super::now_ms();
        let (mut at, mut next, mut n, mut bytes) = (0usize, from, 0u64, 0u64);
        // The header up to the record count: 61 bytes.
        while data.len() - at >= 61 {
            let b = &data[at..];
            let base = i64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
            let len = i32::from_be_bytes(b[8..12].try_into().unwrap_or_default());
            // A batch is at least its 61-byte header.
            let Some(total) = usize::try_from(len)
                .ok()
                .map(|l| l + 12)
                .filter(|&t| t >= 61)
            else {
                return Err(io_err(format!("batch at {base}: length {len}")));
            };
            if b.len() < total {
                break; // a partial batch at the end of the answer
            }
            let crc = u32::from_be_bytes(b[17..21].try_into().unwrap_or_default());
            if tidewater_io::checksum::crc32c(&b[21..total]) != crc {
                return Err(io_err(format!("batch at offset {base}: CRC mismatch")));
            }
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap_or_default());
            let max_ts = i64::from_be_bytes(b[35..43].try_into().unwrap_or_default());
            let count = i32::from_be_bytes(b[57..61].try_into().unwrap_or_default()).max(0) as u64;
            let end = base + i64::from(last_delta) + 1;
            if end > next {
                // Records before the position (a batch that began before it) are not
                // counted again.
                let counted = count.min((end - next.max(base)) as u64);
                n += counted;
                let latency_us = (now - max_ts).max(0) as u64 * 1000;
                let _ = self.out.latency_us.record_n(latency_us, counted);
                next = end;
            }
            bytes += total as u64;
            at += total;
        }
        Ok((n, next, bytes))
    }

    /// Commits every assigned partition's position.
    fn commit(&mut self) -> std::io::Result<()> {
        if self.positions.is_empty() || self.generation < 0 {
            return Ok(());
        }
        let partitions = self
            .positions
            .iter()
            .map(|(&p, &o)| {
                m::offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(o)
            })
            .collect();
        let req = m::OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.opts.group.clone())))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_topics(vec![
                m::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.opts.topic.clone())))
                    .with_partitions(partitions),
            ]);
        let r: m::OffsetCommitResponse = self.ask(ApiKey::OffsetCommit, COMMIT_VERSION, &req)?;
        let failed = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.error_code != 0)
            .map(|p| p.error_code);
        match failed {
            None => self.out.commits += 1,
            Some(code) => self.count(&format!("commit_error_{code}")),
        }
        Ok(())
    }

    fn leave(&mut self) -> std::io::Result<()> {
        let req = m::LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.opts.group.clone())))
            .with_members(vec![m::leave_group_request::MemberIdentity::default()
                .with_member_id(StrBytes::from_string(self.member_id.clone()))]);
        let _: m::LeaveGroupResponse = self.ask(ApiKey::LeaveGroup, 3, &req)?;
        Ok(())
    }
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// The coordinator's address, asked of the first broker that answers.
fn find_coordinator(opts: &ConsumeOptions) -> std::io::Result<String> {
    let mut last = io_err("no broker given");
    for addr in opts.brokers.split(',') {
        let mut s = match connect(addr.trim()) {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let req = m::FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(opts.group.clone()));
        send(
            &mut s,
            ApiKey::FindCoordinator,
            FIND_COORDINATOR_VERSION,
            1,
            &req,
        )?;
        let (_, mut body) = recv(&mut s, ApiKey::FindCoordinator, FIND_COORDINATOR_VERSION)?;
        let r = m::FindCoordinatorResponse::decode(&mut body, FIND_COORDINATOR_VERSION)
            .map_err(|e| io_err(format!("FindCoordinator answer: {e}")))?;
        if r.error_code != 0 {
            return Err(io_err(format!("FindCoordinator: error {}", r.error_code)));
        }
        return Ok(format!("{}:{}", r.host.as_str(), r.port));
    }
    Err(last)
}

/// A consumer-protocol message with its version in front, as the protocol carries
/// it in JoinGroup and SyncGroup.
fn versioned<T: Encodable>(version: i16, msg: &T) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version)
        .map_err(|e| io_err(format!("consumer protocol: {e}")))?;
    Ok(buf.freeze())
}

/// Kafka's `range` assignor for one topic: members sorted by id, each a run of
/// consecutive partitions, the first `partitions % members` one more.
pub fn range(members: &[String], partitions: i32) -> Vec<(String, Vec<i32>)> {
    let mut ids = members.to_vec();
    ids.sort();
    let n = ids.len().max(1) as i32;
    let (each, extra) = (partitions / n, partitions % n);
    let mut next = 0;
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            let take = each + i32::from((i as i32) < extra);
            let parts = (next..next + take).collect();
            next += take;
            (id, parts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_gives_runs_and_the_first_members_one_more() {
        let ids: Vec<String> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let got = range(&ids, 8);
        assert_eq!(
            got,
            vec![
                ("a".to_string(), vec![0, 1, 2]),
                ("b".to_string(), vec![3, 4, 5]),
                ("c".to_string(), vec![6, 7]),
            ]
        );
        assert_eq!(range(&ids, 1)[2].1, Vec::<i32>::new());
    }
}
