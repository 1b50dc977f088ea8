//! Forwarding through hyper, for every request the fast path ([`super::fast`]) leaves
//! (streamed or large bodies, `Expect`, HTTP/1.0, ...): one client request in, one node
//! chosen by the [`Upstream`], the request sent over a keep-alive connection pool
//! (hyper-util's legacy client keeps one pool per node address), the answer streamed
//! back, and the outcome reported as feedback.
//!
//! Retries: an idempotent request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) whose body is
//! empty or small enough to buffer is sent again to *another* node when its node fails
//! before answering (connection refused or timed out, or the connection dropped before
//! the response headers), and when its node answers `503 Service Unavailable` while the
//! retry budget allows (each request adds `retry_budget` of a retry, up to a burst of
//! [`RETRY_BURST`]; one budget per proxy thread): a node out of service does not fail
//! the requests that explore it, and a pool that answers 503 as a whole (overloaded)
//! sees at most `1 + retry_budget` times its requests. If no other node answers, the
//! client gets the node's 503 (a 503 that another answer replaced is read to its end on
//! a task of its own, so its keep-alive connection is reused). Any other request gets
//! one attempt. Every attempt that
//! reached a node is reported: latency to the response headers, ok = answered and not
//! 5xx.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plb_api::{ErrorBody, ErrorDetail};
use tokio::time::Instant;

use super::body::{ProxyBody, UpstreamBody};
use super::headers;
use super::{Hint, Unavailable, Upstream};
use crate::netpolicy::{NetPolicy, PolicyResolver};

/// Request header carrying a routing key (rendezvous hashing on the node side).
pub const KEY_HEADER: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-plb-key");
/// Request header carrying a request's relative cost.
pub const COST_HEADER: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-plb-cost");

/// How the proxy forwards.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// Time to open a TCP connection to a node.
    pub connect_timeout: Duration,
    /// Time for the whole exchange: response headers and the body streamed back.
    pub total_timeout: Duration,
    /// Largest body buffered so that an idempotent request can be retried.
    pub retry_buffer_bytes: u64,
    /// Nodes tried for one request, the first included.
    pub max_attempts: usize,
    /// Retries of `503` answers per request, as a fraction (0 turns them off).
    pub retry_budget: f64,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// Where nodes may be: checked at every connect, after DNS resolution (a node may
    /// have registered before the operator narrowed `--node-networks`).
    pub nodes: NetPolicy,
    /// Peers whose forwarding headers are extended; from any other peer they are
    /// replaced with what the proxy sees.
    pub trusted_proxies: NetPolicy,
    /// Whether the common exchange takes the fast path ([`super::fast`]); hyper serves
    /// every request when off.
    pub fast_path: bool,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(60),
            retry_buffer_bytes: 64 * 1024,
            max_attempts: 3,
            retry_budget: 0.2,
            idle_timeout: Duration::from_secs(60),
            nodes: NetPolicy::nodes(&[]),
            trusted_proxies: NetPolicy::only(&[]),
            fast_path: true,
        }
    }
}

/// Retries of `503` answers a forwarder (one per proxy thread) may make at once, on top
/// of its share of its requests.
pub const RETRY_BURST: f64 = 10.0;

/// A retry budget (as Finagle's and linkerd's): each request deposits a fraction of a
/// retry, each retry withdraws one, and the balance is capped at a burst. In
/// thousandths of a retry.
#[derive(Debug)]
pub(super) struct RetryBudget {
    balance: AtomicI64,
    per_request: i64,
    cap: i64,
}

impl RetryBudget {
    fn new(ratio: f64) -> RetryBudget {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cap = if ratio > 0.0 {
            (RETRY_BURST * 1000.0) as i64
        } else {
            0
        };
        RetryBudget {
            balance: AtomicI64::new(cap),
            per_request: (ratio * 1000.0).round() as i64,
            cap,
        }
    }

    pub(super) fn deposit(&self) {
        if self.per_request > 0 {
            let _ = self
                .balance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some((b + self.per_request).min(self.cap))
                });
        }
    }

    pub(super) fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }
}

