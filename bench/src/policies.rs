//! The balancer side of a run: the contenders (each routing policy, plus the oracle in
//! the simulator), the per-policy [`Control`] that turns probe samples and feedback
//! into the node views snapshots are built from, and the [`Sidecar`]s: independent
//! balancer instances, each with its own policy instance, live state and snapshot.
//!
//! One `Control` per contender plays the central balancer: agents' probe samples reach
//! it after the report delay, every sidecar's feedback reaches it, and it publishes
//! node views on an interval. Each sidecar rebuilds its own snapshot from the latest
//! views at its own (staggered) interval, so sidecars route on slightly stale,
//! unsynchronised predictions and share no routing state, as sidecars would.
//!
//! Every contender's views come from the pipeline the balancer ships
//! ([`plb_pipeline::PoolPredictor`]): baselines with what a reactive balancer gets from
//! active health checks (a node is `unhealthy` after 2 failed `/health` probes in a row
//! and healthy again after 2 passing ones, Envoy-style), `plb` with every prediction.
use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use plb_routing::{
    AnyPolicy, LiveSet, NodeLive, NodeView, Policy, PolicyConfig, PolicyKind, RouteRequest,
    Shaping, Snapshot,
};
use rand::Rng;
use serde::Serialize;

use plb_api::Outcome;
use plb_pipeline::{Feedback, PipelineConfig, PoolPredictor};
use plb_predict::Observation;

use crate::BenchError;
use crate::anchors::Anchor;

/// Who routes a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// A routing policy of `plb-routing`.
    Policy(PolicyKind),
    /// Sees every node's true queue and speed (simulator only): the upper bound.
    Oracle,
    /// A real balancer in its own process (live only): HAProxy, nginx, PLB's proxy.
    Anchor(Anchor),
}

impl Contender {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Policy(k) => k.as_str(),
            Contender::Oracle => "oracle",
            Contender::Anchor(a) => a.name(),
        }
    }

    /// Whether it is a baseline (a policy other than `plb`).
    pub fn is_baseline(self) -> bool {
        match self {
            Contender::Policy(k) => k != PolicyKind::Plb,
            Contender::Oracle => false,
            Contender::Anchor(a) => a.is_baseline(),
        }
    }
}

/// How the balancers, their probes and their sidecars behave, live and simulated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HarnessConfig {
    /// Independent balancer instances (sidecars) per contender.
    pub sidecars: usize,
    /// Time between two probes of a node, seconds.
    pub probe_interval: f64,
    /// A probe not answered by then fails, seconds.
    pub probe_timeout: f64,
    /// Time from a probe's end until its sample reaches the balancer, seconds.
    pub report_delay: f64,
    /// Time between two published sets of node views (and between a sidecar's
    /// snapshot rebuilds), seconds.
    pub publish_interval: f64,
    /// Simulator only: network and HTTP overhead added to every request and probe,
    /// seconds (what loopback HTTP and timer rounding add live).
    pub network: f64,
    /// Whether the probe also reports the node's queue (`/status` busy + queued) as a
    /// metric, as a user's probe reading a status page would.
    pub queue_metric: bool,
    /// `plb`'s pipeline settings: the shipped defaults unless overridden.
    pub pipeline: PipelineVariant,
}

impl Default for HarnessConfig {
    fn default() -> Self {
        HarnessConfig {
            sidecars: 4,
            probe_interval: 1.0,
            probe_timeout: 0.5,
            report_delay: 0.5,
            publish_interval: 0.25,
            network: 0.0008,
            queue_metric: false,
            pipeline: PipelineVariant::default(),
        }
    }
}

/// One probe-like measurement of a node: `/health` timed, `/status` read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSample {
    /// The node.
    pub node: usize,
    /// When the probe started, seconds into the run.
    pub taken_at: f64,
    /// `/health` answered 200 within the probe timeout.
    pub ok: bool,
    /// `/health` latency, seconds (the timeout when it did not answer).
    pub health_latency: f64,
    /// Requests waiting in the node's queue.
    pub queued: Option<f64>,
    /// Requests being served.
    pub busy: Option<f64>,
    /// The node's worker count.
    pub workers: Option<f64>,
    /// The node's recent mean service time (EWMA), seconds.
    pub service: Option<f64>,
}

