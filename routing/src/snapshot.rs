//! The immutable routing snapshot: per-node predictions ([`NodeView`]), what the `plb`
//! policy derives from them once per build (weights, sampling tables, recovery floor,
//! key-hash seeds), and the live-state handles bound by node id. Rebuilt when
//! predictions change and swapped whole ([`SharedSnapshot`]); never mutated.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use plb_api::NodeState;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::RoutingError;
use crate::live::{LiveSet, NodeLive};

/// One node as the predictions see it. Capacity and load share one unit of the
/// balancer's choosing (sustainable requests in flight, or requests per second); only
/// ratios between them and between nodes matter here.
///
/// `non_exhaustive`: outside this crate a view is made only by [`NodeView::new`], which
/// the balancer and the benchmark may call only through `plb-pipeline` (their
/// `clippy.toml` disallows it elsewhere), so every view they route on comes from the
/// one prediction pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeView {
    /// Node id, unique in the pool.
    pub id: String,
    /// Where traffic goes, `host:port`.
    pub address: String,
    /// Current state.
    pub state: NodeState,
    /// Forecast capacity; `None` while no capacity model exists for the node.
    pub capacity: Option<f64>,
    /// Forecast load in the unit of `capacity`; `None` when not forecast.
    pub forecast_load: Option<f64>,
    /// How far the node's forecast has moved toward its degradation threshold:
    /// 0 = fine, 1 = at the threshold. Shapes its weight smoothly before and after the
    /// state turns `degrading`.
    pub degrade_score: f64,
    /// Operator weight (1 = normal); 0 drains the node.
    pub weight: f64,
    /// When (caller's clock, seconds) the node last joined or returned to service: its
    /// weight ramps up over the slow-start window from then. `None`: no ramp.
    pub ready_since: Option<f64>,
}

impl NodeView {
    /// A healthy node of weight 1 with no forecasts.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        NodeView {
            id: id.into(),
            address: address.into(),
            state: NodeState::Healthy,
            capacity: None,
            forecast_load: None,
            degrade_score: 0.0,
            weight: 1.0,
            ready_since: None,
        }
    }

    /// Forecast headroom, capacity minus load, when both are forecast.
    pub fn headroom(&self) -> Option<f64> {
        Some(finite(self.capacity)? - finite(self.forecast_load)?)
    }

    /// Forecast headroom as a fraction of capacity (1 = idle, 0 = at capacity,
    /// negative = over), clamped to -1..=1; `None` unless both are forecast and the
    /// capacity is positive.
    pub fn headroom_fraction(&self) -> Option<f64> {
        let cap = finite(self.capacity)?;
        if cap <= 0.0 {
            return Some(-1.0);
        }
        Some((self.headroom()? / cap).clamp(-1.0, 1.0))
    }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

/// How predictions turn into traffic weights (used by the `plb` policy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shaping {
    /// The least a node's weight factor falls to from degradation or lack of headroom,
    /// and the share of its fair traffic a shed node keeps at least (recovery floor).
    pub degrade_floor: f64,
    /// The degrade score assumed for a `degrading` node whose score is lower.
    pub degrading_min_score: f64,
    /// Weight factor of an `unknown` node (no fresh samples), while some node of the
    /// pool is not `unknown` (1 when none is: a pool without probes).
    pub unknown_factor: f64,
    /// Forecast headroom fraction below which the weight starts to fall (smoothly, to
    /// `degrade_floor` at zero headroom).
    pub headroom_knee: f64,
    /// Slow-start window in seconds after `ready_since`.
    pub slow_start_window: f64,
    /// Weight factor at the start of the slow-start window.
    pub slow_start_min: f64,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            degrade_floor: 0.05,
            degrading_min_score: 0.5,
            unknown_factor: 0.5,
            headroom_knee: 0.25,
            slow_start_window: 30.0,
            slow_start_min: 0.1,
        }
    }
}

/// `3x² - 2x³` on 0..=1: no slope at either end, so small moves of an input near 0 or
/// near 1 change nothing abruptly.
pub(crate) fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

