//! The balancer's one config: CLI flags with `PLB_*` environment fallbacks (flattened
//! into `plb balancer` by the CLI), validated once with typed errors. It sits above the
//! layers it configures and builds their settings from its flags (the store's
//! [`Synchronous`], the proxy's [`ProxySpec`] and [`EdgesConfig`], the webhooks'
//! [`DeliveryConfig`]); none of them reads it.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::netpolicy::{IpNet, NetPolicy, parse_network};
use crate::proxy::{EdgesConfig, ForwardSettings, ProxySpec};
use crate::store::{Quotas, Synchronous};
use crate::webhooks::DeliveryConfig;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default upload limit: 16 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 16 * 1024 * 1024;
/// Default limit of a JSON request body: 8 MiB.
pub const DEFAULT_MAX_JSON_BYTES: u64 = 8 * 1024 * 1024;
/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Where the store is: `--db` (`PLB_DB`).
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: a `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl std::str::FromStr for DbLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if crate::store::is_postgres_url(s) {
            Ok(DbLocation::Postgres(s.to_string()))
        } else if s.is_empty() {
            Err("--db needs a SQLite file or a postgres:// URL".into())
        } else {
            Ok(DbLocation::Sqlite(PathBuf::from(s)))
        }
    }
}

impl From<PathBuf> for DbLocation {
    fn from(p: PathBuf) -> Self {
        match p.to_str() {
            Some(s) if crate::store::is_postgres_url(s) => DbLocation::Postgres(s.to_string()),
            _ => DbLocation::Sqlite(p),
        }
    }
}

impl From<&std::path::Path> for DbLocation {
    fn from(p: &std::path::Path) -> Self {
        DbLocation::from(p.to_path_buf())
    }
}

impl From<&str> for DbLocation {
    fn from(s: &str) -> Self {
        DbLocation::from(PathBuf::from(s))
    }
}

impl From<String> for DbLocation {
    fn from(s: String) -> Self {
        DbLocation::from(PathBuf::from(s))
    }
}

impl std::fmt::Debug for DbLocation {
    /// A PostgreSQL URL without its user, password and parameters (secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbLocation::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            DbLocation::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                write!(f, "{scheme}://{rest}")
            }
        }
    }
}

/// `plb balancer` settings.
#[derive(Clone, clap::Args)]
pub struct BalancerConfig {
    /// Address to listen on.
    #[arg(long, env = "PLB_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// The store: a SQLite database file (created if missing; the default), or a
    /// PostgreSQL database as a `postgres://USER:PASSWORD@HOST:PORT/DB` URL (also
    /// `postgresql://`; a unix socket directory as `?host=/run/postgresql`), migrated at
    /// start and shareable by several balancers.
    #[arg(long, env = "PLB_DB", default_value = "plb.db", hide_env_values = true)]
    pub db: DbLocation,

    /// The admin token: creates clients and agent tokens. At least 16 characters.
    #[arg(long, env = "PLB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// Token for `/metrics` (`Authorization: Bearer <it>`; the admin token works too). When
    /// set, `/metrics` refuses callers without it; when not, anyone gets the aggregate
    /// series and only the admin token shows the series labelled with tenants' pool and
    /// probe names. At least 16 characters.
    #[arg(long, env = "PLB_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Largest probe upload, in bytes (413 past it).
    #[arg(long, env = "PLB_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,

    /// Largest JSON request body (e.g. a report batch), in bytes (413 past it).
    #[arg(long, env = "PLB_MAX_JSON_BYTES", default_value_t = DEFAULT_MAX_JSON_BYTES)]
    pub max_json_bytes: u64,

    /// How long raw samples are kept before being folded into per-minute aggregates,
    /// e.g. `24h`, `90m`, `3600s` or `3600` (seconds).
    #[arg(long, env = "PLB_RETENTION_RAW", default_value = "24h", value_parser = parse_duration)]
    pub retention_raw: Duration,

    /// How long per-minute aggregates are kept, e.g. `30d`.
    #[arg(long, env = "PLB_RETENTION_AGGREGATES", default_value = "30d", value_parser = parse_duration)]
    pub retention_aggregates: Duration,

    /// How often the retention pass runs, e.g. `1m`.
    #[arg(long, env = "PLB_RETENTION_EVERY", default_value = "1m", value_parser = parse_duration)]
    pub retention_every: Duration,

    /// SQLite durability of acknowledged writes (on PostgreSQL the server's
    /// `synchronous_commit` decides): `normal` survives a crash of the
    /// process, not a power loss (the last commits may be lost); `full` fsyncs every
    /// commit and survives a power loss, at 0.5-0.8x the HTTP ingest rate (ingest
    /// bench).
    #[arg(long, env = "PLB_DB_SYNC", value_enum, default_value_t = Synchronous::Normal)]
    pub db_sync: Synchronous,

    /// This replica's name, shown by `/healthz` and in the logs of a leader election
    /// (balancers sharing a PostgreSQL database). Default: the host name and process id.
    #[arg(long, env = "PLB_REPLICA")]
    pub replica: Option<String>,

    /// Read connections open at most (1 to 64); more reads wait for one. Token lookups
    /// the cache cannot answer take at most half of them.
    #[arg(long, env = "PLB_DB_READERS", default_value_t = 4)]
    pub db_readers: usize,

    /// Reverse-proxy a pool: `CLIENT_ID/POOL=LISTEN_ADDR`, the owner's client id and the
    /// pool's name, e.g. `1/web=0.0.0.0:8080`. Repeatable; in the environment,
    /// comma-separated.
    #[arg(long = "proxy", env = "PLB_PROXY", value_delimiter = ',')]
    pub proxy: Vec<ProxySpec>,

    /// Time for the proxy to open a connection to a node, in milliseconds.
    #[arg(long, env = "PLB_PROXY_CONNECT_TIMEOUT_MS", default_value_t = 1000)]
    pub proxy_connect_timeout_ms: u64,

    /// Time for one proxied exchange (response headers and body), in milliseconds.
    #[arg(long, env = "PLB_PROXY_TIMEOUT_MS", default_value_t = 60_000)]
    pub proxy_timeout_ms: u64,

    /// Retries of `503` answers, as a fraction of the proxy's requests: an idempotent
    /// request a node answers `503` is sent to another node while the budget allows
    /// (each request adds this much of a retry, up to a burst of 10 per proxy thread).
    /// 0 turns them off.
    #[arg(long, env = "PLB_PROXY_RETRY_BUDGET", default_value_t = 0.2)]
    pub proxy_retry_budget: f64,

    /// Threads each proxied pool is served on, each a single-threaded runtime with its
    /// own connections to the nodes. Default: one per core, at most 64 (as HAProxy).
    /// Fewer leave cores to the balancer's pipeline and whatever shares the machine, at
    /// some throughput.
    #[arg(long, env = "PLB_PROXY_THREADS")]
    pub proxy_threads: Option<usize>,

    /// Forward the common exchange (HTTP/1.1, no body or a small `Content-Length` one,
    /// no `Expect`, `Upgrade` or transfer coding) on the proxy's own byte-level path;
    /// `false` sends every request through hyper (the escape hatch, and the baseline the
    /// proxy benchmark compares with).
    #[arg(long, env = "PLB_PROXY_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub proxy_fast_path: bool,

    /// Serve HAProxy's agent-check protocol on this address: HAProxy sends
    /// `CLIENT_ID/POOL/NODE` (`agent-send`) and reads the node's weight and state.
    #[arg(long, env = "PLB_AGENT_CHECK")]
    pub agent_check: Option<SocketAddr>,

    /// Time allowed for one webhook POST, in milliseconds.
    #[arg(long, env = "PLB_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// Delay before the first webhook retry, in milliseconds; doubles with each failure.
    #[arg(long, env = "PLB_WEBHOOK_RETRY_MS", default_value_t = 1_000)]
    pub webhook_retry_ms: u64,

    /// Longest delay between webhook retries, in milliseconds.
    #[arg(long, env = "PLB_WEBHOOK_RETRY_MAX_MS", default_value_t = 600_000)]
    pub webhook_retry_max_ms: u64,

    /// Networks webhooks may target although they are internal (loopback, private,
    /// link-local, unique-local, metadata), as CIDRs, comma-separated, e.g.
    /// `10.20.0.0/16`. Default: none, webhooks reach public addresses only.
    #[arg(long, env = "PLB_WEBHOOK_ALLOW_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub webhook_allow_networks: Vec<IpNet>,

    /// The only networks nodes may have addresses in (checked at registration and at
    /// every proxy connect), as CIDRs, comma-separated. Default: any address but
    /// link-local and cloud metadata ones.
    #[arg(long, env = "PLB_NODE_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub node_networks: Vec<IpNet>,

    /// Peers whose `X-Forwarded-*` and `Forwarded` headers the proxy extends, as CIDRs,
    /// comma-separated. From any other peer they are replaced. Default: none.
    #[arg(long, env = "PLB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<IpNet>,

    /// Time for an API request's headers to arrive, in milliseconds (also how long an
    /// idle keep-alive connection is kept).
    #[arg(long, env = "PLB_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,

    /// Longest wait for the next part of an API request body, in milliseconds.
    #[arg(long, env = "PLB_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_body_timeout_ms: u64,

    /// An API connection with nothing read or written for this long is closed, in
    /// milliseconds (idle keep-alive connections; a handler silent this long too).
    #[arg(long, env = "PLB_HTTP_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub http_idle_timeout_ms: u64,

    /// API connections served at once; more wait in the listen backlog.
    #[arg(long, env = "PLB_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Probe uploads of one client that may wait, bodies unread, while another of its
    /// uploads is read and compiled (one at a time per client); more are answered 429
    /// with `Retry-After`.
    #[arg(long, env = "PLB_UPLOAD_QUEUE", default_value_t = 2)]
    pub upload_queue: usize,

    /// Longest wait of a queued upload for its client's turn, in milliseconds (then 429).
    #[arg(long, env = "PLB_UPLOAD_WAIT_MS", default_value_t = 20_000)]
    pub upload_wait_ms: u64,

    /// Quota: pools per client (403 `quota_exceeded` past any quota).
    #[arg(long, env = "PLB_QUOTA_POOLS", default_value_t = Quotas::default().pools)]
    pub quota_pools: u64,

    /// Quota: active probes per pool.
    #[arg(long, env = "PLB_QUOTA_PROBES", default_value_t = Quotas::default().probes_per_pool)]
    pub quota_probes: u64,

    /// Quota: stored versions per probe (superseded versions are removed once
    /// `--retention-raw` has passed, all of them when the probe is deleted).
    #[arg(long, env = "PLB_QUOTA_PROBE_VERSIONS", default_value_t = Quotas::default().versions_per_probe)]
    pub quota_probe_versions: u64,

    /// Quota: nodes per pool.
    #[arg(long, env = "PLB_QUOTA_NODES", default_value_t = Quotas::default().nodes_per_pool)]
    pub quota_nodes: u64,

    /// Quota: bytes of the distinct modules a client's stored probe versions use.
    #[arg(long, env = "PLB_QUOTA_MODULE_BYTES", default_value_t = Quotas::default().module_bytes)]
    pub quota_module_bytes: u64,

    /// Quota: live (not revoked) agent tokens per client.
    #[arg(long, env = "PLB_QUOTA_AGENT_TOKENS", default_value_t = Quotas::default().agent_tokens)]
    pub quota_agent_tokens: u64,
}

