//! The way between the cores' front ends: SPSC mailboxes (glommio shared channels),
//! one request and one answer channel per ordered pair of cores, each bounded by
//! `CHANNEL_CAPACITY`. [`Forwarder::call`] sends a request to a core and waits for its
//! answer; every core runs what it receives with the function it connected with.
//!
//! Transport only: it carries any request and answer type and knows nothing of
//! Kafka, partitions or topics (`remote.rs` says what crosses, `owner.rs` runs it).
//!
//! Never blocks a core on another: the tasks that receive requests and answers never
//! wait on anything but their channel, so two cores forwarding to each other cannot
//! deadlock.

use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

/// Requests or answers a channel holds before the sender waits.
const CHANNEL_CAPACITY: usize = 256;

/// A request on its way, with what its answer is matched by.
pub struct Envelope<Q> {
    id: u64,
    from: u32,
    req: Q,
}

/// An answer on its way back.
pub struct Answer<A> {
    id: u64,
    reply: A,
}

/// One core's ends of the mesh, before they are connected.
pub struct ForwardMail<Q: Send, A: Send> {
    requests_out: Vec<Option<SharedSender<Envelope<Q>>>>,
    requests_in: Vec<SharedReceiver<Envelope<Q>>>,
    answers_out: Vec<Option<SharedSender<Answer<A>>>>,
    answers_in: Vec<SharedReceiver<Answer<A>>>,
}

/// The mesh over `shards` cores: element `i` is core `i`'s ends.
pub fn mesh<Q: Send, A: Send>(shards: u32) -> Vec<ForwardMail<Q, A>> {
    let n = shards as usize;
    let mut cores: Vec<ForwardMail<Q, A>> = (0..n)
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

/// Answers awaited on this core, by request id.
type Pending<A> = Rc<RefCell<HashMap<u64, LocalSender<A>>>>;

/// The connected answer channel to each core (`None`: this one).
type AnswerSenders<A> = Rc<Vec<Option<Rc<ConnectedSender<Answer<A>>>>>>;

/// This core's side: sends requests and matches answers to their callers.
pub struct Forwarder<Q: Send, A: Send> {
    shard: u32,
    requests: Vec<Option<ConnectedSender<Envelope<Q>>>>,
    pending: Pending<A>,
    next: Cell<u64>,
}

impl<Q: Send, A: Send> Forwarder<Q, A> {
    /// Sends `req` to core `to` and waits for its answer; `None` when that core has
    /// stopped (or is this one: a core never asks itself).
    pub async fn call(&self, to: u32, req: Q) -> Option<A> {
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

/// Connects core `shard`'s ends and starts the tasks that run other cores' requests
/// with `serve` (each in a task of its own) and deliver answers. A connect completes
/// only when the other core connects its end, so every core goes through the same
/// steps in the same order: answer receivers (in tasks), answer senders, request
/// receivers (in tasks), request senders.
pub async fn start<Q, A, F, Fut>(shard: u32, mail: ForwardMail<Q, A>, serve: F) -> Forwarder<Q, A>
where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Q) -> Fut + 'static,
    Fut: Future<Output = A> + 'static,
{
    let pending: Pending<A> = Rc::default();
    for rx in mail.answers_in {
        glommio::spawn_local(deliver_answers(rx, pending.clone())).detach();
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
    let serve = Rc::new(serve);
    for rx in mail.requests_in {
        glommio::spawn_local(serve_requests(rx, answers.clone(), serve.clone())).detach();
    }
    let mut requests = Vec::new();
    for tx in mail.requests_out {
        requests.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    Forwarder {
        shard,
        requests,
        pending,
        next: Cell::new(0),
    }
}

/// Hands each answer from one core to the call waiting for it.
async fn deliver_answers<A: Send + 'static>(rx: SharedReceiver<Answer<A>>, pending: Pending<A>) {
    let rx = rx.connect().await;
    while let Some(a) = rx.recv().await {
        if let Some(tx) = pending.borrow_mut().remove(&a.id) {
            let _ = tx.try_send(a.reply);
        }
    }
}

/// Runs each request from one core in a task of its own and sends its answer back.
async fn serve_requests<Q, A, F, Fut>(
    rx: SharedReceiver<Envelope<Q>>,
    answers: AnswerSenders<A>,
    serve: Rc<F>,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Q) -> Fut + 'static,
    Fut: Future<Output = A> + 'static,
{
    let rx = rx.connect().await;
    while let Some(env) = rx.recv().await {
        let answers = answers.clone();
        let reply = serve(env.req);
        glommio::spawn_local(async move {
            let reply = reply.await;
            if let Some(Some(tx)) = answers.get(env.from as usize) {
                let _ = tx.send(Answer { id: env.id, reply }).await;
            }
        })
        .detach();
    }
}