impl Shaping {
    /// Weight factor from a degrade score: 1 at 0, falling smoothly to `degrade_floor`
    /// at 1. Never a cliff.
    pub fn degrade_factor(&self, degrade_score: f64) -> f64 {
        let floor = self.floor();
        1.0 - (1.0 - floor) * smoothstep(degrade_score)
    }

    /// Weight factor from forecast headroom: 1 above the knee, falling smoothly to
    /// `degrade_floor` at zero headroom or below; 1 when headroom is not forecast.
    pub fn headroom_factor(&self, headroom_fraction: Option<f64>) -> f64 {
        match headroom_fraction {
            None => 1.0,
            Some(h) => {
                let floor = self.floor();
                let knee = if self.headroom_knee > 0.0 {
                    self.headroom_knee
                } else {
                    1e-9
                };
                floor + (1.0 - floor) * smoothstep(h / knee)
            }
        }
    }

    /// Slow-start factor at `now` for a node ready since `ready_since`: from
    /// `slow_start_min` rising linearly to 1 over the window.
    pub fn ramp(&self, ready_since: Option<f64>, now: f64) -> f64 {
        let Some(t0) = ready_since.filter(|t| t.is_finite()) else {
            return 1.0;
        };
        if self.slow_start_window.is_nan() || self.slow_start_window <= 0.0 {
            return 1.0;
        }
        let frac = (now - t0) / self.slow_start_window;
        if frac >= 1.0 {
            return 1.0;
        }
        let min = self.slow_start_min.clamp(0.0, 1.0);
        min + (1.0 - min) * frac.max(0.0)
    }

    fn floor(&self) -> f64 {
        if self.degrade_floor.is_finite() {
            self.degrade_floor.clamp(0.0, 1.0)
        } else {
            0.05
        }
    }
}

/// What a build derives for one node.
#[derive(Debug, Clone)]
pub(crate) struct Derived {
    /// Forecast headroom fraction.
    pub headroom: Option<f64>,
    /// Product of the degrade, headroom and unknown-state factors, in (0, 1].
    pub health: f64,
    /// Operator weight × capacity relative to the pool's median known capacity (1 when
    /// unknown): the node's fair-share weight.
    pub base: f64,
    /// `base × health`, the sampling weight before slow start.
    pub static_w: f64,
    /// Seed of the node's rendezvous hash.
    pub key_seed: u64,
}

/// Vose's alias table: O(1) sampling of a position with probability proportional to
/// its weight.
#[derive(Debug, Clone, Default)]
pub(crate) struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    pub(crate) fn new(weights: &[f64]) -> Self {
        let m = weights.len();
        let total: f64 = weights.iter().sum();
        if m == 0 {
            return AliasTable::default();
        }
        let mut scaled: Vec<f64> = if total > 0.0 && total.is_finite() {
            weights.iter().map(|w| w * m as f64 / total).collect()
        } else {
            vec![1.0; m]
        };
        let mut prob = vec![1.0; m];
        let mut alias: Vec<u32> = (0..m as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..m).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding.
        AliasTable { prob, alias }
    }

    /// A position, or `None` for an empty table.
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        let m = self.prob.len();
        if m == 0 {
            return None;
        }
        let i = rng.random_range(0..m);
        if rng.random::<f64>() < self.prob[i] {
            Some(i)
        } else {
            Some(self.alias[i] as usize)
        }
    }
}

/// An immutable view of a pool for routing. Cheap to read from many threads; build a
/// new one when predictions change and swap it in with [`SharedSnapshot`].
#[derive(Debug)]
pub struct Snapshot {
    nodes: Vec<NodeView>,
    live: Vec<Arc<NodeLive>>,
    derived: Vec<Derived>,
    index: HashMap<String, usize>,
    /// Indices of nodes that may get traffic: not `unhealthy`, weight above 0.
    eligible: Vec<usize>,
    /// Over `eligible` positions, by `static_w`.
    alias: AliasTable,
    /// Recovery floor: (node index, cumulative probability) of shed nodes.
    floor: Vec<(usize, f64)>,
    key_base_total: f64,
    key_uniform: bool,
    /// (rendezvous seed, base weight, node index) of each eligible node, contiguous for
    /// the per-request hashing loop.
    key_table: Vec<(u64, f64, usize)>,
    pool_in_flight: Arc<AtomicI64>,
    shaping: Shaping,
    built_at: f64,
}

