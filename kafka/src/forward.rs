//! The front end's way between cores: SPSC mailboxes (glommio shared channels, one
//! request and one answer channel per pair of cores). Topic creation uses it in both
//! modes (core 0 coordinates, every core creates its partitions). In single-port mode
//! (one port, a SO_REUSEPORT listener on every core) requests for partitions another
//! core owns are forwarded through it to that core.
//!
//! Forwarding is per partition: the receiving core splits a request, runs its own
//! partitions, sends each other partition's part to its owner, and assembles the
//! response in request order. The owner runs exactly the code it runs for its own
//! clients (checks, idempotence, append, read), so both modes store the same bytes.
//! Every forwarded part counts in `tidewater_cross_core_forwards_total`.
//!
//! Never blocks a core on another: the tasks that receive requests and answers never
//! wait on anything but their channel, so two cores forwarding to each other cannot
//! deadlock.

use super::Broker;
use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Requests or answers a channel holds before the sender waits.
const CHANNEL_CAPACITY: usize = 256;

/// A partition's part of a request.
#[derive(Debug)]
pub enum Request {
    Produce {
        topic: String,
        index: i32,
        records: Bytes,
    },
    Fetch {
        topic: String,
        index: i32,
        offset: i64,
        max_bytes: usize,
    },
    ListOffsets {
        topic: String,
        index: i32,
        timestamp: i64,
    },
    /// To core 0: create this topic on every core.
    CreateTopic { name: String, partitions: u32 },
    /// To each core: create your partitions of this topic.
    AddTopic { name: String, partitions: u32 },
    /// To core 0: delete this topic on every core.
    DeleteTopic { name: String },
    /// To each core: delete your partitions of this topic.
    RemoveTopic { name: String },
}

/// What the owner answers.
#[derive(Debug)]
pub enum Reply {
    Produce(PartitionProduceResponse),
    Fetch(super::fetch::PartitionRead),
    ListOffsets(ListOffsetsPartitionResponse),
    /// Done, or why not.
    Admin(Result<(), super::KafkaError>),
}

pub struct Envelope {
    id: u64,
    from: u32,
    req: Request,
}

pub struct Answer {
    id: u64,
    reply: Reply,
}

/// One core's ends of the forwarding mesh, before they are connected.
pub struct ForwardMail {
    requests_out: Vec<Option<SharedSender<Envelope>>>,
    requests_in: Vec<SharedReceiver<Envelope>>,
    answers_out: Vec<Option<SharedSender<Answer>>>,
    answers_in: Vec<SharedReceiver<Answer>>,
}

/// The mesh over `shards` cores.
pub fn mesh(shards: u32) -> Vec<ForwardMail> {
    let n = shards as usize;
    let mut cores: Vec<ForwardMail> = (0..n)
        .map(|_| ForwardMail {
            requests_out: (0..n).map(|_| None).collect(),
            requests_in: Vec::new(),
            answers_out: (0..n).map(|_| None).collect(),
            answers_in: Vec::new(),
        })
        .collect();
    for a in 0..n {
        for b in 0..n {
            if a != b {
                let (tx, rx) = shared_channel::new_bounded(CHANNEL_CAPACITY);
                cores[a].requests_out[b] = Some(tx);
                cores[b].requests_in.push(rx);
                let (tx, rx) = shared_channel::new_bounded(CHANNEL_CAPACITY);
                cores[b].answers_out[a] = Some(tx);
                cores[a].answers_in.push(rx);
            }
        }
    }
    cores
}

/// This core's side: sends requests and matches answers to their callers.
pub struct Forwarder {
    shard: u32,
    requests: Vec<Option<ConnectedSender<Envelope>>>,
    pending: Rc<RefCell<HashMap<u64, LocalSender<Reply>>>>,
    next: Cell<u64>,
}

impl Forwarder {
    /// Sends `req` to core `to` and waits for its answer; `None` when that core has
    /// stopped.
    pub async fn call(&self, to: u32, req: Request) -> Option<Reply> {
        let tx = self.requests.get(to as usize)?.as_ref()?;
        let id = self.next.get();
        self.next.set(id + 1);
        let (reply_tx, reply_rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, reply_tx);
        let env = Envelope {
            id,
            from: self.shard,
            req,
        };
        if tx.send(env).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        reply_rx.recv().await
    }
}

/// Connects this core's ends and starts the tasks that serve other cores' requests
/// and deliver answers. A connect completes only when the other core connects its
/// end, so every core goes through the same steps in the same order: answer
/// receivers (in tasks), answer senders, request receivers (in tasks), request
/// senders.
pub async fn start(broker: Rc<Broker>, mail: ForwardMail) -> Forwarder {
    let pending: Rc<RefCell<HashMap<u64, LocalSender<Reply>>>> = Rc::default();
    for rx in mail.answers_in {
        let pending = pending.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(a) = rx.recv().await {
                if let Some(tx) = pending.borrow_mut().remove(&a.id) {
                    let _ = tx.try_send(a.reply);
                }
            }
        })
        .detach();
    }
    // Answers can go out before any request comes in.
    let mut answers = Vec::new();
    for tx in mail.answers_out {
        answers.push(match tx {
            Some(tx) => Some(Rc::new(tx.connect().await)),
            None => None,
        });
    }
    let answers = Rc::new(answers);
    for rx in mail.requests_in {
        let (broker, answers) = (broker.clone(), answers.clone());
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(env) = rx.recv().await {
                let (broker, answers) = (broker.clone(), answers.clone());
                glommio::spawn_local(async move {
                    let reply = serve(&broker, env.req).await;
                    if let Some(Some(tx)) = answers.get(env.from as usize) {
                        let _ = tx.send(Answer { id: env.id, reply }).await;
                    }
                })
                .detach();
            }
        })
        .detach();
    }
    let mut requests = Vec::new();
    for tx in mail.requests_out {
        requests.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    Forwarder {
        shard: broker.shard,
        requests,
        pending,
        next: Cell::new(0),
    }
}

/// Runs a forwarded part on this (the owning) core.
async fn serve(broker: &Rc<Broker>, req: Request) -> Reply {
    match req {
        Request::Produce {
            topic,
            index,
            records,
        } => Reply::Produce(super::produce::partition(broker, &topic, index, records).await),
        Request::Fetch {
            topic,
            index,
            offset,
            max_bytes,
        } => Reply::Fetch(
            super::fetch::read_partition(broker, &topic, index, offset, max_bytes).await,
        ),
        Request::ListOffsets {
            topic,
            index,
            timestamp,
        } => Reply::ListOffsets(
            super::list_offsets::partition(broker, &topic, index, timestamp).await,
        ),
        Request::CreateTopic { name, partitions } => {
            Reply::Admin(super::create_topics::coordinate(broker, &name, partitions).await)
        }
        Request::AddTopic { name, partitions } => {
            Reply::Admin(broker.add_topic(&name, partitions).await)
        }
        Request::DeleteTopic { name } => {
            Reply::Admin(super::delete_topics::coordinate(broker, &name).await)
        }
        Request::RemoveTopic { name } => Reply::Admin(broker.remove_topic(&name).await),
    }
}
