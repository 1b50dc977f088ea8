//! The proxy's fast path: the common exchange (an HTTP/1.1 request in origin form with no
//! body or a `Content-Length` body small enough to buffer, no `Expect`, `Upgrade` or
//! transfer coding) forwarded on the client connection's own task, with the heads parsed
//! and written at the byte level ([`super::h1`]) and the node's keep-alive connections
//! in a plain per-thread pool: no header maps, no connection tasks, no channels between
//! them. Anything else (and anything after it on the same connection) goes to hyper
//! ([`Forwarder::handle`]), with the bytes already read handed over ([`Rewind`]).
//!
//! The same rules as hyper's path: the node is the [`Upstream`]'s choice, excluding the
//! nodes already tried; every attempt that reached a node is reported (latency to the
//! response head, ok = answered and not 5xx); an idempotent request is sent to another
//! node when its node fails before answering, and when it answers `503` while the retry
//! budget allows (a `503` with a body of up to 64 KiB is kept, and is the answer if no
//! other node answers); the total deadline covers reading the body, the answer's head
//! and its body. One difference, since the body is buffered here: a request that could
//! not be sent at all (no connection to its node) goes to another node whatever its
//! method. A kept-alive node connection that turns out closed before answering is
//! replaced by a new one for an idempotent request. A client that closes or resets its
//! connection while its request is forwarded cancels it, as hyper's path does.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::forward::{DISCARD_BYTES, DISCARD_WITHIN, Failure, Forwarder, error_json};
use super::h1::{self, ChunkedEnd, Framing, RequestHead, RequestParse, ResponseHead};
use super::headers::Peer;
use super::{Hint, Unavailable, Upstream};

/// Time for a request head to arrive once its first byte has.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per node address and proxy thread.
const MAX_IDLE_PER_NODE: usize = 256;
/// Bytes of pipelined requests read from a client while its current request is
/// forwarded; past them its connection is not watched for a close until the answer.
const READ_AHEAD: usize = 64 * 1024;

/// A client connection's bytes already read, then the connection: what hyper serves when
/// the fast path hands a connection over.
#[derive(Debug)]
pub struct Rewind {
    pre: Bytes,
    inner: TcpStream,
}

impl Rewind {
    /// `pre`, then whatever `inner` brings.
    pub fn new(pre: Bytes, inner: TcpStream) -> Self {
        Rewind { pre, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection to a node, with the bytes read from it and not yet used.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// A node's idle connections, each with the time it went idle; the most recent last.
type Idle = Vec<(Conn, Instant)>;

/// A proxy thread's idle keep-alive connections to the nodes, by node address.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<HashMap<Box<str>, Idle>>,
    timeout: Duration,
}

impl Pool {
    /// An empty pool whose connections are closed after `timeout` idle.
    pub fn new(timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// The most recently used idle connection to `key` that is still open.
    fn take(&self, key: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() > self.timeout {
                continue;
            }
            // Closed by the node meanwhile (or sending unasked)? The reactor knows
            // without a system call unless the socket became readable.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
        None
    }

    fn put(&self, key: &str, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = match idle.get_mut(key) {
                Some(l) => l,
                None => idle.entry(key.into()).or_default(),
            };
            if list.len() < MAX_IDLE_PER_NODE {
                list.push((conn, Instant::now()));
            }
        }
    }

    /// Closes the connections idle for longer than the timeout.
    pub fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            let timeout = self.timeout;
            for list in idle.values_mut() {
                list.retain(|(_, since)| since.elapsed() <= timeout);
            }
            idle.retain(|_, l| !l.is_empty());
        }
    }
}

/// Where one attempt connects.
#[derive(Debug)]
struct Target {
    /// `host:port` as the node registered it: the pool's key and the default `Host`.
    authority: String,
    host: String,
    port: u16,
    ip: Option<IpAddr>,
}

fn target(address: &str) -> Result<Target, String> {
    let authority = address
        .strip_prefix("http://")
        .unwrap_or(address)
        .trim_end_matches('/');
    let parsed: hyper::http::uri::Authority = authority.parse().map_err(|e| format!("{e}"))?;
    if parsed.as_str().contains('@') {
        return Err("user information in a node address".into());
    }
    let host = parsed.host().to_owned();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok();
    Ok(Target {
        authority: parsed.as_str().to_owned(),
        port: parsed.port_u16().unwrap_or(80),
        host,
        ip,
    })
}

