//! Pool demand and scaling advice: the request rate a pool receives (route decisions
//! and proxied requests per minute) forecast with the forecaster bank at horizons of
//! minutes; with a per-node capacity, the nodes needed at each horizon with an
//! interval and the reason in words; and a recommender with hysteresis that says when
//! the 15-minute recommendation has risen or fallen past the pool's node count.
//!
//! Pure: the caller feeds one count per minute (zeros included), runs the background
//! refit when due ([`PoolDemand::refit_job`] on a blocking thread, or
//! [`PoolDemand::refit_inline`] offline), and reads plans.
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
use crate::forecast::{
    AutoForecaster, BankSpec, Forecast, ForecastParams, Forecaster, RefitJob, RefitResult,
};
use crate::num::{acceptable, check_input, clean};

/// How demand is forecast and turned into nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandParams {
    /// Length of one demand bucket, ms (60,000: requests per minute).
    pub step_ms: i64,
    /// Horizons of the plan, in buckets (5, 15 and 60 minutes).
    pub horizons: Vec<u32>,
    /// The horizon the recommendation is for: the plan needs the most nodes any
    /// horizon up to it needs (a node started now serves all of them).
    pub recommend_horizon: u32,
    /// Share of a node's capacity to plan for (0 < target <= 1), like an autoscaler's
    /// target utilisation.
    pub target_utilisation: f64,
    /// The demand planned for is `mean + plan_z * sigma` of the forecast (0 = the mean).
    pub plan_z: f64,
    /// Fewest nodes ever recommended.
    pub min_nodes: u32,
    /// Most nodes ever recommended.
    pub max_nodes: u32,
    /// Weight of the newest error when the bank scores its members (see
    /// [`ForecastParams::decay`]); demand wants a longer memory than node metrics, so
    /// that a member that foresaw yesterday's rises is still trusted before today's.
    pub decay: f64,
}

impl Default for DemandParams {
    fn default() -> Self {
        DemandParams {
            step_ms: 60_000,
            horizons: vec![5, 15, 60],
            recommend_horizon: 15,
            target_utilisation: 0.8,
            plan_z: 1.0,
            min_nodes: 1,
            max_nodes: 10_000,
            decay: 0.02,
        }
    }
}

impl DemandParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, message: String| Err(PredictError::InvalidParam { name, message });
        if !(1_000..=86_400_000).contains(&self.step_ms) {
            return bad(
                "step_ms",
                format!("must be 1000..=86400000, got {}", self.step_ms),
            );
        }
        if self.horizons.is_empty() || self.horizons.iter().any(|&h| !(1..=64).contains(&h)) {
            return bad(
                "horizons",
                format!("need 1..=64 buckets each, got {:?}", self.horizons),
            );
        }
        if !(1..=64).contains(&self.recommend_horizon) {
            return bad(
                "recommend_horizon",
                format!("must be 1..=64, got {}", self.recommend_horizon),
            );
        }
        if !(self.target_utilisation > 0.0 && self.target_utilisation <= 1.0) {
            return bad(
                "target_utilisation",
                format!("must be in (0, 1], got {}", self.target_utilisation),
            );
        }
        if !(0.0..=5.0).contains(&self.plan_z) {
            return bad("plan_z", format!("must be in [0, 5], got {}", self.plan_z));
        }
        if self.min_nodes > self.max_nodes || self.max_nodes == 0 {
            return bad(
                "max_nodes",
                format!(
                    "need 0 <= min_nodes <= max_nodes, max_nodes > 0, got {}..{}",
                    self.min_nodes, self.max_nodes
                ),
            );
        }
        Ok(())
    }

    fn max_horizon(&self) -> u32 {
        self.horizons
            .iter()
            .copied()
            .chain([self.recommend_horizon])
            .max()
            .unwrap_or(1)
    }
}

/// Nodes needed at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesNeeded {
    /// Horizon, in buckets.
    pub horizon: u32,
    /// Horizon in ms.
    pub horizon_ms: i64,
    /// The demand forecast (requests per bucket) with its interval.
    pub demand: Forecast,
    /// The demand planned for (`mean + plan_z * sigma`).
    pub planned: f64,
    /// Nodes for the planned demand.
    pub nodes: u32,
    /// Nodes for the low and high ends of the demand interval.
    pub nodes_lo: u32,
    /// See `nodes_lo`.
    pub nodes_hi: u32,
    /// The forecasting member used, e.g. `hw(0.1,0,1)`.
    pub model: String,
}

