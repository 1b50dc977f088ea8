//! Judging a node against its peers. A node's own degrade score holds its forecasts
//! against its own history; when the whole pool moves together (a node crashed and the
//! survivors got busier, a burst, a deploy), every node's history says "worse" and
//! shedding all of them moves nothing anywhere but into a cascade. So each series'
//! score counts only as far as the node also stands out from the same series on the
//! other nodes: its level's robust z-score against the pool (median, MAD, with a floor
//! relative to the median so that a tight pool's noise is not an outlier) passes
//! through a smoothstep from `peer_z_start` to `peer_z_full`. A node is shed when it
//! is worse than its own past *and* worse than its peers; a pool-wide change is the
//! business of capacity and scaling, not of routing. Pools with fewer than
//! `peer_min_nodes` nodes reporting a series keep that series' own score.
use std::collections::HashMap;

use plb_predict::DegradeParts;

use crate::config::ViewConfig;

/// Robust location and spread of one series' levels across the pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerStats {
    /// Median level.
    pub median: f64,
    /// Spread: 1.4826 × MAD, at least `peer_rel_floor` × |median| (and a tiny absolute
    /// floor).
    pub spread: f64,
    /// Nodes compared.
    pub nodes: usize,
}

/// The median of `v` (sorted in place; 0 when empty).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Each series' peer statistics over the nodes' parts (`None` = stale node), for series
/// that at least `cfg.peer_min_nodes` nodes report.
pub fn peer_stats(parts: &[Option<DegradeParts>], cfg: &ViewConfig) -> HashMap<String, PeerStats> {
    let mut levels: HashMap<&str, Vec<f64>> = HashMap::new();
    for p in parts.iter().flatten() {
        for s in p.series.iter().chain(p.demand.iter()) {
            levels.entry(s.key.as_str()).or_default().push(s.level);
        }
    }
    let min_nodes = cfg.peer_min_nodes.max(2);
    levels
        .into_iter()
        .filter(|(_, v)| v.len() >= min_nodes)
        .map(|(k, mut v)| (k.to_string(), PeerStats::of(&mut v, cfg)))
        .collect()
}

impl PeerStats {
    /// The robust location and spread of `levels` (reordered; none: median 0).
    pub fn of(levels: &mut [f64], cfg: &ViewConfig) -> PeerStats {
        let m = median(levels);
        let mut dev: Vec<f64> = levels.iter().map(|x| (x - m).abs()).collect();
        let mad = median(&mut dev);
        PeerStats {
            median: m,
            spread: (1.4826 * mad).max(cfg.peer_rel_floor * m.abs()).max(1e-9),
            nodes: levels.len(),
        }
    }

    /// How many robust standard deviations `level` is above the median.
    pub fn z(&self, level: f64) -> f64 {
        (level - self.median) / self.spread
    }
}

/// How far a level stands out from its peers, 0..=1: 0 up to `peer_z_start` robust
/// standard deviations above the median, 1 from `peer_z_full`, a smoothstep between.
pub fn peer_factor(level: f64, stats: &PeerStats, cfg: &ViewConfig) -> f64 {
    smooth_ramp(stats.z(level), cfg.peer_z_start, cfg.peer_z_full)
}

/// 0 up to `start`, 1 from `full`, a smoothstep (`3x² - 2x³`) between; 0 for NaN.
pub(crate) fn smooth_ramp(v: f64, start: f64, full: f64) -> f64 {
    let span = (full - start).max(1e-9);
    let x = ((v - start) / span).clamp(0.0, 1.0);
    if x.is_finite() {
        x * x * (3.0 - 2.0 * x)
    } else {
        0.0
    }
}

