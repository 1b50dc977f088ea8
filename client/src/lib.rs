//! A typed async client of PLB's REST API v1 (over reqwest), for the CLI (`plb probe
//! upload`, `plb pool create`, ...), agents and end-to-end tests. One method per
//! endpoint, returning the `plb_api` types; a failed call carries the server's
//! `{code, message}` and says whether retrying can help.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use plb_api::{
    AgentTokenCreated, Assignments, ClientCreated, CreateAgentToken, CreateClient, CreatePool,
    ErrorBody, Health, PoolList, PoolNodes, PoolView, ProbeList, ProbeSettings, ProbeView,
    RegisterRequest, ReportAck, ReportBatch,
};
pub use reqwest::Method;
use reqwest::{RequestBuilder, Response, StatusCode, Url, header};
use serde::de::DeserializeOwned;

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `code` and `message` come from its
    /// `{"error": {...}}` body (empty code when the body had another shape).
    #[error("{status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code, e.g. `not_found`, `invalid_probe`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("the balancer is unreachable: {0}")]
    Transport(String),
    /// An answer that is not what the API promises.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A bad base URL.
    #[error("bad URL: {0}")]
    Url(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    /// Whether the same call may succeed later: no answer, 408, 429 or 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            ClientError::Decode(_) | ClientError::Url(_) => false,
        }
    }
}

fn transport(e: reqwest::Error) -> ClientError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ClientError::Transport(msg)
}

/// The result of a probe upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    /// The active version now.
    pub probe: ProbeView,
    /// Whether a new version was created (false: the same bytes and settings were active).
    pub created: bool,
}

/// What a conditional poll of the assignments found.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// 304: unchanged since the ETag sent.
    Unchanged,
    /// New assignments and their ETag.
    Changed {
        /// The assignments.
        assignments: Assignments,
        /// Send back as `If-None-Match`.
        etag: Option<String>,
    },
}

