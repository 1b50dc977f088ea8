//! Pool demand and autoscaling advice on the wire: `GET /v1/pools/{pool}/scaling`
//! ([`PoolScaling`]) and the `scaling` notification's content ([`ScalingNotice`]).
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the recommendation aims for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScalingObjective {
    /// The pool's latency objective, ms: a node's capacity is the load at which its
    /// latency reaches it.
    pub latency_slo_ms: f64,
    /// Share of a node's capacity planned for (like an autoscaler's target utilisation).
    pub target_utilisation: f64,
    /// Demand planned for: `mean + plan_z * sigma` of the forecast.
    pub plan_z: f64,
    /// The horizon the recommendation is for, minutes (the most nodes any horizon up to
    /// it needs).
    pub recommend_horizon_min: u32,
    /// Fewest and most nodes ever recommended.
    pub min_nodes: u32,
    /// See `min_nodes`.
    pub max_nodes: u32,
}

/// Demand and nodes needed at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScalingHorizon {
    /// `5m`, `15m` or `1h` (the Prometheus label).
    pub horizon: String,
    /// The horizon, minutes.
    pub minutes: u32,
    /// Forecast demand, requests per second.
    pub demand_rps: f64,
    /// Low end of its interval.
    pub demand_rps_lo: f64,
    /// High end of its interval.
    pub demand_rps_hi: f64,
    /// The demand planned for, requests per second.
    pub planned_rps: f64,
    /// The forecasting member used.
    pub model: String,
    /// Nodes needed for the planned demand (`None` before a capacity model is fitted).
    pub nodes: Option<u32>,
    /// Nodes for the low end of the demand interval.
    pub nodes_lo: Option<u32>,
    /// Nodes for the high end.
    pub nodes_hi: Option<u32>,
}

/// One minute of the pool's demand, with what was forecast then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScalingPoint {
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// Requests per second received in that minute.
    pub demand_rps: f64,
    /// The 5-minute forecast made at the end of that minute, requests per second (for
    /// `forecast_for_ms`).
    pub forecast_rps: f64,
    /// Its interval: low end.
    pub forecast_rps_lo: f64,
    /// High end.
    pub forecast_rps_hi: f64,
    /// The minute that forecast is for, Unix ms.
    pub forecast_for_ms: i64,
    /// Nodes the recommend horizon needed then (`None` without a capacity model).
    pub nodes_needed: Option<u32>,
    /// Nodes in service then.
    pub current_nodes: u32,
}

/// `GET /v1/pools/{pool}/scaling`: how many nodes the pool needs now and ahead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolScaling {
    /// The pool.
    pub pool: String,
    /// When this was computed, Unix ms.
    pub at_ms: i64,
    /// Nodes in service now (`healthy` or `degrading`).
    pub current_nodes: u32,
    /// Nodes the demand of the last complete minute needs (`None` before a capacity
    /// model is fitted or a minute is complete).
    pub needed_now: Option<u32>,
    /// The recommendation for the recommend horizon now (the most nodes any horizon up
    /// to it needs).
    pub recommended: Option<u32>,
    /// The recommendation as announced, with hysteresis (the node count while nothing
    /// was announced): what `plb_pool_desired_nodes{horizon="15m"}` shows.
    pub advised: Option<u32>,
    /// Requests per second received in the last complete minute.
    pub demand_rps: Option<f64>,
    /// One entry per horizon (5 min, 15 min, 1 h), once a minute is complete.
    pub horizons: Vec<ScalingHorizon>,
    /// Requests per second one node serves within the objective (`None` before a
    /// capacity model is fitted).
    pub node_capacity_rps: Option<f64>,
    /// The same capacity as requests in flight (the capacity model's measure).
    pub node_capacity_in_flight: Option<f64>,
    /// How `node_capacity_rps` was derived, in words.
    pub capacity_source: String,
    /// What the recommendation aims for.
    pub objective: ScalingObjective,
    /// When the announced recommendation last changed, Unix ms.
    pub last_changed_ms: Option<i64>,
    /// Complete minutes of demand seen.
    pub minutes_observed: u64,
    /// Why, in words.
    pub reason: String,
    /// Recent minutes, oldest first (at most six hours).
    pub history: Vec<ScalingPoint>,
}

/// The content of a `scaling` notification (and its webhook event `pool.scaling`): the
/// recommendation for the 15-minute horizon rose or fell past the pool's node count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScalingNotice {
    /// `up` or `down`.
    pub direction: String,
    /// The recommendation before (the node count it was measured against).
    pub from_nodes: u32,
    /// The new recommendation.
    pub to_nodes: u32,
    /// Nodes in service.
    pub current_nodes: u32,
    /// The horizon, minutes.
    pub horizon_min: u32,
    /// The plan's reason.
    pub reason: String,
}
