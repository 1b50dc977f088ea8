//! Capacity training of one pool: feedback rows (requests in flight on the node at
//! dispatch, the node's probe metrics then, the latency) kept for a window; on a
//! schedule a [`FitJob`] that owns its rows and runs anywhere (the balancer runs it on a
//! blocking thread, the simulator inline) fits two families of linfa models per node
//! and for the pool: on load alone (the baseline) and on load plus probe metrics; the
//! outcome is installed whole, after the previous fit was scored on the rows that
//! arrived after it (what then happened). Routing uses the probe-metric model only
//! while it has beaten the load-only one on that later feedback.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use plb_api::{CapacityModelView, CapacityScoreView, NodeCapacityView};
use plb_predict::{CapacityModel, CapacityParams, CapacityRow, fit_per_node};

use crate::config::TrainingConfig;

/// Share of rows that must carry a probe metric for it to become a feature.
const FEATURE_COVERAGE: f64 = 0.9;
/// Scores kept per pool.
const SCORES_KEPT: usize = 32;

/// One feedback row as kept: `features` align with the trainer's feature keys at the
/// time it was added (NaN where the node had no fresh value).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub at_ms: i64,
    pub node: Arc<str>,
    pub load: f64,
    pub latency_ms: f64,
    pub features: Vec<f64>,
}

/// Models of one family (load only, or load plus probe features).
#[derive(Debug, Clone, Default)]
pub struct Family {
    /// The pool-wide model.
    pub pool: Option<CapacityModel>,
    /// Per node, for nodes with enough rows of their own.
    pub nodes: BTreeMap<String, CapacityModel>,
}

impl Family {
    fn fit(rows: &[(String, CapacityRow)], params: &CapacityParams) -> Family {
        let (pool, nodes) = fit_per_node(rows, params);
        Family {
            pool: pool.ok(),
            nodes,
        }
    }

    fn is_empty(&self) -> bool {
        self.pool.is_none() && self.nodes.is_empty()
    }

    /// The model a node's capacity comes from: its own, else the pool's.
    pub fn for_node(&self, node: &str) -> Option<&CapacityModel> {
        self.nodes.get(node).or(self.pool.as_ref())
    }
}

/// A fit to run off the sample path: owns everything it needs.
#[derive(Debug, Clone)]
pub struct FitJob {
    at_ms: i64,
    params: CapacityParams,
    load_rows: Vec<(String, CapacityRow)>,
    feature_keys: Vec<String>,
    feature_rows: Vec<(String, CapacityRow)>,
}

impl FitJob {
    /// Runs the fits (CPU-bound: milliseconds for thousands of rows).
    pub fn run(self) -> FitOutcome {
        let load = Family::fit(&self.load_rows, &self.params);
        let features = if self.feature_keys.is_empty() {
            None
        } else {
            let f = Family::fit(&self.feature_rows, &self.params);
            (!f.is_empty()).then_some(f)
        };
        FitOutcome {
            at_ms: self.at_ms,
            slo_ms: self.params.slo_ms,
            load,
            feature_keys: self.feature_keys,
            features,
        }
    }

    /// Rows it fits on.
    pub fn rows(&self) -> usize {
        self.load_rows.len()
    }
}

/// A finished fit, to install with [`crate::PoolPredictor::install_fit`].
#[derive(Debug, Clone)]
pub struct FitOutcome {
    at_ms: i64,
    slo_ms: f64,
    load: Family,
    feature_keys: Vec<String>,
    features: Option<Family>,
}

/// The installed fit.
#[derive(Debug)]
pub struct Fitted {
    /// When it was fitted, ms.
    pub at_ms: i64,
    /// The objective it was fitted for, ms.
    pub slo_ms: f64,
    /// On load alone.
    pub load: Family,
    /// The probe metrics the feature models take, in order.
    pub feature_keys: Vec<String>,
    /// On load plus probe metrics, when enough rows carried them.
    pub features: Option<Family>,
    /// Whether routing uses `features` (they have beaten the load-only models on later
    /// feedback) rather than `load`.
    pub use_features: bool,
}

