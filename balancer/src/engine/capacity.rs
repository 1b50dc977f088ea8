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
        if let Some(prev) = &self.current {
            let after: Vec<CapacityRow> = self
                .rows
                .iter()
                .filter(|(t, _, _)| *t > prev.at_ms)
                .map(|(_, _, r)| r.clone())
                .collect();
            if let Some(model) = &prev.pool
                && let Some(s) = model.score(&after)
            {
                if self.scores.len() == SCORES_KEPT {
                    self.scores.pop_front();
                }
                self.scores.push_back(CapacityScoreView {
                    fitted_at_ms: prev.at_ms,
                    scored_at_ms: out.at_ms,
                    rows: s.rows as u64,
                    mae_ms: s.mae_ms,
                    baseline_mae_ms: s.baseline_mae_ms,
                });
            }
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
            if let Some(c) = c
                && c.load.is_finite()
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
