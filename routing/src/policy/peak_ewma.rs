//! `peak-ewma`: power of two choices on peak-EWMA latency × (in flight + 1), the cost
//! of Finagle's and linkerd's `PeakEwma` balancer (unhealthy nodes skipped).
use rand::Rng;

use super::{Decision, Policy, PolicyConfig, PolicyKind, RouteRequest, candidates, p2c_on};
use crate::snapshot::Snapshot;

/// P2C on latency × load.
#[derive(Debug, Default)]
pub struct PeakEwmaP2c {
    default_rtt: f64,
}

impl PeakEwmaP2c {
    /// The policy; a node with no response yet counts `config.default_rtt` seconds.
    pub fn new(config: PolicyConfig) -> Self {
        let default_rtt = if config.default_rtt.is_finite() && config.default_rtt > 0.0 {
            config.default_rtt
        } else {
            0.03
        };
        PeakEwmaP2c { default_rtt }
    }
}

impl Policy for PeakEwmaP2c {
    fn kind(&self) -> PolicyKind {
        PolicyKind::PeakEwma
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
            PolicyKind::PeakEwma,
            snap,
            cands,
            best_effort,
            now,
            rng,
            |i| {
                let live = snap.live_at(i);
                live.latency(now).unwrap_or(self.default_rtt) * (live.in_flight() as f64 + 1.0)
            },
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
    fn prefers_the_faster_node_at_equal_load_and_the_idle_one_when_loaded() {
        let live = LiveSet::default();
        let nodes = vec![NodeView::new("fast", "h:1"), NodeView::new("slow", "h:2")];
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        snap.live(0).expect("bound").observe(0.010, true, 1.0);
        snap.live(1).expect("bound").observe(0.050, true, 1.0);
        let p = PeakEwmaP2c::new(PolicyConfig::default());
        let mut rng = SmallRng::seed_from_u64(1);
        let d = p
            .pick(&snap, &RouteRequest::default(), 1.0, &mut rng)
            .expect("some");
        assert_eq!(d.index, 0);
        assert!(
            d.explain(&snap).contains("node fast"),
            "{}",
            d.explain(&snap)
        );
        // 10 ms × 6 in flight = 60 > 50 ms × 1.
        for _ in 0..5 {
            snap.live(0).expect("bound").begin(0.0);
        }
        let d = p
            .pick(&snap, &RouteRequest::default(), 1.0, &mut rng)
            .expect("some");
        assert_eq!(d.index, 1);
    }
}
