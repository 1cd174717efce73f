//! One consumer group under Kafka's classic protocol, as Kafka's own coordinator
//! keeps it: its members, its generation, the state of its rebalance, and the
//! answers its members wait for.
//!
//! States: `Empty` (no members; committed offsets may remain), `PreparingRebalance`
//! (the join phase: members rejoin until all have, or the rebalance timeout
//! passes), `CompletingRebalance` (the leader computes the assignment and sends it
//! with its SyncGroup), `Stable`. The coordinator only relays: the members' own
//! assignor (range, round-robin, sticky, cooperative-sticky, ...) runs in the
//! leader; cooperative rebalancing is the members' two rounds of the same steps.
//!
//! Never: does I/O or waits on a timer. Time comes in as `now`, and the
//! coordinator calls [`Group::expire`] at [`Group::next_deadline`].

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Where a group's rebalance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// The name DescribeGroups and ListGroups give, as Kafka's.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// The limits a group is held to.
#[derive(Clone, Copy, Debug)]
pub struct GroupLimits {
    /// A new group's first join phase lasts at least this long, so that members
    /// starting together land in one generation (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay: Duration,
    /// Members (and members given an id and not yet rejoined) one group may have
    /// (Kafka's `group.max.size`).
    pub members_max: usize,
    /// Bytes of protocol metadata plus assignment one member may hold.
    pub member_bytes_max: usize,
}

/// What a member sends with JoinGroup.
#[derive(Clone, Debug)]
pub struct JoinArgs {
    /// Empty: a new member.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// By the member's preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member gets an id with MEMBER_ID_REQUIRED and joins
    /// again with it (KIP-394).
    pub require_known_member_id: bool,
}

/// A completed join, as one member receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member, its instance id and its metadata for the
    /// chosen protocol; empty for the others.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A refused join: the error, and the member id to send (MEMBER_ID_REQUIRED gives
/// the new member its id).
#[derive(Clone, Debug, PartialEq)]
pub struct JoinRefused {
    pub error: ResponseError,
    pub member_id: String,
}

pub type JoinResult = Result<Joined, JoinRefused>;

/// A completed sync: the member's assignment.
#[derive(Clone, Debug, PartialEq)]
pub struct Synced {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

pub type SyncResult = Result<Synced, ResponseError>;

/// An answer now, or one to wait for.
pub enum Step<T> {
    Now(T),
    Wait(LocalReceiver<T>),
}

/// What a member that is in the group holds.
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Its JoinGroup, waiting for the join phase to end.
    join: Option<LocalSender<JoinResult>>,
    /// Its SyncGroup, waiting for the leader's.
    sync: Option<LocalSender<SyncResult>>,
    /// The member is gone unless it is heard from before this.
    expires: Instant,
}

impl Member {
    fn bytes(&self) -> usize {
        self.protocols
            .iter()
            .map(|(n, m)| n.len() + m.len())
            .sum::<usize>()
            + self.assignment.len()
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// One consumer group.
pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// By member id.
    members: BTreeMap<String, Member>,
    /// Ids given with MEMBER_ID_REQUIRED and not yet used, with their expiry.
    pending: HashMap<String, Instant>,
    /// Static members: instance id to member id.
    instances: HashMap<String, String>,
    /// The join phase ends at this time at the latest.
    phase_deadline: Option<Instant>,
    /// A new group's join phase ends no earlier than this.
    not_before: Option<Instant>,
    limits: GroupLimits,
    /// Rebalances completed (a new generation), for the metrics.
    pub rebalances: u64,
}

impl Group {
    pub fn new(id: String, generation: i32, limits: GroupLimits) -> Group {
        Group {
            id,
            state: State::Empty,
            generation,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            instances: HashMap::new(),
            phase_deadline: None,
            not_before: None,
            limits,
            rebalances: 0,
        }
    }

    /// Bytes of protocol metadata and assignments the group holds.
    pub fn bytes(&self) -> usize {
        self.members.values().map(Member::bytes).sum()
    }

