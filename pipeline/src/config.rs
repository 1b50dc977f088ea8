//! [`PipelineConfig`]: every setting of the prediction pipeline in one struct with one set
//! of defaults, used by the balancer, the simulator and the live benchmark alike. Each
//! default that the balancer and the benchmark once set differently was settled by a
//! simulator run (ARCHITECTURE.md, "Decisions", has the figures).
use plb_predict::NodeParams;

use crate::PipelineError;

/// How the pool's capacity models are trained (times in ms, like every time here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingConfig {
    /// Refit interval.
    pub refit_every_ms: i64,
    /// Feedback rows older than this are dropped.
    pub keep_ms: i64,
    /// Most feedback rows kept (the oldest go first).
    pub max_rows: usize,
    /// A fit not renewed for this long (too little feedback since) is dropped: a stale
    /// low capacity would keep a recovered node shed.
    pub ttl_ms: i64,
    /// Fewest rows to fit.
    pub min_rows: usize,
    /// Probe metrics used as capacity features (the first seen, at most this many;
    /// 0 = load only).
    pub max_features: usize,
    /// Scored fits over which the probe-feature model must beat the load-only one
    /// before routing uses it.
    pub features_judged_over: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            refit_every_ms: 2_000,
            keep_ms: 20_000,
            max_rows: 20_000,
            ttl_ms: 10_000,
            min_rows: 60,
            max_features: 4,
            features_judged_over: 3,
        }
    }
}

/// How predictions become routing views.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewConfig {
    /// `false`: views carry what a reactive balancer's active health checks give
    /// (`unhealthy` and `unknown` from the probes, nothing predicted): the benchmark's
    /// baselines.
    pub predictive: bool,
    /// Whether a `degrading` state reaches the view (where routing holds its degrade
    /// score at 0.5 or more until the state's exit hysteresis clears) or only through
    /// the degrade score (which falls as soon as the forecast comes back).
    pub degrading_state: bool,
    /// Capacity estimates below this many requests in flight are not used (a fit
    /// extrapolating past its data; any node that answers takes one request).
    pub capacity_floor: f64,
    /// A node's capacity is the pool's typical (median) estimate times its own
    /// estimate's ratio to it divided by this dead band, capped at 1: with 1, estimates
    /// are capped at the median; with 0.5, a node must look at most half as capable as
    /// the typical one before it loses traffic (noise is not a reason to shed). An
    /// estimate above the typical one is never used: an overestimate would pile traffic
    /// onto a node that cannot take it.
    pub capacity_deadband: f64,
    /// A node returning to service ramps up (slow start) only once some other node
    /// has been in service this long, ms.
    pub established_after_ms: i64,
    /// Each node's capacity estimate is shrunk toward the pool's typical one (in log
    /// space) with weight `rows / (rows + capacity_shrink_rows)`, `rows` the feedback
    /// its own fit used: a node with little feedback gets about the pool's capacity,
    /// so identical nodes agree; one with much evidence keeps its own.
    pub capacity_shrink_rows: f64,
    /// Judge nodes against their peers ([`crate::peers`]) where at least this many
    /// nodes report a series; 0 turns peer judgement off.
    pub peer_min_nodes: usize,
    /// Robust z-score over the pool at which a series' own score starts to count.
    pub peer_z_start: f64,
    /// Robust z-score from which it counts in full.
    pub peer_z_full: f64,
    /// The pool spread of a series is at least this fraction of its median level.
    pub peer_rel_floor: f64,
    /// A node the state machine calls `degrading` is routed as `healthy` while its
    /// peer-judged score is below this (its peers moved with it).
    pub peer_degrading_min: f64,
    /// How fast a node's routed degrade score may fall, per second: a score rises at
    /// once and is released at most this fast (an envelope), so a shed node that looks
    /// well again gets its share back over seconds, not in one rebuild; 0 turns the
    /// envelope off.
    pub score_release_per_s: f64,
    /// The faster release of a node whose own fresh feedback latency (its outlook's
    /// level) is back within `release_fast_within` times the pool's median level: it
    /// has shown, with the requests it still gets, that it serves as fast as its
    /// peers, so the envelope need not hold it out for seconds more (a node that
    /// speeds up again after a slow spell). Per second; no slower than
    /// `score_release_per_s`. Shipped equal to it (off): the thirteenth session's full
    /// run at 1.0 did not bear out its A/B (`bench/RESULTS.md`).
    pub score_release_fast_per_s: f64,
    /// How close to the pool's median level a node's fresh level must be for the fast
    /// release (1.3: within 30 %).
    pub release_fast_within: f64,
    /// Most of the pool shed at once: the routed degrade scores of the nodes in service
    /// sum to at most this fraction of the nodes less those out of service (at least
    /// one node's worth), the highest kept first ([`crate::budget`]); 1 = no limit.
    pub shed_budget: f64,
    /// A node serving more than its share of the pool's requests is not judged
    /// degrading for the rise that load explains: its degrade score is scaled by
    /// `1 - smoothstep(share, load_share_start, load_share_full)`, `share` its recent
    /// requests answered per second per unit of operator weight against the median of
    /// the nodes in service. Routing sends a node that is fast now more than its
    /// share, and its queue, health latency and feedback latency rise with that load;
    /// shedding it for that hands its traffic to slower peers and the pool swings. A
    /// node that really slows gets less than its share (its latency costs it in
    /// routing) and is judged in full. Infinite start: off. Shipped 1.0 to 1.3: a node
    /// serving 1.15 times the median keeps half its score, one at 1.3 times none
    /// (`bench/RESULTS.md`).
    pub load_share_start: f64,
    /// Where the discount is full (score 0).
    pub load_share_full: f64,
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            predictive: true,
            degrading_state: true,
            capacity_floor: 1.0,
            capacity_deadband: 0.5,
            established_after_ms: 10_000,
            capacity_shrink_rows: 100.0,
            peer_min_nodes: 3,
            peer_z_start: 1.0,
            peer_z_full: 3.0,
            peer_rel_floor: 0.05,
            peer_degrading_min: 0.5,
            score_release_per_s: 0.2,
            score_release_fast_per_s: 0.2,
            release_fast_within: 1.3,
            shed_budget: 0.25,
            load_share_start: 1.0,
            load_share_full: 1.3,
        }
    }
}

