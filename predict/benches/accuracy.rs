//! Forecast accuracy on the NAB server-metric series: rolling origin, every point after
//! the first 30 % forecast 1, 3 and 6 steps ahead from the past only; MAE relative to
//! the naive forecast, for the self-tuning forecaster (no per-series tuning; background
//! refits run inline every time they are due) next to baselines tuned or fitted per
//! series and per horizon on the first 30 %: SES and damped Holt (grid search),
//! seasonal naive (period chosen among an hour and a day), ARIMA(1,1,1) (robust CSS
//! fit of the crate's `arima::fit` on the prefix, then run with fixed coefficients).
//! The bank as it was before the seasonal and ARIMA members ("classic": naive + SES +
//! Holt) runs in the same pass. Prints per-series rows, the geometric means and the
//! goals.
// A bench measures time, reads data files and prints: it opts out of the pure-crate
// lints of predict/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
mod common;

use std::sync::Arc;

use plb_predict::forecast::arima::{self, ArimaState, Order};
use plb_predict::forecast::{AutoForecaster, BankSpec, Family, ForecastParams, Forecaster, Member};

const HORIZONS: [usize; 3] = [1, 3, 6];

/// A fixed-parameter smoother, written independently of the crate's bank.
#[derive(Clone, Copy, Debug)]
struct Fixed {
    alpha: f64,
    beta: f64,
    phi: f64,
    trend: bool,
}

impl Fixed {
    /// Mean absolute h-step error over targets in `from..to`, running the smoother over
    /// `values[..to]` (forecasts made at origin t for t + h, using values[..=t]).
    fn mae(&self, values: &[f64], h: usize, from: usize, to: usize) -> f64 {
        let (mut l, mut b) = (values[0], 0.0);
        let mut damp = 0.0;
        let mut p = 1.0;
        for _ in 0..h {
            p *= self.phi;
            damp += p;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for t in 0..to.saturating_sub(h) {
            if t > 0 {
                let y = values[t];
                if self.trend {
                    let nl = self.alpha * y + (1.0 - self.alpha) * (l + self.phi * b);
                    b = self.beta * (nl - l) + (1.0 - self.beta) * self.phi * b;
                    l = nl;
                } else {
                    l += self.alpha * (y - l);
                }
            }
            let target = t + h;
            if target >= from {
                let f = if self.trend { l + damp * b } else { l };
                sum += (values[target] - f).abs();
                n += 1;
            }
        }
        sum / n.max(1) as f64
    }
}

fn ses_grid() -> Vec<Fixed> {
    (1..=40)
        .map(|i| Fixed {
            alpha: i as f64 / 40.0,
            beta: 0.0,
            phi: 1.0,
            trend: false,
        })
        .collect()
}

fn holt_grid() -> Vec<Fixed> {
    let mut g = Vec::new();
    for alpha in [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] {
        for beta in [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5] {
            for phi in [0.8, 0.9, 0.95, 0.98, 1.0] {
                g.push(Fixed {
                    alpha,
                    beta,
                    phi,
                    trend: true,
                });
            }
        }
    }
    g
}

/// Tunes on targets inside the first 30 % and returns the MAE of the winner on the rest.
fn tuned_mae(grid: &[Fixed], values: &[f64], h: usize, split: usize) -> (f64, Fixed) {
    let mut best = grid[0];
    let mut best_err = f64::INFINITY;
    for g in grid {
        let e = g.mae(values, h, h, split);
        if e < best_err {
            best_err = e;
            best = *g;
        }
    }
    (best.mae(values, h, split, values.len()), best)
}

fn naive_mae(values: &[f64], h: usize, split: usize) -> f64 {
    let n = values.len();
    let s: f64 = (split..n).map(|j| (values[j] - values[j - h]).abs()).sum();
    s / (n - split) as f64
}

/// Seasonal naive with period `p`: MAE over targets in `from..to` (targets with a value
/// one period earlier, made h steps ahead: the value at target - p when p >= h).
fn snaive_err(values: &[f64], p: usize, h: usize, from: usize, to: usize) -> f64 {
    // Forecast for t + h made at t: the value at t + h - p*k, k the smallest with
    // t + h - p*k <= t.
    let k = h.div_ceil(p);
    let lag = p * k;
    let from = from.max(lag);
    let s: f64 = (from..to)
        .map(|j| (values[j] - values[j - lag]).abs())
        .sum();
    s / (to.saturating_sub(from)).max(1) as f64
}

/// Seasonal naive with the period (1 h or 1 day of samples) that did best on the prefix.
fn snaive_tuned(values: &[f64], step_s: f64, h: usize, split: usize) -> (f64, usize) {
    let mut best = (f64::INFINITY, 1);
    for period_s in [3_600.0, 86_400.0] {
        let p = (period_s / step_s).round() as usize;
        if p < 2 || 2 * p > split {
            continue;
        }
        let e = snaive_err(values, p, h, p, split);
        if e < best.0 {
            best = (e, p);
        }
    }
    let p = best.1;
    (snaive_err(values, p, h, split, values.len()), p)
}

/// ARIMA(1,1,1) fitted on the prefix, run with fixed coefficients over the series.
fn arima111(values: &[f64], split: usize) -> [f64; 3] {
    let order = Order { p: 1, d: 1, q: 1 };
    let Ok(model) = arima::fit(&values[..split], order) else {
        return [f64::NAN; 3];
    };
    let n = values.len();
    let mut state = ArimaState::default();
    let mut sum = [0.0; 3];
    let mut cnt = [0usize; 3];
    for t in 0..n {
        let pred = arima::forecast(&model, &state, 1);
        state.push(values[t], pred);
        for (k, &h) in HORIZONS.iter().enumerate() {
            let target = t + h;
            if target >= split && target < n {
                sum[k] += (values[target] - arima::forecast(&model, &state, h as u64)).abs();
                cnt[k] += 1;
            }
        }
    }
    [0, 1, 2].map(|k| sum[k] / cnt[k].max(1) as f64)
}

const FAMILIES: [Family; 6] = [
    Family::Naive,
    Family::Ses,
    Family::Holt,
    Family::SeasonalNaive,
    Family::HoltWinters,
    Family::Arima,
];

/// A forecaster's MAE over targets from `split`, and the family it used most for each
/// horizon over those targets. Background refits run inline whenever due.
fn model_mae(
    mut model: AutoForecaster,
    values: &[f64],
    step_ms: f64,
    split: usize,
) -> ([f64; 3], [Family; 3]) {
    let n = values.len();
    let mut sum = [0.0; 3];
    let mut cnt = [0usize; 3];
    let mut uses = [[0usize; 6]; 3];
    for t in 0..n {
        model.update(values[t]);
        model.refit_inline(Some(step_ms));
        for (k, &h) in HORIZONS.iter().enumerate() {
            let target = t + h;
            if target >= split && target < n {
                sum[k] += (values[target] - model.forecast(h as u32).mean).abs();
                cnt[k] += 1;
                let fam = model.chosen_family(h as u32);
                let i = FAMILIES.iter().position(|f| *f == fam).unwrap_or(0);
                uses[k][i] += 1;
            }
        }
    }
    let mut most = [Family::Naive; 3];
    for k in 0..3 {
        let i = (0..6).max_by_key(|&f| uses[k][f]).unwrap_or(0);
        most[k] = FAMILIES[i];
    }
    ([0, 1, 2].map(|k| sum[k] / cnt[k].max(1) as f64), most)
}

fn short(f: Family) -> &'static str {
    match f {
        Family::Naive => "naive",
        Family::Ses => "ses",
        Family::Holt => "holt",
        Family::SeasonalNaive => "snaive",
        Family::HoltWinters => "hw",
        Family::Arima => "arima",
    }
}

