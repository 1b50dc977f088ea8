//! Unit tests of [`PoolPredictor`] in simulated time (every call takes `now_ms`).
use std::collections::BTreeMap;

use plb_api::{NodeState, Outcome};
use plb_predict::Observation;

use super::*;
use crate::config::{PipelineConfig, ViewConfig};

const NOISE: [f64; 10] = [
    0.0, 0.02, -0.015, 0.01, -0.03, 0.025, -0.005, 0.015, -0.02, 0.03,
];

fn pool(names: &[&str], config: PipelineConfig) -> PoolPredictor {
    let mut p = PoolPredictor::new(config, 200.0).expect("valid");
    let addrs: Vec<String> = (0..names.len()).map(|i| format!("h:{i}")).collect();
    assert!(p.sync(names.iter().copied().zip(addrs.iter().map(String::as_str))));
    p
}

fn observe(p: &mut PoolPredictor, node: &str, t_ms: i64, metrics: &[(&str, f64)]) {
    let m: BTreeMap<String, f64> = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    p.observe(
        node,
        &Observation {
            t_ms,
            probe: "p",
            outcome: Outcome::Ok,
            duration_ms: Some(1.0),
            metrics: &m,
        },
    )
    .expect("accepted");
}

fn fail(p: &mut PoolPredictor, node: &str, t_ms: i64) {
    p.observe(
        node,
        &Observation {
            t_ms,
            probe: "p",
            outcome: Outcome::Unhealthy,
            duration_ms: Some(1.0),
            metrics: &BTreeMap::new(),
        },
    )
    .expect("accepted");
}

#[test]
fn the_degrade_score_rises_before_the_state_turns_and_both_use_one_threshold() {
    let mut p = pool(&["a"], PipelineConfig::default());
    let mut t = 1_000_000;
    for k in 0..60 {
        observe(
            &mut p,
            "a",
            t,
            &[("latency-ms", 10.0 * (1.0 + NOISE[k % 10]))],
        );
        t += 1000;
    }
    let v = &p.views(t)[0];
    assert_eq!(
        (v.state, v.degrade_score),
        (NodeState::Healthy, 0.0),
        "noise"
    );
    let (mut first_rise, mut first_degrading, mut full) = (None, None, None);
    for k in 1..=40 {
        observe(
            &mut p,
            "a",
            t,
            &[("latency-ms", 10.0 * (1.0 + 0.02 * k as f64))],
        );
        let v = &p.views(t)[0];
        if v.degrade_score > 0.0 && first_rise.is_none() {
            first_rise = Some(k);
        }
        if v.degrade_score >= 1.0 && full.is_none() {
            full = Some(k);
        }
        if v.state == NodeState::Degrading && first_degrading.is_none() {
            first_degrading = Some(k);
        }
        t += 1000;
    }
    let (rise, full, degrading) = (
        first_rise.expect("rises"),
        full.expect("reaches 1"),
        first_degrading.expect("turns degrading"),
    );
    assert!(rise < full, "gradual: {rise} then {full}");
    // The state machine needs `enter_after` crossings in a row; each is a score of 1.
    let enter = i64::from(PipelineConfig::default().node.state.enter_after);
    assert_eq!(i64::from(degrading) - i64::from(full) + 1, enter);
    // Stale: unknown, no score.
    let v = &p.views(t + 60_000)[0];
    assert_eq!((v.state, v.degrade_score), (NodeState::Unknown, 0.0));
}

fn feed_knee(p: &mut PoolPredictor, node: &str, per_request_ms: f64, t0: i64, n: i64) {
    // latency = 20 ms + per_request_ms per request in flight.
    for k in 0..n {
        let load = (1 + k % 16) as f64;
        p.observe_feedback(Feedback {
            node,
            at_ms: t0 + k,
            load,
            latency_ms: 20.0 + per_request_ms * load,
            ok: true,
        });
    }
}

