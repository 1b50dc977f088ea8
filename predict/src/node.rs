//! One node's model: per-metric series (profile, forecaster, forecast scoring), probe
//! outcome history, demand against capacity, and the state with its evidence.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use plb_api::{
    Blame, DemandView, Evidence, FamilyErrorView, HorizonErrors, HorizonForecast, MetricAssessment,
    NodeAssessment, NodeState, Outcome, ProbeHealth, ProfileView, Sample, StateChange,
};
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
use crate::forecast::{AutoForecaster, BankSpec, ForecastParams, RefitJob, RefitResult};
use crate::num::{check_input, clean};
use crate::profile::{Profile, ProfileParams};
use crate::series::SeriesModel;
use crate::state::{
    Hysteresis, StateParams, Verdict, demand_evidence, demand_score, series_evidence, series_level,
    series_score,
};

/// Most series one node keeps (probe metrics); more are refused.
pub const MAX_SERIES_PER_NODE: usize = 256;
/// Outcomes kept per probe.
const RECENT_OUTCOMES: usize = 8;
/// State changes kept per node.
const RECENT_CHANGES: usize = 16;
/// Key of the demand series.
const DEMAND_KEY: &str = "demand";

/// Everything that tunes a node model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeParams {
    /// Profiles.
    pub profile: ProfileParams,
    /// Forecasters.
    pub forecast: ForecastParams,
    /// States.
    pub state: StateParams,
    /// Horizons shown in assessments (samples of each series).
    pub report_horizons: Vec<u32>,
}

impl Default for NodeParams {
    fn default() -> Self {
        NodeParams {
            profile: ProfileParams::default(),
            forecast: ForecastParams::default(),
            state: StateParams::default(),
            report_horizons: vec![1, 3, 6],
        }
    }
}

/// Validated parameters plus the forecaster spec, shared by every node of a pool.
#[derive(Debug)]
pub struct NodeConfig {
    params: NodeParams,
    spec: Arc<BankSpec>,
}

impl NodeConfig {
    /// Validates `params` and builds the shared spec.
    pub fn new(params: NodeParams) -> Result<Arc<NodeConfig>> {
        params.profile.validate()?;
        params.state.validate()?;
        let spec = AutoForecaster::spec(params.forecast)?;
        if params.report_horizons.contains(&0) {
            return Err(PredictError::InvalidParam {
                name: "report_horizons",
                message: "horizons start at 1".into(),
            });
        }
        Ok(Arc::new(NodeConfig { params, spec }))
    }

    /// The parameters.
    pub fn params(&self) -> &NodeParams {
        &self.params
    }
}

/// One probe run as the model needs it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// When the run started, Unix ms.
    pub t_ms: i64,
    /// Probe name.
    pub probe: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, if known (used to tell whether a probe slowed down).
    pub duration_ms: Option<f64>,
    /// Its metrics.
    pub metrics: &'a BTreeMap<String, f64>,
}

#[derive(Debug, Clone)]
struct ProbeRecord {
    last_ms: i64,
    last: Outcome,
    recent: VecDeque<Outcome>,
    node_failures: u32,
    duration: Profile,
    slow: bool,
}

/// One series' part in a node's degrade score (see [`NodeModel::degrade_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSeries {
    /// The series key (`probe/metric`, or `demand`).
    pub key: String,
    /// Its degrade score against the node's own history (1 = the threshold).
    pub score: f64,
    /// Its forecast level, oriented so that higher is worse, comparable across nodes.
    pub level: f64,
}

/// What a node's degrade score is made of at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradeParts {
    /// The node is `unhealthy` (its score is 1 whatever its series say).
    pub unhealthy: bool,
    /// Each fresh, warmed-up series.
    pub series: Vec<ScoredSeries>,
    /// Forecast demand against capacity, once both are known.
    pub demand: Option<ScoredSeries>,
}

/// The model of one node. Feed it with [`NodeModel::observe`] (probe runs),
/// [`NodeModel::observe_load`] and [`NodeModel::set_capacity`]; read it with
/// [`NodeModel::assess`].
#[derive(Debug, Clone)]
pub struct NodeModel {
    config: Arc<NodeConfig>,
    series: BTreeMap<String, SeriesModel>,
    probes: BTreeMap<String, ProbeRecord>,
    demand: Option<SeriesModel>,
    capacity: Option<f64>,
    hysteresis: Hysteresis,
    last_seen_ms: Option<i64>,
    changes: VecDeque<StateChange>,
}

