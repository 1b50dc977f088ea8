//! The capacity model: from request feedback (load at dispatch, probe features,
//! observed latency), the load at which a node's latency meets the pool's SLO.
//!
//! Why ordinary least squares (linfa-linear) and not elastic net: the models have two
//! to a dozen coefficients fitted on a couple of dozen load bins, so there is nothing
//! to select and little variance to trade; shrinkage would bias the load slope, and
//! the capacity is a ratio of coefficients, so that bias would go straight into it.
//! Near-constant features are dropped instead, and the choice between curve shapes is
//! made by leave-one-out error, which guards against over-fitting where it matters.
//!
//! Queue latency is not linear in load near the knee, so three shapes are fitted, each
//! linear in its coefficients, and the one with the lowest leave-one-out error is kept:
//! - `inverse`: 1/latency = a + b·load. Exact for an M/M/1 queue against arrival rate
//!   (latency = s / (1 - λ/μ)), the `1 / (1 - load/c)` form; capacity = (1/SLO - a)/b.
//! - `linear`: latency = a + b·load. Exact against requests in flight (by PASTA, an
//!   M/M/1 arrival waits for the N in service: latency = s·(1 + N)).
//! - `quadratic`: latency = a + b·load + c·load², a convex fallback.
//!
//! Probe features enter as `a + w·x` and `b + v·x` (offset and slope both shift with
//! them, so a slower node has both a higher base latency and a steeper curve). Rows
//! are grouped into load bins (equal counts) and each bin's mean latency is fitted,
//! which removes the per-request noise (the mean of 1/latency of raw requests is
//! biased and may not even exist); bins near the SLO weigh more, since that is where
//! the answer lies. Mixing very different nodes in one fit blurs the knee: fit per
//! node with [`fit_per_node`] when each node has enough feedback.
use std::collections::BTreeMap;

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
use crate::num::{acceptable, clean};

/// Most probe features a model takes.
pub const MAX_FEATURES: usize = 8;

/// One routed request: the load it met, the node's probe features then, its latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRow {
    /// Load at dispatch (requests in flight on the node, or its request rate).
    pub load: f64,
    /// Probe features (same order in every row), e.g. a CPU-work metric and its trend.
    pub features: Vec<f64>,
    /// Observed latency, ms (> 0).
    pub latency_ms: f64,
}

/// How a capacity model is fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityParams {
    /// The pool's latency objective, ms.
    pub slo_ms: f64,
    /// Load bins (6..=200).
    pub bins: usize,
    /// Fewest usable rows to fit at all.
    pub min_rows: usize,
}

impl Default for CapacityParams {
    fn default() -> Self {
        CapacityParams {
            slo_ms: 100.0,
            bins: 24,
            min_rows: 60,
        }
    }
}

/// The shape of latency against load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurveForm {
    /// 1/latency linear in load.
    Inverse,
    /// Latency linear in load.
    Linear,
    /// Latency quadratic in load.
    Quadratic,
}

impl CurveForm {
    const ALL: [CurveForm; 3] = [CurveForm::Inverse, CurveForm::Linear, CurveForm::Quadratic];

    /// Display name.
    pub fn as_str(self) -> &'static str {
        match self {
            CurveForm::Inverse => "inverse",
            CurveForm::Linear => "linear",
            CurveForm::Quadratic => "quadratic",
        }
    }
}

/// A capacity estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The load at which predicted latency reaches the SLO.
    pub load: f64,
    /// True when that load is beyond the largest load seen in training.
    pub extrapolated: bool,
}

/// How well a model predicted latency on rows it was not trained on (the feedback loop).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CapacityScore {
    /// Rows scored.
    pub rows: usize,
    /// Mean absolute error of the predicted mean latency per load bin, ms.
    pub mae_ms: f64,
    /// Same for a constant forecast (the rows' mean latency), for scale.
    pub baseline_mae_ms: f64,
}

/// A fitted capacity model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityModel {
    form: CurveForm,
    /// Intercept and load terms: [a, b] or [a, b, c] for quadratic.
    base: Vec<f64>,
    /// Per feature: (offset coefficient w, slope coefficient v); 0 for dropped features.
    feature_coefs: Vec<(f64, f64)>,
    feature_means: Vec<f64>,
    slo_ms: f64,
    rows_used: usize,
    rows_ignored: usize,
    bins: usize,
    max_load: f64,
    /// Weighted leave-one-out error of the chosen form, mean |ln(pred / actual)|.
    loo_log_error: f64,
}

