//! Bodies of the routing and model endpoints: pool settings, feedback acks, route
//! decision shares over time, stored state changes, the pool's capacity model and its
//! scores, forecast errors, and each node's live routing figures. Every number is finite.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{HorizonErrors, StateChange};

/// `PATCH /v1/pools/{pool}`: change the pool's settings (absent fields are kept).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePool {
    /// Routing policy: `plb`, `round-robin`, `least-request`, `least-conn`, `peak-ewma` or
    /// `prequal`.
    #[serde(default)]
    #[schema(pattern = "^(plb|round-robin|least-request|least-conn|peak-ewma|prequal)$")]
    pub policy: Option<String>,
    /// The pool's latency objective in ms (positive, at most one hour).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 3600000)]
    pub latency_slo_ms: Option<f64>,
}

/// Answer to `POST /v1/pools/{pool}/feedback`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedbackAck {
    /// Items applied.
    pub accepted: usize,
}

/// One node's live routing figures, as this balancer sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeRouting {
    /// State the routing snapshot holds.
    pub state: crate::NodeState,
    /// The `plb` weight relative to the node's full weight (1 = normal), 0..=1.
    pub weight: f64,
    /// The node's share of the pool's `plb` weight, 0..=1 (0 when it gets no traffic).
    pub share: f64,
    /// How far its forecasts have moved toward their thresholds, 0..=1.
    pub degrade_score: f64,
    /// Its request latency expected 5 s ahead from its feedback alone (mean latency
    /// per second, smoothed with its trend), ms; `None` without fresh feedback. Past
    /// 40 % of the pool's SLO, and standing out from its peers', it raises the degrade
    /// score even with no probe.
    pub latency_outlook_ms: Option<f64>,
    /// Capacity from the pool's capacity model (requests in flight at the SLO).
    pub capacity: Option<f64>,
    /// Requests in flight.
    pub in_flight: u64,
    /// Peak-EWMA latency of answered requests, ms.
    pub latency_ms: Option<f64>,
    /// Time-weighted mean latency of its answers over the last few seconds, ms. In
    /// `plb`'s full scan a node whose mean is more than 1.5x the pool's median mean
    /// counts at least that multiple of the pool's latency.
    #[serde(default)]
    pub mean_latency_ms: Option<f64>,
    /// Recent error rate of answered requests, 0..=1.
    pub error_rate: f64,
    /// Route decisions that chose it since this balancer started.
    pub decisions: u64,
    /// Feedback outcomes received since this balancer started.
    pub completed: u64,
    /// Of which failed.
    pub errors: u64,
}

/// How far one probe metric has earned a say in routing on a pool: the trust its
/// degrade scores are multiplied by, and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricTrust {
    /// The series, `probe/metric`.
    pub metric: String,
    /// 0..=1: how much of a node's degrade score from this metric routing uses.
    pub trust: f64,
    /// Correlation between a node standing out in the metric (robust z-score over the
    /// pool) and the same node standing out in feedback latency `lead_ms` later.
    pub correlation: f64,
    /// Weighted pairs behind the correlation (old ones fade).
    pub pairs: f64,
    /// How far ahead the metric is asked to predict latency, ms.
    pub lead_ms: i64,
    /// The trust in words.
    pub reason: String,
}

/// Decisions per node in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeShare {
    /// Node id.
    pub node: String,
    /// Decisions that chose it.
    pub decisions: u64,
    /// Its share of the minute's decisions, 0..=1.
    pub share: f64,
}

/// One minute of route decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionMinute {
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// Decisions in it.
    pub total: u64,
    /// Per node, by id.
    pub nodes: Vec<NodeShare>,
}

/// `GET /v1/pools/{pool}/decisions?since=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionShares {
    /// The pool.
    pub pool: String,
    /// Minutes from this time on, Unix ms.
    pub since_ms: i64,
    /// Oldest first.
    pub minutes: Vec<DecisionMinute>,
}

/// A stored state change of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeStateChange {
    /// Node id.
    pub node: String,
    /// The change and its evidence.
    #[serde(flatten)]
    pub change: StateChange,
}

/// `GET /v1/pools/{pool}/state-changes?since=&node=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StateChangeList {
    /// The pool.
    pub pool: String,
    /// Oldest first.
    pub changes: Vec<NodeStateChange>,
}

