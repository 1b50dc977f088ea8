//! Reverse-proxy mode (`--proxy CLIENT_ID/POOL=LISTEN_ADDR`): an HTTP/1.1 listener per proxied pool
//! that sends each request to the node the pool's router chooses and reports what
//! happened as feedback, in-process.
//!
//! Parts: [`fast`] (the common exchange at the byte level, over [`h1`]), [`forward`] (every
//! other request, through hyper, with [`body`]), both generic over [`Upstream`] and sharing
//! [`headers`] (hop-by-hop, `X-Forwarded-*`, `Forwarded`); [`engine`] ([`Upstream`] over the
//! routing engine, pool resolution) and the listener here, with [`Edges`] (every proxy and
//! the agent-check export, from an [`EdgesConfig`]).
//!
//! Above the engine, below the config and the HTTP layer: the `--proxy` flag's type
//! ([`ProxySpec`]) and [`EdgesConfig`] are defined here and `config` builds them; nothing
//! here reads the config or the app state.
pub mod body;
pub mod check;
pub mod engine;
pub mod fast;
pub mod forward;
pub mod h1;
pub mod headers;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use forward::{ForwardSettings, Forwarder, RETRY_BURST};

use crate::engine::PoolKey;

/// What the proxy knows of a request when it picks a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hint {
    /// Routing key (`X-PLB-Key`).
    pub key: Option<String>,
    /// Request size in bytes (`Content-Length`).
    pub size: Option<f64>,
    /// Relative cost (`X-PLB-Cost`).
    pub cost: Option<f64>,
}

/// Why no node can be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The pool does not exist.
    NoPool,
    /// The pool has no node left to try (none registered, or every one excluded).
    NoNodes,
    /// Anything else, in words.
    Other(String),
}

/// Where the proxy's requests go: picks a node, excluding the nodes already tried, and
/// takes the outcome of every pick back.
pub trait Upstream: Send + Sync + 'static {
    /// One pick; reported back exactly once, through [`Upstream::feedback`] or
    /// [`Upstream::unreachable`].
    type Routed: Send + 'static;
    /// Chooses a node that is not in `exclude`.
    fn route(&self, hint: &Hint, exclude: &[&str]) -> Result<Self::Routed, Unavailable>;
    /// The chosen node's id.
    fn node<'a>(&self, routed: &'a Self::Routed) -> &'a str;
    /// The chosen node's address, `host:port`.
    fn address<'a>(&self, routed: &'a Self::Routed) -> &'a str;
    /// What happened: latency to the response headers, and whether it was a success.
    fn feedback(&self, routed: &Self::Routed, latency_ms: f64, ok: bool);
    /// What happened: no connection to the node could be made (refused, or no route).
    fn unreachable(&self, routed: &Self::Routed);
    /// The nodes (id, `host:port`) that traffic found unreachable, for [`check`].
    fn unreachable_nodes(&self) -> Vec<(String, String)>;
    /// A connection check reached the unreachable node `node` again.
    fn reachable(&self, node: &str);
}

/// One `--proxy CLIENT_ID/POOL=LISTEN_ADDR`: the pool is named by its owner's client id
/// (which only the operator assigns, by creating the client) and its name (unique per
/// client), so another tenant's pool of the same name is never served nor in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    /// The owning client's id.
    pub client_id: i64,
    /// The pool's name.
    pub pool: String,
    /// Where to listen.
    pub listen: SocketAddr,
}

impl ProxySpec {
    /// The engine's key of the proxied pool.
    pub fn key(&self) -> PoolKey {
        PoolKey {
            client_id: self.client_id,
            pool: self.pool.clone(),
        }
    }
}

impl FromStr for ProxySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (pool, addr) = s.split_once('=').ok_or_else(|| {
            format!("`{s}`: expected CLIENT_ID/POOL=LISTEN_ADDR, e.g. 1/web=0.0.0.0:8080")
        })?;
        let key = crate::agent_check::parse_pool_ref(pool)?;
        let listen = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an address like 0.0.0.0:8080"))?;
        Ok(ProxySpec {
            client_id: key.client_id,
            pool: key.pool,
            listen,
        })
    }
}

impl std::fmt::Display for ProxySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}={}", self.client_id, self.pool, self.listen)
    }
}

