//! [`PoolRouter`]: one pool's request path. Holds the pool's routing snapshot (swapped
//! whole by the engine task, read without locks), its live per-node state (in flight,
//! peak-EWMA latency, error rate), the selected policy, and the buffers through which
//! feedback reaches the engine task. Nothing here does I/O or waits on the engine.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use plb_api::NodeState;
use plb_routing::{
    AnyPolicy, Decision, Facts, NodeLive, Policy, PolicyConfig, PolicyKind, Reason, RouteRequest,
    Rule, SharedSnapshot, Snapshot,
};

use super::clock::{Clock, secs};
use super::models::PoolState;

/// Feedback rows waiting for the engine task, per pool; the oldest are dropped beyond.
const MAX_PENDING_ROWS: usize = 65_536;
/// HTTP-routed requests remembered per node for their feedback; the oldest are
/// released beyond (a caller that never sends feedback cannot grow this).
const MAX_OUTSTANDING_PER_NODE: usize = 16_384;
/// Tries of the policy before an excluded pick falls back to the least-loaded node.
const EXCLUDE_TRIES: usize = 4;

fn policy_index(kind: PolicyKind) -> usize {
    PolicyKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(PolicyKind::ALL.len() - 1)
}

/// Locks a mutex whose holders keep no invariant a panic could break half-way.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request to route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteQuery {
    /// Locality key: the same key goes to the same node while it has headroom.
    pub key: Option<String>,
    /// Request size in bytes, if known.
    pub size: Option<f64>,
    /// Relative cost (1 = a typical request), if known.
    pub cost: Option<f64>,
}

impl RouteQuery {
    fn request(&self) -> RouteRequest<'_> {
        RouteRequest {
            key: self.key.as_deref(),
            size: self.size.unwrap_or(0.0),
            cost: self.cost.unwrap_or(1.0),
        }
    }
}

/// One decision taken by [`PoolRouter::route`]: the request is counted in flight on the
/// node until [`PoolRouter::feedback`] reports it, or until this value is dropped
/// (a cancelled request gives its slot back, its wait a lower bound on the latency).
#[derive(Debug)]
pub struct Routed {
    /// The chosen node's id.
    pub node: String,
    /// Where its traffic goes, `host:port`.
    pub address: String,
    /// The policy's score for it, in (0, 1], higher is better.
    pub score: f64,
    /// Its state in the snapshot the decision used.
    pub state: NodeState,
    decision: Decision,
    snapshot: Arc<Snapshot>,
    live: Arc<NodeLive>,
    load: f64,
    done: AtomicBool,
    /// Routing time of the decision, and the instant, for how long it waited.
    at: f64,
    started: std::time::Instant,
}

impl Routed {
    /// Why this node was chosen, in words (formatted on demand: it costs more than the
    /// decision itself).
    pub fn reason(&self) -> String {
        self.decision.explain(&self.snapshot)
    }

    /// Whether every node was unhealthy and this is a best-effort choice.
    pub fn best_effort(&self) -> bool {
        self.decision.reason.best_effort
    }
}

impl Drop for Routed {
    /// A request dropped before its outcome was reported (its client gave up): the
    /// node kept it waiting at least this long (see [`NodeLive::abandon_after`]).
    fn drop(&mut self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            let waited = self.started.elapsed().as_secs_f64();
            self.live.abandon_after(waited, self.at + waited);
        }
    }
}

/// A decision of the HTTP route API (`GET /v1/pools/{pool}/route`).
#[derive(Debug, Clone)]
pub struct HttpDecision {
    /// The answer.
    pub decision: plb_api::RouteDecision,
    /// The policy that decided.
    pub policy: PolicyKind,
}

/// A routed request whose feedback may come over HTTP.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    at: f64,
    load: f64,
}

/// One request's outcome, waiting for the engine task (capacity training, scoring).
#[derive(Debug, Clone)]
pub(crate) struct FeedbackRow {
    pub node: String,
    pub at_ms: i64,
    /// Requests in flight on the node when it was sent (this one included).
    pub load: f64,
    pub latency_ms: f64,
    pub ok: bool,
}

/// Why feedback over HTTP was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    /// The node is not in the pool.
    #[error("node `{0}` is not in this pool")]
    UnknownNode(String),
    /// A latency that is negative or not finite.
    #[error("`latency_ms` must be a finite number >= 0, got {0}")]
    BadLatency(f64),
}