/// One load bin: mean load, mean features, mean latency, weight.
#[derive(Debug, Clone)]
struct Bin {
    load: f64,
    features: Vec<f64>,
    latency: f64,
    weight: f64,
}

fn usable(rows: &[CapacityRow]) -> (Vec<&CapacityRow>, usize) {
    let k = rows.first().map_or(0, |r| r.features.len());
    let ok: Vec<&CapacityRow> = rows
        .iter()
        .filter(|r| {
            acceptable(r.load)
                && r.load >= 0.0
                && acceptable(r.latency_ms)
                && r.latency_ms > 0.0
                && r.features.len() == k
                && r.features.iter().all(|f| acceptable(*f))
        })
        .collect();
    let ignored = rows.len() - ok.len();
    (ok, ignored)
}

fn make_bins(rows: &[&CapacityRow], bins: usize, slo: f64) -> Vec<Bin> {
    let mut sorted: Vec<&CapacityRow> = rows.to_vec();
    sorted.sort_by(|a, b| a.load.total_cmp(&b.load));
    let n = sorted.len();
    let k = sorted.first().map_or(0, |r| r.features.len());
    let nb = bins.min(n / 3).max(1);
    (0..nb)
        .map(|i| {
            let chunk = &sorted[i * n / nb..(i + 1) * n / nb];
            let m = chunk.len() as f64;
            let load = chunk.iter().map(|r| r.load).sum::<f64>() / m;
            let latency = chunk.iter().map(|r| r.latency_ms).sum::<f64>() / m;
            let features = (0..k)
                .map(|j| chunk.iter().map(|r| r.features[j]).sum::<f64>() / m)
                .collect();
            let dist = (latency / slo).ln();
            Bin {
                load,
                features,
                latency,
                weight: 1.0 / (1.0 + dist * dist),
            }
        })
        .collect()
}

/// Design row for one bin (before weighting) under a form and feature set.
fn design(form: CurveForm, load: f64, x: &[f64], used: &[usize]) -> Vec<f64> {
    let mut row = vec![1.0, load];
    if form == CurveForm::Quadratic {
        row.push(load * load);
    }
    for &j in used {
        row.push(x[j]);
    }
    for &j in used {
        row.push(x[j] * load);
    }
    row
}

fn target(form: CurveForm, latency: f64) -> f64 {
    match form {
        CurveForm::Inverse => 1.0 / latency,
        CurveForm::Linear | CurveForm::Quadratic => latency,
    }
}

/// Weighted least squares with linfa: rows and targets scaled by sqrt(weight).
fn solve(rows: &[Vec<f64>], targets: &[f64], weights: &[f64]) -> Option<Vec<f64>> {
    let p = rows.first()?.len();
    let n = rows.len();
    if n < p {
        return None;
    }
    // Scale columns to unit size for a well-conditioned solve; undone below.
    let mut scale = vec![0.0f64; p];
    for r in rows {
        for (s, v) in scale.iter_mut().zip(r) {
            *s = s.max(v.abs());
        }
    }
    for s in &mut scale {
        if *s == 0.0 {
            *s = 1.0;
        }
    }
    let mut x = Array2::<f64>::zeros((n, p));
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        let w = weights[i].sqrt();
        for j in 0..p {
            x[[i, j]] = rows[i][j] / scale[j] * w;
        }
        y[i] = targets[i] * w;
    }
    let fitted = LinearRegression::new()
        .with_intercept(false)
        .fit(&Dataset::new(x, y))
        .ok()?;
    let coefs: Vec<f64> = fitted
        .params()
        .iter()
        .zip(&scale)
        .map(|(c, s)| c / s)
        .collect();
    coefs.iter().all(|c| c.is_finite()).then_some(coefs)
}