/// Why a proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listener could not be bound.
    #[error("--proxy {pool}={addr}: cannot listen: {source}")]
    Bind {
        /// The pool.
        pool: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A proxy serving in the background.
#[derive(Debug)]
pub struct RunningProxy {
    /// The pool it serves, as `CLIENT_ID/POOL`.
    pub pool: String,
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    stop: watch::Sender<Option<Duration>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RunningProxy {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting; connections get up to `grace` to finish their requests, then are
    /// closed.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Threads a proxy runs on by default: one per core (as HAProxy's `nbthread`), at most
/// 64. With the fast path one thread's event loop is what bounds a proxy's throughput:
/// on two cores the proxy benchmark gave 0.80x HAProxy's throughput with one thread and
/// 0.96x with two, and at a live pool's rate two threads cost 0.74-0.84x HAProxy lc's
/// CPU per request against one thread's 0.67-0.73x (`bench/RESULTS.md`). Before the
/// fast path, hyper's per-request cost bounded it instead, and one thread per two cores
/// had been the default.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, 64)
}

/// Binds `listen` and serves the pool there until stopped, on `threads` threads of its
/// own, each with a single-threaded runtime and its own [`Forwarder`] (connection pools):
/// a request's client connection, node connection and the tasks between them stay on one
/// thread, with no cross-thread wake-ups (HAProxy's threading model). The first thread
/// also accepts, and hands connections to the threads in turn (threads all accepting from
/// one socket would not share the connections evenly). The upstream is shared.
pub async fn start<U: Upstream>(
    upstream: Arc<U>,
    settings: ForwardSettings,
    pool: &str,
    listen: SocketAddr,
    threads: usize,
) -> Result<RunningProxy, ProxyError> {
    let bind_err = |source| ProxyError::Bind {
        pool: pool.to_owned(),
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let mut listener = Some(listener.into_std().map_err(bind_err)?);
    let (stop, stopped) = watch::channel(None);
    let n = threads.max(1);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let mut handles = Vec::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        // The first thread also accepts and runs the connection checks.
        let acceptor = listener.take().map(|l| (l, senders.clone()));
        let checks = acceptor
            .as_ref()
            .map(|_| check::run(Arc::clone(&upstream), settings.clone(), stopped.clone()));
        let fwd = Forwarder::new(pool.to_owned(), Arc::clone(&upstream), settings.clone());
        let stopped = stopped.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(bind_err)?;
        let handle = std::thread::Builder::new()
            .name(format!("plb-proxy-{pool}-{i}"))
            .spawn(move || {
                if let Some(checks) = checks {
                    rt.spawn(checks);
                }
                rt.block_on(serve_thread(acceptor, rx, fwd, stopped));
                // Dropping the runtime closes the connections still open past the grace.
                drop(rt);
            })
            .map_err(bind_err)?;
        handles.push(handle);
    }
    tracing::info!(%addr, pool, threads = handles.len(), "proxy listening");
    Ok(RunningProxy {
        pool: pool.to_owned(),
        addr,
        stop,
        threads: handles,
    })
}

/// An accepted connection on its way to a proxy thread.
type Accepted = (std::net::TcpStream, SocketAddr);

/// Accepts and deals connections to the threads in turn.
async fn accept_loop(
    listener: std::net::TcpListener,
    threads: Vec<mpsc::UnboundedSender<Accepted>>,
    mut stopped: watch::Receiver<Option<Duration>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the proxy cannot listen");
            return;
        }
    };
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.wait_for(Option::is_some) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if let Some(t) = threads.get(next % threads.len()) {
            let _ = t.send((stream, peer));
        }
        next = next.wrapping_add(1);
    }
}

/// One proxy thread: serves the connections dealt to it until stopped, then gives them
/// the grace period to finish. Each connection starts on the fast path and goes on with
/// hyper from the first request the fast path does not take.
async fn serve_thread<U: Upstream>(
    acceptor: Option<(std::net::TcpListener, Vec<mpsc::UnboundedSender<Accepted>>)>,
    mut connections: mpsc::UnboundedReceiver<Accepted>,
    forwarder: Arc<Forwarder<U>>,
    mut stopped: watch::Receiver<Option<Duration>>,
) {
    if let Some((listener, threads)) = acceptor {
        tokio::spawn(accept_loop(listener, threads, stopped.clone()));
    }
    tokio::spawn(sweep_idle(Arc::clone(&forwarder), stopped.clone()));
    // Every connection task holds a sender; `recv` answers `None` once all have ended.
    let (live, mut ended) = mpsc::channel::<()>(1);
    let grace = loop {
        let (stream, peer) = tokio::select! {
            c = connections.recv() => match c {
                Some(c) => c,
                None => break Duration::ZERO,
            },
            g = stopped.wait_for(Option::is_some) => {
                break g.ok().and_then(|g| *g).unwrap_or_default();
            }
        };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "proxy thread cannot take a connection");
                continue;
            }
        };
        let fwd = Arc::clone(&forwarder);
        let stopped = stopped.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let _live = live;
            let client = fwd.peer(peer);
            let rest = if fwd.settings().fast_path {
                fast::serve(&fwd, stream, &client, stopped.clone()).await
            } else {
                Some(fast::Rewind::new(bytes::Bytes::new(), stream))
            };
            if let Some(io) = rest {
                serve_hyper(fwd, io, client, peer, stopped).await;
            }
        });
    };
    drop(live);
    let _ = tokio::time::timeout(grace, ended.recv()).await;
}