impl std::fmt::Debug for BalancerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerConfig")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("admin_token", &"<redacted>")
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_json_bytes", &self.max_json_bytes)
            .field("retention_raw", &self.retention_raw)
            .field("retention_aggregates", &self.retention_aggregates)
            .field("retention_every", &self.retention_every)
            .field("db_sync", &self.db_sync)
            .field("db_readers", &self.db_readers)
            .field("replica", &self.replica)
            .field("proxy", &self.proxy)
            .field("proxy_connect_timeout_ms", &self.proxy_connect_timeout_ms)
            .field("proxy_timeout_ms", &self.proxy_timeout_ms)
            .field("proxy_retry_budget", &self.proxy_retry_budget)
            .field("proxy_threads", &self.proxy_threads)
            .field("proxy_fast_path", &self.proxy_fast_path)
            .field("agent_check", &self.agent_check)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("webhook_retry_ms", &self.webhook_retry_ms)
            .field("webhook_retry_max_ms", &self.webhook_retry_max_ms)
            .field("webhook_allow_networks", &self.webhook_allow_networks)
            .field("node_networks", &self.node_networks)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("http_header_timeout_ms", &self.http_header_timeout_ms)
            .field("http_body_timeout_ms", &self.http_body_timeout_ms)
            .field("http_idle_timeout_ms", &self.http_idle_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("upload_queue", &self.upload_queue)
            .field("upload_wait_ms", &self.upload_wait_ms)
            .field("quotas", &self.quotas())
            .finish()
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The admin token is too short to be a secret.
    #[error("--admin-token (PLB_ADMIN_TOKEN) must be at least {MIN_ADMIN_TOKEN_LEN} characters")]
    AdminTokenTooShort,
    /// The admin token looks like a client or agent token.
    #[error(
        "--admin-token must not start with `plbc_` or `plba_` (those are client and agent tokens)"
    )]
    AdminTokenPrefix,
    /// The metrics token is too short to be a secret.
    #[error(
        "--metrics-token (PLB_METRICS_TOKEN) must be at least {MIN_ADMIN_TOKEN_LEN} characters"
    )]
    MetricsTokenTooShort,
    /// A size limit out of range.
    #[error("--{flag} must be between {min} and {max} bytes, got {got}")]
    Size {
        /// The flag.
        flag: &'static str,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
        /// Given.
        got: u64,
    },
    /// A duration out of range.
    #[error("--{flag}: {message}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Zero readers.
    #[error("--db-readers must be between 1 and 64")]
    Readers,
    /// A fraction outside 0..=1 (or not a number).
    #[error("--{flag} must be a fraction between 0 and 1, got {got}")]
    Ratio {
        /// The flag.
        flag: &'static str,
        /// Given, as written.
        got: String,
    },
    /// A quota or upload limit of zero (nothing could be created) or out of range.
    #[error("--{flag} must be between {min} and {max}, got {got}")]
    Limit {
        /// The flag.
        flag: &'static str,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
        /// Given.
        got: u64,
    },
}