/// Declares [`PipelineVariant`] from one line per knob: its field (named as on the
/// command line), its type, and the setting of [`PipelineConfig`] or
/// [`PolicyConfig`] it overrides, so that a knob's parsing and its application are
/// written once.
macro_rules! pipeline_variant {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty => $kind:ident $($path:ident).+, )*) => {
        /// Overrides of the shipped pipeline settings for one run (`--pipeline k=v,...`):
        /// how the settings the balancer ships with were settled in the simulator.
        /// Empty: the defaults, exactly as the balancer runs.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
        pub struct PipelineVariant {
            $( $(#[$doc])* pub $name: Option<$ty>, )*
        }

        impl PipelineVariant {
            /// Parses `k=v,k=v` (keys as the field names).
            pub fn parse(text: &str) -> Result<Self, BenchError> {
                let mut v = PipelineVariant::default();
                for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (k, val) = part.split_once('=').ok_or_else(|| {
                        BenchError::Args(format!("--pipeline: `{part}` is not k=v"))
                    })?;
                    let bad = |e: &dyn std::fmt::Display| {
                        BenchError::Args(format!("--pipeline {k}: {e}"))
                    };
                    match k {
                        $( stringify!($name) => {
                            v.$name = Some(val.parse().map_err(|e| bad(&e))?)
                        } )*
                        _ => {
                            return Err(BenchError::Args(format!(
                                "--pipeline: unknown setting `{k}`"
                            )));
                        }
                    }
                }
                Ok(v)
            }

            /// The shipped settings with these overrides.
            pub fn config(&self) -> PipelineConfig {
                let mut c = PipelineConfig::default();
                $( pipeline_variant!(@set pipeline $kind c self.$name, $($path).+); )*
                c
            }

            /// The shipped routing settings with these overrides.
            pub fn policy_config(&self) -> PolicyConfig {
                let mut c = PolicyConfig::default();
                $( pipeline_variant!(@set policy $kind c self.$name, $($path).+); )*
                c
            }
        }
    };
    (@set pipeline pipeline $c:ident $v:expr, $($path:ident).+) => {
        if let Some(x) = $v {
            $c.$($path).+ = x;
        }
    };
    (@set policy policy $c:ident $v:expr, $($path:ident).+) => {
        if let Some(x) = $v {
            $c.$($path).+ = x;
        }
    };
    (@set $want:ident $kind:ident $($rest:tt)*) => {};
}

