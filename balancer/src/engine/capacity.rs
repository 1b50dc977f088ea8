//! Capacity training for one pool: feedback rows (requests in flight on the node when
//! the request was sent, and its latency) kept for a window, a linfa fit per node and
//! for the pool ([`plb_predict::fit_per_node`]) on a schedule on a blocking thread, the
//! result swapped in whole, and each fit scored against the rows that arrived after it
//! (what then happened), next to a constant-latency baseline.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use plb_api::{CapacityModelView, CapacityScoreView, NodeCapacityView};
use plb_predict::{CapacityModel, CapacityParams, CapacityRow};

use super::router::FeedbackRow;

/// How the pool's capacity is trained.
#[derive(Debug, Clone, Copy)]
pub struct TrainingConfig {
    /// Refit interval, ms.
    pub refit_every_ms: i64,
    /// Rows older than this are dropped, ms.
    pub keep_ms: i64,
    /// Most rows kept.
    pub max_rows: usize,
    /// A fit not renewed for this long is dropped (too little feedback since), ms.
    pub ttl_ms: i64,
    /// Fewest rows to fit.
    pub min_rows: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            refit_every_ms: 5_000,
            keep_ms: 120_000,
            max_rows: 20_000,
            ttl_ms: 60_000,
            min_rows: 60,
        }
    }
}

/// A fitted capacity state, swapped in whole.
#[derive(Debug)]
pub(crate) struct Fitted {
    pub at_ms: i64,
    pub slo_ms: f64,
    pub pool: Option<CapacityModel>,
    pub nodes: BTreeMap<String, CapacityModel>,
    /// Capacity per node used for routing (requests in flight at the SLO).
    pub estimates: BTreeMap<String, f64>,
}

/// The outcome of one background fit.
pub(crate) struct FitOutcome {
    pub pool: Option<CapacityModel>,
    pub nodes: BTreeMap<String, CapacityModel>,
    pub at_ms: i64,
    pub slo_ms: f64,
}

/// Runs one fit (blocking; call on a blocking thread).
pub(crate) fn fit(
    rows: Vec<(String, CapacityRow)>,
    slo_ms: f64,
    min_rows: usize,
    at_ms: i64,
) -> FitOutcome {
    let params = CapacityParams {
        slo_ms,
        min_rows,
        ..CapacityParams::default()
    };
    let (pool, nodes) = plb_predict::fit_per_node(&rows, &params);
    FitOutcome {
        pool: pool.ok(),
        nodes,
        at_ms,
        slo_ms,
    }
}

/// One pool's training state (owned by the engine task).
#[derive(Debug, Default)]
pub(crate) struct Trainer {
    rows: VecDeque<(i64, String, CapacityRow)>,
    pub fitting: bool,
    next_fit_ms: i64,
    pub current: Option<Arc<Fitted>>,
    pub scores: VecDeque<CapacityScoreView>,
}

/// Scores kept per pool.
const SCORES_KEPT: usize = 32;

impl Trainer {
    /// Adds successful requests' rows (a failure's latency is not the node's).
    pub(crate) fn add(&mut self, rows: Vec<FeedbackRow>, cfg: &TrainingConfig) {
        for r in rows {
            if !r.ok || r.latency_ms.is_nan() || r.latency_ms <= 0.0 || !r.load.is_finite() {
                continue;
            }
            self.rows.push_back((
                r.at_ms,
                r.node,
                CapacityRow {
                    load: r.load,
                    features: Vec::new(),
                    latency_ms: r.latency_ms,
                },
            ));
        }
        while self.rows.len() > cfg.max_rows {
            self.rows.pop_front();
        }
    }

