//! [`PoolModels`]: the prediction side of one pool: a [`NodeModel`] per node fed with
//! its committed samples, the node's capacity from the pool's capacity model, and the
//! step that turns them into routing [`NodeView`]s. Plain synchronous code over plain
//! data (time passed in); the engine task owns the calls.
use std::collections::BTreeMap;
use std::sync::Arc;

use plb_api::{MetricDirection, NodeAssessment, NodeState, Sample, StateChange};
use plb_predict::{NodeConfig, NodeModel, NodeParams, PredictError};
use plb_routing::NodeView;

use crate::store::TopologyNode;

/// One node of the pool.
#[derive(Debug)]
pub(crate) struct NodeSlot {
    pub node_id: i64,
    pub address: String,
    pub model: NodeModel,
    /// Routing clock time at which it (re)entered service, for slow start.
    pub ready_since: Option<f64>,
    /// State in the last view built.
    pub view_state: NodeState,
    /// Capacity from the capacity model (requests in flight at the SLO).
    pub capacity: Option<f64>,
}

/// A state change to store.
#[derive(Debug, Clone)]
pub(crate) struct NodeChange {
    pub node_id: i64,
    pub node: String,
    pub change: StateChange,
}

/// The models of one pool's nodes.
#[derive(Debug)]
pub(crate) struct PoolModels {
    config: Arc<NodeConfig>,
    pub nodes: BTreeMap<String, NodeSlot>,
}

impl PoolModels {
    pub(crate) fn new(config: Arc<NodeConfig>) -> Self {
        PoolModels {
            config,
            nodes: BTreeMap::new(),
        }
    }

