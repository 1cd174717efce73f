//! The schema registry's listener and storage, on core 0.
//!
//! Owns: the HTTP/1.1 listener (`schema_registry_addr`) speaking Confluent's REST
//! API (`tidewater_registry::api` decides every answer), and the registry's records
//! in partition 0 of the internal topic `_schemas` of core 0's log. At start core 0
//! replays them (before any core's job runs); a change is appended, made durable,
//! applied to the [`Shared`] state every core reads, and only then answered, so an
//! id a client was given survives kill -9 and is known to every core's jobs.
//!
//! Changes are made one at a time (a write permit), so two registrations never
//! take the same id. Reads never wait for a write.
//!
//! With `schema_registry_tls_*` it speaks HTTPS only; with a client CA, every
//! client must show a certificate that CA signed.
//!
//! Never: answers a change before it is durable, or holds the state's lock across
//! an await.

use anyhow::{Context, Result};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tidewater_io::wait::Stop;
use tidewater_io::{PartitionLimits, ShardLog};
use tidewater_registry::api::{self, Answer, Request};
use tidewater_registry::{Record, Registry, Shared, SCHEMAS_TOPIC};

/// Connections served at once; more are closed at accept.
const CONNECTIONS_MAX: usize = 256;
/// Largest request head (request line and headers).
const HEAD_BYTES_MAX: usize = 64 << 10;
const HEADERS_MAX: usize = 64;
/// A request body over the limit is read (up to this) and discarded, so the client
/// reads the 413 instead of a reset connection; larger ones close the connection.
const DISCARD_BYTES_MAX: usize = 64 << 20;
/// A connection idle this long between requests closes.
const IDLE: Duration = Duration::from_secs(60);
/// A request must arrive whole this long after its first byte.
const REQUEST_TIME: Duration = Duration::from_secs(30);

/// The partition that keeps the records.
pub fn schemas_partition() -> String {
    tidewater_shards::partition_name(SCHEMAS_TOPIC, 0)
}

/// Its limits: never cut by retention (every record is live state).
pub fn schemas_limits(cfg: &tidewater_io::LogConfig) -> (String, PartitionLimits) {
    (schemas_partition(), PartitionLimits::without_retention(cfg))
}

/// What /metrics shows of the registry (series handles, cheap to clone).
#[derive(Clone, Default, Debug)]
pub struct RegistryStats {
    requests: Counter,
    /// Answers with a 4xx or 5xx status.
    errors: Counter,
    connections: Gauge,
    schemas: Gauge,
    subjects: Gauge,
    /// Records made durable since start.
    records: Counter,
    /// Connections whose TLS handshake failed or timed out.
    tls_handshake_failures: Counter,
    /// Per-core schema-id caches of the jobs: entries held, and misses.
    pub job_cache_entries: Gauge,
    pub job_cache_misses: Counter,
}

impl RegistryStats {
    /// Registers every series under `schema_registry_*`.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        let r = r.sub_registry_with_prefix("schema_registry");
        r.register("requests", "REST requests answered", self.requests.clone());
        r.register(
            "errors",
            "REST requests answered with a 4xx or 5xx status",
            self.errors.clone(),
        );
        r.register(
            "connections",
            "Open REST connections (at most 256)",
            self.connections.clone(),
        );
        r.register(
            "schemas",
            "Distinct schemas (ids) kept",
            self.schemas.clone(),
        );
        r.register(
            "subjects",
            "Subjects with a live version",
            self.subjects.clone(),
        );
        r.register(
            "records",
            "Changes made durable in _schemas-0 since start",
            self.records.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "REST connections whose TLS handshake failed or timed out: plain HTTP, no or an untrusted or expired client certificate",
            self.tls_handshake_failures.clone(),
        );
        r.register(
            "job_cache_entries",
            "Schema ids resolved to a job's reader schema, over every job and core (at most 1024 per job and core)",
            self.job_cache_entries.clone(),
        );
        r.register(
            "job_cache_misses",
            "Schema ids a job looked up in the registry (first sight on a core)",
            self.job_cache_misses.clone(),
        );
    }

    fn count(&self, r: &Registry) {
        self.schemas.set(r.schema_count() as i64);
        self.subjects.set(r.subjects(false).len() as i64);
    }
}