impl Fitted {
    /// The family routing uses.
    pub fn in_use(&self) -> &Family {
        match (&self.features, self.use_features) {
            (Some(f), true) => f,
            _ => &self.load,
        }
    }
}

/// The pool's training state.
#[derive(Debug, Default)]
pub(crate) struct Trainer {
    rows: VecDeque<Row>,
    /// How many of `rows` each node has (kept with them, so that the nodes with rows
    /// are known without a pass over up to `max_rows` rows at every view build).
    per_node: BTreeMap<Arc<str>, usize>,
    /// Probe metric keys (`probe/metric`) that rows carry, first seen first.
    keys: Vec<String>,
    fitting: bool,
    next_fit_ms: i64,
    current: Option<Arc<Fitted>>,
    scores: VecDeque<CapacityScoreView>,
}

impl Trainer {
    /// The feature keys rows are aligned with.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Adds `key` to the feature keys (up to `max`); its index.
    pub(crate) fn key_index(&mut self, key: &str, max: usize) -> Option<usize> {
        if let Some(i) = self.keys.iter().position(|k| k == key) {
            return Some(i);
        }
        (self.keys.len() < max).then(|| {
            self.keys.push(key.to_string());
            self.keys.len() - 1
        })
    }

    /// Adds one row (a failure's latency is not the node's; bad values are skipped).
    pub(crate) fn add(&mut self, row: Row, cfg: &TrainingConfig) {
        if !(row.latency_ms.is_finite() && row.latency_ms > 0.0 && row.load.is_finite()) {
            return;
        }
        // Once per feedback row: a name already counted is not cloned again.
        match self.per_node.get_mut(&row.node) {
            Some(n) => *n += 1,
            None => {
                self.per_node.insert(Arc::clone(&row.node), 1);
            }
        }
        self.rows.push_back(row);
        while self.rows.len() > cfg.max_rows {
            self.pop_oldest();
        }
    }

    /// Drops the oldest row.
    fn pop_oldest(&mut self) {
        let Some(row) = self.rows.pop_front() else {
            return;
        };
        if let Some(n) = self.per_node.get_mut(&row.node) {
            *n -= 1;
            if *n == 0 {
                self.per_node.remove(&row.node);
            }
        }
    }

    /// Drops old rows and an expired fit; the job to run if a fit is due. Returns
    /// whether the current fit expired, too.
    pub(crate) fn due(
        &mut self,
        now_ms: i64,
        slo_ms: f64,
        cfg: &TrainingConfig,
    ) -> (Option<FitJob>, bool) {
        while self
            .rows
            .front()
            .is_some_and(|r| r.at_ms < now_ms - cfg.keep_ms)
        {
            self.pop_oldest();
        }
        let expired = self
            .current
            .as_ref()
            .is_some_and(|f| now_ms - f.at_ms > cfg.ttl_ms);
        if expired {
            self.current = None;
        }
        if self.fitting || now_ms < self.next_fit_ms || self.rows.len() < cfg.min_rows {
            return (None, expired);
        }
        self.next_fit_ms = now_ms + cfg.refit_every_ms;
        self.fitting = true;
        let params = CapacityParams {
            slo_ms,
            min_rows: cfg.min_rows,
            ..CapacityParams::default()
        };
        let load_rows = self
            .rows
            .iter()
            .map(|r| (r.node.to_string(), row_of(r, &[])))
            .collect();
        // Features: the keys most rows carry; rows without all of them are left out
        // of the feature fit.
        let chosen: Vec<usize> = (0..self.keys.len())
            .filter(|&i| {
                let have = self
                    .rows
                    .iter()
                    .filter(|r| r.features.get(i).is_some_and(|x| x.is_finite()))
                    .count();
                have as f64 >= FEATURE_COVERAGE * self.rows.len() as f64
            })
            .collect();
        let feature_rows = if chosen.is_empty() {
            Vec::new()
        } else {
            self.rows
                .iter()
                .filter(|r| {
                    chosen
                        .iter()
                        .all(|&i| r.features.get(i).is_some_and(|x| x.is_finite()))
                })
                .map(|r| (r.node.to_string(), row_of(r, &chosen)))
                .collect()
        };
        let job = FitJob {
            at_ms: now_ms,
            params,
            load_rows,
            feature_keys: chosen.iter().map(|&i| self.keys[i].clone()).collect(),
            feature_rows,
        };
        (Some(job), expired)
    }