impl NodeModel {
    /// A node with no samples (`unknown`).
    pub fn new(config: Arc<NodeConfig>) -> NodeModel {
        NodeModel {
            config,
            series: BTreeMap::new(),
            probes: BTreeMap::new(),
            demand: None,
            capacity: None,
            hysteresis: Hysteresis::default(),
            last_seen_ms: None,
            changes: VecDeque::new(),
        }
    }

    fn params(&self) -> &NodeParams {
        &self.config.params
    }

    /// The state as of the newest observation (see [`NodeModel::assess`] for staleness).
    pub fn state(&self) -> NodeState {
        self.hysteresis.state()
    }

    /// One series, by key `probe/metric`.
    pub fn series(&self, key: &str) -> Option<&SeriesModel> {
        self.series.get(key)
    }

    /// Every metric series with its key `probe/metric`, by key.
    pub fn series_iter(&self) -> impl Iterator<Item = (&str, &SeriesModel)> {
        self.series.iter().map(|(k, s)| (k.as_str(), s))
    }

    /// Time of the newest probe run learnt, Unix ms.
    pub fn last_seen_ms(&self) -> Option<i64> {
        self.last_seen_ms
    }

    /// Learns a sample as the agent reports it.
    pub fn observe_sample(&mut self, s: &Sample) -> Result<Option<StateChange>> {
        self.observe(&Observation {
            t_ms: s.taken_at_ms,
            probe: &s.probe,
            outcome: s.outcome,
            duration_ms: Some(s.duration_ms),
            metrics: &s.metrics,
        })
    }

    /// Learns one probe run and reassesses the node at `obs.t_ms`. The whole run is
    /// refused, and nothing learnt, if any metric is NaN, infinite or beyond ±1e300,
    /// if it is older than the probe's newest run, or if it would add a series past
    /// [`MAX_SERIES_PER_NODE`]. Returns the state change, if any.
    pub fn observe(&mut self, obs: &Observation<'_>) -> Result<Option<StateChange>> {
        let key = |m: &str| format!("{}/{m}", obs.probe);
        let mut new_series = 0;
        for (name, &v) in obs.metrics {
            check_input(&key(name), v)?;
            if !self.series.contains_key(&key(name)) {
                new_series += 1;
            }
        }
        if self.series.len() + new_series > MAX_SERIES_PER_NODE {
            return Err(PredictError::TooManySeries {
                name: obs.probe.to_string(),
                limit: MAX_SERIES_PER_NODE,
            });
        }
        if let Some(d) = obs.duration_ms {
            check_input(&key("duration_ms"), d)?;
        }
        if let Some(r) = self.probes.get(obs.probe)
            && obs.t_ms < r.last_ms
        {
            return Err(PredictError::OutOfOrder {
                name: obs.probe.to_string(),
                t_ms: obs.t_ms,
                last_ms: r.last_ms,
            });
        }

        let against_node = match obs.outcome.blame() {
            Blame::Node => Some(true),
            Blame::Depends => Some(self.timeout_blames_node(obs.probe, obs.t_ms)),
            Blame::None => Some(false),
            Blame::Probe => None, // says nothing about the node
        };
        let (profile, band_k) = (self.config.params.profile, self.config.params.state.band_k);
        let record = self
            .probes
            .entry(obs.probe.to_string())
            .or_insert_with(|| ProbeRecord {
                last_ms: obs.t_ms,
                last: obs.outcome,
                recent: VecDeque::with_capacity(RECENT_OUTCOMES),
                node_failures: 0,
                duration: Profile::new(profile),
                slow: false,
            });
        record.last_ms = obs.t_ms;
        record.last = obs.outcome;
        if record.recent.len() == RECENT_OUTCOMES {
            record.recent.pop_front();
        }
        record.recent.push_back(obs.outcome);
        match against_node {
            Some(true) => record.node_failures = record.node_failures.saturating_add(1),
            Some(false) => record.node_failures = 0,
            None => {}
        }
        if let Some(d) = obs.duration_ms {
            record.slow = record.duration.is_ready()
                && record.duration.band(band_k).is_some_and(|(_, hi)| d > hi);
            record.duration.observe(obs.t_ms, d);
        }

        for (name, &v) in obs.metrics {
            let k = key(name);
            let spec = Arc::clone(&self.config.spec);
            let profile = self.config.params.profile;
            self.series
                .entry(k.clone())
                .or_insert_with(|| SeriesModel::new(spec, profile))
                .observe(&k, obs.t_ms, v)?;
        }
        self.last_seen_ms = Some(self.last_seen_ms.map_or(obs.t_ms, |l| l.max(obs.t_ms)));

        let verdict = self.verdict(obs.t_ms);
        let change = self
            .hysteresis
            .step(obs.t_ms, verdict, &self.config.params.state);
        if let Some(c) = &change {
            self.record_change(c.clone());
        }
        Ok(change)
    }

