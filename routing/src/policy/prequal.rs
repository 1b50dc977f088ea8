//! `prequal`: the hot/cold rule of Prequal (Wydrowski et al., "Load is not what you
//! should balance", NSDI '24) over this instance's own requests in flight and peak-EWMA
//! latency. The paper probes servers asynchronously for their RIF and latency; here the
//! "probe pool" is a random sample of nodes read from live state, which keeps the rule
//! and drops the probing machinery: a probed node is hot if its in-flight count is above
//! the `prequal_hot_quantile` of the probed; the cold node with the lowest latency wins,
//! else the hot one with the fewest in flight.
use rand::Rng;

use super::{
    Decision, Facts, Policy, PolicyConfig, PolicyKind, Reason, RouteRequest, Rule, candidates,
    score_of,
};
use crate::snapshot::Snapshot;

/// Most nodes a decision probes.
const MAX_PROBES: usize = 16;

/// Prequal's hot/cold lexicographic rule.
#[derive(Debug)]
pub struct Prequal {
    probes: usize,
    quantile: f64,
    default_rtt: f64,
}

impl Prequal {
    /// The policy with `config.prequal_probes` (1..=16) and `config.prequal_hot_quantile`.
    pub fn new(config: PolicyConfig) -> Self {
        Prequal {
            probes: config.prequal_probes.clamp(1, MAX_PROBES),
            quantile: if config.prequal_hot_quantile.is_finite() {
                config.prequal_hot_quantile.clamp(0.0, 1.0)
            } else {
                0.75
            },
            default_rtt: if config.default_rtt.is_finite() && config.default_rtt > 0.0 {
                config.default_rtt
            } else {
                0.03
            },
        }
    }
}

impl Policy for Prequal {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Prequal
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
        let k = self.probes.min(n);
        // Probe k distinct nodes (all of them when the pool is that small).
        let mut probed = [0usize; MAX_PROBES];
        if k == n {
            // From a random start, so ties do not always go to the first node.
            let start = rng.random_range(0..n);
            for (pos, slot) in probed.iter_mut().enumerate().take(k) {
                *slot = cands.get((start + pos) % n);
            }
        } else if n <= 4 * MAX_PROBES {
            // Small pool: partial Fisher-Yates over the positions.
            let mut pos = [0usize; 4 * MAX_PROBES];
            for (j, p) in pos.iter_mut().enumerate().take(n) {
                *p = j;
            }
            for j in 0..k {
                let r = rng.random_range(j..n);
                pos.swap(j, r);
                probed[j] = cands.get(pos[j]);
            }
        } else {
            // Large pool: draw until k distinct (collisions are rare).
            let mut filled = 0;
            while filled < k {
                let i = cands.get(rng.random_range(0..n));
                if !probed[..filled].contains(&i) {
                    probed[filled] = i;
                    filled += 1;
                }
            }
        }
        let probed = &probed[..k];
        let mut rif = [0u64; MAX_PROBES];
        for (slot, &i) in rif.iter_mut().zip(probed) {
            *slot = snap.live_at(i).in_flight();
        }
        let mut sorted = rif;
        sorted[..k].sort_unstable();
        let threshold = sorted[((self.quantile * (k - 1) as f64).floor() as usize).min(k - 1)];

        let mut best_cold: Option<(f64, u64, usize)> = None;
        let mut best_hot: Option<(u64, usize)> = None;
        for (pos, &i) in probed.iter().enumerate() {
            let r = rif[pos];
            if r <= threshold {
                let lat = snap.live_at(i).latency(now).unwrap_or(self.default_rtt);
                if best_cold.is_none_or(|(bl, br, _)| lat < bl || (lat == bl && r < br)) {
                    best_cold = Some((lat, r, i));
                }
            } else if best_hot.is_none_or(|(br, _)| r < br) {
                best_hot = Some((r, i));
            }
        }
        let (index, score, rule) = match (best_cold, best_hot) {
            (Some((lat, _, i)), _) => (
                i,
                score_of(lat),
                Rule::PrequalCold {
                    probed: k,
                    threshold,
                },
            ),
            (None, Some((r, i))) => (
                i,
                score_of(r as f64),
                Rule::PrequalHot {
                    probed: k,
                    threshold,
                },
            ),
            (None, None) => return None,
        };
        Some(Decision {
            index,
            score,
            reason: Reason {
                policy: PolicyKind::Prequal,
                rule,
                chosen: Facts::read(snap, index, now),
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

    fn pool(n: usize) -> (LiveSet, Snapshot) {
        let live = LiveSet::default();
        let nodes = (0..n)
            .map(|i| NodeView::new(format!("n{i}"), "h:1"))
            .collect();
        let snap = Snapshot::new(nodes, &live, Shaping::default(), 0.0).expect("builds");
        (live, snap)
    }

    #[test]
    fn cold_node_with_lowest_latency_wins_over_a_hot_faster_one() {
        let (_live, snap) = pool(4);
        // n0: fastest but hot (10 in flight); n1: cold and 20 ms; n2, n3: cold, 50 ms.
        for _ in 0..10 {
            snap.live(0).expect("bound").begin(0.0);
        }
        snap.live(0).expect("bound").observe(0.005, true, 0.0);
        snap.live(1).expect("bound").observe(0.020, true, 0.0);
        snap.live(2).expect("bound").observe(0.050, true, 0.0);
        snap.live(3).expect("bound").observe(0.050, true, 0.0);
        let p = Prequal::new(PolicyConfig::default());
        let mut rng = SmallRng::seed_from_u64(2);
        let d = p
            .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
            .expect("some");
        assert_eq!(d.index, 1);
        assert!(matches!(
            d.reason.rule,
            Rule::PrequalCold {
                probed: 4,
                threshold: 0
            }
        ));
        assert!(d.explain(&snap).contains("cold"), "{}", d.explain(&snap));
    }

    #[test]
    fn pools_larger_than_the_probe_count_spread_over_every_node() {
        // 20 nodes: partial Fisher-Yates; 100 nodes: distinct draws.
        for n in [20usize, 100] {
            let (_live, snap) = pool(n);
            let p = Prequal::new(PolicyConfig::default());
            let mut rng = SmallRng::seed_from_u64(5);
            let mut counts = vec![0usize; n];
            for _ in 0..200 * n {
                let d = p
                    .pick(&snap, &RouteRequest::default(), 0.0, &mut rng)
                    .expect("some");
                assert!(matches!(d.reason.rule, Rule::PrequalCold { probed: 8, .. }));
                counts[d.index] += 1;
            }
            // Idle and equal: the first probed wins, so the choice is uniform.
            let (lo, hi) = (
                counts.iter().min().expect("n > 0"),
                counts.iter().max().expect("n > 0"),
            );
            assert!(*lo > 140 && *hi < 260, "n={n}: {lo}..{hi}");
        }
    }
}
