//! The prediction engine inside a real balancer (loopback port, SQLite file), driven by
//! samples posted over `/v1/reports` with their own timestamps: a node slowing down
//! steadily (its feedback latency with it) loses route share before its metric leaves
//! its band, turns `degrading` with
//! evidence (its deep probes speed up), and gets its share back gradually once it
//! recovers; a restart keeps state changes and warm models; NaN never gets in.

use std::time::Duration;

use crate::common::*;
use crate::engine_common::*;
use plb_api::{NodeState, Outcome, ProbeSettings, Tier};
use plb_client::Fetched;
use plb_testkit::now_ms;

const BASE: f64 = 10.0;

/// a's value at ramp step `k` (0 = baseline): +1 % a step.
fn ramp(k: usize) -> f64 {
    BASE * (1.0 + 0.01 * k as f64)
}

struct Step {
    value: f64,
    band_hi: f64,
    share: f64,
    /// a's published `plb` weight relative to its full weight.
    weight: f64,
    state: NodeState,
    degrade: f64,
}

/// Posts one sample per node at `t` (a at `a_value`), waits until the engine has it and
/// the snapshot is rebuilt, and measures a's route share over `n` decisions.
async fn step(p: &Pool, t: i64, k: usize, a_value: f64, n: usize) -> Step {
    p.sample("a", t, Outcome::Ok, a_value).await;
    for node in ["b", "c"] {
        p.sample(node, t, Outcome::Ok, BASE * (1.0 + jitter(k)))
            .await;
    }
    p.wait_for("the step's samples", |v| {
        ["a", "b", "c"].iter().all(|n| {
            v.get(*n)
                .and_then(|x| x.assessment.as_ref())
                .and_then(|a| a.last_seen_ms)
                == Some(t)
        })
    })
    .await;
    // The snapshot is rebuilt within the engine's 100 ms rebuild interval.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let v = p.nodes().await;
    let a = &v["a"];
    let metric = a
        .assessment
        .as_ref()
        .and_then(|x| x.metrics.iter().find(|m| m.name == SERIES))
        .expect("a's series");
    let band_hi = metric.profile.as_ref().expect("profile").hi;
    let routing = a.routing.clone().expect("routing");
    // Feedback latency follows each node's metric, as a slowing node's would: the
    // metric earns its trust by having predicted latency (see `plb_pipeline::trust`).
    let shares = p
        .shares_with(n, "", |node| {
            if node == "a" {
                5.0 * a_value / BASE
            } else {
                5.0
            }
        })
        .await;
    Step {
        value: a_value,
        band_hi,
        share: *shares.get("a").unwrap_or(&0) as f64 / n as f64,
        weight: routing.weight,
        state: routing.state,
        degrade: routing.degrade_score,
    }
}