/// A client for one balancer and one token. Cheap to clone (shares connections).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: configs and clients end up in logs and panics.
        f.debug_struct("Client")
            .field("http", &self.http)
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// A client of the balancer at `base_url` (e.g. `http://127.0.0.1:7070`) using `token`.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("plb-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(transport)?;
        Client::with_http(base_url, token, http)
    }

    /// Like [`Client::new`] over a caller-built `reqwest::Client`.
    pub fn with_http(
        base_url: &str,
        token: impl Into<String>,
        http: reqwest::Client,
    ) -> Result<Client, ClientError> {
        let base =
            Url::parse(base_url).map_err(|e| ClientError::Url(format!("{base_url}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Url(format!("{base_url}: not an http(s) URL")));
        }
        Ok(Client {
            http,
            base,
            token: token.into(),
        })
    }

    /// The same balancer and connections with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.into(),
        }
    }

    /// The token it sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Url(format!("{}: cannot be a base", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(transport)?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            Ok(resp)
        } else {
            Err(api_error(resp).await)
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET` any API path (segments are escaped) with query pairs, answering raw JSON:
    /// for endpoints without a typed method here (the CLI prints them as they are).
    pub async fn get_value(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, ClientError> {
        let mut url = self.url(segments)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// `method` any API path with a JSON body, answering raw JSON (`null` for an empty
    /// answer).
    pub async fn send_value(
        &self,
        method: Method,
        segments: &[&str],
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let url = self.url(segments)?;
        let resp = self.send(self.request(method, url).json(body)).await?;
        let bytes = resp.bytes().await.map_err(transport)?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    // Clients and tokens.

    /// `POST /v1/clients` (admin token): a new client and its API token.
    pub async fn create_client(&self, name: &str) -> Result<ClientCreated, ClientError> {
        let body = CreateClient { name: name.into() };
        self.json(
            self.request(Method::POST, self.url(&["v1", "clients"])?)
                .json(&body),
        )
        .await
    }

    /// `DELETE /v1/clients/{id}` (admin token).
    pub async fn revoke_client(&self, id: i64) -> Result<(), ClientError> {
        let url = self.url(&["v1", "clients", &id.to_string()])?;
        self.send(self.request(Method::DELETE, url)).await.map(drop)
    }

    /// `POST /v1/agent-tokens`: an agent token for `pools` (`client` is required with the
    /// admin token).
    pub async fn create_agent_token(
        &self,
        pools: &[&str],
        client: Option<i64>,
    ) -> Result<AgentTokenCreated, ClientError> {
        let body = CreateAgentToken {
            pools: pools.iter().map(|p| p.to_string()).collect(),
            client,
        };
        let url = self.url(&["v1", "agent-tokens"])?;
        self.json(self.request(Method::POST, url).json(&body)).await
    }

    /// `DELETE /v1/agent-tokens/{id}`.
    pub async fn revoke_agent_token(&self, id: i64) -> Result<(), ClientError> {
        let url = self.url(&["v1", "agent-tokens", &id.to_string()])?;
        self.send(self.request(Method::DELETE, url)).await.map(drop)
    }

    // Pools.

    /// `POST /v1/pools`.
    pub async fn create_pool(
        &self,
        name: &str,
        latency_slo_ms: f64,
    ) -> Result<PoolView, ClientError> {
        let body = CreatePool {
            name: name.into(),
            latency_slo_ms,
        };
        let url = self.url(&["v1", "pools"])?;
        self.json(self.request(Method::POST, url).json(&body)).await
    }

    /// `GET /v1/pools`.
    pub async fn pools(&self) -> Result<Vec<PoolView>, ClientError> {
        let url = self.url(&["v1", "pools"])?;
        let list: PoolList = self.json(self.request(Method::GET, url)).await?;
        Ok(list.pools)
    }

    /// `GET /v1/pools/{pool}`.
    pub async fn pool(&self, pool: &str) -> Result<PoolView, ClientError> {
        let url = self.url(&["v1", "pools", pool])?;
        self.json(self.request(Method::GET, url)).await
    }

    /// `GET /v1/pools/{pool}/nodes`.
    pub async fn pool_nodes(&self, pool: &str) -> Result<PoolNodes, ClientError> {
        let url = self.url(&["v1", "pools", pool, "nodes"])?;
        self.json(self.request(Method::GET, url)).await
    }

    // Probes.

    /// `PUT /v1/pools/{pool}/probes/{name}`: uploads a component with its settings.
    pub async fn upload_probe(
        &self,
        pool: &str,
        name: &str,
        wasm: impl Into<Bytes>,
        settings: &ProbeSettings,
    ) -> Result<Uploaded, ClientError> {
        let mut url = self.url(&["v1", "pools", pool, "probes", name])?;
        let config = serde_json::to_string(&settings.config)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("tier", settings.tier.as_str())
            .append_pair("interval_ms", &settings.interval_ms.to_string())
            .append_pair("timeout_ms", &settings.timeout_ms.to_string())
            .append_pair(
                "fuel",
                &settings.fuel.map_or("null".to_string(), |f| f.to_string()),
            )
            .append_pair("memory_mib", &settings.memory_mib.to_string())
            .append_pair("config", &config);
        let req = self
            .request(Method::PUT, url)
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(wasm.into());
        let resp = self.send(req).await?;
        let created = resp.status() == StatusCode::CREATED;
        let bytes = resp.bytes().await.map_err(transport)?;
        let probe =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Uploaded { probe, created })
    }

    /// `GET /v1/pools/{pool}/probes`.
    pub async fn probes(&self, pool: &str) -> Result<Vec<ProbeView>, ClientError> {
        let url = self.url(&["v1", "pools", pool, "probes"])?;
        let list: ProbeList = self.json(self.request(Method::GET, url)).await?;
        Ok(list.probes)
    }

    /// `GET /v1/pools/{pool}/probes/{name}`.
    pub async fn probe(&self, pool: &str, name: &str) -> Result<ProbeView, ClientError> {
        let url = self.url(&["v1", "pools", pool, "probes", name])?;
        self.json(self.request(Method::GET, url)).await
    }

    /// `DELETE /v1/pools/{pool}/probes/{name}`.
    pub async fn delete_probe(&self, pool: &str, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "pools", pool, "probes", name])?;
        self.send(self.request(Method::DELETE, url)).await.map(drop)
    }

    // Agents.

    /// `POST /v1/agents/register` (agent token).
    pub async fn register(&self, req: &RegisterRequest) -> Result<(), ClientError> {
        let url = self.url(&["v1", "agents", "register"])?;
        self.send(self.request(Method::POST, url).json(req))
            .await
            .map(drop)
    }

    /// `GET /v1/agents/{node}/assignments` (agent token), conditional on `etag`.
    pub async fn assignments(
        &self,
        node: &str,
        etag: Option<&str>,
    ) -> Result<Fetched, ClientError> {
        let url = self.url(&["v1", "agents", node, "assignments"])?;
        let mut req = self.request(Method::GET, url);
        if let Some(tag) = etag {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::Unchanged);
        }
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(transport)?;
        let assignments =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Fetched::Changed { assignments, etag })
    }

    /// `GET /v1/modules/{sha256}` (agent token): the module's bytes, unverified.
    pub async fn module(&self, sha256: &str) -> Result<Bytes, ClientError> {
        let url = self.url(&["v1", "modules", sha256])?;
        let resp = self.send(self.request(Method::GET, url)).await?;
        resp.bytes().await.map_err(transport)
    }

    /// `POST /v1/reports` (agent token).
    pub async fn report(&self, batch: &ReportBatch) -> Result<ReportAck, ClientError> {
        let url = self.url(&["v1", "reports"])?;
        self.json(self.request(Method::POST, url).json(batch)).await
    }

    // Operations.

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = self.url(&["healthz"])?;
        self.json(self.http.get(url)).await
    }

    /// `GET /metrics`: the Prometheus text, asked with this client's token (the metrics
    /// or the admin token shows the series labelled with tenants' pools and probes).
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let url = self.url(&["metrics"])?;
        let resp = self.send(self.request(Method::GET, url)).await?;
        resp.text().await.map_err(transport)
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&["v1", "openapi.json"])?;
        self.json(self.http.get(url)).await
    }
}

async fn api_error(resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => ClientError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: String::new(),
            message: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_path_and_escape_segments() {
        let c = Client::new("http://127.0.0.1:7070/plb/", "t").expect("client");
        let u = c.url(&["v1", "pools", "a b"]).expect("url");
        assert_eq!(u.as_str(), "http://127.0.0.1:7070/plb/v1/pools/a%20b");
        let c = Client::new("http://127.0.0.1:7070", "t").expect("client");
        assert_eq!(
            c.url(&["healthz"]).expect("url").as_str(),
            "http://127.0.0.1:7070/healthz"
        );
        assert!(Client::new("mailto:x@y", "t").is_err());
        assert!(Client::new("not a url", "t").is_err());
    }

    #[test]
    fn retry_classes() {
        let api = |status| ClientError::Api {
            status,
            code: "x".into(),
            message: String::new(),
        };
        assert!(api(503).retryable() && api(429).retryable());
        assert!(!api(404).retryable() && !api(422).retryable());
        assert!(ClientError::Transport("refused".into()).retryable());
        assert_eq!(api(404).code(), Some("x"));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_retryable_transport_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let c = Client::new(&format!("http://{addr}"), "t").expect("client");
        let e = c.health().await.expect_err("closed port");
        assert!(
            matches!(e, ClientError::Transport(_)) && e.retryable(),
            "{e}"
        );
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let c = Client::new("http://127.0.0.1:7070", "plbc_secret-token-value").expect("client");
        let d = format!("{c:?}");
        assert!(!d.contains("secret-token-value"), "{d}");
        assert!(d.contains("<redacted>"), "{d}");
        let d = format!("{:?}", c.with_token("plba_other-secret"));
        assert!(!d.contains("other-secret"), "{d}");
    }
}
