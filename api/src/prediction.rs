//! The prediction views the balancer serves on `GET /v1/pools/{pool}/nodes`: a node's
//! state with its evidence, each metric's profile, forecasts and forecast errors.
//! Produced by `plb-predict`; every number in them is finite.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{NodeState, Outcome};

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricDirection {
    /// Latency, load, work time: rising is bad.
    #[default]
    HigherIsWorse,
    /// Throughput, bandwidth, operations per second: falling is bad.
    HigherIsBetter,
}

/// Why a node is in its state: one metric's forecast against its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// Series key `probe/metric`, `probe/<name>` for outcomes, or `demand` for capacity.
    pub metric: String,
    /// The forecast (or count) that crossed.
    pub forecast: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Horizon of the forecast, in samples of that series (0: now).
    pub horizon: u32,
    /// The reason in words.
    pub reason: String,
}

/// One change of a node's state, with the evidence at that moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StateChange {
    /// When it changed, Unix ms.
    pub at_ms: i64,
    /// Previous state.
    pub from: NodeState,
    /// New state.
    pub to: NodeState,
    /// Why, in words.
    pub reason: String,
    /// What crossed which threshold.
    pub evidence: Vec<Evidence>,
}

/// A metric's learnt normal range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    /// False while still learning from the first samples (the band is provisional).
    pub ready: bool,
    /// Robust centre.
    pub median: f64,
    /// Median absolute deviation (unscaled).
    pub mad: f64,
    /// Robust standard deviation used for the band (at least 1.4826 MAD).
    pub scale: f64,
    /// Typical forecast level: the band's centre (the median for symmetric metrics).
    pub level: f64,
    /// Lower end of the band forecasts are held against.
    pub lo: f64,
    /// Upper end of that band.
    pub hi: f64,
}

/// A forecast at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HorizonForecast {
    /// Horizon in samples of the series.
    pub h: u32,
    /// About how far ahead that is, in ms (from the sampling interval), when known.
    pub approx_ms: Option<f64>,
    /// Expected value.
    pub mean: f64,
    /// Lower end of the prediction interval (about 95 %).
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// The model that made it, e.g. `holt(0.2,0.05,0.9)`.
    pub model: String,
}

/// One model family's recent error at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FamilyErrorView {
    /// `naive`, `ses` or `holt`.
    pub family: String,
    /// Its best member now.
    pub best_member: String,
    /// That member's recent mean absolute error.
    pub mae: f64,
}

/// The feedback loop at one horizon: how the forecasts given did against what then
/// happened, next to the last-value forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HorizonErrors {
    /// Horizon in samples.
    pub h: u32,
    /// Forecasts scored so far.
    pub scored: u64,
    /// Recent (exponentially weighted) mean absolute error of the forecasts given.
    pub mae: f64,
    /// Same for the last-value forecast.
    pub naive_mae: f64,
    /// `mae / naive_mae` (`None` when the naive error is 0).
    pub relative_to_naive: Option<f64>,
    /// Each family's best member and its error.
    pub families: Vec<FamilyErrorView>,
}

/// Everything known about one metric of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricAssessment {
    /// Series key `probe/metric`.
    pub name: String,
    /// Which way is bad.
    pub direction: MetricDirection,
    /// Samples learnt.
    pub samples: u64,
    /// Newest value.
    pub last_value: f64,
    /// Time of the newest value, Unix ms.
    pub last_seen_ms: Option<i64>,
    /// Smoothed sampling interval, ms.
    pub step_ms: Option<f64>,
    /// The normal range.
    pub profile: Option<ProfileView>,
    /// Forecasts at the reported horizons.
    pub forecasts: Vec<HorizonForecast>,
    /// Forecast errors at the same horizons.
    pub errors: Vec<HorizonErrors>,
}

/// Recent runs of one probe on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeHealth {
    /// Probe name.
    pub probe: String,
    /// Time of its newest run, Unix ms.
    pub last_run_ms: i64,
    /// Outcome of its newest run.
    pub last_outcome: Outcome,
    /// Consecutive recent runs that counted against the node.
    pub consecutive_node_failures: u32,
    /// Its newest outcomes, newest last.
    pub recent: Vec<Outcome>,
}

/// Forecast demand against capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DemandView {
    /// Newest observed load.
    pub load: f64,
    /// Load forecast at the state horizon.
    pub forecast: f64,
    /// Capacity from the pool's capacity model, if one is known.
    pub capacity: Option<f64>,
}

/// A node's prediction state: `GET /v1/pools/{pool}/nodes` shows one per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeAssessment {
    /// State now (`unknown` when samples are stale).
    pub state: NodeState,
    /// When the current state was entered, Unix ms.
    pub since_ms: Option<i64>,
    /// Why, in words.
    pub reason: String,
    /// What crossed which threshold at the newest assessment.
    pub evidence: Vec<Evidence>,
    /// Time of the newest sample, Unix ms.
    pub last_seen_ms: Option<i64>,
    /// Per metric.
    pub metrics: Vec<MetricAssessment>,
    /// Per probe.
    pub probes: Vec<ProbeHealth>,
    /// Demand against capacity, when load is reported.
    pub demand: Option<DemandView>,
    /// Newest state changes, newest last.
    pub recent_changes: Vec<StateChange>,
}
