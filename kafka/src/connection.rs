//! A core's Kafka connections: the listener's accept loop (at most
//! `connections_max` at once), framing (a size, then a body of at most
//! `request_bytes_max`, taken from the core's request memory as it arrives, within
//! `request_timeout_ms`) and pipelining; `dispatch.rs` takes each request from
//! there to its handler.
//!
//! Produce requests on a connection are pipelined (up to `in_flight_requests_max`):
//! each gets its offsets as it is read, in order, and the answers leave in request
//! order once durable. Other requests are handled one at a time.
//!
//! Never: panics on what a client sends, reads a request body larger than
//! `request_bytes_max`, or answers out of order. A connection the server closes says
//! why ([`Closed`]): a peer that broke the protocol at WARN, a failed socket at INFO.

use crate::broker::Broker;
use crate::dispatch::{handle, raw_token, Answered, Closed, Handled};
use crate::handlers::sasl;
use crate::listener::{Client, Endpoint, ANONYMOUS};
use crate::stats::{Api, KafkaStats};
use crate::{bodies, budget};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

/// Accepts connections on every listener until the server stops.
pub async fn serve(
    broker: Rc<Broker>,
    listeners: Vec<(TcpListener, Rc<Endpoint>)>,
    stop: tidewater_io::wait::Stop,
) {
    // The accept loops run as tasks of their own and are cancelled at stop. (Racing
    // each accept against a polling stop check re-polled the pending accept every
    // tick, and every poll kept another waker of the task: after ~32k ticks, about
    // half an hour idle, glommio's waker count overflowed and the core panicked.)
    let timers = glommio::spawn_local(broker.groups.clone().run());
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(l, endpoint)| glommio::spawn_local(accept_loop(broker.clone(), l, endpoint)))
        .collect();
    stop.wait().await;
    for a in accepting {
        a.cancel().await;
    }
    timers.cancel().await;
}

async fn accept_loop(broker: Rc<Broker>, listener: TcpListener, endpoint: Rc<Endpoint>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = broker.shard, "accept failed: {e}");
                continue;
            }
        };
        count_placement(&broker.stats, &stream);
        if broker.connections.get() >= broker.limits.connections_max {
            tracing::warn!(
                shard = broker.shard,
                limit = broker.limits.connections_max,
                "connection refused: connections_max reached"
            );
            drop(stream);
            continue;
        }
        if !admitted_by_rate(&broker, &stream) {
            continue;
        }
        broker.connections.set(broker.connections.get() + 1);
        broker
            .stats
            .connections
            .set(broker.connections.get() as u64);
        let b = broker.clone();
        let endpoint = endpoint.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            let listener = endpoint.name.clone();
            match accepted(&b, stream, peer, endpoint).await {
                Ok(()) => {}
                Err(Closed::Refused(why)) => {
                    let violations = &b.stats.protocol_violations;
                    violations.set(violations.get() + 1);
                    let peer = peer.map(|a| a.to_string()).unwrap_or_default();
                    tracing::warn!(shard = b.shard, peer, listener, "connection closed: {why}");
                }
                Err(Closed::Failed(why)) => {
                    let peer = peer.map(|a| a.to_string()).unwrap_or_default();
                    tracing::info!(shard = b.shard, peer, listener, "connection closed: {why}")
                }
            }
            b.connections.set(b.connections.get() - 1);
            b.stats.connections.set(b.connections.get() as u64);
        })
        .detach();
    }
}

/// Counts an accepted connection, and whether the kernel received its packets on
/// another CPU than this core's: where its NIC queue's interrupt runs, with RSS
/// and `tidewater-tune irq`; in single-port mode the listeners are placed so it
/// does not (the binary's `placement`).
fn count_placement(stats: &KafkaStats, stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    stats
        .connections_accepted
        .set(stats.connections_accepted.get() + 1);
    let mut cpu: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `cpu` and `len` are live locals of the type and size the option writes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            std::ptr::addr_of_mut!(cpu).cast(),
            &mut len,
        )
    };
    // SAFETY: no arguments; it reads the calling thread's CPU.
    let here = unsafe { libc::sched_getcpu() };
    if rc == 0 && cpu >= 0 && here >= 0 && cpu != here {
        let off = &stats.connections_off_cpu;
        off.set(off.get() + 1);
    }
}

