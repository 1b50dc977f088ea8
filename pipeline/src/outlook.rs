//! Each node's latency outlook from request feedback alone, so that a pool routes
//! predictively with no probe at all. Once a tick, a node's mean feedback latency over
//! the tick (enough rows) updates a level and a trend (Holt's linear smoothing, the
//! trend per second; a tick's mean counts at most `max_step` times the level, so a
//! step reads as a step and not a climb); the outlook is the level plus the trend over
//! `horizon_ms`. Its score rises, through a smoothstep, from `start` to `full`
//! times the pool's SLO, and counts only as far as the node's level also stands out
//! from its peers' ([`crate::peers::peer_factor`]): a pool that slows as one (a burst,
//! a lost node) sheds nobody. A second, peer-relative score sees a node climbing away
//! from a calm pool long before it nears the SLO: its outlook as a fraction of the way
//! from the pool's median level to the SLO (`rel_start` to `rel_full`), counted only as
//! far as its level is a clear outlier (robust z from `rel_z_start` to `rel_z_full`, so
//! a pool whose nodes all wander, as in fluctuating speeds, is left to the live latency
//! estimate). A node's score is the larger of the two. A node without a fresh update
//! for `stale_ms` (shed so far it gets too few requests to measure) has no outlook
//! score: the release envelope of the views brings it back gradually, and its latency
//! speaks again; its next update starts the level over rather than carrying it
//! across the gap by its old trend. Pure.
use crate::config::ViewConfig;
use crate::peers::{PeerStats, peer_factor, smooth_ramp};

/// Settings of the latency outlook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlookConfig {
    /// `false`: no outlook score.
    pub enabled: bool,
    /// Smoothing of the level, 0..=1 (weight of the newest tick).
    pub alpha: f64,
    /// Smoothing of the trend, 0..=1.
    pub beta: f64,
    /// How far ahead the outlook looks, ms.
    pub horizon_ms: i64,
    /// Outlook, as a fraction of the SLO, where the score starts to rise.
    pub start: f64,
    /// Outlook, as a fraction of the SLO, where the score is 1.
    pub full: f64,
    /// An outlook not updated for this long scores nothing, ms.
    pub stale_ms: i64,
    /// Whether a level not updated for `stale_ms` starts over at the next tick's mean
    /// (trend 0) rather than being carried across the gap.
    pub restart_stale: bool,
    /// Fewest feedback rows of a node in a tick for its mean latency to count.
    pub min_rows: u32,
    /// A tick's mean counts at most this many times the level (at least 1).
    pub max_step: f64,
    /// Outlook, as a fraction of the way from the pool's median level to the SLO,
    /// where the peer-relative score starts to rise (judged only with peers;
    /// infinite: no peer-relative score).
    pub rel_start: f64,
    /// Where the peer-relative score is 1.
    pub rel_full: f64,
    /// Robust z-score of the node's level over the pool's where the peer-relative
    /// score starts to count.
    pub rel_z_start: f64,
    /// Where it counts in full.
    pub rel_z_full: f64,
}

impl Default for OutlookConfig {
    fn default() -> Self {
        OutlookConfig {
            enabled: true,
            alpha: 0.3,
            beta: 0.2,
            horizon_ms: 5_000,
            start: 0.4,
            full: 1.0,
            stale_ms: 3_000,
            restart_stale: true,
            min_rows: 3,
            max_step: 1.5,
            rel_start: 0.03,
            rel_full: 0.2,
            rel_z_start: 3.0,
            rel_z_full: 6.0,
        }
    }
}

/// One node's smoothed feedback latency and its trend.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outlook {
    /// Smoothed mean latency, ms (`None` before the first update).
    level: Option<f64>,
    /// Trend, ms per second.
    trend: f64,
    /// When last updated, ms.
    at_ms: i64,
}