impl Snapshot {
    /// Builds a snapshot of `nodes`, binding each to its live state in `live` (created
    /// if new; state of nodes no longer listed is dropped from `live`). `built_at` is
    /// the caller's clock, kept for staleness reports.
    ///
    /// Non-finite or out-of-range numbers are sanitised rather than refused, so one bad
    /// forecast cannot stop routing: a non-finite capacity or load counts as not
    /// forecast, a degrade score is clamped to 0..=1 (NaN reads as 0), a negative or
    /// non-finite weight as 0 (drained).
    pub fn new(
        mut nodes: Vec<NodeView>,
        live: &LiveSet,
        shaping: Shaping,
        built_at: f64,
    ) -> Result<Self, RoutingError> {
        let mut index = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.id.is_empty() {
                return Err(RoutingError::EmptyNodeId { position: i });
            }
            if index.insert(n.id.clone(), i).is_some() {
                return Err(RoutingError::DuplicateNode(n.id.clone()));
            }
            n.capacity = finite(n.capacity);
            n.forecast_load = finite(n.forecast_load);
            n.degrade_score = if n.degrade_score.is_nan() {
                0.0
            } else {
                n.degrade_score.clamp(0.0, 1.0)
            };
            n.weight = if n.weight.is_finite() {
                n.weight.max(0.0)
            } else {
                0.0
            };
            n.ready_since = n.ready_since.filter(|t| t.is_finite());
        }
        live.retain(nodes.iter().map(|n| n.id.as_str()));
        let live_handles = nodes.iter().map(|n| live.get_or_insert(&n.id)).collect();

        let mut caps: Vec<f64> = nodes
            .iter()
            .filter_map(|n| n.capacity)
            .filter(|c| *c > 0.0)
            .collect();
        caps.sort_by(f64::total_cmp);
        let median_cap = if caps.is_empty() {
            1.0
        } else {
            caps[caps.len() / 2]
        };

        // `unknown` halves a node's weight against the nodes that report. With no node
        // reporting (a pool without probes, routed on feedback alone; or every agent
        // gone at once), the factor would weigh every node alike and do only harm: each
        // node would count as half shed, so the recovery floor would send a share of
        // the requests to nodes drawn at random whatever their load, and no node would
        // count as unshed for `scan_busy_release`.
        let any_reporting = nodes.iter().any(|n| n.state != NodeState::Unknown);
        let derived: Vec<Derived> = nodes
            .iter()
            .map(|n| {
                let cap_rel = match n.capacity {
                    Some(c) if c > 0.0 => c / median_cap,
                    Some(_) => 1e-3,
                    None => 1.0,
                };
                let headroom = n.headroom_fraction();
                let degrade = if n.state == NodeState::Degrading {
                    n.degrade_score
                        .max(shaping.degrading_min_score.clamp(0.0, 1.0))
                } else {
                    n.degrade_score
                };
                let unknown = if n.state == NodeState::Unknown && any_reporting {
                    shaping.unknown_factor.clamp(0.01, 1.0)
                } else {
                    1.0
                };
                let health =
                    shaping.degrade_factor(degrade) * shaping.headroom_factor(headroom) * unknown;
                let base = n.weight * cap_rel;
                Derived {
                    headroom,
                    health,
                    base,
                    static_w: base * health,
                    key_seed: xxhash_rust::xxh3::xxh3_64(n.id.as_bytes()),
                }
            })
            .collect();

