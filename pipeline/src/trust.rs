//! How far each probe metric has earned a say in routing. A metric moves traffic only
//! as far as it has predicted latency on this pool: once a tick, each node's level of
//! the metric, as a robust z-score over the pool ([`crate::peers`]), is remembered;
//! `lead_ms` later it is paired with the node's feedback latency over the last tick,
//! as a z-score over the pool too. The correlation of those pairs (exponentially
//! weighted, so old evidence fades) says whether a node that stands out in the metric
//! now stands out in latency a little later: queue depth before a slow-down does, a
//! metric that wobbles without meaning does not. A correlation from a few pairs is
//! mostly chance, and a metric trusted by chance sheds healthy nodes (on identical
//! nodes, measured: the queue depth of a 2-worker backend, a noise metric there, shed
//! most of the pool within 15 s of its profile warming up). So the evidence counted is
//! the correlation's lower confidence bound (Fisher's z, `confidence_z` standard errors
//! below, over the weighted pair count), not the correlation itself: it grows with the
//! evidence. Trust is that bound over `full_corr`, clamped to 0..=1 and shrunk toward
//! `prior` (none by default: a metric earns its say) while there are few pairs; a
//! node's degrade score from the metric is multiplied by it. A pool that has never
//! had feedback from enough nodes to compare with (route decisions without reported
//! outcomes) has nothing but its probes to route on: there every metric counts in full
//! until the first comparison is possible. Pure.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use plb_api::MetricTrust;

/// Settings of [`TrustTracker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustConfig {
    /// `false`: every metric is trusted in full (no trust tracking).
    pub enabled: bool,
    /// How far ahead a metric must predict latency, ms.
    pub lead_ms: i64,
    /// Trust before any evidence, 0..=1.
    pub prior: f64,
    /// Weight of the prior, in pairs.
    pub prior_pairs: f64,
    /// Correlation (its lower confidence bound) at which a metric is trusted in full.
    pub full_corr: f64,
    /// How many standard errors below the measured correlation its lower confidence
    /// bound is (2: about 98 % one-sided).
    pub confidence_z: f64,
    /// Each new pair multiplies the weight of older ones by this.
    pub decay: f64,
    /// Fewest nodes with feedback in a tick for its latencies to be compared.
    pub min_nodes: usize,
    /// Fewest feedback rows of a node in a tick for its mean latency to count.
    pub min_rows: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            enabled: true,
            lead_ms: 2_000,
            prior: 0.0,
            prior_pairs: 20.0,
            full_corr: 0.3,
            confidence_z: 2.0,
            decay: 0.998,
            min_nodes: 3,
            min_rows: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: f64,
    sxy: f64,
    sxx: f64,
    syy: f64,
}

impl Moments {
    fn add(&mut self, x: f64, y: f64, decay: f64) {
        self.n = self.n * decay + 1.0;
        self.sxy = self.sxy * decay + x * y;
        self.sxx = self.sxx * decay + x * x;
        self.syy = self.syy * decay + y * y;
    }

    /// Correlation of the (zero-centred) pairs, 0 without spread.
    fn corr(&self) -> f64 {
        let d = (self.sxx * self.syy).sqrt();
        if d > 1e-12 {
            (self.sxy / d).clamp(-1.0, 1.0)
        } else {
            0.0
        }
    }

    /// The correlation's lower confidence bound, `z` standard errors below it on
    /// Fisher's scale (standard error `1 / sqrt(n - 3)`); -1 with 4 pairs or fewer.
    fn corr_lower(&self, z: f64) -> f64 {
        lower_bound(self.corr(), self.n, z)
    }
}

/// The lower confidence bound of a correlation `r` measured over `n` pairs: Fisher's
/// `atanh(r) - z / sqrt(n - 3)`, back through `tanh`; -1 when `n <= 4`.
pub fn lower_bound(r: f64, n: f64, z: f64) -> f64 {
    if n.is_nan() || n <= 4.0 || !r.is_finite() {
        return -1.0;
    }
    let r = r.clamp(-0.999_999, 0.999_999);
    (r.atanh() - z.max(0.0) / (n - 3.0).sqrt()).tanh()
}

/// Robust z-scores of `values` over themselves (median, 1.4826 × MAD with a floor of a
/// tenth of the median); `None` with fewer than `min` values.
pub fn robust_z(values: &[(Arc<str>, f64)], min: usize) -> Option<Vec<(Arc<str>, f64)>> {
    if values.len() < min.max(2) {
        return None;
    }
    let mut v: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
    v.sort_by(f64::total_cmp);
    let m = v[v.len() / 2];
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let spread = (1.4826 * dev[dev.len() / 2]).max(0.1 * m.abs()).max(1e-9);
    Some(
        values
            .iter()
            .map(|(n, x)| (Arc::clone(n), ((x - m) / spread).clamp(-10.0, 10.0)))
            .collect(),
    )
}