#[test]
fn capacity_is_the_knee_shaped_against_the_median_and_expires_without_feedback() {
    let mut p = pool(&["a", "b", "c"], PipelineConfig::default());
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        observe(&mut p, n, 1_000 + i as i64, &[("latency-ms", 1.0)]);
    }
    feed_knee(&mut p, "a", 10.0, 1_000, 300); // knee 18
    feed_knee(&mut p, "b", 40.0, 1_000, 300); // knee 4.5
    feed_knee(&mut p, "c", 5.0, 1_000, 300); // knee 36, capped at the median
    // Failures are not the node's latency.
    p.observe_feedback(Feedback {
        node: "a",
        at_ms: 1_500,
        load: 1.0,
        latency_ms: 1.0,
        ok: false,
    });
    assert_eq!(p.feedback_rows(), 900);
    let job = p.due_fit(2_000).expect("due");
    assert!(p.due_fit(2_000).is_none(), "one fit at a time");
    p.install_fit(job.run());
    let views = p.views(2_000);
    let cap = |n: &str| views.iter().find(|v| v.id == n).and_then(|v| v.capacity);
    let (a, b, c) = (
        cap("a").expect("a"),
        cap("b").expect("b"),
        cap("c").expect("c"),
    );
    assert!((a - 18.0).abs() < 1.0, "{a}");
    // A quarter of the typical capacity, shrunk toward the pool's by its 300 rows of
    // evidence (weight 300 / (300 + shrink rows)), then through the dead band (0.5).
    let views_cfg = PipelineConfig::default().views;
    let w = 300.0 / (300.0 + views_cfg.capacity_shrink_rows);
    let want = a * 0.25f64.powf(w) / views_cfg.capacity_deadband;
    assert!(want < 0.8 * a, "still shed: {want} vs {a}");
    assert!((b - want).abs() < 1.0, "{b} vs {want} (a {a})");
    assert!((c - a).abs() < 1e-6, "capped at the median: {c} vs {a}");
    let model = p.capacity_view(2_000).expect("fitted");
    assert_eq!(model.nodes.len(), 3);

    // The next fit scores this one on the rows after it.
    feed_knee(&mut p, "a", 10.0, 3_000, 120);
    let job = p.due_fit(2_000 + 5_000).expect("due again");
    p.install_fit(job.run());
    let s = p.capacity_scores().pop().expect("scored");
    assert_eq!(s.fitted_at_ms, 2_000);
    assert!(s.rows >= 100 && s.mae_ms < 0.5 * s.baseline_mae_ms, "{s:?}");
    assert_eq!(s.mae_ms, s.load_only_mae_ms, "no probe features here");

    // No feedback for longer than the rows are kept and the fit lives: dropped.
    let t = PipelineConfig::default().training;
    let later = 7_000 + t.keep_ms.max(t.ttl_ms) + 1;
    assert!(p.due_fit(later).is_none());
    assert!(p.views(later).iter().all(|v| v.capacity.is_none()));
    assert!(p.capacity_view(later).is_none());
}

#[test]
fn probe_metrics_become_capacity_features_once_they_beat_load_alone() {
    // The node's speed moves with a probe metric (`work-ms`): latency = work * (1 +
    // load) ms, work switching between 5 and 15 every 2 s. Load alone cannot tell the
    // phases apart; load plus the metric can.
    let mut p = pool(&["a", "b"], PipelineConfig::default());
    let mut t = 0;
    let mut fits = 0;
    while fits < 8 {
        let work = if (t / 2_000) % 2 == 0 { 5.0 } else { 15.0 };
        if t % 250 == 0 {
            for n in ["a", "b"] {
                observe(&mut p, n, t, &[("work-ms", work)]);
            }
        }
        for n in ["a", "b"] {
            let load = (1 + (t / 7) % 12) as f64;
            p.observe_feedback(Feedback {
                node: n,
                at_ms: t,
                load,
                latency_ms: work * (1.0 + load),
                ok: true,
            });
        }
        if t % 1_000 == 0
            && let Some(job) = p.due_fit(t)
        {
            p.install_fit(job.run());
            fits += 1;
        }
        t += 10;
    }
    let scores = p.capacity_scores();
    let last = scores.last().expect("scored");
    let features = last.features_mae_ms.expect("feature models fitted");
    assert!(
        features < 0.5 * last.load_only_mae_ms,
        "features {features} vs load only {}",
        last.load_only_mae_ms
    );
    let model = p.capacity_view(t).expect("fitted");
    assert_eq!(model.features, vec!["p/work-ms".to_string()]);
    assert!(model.features_fitted && model.features_used, "{model:?}");
    // Capacity follows the metric: at work 5 ms the SLO (200 ms) is met up to 39 in
    // flight, at 15 ms up to 12.3.
    let fast = {
        let t = (t / 4_000 + 1) * 4_000 + 100;
        for n in ["a", "b"] {
            observe(&mut p, n, t, &[("work-ms", 5.0)]);
        }
        p.views(t)[0].capacity.expect("capacity")
    };
    let slow = {
        let t = (t / 4_000 + 2) * 4_000 + 100;
        for n in ["a", "b"] {
            observe(&mut p, n, t, &[("work-ms", 15.0)]);
        }
        p.views(t)[0].capacity.expect("capacity")
    };
    assert!(fast > 2.0 * slow, "fast {fast} vs slow {slow}");
}