impl CapacityModel {
    /// Fits a model to feedback rows. Rows with a NaN, infinite, negative load or
    /// non-positive latency, or a different number of features than the first row,
    /// are ignored (and counted).
    pub fn fit(rows: &[CapacityRow], params: &CapacityParams) -> Result<CapacityModel> {
        if !(params.slo_ms > 0.0 && acceptable(params.slo_ms)) {
            return Err(PredictError::InvalidParam {
                name: "slo_ms",
                message: format!("must be positive, got {}", params.slo_ms),
            });
        }
        if !(6..=200).contains(&params.bins) {
            return Err(PredictError::InvalidParam {
                name: "bins",
                message: format!("must be 6..=200, got {}", params.bins),
            });
        }
        let (ok, ignored) = usable(rows);
        let needed = params.min_rows.max(18);
        if ok.len() < needed {
            return Err(PredictError::NotEnoughData {
                usable: ok.len(),
                needed,
            });
        }
        let k = ok[0].features.len();
        if k > MAX_FEATURES {
            return Err(PredictError::InvalidParam {
                name: "features",
                message: format!("at most {MAX_FEATURES}, got {k}"),
            });
        }
        let bins = make_bins(&ok, params.bins, params.slo_ms);
        let loads: Vec<f64> = bins.iter().map(|b| b.load).collect();
        let (lmin, lmax) = loads
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &l| {
                (a.min(l), b.max(l))
            });
        if lmax - lmin <= 1e-9 * lmax.abs().max(1e-9) {
            return Err(PredictError::Degenerate(
                "every row has the same load: the slope is unknown".into(),
            ));
        }
        // Centre features; keep those that vary across bins, as many as the bins allow.
        let means: Vec<f64> = (0..k)
            .map(|j| bins.iter().map(|b| b.features[j]).sum::<f64>() / bins.len() as f64)
            .collect();
        let centred: Vec<Vec<f64>> = bins
            .iter()
            .map(|b| b.features.iter().zip(&means).map(|(f, m)| f - m).collect())
            .collect();
        let mut used: Vec<usize> = (0..k)
            .filter(|&j| {
                let spread = centred.iter().map(|c| c[j].abs()).fold(0.0, f64::max);
                spread > 1e-9 * means[j].abs().max(1e-12)
            })
            .collect();
        while !used.is_empty() && bins.len() < 3 + 2 * used.len() + 3 {
            used.pop();
        }

