//! The `plb` pipeline of the bench's central balancer, over `plb-predict`:
//! - every probe sample feeds the node's [`NodeModel`] (a profile and a self-tuning
//!   forecast of the probe's `/health` latency, the probe outcomes, the state with
//!   hysteresis) and, as the node's load, the requests in the node (`/status` busy +
//!   queued), which is also forecast;
//! - every sidecar's feedback becomes a [`CapacityRow`] of its node: the requests in
//!   flight at dispatch (the sidecar's own count times the number of sidecars, an
//!   unbiased estimate of the node's), and the latency; each node's [`CapacityModel`]
//!   is refitted on a staggered schedule over its recent rows (the balancer's
//!   background training), so capacity is the number of requests in flight at which
//!   that node's predicted latency meets the SLO;
//! - the published [`NodeView`] carries the state (`unhealthy` and `unknown` from the
//!   node model; `degrading` only through the score), a relative capacity that can only
//!   take traffic away (see [`Predictions::fill`]), and a degrade score: how far the
//!   probe latency's forecast has moved from halfway to its profile band's edge toward
//!   the dynamic threshold (the band's edge plus the forecast's own uncertainty).
//!
//! Each of these choices was measured in the simulator (see the crate docs): the
//! first, literal reading (absolute capacities, forecast load for headroom, the
//! `degrading` state) herded traffic onto overestimated nodes and timed requests out.
//!
//! The probe latency, not a mean over served requests, is the model's input: a probe
//! measures the node whether or not it gets traffic, while a mean over served requests
//! goes stale exactly when a shed node stops getting them. For the same reason a
//! node's capacity model is dropped once it has not been refitted for a while (too
//! little feedback): a stale low capacity would keep a recovered node shed.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use plb_api::{NodeState, Outcome};
use plb_predict::{
    CapacityModel, CapacityParams, CapacityRow, NodeConfig, NodeModel, NodeParams, Observation,
    ProfileParams,
};
use plb_routing::NodeView;

use crate::BenchError;
use crate::policies::ProbeSample;

/// The probe name the harness reports its samples under.
pub const PROBE: &str = "node-status";
/// The sample's metric (higher is worse).
const HEALTH: &str = "health-latency-ms";
/// Its series key in the node model.
const SERIES: &str = "node-status/health-latency-ms";

/// Probe-latency capacity ratios above this count as 1 (noise is not a reason to shed).
const PROBE_DEADBAND: f64 = 0.85;
/// Feedback capacity ratios above this count as 1.
const FEEDBACK_DEADBAND: f64 = 0.5;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// How the pipeline is run (the balancer's schedule, not the models' tuning).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PipelineConfig {
    /// Capacity model refit interval per node, s.
    pub refit_every: f64,
    /// Feedback rows older than this are dropped, s.
    pub keep: f64,
    /// Most feedback rows kept per node.
    pub max_rows: usize,
    /// A capacity model not refitted for this long is dropped, s.
    pub model_ttl: f64,
    /// Samples a metric profile learns from before its band counts (the pool's
    /// profile warm-up; the crate default is 30).
    pub profile_warmup: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            refit_every: 2.0,
            keep: 20.0,
            max_rows: 2000,
            model_ttl: 10.0,
            profile_warmup: 10,
        }
    }
}

#[derive(Debug, Default)]
struct Feedback {
    rows: VecDeque<(f64, CapacityRow)>,
    model: Option<(f64, CapacityModel)>,
    next_fit: f64,
    /// The model's capacity, smoothed over refits.
    estimate: Option<f64>,
}

/// Prediction state of one contender's balancer.
#[derive(Debug)]
pub struct Predictions {
    cfg: PipelineConfig,
    params: NodeParams,
    config: Arc<NodeConfig>,
    capacity: CapacityParams,
    models: Vec<NodeModel>,
    feedback: Vec<Feedback>,
    probe: Vec<Option<f64>>,
    /// Median of the nodes' capacity estimates.
    typical: Option<f64>,
    /// Median of the nodes' smoothed probe latencies.
    typical_probe: Option<f64>,
    rejected: u64,
}

fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

impl Predictions {
    /// A pipeline for `nodes` nodes of a pool whose SLO is `slo` seconds.
    pub fn new(nodes: usize, slo: f64, cfg: PipelineConfig) -> Result<Self, BenchError> {
        let params = NodeParams {
            profile: ProfileParams {
                warmup: cfg.profile_warmup,
                ..ProfileParams::default()
            },
            ..NodeParams::default()
        };
        let err = |e: plb_predict::PredictError| BenchError::Predict(e.to_string());
        let config = NodeConfig::new(params.clone()).map_err(err)?;
        let feedback = (0..nodes)
            .map(|i| Feedback {
                // Staggered, so refits spread over the interval.
                next_fit: cfg.refit_every * (1.0 + i as f64 / nodes.max(1) as f64),
                ..Feedback::default()
            })
            .collect();
        Ok(Predictions {
            cfg,
            models: (0..nodes)
                .map(|_| NodeModel::new(Arc::clone(&config)))
                .collect(),
            params,
            config,
            capacity: CapacityParams {
                slo_ms: slo * 1000.0,
                ..CapacityParams::default()
            },
            feedback,
            probe: vec![None; nodes],
            typical: None,
            typical_probe: None,
            rejected: 0,
        })
    }