impl Outlook {
    /// Folds in the mean feedback latency `mean_ms` of the tick ending at `now_ms`.
    pub fn update(&mut self, now_ms: i64, mean_ms: f64, cfg: &OutlookConfig) {
        if !mean_ms.is_finite() || mean_ms < 0.0 {
            return;
        }
        // A level gone stale starts over: extrapolated across the gap by its old
        // trend, the level of a node that was climbing when it went quiet (shed, or
        // hung) came back far above anything it answered, and shed it again for
        // seconds after it returned at full speed.
        let stale = cfg.restart_stale && now_ms.saturating_sub(self.at_ms) > cfg.stale_ms;
        match self.level.filter(|_| !stale) {
            None => {
                self.level = Some(mean_ms);
                self.trend = 0.0;
            }
            Some(prev) => {
                // A step is the business of the live latency estimate (peak EWMA), a
                // climb this one's: a tick's mean counts at most `max_step` times the
                // level, so the backlog of a short stall (requests answered seconds
                // late, all in one tick) does not read as a trend and shed the node
                // after it recovered.
                let mean_ms = mean_ms.min(prev.max(1e-3) * cfg.max_step.max(1.0));
                let dt = (now_ms.saturating_sub(self.at_ms) as f64 / 1000.0).max(1e-3);
                let a = cfg.alpha.clamp(0.0, 1.0);
                let b = cfg.beta.clamp(0.0, 1.0);
                let level = a * mean_ms + (1.0 - a) * (prev + self.trend * dt);
                self.trend = b * (level - prev) / dt + (1.0 - b) * self.trend;
                self.level = Some(level);
            }
        }
        self.at_ms = now_ms;
    }

    /// The smoothed level, if updated within `stale_ms` of `now_ms`.
    pub fn level(&self, now_ms: i64, cfg: &OutlookConfig) -> Option<f64> {
        self.level
            .filter(|_| now_ms.saturating_sub(self.at_ms) <= cfg.stale_ms)
    }

    /// The latency expected `horizon_ms` ahead (at least 0), if fresh. A falling
    /// trend lowers it: a node draining the queue of a past stall is recovering, and
    /// its requests' latencies, which look back at when they were sent, say less.
    pub fn forecast(&self, now_ms: i64, cfg: &OutlookConfig) -> Option<f64> {
        let level = self.level(now_ms, cfg)?;
        let ahead = self.trend * cfg.horizon_ms.max(0) as f64 / 1000.0;
        Some((level + ahead).max(0.0))
    }

    /// The score of this outlook alone against `slo_ms`, 0..=1 (0 when stale).
    pub fn own_score(&self, now_ms: i64, slo_ms: f64, cfg: &OutlookConfig) -> f64 {
        let Some(f) = self.forecast(now_ms, cfg) else {
            return 0.0;
        };
        if slo_ms.is_nan() || slo_ms <= 0.0 {
            return 0.0;
        }
        smooth_ramp(f / slo_ms, cfg.start, cfg.full)
    }
}

