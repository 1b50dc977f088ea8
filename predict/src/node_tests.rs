//! Tests of the node model: states from synthetic series and probe outcomes, input
//! refusal, staleness, and a seeded fuzz loop for finite output.
use super::*;
use crate::testutil::Rng;

fn model() -> NodeModel {
    NodeModel::new(NodeConfig::new(NodeParams::default()).expect("config"))
}

fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn run(
    m: &mut NodeModel,
    t_ms: i64,
    probe: &str,
    outcome: Outcome,
    pairs: &[(&str, f64)],
) -> Result<Option<StateChange>> {
    let ms = metrics(pairs);
    m.observe(&Observation {
        t_ms,
        probe,
        outcome,
        duration_ms: Some(5.0),
        metrics: &ms,
    })
}

fn all_finite(a: &NodeAssessment) -> bool {
    let f = |x: f64| x.is_finite();
    let of = |x: Option<f64>| x.is_none_or(f64::is_finite);
    let ev = |e: &Evidence| f(e.forecast) && f(e.threshold);
    a.evidence.iter().all(ev)
        && a.recent_changes.iter().all(|c| c.evidence.iter().all(ev))
        && a.demand
            .as_ref()
            .is_none_or(|d| f(d.load) && f(d.forecast) && of(d.capacity))
        && a.metrics.iter().all(|m| {
            f(m.last_value)
                && of(m.step_ms)
                && m.profile.as_ref().is_none_or(|p| {
                    f(p.median) && f(p.mad) && f(p.scale) && f(p.level) && f(p.lo) && f(p.hi)
                })
                && m.forecasts
                    .iter()
                    .all(|x| f(x.mean) && f(x.lo) && f(x.hi) && of(x.approx_ms))
                && m.errors.iter().all(|e| {
                    f(e.mae)
                        && f(e.naive_mae)
                        && of(e.relative_to_naive)
                        && e.families.iter().all(|x| f(x.mae))
                })
        })
}

#[test]
fn noise_does_not_cause_degrading() {
    let mut rng = Rng::new(77);
    let mut m = model();
    for i in 0..5_000i64 {
        // Gaussian noise, plus an isolated 8-sigma spike now and then.
        let spike = if i % 211 == 100 { 16.0 } else { 0.0 };
        let lat = 50.0 + 2.0 * rng.normal() + spike;
        let ops = 10.0 + 0.5 * rng.normal();
        let change = run(
            &mut m,
            i * 1_000,
            "http",
            Outcome::Ok,
            &[("latency-ms", lat), ("ops-per-ms", ops)],
        )
        .expect("observe");
        if let Some(c) = change {
            assert_ne!(c.to, NodeState::Degrading, "at sample {i}: {}", c.reason);
        }
    }
    let a = m.assess(4_999_000);
    assert_eq!(a.state, NodeState::Healthy, "{}", a.reason);
    assert_eq!(a.metrics.len(), 2);
    assert_eq!(
        a.metrics[1].direction,
        plb_api::MetricDirection::HigherIsBetter
    );
    assert!(all_finite(&a));
}

/// A slow ramp (0.05 or 0.1 noise sigmas per sample) from a flat start: the node must
/// turn `degrading` before the metric's true level leaves its normal range (the
/// profile's value band, same k as the state uses). Faster ramps (0.2 sigma per
/// sample, crossing within about 15 samples) are flagged at the crossing, give or take
/// two samples: too little history to see the trend earlier.
#[test]
fn a_ramp_towards_the_band_raises_degrading_before_it_is_crossed() {
    let k = NodeParams::default().state.band_k;
    for slope in [0.05, 0.1] {
        for seed in 1..=10 {
            let mut rng = Rng::new(seed);
            let mut m = model();
            let level = |i: i64| {
                if i < 300 {
                    50.0
                } else {
                    50.0 + slope * (i - 300) as f64
                }
            };
            let mut raised = None;
            let mut crossed = None;
            for i in 0..700i64 {
                let y = level(i) + rng.normal();
                let c = run(&mut m, i * 1_000, "http", Outcome::Ok, &[("latency-ms", y)])
                    .expect("observe");
                if let Some(c) = c
                    && c.to == NodeState::Degrading
                    && raised.is_none()
                {
                    assert_eq!(c.evidence[0].metric, "http/latency-ms");
                    raised = Some(i);
                }
                let band = m
                    .series("http/latency-ms")
                    .and_then(|s| s.profile().band(k));
                if crossed.is_none()
                    && let Some((_, hi)) = band
                    && level(i) > hi
                {
                    crossed = Some(i);
                }
            }
            let raised = raised.expect("degrading raised");
            let crossed = crossed.expect("band crossed");
            assert!(
                raised > 300,
                "slope {slope} seed {seed}: alarm before the ramp ({raised})"
            );
            assert!(
                raised < crossed,
                "slope {slope} seed {seed}: raised at {raised}, band crossed at {crossed}"
            );
        }
    }
}