pipeline_variant! {
    /// `degrading_state`: whether `degrading` reaches the view.
    degrading_state: bool => pipeline views.degrading_state,
    /// `capacity_deadband`.
    capacity_deadband: f64 => pipeline views.capacity_deadband,
    /// `refit_ms`, `keep_ms`, `ttl_ms`: capacity training schedule.
    refit_ms: i64 => pipeline training.refit_every_ms,
    /// See `refit_ms`.
    keep_ms: i64 => pipeline training.keep_ms,
    /// See `refit_ms`.
    ttl_ms: i64 => pipeline training.ttl_ms,
    /// `enter_after`, `leave_after`: `degrading` hysteresis.
    enter_after: u32 => pipeline node.state.enter_after,
    /// See `enter_after`.
    leave_after: u32 => pipeline node.state.leave_after,
    /// `recover_after`: passing assessments to leave `unhealthy`.
    recover_after: u32 => pipeline node.state.recover_after,
    /// `min_rel_scale`: profile scale floor relative to the median.
    min_rel_scale: f64 => pipeline node.profile.min_rel_scale,
    /// `warmup`: samples before a profile's band counts.
    warmup: u32 => pipeline node.profile.warmup,
    /// `max_features`: probe metrics offered to the capacity model (0 = load only).
    max_features: usize => pipeline training.max_features,
    /// `full_scan_max`: `plb` scans every node in pools up to this size.
    full_scan_max: usize => policy full_scan_max,
    /// `scan_latency_exp`: latency's exponent in the full-scan cost.
    scan_latency_exp: f64 => policy scan_latency_exp,
    /// `scan_latency_floor`: the latency quantile below which latencies count as it.
    scan_latency_floor: f64 => policy scan_latency_floor,
    /// `scan_weight_floor`: the least weight fraction a shed node is costed at.
    scan_weight_floor: f64 => policy scan_weight_floor,
    /// `scan_busy_release`: unshed nodes' least in-flight at which shedding stops counting.
    scan_busy_release: f64 => policy scan_busy_release,
    /// `scan_busy_release_within`: the latency (x the median) under which it applies.
    scan_busy_release_within: f64 => policy scan_busy_release_within,
    /// `slow_start_cost_exp`: how far a node in slow start's weight counts its share.
    slow_start_cost_exp: f64 => policy slow_start_cost_exp,
    /// `slow_start_warm_after`: seconds back before a warm node in slow start takes
    /// part in every scan (`inf`: never).
    slow_start_warm_after: f64 => policy slow_start_warm_after,
    /// `slow_start_latency_exp`: latency's exponent for a node in slow start.
    slow_start_latency_exp: f64 => policy slow_start_latency_exp,
    /// `scan_mean_gate`: a mean latency above this multiple of the median mean of the
    /// nodes out of slow start costs that multiple of the latency floor (`inf` = off).
    scan_mean_gate: f64 => policy scan_mean_gate,
    /// `scan_peak_cap`: out of slow start, peak-EWMA counts at most this multiple of
    /// the node's mean latency (`inf` = off).
    scan_peak_cap: f64 => policy scan_peak_cap,
    /// `scan_mean_fade`: seconds over which an idle node's mean latency fades toward
    /// zero for the gate and the cap (`inf` = never).
    scan_mean_fade: f64 => policy scan_mean_fade,
    /// `scan_give_ups`: a node its clients gave up on rests out of the scans and its
    /// peak is not capped until it answers (false = costed like a slow node).
    scan_give_ups: bool => policy scan_give_ups,
    /// `slow_start_scouts`: requests in flight to a node in slow start before its
    /// first answer (0 = no limit).
    slow_start_scouts: u64 => policy slow_start_scouts,
    /// `peer_min_nodes`: nodes needed for peer judgement (0 = off).
    peer_min_nodes: usize => pipeline views.peer_min_nodes,
    /// `trust`: whether probe metrics earn trust (false = trusted in full).
    trust: bool => pipeline trust.enabled,
    /// `trust_prior`: trust before evidence.
    trust_prior: f64 => pipeline trust.prior,
    /// `trust_z`: standard errors below the measured correlation that trust counts.
    trust_z: f64 => pipeline trust.confidence_z,
    /// `capacity_shrink_rows`: shrinkage of capacity estimates toward the pool's.
    capacity_shrink_rows: f64 => pipeline views.capacity_shrink_rows,
    /// `peer_rel_floor`: the pool spread's floor relative to the median.
    peer_rel_floor: f64 => pipeline views.peer_rel_floor,
    /// `release`: how fast a routed degrade score may fall, per second (0 = off).
    release: f64 => pipeline views.score_release_per_s,
    /// `release_fast`: the release of a node whose feedback latency is back with its
    /// peers', per second.
    release_fast: f64 => pipeline views.score_release_fast_per_s,
    /// `release_fast_within`: how close to the pool's median level that is.
    release_fast_within: f64 => pipeline views.release_fast_within,
    /// `shed_budget`: most of the pool shed at once (1 = no limit).
    shed_budget: f64 => pipeline views.shed_budget,
    /// `load_share_start`: a node's share of requests, against the median node's,
    /// where the discount of its degrade score starts (inf = off).
    load_share_start: f64 => pipeline views.load_share_start,
    /// `load_share_full`: where the discount is full.
    load_share_full: f64 => pipeline views.load_share_full,
    /// `outlook`: whether feedback latency's outlook sheds nodes (false = off).
    outlook: bool => pipeline outlook.enabled,
    /// `outlook_start`: outlook, as a fraction of the SLO, where shedding starts.
    outlook_start: f64 => pipeline outlook.start,
    /// `outlook_full`: outlook, as a fraction of the SLO, where shedding is full.
    outlook_full: f64 => pipeline outlook.full,
    /// `outlook_horizon_ms`: how far ahead the outlook looks.
    outlook_horizon_ms: i64 => pipeline outlook.horizon_ms,
    /// `outlook_restart`: whether a stale outlook starts over at its next update.
    outlook_restart: bool => pipeline outlook.restart_stale,
    /// `outlook_rel_start`: where the peer-relative outlook score starts.
    outlook_rel_start: f64 => pipeline outlook.rel_start,
    /// `outlook_rel_full`: where the peer-relative outlook score is full.
    outlook_rel_full: f64 => pipeline outlook.rel_full,
    /// `outlook_rel_z_start`: peer z-score where the relative score starts.
    outlook_rel_z_start: f64 => pipeline outlook.rel_z_start,
    /// `outlook_rel_z_full`: peer z-score where the relative score is full.
    outlook_rel_z_full: f64 => pipeline outlook.rel_z_full,
}

