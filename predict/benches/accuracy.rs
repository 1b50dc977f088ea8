//! Forecast accuracy on the NAB server-metric series: rolling origin, every point after
//! the first 30 % forecast 1, 3 and 6 steps ahead from the past only; MAE relative to
//! the naive forecast, for the self-tuning forecaster (no per-series tuning) next to
//! SES and damped Holt whose parameters are grid-searched per series and per horizon
//! on the first 30 %. Prints per-series rows and the geometric means.
mod common;

use plb_predict::forecast::{AutoForecaster, Family, Forecaster};

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

/// The self-tuning forecaster's MAE over targets from `split`, and the family it used
/// most for each horizon over those targets.
fn auto_mae(values: &[f64], split: usize) -> ([f64; 3], [Family; 3]) {
    let n = values.len();
    let mut model = AutoForecaster::new();
    let mut sum = [0.0; 3];
    let mut cnt = [0usize; 3];
    let mut uses = [[0usize; 3]; 3];
    for t in 0..n {
        model.update(values[t]);
        for (k, &h) in HORIZONS.iter().enumerate() {
            let target = t + h;
            if target >= split && target < n {
                sum[k] += (values[target] - model.forecast(h as u32).mean).abs();
                cnt[k] += 1;
                let fam = model.chosen_family(h as u32) as usize;
                uses[k][fam] += 1;
            }
        }
    }
    let fams = [Family::Naive, Family::Ses, Family::Holt];
    let mut most = [Family::Naive; 3];
    for k in 0..3 {
        let i = (0..3).max_by_key(|&f| uses[k][f]).unwrap_or(0);
        most[k] = fams[i];
    }
    ([0, 1, 2].map(|k| sum[k] / cnt[k].max(1) as f64), most)
}

fn main() {
    let series = common::load_nab();
    assert!(!series.is_empty(), "no series under data/nab");
    println!(
        "Forecast accuracy: MAE / naive MAE (lower is better), rolling origin over the last 70 %"
    );
    println!(
        "auto = self-tuning (naive + 8 SES + 4 Holt, robust clipped updates, chosen per horizon by recent MAE), no per-series tuning"
    );
    println!(
        "ses*, holt* = classic SES / damped Holt grid-searched per series and per horizon on the first 30 % (40 alphas; 12x7x5 Holt grid)"
    );
    println!();
    println!(
        "{:<32} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | auto used (h=1,3,6)",
        "series",
        "n",
        "auto1",
        "ses*1",
        "holt*1",
        "auto3",
        "ses*3",
        "holt*3",
        "auto6",
        "ses*6",
        "holt*6",
    );
    let (ses, holt) = (ses_grid(), holt_grid());
    let mut rel: [[Vec<f64>; 3]; 3] = Default::default(); // [model][h]
    for s in &series {
        let v = &s.values;
        let split = (v.len() as f64 * 0.3).ceil() as usize;
        let (auto, used) = auto_mae(v, split);
        let mut row = String::new();
        for (k, &h) in HORIZONS.iter().enumerate() {
            let naive = naive_mae(v, h, split);
            let (ses_e, _) = tuned_mae(&ses, v, h, split);
            let (holt_e, _) = tuned_mae(&holt, v, h, split);
            let r = [auto[k] / naive, ses_e / naive, holt_e / naive];
            for m in 0..3 {
                rel[m][k].push(r[m]);
            }
            row.push_str(&format!(" | {:>6.3} {:>6.3} {:>6.3}", r[0], r[1], r[2]));
        }
        println!(
            "{:<32} {:>6}{} | {},{},{}",
            s.name,
            v.len(),
            row,
            used[0].as_str(),
            used[1].as_str(),
            used[2].as_str()
        );
    }
    println!();
    println!("geometric mean over {} series:", series.len());
    println!("{:<8} {:>8} {:>8} {:>8}", "model", "h=1", "h=3", "h=6");
    for (m, name) in ["auto", "ses*", "holt*"].iter().enumerate() {
        println!(
            "{:<8} {:>8.3} {:>8.3} {:>8.3}",
            name,
            common::geomean(&rel[m][0]),
            common::geomean(&rel[m][1]),
            common::geomean(&rel[m][2])
        );
    }
    let ok = (0..3).all(|k| {
        let a = common::geomean(&rel[0][k]);
        a <= common::geomean(&rel[1][k]) && a <= common::geomean(&rel[2][k])
    });
    println!();
    println!(
        "goal (auto <= tuned SES and tuned Holt at every horizon): {}",
        if ok { "met" } else { "NOT met" }
    );
}