/// The nodes a pool needs at each horizon, and the recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalePlan {
    /// Nodes the pool has now (as given).
    pub current_nodes: u32,
    /// Requests per bucket one node serves within its SLO (as given).
    pub node_capacity: f64,
    /// Requests per bucket planned per node (`node_capacity * target_utilisation`).
    pub per_node: f64,
    /// One entry per horizon of the params.
    pub horizons: Vec<NodesNeeded>,
    /// The most nodes any horizon up to the recommend horizon needs.
    pub recommended: u32,
    /// The same for demand 10 % above the plan (used to scale down only with margin).
    pub recommended_with_margin: u32,
    /// Why, in words.
    pub reason: String,
}

/// Nodes for a demand at a per-node rate, clamped to the params' bounds.
pub fn nodes_for(demand: f64, per_node: f64, params: &DemandParams) -> u32 {
    let n = if per_node > 0.0 && demand.is_finite() {
        (demand.max(0.0) / per_node).ceil()
    } else {
        f64::from(params.max_nodes)
    };
    let n = if n.is_finite() {
        n.min(f64::from(params.max_nodes)) as u32
    } else {
        params.max_nodes
    };
    n.clamp(params.min_nodes, params.max_nodes)
}

/// A pool's demand series and its forecaster.
#[derive(Debug, Clone)]
pub struct PoolDemand {
    params: DemandParams,
    forecaster: AutoForecaster,
    last_t_ms: Option<i64>,
}

/// Margin on planned demand before a scale-down is recommended.
const DOWN_MARGIN: f64 = 0.1;

impl PoolDemand {
    /// An empty pool demand model.
    pub fn new(params: DemandParams) -> Result<PoolDemand> {
        params.validate()?;
        let fp = ForecastParams {
            max_horizon: params.max_horizon(),
            decay: params.decay,
            ..ForecastParams::default()
        };
        let spec = BankSpec::new(BankSpec::default_members(None), fp)?;
        Ok(PoolDemand {
            params,
            forecaster: AutoForecaster::with_spec(spec),
            last_t_ms: None,
        })
    }

    /// The params.
    pub fn params(&self) -> &DemandParams {
        &self.params
    }

    /// The forecaster (choice, errors, season).
    pub fn forecaster(&self) -> &AutoForecaster {
        &self.forecaster
    }

    /// Learns the requests of the bucket that starts at `t_ms` (route decisions plus
    /// proxied requests). Refuses NaN, infinite, negative and out-of-order values.
    pub fn observe(&mut self, t_ms: i64, requests: f64) -> Result<()> {
        check_input("requests", requests)?;
        if requests < 0.0 {
            return Err(PredictError::OutOfRange {
                name: "requests".to_string(),
                value: requests,
                limit: 0.0,
            });
        }
        if let Some(last) = self.last_t_ms
            && t_ms <= last
        {
            return Err(PredictError::OutOfOrder {
                name: "requests".to_string(),
                t_ms,
                last_ms: last,
            });
        }
        self.last_t_ms = Some(t_ms);
        self.forecaster.update(requests);
        Ok(())
    }

    /// Buckets seen.
    pub fn count(&self) -> u64 {
        self.forecaster.bank().count()
    }

    /// True when a background refit (period detection, ARIMA fit) is due.
    pub fn refit_due(&self) -> bool {
        self.forecaster.refit_due()
    }

    /// The refit job (owns its data; [`RefitJob::run`] is pure).
    pub fn refit_job(&self) -> Option<RefitJob> {
        self.forecaster.refit_job(Some(self.params.step_ms as f64))
    }

    /// Installs a refit result.
    pub fn install(&mut self, result: RefitResult) {
        self.forecaster.install(result)
    }

    /// Runs a due refit inline (offline callers).
    pub fn refit_inline(&mut self) {
        self.forecaster
            .refit_inline(Some(self.params.step_ms as f64))
    }