/// Replays core 0's `_schemas-0` into a registry. A batch that cannot be read is
/// skipped with an error naming its offset, and the registry refuses changes from
/// then on (it might give again an id or version the lost record gave): reads and
/// jobs go on.
pub async fn load(log: &ShardLog) -> Result<Registry> {
    let mut reg = Registry::default();
    let Some(id) = log.partition_id(&schemas_partition()) else {
        return Ok(reg);
    };
    let (mut next, end) = (log.log_start_offset(id)?, log.high_watermark(id)?);
    let mut records = 0u64;
    while next < end {
        let entries = log.read(id, next, 1 << 20).await?;
        let Some(last) = entries.last() else { break };
        next = last.end_offset();
        for e in entries {
            match serde_json::from_slice::<Vec<Record>>(&e.payload) {
                Ok(batch) => {
                    records += batch.len() as u64;
                    batch.into_iter().for_each(|r| reg.apply(r));
                }
                Err(why) => {
                    tracing::error!(
                        partition = %schemas_partition(),
                        offset = e.base_offset,
                        "a schema registry record cannot be read: the registry is read-only until it is repaired: {why}"
                    );
                    reg.mark_damaged(format!(
                        "its record at offset {} of {} cannot be read",
                        e.base_offset,
                        schemas_partition()
                    ));
                }
            }
        }
    }
    tracing::info!(
        records,
        schemas = reg.schema_count(),
        subjects = reg.subjects(false).len(),
        "schema registry loaded"
    );
    Ok(reg)
}

/// Everything a connection needs.
struct Service {
    log: Rc<ShardLog>,
    shared: Shared,
    stats: RegistryStats,
    /// One change at a time.
    writes: glommio::sync::Semaphore,
    connections: Cell<usize>,
    /// Failed TLS handshakes are logged at most every 10 s.
    tls_failures: tidewater_kafka::LogThrottle,
}

/// A registry connection: plain, or TLS over the socket.
enum Conn {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The socket, for its timeouts.
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl futures_lite::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_close(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// `f`, or TimedOut once `wait` passes: a deadline over the whole of it (a TLS
/// read makes many socket reads, and a socket timeout only bounds each wait).
async fn within<T>(
    wait: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let timeout = async {
        glommio::timer::sleep(wait).await;
        Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
    };
    futures_lite::future::or(f, timeout).await
}

/// The TLS handshake of a new connection when the listener has TLS, within
/// `REQUEST_TIME`; None when it did not happen: a client that closed before it
/// finished (a port check, at debug level), or one that failed (counted, and
/// logged at most every 10 s).
async fn accepted(
    s: &Service,
    stream: TcpStream,
    tls: Option<&crate::listeners::Tls>,
    peer: &str,
) -> Option<Conn> {
    let Some(tls) = tls else {
        return Some(Conn::Plain(stream));
    };
    let handshake = futures_rustls::TlsAcceptor::from(tls.now()).accept(stream);
    let e = match within(REQUEST_TIME, handshake).await {
        Ok(s) => return Some(Conn::Tls(Box::new(s))),
        Err(e) => e,
    };
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        tracing::debug!(peer, "schema registry: closed during the TLS handshake");
        return None;
    }
    s.stats.tls_handshake_failures.inc();
    let now = Instant::now();
    if let Some(more) = s.tls_failures.admit(now, Duration::from_secs(10)) {
        tracing::info!(peer, "schema registry: connection closed: TLS handshake failed: {e} ({more} more since the last line)");
    }
    None
}

/// Serves the REST API on `listener` until the stop; over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    log: Rc<ShardLog>,
    shared: Shared,
    stats: RegistryStats,
    stop: Stop,
    tls: Option<crate::listeners::Tls>,
) {
    stats.count(&shared.read());
    let service = Rc::new(Service {
        log,
        shared,
        stats,
        writes: glommio::sync::Semaphore::new(1),
        connections: Cell::new(0),
        tls_failures: Default::default(),
    });
    let accepting = glommio::spawn_local(accept_loop(service, listener, tls));
    stop.wait().await;
    accepting.cancel().await;
}