/// Each metric's z-scores per node at one tick, by series key.
pub type Levels = HashMap<String, Vec<(Arc<str>, f64)>>;

/// Each probe metric's trust in one pool (see the module docs).
#[derive(Debug, Default)]
pub struct TrustTracker {
    config: TrustConfig,
    /// Per tick: when, and each metric's z-score per node.
    levels: VecDeque<(i64, Levels)>,
    moments: HashMap<String, Moments>,
    /// Ticks whose feedback latencies could be compared (enough nodes with feedback).
    feedback_ticks: u64,
}

impl TrustTracker {
    /// A tracker with `config`.
    pub fn new(config: TrustConfig) -> Self {
        TrustTracker {
            config,
            levels: VecDeque::new(),
            moments: HashMap::new(),
            feedback_ticks: 0,
        }
    }

    /// Records the metrics' z-scores over the pool at `now_ms` (one map per tick), and
    /// pairs those of `lead_ms` ago with the nodes' latency z-scores of this tick
    /// (`latency`: each node's mean feedback latency over the tick, ms).
    pub fn tick(&mut self, now_ms: i64, levels: Levels, latency: &[(Arc<str>, f64)]) {
        let lead = self.config.lead_ms.max(0);
        // The newest remembered tick at least `lead` old is the one to pair.
        let mut pair_with = None;
        while let Some((t, _)) = self.levels.front() {
            if now_ms.saturating_sub(*t) < lead {
                break;
            }
            pair_with = self.levels.pop_front();
        }
        let lat_z = robust_z(latency, self.config.min_nodes);
        if lat_z.is_some() {
            self.feedback_ticks += 1;
        }
        if let (Some((_, then)), Some(lat_z)) = (pair_with, lat_z) {
            let lat: HashMap<&str, f64> = lat_z.iter().map(|(n, z)| (&**n, *z)).collect();
            for (key, zs) in then {
                let m = self.moments.entry(key).or_default();
                for (node, x) in zs {
                    if let Some(&y) = lat.get(&*node) {
                        m.add(x, y, self.config.decay);
                    }
                }
            }
        }
        self.levels.push_back((now_ms, levels));
        // Bounded: ticks come about once a second; keep a minute at most.
        while self.levels.len() > 64 {
            self.levels.pop_front();
        }
    }

    /// Whether the pool has had feedback to judge its metrics by.
    pub fn has_feedback(&self) -> bool {
        self.feedback_ticks > 0
    }

    /// Metric `key`'s trust, 0..=1: 1 while the pool has never had feedback to compare
    /// with, else the prior for a metric with no pairs yet, shrunk toward what it earns.
    pub fn trust(&self, key: &str) -> f64 {
        let c = &self.config;
        if !c.enabled || !self.has_feedback() {
            return 1.0;
        }
        let (n, lower) = self
            .moments
            .get(key)
            .map_or((0.0, -1.0), |m| (m.n, m.corr_lower(c.confidence_z)));
        let earned = (lower / c.full_corr.max(1e-9)).clamp(0.0, 1.0);
        let w = c.prior_pairs.max(0.0);
        if n + w <= 0.0 {
            return c.prior.clamp(0.0, 1.0);
        }
        ((w * c.prior + n * earned) / (w + n)).clamp(0.0, 1.0)
    }

    /// Every metric seen, with its trust and the evidence behind it, by key.
    pub fn report(&self) -> Vec<MetricTrust> {
        let mut keys: Vec<&String> = self.moments.keys().collect();
        for (_, m) in &self.levels {
            keys.extend(m.keys());
        }
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| {
                let (pairs, corr) = self
                    .moments
                    .get(k)
                    .map_or((0.0, 0.0), |m| (m.n, m.corr()));
                let trust = self.trust(k);
                let reason = if !self.has_feedback() {
                    format!(
                        "no feedback from {} nodes in this pool to check it against: counted in full (trust starts at {:.0}% once there is)",
                        self.config.min_nodes,
                        self.config.prior * 100.0
                    )
                } else if pairs < 1.0 {
                    format!(
                        "no evidence yet: trust starts at {:.0}%; pairs form once {} nodes report feedback",
                        self.config.prior * 100.0,
                        self.config.min_nodes
                    )
                } else if corr <= 0.0 {
                    format!(
                        "a node standing out in this metric has not stood out in latency {} s later (correlation {corr:.2} over {pairs:.0} weighted pairs): fading out",
                        self.config.lead_ms as f64 / 1000.0
                    )
                } else {
                    let lower = lower_bound(corr, pairs, self.config.confidence_z);
                    format!(
                        "a node standing out in this metric stood out in latency {} s later with correlation {corr:.2} over {pairs:.0} weighted pairs; at least {:.2} with {:.0} standard errors' confidence (full trust from {:.2})",
                        self.config.lead_ms as f64 / 1000.0,
                        lower.max(0.0),
                        self.config.confidence_z,
                        self.config.full_corr
                    )
                };
                MetricTrust {
                    metric: k.clone(),
                    trust,
                    correlation: corr,
                    pairs,
                    lead_ms: self.config.lead_ms,
                    reason,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("n{i}"))).collect()
    }

