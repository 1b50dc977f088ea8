//! The dynamic threshold and the node state machine: when a metric's forecast leaves
//! its profile band by a margin that grows with the forecast's uncertainty, when
//! forecast demand exceeds capacity, and the hysteresis that keeps states from flapping.
use std::collections::BTreeMap;

use plb_api::{Evidence, MetricDirection, NodeState, StateChange};
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
use crate::forecast::Forecast;
use crate::num::clean;

/// How states are decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateParams {
    /// Horizon, in samples of each series, at which forecasts are held against the band.
    pub horizon: u32,
    /// Band half-width in robust standard deviations (1.4826 MAD) around the median.
    pub band_k: f64,
    /// The forecast must clear the band by `margin_z` times its own standard deviation:
    /// an uncertain forecast needs to go further out before it counts.
    pub margin_z: f64,
    /// Consecutive `degrading` assessments needed to enter `degrading`.
    pub enter_after: u32,
    /// Consecutive assessments of a better state needed to leave `degrading` or `unhealthy`.
    pub leave_after: u32,
    /// Without a probe run for this long, a node is `unknown`.
    pub stale_after_ms: i64,
    /// Consecutive runs of one probe counting against the node that make it `unhealthy`.
    pub unhealthy_after: u32,
    /// `degrading` when forecast demand exceeds `demand_ratio` times capacity.
    pub demand_ratio: f64,
    /// Direction overrides by metric name (`latency-ms`) or series key (`http/latency-ms`).
    pub directions: BTreeMap<String, MetricDirection>,
}

impl Default for StateParams {
    fn default() -> Self {
        StateParams {
            horizon: 6,
            band_k: 4.0,
            margin_z: 1.0,
            enter_after: 2,
            leave_after: 3,
            stale_after_ms: 30_000,
            unhealthy_after: 2,
            demand_ratio: 1.0,
            directions: BTreeMap::new(),
        }
    }
}

impl StateParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, message: String| Err(PredictError::InvalidParam { name, message });
        if self.horizon == 0 {
            return bad("horizon", "must be at least 1".into());
        }
        if !(self.band_k > 0.0 && self.band_k.is_finite()) {
            return bad("band_k", format!("must be positive, got {}", self.band_k));
        }
        if !(self.margin_z >= 0.0 && self.margin_z.is_finite()) {
            return bad("margin_z", format!("must be >= 0, got {}", self.margin_z));
        }
        if self.enter_after == 0 || self.leave_after == 0 || self.unhealthy_after == 0 {
            return bad("enter_after", "streak lengths must be at least 1".into());
        }
        if self.stale_after_ms <= 0 {
            return bad("stale_after_ms", "must be positive".into());
        }
        if !(self.demand_ratio > 0.0 && self.demand_ratio.is_finite()) {
            return bad("demand_ratio", format!("must be positive, got {}", self.demand_ratio));
        }
        Ok(())
    }

    /// The direction of series `key` (`probe/metric`): an override by key, then by
    /// metric name, then the naming convention.
    pub fn direction(&self, key: &str) -> MetricDirection {
        let metric = key.rsplit_once('/').map_or(key, |(_, m)| m);
        self.directions
            .get(key)
            .or_else(|| self.directions.get(metric))
            .copied()
            .unwrap_or_else(|| infer_direction(metric))
    }
}

/// The naming convention: rates, throughput and bandwidth are higher-is-better
/// (`ops-per-ms`, `bytes-per-s`, `read-ops`, `bandwidth-mbps`, `throughput`, `free`,
/// `available`, `hit-ratio`); everything else (latency, load, work time) is
/// higher-is-worse.
pub fn infer_direction(metric: &str) -> MetricDirection {
    let m = metric.to_ascii_lowercase();
    let better_suffix = ["-per-s", "-per-sec", "-per-ms", "-per-min", "-ops", "-rps", "-qps"];
    let better_word = ["bandwidth", "throughput", "free", "available", "hit-ratio", "hit-rate"];
    if better_suffix.iter().any(|s| m.ends_with(s))
        || better_word.iter().any(|w| m.contains(w))
        || m == "ops"
    {
        MetricDirection::HigherIsBetter
    } else {
        MetricDirection::HigherIsWorse
    }
}

