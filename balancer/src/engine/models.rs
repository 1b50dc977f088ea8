//! [`PoolState`]: one pool's prediction side as the engine holds it: the shared
//! pipeline ([`PoolPredictor`], the only producer of routing views, the same type the
//! benchmark runs) plus the store's row id of each node, so that state changes and
//! decision counts can be written. Plain synchronous code; the engine task owns the
//! calls, under the router's mutex.
use std::collections::HashMap;

use plb_api::{Sample, StateChange};
use plb_pipeline::PoolPredictor;
use plb_predict::PredictError;

use crate::store::TopologyNode;

/// A state change to store.
#[derive(Debug, Clone)]
pub(crate) struct NodeChange {
    pub node_id: i64,
    pub node: String,
    pub change: StateChange,
}

/// One pool's pipeline and its nodes' row ids.
#[derive(Debug)]
pub(crate) struct PoolState {
    pub predictor: PoolPredictor,
    pub ids: HashMap<String, i64>,
}

impl PoolState {
    pub(crate) fn new(predictor: PoolPredictor) -> Self {
        PoolState {
            predictor,
            ids: HashMap::new(),
        }
    }

    /// Makes the node set `nodes`: new nodes start `unknown`, gone nodes are
    /// forgotten. Returns whether anything changed.
    pub(crate) fn sync(&mut self, nodes: &[TopologyNode]) -> bool {
        let changed = self
            .predictor
            .sync(nodes.iter().map(|n| (n.name.as_str(), n.address.as_str())));
        let ids: HashMap<String, i64> = nodes.iter().map(|n| (n.name.clone(), n.id)).collect();
        let ids_changed = ids != self.ids;
        self.ids = ids;
        changed || ids_changed
    }

    /// Learns one committed sample of `node`. `Ok(None)` for a node not (yet) in the
    /// pool or a sample that changed nothing.
    pub(crate) fn observe(
        &mut self,
        node: &str,
        s: &Sample,
    ) -> Result<Option<NodeChange>, PredictError> {
        let change = self.predictor.observe_sample(node, s)?;
        Ok(change.and_then(|change| self.change(node, change)))
    }

    /// A change of `node` with its row id (`None` for a node without one).
    pub(crate) fn change(&self, node: &str, change: StateChange) -> Option<NodeChange> {
        Some(NodeChange {
            node_id: *self.ids.get(node)?,
            node: node.to_string(),
            change,
        })
    }
}
