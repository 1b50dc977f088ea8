//! [`PoolPredictor`]: one pool's prediction pipeline. Feed it probe runs
//! ([`PoolPredictor::observe`]), request feedback ([`PoolPredictor::observe_feedback`])
//! and, once a tick, the nodes' requests in flight ([`PoolPredictor::tick`]); run the
//! capacity fits it asks for ([`PoolPredictor::due_fit`], [`crate::FitJob::run`],
//! [`PoolPredictor::install_fit`]); read routing views ([`PoolPredictor::views`]) and
//! assessments. Every call takes the time (`now_ms`, in the same unit and epoch as the
//! samples' `taken_at_ms`); nothing here reads a clock.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use plb_api::{
    CapacityModelView, CapacityScoreView, NodeAssessment, NodeState, Sample, StateChange,
};
use plb_predict::forecast::{RefitJob, RefitResult};
use plb_predict::{NodeConfig, NodeModel, Observation, PredictError};
use plb_routing::NodeView;

use crate::PipelineError;
use crate::config::PipelineConfig;
use crate::demand::{DemandConfig, DemandTracker, PlanInputs, ScalingChange};
use crate::outlook::{self, Outlook};
use crate::peers;
use crate::training::{FitJob, FitOutcome, Row, Trainer, view};
use crate::trust::{TrustTracker, robust_z};

/// One request's outcome, as the capacity model learns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback<'a> {
    /// The node that served it.
    pub node: &'a str,
    /// When it completed, ms.
    pub at_ms: i64,
    /// Requests in flight on the node when it was sent (this one included).
    pub load: f64,
    /// Its latency, ms.
    pub latency_ms: f64,
    /// Whether it succeeded (a failure's latency is not the node's and is not learnt).
    pub ok: bool,
}

/// A node series' forecaster refit to run off the sample path.
#[derive(Debug)]
pub struct SeriesRefit {
    /// The node.
    pub node: Arc<str>,
    /// The series key, `probe/metric`.
    pub key: String,
    /// The job (owns its data; pure).
    pub job: RefitJob,
}

/// Weight of the newest tick in a node's smoothed rows per tick.
const RATE_ALPHA: f64 = 0.5;

/// One node of the pool.
#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    address: String,
    model: NodeModel,
    /// When (ms) it (re)entered service while others carried the traffic: slow start.
    ready_since_ms: Option<i64>,
    /// When (ms) it last entered service (`healthy` or `degrading` in a view).
    in_since_ms: Option<i64>,
    /// State in the last view built.
    view_state: NodeState,
    /// Operator weight (0 drains).
    weight: f64,
    /// Feedback latency (ms) summed since the last tick, and its rows.
    tick_latency: (f64, u32),
    /// Its latency outlook from those ticks ([`crate::outlook`]).
    outlook: Outlook,
    /// Feedback rows per tick, smoothed over ticks: the requests it serves, against
    /// its peers' (the load-share discount of its degrade score).
    rate: f64,
    /// Degrade score in the last view built, and when (ms): the release envelope.
    routed_score: (f64, i64),
}

/// The prediction pipeline of one pool (see the crate docs).
#[derive(Debug)]
pub struct PoolPredictor {
    config: PipelineConfig,
    node_config: Arc<NodeConfig>,
    slo_ms: f64,
    slots: Vec<Slot>,
    index: HashMap<Arc<str>, usize>,
    trainer: Trainer,
    /// Capacity per node in the last views built (requests in flight at the SLO).
    estimates: BTreeMap<String, f64>,
    /// Series refits handed out and not yet installed, by (node, series key).
    refitting: HashSet<(Arc<str>, String)>,
    /// The pool's demand and scaling advice ([`crate::demand`]).
    demand: DemandTracker,
    /// How far each probe metric is trusted ([`crate::trust`]).
    trust: TrustTracker,
}

impl PoolPredictor {
    /// A pipeline for a pool whose latency objective is `slo_ms`, with no nodes yet.
    pub fn new(config: PipelineConfig, slo_ms: f64) -> Result<PoolPredictor, PipelineError> {
        config.validate()?;
        let node_config = NodeConfig::new(config.node.clone())?;
        Ok(Self::with_node_config(config, node_config, slo_ms))
    }

