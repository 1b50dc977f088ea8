//! `least-conn`: the node with the fewest requests in flight over *every* eligible node
//! (HAProxy's `leastconn`, nginx's `least_conn`; weights and predictions ignored,
//! unhealthy nodes skipped). Ties go to a random one of the tied nodes, as a rotation
//! would spread them. A full scan costs O(n) per decision: the anchor that small pools
//! are measured against, where looking at every node beats sampling two.
use rand::Rng;

use super::{Decision, Facts, Policy, PolicyKind, Reason, RouteRequest, Rule, candidates};
use crate::snapshot::Snapshot;

/// Fewest in flight over all eligible nodes.
#[derive(Debug, Default)]
pub struct LeastConn;

impl LeastConn {
    /// The policy.
    pub fn new() -> Self {
        LeastConn
    }
}

impl Policy for LeastConn {
    fn kind(&self) -> PolicyKind {
        PolicyKind::LeastConn
    }

    fn pick<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        _req: &RouteRequest<'_>,
        now: f64,
        rng: &mut R,
    ) -> Option<Decision> {
        let (cands, best_effort) = candidates(snap)?;
        let n = cands.len();
        // Scan from a random start; the first strict minimum wins, so ties are random.
        let start = rng.random_range(0..n);
        let mut best = cands.get(start);
        let mut least = snap.live_at(best).in_flight();
        for off in 1..n {
            let i = cands.get((start + off) % n);
            let f = snap.live_at(i).in_flight();
            if f < least {
                least = f;
                best = i;
            }
        }
        Some(Decision {
            index: best,
            score: super::score_of(least as f64),
            reason: Reason {
                policy: PolicyKind::LeastConn,
                rule: if n == 1 {
                    Rule::Only
                } else {
                    Rule::FullScan { scanned: n }
                },
                chosen: Facts::read(snap, best, now),
                key: None,
                best_effort,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::{LiveSet, NodeView, Shaping};
    use plb_api::NodeState;

    #[test]
    fn picks_the_least_loaded_of_all_and_spreads_ties() {
        let live = LiveSet::default();
        let nodes: Vec<NodeView> = (0..8)
            .map(|i| NodeView::new(format!("n{i}"), format!("h:{i}")))
            .collect();
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        // Every node busy but n5.
        for i in 0..8 {
            if i != 5 {
                snap.live(i).expect("bound").begin(0.0);
            }
        }
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..50 {
            let d = LeastConn::new()
                .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                .expect("some");
            assert_eq!(d.index, 5);
            assert_eq!(d.reason.rule, Rule::FullScan { scanned: 8 });
        }
        // All tied: every node gets about an eighth.
        snap.live(5).expect("bound").begin(0.0);
        let mut counts = [0usize; 8];
        for _ in 0..8_000 {
            counts[LeastConn::new()
                .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                .expect("some")
                .index] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn skips_unhealthy_nodes() {
        let live = LiveSet::default();
        let mut nodes: Vec<NodeView> = (0..3)
            .map(|i| NodeView::new(format!("n{i}"), format!("h:{i}")))
            .collect();
        nodes[0].state = NodeState::Unhealthy;
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        snap.live(1).expect("bound").begin(0.0);
        snap.live(2).expect("bound").begin(0.0);
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..100 {
            let d = LeastConn::new()
                .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                .expect("some");
            assert_ne!(d.index, 0);
        }
    }
}
