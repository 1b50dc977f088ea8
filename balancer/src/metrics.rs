//! `/metrics`: the balancer's Prometheus registry (`prometheus-client`): HTTP requests by
//! route and status, samples ingested, probe uploads, retention, the store's writer,
//! route decisions, probe reliability. Plain counters, below every layer that counts: the
//! HTTP middleware that fills the request families is `routes::request_metrics`.
//!
//! Two registries: the public one (aggregates: no tenant's pool, probe or node name, and
//! only bounded labels) and the tenant one (series labelled with a client's pool and
//! probe names: probe reliability, the scaling gauges), which `/metrics` shows only to a
//! caller presenting the metrics or the admin token ([`Exposure`]).
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::WriterMetrics;

/// Labels of one HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template, e.g. `/v1/pools/{pool}`, or `unmatched`.
    pub route: String,
    /// The method, from a fixed set ([`method_label`]).
    pub method: &'static str,
    /// The response status.
    pub status: u16,
}

/// The request method as a metrics label: one of a fixed set, so a client inventing
/// methods cannot grow the label's values without bound.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Which series an exposition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Aggregates only: no series names a tenant's pool or probe.
    Public,
    /// Everything, tenant-labelled series included (metrics or admin token).
    Full,
}

/// Labels naming a route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template.
    pub route: String,
}

/// Labels of a probe upload's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UploadLabels {
    /// `created`, `unchanged`, `invalid`, `rejected`.
    pub result: &'static str,
}

/// Labels of a route decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The deciding policy.
    pub policy: &'static str,
    /// The chosen node's state.
    pub state: &'static str,
}

/// Route decisions by policy and the chosen node's state, with one counter handle per
/// pair fetched up front so the request path never touches the family's lock.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    by: Vec<Counter>,
}

const STATES: [plb_api::NodeState; 4] = [
    plb_api::NodeState::Healthy,
    plb_api::NodeState::Degrading,
    plb_api::NodeState::Unhealthy,
    plb_api::NodeState::Unknown,
];

impl RouteCounters {
    fn new(family: &Family<DecisionLabels, Counter>) -> Self {
        let mut by = Vec::new();
        for p in plb_routing::PolicyKind::ALL {
            for s in STATES {
                by.push(
                    family
                        .get_or_create(&DecisionLabels {
                            policy: p.as_str(),
                            state: s.as_str(),
                        })
                        .clone(),
                );
            }
        }
        RouteCounters { by }
    }

    /// Counts one decision.
    pub fn inc(&self, policy: plb_routing::PolicyKind, state: plb_api::NodeState) {
        let p = plb_routing::PolicyKind::ALL
            .iter()
            .position(|k| *k == policy)
            .unwrap_or(0);
        let s = STATES.iter().position(|k| *k == state).unwrap_or(0);
        if let Some(c) = self.by.get(p * STATES.len() + s) {
            c.inc();
        }
    }
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Labels of a pool's scaling gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    /// The owning client's id (pool names are unique per client only).
    pub client: String,
    /// The pool's name.
    pub pool: String,
    /// `5m`, `15m` or `1h`.
    pub horizon: String,
}

/// The pool demand and autoscaling gauges, in one place (one registration, one setter)
/// so that they can move behind a metrics token with the other per-pool series.
#[derive(Debug, Clone, Default)]
pub struct ScalingMetrics {
    /// `plb_pool_desired_nodes{client,pool,horizon}`: nodes needed at each horizon.
    pub desired_nodes: Family<ScalingLabels, Gauge>,
    /// `plb_pool_demand_forecast_rps{client,pool,horizon}`: forecast requests per second.
    pub demand_forecast_rps: Family<ScalingLabels, Gauge<f64, AtomicU64>>,
}