    /// No members, and none on the way.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// A JoinGroup. `new_id` makes a member id when the member has none.
    pub fn join(
        &mut self,
        a: JoinArgs,
        now: Instant,
        new_id: impl FnOnce() -> String,
    ) -> Step<JoinResult> {
        let refuse = |error, member_id: &str| {
            Step::Now(Err(JoinRefused {
                error,
                member_id: member_id.to_string(),
            }))
        };
        if !self.supports(&a.protocol_type, &a.protocols) {
            return refuse(ResponseError::InconsistentGroupProtocol, &a.member_id);
        }
        if a.protocols
            .iter()
            .map(|(n, m)| n.len() + m.len())
            .sum::<usize>()
            > self.limits.member_bytes_max
        {
            return refuse(ResponseError::InvalidRequest, &a.member_id);
        }
        if a.member_id.is_empty() {
            if let Some(old) = a
                .instance_id
                .as_ref()
                .and_then(|i| self.instances.get(i))
                .cloned()
            {
                return self.rejoin_static(old, a, now, new_id());
            }
            if self.members.len() + self.pending.len() >= self.limits.members_max {
                return refuse(ResponseError::GroupMaxSizeReached, "");
            }
            let id = new_id();
            if a.require_known_member_id && a.instance_id.is_none() {
                self.pending.insert(id.clone(), now + a.session_timeout);
                return refuse(ResponseError::MemberIdRequired, &id);
            }
            return self.add_member(id, a, now);
        }
        if self.pending.remove(&a.member_id).is_some() {
            let id = a.member_id.clone();
            return self.add_member(id, a, now);
        }
        if let Err(e) = self.check_instance(&a.member_id, a.instance_id.as_deref()) {
            return refuse(e, &a.member_id);
        }
        let Some(m) = self.members.get(&a.member_id) else {
            return refuse(ResponseError::UnknownMemberId, &a.member_id);
        };
        let unchanged = m.protocols == a.protocols;
        let is_leader = self.leader.as_deref() == Some(a.member_id.as_str());
        match self.state {
            State::PreparingRebalance => self.wait_join(a, now),
            // Its JoinGroup answer was lost: the current generation again (the
            // leader with the members, to assign them).
            State::CompletingRebalance if unchanged => {
                let id = a.member_id.clone();
                self.touch(&id, now);
                Step::Now(Ok(self.joined(&id)))
            }
            State::Stable if unchanged && !is_leader => {
                let id = a.member_id.clone();
                self.touch(&id, now);
                Step::Now(Ok(self.joined(&id)))
            }
            State::CompletingRebalance | State::Stable => {
                let step = self.wait_join(a, now);
                self.prepare_rebalance(now);
                step
            }
            State::Empty => refuse(ResponseError::UnknownMemberId, &a.member_id),
        }
    }

    /// A static member back under a new member id: the old id is fenced. In a stable
    /// group with the same protocols and a member that is not the leader, no
    /// rebalance: it keeps its assignment.
    fn rejoin_static(
        &mut self,
        old: String,
        a: JoinArgs,
        now: Instant,
        id: String,
    ) -> Step<JoinResult> {
        let Some(mut m) = self.members.remove(&old) else {
            return self.add_member(id, a, now);
        };
        if let Some(tx) = m.join.take() {
            let _ = tx.try_send(Err(JoinRefused {
                error: ResponseError::FencedInstanceId,
                member_id: old.clone(),
            }));
        }
        if let Some(tx) = m.sync.take() {
            let _ = tx.try_send(Err(ResponseError::FencedInstanceId));
        }
        let unchanged = m.protocols == a.protocols;
        let was_leader = self.leader.as_deref() == Some(old.as_str());
        m.id = id.clone();
        m.client_id = a.client_id.clone();
        m.client_host = a.client_host.clone();
        m.session_timeout = a.session_timeout;
        m.rebalance_timeout = a.rebalance_timeout;
        m.protocols = a.protocols.clone();
        m.expires = now + a.session_timeout;
        if let Some(iid) = &a.instance_id {
            self.instances.insert(iid.clone(), id.clone());
        }
        self.members.insert(id.clone(), m);
        if was_leader {
            self.leader = Some(id.clone());
        }
        let a = JoinArgs {
            member_id: id.clone(),
            ..a
        };
        match self.state {
            State::Stable if unchanged && !was_leader => Step::Now(Ok(self.joined(&id))),
            State::PreparingRebalance => self.wait_join(a, now),
            _ => {
                let step = self.wait_join(a, now);
                self.prepare_rebalance(now);
                step
            }
        }
    }