/// Whether a new connection's IP is within `connection_creation_rate_per_ip`;
/// one over it is counted and dropped (a line at most every 10 s).
fn admitted_by_rate(broker: &Broker, stream: &TcpStream) -> bool {
    if broker.limits.connection_creation_rate_per_ip == 0 {
        return true;
    }
    let Ok(peer) = stream.peer_addr() else {
        return true;
    };
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let admitted = broker.ip_rate.admit(peer.ip(), second);
    let stats = &broker.stats;
    stats
        .connection_rate_ips
        .set(broker.ip_rate.tracked() as u64);
    if admitted {
        return true;
    }
    let throttled = &stats.connections_throttled;
    throttled.set(throttled.get() + 1);
    let now = std::time::Instant::now();
    if let Some(more) = broker
        .rate_refusals
        .admit(now, crate::broker::APPEND_FAILURE_LOG_EVERY)
    {
        tracing::warn!(
            shard = broker.shard,
            peer = %peer,
            limit = broker.limits.connection_creation_rate_per_ip,
            "connection refused: its IP opens connections faster than connection_creation_rate_per_ip ({more} more since the last line)"
        );
    }
    false
}

/// An answer as it leaves the reader for the writer.
enum Outgoing {
    /// Computed already; `Err`: the connection closes after the answers before it.
    Ready(Answered),
    /// A produce on its way to the device. Detached: it runs to its end even when
    /// the client is gone, so that its producer's state learns the outcome.
    Later(glommio::task::JoinHandle<Answered>),
}

/// One request read and begun, in the order read. The permits and the count are
/// held until its answer is written (or dropped with the connection).
struct Begun {
    answer: Outgoing,
    _slot: glommio::sync::StaticPermit,
    _budget: budget::Budget,
    _counted: Counted,
}

/// One request in [`KafkaStats::requests_in_flight`], for as long as it lives.
struct Counted(Rc<KafkaStats>);

impl Counted {
    fn new(stats: &Rc<KafkaStats>) -> Counted {
        let n = &stats.requests_in_flight;
        n.set(n.get() + 1);
        Counted(stats.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let n = &self.0.requests_in_flight;
        n.set(n.get().saturating_sub(1));
    }
}

/// A connection accepted on `endpoint`: the TLS handshake first when the listener
/// has TLS (within `request_timeout_ms`), then its requests.
async fn accepted(
    broker: &Rc<Broker>,
    stream: TcpStream,
    peer: Option<std::net::SocketAddr>,
    endpoint: Rc<Endpoint>,
) -> Result<(), Closed> {
    stream
        .set_nodelay(true)
        .map_err(|e| Closed::Failed(e.to_string()))?;
    let host: Rc<str> = peer
        .map_or_else(String::new, |a| format!("/{}", a.ip()))
        .into();
    let peer_ip = peer.map(|a| a.ip());
    let Some(tls) = endpoint.tls_now() else {
        let client = Client::new(host, peer_ip, ANONYMOUS.into(), endpoint);
        return connection(broker, stream, &client).await;
    };
    let peer = peer.map(|a| a.to_string()).unwrap_or_default();
    let peer = peer.as_str();
    let timeout = Duration::from_millis(broker.limits.request_timeout_ms);
    let handshake = futures_rustls::TlsAcceptor::from(tls).accept(stream);
    let why = match within(timeout, handshake).await {
        Some(Ok(stream)) => {
            return tls_connection(broker, stream, Client::new(host, peer_ip, ANONYMOUS.into(), endpoint)).await
        }
        // Connected and closed before a byte: a port check, not a failed client.
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(shard = broker.shard, peer, "closed before a TLS hello");
            return Ok(());
        }
        Some(Err(e)) => format!(
            "TLS handshake failed: {e} (is the client using TLS, and does it trust this server's certificate?)"
        ),
        None => format!(
            "TLS handshake failed: none within {} ms (request_timeout_ms)",
            timeout.as_millis()
        ),
    };
    let failures = &broker.stats.tls_handshake_failures;
    failures.set(failures.get() + 1);
    // A scanner or a fleet with a bad certificate fails over and over: one line per
    // period, with the count it left out.
    let now = std::time::Instant::now();
    if let Some(more) = broker
        .tls_failures
        .admit(now, crate::broker::APPEND_FAILURE_LOG_EVERY)
    {
        let listener = &endpoint.name;
        tracing::warn!(shard = broker.shard, peer, listener, "connection closed: {why} ({more} more since the last line; tidewater_kafka_tls_handshake_failures_total counts them all)");
    }
    Ok(())
}