#[test]
fn slow_start_only_once_the_pool_is_established() {
    let mut p = pool(&["a", "b"], PipelineConfig::default());
    // Both nodes come up within a second: nobody ramps.
    observe(&mut p, "a", 0, &[("x", 1.0)]);
    p.views(0);
    observe(&mut p, "b", 900, &[("x", 1.0)]);
    assert!(p.views(900).iter().all(|v| v.ready_since.is_none()));
    // b fails and comes back 20 s later while a carries the traffic: b ramps.
    fail(&mut p, "b", 1_000);
    fail(&mut p, "b", 2_000);
    assert_eq!(p.views(2_000)[1].state, NodeState::Unhealthy);
    let mut t = 20_000;
    loop {
        observe(&mut p, "b", t, &[("x", 1.0)]);
        observe(&mut p, "a", t, &[("x", 1.0)]);
        let v = p.views(t);
        if v[1].state == NodeState::Healthy {
            assert_eq!(v[1].ready_since, Some(t as f64 / 1000.0));
            assert_eq!(v[0].ready_since, None);
            break;
        }
        t += 1_000;
        assert!(t < 60_000, "b never came back");
    }
}

#[test]
fn the_reactive_preset_gives_health_checks_and_nothing_predicted() {
    let mut p = pool(&["a"], PipelineConfig::reactive());
    assert_eq!(p.views(0)[0].state, NodeState::Healthy, "unprobed: healthy");
    fail(&mut p, "a", 1_000);
    assert_eq!(p.views(1_000)[0].state, NodeState::Healthy, "one failure");
    fail(&mut p, "a", 2_000);
    assert_eq!(p.views(2_000)[0].state, NodeState::Unhealthy);
    observe(&mut p, "a", 3_000, &[("x", 1.0)]);
    assert_eq!(p.views(3_000)[0].state, NodeState::Unhealthy, "one pass");
    observe(&mut p, "a", 4_000, &[("x", 1.0)]);
    let v = &p.views(4_000)[0];
    assert_eq!(v.state, NodeState::Healthy);
    assert_eq!(
        (v.capacity, v.degrade_score, v.ready_since),
        (None, 0.0, None)
    );
}

#[test]
fn sync_keeps_models_and_order_and_weights_drain() {
    let mut p = pool(&["a", "b"], PipelineConfig::default());
    observe(&mut p, "a", 0, &[("x", 1.0)]);
    assert!(!p.sync([("a", "h:0"), ("b", "h:1")]), "nothing changed");
    assert!(p.sync([("b", "h:1"), ("a", "h:9")]));
    let v = p.views(0);
    assert_eq!((v[0].id.as_str(), v[1].id.as_str()), ("b", "a"));
    assert_eq!(
        (v[1].address.as_str(), v[1].state),
        ("h:9", NodeState::Healthy)
    );
    p.set_weight("a", 0.0);
    assert_eq!(p.views(0)[1].weight, 0.0);
    p.reset("a");
    assert_eq!(p.views(0)[1].state, NodeState::Unknown, "fresh model");
    assert!(p.sync([("b", "h:1")]));
    assert!(!p.contains("a"));
    assert!(
        PoolPredictor::new(
            PipelineConfig {
                views: ViewConfig {
                    capacity_deadband: 0.0,
                    ..ViewConfig::default()
                },
                ..PipelineConfig::default()
            },
            100.0
        )
        .is_err()
    );
}

