//! The agent's calls to the balancer's agent endpoints (register, assignments with ETag,
//! modules by sha256, sample reports) over `plb-client`, with errors that say whether a
//! retry can help. With several balancers (replicas on one database) the calls go to
//! one of them; when it stops answering (no answer, or a 5xx) the next call goes to the
//! next one, round the list, so the callers' own retries fail over.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;

use plb_api::{Assignments, RegisterRequest, ReportAck, ReportBatch};
use reqwest::Url;

/// Largest module the agent accepts.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// A failed call to the balancer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused or reset, timeout, DNS.
    #[error("balancer unreachable: {0}")]
    Unreachable(String),
    /// An error status, with the body's code and message when it had the error shape.
    #[error("balancer answered {status}: {code}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error code from the body, or empty.
        code: String,
        /// The error message from the body, or the raw body's start.
        message: String,
    },
    /// An answer that could not be understood.
    #[error("unexpected answer from the balancer: {0}")]
    Decode(String),
}

impl ApiError {
    /// Whether the same request may succeed later (no answer, 408, 429, 5xx).
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Unreachable(_) | ApiError::Decode(_) => true,
            ApiError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
        }
    }

    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the balancer that gave this answer is down or failing as a whole (no
    /// answer, or a 5xx), so that another replica may do better.
    pub fn balancer_failed(&self) -> bool {
        match self {
            ApiError::Unreachable(_) => true,
            ApiError::Status { status, .. } => *status >= 500,
            ApiError::Decode(_) => false,
        }
    }

    /// The balancer refused the request's content (400, 413, 422): sending the same
    /// body again cannot help.
    pub fn rejected_content(&self) -> bool {
        matches!(self.status(), Some(400 | 413 | 422))
    }
}

/// What a poll of the assignments found.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// `304 Not Modified`: the assignments are those of the ETag sent.
    Unchanged,
    /// New assignments, with their ETag.
    Changed {
        /// The assignments.
        assignments: Assignments,
        /// Their ETag, to send back as `If-None-Match`.
        etag: Option<String>,
    },
}

/// A client for one node's agent endpoints on one or more balancers, over the shared
/// typed client [`plb_client::Client`] with the agent's own timeouts. Cheap to clone
/// (clones share which balancer is in use).
#[derive(Debug, Clone)]
pub struct BalancerClient {
    balancers: Arc<[(Url, plb_client::Client)]>,
    current: Arc<AtomicUsize>,
    node: String,
    metrics: Option<Arc<Metrics>>,
}

impl From<plb_client::ClientError> for ApiError {
    fn from(e: plb_client::ClientError) -> Self {
        use plb_client::ClientError as E;
        match e {
            E::Transport(m) => ApiError::Unreachable(m),
            E::Api {
                status,
                code,
                message,
            } => ApiError::Status {
                status,
                code,
                message,
            },
            E::Decode(m) | E::Url(m) => ApiError::Decode(m),
        }
    }
}

impl BalancerClient {
    /// A client for the balancer at `base`, authenticating as `token` for `node`.
    pub fn new(base: Url, token: &str, node: &str) -> Result<Self, ApiError> {
        Self::with_balancers(vec![base], token, node, None)
    }