/// A connection whose TLS handshake completed: its principal, then its requests.
async fn tls_connection(
    broker: &Rc<Broker>,
    stream: futures_rustls::server::TlsStream<TcpStream>,
    mut client: Client,
) -> Result<(), Closed> {
    if let Some([leaf, ..]) = stream.get_ref().1.peer_certificates() {
        let principal = crate::listener::principal_of(leaf).ok_or_else(|| {
            Closed::Refused("the client certificate's subject cannot be read".into())
        })?;
        client.transport_principal = principal.into();
    }
    tracing::debug!(shard = broker.shard, principal = %client.transport_principal, "TLS connection up");
    connection(broker, stream, &client).await
}

/// Serves one connection: length-prefixed requests, answered in order.
///
/// Requests are pipelined: the reader begins each request as it arrives (a produce
/// gets its offsets, in request order, and waits for durability in a task of its
/// own) and the writer sends the answers in request order. At most
/// `in_flight_requests_max` requests are between the two. Any other request waits
/// until every earlier one is answered and is answered before the next is read, as
/// Kafka handles requests: a Metadata after a CreateTopics sees the topic.
async fn connection<S>(broker: &Rc<Broker>, stream: S, client: &Client) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = futures_lite::io::split(stream);
    // A request holds a slot until its answer is written, so the channel never
    // holds more than the slots.
    let slots_max = broker.limits.in_flight_requests_max;
    let (to_writer, answers) = glommio::channels::local_channel::new_bounded(slots_max);
    let slots = Rc::new(glommio::sync::Semaphore::new(slots_max as u64));
    let timeout = Duration::from_millis(broker.limits.request_timeout_ms);
    let writing = glommio::spawn_local(write_answers(writer, answers, slots.clone(), timeout));
    let read = read_requests(broker, reader, to_writer, slots, client).await;
    // The reader is done (the sender dropped): the writer sends what is begun. When
    // the writer failed first, its reason is the one to log.
    let written = writing.await;
    written.and(read)
}

async fn read_requests<S: AsyncRead + Unpin>(
    broker: &Rc<Broker>,
    mut stream: S,
    to_writer: glommio::channels::local_channel::LocalSender<Begun>,
    slots: Rc<glommio::sync::Semaphore>,
    client: &Client,
) -> Result<(), Closed> {
    let slots_max = broker.limits.in_flight_requests_max as u64;
    let mut len_buf = [0u8; 4];
    loop {
        let slot = slots
            .acquire_static_permit(1)
            .await
            .map_err(|e| Closed::Failed(format!("request slots closed: {e}")))?;
        let idle = Duration::from_millis(broker.limits.connections_max_idle_ms);
        match within(idle, stream.read_exact(&mut len_buf)).await {
            Some(Ok(())) => {}
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Some(Err(e)) => return Err(Closed::Failed(format!("read failed: {e}"))),
            None => {
                return Err(Closed::Failed(format!(
                    "no request for {} ms (connections_max_idle_ms)",
                    idle.as_millis()
                )))
            }
        }
        let len = i32::from_be_bytes(len_buf);
        // After a v0 SaslHandshake the next frame is a bare SASL token; before a
        // client authenticated on a SASL listener, no request needs more than a
        // token's size (as Kafka's sasl.server.max.receive.size).
        let raw = client.session.borrow().expects_raw_token();
        let unauthenticated =
            client.endpoint.sasl.is_some() && client.session.borrow().authenticated.is_none();
        let min = if raw { 1 } else { 8 };
        let max = if raw || unauthenticated {
            broker.limits.request_bytes_max.min(sasl::TOKEN_BYTES_MAX)
        } else {
            broker.limits.request_bytes_max
        };
        if len < min || len as usize > max {
            return Err(Closed::Refused(format!(
                "request size {len} outside {min}..={max} (request_bytes_max{})",
                if max < broker.limits.request_bytes_max {
                    ", or the limit before SASL authentication"
                } else {
                    ""
                }
            )));
        }
        let len = len as usize;
        let mut budget = budget::Budget::new(broker.memory.clone());
        let buf = read_body(broker, &mut stream, len, &mut budget).await?;
        let body = bodies::freeze(buf, len);
        broker
            .stats
            .request_buffers_pooled_bytes
            .set(bodies::pooled_bytes() as u64);
        let counted = Counted::new(&broker.stats);
        let started = std::time::Instant::now();
        let api = if raw { Api::Other } else { Api::of(&body) };
        // Anything but a produce waits for every earlier request's answer.
        let all = if api == Api::Produce {
            None
        } else {
            let all = slots.acquire_permit(slots_max - 1).await;
            Some(all.map_err(|e| Closed::Failed(format!("request slots closed: {e}")))?)
        };
        let handled = if raw {
            raw_token(broker, client, &body).await
        } else {
            handle(broker, body, &mut budget, client).await
        };
        let mut last = false;
        let answer = match handled {
            Ok(Handled::Now(answer)) => {
                broker.stats.request(api, started.elapsed().as_secs_f64());
                Outgoing::Ready(Ok(answer))
            }
            Ok(Handled::Last(answer)) => {
                broker.stats.request(api, started.elapsed().as_secs_f64());
                last = true;
                Outgoing::Ready(Ok(Some(answer)))
            }
            Ok(Handled::Later(later)) => {
                let b = broker.clone();
                let task = glommio::spawn_local(async move {
                    let answer = later.await;
                    b.stats.request(api, started.elapsed().as_secs_f64());
                    answer
                });
                Outgoing::Later(task.detach())
            }
            Err(why) => Outgoing::Ready(Err(why)),
        };
        drop(all);
        let closing = matches!(answer, Outgoing::Ready(Err(_)));
        let begun = Begun {
            answer,
            _slot: slot,
            _budget: budget,
            _counted: counted,
        };
        if to_writer.send(begun).await.is_err() {
            // The writer stopped (the client went away); it says why.
            return Ok(());
        }
        if closing || last {
            // The writer sends what is begun, this answer last, and the
            // connection closes.
            return Ok(());
        }
        // A quota throttled this client: nothing more is read from it for that
        // long (KIP-219's muted channel); its answers still go out.
        let mute = client.mute.take();
        if !mute.is_zero() {
            glommio::timer::sleep(mute).await;
        }
    }
}