#[test]
fn series_refits_are_handed_out_once_and_installed() {
    let mut p = pool(&["a"], PipelineConfig::default());
    let mut t = 0;
    let mut jobs = Vec::new();
    for k in 0..600 {
        observe(&mut p, "a", t, &[("x", 10.0 + (k % 7) as f64)]);
        t += 1_000;
        jobs.extend(p.due_refits(4));
        if !jobs.is_empty() {
            break;
        }
    }
    let r = jobs.pop().expect("a refit comes due");
    assert_eq!((&*r.node, r.key.as_str()), ("a", "p/x"));
    assert!(p.due_refits(4).is_empty(), "one job per series in flight");
    p.install_refit("a", &r.key, r.job.run());
    // Installed: nothing is due until the series' next refit point.
    observe(&mut p, "a", t, &[("x", 10.0)]);
    assert!(p.due_refits(4).is_empty());
    p.install_refit("gone", "p/x", {
        // Results for nodes no longer in the pool are ignored.
        let mut q = pool(&["gone"], PipelineConfig::default());
        let mut t = 0;
        loop {
            observe(&mut q, "gone", t, &[("x", 1.0 + (t % 3) as f64)]);
            t += 1_000;
            if let Some(j) = q.due_refits(1).pop() {
                break j.job.run();
            }
        }
    });
}

/// Eight nodes with feedback and no probe at all; `h`'s latency climbs from 40 ms by
/// 4 ms a second from 10 s. The degrade score of each node in the views at `until_ms`,
/// and `h`'s latency outlook then.
fn climbing_without_probes(
    config: PipelineConfig,
    until_ms: i64,
) -> (Vec<(String, f64)>, Option<f64>) {
    climbing_nodes_without_probes(config, until_ms, &["h"], &|_| 1, &[])
}

/// [`climbing_without_probes`] with every node in `climbing` climbing as `h` does, and
/// `rows(node)` requests answered by each node every 100 ms, and operator weights
/// `weights`.
fn climbing_nodes_without_probes(
    config: PipelineConfig,
    until_ms: i64,
    climbing: &[&str],
    rows: &dyn Fn(&str) -> usize,
    weights: &[(&str, f64)],
) -> (Vec<(String, f64)>, Option<f64>) {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut p = pool(&names, config);
    for (n, w) in weights {
        p.set_weight(n, *w);
    }
    let mut views = Vec::new();
    let mut t = 0;
    let mut k = 0;
    while t <= until_ms {
        for (i, n) in names.iter().enumerate() {
            let base = 40.0 * (1.0 + NOISE[(k + i) % NOISE.len()] * 5.0);
            let climb = if climbing.contains(n) {
                4.0 * ((t - 10_000).max(0) as f64 / 1000.0)
            } else {
                0.0
            };
            for _ in 0..rows(n) {
                p.observe_feedback(Feedback {
                    node: n,
                    at_ms: t,
                    load: 1.0,
                    latency_ms: base + climb,
                    ok: true,
                });
            }
        }
        k += 1;
        t += 100;
        if t % 1_000 == 0 {
            p.tick(t, &|_| None);
            views = p.views(t);
        }
    }
    let outlook = p.latency_outlook("h", t - 100);
    let scores = views.into_iter().map(|v| (v.id, v.degrade_score)).collect();
    (scores, outlook)
}

#[test]
fn at_most_a_quarter_of_the_pool_is_shed_at_once_the_worst_first() {
    // Three of eight climb alike; without a budget all three are shed.
    let climbing = ["f", "g", "h"];
    let mut unlimited = PipelineConfig::default();
    unlimited.views.shed_budget = 1.0;
    let (free, _) = climbing_nodes_without_probes(unlimited, 45_000, &climbing, &|_| 1, &[]);
    let shed = |scores: &[(String, f64)]| -> f64 { scores.iter().map(|(_, s)| s).sum() };
    assert!(
        free.iter()
            .filter(|(n, _)| climbing.contains(&n.as_str()))
            .all(|(_, s)| *s > 0.7),
        "{free:?}"
    );
    assert!(shed(&free) > 2.1, "{free:?}");
    // With the shipped budget (a quarter of eight: two nodes' worth) the scores sum to
    // two, the highest kept in full, and the healthy five are untouched.
    let (capped, _) =
        climbing_nodes_without_probes(PipelineConfig::default(), 45_000, &climbing, &|_| 1, &[]);
    assert!((shed(&capped) - 2.0).abs() < 1e-9, "{capped:?}");
    let top = free.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    assert!(capped.iter().any(|(_, s)| *s == top), "{free:?} {capped:?}");
    assert!(
        capped
            .iter()
            .filter(|(n, _)| !climbing.contains(&n.as_str()))
            .all(|(_, s)| *s == 0.0),
        "{capped:?}"
    );
}