/// Each node's degrade score judged against its own history and its peers: 1 for an
/// `unhealthy` node, 0 for a stale one, else the worst series' (and demand's) own score
/// times its peer factor (1 where too few peers report the series) and, for a probe
/// metric, its trust (`trust(key)`, [`crate::trust`]).
pub fn peer_scores(
    parts: &[Option<DegradeParts>],
    cfg: &ViewConfig,
    trust: &dyn Fn(&str) -> f64,
) -> Vec<f64> {
    let stats = peer_stats(parts, cfg);
    parts
        .iter()
        .map(|p| {
            let Some(p) = p else { return 0.0 };
            if p.unhealthy {
                return 1.0;
            }
            let series = p.series.iter().map(|s| (s, true));
            series
                .chain(p.demand.iter().map(|s| (s, false)))
                .map(|(s, probe_metric)| {
                    // A probe metric counts only as far as it is trusted, with peers to
                    // judge it by or not: in a pool whose nodes finish warming their
                    // profiles a moment apart, the first node's fresh baseline would
                    // otherwise shed it on its own score for a tick (and the release
                    // envelope hold that for seconds), untrusted metric or not. Where
                    // the pool has never had feedback to judge metrics by, trust is 1.
                    let trusted = if probe_metric { trust(&s.key) } else { 1.0 };
                    let factor = stats
                        .get(&s.key)
                        .map_or(1.0, |st| peer_factor(s.level, st, cfg));
                    s.score * factor * trusted
                })
                .fold(0.0, f64::max)
                .clamp(0.0, 1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use plb_predict::ScoredSeries;

    use super::*;

    fn node(score: f64, level: f64) -> Option<DegradeParts> {
        Some(DegradeParts {
            unhealthy: false,
            series: vec![ScoredSeries {
                key: "p/queue".into(),
                score,
                level,
            }],
            demand: None,
        })
    }

    #[test]
    fn a_pool_wide_rise_sheds_nobody_and_an_outlier_is_shed() {
        let cfg = ViewConfig::default();
        // Every node far above its own history, at similar levels: common mode.
        let all: Vec<_> = (0..8).map(|i| node(1.0, 10.0 + i as f64 * 0.2)).collect();
        let s = peer_scores(&all, &cfg, &|_| 1.0);
        assert!(s.iter().all(|&x| x < 0.05), "{s:?}");
        // One node above its history and far above its peers: shed in full.
        let mut one: Vec<_> = (0..7).map(|i| node(0.1, 2.0 + i as f64 * 0.1)).collect();
        one.push(node(1.0, 12.0));
        let s = peer_scores(&one, &cfg, &|_| 1.0);
        assert!(s[7] > 0.99, "{s:?}");
        assert!(s[..7].iter().all(|&x| x < 0.11), "{s:?}");
    }

    #[test]
    fn two_slow_of_eight_still_stand_out() {
        let cfg = ViewConfig::default();
        let mut p: Vec<_> = (0..6).map(|i| node(0.2, 3.0 + i as f64 * 0.1)).collect();
        p.push(node(1.0, 9.0));
        p.push(node(1.0, 10.0));
        let s = peer_scores(&p, &cfg, &|_| 1.0);
        assert!(s[6] > 0.99 && s[7] > 0.99, "{s:?}");
    }

    #[test]
    fn wobble_inside_the_pool_spread_is_not_a_reason_to_shed() {
        let cfg = ViewConfig::default();
        // Identical nodes whose forecast queue depth wobbles; the one at the top of the
        // spread, with a high own score, is not an outlier.
        let levels = [1.0, 1.5, 1.2, 2.0, 1.8, 2.4, 1.1, 2.6];
        let p: Vec<_> = levels.iter().map(|&l| node(1.0, l)).collect();
        let s = peer_scores(&p, &cfg, &|_| 1.0);
        assert!(s[7] < 0.5, "{s:?}");
    }

    #[test]
    fn small_pools_and_unhealthy_and_stale_nodes() {
        let cfg = ViewConfig::default();
        let p = vec![node(0.7, 5.0), node(0.1, 1.0)];
        assert_eq!(peer_scores(&p, &cfg, &|_| 1.0), vec![0.7, 0.1]);
        let mut p = vec![node(0.0, 1.0), node(0.0, 1.0), node(0.0, 1.0), None];
        p[0].as_mut().expect("some").unhealthy = true;
        assert_eq!(peer_scores(&p, &cfg, &|_| 1.0), vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn an_untrusted_metric_sheds_nobody_even_before_its_peers_report_it() {
        // Eight nodes; only the first has warmed its profile of the metric, and its
        // fresh baseline scores high. Too few peers to judge it by, but the metric has
        // earned no trust: no shed.
        let cfg = ViewConfig::default();
        let mut p = vec![node(0.9, 3.0)];
        p.extend((0..7).map(|_| {
            Some(DegradeParts {
                unhealthy: false,
                series: Vec::new(),
                demand: None,
            })
        }));
        assert_eq!(peer_scores(&p, &cfg, &|_| 0.0), vec![0.0; 8]);
        // Trusted in full (a pool with no feedback to judge by), the own score counts.
        assert_eq!(peer_scores(&p, &cfg, &|_| 1.0)[0], 0.9);
    }
}
