//! [`DemandTracker`]: a pool's demand (route decisions and proxied requests per minute)
//! and its autoscaling advice, as part of the pool's pipeline. The caller reports the
//! requests routed in each tick ([`crate::PoolPredictor::observe_requests`]); they are
//! bucketed per minute and, at each minute boundary (empty minutes included), fed to
//! [`PoolDemand`] (the forecaster bank at 5 min, 15 min and 1 h); with the per-node
//! capacity (requests in flight at the SLO from the capacity model, turned into a rate
//! by Little's law: [`rate_from_in_flight`] with the SLO as the latency) the plan gives
//! the nodes needed at each horizon, and a [`Recommender`] (hysteresis) says when the
//! 15-minute recommendation rose or fell past the pool's node count. Pure: time is a
//! parameter, refits are handed out as [`RefitJob`]s for the caller to run.
use std::collections::VecDeque;

use plb_api::{PoolScaling, ScalingHorizon, ScalingNotice, ScalingObjective, ScalingPoint};
use plb_predict::demand::{nodes_for, rate_from_in_flight};
use plb_predict::forecast::{RefitJob, RefitResult};
use plb_predict::{
    DemandParams, Direction, PoolDemand, RecommendationChange, Recommender, RecommenderParams,
    ScalePlan,
};

use crate::PipelineError;

/// How a pool's demand is forecast and turned into advice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DemandConfig {
    /// Forecast and plan (bucket, horizons, target utilisation, bounds).
    pub params: DemandParams,
    /// When the recommendation moves (in buckets: minutes).
    pub recommender: RecommenderParams,
    /// A fixed per-node capacity, requests per second, instead of the capacity model's
    /// (`None`: from the capacity model).
    pub node_capacity_rps: Option<f64>,
}

impl DemandConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), PipelineError> {
        self.params.validate()?;
        Recommender::new(self.recommender)?;
        if let Some(c) = self.node_capacity_rps
            && !(c.is_finite() && c > 0.0)
        {
            return Err(PipelineError::Invalid {
                name: "node_capacity_rps",
                message: format!("must be positive, got {c}"),
            });
        }
        Ok(())
    }
}

/// Most minutes of history kept for the scaling view (six hours).
const HISTORY: usize = 360;
/// A gap longer than this many buckets (no tick: the process was paused) is not filled
/// with zeros; the series goes on from the new bucket.
const MAX_GAP: i64 = 1_440;

/// A change of the announced recommendation, for the caller to store and send.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingChange {
    /// When, Unix ms (the end of the minute that moved it).
    pub at_ms: i64,
    /// The change.
    pub change: RecommendationChange,
    /// The horizon it is for, minutes.
    pub horizon_min: u32,
}

impl ScalingChange {
    /// The notification's content.
    pub fn notice(&self) -> ScalingNotice {
        ScalingNotice {
            direction: match self.change.direction {
                Direction::Up => "up",
                Direction::Down => "down",
            }
            .to_string(),
            from_nodes: self.change.from,
            to_nodes: self.change.to,
            current_nodes: self.change.current_nodes,
            horizon_min: self.horizon_min,
            reason: self.change.reason.clone(),
        }
    }
}

/// A pool's demand series, its plan and the recommender (see the module docs).
#[derive(Debug, Clone)]
pub struct DemandTracker {
    config: DemandConfig,
    demand: PoolDemand,
    recommender: Recommender,
    /// Start of the open bucket.
    bucket_ms: Option<i64>,
    /// Requests counted in it.
    count: u64,
    /// The open bucket began before the tracker did: not learnt (it would read low).
    partial: bool,
    /// The last complete bucket: start and requests.
    last: Option<(i64, f64)>,
    history: VecDeque<ScalingPoint>,
    refit_running: bool,
    change: Option<ScalingChange>,
    last_changed_ms: Option<i64>,
}

/// The capacity and node count a plan is made with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInputs {
    /// Requests in flight a typical node serves at the SLO (the capacity model's).
    pub capacity_in_flight: Option<f64>,
    /// The pool's latency objective, ms.
    pub slo_ms: f64,
    /// Nodes in service.
    pub current_nodes: u32,
}