const MODELS: [&str; 6] = ["auto", "classic", "ses*", "holt*", "snaive*", "arima111"];

fn main() {
    let series = common::load_nab();
    assert!(!series.is_empty(), "no series under data/nab");
    println!(
        "Forecast accuracy: MAE / naive MAE (lower is better), rolling origin over the last 70 %"
    );
    println!(
        "auto = self-tuning bank (naive + 8 SES + 4 Holt + seasonal naive + 5 Holt-Winters + 2 ARIMA, chosen per horizon by recent MAE), refits inline when due, no per-series tuning"
    );
    println!(
        "classic = the bank before seasonal and ARIMA members (naive + 8 SES + 4 Holt), same run"
    );
    println!(
        "ses*, holt* = SES / damped Holt grid-searched per series and horizon on the first 30 %; snaive* = seasonal naive, period (1 h or 1 day) chosen on the first 30 %; arima111 = ARIMA(1,1,1) fitted on the first 30 %"
    );
    println!();
    let mut head = format!("{:<28} {:>5}", "series", "n");
    for h in HORIZONS {
        head.push_str(&format!(
            " | {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}",
            format!("auto{h}"),
            "clas",
            "ses*",
            "holt*",
            "snv*",
            "ar111"
        ));
    }
    println!("{head} | auto used (h=1,3,6) | period");
    let (ses, holt) = (ses_grid(), holt_grid());
    let classic_spec = {
        let members: Vec<Member> = BankSpec::default_members(None)
            .into_iter()
            .filter(|m| matches!(m.family(), Family::Naive | Family::Ses | Family::Holt))
            .collect();
        BankSpec::new(members, ForecastParams::default()).expect("classic spec")
    };
    let mut rel: [[Vec<f64>; 3]; 6] = Default::default(); // [model][h]
    let mut worst: [(f64, String); 3] = Default::default(); // auto / best baseline, per h
    let mut over = 0usize;
    for s in &series {
        let v = &s.values;
        let split = (v.len() as f64 * 0.3).ceil() as usize;
        let mut gaps: Vec<f64> = s.times.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_by(f64::total_cmp);
        let step_s = gaps.get(gaps.len() / 2).copied().unwrap_or(300.0).max(1.0);
        let step_ms = step_s * 1_000.0;
        let auto_model = AutoForecaster::new();
        let period = {
            let mut m = AutoForecaster::new();
            for &y in &v[..split] {
                m.update(y);
                m.refit_inline(Some(step_ms));
            }
            m.bank()
                .season()
                .map_or("-".to_string(), |(p, st)| format!("{p}({st:.2})"))
        };
        let (auto, used) = model_mae(auto_model, v, step_ms, split);
        let (classic, _) = model_mae(
            AutoForecaster::with_spec(Arc::clone(&classic_spec)),
            v,
            step_ms,
            split,
        );
        let ar = arima111(v, split);
        let mut row = String::new();
        for (k, &h) in HORIZONS.iter().enumerate() {
            let naive = naive_mae(v, h, split);
            let (ses_e, _) = tuned_mae(&ses, v, h, split);
            let (holt_e, _) = tuned_mae(&holt, v, h, split);
            let (sn_e, _) = snaive_tuned(v, step_s, h, split);
            let r = [
                auto[k] / naive,
                classic[k] / naive,
                ses_e / naive,
                holt_e / naive,
                sn_e / naive,
                ar[k] / naive,
            ];
            for m in 0..6 {
                rel[m][k].push(r[m]);
            }
            let best = r[2..].iter().copied().fold(f64::INFINITY, f64::min);
            let ratio = r[0] / best;
            if ratio > 1.05 {
                over += 1;
            }
            if ratio > worst[k].0 {
                worst[k] = (ratio, s.name.clone());
            }
            row.push_str(&format!(
                " | {:>5.3} {:>5.3} {:>5.3} {:>5.3} {:>5.3} {:>5.3}",
                r[0], r[1], r[2], r[3], r[4], r[5]
            ));
        }
        let name: String = s.name.chars().take(28).collect();
        println!(
            "{:<28} {:>5}{} | {},{},{} | {}",
            name,
            v.len(),
            row,
            short(used[0]),
            short(used[1]),
            short(used[2]),
            period
        );
    }
    println!();
    println!("geometric mean over {} series:", series.len());
    println!("{:<10} {:>8} {:>8} {:>8}", "model", "h=1", "h=3", "h=6");
    let g = |m: usize, k: usize| common::geomean(&rel[m][k]);
    for (m, name) in MODELS.iter().enumerate() {
        println!(
            "{:<10} {:>8.3} {:>8.3} {:>8.3}",
            name,
            g(m, 0),
            g(m, 1),
            g(m, 2)
        );
    }
    println!();
    println!("{:<44} {:>8} {:>8} {:>8}", "ratio", "h=1", "h=3", "h=6");
    let best_base = |k: usize| (2..6).map(|m| g(m, k)).fold(f64::INFINITY, f64::min);
    println!(
        "{:<44} {:>8.3} {:>8.3} {:>8.3}",
        "auto / best baseline (geomean)",
        g(0, 0) / best_base(0),
        g(0, 1) / best_base(1),
        g(0, 2) / best_base(2)
    );
    println!(
        "{:<44} {:>8.3} {:>8.3} {:>8.3}",
        "auto / classic bank (geomean)",
        g(0, 0) / g(1, 0),
        g(0, 1) / g(1, 1),
        g(0, 2) / g(1, 2)
    );
    println!(
        "{:<44} {:>8.3} {:>8.3} {:>8.3}",
        "worst series: auto / its best baseline", worst[0].0, worst[1].0, worst[2].0
    );
    println!(
        "  (worst at h=1: {}, h=3: {}, h=6: {})",
        worst[0].1, worst[1].1, worst[2].1
    );
    println!();
    let met = |b: bool| if b { "met" } else { "NOT met" };
    let g13 = (0..2).all(|k| g(0, k) <= 0.9 * best_base(k));
    let g6 = g(0, 2) <= 0.95 * best_base(2);
    println!(
        "goal geomean >= 10 % below the best baseline at h=1,3: {}; >= 5 % below at h=6: {}",
        met(g13),
        met(g6)
    );
    println!(
        "goal no series > 5 % worse than its best baseline at any horizon: {} ({over} series-horizons over)",
        met(over == 0)
    );
    println!(
        "goal (kept) auto <= classic bank at every horizon (geomean): {}",
        met((0..3).all(|k| g(0, k) <= g(1, k) + 1e-9))
    );
}
