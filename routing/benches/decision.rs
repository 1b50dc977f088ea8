//! In-process route-decision time for 10, 100 and 1,000 nodes, every policy, with
//! round-robin measured in the same run as the baseline; prints a table with ratios.
//! Then the crossover of `plb`'s two selection paths: a full scan of every node against
//! two weighted draws, pool sizes 2 to 128, to show where `full_scan_max` sits.
//! Run: `cargo bench -p plb-routing` (one thread; median of several rounds).
// A bench measures time and prints: it opts out of the pure-crate lints of
// routing/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
use std::hint::black_box;
use std::time::Instant;

use plb_api::NodeState;
use plb_routing::{
    AnyPolicy, LiveSet, NodeView, Policy, PolicyConfig, PolicyKind, RouteRequest, Shaping, Snapshot,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SIZES: [usize; 3] = [10, 100, 1_000];
const ROUNDS: usize = 9;
const NOW: f64 = 1_000.0;

/// A realistic mixed pool: capacities 50..150, forecast load 20..80 %, ~5 % degrading,
/// one unhealthy, ~2 % unknown, a few in slow start; live state with requests in flight,
/// latencies and some errors.
fn pool(n: usize, seed: u64) -> (LiveSet, Snapshot) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let nodes: Vec<NodeView> = (0..n)
        .map(|i| {
            let mut v = NodeView::new(
                format!("node-{i}"),
                format!("10.0.{}.{}:8080", i / 250, i % 250),
            );
            let cap = rng.random_range(50.0..150.0);
            v.capacity = Some(cap);
            v.forecast_load = Some(cap * rng.random_range(0.2..0.8));
            let r: f64 = rng.random();
            if i == 1 {
                v.state = NodeState::Unhealthy;
            } else if r < 0.05 {
                v.state = NodeState::Degrading;
                v.degrade_score = rng.random_range(0.5..1.0);
            } else if r < 0.07 {
                v.state = NodeState::Unknown;
            } else if r < 0.10 {
                v.ready_since = Some(NOW - rng.random_range(0.0..30.0));
            } else {
                v.degrade_score = rng.random_range(0.0..0.2);
            }
            v
        })
        .collect();
    let live = LiveSet::default();
    let snap = Snapshot::new(nodes, &live, Shaping::default(), NOW).expect("valid pool");
    for i in 0..n {
        let l = snap.live(i).expect("bound");
        for _ in 0..rng.random_range(0..8) {
            l.begin(0.0);
        }
        for _ in 0..5 {
            l.observe(
                rng.random_range(0.005..0.050),
                rng.random::<f64>() > 0.02,
                NOW - 1.0,
            );
        }
    }
    (live, snap)
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Policy(PolicyKind),
    PlbKeyed,
    PlbExplain,
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::Policy(k) => k.as_str().to_owned(),
            Case::PlbKeyed => "plb, keyed".to_owned(),
            Case::PlbExplain => "plb + explain()".to_owned(),
        }
    }
}

/// Median nanoseconds per decision.
fn measure(case: Case, snap: &Snapshot, keys: &[String]) -> f64 {
    measure_with(case, snap, keys, PolicyConfig::default())
}

