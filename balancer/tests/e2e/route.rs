//! The route and feedback API against a real balancer on a loopback port and a real
//! SQLite file: decisions, in-flight accounting, feedback validation, per-pool policy,
//! unhealthy nodes, best effort, keys, and decision counts stored per minute.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use crate::engine_common::*;
use plb_api::{NodeState, Outcome};
use plb_testkit::now_ms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_flight_feedback_and_validation() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a", "b", "c"]).await;

    // Nodes without samples are `unknown` but still routed to.
    let d = p.route("").await;
    assert!(["a", "b", "c"].contains(&d.node.as_str()), "{d:?}");
    assert_eq!(d.state, NodeState::Unknown);
    assert!(d.address.starts_with("127.0.0.1:900"), "{d:?}");
    assert!(d.score > 0.0 && d.score <= 1.0);
    assert!(
        d.reason.contains(&format!("node {}", d.node)),
        "{}",
        d.reason
    );

    // Every decision counts in flight until its feedback.
    let mut chosen = vec![d.node];
    for _ in 0..5 {
        chosen.push(p.route("size=2048&cost=1.5&key=u1").await.node);
    }
    let v = p.nodes().await;
    let in_flight: u64 = v
        .values()
        .map(|n| n.routing.as_ref().expect("routing").in_flight)
        .sum();
    assert_eq!(in_flight, 6);
    let items: Vec<_> = chosen
        .iter()
        .map(|n| serde_json::json!({"node": n, "latency_ms": 12.5, "ok": true}))
        .collect();
    // A bad item anywhere: nothing is applied.
    let mut bad = items.clone();
    bad.push(serde_json::json!({"node": "zz", "latency_ms": 1.0, "ok": true}));
    let got = p.feedback(serde_json::json!(bad)).await;
    assert_error(
        &got,
        422,
        "invalid_feedback",
        "item 6: node `zz` is not in this pool",
    );
    let got = p
        .feedback(serde_json::json!({"node": "a", "latency_ms": -1.0, "ok": true}))
        .await;
    assert_error(&got, 422, "invalid_feedback", "latency_ms");
    let got = p
        .feedback(serde_json::json!({"node": "a", "latency_ms": "fast", "ok": true}))
        .await;
    assert_error(&got, 422, "invalid_feedback", "invalid type");
    let got = p.feedback(serde_json::json!({"items": 3})).await;
    assert_error(&got, 422, "invalid_feedback", "`items` must be an array");
    let v = p.nodes().await;
    let in_flight: u64 = v
        .values()
        .map(|n| n.routing.as_ref().expect("routing").in_flight)
        .sum();
    assert_eq!(in_flight, 6, "a refused batch changes nothing");

    // The three shapes: one item, a batch, an array.
    let (s, ack) = p.feedback(items[0].clone()).await;
    assert_eq!((s, ack["accepted"].as_u64()), (200, Some(1)));
    let (s, ack) = p
        .feedback(serde_json::json!({"items": items[1..3].to_vec()}))
        .await;
    assert_eq!((s, ack["accepted"].as_u64()), (200, Some(2)));
    let (s, ack) = p.feedback(serde_json::json!(items[3..].to_vec())).await;
    assert_eq!((s, ack["accepted"].as_u64()), (200, Some(3)));
    let v = p.nodes().await;
    let (in_flight, completed): (u64, u64) = v.values().fold((0, 0), |acc, n| {
        let r = n.routing.as_ref().expect("routing");
        (acc.0 + r.in_flight, acc.1 + r.completed)
    });
    assert_eq!((in_flight, completed), (0, 6));
    // Its peak-EWMA and its mean latency, both of the 12.5 ms answers.
    let (a_latency, a_mean) = v
        .values()
        .find_map(|n| {
            let r = n.routing.as_ref()?;
            Some((r.latency_ms?, r.mean_latency_ms?))
        })
        .expect("a latency estimate");
    assert!((a_latency - 12.5).abs() < 0.1, "{a_latency}");
    assert!((a_mean - 12.5).abs() < 0.1, "{a_mean}");

    // Bad queries.
    let got = p.route_raw("size=-1").await;
    assert_error(&got, 400, "invalid_query", "`size`");
    let got = p.route_raw("cost=abc").await;
    assert_error(&got, 400, "invalid_query", "cost");
    let got = p.route_raw("policy=random").await;
    assert_error(&got, 400, "invalid_policy", "round-robin");
    let got = p.route_raw("colour=red").await;
    assert_error(&got, 400, "invalid_query", "colour");

    // Unknown pool: 404; a pool without nodes: 409.
    let got = raw(
        &format!("{}/v1/pools/nope/route", b.url()),
        reqwest::Method::GET,
        Some(p.client.token()),
        None,
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", "pool `nope`");
    p.client.create_pool("empty", 100.0).await.expect("pool");
    let got = raw(
        &format!("{}/v1/pools/empty/route", b.url()),
        reqwest::Method::GET,
        Some(p.client.token()),
        None,
        None,
    )
    .await;
    assert_error(&got, 409, "conflict", "no nodes");
    // Another client does not see the pool.
    let other = b.client_with_pool("other", "mine").await;
    let got = raw(
        &format!("{}/v1/pools/web/route", b.url()),
        reqwest::Method::GET,
        Some(other.token()),
        None,
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", "pool `web`");

    // Per-pool policy: round-robin visits every node in turn.
    let got = raw(
        &format!("{}/v1/pools/web", b.url()),
        reqwest::Method::PATCH,
        Some(p.client.token()),
        Some("application/json"),
        Some(br#"{"policy":"round-robin"}"#.to_vec()),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["policy"], "round-robin");
    let seen: HashSet<String> = {
        let mut s = HashSet::new();
        for _ in 0..3 {
            let d = p.route("").await;
            assert!(d.reason.contains("round-robin"), "{}", d.reason);
            s.insert(d.node);
        }
        s
    };
    assert_eq!(seen.len(), 3, "{seen:?}");
    let got = raw(
        &format!("{}/v1/pools/web", b.url()),
        reqwest::Method::PATCH,
        Some(p.client.token()),
        Some("application/json"),
        Some(br#"{"policy":"fastest"}"#.to_vec()),
    )
    .await;
    assert_error(&got, 400, "invalid_policy", "fastest");
    assert_eq!(
        p.client.pool("web").await.expect("pool").policy,
        "round-robin",
        "a refused change leaves the policy"
    );

    // Decisions are counted per node and minute in the store (written each tick).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (s, v) = raw(
            &format!("{}/v1/pools/web/decisions?since=0", b.url()),
            reqwest::Method::GET,
            Some(p.client.token()),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let total: u64 = v["minutes"]
            .as_array()
            .expect("minutes")
            .iter()
            .map(|m| m["total"].as_u64().unwrap_or(0))
            .sum();
        if total == 9 {
            let shares: f64 = v["minutes"][0]["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| n["share"].as_f64().unwrap_or(0.0))
                .sum();
            assert!((shares - 1.0).abs() < 1e-9 || v["minutes"].as_array().map_or(0, Vec::len) > 1);
            break;
        }
        assert!(total < 9, "{v}");
        assert!(
            std::time::Instant::now() < deadline,
            "decisions not stored: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.count("SELECT sum(decisions) FROM route_decisions"), 9);
    let metrics = b.admin.metrics_text().await.expect("metrics");
    assert!(
        metrics.contains("plb_route_decisions_total{policy=\"round-robin\",state=\"unknown\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("plb_feedback_items_total 6"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_nodes_get_nothing_until_all_are() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a", "b", "c"]).await;
    let t0 = now_ms() - 10_000;
    for k in 0..5 {
        for n in ["a", "b", "c"] {
            p.sample(n, t0 + 1000 * k, Outcome::Ok, 10.0).await;
        }
    }
    p.wait_for("all healthy", |v| {
        ["a", "b", "c"]
            .iter()
            .all(|n| routing_state(v, n) == Some(NodeState::Healthy))
    })
    .await;
    // c fails its probe twice in a row: unhealthy now.
    for k in 5..7 {
        p.sample("c", t0 + 1000 * k, Outcome::Unhealthy, 0.0).await;
    }
    let v = p
        .wait_for("c unhealthy", |v| {
            routing_state(v, "c") == Some(NodeState::Unhealthy)
        })
        .await;
    let a = v["c"].assessment.as_ref().expect("assessment");
    assert_eq!(a.state, NodeState::Unhealthy);
    assert!(
        a.evidence.iter().any(|e| e.metric == "probe/node"),
        "{:?}",
        a.evidence
    );
    let shares = p.shares(200, "").await;
    assert_eq!(shares.get("c"), None, "{shares:?}");
    assert_eq!(shares.values().sum::<usize>(), 200);
    // Keys avoid it too.
    for k in 0..50 {
        assert_ne!(p.route(&format!("key=user-{k}")).await.node, "c");
    }

    // Every node unhealthy: answers still come, best effort, and say so.
    for n in ["a", "b"] {
        for k in 7..9 {
            p.sample(n, t0 + 1000 * k, Outcome::Unhealthy, 0.0).await;
        }
    }
    p.wait_for("all unhealthy", |v| {
        ["a", "b", "c"]
            .iter()
            .all(|n| routing_state(v, n) == Some(NodeState::Unhealthy))
    })
    .await;
    for _ in 0..10 {
        let d = p.route("").await;
        assert_eq!(d.state, NodeState::Unhealthy);
        assert!(
            d.reason.contains("every node is unhealthy, best effort"),
            "{}",
            d.reason
        );
    }
    // The state changes are stored with their evidence.
    let changes = p.state_changes("node=c").await;
    let last = changes.last().expect("a change");
    assert_eq!(last["to"], "unhealthy", "{changes:?}");
    assert_eq!(last["node"], "c");
    assert_eq!(last["evidence"][0]["metric"], "probe/node", "{changes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sticks_to_its_node_while_it_has_room() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a", "b", "c", "d"]).await;
    let t0 = now_ms() - 10_000;
    for k in 0..5 {
        for n in ["a", "b", "c", "d"] {
            p.sample(n, t0 + 1000 * k, Outcome::Ok, 10.0).await;
        }
    }
    p.wait_for("all healthy", |v| {
        v.values().all(|n| {
            n.routing
                .as_ref()
                .is_some_and(|r| r.state == NodeState::Healthy)
        })
    })
    .await;
    // Each key goes to one node, again and again (feedback keeps loads low).
    let mut owners = Vec::new();
    for k in 0..8 {
        let key = format!("key=user-{k}");
        let shares = shares_one_by_one(&p, 10, &key).await;
        assert_eq!(shares.len(), 1, "{key}: {shares:?}");
        owners.push(shares.into_keys().next().expect("owner"));
        let d = p.route(&key).await;
        assert!(d.reason.contains("owns the key"), "{}", d.reason);
        p.feedback(serde_json::json!({"node": d.node, "latency_ms": 1.0, "ok": true}))
            .await;
    }
    let distinct: HashSet<&String> = owners.iter().collect();
    assert!(distinct.len() >= 2, "keys spread over nodes: {owners:?}");

    // With its owner loaded far past its share (requests in flight, no feedback), the
    // key moves to another node.
    let owner = owners[0].clone();
    let mut moved = None;
    for _ in 0..40 {
        let d = p.route("key=user-0").await;
        if d.node != owner {
            moved = Some(d);
            break;
        }
    }
    let d = moved.expect("the key moves once its owner is over its bounded-load share");
    assert!(
        d.reason.contains("over its bounded-load share"),
        "{}",
        d.reason
    );

    // Its owner unhealthy: the key goes elsewhere at once.
    let t = t0 + 5_000;
    for k in 0..2 {
        p.sample(&owner, t + 1000 * k, Outcome::Unhealthy, 0.0)
            .await;
    }
    p.wait_for("owner unhealthy", |v| {
        routing_state(v, &owner) == Some(NodeState::Unhealthy)
    })
    .await;
    for _ in 0..10 {
        assert_ne!(p.route("key=user-0").await.node, owner);
    }
}

/// `GET` with the pool owner's token: status and JSON body.
async fn get_json(p: &Pool, path: &str) -> (u16, serde_json::Value) {
    raw(
        &format!("{}{path}", p.url),
        reqwest::Method::GET,
        Some(p.client.token()),
        None,
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_history_answer_at_most_their_limit() {
    let b = TestBalancer::start().await;
    let p = Pool::new(&b, "acme", "web", &["a", "b"]).await;
    // Three days of per-minute decisions for both nodes, as the engine stores them.
    let now = now_ms();
    let minute = now - now % 60_000;
    let days = 3 * 24 * 60;
    {
        let mut c = rusqlite::Connection::open(b.db()).expect("db");
        c.busy_timeout(Duration::from_secs(5)).expect("timeout");
        let tx = c.transaction().expect("tx");
        tx.execute(
            "INSERT INTO route_decisions (pool_id, node_id, minute_ms, decisions)
             SELECT p.id, n.id, ?1 - m.k * 60000, 1 + m.k % 7
             FROM pools p JOIN pool_nodes pn ON pn.pool_id = p.id JOIN nodes n ON n.id = pn.node_id,
                  (WITH RECURSIVE r(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM r WHERE k + 1 < ?2)
                   SELECT k FROM r) m
             WHERE p.name = 'web'",
            rusqlite::params![minute, days],
        )
        .expect("insert");
        tx.commit().expect("commit");
    }
    assert_eq!(
        b.count("SELECT COUNT(*) FROM route_decisions"),
        2 * days,
        "seeded"
    );
    let minutes = |v: &serde_json::Value| -> Vec<i64> {
        v["minutes"]
            .as_array()
            .expect("minutes")
            .iter()
            .map(|m| m["minute_ms"].as_i64().expect("minute"))
            .collect()
    };

    // since=0: the default limit, the newest minutes, oldest first.
    let (status, body) = get_json(&p, "/v1/pools/web/decisions?since=0").await;
    assert_eq!(status, 200, "{body}");
    let got = minutes(&body);
    assert_eq!(got.len(), 120);
    assert_eq!(got.last().copied(), Some(minute));
    assert_eq!(got.first().copied(), Some(minute - 119 * 60_000));
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        body["minutes"][0]["nodes"].as_array().map(Vec::len),
        Some(2)
    );

    let (status, body) = get_json(&p, "/v1/pools/web/decisions?since=0&limit=5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        minutes(&body),
        (0..5)
            .rev()
            .map(|k| minute - k * 60_000)
            .collect::<Vec<_>>()
    );
    // A window shorter than the limit is answered whole.
    let since = minute - 2 * 60_000;
    let (_, body) = get_json(
        &p,
        &format!("/v1/pools/web/decisions?since={since}&limit=1440"),
    )
    .await;
    assert_eq!(minutes(&body).len(), 3);
    for bad in ["0", "1441", "-1", "many"] {
        let got = get_json(&p, &format!("/v1/pools/web/decisions?since=0&limit={bad}")).await;
        assert_error(&got, 400, "invalid_query", "limit");
    }

    // History: the window's newest `limit` samples, and `truncated`.
    let points: Vec<(i64, f64)> = (0..20)
        .map(|i| (now - 20_000 + i * 1000, i as f64))
        .collect();
    p.samples("a", &points).await;
    let path = format!("/v1/pools/web/nodes/a/history?metric={SERIES}");
    let (status, body) = get_json(&p, &format!("{path}&limit=5")).await;
    assert_eq!(status, 200, "{body}");
    let values: Vec<f64> = body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|pt| pt[1].as_f64().expect("value"))
        .collect();
    assert_eq!(values, [15.0, 16.0, 17.0, 18.0, 19.0]);
    assert_eq!(body["truncated"], true);
    let (_, body) = get_json(&p, &path).await;
    assert_eq!(body["points"].as_array().map(Vec::len), Some(20));
    assert_eq!(body["truncated"], false);
    for bad in ["0", "36001"] {
        let got = get_json(&p, &format!("{path}&limit={bad}")).await;
        assert_error(&got, 400, "invalid_query", "limit");
    }
    b.running.stop().await.expect("stop");
}