    /// A client for the balancers at `bases` (at least one), starting with the first;
    /// switches are counted in `metrics`.
    pub fn with_balancers(
        bases: Vec<Url>,
        token: &str,
        node: &str,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, ApiError> {
        if bases.is_empty() {
            return Err(ApiError::Decode("no balancer URL".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("plb-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Decode(format!("building the HTTP client: {e}")))?;
        let balancers = bases
            .into_iter()
            .map(|b| {
                let c = plb_client::Client::with_http(b.as_str(), token, http.clone())?;
                Ok((b, c))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(BalancerClient {
            balancers: balancers.into(),
            current: Arc::new(AtomicUsize::new(0)),
            node: node.to_string(),
            metrics,
        })
    }

    /// The base URL calls go to now.
    pub fn current(&self) -> &Url {
        let i = self.current.load(Ordering::Relaxed) % self.balancers.len();
        &self.balancers[i].0
    }

    /// Runs `call` against the balancer in use; when that balancer failed as a whole,
    /// the next call goes to the next one.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: FnOnce(plb_client::Client) -> Fut,
        Fut: Future<Output = Result<T, plb_client::ClientError>>,
    {
        let n = self.balancers.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        let result = call(self.balancers[i].1.clone())
            .await
            .map_err(ApiError::from);
        if let Err(e) = &result
            && n > 1
            && e.balancer_failed()
            && self
                .current
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let next = &self.balancers[(i + 1) % n].0;
            tracing::warn!(from = %self.balancers[i].0, to = %next, error = %e,
                "balancer failed; moving to the next one");
            if let Some(m) = &self.metrics {
                m.balancer_switches.inc();
                m.balancer_index.set(((i + 1) % n) as i64);
            }
        }
        result
    }

    /// `POST /v1/agents/register`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<(), ApiError> {
        self.call(|c| async move { c.register(req).await }).await
    }

    /// `GET /v1/agents/{node}/assignments`, conditional on `etag`.
    pub async fn assignments(&self, etag: Option<&str>) -> Result<Fetched, ApiError> {
        let node = self.node.as_str();
        let fetched = self
            .call(|c| async move { c.assignments(node, etag).await })
            .await?;
        Ok(match fetched {
            plb_client::Fetched::Unchanged => Fetched::Unchanged,
            plb_client::Fetched::Changed { assignments, etag } => {
                Fetched::Changed { assignments, etag }
            }
        })
    }

    /// `GET /v1/modules/{sha256}`: the module's bytes, unverified (the caller checks them).
    pub async fn module(&self, sha256: &str) -> Result<Vec<u8>, ApiError> {
        if sha256.is_empty() || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::Decode(format!("not a sha256: {sha256:?}")));
        }
        let bytes = self.call(|c| async move { c.module(sha256).await }).await?;
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(ApiError::Decode(format!(
                "module {sha256} is larger than {MAX_MODULE_BYTES} bytes"
            )));
        }
        Ok(bytes.to_vec())
    }

    /// `POST /v1/reports`.
    pub async fn report(&self, batch: &ReportBatch) -> Result<ReportAck, ApiError> {
        self.call(|c| async move { c.report(batch).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes() {
        let st = |s| ApiError::Status {
            status: s,
            code: String::new(),
            message: String::new(),
        };
        assert!(ApiError::Unreachable("x".into()).retryable());
        assert!(st(503).retryable() && st(429).retryable() && st(408).retryable());
        assert!(!st(401).retryable() && !st(400).retryable());
        assert!(st(413).rejected_content() && st(400).rejected_content());
        assert!(!st(500).rejected_content());
    }

    /// A loopback URL where nothing listens.
    fn closed() -> Url {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        Url::parse(&format!("http://{addr}/")).expect("url")
    }

    #[tokio::test]
    async fn a_failed_balancer_hands_the_next_call_to_the_next_one() {
        // A balancer that answers: a real HTTP server answering every request 304 (an
        // unchanged assignment list).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let app =
                axum::Router::new().fallback(|| async { axum::http::StatusCode::NOT_MODIFIED });
            let _ = axum::serve(l, app).await;
        });
        let up = Url::parse(&format!("http://{addr}/")).expect("url");
        let metrics = Arc::new(Metrics::new());
        let c = BalancerClient::with_balancers(
            vec![closed(), up.clone()],
            "t",
            "n1",
            Some(Arc::clone(&metrics)),
        )
        .expect("client");
        let e = c
            .assignments(Some("\"x\""))
            .await
            .expect_err("first is down");
        assert!(e.balancer_failed() && e.retryable(), "{e}");
        assert_eq!(c.current(), &up, "the next call goes to the second");
        assert!(matches!(
            c.clone().assignments(Some("\"x\"")).await,
            Ok(Fetched::Unchanged)
        ));
        assert_eq!(c.current(), &up, "a balancer that answers is kept");
        assert_eq!(metrics.balancer_switches.get(), 1);
        assert_eq!(metrics.balancer_index.get(), 1);
        // A 4xx is the request's fault, not the balancer's: no switch.
        let st = ApiError::Status {
            status: 401,
            code: String::new(),
            message: String::new(),
        };
        assert!(!st.balancer_failed());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_retryable() {
        let c = BalancerClient::new(closed(), "t", "n1").expect("client");
        let e = c.assignments(None).await.expect_err("closed port");
        assert!(
            matches!(e, ApiError::Unreachable(_)) && e.retryable(),
            "{e}"
        );
    }
}
