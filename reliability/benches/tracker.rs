//! Tracker throughput: samples per second through `observe` and through `observe` plus
//! `evaluate` per node batch (what the balancer does per committed report), for pools of
//! 10, 100 and 1,000 nodes with 5 probes each, and with one evaluation per round of
//! every node's batch (as when batches queue up), next to a baseline measured in the same
//! run: copying each observation into a `Vec` (the least an observer can do).
//!
//! Run: `cargo bench -p plb-reliability --bench tracker`.
// A bench measures time and prints: it opts out of the pure-crate lints of
// reliability/clippy.toml.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]
use std::hint::black_box;
use std::time::Instant;

use plb_api::Outcome;
use plb_reliability::{Observation, Policy, Tracker};

const PROBES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
const ROUNDS: usize = 40;

fn outcome(i: usize) -> Outcome {
    match i % 50 {
        0 => Outcome::Trap,
        1 => Outcome::Timeout,
        2 => Outcome::Unhealthy,
        _ => Outcome::Ok,
    }
}

/// The observations: `ROUNDS` rounds, each a batch per node of one run of every probe.
fn workload(nodes: &[String]) -> Vec<Vec<(usize, usize, i64)>> {
    let mut batches = Vec::new();
    for r in 0..ROUNDS {
        for n in 0..nodes.len() {
            let mut b = Vec::new();
            for p in 0..PROBES.len() {
                b.push((n, p, 1_700_000_000_000 + (r as i64) * 1000 + p as i64));
            }
            batches.push(b);
        }
    }
    batches
}

fn obs<'a>(nodes: &'a [String], n: usize, p: usize, t: i64, i: usize) -> Observation<'a> {
    Observation {
        node: &nodes[n],
        pool: "web",
        probe: PROBES[p],
        version: 1,
        outcome: outcome(i),
        taken_at_ms: t,
        duration_ms: 5.0,
        message: "",
        stderr: "",
    }
}

fn measure(mut f: impl FnMut() -> usize) -> f64 {
    // Best of 3 runs, in ns per sample.
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let n = f();
        let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
        best = best.min(ns);
    }
    best
}

fn main() {
    println!(
        "{:>6} {:>22} {:>12} {:>14} {:>10}",
        "nodes", "variant", "ns/sample", "samples/s", "x baseline"
    );
    for n_nodes in [10usize, 100, 1000] {
        let nodes: Vec<String> = (0..n_nodes).map(|i| format!("node-{i}")).collect();
        let batches = workload(&nodes);
        let baseline = measure(|| {
            let mut v: Vec<(String, &str, Outcome, i64)> = Vec::new();
            let mut i = 0;
            for b in &batches {
                for &(n, p, t) in b {
                    i += 1;
                    let o = obs(&nodes, n, p, t, i);
                    v.push((o.node.to_string(), o.probe, o.outcome, o.taken_at_ms));
                }
            }
            black_box(&v);
            v.len()
        });
        let observe_only = measure(|| {
            let mut tr = Tracker::new(Policy::default());
            let mut i = 0;
            for b in &batches {
                for &(n, p, t) in b {
                    i += 1;
                    tr.observe(&obs(&nodes, n, p, t, i));
                }
            }
            black_box(tr.evaluate(1_700_000_000_000 + ROUNDS as i64 * 1000));
            i
        });
        let per_batch = measure(|| {
            let mut tr = Tracker::new(Policy::default());
            let mut i = 0;
            let mut transitions = 0;
            for b in &batches {
                let mut last = 0;
                for &(n, p, t) in b {
                    i += 1;
                    last = t;
                    tr.observe(&obs(&nodes, n, p, t, i));
                }
                transitions += tr.evaluate(last).len();
            }
            black_box(transitions);
            i
        });
        // What the balancer does under load: batches queued meanwhile are observed
        // together and evaluated once (here: one round of every node's batch).
        let per_round = measure(|| {
            let mut tr = Tracker::new(Policy::default());
            let mut i = 0;
            let mut transitions = 0;
            for round in batches.chunks(n_nodes) {
                let mut last = 0;
                for b in round {
                    for &(n, p, t) in b {
                        i += 1;
                        last = t;
                        tr.observe(&obs(&nodes, n, p, t, i));
                    }
                }
                transitions += tr.evaluate(last).len();
            }
            black_box(transitions);
            i
        });
        for (name, ns) in [
            ("baseline (Vec copy)", baseline),
            ("observe", observe_only),
            ("observe+evaluate/batch", per_batch),
            ("observe+evaluate/round", per_round),
        ] {
            println!(
                "{n_nodes:>6} {name:>22} {ns:>12.1} {:>14.0} {:>10.2}",
                1e9 / ns,
                ns / baseline
            );
        }
    }
}