    /// Drops old rows and an expired fit; the rows to fit on if a fit is due.
    pub(crate) fn due(
        &mut self,
        now_ms: i64,
        cfg: &TrainingConfig,
    ) -> Option<Vec<(String, CapacityRow)>> {
        while self
            .rows
            .front()
            .is_some_and(|(t, _, _)| *t < now_ms - cfg.keep_ms)
        {
            self.rows.pop_front();
        }
        if self
            .current
            .as_ref()
            .is_some_and(|f| now_ms - f.at_ms > cfg.ttl_ms)
        {
            self.current = None;
        }
        if self.fitting || now_ms < self.next_fit_ms || self.rows.len() < cfg.min_rows {
            return None;
        }
        self.next_fit_ms = now_ms + cfg.refit_every_ms;
        self.fitting = true;
        Some(
            self.rows
                .iter()
                .map(|(_, n, r)| (n.clone(), r.clone()))
                .collect(),
        )
    }

    /// Installs a finished fit, after scoring the previous one on the rows that came
    /// after it. Returns the new state.
    pub(crate) fn install(&mut self, out: FitOutcome) -> Option<Arc<Fitted>> {
        self.fitting = false;
        if let Some(prev) = &self.current
            && let Some(s) = score(prev, &self.rows)
        {
            if self.scores.len() == SCORES_KEPT {
                self.scores.pop_front();
            }
            self.scores.push_back(CapacityScoreView {
                fitted_at_ms: prev.at_ms,
                scored_at_ms: out.at_ms,
                ..s
            });
        }
        if out.pool.is_none() && out.nodes.is_empty() {
            return self.current.clone();
        }
        let mut raw: BTreeMap<String, f64> = BTreeMap::new();
        let nodes_seen: std::collections::BTreeSet<&str> =
            self.rows.iter().map(|(_, n, _)| n.as_str()).collect();
        for n in nodes_seen {
            let c = out
                .nodes
                .get(n)
                .and_then(|m| m.capacity(&[]))
                .or_else(|| out.pool.as_ref().and_then(|m| m.capacity(&[])));
            // Below one request in flight the fit extrapolates past its data (any node
            // that answers at all takes one request); such an estimate would flag an
            // idle node as over capacity, so it is not used.
            if let Some(c) = c
                && c.load.is_finite()
                && c.load >= 1.0
            {
                raw.insert(n.to_string(), c.load);
            }
        }
        // An estimate above the pool's typical (median) one is never used: an
        // overestimate would pile traffic onto a node that cannot take it.
        let mut v: Vec<f64> = raw.values().copied().collect();
        v.sort_by(f64::total_cmp);
        let typical = v.get(v.len() / 2).copied();
        let estimates = raw
            .into_iter()
            .map(|(n, c)| (n, typical.map_or(c, |t| c.min(t))))
            .collect();
        let fitted = Arc::new(Fitted {
            at_ms: out.at_ms,
            slo_ms: out.slo_ms,
            pool: out.pool,
            nodes: out.nodes,
            estimates,
        });
        self.current = Some(Arc::clone(&fitted));
        Some(fitted)
    }

    /// Rows held.
    pub(crate) fn rows(&self) -> usize {
        self.rows.len()
    }
}

/// Scores `fitted` on the rows that came after it: each node's rows against the model
/// the node's capacity came from (its own, else the pool's), weighted by rows.
fn score(
    fitted: &Fitted,
    rows: &VecDeque<(i64, String, CapacityRow)>,
) -> Option<CapacityScoreView> {
    let mut by_node: BTreeMap<&str, Vec<CapacityRow>> = BTreeMap::new();
    for (t, n, r) in rows {
        if *t > fitted.at_ms {
            by_node.entry(n.as_str()).or_default().push(r.clone());
        }
    }
    let (mut n, mut mae, mut base) = (0usize, 0.0, 0.0);
    for (node, rows) in by_node {
        let Some(model) = fitted.nodes.get(node).or(fitted.pool.as_ref()) else {
            continue;
        };
        if let Some(s) = model.score(&rows) {
            n += s.rows;
            mae += s.mae_ms * s.rows as f64;
            base += s.baseline_mae_ms * s.rows as f64;
        }
    }
    (n > 0).then(|| CapacityScoreView {
        fitted_at_ms: fitted.at_ms,
        scored_at_ms: fitted.at_ms,
        rows: n as u64,
        mae_ms: mae / n as f64,
        baseline_mae_ms: base / n as f64,
    })
}