    /// Installs a finished fit, after scoring the previous one on the rows that came
    /// after it. `over`: scored fits over which the feature models must have won.
    /// Returns whether the current fit changed.
    pub(crate) fn install(&mut self, out: FitOutcome, over: usize) -> bool {
        self.fitting = false;
        if let Some(prev) = &self.current
            && let Some(s) = self.score(prev, out.at_ms)
        {
            if self.scores.len() == SCORES_KEPT {
                self.scores.pop_front();
            }
            self.scores.push_back(s);
        }
        if out.load.is_empty() && out.features.is_none() {
            return false;
        }
        let use_features = out.features.is_some() && self.features_earned(over);
        self.current = Some(Arc::new(Fitted {
            at_ms: out.at_ms,
            slo_ms: out.slo_ms,
            load: out.load,
            feature_keys: out.feature_keys,
            features: out.features,
            use_features,
        }));
        true
    }

    /// Whether routing should use the probe-feature models: they exist and beat the
    /// load-only models on later feedback over the newest `over` scored fits.
    pub(crate) fn features_earned(&self, over: usize) -> bool {
        let recent: Vec<&CapacityScoreView> = self.scores.iter().rev().take(over).collect();
        if recent.is_empty() {
            return false;
        }
        let (mut with, mut without) = (0.0, 0.0);
        for s in recent {
            let Some(f) = s.features_mae_ms else {
                return false;
            };
            with += f * s.rows as f64;
            without += s.load_only_mae_ms * s.rows as f64;
        }
        with < without
    }

    /// Scores `fitted` on the rows that came after it: each node's rows against the
    /// model its capacity came from (its own, else the pool's), per family.
    fn score(&self, fitted: &Fitted, scored_at_ms: i64) -> Option<CapacityScoreView> {
        let later: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.at_ms > fitted.at_ms)
            .collect();
        let by_node = |cols: Option<&[usize]>| {
            let mut m: BTreeMap<&str, Vec<CapacityRow>> = BTreeMap::new();
            for r in &later {
                let row = match cols {
                    None => row_of(r, &[]),
                    Some(c) => {
                        if !c
                            .iter()
                            .all(|&i| r.features.get(i).is_some_and(|x| x.is_finite()))
                        {
                            continue;
                        }
                        row_of(r, c)
                    }
                };
                m.entry(&*r.node).or_default().push(row);
            }
            m
        };
        let load = score_family(&fitted.load, &by_node(None))?;
        let features = fitted.features.as_ref().and_then(|f| {
            let cols: Option<Vec<usize>> = fitted
                .feature_keys
                .iter()
                .map(|k| self.keys.iter().position(|x| x == k))
                .collect();
            score_family(f, &by_node(Some(&cols?)))
        });
        let used = match (fitted.use_features, features) {
            (true, Some(f)) => f,
            _ => load,
        };
        Some(CapacityScoreView {
            fitted_at_ms: fitted.at_ms,
            scored_at_ms,
            rows: load.rows as u64,
            mae_ms: used.mae,
            baseline_mae_ms: load.baseline,
            load_only_mae_ms: load.mae,
            features_mae_ms: features.map(|f| f.mae),
        })
    }

    pub(crate) fn current(&self) -> Option<&Arc<Fitted>> {
        self.current.as_ref()
    }

    pub(crate) fn scores(&self) -> impl Iterator<Item = &CapacityScoreView> {
        self.scores.iter()
    }

    /// Rows held.
    pub(crate) fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Forgets a node's rows (it left, or came back with a fresh model).
    pub(crate) fn forget(&mut self, node: &str) {
        self.rows.retain(|r| &*r.node != node);
        self.per_node.remove(node);
    }

    /// Every node with rows, in order.
    pub(crate) fn nodes_seen(&self) -> impl Iterator<Item = &Arc<str>> {
        self.per_node.keys()
    }
}

