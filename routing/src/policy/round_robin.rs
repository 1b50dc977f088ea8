//! `round-robin`: rotation over the nodes that are not unhealthy (the simplest baseline;
//! it ignores weights, load and predictions by design).
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::{Decision, Facts, Policy, PolicyKind, Reason, RouteRequest, Rule, candidates};
use crate::snapshot::Snapshot;

/// Rotation with a shared atomic cursor.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A rotation starting at the first node.
    pub fn new() -> Self {
        RoundRobin::default()
    }
}

impl Policy for RoundRobin {
    fn kind(&self) -> PolicyKind {
        PolicyKind::RoundRobin
    }

    fn pick<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        _req: &RouteRequest<'_>,
        now: f64,
        _rng: &mut R,
    ) -> Option<Decision> {
        let (cands, best_effort) = candidates(snap)?;
        let pos = self.next.fetch_add(1, Ordering::Relaxed) % cands.len();
        let index = cands.get(pos);
        Some(Decision {
            index,
            score: 1.0,
            reason: Reason {
                policy: PolicyKind::RoundRobin,
                rule: if cands.len() == 1 {
                    Rule::Only
                } else {
                    Rule::RoundRobin
                },
                chosen: Facts::read(snap, index, now),
                key: None,
                best_effort,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use plb_api::NodeState;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::{LiveSet, NodeView, Shaping};

    #[test]
    fn rotates_and_skips_unhealthy() {
        let live = LiveSet::default();
        let mut nodes: Vec<NodeView> = (0..4)
            .map(|i| NodeView::new(format!("n{i}"), format!("h:{i}")))
            .collect();
        nodes[2].state = NodeState::Unhealthy;
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        let rr = RoundRobin::new();
        let mut rng = SmallRng::seed_from_u64(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                rr.pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                    .expect("some")
                    .index
            })
            .collect();
        assert_eq!(picks, vec![0, 1, 3, 0, 1, 3]);
    }

    #[test]
    fn all_unhealthy_is_best_effort_and_empty_is_none() {
        let live = LiveSet::default();
        let mut n = NodeView::new("a", "h:1");
        n.state = NodeState::Unhealthy;
        let snap = Snapshot::new(vec![n], &live, Shaping::default(), 0.0).expect("builds");
        let mut rng = SmallRng::seed_from_u64(0);
        let d = RoundRobin::new()
            .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
            .expect("some");
        assert!(d.reason.best_effort);
        assert!(
            d.explain(&snap).contains("best effort"),
            "{}",
            d.explain(&snap)
        );
        assert!(
            RoundRobin::new()
                .pick(&Snapshot::empty(), &RouteRequest::default(), 0.0, &mut rng)
                .is_none()
        );
    }
}