async fn accept_loop(
    service: Rc<Service>,
    listener: TcpListener,
    tls: Option<crate::listeners::Tls>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("schema registry: accept failed: {e}");
                continue;
            }
        };
        if service.connections.get() >= CONNECTIONS_MAX {
            tracing::warn!(
                limit = CONNECTIONS_MAX,
                "schema registry: connection refused: too many connections"
            );
            continue;
        }
        let s = service.clone();
        let tls = tls.clone();
        s.connections.set(s.connections.get() + 1);
        s.stats.connections.set(s.connections.get() as i64);
        glommio::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let served = match accepted(&s, stream, tls.as_ref(), &peer).await {
                Some(conn) => connection(&s, conn).await,
                None => Ok(()),
            };
            if let Err(why) = served {
                tracing::info!(peer, "schema registry: connection closed: {why}");
            }
            s.connections.set(s.connections.get() - 1);
            s.stats.connections.set(s.connections.get() as i64);
        })
        .detach();
    }
}

/// One request's head, owned.
struct Head {
    method: String,
    target: String,
    body_len: usize,
    close: bool,
    /// The client waits for `100 Continue` before it sends the body.
    expect_continue: bool,
}

/// Parses a complete head at the start of `buf`: (its length, the head), None
/// when more bytes are needed, or the answer that ends the connection.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, Answer> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= HEAD_BYTES_MAX => {
            return Err(Answer::http(431, "the request head is over 64 KiB"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Answer::http(400, &format!("not an HTTP request: {e}"))),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some() {
        return Err(Answer::http(
            411,
            "chunked bodies are not accepted: send Content-Length",
        ));
    }
    let body_len = match header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Answer::http(400, "Content-Length is not a number"))?,
    };
    let close = header("connection").is_some_and(|v| v == "close") || req.version == Some(0);
    let expect_continue = header("expect").is_some_and(|v| v == "100-continue");
    Ok(Some((
        len,
        Head {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("/").to_string(),
            body_len,
            close,
            expect_continue,
        },
    )))
}

/// Serves one connection's requests, one after the other (keep-alive).
async fn connection(s: &Service, mut stream: Conn) -> Result<(), String> {
    stream
        .tcp()
        .set_write_timeout(Some(IDLE))
        .map_err(|e| e.to_string())?;
    let body_max = s.log.batch_bytes_max() / 2;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // The clock of a request starts with its first byte (already read, when
        // pipelined).
        let mut deadline = (!buf.is_empty()).then(|| Instant::now() + REQUEST_TIME);
        let (head_len, head) = loop {
            match parse_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(answer) => {
                    send(s, &mut stream, &answer, true).await?;
                    return Err("a malformed request".into());
                }
            }
            if !read_more(&mut stream, &mut buf, deadline).await? {
                return Ok(());
            }
            deadline.get_or_insert_with(|| Instant::now() + REQUEST_TIME);
        };
        let end = head_len.saturating_add(head.body_len);
        if head.body_len > body_max {
            let answer = Answer::http(
                413,
                &format!(
                    "the request body is {} bytes; this registry takes at most {body_max} (half of batch_bytes_max)",
                    head.body_len
                ),
            );
            // A client waiting for 100 Continue sends nothing more: nothing to drain.
            let drained = !head.expect_continue
                && head.body_len <= DISCARD_BYTES_MAX
                && discard(&mut stream, &mut buf, end, deadline).await?;
            send(s, &mut stream, &answer, !drained).await?;
            if !drained {
                return Err(format!("a {} byte request body", head.body_len));
            }
            continue;
        }
        if head.expect_continue && buf.len() < end {
            let sent = async {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                stream.flush().await
            };
            sent.await.map_err(|e| e.to_string())?;
        }
        while buf.len() < end {
            if !read_more(&mut stream, &mut buf, deadline).await? {
                return Err("the client closed mid-request".into());
            }
        }
        let (path, query) = head
            .target
            .split_once('?')
            .unwrap_or((head.target.as_str(), ""));
        let req = Request {
            method: &head.method,
            path,
            query,
            body: &buf[head_len..end],
        };
        let answer = answer(s, &req).await;
        send(s, &mut stream, &answer, head.close).await?;
        if head.close {
            return Ok(());
        }
        buf.drain(..end);
    }
}