    /// Makes the node set `nodes`: new nodes start `unknown`, gone nodes are forgotten.
    /// Returns whether anything changed.
    pub(crate) fn sync(&mut self, nodes: &[TopologyNode]) -> bool {
        let mut changed = false;
        let before = self.nodes.len();
        let keep: std::collections::HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        self.nodes.retain(|name, _| keep.contains(name.as_str()));
        changed |= self.nodes.len() != before;
        for TopologyNode { id, name, address } in nodes {
            match self.nodes.get_mut(name) {
                Some(slot) => {
                    if slot.address != *address || slot.node_id != *id {
                        slot.address.clone_from(address);
                        slot.node_id = *id;
                        changed = true;
                    }
                }
                None => {
                    self.nodes.insert(
                        name.clone(),
                        NodeSlot {
                            node_id: *id,
                            address: address.clone(),
                            model: NodeModel::new(Arc::clone(&self.config)),
                            ready_since: None,
                            view_state: NodeState::Unknown,
                            capacity: None,
                        },
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// Learns one committed sample of `node`. `Ok(None)` for a node not (yet) in the pool.
    pub(crate) fn observe(
        &mut self,
        node: &str,
        s: &Sample,
    ) -> Result<Option<NodeChange>, PredictError> {
        let Some(slot) = self.nodes.get_mut(node) else {
            return Ok(None);
        };
        Ok(slot.model.observe_sample(s)?.map(|change| NodeChange {
            node_id: slot.node_id,
            node: node.to_string(),
            change,
        }))
    }

    /// Moves stale nodes to `unknown`, records each node's load (requests in flight)
    /// and capacity, and builds the routing views at `now_ms` (model time) / `now`
    /// (routing clock). `in_flight` gives a node's in-flight count by name.
    pub(crate) fn tick(
        &mut self,
        now_ms: i64,
        now: f64,
        in_flight: &dyn Fn(&str) -> Option<u64>,
        changes: &mut Vec<NodeChange>,
    ) -> Vec<NodeView> {
        let params = self.config.params().clone();
        let mut views = Vec::with_capacity(self.nodes.len());
        let established = self.established(now);
        for (name, slot) in &mut self.nodes {
            if let Some(c) = slot.model.tick(now_ms) {
                changes.push(NodeChange {
                    node_id: slot.node_id,
                    node: name.clone(),
                    change: c,
                });
            }
            if let Some(load) = in_flight(name) {
                // Only once the node has samples: a load series alone would keep an
                // idle, unprobed node looking fresh to nobody.
                if slot.model.state() != NodeState::Unknown {
                    let _ = slot.model.observe_load(now_ms, load as f64);
                }
            }
            let _ = slot.model.set_capacity(slot.capacity);
            views.push(view_of(name, slot, &params, now_ms, now, established));
        }
        views
    }

    /// Rebuilds the views without ticking (after a batch of samples).
    pub(crate) fn views(&mut self, now_ms: i64, now: f64) -> Vec<NodeView> {
        let params = self.config.params().clone();
        let established = self.established(now);
        self.nodes
            .iter_mut()
            .map(|(name, slot)| view_of(name, slot, &params, now_ms, now, established))
            .collect()
    }

    /// Whether some node is in service and past its slow start: only then does a node
    /// returning to service (or joining) ramp up. When every node starts together (a
    /// new pool, a restart), nobody has traffic to protect and keys would move for
    /// nothing.
    fn established(&self, now: f64) -> bool {
        let window = plb_routing::Shaping::default().slow_start_window;
        self.nodes.values().any(|s| {
            matches!(s.view_state, NodeState::Healthy | NodeState::Degrading)
                && s.ready_since.is_none_or(|t| now - t >= window)
        })
    }

    /// Every node's assessment at `now_ms`.
    pub(crate) fn assess(&self, now_ms: i64) -> BTreeMap<String, NodeAssessment> {
        self.nodes
            .iter()
            .map(|(n, s)| (n.clone(), s.model.assess(now_ms)))
            .collect()
    }
}

/// The routing view of one node: state from the model (stale → `unknown`), the degrade
/// score from its forecasts, its capacity, and slow start after a return to service.
fn view_of(
    name: &str,
    slot: &mut NodeSlot,
    params: &NodeParams,
    now_ms: i64,
    now: f64,
    established: bool,
) -> NodeView {
    let stale = slot.model.is_stale(now_ms);
    let state = if stale {
        NodeState::Unknown
    } else {
        slot.model.state()
    };
    let was_out = matches!(slot.view_state, NodeState::Unhealthy | NodeState::Unknown);
    let is_in = matches!(state, NodeState::Healthy | NodeState::Degrading);
    if was_out && is_in && established {
        slot.ready_since = Some(now);
    }
    slot.view_state = state;
    let mut v = NodeView::new(name, slot.address.clone());
    v.state = state;
    v.ready_since = slot.ready_since;
    v.capacity = slot.capacity;
    v.degrade_score = if state == NodeState::Unhealthy {
        1.0
    } else {
        degrade_score(&slot.model, params, now_ms)
    };
    v
}

/// How far the node's worst metric forecast has moved from halfway to its profile
/// band's edge toward its dynamic threshold (the band's edge plus `margin_z` of the
/// forecast's uncertainty): 0 while within the inner half of the band, 1 at the
/// threshold. It rises before the state turns `degrading`, so traffic shifts
/// gradually, and falls as the forecast comes back, so it returns gradually.
pub(crate) fn degrade_score(model: &NodeModel, params: &NodeParams, now_ms: i64) -> f64 {
    let sp = &params.state;
    let mut worst: f64 = 0.0;
    for (key, s) in model.series_iter() {
        if !s.profile().is_ready()
            || s.last_seen_ms()
                .is_none_or(|t| now_ms.saturating_sub(t) > sp.stale_after_ms)
        {
            continue;
        }
        let (Some(f), Some((lo, hi))) =
            (s.forecast(sp.horizon), s.profile().forecast_band(sp.band_k))
        else {
            continue;
        };
        let centre = 0.5 * (lo + hi);
        let margin = sp.margin_z * f.sigma();
        let score = match sp.direction(key) {
            MetricDirection::HigherIsWorse => {
                let start = 0.5 * (centre + hi);
                let threshold = hi + margin;
                if threshold > start {
                    (f.mean - start) / (threshold - start)
                } else {
                    0.0
                }
            }
            MetricDirection::HigherIsBetter => {
                let start = 0.5 * (centre + lo);
                let threshold = lo - margin;
                if start > threshold {
                    (start - f.mean) / (start - threshold)
                } else {
                    0.0
                }
            }
        };
        if score.is_finite() {
            worst = worst.max(score);
        }
    }
    worst.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use plb_api::Outcome;

    use super::*;

    fn sample(t: i64, v: f64) -> Sample {
        Sample {
            id: format!("s{t}"),
            pool: "web".into(),
            probe: "node".into(),
            version: 0,
            taken_at_ms: t,
            outcome: Outcome::Ok,
            metrics: BTreeMap::from([("latency-ms".to_string(), v)]),
            duration_ms: 1.0,
            fuel_used: None,
            message: String::new(),
            stderr: String::new(),
        }
    }

    const NOISE: [f64; 10] = [
        0.0, 0.02, -0.015, 0.01, -0.03, 0.025, -0.005, 0.015, -0.02, 0.03,
    ];

    #[test]
    fn the_degrade_score_rises_before_the_band_and_noise_leaves_it_at_zero() {
        let config = NodeConfig::new(NodeParams::default()).expect("params");
        let mut m = PoolModels::new(Arc::clone(&config));
        let a = || TopologyNode {
            id: 1,
            name: "a".into(),
            address: "h:1".into(),
        };
        assert!(m.sync(&[a()]));
        assert!(!m.sync(&[a()]), "nothing changed");
        let mut t = 1_000_000;
        for k in 0..60 {
            m.observe("a", &sample(t, 10.0 * (1.0 + NOISE[k % 10])))
                .expect("observe");
            t += 1000;
        }
        let views = m.views(t, 0.0);
        assert_eq!(views[0].state, NodeState::Healthy);
        assert_eq!(views[0].degrade_score, 0.0, "noise is not a trend");
        let mut first_rise = None;
        for k in 1..=30 {
            let v = 10.0 * (1.0 + 0.01 * k as f64);
            m.observe("a", &sample(t, v)).expect("observe");
            let hi = m.nodes["a"]
                .model
                .series("node/latency-ms")
                .and_then(|s| s.profile().forecast_band(3.0))
                .map(|b| b.1)
                .expect("band");
            let score = m.views(t, 0.0)[0].degrade_score;
            if score > 0.0 && first_rise.is_none() {
                first_rise = Some((v, hi, score));
            }
            t += 1000;
        }
        let (v, hi, _) = first_rise.expect("the score rises");
        assert!(
            v < hi,
            "it rose before the value left its band: {v} vs {hi}"
        );
        // Stale: unknown, and the view says so.
        let views = m.views(t + 60_000, 0.0);
        assert_eq!(views[0].state, NodeState::Unknown);
        // Unknown nodes are not learnt from.
        assert!(m.observe("zz", &sample(t, 1.0)).expect("ignored").is_none());
    }
}