/// [`measure`] with `config`.
fn measure_with(case: Case, snap: &Snapshot, keys: &[String], config: PolicyConfig) -> f64 {
    let kind = match case {
        Case::Policy(k) => k,
        _ => PolicyKind::Plb,
    };
    let policy = AnyPolicy::new(kind, config);
    let mut rng = SmallRng::seed_from_u64(42);
    let plain = RouteRequest::default();
    let mut run = |iters: usize| {
        let start = Instant::now();
        let mut acc = 0usize;
        for i in 0..iters {
            let req = if case == Case::PlbKeyed {
                RouteRequest::with_key(&keys[i % keys.len()])
            } else {
                plain
            };
            let d = policy
                .pick(black_box(snap), &req, NOW, &mut rng)
                .expect("non-empty pool");
            acc = acc.wrapping_add(d.index);
            if case == Case::PlbExplain {
                acc = acc.wrapping_add(black_box(d.explain(snap)).len());
            }
        }
        black_box(acc);
        start.elapsed().as_nanos() as f64 / iters as f64
    };
    // Calibrate to ~30 ms per round.
    let probe = run(1_000).max(1.0);
    let iters = ((30e6 / probe) as usize).clamp(1_000, 5_000_000);
    let mut rounds: Vec<f64> = (0..ROUNDS).map(|_| run(iters)).collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    // `cargo test --benches` passes `--bench`-less args; keep that run short.
    let quick = std::env::args().any(|a| a == "--test");
    let keys: Vec<String> = (0..4_096).map(|k| format!("user-{k}")).collect();
    let cases = [
        Case::Policy(PolicyKind::RoundRobin),
        Case::Policy(PolicyKind::LeastRequest),
        Case::Policy(PolicyKind::LeastConn),
        Case::Policy(PolicyKind::PeakEwma),
        Case::Policy(PolicyKind::Prequal),
        Case::Policy(PolicyKind::Plb),
        Case::PlbKeyed,
        Case::PlbExplain,
    ];
    let mut table = vec![vec![0.0; SIZES.len()]; cases.len()];
    let mut builds = Vec::new();
    for (c, &n) in SIZES.iter().enumerate() {
        let t = Instant::now();
        let (_live, snap) = pool(n, n as u64);
        builds.push(t.elapsed().as_secs_f64() * 1e6);
        if quick {
            continue;
        }
        for (r, &case) in cases.iter().enumerate() {
            table[r][c] = measure(case, &snap, &keys);
        }
    }
    if quick {
        println!("decision bench: pools built; run `cargo bench -p plb-routing` for figures");
        return;
    }
    println!(
        "Route decision time, ns per decision (median of {ROUNDS} rounds; ratio = / round-robin, same run)"
    );
    print!("{:<18}", "policy");
    for n in SIZES {
        print!("{:>22}", format!("{n} nodes"));
    }
    println!();
    for (r, case) in cases.iter().enumerate() {
        print!("{:<18}", case.name());
        for (ns, base) in table[r].iter().zip(&table[0]) {
            let ratio = ns / base;
            print!("{:>22}", format!("{ns:.1} ns ({ratio:.1}x)"));
        }
        println!();
    }
    print!("{:<18}", "snapshot build*");
    for b in &builds {
        print!("{:>22}", format!("{b:.0} us"));
    }
    println!();
    println!("* Snapshot::new plus live-state setup, once per prediction update, not per request.");
    let plb_100 = table[5][1];
    println!(
        "goal plb < 1 us at 100 nodes: {} ({plb_100:.1} ns)",
        if plb_100 < 1_000.0 { "met" } else { "NOT met" }
    );
    crossover(&keys);
}

/// `plb`'s full scan against its weighted power of two choices, by pool size.
fn crossover(keys: &[String]) {
    let scan = PolicyConfig {
        full_scan_max: usize::MAX,
        ..PolicyConfig::default()
    };
    let p2c = PolicyConfig {
        full_scan_max: 0,
        ..PolicyConfig::default()
    };
    let plb = Case::Policy(PolicyKind::Plb);
    println!();
    println!(
        "plb selection paths, ns per decision (ratio = full scan / two weighted choices, same run; shipped full_scan_max = {})",
        PolicyConfig::default().full_scan_max
    );
    println!(
        "{:>8}{:>16}{:>16}{:>10}",
        "nodes", "full scan", "2 choices", "ratio"
    );
    for n in [2usize, 4, 8, 16, 32, 64, 128] {
        let (_live, snap) = pool(n, 7 + n as u64);
        let a = measure_with(plb, &snap, keys, scan);
        let b = measure_with(plb, &snap, keys, p2c);
        ratio_row(n, a, b);
    }
    // What fading the means costs the full scan: one exponential per node.
    let unfaded = PolicyConfig {
        scan_mean_fade: f64::INFINITY,
        ..PolicyConfig::default()
    };
    println!();
    println!("plb full scan, ns per decision (ratio = means faded (shipped) / unfaded, same run)");
    println!(
        "{:>8}{:>16}{:>16}{:>10}",
        "nodes", "faded", "unfaded", "ratio"
    );
    for n in [8usize, 32] {
        let (_live, snap) = pool(n, 7 + n as u64);
        let a = measure_with(plb, &snap, keys, PolicyConfig::default());
        let b = measure_with(plb, &snap, keys, unfaded);
        ratio_row(n, a, b);
    }
}

/// One row of a two-column table: nodes, both times in ns and their ratio.
fn ratio_row(n: usize, a: f64, b: f64) {
    println!(
        "{n:>8}{:>16}{:>16}{:>10}",
        format!("{a:.1}"),
        format!("{b:.1}"),
        format!("{:.2}x", a / b)
    );
}