/// Forwards requests for one pool.
pub struct Forwarder<U: Upstream> {
    upstream: Arc<U>,
    client: Client<HttpConnector<PolicyResolver>, UpstreamBody>,
    settings: ForwardSettings,
    pool: String,
    budget: RetryBudget,
    conns: super::fast::Pool,
}

impl<U: Upstream> std::fmt::Debug for Forwarder<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("pool", &self.pool)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why one attempt got no answer (both paths).
pub(super) enum Failure {
    /// No connection to the node could be made: safe to send any request elsewhere
    /// that can be replayed.
    Connect(String),
    /// The node dropped the connection before answering: safe to send an idempotent
    /// request elsewhere.
    Transport(String),
    /// The total deadline passed.
    Timeout,
}

impl<U: Upstream> Forwarder<U> {
    /// A forwarder for `pool` over `upstream`, with its own connection pools. Its
    /// connections' tasks run on the runtime that first uses it.
    pub fn new(pool: impl Into<String>, upstream: Arc<U>, settings: ForwardSettings) -> Arc<Self> {
        // Names resolve only to allowed addresses; IP literals are checked in `handle`.
        let mut connector =
            HttpConnector::new_with_resolver(PolicyResolver::new(settings.nodes.clone()));
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Arc::new(Forwarder {
            upstream,
            client,
            conns: super::fast::Pool::new(settings.idle_timeout),
            budget: RetryBudget::new(settings.retry_budget),
            settings,
            pool: pool.into(),
        })
    }

    /// The upstream (for tests and the agent-check export).
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// How it forwards.
    pub fn settings(&self) -> &ForwardSettings {
        &self.settings
    }

    /// The pool it serves, as `CLIENT_ID/POOL`.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The retry budget of its thread.
    pub(super) fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The fast path's idle connections to the nodes.
    pub(super) fn conns(&self) -> &super::fast::Pool {
        &self.conns
    }

    /// Closes the fast path's node connections idle past the timeout.
    pub fn conns_sweep(&self) {
        self.conns.sweep();
    }

    /// How the forwarding headers name a connection from `client` (once per connection).
    pub fn peer(&self, client: SocketAddr) -> headers::Peer {
        let trusted = self.settings.trusted_proxies.allows(client.ip());
        headers::Peer::new(client.ip(), "http", trusted)
    }