/// The dynamic threshold of one series: the band's bad edge pushed out by `margin_z`
/// standard deviations of the forecast. `Some` evidence when the forecast mean is
/// past it.
pub fn metric_evidence(
    key: &str,
    direction: MetricDirection,
    forecast: &Forecast,
    band: (f64, f64),
    params: &StateParams,
) -> Option<Evidence> {
    let margin = clean(params.margin_z * forecast.sigma());
    let (threshold, crossed, word) = match direction {
        MetricDirection::HigherIsWorse => {
            let t = clean(band.1 + margin);
            (t, forecast.mean > t, "above")
        }
        MetricDirection::HigherIsBetter => {
            let t = clean(band.0 - margin);
            (t, forecast.mean < t, "below")
        }
    };
    crossed.then(|| Evidence {
        metric: key.to_string(),
        forecast: forecast.mean,
        threshold,
        horizon: params.horizon,
        reason: format!(
            "{key} forecast {:.4} at h={} is {word} its threshold {threshold:.4} (band {:.4}..{:.4}, margin {margin:.4})",
            forecast.mean, params.horizon, band.0, band.1
        ),
    })
}

/// `Some` evidence when forecast demand exceeds `demand_ratio` times capacity.
pub fn demand_evidence(demand: f64, capacity: f64, params: &StateParams) -> Option<Evidence> {
    let threshold = clean(capacity * params.demand_ratio);
    (demand > threshold).then(|| Evidence {
        metric: "demand".to_string(),
        forecast: clean(demand),
        threshold,
        horizon: params.horizon,
        reason: format!(
            "forecast demand {demand:.3} at h={} exceeds capacity {capacity:.3}",
            params.horizon
        ),
    })
}

/// One raw assessment, before hysteresis.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The state the evidence points to now.
    pub state: NodeState,
    /// In words.
    pub reason: String,
    /// What crossed.
    pub evidence: Vec<Evidence>,
}

/// Hysteresis: a node enters `unhealthy` or `unknown` at once, `degrading` after
/// `enter_after` consecutive verdicts, and leaves `degrading`/`unhealthy` for a better
/// state after `leave_after`. From `unknown` any verdict is taken at once.
#[derive(Debug, Clone, Default)]
pub struct Hysteresis {
    state: NodeState,
    since_ms: Option<i64>,
    pending: Option<(NodeState, u32)>,
    last: Option<Verdict>,
}

fn rank(s: NodeState) -> u8 {
    match s {
        NodeState::Healthy => 0,
        NodeState::Degrading => 1,
        NodeState::Unhealthy => 2,
        NodeState::Unknown => 3,
    }
}

impl Hysteresis {
    /// Current state.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// When the current state was entered.
    pub fn since_ms(&self) -> Option<i64> {
        self.since_ms
    }

    /// The newest verdict.
    pub fn last(&self) -> Option<&Verdict> {
        self.last.as_ref()
    }

    /// The pending state and its streak, if a change is being considered.
    pub fn pending(&self) -> Option<(NodeState, u32)> {
        self.pending
    }

    fn needed(&self, to: NodeState, params: &StateParams) -> u32 {
        match (self.state, to) {
            (NodeState::Unknown, _) | (_, NodeState::Unhealthy) | (_, NodeState::Unknown) => 1,
            (NodeState::Healthy, NodeState::Degrading) => params.enter_after,
            (from, to) if rank(to) < rank(from) => params.leave_after,
            _ => 1,
        }
    }