        let mut best: Option<(f64, CurveForm, Vec<f64>)> = None;
        for form in CurveForm::ALL {
            let rows: Vec<Vec<f64>> = bins
                .iter()
                .zip(&centred)
                .map(|(b, x)| design(form, b.load, x, &used))
                .collect();
            let ys: Vec<f64> = bins.iter().map(|b| target(form, b.latency)).collect();
            let ws: Vec<f64> = bins.iter().map(|b| b.weight).collect();
            let Some(coefs) = solve(&rows, &ys, &ws) else {
                continue;
            };
            // Leave-one-out error in log-latency, weighted like the fit.
            let mut err = 0.0;
            let mut wsum = 0.0;
            for i in 0..bins.len() {
                let keep: Vec<usize> = (0..bins.len()).filter(|&j| j != i).collect();
                let r: Vec<Vec<f64>> = keep.iter().map(|&j| rows[j].clone()).collect();
                let y: Vec<f64> = keep.iter().map(|&j| ys[j]).collect();
                let w: Vec<f64> = keep.iter().map(|&j| ws[j]).collect();
                let e = match solve(&r, &y, &w) {
                    Some(c) => match predict(form, &c, &rows[i]) {
                        Some(pred) => (pred / bins[i].latency).ln().abs().min(5.0),
                        None => 5.0,
                    },
                    None => 5.0,
                };
                err += ws[i] * e;
                wsum += ws[i];
            }
            let err = err / wsum;
            if best.as_ref().is_none_or(|(e, _, _)| err < *e) {
                best = Some((err, form, coefs));
            }
        }
        let Some((loo, form, coefs)) = best else {
            return Err(PredictError::Degenerate(
                "no curve could be fitted to the bins".into(),
            ));
        };
        let nbase = if form == CurveForm::Quadratic { 3 } else { 2 };
        let mut feature_coefs = vec![(0.0, 0.0); k];
        for (i, &j) in used.iter().enumerate() {
            feature_coefs[j] = (coefs[nbase + i], coefs[nbase + used.len() + i]);
        }
        Ok(CapacityModel {
            form,
            base: coefs[..nbase].to_vec(),
            feature_coefs,
            feature_means: means,
            slo_ms: params.slo_ms,
            rows_used: ok.len(),
            rows_ignored: ignored,
            bins: bins.len(),
            max_load: lmax,
            loo_log_error: clean(loo),
        })
    }

    /// The chosen curve shape.
    pub fn form(&self) -> CurveForm {
        self.form
    }

    /// The SLO it was fitted for, ms.
    pub fn slo_ms(&self) -> f64 {
        self.slo_ms
    }

    /// Rows used and rows ignored in training.
    pub fn rows(&self) -> (usize, usize) {
        (self.rows_used, self.rows_ignored)
    }

    /// Weighted leave-one-out error of the fit, as mean |ln(predicted / actual)|
    /// (0.1 is about 10 %).
    pub fn loo_error(&self) -> f64 {
        self.loo_log_error
    }

    /// Intercept and load slope at the given features (`None` if their count is wrong
    /// or a value is not finite).
    fn line(&self, features: &[f64]) -> Option<(f64, f64, f64)> {
        if features.len() != self.feature_means.len() || !features.iter().all(|f| acceptable(*f)) {
            return None;
        }
        let (mut a, mut b) = (self.base[0], self.base[1]);
        let c = self.base.get(2).copied().unwrap_or(0.0);
        for ((f, m), (w, v)) in features
            .iter()
            .zip(&self.feature_means)
            .zip(&self.feature_coefs)
        {
            a += w * (f - m);
            b += v * (f - m);
        }
        (a.is_finite() && b.is_finite()).then_some((a, b, c))
    }

    /// Predicted mean latency at `load` and `features`, ms; `None` beyond saturation
    /// (the inverse form reaching zero throughput) or for bad input.
    pub fn predict_latency(&self, load: f64, features: &[f64]) -> Option<f64> {
        if !acceptable(load) {
            return None;
        }
        let (a, b, c) = self.line(features)?;
        let v = match self.form {
            CurveForm::Inverse => {
                let z = a + b * load;
                if z <= 0.0 {
                    return None;
                }
                1.0 / z
            }
            CurveForm::Linear => a + b * load,
            CurveForm::Quadratic => a + b * load + c * load * load,
        };
        (v.is_finite() && v > 0.0).then(|| clean(v))
    }

    /// The load at which predicted latency reaches the SLO, for a node with these
    /// features (e.g. its forecast probe metrics, for the forecast capacity). 0 when
    /// even an idle node misses the SLO; `None` when latency does not grow with load
    /// in the data (no limit seen) or for bad input.
    pub fn capacity(&self, features: &[f64]) -> Option<Capacity> {
        let (a, b, c) = self.line(features)?;
        let slo = self.slo_ms;
        let load = match self.form {
            CurveForm::Inverse => {
                if a <= 1.0 / slo {
                    0.0
                } else if b >= 0.0 {
                    return None;
                } else {
                    (1.0 / slo - a) / b
                }
            }
            CurveForm::Linear => {
                if a >= slo {
                    0.0
                } else if b <= 0.0 {
                    return None;
                } else {
                    (slo - a) / b
                }
            }
            CurveForm::Quadratic => {
                if a >= slo {
                    0.0
                } else {
                    smallest_positive_root(c, b, a - slo)?
                }
            }
        };
        let load = clean(load).max(0.0);
        Some(Capacity {
            load,
            extrapolated: load > self.max_load,
        })
    }

    /// The usable rows of `rows` with this model's features, if there are enough (3) to
    /// score it on.
    fn scorable<'a>(&self, rows: &'a [CapacityRow]) -> Option<Vec<&'a CapacityRow>> {
        let (ok, _) = usable(rows);
        let ok: Vec<&CapacityRow> = ok
            .into_iter()
            .filter(|r| r.features.len() == self.feature_means.len())
            .collect();
        (ok.len() >= 3).then_some(ok)
    }

    /// Weighted mean |ln(predicted / actual)| over `bins` load bins of `rows` (as the
    /// fit bins and weighs them; a bin past saturation counts as the fit's cap, 5);
    /// `None` with too few usable rows.
    fn log_error(&self, rows: &[CapacityRow], bins: usize) -> Option<f64> {
        let ok = self.scorable(rows)?;
        let (mut err, mut wsum) = (0.0, 0.0);
        for b in make_bins(&ok, bins.max(1), self.slo_ms) {
            let e = self
                .predict_latency(b.load, &b.features)
                .map_or(5.0, |p| (p / b.latency).ln().abs().min(5.0));
            err += b.weight * e;
            wsum += b.weight;
        }
        (wsum > 0.0).then(|| err / wsum)
    }

    /// Scores the model on rows it did not see, binned like training so that
    /// per-request noise does not swamp the comparison.
    pub fn score(&self, rows: &[CapacityRow]) -> Option<CapacityScore> {
        let ok = self.scorable(rows)?;
        let bins = make_bins(&ok, self.bins.max(1), self.slo_ms);
        let mean = bins.iter().map(|b| b.latency).sum::<f64>() / bins.len() as f64;
        let mut err = 0.0;
        let mut base = 0.0;
        for b in &bins {
            // Past saturation the model says "unbounded": score it at 10x the SLO.
            let pred = self
                .predict_latency(b.load, &b.features)
                .unwrap_or(10.0 * self.slo_ms);
            err += (pred - b.latency).abs();
            base += (mean - b.latency).abs();
        }
        let n = bins.len() as f64;
        Some(CapacityScore {
            rows: ok.len(),
            mae_ms: clean(err / n),
            baseline_mae_ms: clean(base / n),
        })
    }
}