    /// Inputs the models refused (out of order, out of range); should stay 0.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Node `i`'s capacity estimate (smoothed over refits), once fitted.
    pub fn capacity_estimate(&self, i: usize) -> Option<f64> {
        self.feedback.get(i)?.estimate
    }

    /// Node `i`'s capacity model, once fitted.
    pub fn capacity_model(&self, i: usize) -> Option<&CapacityModel> {
        self.feedback.get(i)?.model.as_ref().map(|(_, m)| m)
    }

    /// A node joined (again): it starts with fresh models.
    pub fn reset(&mut self, node: usize) {
        if let Some(m) = self.models.get_mut(node) {
            *m = NodeModel::new(Arc::clone(&self.config));
            self.probe[node] = None;
            let f = &mut self.feedback[node];
            f.rows.clear();
            f.model = None;
            f.estimate = None;
        }
    }

    /// One probe sample reached the balancer.
    pub fn on_sample(&mut self, s: &ProbeSample) {
        let Some(model) = self.models.get_mut(s.node) else {
            return;
        };
        let mut metrics = BTreeMap::new();
        let outcome = if s.ok {
            metrics.insert(HEALTH.to_owned(), s.health_latency * 1000.0);
            self.probe[s.node] = Some(s.health_latency * 1000.0);
            Outcome::Ok
        } else {
            Outcome::Timeout
        };
        let t = ms(s.taken_at);
        let obs = Observation {
            t_ms: t,
            probe: PROBE,
            outcome,
            duration_ms: Some(s.health_latency * 1000.0),
            metrics: &metrics,
        };
        if model.observe(&obs).is_err() {
            self.rejected += 1;
        }
        if let (Some(busy), Some(queued)) = (s.busy, s.queued) {
            let load = busy + queued;
            if model.observe_load(t, load).is_err() {
                self.rejected += 1;
            }
        }
    }

    /// A sidecar's feedback on one request dispatched to `node` with `load` requests
    /// in flight there (as estimated at dispatch).
    pub fn on_feedback(&mut self, node: usize, latency: f64, ok: bool, now: f64, load: f64) {
        let Some(f) = self.feedback.get_mut(node) else {
            return;
        };
        // A failure's latency is not the node's (a fast 503, or the client's timeout).
        if ok {
            f.rows.push_back((
                now,
                CapacityRow {
                    load,
                    features: Vec::new(),
                    latency_ms: latency * 1000.0,
                },
            ));
        }
        while f.rows.len() > self.cfg.max_rows
            || f.rows
                .front()
                .is_some_and(|(t, _)| *t < now - self.cfg.keep)
        {
            f.rows.pop_front();
        }
    }

    /// Refits the capacity models that are due and drops those too old (the
    /// balancer's background training); call before filling views.
    pub fn advance(&mut self, now: f64) {
        for f in &mut self.feedback {
            while f
                .rows
                .front()
                .is_some_and(|(t, _)| *t < now - self.cfg.keep)
            {
                f.rows.pop_front();
            }
            if now >= f.next_fit {
                f.next_fit = now + self.cfg.refit_every;
                if f.rows.len() >= self.capacity.min_rows {
                    let rows: Vec<CapacityRow> = f.rows.iter().map(|(_, r)| r.clone()).collect();
                    if let Ok(m) = CapacityModel::fit(&rows, &self.capacity) {
                        if let Some(c) = m.capacity(&[]) {
                            f.estimate = Some(match f.estimate {
                                Some(e) => 0.5 * (e + c.load),
                                None => c.load,
                            });
                        }
                        f.model = Some((now, m));
                    }
                }
            }
            if f.model
                .as_ref()
                .is_some_and(|(at, _)| now - at > self.cfg.model_ttl)
            {
                f.model = None;
                f.estimate = None;
            }
        }
        self.typical = median(self.feedback.iter().filter_map(|f| f.estimate).collect());
        self.typical_probe = median(
            (0..self.models.len())
                .filter_map(|i| self.probe_level(i))
                .collect(),
        );
    }

    /// Node `i`'s probe latency, smoothed by its one-step forecast.
    fn probe_level(&self, i: usize) -> Option<f64> {
        self.models[i]
            .series(SERIES)
            .and_then(|s| s.forecast(1))
            .map(|f| f.mean)
            .filter(|x| *x > 0.0)
    }

