//! What a run is asked to do ([`RunSpec`]) and what it produced ([`RunReport`]).
use std::collections::BTreeMap;

use plb_api::Outcome;
use serde::{Deserialize, Serialize};

/// The node a probe measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The node's id.
    pub node: String,
    /// `host:port` of the node: the only address the probe's host calls reach.
    pub address: String,
}

/// The hard limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel budget; `None` runs on the engine without fuel metering.
    pub fuel: Option<u64>,
    /// Wall-clock limit, including time blocked in host calls.
    pub timeout_ms: u32,
    /// Linear-memory limit (all memories of the component together).
    pub memory_mib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Some(1_000_000_000),
            timeout_ms: 1_000,
            memory_mib: 64,
        }
    }
}

/// One run: target, config and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The node under test.
    pub target: Target,
    /// The probe's key/value config.
    pub config: BTreeMap<String, String>,
    /// The run's limits.
    pub limits: Limits,
}

/// How a run ended, with what it measured. Serialises to the `plb probe run` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The outcome class.
    pub outcome: Outcome,
    /// Metrics by name (only for `ok`).
    pub metrics: BTreeMap<String, f64>,
    /// Wall-clock time of instantiate + run.
    pub duration_ms: f64,
    /// Fuel consumed, when metered.
    pub fuel_used: Option<u64>,
    /// The failure's message; empty for `ok`.
    pub message: String,
    /// Captured stdout, stderr and host `log` lines (bounded).
    pub stderr: String,
}

impl RunReport {
    pub(crate) fn failed(outcome: Outcome, message: impl Into<String>) -> Self {
        RunReport {
            outcome,
            metrics: BTreeMap::new(),
            duration_ms: 0.0,
            fuel_used: None,
            message: message.into(),
            stderr: String::new(),
        }
    }
}