/// The probe the harness reports its samples under.
pub const PROBE: &str = "node-status";
/// The `/health` latency metric (higher is worse).
const HEALTH: &str = "health-latency-ms";
/// The requests in the node (`/status` busy + queued), reported when the harness'
/// probe reads the status page as a user's probe would.
const QUEUE: &str = "queue";

/// The central balancer of one contender: membership and the prediction pipeline the
/// balancer ships ([`PoolPredictor`]); `plb` gets it whole, the baselines get what
/// reactive active health checks give from the same probes
/// ([`PipelineConfig::reactive`]). Publishes the node views sidecars build snapshots
/// from.
#[derive(Debug)]
pub struct Control {
    kind: PolicyKind,
    pipeline: PoolPredictor,
    names: Vec<String>,
    members: Vec<bool>,
    queue_metric: bool,
    last_tick_ms: Option<i64>,
    rejected: u64,
}

/// The balancer engine's tick: staleness, demand, capacity fits.
const TICK_MS: i64 = 1_000;
/// Forecaster refits per tick, as the engine's default.
const REFITS_PER_TICK: usize = 8;

fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

impl Control {
    /// A control for `kind` over nodes with these ids and addresses, none a member yet,
    /// in a pool whose SLO is `slo` seconds, with the harness' pipeline settings.
    pub fn new(
        kind: PolicyKind,
        nodes: &[(String, String)],
        slo: f64,
        harness: &HarnessConfig,
    ) -> Result<Self, BenchError> {
        let config = if kind == PolicyKind::Plb {
            harness.pipeline.config()
        } else {
            PipelineConfig::reactive()
        };
        let mut pipeline = PoolPredictor::new(config, slo * 1000.0)
            .map_err(|e| BenchError::Predict(e.to_string()))?;
        pipeline.sync(nodes.iter().map(|(id, addr)| (id.as_str(), addr.as_str())));
        for (id, _) in nodes {
            pipeline.set_weight(id, 0.0);
        }
        Ok(Control {
            kind,
            pipeline,
            names: nodes.iter().map(|(id, _)| id.clone()).collect(),
            members: vec![false; nodes.len()],
            queue_metric: harness.queue_metric,
            last_tick_ms: None,
            rejected: 0,
        })
    }

    /// The prediction pipeline.
    pub fn pipeline(&self) -> &PoolPredictor {
        &self.pipeline
    }

    /// Inputs the models refused (out of order, out of range); should stay 0.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The policy it serves.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Node `node` is (or is no longer) in the pool at `now` (service discovery). A
    /// node that joins starts over with fresh models (it is a new process).
    pub fn set_member(&mut self, node: usize, member: bool, _now: f64) {
        let (Some(m), Some(name)) = (self.members.get_mut(node), self.names.get(node)) else {
            return;
        };
        if *m != member {
            *m = member;
            if member {
                self.pipeline.reset(name);
            }
            self.pipeline
                .set_weight(name, if member { 1.0 } else { 0.0 });
        }
    }

    /// A probe sample reached the balancer.
    pub fn on_sample(&mut self, s: &ProbeSample) {
        let Some(name) = self.names.get(s.node) else {
            return;
        };
        let mut metrics = BTreeMap::new();
        let outcome = if s.ok {
            metrics.insert(HEALTH.to_owned(), s.health_latency * 1000.0);
            if self.queue_metric
                && let (Some(busy), Some(queued)) = (s.busy, s.queued)
            {
                metrics.insert(QUEUE.to_owned(), busy + queued);
            }
            Outcome::Ok
        } else {
            Outcome::Timeout
        };
        let obs = Observation {
            t_ms: ms(s.taken_at),
            probe: PROBE,
            outcome,
            duration_ms: Some(s.health_latency * 1000.0),
            metrics: &metrics,
        };
        if self.pipeline.observe(name, &obs).is_err() {
            self.rejected += 1;
        }
    }

