//! The agent's configuration: one clap struct with `PLB_*` environment fallbacks,
//! validated once at start into typed errors.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

/// `plb agent`: run the probes assigned to this node and report their samples.
#[derive(Clone, Args)]
pub struct AgentConfig {
    /// Base URL of the balancer, e.g. `http://10.0.0.1:8080`; several (comma-separated,
    /// or the flag repeated) for balancer replicas on one database: the agent uses the
    /// first and moves to the next when the one in use stops answering.
    #[arg(long, env = "PLB_BALANCER", value_delimiter = ',', required = true)]
    pub balancer: Vec<String>,
    /// Agent token (from `POST /v1/agent-tokens`).
    #[arg(long, env = "PLB_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This node's id, unique within its pools.
    #[arg(long, env = "PLB_NODE")]
    pub node: String,
    /// Where this node's traffic goes (`host:port`): the target of every probe.
    #[arg(long, env = "PLB_ADDRESS")]
    pub address: String,
    /// A pool to join; repeat for several (env: comma-separated).
    #[arg(
        long = "pool",
        env = "PLB_POOLS",
        value_delimiter = ',',
        required = true
    )]
    pub pools: Vec<String>,
    /// Directory for the sample spool, verified modules and compiled probes
    /// (default `.plb-agent/<node>`).
    #[arg(long, env = "PLB_SPOOL")]
    pub spool: Option<PathBuf>,
    /// A free-form `key=value` label sent at registration; repeatable.
    #[arg(long = "label", env = "PLB_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where to serve `/metrics` and `/healthz`.
    #[arg(long, env = "PLB_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Probe runs at once, over both tiers (at least 2: quick probes keep a reserve).
    #[arg(long, env = "PLB_MAX_CONCURRENT_RUNS", default_value_t = 8)]
    pub max_concurrent_runs: u32,
    /// The largest memory limit a probe may ask for, in MiB.
    #[arg(long, env = "PLB_MAX_MEMORY_MIB", default_value_t = 512)]
    pub max_memory_mib: u32,
    /// How often to poll the assignments, in ms.
    #[arg(long, env = "PLB_POLL_MS", default_value_t = 5_000)]
    pub poll_ms: u64,
    /// How often the built-in node sampler reports, in ms (0 turns it off).
    #[arg(long, env = "PLB_NODE_SAMPLE_MS", default_value_t = 5_000)]
    pub node_sample_ms: u64,
    /// Most samples in one report.
    #[arg(long, env = "PLB_BATCH_MAX", default_value_t = 200)]
    pub batch_max: usize,
    /// Longest a sample waits for its batch to fill, in ms.
    #[arg(long, env = "PLB_BATCH_MAX_AGE_MS", default_value_t = 1_000)]
    pub batch_max_age_ms: u64,
    /// Bytes of unsent samples kept on disk; past this the oldest are dropped (and counted).
    #[arg(long, env = "PLB_SPOOL_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub spool_max_bytes: u64,
    /// Longest wait between report retries, in ms (backoff is exponential with jitter).
    #[arg(long, env = "PLB_RETRY_MAX_MS", default_value_t = 5_000)]
    pub retry_max_ms: u64,
    /// Time a clean shutdown gives running probes and the last report, in ms.
    #[arg(long, env = "PLB_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: configs and clients end up in logs and panics.
        f.debug_struct("AgentConfig")
            .field("balancer", &self.balancer)
            .field("token", &"<redacted>")
            .field("node", &self.node)
            .field("address", &self.address)
            .field("pools", &self.pools)
            .field("spool", &self.spool)
            .field("labels", &self.labels)
            .field("metrics_listen", &self.metrics_listen)
            .field("max_concurrent_runs", &self.max_concurrent_runs)
            .field("max_memory_mib", &self.max_memory_mib)
            .field("poll_ms", &self.poll_ms)
            .field("node_sample_ms", &self.node_sample_ms)
            .field("batch_max", &self.batch_max)
            .field("batch_max_age_ms", &self.batch_max_age_ms)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .finish()
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// A config value out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`--{flag}`: {message}")]
pub struct ConfigError {
    /// The flag, without its dashes.
    pub flag: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad<T>(flag: &'static str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        flag,
        message: message.into(),
    })
}