    /// The demand forecast `h` buckets ahead (`None` before any bucket).
    pub fn forecast(&self, h: u32) -> Option<Forecast> {
        (self.count() > 0).then(|| self.forecaster.forecast(h))
    }

    fn needed(&self, h: u32, per_node: f64) -> NodesNeeded {
        let p = &self.params;
        let mut f = self.forecaster.forecast(h);
        let mut model = self.forecaster.chosen(h).to_string();
        // Once a cycle is established, plan for what it predicts when that is higher:
        // the bank picks members by recent error, and a calm hour before a daily rise
        // does not tell them apart.
        if let Some((s, label)) = self.forecaster.seasonal_forecast(h)
            && s.mean > f.mean
        {
            f = s;
            model = format!("{label} (season)");
        }
        let planned = clean((f.mean + p.plan_z * f.sigma()).max(0.0));
        NodesNeeded {
            horizon: h,
            horizon_ms: p.step_ms.saturating_mul(i64::from(h)),
            demand: f,
            planned,
            nodes: nodes_for(planned, per_node, p),
            nodes_lo: nodes_for(f.lo, per_node, p),
            nodes_hi: nodes_for(f.hi, per_node, p),
            model,
        }
    }

    /// The nodes needed at each horizon for nodes that each serve `node_capacity`
    /// requests per bucket within the SLO (from the capacity model: the pool's typical
    /// node), and the recommendation. `None` before any bucket or for a capacity that
    /// is not a positive finite number.
    pub fn plan(&self, node_capacity: f64, current_nodes: u32) -> Option<ScalePlan> {
        if self.count() == 0 || !acceptable(node_capacity) || node_capacity <= 0.0 {
            return None;
        }
        let p = &self.params;
        let per_node = node_capacity * p.target_utilisation;
        let horizons: Vec<NodesNeeded> = p
            .horizons
            .iter()
            .map(|&h| self.needed(h, per_node))
            .collect();
        // The peak need over every horizon up to the recommend horizon.
        let mut peak = self.needed(p.recommend_horizon, per_node);
        for h in 1..p.recommend_horizon {
            let n = self.needed(h, per_node);
            if n.planned > peak.planned {
                peak = n;
            }
        }
        let recommended = peak.nodes;
        let recommended_with_margin = nodes_for(peak.planned * (1.0 + DOWN_MARGIN), per_node, p);
        let minutes = |ms: i64| ms as f64 / 60_000.0;
        let reason = format!(
            "demand up to {:.0} requests per {:.0} min expected within {:.0} min (peak at {:.0} min: {:.0}, interval {:.0}-{:.0}, model {}); planning for {:.0} at {:.0} per node ({:.0} capacity x {:.0} % target) needs {} node(s) ({}-{}); the pool has {}",
            peak.planned,
            minutes(p.step_ms),
            minutes(p.step_ms.saturating_mul(i64::from(p.recommend_horizon))),
            minutes(peak.horizon_ms),
            peak.demand.mean,
            peak.demand.lo,
            peak.demand.hi,
            peak.model,
            peak.planned,
            per_node,
            node_capacity,
            p.target_utilisation * 100.0,
            recommended,
            peak.nodes_lo,
            peak.nodes_hi,
            current_nodes,
        );
        Some(ScalePlan {
            current_nodes,
            node_capacity,
            per_node,
            horizons,
            recommended,
            recommended_with_margin,
            reason,
        })
    }
}

/// Requests per bucket a node serves, from a capacity in requests in flight (what the
/// capacity model measures when its load is in-flight requests) and the latency at that
/// load (Little's law: rate = in flight / latency). `None` for non-positive inputs.
pub fn rate_from_in_flight(in_flight: f64, latency_ms: f64, step_ms: i64) -> Option<f64> {
    (acceptable(in_flight) && acceptable(latency_ms) && in_flight > 0.0 && latency_ms > 0.0)
        .then(|| clean(in_flight / latency_ms * step_ms as f64))
}

/// When the recommendation moves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecommenderParams {
    /// Consecutive plans above the node count before a rise is announced (>= 1).
    pub up_after: u32,
    /// Consecutive plans below it, with margin, before a fall is announced (>= 1).
    pub down_after: u32,
}

impl Default for RecommenderParams {
    fn default() -> Self {
        RecommenderParams {
            up_after: 2,
            down_after: 10,
        }
    }
}

