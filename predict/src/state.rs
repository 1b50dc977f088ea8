//! The dynamic threshold and the node state machine: when a metric's forecast leaves
//! its profile band by a margin that grows with the forecast's uncertainty, when
//! forecast demand exceeds capacity, and the hysteresis that keeps states from flapping.
use std::collections::BTreeMap;

use plb_api::{Evidence, MetricDirection, NodeState, StateChange};
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
#[cfg(test)]
use crate::forecast::Forecast;
use crate::forecast::Forecaster;
use crate::num::clean;
use crate::series::SeriesModel;

/// How states are decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateParams {
    /// Horizon, in samples of each series, at which forecasts are held against the band.
    pub horizon: u32,
    /// Band half-width in robust standard deviations (1.4826 MAD) around the median.
    pub band_k: f64,
    /// The forecast must clear the band by `margin_z` standard deviations of its mean
    /// (see [`mean_sigma`]): an uncertain forecast needs to go further out to count.
    pub margin_z: f64,
    /// Besides the chosen forecast, every member whose recent error at the horizon is
    /// within this factor of the best one is a credible forecast too, and the worst
    /// credible one is held against the band (1 = the chosen forecast only). This lets
    /// a trend model raise the alarm while a level model still has the lower error.
    pub credible_ratio: f64,
    /// Consecutive `degrading` assessments needed to enter `degrading`.
    pub enter_after: u32,
    /// Consecutive assessments of a better state needed to leave `degrading`.
    pub leave_after: u32,
    /// Consecutive assessments of a better state needed to leave `unhealthy` (a node
    /// that answers again is back soon, like active health checks' healthy threshold;
    /// slow start then ramps its traffic up).
    #[serde(default = "default_recover_after")]
    pub recover_after: u32,
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
            band_k: 3.0,
            margin_z: 0.5,
            credible_ratio: 1.25,
            enter_after: 2,
            leave_after: 3,
            recover_after: 3,
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
        if !(self.credible_ratio >= 1.0 && self.credible_ratio.is_finite()) {
            return bad(
                "credible_ratio",
                format!("must be >= 1, got {}", self.credible_ratio),
            );
        }
        if self.enter_after == 0
            || self.leave_after == 0
            || self.recover_after == 0
            || self.unhealthy_after == 0
        {
            return bad("enter_after", "streak lengths must be at least 1".into());
        }
        if self.stale_after_ms <= 0 {
            return bad("stale_after_ms", "must be positive".into());
        }
        if !(self.demand_ratio > 0.0 && self.demand_ratio.is_finite()) {
            return bad(
                "demand_ratio",
                format!("must be positive, got {}", self.demand_ratio),
            );
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

fn default_recover_after() -> u32 {
    3
}

/// The naming convention: rates, throughput and bandwidth are higher-is-better
/// (`ops-per-ms`, `bytes-per-s`, `read-ops`, `bandwidth-mbps`, `throughput`, `free`,
/// `available`, `hit-ratio`); everything else (latency, load, work time) is
/// higher-is-worse.
pub fn infer_direction(metric: &str) -> MetricDirection {
    let m = metric.to_ascii_lowercase();
    let better_suffix = [
        "-per-s", "-per-sec", "-per-ms", "-per-min", "-ops", "-rps", "-qps",
    ];
    let better_word = [
        "bandwidth",
        "throughput",
        "free",
        "available",
        "hit-ratio",
        "hit-rate",
    ];
    if better_suffix.iter().any(|s| m.ends_with(s))
        || better_word.iter().any(|w| m.contains(w))
        || m == "ops"
    {
        MetricDirection::HigherIsBetter
    } else {
        MetricDirection::HigherIsWorse
    }
}

/// The standard deviation of a forecast's mean at horizon h: the part of its h-step
/// error beyond the metric's own noise, sqrt(max(sigma_h^2 - noise^2, 0)). The noise is
/// estimated by the lowest one-step error of any model on the series; the band already
/// allows for it, and what is left is how unsure the model is about where the level
/// is heading.
pub fn mean_sigma(sigma_h: f64, noise: f64) -> f64 {
    // Written as a product so that huge sigmas do not overflow when squared.
    clean(((sigma_h - noise).max(0.0) * (sigma_h + noise)).sqrt())
}

/// The dynamic threshold of one series: the band's bad edge pushed out by `margin_z`
/// standard deviations of the forecast mean (`sigma`). `Some` evidence when the
/// forecast mean is past it.
pub fn metric_evidence(
    key: &str,
    direction: MetricDirection,
    mean: f64,
    sigma: f64,
    band: (f64, f64),
    params: &StateParams,
    model: &str,
) -> Option<Evidence> {
    let margin = clean(params.margin_z * sigma);
    let (threshold, crossed, word) = match direction {
        MetricDirection::HigherIsWorse => {
            let t = clean(band.1 + margin);
            (t, mean > t, "above")
        }
        MetricDirection::HigherIsBetter => {
            let t = clean(band.0 - margin);
            (t, mean < t, "below")
        }
    };
    crossed.then(|| Evidence {
        metric: key.to_string(),
        forecast: mean,
        threshold,
        horizon: params.horizon,
        reason: format!(
            "{key} forecast {mean:.4} at h={} by {model} is {word} its threshold {threshold:.4} (band {:.4}..{:.4}, margin {margin:.4})",
            params.horizon, band.0, band.1
        ),
    })
}

/// How far a forecast `mean` has moved toward its dynamic threshold (the same one
/// [`metric_evidence`] holds it against): 0 while it stays within the inner half of the
/// band (from the centre to halfway to the bad edge: noise lives there), rising
/// linearly to 1 at the threshold (the bad edge pushed out by `margin_z` standard
/// deviations of the forecast mean), and above 1 past it. So a score of 1 or more is
/// exactly a crossing: the degrade score that shapes a node's traffic and the verdict
/// that turns it `degrading` come from one evidence, one threshold.
pub fn threshold_score(
    direction: MetricDirection,
    mean: f64,
    sigma: f64,
    band: (f64, f64),
    params: &StateParams,
) -> f64 {
    let margin = clean(params.margin_z * sigma);
    let centre = 0.5 * (band.0 + band.1);
    let (start, threshold, x) = match direction {
        MetricDirection::HigherIsWorse => (0.5 * (centre + band.1), band.1 + margin, mean),
        // Mirrored, so that "further out" is larger in both directions.
        MetricDirection::HigherIsBetter => (-0.5 * (centre + band.0), -(band.0 - margin), -mean),
    };
    let score = if threshold > start {
        (x - start) / (threshold - start)
    } else if x > threshold {
        1.0
    } else {
        0.0
    };
    if score.is_finite() {
        score.max(0.0)
    } else {
        0.0
    }
}

/// One series' credible forecasts at the horizon: the chosen one first, then every bank
/// member whose recent error at the horizon is within `credible_ratio` of the best,
/// each as (mean, standard deviation of the mean, model label), with the profile band
/// they are held against. `None` while the profile warms up.
struct Credible<'a> {
    band: (f64, f64),
    direction: MetricDirection,
    forecasts: Vec<(f64, f64, &'a str)>,
}

fn credible<'a>(key: &str, series: &'a SeriesModel, params: &StateParams) -> Option<Credible<'a>> {
    let profile = series.profile();
    if !profile.is_ready() || series.count() == 0 {
        return None;
    }
    let band = profile.forecast_band(params.band_k)?;
    let h = u64::from(params.horizon);
    let auto = series.forecaster();
    let bank = auto.bank();
    let noise = (0..bank.spec().members().len())
        .map(|m| bank.member_forecast(m, 1).sigma())
        .fold(f64::INFINITY, f64::min);
    let noise = if noise.is_finite() { noise } else { 0.0 };
    let f = auto.forecast(params.horizon);
    let mut forecasts = vec![(
        f.mean,
        mean_sigma(f.sigma(), noise),
        auto.chosen(params.horizon),
    )];
    let best = bank.member_mae(bank.choose(h), h);
    if let Some(best) = best
        && params.credible_ratio > 1.0
    {
        for (m, label) in bank.spec().labels().iter().enumerate() {
            if bank
                .member_mae(m, h)
                .is_none_or(|e| e > params.credible_ratio * best)
            {
                continue;
            }
            let f = bank.member_forecast(m, h);
            forecasts.push((f.mean, mean_sigma(f.sigma(), noise), label.as_str()));
        }
    }
    Some(Credible {
        band,
        direction: params.direction(key),
        forecasts,
    })
}

