//! `least-request`: power of two choices on requests in flight (Envoy's and linkerd's
//! least-request balancer; weights and predictions ignored, unhealthy nodes skipped).
use rand::Rng;

use super::{Decision, Policy, PolicyKind, RouteRequest, candidates, p2c_on};
use crate::snapshot::Snapshot;

/// P2C on in-flight counts.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl LeastRequest {
    /// The policy.
    pub fn new() -> Self {
        LeastRequest
    }
}

impl Policy for LeastRequest {
    fn kind(&self) -> PolicyKind {
        PolicyKind::LeastRequest
    }

    fn pick<R: Rng + ?Sized>(
        &self,
        snap: &Snapshot,
        _req: &RouteRequest<'_>,
        now: f64,
        rng: &mut R,
    ) -> Option<Decision> {
        let (cands, best_effort) = candidates(snap)?;
        Some(p2c_on(
            PolicyKind::LeastRequest,
            snap,
            cands,
            best_effort,
            now,
            rng,
            |i| snap.live_at(i).in_flight() as f64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::{LiveSet, NodeView, Shaping};

    #[test]
    fn picks_the_less_loaded_of_two() {
        let live = LiveSet::default();
        let nodes = vec![NodeView::new("a", "h:1"), NodeView::new("b", "h:2")];
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        for _ in 0..5 {
            snap.live(0).expect("a").begin(0.0);
        }
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            let d = LeastRequest::new()
                .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                .expect("some");
            assert_eq!(d.index, 1);
        }
    }

    #[test]
    fn spreads_evenly_when_requests_complete_in_order() {
        let live = LiveSet::default();
        let nodes: Vec<NodeView> = (0..5)
            .map(|i| NodeView::new(format!("n{i}"), "h:1"))
            .collect();
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        let mut rng = SmallRng::seed_from_u64(9);
        let mut counts = [0u32; 5];
        let mut open = std::collections::VecDeque::new();
        for _ in 0..10_000 {
            let d = LeastRequest::new()
                .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                .expect("some");
            counts[d.index] += 1;
            snap.live(d.index).expect("bound").begin(0.0);
            open.push_back(d.index);
            if open.len() > 10 {
                let i = open.pop_front().expect("non-empty");
                snap.live(i).expect("bound").end(0.01, true, 0.0);
            }
        }
        for c in counts {
            assert!((1_800..=2_200).contains(&c), "{counts:?}");
        }
    }
}