/// A validated [`AgentConfig`], with derived values filled in.
#[derive(Clone)]
pub struct Settings {
    /// Balancer base URLs (each ending in a slash), in the order given.
    pub balancers: Vec<reqwest::Url>,
    /// Agent token.
    pub token: String,
    /// Node id.
    pub node: String,
    /// Node address, `host:port`.
    pub address: String,
    /// Pools, deduplicated, in the order given.
    pub pools: Vec<String>,
    /// Registration labels.
    pub labels: BTreeMap<String, String>,
    /// The spool directory.
    pub spool: PathBuf,
    /// `/metrics` listener.
    pub metrics_listen: SocketAddr,
    /// Runs at once.
    pub max_concurrent_runs: u32,
    /// Largest per-run memory limit.
    pub max_memory_mib: u32,
    /// Assignment poll period.
    pub poll: Duration,
    /// Node sampler period; `None` when off.
    pub node_sample: Option<Duration>,
    /// Samples per report.
    pub batch_max: usize,
    /// Longest wait for a batch to fill.
    pub batch_max_age: Duration,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Longest retry backoff.
    pub retry_max: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: configs and clients end up in logs and panics.
        f.debug_struct("Settings")
            .field("balancers", &self.balancers)
            .field("token", &"<redacted>")
            .field("node", &self.node)
            .field("address", &self.address)
            .field("pools", &self.pools)
            .field("labels", &self.labels)
            .field("spool", &self.spool)
            .field("metrics_listen", &self.metrics_listen)
            .field("max_concurrent_runs", &self.max_concurrent_runs)
            .field("max_memory_mib", &self.max_memory_mib)
            .field("poll", &self.poll)
            .field("node_sample", &self.node_sample)
            .field("batch_max", &self.batch_max)
            .field("batch_max_age", &self.batch_max_age)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("retry_max", &self.retry_max)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

/// Node ids and pool names: 1..=128 bytes of ASCII letters, digits, `-`, `_`, `.`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl AgentConfig {
    /// Checks every value and derives the [`Settings`] the agent runs with.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut balancers = Vec::with_capacity(self.balancer.len());
        for b in self
            .balancer
            .iter()
            .map(|b| b.trim())
            .filter(|b| !b.is_empty())
        {
            let mut url = match reqwest::Url::parse(b) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                Ok(_) => {
                    return bad(
                        "balancer",
                        format!("{b:?} must be an http:// or https:// URL with a host"),
                    );
                }
                Err(e) => return bad("balancer", format!("{b:?} is not a URL: {e}")),
            };
            if !url.path().ends_with('/') {
                let p = format!("{}/", url.path());
                url.set_path(&p);
            }
            if balancers.contains(&url) {
                return bad("balancer", format!("{url} is given twice"));
            }
            balancers.push(url);
        }
        if balancers.is_empty() {
            return bad("balancer", "at least one URL is needed");
        }
        if self.token.trim().is_empty() {
            return bad("token", "must not be empty");
        }
        if !valid_name(&self.node) {
            return bad("node", "1..=128 ASCII letters, digits, '-', '_' or '.'");
        }
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return bad(
                    "address",
                    format!("expected host:port, got {:?}", self.address),
                );
            }
        }
        let mut pools: Vec<String> = Vec::new();
        for p in &self.pools {
            let p = p.trim();
            if !valid_name(p) {
                return bad(
                    "pool",
                    format!("{p:?}: 1..=128 ASCII letters, digits, '-', '_' or '.'"),
                );
            }
            if !pools.iter().any(|q| q == p) {
                pools.push(p.to_string());
            }
        }
        if pools.is_empty() {
            return bad("pool", "at least one pool is needed");
        }
        if !(2..=1024).contains(&self.max_concurrent_runs) {
            return bad(
                "max-concurrent-runs",
                "must be in 2..=1024 (one slot is always kept for quick probes)",
            );
        }
        if !(1..=4096).contains(&self.max_memory_mib) {
            return bad("max-memory-mib", "must be in 1..=4096");
        }
        if !(100..=3_600_000).contains(&self.poll_ms) {
            return bad("poll-ms", "must be in 100..=3600000");
        }
        if self.node_sample_ms != 0 && self.node_sample_ms < 100 {
            return bad("node-sample-ms", "must be 0 (off) or at least 100");
        }
        if !(1..=10_000).contains(&self.batch_max) {
            return bad("batch-max", "must be in 1..=10000");
        }
        if !(1..=600_000).contains(&self.batch_max_age_ms) {
            return bad("batch-max-age-ms", "must be in 1..=600000");
        }
        if self.spool_max_bytes < 16 * 1024 {
            return bad("spool-max-bytes", "must be at least 16384");
        }
        if !(10..=600_000).contains(&self.retry_max_ms) {
            return bad("retry-max-ms", "must be in 10..=600000");
        }
        if self.shutdown_grace_ms > 600_000 {
            return bad("shutdown-grace-ms", "must be at most 600000");
        }
        let spool = self
            .spool
            .clone()
            .unwrap_or_else(|| PathBuf::from(".plb-agent").join(&self.node));
        Ok(Settings {
            balancers,
            token: self.token.trim().to_string(),
            node: self.node.clone(),
            address: self.address.clone(),
            pools,
            labels: self.labels.iter().cloned().collect(),
            spool,
            metrics_listen: self.metrics_listen,
            max_concurrent_runs: self.max_concurrent_runs,
            max_memory_mib: self.max_memory_mib,
            poll: Duration::from_millis(self.poll_ms),
            node_sample: (self.node_sample_ms > 0)
                .then(|| Duration::from_millis(self.node_sample_ms)),
            batch_max: self.batch_max,
            batch_max_age: Duration::from_millis(self.batch_max_age_ms),
            spool_max_bytes: self.spool_max_bytes,
            retry_max: Duration::from_millis(self.retry_max_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentConfig,
    }

    fn parse(args: &[&str]) -> Result<AgentConfig, clap::Error> {
        let mut v = vec!["plb-agent"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| c.agent)
    }

    const BASE: [&str; 10] = [
        "--balancer",
        "http://127.0.0.1:8080",
        "--token",
        "t",
        "--node",
        "n1",
        "--address",
        "127.0.0.1:9000",
        "--pool",
        "web",
    ];

    #[test]
    fn minimal_flags_validate_with_defaults() {
        let s = parse(&BASE).expect("parse").validate().expect("valid");
        assert_eq!(s.balancers.len(), 1);
        assert_eq!(s.balancers[0].as_str(), "http://127.0.0.1:8080/");
        assert_eq!(s.pools, vec!["web".to_string()]);
        assert_eq!(s.spool, PathBuf::from(".plb-agent/n1"));
        assert_eq!(s.poll, Duration::from_millis(5_000));
        assert_eq!(s.node_sample, Some(Duration::from_millis(5_000)));
    }

    #[test]
    fn several_balancers_in_order_comma_separated_or_repeated() {
        let mut a = BASE.to_vec();
        a[1] = "http://10.0.0.1:8080, http://10.0.0.2:8080/api";
        a.extend(["--balancer", "https://lb.example"]);
        let s = parse(&a).expect("parse").validate().expect("valid");
        let urls: Vec<&str> = s.balancers.iter().map(reqwest::Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.1:8080/",
                "http://10.0.0.2:8080/api/",
                "https://lb.example/"
            ]
        );
        let mut a = BASE.to_vec();
        a[1] = "http://10.0.0.1:8080,http://10.0.0.1:8080/";
        let err = parse(&a).expect("parse").validate().expect_err("twice");
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn pools_labels_repeat_and_dedup() {
        let mut a = BASE.to_vec();
        a.extend([
            "--pool", "api", "--pool", "web", "--label", "zone=a", "--label", "rack=7",
        ]);
        let s = parse(&a).expect("parse").validate().expect("valid");
        assert_eq!(s.pools, vec!["web".to_string(), "api".to_string()]);
        assert_eq!(s.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(s.labels.len(), 2);
        let mut a = BASE.to_vec();
        a.extend(["--label", "novalue"]);
        assert!(parse(&a).is_err());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--balancer", "ftp://x"], "balancer"),
            (&["--address", "nohost"], "address"),
            (&["--address", "h:0"], "address"),
            (&["--node", "a b"], "node"),
            (&["--max-concurrent-runs", "1"], "max-concurrent-runs"),
            (&["--poll-ms", "10"], "poll-ms"),
            (&["--batch-max", "0"], "batch-max"),
            (&["--spool-max-bytes", "10"], "spool-max-bytes"),
            (&["--node-sample-ms", "5"], "node-sample-ms"),
        ];
        for (extra, flag) in cases {
            // Replace the flag's base value when it has one, else add it.
            let mut a = BASE.to_vec();
            match a.iter().position(|x| *x == extra[0]) {
                Some(i) => a[i + 1] = extra[1],
                None => a.extend_from_slice(extra),
            }
            let err = parse(&a).expect("parse").validate().expect_err("must fail");
            assert_eq!(err.flag, *flag, "{extra:?}: {err}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let mut a = BASE.to_vec();
        a[3] = "plba_agent-secret-value";
        let cfg = parse(&a).expect("parse");
        let d = format!("{cfg:?}");
        assert!(!d.contains("agent-secret-value"), "{d}");
        assert!(d.contains("<redacted>"), "{d}");
        let s = cfg.validate().expect("valid");
        assert_eq!(s.token, "plba_agent-secret-value");
        let d = format!("{s:?}");
        assert!(!d.contains("agent-secret-value"), "{d}");
    }
}
