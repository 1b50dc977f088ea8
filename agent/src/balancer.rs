//! The agent's HTTP client for the balancer's agent endpoints: register, assignments
//! (with ETag), modules by sha256 and sample reports. Errors say whether a retry can help.
use std::time::Duration;

use plb_api::{Assignments, ErrorBody, RegisterRequest, ReportAck, ReportBatch};
use reqwest::{StatusCode, Url, header};

/// Largest module the agent downloads.
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

/// A client for one node's agent endpoints. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BalancerClient {
    http: reqwest::Client,
    base: Url,
    token: String,
    node: String,
}

fn unreachable(e: reqwest::Error) -> ApiError {
    // Keep the cause chain: "error sending request" alone says nothing.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ApiError::Unreachable(msg)
}

async fn status_error(resp: reqwest::Response) -> ApiError {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => ApiError::Status {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ApiError::Status {
            status,
            code: String::new(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

impl BalancerClient {
    /// A client for `base` (ending in `/`), authenticating as `token` for `node`.
    pub fn new(base: Url, token: &str, node: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("plb-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(BalancerClient {
            http,
            base,
            token: token.to_string(),
            node: node.to_string(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base
            .join(path)
            .map_err(|e| ApiError::Decode(format!("bad URL for {path}: {e}")))
    }

    /// `POST /v1/agents/register`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<(), ApiError> {
        let resp = self
            .http
            .post(self.url("v1/agents/register")?)
            .bearer_auth(&self.token)
            .json(req)
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        Ok(())
    }

    /// `GET /v1/agents/{node}/assignments`, conditional on `etag`.
    pub async fn assignments(&self, etag: Option<&str>) -> Result<Fetched, ApiError> {
        let mut req = self
            .http
            .get(self.url(&format!("v1/agents/{}/assignments", self.node))?)
            .bearer_auth(&self.token);
        if let Some(tag) = etag {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = req.send().await.map_err(unreachable)?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::Unchanged);
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let assignments = resp
            .json::<Assignments>()
            .await
            .map_err(|e| ApiError::Decode(format!("assignments: {e}")))?;
        Ok(Fetched::Changed { assignments, etag })
    }

    /// `GET /v1/modules/{sha256}`: the module's bytes, unverified (the caller checks them).
    pub async fn module(&self, sha256: &str) -> Result<Vec<u8>, ApiError> {
        if sha256.is_empty() || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::Decode(format!("not a sha256: {sha256:?}")));
        }
        let mut resp = self
            .http
            .get(self.url(&format!("v1/modules/{sha256}"))?)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_MODULE_BYTES {
                return Err(ApiError::Decode(format!(
                    "module {sha256} is larger than {MAX_MODULE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// `POST /v1/reports`.
    pub async fn report(&self, batch: &ReportBatch) -> Result<ReportAck, ApiError> {
        let resp = self
            .http
            .post(self.url("v1/reports")?)
            .bearer_auth(&self.token)
            .json(batch)
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        resp.json::<ReportAck>()
            .await
            .map_err(|e| ApiError::Decode(format!("report ack: {e}")))
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