#[test]
fn without_probes_a_climbing_latency_is_shed_before_it_reaches_the_slo() {
    // At 30 s `h` answers in about 120 ms, 60 % of the 200 ms SLO; 5 s later it would
    // be past 140 ms.
    let (scores, outlook) = climbing_without_probes(PipelineConfig::default(), 30_000);
    // What the nodes view reports: past the latency it has now, short of the SLO.
    let outlook = outlook.expect("fresh feedback");
    assert!(outlook > 120.0 && outlook < 200.0, "{outlook}");
    let h = scores.iter().find(|(n, _)| n == "h").expect("h").1;
    assert!(h > 0.3, "{scores:?}");
    assert!(
        scores
            .iter()
            .filter(|(n, _)| n != "h")
            .all(|(_, s)| *s == 0.0),
        "{scores:?}"
    );
    // Before the climb nobody is shed: noise of ±15 % is not a climb.
    let (calm, _) = climbing_without_probes(PipelineConfig::default(), 10_000);
    assert!(calm.iter().all(|(_, s)| *s == 0.0), "{calm:?}");
    // It is the outlook that sheds `h`: without it the pool has no forecast.
    let mut off = PipelineConfig::default();
    off.outlook.enabled = false;
    let (scores, outlook) = climbing_without_probes(off, 30_000);
    assert!(scores.iter().all(|(_, s)| *s == 0.0), "{scores:?}");
    assert_eq!(outlook, None);
}

#[test]
fn a_node_serving_more_than_its_share_is_not_shed_for_the_latency_its_load_explains() {
    let score_of = |scores: &[(String, f64)], node: &str| {
        scores.iter().find(|(n, _)| n == node).expect("node").1
    };
    // `h` climbs as in the test above, but serves twice the requests of any peer:
    // routing sent it the work its latency shows. Judged by its latency alone it is
    // shed; with the shipped discount (none at the median share, full at 1.3 times
    // it) it is not.
    let twice = |n: &str| if n == "h" { 2 } else { 1 };
    let mut off = PipelineConfig::default();
    off.views.load_share_start = f64::INFINITY;
    let (judged, _) = climbing_nodes_without_probes(off.clone(), 30_000, &["h"], &twice, &[]);
    assert!(score_of(&judged, "h") > 0.3, "{judged:?}");
    let (discounted, _) =
        climbing_nodes_without_probes(PipelineConfig::default(), 30_000, &["h"], &twice, &[]);
    assert!(discounted.iter().all(|(_, s)| *s == 0.0), "{discounted:?}");
    // A climbing node with its fair share is judged in full, also while two of its
    // peers get no requests (shed): the share is against the median node, which is
    // one that still serves, not against a mean the idle two pull down.
    let two_idle = |n: &str| usize::from(!matches!(n, "a" | "b"));
    let (scores, _) =
        climbing_nodes_without_probes(PipelineConfig::default(), 30_000, &["h"], &two_idle, &[]);
    let (alone, _) = climbing_nodes_without_probes(off.clone(), 30_000, &["h"], &two_idle, &[]);
    assert!(score_of(&scores, "h") > 0.3, "{scores:?}");
    assert!(
        (score_of(&scores, "h") - score_of(&alone, "h")).abs() < 1e-9,
        "{scores:?} {alone:?}"
    );
    // Twice the requests at twice the operator weight is its share: judged in full.
    let heavy = [("h", 2.0)];
    let (weighted, _) =
        climbing_nodes_without_probes(PipelineConfig::default(), 30_000, &["h"], &twice, &heavy);
    let (unweighted, _) = climbing_nodes_without_probes(off, 30_000, &["h"], &twice, &heavy);
    assert!(score_of(&weighted, "h") > 0.3, "{weighted:?}");
    assert!(
        (score_of(&weighted, "h") - score_of(&unweighted, "h")).abs() < 1e-9,
        "{weighted:?} {unweighted:?}"
    );
}