#[test]
fn failing_probes_make_unhealthy_with_hysteresis_on_the_way_back() {
    let mut m = model();
    for i in 0..40 {
        run(
            &mut m,
            i * 1_000,
            "http",
            Outcome::Ok,
            &[("latency-ms", 10.0)],
        )
        .expect("ok");
    }
    assert_eq!(m.state(), NodeState::Healthy);
    assert!(
        run(&mut m, 40_000, "http", Outcome::Unhealthy, &[])
            .expect("u")
            .is_none()
    );
    let c = run(&mut m, 41_000, "http", Outcome::Unhealthy, &[])
        .expect("u")
        .expect("change");
    assert_eq!(c.to, NodeState::Unhealthy);
    assert_eq!(c.evidence[0].metric, "probe/http");
    // A probe-blamed outcome says nothing about the node.
    assert!(
        run(&mut m, 42_000, "http", Outcome::Trap, &[])
            .expect("t")
            .is_none()
    );
    for t in [43_000, 44_000] {
        assert!(
            run(&mut m, t, "http", Outcome::Ok, &[("latency-ms", 10.0)])
                .expect("ok")
                .is_none()
        );
    }
    let a = m.assess(44_000);
    assert_eq!(a.state, NodeState::Unhealthy);
    assert!(a.reason.contains("held by hysteresis"), "{}", a.reason);
    let c = run(&mut m, 45_000, "http", Outcome::Ok, &[("latency-ms", 10.0)])
        .expect("ok")
        .expect("back");
    assert_eq!((c.from, c.to), (NodeState::Unhealthy, NodeState::Healthy));
    let a = m.assess(45_000);
    assert_eq!(a.probes[0].recent.len(), 8);
    assert_eq!(a.recent_changes.len(), 3);
}

#[test]
fn timeouts_count_against_the_node_only_when_nothing_clears_it() {
    // Alone, a probe's timeouts count against the node.
    let mut m = model();
    run(&mut m, 0, "a", Outcome::Timeout, &[]).expect("t");
    run(&mut m, 1_000, "a", Outcome::Timeout, &[]).expect("t");
    assert_eq!(m.state(), NodeState::Unhealthy);
    // With another probe fine and not slow, they count against the probe.
    let mut m = model();
    for i in 0..40 {
        run(&mut m, i * 1_000, "b", Outcome::Ok, &[("x-ms", 1.0)]).expect("b");
    }
    for i in 40..45 {
        run(&mut m, i * 1_000, "a", Outcome::Timeout, &[]).expect("a");
        run(&mut m, i * 1_000, "b", Outcome::Ok, &[("x-ms", 1.0)]).expect("b");
    }
    assert_eq!(m.state(), NodeState::Healthy);
    // When the other probe fails too, they count against the node.
    run(&mut m, 45_000, "b", Outcome::Unhealthy, &[]).expect("b");
    run(&mut m, 45_000, "a", Outcome::Timeout, &[]).expect("a");
    run(&mut m, 46_000, "a", Outcome::Timeout, &[]).expect("a");
    assert_eq!(m.state(), NodeState::Unhealthy);
}

#[test]
fn stale_nodes_are_unknown() {
    let mut m = model();
    assert_eq!(m.assess(0).state, NodeState::Unknown);
    assert_eq!(m.assess(0).reason, "no samples yet");
    let c = run(&mut m, 0, "a", Outcome::Ok, &[("x-ms", 1.0)])
        .expect("ok")
        .expect("change");
    assert_eq!((c.from, c.to), (NodeState::Unknown, NodeState::Healthy));
    assert_eq!(m.assess(30_000).state, NodeState::Healthy);
    let a = m.assess(30_001);
    assert_eq!(a.state, NodeState::Unknown);
    assert!(a.reason.contains("no sample for 30001 ms"), "{}", a.reason);
    assert!(m.tick(10_000).is_none());
    assert_eq!(m.tick(31_000).map(|c| c.to), Some(NodeState::Unknown));
    assert!(m.tick(32_000).is_none());
    let c = run(&mut m, 40_000, "a", Outcome::Ok, &[("x-ms", 1.0)])
        .expect("ok")
        .expect("back");
    assert_eq!(c.to, NodeState::Healthy);
}