/// Serves the rest of a connection with hyper; on stop, lets the request in flight
/// finish and closes.
async fn serve_hyper<U: Upstream>(
    fwd: Arc<Forwarder<U>>,
    io: fast::Rewind,
    client: headers::Peer,
    peer: SocketAddr,
    mut stopped: watch::Receiver<Option<Duration>>,
) {
    let client = Arc::new(client);
    let service = service_fn(move |req| {
        let fwd = Arc::clone(&fwd);
        let client = Arc::clone(&client);
        async move { Ok::<_, std::convert::Infallible>(fwd.handle(req, &client).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stopped.wait_for(Option::is_some) => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "proxy connection ended with an error");
    }
}

/// Closes the fast path's node connections idle past the timeout, now and then.
async fn sweep_idle<U: Upstream>(
    forwarder: Arc<Forwarder<U>>,
    mut stopped: watch::Receiver<Option<Duration>>,
) {
    let every = (forwarder.settings().idle_timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => forwarder.conns_sweep(),
            _ = stopped.wait_for(Option::is_some) => return,
        }
    }
}

/// What the data-plane edges run.
#[derive(Debug, Clone, Default)]
pub struct EdgesConfig {
    /// One proxy per `--proxy CLIENT_ID/POOL=LISTEN_ADDR`, in flag order.
    pub proxies: Vec<ProxySpec>,
    /// How every proxy forwards.
    pub forward: ForwardSettings,
    /// Threads each proxy is served on (`--proxy-threads`).
    pub threads: usize,
    /// Where to serve HAProxy's agent-check protocol, if anywhere.
    pub agent_check: Option<SocketAddr>,
}

/// Why the edges could not start (every edge started before is stopped again).
#[derive(Debug, thiserror::Error)]
pub enum EdgesError {
    /// A proxy could not start.
    #[error("starting the proxy: {0}")]
    Proxy(#[source] ProxyError),
    /// The agent-check listener could not be bound.
    #[error("--agent-check {listen}: cannot listen: {source}")]
    AgentCheck {
        /// The address.
        listen: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// The balancer's data-plane edges: the `--proxy` listeners and the `--agent-check`
/// export. Started after the engine has warmed, stopped with the balancer. Nothing a
/// tenant stores can keep them from starting: a proxied pool is named by its owner.
#[derive(Debug, Default)]
pub struct Edges {
    /// The running proxies, in flag order.
    pub proxies: Vec<RunningProxy>,
    /// The agent-check listener.
    pub agent_check: Option<crate::agent_check::RunningAgentCheck>,
}

impl Edges {
    /// Starts every proxy and the agent-check listener `cfg` asks for, over `engine`.
    pub async fn start(
        cfg: &EdgesConfig,
        engine: &Arc<crate::engine::Engine>,
    ) -> Result<Edges, EdgesError> {
        let mut edges = Edges::default();
        for spec in &cfg.proxies {
            let upstream = engine::EngineUpstream::new(Arc::clone(engine), spec.key());
            let label = format!("{}/{}", spec.client_id, spec.pool);
            let started = start(
                Arc::new(upstream),
                cfg.forward.clone(),
                &label,
                spec.listen,
                cfg.threads,
            )
            .await;
            match started {
                Ok(p) => edges.proxies.push(p),
                Err(e) => {
                    edges.stop().await;
                    return Err(EdgesError::Proxy(e));
                }
            }
        }
        if let Some(listen) = cfg.agent_check {
            match crate::agent_check::start(Arc::clone(engine), listen).await {
                Ok(a) => edges.agent_check = Some(a),
                Err(source) => {
                    edges.stop().await;
                    return Err(EdgesError::AgentCheck { listen, source });
                }
            }
        }
        Ok(edges)
    }

    /// The proxy of the pool `pool` of client `client_id`, if one runs.
    pub fn proxy(&self, client_id: i64, pool: &str) -> Option<&RunningProxy> {
        let label = format!("{client_id}/{pool}");
        self.proxies.iter().find(|p| p.pool == label)
    }

    /// Stops them all (proxied requests get a few seconds to finish).
    pub async fn stop(&mut self) {
        for p in self.proxies.drain(..) {
            p.stop(Duration::from_secs(5)).await;
        }
        if let Some(a) = self.agent_check.take() {
            a.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s: ProxySpec = "7/web=127.0.0.1:8080".parse().expect("parses");
        assert_eq!((s.client_id, s.pool.as_str()), (7, "web"));
        assert_eq!(s.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(s.to_string(), "7/web=127.0.0.1:8080");
        assert!("7/web".parse::<ProxySpec>().is_err());
        assert!("7/=127.0.0.1:1".parse::<ProxySpec>().is_err());
        assert!("7/web=localhost".parse::<ProxySpec>().is_err());
        // A bare pool name is ambiguous across tenants: refused.
        let e = "web=127.0.0.1:8080"
            .parse::<ProxySpec>()
            .expect_err("bare name");
        assert!(e.contains("CLIENT_ID/POOL"), "{e}");
        assert!("acme/web=127.0.0.1:1".parse::<ProxySpec>().is_err());
        assert!("0/web=127.0.0.1:1".parse::<ProxySpec>().is_err());
        assert!("1/a/b=127.0.0.1:1".parse::<ProxySpec>().is_err());
    }
}