/// A node's capacity estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeCapacityView {
    /// Node id.
    pub node: String,
    /// Requests in flight at which its predicted latency meets the SLO (capped at the
    /// pool's median estimate, so an overestimate cannot draw traffic).
    pub capacity: f64,
    /// Whether the node had enough feedback for a model of its own (else the pool's).
    pub own_model: bool,
    /// Its own model's curve shape.
    pub form: Option<String>,
    /// True when the capacity lies beyond the loads seen in training.
    pub extrapolated: bool,
}

/// The pool's fitted capacity model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapacityModelView {
    /// When it was fitted, Unix ms.
    pub fitted_at_ms: i64,
    /// The objective it was fitted for, ms.
    pub slo_ms: f64,
    /// The pool model's curve shape (`inverse`, `linear`, `quadratic`).
    pub form: Option<String>,
    /// Feedback rows used.
    pub rows_used: u64,
    /// Rows ignored (failures, bad values).
    pub rows_ignored: u64,
    /// Leave-one-out error of the pool model, mean |ln(predicted/actual)|.
    pub loo_error: Option<f64>,
    /// The pool model's capacity, requests in flight per node.
    pub pool_capacity: Option<f64>,
    /// The probe metrics (`probe/metric`) offered to the probe-feature models.
    #[serde(default)]
    pub features: Vec<String>,
    /// Whether probe-feature models were fitted this time (enough rows carried them).
    #[serde(default)]
    pub features_fitted: bool,
    /// Whether routing uses the probe-feature models: only while they have predicted
    /// later feedback better than the load-only models.
    #[serde(default)]
    pub features_used: bool,
    /// Per node.
    pub nodes: Vec<NodeCapacityView>,
}

/// A capacity model scored on feedback that came after it was fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapacityScoreView {
    /// When the model was fitted, Unix ms.
    pub fitted_at_ms: i64,
    /// When it was scored (its successor's fit), Unix ms.
    pub scored_at_ms: i64,
    /// Rows scored.
    pub rows: u64,
    /// Mean absolute error of its predicted latency per load bin, ms, for the models
    /// routing used (load-only or probe-feature).
    pub mae_ms: f64,
    /// Same for a constant (mean latency) forecast.
    pub baseline_mae_ms: f64,
    /// Same for the load-only models (the baseline the probe-feature models must beat).
    #[serde(default)]
    pub load_only_mae_ms: f64,
    /// Same for the probe-feature models, when they were fitted.
    #[serde(default)]
    pub features_mae_ms: Option<f64>,
}

/// One series' forecast errors now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesErrors {
    /// Node id.
    pub node: String,
    /// Series key `probe/metric`.
    pub series: String,
    /// The model chosen at each reported horizon.
    pub chosen: Vec<String>,
    /// Errors at each reported horizon.
    pub errors: Vec<HorizonErrors>,
}

/// Forecast errors over the pool at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HorizonSummary {
    /// Horizon in samples.
    pub h: u32,
    /// Series with errors at this horizon.
    pub series: u64,
    /// Geometric mean over series of MAE / last-value MAE (below 1: better than the
    /// last value).
    pub relative_to_naive: Option<f64>,
}

/// A stored forecast error (written periodically, for history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForecastErrorRecord {
    /// When written, Unix ms.
    pub at_ms: i64,
    /// Node id.
    pub node: String,
    /// Series key.
    pub series: String,
    /// Horizon.
    pub h: u32,
    /// The model chosen then.
    pub model: String,
    /// Its recent MAE.
    pub mae: f64,
    /// The last-value forecast's recent MAE.
    pub naive_mae: f64,
    /// Forecasts scored so far.
    pub scored: u64,
}

/// `GET /v1/pools/{pool}/model`: the pool's models and how well they did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolModelView {
    /// The pool.
    pub pool: String,
    /// Routing policy.
    pub policy: String,
    /// Latency objective, ms.
    pub latency_slo_ms: f64,
    /// Feedback rows held for training.
    pub feedback_rows: u64,
    /// The capacity model in use, once fitted.
    pub capacity: Option<CapacityModelView>,
    /// Capacity models scored on later feedback, oldest first.
    pub capacity_scores: Vec<CapacityScoreView>,
    /// Forecast errors by horizon over every series of the pool.
    pub summary: Vec<HorizonSummary>,
    /// Every series' errors now.
    pub series: Vec<SeriesErrors>,
    /// Stored forecast errors since `?since=` (empty without it).
    pub history: Vec<ForecastErrorRecord>,
}