#[test]
fn bad_samples_are_refused_whole() {
    let mut m = model();
    let e = run(
        &mut m,
        0,
        "a",
        Outcome::Ok,
        &[("good-ms", 1.0), ("bad-ms", f64::NAN)],
    );
    assert!(matches!(e, Err(PredictError::NonFinite { ref name, .. }) if name == "a/bad-ms"));
    let e = run(&mut m, 0, "a", Outcome::Ok, &[("huge", 1e301)]);
    assert!(matches!(e, Err(PredictError::OutOfRange { .. })));
    assert!(m.assess(0).metrics.is_empty() && m.assess(0).probes.is_empty());
    run(&mut m, 5_000, "a", Outcome::Ok, &[("x", 1.0)]).expect("ok");
    assert!(matches!(
        run(&mut m, 4_000, "a", Outcome::Ok, &[("x", 1.0)]),
        Err(PredictError::OutOfOrder { .. })
    ));
    let many: Vec<(String, f64)> = (0..300).map(|i| (format!("m{i}"), 1.0)).collect();
    let many: Vec<(&str, f64)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert!(matches!(
        run(&mut m, 6_000, "a", Outcome::Ok, &many),
        Err(PredictError::TooManySeries { .. })
    ));
    assert!(m.set_capacity(Some(f64::INFINITY)).is_err());
    assert!(m.observe_load(6_000, f64::NAN).is_err());
}

#[test]
fn forecast_demand_over_capacity_is_degrading() {
    let mut m = model();
    m.set_capacity(Some(20.0)).expect("cap");
    let mut last = None;
    for i in 0..60i64 {
        m.observe_load(i * 1_000, 5.0 + 0.5 * i as f64)
            .expect("load");
        if let Some(c) = run(&mut m, i * 1_000, "a", Outcome::Ok, &[("x-ms", 1.0)]).expect("ok")
            && c.to == NodeState::Degrading
        {
            last = Some((i, c));
            break;
        }
    }
    let (i, c) = last.expect("degrading");
    assert_eq!(c.evidence[0].metric, "demand");
    // Load 5 + 0.5 i reaches 20 at i = 30; the forecast 6 steps ahead warns earlier.
    assert!(i < 30, "raised at {i}");
    let d = m.assess(i * 1_000).demand.expect("demand");
    assert_eq!(d.capacity, Some(20.0));
}

#[test]
fn assessment_serializes() {
    let mut m = model();
    for i in 0..50 {
        run(
            &mut m,
            i * 1_000,
            "a",
            Outcome::Ok,
            &[("latency-ms", 10.0 + i as f64)],
        )
        .expect("ok");
    }
    let a = m.assess(50_000);
    let json = serde_json::to_string(&a).expect("json");
    let back: NodeAssessment = serde_json::from_str(&json).expect("parse");
    assert_eq!(serde_json::to_string(&back).expect("json"), json);
    assert_eq!(a.metrics[0].forecasts.len(), 3);
    assert_eq!(a.metrics[0].errors[2].h, 6);
    assert!(m.bytes() > 1_000);
}

/// Random runs with junk mixed in: nothing non-finite ever comes out.
#[test]
fn fuzz_assessments_stay_finite() {
    let mut rng = Rng::new(0xBEEF);
    let specials = [f64::NAN, f64::INFINITY, 1e300, -1e300, 0.0, 1e-300];
    let outcomes = Outcome::ALL;
    for case in 0..60 {
        let mut m = model();
        let mut t = 0i64;
        for _ in 0..(rng.next_u64() % 300) {
            t += (rng.next_u64() % 3_000) as i64;
            let v = match rng.next_u64() % 4 {
                0 => specials[(rng.next_u64() % specials.len() as u64) as usize],
                1 => 1e300 * rng.normal().clamp(-1.0, 1.0),
                _ => 100.0 + rng.normal(),
            };
            let outcome = outcomes[(rng.next_u64() % outcomes.len() as u64) as usize];
            let _ = run(
                &mut m,
                t,
                "p",
                outcome,
                &[("latency-ms", v), ("ops-per-s", -v)],
            );
            let _ = m.observe_load(t, v);
            let _ = m.set_capacity(Some(v));
            m.tick(t);
        }
        for now in [t, t + 1_000_000, i64::MAX, i64::MIN] {
            let a = m.assess(now);
            assert!(all_finite(&a), "case {case}");
        }
    }
}