/// Writes the answers in request order; stops at the first request that closes the
/// connection, or when the client cannot be written to. Then it closes `slots`, so
/// that a reader waiting for one stops too (the answers it holds are dropped).
async fn write_answers<S: AsyncWrite + Unpin>(
    mut stream: S,
    answers: glommio::channels::local_channel::LocalReceiver<Begun>,
    slots: Rc<glommio::sync::Semaphore>,
    timeout: Duration,
) -> Result<(), Closed> {
    let written = async {
        while let Some(begun) = answers.recv().await {
            let answer = match begun.answer {
                Outgoing::Ready(a) => a,
                Outgoing::Later(task) => task
                    .await
                    .unwrap_or_else(|| Err(Closed::Failed("a produce task was cancelled".into()))),
            };
            if let Some(response) = answer? {
                // The flush matters on TLS: write_all returns once the TLS stream
                // took the plaintext, and what the socket did not take yet waits in
                // it until the next write or a flush. On a plain socket it is free.
                let sent = async {
                    stream.write_all(&response).await?;
                    stream.flush().await
                };
                within(timeout, sent)
                    .await
                    .ok_or_else(|| {
                        Closed::Failed(format!(
                            "the client took no answer for {} ms (request_timeout_ms)",
                            timeout.as_millis()
                        ))
                    })?
                    .map_err(|e| Closed::Failed(format!("write failed: {e}")))?;
            }
        }
        Ok(())
    }
    .await;
    if written.is_err() {
        slots.close();
    }
    written
}

/// Reads a request body of `len` bytes as it arrives, each part taken from the
/// request memory before it is read; the whole body must arrive within
/// `request_timeout_ms`. The buffer's first `len` bytes are the body.
async fn read_body<S: AsyncRead + Unpin>(
    broker: &Broker,
    stream: &mut S,
    len: usize,
    budget: &mut budget::Budget,
) -> Result<Vec<u8>, Closed> {
    let timeout = Duration::from_millis(broker.limits.request_timeout_ms);
    // One deadline for the whole body (one timer, not two per part).
    let read = within(timeout, async {
        let mut buf = bodies::take(0);
        // Address space only: pages are touched (and counted) as parts arrive.
        buf.reserve_exact(len.saturating_sub(buf.len()));
        let mut got = 0;
        while got < len {
            let part = (len - got).min(budget::BODY_CHUNK_BYTES);
            budget.grow(part).await.map_err(Closed::Failed)?;
            if buf.len() < got + part {
                buf.resize(got + part, 0);
            }
            stream
                .read_exact(&mut buf[got..got + part])
                .await
                .map_err(|e| Closed::Failed(format!("read failed: {e}")))?;
            got += part;
        }
        Ok(buf)
    });
    read.await.unwrap_or_else(|| {
        Err(Closed::Refused(format!(
            "a request of {len} bytes did not arrive within {} ms (request_timeout_ms)",
            timeout.as_millis()
        )))
    })
}

/// `f`'s output, or `None` when `limit` passes first.
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