/// Smallest positive x with c x^2 + b x + d = 0 where the curve is rising.
fn smallest_positive_root(c: f64, b: f64, d: f64) -> Option<f64> {
    if c.abs() < 1e-15 * b.abs().max(1e-300) {
        return (b > 0.0).then(|| -d / b);
    }
    let disc = b * b - 4.0 * c * d;
    if disc < 0.0 {
        return None;
    }
    let s = disc.sqrt();
    let mut roots = [(-b - s) / (2.0 * c), (-b + s) / (2.0 * c)];
    roots.sort_by(f64::total_cmp);
    roots
        .into_iter()
        .find(|&x| x > 0.0 && 2.0 * c * x + b > 0.0 && x.is_finite())
}

/// Predicted latency from a design row under coefficients (None past saturation).
fn predict(form: CurveForm, coefs: &[f64], row: &[f64]) -> Option<f64> {
    let z: f64 = coefs.iter().zip(row).map(|(c, x)| c * x).sum();
    let v = match form {
        CurveForm::Inverse => {
            if z <= 0.0 {
                return None;
            }
            1.0 / z
        }
        _ => z,
    };
    (v.is_finite() && v > 0.0).then_some(v)
}

/// A node keeps a model of its own only when that model's leave-one-out error on the
/// node's load bins is at most this fraction of the pool model's error on them (both
/// mean |ln(predicted / actual)|, weighted as in the fit).
const OWN_MODEL_MAX_ERROR: f64 = 0.8;

