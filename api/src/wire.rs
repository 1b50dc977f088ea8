//! Request and response bodies of the REST API v1.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Outcome, Tier};

/// The one error shape: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_probe`, `not_found`.
    pub code: String,
    /// A human-readable message naming the problem.
    pub message: String,
}

/// One run of one probe on one node, as an agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Unique id chosen by the agent (a UUID); reports are idempotent by it.
    pub id: String,
    /// The pool the probe belongs to.
    pub pool: String,
    /// The probe's name (`node` for the agent's built-in node sampler).
    pub probe: String,
    /// The probe version that ran (0 for the built-in sampler).
    pub version: u32,
    /// When the run started, Unix time in milliseconds.
    pub taken_at_ms: i64,
    /// How the run ended.
    pub outcome: Outcome,
    /// Metrics by name; empty unless the outcome is `ok`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Wall-clock duration of the run.
    pub duration_ms: f64,
    /// Fuel consumed, when fuel metering was on.
    #[serde(default)]
    pub fuel_used: Option<u64>,
    /// The failure message, if any.
    #[serde(default)]
    pub message: String,
    /// The tail of the guest's captured stdout/stderr, if any.
    #[serde(default)]
    pub stderr: String,
}

/// `POST /v1/reports`: a batch of samples from one node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// The reporting node; must be the node the agent token registered.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub node: String,
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
    /// Samples the agent had to drop (spool full) since its last accepted report.
    #[serde(default)]
    pub dropped: u64,
}

/// Answer to `POST /v1/reports`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportAck {
    /// Samples newly stored.
    pub accepted: usize,
    /// Samples already stored before (resent).
    pub duplicates: usize,
}

/// The name reserved for the agent's built-in node sampler.
pub const NODE_SAMPLER_PROBE: &str = "node";

/// `POST /v1/agents/register`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The node's id, unique within its pools: 1 to 128 of `[A-Za-z0-9._-]`, starting
    /// with a letter or digit.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub node: String,
    /// Where the node's traffic goes, `host:port` (at most 255 bytes), in the operator's
    /// node networks (`--node-networks`).
    #[schema(max_length = 255, pattern = ":\\+?[0-9]+$", example = "10.0.0.7:8080")]
    pub address: String,
    /// Pools to join (1 to 64); the agent token must be enrolled for each.
    #[schema(schema_with = crate::pool_names)]
    pub pools: Vec<String>,
    /// Free-form labels: at most 64, keys 1 to 128 bytes, values at most 1024 bytes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One probe an agent must run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    /// Pool of the probe.
    pub pool: String,
    /// Probe name.
    pub probe: String,
    /// Active version.
    pub version: u32,
    /// Hex sha256 of the module, fetched from `/v1/modules/{sha256}`.
    pub sha256: String,
    /// Tier.
    pub tier: Tier,
    /// Current interval (may be shortened while the node is `degrading`).
    pub interval_ms: u64,
    /// Wall-clock limit.
    pub timeout_ms: u32,
    /// Fuel limit, `None` for no metering.
    pub fuel: Option<u64>,
    /// Memory limit.
    pub memory_mib: u32,
    /// Config passed to the probe.
    pub config: BTreeMap<String, String>,
}

/// `GET /v1/agents/{node}/assignments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignments {
    /// The node.
    pub node: String,
    /// Its address: every probe's target.
    pub address: String,
    /// The probes to run.
    pub probes: Vec<Assignment>,
}

/// A node's state as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Within its profile and forecast to stay there.
    Healthy,
    /// Forecast to leave its band: new traffic shifts away gradually.
    Degrading,
    /// Failing now.
    Unhealthy,
    /// No fresh samples.
    #[default]
    Unknown,
}

impl NodeState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "healthy",
            NodeState::Degrading => "degrading",
            NodeState::Unhealthy => "unhealthy",
            NodeState::Unknown => "unknown",
        }
    }
}

/// `GET /v1/pools/{pool}/route`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouteDecision {
    /// Chosen node id.
    pub node: String,
    /// Its address.
    pub address: String,
    /// The policy's score for it (higher is better).
    pub score: f64,
    /// Its state.
    pub state: NodeState,
    /// Why it was chosen, in words.
    pub reason: String,
}

/// `POST /v1/pools/{pool}/feedback`: what happened to one routed request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// The node the request went to (one of the pool's).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub node: String,
    /// Observed latency, ms (finite, at least 0).
    #[schema(minimum = 0)]
    pub latency_ms: f64,
    /// Whether it succeeded.
    pub ok: bool,
}