/// The wire view of a fitted state.
pub(crate) fn view(f: &Fitted) -> CapacityModelView {
    let describe = |m: &CapacityModel| (m.form().as_str().to_string(), m.rows(), m.loo_error());
    let pool = f.pool.as_ref().map(describe);
    CapacityModelView {
        fitted_at_ms: f.at_ms,
        slo_ms: f.slo_ms,
        form: pool.as_ref().map(|p| p.0.clone()),
        rows_used: pool.as_ref().map_or(0, |p| p.1.0 as u64),
        rows_ignored: pool.as_ref().map_or(0, |p| p.1.1 as u64),
        loo_error: pool.as_ref().map(|p| p.2),
        pool_capacity: f
            .pool
            .as_ref()
            .and_then(|m| m.capacity(&[]))
            .map(|c| c.load),
        nodes: f
            .estimates
            .iter()
            .map(|(n, c)| {
                let own = f.nodes.get(n);
                NodeCapacityView {
                    node: n.clone(),
                    capacity: *c,
                    own_model: own.is_some(),
                    form: own.map(|m| m.form().as_str().to_string()),
                    extrapolated: own
                        .or(f.pool.as_ref())
                        .and_then(|m| m.capacity(&[]))
                        .is_some_and(|c| c.extrapolated),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, load: f64, latency_ms: f64, at_ms: i64) -> FeedbackRow {
        FeedbackRow {
            node: node.into(),
            at_ms,
            load,
            latency_ms,
            ok: true,
        }
    }

    #[test]
    fn the_knee_of_each_node_is_found_and_capped_at_the_median() {
        let cfg = TrainingConfig::default();
        let mut t = Trainer::default();
        // a: 20 ms + 10 ms per request in flight (knee 18 at 200 ms); b: twice as slow
        // per request (knee 9); c: like a.
        let mut rows = Vec::new();
        for k in 0..300 {
            let load = f64::from(1 + k % 16);
            rows.push(row("a", load, 20.0 + 10.0 * load, 1_000 + i64::from(k)));
            rows.push(row("b", load, 20.0 + 20.0 * load, 1_000 + i64::from(k)));
            rows.push(row("c", load, 20.0 + 10.0 * load, 1_000 + i64::from(k)));
        }
        // Failures are not the node's latency.
        rows.push(FeedbackRow {
            ok: false,
            ..row("a", 1.0, 1.0, 1_500)
        });
        t.add(rows, &cfg);
        assert_eq!(t.rows(), 900);
        let due = t.due(2_000, &cfg).expect("enough rows");
        assert!(t.due(2_000, &cfg).is_none(), "one fit at a time");
        let fitted = t
            .install(fit(due, 200.0, cfg.min_rows, 2_000))
            .expect("fitted");
        let est = |n: &str| fitted.estimates[n];
        assert!((est("a") - 18.0).abs() < 1.0, "{:?}", fitted.estimates);
        assert!((est("b") - 9.0).abs() < 0.5, "{:?}", fitted.estimates);
        assert!(est("c") <= est("a") + 1e-9);
        let v = view(&fitted);
        assert_eq!(v.nodes.len(), 3);
        assert!(v.nodes.iter().all(|n| n.own_model));

        // The next fit scores this one on the rows that came after it.
        let later: Vec<FeedbackRow> = (0..120)
            .map(|k| {
                let load = f64::from(1 + k % 16);
                row("a", load, 20.0 + 10.0 * load, 3_000 + i64::from(k))
            })
            .collect();
        t.add(later, &cfg);
        let due = t.due(2_000 + cfg.refit_every_ms, &cfg).expect("due again");
        t.install(fit(due, 200.0, cfg.min_rows, 4_000));
        let s = t.scores.back().expect("scored");
        assert_eq!(s.fitted_at_ms, 2_000);
        assert!(s.rows >= 100 && s.mae_ms < 0.5 * s.baseline_mae_ms, "{s:?}");

        // No feedback for longer than the fit's lifetime: dropped.
        t.due(4_000 + cfg.ttl_ms + 1, &cfg);
        assert!(t.current.is_none());
    }
}