/// Fits one model for the whole pool and one per node (for nodes with enough rows), and
/// keeps a node's own model only where the node's rows show it differs from the pool:
/// its model must explain them clearly better than the pool's does
/// ([`OWN_MODEL_MAX_ERROR`]). Identical nodes then share the pool's model, fitted on
/// all their rows, instead of each extrapolating its own noise to the SLO (per-node
/// fits of eight identical nodes gave capacities from 0.2x to 1x of each other in the
/// simulator). Nodes without their own model use the pool's.
pub fn fit_per_node(
    rows: &[(String, CapacityRow)],
    params: &CapacityParams,
) -> (Result<CapacityModel>, BTreeMap<String, CapacityModel>) {
    let all: Vec<CapacityRow> = rows.iter().map(|(_, r)| r.clone()).collect();
    let mut by_node: BTreeMap<&str, Vec<CapacityRow>> = BTreeMap::new();
    for (n, r) in rows {
        by_node.entry(n.as_str()).or_default().push(r.clone());
    }
    let pool = CapacityModel::fit(&all, params);
    let nodes = by_node
        .into_iter()
        .filter_map(|(n, rs)| {
            let own = CapacityModel::fit(&rs, params).ok()?;
            if let Ok(pool) = &pool
                && let Some(p) = pool.log_error(&rs, params.bins)
                && own.loo_error() > OWN_MODEL_MAX_ERROR * p
            {
                return None;
            }
            Some((n.to_string(), own))
        })
        .collect();
    (pool, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    /// Erlang C: probability that an arrival waits in an M/M/c queue with offered load a.
    fn erlang_c(c: usize, a: f64) -> f64 {
        let mut term = 1.0;
        let mut sum = 1.0;
        for k in 1..c {
            term *= a / k as f64;
            sum += term;
        }
        let last = term * a / c as f64 * (c as f64 / (c as f64 - a));
        last / (sum + last)
    }

    fn mmc_mean(c: usize, s: f64, lambda: f64) -> f64 {
        let a = lambda * s;
        s + erlang_c(c, a) * s / (c as f64 - a)
    }

    fn within(est: f64, truth: f64, tol: f64) -> bool {
        (est - truth).abs() <= tol * truth
    }

    #[test]
    fn mm1_knee_against_request_rate() {
        // s = 10 ms, mu = 0.1/ms; latency ~ Exp(mean s / (1 - rho)) per request.
        let (s, mu, slo) = (10.0, 0.1, 50.0);
        let knee = mu * (1.0 - s / slo); // rho* = 0.8
        let mut rng = Rng::new(11);
        let rows: Vec<CapacityRow> = (0..4_000)
            .map(|_| {
                let lambda = mu * (0.05 + 0.9 * rng.uniform());
                CapacityRow {
                    load: lambda,
                    features: vec![],
                    latency_ms: rng.exponential(s / (1.0 - lambda / mu)),
                }
            })
            .collect();
        let m = CapacityModel::fit(
            &rows,
            &CapacityParams {
                slo_ms: slo,
                ..Default::default()
            },
        )
        .expect("fit");
        let cap = m.capacity(&[]).expect("capacity");
        assert!(
            within(cap.load, knee, 0.2),
            "capacity {} vs knee {knee} ({:?})",
            cap.load,
            m.form()
        );
        assert!(!cap.extrapolated);
    }

    #[test]
    fn mmc_knee_against_request_rate() {
        // 8 servers of 10 ms; SLO 15 ms. The true knee is found by bisection.
        let (c, s, slo) = (8usize, 10.0, 15.0);
        let cap_rate = c as f64 / s;
        let (mut lo, mut hi) = (0.0, cap_rate * 0.9999);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if mmc_mean(c, s, mid) < slo {
                lo = mid
            } else {
                hi = mid
            }
        }
        let knee = lo;
        let mut rng = Rng::new(5);
        let rows: Vec<CapacityRow> = (0..6_000)
            .map(|_| {
                let lambda = cap_rate * (0.1 + 0.85 * rng.uniform());
                let a = lambda * s;
                let wait = if rng.uniform() < erlang_c(c, a) {
                    rng.exponential(s / (c as f64 - a))
                } else {
                    0.0
                };
                CapacityRow {
                    load: lambda,
                    features: vec![],
                    latency_ms: rng.exponential(s) + wait,
                }
            })
            .collect();
        let m = CapacityModel::fit(
            &rows,
            &CapacityParams {
                slo_ms: slo,
                ..Default::default()
            },
        )
        .expect("fit");
        let cap = m.capacity(&[]).expect("capacity");
        assert!(
            within(cap.load, knee, 0.2),
            "capacity {} vs knee {knee} ({:?})",
            cap.load,
            m.form()
        );
    }

    #[test]
    fn in_flight_knee_and_node_speed_feature() {
        // Latency = sum of (N + 1) service times of mean s, N requests in flight at
        // arrival; nodes differ in speed, reported by a probe feature (its work time).
        let slo = 60.0;
        let mut rng = Rng::new(9);
        let mut rows = Vec::new();
        for _ in 0..6_000 {
            let s = if rng.uniform() < 0.5 { 5.0 } else { 10.0 };
            let n = (rng.uniform() * 16.0).floor();
            let latency: f64 = (0..=n as usize).map(|_| rng.exponential(s)).sum();
            rows.push(CapacityRow {
                load: n,
                features: vec![s],
                latency_ms: latency,
            });
        }
        let m = CapacityModel::fit(
            &rows,
            &CapacityParams {
                slo_ms: slo,
                ..Default::default()
            },
        )
        .expect("fit");
        for s in [5.0, 10.0] {
            let knee = slo / s - 1.0;
            let cap = m.capacity(&[s]).expect("capacity");
            assert!(
                within(cap.load, knee, 0.2),
                "s={s}: {} vs {knee} ({:?})",
                cap.load,
                m.form()
            );
        }
        // Scored on fresh rows it beats a constant forecast by far.
        let score = m.score(&rows[..2_000]).expect("score");
        assert!(score.mae_ms < 0.3 * score.baseline_mae_ms, "{score:?}");
    }

    #[test]
    fn bad_rows_are_ignored_and_too_few_refused() {
        let mut rows: Vec<CapacityRow> = (0..100)
            .map(|i| CapacityRow {
                load: i as f64,
                features: vec![],
                latency_ms: 10.0 + i as f64,
            })
            .collect();
        rows.push(CapacityRow {
            load: f64::NAN,
            features: vec![],
            latency_ms: 1.0,
        });
        rows.push(CapacityRow {
            load: 1.0,
            features: vec![],
            latency_ms: -1.0,
        });
        rows.push(CapacityRow {
            load: 1.0,
            features: vec![1.0],
            latency_ms: 1.0,
        });
        let m = CapacityModel::fit(
            &rows,
            &CapacityParams {
                slo_ms: 50.0,
                ..Default::default()
            },
        )
        .expect("fit");
        assert_eq!(m.rows(), (100, 3));
        let cap = m.capacity(&[]).expect("capacity");
        assert!(within(cap.load, 40.0, 0.05), "{cap:?}");
        assert_eq!(m.capacity(&[1.0]), None, "wrong feature count");
        assert!(matches!(
            CapacityModel::fit(&rows[..10], &CapacityParams::default()),
            Err(PredictError::NotEnoughData { .. })
        ));
        let flat: Vec<CapacityRow> = (0..100)
            .map(|_| CapacityRow {
                load: 3.0,
                features: vec![],
                latency_ms: 10.0,
            })
            .collect();
        assert!(matches!(
            CapacityModel::fit(&flat, &CapacityParams::default()),
            Err(PredictError::Degenerate(_))
        ));
    }

    #[test]
    fn no_load_effect_means_no_limit_and_outputs_stay_finite() {
        let mut rng = Rng::new(1);
        let rows: Vec<CapacityRow> = (0..500)
            .map(|i| CapacityRow {
                load: (i % 20) as f64,
                features: vec![1e300 * rng.uniform()],
                latency_ms: 10.0 + rng.uniform(),
            })
            .collect();
        let m = CapacityModel::fit(
            &rows,
            &CapacityParams {
                slo_ms: 1e6,
                ..Default::default()
            },
        )
        .expect("fit");
        if let Some(c) = m.capacity(&[1e300]) {
            assert!(c.load.is_finite() && c.extrapolated, "{c:?}");
        }
        for load in [0.0, 1e300, -5.0] {
            if let Some(l) = m.predict_latency(load, &[5e299]) {
                assert!(l.is_finite());
            }
        }
        assert_eq!(m.predict_latency(f64::NAN, &[1.0]), None);
    }

    #[test]
    fn per_node_models() {
        let mut rows = Vec::new();
        for node in ["a", "b"] {
            let s = if node == "a" { 5.0 } else { 10.0 };
            for i in 0..300 {
                let n = (i % 15) as f64;
                rows.push((
                    node.to_string(),
                    CapacityRow {
                        load: n,
                        features: vec![],
                        latency_ms: s * (n + 1.0),
                    },
                ));
            }
        }
        let (pool, nodes) = fit_per_node(
            &rows,
            &CapacityParams {
                slo_ms: 50.0,
                ..Default::default()
            },
        );
        assert!(pool.is_ok());
        let ca = nodes["a"].capacity(&[]).expect("a").load;
        let cb = nodes["b"].capacity(&[]).expect("b").load;
        assert!(within(ca, 9.0, 0.05) && within(cb, 4.0, 0.05), "{ca} {cb}");
    }

    #[test]
    fn identical_nodes_share_the_pool_model() {
        // Eight identical nodes seen over a narrow load range with lognormal noise: each
        // node's own fit would extrapolate its noise to the SLO; none beats the pool's.
        let mut rng = Rng::new(7);
        let mut rows = Vec::new();
        for node in 0..8 {
            for _ in 0..300 {
                let load = (4.0 * rng.uniform()).floor();
                rows.push((
                    format!("n{node}"),
                    CapacityRow {
                        load,
                        features: vec![],
                        latency_ms: 20.0 * (1.0 + 0.5 * load) * (0.5 * rng.normal()).exp(),
                    },
                ));
            }
        }
        let params = CapacityParams {
            slo_ms: 100.0,
            ..Default::default()
        };
        let (pool, nodes) = fit_per_node(&rows, &params);
        let pool = pool.expect("pool model");
        assert!(pool.capacity(&[]).is_some());
        assert!(
            nodes.is_empty(),
            "nodes kept their own models: {:?}",
            nodes
                .iter()
                .map(|(n, m)| (n, m.capacity(&[]).map(|c| c.load)))
                .collect::<Vec<_>>()
        );
    }
}