/// A node's `503` kept while another node is tried.
struct Held {
    head: ResponseHead,
    body: Bytes,
}

/// How a client connection continues after one exchange.
enum Next {
    /// Another request may follow.
    KeepAlive,
    /// Close it.
    Close,
}

/// Serves a client connection's requests on the fast path, until the client closes, the
/// proxy stops or a request needs hyper: then the connection and the bytes read from it
/// are returned.
pub async fn serve<U: Upstream>(
    fwd: &Forwarder<U>,
    mut stream: TcpStream,
    peer: &Peer,
    mut stopped: watch::Receiver<Option<Duration>>,
) -> Option<Rewind> {
    let mut buf = BytesMut::with_capacity(4096);
    let limit = fwd.settings().retry_buffer_bytes;
    loop {
        let mut head_deadline: Option<Instant> = None;
        let head = loop {
            if !buf.is_empty() {
                match h1::parse_request(&buf) {
                    RequestParse::Head(h, n) if h.content_length <= limit => {
                        buf.advance(n);
                        break h;
                    }
                    RequestParse::Partial => {}
                    RequestParse::Head(..) | RequestParse::Other => {
                        return Some(Rewind::new(buf.freeze(), stream));
                    }
                }
            }
            let read = match head_deadline {
                None => {
                    tokio::select! {
                        r = tokio::time::timeout(fwd.settings().idle_timeout, stream.read_buf(&mut buf)) => r,
                        _ = stopped.wait_for(Option::is_some) => return None,
                    }
                }
                Some(d) => tokio::time::timeout_at(d, stream.read_buf(&mut buf)).await,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {
                    head_deadline.get_or_insert_with(|| Instant::now() + HEAD_TIMEOUT);
                }
                _ => return None,
            }
        };
        let deadline = Instant::now() + fwd.settings().total_timeout;
        let len = usize::try_from(head.content_length).unwrap_or(usize::MAX);
        while buf.len() < len {
            buf.reserve(len - buf.len());
            match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return None,
                Err(_) => {
                    let _ = own(
                        &mut stream,
                        408,
                        "request_timeout",
                        "the request body did not arrive in time",
                        true,
                        deadline + Duration::from_secs(1),
                    )
                    .await;
                    return None;
                }
            }
        }
        let body = buf.split_to(len).freeze();
        // The exchange, while the client connection is read on: what a pipelining
        // client sends meanwhile is kept for the next round, and a client that closes
        // or resets its connection cancels the exchange (as hyper's path does), so the
        // node's slot is given back at once with the wait as a lower bound on its
        // latency, instead of the proxy waiting on for an answer no one will read.
        let next: Next = {
            let (mut rd, mut wr) = stream.split();
            let exchange = fwd.exchange(&head, body, peer, &mut wr, deadline);
            tokio::pin!(exchange);
            let mut watch = buf.len() < READ_AHEAD;
            loop {
                tokio::select! {
                    biased;
                    next = &mut exchange => break next,
                    r = rd.read_buf(&mut buf), if watch => match r {
                        Ok(n) if n > 0 => watch = buf.len() < READ_AHEAD,
                        _ => return None,
                    },
                }
            }
        };
        let stopping = stopped.borrow().is_some();
        if matches!(next, Next::Close) || head.close || stopping {
            let _ = stream.shutdown().await;
            return None;
        }
    }
}

