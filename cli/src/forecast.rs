//! `plb forecast`: offline forecasting of a `timestamp,value` CSV with the same
//! self-tuning forecaster the balancer runs per node and metric.
//!
//! Output rows are `t,h,yhat`: `t` is the 0-based index of the last point seen, `h` the
//! horizon in points, `yhat` the forecast of point `t + h`. A summary of the forecast's
//! mean absolute error next to the naive (last value) forecast goes to stderr, per
//! horizon, over the points where the truth is known.
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

/// `plb forecast --input series.csv --horizons 1,3,6 --output preds.csv`
#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// A `timestamp,value` CSV (a header row is allowed); `-` reads stdin.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Horizons in points, comma separated.
    #[arg(long, default_value = "1,3,6")]
    pub horizons: String,
    /// Where to write `t,h,yhat` rows; `-` (the default) writes to stdout.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    /// Do not print the error summary on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// One horizon's error summary.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonError {
    /// The horizon.
    pub h: u32,
    /// Points scored.
    pub n: usize,
    /// Mean absolute error of the forecast.
    pub mae: f64,
    /// Mean absolute error of the last value as the forecast.
    pub naive_mae: f64,
}

/// Scores `rows` (from [`plb_predict::offline::forecast_series`]) against `values`.
pub fn score(values: &[f64], rows: &[(usize, u32, f64)], horizons: &[u32]) -> Vec<HorizonError> {
    horizons
        .iter()
        .map(|&h| {
            let (mut n, mut err, mut naive) = (0usize, 0.0, 0.0);
            for &(t, rh, yhat) in rows {
                if rh != h {
                    continue;
                }
                let Some(&truth) = values.get(t + h as usize) else {
                    continue;
                };
                if !truth.is_finite() || !values[t].is_finite() {
                    continue;
                }
                n += 1;
                err += (yhat - truth).abs();
                naive += (values[t] - truth).abs();
            }
            let d = n.max(1) as f64;
            HorizonError {
                h,
                n,
                mae: err / d,
                naive_mae: naive / d,
            }
        })
        .collect()
}

/// The median gap between consecutive timestamps, ms, when they parse and increase.
fn median_step_ms(points: &[plb_predict::offline::Point]) -> Option<f64> {
    let ts: Vec<f64> = points
        .iter()
        .filter_map(|p| plb_predict::timestamp_seconds(&p.timestamp))
        .collect();
    let mut gaps: Vec<f64> = ts
        .windows(2)
        .map(|w| (w[1] - w[0]) * 1000.0)
        .filter(|g| g.is_finite() && *g > 0.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps.get(gaps.len() / 2).copied()
}

pub fn run(args: ForecastArgs) -> anyhow::Result<()> {
    let text = if args.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("reading {}", args.input.display()))?
    };
    let horizons = plb_predict::offline::parse_horizons(&args.horizons)?;
    let points = plb_predict::offline::parse_csv(&text)
        .with_context(|| format!("parsing {}", args.input.display()))?;
    if points.is_empty() {
        bail!("{} has no data rows", args.input.display());
    }
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    // The sampling interval (median gap between parseable timestamps) lets the
    // seasonal members look for hourly, daily and weekly cycles.
    let step_ms = median_step_ms(&points);
    let rows = plb_predict::offline::forecast_series_with_step(&values, &horizons, step_ms);

    let mut out: Box<dyn std::io::Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = std::fs::File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    writeln!(out, "t,h,yhat")?;
    for (t, h, yhat) in &rows {
        writeln!(out, "{t},{h},{yhat}")?;
    }
    out.flush().context("writing the forecasts")?;

    if !args.quiet {
        eprintln!(
            "{} points, {} forecasts; error where the truth is known:",
            values.len(),
            rows.len()
        );
        eprintln!(
            "{:>4} {:>8} {:>14} {:>14} {:>10}",
            "h", "scored", "MAE", "naive MAE", "ratio"
        );
        for e in score(&values, &rows, &horizons) {
            let ratio = if e.naive_mae > 0.0 {
                format!("{:.3}", e.mae / e.naive_mae)
            } else {
                "-".into()
            };
            eprintln!(
                "{:>4} {:>8} {:>14.6} {:>14.6} {:>10}",
                e.h, e.n, e.mae, e.naive_mae, ratio
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_compares_with_the_last_value() {
        let values = [1.0, 2.0, 3.0, 4.0];
        // A perfect one-step forecast of a ramp: error 0, naive error 1.
        let rows = vec![(0, 1, 2.0), (1, 1, 3.0), (2, 1, 4.0), (3, 1, 5.0)];
        let s = score(&values, &rows, &[1]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].n, 3);
        assert_eq!(s[0].mae, 0.0);
        assert_eq!(s[0].naive_mae, 1.0);
    }
}