impl BalancerConfig {
    /// A config with every default, for `db` and `admin_token`.
    pub fn new(db: impl Into<DbLocation>, admin_token: impl Into<String>) -> Self {
        BalancerConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7070))),
            db: db.into(),
            admin_token: admin_token.into(),
            metrics_token: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
            retention_raw: Duration::from_secs(24 * 3600),
            retention_aggregates: Duration::from_secs(30 * 24 * 3600),
            retention_every: Duration::from_secs(60),
            db_sync: Synchronous::Normal,
            db_readers: 4,
            replica: None,
            proxy: Vec::new(),
            proxy_connect_timeout_ms: 1000,
            proxy_timeout_ms: 60_000,
            proxy_retry_budget: 0.2,
            proxy_threads: None,
            proxy_fast_path: true,
            agent_check: None,
            webhook_timeout_ms: 10_000,
            webhook_retry_ms: 1_000,
            webhook_retry_max_ms: 600_000,
            webhook_allow_networks: Vec::new(),
            node_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_idle_timeout_ms: 60_000,
            max_connections: 1024,
            upload_queue: 2,
            upload_wait_ms: 20_000,
            quota_pools: Quotas::default().pools,
            quota_probes: Quotas::default().probes_per_pool,
            quota_probe_versions: Quotas::default().versions_per_probe,
            quota_nodes: Quotas::default().nodes_per_pool,
            quota_module_bytes: Quotas::default().module_bytes,
            quota_agent_tokens: Quotas::default().agent_tokens,
        }
    }

    /// The per-client quotas the store enforces.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            pools: self.quota_pools,
            probes_per_pool: self.quota_probes,
            versions_per_probe: self.quota_probe_versions,
            nodes_per_pool: self.quota_nodes,
            module_bytes: self.quota_module_bytes,
            agent_tokens: self.quota_agent_tokens,
        }
    }

    /// How long a queued upload waits for its client's turn.
    pub fn upload_wait(&self) -> Duration {
        Duration::from_millis(self.upload_wait_ms.max(1))
    }

    /// How webhook deliveries are retried.
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            timeout_ms: self.webhook_timeout_ms.clamp(1, 300_000),
            backoff_base_ms: self.webhook_retry_ms.max(1),
            backoff_max_ms: self.webhook_retry_max_ms.max(self.webhook_retry_ms).max(1),
            networks: NetPolicy::webhooks(&self.webhook_allow_networks),
            ..DeliveryConfig::default()
        }
    }

    /// The API server's timeouts and connection cap.
    pub fn server_limits(&self) -> crate::server::ServerLimits {
        crate::server::ServerLimits {
            header_timeout: Duration::from_millis(self.http_header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(self.http_body_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms.max(1)),
            max_connections: self.max_connections.max(1),
            ..crate::server::ServerLimits::default()
        }
    }

    /// Where nodes may be (registration and proxy connects).
    pub fn node_policy(&self) -> NetPolicy {
        NetPolicy::nodes(&self.node_networks)
    }

    /// The proxies and the agent-check export to start.
    pub fn edges(&self) -> EdgesConfig {
        EdgesConfig {
            proxies: self.proxy.clone(),
            forward: ForwardSettings {
                connect_timeout: Duration::from_millis(self.proxy_connect_timeout_ms),
                total_timeout: Duration::from_millis(self.proxy_timeout_ms),
                retry_budget: self.proxy_retry_budget,
                nodes: self.node_policy(),
                trusted_proxies: NetPolicy::only(&self.trusted_proxies),
                fast_path: self.proxy_fast_path,
                ..ForwardSettings::default()
            },
            threads: self
                .proxy_threads
                .unwrap_or_else(crate::proxy::default_threads),
            agent_check: self.agent_check,
        }
    }

    /// `--replica`, or the host name and process id.
    pub fn replica_name(&self) -> String {
        match &self.replica {
            Some(r) => r.clone(),
            None => {
                let host = std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "plb".to_string());
                format!("{host}-{}", std::process::id())
            }
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.admin_token.chars().count() < MIN_ADMIN_TOKEN_LEN {
            return Err(ConfigError::AdminTokenTooShort);
        }
        if self.admin_token.starts_with("plbc_") || self.admin_token.starts_with("plba_") {
            return Err(ConfigError::AdminTokenPrefix);
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.chars().count() < MIN_ADMIN_TOKEN_LEN)
        {
            return Err(ConfigError::MetricsTokenTooShort);
        }
        let size = |flag, got: u64, min: u64, max: u64| {
            if (min..=max).contains(&got) {
                Ok(())
            } else {
                Err(ConfigError::Size {
                    flag,
                    min,
                    max,
                    got,
                })
            }
        };
        size("max-upload-bytes", self.max_upload_bytes, 1024, 1 << 30)?;
        size("max-json-bytes", self.max_json_bytes, 1024, 1 << 30)?;
        let dur = |flag, d: Duration, min: Duration| {
            if d < min {
                Err(ConfigError::Duration {
                    flag,
                    message: format!("must be at least {}s, got {}s", min.as_secs(), d.as_secs()),
                })
            } else {
                Ok(())
            }
        };
        dur("retention-raw", self.retention_raw, Duration::from_secs(60))?;
        dur(
            "retention-aggregates",
            self.retention_aggregates,
            Duration::from_secs(60),
        )?;
        dur(
            "retention-every",
            self.retention_every,
            Duration::from_secs(1),
        )?;
        if self.retention_aggregates < self.retention_raw {
            return Err(ConfigError::Duration {
                flag: "retention-aggregates",
                message: "must not be shorter than --retention-raw".into(),
            });
        }
        if !(1..=600_000).contains(&self.proxy_connect_timeout_ms)
            || !(1..=86_400_000).contains(&self.proxy_timeout_ms)
        {
            return Err(ConfigError::Duration {
                flag: "proxy-timeout-ms",
                message: "proxy timeouts must be between 1 ms and 10 min (connect) or 24 h (total)"
                    .into(),
            });
        }
        if !(0.0..=1.0).contains(&self.proxy_retry_budget) {
            return Err(ConfigError::Ratio {
                flag: "proxy-retry-budget",
                got: self.proxy_retry_budget.to_string(),
            });
        }
        if !(1..=64).contains(&self.db_readers) {
            return Err(ConfigError::Readers);
        }
        let limit = |flag, got: u64, min: u64, max: u64| {
            if (min..=max).contains(&got) {
                Ok(())
            } else {
                Err(ConfigError::Limit {
                    flag,
                    min,
                    max,
                    got,
                })
            }
        };
        limit("upload-queue", self.upload_queue as u64, 0, 1024)?;
        if let Some(n) = self.proxy_threads {
            limit("proxy-threads", n as u64, 1, 1024)?;
        }
        limit("upload-wait-ms", self.upload_wait_ms, 1, 600_000)?;
        limit("quota-pools", self.quota_pools, 1, u64::MAX)?;
        limit("quota-probes", self.quota_probes, 1, u64::MAX)?;
        limit(
            "quota-probe-versions",
            self.quota_probe_versions,
            1,
            u64::MAX,
        )?;
        limit("quota-nodes", self.quota_nodes, 1, u64::MAX)?;
        limit("quota-module-bytes", self.quota_module_bytes, 1, u64::MAX)?;
        limit("quota-agent-tokens", self.quota_agent_tokens, 1, u64::MAX)?;
        Ok(())
    }
}