/// Holds a series' credible forecasts at the horizon against its profile band; the
/// evidence of the one furthest past its threshold, if any. `None` too while the
/// profile is still warming up.
pub fn series_evidence(key: &str, series: &SeriesModel, params: &StateParams) -> Option<Evidence> {
    let c = credible(key, series, params)?;
    let excess = |e: &Evidence| match c.direction {
        MetricDirection::HigherIsWorse => e.forecast - e.threshold,
        MetricDirection::HigherIsBetter => e.threshold - e.forecast,
    };
    let mut worst: Option<Evidence> = None;
    for &(mean, sigma, label) in &c.forecasts {
        if let Some(e) = metric_evidence(key, c.direction, mean, sigma, c.band, params, label)
            && worst.as_ref().is_none_or(|w| excess(&e) > excess(w))
        {
            worst = Some(e);
        }
    }
    worst
}

/// The series' degrade score: the highest [`threshold_score`] of its credible
/// forecasts (the ones [`series_evidence`] holds against the band), 0 while the profile
/// warms up. At 1 or more, [`series_evidence`] has evidence.
pub fn series_score(key: &str, series: &SeriesModel, params: &StateParams) -> f64 {
    let Some(c) = credible(key, series, params) else {
        return 0.0;
    };
    c.forecasts
        .iter()
        .map(|&(mean, sigma, _)| threshold_score(c.direction, mean, sigma, c.band, params))
        .fold(0.0, f64::max)
}