    /// A sidecar's feedback on one request reached the balancer: its node, latency,
    /// outcome, and the node's requests in flight at dispatch as the sidecar estimated
    /// them.
    pub fn on_feedback(&mut self, node: usize, latency: f64, ok: bool, now: f64, load: f64) {
        if let Some(name) = self.names.get(node) {
            self.pipeline.observe_feedback(Feedback {
                node: name,
                at_ms: ms(now),
                load,
                latency_ms: latency * 1000.0,
                ok,
            });
        }
    }

    /// The node views at `now`, ticking the pipeline once a second as the balancer's
    /// engine does (staleness; `in_flight`, the node's requests in flight over every
    /// sidecar, as its demand; capacity fits, run inline).
    pub fn views(&mut self, now: f64, in_flight: &dyn Fn(usize) -> f64) -> Vec<NodeView> {
        let now_ms = ms(now);
        if self.last_tick_ms.is_none_or(|t| now_ms - t >= TICK_MS) {
            self.last_tick_ms = Some(now_ms);
            let names = &self.names;
            let by_name = |n: &str| names.iter().position(|x| x == n).map(in_flight);
            self.pipeline.tick(now_ms, &by_name);
            if let Some(job) = self.pipeline.due_fit(now_ms) {
                self.pipeline.install_fit(job.run());
            }
            for r in self.pipeline.due_refits(REFITS_PER_TICK) {
                self.pipeline.install_refit(&r.node, &r.key, r.job.run());
            }
        }
        self.pipeline.views(now_ms)
    }
}

/// One balancer instance: its own policy, live state and snapshot.
#[derive(Debug)]
pub struct Sidecar {
    policy: AnyPolicy,
    live: LiveSet,
    lives: Vec<Arc<NodeLive>>,
    snap: ArcSwap<Snapshot>,
}

impl Sidecar {
    /// A sidecar running `kind` over `views` (its first snapshot, built at `now`) with
    /// the shipped routing settings.
    pub fn new(kind: PolicyKind, views: Vec<NodeView>, now: f64) -> Result<Self, BenchError> {
        Self::with_config(kind, views, now, PolicyConfig::default())
    }

    /// [`Sidecar::new`] with the harness' routing settings (`--pipeline` overrides).
    pub fn for_harness(
        kind: PolicyKind,
        views: Vec<NodeView>,
        now: f64,
        harness: &HarnessConfig,
    ) -> Result<Self, BenchError> {
        Self::with_config(kind, views, now, harness.pipeline.policy_config())
    }

    fn with_config(
        kind: PolicyKind,
        views: Vec<NodeView>,
        now: f64,
        config: PolicyConfig,
    ) -> Result<Self, BenchError> {
        let live = LiveSet::default();
        let lives = views.iter().map(|v| live.get_or_insert(&v.id)).collect();
        let snap = Snapshot::new(views, &live, Shaping::default(), now)?;
        Ok(Sidecar {
            policy: AnyPolicy::new(kind, config),
            live,
            lives,
            snap: ArcSwap::from_pointee(snap),
        })
    }

    /// Rebuilds the snapshot from `views` at `now` (same nodes, same order).
    pub fn rebuild(&self, views: Vec<NodeView>, now: f64) -> Result<(), BenchError> {
        let snap = Snapshot::new(views, &self.live, Shaping::default(), now)?;
        self.snap.store(Arc::new(snap));
        Ok(())
    }

    /// The node the policy picks for a typical request at `now`.
    pub fn pick<R: Rng + ?Sized>(&self, now: f64, rng: &mut R) -> Option<usize> {
        let snap = self.snap.load();
        self.policy
            .pick(&snap, &RouteRequest::default(), now, rng)
            .map(|d| d.index)
    }

    /// The node's requests in flight at dispatch as this sidecar estimates them: its
    /// own count times the number of `sidecars` (each sees its share of the traffic).
    pub fn load_estimate(&self, node: usize, sidecars: usize) -> f64 {
        self.lives
            .get(node)
            .map_or(0.0, |l| (l.in_flight() * sidecars as u64) as f64)
    }