    /// Takes one verdict at `at_ms`; returns the change if the state changes.
    pub fn step(&mut self, at_ms: i64, verdict: Verdict, params: &StateParams) -> Option<StateChange> {
        let to = verdict.state;
        let mut change = None;
        if to == self.state {
            self.pending = None;
        } else {
            let streak = match self.pending {
                Some((s, n)) if s == to => n + 1,
                _ => 1,
            };
            if streak >= self.needed(to, params) {
                change = Some(StateChange {
                    at_ms,
                    from: self.state,
                    to,
                    reason: verdict.reason.clone(),
                    evidence: verdict.evidence.clone(),
                });
                self.state = to;
                self.since_ms = Some(at_ms);
                self.pending = None;
            } else {
                self.pending = Some((to, streak));
            }
        }
        self.last = Some(verdict);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(state: NodeState) -> Verdict {
        Verdict {
            state,
            reason: state.as_str().to_string(),
            evidence: vec![],
        }
    }

    #[test]
    fn direction_by_convention_and_override() {
        assert_eq!(infer_direction("latency-ms"), MetricDirection::HigherIsWorse);
        assert_eq!(infer_direction("cpu-work-ms"), MetricDirection::HigherIsWorse);
        assert_eq!(infer_direction("load"), MetricDirection::HigherIsWorse);
        assert_eq!(infer_direction("ops-per-ms"), MetricDirection::HigherIsBetter);
        assert_eq!(infer_direction("bytes-per-s"), MetricDirection::HigherIsBetter);
        assert_eq!(infer_direction("write-ops"), MetricDirection::HigherIsBetter);
        assert_eq!(infer_direction("bandwidth-mbps"), MetricDirection::HigherIsBetter);
        let mut p = StateParams::default();
        p.directions
            .insert("load".into(), MetricDirection::HigherIsBetter);
        p.directions
            .insert("x/ops-per-ms".into(), MetricDirection::HigherIsWorse);
        assert_eq!(p.direction("node/load"), MetricDirection::HigherIsBetter);
        assert_eq!(p.direction("x/ops-per-ms"), MetricDirection::HigherIsWorse);
        assert_eq!(p.direction("y/ops-per-ms"), MetricDirection::HigherIsBetter);
    }

    #[test]
    fn threshold_widens_with_uncertainty() {
        let p = StateParams::default();
        let sure = Forecast { mean: 11.0, lo: 10.9, hi: 11.1 };
        let unsure = Forecast { mean: 11.0, lo: 5.0, hi: 17.0 };
        let worse = MetricDirection::HigherIsWorse;
        assert!(metric_evidence("m", worse, &sure, (0.0, 10.0), &p).is_some());
        assert!(metric_evidence("m", worse, &unsure, (0.0, 10.0), &p).is_none());
        let better = MetricDirection::HigherIsBetter;
        assert!(metric_evidence("m", better, &sure, (0.0, 10.0), &p).is_none());
        let low = Forecast { mean: -1.0, lo: -1.1, hi: -0.9 };
        let e = metric_evidence("m", better, &low, (0.0, 10.0), &p).expect("below");
        assert!(e.threshold < 0.0 && e.reason.contains("below"));
        assert!(demand_evidence(11.0, 10.0, &p).is_some());
        assert!(demand_evidence(9.0, 10.0, &p).is_none());
    }

    #[test]
    fn hysteresis_enters_and_leaves_after_streaks() {
        let p = StateParams::default();
        let mut h = Hysteresis::default();
        assert_eq!(h.step(0, v(NodeState::Healthy), &p).map(|c| c.to), Some(NodeState::Healthy));
        assert!(h.step(1, v(NodeState::Degrading), &p).is_none());
        assert!(h.step(2, v(NodeState::Healthy), &p).is_none(), "streak broken");
        assert!(h.step(3, v(NodeState::Degrading), &p).is_none());
        let c = h.step(4, v(NodeState::Degrading), &p).expect("enter");
        assert_eq!((c.from, c.to, c.at_ms), (NodeState::Healthy, NodeState::Degrading, 4));
        assert!(h.step(5, v(NodeState::Healthy), &p).is_none());
        assert!(h.step(6, v(NodeState::Healthy), &p).is_none());
        assert_eq!(h.pending(), Some((NodeState::Healthy, 2)));
        assert!(h.step(7, v(NodeState::Healthy), &p).is_some());
        assert_eq!(h.step(8, v(NodeState::Unhealthy), &p).map(|c| c.to), Some(NodeState::Unhealthy));
        assert_eq!(h.since_ms(), Some(8));
    }
}
