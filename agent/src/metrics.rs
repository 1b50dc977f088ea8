//! The agent's own counters and health, served as Prometheus text at `/metrics` and as
//! JSON at `/healthz` by a small local axum server.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Labels of a probe run.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// Pool.
    pub pool: String,
    /// Probe name.
    pub probe: String,
    /// Outcome class.
    pub outcome: String,
}

/// Labels of a probe.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// Pool.
    pub pool: String,
    /// Probe name.
    pub probe: String,
}

/// Labels of a tier.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// `quick` or `deep`.
    pub tier: String,
}

/// Labels of a poll result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `changed`, `unchanged` or `error`.
    pub result: String,
}

/// Every counter the agent keeps. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    /// Probe runs by pool, probe and outcome (a refused module counts as `invalid`).
    pub runs: Family<RunLabels, Counter>,
    /// Runs not started because the previous one was still going or no slot came free.
    pub runs_skipped: Family<ProbeLabels, Counter>,
    /// Runs in flight by tier.
    pub runs_in_flight: Family<TierLabels, Gauge>,
    /// Samples taken (probe runs and node samples), appended to the spool.
    pub samples_taken: Counter,
    /// Samples the balancer accepted (new or already stored).
    pub samples_sent: Counter,
    /// Samples that had to wait in the spool for the balancer: those unsent when a report
    /// failed, and those taken until a report succeeds again.
    pub samples_spooled: Counter,
    /// Samples dropped because the spool was full.
    pub samples_dropped: Counter,
    /// Samples the balancer refused as invalid (never resent).
    pub samples_rejected: Counter,
    /// Failed report attempts.
    pub report_failures: Counter,
    /// Unsent samples in the spool.
    pub spool_samples: Gauge,
    /// Bytes of unsent samples in the spool.
    pub spool_bytes: Gauge,
    /// Modules downloaded and verified.
    pub modules_downloaded: Counter,
    /// Modules refused because their bytes did not match their sha256.
    pub modules_rejected: Counter,
    /// Probes assigned.
    pub assignments: Gauge,
    /// Assignment polls by result.
    pub assignment_polls: Family<ResultLabels, Counter>,
    /// 1 while the last call to the balancer got an answer.
    pub balancer_up: Gauge,
    /// Which of the `--balancer` URLs calls go to now (from 0).
    pub balancer_index: Gauge,
    /// Times calls moved to the next balancer because the one in use failed.
    pub balancer_switches: Counter,
    /// Resident memory of the agent process, bytes (read at scrape time).
    pub resident_bytes: Gauge,
    registered: AtomicBool,
    started_ms: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds the registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plb_agent");
        let m = Metrics {
            runs: Family::default(),
            runs_skipped: Family::default(),
            runs_in_flight: Family::default(),
            samples_taken: Counter::default(),
            samples_sent: Counter::default(),
            samples_spooled: Counter::default(),
            samples_dropped: Counter::default(),
            samples_rejected: Counter::default(),
            report_failures: Counter::default(),
            spool_samples: Gauge::default(),
            spool_bytes: Gauge::default(),
            modules_downloaded: Counter::default(),
            modules_rejected: Counter::default(),
            assignments: Gauge::default(),
            assignment_polls: Family::default(),
            balancer_up: Gauge::default(),
            balancer_index: Gauge::default(),
            balancer_switches: Counter::default(),
            resident_bytes: Gauge::default(),
            registered: AtomicBool::new(false),
            started_ms: AtomicU64::new(crate::unix_ms() as u64),
            registry: Registry::default(),
        };
        registry.register(
            "runs",
            "Probe runs by pool, probe and outcome",
            m.runs.clone(),
        );
        registry.register(
            "runs_skipped",
            "Runs not started: the previous run was still going or no slot came free in time",
            m.runs_skipped.clone(),
        );
        registry.register(
            "runs_in_flight",
            "Probe runs in flight by tier",
            m.runs_in_flight.clone(),
        );
        registry.register(
            "samples_taken",
            "Samples taken and written to the spool",
            m.samples_taken.clone(),
        );
        registry.register(
            "samples_sent",
            "Samples accepted by the balancer",
            m.samples_sent.clone(),
        );
        registry.register(
            "samples_spooled",
            "Samples that waited in the spool because the balancer was unreachable",
            m.samples_spooled.clone(),
        );
        registry.register(
            "samples_dropped",
            "Samples dropped because the spool was full",
            m.samples_dropped.clone(),
        );
        registry.register(
            "samples_rejected",
            "Samples the balancer refused as invalid",
            m.samples_rejected.clone(),
        );
        registry.register(
            "balancer_index",
            "Which of the --balancer URLs the agent uses now, from 0",
            m.balancer_index.clone(),
        );
        registry.register(
            "balancer_switches",
            "Times the agent moved to the next balancer because the one in use failed",
            m.balancer_switches.clone(),
        );
        registry.register(
            "report_failures",
            "Failed report attempts",
            m.report_failures.clone(),
        );
        registry.register(
            "spool_samples",
            "Unsent samples in the spool",
            m.spool_samples.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes of unsent samples in the spool",
            m.spool_bytes.clone(),
        );
        registry.register(
            "modules_downloaded",
            "Modules downloaded and verified",
            m.modules_downloaded.clone(),
        );
        registry.register(
            "modules_rejected",
            "Modules refused because their bytes did not match their sha256",
            m.modules_rejected.clone(),
        );
        registry.register(
            "assignments",
            "Probes assigned to this node",
            m.assignments.clone(),
        );
        registry.register(
            "assignment_polls",
            "Assignment polls by result",
            m.assignment_polls.clone(),
        );
        registry.register(
            "balancer_up",
            "1 while the balancer answers",
            m.balancer_up.clone(),
        );
        registry.register(
            "resident_bytes",
            "Resident memory of the agent process",
            m.resident_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records that registration succeeded.
    pub fn set_registered(&self) {
        self.registered.store(true, Ordering::Relaxed);
    }

    /// Counts one run.
    pub fn run(&self, pool: &str, probe: &str, outcome: plb_api::Outcome) {
        self.runs
            .get_or_create(&RunLabels {
                pool: pool.to_string(),
                probe: probe.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }

    /// Counts one skipped run.
    pub fn skipped(&self, pool: &str, probe: &str) {
        self.runs_skipped
            .get_or_create(&ProbeLabels {
                pool: pool.to_string(),
                probe: probe.to_string(),
            })
            .inc();
    }

    /// Sets the runs in flight of a tier.
    pub fn in_flight(&self, tier: plb_api::Tier, n: u32) {
        self.runs_in_flight
            .get_or_create(&TierLabels {
                tier: tier.as_str().to_string(),
            })
            .set(i64::from(n));
    }

    /// Counts one assignment poll.
    pub fn poll(&self, result: &str) {
        self.assignment_polls
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.resident_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// The `/healthz` body.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "registered": self.registered.load(Ordering::Relaxed),
            "balancer_up": self.balancer_up.get() == 1,
            "assignments": self.assignments.get(),
            "spool_samples": self.spool_samples.get(),
            "uptime_ms": (crate::unix_ms() as u64).saturating_sub(self.started_ms.load(Ordering::Relaxed)),
        })
    }
}

/// This process's resident set size, from `VmRSS` in `/proc/self/status` (Linux only).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn health_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (StatusCode::OK, axum::Json(m.health()))
}

/// The `/metrics` and `/healthz` routes.
pub fn app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .with_state(metrics)
}

/// Serves [`app`] on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app(metrics))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(?addr, "metrics server failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.run("web", "http", plb_api::Outcome::Timeout);
        m.run("web", "http", plb_api::Outcome::Timeout);
        m.samples_sent.inc_by(5);
        m.spool_bytes.set(1234);
        let text = m.render();
        assert!(
            text.contains(r#"plb_agent_runs_total{pool="web",probe="http",outcome="timeout"} 2"#),
            "{text}"
        );
        assert!(text.contains("plb_agent_samples_sent_total 5"), "{text}");
        assert!(text.contains("plb_agent_spool_bytes 1234"), "{text}");
        assert!(text.contains("plb_agent_resident_bytes "), "{text}");
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