    /// Node `node`'s live state in this sidecar.
    pub fn live(&self, node: usize) -> Option<&Arc<NodeLive>> {
        self.lives.get(node)
    }
}

#[cfg(test)]
mod tests {
    use plb_api::NodeState;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn a_pipeline_variant_sets_the_knobs_it_names_and_nothing_else() {
        let empty = PipelineVariant::parse("").expect("empty");
        assert_eq!(empty.config(), PipelineConfig::default());
        assert_eq!(empty.policy_config(), PolicyConfig::default());
        let v = PipelineVariant::parse(
            "scan_mean_gate=2.5, trust=false,refit_ms=5000,slow_start_scouts=3,outlook_rel_z_full=7",
        )
        .expect("valid");
        let (c, p) = (v.config(), v.policy_config());
        assert_eq!(p.scan_mean_gate, 2.5);
        assert_eq!(p.slow_start_scouts, 3);
        assert!(!c.trust.enabled);
        assert_eq!(c.training.refit_every_ms, 5000);
        assert_eq!(c.outlook.rel_z_full, 7.0);
        let mut expected = PipelineConfig::default();
        expected.trust.enabled = false;
        expected.training.refit_every_ms = 5000;
        expected.outlook.rel_z_full = 7.0;
        assert_eq!(c, expected, "only the named pipeline settings move");
        let expected = PolicyConfig {
            scan_mean_gate: 2.5,
            slow_start_scouts: 3,
            ..PolicyConfig::default()
        };
        assert_eq!(p, expected, "only the named routing settings move");
        for (text, says) in [
            ("nonsense=1", "unknown setting `nonsense`"),
            ("trust=maybe", "--pipeline trust:"),
            ("slow_start_scouts=-1", "--pipeline slow_start_scouts:"),
            ("scan_mean_gate", "is not k=v"),
        ] {
            let err = PipelineVariant::parse(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    fn ids(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("n{i}"), format!("sim:{i}")))
            .collect()
    }

    fn sample(node: usize, ok: bool, taken_at: f64) -> ProbeSample {
        ProbeSample {
            node,
            taken_at,
            ok,
            health_latency: 0.01,
            queued: None,
            busy: None,
            workers: None,
            service: None,
        }
    }

    #[test]
    fn health_check_has_hysteresis() {
        let mut c = Control::new(
            PolicyKind::LeastRequest,
            &ids(3),
            0.2,
            &HarnessConfig::default(),
        )
        .expect("builds");
        for i in 0..3 {
            c.set_member(i, true, 0.0);
        }
        let idle = |_: usize| 0.0;
        c.on_sample(&sample(1, false, 0.5));
        assert_eq!(
            c.views(1.0, &idle)[1].state,
            NodeState::Healthy,
            "one failure"
        );
        c.on_sample(&sample(1, false, 1.5));
        assert_eq!(c.views(2.0, &idle)[1].state, NodeState::Unhealthy);
        c.on_sample(&sample(1, true, 2.5));
        assert_eq!(
            c.views(3.0, &idle)[1].state,
            NodeState::Unhealthy,
            "one pass"
        );
        c.on_sample(&sample(1, true, 3.5));
        assert_eq!(c.views(4.0, &idle)[1].state, NodeState::Healthy);
        assert_eq!(c.rejected(), 0);
    }

    #[test]
    fn non_members_get_no_traffic() {
        let mut c = Control::new(
            PolicyKind::RoundRobin,
            &ids(4),
            0.2,
            &HarnessConfig::default(),
        )
        .expect("builds");
        for i in 1..4 {
            c.set_member(i, true, 0.0);
        }
        let side =
            Sidecar::new(PolicyKind::RoundRobin, c.views(0.0, &|_| 0.0), 0.0).expect("builds");
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_ne!(side.pick(0.0, &mut rng), Some(0));
        }
        c.set_member(0, true, 5.0);
        side.rebuild(c.views(5.0, &|_| 0.0), 5.0).expect("builds");
        let got = (0..100)
            .filter(|_| side.pick(5.0, &mut rng) == Some(0))
            .count();
        assert_eq!(got, 25);
    }
}
