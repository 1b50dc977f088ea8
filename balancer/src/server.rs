//! The API's HTTP server: hyper-util with a timer, so a slow or hostile client cannot
//! hold a connection or a handler forever (`axum::serve` runs without a timer, which
//! leaves hyper's header read timeout off). Request headers must arrive within the
//! header timeout (which also closes idle keep-alive connections), every body frame
//! within the body timeout, and at most `max_connections` connections are open at once.
//!
//! Fair handling at the cap: a flood of slow or idle connections must not keep agents
//! from reporting, so a new connection is not left in the listen backlog behind the
//! flood. At the cap the oldest connection that can give way is closed for it, in this
//! order: one that has not sent a whole request yet (idle from the start or still
//! sending its headers), then an idle keep-alive one, then one whose request, not an
//! agent's, is still sending its body. A connection younger than its grace (a quarter
//! of the header timeout, at most 250 ms: time to send its request), a request from an
//! agent (`Bearer plba_...`) and a request being handled are never cut; only when every
//! connection is one of those do new connections wait in the backlog. A flood thus
//! churns through its own connections, while an agent's request, whose headers arrive
//! at once, holds its slot until answered.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::auth::AGENT_PREFIX;

/// Limits of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time for a request's headers to arrive (and for an idle keep-alive connection to
    /// send its next request).
    pub header_timeout: Duration,
    /// Longest wait for the next frame of a request body.
    pub body_timeout: Duration,
    /// A connection with no byte read or written for this long is closed (idle
    /// keep-alive connections included).
    pub idle_timeout: Duration,
    /// Connections open at once (see the module's doc for who gives way at the cap).
    pub max_connections: usize,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then lets