    /// Answers one client request, from `client` (see [`Forwarder::peer`]).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: &headers::Peer,
    ) -> Response<ProxyBody> {
        let deadline = Instant::now() + self.settings.total_timeout;
        let (mut parts, body) = req.into_parts();
        let hint = hint(&parts.headers, &body);
        let connection_closes = parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::add_forwarded(&mut parts.headers, client);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        // An idempotent request with a small body is buffered so that it can be replayed.
        let body = if is_idempotent(&parts.method) && self.buffers(&body) {
            let limit = usize::try_from(self.settings.retry_buffer_bytes).unwrap_or(usize::MAX);
            match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
                Ok(Ok(collected)) => Some(collected.to_bytes()),
                Ok(Err(e)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("cannot read the request body: {e}"),
                    );
                }
                Err(_) => {
                    return error(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request body did not arrive in time",
                    );
                }
            }
            .map(Ok)
        } else {
            Some(Err(body))
        };
        let mut body = body;
        self.budget.deposit();

        let mut tried: Vec<String> = Vec::new();
        let mut last_failure = String::new();
        // A node's `503`, kept while another node is tried: the answer if none does.
        let mut held: Option<Response<Incoming>> = None;
        let attempts = self.settings.max_attempts.max(1);
        for attempt in 0..attempts {
            let excluded: Vec<&str> = tried.iter().map(String::as_str).collect();
            let routed = match self.upstream.route(&hint, &excluded) {
                Ok(r) => r,
                Err(Unavailable::NoNodes) if attempt > 0 => break,
                Err(_) if held.is_some() => break,
                Err(u) => return unavailable(&self.pool, &u),
            };
            let node = self.upstream.node(&routed).to_owned();
            let uri = match upstream_uri(self.upstream.address(&routed), path.clone()) {
                Ok(u) => u,
                Err(e) => {
                    self.upstream.feedback(&routed, 0.0, false);
                    tracing::warn!(pool = %self.pool, %node, error = %e, "node address is not a URI authority");
                    last_failure = format!("node `{node}` has an unusable address");
                    tried.push(node);
                    continue;
                }
            };
            if let Some(ip) = uri_ip(&uri)
                && !self.settings.nodes.allows(ip)
            {
                self.upstream.feedback(&routed, 0.0, false);
                tracing::warn!(pool = %self.pool, %node, %ip, "node address outside the allowed node networks; not connecting");
                last_failure =
                    format!("node `{node}` is at an address the operator does not allow nodes at");
                tried.push(node);
                continue;
            }
            let (replay, this_body) = match body.take() {
                Some(Ok(bytes)) => (Some(bytes.clone()), Either::Left(Full::new(bytes))),
                Some(Err(stream)) => (None, Either::Right(stream)),
                None => break,
            };
            // The head is kept only while a retry may need it.
            let head = if replay.is_some() {
                parts.clone()
            } else {
                std::mem::replace(&mut parts, Request::new(()).into_parts().0)
            };
            let mut out = Request::from_parts(head, this_body);
            *out.uri_mut() = uri;
            let started = Instant::now();
            let result = match tokio::time::timeout_at(deadline, self.client.request(out)).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(describe(&e))),
                Ok(Err(e)) => Err(Failure::Transport(describe(&e))),
                Err(_) => Err(Failure::Timeout),
            };
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            // Only a failure before any answer goes on to another node.
            let why = match result {
                Ok(resp) => {
                    let ok = !resp.status().is_server_error();
                    self.upstream.feedback(&routed, latency_ms, ok);
                    let retry = resp.status() == StatusCode::SERVICE_UNAVAILABLE
                        && attempt + 1 < attempts
                        && replay.is_some()
                        && self.budget.withdraw();
                    if !retry {
                        if let Some(earlier) = held.take() {
                            discard(earlier);
                        }
                        return pass_on(resp, connection_closes, deadline);
                    }
                    if let Some(earlier) = held.replace(resp) {
                        discard(earlier);
                    }
                    "answered 503".to_owned()
                }
                Err(Failure::Timeout) => {
                    self.upstream.feedback(&routed, latency_ms, false);
                    if let Some(resp) = held {
                        return pass_on(resp, connection_closes, deadline);
                    }
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway_timeout",
                        &format!(
                            "node `{node}` of pool `{}` did not answer within {} ms",
                            self.pool,
                            self.settings.total_timeout.as_millis()
                        ),
                    );
                }
                Err(Failure::Connect(why)) => {
                    self.upstream.unreachable(&routed);
                    why
                }
                Err(Failure::Transport(why)) => {
                    self.upstream.feedback(&routed, latency_ms, false);
                    why
                }
            };
            tracing::debug!(pool = %self.pool, %node, %why, "node failed before answering");
            last_failure = format!("node `{node}`: {why}");
            tried.push(node);
            match replay {
                Some(bytes) => body = Some(Ok(bytes)),
                None => break,
            }
        }
        if let Some(resp) = held {
            return pass_on(resp, connection_closes, deadline);
        }
        let retried = if tried.len() > 1 {
            format!(" ({} nodes tried)", tried.len())
        } else {
            String::new()
        };
        error(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            &format!(
                "no node of pool `{}` answered{retried}; last: {last_failure}",
                self.pool
            ),
        )
    }

    /// Whether `body` is small enough to buffer for a retry (or empty).
    fn buffers(&self, body: &Incoming) -> bool {
        if body.is_end_stream() {
            return true;
        }
        body.size_hint()
            .upper()
            .is_some_and(|n| n <= self.settings.retry_buffer_bytes)
    }
}

/// A held `503`'s body is read and thrown away, up to this many bytes...
pub(super) const DISCARD_BYTES: usize = 64 * 1024;
/// ...within this long, so that its keep-alive connection goes back to the pool.
pub(super) const DISCARD_WITHIN: Duration = Duration::from_secs(1);

