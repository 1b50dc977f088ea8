//! Cost of keeping predictions current: per-sample update time of one metric's full
//! model (profile + self-tuning forecaster), its memory, a whole node's observe and
//! assess, and a capacity fit. Timed loops over many series (so caches are not all
//! warm), with the naive-only forecaster as the baseline measured in the same run.
// A bench measures time, reads data files and prints: it opts out of the pure-crate
// lints of predict/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use plb_api::Outcome;
use plb_predict::forecast::{BankSpec, Family, ForecastParams, Forecaster, Naive};
use plb_predict::{
    AutoForecaster, CapacityModel, CapacityParams, CapacityRow, NodeConfig, NodeModel, NodeParams,
    Observation, ProfileParams, SeriesModel,
};

fn ns_per(total: std::time::Duration, n: usize) -> f64 {
    total.as_nanos() as f64 / n as f64
}

fn main() {
    // Real values: every NAB series, scaled to similar magnitudes, interleaved.
    let nab = common::load_nab();
    let values: Vec<f64> = nab.iter().flat_map(|s| s.values.iter().copied()).collect();
    let n_series = 10_000;
    let rounds = 100;
    let updates = n_series * rounds;

    let spec = AutoForecaster::spec(ForecastParams::default()).expect("spec");
    let mut series: Vec<SeriesModel> = (0..n_series)
        .map(|_| SeriesModel::new(Arc::clone(&spec), ProfileParams::default()))
        .collect();
    let start = Instant::now();
    for r in 0..rounds {
        for (i, s) in series.iter_mut().enumerate() {
            let v = values[(i * 7 + r) % values.len()];
            s.observe("m", r as i64 * 1_000, v).expect("observe");
        }
    }
    let full = ns_per(start.elapsed(), updates);
    let bytes = series.iter().map(SeriesModel::bytes).sum::<usize>() / n_series;
    black_box(&series);

    let mut autos: Vec<AutoForecaster> = (0..n_series).map(|_| AutoForecaster::new()).collect();
    let start = Instant::now();
    for r in 0..rounds {
        for (i, a) in autos.iter_mut().enumerate() {
            a.update(values[(i * 7 + r) % values.len()]);
        }
    }
    let auto_only = ns_per(start.elapsed(), updates);
    let auto_bytes = std::mem::size_of::<AutoForecaster>() + autos[0].bank().heap_bytes();
    black_box(&autos);

    let mut naives: Vec<Naive> = (0..n_series).map(|_| Naive::new()).collect();
    let start = Instant::now();
    for r in 0..rounds {
        for (i, a) in naives.iter_mut().enumerate() {
            a.update(values[(i * 7 + r) % values.len()]);
        }
    }
    let naive = ns_per(start.elapsed(), updates);
    let naive_bytes = std::mem::size_of::<Naive>() + naives[0].bank().heap_bytes();
    black_box(&naives);

    // Forecast reads.
    let start = Instant::now();
    let mut acc = 0.0;
    for a in &autos {
        acc += a.forecast(6).mean;
    }
    let read = ns_per(start.elapsed(), n_series);
    black_box(acc);

    // A node with 10 metrics from one probe: observe (learn + reassess) and assess.
    let config = NodeConfig::new(NodeParams::default()).expect("config");
    let n_nodes = 1_000;
    let mut nodes: Vec<NodeModel> = (0..n_nodes)
        .map(|_| NodeModel::new(Arc::clone(&config)))
        .collect();
    let names: Vec<String> = (0..10).map(|k| format!("metric{k}-ms")).collect();
    let node_rounds = 60;
    // Samples are built before the clock starts: only the model's work is timed.
    let samples: Vec<Vec<BTreeMap<String, f64>>> = (0..node_rounds)
        .map(|r| {
            (0..n_nodes)
                .map(|i| {
                    names
                        .iter()
                        .enumerate()
                        .map(|(k, n)| (n.clone(), values[(i * 13 + k * 101 + r) % values.len()]))
                        .collect()
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for (r, round) in samples.iter().enumerate() {
        for (node, metrics) in nodes.iter_mut().zip(round) {
            node.observe(&Observation {
                t_ms: r as i64 * 1_000,
                probe: "p",
                outcome: Outcome::Ok,
                duration_ms: Some(3.0),
                metrics,
            })
            .expect("observe");
        }
    }
    let node_observe = ns_per(start.elapsed(), n_nodes * node_rounds);
    let start = Instant::now();
    let mut states = 0usize;
    for node in &nodes {
        states += node.assess(node_rounds as i64 * 1_000).metrics.len();
    }
    let node_assess = ns_per(start.elapsed(), n_nodes);
    black_box(states);
    let node_bytes = nodes.iter().map(NodeModel::bytes).sum::<usize>() / n_nodes;

    // Capacity fit on 5,000 feedback rows with two features.
    let rows: Vec<CapacityRow> = (0..5_000)
        .map(|i| {
            let load = (i % 97) as f64 / 10.0;
            let speed = 5.0 + (i % 3) as f64;
            CapacityRow {
                load,
                features: vec![speed, (i % 7) as f64],
                latency_ms: speed * (1.0 + load) * (1.0 + 0.1 * ((i * 31 % 17) as f64 / 17.0)),
            }
        })
        .collect();
    let start = Instant::now();
    let fits = 20;
    for _ in 0..fits {
        black_box(
            CapacityModel::fit(
                &rows,
                &CapacityParams {
                    slo_ms: 40.0,
                    ..Default::default()
                },
            )
            .expect("fit"),
        );
    }
    let fit_us = start.elapsed().as_secs_f64() * 1e6 / fits as f64;

    let members = BankSpec::default_members(None).len();
    let ses = BankSpec::default_members(Some(Family::Ses)).len();
    let holt = BankSpec::default_members(Some(Family::Holt)).len();
    let hw = BankSpec::default_members(Some(Family::HoltWinters)).len();
    let arima = BankSpec::default_members(Some(Family::Arima)).len();
    println!(
        "Cost: {n_series} series x {rounds} updates (real NAB values); auto bank = naive + {ses} SES + {holt} Holt + seasonal naive + {hw} Holt-Winters + {arima} ARIMA = {members} members, horizons 1..=6 scored (too few updates for a refit: see the forecast_cost bench for costs with periods and ARIMA fits installed)"
    );
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        "what", "ns/update", "bytes/series", "vs naive"
    );
    println!(
        "{:<44} {:>12.0} {:>12} {:>10.1}",
        "series model (profile + auto forecaster)",
        full,
        bytes,
        full / naive
    );
    println!(
        "{:<44} {:>12.0} {:>12} {:>10.1}",
        "auto forecaster alone",
        auto_only,
        auto_bytes,
        auto_only / naive
    );
    println!(
        "{:<44} {:>12.0} {:>12} {:>10.1}",
        "naive forecaster (baseline)", naive, naive_bytes, 1.0
    );
    println!(
        "{:<44} {:>12.0} {:>12} {:>10}",
        "auto forecast read (h=6)", read, "-", "-"
    );
    println!();
    println!("{:<44} {:>12}", "node with 10 metrics", "");
    println!(
        "{:<44} {:>12.0} ns/sample (all 10 metrics + state)",
        "  observe", node_observe
    );
    println!("{:<44} {:>12.0} ns", "  assess (full view)", node_assess);
    println!("{:<44} {:>12} bytes", "  memory", node_bytes);
    println!(
        "{:<44} {:>12.0} us",
        "capacity fit, 5,000 rows, 2 features", fit_us
    );
    println!();
    let per_core = 1e9 / full;
    println!(
        "goal < 10,000 ns/update: {} ({:.0} updates/s per core; 10,000 nodes x 10 metrics at 1 Hz needs 100,000)",
        if full < 10_000.0 { "met" } else { "NOT met" },
        per_core
    );
}