/// requests in flight finish (up to the grace period).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let max = limits.max_connections.max(1);
    let conns = Arc::new(Connections::new(grace(limits.header_timeout)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    'serve: loop {
        // At the cap, accept only when a connection can give way to the new one; else
        // wait until one ends, finishes a request or leaves its grace.
        while conns.open() >= max && !conns.can_displace() {
            tokio::select! {
                () = conns.changed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = &mut shutdown => break 'serve,
            }
        }
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let (header_timeout, idle_timeout) = (limits.header_timeout, limits.idle_timeout);
        let (id, conn) = conns.add();
        // Over the cap: the connection that gives way most easily is closed (never the
        // new one, in its grace).
        while conns.open() > max && conns.displace_one() {}
        let service = tracked_service(router.clone(), Arc::clone(&conns), Arc::clone(&conn));
        let conns = Arc::clone(&conns);
        tokio::spawn(async move {
            let serve = async {
                // hyper's header timer starts with the first byte: a connection that sends
                // nothing would hold its slot forever, so it gets the header timeout to
                // start.
                if !matches!(
                    tokio::time::timeout(header_timeout, stream.readable()).await,
                    Ok(Ok(()))
                ) {
                    tracing::debug!(%peer, "API connection sent nothing in time; closed");
                    return;
                }
                let served = builder.serve_connection_with_upgrades(
                    TokioIo::new(IdleIo::new(stream, idle_timeout)),
                    TowerToHyperService::new(service),
                );
                if let Err(e) = watcher.watch(served).await {
                    tracing::debug!(error = %e, %peer, "API connection ended with an error");
                }
            };
            tokio::select! {
                () = serve => {}
                () = conn.displaced.notified() => {
                    tracing::debug!(%peer, "API connection closed for a new one at the connection cap");
                }
            }
            conns.remove(id);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
    Ok(())
}

/// How long a new connection is never cut at the cap: time to send its request.
fn grace(header_timeout: Duration) -> Duration {
    (header_timeout / 4).min(Duration::from_millis(250))
}

/// The open connections, with what each is doing.
#[derive(Debug)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// A connection ended or a request finished: one may give way now.
    changed: Notify,
    epoch: Instant,
    grace_ms: u64,
}

/// One connection's requests in progress.
#[derive(Debug, Default)]
struct Conn {
    /// Requests from agents (`Bearer plba_...`): never cut.
    agents: AtomicUsize,
    /// Other requests.
    others: AtomicUsize,
    /// Of the others, those whose body is still arriving.
    receiving: AtomicUsize,
    /// Whether a request has been answered on it.
    answered: AtomicBool,
    /// When it opened, ms since the epoch.
    opened_ms: u64,
    /// When it last started or ended a request (or opened), ms since the epoch.
    since_ms: AtomicU64,
    /// Told to close.
    displaced: Notify,
}

impl Conn {
    /// How easily it gives way (lower first) at `now_ms`, or `None` if it must not.
    fn rank(&self, now_ms: u64, grace_ms: u64) -> Option<u8> {
        if self.agents.load(Ordering::SeqCst) > 0
            || now_ms < self.opened_ms.saturating_add(grace_ms)
        {
            return None;
        }
        if self.others.load(Ordering::SeqCst) == 0 {
            // No request in progress: never a whole one, or idle between requests.
            return Some(if self.answered.load(Ordering::SeqCst) {
                1
            } else {
                0
            });
        }
        (self.receiving.load(Ordering::SeqCst) > 0).then_some(2)
    }
}

impl Connections {
    fn new(grace: Duration) -> Self {
        Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            changed: Notify::new(),
            epoch: Instant::now(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> usize {
        self.lock().len()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let conn = Arc::new(Conn {
            opened_ms: now,
            since_ms: AtomicU64::new(now),
            ..Conn::default()
        });
        self.lock().insert(id, Arc::clone(&conn));
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_one();
    }

    /// The connection that gives way most easily: the oldest of the lowest rank.
    fn victim(&self, open: &HashMap<u64, Arc<Conn>>) -> Option<u64> {
        let now = self.now_ms();
        open.iter()
            .filter_map(|(id, c)| {
                let rank = c.rank(now, self.grace_ms)?;
                Some((rank, c.since_ms.load(Ordering::SeqCst), *id))
            })
            .min()
            .map(|(_, _, id)| id)
    }

    fn can_displace(&self) -> bool {
        self.victim(&self.lock()).is_some()
    }

    /// Closes the connection that gives way most easily; false if none may.
    fn displace_one(&self) -> bool {
        let mut open = self.lock();
        match self.victim(&open).and_then(|id| open.remove(&id)) {
            Some(c) => {
                c.displaced.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One request in progress on a connection, until its answer is produced and its body
/// dropped.
struct Request {
    conns: Arc<Connections>,
    conn: Arc<Conn>,
    agent: bool,
    receiving: AtomicBool,
}

impl Request {
    fn start(conns: Arc<Connections>, conn: Arc<Conn>, agent: bool, body: bool) -> Arc<Self> {
        if agent {
            conn.agents.fetch_add(1, Ordering::SeqCst);
        } else {
            conn.others.fetch_add(1, Ordering::SeqCst);
            if body {
                conn.receiving.fetch_add(1, Ordering::SeqCst);
            }
        }
        conn.since_ms.store(conns.now_ms(), Ordering::SeqCst);
        Arc::new(Request {
            conns,
            conn,
            agent,
            receiving: AtomicBool::new(body && !agent),
        })
    }

    /// The body has arrived (or will not).
    fn received(&self) {
        if self.receiving.swap(false, Ordering::SeqCst) {
            self.conn.receiving.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.received();
        let counter = if self.agent {
            &self.conn.agents
        } else {
            &self.conn.others
        };
        counter.fetch_sub(1, Ordering::SeqCst);
        self.conn.answered.store(true, Ordering::SeqCst);
        self.conn
            .since_ms
            .store(self.conns.now_ms(), Ordering::SeqCst);
        self.conns.changed.notify_one();
    }
}

/// Whether the request carries an agent token (checked by the handler; a made-up one
/// is answered 401 at once).
fn from_agent(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim_start().starts_with(AGENT_PREFIX))
}

/// A request body that tells its [`Request`] when it has all arrived.
struct TrackedBody {
    inner: Incoming,
    request: Arc<Request>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if done {
            self.request.received();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `router` for one connection, counting its requests in progress on `conn`.
fn tracked_service(
    router: axum::Router,
    conns: Arc<Connections>,
    conn: Arc<Conn>,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: hyper::Request<Incoming>| {
        let request = Request::start(
            Arc::clone(&conns),
            Arc::clone(&conn),
            from_agent(req.headers()),
            !req.body().is_end_stream(),
        );
        let req = req.map(|inner| {
            axum::body::Body::new(TrackedBody {
                inner,
                request: Arc::clone(&request),
            })
        });
        let answer = router.clone().oneshot(req);
        async move {
            let r = answer.await;
            drop(request);
            r
        }
    })
}

/// A connection that fails with `TimedOut` once nothing has been read or written for
/// `timeout` while it waits to read.
struct IdleIo<T> {
    io: T,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    fn new(io: T, timeout: Duration) -> Self {
        IdleIo {
            io,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn active(&mut self) {
        let at = Instant::now() + self.timeout;
        self.sleep.as_mut().reset(at);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.active();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