/// Throws away a node's answer that another node's answer replaced. Its body is read on
/// a task of its own (up to [`DISCARD_BYTES`], within [`DISCARD_WITHIN`]) so that the
/// node's connection is kept alive and reused: dropped unread, hyper closes it, and the
/// next request to that node pays a new connection. A longer or slower body is dropped
/// and its connection closed.
fn discard(resp: Response<Incoming>) {
    let body = resp.into_body();
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let read = Limited::new(body, DISCARD_BYTES).collect();
        let _ = tokio::time::timeout(DISCARD_WITHIN, read).await;
    });
}

/// A node's answer on its way to the client: hop-by-hop headers removed, the client's
/// `Connection: close` kept, the body streamed until `deadline`.
fn pass_on(
    resp: Response<Incoming>,
    connection_closes: bool,
    deadline: Instant,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if connection_closes {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(parts, ProxyBody::stream(body, deadline))
}

/// GET, HEAD, PUT, DELETE, OPTIONS and TRACE (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The routing hint of a request: its key and cost headers, its size.
fn hint(h: &hyper::HeaderMap, body: &Incoming) -> Hint {
    let text = |name: &hyper::header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    Hint {
        key: text(&KEY_HEADER).map(str::to_owned),
        cost: text(&COST_HEADER)
            .and_then(|c| c.trim().parse::<f64>().ok())
            .filter(|c| c.is_finite() && *c >= 0.0),
        size: body.size_hint().exact().map(|n| n as f64),
    }
}

/// `http://{address}{path}`.
fn upstream_uri(address: &str, path: PathAndQuery) -> Result<Uri, hyper::http::Error> {
    let authority = address
        .strip_prefix("http://")
        .unwrap_or(address)
        .trim_end_matches('/');
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
}

/// The host of `uri` when it is an IP address.
fn uri_ip(uri: &Uri) -> Option<std::net::IpAddr> {
    uri.host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A client error in a few words, with its cause.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut s = if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the connection failed before the response".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The answer when the pool has nowhere to send the request.
fn unavailable(pool: &str, u: &Unavailable) -> Response<ProxyBody> {
    let (code, message) = unavailable_text(pool, u);
    error(StatusCode::SERVICE_UNAVAILABLE, code, &message)
}

/// The error code and message of a `503` when the pool has nowhere to send the request.
pub(super) fn unavailable_text(pool: &str, u: &Unavailable) -> (&'static str, String) {
    match u {
        Unavailable::NoPool => (
            "no_pool",
            format!("pool `{pool}` does not exist (yet); create it and register nodes"),
        ),
        Unavailable::NoNodes => (
            "no_nodes",
            format!("pool `{pool}` has no nodes to send the request to"),
        ),
        Unavailable::Other(m) => ("unavailable", m.clone()),
    }
}

/// The API's one error shape, `{"error": {"code", "message"}}`, as bytes (both paths).
pub(super) fn error_json(code: &str, message: &str) -> Bytes {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    };
    serde_json::to_vec(&body).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// An error answer in the API's one shape, `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(error_json(code, message)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_budget_allows_a_burst_then_its_share_of_requests() {
        let b = RetryBudget::new(0.2);
        let burst = (0..100).take_while(|_| b.withdraw()).count();
        assert_eq!(burst as f64, RETRY_BURST);
        // Empty: every fifth request earns one retry.
        let mut retries = 0;
        for _ in 0..100 {
            b.deposit();
            if b.withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 20);
        // Deposits stop at the burst.
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(
            (0..100).take_while(|_| b.withdraw()).count() as f64,
            RETRY_BURST
        );
    }

    #[test]
    fn a_zero_or_unusable_budget_allows_no_retry() {
        for ratio in [0.0, -1.0, f64::NAN] {
            let b = RetryBudget::new(ratio);
            for _ in 0..100 {
                b.deposit();
            }
            assert!(!b.withdraw(), "{ratio}");
        }
    }
}