fn row_of(r: &Row, cols: &[usize]) -> CapacityRow {
    CapacityRow {
        load: r.load,
        features: cols
            .iter()
            .map(|&i| r.features.get(i).copied().unwrap_or(f64::NAN))
            .collect(),
        latency_ms: r.latency_ms,
    }
}

#[derive(Debug, Clone, Copy)]
struct FamilyScore {
    rows: usize,
    mae: f64,
    baseline: f64,
}

fn score_family(
    family: &Family,
    by_node: &BTreeMap<&str, Vec<CapacityRow>>,
) -> Option<FamilyScore> {
    let (mut n, mut mae, mut base) = (0usize, 0.0, 0.0);
    for (node, rows) in by_node {
        let Some(model) = family.for_node(node) else {
            continue;
        };
        if let Some(s) = model.score(rows) {
            n += s.rows;
            mae += s.mae_ms * s.rows as f64;
            base += s.baseline_mae_ms * s.rows as f64;
        }
    }
    (n > 0).then(|| FamilyScore {
        rows: n,
        mae: mae / n as f64,
        baseline: base / n as f64,
    })
}

/// The wire view of a fit, with the capacity per node routing uses.
pub(crate) fn view(f: &Fitted, estimates: &BTreeMap<String, f64>) -> CapacityModelView {
    let describe = |m: &CapacityModel| (m.form().as_str().to_string(), m.rows(), m.loo_error());
    let pool = f.load.pool.as_ref().map(describe);
    let family = f.in_use();
    CapacityModelView {
        fitted_at_ms: f.at_ms,
        slo_ms: f.slo_ms,
        form: pool.as_ref().map(|p| p.0.clone()),
        rows_used: pool.as_ref().map_or(0, |p| p.1.0 as u64),
        rows_ignored: pool.as_ref().map_or(0, |p| p.1.1 as u64),
        loo_error: pool.as_ref().map(|p| p.2),
        pool_capacity: f
            .load
            .pool
            .as_ref()
            .and_then(|m| m.capacity(&[]))
            .map(|c| c.load),
        features: f.feature_keys.clone(),
        features_fitted: f.features.is_some(),
        features_used: f.use_features,
        nodes: estimates
            .iter()
            .map(|(n, c)| {
                let own = family.nodes.get(n);
                NodeCapacityView {
                    node: n.clone(),
                    capacity: *c,
                    own_model: own.is_some(),
                    form: own.map(|m| m.form().as_str().to_string()),
                    extrapolated: f
                        .load
                        .for_node(n)
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

    fn row(at_ms: i64, node: &str) -> Row {
        Row {
            at_ms,
            node: Arc::from(node),
            load: 1.0,
            latency_ms: 20.0,
            features: Vec::new(),
        }
    }

    fn seen(t: &Trainer) -> Vec<&str> {
        t.nodes_seen().map(|n| &**n).collect()
    }

    #[test]
    fn the_nodes_seen_are_those_with_rows_left() {
        let cfg = TrainingConfig {
            max_rows: 4,
            keep_ms: 1_000,
            ..TrainingConfig::default()
        };
        let mut t = Trainer::default();
        for (at, n) in [(0, "b"), (10, "a"), (20, "b"), (30, "c")] {
            t.add(row(at, n), &cfg);
        }
        // A row with no usable latency is not kept, nor its node counted.
        t.add(
            Row {
                latency_ms: f64::NAN,
                ..row(35, "d")
            },
            &cfg,
        );
        assert_eq!(seen(&t), ["a", "b", "c"]);
        // The bound drops the oldest row: b@0 (b keeps b@20), then a@10 (a's only).
        t.add(row(40, "c"), &cfg);
        assert_eq!(seen(&t), ["a", "b", "c"]);
        t.add(row(50, "c"), &cfg);
        assert_eq!(seen(&t), ["b", "c"]);
        // Age drops rows too: at 1,045 ms only c@50 is younger than `keep_ms`.
        let _ = t.due(1_045, 100.0, &cfg);
        assert_eq!(seen(&t), ["c"]);
        assert_eq!(t.rows(), 1);
        t.forget("c");
        assert!(seen(&t).is_empty());
        assert_eq!(t.rows(), 0);
    }
}
