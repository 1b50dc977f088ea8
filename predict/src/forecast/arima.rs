//! Small ARIMA(p, d, q) models (p, q <= 2, d <= 1, no drift): fitting by robust
//! conditional sum of squares, order selection by AICc, and the cheap state the
//! forecaster bank updates on the sample path.
//!
//! Fitting starts from Hannan-Rissanen estimates (a long autoregression for the
//! innovations, then one least-squares regression per order), scores every order by the
//! AICc of its conditional sum of squares, and refines the chosen order with a
//! Nelder-Mead search of that sum under stationarity and invertibility constraints.
//! Innovations beyond 3 robust standard deviations are clipped inside the recursion and
//! weigh linearly in the loss (Huber), so one spike does not set the coefficients. The
//! one-step errors are those of `y` for every `d`, so orders with and without a
//! difference are compared on the same sample. Pure and allocation-light: meant to run
//! in a background refit, never on the sample path.
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
use crate::num::{acceptable, clean, clean_or, median};

/// Largest AR and MA order.
pub const MAX_PQ: u8 = 2;
/// Fewest values to fit.
pub const MIN_FIT_LEN: usize = 40;
/// Huber clip of the innovations, in robust standard deviations.
const HUBER_K: f64 = 3.0;
/// Constraint margin: roots must be at least this far inside the unit circle region.
const MARGIN: f64 = 0.98;

/// An ARIMA order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    /// Autoregressive order (0..=2).
    pub p: u8,
    /// Differences (0..=1).
    pub d: u8,
    /// Moving-average order (0..=2).
    pub q: u8,
}

impl Order {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.p > MAX_PQ || self.q > MAX_PQ || self.d > 1 {
            return Err(PredictError::InvalidParam {
                name: "order",
                message: format!(
                    "ARIMA({},{},{}) is outside p, q <= 2, d <= 1",
                    self.p, self.d, self.q
                ),
            });
        }
        Ok(())
    }

    fn params(&self) -> usize {
        usize::from(self.p) + usize::from(self.q)
    }
}

/// A fitted model: `w_t = phi1 w_{t-1} + phi2 w_{t-2} + e_t + theta1 e_{t-1} + theta2 e_{t-2}`
/// where `w` is `y - mean` (d = 0) or `y_t - y_{t-1}` (d = 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArimaModel {
    /// The order.
    pub order: Order,
    /// Mean of `y` (d = 0; 0 for d = 1).
    pub mean: f64,
    /// AR coefficients (unused ones are 0).
    pub phi: [f64; 2],
    /// MA coefficients (unused ones are 0).
    pub theta: [f64; 2],
    /// Standard deviation of the one-step errors (robust, in units of `y`).
    pub sigma: f64,
    /// The criterion the order was chosen by (lower is better).
    pub aicc: f64,
}

impl ArimaModel {
    /// A short label, e.g. `arima(1,1,1)`.
    pub fn label(&self) -> String {
        format!("arima({},{},{})", self.order.p, self.order.d, self.order.q)
    }

    fn coefs(&self) -> [f64; 4] {
        [self.phi[0], self.phi[1], self.theta[0], self.theta[1]]
    }
}

/// The values an ARIMA forecast starts from: the last three inputs and the last two
/// one-step errors.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ArimaState {
    /// `y_t, y_{t-1}, y_{t-2}`.
    pub y: [f64; 3],
    /// `e_t, e_{t-1}`.
    pub e: [f64; 2],
    /// Values seen (saturating at 3).
    pub seen: u8,
}

impl ArimaState {
    /// The state packed as 5 floats (`y_t, y_{t-1}, y_{t-2}, e_t, e_{t-1}`).
    pub fn pack(&self) -> [f64; 5] {
        [self.y[0], self.y[1], self.y[2], self.e[0], self.e[1]]
    }

    /// From [`ArimaState::pack`] (`seen` is taken as full).
    pub fn unpack(s: &[f64]) -> ArimaState {
        let g = |i: usize| s.get(i).copied().unwrap_or(0.0);
        ArimaState {
            y: [g(0), g(1), g(2)],
            e: [g(3), g(4)],
            seen: 3,
        }
    }