        let eligible: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].state != NodeState::Unhealthy && derived[i].base > 0.0)
            .collect();
        let alias = AliasTable::new(
            &eligible
                .iter()
                .map(|&i| derived[i].static_w)
                .collect::<Vec<_>>(),
        );
        let key_base_total: f64 = eligible.iter().map(|&i| derived[i].base).sum();
        let key_uniform = eligible
            .windows(2)
            .all(|w| derived[w[0]].base == derived[w[1]].base);
        let key_table = eligible
            .iter()
            .map(|&i| (derived[i].key_seed, derived[i].base, i))
            .collect();

        // Recovery floor: a node shed to health h keeps at least
        // floor × (1 - h) × its fair share, drawn before the power-of-two choice.
        let floor_frac = shaping.floor();
        let mut floor = Vec::new();
        let mut cumulative = 0.0;
        if key_base_total > 0.0 {
            for &i in &eligible {
                let d = &derived[i];
                let p = floor_frac * (1.0 - d.health) * d.base / key_base_total;
                if p > 0.0 {
                    cumulative += p;
                    floor.push((i, cumulative));
                }
            }
        }

        Ok(Snapshot {
            nodes,
            live: live_handles,
            derived,
            index,
            eligible,
            alias,
            floor,
            key_base_total,
            key_uniform,
            key_table,
            pool_in_flight: live.in_flight_counter(),
            shaping,
            built_at,
        })
    }

    /// An empty snapshot (routes nothing).
    pub fn empty() -> Self {
        Snapshot {
            nodes: Vec::new(),
            live: Vec::new(),
            derived: Vec::new(),
            index: HashMap::new(),
            eligible: Vec::new(),
            alias: AliasTable::default(),
            floor: Vec::new(),
            key_base_total: 0.0,
            key_uniform: true,
            key_table: Vec::new(),
            pool_in_flight: Arc::new(AtomicI64::new(0)),
            shaping: Shaping::default(),
            built_at: 0.0,
        }
    }

    /// All nodes, in build order; decisions index into this.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the snapshot has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node at `index`.
    pub fn node(&self, index: usize) -> Option<&NodeView> {
        self.nodes.get(index)
    }

    /// Index of the node with `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Live state of the node at `index` (for `begin`/`end` around a request).
    pub fn live(&self, index: usize) -> Option<&Arc<NodeLive>> {
        self.live.get(index)
    }

    /// Live state of the node with `id` (for feedback by id).
    pub fn live_by_id(&self, id: &str) -> Option<&Arc<NodeLive>> {
        self.live.get(self.index_of(id)?)
    }

    /// Indices of the nodes that may get traffic (not `unhealthy`, weight above 0).
    pub fn eligible(&self) -> &[usize] {
        &self.eligible
    }

    /// The shaping parameters this snapshot was built with.
    pub fn shaping(&self) -> &Shaping {
        &self.shaping
    }

    /// When it was built (caller's clock).
    pub fn built_at(&self) -> f64 {
        self.built_at
    }

    /// The `plb` weight of the node at `index` relative to a healthy node of the pool's
    /// median capacity at `now`: operator weight × relative capacity × health × slow
    /// start. 0 for an ineligible node.
    pub fn weight_at(&self, index: usize, now: f64) -> f64 {
        match (self.nodes.get(index), self.derived.get(index)) {
            (Some(n), Some(d)) if n.state != NodeState::Unhealthy && d.base > 0.0 => {
                d.static_w * self.shaping.ramp(self.ready_since_at(index), now)
            }
            _ => 0.0,
        }
    }

    /// The node's weight relative to its own full weight at `now` (its health and slow
    /// start, 0..=1), e.g. for an HAProxy agent-check `weight:NN%`.
    pub fn weight_fraction_at(&self, index: usize, now: f64) -> f64 {
        match self.derived.get(index) {
            Some(d) if d.base > 0.0 => self.weight_at(index, now) / d.base,
            _ => 0.0,
        }
    }

    /// When the node at `index` last (re)entered service, for slow start: the later of
    /// its view's `ready_since` (the pipeline's word) and its live state's return after
    /// a run of failures ([`NodeLive::back_since`]).
    pub fn ready_since_at(&self, index: usize) -> Option<f64> {
        let view = self.nodes.get(index).and_then(|n| n.ready_since);
        let live = self.live.get(index).and_then(|l| l.back_since());
        match (view, live) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn derived(&self, index: usize) -> &Derived {
        &self.derived[index]
    }

    pub(crate) fn live_at(&self, index: usize) -> &NodeLive {
        &self.live[index]
    }

    pub(crate) fn alias(&self) -> &AliasTable {
        &self.alias
    }

    pub(crate) fn floor_total(&self) -> f64 {
        self.floor.last().map_or(0.0, |&(_, c)| c)
    }

    /// The recovery-floor node for a uniform draw `u` below [`Self::floor_total`].
    pub(crate) fn floor_pick(&self, u: f64) -> Option<usize> {
        let pos = self.floor.partition_point(|&(_, c)| c <= u);
        self.floor
            .get(pos.min(self.floor.len().checked_sub(1)?))
            .map(|&(i, _)| i)
    }

    pub(crate) fn key_base_total(&self) -> f64 {
        self.key_base_total
    }

    pub(crate) fn key_uniform(&self) -> bool {
        self.key_uniform
    }

    pub(crate) fn key_table(&self) -> &[(u64, f64, usize)] {
        &self.key_table
    }

    /// Requests in flight to the whole pool (this balancer instance's count).
    pub fn pool_in_flight(&self) -> u64 {
        self.pool_in_flight.load(Ordering::Relaxed).max(0) as u64
    }
}

