//! The smallest HTTP/1.1 client ClickHouse needs: POST a body, read the status and
//! the body back, keep the connection for the next request. Runs on the core's own
//! reactor (glommio sockets), so a sink never blocks the core's thread.
//!
//! Bounded: response headers up to 64 KiB, bodies up to 16 MiB; anything else is an
//! error and the connection is dropped. Never retries by itself: the caller decides.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::time::Duration;

const HEADERS_MAX: usize = 64 << 10;
const BODY_MAX: usize = 16 << 20;

/// `http://host:port` split for connecting and for the Host header.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host_port: String,
    pub auth: Option<String>,
}

impl Endpoint {
    pub fn parse(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// is supported"))?;
        let host_port = rest.trim_end_matches('/').to_string();
        if host_port.is_empty() || host_port.contains('/') {
            return Err(format!("`{url}`: expected http://host:port"));
        }
        let host_port = if host_port.contains(':') {
            host_port
        } else {
            format!("{host_port}:80")
        };
        let auth = user.map(|u| {
            format!(
                "X-ClickHouse-User: {u}\r\nX-ClickHouse-Key: {}\r\n",
                password.unwrap_or("")
            )
        });
        Ok(Endpoint { host_port, auth })
    }
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection, opened on first use and after any error.
pub struct Client {
    endpoint: Endpoint,
    conn: Option<TcpStream>,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            conn: None,
            timeout,
        }
    }

    /// POSTs `body` to `path_and_query`. Transport failures are `Err`; HTTP errors
    /// come back as a response with their status.
    pub async fn post(&mut self, path_and_query: &str, body: &[u8]) -> Result<Response, String> {
        let res = glommio::timer::timeout(self.timeout, async {
            self.exchange(path_and_query, body)
                .await
                .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e)))
        })
        .await;
        match res {
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                Err(match e {
                    glommio::GlommioError::TimedOut(d) => format!("no answer within {d:?}"),
                    other => other.to_string(),
                })
            }
        }
    }

    async fn exchange(&mut self, path_and_query: &str, body: &[u8]) -> Result<Response, String> {
        // A kept connection may have been closed by the server: try once more fresh.
        let reused = self.conn.is_some();
        match self.exchange_once(path_and_query, body).await {
            Err(_) if reused => {
                self.conn = None;
                self.exchange_once(path_and_query, body).await
            }
            other => other,
        }
    }

    async fn exchange_once(
        &mut self,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Response, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.endpoint.host_port.as_str())
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint.host_port))?;
            let _ = s.set_nodelay(true);
            self.conn = Some(s);
        }
        let conn = self.conn.as_mut().expect("connected");
        let head = format!(
            "POST {path_and_query} HTTP/1.1\r\nHost: {}\r\n{}Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            self.endpoint.host_port,
            self.endpoint.auth.as_deref().unwrap_or(""),
            body.len()
        );
        let out = async {
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(body).await?;
            conn.flush().await
        };
        if let Err(e) = out.await {
            self.conn = None;
            return Err(format!("cannot send to {}: {e}", self.endpoint.host_port));
        }
        match read_response(conn).await {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(format!("bad answer from {}: {e}", self.endpoint.host_port))
            }
        }
    }
}

async fn read_response(conn: &mut TcpStream) -> Result<(Response, bool), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > HEADERS_MAX {
            return Err("response headers too large".into());
        }
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| "non-UTF-8 headers")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = true;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !v.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut rest = buf.split_off(header_end);
    let body = if chunked {
        read_chunked(conn, rest).await?
    } else if let Some(len) = length {
        if len > BODY_MAX {
            return Err(format!("response body of {len} bytes"));
        }
        while rest.len() < len {
            let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed inside the body".into());
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        keep = false;
        loop {
            let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break rest;
            }
            rest.extend_from_slice(&chunk[..n]);
            if rest.len() > BODY_MAX {
                return Err("response body too large".into());
            }
        }
    };
    Ok((Response { status, body }, keep))
}

async fn read_chunked(conn: &mut TcpStream, mut buf: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut at = 0;
    loop {
        // Need a size line.
        let line_end = loop {
            if let Some(p) = find(&buf[at..], b"\r\n") {
                break at + p;
            }
            let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed inside a chunk".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        let data = line_end + 2;
        while buf.len() < data + size + 2 {
            let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed inside a chunk".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&buf[data..data + size]);
        if body.len() > BODY_MAX {
            return Err("response body too large".into());
        }
        at = data + size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Percent-encodes a query string value.
pub fn encode_query(q: &str) -> String {
    let mut out = String::with_capacity(q.len() * 3);
    for b in q.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