    /// Learns `y`, with `pred` the model's one-step forecast made before it.
    pub fn push(&mut self, y: f64, pred: f64) {
        if self.seen == 0 {
            self.y = [y; 3];
        } else {
            self.y = [y, self.y[0], self.y[1]];
        }
        let e = if self.seen >= 3 { clean(y - pred) } else { 0.0 };
        self.e = [e, self.e[0]];
        self.seen = self.seen.saturating_add(1).min(3);
    }
}

/// Forecast of `y` `h` steps after the state (`h = 0` is treated as 1).
pub fn forecast(m: &ArimaModel, s: &ArimaState, h: u64) -> f64 {
    let h = h.max(1);
    let [p1, p2, t1, t2] = m.coefs();
    let (mut w0, mut w1) = if m.order.d == 1 {
        (s.y[0] - s.y[1], s.y[1] - s.y[2])
    } else {
        (s.y[0] - m.mean, s.y[1] - m.mean)
    };
    let (mut e0, mut e1) = (s.e[0], s.e[1]);
    let mut sum = 0.0;
    let mut w = 0.0;
    for _ in 0..h.min(10_000) {
        w = p1 * w0 + p2 * w1 + t1 * e0 + t2 * e1;
        w1 = w0;
        w0 = w;
        e1 = e0;
        e0 = 0.0;
        sum += w;
    }
    let y = if m.order.d == 1 {
        s.y[0] + sum
    } else {
        m.mean + w
    };
    clean_or(y, s.y[0])
}

/// True when AR(2) with these coefficients is stationary (with a margin).
fn stationary(a1: f64, a2: f64) -> bool {
    a2.abs() < MARGIN && a1 + a2 < MARGIN && a2 - a1 < MARGIN
}

fn admissible(c: &[f64; 4]) -> bool {
    // MA polynomial 1 + t1 z + t2 z^2 is invertible when AR(2) with (-t1, -t2) is stationary.
    stationary(c[0], c[1]) && stationary(-c[2], -c[3])
}

/// The differenced (or demeaned) series an order models, and the mean used.
fn transform(y: &[f64], d: u8) -> (Vec<f64>, f64) {
    if d == 1 {
        (y.windows(2).map(|p| p[1] - p[0]).collect(), 0.0)
    } else {
        let mean = median(y).unwrap_or(0.0);
        (y.iter().map(|v| v - mean).collect(), mean)
    }
}

/// Robust loss (Huber) of the one-step errors over `w[start..]`, conditional on zero
/// errors before; errors are clipped at `clip` inside the recursion.
fn css(w: &[f64], c: &[f64; 4], start: usize, clip: f64) -> f64 {
    let [p1, p2, t1, t2] = *c;
    let (mut e1, mut e2) = (0.0, 0.0);
    let mut loss = 0.0;
    for t in 2..w.len() {
        let pred = p1 * w[t - 1] + p2 * w[t - 2] + t1 * e1 + t2 * e2;
        let e = w[t] - pred;
        let ec = e.clamp(-clip, clip);
        if t >= start {
            loss += if e.abs() <= clip {
                e * e
            } else {
                clip * (2.0 * e.abs() - clip)
            };
        }
        e2 = e1;
        e1 = ec;
    }
    loss
}