async fn deep_interval(p: &Pool, node: &str) -> (u64, Option<String>) {
    match p.agents[node]
        .assignments(node, None)
        .await
        .expect("assignments")
    {
        Fetched::Changed { assignments, etag } => (
            assignments
                .probes
                .iter()
                .find(|a| a.tier == Tier::Deep)
                .expect("the deep probe")
                .interval_ms,
            etag,
        ),
        Fetched::Unchanged => panic!("no ETag was sent"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowing_node_sheds_before_its_band_and_returns_gradually() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a", "b", "c"]).await;
    let deep = ProbeSettings {
        tier: Tier::Deep,
        interval_ms: 30_000,
        ..ProbeSettings::default()
    };
    p.client
        .upload_probe("web", "bench", plb_probe_artifacts::CPU_BENCH, &deep)
        .await
        .expect("upload a deep probe");
    let (interval, etag_before) = deep_interval(&p, "a").await;
    assert_eq!(interval, 30_000);

    // 40 s of baseline, one sample a second, ending now.
    let t0 = now_ms() - 40_000;
    for node in ["a", "b", "c"] {
        let points: Vec<(i64, f64)> = (0..40)
            .map(|k| (t0 + 1000 * k as i64, BASE * (1.0 + jitter(k))))
            .collect();
        p.samples(node, &points).await;
    }
    p.wait_for("baseline learnt, all healthy", |v| {
        ["a", "b", "c"]
            .iter()
            .all(|n| routing_state(v, n) == Some(NodeState::Healthy))
    })
    .await;
    let fair = 1.0 / 3.0;
    let first = step(&p, t0 + 40_000, 40, BASE * (1.0 + jitter(40)), 300).await;
    assert!(
        (first.share - fair).abs() < 0.12,
        "a healthy node gets about its fair share: {}",
        first.share
    );

    // a slows down steadily: +1 % a second.
    let mut t = t0 + 41_000;
    let mut ramp_steps = Vec::new();
    for k in 1..=40 {
        // A step a second of real time: the engine pairs metrics with feedback latency
        // once a tick (1 s), 2 s apart, and a metric counts only as far as those pairs
        // show it predicting latency.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = step(&p, t, k, ramp(k), 300).await;
        t += 1000;
        let degrading = s.state == NodeState::Degrading;
        ramp_steps.push(s);
        if degrading && ramp_steps.len() >= 3 {
            break;
        }
    }
    let table: Vec<String> = ramp_steps
        .iter()
        .map(|s| {
            format!(
                "value {:.2} hi {:.2} share {:.3} weight {:.3} degrade {:.2} {:?}",
                s.value, s.band_hi, s.share, s.weight, s.degrade, s.state
            )
        })
        .collect();
    println!("ramp:\n{}", table.join("\n"));
    // Shed: its measured share or the weight the policy publishes for it falls below
    // three quarters of full. (The share alone flickers: the test's batches of 20
    // unanswered decisions fill its peers past `scan_busy_release`, which gives a
    // node within 1.2x the median latency its full weight back, and then a's share
    // held at 0.300 while its published weight fell to 0.46 and 0.14, once in a
    // suite run.)
    let shed = ramp_steps
        .iter()
        .position(|s| s.share < 0.75 * fair || s.weight < 0.75)
        .unwrap_or_else(|| panic!("a was never shed: {table:#?}"));
    assert!(
        ramp_steps[shed].value < ramp_steps[shed].band_hi,
        "a was shed only after its metric left its band: {table:#?}"
    );
    // Not only its feedback latency: the forecast sheds it before the band too.
    assert!(
        ramp_steps
            .iter()
            .any(|s| s.degrade > 0.3 && s.value < s.band_hi),
        "a's degrade score rose only after its metric left its band: {table:#?}"
    );
    assert!(
        ramp_steps.iter().any(|s| s.state == NodeState::Degrading),
        "a turned degrading: {table:#?}"
    );
    // Gradual: the weight the policy publishes passes through steps between full and
    // the floor. (Not the measured share: with every node scanned, a few percent of
    // feedback latency decides each pick, so the share drops in one step at a timing
    // that depends on how fast this machine answers the route calls.)
    assert!(
        ramp_steps
            .iter()
            .any(|s| s.weight > 0.15 && s.weight < 0.75),
        "no cliff: {table:#?}"
    );

    // The change is stored with its evidence; deep probes speed up while degrading.
    let changes = p.state_changes("node=a").await;
    let to_degrading = changes
        .iter()
        .find(|c| c["to"] == "degrading")
        .unwrap_or_else(|| panic!("no change to degrading stored: {changes:?}"));
    assert_eq!(to_degrading["evidence"][0]["metric"], SERIES, "{changes:?}");
    assert!(
        to_degrading["evidence"][0]["forecast"].as_f64()
            > to_degrading["evidence"][0]["threshold"].as_f64(),
        "{to_degrading}"
    );
    let (interval, etag_during) = deep_interval(&p, "a").await;
    assert_eq!(
        interval, 15_000,
        "deep probes run twice as often while degrading"
    );
    assert_ne!(
        etag_before, etag_during,
        "the ETag changes with the interval"
    );
    assert_eq!(
        deep_interval(&p, "b").await.0,
        30_000,
        "other nodes keep theirs"
    );

    // a recovers: its share comes back, not at once.
    let mut recovery = Vec::new();
    for k in 0..40 {
        let s = step(&p, t, k, BASE * (1.0 + jitter(k)), 300).await;
        t += 1000;
        let back = s.share > 0.8 * fair && s.state == NodeState::Healthy;
        recovery.push(s);
        if back {
            break;
        }
    }
    let table: Vec<String> = recovery
        .iter()
        .map(|s| {
            format!(
                "value {:.2} share {:.3} weight {:.3} degrade {:.2} {:?}",
                s.value, s.share, s.weight, s.degrade, s.state
            )
        })
        .collect();
    println!("recovery:\n{}", table.join("\n"));
    let last = recovery.last().expect("steps");
    assert!(
        last.share > 0.8 * fair && last.state == NodeState::Healthy,
        "a got its share back: {table:#?}"
    );
    // Not at once: the weight the policy publishes comes back over steps as the degrade
    // score falls. (Not the measured share: each batch of 20 unanswered decisions keeps
    // b and c busy, and with their queues full the full scan counts a shed node whose
    // latency is the pool's at its full weight, `scan_busy_release`.)
    assert!(
        recovery.len() >= 2 && recovery[0].weight < 0.5,
        "not at once: {table:#?}"
    );
    let (interval, _) = deep_interval(&p, "a").await;
    assert_eq!(interval, 30_000, "back to the uploaded interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_state_changes_and_warm_models() {
    let b = TestBalancer::start().await;
    let mut p = Pool::new(&b, "acme", "web", &["a", "b"]).await;
    let t0 = now_ms() - 20_000;
    let points: Vec<(i64, f64)> = (0..35)
        .map(|k| (t0 + 500 * k as i64, BASE * (1.0 + jitter(k))))
        .collect();
    p.samples("a", &points).await;
    p.samples("b", &points[..5]).await;
    for k in 0..2 {
        p.sample("b", t0 + 5_000 + 500 * k, Outcome::Unhealthy, 0.0)
            .await;
    }
    p.wait_for("b unhealthy", |v| {
        routing_state(v, "b") == Some(NodeState::Unhealthy)
            && routing_state(v, "a") == Some(NodeState::Healthy)
    })
    .await;
    let before = p.nodes().await;
    let series_before = before["a"]
        .assessment
        .as_ref()
        .and_then(|a| a.metrics.iter().find(|m| m.name == SERIES).cloned())
        .expect("a's series");
    assert!(series_before.profile.as_ref().is_some_and(|p| p.ready));
    // Stored promptly (within the engine's rebuild interval).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.count("SELECT count(*) FROM state_changes") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "state changes not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let TestBalancer {
        running,
        dir,
        admin,
    } = b;
    running.stop().await.expect("stop");
    let running = plb_balancer::start(&config(dir.path()))
        .await
        .expect("restart");
    let b = TestBalancer {
        running,
        dir,
        admin,
    };
    p.rebase(&b.url());
    let warmed = b.running.state.engine.warmed().expect("warmed on start");
    assert_eq!((warmed.samples, warmed.rejected), (42, 0), "{warmed:?}");

    // No new sample: the models are as they were.
    let after = p.nodes().await;
    assert_eq!(routing_state(&after, "b"), Some(NodeState::Unhealthy));
    assert_eq!(routing_state(&after, "a"), Some(NodeState::Healthy));
    let series_after = after["a"]
        .assessment
        .as_ref()
        .and_then(|a| a.metrics.iter().find(|m| m.name == SERIES).cloned())
        .expect("a's series after the restart");
    assert_eq!(series_after.samples, series_before.samples);
    assert_eq!(series_after.profile, series_before.profile);
    assert_eq!(series_after.last_value, series_before.last_value);
    let changes = p.state_changes("").await;
    assert!(
        changes.iter().any(|c| c["node"] == "b"
            && c["to"] == "unhealthy"
            && c["evidence"][0]["metric"] == "probe/node"),
        "{changes:?}"
    );
    // The warm-up records nothing twice.
    assert_eq!(changes.len(), 3, "{changes:?}");
    // An unhealthy node still gets nothing after the restart.
    let shares = p.shares(50, "").await;
    assert_eq!(shares.get("b"), None, "{shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_infinite_metrics_are_refused_at_ingest() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a"]).await;
    let t = now_ms();
    let agent = p.agents["a"].token().to_string();
    let url = format!("{}/v1/reports", b.url());
    let body = |metric: &str| {
        format!(
            r#"{{"node":"a","samples":[{{"id":"s1","pool":"web","probe":"node","version":0,"taken_at_ms":{t},"outcome":"ok","metrics":{{"latency-ms":{metric}}},"duration_ms":1.0}}]}}"#
        )
        .into_bytes()
    };
    let post = |metric: &str| {
        raw(
            &url,
            reqwest::Method::POST,
            Some(&agent),
            Some("application/json"),
            Some(body(metric)),
        )
    };
    // JSON has no NaN: a client's serialiser writes null, or a bare token.
    assert_error(&post("null").await, 422, "invalid_body", "latency-ms");
    assert_error(&post("NaN").await, 400, "invalid_json", "malformed");
    let got = post("1e999").await;
    assert_eq!(got.0 / 100, 4, "{}", got.1);
    // A finite value goes in and reaches the model.
    let got = post("12.5").await;
    assert_eq!(got.0, 200, "{}", got.1);
    let v = p
        .wait_for("the sample in the model", |v| {
            v["a"]
                .assessment
                .as_ref()
                .is_some_and(|a| a.metrics.iter().any(|m| m.name == SERIES))
        })
        .await;
    let a = v["a"].assessment.as_ref().expect("assessment");
    assert_eq!(a.metrics.len(), 1);
    assert_eq!(a.metrics[0].samples, 1);
    assert_eq!(b.count("SELECT count(*) FROM samples"), 1);
    let metrics = b.admin.metrics_text().await.expect("metrics");
    assert!(
        metrics.contains("plb_engine_rejected_samples_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_trains_the_capacity_model_and_each_fit_is_scored() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a"]).await;
    // A queue whose latency grows with the requests in flight: 20 ms + 10 ms per request
    // in flight at dispatch. The pool's objective is 200 ms, so the knee is at 18.
    let knee = (200.0 - 20.0) / 10.0;
    let round = |depth: usize| {
        let p = &p;
        async move {
            for _ in 0..depth {
                assert_eq!(p.route("").await.node, "a");
            }
            // Feedback releases the oldest decision first: its load at dispatch was 1.
            let items: Vec<_> = (1..=depth)
                .map(|load| {
                    serde_json::json!({"node": "a", "latency_ms": 20.0 + 10.0 * load as f64, "ok": true})
                })
                .collect();
            let (s, v) = p.feedback(serde_json::json!(items)).await;
            assert_eq!(s, 200, "{v}");
        }
    };
    for depth in [4, 8, 12, 16, 6, 10, 14, 3] {
        round(depth).await;
    }
    let model = |b: &TestBalancer| {
        let url = format!("{}/v1/pools/web/model", b.url());
        let token = p.client.token().to_string();
        async move {
            let (s, v) = raw(&url, reqwest::Method::GET, Some(&token), None, None).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fitted = loop {
        let v = model(&b).await;
        if !v["capacity"].is_null() {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no capacity model: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cap = fitted["capacity"]["pool_capacity"]
        .as_f64()
        .unwrap_or_else(|| panic!("a capacity: {fitted}"));
    assert!(
        (cap - knee).abs() / knee < 0.2,
        "capacity {cap} within 20 % of the knee {knee}: {fitted}"
    );
    assert_eq!(fitted["capacity"]["nodes"][0]["node"], "a", "{fitted}");
    assert!(
        fitted["capacity"]["rows_used"].as_u64() >= Some(60),
        "{fitted}"
    );
    // The nodes view carries the capacity the router uses.
    let v = p
        .wait_for("capacity in the routing view", |v| {
            v["a"].routing.as_ref().and_then(|r| r.capacity).is_some()
        })
        .await;
    let routed_cap = v["a"]
        .routing
        .as_ref()
        .and_then(|r| r.capacity)
        .expect("capacity");
    assert!((routed_cap - cap).abs() < 1e-6, "{routed_cap} vs {cap}");

    // More feedback, then the next fit scores the previous one on it.
    for depth in [5, 9, 13, 17, 7, 11] {
        round(depth).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let scored = loop {
        let v = model(&b).await;
        if v["capacity_scores"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no scored fit: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let score = &scored["capacity_scores"][0];
    let (mae, base) = (
        score["mae_ms"].as_f64().expect("mae"),
        score["baseline_mae_ms"].as_f64().expect("baseline"),
    );
    assert!(score["rows"].as_u64() > Some(0), "{scored}");
    assert!(
        mae < 0.5 * base,
        "the model beats a constant on later feedback: {scored}"
    );
    let metrics = b.admin.metrics_text().await.expect("metrics");
    assert!(!metrics.contains("plb_capacity_fits_total 0"), "{metrics}");
}
