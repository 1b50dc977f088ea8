//! The agent's calls to the balancer's agent endpoints (register, assignments with ETag,
//! modules by sha256, sample reports) over `plb-client`, with errors that say whether a
//! retry can help.
use std::time::Duration;

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

/// A client for one node's agent endpoints, over the shared typed client
/// [`plb_client::Client`] with the agent's own timeouts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BalancerClient {
    inner: plb_client::Client,
    node: String,
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
    /// A client for `base`, authenticating as `token` for `node`.
    pub fn new(base: Url, token: &str, node: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("plb-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Decode(format!("building the HTTP client: {e}")))?;
        let inner = plb_client::Client::with_http(base.as_str(), token, http)?;
        Ok(BalancerClient {
            inner,
            node: node.to_string(),
        })
    }

    /// `POST /v1/agents/register`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<(), ApiError> {
        Ok(self.inner.register(req).await?)
    }

    /// `GET /v1/agents/{node}/assignments`, conditional on `etag`.
    pub async fn assignments(&self, etag: Option<&str>) -> Result<Fetched, ApiError> {
        Ok(match self.inner.assignments(&self.node, etag).await? {
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
        let bytes = self.inner.module(sha256).await?;
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(ApiError::Decode(format!(
                "module {sha256} is larger than {MAX_MODULE_BYTES} bytes"
            )));
        }
        Ok(bytes.to_vec())
    }

    /// `POST /v1/reports`.
    pub async fn report(&self, batch: &ReportBatch) -> Result<ReportAck, ApiError> {
        Ok(self.inner.report(batch).await?)
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

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_retryable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let base = Url::parse(&format!("http://{addr}/")).expect("url");
        let c = BalancerClient::new(base, "t", "n1").expect("client");
        let e = c.assignments(None).await.expect_err("closed port");
        assert!(
            matches!(e, ApiError::Unreachable(_)) && e.retryable(),
            "{e}"
        );
    }
}