    /// Like [`PoolPredictor::new`] with node parameters already validated (shared by
    /// every pool of a balancer).
    pub fn with_node_config(
        config: PipelineConfig,
        node_config: Arc<NodeConfig>,
        slo_ms: f64,
    ) -> PoolPredictor {
        PoolPredictor {
            trust: TrustTracker::new(config.trust),
            config,
            node_config,
            slo_ms,
            slots: Vec::new(),
            index: HashMap::new(),
            trainer: Trainer::default(),
            estimates: BTreeMap::new(),
            refitting: HashSet::new(),
            demand: DemandTracker::new(DemandConfig::default())
                .expect("the default demand settings are valid"),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The pool's latency objective, ms (the next fit uses a new one).
    pub fn set_slo_ms(&mut self, slo_ms: f64) {
        if slo_ms > 0.0 && slo_ms.is_finite() {
            self.slo_ms = slo_ms;
        }
    }

    /// Makes the node set `nodes` (name, address), in this order: new nodes start
    /// `unknown` with fresh models, gone nodes are forgotten. Returns whether anything
    /// changed.
    pub fn sync<'a>(&mut self, nodes: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let mut changed = false;
        let mut next: Vec<Slot> = Vec::new();
        let mut old: HashMap<Arc<str>, Slot> = self
            .slots
            .drain(..)
            .map(|s| (Arc::clone(&s.name), s))
            .collect();
        for (name, address) in nodes {
            if next.iter().any(|s| &*s.name == name) {
                continue;
            }
            match old.remove(name) {
                Some(mut slot) => {
                    if slot.address != address {
                        slot.address = address.to_string();
                        changed = true;
                    }
                    changed |= next.len() != self.index.get(name).copied().unwrap_or(usize::MAX);
                    next.push(slot);
                }
                None => {
                    changed = true;
                    next.push(self.new_slot(name, address));
                }
            }
        }
        for gone in old.keys() {
            changed = true;
            self.trainer.forget(gone);
            self.refitting.retain(|(n, _)| n != gone);
        }
        self.slots = next;
        self.index = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::clone(&s.name), i))
            .collect();
        changed
    }

    fn new_slot(&self, name: &str, address: &str) -> Slot {
        Slot {
            name: Arc::from(name),
            address: address.to_string(),
            model: NodeModel::new(Arc::clone(&self.node_config)),
            ready_since_ms: None,
            in_since_ms: None,
            view_state: NodeState::Unknown,
            weight: 1.0,
            tick_latency: (0.0, 0),
            outlook: Outlook::default(),
            rate: 0.0,
            routed_score: (0.0, 0),
        }
    }

    /// Node `name` starts over with fresh models and no feedback (it left and came
    /// back as a new process: nothing it learnt before holds).
    pub fn reset(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        let fresh = self.new_slot(name, &self.slots[i].address);
        let weight = self.slots[i].weight;
        self.slots[i] = Slot { weight, ..fresh };
        self.trainer.forget(name);
        self.refitting.retain(|(n, _)| &**n != name);
    }

    /// Sets node `name`'s operator weight (0 drains it).
    pub fn set_weight(&mut self, name: &str, weight: f64) {
        if let Some(&i) = self.index.get(name) {
            self.slots[i].weight = if weight.is_finite() {
                weight.max(0.0)
            } else {
                0.0
            };
        }
    }

    /// Node names, in view order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| &*s.name)
    }

    /// Whether node `name` is in the pool.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Node `name`'s model.
    pub fn model(&self, name: &str) -> Option<&NodeModel> {
        self.index.get(name).map(|&i| &self.slots[i].model)
    }

    /// Learns one probe run of `node`. `Ok(None)` for a node not in the pool; the
    /// state change, if the run changed the node's state.
    pub fn observe(
        &mut self,
        node: &str,
        obs: &Observation<'_>,
    ) -> Result<Option<StateChange>, PredictError> {
        match self.index.get(node) {
            Some(&i) => self.slots[i].model.observe(obs),
            None => Ok(None),
        }
    }

    /// [`PoolPredictor::observe`] for a sample as agents report it.
    pub fn observe_sample(
        &mut self,
        node: &str,
        s: &Sample,
    ) -> Result<Option<StateChange>, PredictError> {
        self.observe(
            node,
            &Observation {
                t_ms: s.taken_at_ms,
                probe: &s.probe,
                outcome: s.outcome,
                duration_ms: Some(s.duration_ms),
                metrics: &s.metrics,
            },
        )
    }

    /// Learns one request's outcome for capacity training, with the node's probe
    /// metrics at that time as features (aligned by time: a metric's newest value, if
    /// it is still fresh). Feedback for a node not in the pool is ignored.
    pub fn observe_feedback(&mut self, f: Feedback<'_>) {
        if !f.ok {
            return;
        }
        let Some(&i) = self.index.get(f.node) else {
            return;
        };
        let max = self.config.training.max_features;
        let stale_after = self.config.node.state.stale_after_ms;
        let mut features = vec![f64::NAN; self.trainer.keys().len()];
        if max > 0 {
            let slot = &self.slots[i];
            for (key, s) in slot.model.series_iter() {
                let fresh = s
                    .last_seen_ms()
                    .is_some_and(|t| f.at_ms.saturating_sub(t) <= stale_after);
                if !fresh {
                    continue;
                }
                if let Some(k) = self.trainer.key_index(key, max) {
                    if features.len() <= k {
                        features.resize(k + 1, f64::NAN);
                    }
                    features[k] = s.last_value();
                }
            }
        }
        let acc = &mut self.slots[i].tick_latency;
        if f.latency_ms.is_finite() && f.latency_ms >= 0.0 {
            acc.0 += f.latency_ms;
            acc.1 = acc.1.saturating_add(1);
        }
        let row = Row {
            at_ms: f.at_ms,
            node: Arc::clone(&self.slots[i].name),
            load: f.load,
            latency_ms: f.latency_ms,
            features,
        };
        self.trainer.add(row, &self.config.training);
    }

    /// Once a tick: moves nodes without fresh samples to `unknown` and records each
    /// probed node's requests in flight (`in_flight`, by name) as its demand. Returns
    /// the state changes, by node.
    pub fn tick(
        &mut self,
        now_ms: i64,
        in_flight: &dyn Fn(&str) -> Option<f64>,
    ) -> Vec<(String, StateChange)> {
        let mut changes = Vec::new();
        self.tick_feedback(now_ms);
        for slot in &mut self.slots {
            if let Some(c) = slot.model.tick(now_ms) {
                changes.push((slot.name.to_string(), c));
            }
            // Only once the node has samples: a load series alone would keep an idle,
            // unprobed node looking fresh to nobody.
            if let Some(load) = in_flight(&slot.name)
                && slot.model.state() != NodeState::Unknown
            {
                let _ = slot.model.observe_load(now_ms, load);
            }
        }
        changes
    }

    /// Each node's mean feedback latency since the last tick (then reset) updates its
    /// latency outlook and, with each probe metric's z-scores over the pool now, feeds
    /// the trust tracker.
    fn tick_feedback(&mut self, now_ms: i64) {
        let min_rows = self.config.trust.min_rows;
        let outlook = self.config.outlook;
        let mut latency: Vec<(Arc<str>, f64)> = Vec::new();
        for s in &mut self.slots {
            let (sum, rows) = std::mem::take(&mut s.tick_latency);
            s.rate = RATE_ALPHA * f64::from(rows) + (1.0 - RATE_ALPHA) * s.rate;
            if rows == 0 {
                continue;
            }
            let mean = sum / f64::from(rows);
            if rows >= outlook.min_rows.max(1) {
                s.outlook.update(now_ms, mean, &outlook);
            }
            if rows >= min_rows.max(1) {
                latency.push((Arc::clone(&s.name), mean));
            }
        }
        if !self.config.trust.enabled {
            return;
        }
        let mut by_key: HashMap<String, Vec<(Arc<str>, f64)>> = HashMap::new();
        for s in &self.slots {
            if let Some(parts) = s.model.degrade_parts(now_ms) {
                for ser in parts.series {
                    by_key
                        .entry(ser.key)
                        .or_default()
                        .push((Arc::clone(&s.name), ser.level));
                }
            }
        }
        let min = self.config.trust.min_nodes;
        let levels = by_key
            .into_iter()
            .filter_map(|(k, v)| Some((k, robust_z(&v, min)?)))
            .collect();
        let had_feedback = self.trust.has_feedback();
        self.trust.tick(now_ms, levels, &latency);
        if !had_feedback && self.trust.has_feedback() {
            // Until now every metric counted in full (nothing to judge it by); from now
            // on each counts as far as it earns. A score the release envelope still holds
            // from before was never earned: let it go at once instead of over seconds
            // (a node shed on an untrusted metric before the first traffic, or after a
            // restart, would otherwise stay shed for up to 1 / `score_release_per_s`).
            for s in &mut self.slots {
                s.routed_score = (0.0, now_ms);
            }
        }
    }

    /// Each probe metric's trust in routing with the evidence behind it.
    pub fn metric_trust(&self) -> Vec<plb_api::MetricTrust> {
        if self.config.trust.enabled {
            self.trust.report()
        } else {
            Vec::new()
        }
    }

    /// The capacity fit to run now, if one is due (at most one at a time: the next is
    /// due only after [`PoolPredictor::install_fit`]). Also drops old feedback and a fit
    /// not renewed within its lifetime.
    pub fn due_fit(&mut self, now_ms: i64) -> Option<FitJob> {
        let (job, _) = self.trainer.due(now_ms, self.slo_ms, &self.config.training);
        job
    }

    /// Up to `max` node series due a background refit of their forecasters (period
    /// detection, ARIMA fitting), each at most once in flight: run each
    /// [`SeriesRefit::job`] off the sample path and install it with
    /// [`PoolPredictor::install_refit`].
    pub fn due_refits(&mut self, max: usize) -> Vec<SeriesRefit> {
        let mut out = Vec::new();
        for slot in &self.slots {
            if out.len() >= max {
                break;
            }
            let busy = |k: &str| {
                self.refitting
                    .iter()
                    .any(|(n, key)| Arc::ptr_eq(n, &slot.name) && key == k)
            };
            for (key, job) in slot.model.refit_jobs(&busy, max - out.len()) {
                out.push(SeriesRefit {
                    node: Arc::clone(&slot.name),
                    key,
                    job,
                });
            }
        }
        for r in &out {
            self.refitting.insert((Arc::clone(&r.node), r.key.clone()));
        }
        out
    }

    /// Installs a finished series refit (ignored if the node or series is gone).
    pub fn install_refit(&mut self, node: &str, key: &str, result: RefitResult) {
        self.refitting.retain(|(n, k)| !(&**n == node && k == key));
        if let Some(&i) = self.index.get(node) {
            self.slots[i].model.install_refit(key, result);
        }
    }

    /// Installs a finished fit (scoring the previous one on the feedback since).
    pub fn install_fit(&mut self, out: FitOutcome) {
        let over = self.config.training.features_judged_over;
        self.trainer.install(out, over);
    }

    /// Each node's capacity now: from the fit in use (probe-feature models with the
    /// node's current metric values, else load only), floored and shaped against the
    /// pool's typical estimate (see [`crate::ViewConfig::capacity_deadband`]).
    fn capacities(&self, now_ms: i64) -> BTreeMap<String, f64> {
        let Some(fit) = self.trainer.current() else {
            return BTreeMap::new();
        };
        let v = &self.config.views;
        let stale_after = self.config.node.state.stale_after_ms;
        // (capacity, feedback rows its fit used) per node.
        let mut raw: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for node in self.trainer.nodes_seen() {
            let Some(&i) = self.index.get(node) else {
                continue;
            };
            let model = &self.slots[i].model;
            let with_features = fit
                .use_features
                .then(|| {
                    let values: Option<Vec<f64>> = fit
                        .feature_keys
                        .iter()
                        .map(|k| {
                            let s = model.series(k)?;
                            let fresh = s
                                .last_seen_ms()
                                .is_some_and(|t| now_ms.saturating_sub(t) <= stale_after);
                            fresh.then(|| s.last_value())
                        })
                        .collect();
                    let m = fit.features.as_ref()?.for_node(node)?;
                    m.capacity(&values?)
                })
                .flatten();
            let c = with_features.or_else(|| fit.load.for_node(node)?.capacity(&[]));
            let rows = fit.load.for_node(node).map_or(0, |m| m.rows().0);
            if let Some(c) = c
                && c.load.is_finite()
                && c.load >= v.capacity_floor
            {
                raw.insert(node.to_string(), (c.load, rows));
            }
        }
        let mut sorted: Vec<f64> = raw.values().map(|&(c, _)| c).collect();
        sorted.sort_by(f64::total_cmp);
        let Some(&typical) = sorted.get(sorted.len() / 2) else {
            return raw.into_iter().map(|(n, (c, _))| (n, c)).collect();
        };
        let k = v.capacity_shrink_rows.max(0.0);
        raw.into_iter()
            .map(|(n, (c, rows))| {
                let w = rows as f64 / (rows as f64 + k).max(1e-9);
                let shrunk = typical * (c / typical).powf(w.clamp(0.0, 1.0));
                let r = (shrunk / typical / v.capacity_deadband).clamp(0.0, 1.0);
                (n, typical * r)
            })
            .collect()
    }

    /// Scales each node's degrade score down by how far its share of the requests
    /// answered well (its smoothed successful feedback rows per tick per unit of
    /// operator weight, against the median of the nodes routed to, neither drained nor
    /// `unhealthy`: while a quarter of the pool is shed the median is still a node that
    /// is not, so the rest do not all look busy) exceeds `load_share_start`, to 0 at
    /// `load_share_full`. An `unhealthy` node's score stays whole. A node that serves
    /// more because it is bigger than its peers at the same operator weight has its
    /// score discounted too, until its share falls back as it slows.
    fn discount_load(&self, scores: &mut [f64]) {
        let v = &self.config.views;
        let mut serving: Vec<f64> = self
            .slots
            .iter()
            .filter(|s| s.weight > 0.0 && s.model.state() != NodeState::Unhealthy)
            .map(|s| s.rate / s.weight)
            .collect();
        if serving.len() < 2 {
            return;
        }
        let typical = peers::median(&mut serving);
        if typical.is_nan() || typical <= 0.0 {
            return;
        }
        for (score, slot) in scores.iter_mut().zip(&self.slots) {
            if slot.model.state() == NodeState::Unhealthy || slot.weight <= 0.0 {
                continue;
            }
            let share = slot.rate / slot.weight / typical;
            *score *= 1.0 - peers::smooth_ramp(share, v.load_share_start, v.load_share_full);
        }
    }

    /// The routing views at `now_ms`, one per node in pool order: the state (stale →
    /// `unknown`), the degrade score, the capacity, the weight, and slow start for a
    /// node returning to service while others carry the traffic. The only producer of
    /// [`NodeView`]s outside tests.
    pub fn views(&mut self, now_ms: i64) -> Vec<NodeView> {
        let v = self.config.views;
        self.estimates = if v.predictive {
            self.capacities(now_ms)
        } else {
            BTreeMap::new()
        };
        // Slow start only where others carry the traffic: some node has been in
        // service for `established_after_ms`. When every node starts together (a new
        // pool, a restart), nobody has traffic to protect and a ramp would pile the
        // load onto whichever node's first sample came first.
        let established = self.slots.iter().any(|s| {
            matches!(s.view_state, NodeState::Healthy | NodeState::Degrading)
                && s.in_since_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= v.established_after_ms)
        });
        // Degrade scores judged against each node's own history and its peers.
        let scores = if v.predictive {
            let parts: Vec<_> = self
                .slots
                .iter()
                .map(|s| s.model.degrade_parts(now_ms))
                .collect();
            if v.peer_min_nodes > 0 {
                let trust = &self.trust;
                peers::peer_scores(&parts, &v, &|k| trust.trust(k))
            } else {
                self.slots
                    .iter()
                    .map(|s| s.model.degrade_score(now_ms))
                    .collect()
            }
        } else {
            vec![0.0; self.slots.len()]
        };
        // With each node's latency outlook from feedback: predictive with no probe.
        let outlooks: Vec<&Outlook> = self.slots.iter().map(|s| &s.outlook).collect();
        let ahead = if v.predictive {
            outlook::outlook_scores(&outlooks, now_ms, self.slo_ms, &self.config.outlook, &v)
        } else {
            vec![0.0; self.slots.len()]
        };
        let mut scores: Vec<f64> = scores.iter().zip(&ahead).map(|(a, b)| a.max(*b)).collect();
        if v.load_share_start.is_finite() {
            self.discount_load(&mut scores);
        }
        // Rises at once, falls at most `score_release_per_s` (faster for a node whose
        // fresh feedback latency is back with its peers'; off unless faster: no pass
        // over the pool's levels then).
        let ocfg = &self.config.outlook;
        let median_level = if v.score_release_fast_per_s > v.score_release_per_s {
            let mut fresh: Vec<f64> = self
                .slots
                .iter()
                .filter_map(|s| s.outlook.level(now_ms, ocfg))
                .collect();
            (fresh.len() >= v.peer_min_nodes.max(2)).then(|| peers::median(&mut fresh))
        } else {
            None
        };
        let released: Vec<f64> = self
            .slots
            .iter_mut()
            .zip(&scores)
            .map(|(slot, &score)| {
                let (last, at) = slot.routed_score;
                let dt = now_ms.saturating_sub(at).max(0) as f64 / 1000.0;
                let rate = match (median_level, slot.outlook.level(now_ms, ocfg)) {
                    (Some(m), Some(l)) if l <= m * v.release_fast_within => {
                        v.score_release_fast_per_s
                    }
                    _ => v.score_release_per_s,
                };
                let released = last - rate * dt;
                let score = if v.score_release_per_s > 0.0 && released > score {
                    released.clamp(0.0, 1.0)
                } else {
                    score
                };
                slot.routed_score = (score, now_ms);
                score
            })
            .collect();
        // Each node's state as its model has it (stale: `unknown`), before the view's
        // own adjustments below; out of service: drained, or unhealthy.
        let model_states: Vec<NodeState> = self
            .slots
            .iter()
            .map(|s| {
                if s.model.is_stale(now_ms) {
                    NodeState::Unknown
                } else {
                    s.model.state()
                }
            })
            .collect();
        let routed: Vec<bool> = self
            .slots
            .iter()
            .zip(&model_states)
            .map(|(s, &state)| s.weight > 0.0 && state != NodeState::Unhealthy)
            .collect();
        let scores = crate::budget::shed_budget(&released, &routed, v.shed_budget);
        let mut views = Vec::with_capacity(self.slots.len());
        for ((slot, &score), &model_state) in self.slots.iter_mut().zip(&scores).zip(&model_states)
        {
            let capacity = self.estimates.get(&*slot.name).copied();
            // Demand is held against the capacity routing uses.
            let _ = slot.model.set_capacity(capacity);
            let mut state = model_state;
            if state == NodeState::Degrading
                && !(v.predictive && v.degrading_state && score >= v.peer_degrading_min)
            {
                state = NodeState::Healthy;
            }
            // Reactive health checks know nothing but failures: a node not yet (or no
            // longer) probed is routed as healthy, as active health checking does.
            if state == NodeState::Unknown && !v.predictive {
                state = NodeState::Healthy;
            }
            let was_out = matches!(slot.view_state, NodeState::Unhealthy | NodeState::Unknown);
            let is_in = matches!(state, NodeState::Healthy | NodeState::Degrading);
            if was_out && is_in {
                slot.in_since_ms = Some(now_ms);
                if v.predictive && established {
                    slot.ready_since_ms = Some(now_ms);
                }
            }
            slot.view_state = state;
            let mut view = NodeView::new(&*slot.name, slot.address.clone());
            view.state = state;
            view.weight = slot.weight;
            if v.predictive {
                view.ready_since = slot.ready_since_ms.map(|t| t as f64 / 1000.0);
                view.capacity = capacity;
                view.degrade_score = score;
            }
            views.push(view);
        }
        views
    }

    /// Node `name`'s latency outlook at `now_ms` ([`crate::outlook`]), ms: `None`
    /// without fresh feedback or with the outlook off.
    pub fn latency_outlook(&self, name: &str, now_ms: i64) -> Option<f64> {
        let o = &self.config.outlook;
        let &i = self.index.get(name)?;
        o.enabled
            .then(|| self.slots[i].outlook.forecast(now_ms, o))
            .flatten()
    }

    /// Every node's assessment at `now_ms`, by name.
    pub fn assess(&self, now_ms: i64) -> BTreeMap<String, NodeAssessment> {
        self.slots
            .iter()
            .map(|s| (s.name.to_string(), s.model.assess(now_ms)))
            .collect()
    }

    /// The capacity fit in use with each node's capacity at `now_ms` (what the next
    /// views carry), once fitted.
    pub fn capacity_view(&self, now_ms: i64) -> Option<CapacityModelView> {
        let estimates = self.capacities(now_ms);
        self.trainer.current().map(|f| view(f, &estimates))
    }

    /// Demand and scaling settings (a new tracker: the demand learnt so far is dropped).
    pub fn set_demand_config(&mut self, config: DemandConfig) -> Result<(), PipelineError> {
        self.demand = DemandTracker::new(config)?;
        Ok(())
    }

    fn plan_inputs(&self) -> PlanInputs {
        let mut sorted: Vec<f64> = self.estimates.values().copied().collect();
        sorted.sort_by(f64::total_cmp);
        PlanInputs {
            // The pool's typical node, as the views shape capacities against it.
            capacity_in_flight: sorted.get(sorted.len() / 2).copied(),
            slo_ms: self.slo_ms,
            current_nodes: self
                .slots
                .iter()
                .filter(|s| {
                    s.weight > 0.0
                        && matches!(s.view_state, NodeState::Healthy | NodeState::Degrading)
                })
                .count() as u32,
        }
    }

    /// Counts the requests routed to the pool (route decisions and proxied requests)
    /// since the last call, at `now_ms`; call it every tick, with 0 too, so that minute
    /// boundaries are seen. Each complete minute is learnt and moves the scaling advice
    /// (see [`crate::demand`]); capacity and nodes in service are those of the last views.
    pub fn observe_requests(&mut self, now_ms: i64, count: u64) {
        let inputs = self.plan_inputs();
        self.demand.observe(now_ms, count, &inputs);
    }

    /// The demand forecaster's refit to run now, if due (one at a time, like
    /// [`PoolPredictor::due_fit`]; [`plb_predict::forecast::RefitJob::run`] is pure).
    pub fn due_demand_refit(&mut self) -> Option<plb_predict::forecast::RefitJob> {
        self.demand.due_refit()
    }

    /// Installs a finished demand refit.
    pub fn install_demand_refit(&mut self, result: plb_predict::forecast::RefitResult) {
        self.demand.install_refit(result);
    }

    /// A demand refit handed out did not finish.
    pub fn demand_refit_failed(&mut self) {
        self.demand.refit_failed();
    }

    /// The newest change of the 15-minute scaling recommendation, once.
    pub fn take_scaling_change(&mut self) -> Option<ScalingChange> {
        self.demand.take_change()
    }

    /// The scaling view at `now_ms`: demand, its forecast, nodes needed at each horizon,
    /// the per-node capacity used and the recommendation (the pool's name left empty).
    pub fn scaling(&self, now_ms: i64) -> plb_api::PoolScaling {
        self.demand.view(now_ms, &self.plan_inputs())
    }

    /// Node `name`'s capacity in the last views built.
    pub fn capacity(&self, name: &str) -> Option<f64> {
        self.estimates.get(name).copied()
    }

    /// How past fits did on the feedback that came after them, oldest first.
    pub fn capacity_scores(&self) -> Vec<CapacityScoreView> {
        self.trainer.scores().cloned().collect()
    }

    /// Feedback rows held for training.
    pub fn feedback_rows(&self) -> usize {
        self.trainer.rows()
    }
}

#[cfg(test)]
mod tests;