impl<U: Upstream> Forwarder<U> {
    /// One request to the nodes and the answer back to the client.
    async fn exchange<W: AsyncWrite + Unpin>(
        &self,
        head: &RequestHead,
        body: Bytes,
        peer: &Peer,
        client: &mut W,
        deadline: Instant,
    ) -> Next {
        let settings = self.settings();
        let hint = Hint {
            key: head.header("x-plb-key").map(str::to_owned),
            cost: head
                .header("x-plb-cost")
                .and_then(|c| c.trim().parse::<f64>().ok())
                .filter(|c| c.is_finite() && *c >= 0.0),
            size: Some(head.content_length as f64),
        };
        let close = head.close;
        self.budget().deposit();
        let attempts = settings.max_attempts.max(1);
        let mut tried: Vec<String> = Vec::new();
        let mut last_failure = String::new();
        let mut held: Option<Held> = None;
        let mut request = BytesMut::new();
        for attempt in 0..attempts {
            let excluded: Vec<&str> = tried.iter().map(String::as_str).collect();
            let routed = match self.upstream().route(&hint, &excluded) {
                Ok(r) => r,
                Err(Unavailable::NoNodes) if attempt > 0 => break,
                Err(_) if held.is_some() => break,
                Err(u) => {
                    let (code, message) = super::forward::unavailable_text(self.pool(), &u);
                    return own(client, 503, code, &message, close, deadline).await;
                }
            };
            let node = self.upstream().node(&routed).to_owned();
            let to = match target(self.upstream().address(&routed)) {
                Ok(t) => t,
                Err(e) => {
                    self.upstream().feedback(&routed, 0.0, false);
                    tracing::warn!(pool = %self.pool(), %node, error = %e, "node address is not a URI authority");
                    last_failure = format!("node `{node}` has an unusable address");
                    tried.push(node);
                    continue;
                }
            };
            if let Some(ip) = to.ip
                && !settings.nodes.allows(ip)
            {
                self.upstream().feedback(&routed, 0.0, false);
                tracing::warn!(pool = %self.pool(), %node, %ip, "node address outside the allowed node networks; not connecting");
                last_failure =
                    format!("node `{node}` is at an address the operator does not allow nodes at");
                tried.push(node);
                continue;
            }
            request.clear();
            head.write_upstream(peer, &to.authority, &mut request);
            request.extend_from_slice(&body);
            let started = Instant::now();
            let result = self
                .attempt(&to, &request, head.is_head(), head.idempotent(), deadline)
                .await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let why = match result {
                Ok((conn, resp)) => {
                    self.upstream()
                        .feedback(&routed, latency_ms, resp.status < 500);
                    let retry = resp.status == 503
                        && attempt + 1 < attempts
                        && head.idempotent()
                        && self.budget().withdraw();
                    if !retry {
                        return self
                            .relay(client, &to.authority, conn, resp, close, deadline)
                            .await;
                    }
                    match self.hold(&to.authority, conn, resp).await {
                        Ok(h) => held = Some(h),
                        // Too long to keep: it is the answer.
                        Err((conn, resp)) => {
                            return self
                                .relay(client, &to.authority, conn, resp, close, deadline)
                                .await;
                        }
                    }
                    "answered 503".to_owned()
                }
                Err(Failure::Timeout) => {
                    self.upstream().feedback(&routed, latency_ms, false);
                    if let Some(h) = held {
                        return send_held(client, h, close, deadline).await;
                    }
                    let message = format!(
                        "node `{node}` of pool `{}` did not answer within {} ms",
                        self.pool(),
                        settings.total_timeout.as_millis()
                    );
                    return own(client, 504, "gateway_timeout", &message, close, deadline).await;
                }
                Err(Failure::Connect(why)) => {
                    self.upstream().unreachable(&routed);
                    why
                }
                Err(Failure::Transport(why)) => {
                    self.upstream().feedback(&routed, latency_ms, false);
                    if !head.idempotent() {
                        last_failure = format!("node `{node}`: {why}");
                        tried.push(node);
                        break;
                    }
                    why
                }
            };
            tracing::debug!(pool = %self.pool(), %node, %why, "node failed before answering");
            last_failure = format!("node `{node}`: {why}");
            tried.push(node);
        }
        if let Some(h) = held {
            return send_held(client, h, close, deadline).await;
        }
        let retried = if tried.len() > 1 {
            format!(" ({} nodes tried)", tried.len())
        } else {
            String::new()
        };
        let message = format!(
            "no node of pool `{}` answered{retried}; last: {last_failure}",
            self.pool()
        );
        own(client, 502, "bad_gateway", &message, close, deadline).await
    }