impl DemandTracker {
    /// An empty tracker.
    pub fn new(config: DemandConfig) -> Result<DemandTracker, PipelineError> {
        config.validate()?;
        Ok(DemandTracker {
            demand: PoolDemand::new(config.params.clone())?,
            recommender: Recommender::new(config.recommender)?,
            config,
            bucket_ms: None,
            count: 0,
            partial: false,
            last: None,
            history: VecDeque::new(),
            refit_running: false,
            change: None,
            last_changed_ms: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &DemandConfig {
        &self.config
    }

    fn step(&self) -> i64 {
        self.config.params.step_ms
    }

    fn bucket(&self, t_ms: i64) -> i64 {
        t_ms - t_ms.rem_euclid(self.step())
    }

    /// Requests per bucket one node serves within the SLO, and in flight: the fixed
    /// setting, else Little's law on the capacity model's in-flight capacity.
    pub fn node_capacity(&self, inputs: &PlanInputs) -> Option<(f64, Option<f64>)> {
        let step = self.step();
        if let Some(rps) = self.config.node_capacity_rps {
            return Some((rps * step as f64 / 1000.0, None));
        }
        let c = inputs.capacity_in_flight?;
        rate_from_in_flight(c, inputs.slo_ms, step).map(|r| (r, Some(c)))
    }

    /// Counts `count` requests routed at `t_ms`; closes the buckets that ended before
    /// it (empty ones as zeros), learning each and moving the recommendation.
    pub fn observe(&mut self, t_ms: i64, count: u64, inputs: &PlanInputs) {
        let b = self.bucket(t_ms);
        let Some(open) = self.bucket_ms else {
            self.bucket_ms = Some(b);
            self.count = count;
            self.partial = t_ms - b > self.step() / 30;
            return;
        };
        if b <= open {
            // The open bucket (or a clock that went back: counted in the open one).
            self.count = self.count.saturating_add(count);
            return;
        }
        let requests = std::mem::take(&mut self.count);
        if !std::mem::take(&mut self.partial) {
            self.close(open, requests as f64, inputs);
        }
        let gap = (b - open) / self.step();
        if gap <= MAX_GAP {
            let mut k = open + self.step();
            while k < b {
                self.close(k, 0.0, inputs);
                k += self.step();
            }
        }
        self.bucket_ms = Some(b);
        self.count = count;
    }

    fn close(&mut self, bucket_ms: i64, requests: f64, inputs: &PlanInputs) {
        if self.demand.observe(bucket_ms, requests).is_err() {
            return;
        }
        self.last = Some((bucket_ms, requests));
        let end_ms = bucket_ms + self.step();
        let plan = self.plan(inputs);
        if let Some(plan) = &plan
            && let Some(change) = self.recommender.observe(plan)
        {
            self.last_changed_ms = Some(end_ms);
            self.change = Some(ScalingChange {
                at_ms: end_ms,
                change,
                horizon_min: self.minutes(self.config.params.recommend_horizon),
            });
        }
        let h = self.config.params.horizons.first().copied().unwrap_or(1);
        let f = self.demand.forecast(h).unwrap_or_default();
        let rps = self.per_second();
        self.history.push_back(ScalingPoint {
            minute_ms: bucket_ms,
            demand_rps: requests * rps,
            forecast_rps: f.mean * rps,
            forecast_rps_lo: f.lo * rps,
            forecast_rps_hi: f.hi * rps,
            forecast_for_ms: bucket_ms + self.step() * i64::from(h),
            nodes_needed: plan.as_ref().map(|p| p.recommended),
            current_nodes: inputs.current_nodes,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    fn plan(&self, inputs: &PlanInputs) -> Option<ScalePlan> {
        let (per_bucket, _) = self.node_capacity(inputs)?;
        self.demand.plan(per_bucket, inputs.current_nodes)
    }

    /// Bucket counts to requests per second.
    fn per_second(&self) -> f64 {
        1000.0 / self.step() as f64
    }

    fn minutes(&self, buckets: u32) -> u32 {
        let ms = self.step().saturating_mul(i64::from(buckets));
        u32::try_from(ms / 60_000).unwrap_or(u32::MAX)
    }

    /// The refit of the demand forecaster to run now, if one is due (one at a time: the
    /// next only after [`DemandTracker::install_refit`] or
    /// [`DemandTracker::refit_failed`]).
    pub fn due_refit(&mut self) -> Option<RefitJob> {
        if self.refit_running || !self.demand.refit_due() {
            return None;
        }
        let job = self.demand.refit_job()?;
        self.refit_running = true;
        Some(job)
    }

    /// Installs a finished refit.
    pub fn install_refit(&mut self, result: RefitResult) {
        self.refit_running = false;
        self.demand.install(result);
    }

    /// A refit handed out did not finish: the next may start.
    pub fn refit_failed(&mut self) {
        self.refit_running = false;
    }

    /// The newest change of the announced recommendation, once (`None` when nothing
    /// changed since the last call).
    pub fn take_change(&mut self) -> Option<ScalingChange> {
        self.change.take()
    }

    /// The announced recommendation (the node count while nothing was announced).
    pub fn advised(&self) -> Option<u32> {
        self.recommender.advised()
    }

    /// The scaling view at `now_ms` (the pool's name left empty for the caller).
    pub fn view(&self, now_ms: i64, inputs: &PlanInputs) -> PoolScaling {
        let p = &self.config.params;
        let rps = self.per_second();
        let capacity = self.node_capacity(inputs);
        let per_node = capacity.map(|(c, _)| c * p.target_utilisation);
        let plan = self.plan(inputs);
        let horizons: Vec<ScalingHorizon> = match &plan {
            Some(plan) => plan
                .horizons
                .iter()
                .map(|n| ScalingHorizon {
                    horizon: horizon_label(self.minutes(n.horizon)),
                    minutes: self.minutes(n.horizon),
                    demand_rps: n.demand.mean * rps,
                    demand_rps_lo: n.demand.lo * rps,
                    demand_rps_hi: n.demand.hi * rps,
                    planned_rps: n.planned * rps,
                    model: n.model.clone(),
                    nodes: Some(n.nodes),
                    nodes_lo: Some(n.nodes_lo),
                    nodes_hi: Some(n.nodes_hi),
                })
                .collect(),
            None => p
                .horizons
                .iter()
                .filter_map(|&h| {
                    let f = self.demand.forecast(h)?;
                    Some(ScalingHorizon {
                        horizon: horizon_label(self.minutes(h)),
                        minutes: self.minutes(h),
                        demand_rps: f.mean * rps,
                        demand_rps_lo: f.lo * rps,
                        demand_rps_hi: f.hi * rps,
                        planned_rps: (f.mean + p.plan_z * f.sigma()).max(0.0) * rps,
                        model: self.demand.forecaster().chosen(h).to_string(),
                        nodes: None,
                        nodes_lo: None,
                        nodes_hi: None,
                    })
                })
                .collect(),
        };
        let needed_now = match (self.last, per_node) {
            (Some((_, requests)), Some(per_node)) => Some(nodes_for(requests, per_node, p)),
            _ => None,
        };
        let capacity_source = match (self.config.node_capacity_rps, capacity) {
            (Some(_), _) => "fixed per-node capacity from the configuration".to_string(),
            (None, Some((_, Some(c)))) => format!(
                "capacity model: a typical node serves {c:.1} requests in flight at the {:.0} ms objective; by Little's law {:.2} requests per second ({c:.1} / {:.3} s)",
                inputs.slo_ms,
                c / inputs.slo_ms * 1000.0,
                inputs.slo_ms / 1000.0
            ),
            _ => "none yet: the capacity model is fitted from request feedback".to_string(),
        };
        let reason = match (&plan, self.last) {
            (Some(plan), _) => plan.reason.clone(),
            (None, None) => "no complete minute of demand yet".to_string(),
            (None, Some(_)) => {
                "demand is forecast; nodes needed wait for a per-node capacity (the capacity model is fitted from request feedback)".to_string()
            }
        };
        PoolScaling {
            pool: String::new(),
            at_ms: now_ms,
            current_nodes: inputs.current_nodes,
            needed_now,
            recommended: plan.as_ref().map(|p| p.recommended),
            advised: self.recommender.advised(),
            demand_rps: self.last.map(|(_, r)| r * rps),
            horizons,
            node_capacity_rps: capacity.map(|(c, _)| c * rps),
            node_capacity_in_flight: capacity.and_then(|(_, f)| f),
            capacity_source,
            objective: ScalingObjective {
                latency_slo_ms: inputs.slo_ms,
                target_utilisation: p.target_utilisation,
                plan_z: p.plan_z,
                recommend_horizon_min: self.minutes(p.recommend_horizon),
                min_nodes: p.min_nodes,
                max_nodes: p.max_nodes,
            },
            last_changed_ms: self.last_changed_ms,
            minutes_observed: self.demand.count(),
            reason,
            history: self.history.iter().cloned().collect(),
        }
    }
}

/// The Prometheus label of a horizon: `5m`, `15m`, `1h`.
pub fn horizon_label(minutes: u32) -> String {
    if minutes >= 60 && minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040_000; // a minute boundary

    fn inputs(nodes: u32) -> PlanInputs {
        PlanInputs {
            capacity_in_flight: Some(2.0),
            slo_ms: 200.0,
            current_nodes: nodes,
        }
    }

    #[test]
    fn requests_are_bucketed_per_minute_with_zeros() {
        let mut d = DemandTracker::new(DemandConfig::default()).expect("config");
        // One tick a second, 10 requests each, for three minutes.
        for s in 0..180 {
            d.observe(T0 + s * 1_000, 10, &inputs(3));
        }
        assert_eq!(d.view(T0, &inputs(3)).minutes_observed, 2);
        // Three silent minutes, then a tick: they count as zeros.
        d.observe(T0 + 360_000, 0, &inputs(3));
        let v = d.view(T0 + 360_000, &inputs(3));
        assert_eq!(v.minutes_observed, 6);
        let rates: Vec<f64> = v.history.iter().map(|p| p.demand_rps).collect();
        assert_eq!(rates, vec![10.0, 10.0, 10.0, 0.0, 0.0, 0.0]);
        // A tracker started mid-minute does not learn that partial minute.
        let mut d = DemandTracker::new(DemandConfig::default()).expect("config");
        d.observe(T0 + 30_000, 5, &inputs(3));
        d.observe(T0 + 61_000, 5, &inputs(3));
        assert_eq!(d.view(T0, &inputs(3)).minutes_observed, 0);
    }

    #[test]
    fn capacity_by_littles_law_and_the_view() {
        let mut d = DemandTracker::new(DemandConfig::default()).expect("config");
        let v = d.view(T0, &inputs(3));
        assert_eq!(v.needed_now, None);
        assert!(v.horizons.is_empty());
        // 2 in flight at 200 ms: 10 requests per second per node, 8 at 80 % target.
        for m in 0..30 {
            for s in 0..60 {
                d.observe(T0 + m * 60_000 + s * 1_000, 40, &inputs(3));
            }
        }
        let v = d.view(T0 + 1_800_000, &inputs(3));
        assert_eq!(v.node_capacity_rps, Some(10.0));
        assert_eq!(v.node_capacity_in_flight, Some(2.0));
        assert_eq!(v.demand_rps, Some(40.0));
        // 40 rps at 8 per node: 5 nodes.
        assert_eq!(v.needed_now, Some(5));
        let labels: Vec<&str> = v.horizons.iter().map(|h| h.horizon.as_str()).collect();
        assert_eq!(labels, vec!["5m", "15m", "1h"]);
        for h in &v.horizons {
            assert!((h.demand_rps - 40.0).abs() < 1.0, "{h:?}");
            assert_eq!(h.nodes, Some(5), "{h:?}");
        }
        assert_eq!(v.recommended, Some(5));
        // The pool has 3: the recommendation rose past it, once.
        let c = d.take_change().expect("a rise");
        assert_eq!(c.notice().direction, "up");
        assert_eq!((c.change.from, c.change.to), (3, 5));
        assert_eq!(c.horizon_min, 15);
        assert_eq!(d.take_change(), None);
        assert_eq!(v.advised, Some(5));
        assert!(v.last_changed_ms.is_some());
        assert!(
            v.capacity_source.contains("Little"),
            "{}",
            v.capacity_source
        );
        // Without a capacity, demand is still forecast.
        let none = PlanInputs {
            capacity_in_flight: None,
            ..inputs(3)
        };
        let v = d.view(T0, &none);
        assert_eq!(v.horizons.len(), 3);
        assert!(v.horizons.iter().all(|h| h.nodes.is_none()));
    }

    #[test]
    fn refits_are_handed_out_one_at_a_time() {
        let mut d = DemandTracker::new(DemandConfig::default()).expect("config");
        let mut jobs = 0;
        for m in 0..2_000 {
            d.observe(T0 + m * 60_000, (100 + (m % 60)) as u64, &inputs(3));
            if let Some(job) = d.due_refit() {
                jobs += 1;
                assert!(d.due_refit().is_none(), "one at a time");
                d.install_refit(job.run());
            }
        }
        assert!(jobs > 0);
    }

    #[test]
    fn labels_and_settings() {
        assert_eq!(horizon_label(5), "5m");
        assert_eq!(horizon_label(60), "1h");
        assert_eq!(horizon_label(90), "90m");
        let bad = DemandConfig {
            node_capacity_rps: Some(0.0),
            ..Default::default()
        };
        assert!(DemandTracker::new(bad).is_err());
    }
}