/// A snapshot shared by every request thread and replaced whole when predictions
/// change: reads are lock-free (`arc-swap`).
#[derive(Debug)]
pub struct SharedSnapshot(ArcSwap<Snapshot>);

impl SharedSnapshot {
    /// Shares `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        SharedSnapshot(ArcSwap::from_pointee(snapshot))
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Replaces the snapshot; readers holding the old one keep it until they drop it.
    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}

impl Default for SharedSnapshot {
    fn default() -> Self {
        SharedSnapshot::new(Snapshot::empty())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn duplicate_and_empty_ids_are_refused() {
        let live = LiveSet::default();
        let dup = vec![NodeView::new("a", "x:1"), NodeView::new("a", "x:2")];
        assert!(matches!(
            Snapshot::new(dup, &live, Shaping::default(), 0.0),
            Err(RoutingError::DuplicateNode(id)) if id == "a"
        ));
        let empty = vec![NodeView::new("", "x:1")];
        assert!(Snapshot::new(empty, &live, Shaping::default(), 0.0).is_err());
    }

    #[test]
    fn bad_numbers_are_sanitised() {
        let live = LiveSet::default();
        let mut n = NodeView::new("a", "x:1");
        n.capacity = Some(f64::NAN);
        n.forecast_load = Some(f64::INFINITY);
        n.degrade_score = f64::NAN;
        n.weight = f64::NEG_INFINITY;
        let s = Snapshot::new(vec![n], &live, Shaping::default(), 0.0).expect("builds");
        let v = &s.nodes()[0];
        assert_eq!(
            (v.capacity, v.forecast_load, v.degrade_score, v.weight),
            (None, None, 0.0, 0.0)
        );
        assert!(s.eligible().is_empty(), "weight 0 drains");
    }

    #[test]
    fn unknown_halves_a_node_only_against_nodes_that_report() {
        let live = LiveSet::default();
        let unknown = |id: &str| {
            let mut n = NodeView::new(id, "x:1");
            n.state = NodeState::Unknown;
            n
        };
        // A pool without probes: every node `unknown`, every node at full health, and
        // no request drawn at random by the recovery floor.
        let none_report = vec![unknown("a"), unknown("b"), unknown("c")];
        let s = Snapshot::new(none_report, &live, Shaping::default(), 0.0).expect("builds");
        for i in 0..3 {
            assert_eq!(s.derived(i).health, 1.0, "node {i}");
            assert_eq!(s.weight_at(i, 0.0), 1.0, "node {i}");
        }
        assert_eq!(s.floor_total(), 0.0);
        // One node reports: the silent ones weigh half, and the floor looks at them.
        let mut one_reports = vec![unknown("a"), unknown("b"), NodeView::new("c", "x:3")];
        one_reports[2].state = NodeState::Healthy;
        let s = Snapshot::new(one_reports, &live, Shaping::default(), 0.0).expect("builds");
        let half = Shaping::default().unknown_factor;
        assert_eq!(s.derived(0).health, half);
        assert_eq!(s.derived(1).health, half);
        assert_eq!(s.derived(2).health, 1.0);
        assert!(s.floor_total() > 0.0);
    }

    #[test]
    fn degrade_factor_is_smooth_and_floored() {
        let s = Shaping::default();
        assert_eq!(s.degrade_factor(0.0), 1.0);
        assert!((s.degrade_factor(1.0) - 0.05).abs() < 1e-12);
        let mut prev = 1.0;
        for i in 1..=100 {
            let f = s.degrade_factor(f64::from(i) / 100.0);
            assert!(f < prev, "strictly falling");
            assert!(prev - f < 0.02, "no step larger than 2% per 0.01 of score");
            prev = f;
        }
    }

    #[test]
    fn ramp_rises_linearly_over_the_window() {
        let s = Shaping {
            slow_start_window: 10.0,
            slow_start_min: 0.1,
            ..Shaping::default()
        };
        assert_eq!(s.ramp(None, 5.0), 1.0);
        assert!((s.ramp(Some(100.0), 100.0) - 0.1).abs() < 1e-12);
        assert!((s.ramp(Some(100.0), 105.0) - 0.55).abs() < 1e-12);
        assert_eq!(s.ramp(Some(100.0), 110.0), 1.0);
        assert!(
            (s.ramp(Some(100.0), 90.0) - 0.1).abs() < 1e-12,
            "clock before start"
        );
    }

    #[test]
    fn alias_table_samples_in_proportion() {
        let w = [1.0, 2.0, 0.0, 7.0];
        let t = AliasTable::new(&w);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 4];
        let n = 200_000;
        for _ in 0..n {
            counts[t.sample(&mut rng).expect("non-empty")] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let want = w[i] / 10.0;
            let got = f64::from(c) / f64::from(n);
            assert!((got - want).abs() < 0.01, "{i}: {got} vs {want}");
        }
        assert_eq!(counts[2], 0);
    }