/// Every node's outlook score: the larger of its own score times how far its level
/// stands out from the fresh levels of the pool, and its peer-relative score (with at
/// least `views.peer_min_nodes` fresh levels; else its own score alone, or none when
/// peers are judged not at all).
pub fn outlook_scores(
    outlooks: &[&Outlook],
    now_ms: i64,
    slo_ms: f64,
    cfg: &OutlookConfig,
    views: &ViewConfig,
) -> Vec<f64> {
    if !cfg.enabled {
        return vec![0.0; outlooks.len()];
    }
    let mut levels: Vec<f64> = outlooks
        .iter()
        .filter_map(|o| o.level(now_ms, cfg))
        .collect();
    let stats = (views.peer_min_nodes > 0 && levels.len() >= views.peer_min_nodes.max(2))
        .then(|| PeerStats::of(&mut levels, views));
    outlooks
        .iter()
        .map(|o| {
            let own = o.own_score(now_ms, slo_ms, cfg);
            match (&stats, o.level(now_ms, cfg), o.forecast(now_ms, cfg)) {
                (Some(st), Some(level), Some(f)) => {
                    let room = slo_ms - st.median;
                    let rel = if room > 0.0 && cfg.rel_start.is_finite() {
                        smooth_ramp((f - st.median) / room, cfg.rel_start, cfg.rel_full)
                            * smooth_ramp(st.z(level), cfg.rel_z_start, cfg.rel_z_full)
                    } else {
                        0.0
                    };
                    (own * peer_factor(level, st, views)).max(rel)
                }
                _ => own,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(values: &[f64]) -> Outlook {
        let cfg = OutlookConfig::default();
        let mut o = Outlook::default();
        for (k, v) in values.iter().enumerate() {
            o.update(k as i64 * 1000, *v, &cfg);
        }
        o
    }

    #[test]
    fn a_steady_node_scores_nothing_and_a_climbing_one_scores_before_the_slo() {
        let cfg = OutlookConfig::default();
        let now = 19_000;
        let steady = fed(&[30.0; 20]);
        assert_eq!(steady.own_score(now, 100.0, &cfg), 0.0);
        // 30 ms climbing 3 ms a second: at 87 ms, the outlook reaches past the SLO
        // seconds before the latency does.
        let climbing: Vec<f64> = (0..20).map(|k| 30.0 + 3.0 * f64::from(k)).collect();
        let o = fed(&climbing);
        let f = o.forecast(now, &cfg).expect("fresh");
        assert!(f > 85.0 && f < 110.0, "{f}");
        assert!(o.own_score(now, 100.0, &cfg) > 0.2);
        // Stale: no score.
        assert_eq!(o.own_score(now + 10_000, 100.0, &cfg), 0.0);
    }

    #[test]
    fn a_node_climbing_away_from_a_calm_pool_scores_long_before_the_slo() {
        let views = ViewConfig::default();
        let now = 9_000;
        // Seven nodes at 24-26 ms, one that has climbed to 34 ms: a quarter slower,
        // nowhere near the 100 ms SLO, so the SLO-relative score alone says nothing.
        let mut pool: Vec<Outlook> = (0..7)
            .map(|i| fed(&[24.0 + f64::from(i % 3); 10]))
            .collect();
        pool.push(fed(&[
            25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0, 33.0, 34.0,
        ]));
        let refs: Vec<&Outlook> = pool.iter().collect();
        let cfg = OutlookConfig::default();
        let s = outlook_scores(&refs, now, 100.0, &cfg, &views);
        assert!(s[7] > 0.5, "{s:?}");
        assert!(s[..7].iter().all(|&x| x == 0.0), "{s:?}");
        let off = OutlookConfig {
            rel_start: f64::INFINITY,
            ..cfg
        };
        let s = outlook_scores(&refs, now, 100.0, &off, &views);
        assert!(s[7] < 0.05, "{s:?}");
        // Nodes that all wander (speeds redrawn at random): the slowest is no clear
        // outlier and keeps its traffic.
        let wander: Vec<Outlook> = [18.0, 22.0, 25.0, 28.0, 31.0, 35.0, 38.0, 42.0]
            .iter()
            .map(|&x| fed(&[x; 10]))
            .collect();
        let refs: Vec<&Outlook> = wander.iter().collect();
        let s = outlook_scores(&refs, now, 100.0, &cfg, &views);
        assert!(s.iter().all(|&x| x < 0.05), "{s:?}");
    }

    #[test]
    fn a_pool_slowing_as_one_sheds_nobody_and_an_outlier_is_shed() {
        let cfg = OutlookConfig::default();
        let views = ViewConfig::default();
        let now = 9_000;
        let all: Vec<Outlook> = (0..8).map(|i| fed(&[80.0 + f64::from(i); 10])).collect();
        let refs: Vec<&Outlook> = all.iter().collect();
        let s = outlook_scores(&refs, now, 100.0, &cfg, &views);
        assert!(s.iter().all(|&x| x < 0.05), "{s:?}");
        let mut one: Vec<Outlook> = (0..7).map(|_| fed(&[30.0; 10])).collect();
        one.push(fed(&[
            30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0,
        ]));
        let refs: Vec<&Outlook> = one.iter().collect();
        let s = outlook_scores(&refs, now, 100.0, &cfg, &views);
        assert!(s[7] > 0.9, "{s:?}");
        assert!(s[..7].iter().all(|&x| x == 0.0), "{s:?}");
        let off = OutlookConfig {
            enabled: false,
            ..cfg
        };
        assert!(
            outlook_scores(&refs, now, 100.0, &off, &views)
                .iter()
                .all(|&x| x == 0.0)
        );
    }

    #[test]
    fn a_node_back_after_a_silence_starts_over_at_what_it_answers_now() {
        let cfg = OutlookConfig::default();
        // Climbing 3 ms a second to 87 ms at 19 s, then silent (hung) for 15 s; it
        // comes back answering in 25 ms.
        let climbing: Vec<f64> = (0..20).map(|k| 30.0 + 3.0 * f64::from(k)).collect();
        let mut o = fed(&climbing);
        o.update(34_000, 25.0, &cfg);
        assert_eq!(o.forecast(34_000, &cfg), Some(25.0));
        assert_eq!(o.own_score(34_000, 100.0, &cfg), 0.0);
        // Carried across the gap by its old trend, it would come back far above the
        // SLO and be shed at full speed.
        let carried = OutlookConfig {
            restart_stale: false,
            ..cfg
        };
        let mut o = fed(&climbing);
        o.update(34_000, 25.0, &carried);
        assert!(o.own_score(34_000, 100.0, &carried) > 0.9);
    }

    #[test]
    fn bad_input_changes_nothing() {
        let cfg = OutlookConfig::default();
        let mut o = fed(&[30.0; 5]);
        let before = o;
        o.update(5_000, f64::NAN, &cfg);
        o.update(5_000, -1.0, &cfg);
        assert_eq!(o, before);
        assert_eq!(o.own_score(4_000, 0.0, &cfg), 0.0);
    }
}
