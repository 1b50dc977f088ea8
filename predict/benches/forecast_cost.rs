//! Cost of the forecaster bank by model family: per-update time (median and p99 of
//! individually timed updates, after a warm-up long enough for the background refits to
//! have found periods and fitted ARIMA models), memory per series, and the cost of one
//! background refit job. Real NAB values, 5-minute steps; the naive bank is the
//! baseline measured in the same run, and the timer's own overhead is shown.
// A bench measures time, reads data files and prints: it opts out of the pure-crate
// lints of predict/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use plb_predict::forecast::{AutoForecaster, BankSpec, Family, ForecastParams, Forecaster, Member};

const SERIES: usize = 300;
const WARM: usize = 3_000;
const TIMED: usize = 200;
const STEP_MS: f64 = 300_000.0;

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64
}

struct Row {
    name: String,
    members: usize,
    median: f64,
    p99: f64,
    mean: f64,
    bytes: usize,
}

fn measure(name: &str, spec: Arc<BankSpec>, values: &[Vec<f64>], overhead: f64) -> Row {
    let mut models: Vec<AutoForecaster> = (0..SERIES)
        .map(|_| AutoForecaster::with_spec(Arc::clone(&spec)))
        .collect();
    for (i, m) in models.iter_mut().enumerate() {
        let v = &values[i % values.len()];
        for t in 0..WARM {
            m.update(v[(t + i * 37) % v.len()]);
            m.refit_inline(Some(STEP_MS));
        }
    }
    let mut ns = Vec::with_capacity(SERIES * TIMED);
    let total = Instant::now();
    for r in 0..TIMED {
        for (i, m) in models.iter_mut().enumerate() {
            let v = &values[i % values.len()];
            let y = v[(WARM + r + i * 37) % v.len()];
            let t0 = Instant::now();
            m.update(y);
            ns.push(t0.elapsed().as_nanos() as u64);
        }
    }
    let mean = total.elapsed().as_nanos() as f64 / (SERIES * TIMED) as f64;
    ns.sort_unstable();
    let bytes = models
        .iter()
        .map(|m| std::mem::size_of::<AutoForecaster>() + m.bank().heap_bytes())
        .max()
        .unwrap_or(0);
    black_box(&models);
    Row {
        name: name.to_string(),
        members: spec.members().len(),
        median: (quantile(&ns, 0.5) - overhead).max(0.0),
        p99: (quantile(&ns, 0.99) - overhead).max(0.0),
        mean,
        bytes,
    }
}

fn main() {
    let nab = common::load_nab();
    let values: Vec<Vec<f64>> = nab.iter().map(|s| s.values.clone()).collect();
    // Timer overhead: an empty timed region.
    let mut empty = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t0 = Instant::now();
        empty.push(black_box(t0).elapsed().as_nanos() as u64);
    }
    empty.sort_unstable();
    let overhead = quantile(&empty, 0.5);

    let params = ForecastParams::default();
    let fam =
        |f: Family| BankSpec::new(BankSpec::default_members(Some(f)), params).expect("family spec");
    let classic: Vec<Member> = BankSpec::default_members(None)
        .into_iter()
        .filter(|m| matches!(m.family(), Family::Naive | Family::Ses | Family::Holt))
        .collect();
    let specs: Vec<(&str, Arc<BankSpec>)> = vec![
        ("naive (baseline)", fam(Family::Naive)),
        ("ses", fam(Family::Ses)),
        ("holt", fam(Family::Holt)),
        ("seasonal_naive", fam(Family::SeasonalNaive)),
        ("holt_winters", fam(Family::HoltWinters)),
        ("arima", fam(Family::Arima)),
        (
            "classic bank (naive+ses+holt)",
            BankSpec::new(classic, params).expect("classic"),
        ),
        (
            "auto bank (all families)",
            AutoForecaster::spec(params).expect("auto"),
        ),
    ];
    let rows: Vec<Row> = specs
        .into_iter()
        .map(|(n, s)| measure(n, s, &values, overhead))
        .collect();

    // Refit jobs of the full bank, timed one by one.
    let spec = AutoForecaster::spec(params).expect("auto");
    let mut job_ns = Vec::new();
    let mut seasons = 0usize;
    for (i, v) in values.iter().enumerate() {
        let mut m = AutoForecaster::with_spec(Arc::clone(&spec));
        for (t, &y) in v.iter().enumerate() {
            m.update(y);
            if m.refit_due() {
                let job = m.refit_job(Some(STEP_MS)).expect("job");
                let t0 = Instant::now();
                let res = black_box(job.run());
                job_ns.push(t0.elapsed().as_nanos() as u64);
                m.install(res);
            }
            let _ = (i, t);
        }
        seasons += usize::from(m.bank().season().is_some());
    }
    job_ns.sort_unstable();

    println!(
        "Forecaster cost by family: {SERIES} series warmed with {WARM} real NAB values each (refits inline), then {TIMED} updates each timed one by one; timer overhead {overhead:.0} ns subtracted"
    );
    println!();
    println!(
        "{:<32} {:>7} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "bank", "members", "median ns", "p99 ns", "mean ns", "bytes/series", "median/naive"
    );
    let base = rows[0].median.max(1.0);
    for r in &rows {
        println!(
            "{:<32} {:>7} {:>10.0} {:>10.0} {:>10.0} {:>12} {:>10.1}",
            r.name,
            r.members,
            r.median,
            r.p99,
            r.mean,
            r.bytes,
            r.median / base
        );
    }
    println!();
    println!(
        "refit job (period detection + plain and seasonal ARIMA order selection and fit), {} jobs over {} series ({} with a period): median {:.0} us, p99 {:.0} us",
        job_ns.len(),
        values.len(),
        seasons,
        quantile(&job_ns, 0.5) / 1e3,
        quantile(&job_ns, 0.99) / 1e3
    );
    let auto = &rows[rows.len() - 1];
    let met = |b: bool| if b { "met" } else { "NOT met" };
    println!();
    println!(
        "goal median update < 5,000 ns (auto bank): {} ({:.0} ns); memory < 32 KiB per series: {} ({} bytes)",
        met(auto.median < 5_000.0),
        auto.median,
        met(auto.bytes < 32 * 1024),
        auto.bytes
    );
}