/// One pool's request path. Shared by every request; the engine task rebuilds its
/// snapshot and swaps it in.
pub struct PoolRouter {
    pool_id: i64,
    name: String,
    clock: Arc<dyn Clock>,
    pub(crate) snapshot: SharedSnapshot,
    pub(crate) live: plb_routing::LiveSet,
    /// Every policy, built once (round-robin keeps its rotation across switches).
    policies: Vec<AnyPolicy>,
    /// Index in `policies` of the pool's policy.
    selected: AtomicUsize,
    slo_ms: AtomicU64,
    outstanding: Mutex<HashMap<String, VecDeque<Outstanding>>>,
    rows: Mutex<VecDeque<FeedbackRow>>,
    rows_dropped: AtomicU64,
    /// The pool's prediction pipeline (engine task, nodes and model views).
    pub(crate) models: Mutex<PoolState>,
    counters: Option<Arc<crate::metrics::RouteCounters>>,
}

impl std::fmt::Debug for PoolRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRouter")
            .field("pool_id", &self.pool_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PoolRouter {
    pub(crate) fn new(
        pool_id: i64,
        name: String,
        clock: Arc<dyn Clock>,
        policy: PolicyKind,
        slo_ms: f64,
        models: PoolState,
        counters: Option<Arc<crate::metrics::RouteCounters>>,
    ) -> Self {
        let config = PolicyConfig::default();
        PoolRouter {
            pool_id,
            name,
            clock,
            snapshot: SharedSnapshot::default(),
            live: plb_routing::LiveSet::default(),
            policies: PolicyKind::ALL
                .iter()
                .map(|&k| AnyPolicy::new(k, config))
                .collect(),
            selected: AtomicUsize::new(policy_index(policy)),
            slo_ms: AtomicU64::new(slo_ms.to_bits()),
            outstanding: Mutex::new(HashMap::new()),
            rows: Mutex::new(VecDeque::new()),
            rows_dropped: AtomicU64::new(0),
            models: Mutex::new(models),
            counters,
        }
    }

    /// The pool's row id.
    pub fn pool_id(&self) -> i64 {
        self.pool_id
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routing policy in use.
    pub fn policy(&self) -> PolicyKind {
        PolicyKind::ALL
            .get(self.selected.load(Ordering::Relaxed))
            .copied()
            .unwrap_or_default()
    }

    /// Switches the routing policy (live state is kept).
    pub fn set_policy(&self, kind: PolicyKind) {
        self.selected.store(policy_index(kind), Ordering::Relaxed);
    }

    fn policy_for(&self, kind: Option<PolicyKind>) -> &AnyPolicy {
        let i = kind.map_or_else(|| self.selected.load(Ordering::Relaxed), policy_index);
        &self.policies[i.min(self.policies.len() - 1)]
    }

    /// The pool's latency objective, ms.
    pub fn slo_ms(&self) -> f64 {
        f64::from_bits(self.slo_ms.load(Ordering::Relaxed))
    }

    /// Sets the pool's latency objective (the next capacity fit uses it).
    pub fn set_slo_ms(&self, slo: f64) {
        self.slo_ms.store(slo.to_bits(), Ordering::Relaxed);
    }

    /// The current routing snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }

    /// Seconds on the routing clock (engine ms / 1000).
    pub(crate) fn now(&self) -> f64 {
        secs(self.clock.now_ms())
    }

    /// The policy's choice for `req`, skipping the nodes in `exclude`; `None` when no
    /// node is left.
    fn decide(
        &self,
        snap: &Snapshot,
        q: &RouteQuery,
        exclude: &[&str],
        now: f64,
        kind: Option<PolicyKind>,
    ) -> Option<Decision> {
        let policy = self.policy_for(kind);
        let req = q.request();
        let mut rng = rand::rng();
        let excluded = |i: usize| {
            !exclude.is_empty()
                && snap
                    .node(i)
                    .is_some_and(|n| exclude.contains(&n.id.as_str()))
        };
        let tries = if exclude.is_empty() { 1 } else { EXCLUDE_TRIES };
        for _ in 0..tries {
            let d = policy.pick(snap, &req, now, &mut rng)?;
            if !excluded(d.index) {
                return Some(d);
            }
        }
        // Every try fell on an excluded node: the least loaded of the rest, eligible
        // nodes first.
        let least = |it: &mut dyn Iterator<Item = usize>| {
            it.filter(|&i| !excluded(i))
                .min_by_key(|&i| snap.live(i).map_or(0, |l| l.in_flight()))
        };
        let (index, best_effort) = match least(&mut snap.eligible().iter().copied()) {
            Some(i) => (i, false),
            None => (least(&mut (0..snap.len()))?, true),
        };
        let chosen = Facts::read(snap, index, now);
        Some(Decision {
            index,
            score: 1.0 / (1.0 + chosen.in_flight as f64),
            reason: Reason {
                policy: policy.kind(),
                rule: Rule::Only,
                chosen,
                key: None,
                best_effort,
            },
        })
    }

    fn count(&self, policy: PolicyKind, state: NodeState) {
        if let Some(c) = &self.counters {
            c.inc(policy, state);
        }
    }

    /// One decision; `exclude` lists node ids already tried (retry on another node).
    /// The request counts in flight on the chosen node until [`PoolRouter::feedback`]
    /// (or until the [`Routed`] is dropped).
    pub fn route(&self, q: &RouteQuery, exclude: &[&str]) -> Option<Routed> {
        let snap = self.snapshot.load();
        let now = self.now();
        let decision = self.decide(&snap, q, exclude, now, None)?;
        let node = snap.node(decision.index)?;
        let live = Arc::clone(snap.live(decision.index)?);
        live.begin(now);
        let load = live.in_flight() as f64;
        self.count(decision.reason.policy, node.state);
        Some(Routed {
            node: node.id.clone(),
            address: node.address.clone(),
            score: decision.score,
            state: node.state,
            decision,
            live,
            load,
            done: AtomicBool::new(false),
            snapshot: snap,
            at: now,
            started: std::time::Instant::now(),
        })
    }

    /// What happened to a routed request: gives its in-flight slot back, updates the
    /// node's latency and error estimates at once, and queues a capacity row. A second
    /// call for the same request is ignored.
    pub fn feedback(&self, routed: &Routed, latency_ms: f64, ok: bool) {
        if routed.done.swap(true, Ordering::AcqRel) {
            return;
        }
        let latency_ms = if latency_ms.is_finite() {
            latency_ms.max(0.0)
        } else {
            routed.live.abandon();
            return;
        };
        routed.live.end(latency_ms / 1000.0, ok, self.now());
        self.push_row(FeedbackRow {
            node: routed.node.clone(),
            at_ms: self.clock.now_ms(),
            load: routed.load,
            latency_ms,
            ok,
        });
    }

    /// A routed request could not reach its node (the connection was refused or could
    /// not be made): a failure that marks the node unreachable (see
    /// [`NodeLive::end_unreachable`]); no capacity row (a refusal has no latency).
    pub fn feedback_unreachable(&self, routed: &Routed) {
        if routed.done.swap(true, Ordering::AcqRel) {
            return;
        }
        routed.live.end_unreachable(self.now());
    }

    /// The nodes (id, address) that traffic found unreachable, for a connection check.
    pub fn unreachable_nodes(&self) -> Vec<(String, String)> {
        let snap = self.snapshot.load();
        snap.nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| snap.live(*i).is_some_and(|l| l.is_unreachable()))
            .map(|(_, n)| (n.id.clone(), n.address.clone()))
            .collect()
    }

    /// A connection check reached the unreachable node `node`: it returns to service
    /// (see [`NodeLive::reachable`]).
    pub fn reachable(&self, node: &str) {
        let snap = self.snapshot.load();
        if let Some(live) = snap.live_by_id(node) {
            live.reachable(self.now());
        }
    }

    /// A decision for the HTTP route API: counted in flight on the node until feedback
    /// for that node arrives over HTTP (oldest first) or the engine expires it.
    /// `policy` overrides the pool's policy for this one decision.
    pub fn route_http(&self, q: &RouteQuery, policy: Option<PolicyKind>) -> Option<HttpDecision> {
        let snap = self.snapshot.load();
        let now = self.now();
        let decision = self.decide(&snap, q, &[], now, policy)?;
        let node = snap.node(decision.index)?;
        let live = snap.live(decision.index)?;
        live.begin(now);
        let load = live.in_flight() as f64;
        {
            let mut out = lock(&self.outstanding);
            let q = match out.get_mut(node.id.as_str()) {
                Some(q) => q,
                None => out.entry(node.id.clone()).or_default(),
            };
            if q.len() >= MAX_OUTSTANDING_PER_NODE && q.pop_front().is_some() {
                live.abandon();
            }
            q.push_back(Outstanding { at: now, load });
        }
        let policy = decision.reason.policy;
        self.count(policy, node.state);
        Some(HttpDecision {
            decision: plb_api::RouteDecision {
                node: node.id.clone(),
                address: node.address.clone(),
                score: decision.score,
                state: node.state,
                reason: decision.explain(&snap),
            },
            policy,
        })
    }

    /// Feedback over HTTP for `node`: releases its oldest outstanding HTTP decision (if
    /// any; feedback for requests routed elsewhere only updates the estimates).
    pub fn feedback_http(
        &self,
        node: &str,
        latency_ms: f64,
        ok: bool,
    ) -> Result<(), FeedbackError> {
        let snap = self.snapshot.load();
        let index = snap
            .index_of(node)
            .ok_or_else(|| FeedbackError::UnknownNode(node.to_string()))?;
        Self::check_latency(latency_ms)?;
        let Some(live) = snap.live(index) else {
            return Err(FeedbackError::UnknownNode(node.to_string()));
        };
        let now = self.now();
        let taken = lock(&self.outstanding)
            .get_mut(node)
            .and_then(VecDeque::pop_front);
        let load = match taken {
            Some(o) => {
                live.end(latency_ms / 1000.0, ok, now);
                o.load
            }
            None => {
                live.observe(latency_ms / 1000.0, ok, now);
                live.in_flight() as f64 + 1.0
            }
        };
        self.push_row(FeedbackRow {
            node: node.to_string(),
            at_ms: self.clock.now_ms(),
            load,
            latency_ms,
            ok,
        });
        Ok(())
    }

    /// Checks one feedback item without applying it.
    pub fn check_feedback(&self, node: &str, latency_ms: f64) -> Result<(), FeedbackError> {
        if self.snapshot.load().index_of(node).is_none() {
            return Err(FeedbackError::UnknownNode(node.to_string()));
        }
        Self::check_latency(latency_ms)
    }

    fn check_latency(latency_ms: f64) -> Result<(), FeedbackError> {
        if latency_ms.is_finite() && latency_ms >= 0.0 {
            Ok(())
        } else {
            Err(FeedbackError::BadLatency(latency_ms))
        }
    }

    fn push_row(&self, row: FeedbackRow) {
        let mut rows = lock(&self.rows);
        if rows.len() >= MAX_PENDING_ROWS {
            rows.pop_front();
            self.rows_dropped.fetch_add(1, Ordering::Relaxed);
        }
        rows.push_back(row);
    }

    /// Takes the feedback rows queued since the last call.
    pub(crate) fn take_rows(&self) -> Vec<FeedbackRow> {
        lock(&self.rows).drain(..).collect()
    }

    /// Releases HTTP decisions whose feedback has not come within `timeout` seconds
    /// (a caller that routes and never reports must not leak in-flight counts).
    /// Returns how many were released.
    pub(crate) fn expire_outstanding(&self, timeout: f64) -> usize {
        let snap = self.snapshot.load();
        let now = self.now();
        let mut released = 0;
        let mut out = lock(&self.outstanding);
        out.retain(|node, q| {
            let live = snap.live_by_id(node);
            while q.front().is_some_and(|o| now - o.at > timeout) {
                q.pop_front();
                released += 1;
                if let Some(l) = live {
                    l.abandon();
                }
            }
            // A node gone from the pool: its live state is gone too.
            live.is_some() && !q.is_empty()
        });
        released
    }

    /// Requests routed over HTTP still waiting for their feedback.
    pub fn outstanding(&self) -> usize {
        lock(&self.outstanding).values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use plb_pipeline::{PipelineConfig, PoolPredictor};
    use plb_routing::{NodeView, Shaping, Snapshot};

    use super::super::clock::ManualClock;
    use super::*;

    fn router(nodes: &[&str]) -> PoolRouter {
        router_at(nodes, Arc::new(ManualClock::new(1_000_000)))
    }

    // Hand-made views: these test the request path, not the pipeline.
    #[allow(clippy::disallowed_methods)]
    fn router_at(nodes: &[&str], clock: Arc<ManualClock>) -> PoolRouter {
        let predictor = PoolPredictor::new(PipelineConfig::default(), 100.0).expect("valid");
        let r = PoolRouter::new(
            1,
            "web".into(),
            clock,
            PolicyKind::Plb,
            100.0,
            PoolState::new(predictor),
            None,
        );
        let views = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeView::new(*n, format!("127.0.0.1:{}", 9000 + i)))
            .collect();
        let snap = Snapshot::new(views, &r.live, Shaping::default(), r.now()).expect("snapshot");
        r.snapshot.store(snap);
        r
    }

    fn in_flight(r: &PoolRouter) -> u64 {
        r.live.in_flight()
    }

    #[test]
    fn excluded_nodes_are_skipped_and_none_when_all_are() {
        let r = router(&["a", "b", "c"]);
        let q = RouteQuery::default();
        for _ in 0..200 {
            let got = r.route(&q, &["a", "b"]).expect("c is left");
            assert_eq!(
                (got.node.as_str(), got.address.as_str()),
                ("c", "127.0.0.1:9002")
            );
        }
        assert!(r.route(&q, &["a", "b", "c"]).is_none());
        assert!(router(&[]).route(&q, &[]).is_none());
    }

    #[test]
    fn a_routed_request_holds_its_slot_until_feedback_or_drop() {
        let r = router(&["a", "b"]);
        let q = RouteQuery::default();
        let one = r.route(&q, &[]).expect("a node");
        let two = r.route(&q, &[]).expect("a node");
        assert_eq!(in_flight(&r), 2);
        r.feedback(&one, 12.0, true);
        r.feedback(&one, 12.0, true); // ignored: already reported
        assert_eq!(in_flight(&r), 1);
        drop(two); // cancelled: slot given back, no observation
        assert_eq!(in_flight(&r), 0);
        assert!(!one.reason().is_empty());
        drop(one);
        assert_eq!(in_flight(&r), 0, "a reported request is not released twice");
        let rows = r.take_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].load, rows[0].latency_ms, rows[0].ok),
            (1.0, 12.0, true)
        );
        let snap = r.snapshot();
        let completed: u64 = (0..snap.len())
            .filter_map(|i| snap.live(i))
            .map(|l| l.completed())
            .sum();
        assert_eq!(completed, 1);
    }

    #[test]
    fn http_decisions_are_released_by_feedback_in_order_or_by_the_timeout() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let r = router_at(&["a"], Arc::clone(&clock));
        let q = RouteQuery::default();
        for _ in 0..3 {
            let d = r.route_http(&q, None).expect("a");
            assert_eq!(d.decision.node, "a");
            assert!(
                d.decision.reason.starts_with("node a"),
                "{}",
                d.decision.reason
            );
        }
        assert_eq!((in_flight(&r), r.outstanding()), (3, 3));
        r.feedback_http("a", 5.0, true).expect("known node");
        assert_eq!((in_flight(&r), r.outstanding()), (2, 2));
        // The oldest decision went first: it was sent with 1 in flight.
        assert_eq!(r.take_rows()[0].load, 1.0);
        assert_eq!(
            r.feedback_http("zz", 5.0, true),
            Err(FeedbackError::UnknownNode("zz".into()))
        );
        assert!(matches!(
            r.feedback_http("a", -1.0, true),
            Err(FeedbackError::BadLatency(_))
        ));
        assert!(r.check_feedback("a", f64::NAN).is_err());
        clock.advance(29_000);
        assert_eq!(r.expire_outstanding(30.0), 0, "nothing is 30 s old yet");
        clock.advance(1_001);
        assert_eq!(r.expire_outstanding(30.0), 2);
        assert_eq!((in_flight(&r), r.outstanding()), (0, 0));
        // Feedback for a request routed elsewhere: estimates only, nothing released.
        r.feedback_http("a", 5.0, false).expect("known node");
        assert_eq!(in_flight(&r), 0);
    }

    #[test]
    fn the_policy_can_be_switched_and_overridden() {
        let r = router(&["a", "b", "c"]);
        assert_eq!(r.policy(), PolicyKind::Plb);
        r.set_policy(PolicyKind::RoundRobin);
        assert_eq!(r.policy(), PolicyKind::RoundRobin);
        let q = RouteQuery::default();
        let nodes: std::collections::HashSet<String> = (0..3)
            .map(|_| r.route_http(&q, None).expect("a node").decision.node)
            .collect();
        assert_eq!(nodes.len(), 3, "round-robin visits every node");
        let d = r
            .route_http(&q, Some(PolicyKind::LeastRequest))
            .expect("a node");
        assert_eq!(d.policy, PolicyKind::LeastRequest);
        assert_eq!(
            r.policy(),
            PolicyKind::RoundRobin,
            "an override is for one decision"
        );
    }
}