/// Which way a recommendation moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More nodes needed.
    Up,
    /// Fewer nodes suffice.
    Down,
}

/// A change of the recommendation: the notification's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationChange {
    /// The previous recommendation (the node count it was measured against).
    pub from: u32,
    /// The new recommendation.
    pub to: u32,
    /// Nodes the pool has.
    pub current_nodes: u32,
    /// Up or down.
    pub direction: Direction,
    /// The plan's reason.
    pub reason: String,
}

/// Says when the recommendation rises or falls past the pool's node count, with
/// hysteresis: a rise after `up_after` consecutive plans above it; a fall only when even
/// 10 % more demand fits in fewer nodes, for `down_after` consecutive plans, and then to
/// the largest count those plans needed. When the pool's node count changes (someone
/// scaled it), the recommendation is measured against the new count.
#[derive(Debug, Clone, Default)]
pub struct Recommender {
    params: RecommenderParams,
    advised: Option<u32>,
    last_current: Option<u32>,
    up: u32,
    down: u32,
    down_max: u32,
}

impl Recommender {
    /// A recommender.
    pub fn new(params: RecommenderParams) -> Result<Recommender> {
        if params.up_after == 0 || params.down_after == 0 {
            return Err(PredictError::InvalidParam {
                name: "up_after",
                message: "up_after and down_after must be at least 1".to_string(),
            });
        }
        Ok(Recommender {
            params,
            ..Default::default()
        })
    }

    /// The node count recommended now (`None` before the first plan).
    pub fn advised(&self) -> Option<u32> {
        self.advised
    }

