//! Bodies of the balancer's resource endpoints: clients, agent tokens, pools, probes and
//! the node view. Response structs only ever gain optional fields, so older clients keep
//! working as later issues add forecasts, state and reliability.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{NodeAssessment, ProbeSettings, Sample};

/// `POST /v1/clients` (admin token).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// A human-readable name: at most 128 characters, not blank (leading and trailing
    /// ASCII whitespace is dropped).
    #[schema(max_length = 128, pattern = r"[^\t\n\f\r ]")]
    pub name: String,
}

/// Answer to `POST /v1/clients`: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientCreated {
    /// The client's id, for `DELETE /v1/clients/{id}`.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its API token (`plbc_...`); stored hashed, never shown again.
    pub token: String,
}

/// `POST /v1/agent-tokens` (admin or the pools' owner).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentToken {
    /// Pools the agent may register its node into (1 to 64 names of one client's pools).
    #[schema(schema_with = crate::pool_names)]
    pub pools: Vec<String>,
    /// The owning client's id: required with the admin token, ignored (must match if
    /// given) with a client token.
    #[serde(default)]
    pub client: Option<i64>,
}

/// Answer to `POST /v1/agent-tokens`: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentTokenCreated {
    /// The token's id, for `DELETE /v1/agent-tokens/{id}`.
    pub id: i64,
    /// The agent token (`plba_...`); stored hashed, never shown again.
    pub token: String,
    /// The pools it is enrolled for.
    pub pools: Vec<String>,
}

/// `POST /v1/pools`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    /// Pool name: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or digit, unique
    /// per client.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// The pool's latency objective in ms (positive, at most one hour).
    #[schema(exclusive_minimum = 0, maximum = 3600000)]
    pub latency_slo_ms: f64,
}

/// A pool as `GET /v1/pools` and `GET /v1/pools/{pool}` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Latency objective in ms.
    pub latency_slo_ms: f64,
    /// Routing policy name.
    pub policy: String,
    /// When it was created, Unix ms.
    pub created_at_ms: i64,
    /// Nodes registered in it.
    pub nodes: u64,
    /// Active (not deleted) probes.
    pub probes: u64,
}

/// `GET /v1/pools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    /// The caller's pools, by name.
    pub pools: Vec<PoolView>,
}

/// A probe's active version, as upload, list and get answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeView {
    /// Pool of the probe.
    pub pool: String,
    /// Probe name.
    pub name: String,
    /// Active version (1 for the first upload).
    pub version: u32,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// The active version's settings.
    #[serde(flatten)]
    pub settings: ProbeSettings,
    /// When this version was uploaded, Unix ms.
    pub created_at_ms: i64,
}

/// `GET /v1/pools/{pool}/probes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeList {
    /// Active probes, by name.
    pub probes: Vec<ProbeView>,
}

/// What the balancer knows about one node of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// Node id.
    pub node: String,
    /// Where its traffic goes.
    pub address: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// When it (last) registered, Unix ms.
    pub registered_at_ms: i64,
    /// When its agent last reported or polled, Unix ms.
    pub last_seen_ms: Option<i64>,
    /// The newest sample of each probe in this pool (and of the node sampler), by probe name.
    pub latest: Vec<Sample>,
    /// The prediction state, once the balancer computes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment: Option<NodeAssessment>,
    /// Live routing figures, once the balancer routes for the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::NodeRouting>,
}

/// `GET /v1/pools/{pool}/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolNodes {
    /// The pool.
    pub pool: String,
    /// Its nodes, by id.
    pub nodes: Vec<NodeView>,
    /// Probes of the pool in `needs_update`: their samples are stored but left out of
    /// every node's forecasts and of routing (see `GET .../probes/{name}`).
    #[serde(default)]
    pub excluded_probes: Vec<String>,
    /// Each probe metric's trust in routing on this pool, once the balancer computes
    /// it: a metric moves traffic only as far as it has predicted latency here.
    #[serde(default)]
    pub metric_trust: Vec<crate::MetricTrust>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
    /// The balancer's version.
    pub version: String,
    /// This replica's name (`--replica`).
    #[serde(default)]
    pub replica: String,
    /// Whether this replica leads (does the work that must happen once: the webhook
    /// outbox, retention). Always true on SQLite, where a balancer is alone.
    #[serde(default)]
    pub leader: bool,
    /// The epoch it leads in (grows with each change of leader; 0 when it does not lead).
    #[serde(default)]
    pub leader_epoch: i64,
}