    /// Sends `request` to `to` and reads the answer's head: over a kept-alive connection
    /// when one is idle, else a new one.
    async fn attempt(
        &self,
        to: &Target,
        request: &[u8],
        head_request: bool,
        idempotent: bool,
        deadline: Instant,
    ) -> Result<(Conn, ResponseHead), Failure> {
        let mut reuse = true;
        loop {
            let pooled = if reuse {
                self.conns().take(&to.authority)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect(to, deadline).await?,
            };
            match send_and_read_head(&mut conn, request, head_request, deadline).await {
                Ok(resp) => return Ok((conn, resp)),
                Err(Sent::Timeout) => return Err(Failure::Timeout),
                Err(Sent::Invalid(why)) => {
                    return Err(Failure::Transport(format!(
                        "the node's answer is not HTTP/1: {why}"
                    )));
                }
                // A kept-alive connection the node had closed: once more on a new one.
                Err(Sent::Closed(_)) if reused && idempotent => reuse = false,
                Err(Sent::Closed(e)) => {
                    return Err(Failure::Transport(format!(
                        "the connection failed before the response: {e}"
                    )));
                }
            }
        }
    }

    /// A new connection to `to`, within the connect timeout.
    async fn connect(&self, to: &Target, deadline: Instant) -> Result<Conn, Failure> {
        let settings = self.settings();
        let until = deadline.min(Instant::now() + settings.connect_timeout);
        let addrs: Vec<SocketAddr> = match to.ip {
            Some(ip) => vec![SocketAddr::new(ip, to.port)],
            None => {
                let found = tokio::time::timeout_at(
                    until,
                    tokio::net::lookup_host((to.host.as_str(), to.port)),
                )
                .await
                .map_err(|_| Failure::Connect("cannot connect: name lookup timed out".into()))?
                .map_err(|e| Failure::Connect(format!("cannot connect: {e}")))?;
                let found: Vec<SocketAddr> = found.collect();
                let allowed = settings.nodes.filter(found.iter().copied());
                if allowed.is_empty() && !found.is_empty() {
                    return Err(Failure::Connect(format!(
                        "cannot connect: `{}` resolves only to addresses the operator does not allow",
                        to.host
                    )));
                }
                allowed
            }
        };
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio::time::timeout_at(until, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        stream,
                        buf: BytesMut::with_capacity(8192),
                    });
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => return Err(Failure::Connect("cannot connect: connect timed out".into())),
            }
        }
        Err(Failure::Connect(format!("cannot connect: {last}")))
    }

    /// Reads a `503`'s body (up to [`DISCARD_BYTES`], within [`DISCARD_WITHIN`]) so that it
    /// can be the answer later and its connection is reused; a longer or unbounded one
    /// is given back.
    async fn hold(
        &self,
        key: &str,
        mut conn: Conn,
        head: ResponseHead,
    ) -> Result<Held, (Conn, ResponseHead)> {
        let until = Instant::now() + DISCARD_WITHIN;
        let mut chunked = ChunkedEnd::default();
        let mut scanned = 0;
        let len = loop {
            match head.framing {
                Framing::Empty => break 0,
                Framing::Length(n) if n <= DISCARD_BYTES as u64 => {
                    if conn.buf.len() as u64 >= n {
                        break n as usize;
                    }
                }
                Framing::Chunked => match chunked.feed(&conn.buf[scanned..]) {
                    Ok(Some(end)) => break scanned + end,
                    Ok(None) if conn.buf.len() <= DISCARD_BYTES => scanned = conn.buf.len(),
                    _ => return Err((conn, head)),
                },
                _ => return Err((conn, head)),
            }
            match tokio::time::timeout_at(until, conn.stream.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Not in time: it is the answer after all, streamed as it comes.
                _ => return Err((conn, head)),
            }
        };
        let body = conn.buf.split_to(len).freeze();
        if head.reusable && conn.buf.is_empty() {
            self.conns().put(key, conn);
        }
        Ok(Held { head, body })
    }

    /// Streams the node's answer to the client; the node's connection goes back to the
    /// pool when the answer ended cleanly and the node keeps it alive.
    async fn relay<W: AsyncWrite + Unpin>(
        &self,
        client: &mut W,
        key: &str,
        mut conn: Conn,
        resp: ResponseHead,
        close: bool,
        deadline: Instant,
    ) -> Next {
        let mut out = BytesMut::with_capacity(512 + conn.buf.len());
        resp.write_downstream(close, &mut out);
        let mut chunked = ChunkedEnd::default();
        let mut left = match resp.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut first = true;
        loop {
            // The part of what was read that belongs to this answer.
            let (take, ended) = match resp.framing {
                Framing::Empty => (0, true),
                Framing::Length(_) => {
                    let take =
                        usize::try_from(left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
                    left -= take as u64;
                    (take, left == 0)
                }
                Framing::Chunked => match chunked.feed(&conn.buf) {
                    Ok(Some(n)) => (n, true),
                    Ok(None) => (conn.buf.len(), false),
                    Err(e) => {
                        tracing::debug!(pool = %self.pool(), error = %e, "a node's chunked body is malformed");
                        return Next::Close;
                    }
                },
                Framing::UntilClose => (conn.buf.len(), false),
            };
            let written = if first {
                first = false;
                out.extend_from_slice(&conn.buf[..take]);
                write(client, &out, deadline).await
            } else if take > 0 {
                write(client, &conn.buf[..take], deadline).await
            } else {
                true
            };
            conn.buf.advance(take);
            if !written {
                return Next::Close;
            }
            if ended {
                break;
            }
            conn.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // The body ends with the connection: done, and the client's closes too.
                Ok(Ok(_)) if resp.framing == Framing::UntilClose => return Next::Close,
                // Cut short, failed, or past the deadline: the client sees the connection
                // close before the body's end.
                _ => return Next::Close,
            }
        }
        if resp.reusable && conn.buf.is_empty() {
            self.conns().put(key, conn);
        }
        if close || resp.framing == Framing::UntilClose {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}

/// Why a request got no answer's head over one connection.
enum Sent {
    /// The connection failed or closed first (with what was read: nothing, or part of a
    /// head).
    Closed(String),
    /// The node's bytes are not an HTTP/1 answer.
    Invalid(String),
    /// The total deadline passed.
    Timeout,
}

async fn send_and_read_head(
    conn: &mut Conn,
    request: &[u8],
    head_request: bool,
    deadline: Instant,
) -> Result<ResponseHead, Sent> {
    match tokio::time::timeout_at(deadline, conn.stream.write_all(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Sent::Closed(e.to_string())),
        Err(_) => return Err(Sent::Timeout),
    }
    loop {
        if !conn.buf.is_empty() {
            match h1::parse_response(&conn.buf, head_request) {
                Ok(Some((resp, n))) => {
                    conn.buf.advance(n);
                    match resp.status {
                        101 => {
                            return Err(Sent::Invalid("101 Switching Protocols, unasked".into()));
                        }
                        // Interim answers (103 Early Hints and the like) are not passed on.
                        100..=199 => continue,
                        _ => return Ok(resp),
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(Sent::Invalid(e.to_string())),
            }
        }
        match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut conn.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => {
                return Err(Sent::Closed(
                    "connection closed before message completed".into(),
                ));
            }
            Ok(Err(e)) => return Err(Sent::Closed(e.to_string())),
            Err(_) => return Err(Sent::Timeout),
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(client: &mut W, bytes: &[u8], deadline: Instant) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, client.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn send_held<W: AsyncWrite + Unpin>(
    client: &mut W,
    held: Held,
    close: bool,
    deadline: Instant,
) -> Next {
    let mut out = BytesMut::with_capacity(512 + held.body.len());
    held.head.write_downstream(close, &mut out);
    out.extend_from_slice(&held.body);
    if write(client, &out, deadline).await && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// An answer of the proxy's own, in the API's one error shape.
async fn own<W: AsyncWrite + Unpin>(
    client: &mut W,
    status: u16,
    code: &str,
    message: &str,
    close: bool,
    deadline: Instant,
) -> Next {
    let json = error_json(code, message);
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = BytesMut::new();
    h1::write_own(status, reason, &json, close, &mut out);
    if write(client, &out, deadline).await && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}