/// Parses `90`, `90s`, `15m`, `24h`, `30d` (whole units) into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 90s, 15m, 24h, 30d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: BalancerConfig,
    }

    #[test]
    fn proxy_flags_repeat_and_name_their_format() {
        let cli = Cli::try_parse_from([
            "plb",
            "--admin-token",
            "0123456789abcdef",
            "--proxy",
            "1/web=127.0.0.1:8080",
            "--proxy",
            "2/web=127.0.0.1:8081",
            "--agent-check",
            "127.0.0.1:7071",
        ])
        .expect("parses");
        let pools: Vec<(i64, &str)> = cli
            .cfg
            .proxy
            .iter()
            .map(|p| (p.client_id, p.pool.as_str()))
            .collect();
        assert_eq!(pools, [(1, "web"), (2, "web")]);
        assert_eq!(
            cli.cfg.agent_check,
            Some("127.0.0.1:7071".parse().expect("addr"))
        );
        cli.cfg.validate().expect("valid");
        let e = Cli::try_parse_from(["plb", "--admin-token", "0123456789abcdef", "--proxy", "web"])
            .expect_err("no address");
        assert!(e.to_string().contains("CLIENT_ID/POOL=LISTEN_ADDR"), "{e}");
        let e = Cli::try_parse_from([
            "plb",
            "--admin-token",
            "0123456789abcdef",
            "--proxy",
            "web=127.0.0.1:8080",
        ])
        .expect_err("no owner");
        assert!(e.to_string().contains("CLIENT_ID/POOL"), "{e}");
    }

    #[test]
    fn the_retry_budget_is_a_fraction() {
        let parse = |v: &str| {
            Cli::try_parse_from([
                "plb".to_owned(),
                "--admin-token".to_owned(),
                "0123456789abcdef".to_owned(),
                format!("--proxy-retry-budget={v}"),
            ])
            .expect("parses")
            .cfg
        };
        assert_eq!(parse("0").edges().forward.retry_budget, 0.0);
        parse("0.5").validate().expect("valid");
        for bad in ["1.5", "-0.1", "NaN"] {
            let e = parse(bad).validate().expect_err(bad);
            assert!(e.to_string().contains("--proxy-retry-budget"), "{e}");
        }
    }

    #[test]
    fn proxy_threads_default_to_one_per_core_and_are_bounded() {
        let parse = |args: &[&str]| {
            let mut all = vec!["plb", "--admin-token", "0123456789abcdef"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).expect("parses").cfg
        };
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        assert_eq!(parse(&[]).edges().threads, cores.clamp(1, 64));
        let three = parse(&["--proxy-threads", "3"]);
        three.validate().expect("valid");
        assert_eq!(three.edges().threads, 3);
        for bad in ["0", "5000"] {
            let e = parse(&["--proxy-threads", bad]).validate().expect_err(bad);
            assert!(e.to_string().contains("proxy-threads"), "{e}");
        }
    }

    #[test]
    fn network_flags_parse_as_cidr_lists() {
        let cli = Cli::try_parse_from([
            "plb",
            "--admin-token",
            "0123456789abcdef",
            "--webhook-allow-networks",
            "127.0.0.0/8,10.0.0.0/8",
            "--node-networks",
            "10.0.0.0/8",
            "--trusted-proxies",
            "192.0.2.1",
        ])
        .expect("parses");
        assert_eq!(cli.cfg.webhook_allow_networks.len(), 2);
        assert!(cli.cfg.delivery().networks.allows([127, 0, 0, 1].into()));
        assert!(!cli.cfg.node_policy().allows([127, 0, 0, 1].into()));
        assert!(
            cli.cfg
                .edges()
                .forward
                .trusted_proxies
                .allows([192, 0, 2, 1].into())
        );
        let e = Cli::try_parse_from([
            "plb",
            "--admin-token",
            "0123456789abcdef",
            "--node-networks",
            "10.0.0.0/40",
        ])
        .expect_err("bad cidr");
        assert!(e.to_string().contains("CIDR"), "{e}");
        // Defaults: webhooks public only, nodes anywhere but link-local and metadata.
        let c = BalancerConfig::new("x.db", "0123456789abcdef");
        assert!(!c.delivery().networks.allows([127, 0, 0, 1].into()));
        assert!(c.node_policy().allows([127, 0, 0, 1].into()));
        assert!(!c.node_policy().allows([169, 254, 169, 254].into()));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn flags_parse_and_defaults_validate() {
        let cli = Cli::try_parse_from([
            "plb",
            "--admin-token",
            "0123456789abcdef",
            "--listen",
            "127.0.0.1:0",
            "--retention-raw",
            "2h",
        ])
        .expect("parses");
        assert_eq!(cli.cfg.retention_raw, Duration::from_secs(7200));
        assert_eq!(cli.cfg.max_upload_bytes, 16 * 1024 * 1024);
        cli.cfg.validate().expect("valid");
        assert!(!format!("{:?}", cli.cfg).contains("0123456789abcdef"));
    }

    /// `--db` is a SQLite file unless it is a PostgreSQL URL, whose secrets never show.
    #[test]
    fn db_locations_parse_and_hide_secrets() {
        let parse = |s: &str| s.parse::<DbLocation>().expect(s);
        assert_eq!(parse("plb.db"), DbLocation::Sqlite(PathBuf::from("plb.db")));
        assert_eq!(
            parse("data/postgres.db"),
            DbLocation::Sqlite(PathBuf::from("data/postgres.db"))
        );
        for url in [
            "postgres://plb:s3cret@db:5432/plb?password=s3cret",
            "PostgreSQL://plb:s3cret@db/plb",
        ] {
            let db = parse(url);
            assert_eq!(db, DbLocation::Postgres(url.to_string()));
            let shown = format!("{db:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("db"), "{shown}");
        }
        assert!("".parse::<DbLocation>().is_err());
        assert_eq!(
            DbLocation::from(PathBuf::from("postgresql:///plb?host=/tmp/x")),
            DbLocation::Postgres("postgresql:///plb?host=/tmp/x".into())
        );
    }

    #[test]
    fn quota_flags_parse_and_zero_is_refused() {
        let cli = Cli::try_parse_from([
            "plb",
            "--admin-token",
            "0123456789abcdef",
            "--quota-pools",
            "3",
            "--quota-module-bytes",
            "1048576",
            "--upload-queue",
            "0",
        ])
        .expect("parses");
        cli.cfg.validate().expect("valid");
        let q = cli.cfg.quotas();
        assert_eq!((q.pools, q.module_bytes), (3, 1 << 20));
        assert_eq!(q.probes_per_pool, Quotas::default().probes_per_pool);
        let mut c = BalancerConfig::new("x.db", "0123456789abcdef");
        c.quota_nodes = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Limit {
                flag: "quota-nodes",
                ..
            })
        ));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = BalancerConfig::new("x.db", "short");
        assert_eq!(c.validate(), Err(ConfigError::AdminTokenTooShort));
        c.admin_token = "a-long-enough-admin-token".into();
        c.max_upload_bytes = 10;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Size {
                flag: "max-upload-bytes",
                ..
            })
        ));
        c.max_upload_bytes = DEFAULT_MAX_UPLOAD_BYTES;
        c.retention_aggregates = Duration::from_secs(120);
        assert!(matches!(c.validate(), Err(ConfigError::Duration { .. })));
    }
}