    /// Runs `ticks` ticks of 8 nodes where node `hot(t)` stands out in the metric at
    /// tick t and, if `predictive`, in latency two ticks later.
    fn run(predictive: bool, ticks: i64) -> TrustTracker {
        let nodes = names(8);
        let mut t = TrustTracker::new(TrustConfig::default());
        let hot = |tick: i64| (tick / 7 % 8) as usize;
        for tick in 0..ticks {
            let now = tick * 1_000;
            let metric: Vec<(Arc<str>, f64)> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let noise = ((i as i64 * 31 + tick * 17) % 7) as f64 * 0.1;
                    (
                        Arc::clone(n),
                        if i == hot(tick) { 5.0 } else { 1.0 + noise },
                    )
                })
                .collect();
            let levels = robust_z(&metric, 3).expect("8 nodes");
            let lat: Vec<(Arc<str>, f64)> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let noise = ((i as i64 * 13 + tick * 29) % 5) as f64;
                    let slow = predictive && tick >= 2 && i == hot(tick - 2);
                    (Arc::clone(n), if slow { 80.0 } else { 20.0 + noise })
                })
                .collect();
            let mut m = HashMap::new();
            m.insert("p/queue".to_string(), levels);
            t.tick(now, m, &lat);
        }
        t
    }

    #[test]
    fn a_metric_that_leads_latency_earns_trust_and_one_that_does_not_fades() {
        let fresh = TrustTracker::new(TrustConfig::default());
        assert_eq!(fresh.trust("p/queue"), 1.0, "no feedback yet: face value");
        let first = run(true, 1);
        assert!(first.has_feedback());
        assert_eq!(
            first.trust("p/queue"),
            0.0,
            "feedback, no pairs yet: the prior (none)"
        );
        let good = run(true, 200);
        assert!(good.trust("p/queue") > 0.9, "{:?}", good.report());
        let bad = run(false, 200);
        assert!(bad.trust("p/queue") < 0.2, "{:?}", bad.report());
        let r = &bad.report()[0];
        assert_eq!(r.metric, "p/queue");
        assert!(
            r.reason.contains("fading out") || r.correlation < 0.1,
            "{r:?}"
        );
    }

    #[test]
    fn a_correlation_from_few_pairs_earns_little() {
        // The same correlation is worth more the more pairs it rests on.
        assert_eq!(lower_bound(0.5, 4.0, 2.0), -1.0);
        let few = lower_bound(0.5, 16.0, 2.0);
        let many = lower_bound(0.5, 400.0, 2.0);
        assert!(few < 0.05 && many > 0.4, "{few} {many}");
        assert!((lower_bound(0.5, 400.0, 0.0) - 0.5).abs() < 1e-9);
        // A correlation of 0.46 over 16 pairs (chance, as often as not): no trust.
        let mut t = TrustTracker::new(TrustConfig::default());
        let mut m = Moments::default();
        for (x, y) in [(1.0, 0.5), (-0.5, 0.2), (0.3, 1.0), (-1.0, -0.1)]
            .iter()
            .cycle()
            .take(16)
        {
            m.add(*x, *y, 1.0);
        }
        assert!(m.corr() > 0.3, "chance correlation {}", m.corr());
        t.moments.insert("k".into(), m);
        t.feedback_ticks = 1;
        assert!(t.trust("k") < 0.05, "{}", t.trust("k"));
    }

    #[test]
    fn too_few_nodes_with_feedback_leave_metrics_at_face_value() {
        let mut t = TrustTracker::new(TrustConfig::default());
        let nodes = names(2);
        for tick in 0..10 {
            let lv: Vec<(Arc<str>, f64)> = nodes.iter().map(|n| (Arc::clone(n), 1.0)).collect();
            let mut m = HashMap::new();
            m.insert("k".to_string(), lv.clone());
            t.tick(tick * 1_000, m, &lv);
        }
        assert!(!t.has_feedback());
        assert_eq!(t.trust("k"), 1.0);
        assert!(
            t.report()[0].reason.starts_with("no feedback"),
            "{:?}",
            t.report()
        );
    }
}