/// Eight nodes answering in 40 ms and `h` in `h_ms` (`None`: `h` gets no requests) for
/// 5 s; `h`'s routed score is then set to 1 (a shed from an earlier spell) and the
/// views built a second later: `h`'s score then, with `release_fast` as the fast rate.
fn held_score_a_second_later(h_ms: Option<f64>, release_fast: f64) -> f64 {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut config = PipelineConfig::default();
    config.views.score_release_fast_per_s = release_fast;
    let mut p = pool(&names, config);
    let mut t = 0;
    while t <= 5_000 {
        for n in names {
            let latency_ms = match (n, h_ms) {
                ("h", None) => continue,
                ("h", Some(ms)) => ms,
                _ => 40.0,
            };
            p.observe_feedback(Feedback {
                node: n,
                at_ms: t,
                load: 1.0,
                latency_ms,
                ok: true,
            });
        }
        t += 100;
        if t % 1_000 == 0 {
            p.tick(t, &|_| None);
            p.views(t);
        }
    }
    let h = p.index["h"];
    p.slots[h].routed_score = (1.0, t);
    p.tick(t + 1_000, &|_| None);
    let views = p.views(t + 1_000);
    views[h].degrade_score
}

#[test]
fn with_the_fast_release_a_held_node_whose_latency_is_back_is_released_fast() {
    let shipped = ViewConfig::default();
    // Shipped off: the fast release is the slow one.
    assert_eq!(
        shipped.score_release_fast_per_s,
        shipped.score_release_per_s
    );
    let rate = 1.0;
    let slow = 1.0 - shipped.score_release_per_s;
    // Within 10 % of its peers: what it still serves says it is well again.
    let near = held_score_a_second_later(Some(44.0), rate);
    assert!(near.abs() < 1e-9, "{near}");
    // With the shipped settings the envelope holds it.
    let held = held_score_a_second_later(Some(44.0), shipped.score_release_fast_per_s);
    assert!((held - slow).abs() < 1e-9, "{held}");
    // Half as slow again as its peers, or not measured at all: the slow release.
    let behind = held_score_a_second_later(Some(60.0), rate);
    assert!((behind - slow).abs() < 1e-9, "{behind}");
    let unmeasured = held_score_a_second_later(None, rate);
    assert!((unmeasured - slow).abs() < 1e-9, "{unmeasured}");
}

#[test]
fn a_score_earned_before_any_feedback_is_let_go_when_trust_starts_to_count() {
    // Eight nodes probed once a second and no traffic yet: `h`'s metric climbs away
    // from its peers', and with nothing to judge the metric by it counts in full.
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut p = pool(&names, PipelineConfig::default());
    let mut t = 1_000_000;
    for k in 0..100usize {
        for (i, n) in names.iter().enumerate() {
            let climb = if *n == "h" && k >= 60 {
                1.0 + 0.03 * (k - 59) as f64
            } else {
                1.0
            };
            observe(
                &mut p,
                n,
                t,
                &[("m", 10.0 * climb * (1.0 + NOISE[(k + i) % 10]))],
            );
        }
        p.tick(t, &|_| None);
        p.views(t);
        t += 1000;
    }
    let h = p.index["h"];
    let before = p.views(t)[h].degrade_score;
    assert!(before > 0.5, "{before}");
    // Traffic starts; every node answers alike. At the first tick with feedback the
    // metric's trust drops to its prior (0: it has predicted nothing yet), and the score
    // it gave goes with it, not over seconds of the release envelope.
    for step in 0..10 {
        for n in names {
            p.observe_feedback(Feedback {
                node: n,
                at_ms: t + step * 100,
                load: 1.0,
                latency_ms: 40.0,
                ok: true,
            });
        }
    }
    t += 1000;
    p.tick(t, &|_| None);
    let views = p.views(t);
    assert!(
        views.iter().all(|v| v.degrade_score == 0.0),
        "{:?}",
        views.iter().map(|v| v.degrade_score).collect::<Vec<_>>()
    );
}
