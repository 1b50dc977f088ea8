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
//! Baselines get what a reactive balancer gets from active health checks: a node is
//! `unhealthy` after 2 failed `/health` probes in a row and healthy again after 2
//! passing ones (Envoy-style thresholds). `plb` gets its prediction pipeline
//! ([`crate::policies::Control::views`]).
use std::sync::Arc;

use arc_swap::ArcSwap;
use plb_api::NodeState;
use plb_routing::{
    AnyPolicy, LiveSet, NodeLive, NodeView, Policy, PolicyConfig, PolicyKind, RouteRequest,
    Shaping, Snapshot,
};
use rand::Rng;
use serde::Serialize;

use crate::BenchError;
use crate::predictions::{PipelineConfig, Predictions};

/// Who routes a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// A routing policy of `plb-routing`.
    Policy(PolicyKind),
    /// Sees every node's true queue and speed (simulator only): the upper bound.
    Oracle,
}

impl Contender {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Policy(k) => k.as_str(),
            Contender::Oracle => "oracle",
        }
    }

    /// Whether it is a baseline (a policy other than `plb`).
    pub fn is_baseline(self) -> bool {
        matches!(self, Contender::Policy(k) if k != PolicyKind::Plb)
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

/// Active health checking with hysteresis, as reactive balancers do.
#[derive(Debug, Clone, Copy)]
struct HealthCheck {
    fails: u32,
    passes: u32,
    healthy: bool,
}

impl HealthCheck {
    const UNHEALTHY_AFTER: u32 = 2;
    const HEALTHY_AFTER: u32 = 2;

    fn new() -> Self {
        HealthCheck {
            fails: 0,
            passes: 0,
            healthy: true,
        }
    }

    fn observe(&mut self, ok: bool) {
        if ok {
            self.passes += 1;
            self.fails = 0;
            if !self.healthy && self.passes >= Self::HEALTHY_AFTER {
                self.healthy = true;
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if self.healthy && self.fails >= Self::UNHEALTHY_AFTER {
                self.healthy = false;
            }
        }
    }
}

/// The central balancer of one contender: membership, health checks and (for `plb`)
/// the prediction models; publishes the node views sidecars build snapshots from.
#[derive(Debug)]
pub struct Control {
    kind: PolicyKind,
    predictions: Option<Predictions>,
    protos: Vec<NodeView>,
    /// `Some(ready_since)` for members.
    members: Vec<Option<f64>>,
    health: Vec<HealthCheck>,
}

impl Control {
    /// A control for `kind` over nodes with these ids and addresses, none a member yet,
    /// in a pool whose SLO is `slo` seconds.
    pub fn new(kind: PolicyKind, nodes: &[(String, String)], slo: f64) -> Result<Self, BenchError> {
        let predictions = if kind == PolicyKind::Plb {
            Some(Predictions::new(
                nodes.len(),
                slo,
                PipelineConfig::default(),
            )?)
        } else {
            None
        };
        Ok(Control {
            kind,
            predictions,
            protos: nodes
                .iter()
                .map(|(id, addr)| NodeView::new(id.clone(), addr.clone()))
                .collect(),
            members: vec![None; nodes.len()],
            health: vec![HealthCheck::new(); nodes.len()],
        })
    }

    /// The prediction pipeline (`plb` only).
    pub fn predictions(&self) -> Option<&Predictions> {
        self.predictions.as_ref()
    }

    /// The policy it serves.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Node `node` is (or is no longer) in the pool at `now` (service discovery). A node
    /// that joins counts as ready from `now` (slow start for `plb`) and as healthy.
    pub fn set_member(&mut self, node: usize, member: bool, now: f64) {
        let Some(m) = self.members.get_mut(node) else {
            return;
        };
        match (m.is_some(), member) {
            (false, true) => {
                *m = Some(now);
                self.health[node] = HealthCheck::new();
                if let Some(p) = &mut self.predictions {
                    p.reset(node);
                }
            }
            (true, false) => *m = None,
            _ => {}
        }
    }

    /// A probe sample reached the balancer.
    pub fn on_sample(&mut self, s: &ProbeSample) {
        if let Some(h) = self.health.get_mut(s.node) {
            h.observe(s.ok);
        }
        if let Some(p) = &mut self.predictions {
            p.on_sample(s);
        }
    }

    /// A sidecar's feedback on one request reached the balancer: its node, latency,
    /// outcome, and the node's requests in flight at dispatch as the sidecar estimated
    /// them.
    pub fn on_feedback(&mut self, node: usize, latency: f64, ok: bool, now: f64, load: f64) {
        if let Some(p) = &mut self.predictions {
            p.on_feedback(node, latency, ok, now, load);
        }
    }

    /// The node views at `now`: non-members drained (weight 0), health-check state,
    /// and for `plb` its predictions.
    pub fn views(&mut self, now: f64) -> Vec<NodeView> {
        if let Some(p) = &mut self.predictions {
            p.advance(now);
        }
        let mut out = Vec::with_capacity(self.protos.len());
        for (i, proto) in self.protos.iter().enumerate() {
            let mut v = proto.clone();
            match (self.members[i], &mut self.predictions) {
                (None, _) => v.weight = 0.0,
                (Some(since), Some(p)) => {
                    p.fill(i, &mut v, now);
                    if since > 0.0 {
                        v.ready_since = Some(since);
                    }
                }
                (Some(_), None) => {
                    if !self.health[i].healthy {
                        v.state = NodeState::Unhealthy;
                    }
                }
            }
            out.push(v);
        }
        out
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
    /// A sidecar running `kind` over `views` (its first snapshot, built at `now`).
    pub fn new(kind: PolicyKind, views: Vec<NodeView>, now: f64) -> Result<Self, BenchError> {
        let live = LiveSet::default();
        let lives = views.iter().map(|v| live.get_or_insert(&v.id)).collect();
        let snap = Snapshot::new(views, &live, Shaping::default(), now)?;
        Ok(Sidecar {
            policy: AnyPolicy::new(kind, PolicyConfig::default()),
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
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn ids(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("n{i}"), format!("sim:{i}")))
            .collect()
    }

    fn sample(node: usize, ok: bool) -> ProbeSample {
        ProbeSample {
            node,
            taken_at: 0.0,
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
        let mut c = Control::new(PolicyKind::LeastRequest, &ids(3), 0.2).expect("builds");
        for i in 0..3 {
            c.set_member(i, true, 0.0);
        }
        c.on_sample(&sample(1, false));
        assert_eq!(c.views(1.0)[1].state, NodeState::Healthy, "one failure");
        c.on_sample(&sample(1, false));
        assert_eq!(c.views(2.0)[1].state, NodeState::Unhealthy);
        c.on_sample(&sample(1, true));
        assert_eq!(c.views(3.0)[1].state, NodeState::Unhealthy, "one pass");
        c.on_sample(&sample(1, true));
        assert_eq!(c.views(4.0)[1].state, NodeState::Healthy);
    }

    #[test]
    fn non_members_get_no_traffic() {
        let mut c = Control::new(PolicyKind::RoundRobin, &ids(4), 0.2).expect("builds");
        for i in 1..4 {
            c.set_member(i, true, 0.0);
        }
        let side = Sidecar::new(PolicyKind::RoundRobin, c.views(0.0), 0.0).expect("builds");
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_ne!(side.pick(0.0, &mut rng), Some(0));
        }
        c.set_member(0, true, 5.0);
        side.rebuild(c.views(5.0), 5.0).expect("builds");
        let got = (0..100)
            .filter(|_| side.pick(5.0, &mut rng) == Some(0))
            .count();
        assert_eq!(got, 25);
    }
}