/// Solves the normal equations of a small least-squares problem (Gaussian elimination
/// with partial pivoting and a ridge of 1e-9 relative); `None` when singular.
fn least_squares(rows: &[Vec<f64>], target: &[f64]) -> Option<Vec<f64>> {
    let k = rows.first()?.len();
    if k == 0 {
        return Some(Vec::new());
    }
    let mut a = vec![vec![0.0; k + 1]; k];
    for (r, &t) in rows.iter().zip(target) {
        for i in 0..k {
            for j in 0..k {
                a[i][j] += r[i] * r[j];
            }
            a[i][k] += r[i] * t;
        }
    }
    let scale = (0..k).map(|i| a[i][i]).fold(0.0, f64::max);
    if scale.is_nan() || scale <= 0.0 {
        return None;
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += 1e-9 * scale;
    }
    for col in 0..k {
        let piv = (col..k).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        a.swap(col, piv);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            return None;
        }
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / d;
                for (v, pv) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * pv;
                }
            }
        }
    }
    let x: Vec<f64> = (0..k).map(|i| a[i][k] / a[i][i]).collect();
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Hannan-Rissanen starting values for one order.
fn hannan_rissanen(w: &[f64], order: Order, innov: &[f64], skip: usize) -> [f64; 4] {
    let (p, q) = (usize::from(order.p), usize::from(order.q));
    if p + q == 0 {
        return [0.0; 4];
    }
    let mut rows = Vec::new();
    let mut target = Vec::new();
    for t in skip.max(2)..w.len() {
        let mut r = Vec::with_capacity(p + q);
        for i in 1..=p {
            r.push(w[t - i]);
        }
        for j in 1..=q {
            r.push(innov[t - j]);
        }
        rows.push(r);
        target.push(w[t]);
    }
    let mut c = [0.0; 4];
    if let Some(x) = least_squares(&rows, &target) {
        c[..p].copy_from_slice(&x[..p]);
        c[2..2 + q].copy_from_slice(&x[p..p + q]);
    }
    if admissible(&c) { c } else { [0.0; 4] }
}

/// Innovations of a long autoregression (order `m`), 0 for the first `m`.
fn long_ar_innovations(w: &[f64], m: usize) -> Vec<f64> {
    let mut innov = vec![0.0; w.len()];
    if w.len() <= 3 * m || m == 0 {
        return innov;
    }
    let rows: Vec<Vec<f64>> = (m..w.len())
        .map(|t| (1..=m).map(|i| w[t - i]).collect())
        .collect();
    let target: Vec<f64> = w[m..].to_vec();
    if let Some(a) = least_squares(&rows, &target) {
        for t in m..w.len() {
            let pred: f64 = (1..=m).map(|i| a[i - 1] * w[t - i]).sum();
            innov[t] = w[t] - pred;
        }
    }
    innov
}