    /// Learns the node's load (in-flight requests or request rate, as the pool's
    /// capacity model measures it) at `t_ms`; it is forecast like a metric and held
    /// against the capacity at the next assessment.
    pub fn observe_load(&mut self, t_ms: i64, load: f64) -> Result<()> {
        let spec = Arc::clone(&self.config.spec);
        let profile = self.config.params.profile;
        self.demand
            .get_or_insert_with(|| SeriesModel::new(spec, profile))
            .observe(DEMAND_KEY, t_ms, load)
    }

    /// Sets the node's capacity from the pool's capacity model (`None`: unknown).
    pub fn set_capacity(&mut self, capacity: Option<f64>) -> Result<()> {
        if let Some(c) = capacity {
            check_input("capacity", c)?;
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Moves the node to `unknown` once its samples are stale; call it on a schedule.
    pub fn tick(&mut self, now_ms: i64) -> Option<StateChange> {
        if !self.is_stale(now_ms) || self.hysteresis.state() == NodeState::Unknown {
            return None;
        }
        let verdict = Verdict {
            state: NodeState::Unknown,
            reason: self.stale_reason(now_ms),
            evidence: vec![],
        };
        let change = self
            .hysteresis
            .step(now_ms, verdict, &self.config.params.state);
        if let Some(c) = &change {
            self.record_change(c.clone());
        }
        change
    }

    fn record_change(&mut self, c: StateChange) {
        if self.changes.len() == RECENT_CHANGES {
            self.changes.pop_front();
        }
        self.changes.push_back(c);
    }

    /// Whether the node has no probe run newer than the stale limit at `now_ms`.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        self.last_seen_ms
            .is_none_or(|l| now_ms.saturating_sub(l) > self.params().state.stale_after_ms)
    }

    fn fresh(&self, t_ms: Option<i64>, now_ms: i64) -> bool {
        t_ms.is_some_and(|t| now_ms.saturating_sub(t) <= self.params().state.stale_after_ms)
    }

    fn stale_reason(&self, now_ms: i64) -> String {
        match self.last_seen_ms {
            None => "no samples yet".to_string(),
            Some(l) => format!(
                "no sample for {} ms (stale after {} ms)",
                now_ms.saturating_sub(l),
                self.params().state.stale_after_ms
            ),
        }
    }

    /// A timeout counts against the node when its other probes also fail or slow
    /// down, or when no other probe ran recently to say otherwise.
    fn timeout_blames_node(&self, probe: &str, t_ms: i64) -> bool {
        let mut others = self
            .probes
            .iter()
            .filter(|(name, r)| name.as_str() != probe && self.fresh(Some(r.last_ms), t_ms))
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        others.any(|(_, r)| matches!(r.last, Outcome::Timeout | Outcome::Unhealthy) || r.slow)
    }

    /// The raw assessment at `now_ms`, before hysteresis.
    fn verdict(&self, now_ms: i64) -> Verdict {
        let sp = &self.params().state;
        let failing: Vec<Evidence> = self
            .probes
            .iter()
            .filter(|(_, r)| {
                self.fresh(Some(r.last_ms), now_ms) && r.node_failures >= sp.unhealthy_after
            })
            .map(|(name, r)| Evidence {
                metric: format!("probe/{name}"),
                forecast: f64::from(r.node_failures),
                threshold: f64::from(sp.unhealthy_after),
                horizon: 0,
                reason: format!(
                    "probe {name}: last {} runs counted against the node (newest: {})",
                    r.node_failures, r.last
                ),
            })
            .collect();
        if !failing.is_empty() {
            return Verdict {
                state: NodeState::Unhealthy,
                reason: summarize(&failing),
                evidence: failing,
            };
        }
        let mut evidence = Vec::new();
        let mut checked = 0;
        for (key, s) in &self.series {
            if !s.profile().is_ready() || !self.fresh(s.last_seen_ms(), now_ms) {
                continue;
            }
            checked += 1;
            if let Some(e) = series_evidence(key, s, sp) {
                evidence.push(e);
            }
        }
        if let (Some(d), Some(cap)) = (&self.demand, self.capacity)
            && let Some(f) = d.forecast(sp.horizon)
            && let Some(e) = demand_evidence(f.mean, cap, sp)
        {
            evidence.push(e);
        }
        if evidence.is_empty() {
            Verdict {
                state: NodeState::Healthy,
                reason: format!(
                    "{checked} metric(s) forecast within their bands at h={}",
                    sp.horizon
                ),
                evidence,
            }
        } else {
            Verdict {
                state: NodeState::Degrading,
                reason: summarize(&evidence),
                evidence,
            }
        }
    }

    /// Up to `max` of the node's series whose forecasters are due a background refit
    /// (period detection, ARIMA fitting), with the job for each, skipping the keys
    /// `skip` names (jobs already in flight). Run the jobs off the sample path and hand
    /// the results to [`NodeModel::install_refit`].
    pub fn refit_jobs(&self, skip: &dyn Fn(&str) -> bool, max: usize) -> Vec<(String, RefitJob)> {
        self.series
            .iter()
            .filter(|(k, s)| s.refit_due() && !skip(k))
            .filter_map(|(k, s)| Some((k.clone(), s.refit_job()?)))
            .take(max)
            .collect()
    }

    /// Installs a finished refit of series `key` (ignored if the series is gone).
    pub fn install_refit(&mut self, key: &str, result: RefitResult) {
        if let Some(s) = self.series.get_mut(key) {
            s.install(result);
        }
    }

    /// The node's degrade score at `now_ms`, in 0..=1: how far its worst fresh series
    /// (or its demand against capacity) has moved toward the threshold that makes the
    /// state machine call it `degrading` (see [`crate::state::threshold_score`]): 0
    /// while every forecast stays in the inner half of its band, 1 at the threshold.
    /// 1 for an `unhealthy` node; 0 for a stale one (its state says `unknown`).
    pub fn degrade_score(&self, now_ms: i64) -> f64 {
        if self.is_stale(now_ms) {
            return 0.0;
        }
        if self.hysteresis.state() == NodeState::Unhealthy {
            return 1.0;
        }
        let sp = &self.params().state;
        let mut worst: f64 = 0.0;
        for (key, s) in &self.series {
            if self.fresh(s.last_seen_ms(), now_ms) {
                worst = worst.max(series_score(key, s, sp));
            }
        }
        if let (Some(d), Some(cap)) = (&self.demand, self.capacity)
            && let Some(f) = d.forecast(sp.horizon)
        {
            worst = worst.max(demand_score(f.mean, cap, sp));
        }
        worst.clamp(0.0, 1.0)
    }

    /// The parts of [`NodeModel::degrade_score`] at `now_ms`, each fresh series' score
    /// with its level (see [`crate::state::series_level`]) and the demand's score with
    /// its level (forecast demand over capacity), so that a pool can judge a node
    /// against its peers as well as against its own history. `None` for a stale node.
    pub fn degrade_parts(&self, now_ms: i64) -> Option<DegradeParts> {
        if self.is_stale(now_ms) {
            return None;
        }
        let sp = &self.params().state;
        let series = self
            .series
            .iter()
            .filter(|(_, s)| self.fresh(s.last_seen_ms(), now_ms))
            .filter_map(|(key, s)| {
                Some(ScoredSeries {
                    key: key.clone(),
                    score: series_score(key, s, sp),
                    level: series_level(key, s, sp)?,
                })
            })
            .collect();
        let demand = match (&self.demand, self.capacity) {
            (Some(d), Some(cap)) if cap > 0.0 => d.forecast(sp.horizon).and_then(|f| {
                let level = f.mean / cap;
                level.is_finite().then(|| ScoredSeries {
                    key: DEMAND_KEY.to_string(),
                    score: demand_score(f.mean, cap, sp),
                    level,
                })
            }),
            _ => None,
        };
        Some(DegradeParts {
            unhealthy: self.hysteresis.state() == NodeState::Unhealthy,
            series,
            demand,
        })
    }

    /// The node's state and everything behind it, as of `now_ms` (`unknown` if its
    /// samples are stale). Pure: asking does not change the model.
    pub fn assess(&self, now_ms: i64) -> NodeAssessment {
        let p = self.params();
        let stale = self.is_stale(now_ms);
        let held = self.hysteresis.state();
        let (state, reason, evidence) = if stale {
            (NodeState::Unknown, self.stale_reason(now_ms), vec![])
        } else {
            match self.hysteresis.last() {
                Some(v) if v.state == held => (held, v.reason.clone(), v.evidence.clone()),
                Some(v) => {
                    let streak = self.hysteresis.pending().map_or(0, |(_, n)| n);
                    (
                        held,
                        format!(
                            "{} held by hysteresis; newest assessment says {} ({} in a row): {}",
                            held.as_str(),
                            v.state.as_str(),
                            streak,
                            v.reason
                        ),
                        v.evidence.clone(),
                    )
                }
                None => (held, self.stale_reason(now_ms), vec![]),
            }
        };
        let since_ms = if stale && held != NodeState::Unknown {
            self.last_seen_ms
        } else {
            self.hysteresis.since_ms()
        };
        NodeAssessment {
            state,
            since_ms,
            reason,
            evidence,
            last_seen_ms: self.last_seen_ms,
            metrics: self
                .series
                .iter()
                .map(|(k, s)| metric_view(k, s, p))
                .collect(),
            probes: self
                .probes
                .iter()
                .map(|(name, r)| ProbeHealth {
                    probe: name.clone(),
                    last_run_ms: r.last_ms,
                    last_outcome: r.last,
                    consecutive_node_failures: r.node_failures,
                    recent: r.recent.iter().copied().collect(),
                })
                .collect(),
            demand: self.demand.as_ref().and_then(|d| {
                Some(DemandView {
                    load: d.last_value(),
                    forecast: d.forecast(p.state.horizon)?.mean,
                    capacity: self.capacity,
                })
            }),
            recent_changes: self.changes.iter().cloned().collect(),
        }
    }

    /// Bytes held by this node: series, probe records and the struct itself (shared
    /// config not counted); an estimate for capacity planning.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .series
                .iter()
                .map(|(k, s)| k.capacity() + s.bytes() + 48)
                .sum::<usize>()
            + self.demand.as_ref().map_or(0, SeriesModel::bytes)
            + self
                .probes
                .iter()
                .map(|(k, r)| {
                    k.capacity() + std::mem::size_of::<ProbeRecord>() + r.recent.capacity() + 48
                })
                .sum::<usize>()
    }
}