impl ScalingMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pool_desired_nodes",
            "Nodes a pool needs at each horizon (planned demand over per-node capacity at the target utilisation)",
            self.desired_nodes.clone(),
        );
        registry.register(
            "pool_demand_forecast_rps",
            "Forecast requests per second a pool receives at each horizon",
            self.demand_forecast_rps.clone(),
        );
    }

    /// Sets the gauges of the client's `pool` from its scaling view (nodes only once a
    /// capacity is known).
    pub fn set(&self, client_id: i64, pool: &str, view: &plb_api::PoolScaling) {
        for h in &view.horizons {
            let labels = ScalingLabels {
                client: client_id.to_string(),
                pool: pool.to_string(),
                horizon: h.horizon.clone(),
            };
            if h.demand_rps.is_finite() {
                self.demand_forecast_rps
                    .get_or_create(&labels)
                    .set(h.demand_rps);
            }
            if let Some(n) = h.nodes {
                self.desired_nodes.get_or_create(&labels).set(i64::from(n));
            }
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric the balancer exports.
pub struct Metrics {
    registry: Registry,
    /// Series labelled with tenants' pool and probe names.
    tenant: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration by route.
    pub request_seconds: HistogramFamily,
    /// Samples newly stored.
    pub samples_ingested: Counter,
    /// Samples received again and not stored twice.
    pub samples_duplicate: Counter,
    /// Report batches committed.
    pub report_batches: Counter,
    /// Samples agents reported as dropped (their spool was full).
    pub samples_dropped_by_agents: Counter,
    /// Probe uploads by result.
    pub probe_uploads: Family<UploadLabels, Counter>,
    /// Raw samples folded into per-minute aggregates.
    pub retention_folded: Counter,
    /// Per-minute aggregates deleted as too old.
    pub retention_expired: Counter,
    /// The store's writer thread.
    pub writer: WriterMetrics,
    /// Route decisions by policy and state.
    pub route_decisions: std::sync::Arc<RouteCounters>,
    /// Feedback items accepted.
    pub feedback_items: Counter,
    /// Samples the prediction engine refused (out of order, too many series).
    pub engine_rejected_samples: Counter,
    /// State changes of nodes.
    pub state_changes: Counter,
    /// Capacity models fitted.
    pub capacity_fits: Counter,
    /// 1 while this replica leads (does the work that must happen once), else 0.
    pub leader: Gauge,
    /// Probe reliability and webhook deliveries.
    pub reliability: crate::reliability::ReliabilityMetrics,
    /// Pool demand forecast and desired nodes.
    pub scaling: ScalingMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under `plb_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plb");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration by route",
            request_seconds.clone(),
        );
        let samples_ingested = Counter::default();
        registry.register(
            "samples_ingested",
            "Samples newly stored",
            samples_ingested.clone(),
        );
        let samples_duplicate = Counter::default();
        registry.register(
            "samples_duplicate",
            "Samples received again and not stored twice",
            samples_duplicate.clone(),
        );
        let report_batches = Counter::default();
        registry.register(
            "report_batches",
            "Report batches committed",
            report_batches.clone(),
        );
        let samples_dropped_by_agents = Counter::default();
        registry.register(
            "agent_dropped_samples",
            "Samples agents reported as dropped from a full spool",
            samples_dropped_by_agents.clone(),
        );
        let probe_uploads = Family::<UploadLabels, Counter>::default();
        registry.register(
            "probe_uploads",
            "Probe uploads by result",
            probe_uploads.clone(),
        );
        let retention_folded = Counter::default();
        registry.register(
            "retention_folded_samples",
            "Raw samples folded into per-minute aggregates",
            retention_folded.clone(),
        );
        let retention_expired = Counter::default();
        registry.register(
            "retention_expired_minutes",
            "Per-minute aggregates deleted as too old",
            retention_expired.clone(),
        );
        let writer = WriterMetrics::default();
        registry.register(
            "store_commits",
            "Store transactions committed",
            writer.commits.clone(),
        );
        registry.register(
            "store_failed_commits",
            "Store transactions that failed to commit",
            writer.failed_commits.clone(),
        );
        registry.register(
            "store_group_size",
            "Writes committed per store transaction",
            writer.group_size.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time to run and commit one store transaction",
            writer.commit_seconds.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "route_decisions",
            "Route decisions by policy and the chosen node's state",
            decisions.clone(),
        );
        let route_decisions = std::sync::Arc::new(RouteCounters::new(&decisions));
        let feedback_items = Counter::default();
        registry.register(
            "feedback_items",
            "Feedback items accepted (HTTP and proxy)",
            feedback_items.clone(),
        );
        let engine_rejected_samples = Counter::default();
        registry.register(
            "engine_rejected_samples",
            "Samples the prediction engine refused (out of order, too many series)",
            engine_rejected_samples.clone(),
        );
        let state_changes = Counter::default();
        registry.register(
            "node_state_changes",
            "Node state changes",
            state_changes.clone(),
        );
        let capacity_fits = Counter::default();
        registry.register(
            "capacity_fits",
            "Capacity models fitted",
            capacity_fits.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads (webhook outbox, retention), 0 while it follows",
            leader.clone(),
        );
        let mut tenant = Registry::with_prefix("plb");
        let reliability = crate::reliability::ReliabilityMetrics::default();
        reliability.register(&mut registry, &mut tenant);
        let scaling = ScalingMetrics::default();
        scaling.register(&mut tenant);
        Metrics {
            tenant,
            scaling,
            reliability,
            registry,
            route_decisions,
            feedback_items,
            engine_rejected_samples,
            state_changes,
            capacity_fits,
            leader,
            requests,
            request_seconds,
            samples_ingested,
            samples_duplicate,
            report_batches,
            samples_dropped_by_agents,
            probe_uploads,
            retention_folded,
            retention_expired,
            writer,
        }
    }

    /// The Prometheus text exposition: the public series, and with [`Exposure::Full`]
    /// the tenant-labelled ones too.
    pub fn encode(&self, exposure: Exposure) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        if exposure == Exposure::Full {
            text::encode_registry(&mut out, &self.tenant)?;
        }
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("OPTIONS"), "OPTIONS");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label(&"X".repeat(1000)), "other");
    }
}