/// The series' level for comparison with other nodes' same series: the chosen
/// forecast's mean at the horizon, oriented so that higher is worse (negated for a
/// higher-is-better metric). `None` while the profile warms up.
pub fn series_level(key: &str, series: &SeriesModel, params: &StateParams) -> Option<f64> {
    let c = credible(key, series, params)?;
    let &(mean, _, _) = c.forecasts.first()?;
    let level = match c.direction {
        MetricDirection::HigherIsWorse => mean,
        MetricDirection::HigherIsBetter => -mean,
    };
    level.is_finite().then_some(level)
}

/// The demand's score against capacity: 0 up to half the threshold (`demand_ratio`
/// times capacity), 1 at it; the same threshold as [`demand_evidence`].
pub fn demand_score(demand: f64, capacity: f64, params: &StateParams) -> f64 {
    let threshold = clean(capacity * params.demand_ratio);
    if threshold <= 0.0 {
        return if demand > threshold { 1.0 } else { 0.0 };
    }
    let s = (demand - 0.5 * threshold) / (0.5 * threshold);
    if s.is_finite() { s.max(0.0) } else { 0.0 }
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
/// state after `leave_after` (`recover_after` from `unhealthy`). From `unknown` any
/// verdict is taken at once.
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
            (NodeState::Unhealthy, _) => params.recover_after,
            (from, to) if rank(to) < rank(from) => params.leave_after,
            _ => 1,
        }
    }

    /// Takes one verdict at `at_ms`; returns the change if the state changes.
    pub fn step(
        &mut self,
        at_ms: i64,
        verdict: Verdict,
        params: &StateParams,
    ) -> Option<StateChange> {
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
        assert_eq!(
            infer_direction("latency-ms"),
            MetricDirection::HigherIsWorse
        );
        assert_eq!(
            infer_direction("cpu-work-ms"),
            MetricDirection::HigherIsWorse
        );
        assert_eq!(infer_direction("load"), MetricDirection::HigherIsWorse);
        assert_eq!(
            infer_direction("ops-per-ms"),
            MetricDirection::HigherIsBetter
        );
        assert_eq!(
            infer_direction("bytes-per-s"),
            MetricDirection::HigherIsBetter
        );
        assert_eq!(
            infer_direction("write-ops"),
            MetricDirection::HigherIsBetter
        );
        assert_eq!(
            infer_direction("bandwidth-mbps"),
            MetricDirection::HigherIsBetter
        );
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
        let sure = Forecast {
            mean: 11.0,
            lo: 11.0 - 1.96 * 1.1,
            hi: 11.0 + 1.96 * 1.1,
        };
        let unsure = Forecast {
            mean: 11.0,
            lo: 11.0 - 1.96 * 3.0,
            hi: 11.0 + 1.96 * 3.0,
        };
        assert!((mean_sigma(1.1, 1.0) - 0.21f64.sqrt()).abs() < 1e-9);
        assert_eq!(mean_sigma(1.0, 1.1), 0.0);
        assert!(mean_sigma(1e306, 0.0).is_finite());
        let worse = MetricDirection::HigherIsWorse;
        let ev = |f: &Forecast, dir| {
            metric_evidence(
                "m",
                dir,
                f.mean,
                mean_sigma(f.sigma(), 1.0),
                (0.0, 10.0),
                &p,
                "x",
            )
        };
        assert!(ev(&sure, worse).is_some());
        assert!(ev(&unsure, worse).is_none());
        let better = MetricDirection::HigherIsBetter;
        assert!(ev(&sure, better).is_none());
        let low = Forecast {
            mean: -1.0,
            lo: -3.0,
            hi: 1.0,
        };
        let e = ev(&low, better).expect("below");
        assert!(e.threshold < 0.0 && e.reason.contains("below"));
        assert!(demand_evidence(11.0, 10.0, &p).is_some());
        assert!(demand_evidence(9.0, 10.0, &p).is_none());
    }

    #[test]
    fn hysteresis_enters_and_leaves_after_streaks() {
        let p = StateParams::default();
        let mut h = Hysteresis::default();
        assert_eq!(
            h.step(0, v(NodeState::Healthy), &p).map(|c| c.to),
            Some(NodeState::Healthy)
        );
        assert!(h.step(1, v(NodeState::Degrading), &p).is_none());
        assert!(
            h.step(2, v(NodeState::Healthy), &p).is_none(),
            "streak broken"
        );
        assert!(h.step(3, v(NodeState::Degrading), &p).is_none());
        let c = h.step(4, v(NodeState::Degrading), &p).expect("enter");
        assert_eq!(
            (c.from, c.to, c.at_ms),
            (NodeState::Healthy, NodeState::Degrading, 4)
        );
        assert!(h.step(5, v(NodeState::Healthy), &p).is_none());
        assert!(h.step(6, v(NodeState::Healthy), &p).is_none());
        assert_eq!(h.pending(), Some((NodeState::Healthy, 2)));
        assert!(h.step(7, v(NodeState::Healthy), &p).is_some());
        assert_eq!(
            h.step(8, v(NodeState::Unhealthy), &p).map(|c| c.to),
            Some(NodeState::Unhealthy)
        );
        assert_eq!(h.since_ms(), Some(8));
    }
}