    #[test]
    fn relative_capacity_and_headroom() {
        let live = LiveSet::default();
        let mut a = NodeView::new("a", "x:1");
        a.capacity = Some(100.0);
        a.forecast_load = Some(25.0);
        let mut b = NodeView::new("b", "x:2");
        b.capacity = Some(200.0);
        b.forecast_load = Some(200.0);
        let c = NodeView::new("c", "x:3");
        let s = Snapshot::new(vec![a, b, c], &live, Shaping::default(), 0.0).expect("builds");
        assert_eq!(s.nodes()[0].headroom(), Some(75.0));
        assert_eq!(s.nodes()[1].headroom_fraction(), Some(0.0));
        // median of known capacities is 200 (upper median of two).
        assert!((s.derived(0).base - 0.5).abs() < 1e-12);
        assert!(
            (s.derived(1).health - 0.05).abs() < 1e-12,
            "no headroom: floor"
        );
        assert_eq!(s.derived(2).base, 1.0);
        assert!(s.weight_fraction_at(1, 0.0) < 0.06);
        assert_eq!(s.weight_fraction_at(0, 0.0), 1.0);
    }

    #[test]
    fn shared_snapshot_swaps() {
        let live = LiveSet::default();
        let shared = SharedSnapshot::default();
        let old = shared.load();
        assert!(old.is_empty());
        shared.store(
            Snapshot::new(
                vec![NodeView::new("a", "x:1")],
                &live,
                Shaping::default(),
                1.0,
            )
            .expect("builds"),
        );
        assert_eq!(shared.load().len(), 1);
        assert!(old.is_empty(), "a reader keeps its snapshot");
    }
}