/// Everything that tunes one pool's pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Node models: profiles, forecasts, states.
    pub node: NodeParams,
    /// Capacity training.
    pub training: TrainingConfig,
    /// Views.
    pub views: ViewConfig,
    /// How far each probe metric is trusted ([`crate::trust`]).
    pub trust: crate::TrustConfig,
    /// Each node's latency outlook from feedback ([`crate::outlook`]).
    pub outlook: crate::OutlookConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            node: live_node_params(),
            training: TrainingConfig::default(),
            views: ViewConfig::default(),
            trust: crate::TrustConfig::default(),
            outlook: crate::OutlookConfig::default(),
        }
    }
}

/// The node-model parameters for live probes. Against the library defaults (tuned on
/// 5-minute CloudWatch series): a wider relative floor on each profile's scale, since
/// sub-millisecond probe latencies on a busy host wiggle by tens of percent without
/// meaning anything, and more consecutive assessments to enter and leave `degrading`,
/// since a node is assessed on every sample of every probe (several a second) and the
/// worst of many metrics is a multiple comparison. Without these, `plb dev` flipped
/// healthy nodes to `degrading` and back every few seconds.
pub fn live_node_params() -> NodeParams {
    let mut p = NodeParams::default();
    p.profile.min_rel_scale = 0.03;
    p.state.enter_after = 6;
    p.state.leave_after = 10;
    p
}

impl PipelineConfig {
    /// What a reactive balancer gets from active health checks, from the same probes:
    /// `unhealthy` after 2 runs failing against the node, healthy again after 2 good
    /// ones (Envoy's thresholds), and nothing predicted.
    pub fn reactive() -> Self {
        let mut c = PipelineConfig::default();
        c.node.state.unhealthy_after = 2;
        c.node.state.recover_after = 2;
        c.views.predictive = false;
        c.training.max_features = 0;
        c.outlook.enabled = false;
        c
    }