/// Nelder-Mead over the free coefficients of `order`, minimising `f`.
fn nelder_mead(start: [f64; 4], order: Order, f: impl Fn(&[f64; 4]) -> f64) -> [f64; 4] {
    let idx: Vec<usize> = (0..usize::from(order.p))
        .chain((0..usize::from(order.q)).map(|j| 2 + j))
        .collect();
    let n = idx.len();
    if n == 0 {
        return start;
    }
    let embed = |x: &[f64]| {
        let mut c = [0.0; 4];
        for (k, &i) in idx.iter().enumerate() {
            c[i] = x[k];
        }
        c
    };
    let eval = |x: &[f64]| {
        let c = embed(x);
        if admissible(&c) { f(&c) } else { f64::INFINITY }
    };
    let x0: Vec<f64> = idx.iter().map(|&i| start[i]).collect();
    let mut simplex: Vec<(Vec<f64>, f64)> = vec![(x0.clone(), eval(&x0))];
    for k in 0..n {
        let mut x = x0.clone();
        x[k] += if x[k] > 0.5 { -0.1 } else { 0.1 };
        let v = eval(&x);
        simplex.push((x, v));
    }
    for _ in 0..60 * n {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let best = simplex[0].1;
        let worst = simplex[n].1;
        if worst.is_finite() && (worst - best).abs() <= 1e-10 * best.abs().max(1e-300) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|k| simplex[..n].iter().map(|s| s.0[k]).sum::<f64>() / n as f64)
            .collect();
        let towards = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[n].0)
                .map(|(c, w)| c + t * (w - c))
                .collect()
        };
        let xr = towards(-1.0);
        let fr = eval(&xr);
        if fr < simplex[0].1 {
            let xe = towards(-2.0);
            let fe = eval(&xe);
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
        } else {
            let xc = towards(0.5);
            let fc = eval(&xc);
            if fc < simplex[n].1 {
                simplex[n] = (xc, fc);
            } else {
                let b = simplex[0].0.clone();
                for s in simplex.iter_mut().skip(1) {
                    let x: Vec<f64> = s.0.iter().zip(&b).map(|(v, b)| b + 0.5 * (v - b)).collect();
                    let v = eval(&x);
                    *s = (x, v);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    embed(&simplex[0].0)
}

struct Prepared {
    y_len: usize,
    clip: f64,
    sigma0: f64,
}

fn prepare(y: &[f64]) -> Result<Prepared> {
    if y.len() < MIN_FIT_LEN {
        return Err(PredictError::NotEnoughData {
            usable: y.len(),
            needed: MIN_FIT_LEN,
        });
    }
    if let Some(bad) = y.iter().find(|v| !acceptable(**v)) {
        return Err(PredictError::NonFinite {
            name: "arima input".to_string(),
            value: *bad,
        });
    }
    // Robust scale of the one-step changes: a floor for the Huber clip.
    let diffs: Vec<f64> = y.windows(2).map(|p| (p[1] - p[0]).abs()).collect();
    let mad = median(&diffs).unwrap_or(0.0);
    let sigma0 = 1.4826 * mad / std::f64::consts::SQRT_2;
    let spread = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let sigma0 = if sigma0 > 0.0 {
        sigma0
    } else {
        (spread * 1e-9).max(1e-12)
    };
    Ok(Prepared {
        y_len: y.len(),
        clip: HUBER_K * sigma0,
        sigma0,
    })
}

/// Fits one order to `y` by robust conditional sum of squares.
pub fn fit(y: &[f64], order: Order) -> Result<ArimaModel> {
    order.validate()?;
    let prep = prepare(y)?;
    Ok(fit_prepared(y, order, &prep, true))
}

fn fit_prepared(y: &[f64], order: Order, prep: &Prepared, refine: bool) -> ArimaModel {
    let (w, mean) = transform(y, order.d);
    // Every order is scored from the same y index (3), so losses compare across d.
    let start = if order.d == 1 { 2 } else { 3 };
    let m = 8.min(w.len() / 6);
    let innov = long_ar_innovations(&w, m);
    let c0 = hannan_rissanen(&w, order, &innov, m);
    let obj = |c: &[f64; 4]| css(&w, c, start, prep.clip);
    let c = if refine {
        nelder_mead(c0, order, obj)
    } else {
        c0
    };
    let loss = obj(&c);
    let n = w.len().saturating_sub(start).max(1) as f64;
    let k = order.params() as f64 + 1.0 + if order.d == 0 { 1.0 } else { 0.0 };
    let aicc = if n > k + 1.0 {
        n * (loss / n).max(1e-300).ln() + 2.0 * k + 2.0 * k * (k + 1.0) / (n - k - 1.0)
    } else {
        f64::MAX
    };
    let sigma = (loss / n).sqrt();
    let _ = prep.y_len;
    ArimaModel {
        order,
        mean: clean(mean),
        phi: [clean(c[0]), clean(c[1])],
        theta: [clean(c[2]), clean(c[3])],
        sigma: clean_or(sigma, prep.sigma0),
        aicc: clean_or(aicc, f64::MAX),
    }
}

/// Chooses the order (p, q <= `max.p`, `max.q`; d <= `max.d`) with the lowest AICc of
/// its Hannan-Rissanen fit, then refines that order's coefficients.
pub fn select(y: &[f64], max: Order) -> Result<ArimaModel> {
    max.validate()?;
    let prep = prepare(y)?;
    let mut best: Option<ArimaModel> = None;
    for d in 0..=max.d {
        for p in 0..=max.p {
            for q in 0..=max.q {
                let m = fit_prepared(y, Order { p, d, q }, &prep, false);
                if best.is_none_or(|b| m.aicc < b.aicc) {
                    best = Some(m);
                }
            }
        }
    }
    let order = best.map_or(Order { p: 0, d: 1, q: 0 }, |b| b.order);
    Ok(fit_prepared(y, order, &prep, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn simulate(n: usize, order: Order, phi: [f64; 2], theta: [f64; 2], seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let (mut w1, mut w2, mut e1, mut e2) = (0.0, 0.0, 0.0, 0.0);
        let mut y = 100.0;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n + 200 {
            let e = rng.normal();
            let w = phi[0] * w1 + phi[1] * w2 + e + theta[0] * e1 + theta[1] * e2;
            (w2, w1, e2, e1) = (w1, w, e1, e);
            y = if order.d == 1 { y + w } else { 100.0 + w };
            out.push(y);
        }
        out.split_off(200)
    }

    #[test]
    fn recovers_known_coefficients() {
        let cases = [
            (Order { p: 1, d: 0, q: 1 }, [0.6, 0.0], [0.3, 0.0]),
            (Order { p: 2, d: 0, q: 0 }, [0.5, -0.3], [0.0, 0.0]),
            (Order { p: 1, d: 1, q: 1 }, [0.5, 0.0], [-0.3, 0.0]),
            (Order { p: 0, d: 1, q: 2 }, [0.0, 0.0], [0.4, 0.2]),
        ];
        for (k, (order, phi, theta)) in cases.into_iter().enumerate() {
            let y = simulate(3_000, order, phi, theta, 10 + k as u64);
            let m = fit(&y, order).expect("fit");
            for i in 0..2 {
                assert!(
                    (m.phi[i] - phi[i]).abs() < 0.08,
                    "{order:?}: phi {:?}",
                    m.phi
                );
                assert!(
                    (m.theta[i] - theta[i]).abs() < 0.08,
                    "{order:?}: theta {:?}",
                    m.theta
                );
            }
            assert!((m.sigma - 1.0).abs() < 0.15, "{order:?}: sigma {}", m.sigma);
        }
    }

    #[test]
    fn selection_finds_a_plausible_order() {
        let order = Order { p: 1, d: 0, q: 0 };
        let y = simulate(2_000, order, [0.8, 0.0], [0.0, 0.0], 7);
        let m = select(&y, Order { p: 2, d: 1, q: 2 }).expect("select");
        assert_eq!(m.order.d, 0, "{m:?}");
        // The chosen model's one-step forecast tracks the AR(1) mean reversion.
        let mut s = ArimaState::default();
        for &v in &y {
            let p = forecast(&m, &s, 1);
            s.push(v, p);
        }
        let want = 100.0 + 0.8 * (y[y.len() - 1] - 100.0);
        assert!((forecast(&m, &s, 1) - want).abs() < 0.5);
        // Random walk: one difference.
        let y = simulate(2_000, Order { p: 0, d: 1, q: 0 }, [0.0; 2], [0.0; 2], 8);
        let m = select(&y, Order { p: 2, d: 1, q: 2 }).expect("select");
        assert_eq!(m.order.d, 1, "{m:?}");
    }

    #[test]
    fn forecasts_stay_finite_and_inputs_are_checked() {
        assert!(fit(&[1.0; 10], Order { p: 1, d: 0, q: 0 }).is_err());
        assert!(fit(&[1.0; 100], Order { p: 3, d: 0, q: 0 }).is_err());
        let mut y = vec![5.0; 100];
        y[50] = f64::NAN;
        assert!(fit(&y, Order { p: 1, d: 0, q: 0 }).is_err());
        // A constant series fits without NaN.
        let m = select(&[5.0; 100], Order { p: 2, d: 1, q: 2 }).expect("select");
        let s = ArimaState {
            y: [5.0; 3],
            e: [0.0; 2],
            seen: 3,
        };
        assert_eq!(forecast(&m, &s, 3), 5.0);
        let huge = ArimaState {
            y: [1e300, -1e300, 1e300],
            e: [1e300, -1e300],
            seen: 3,
        };
        assert!(forecast(&m, &huge, u64::MAX).is_finite());
    }
}