    /// Fills `v` (node `i`) with the predictions at `now`.
    pub fn fill(&mut self, i: usize, v: &mut NodeView, now: f64) {
        if i >= self.models.len() {
            return;
        }
        let from_probe = match (self.typical_probe, self.probe_level(i)) {
            (Some(typ), Some(x)) => typ / x,
            _ => 1.0,
        };
        let model = &mut self.models[i];
        model.tick(ms(now));
        // `degrading` is carried by the degrade score alone: the state's exit hysteresis
        // (3 samples) keeps a recovered node shed for seconds after its score fell,
        // which measured as harm when speeds change every few seconds.
        v.state = match model.state() {
            NodeState::Degrading => NodeState::Healthy,
            s => s,
        };
        let sp = &self.params.state;
        let mut score: f64 = 0.0;
        if let Some(s) = model.series(SERIES)
            && s.profile().is_ready()
            && let (Some(f), Some((median, _)), Some((_, hi))) = (
                s.forecast(sp.horizon),
                s.profile().median_mad(),
                s.profile().band(sp.band_k),
            )
        {
            // From halfway to the band's edge (noise stays below it) to the dynamic
            // threshold (the band's edge plus the forecast's own uncertainty).
            let start = 0.5 * (median + hi);
            let threshold = hi + sp.margin_z * f.sigma();
            if threshold > start {
                score = (f.mean - start) / (threshold - start);
            }
        }
        v.degrade_score = if v.state == NodeState::Unhealthy {
            1.0
        } else {
            score.clamp(0.0, 1.0)
        };
        // Capacity only ever takes traffic away: relative to the pool's typical
        // (median) estimate, a node counts at the lower of (a) the typical capacity
        // scaled by how much slower its probe answers than the typical node's (a probe
        // sees a slowdown whether or not the node gets traffic, and covers nodes whose
        // feedback is too thin to fit) and (b) its own feedback estimate. Each ratio has
        // a dead band (probe ratios above 0.85, feedback ratios above 0.5 count as 1),
        // so noise does not shave weight off healthy nodes; the per-node feedback fit
        // extrapolates far beyond the loads P2C lets a node reach and is the noisier.
        // An estimate above the typical one is never used: an overestimate would pile
        // onto a node the traffic it cannot take.
        v.capacity = self.typical.map(|typ| {
            let from_feedback = self.feedback[i].estimate.map_or(1.0, |e| e / typ);
            let r = (from_probe / PROBE_DEADBAND)
                .min(from_feedback / FEEDBACK_DEADBAND)
                .clamp(0.0, 1.0);
            typ * r
        });
        // The forecast load is published in the node model's assessment but not used
        // for headroom: in-flight counts sampled once a second and forecast 6 steps
        // ahead are noisy, and weights that follow them herd traffic back and forth.
        v.forecast_load = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: usize, t: f64, health: f64, busy: f64) -> ProbeSample {
        ProbeSample {
            node,
            taken_at: t,
            ok: true,
            health_latency: health,
            queued: Some(0.0),
            busy: Some(busy),
            workers: Some(4.0),
            service: None,
        }
    }

    #[test]
    fn a_slowing_probe_raises_the_degrade_score_gradually() {
        let mut p = Predictions::new(2, 0.2, PipelineConfig::default()).expect("builds");
        let mut v = NodeView::new("n0", "x");
        let mut t = 0.0;
        for k in 0..20 {
            let jitter = 0.0002 * f64::from(k % 3);
            p.on_sample(&sample(0, t, 0.010 + jitter, 2.0));
            t += 1.0;
        }
        p.fill(0, &mut v, t);
        assert_eq!((v.state, v.degrade_score), (NodeState::Healthy, 0.0));
        // +2% per second.
        let mut scores = Vec::new();
        for k in 1..=40 {
            p.on_sample(&sample(0, t, 0.0104 * (1.0 + 0.02 * f64::from(k)), 2.0));
            p.fill(0, &mut v, t);
            scores.push(v.degrade_score);
            t += 1.0;
        }
        let first = scores.iter().position(|&x| x > 0.0).expect("rises");
        let full = scores.iter().position(|&x| x >= 1.0).expect("reaches 1");
        assert!(first < full, "{scores:?}");
        assert!(
            scores.iter().any(|&x| x > 0.1 && x < 0.9),
            "gradual: {scores:?}"
        );
        // The model itself calls it degrading; the view carries it as the score.
        assert_eq!(p.models[0].state(), NodeState::Degrading);
        assert_eq!(v.state, NodeState::Healthy);
    }

    #[test]
    fn capacity_is_the_in_flight_count_at_the_slo() {
        let mut p = Predictions::new(1, 0.2, PipelineConfig::default()).expect("builds");
        // latency = 40 ms + 10 ms per request in flight: 200 ms at 16.
        let mut t = 0.0;
        for k in 0..600 {
            let load = f64::from(k % 12);
            p.on_feedback(0, 0.040 + 0.010 * load, true, t, load);
            t += 0.01;
        }
        p.advance(t);
        let mut v = NodeView::new("n0", "x");
        p.fill(0, &mut v, t);
        let cap = v.capacity.expect("fitted");
        assert!((cap - 16.0).abs() < 1.0, "{cap}");
        // No feedback for longer than the model's lifetime: dropped.
        p.advance(t + 30.0);
        p.fill(0, &mut v, t + 30.0);
        assert_eq!(v.capacity, None);
        assert_eq!(p.rejected(), 0);
    }
}