fn summarize(evidence: &[Evidence]) -> String {
    match evidence {
        [] => String::new(),
        [one] => one.reason.clone(),
        [first, rest @ ..] => format!("{} (and {} more)", first.reason, rest.len()),
    }
}

fn metric_view(key: &str, s: &SeriesModel, p: &NodeParams) -> MetricAssessment {
    let f = s.forecaster();
    let step = s.step_ms();
    MetricAssessment {
        name: key.to_string(),
        direction: p.state.direction(key),
        samples: s.count(),
        last_value: s.last_value(),
        last_seen_ms: s.last_seen_ms(),
        step_ms: step,
        profile: s.profile().median_mad().and_then(|(median, mad)| {
            let (lo, hi) = s.profile().forecast_band(p.state.band_k)?;
            Some(ProfileView {
                ready: s.profile().is_ready(),
                median,
                mad,
                scale: s.profile().scale()?,
                level: (lo + hi) / 2.0,
                lo,
                hi,
            })
        }),
        forecasts: p
            .report_horizons
            .iter()
            .filter_map(|&h| {
                let fc = s.forecast(h)?;
                Some(HorizonForecast {
                    h,
                    approx_ms: step.map(|st| clean(st * f64::from(h))),
                    mean: fc.mean,
                    lo: fc.lo,
                    hi: fc.hi,
                    model: f.chosen(h).to_string(),
                })
            })
            .collect(),
        errors: p
            .report_horizons
            .iter()
            .filter_map(|&h| {
                let mae = f.mae(h)?;
                let naive_mae = f.naive_mae(h)?;
                Some(HorizonErrors {
                    h,
                    scored: f.bank().scored_count(u64::from(h)),
                    mae,
                    naive_mae,
                    relative_to_naive: (naive_mae > 0.0).then(|| clean(mae / naive_mae)),
                    families: f
                        .family_errors(h)
                        .into_iter()
                        .map(|e| FamilyErrorView {
                            family: e.family.as_str().to_string(),
                            best_member: e.best_member,
                            mae: e.mae,
                        })
                        .collect(),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