    /// Checks the settings (the node parameters are checked when models are built).
    pub fn validate(&self) -> Result<(), PipelineError> {
        let t = &self.training;
        let bad = |name, message: String| Err(PipelineError::Invalid { name, message });
        if t.refit_every_ms <= 0 || t.keep_ms <= 0 || t.ttl_ms <= 0 {
            return bad("training", "intervals must be positive".into());
        }
        if t.max_rows < t.min_rows || t.min_rows == 0 {
            return bad(
                "min_rows",
                format!("must be 1..=max_rows ({}), got {}", t.max_rows, t.min_rows),
            );
        }
        let v = &self.views;
        if !(v.capacity_deadband > 0.0 && v.capacity_deadband <= 1.0) {
            return bad(
                "capacity_deadband",
                format!("must be in (0, 1], got {}", v.capacity_deadband),
            );
        }
        // Settings that are any finite amount from 0 up.
        for (name, x) in [
            ("capacity_floor", v.capacity_floor),
            ("score_release_per_s", v.score_release_per_s),
            ("score_release_fast_per_s", v.score_release_fast_per_s),
            ("release_fast_within", v.release_fast_within),
            ("peer_rel_floor", v.peer_rel_floor),
        ] {
            if !(x >= 0.0 && x.is_finite()) {
                return bad(name, format!("must be >= 0, got {x}"));
            }
        }
        if v.load_share_start.is_nan()
            || v.load_share_start < 0.0
            || (v.load_share_start.is_finite()
                && !(v.load_share_full.is_finite() && v.load_share_full > v.load_share_start))
        {
            return bad(
                "load_share_full",
                format!(
                    "load_share_start must be >= 0 (infinite: off) and load_share_full finite \
                     and above it, got {} and {}",
                    v.load_share_start, v.load_share_full
                ),
            );
        }
        if !(v.peer_z_start.is_finite() && v.peer_z_full > v.peer_z_start) {
            return bad(
                "peer_z_full",
                format!(
                    "must be finite and above peer_z_start ({}), got {}",
                    v.peer_z_start, v.peer_z_full
                ),
            );
        }
        let o = &self.outlook;
        if !((0.0..=1.0).contains(&o.alpha) && (0.0..=1.0).contains(&o.beta)) {
            return bad(
                "outlook",
                format!(
                    "alpha and beta must be in 0..=1, got {} and {}",
                    o.alpha, o.beta
                ),
            );
        }
        if !(o.start.is_finite() && o.full > o.start && o.horizon_ms >= 0) {
            return bad(
                "outlook",
                format!(
                    "full ({}) must be above start ({}) and the horizon ({} ms) >= 0",
                    o.full, o.start, o.horizon_ms
                ),
            );
        }
        let rel_off = o.rel_start == f64::INFINITY;
        if !(rel_off || (o.rel_start.is_finite() && o.rel_full > o.rel_start))
            || !(o.rel_z_start.is_finite() && o.rel_z_full > o.rel_z_start)
        {
            return bad(
                "outlook",
                format!(
                    "rel_full ({}) must be above rel_start ({}) and rel_z_full ({}) above rel_z_start ({})",
                    o.rel_full, o.rel_start, o.rel_z_full, o.rel_z_start
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_relative_outlook_is_validated_and_can_be_turned_off() {
        let ok = PipelineConfig::default();
        assert!(ok.validate().is_ok());
        let mut off = PipelineConfig::default();
        off.outlook.rel_start = f64::INFINITY;
        assert!(off.validate().is_ok());
        let mut inverted = PipelineConfig::default();
        inverted.outlook.rel_full = inverted.outlook.rel_start / 2.0;
        let err = inverted.validate().expect_err("rel_full below rel_start");
        assert!(err.to_string().contains("rel_full"), "{err}");
        let mut nan = PipelineConfig::default();
        nan.outlook.rel_z_start = f64::NAN;
        assert!(nan.validate().is_err());
    }

    #[test]
    fn the_fast_release_is_validated() {
        let mut negative = PipelineConfig::default();
        negative.views.score_release_fast_per_s = -1.0;
        let err = negative.validate().expect_err("negative rate");
        assert!(
            err.to_string().contains("score_release_fast_per_s"),
            "{err}"
        );
        let mut nan = PipelineConfig::default();
        nan.views.release_fast_within = f64::NAN;
        let err = nan.validate().expect_err("NaN margin");
        assert!(err.to_string().contains("release_fast_within"), "{err}");
    }

    #[test]
    fn the_load_share_discount_is_validated_and_can_be_turned_off() {
        let mut off = PipelineConfig::default();
        off.views.load_share_start = f64::INFINITY;
        assert!(off.validate().is_ok());
        let mut inverted = PipelineConfig::default();
        inverted.views.load_share_full = inverted.views.load_share_start;
        let err = inverted.validate().expect_err("full not above start");
        assert!(err.to_string().contains("load_share_full"), "{err}");
        let mut nan = PipelineConfig::default();
        nan.views.load_share_start = f64::NAN;
        assert!(nan.validate().is_err());
        let mut negative = PipelineConfig::default();
        negative.views.load_share_start = -1.0;
        assert!(negative.validate().is_err());
    }
}