/// How long the next read may wait: until the request's deadline, or (between
/// requests) the idle limit.
fn read_wait(deadline: Option<Instant>) -> Result<Duration, String> {
    let wait = match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => IDLE,
    };
    if wait.is_zero() {
        return Err(late());
    }
    Ok(wait)
}

fn late() -> String {
    format!(
        "the request did not arrive whole within {} s",
        REQUEST_TIME.as_secs()
    )
}

/// A read within `wait`; a timeout says which limit passed.
async fn read_within(
    stream: &mut Conn,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, String> {
    let wait = read_wait(deadline)?;
    match within(wait, stream.read(buf)).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut && deadline.is_some() => Err(late()),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err(format!("no request for {} s", IDLE.as_secs()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Reads what the client sent next; false at its end.
async fn read_more(
    stream: &mut Conn,
    buf: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<bool, String> {
    let mut chunk = [0u8; 16 << 10];
    let n = read_within(stream, &mut chunk, deadline).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Reads and drops the request up to `end` (what follows it stays in `buf`);
/// false if the client closed first.
async fn discard(
    stream: &mut Conn,
    buf: &mut Vec<u8>,
    end: usize,
    deadline: Option<Instant>,
) -> Result<bool, String> {
    if buf.len() >= end {
        buf.drain(..end);
        return Ok(true);
    }
    let mut left = end - buf.len();
    buf.clear();
    let mut chunk = vec![0u8; 64 << 10];
    while left > 0 {
        let want = left.min(chunk.len());
        let n = read_within(stream, &mut chunk[..want], deadline).await?;
        if n == 0 {
            return Ok(false);
        }
        left -= n;
    }
    Ok(true)
}

async fn send(s: &Service, stream: &mut Conn, a: &Answer, close: bool) -> Result<(), String> {
    s.stats.requests.inc();
    if a.status >= 400 {
        s.stats.errors.inc();
    }
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        a.status,
        reason(a.status),
        api::CONTENT_TYPE,
        a.body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    // One deadline over the whole answer, as over a request.
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(a.body.as_bytes()).await?;
        stream.flush().await
    };
    within(IDLE, sent).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => {
            format!("the client took no answer for {} s", IDLE.as_secs())
        }
        _ => e.to_string(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// The answer to one request; a change is durable and applied before it returns.
async fn answer(s: &Service, req: &Request<'_>) -> Answer {
    if req.method == "GET" {
        return api::handle(&s.shared.read(), req);
    }
    let Ok(_permit) = s.writes.acquire_permit(1).await else {
        return Answer::http(500, "the registry is stopping");
    };
    let mut a = api::handle(&s.shared.read(), req);
    if a.records.is_empty() {
        return a;
    }
    let records = std::mem::take(&mut a.records);
    if let Err(e) = store(s, &records).await {
        tracing::error!("schema registry: a change could not be stored: {e:#}");
        return Answer::error(&tidewater_registry::RegistryError::new(
            500,
            50001,
            format!("Error in the backend data store: {e:#}"),
        ));
    }
    s.stats.records.inc_by(records.len() as u64);
    s.shared.apply(records);
    s.stats.count(&s.shared.read());
    a
}

/// Appends `records` to `_schemas-0` (made on first use) and waits until durable.
async fn store(s: &Service, records: &[Record]) -> Result<()> {
    let name = schemas_partition();
    let id = match s.log.partition_id(&name) {
        Some(id) => id,
        None => {
            let id = s.log.create_partition(&name)?;
            let limits = PartitionLimits::without_retention(s.log.config());
            s.log.set_limits(id, Some(limits));
            id
        }
    };
    let bytes = serde_json::to_vec(records).context("cannot encode the records")?;
    s.log
        .append(
            id,
            bytes,
            records.len() as u32,
            tidewater_kafka::groups::now_ms(),
        )
        .await
        .with_context(|| format!("cannot append to {name}"))?;
    Ok(())
}