    fn add_member(&mut self, id: String, a: JoinArgs, now: Instant) -> Step<JoinResult> {
        if let Some(iid) = &a.instance_id {
            self.instances.insert(iid.clone(), id.clone());
        }
        self.protocol_type = Some(a.protocol_type.clone());
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: a.instance_id.clone(),
                client_id: a.client_id.clone(),
                client_host: a.client_host.clone(),
                session_timeout: a.session_timeout,
                rebalance_timeout: a.rebalance_timeout,
                protocols: a.protocols.clone(),
                assignment: Bytes::new(),
                join: None,
                sync: None,
                expires: now + a.session_timeout,
            },
        );
        let a = JoinArgs { member_id: id, ..a };
        let step = self.wait_join(a, now);
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        step
    }

    /// Records the member's JoinGroup (its protocols, its waiting answer) and ends
    /// the join phase if it was the last one awaited.
    fn wait_join(&mut self, a: JoinArgs, now: Instant) -> Step<JoinResult> {
        let (tx, rx) = local_channel::new_bounded(1);
        if let Some(m) = self.members.get_mut(&a.member_id) {
            m.protocols = a.protocols;
            m.session_timeout = a.session_timeout;
            m.rebalance_timeout = a.rebalance_timeout;
            m.expires = now + a.session_timeout;
            // A member that joins again before its last JoinGroup was answered: the
            // new request is the one answered.
            m.join = Some(tx);
        }
        if self.state == State::PreparingRebalance {
            self.maybe_complete_join(now);
        }
        Step::Wait(rx)
    }

    /// Starts a join phase: every member must join again. A sync in flight is
    /// answered REBALANCE_IN_PROGRESS.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(tx) = m.sync.take() {
                    let _ = tx.try_send(Err(ResponseError::RebalanceInProgress));
                }
            }
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.not_before = (self.state == State::Empty)
            .then_some(now + self.limits.initial_rebalance_delay.min(longest));
        self.state = State::PreparingRebalance;
        self.phase_deadline = Some(now + longest);
        self.maybe_complete_join(now);
    }

    /// Ends the join phase once every member has joined and no new member is on its
    /// way (and a new group's delay has passed).
    fn maybe_complete_join(&mut self, now: Instant) {
        let all = self.members.values().all(|m| m.join.is_some()) && self.pending.is_empty();
        let delayed = self.not_before.is_some_and(|t| now < t);
        if self.state == State::PreparingRebalance && all && !delayed {
            self.complete_join(now);
        }
    }

    /// The join phase ends: members that did not join are gone, the generation
    /// moves on, every joined member gets its answer (the leader with the members).
    fn complete_join(&mut self, now: Instant) {
        // Dynamic members that did not join again are gone; a static one keeps its
        // place (and gets an assignment) until its session ends, as in Kafka.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        self.pending.clear();
        self.phase_deadline = None;
        self.not_before = None;
        self.generation += 1;
        self.rebalances += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        // The leader must be a member that joined (it computes the assignment).
        let joined = |id: &String| self.members.get(id).is_some_and(|m| m.join.is_some());
        if !self.leader.as_ref().is_some_and(joined) {
            self.leader = self.members.keys().find(|id| joined(id)).cloned();
        }
        self.state = State::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let answer = self.joined(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.expires = now + m.session_timeout;
                if let Some(tx) = m.join.take() {
                    let _ = tx.try_send(Ok(answer));
                }
            }
        }
    }

    /// The current generation as `id` receives it.
    fn joined(&self, id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == id {
            self.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader,
            member_id: id.to_string(),
            members,
        }
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|&c| (0, c)).collect();
        for m in self.members.values() {
            if let Some((_, vote)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| c == vote) {
                    v.0 += 1;
                }
            }
        }
        // The most votes; on a tie, the first candidate.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.to_string())
    }

    /// Whether a member of `protocol_type` with `protocols` may join.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(n, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
    }

    /// FENCED_INSTANCE_ID when `instance_id` now belongs to another member id.
    fn check_instance(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        match instance_id.and_then(|i| self.instances.get(i)) {
            Some(current) if current != member_id => Err(ResponseError::FencedInstanceId),
            _ => Ok(()),
        }
    }

    /// The member, its instance and its generation must be current.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        self.check_instance(member_id, instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.expires = now + m.session_timeout;
        }
    }

    /// A SyncGroup: the leader's carries the assignment of every member.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Step<SyncResult> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Step::Now(Err(e));
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return Step::Now(Err(ResponseError::InconsistentGroupProtocol));
        }
        self.touch(member_id, now);
        match self.state {
            State::Empty => Step::Now(Err(ResponseError::UnknownMemberId)),
            State::PreparingRebalance => Step::Now(Err(ResponseError::RebalanceInProgress)),
            State::Stable => Step::Now(Ok(self.synced(member_id))),
            State::CompletingRebalance => {
                let (tx, rx) = local_channel::new_bounded(1);
                if let Some(m) = self.members.get_mut(member_id) {
                    m.sync = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    if let Err(e) = self.assign(assignments) {
                        // The assignment cannot be kept: every member starts over.
                        for m in self.members.values_mut() {
                            if let Some(tx) = m.sync.take() {
                                let _ = tx.try_send(Err(e));
                            }
                        }
                        self.prepare_rebalance(now);
                        return Step::Wait(rx);
                    }
                    self.state = State::Stable;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let answer = self.synced(&id);
                        if let Some(tx) = self.members.get_mut(&id).and_then(|m| m.sync.take()) {
                            let _ = tx.try_send(Ok(answer));
                        }
                    }
                }
                Step::Wait(rx)
            }
        }
    }

    /// Takes the leader's assignment; members it does not name get an empty one.
    fn assign(&mut self, assignments: Vec<(String, Bytes)>) -> Result<(), ResponseError> {
        let max = self.limits.member_bytes_max;
        let mut given: HashMap<String, Bytes> = HashMap::new();
        for (id, a) in assignments {
            let Some(m) = self.members.get(&id) else {
                continue;
            };
            if m.bytes() - m.assignment.len() + a.len() > max {
                tracing::warn!(group = %self.id, member = %id, bytes = a.len(), max, "assignment refused: larger than the member's share (group_member_bytes_max)");
                return Err(ResponseError::InvalidRequest);
            }
            given.insert(id, a);
        }
        for m in self.members.values_mut() {
            m.assignment = given.remove(&m.id).unwrap_or_default();
        }
        Ok(())
    }

    fn synced(&self, member_id: &str) -> Synced {
        Synced {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// A Heartbeat: keeps the member alive; REBALANCE_IN_PROGRESS tells it to join.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == State::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_instance(member_id, instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        self.touch(member_id, now);
        if self.state == State::PreparingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// A member leaves (LeaveGroup): by member id, or a static member by its
    /// instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let id = match instance_id {
            Some(iid) => {
                let Some(current) = self.instances.get(iid).cloned() else {
                    return Err(ResponseError::UnknownMemberId);
                };
                if !member_id.is_empty() && member_id != current {
                    return Err(ResponseError::FencedInstanceId);
                }
                current
            }
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.maybe_complete_join(now);
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        self.remove(&id);
        self.member_gone(now);
        Ok(())
    }

    /// After a member left or expired: the others rebalance.
    fn member_gone(&mut self, now: Instant) {
        match self.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(now),
            State::PreparingRebalance => self.maybe_complete_join(now),
            State::Empty => {}
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(iid) = &m.instance_id {
                if self.instances.get(iid).is_some_and(|cur| cur == id) {
                    self.instances.remove(iid);
                }
            }
            if let Some(tx) = m.join.take() {
                let _ = tx.try_send(Err(JoinRefused {
                    error: ResponseError::UnknownMemberId,
                    member_id: id.to_string(),
                }));
            }
            if let Some(tx) = m.sync.take() {
                let _ = tx.try_send(Err(ResponseError::UnknownMemberId));
            }
        }
    }

    /// May a member commit offsets for `generation` now? (OffsetCommit.) A
    /// generation below 0 is a commit from outside the group (a consumer with
    /// `assign()`, or a tool), allowed while the group has no members.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if generation < 0 && self.state == State::Empty {
            return Ok(());
        }
        if self.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.check_member(member_id, instance_id, generation)?;
        self.touch(member_id, now);
        Ok(())
    }

    /// Removes members not heard from in their session timeout, ids given and not
    /// used, and ends a join phase whose time is up. True when anything changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = (self.generation, self.members.len(), self.pending.len());
        self.pending.retain(|_, t| *t > now);
        let expired: Vec<String> = self
            .members
            .values()
            // A member waiting for its join or sync answer is alive.
            .filter(|m| m.expires <= now && m.join.is_none() && m.sync.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member expired: no heartbeat within its session timeout");
            self.remove(id);
        }
        if !expired.is_empty() {
            self.member_gone(now);
        }
        // A passed delay is no deadline any more: left, the timer would wake at once
        // again and again while a member given an id is still on its way.
        if self.not_before.is_some_and(|t| t <= now) {
            self.not_before = None;
        }
        if self.state == State::PreparingRebalance {
            if self.phase_deadline.is_some_and(|t| t <= now) {
                self.complete_join(now);
            } else {
                self.maybe_complete_join(now);
            }
        }
        before != (self.generation, self.members.len(), self.pending.len())
    }

    /// When [`Group::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let members = self
            .members
            .values()
            .filter(|m| m.join.is_none() && m.sync.is_none())
            .map(|m| m.expires);
        let pending = self.pending.values().copied();
        let phase = [self.phase_deadline, self.not_before].into_iter().flatten();
        members.chain(pending).chain(phase).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GroupLimits {
        GroupLimits {
            initial_rebalance_delay: Duration::ZERO,
            members_max: 10,
            member_bytes_max: 1 << 20,
        }
    }

    fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
        }
    }

    /// A static member (`group.instance.id` host-1) asking for range.
    fn static_args(member_id: &str) -> JoinArgs {
        JoinArgs {
            instance_id: Some("host-1".into()),
            ..args(member_id, &["range"])
        }
    }

    fn now_answer<T>(s: Step<T>) -> T {
        match s {
            Step::Now(t) => t,
            Step::Wait(rx) => {
                let got =
                    futures_lite::future::block_on(futures_lite::future::poll_once(rx.recv()));
                got.expect("answered already")
                    .expect("the group kept the sender")
            }
        }
    }

    fn pending<T>(s: &Step<T>) -> bool {
        match s {
            Step::Now(_) => false,
            // Polling takes the answer if there is one: then the test fails anyway.
            Step::Wait(rx) => {
                futures_lite::future::block_on(futures_lite::future::poll_once(rx.recv())).is_none()
            }
        }
    }

    /// A new member: MEMBER_ID_REQUIRED, then a join with the id it was given.
    fn join_new(g: &mut Group, id: &str, protocols: &[&str], now: Instant) -> Step<JoinResult> {
        let refused = now_answer(g.join(args("", protocols), now, || id.to_string()));
        assert_eq!(
            refused,
            Err(JoinRefused {
                error: ResponseError::MemberIdRequired,
                member_id: id.into()
            })
        );
        g.join(args(id, protocols), now, || unreachable!())
    }

    #[test]
    fn two_members_join_sync_and_the_leader_assigns() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let mut g = Group::new("g".into(), 0, limits());
            let a = now_answer(join_new(&mut g, "a", &["range", "roundrobin"], t0)).unwrap();
            assert_eq!((a.generation, a.leader.as_str()), (1, "a"));
            assert_eq!(g.state, State::CompletingRebalance);
            let synced = now_answer(g.sync(
                "a",
                None,
                1,
                (None, None),
                vec![("a".into(), Bytes::from_static(b"p0"))],
                t0,
            ));
            assert_eq!(synced.unwrap().assignment, Bytes::from_static(b"p0"));
            // b arrives: a must join again; b waits for it.
            let b = join_new(&mut g, "b", &["roundrobin", "range"], t0);
            assert!(pending(&b));
            assert_eq!(
                g.heartbeat("a", None, 1, t0),
                Err(ResponseError::RebalanceInProgress)
            );
            let a = now_answer(g.join(args("a", &["range", "roundrobin"]), t0, || unreachable!()))
                .unwrap();
            let b = now_answer(b).unwrap();
            assert_eq!((a.generation, b.generation), (2, 2));
            assert_eq!(a.members.len(), 2, "the leader gets every member");
            assert!(b.members.is_empty());
            assert_eq!(a.protocol, "range", "one vote each: the first candidate");
            let sb = g.sync("b", None, 2, (Some("consumer"), Some("range")), vec![], t0);
            assert!(pending(&sb), "b waits for the leader's assignment");
            let sa = g.sync(
                "a",
                None,
                2,
                (None, None),
                vec![
                    ("a".into(), Bytes::from_static(b"A")),
                    ("b".into(), Bytes::from_static(b"B")),
                ],
                t0,
            );
            assert_eq!(now_answer(sa).unwrap().assignment, Bytes::from_static(b"A"));
            assert_eq!(now_answer(sb).unwrap().assignment, Bytes::from_static(b"B"));
            assert_eq!(g.state, State::Stable);
            assert_eq!(g.heartbeat("b", None, 2, t0), Ok(()));
            assert_eq!(
                g.heartbeat("b", None, 1, t0),
                Err(ResponseError::IllegalGeneration)
            );
            assert_eq!(
                g.heartbeat("x", None, 2, t0),
                Err(ResponseError::UnknownMemberId)
            );
        });
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance_then_the_last_leaves() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let mut g = Group::new("g".into(), 7, limits());
            let a = join_new(&mut g, "a", &["range"], t0);
            now_answer(a).unwrap();
            let b = join_new(&mut g, "b", &["range"], t0);
            now_answer(g.join(args("a", &["range"]), t0, || unreachable!())).unwrap();
            now_answer(b).unwrap();
            assert_eq!(g.generation, 9, "generations continue from the stored one");
            let _b_waits = g.sync("b", None, 9, (None, None), vec![], t0);
            // a (the leader) never syncs; b keeps heartbeating until a expires.
            let later = t0 + Duration::from_secs(11);
            assert_eq!(
                g.heartbeat("b", None, 9, t0 + Duration::from_secs(9)),
                Ok(())
            );
            assert!(g.next_deadline().is_some_and(|d| d <= later));
            assert!(g.expire(later));
            assert_eq!(g.state, State::PreparingRebalance);
            let b = now_answer(g.join(args("b", &["range"]), later, || unreachable!())).unwrap();
            assert_eq!((b.generation, b.leader.as_str()), (10, "b"));
            assert_eq!(g.leave("b", None, later), Ok(()));
            assert_eq!(g.state, State::Empty);
            assert!(g.is_empty());
            assert_eq!(
                g.leave("b", None, later),
                Err(ResponseError::UnknownMemberId)
            );
        });
    }

    #[test]
    fn the_join_phase_ends_at_the_rebalance_timeout_without_the_laggards() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let mut g = Group::new("g".into(), 0, limits());
            now_answer(join_new(&mut g, "a", &["range"], t0)).unwrap();
            now_answer(g.sync("a", None, 1, (None, None), vec![], t0)).unwrap();
            let b = join_new(&mut g, "b", &["range"], t0);
            assert!(pending(&b));
            // a keeps heartbeating but never joins again.
            for k in 1..=9 {
                let t = t0 + Duration::from_secs(3 * k);
                let _ = g.heartbeat("a", None, 1, t);
                g.expire(t);
            }
            assert!(pending(&b));
            g.expire(t0 + Duration::from_secs(31));
            let b = now_answer(b).unwrap();
            assert_eq!(
                (b.generation, b.leader.as_str(), b.members.len()),
                (2, "b", 1)
            );
            assert_eq!(
                g.heartbeat("a", None, 1, t0),
                Err(ResponseError::UnknownMemberId)
            );
        });
    }

    #[test]
    fn static_members_rejoin_without_a_rebalance_and_fence_their_old_id() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let mut g = Group::new("g".into(), 0, limits());
            now_answer(join_new(&mut g, "a", &["range"], t0)).unwrap();
            let s = g.join(static_args(""), t0, || "s1".into());
            now_answer(g.join(args("a", &["range"]), t0, || unreachable!())).unwrap();
            assert_eq!(now_answer(s).unwrap().generation, 2);
            let s1 = g.sync("s1", Some("host-1"), 2, (None, None), vec![], t0);
            now_answer(g.sync(
                "a",
                None,
                2,
                (None, None),
                vec![("s1".into(), Bytes::from_static(b"S"))],
                t0,
            ))
            .unwrap();
            now_answer(s1).unwrap();
            // The static member restarts: a new id, same generation, same assignment.
            let again = now_answer(g.join(static_args(""), t0, || "s2".into())).unwrap();
            assert_eq!((again.generation, again.member_id.as_str()), (2, "s2"));
            assert_eq!(g.state, State::Stable);
            let synced = now_answer(g.sync("s2", Some("host-1"), 2, (None, None), vec![], t0));
            assert_eq!(synced.unwrap().assignment, Bytes::from_static(b"S"));
            assert_eq!(
                g.heartbeat("s1", Some("host-1"), 2, t0),
                Err(ResponseError::FencedInstanceId)
            );
            assert_eq!(g.leave("", Some("host-1"), t0), Ok(()));
            assert_eq!(g.state, State::PreparingRebalance);
        });
    }

    #[test]
    fn a_static_leader_back_under_a_new_id_waits_for_the_rebalance_it_starts() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let mut g = Group::new("g".into(), 0, limits());
            // The static member leads (it joined first).
            now_answer(g.join(static_args(""), t0, || "s1".into())).unwrap();
            let b = join_new(&mut g, "b", &["range"], t0);
            let s1 = g.join(static_args("s1"), t0, || unreachable!());
            now_answer(b).unwrap();
            assert_eq!(now_answer(s1).unwrap().leader, "s1");
            let s1 = g.sync("s1", Some("host-1"), 2, (None, None), vec![], t0);
            now_answer(s1).unwrap();
            // It restarts: a new id; as the leader it starts a rebalance and waits.
            let s2 = g.join(static_args(""), t0, || "s2".into());
            assert!(pending(&s2), "waits for the others, not refused");
            assert_eq!(g.state, State::PreparingRebalance);
            let b = now_answer(g.join(args("b", &["range"]), t0, || unreachable!())).unwrap();
            let s2 = now_answer(s2).unwrap();
            assert_eq!(
                (s2.member_id.as_str(), s2.generation, b.generation),
                ("s2", 3, 3)
            );
            assert_eq!(s2.leader, "s2");
            // While the group prepares, another restart of it is waited for too.
            let c = join_new(&mut g, "c", &["range"], t0);
            let s3 = g.join(static_args(""), t0, || "s3".into());
            now_answer(g.join(args("b", &["range"]), t0, || unreachable!())).unwrap();
            assert!(now_answer(s3).is_ok() && now_answer(c).is_ok());
        });
    }

    #[test]
    fn a_new_groups_delay_once_passed_is_no_deadline() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let delayed = GroupLimits {
                initial_rebalance_delay: Duration::from_secs(3),
                ..limits()
            };
            let mut g = Group::new("g".into(), 0, delayed);
            let a = join_new(&mut g, "a", &["range"], t0);
            // b is given an id and never comes back.
            let refused = now_answer(g.join(args("", &["range"]), t0, || "b".into()));
            assert_eq!(refused.unwrap_err().error, ResponseError::MemberIdRequired);
            let later = t0 + Duration::from_secs(4);
            g.expire(later);
            assert!(pending(&a), "b's id is still on its way");
            assert!(
                g.next_deadline().is_some_and(|d| d > later),
                "the next wake-up is b's expiry, not a passed delay"
            );
            g.expire(t0 + Duration::from_secs(11));
            assert_eq!(now_answer(a).unwrap().generation, 1);
        });
    }

    #[test]
    fn bad_input_gets_the_protocol_errors() {
        glommio::LocalExecutor::default().run(async {
            let t0 = Instant::now();
            let mut g = Group::new("g".into(), 0, limits());
            now_answer(join_new(&mut g, "a", &["range"], t0)).unwrap();
            let other = now_answer(g.join(args("", &["sticky"]), t0, || "x".into()));
            assert_eq!(
                other.unwrap_err().error,
                ResponseError::InconsistentGroupProtocol
            );
            let unknown = now_answer(g.join(args("nobody", &["range"]), t0, || unreachable!()));
            assert_eq!(unknown.unwrap_err().error, ResponseError::UnknownMemberId);
            let stale = now_answer(g.sync("a", None, 0, (None, None), vec![], t0));
            assert_eq!(stale, Err(ResponseError::IllegalGeneration));
            let huge = Bytes::from(vec![0u8; 2 << 20]);
            let too_big =
                now_answer(g.sync("a", None, 1, (None, None), vec![("a".into(), huge)], t0));
            assert_eq!(too_big, Err(ResponseError::InvalidRequest));
            assert_eq!(g.state, State::PreparingRebalance, "the members start over");
            assert_eq!(
                g.check_commit("a", None, 1, t0),
                Ok(()),
                "the last generation may commit while preparing"
            );
            assert_eq!(
                g.check_commit("", None, -1, t0),
                Err(ResponseError::UnknownMemberId)
            );
            let mut full = Group::new(
                "f".into(),
                0,
                GroupLimits {
                    members_max: 1,
                    ..limits()
                },
            );
            now_answer(join_new(&mut full, "a", &["range"], t0)).unwrap();
            let refused = now_answer(full.join(args("", &["range"]), t0, || "b".into()));
            assert_eq!(
                refused.unwrap_err().error,
                ResponseError::GroupMaxSizeReached
            );
        });
    }
}
