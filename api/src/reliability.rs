//! Probe reliability on the wire: a probe's state (`reliable`, `flaky`, `needs_update`)
//! with its evidence, the update prompts sent to the probe's owner (notifications), and
//! the per-pool webhook that delivers them. Produced by `plb-reliability` and the balancer.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Outcome, ProbeView};

/// How far a probe can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// Its own failures are rare: its samples feed forecasts and routing.
    #[default]
    Reliable,
    /// It fails by its own fault now and then: still used, worth a look.
    Flaky,
    /// It fails by its own fault most of the time: its samples are kept but excluded
    /// from forecasts and routing, and its owner is told to update it.
    NeedsUpdate,
}

impl ProbeState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeState::Reliable => "reliable",
            ProbeState::Flaky => "flaky",
            ProbeState::NeedsUpdate => "needs_update",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<ProbeState> {
        [
            ProbeState::Reliable,
            ProbeState::Flaky,
            ProbeState::NeedsUpdate,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// One example failure, as the probe reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailureExample {
    /// The node it ran on.
    pub node: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// When it ran, Unix ms.
    pub taken_at_ms: i64,
    /// The failure message (truncated).
    pub message: String,
    /// The tail of the captured stdout/stderr (truncated).
    pub stderr: String,
}

/// Why a probe is in its state: counts of one version's recent runs across the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReliabilityEvidence {
    /// The version these runs are of.
    pub version: u32,
    /// Runs in the window, across nodes.
    pub runs: u64,
    /// Runs whose failure counts against the probe (after attribution).
    pub probe_failures: u64,
    /// Runs whose failure counts against a node (after attribution).
    pub node_failures: u64,
    /// Runs by outcome class, e.g. `{"ok": 3, "trap": 9}`.
    pub outcomes: BTreeMap<String, u64>,
    /// Share of runs failing by the probe's fault.
    pub failure_rate: f64,
    /// Wilson score interval (95 %) of that share: lower end.
    pub failure_rate_lo: f64,
    /// Upper end.
    pub failure_rate_hi: f64,
    /// Nodes where the probe failed by its own fault.
    pub nodes_affected: Vec<String>,
    /// Nodes it ran on in the window.
    pub nodes_seen: u64,
    /// When this version first failed by its own fault, Unix ms.
    pub failing_since_ms: Option<i64>,
    /// A few recent failures with their messages and captured output.
    pub examples: Vec<FailureExample>,
    /// The attribution in words (what counted against whom, and why).
    pub reason: String,
}

/// A probe's reliability, as `GET /v1/pools/{pool}/probes/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeReliability {
    /// State now.
    pub state: ProbeState,
    /// When it entered this state, Unix ms (`None` while it has never left `reliable`).
    pub since_ms: Option<i64>,
    /// True when its samples are excluded from forecasts and routing.
    pub excluded: bool,
    /// The version the state is about.
    pub version: u32,
    /// The newest evidence (absent before any run was seen).
    pub evidence: Option<ReliabilityEvidence>,
}

/// `GET /v1/pools/{pool}/probes/{name}`: the active version and its reliability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeDetail {
    /// The active version.
    #[serde(flatten)]
    pub probe: ProbeView,
    /// How far it can be trusted.
    pub reliability: ProbeReliability,
}

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The probe entered `needs_update`: its samples are excluded until a version runs
    /// reliably.
    NeedsUpdate,
    /// A version runs reliably again: the earlier prompt is resolved.
    Resolved,
    /// The pool's 15-minute scaling recommendation rose or fell past its node count
    /// (`scaling` has the content; `probe` is empty and `version` 0).
    Scaling,
}

impl NotificationKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::NeedsUpdate => "needs_update",
            NotificationKind::Resolved => "resolved",
            NotificationKind::Scaling => "scaling",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<NotificationKind> {
        match s {
            "needs_update" => Some(NotificationKind::NeedsUpdate),
            "resolved" => Some(NotificationKind::Resolved),
            "scaling" => Some(NotificationKind::Scaling),
            _ => None,
        }
    }
}

/// An update prompt to a probe's owner (also the webhook's JSON body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// Increasing id, for `?since=`.
    pub id: i64,
    /// `needs_update`, `resolved` or `scaling`.
    pub kind: NotificationKind,
    /// The pool.
    pub pool: String,
    /// The probe.
    pub probe: String,
    /// The version the notification is about (for `resolved`: the version that runs
    /// reliably).
    pub version: u32,
    /// When it was raised, Unix ms.
    pub created_at_ms: i64,
    /// For `resolved`: the id of the `needs_update` notification it resolves.
    pub resolves: Option<i64>,
    /// What to do, in words.
    pub summary: String,
    /// The evidence at the transition.
    pub evidence: ReliabilityEvidence,
    /// For `scaling`: the recommendation that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<crate::ScalingNotice>,
}

/// `GET /v1/notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    /// Oldest first.
    pub notifications: Vec<Notification>,
    /// The id to pass as `since` for the next page (the newest id returned, or the
    /// `since` given when none).
    pub next_since: i64,
}

/// `PUT /v1/pools/{pool}/webhook`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutWebhook {
    /// Where notifications are POSTed (`http://` or `https://`).
    #[schema(max_length = 2048, example = "https://hooks.example.com/plb")]
    pub url: String,
    /// The HMAC-SHA256 key (16 to 256 characters); never shown again.
    #[schema(min_length = 16, max_length = 256, example = "0123456789abcdef0123")]
    pub secret: String,
}

/// A pool's webhook; the secret is never shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// The pool.
    pub pool: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// When it was set, Unix ms.
    pub updated_at_ms: i64,
}

/// One delivery attempt of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    /// When it was made, Unix ms.
    pub at_ms: i64,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took, ms.
    pub duration_ms: f64,
}

/// One notification's delivery to a pool's webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// Delivery id (also the `X-PLB-Delivery` header; the same on every retry).
    pub id: i64,
    /// The notification delivered.
    pub notification_id: i64,
    /// The URL it goes to.
    pub url: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, Unix ms (pending only).
    pub next_attempt_at_ms: Option<i64>,
    /// When it was queued, Unix ms.
    pub created_at_ms: i64,
    /// When it was delivered, Unix ms.
    pub delivered_at_ms: Option<i64>,
    /// Every attempt, oldest first.
    pub log: Vec<DeliveryAttempt>,
}

/// `GET /v1/pools/{pool}/webhook/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveries {
    /// Newest first.
    pub deliveries: Vec<WebhookDelivery>,
}
