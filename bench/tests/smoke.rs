//! CI smoke of the load-balancing benchmark: every scenario live for a few seconds on a
//! small loopback pool, the simulator briefly at 1,000 nodes, and the checks that must
//! hold whatever the tuning: every policy routes, the oracle beats round-robin on
//! heterogeneous nodes, and under `plb` a hung node and a failing node get (almost) no
//! traffic once detected. About 35 s of wall time on 2 cores.
use std::sync::Arc;

use plb_bench::lb::POLICIES;
use plb_bench::live;
use plb_bench::policies::{Contender, HarnessConfig};
use plb_bench::scenario::{SCENARIOS, Scenario, select};
use plb_bench::sim;
use plb_routing::PolicyKind;

fn scenario(name: &str, nodes: usize, scale: f64) -> Scenario {
    Scenario::new(select(name).expect("known")[0], nodes, 7, scale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_live_and_every_policy_routes() {
    let harness = HarnessConfig::default();
    for def in &SCENARIOS {
        let mut sc = Scenario::new(def, 8, 7, 0.03);
        sc.timeout = 0.5;
        let sc = Arc::new(sc);
        let runs = live::run_rep(Arc::clone(&sc), &POLICIES, &harness, 7, |_| {})
            .await
            .expect("live run");
        assert_eq!(runs.len(), POLICIES.len());
        for (kind, st) in POLICIES.iter().zip(&runs) {
            let s = st.summarize(&sc);
            let routed: u64 = st.routed_per_node().iter().sum();
            assert!(
                s.requests > 50 && routed > 50,
                "{} {kind}: {} measured, {routed} routed",
                def.name,
                s.requests
            );
            assert!(
                s.p50_ms.is_finite() && s.p50_ms > 1.0,
                "{} {kind}: {s:?}",
                def.name
            );
            if def.name == "homogeneous" {
                let pct = s.errors as f64 / s.requests as f64;
                assert!(pct < 0.01, "{kind} on homogeneous: {pct}");
            }
        }
    }
}

#[test]
fn simulator_at_1000_nodes_oracle_beats_round_robin() {
    let sc = scenario("heterogeneous", 1000, 0.1);
    let harness = HarnessConfig::default();
    let mut p99 = Vec::new();
    for who in POLICIES
        .iter()
        .map(|&k| Contender::Policy(k))
        .chain([Contender::Oracle])
    {
        let st = sim::run(&sc, who, &harness, 3).expect("runs");
        let s = st.summarize(&sc);
        let used = st.routed_per_node().iter().filter(|&&r| r > 0).count();
        assert!(s.requests > 100_000, "{}: {}", who.name(), s.requests);
        // Policies spread over the pool (all but, at most, the 126 slow nodes); the
        // oracle may leave slow and tied nodes idle.
        if who != Contender::Oracle {
            assert!(used > 800, "{} used {used} of 1000 nodes", who.name());
        }
        p99.push((who, s.p99_ms));
    }
    let get = |w: Contender| p99.iter().find(|(c, _)| *c == w).expect("ran").1;
    let (oracle, rr) = (
        get(Contender::Oracle),
        get(Contender::Policy(PolicyKind::RoundRobin)),
    );
    assert!(oracle <= rr, "oracle {oracle} ms vs round-robin {rr} ms");
}

#[test]
fn plb_sends_nothing_to_a_hung_node_after_detection() {
    // Node 0 hangs from 65 s to 80 s; two failed probes (1 s apart, 0.5 s timeout,
    // 0.5 s report delay) and a snapshot rebuild later it must be out. Three seeds: how
    // much traffic a restarted node gets while slow start ramps it back is a matter of
    // chance per run (1-4 % of the pool's requests 10-20 s after the restart over
    // seeds 1-8, mean 2.2 %; fair share 6.25 %), so one seed's figure is no test.
    let sc = scenario("leak-then-crash", 16, 1.0);
    let mut backs = Vec::new();
    for seed in 1..=3 {
        let st = sim::run(
            &sc,
            Contender::Policy(PolicyKind::Plb),
            &HarnessConfig::default(),
            seed,
        )
        .expect("runs");
        let share = st.affected_share(69.0, 80.0).expect("traffic");
        assert!(share < 0.002, "seed {seed}: hung node still got {share}");
        backs.push(st.affected_share(90.0, 100.0).expect("traffic"));
    }
    // And it comes back after the restart (a node that never came back got 0.04 %).
    let mean = backs.iter().sum::<f64>() / backs.len() as f64;
    assert!(
        mean > 0.01 && backs.iter().all(|b| *b > 0.005),
        "restarted node got {backs:?}"
    );
}

#[test]
fn plb_gives_a_failing_node_no_more_than_its_healthy_share() {
    let sc = scenario("fast-errors", 16, 0.5);
    let st = sim::run(
        &sc,
        Contender::Policy(PolicyKind::Plb),
        &HarnessConfig::default(),
        5,
    )
    .expect("runs");
    let s = st.summarize(&sc);
    let share = s.affected_traffic.expect("affected");
    assert!(share < 1.0 / 16.0 / 4.0, "failing node got {share}");
}