    /// Feeds the newest plan; returns the change when the recommendation moved.
    pub fn observe(&mut self, plan: &ScalePlan) -> Option<RecommendationChange> {
        let current = plan.current_nodes;
        if self.last_current != Some(current) {
            self.last_current = Some(current);
            self.advised = Some(current);
            self.up = 0;
            self.down = 0;
        }
        let advised = self.advised.unwrap_or(current);
        let mut change = None;
        if plan.recommended > advised {
            self.down = 0;
            self.up += 1;
            if self.up >= self.params.up_after {
                change = Some((plan.recommended, Direction::Up));
            }
        } else if plan.recommended_with_margin < advised {
            self.up = 0;
            self.down_max = if self.down == 0 {
                plan.recommended_with_margin
            } else {
                self.down_max.max(plan.recommended_with_margin)
            };
            self.down += 1;
            if self.down >= self.params.down_after {
                change = Some((self.down_max, Direction::Down));
            }
        } else {
            self.up = 0;
            self.down = 0;
        }
        let (to, direction) = change?;
        self.advised = Some(to);
        self.up = 0;
        self.down = 0;
        Some(RecommendationChange {
            from: advised,
            to,
            current_nodes: current,
            direction,
            reason: plan.reason.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn plan(recommended: u32, with_margin: u32, current: u32) -> ScalePlan {
        ScalePlan {
            current_nodes: current,
            node_capacity: 100.0,
            per_node: 80.0,
            horizons: Vec::new(),
            recommended,
            recommended_with_margin: with_margin,
            reason: format!("needs {recommended}"),
        }
    }

    #[test]
    fn params_are_checked() {
        assert!(DemandParams::default().validate().is_ok());
        let bad = [
            DemandParams {
                target_utilisation: 0.0,
                ..Default::default()
            },
            DemandParams {
                horizons: vec![],
                ..Default::default()
            },
            DemandParams {
                horizons: vec![65],
                ..Default::default()
            },
            DemandParams {
                min_nodes: 5,
                max_nodes: 4,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(PoolDemand::new(p).is_err());
        }
        assert!(
            Recommender::new(RecommenderParams {
                up_after: 0,
                down_after: 3
            })
            .is_err()
        );
    }

    #[test]
    fn nodes_follow_demand_and_capacity() {
        let p = DemandParams::default();
        assert_eq!(nodes_for(0.0, 80.0, &p), 1);
        assert_eq!(nodes_for(80.0, 80.0, &p), 1);
        assert_eq!(nodes_for(81.0, 80.0, &p), 2);
        assert_eq!(nodes_for(1e300, 80.0, &p), p.max_nodes);
        assert_eq!(nodes_for(f64::NAN, 80.0, &p), p.max_nodes);
        assert_eq!(nodes_for(10.0, 0.0, &p), p.max_nodes);
        assert_eq!(rate_from_in_flight(4.0, 50.0, 60_000), Some(4_800.0));
        assert_eq!(rate_from_in_flight(0.0, 50.0, 60_000), None);
    }

    #[test]
    fn plan_from_a_steady_and_a_rising_demand() {
        let mut rng = Rng::new(3);
        let mut d = PoolDemand::new(DemandParams::default()).expect("params");
        assert!(d.plan(100.0, 3).is_none());
        for t in 0..600 {
            d.observe(t * 60_000, 400.0 + 10.0 * rng.normal())
                .expect("observe");
            d.refit_inline();
        }
        assert!(d.observe(0, 1.0).is_err());
        assert!(d.observe(700 * 60_000, -1.0).is_err());
        let plan = d.plan(100.0, 5).expect("plan");
        assert_eq!(plan.horizons.len(), 3);
        // 400/min at 80 per node: 5 nodes, 6 with a little noise on top.
        assert!((5..=6).contains(&plan.recommended), "{plan:?}");
        assert!(plan.reason.contains("node(s)"), "{}", plan.reason);
        for n in &plan.horizons {
            assert!(
                n.nodes_lo <= n.nodes && n.nodes <= n.nodes_hi.max(n.nodes),
                "{n:?}"
            );
            assert!((n.demand.mean - 400.0).abs() < 20.0, "{n:?}");
        }
        assert!(d.plan(0.0, 5).is_none());
        // A steady ramp of +5 per minute: the plan is ahead of the current demand.
        let mut d = PoolDemand::new(DemandParams::default()).expect("params");
        for t in 0..300 {
            d.observe(t * 60_000, 100.0 + 5.0 * t as f64)
                .expect("observe");
        }
        let plan = d.plan(100.0, 10).expect("plan");
        let now = nodes_for(100.0 + 5.0 * 299.0, 80.0, d.params());
        assert!(plan.recommended > now, "{} vs {now}", plan.recommended);
        let h60 = &plan.horizons[2];
        assert!(
            (h60.demand.mean - (1_595.0 + 300.0)).abs() < 30.0,
            "{h60:?}"
        );
    }

    #[test]
    fn recommendation_has_hysteresis() {
        let mut r = Recommender::new(RecommenderParams {
            up_after: 2,
            down_after: 3,
        })
        .expect("params");
        // Matches the pool: nothing to say.
        assert_eq!(r.observe(&plan(5, 5, 5)), None);
        assert_eq!(r.advised(), Some(5));
        // One plan above is a blip; two in a row is a rise.
        assert_eq!(r.observe(&plan(6, 7, 5)), None);
        assert_eq!(r.observe(&plan(5, 6, 5)), None);
        assert_eq!(r.observe(&plan(7, 7, 5)), None);
        let up = r.observe(&plan(7, 8, 5)).expect("rise");
        assert_eq!((up.from, up.to, up.direction), (5, 7, Direction::Up));
        assert_eq!(up.reason, "needs 7");
        // Flapping around 7 says nothing.
        for (a, b) in [(7, 7), (6, 7), (7, 8), (6, 7), (7, 7)] {
            assert_eq!(r.observe(&plan(a, b, 5)), None);
        }
        // A fall needs the margin too, for 3 plans in a row, and goes to the largest.
        assert_eq!(r.observe(&plan(4, 5, 5)), None);
        assert_eq!(r.observe(&plan(3, 4, 5)), None);
        assert_eq!(r.observe(&plan(4, 7, 5)), None); // margin not met: streak broken
        assert_eq!(r.observe(&plan(4, 5, 5)), None);
        assert_eq!(r.observe(&plan(3, 4, 5)), None);
        let down = r.observe(&plan(3, 4, 5)).expect("fall");
        assert_eq!(
            (down.from, down.to, down.direction),
            (7, 5, Direction::Down)
        );
        // Someone scaled the pool to 9: measured against 9 from now on.
        assert_eq!(r.observe(&plan(9, 9, 9)), None);
        assert_eq!(r.advised(), Some(9));
    }
}
