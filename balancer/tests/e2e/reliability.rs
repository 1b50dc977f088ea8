//! Probe reliability against a real balancer on loopback over a real SQLite file:
//! samples posted over `/v1/reports` as agents would, a real webhook receiver (axum on
//! port 0) that checks every signature, and restarts on the same database file.

use std::time::Duration;

use plb_api::{
    NotificationKind, NotificationList, Outcome, ProbeDetail, ProbeState, Sample,
    WebhookDeliveries, WebhookView,
};
use plb_balancer::BalancerConfig;
use plb_balancer::webhooks::verify;
use plb_client::Client;
use plb_probe_artifacts::TRIVIAL;
use plb_testkit::{WebhookReceiver, free_addr, loopback, now_ms};

use crate::common::*;

const SECRET: &str = "a-webhook-secret-of-32-bytes-xyz";

/// A webhook receiver on `addr` (port 0: any) that checks every signature with the
/// balancer's own `verify` at arrival.
fn receiver_on(addr: std::net::SocketAddr) -> WebhookReceiver {
    WebhookReceiver::start(addr, |signature, body| {
        verify(SECRET.as_bytes(), signature, body, now_ms() / 1000, 300).is_ok()
    })
}

fn receiver() -> WebhookReceiver {
    receiver_on(loopback(0))
}

fn fast_retries(cfg: &mut BalancerConfig) {
    cfg.webhook_retry_ms = 100;
    cfg.webhook_retry_max_ms = 400;
    cfg.webhook_timeout_ms = 2_000;
    // The receivers are on loopback, which webhooks may reach only when allowed.
    cfg.webhook_allow_networks = vec!["127.0.0.0/8".parse().expect("network")];
}

/// A pool `web` with probes `p` (version 1) and `other`, three registered nodes and
/// their agent clients.
struct Setup {
    client: Client,
    agents: Vec<(String, Client)>,
}

async fn setup(b: &TestBalancer) -> Setup {
    let client = b.client_with_pool("acme", "web").await;
    for name in ["p", "other"] {
        client
            .upload_probe("web", name, TRIVIAL, &quick(1000))
            .await
            .expect("upload");
    }
    let agents = b.nodes(&client, "web", 3).await;
    Setup { client, agents }
}

/// Uploads a new version of `p` (different settings make a new version).
async fn new_version(s: &Setup, interval_ms: u64) -> u32 {
    let up = s
        .client
        .upload_probe("web", "p", TRIVIAL, &quick(interval_ms))
        .await
        .expect("upload");
    assert!(up.created);
    up.probe.version
}

fn run(probe: &str, version: u32, outcome: Outcome, at: i64) -> Sample {
    let mut s = sample("web", probe, version, at);
    s.outcome = outcome;
    if outcome != Outcome::Ok {
        s.metrics.clear();
        s.message = format!("{} in probe {probe}", outcome.as_str());
        s.stderr = "thread 'main' panicked at src/lib.rs:42:5".into();
    }
    s
}

/// One round: every node reports `other` ok and `p` with `outcome(node index)`.
async fn round(s: &Setup, version: u32, mut outcome: impl FnMut(usize) -> Outcome) {
    let at = now_ms();
    for (i, (node, agent)) in s.agents.iter().enumerate() {
        let samples = vec![
            run("other", 1, Outcome::Ok, at),
            run("p", version, outcome(i), at),
        ];
        agent.report(&batch(node, samples)).await.expect("report");
    }
}

async fn detail(c: &Client) -> ProbeDetail {
    let v = c
        .get_value(&["v1", "pools", "web", "probes", "p"], &[])
        .await
        .expect("get probe");
    serde_json::from_value(v).expect("a ProbeDetail")
}

async fn notifications(c: &Client, since: i64) -> NotificationList {
    let v = c
        .get_value(&["v1", "notifications"], &[("since", &since.to_string())])
        .await
        .expect("notifications");
    serde_json::from_value(v).expect("a NotificationList")
}

async fn deliveries(c: &Client) -> WebhookDeliveries {
    let v = c
        .get_value(&["v1", "pools", "web", "webhook", "deliveries"], &[])
        .await
        .expect("deliveries");
    serde_json::from_value(v).expect("WebhookDeliveries")
}

async fn set_webhook(c: &Client, url: &str) {
    let v = c
        .send_value(
            reqwest::Method::PUT,
            &["v1", "pools", "web", "webhook"],
            &serde_json::json!({"url": url, "secret": SECRET}),
        )
        .await
        .expect("put webhook");
    let w: WebhookView = serde_json::from_value(v.clone()).expect("a WebhookView");
    assert_eq!(w.url, url);
    assert!(
        !v.to_string().contains(SECRET),
        "the secret is never echoed: {v}"
    );
}

/// Polls `f` every 50 ms for up to 20 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_version_is_prompted_once_and_a_fixed_one_resolves_it() {
    let b = TestBalancer::start_with(fast_retries).await;
    let s = setup(&b).await;
    let rx = receiver();
    set_webhook(&s.client, &rx.url()).await;
    // The secret is never shown back.
    let v = s
        .client
        .get_value(&["v1", "pools", "web", "webhook"], &[])
        .await
        .expect("get webhook");
    assert!(!v.to_string().contains(SECRET), "{v}");

    for _ in 0..5 {
        round(&s, 1, |_| Outcome::Ok).await;
    }
    let d = detail(&s.client).await;
    assert_eq!(d.reliability.state, ProbeState::Reliable);
    assert_eq!(d.probe.name, "p");

    // Version 2 panics on every node.
    let v2 = new_version(&s, 1500).await;
    let mut rounds = 0;
    let mut entered = false;
    while rounds < 10 {
        round(&s, v2, |_| Outcome::Trap).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if detail(&s.client).await.reliability.state == ProbeState::NeedsUpdate {
            entered = true;
            break;
        }
    }
    assert!(entered, "needs_update within 10 rounds (30 runs)");
    assert!(rounds <= 3, "4 runs suffice: took {rounds} rounds");
    // More failures raise nothing more.
    for _ in 0..5 {
        round(&s, v2, |_| Outcome::Trap).await;
    }
    let d = detail(&s.client).await;
    assert_eq!(d.reliability.state, ProbeState::NeedsUpdate);
    assert!(d.reliability.excluded);
    assert_eq!(d.reliability.version, v2);

    let first = eventually("one webhook", || async {
        let got = rx.received();
        (!got.is_empty()).then(|| got[0].clone())
    })
    .await;
    assert!(first.signature_ok, "a valid signature");
    assert_eq!(first.event, "probe.needs_update");
    let n = &first.body;
    assert_eq!(
        (n.kind, n.pool.as_str(), n.probe.as_str(), n.version),
        (NotificationKind::NeedsUpdate, "web", "p", v2)
    );
    let ev = &n.evidence;
    assert!(ev.outcomes.get("trap").copied().unwrap_or(0) >= 4, "{ev:?}");
    assert_eq!(ev.nodes_affected, vec!["n1", "n2", "n3"]);
    assert!(ev.failing_since_ms.is_some());
    assert!(ev.examples.iter().any(
        |e| e.message == "trap in probe p" && e.stderr.contains("panicked at src/lib.rs:42:5")
    ));

    let list = notifications(&s.client, 0).await;
    assert_eq!(list.notifications.len(), 1, "{list:?}");
    assert_eq!(list.notifications[0], first.body);
    assert_eq!(list.next_since, first.body.id);
    assert!(
        notifications(&s.client, list.next_since)
            .await
            .notifications
            .is_empty()
    );

    // Another client sees none of it.
    let other = b.client_with_pool("globex", "web").await;
    assert!(notifications(&other, 0).await.notifications.is_empty());

    let metrics = b.admin.metrics_text().await.expect("metrics");
    assert!(
        metrics.contains("plb_probe_reliability_state{") && metrics.contains("probe=\"p\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("plb_probes_excluded 1"), "{metrics}");

    // Version 3 works: resolved after enough reliable runs.
    let v3 = new_version(&s, 2000).await;
    let mut rounds = 0;
    while detail(&s.client).await.reliability.state != ProbeState::Reliable {
        assert!(rounds < 20, "resolved within 20 rounds");
        round(&s, v3, |_| Outcome::Ok).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let d = detail(&s.client).await;
    assert!(!d.reliability.excluded);
    assert_eq!(d.reliability.version, v3);
    let list = notifications(&s.client, first.body.id).await;
    assert_eq!(list.notifications.len(), 1, "{list:?}");
    let resolved = &list.notifications[0];
    assert_eq!(
        (resolved.kind, resolved.version, resolved.resolves),
        (NotificationKind::Resolved, v3, Some(first.body.id))
    );
    let second = eventually("the resolved webhook", || async {
        let got = rx.received();
        (got.len() >= 2).then(|| got[1].clone())
    })
    .await;
    assert!(second.signature_ok);
    assert_eq!(second.body.kind, NotificationKind::Resolved);
    assert_eq!(rx.received().len(), 2, "exactly one POST per notification");

    let d = deliveries(&s.client).await;
    assert_eq!(d.deliveries.len(), 2);
    for del in &d.deliveries {
        assert_eq!(del.status, "delivered");
        assert_eq!(del.attempts, 1);
        assert_eq!(del.log.len(), 1);
        assert_eq!(del.log[0].status, Some(204));
    }
    assert_eq!(first.delivery, d.deliveries[1].id.to_string());
    drop(rx);
    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_on_one_node_is_that_nodes_fault() {
    let b = TestBalancer::start_with(fast_retries).await;
    let s = setup(&b).await;
    for _ in 0..30 {
        round(&s, 1, |i| {
            if i == 1 {
                Outcome::Unhealthy
            } else {
                Outcome::Ok
            }
        })
        .await;
    }
    // Give the tracker task its turn.
    let d = eventually("90 runs tracked", || async {
        let d = detail(&s.client).await;
        (d.reliability.evidence.as_ref().map(|e| e.runs) == Some(90)).then_some(d)
    })
    .await;
    assert_eq!(d.reliability.state, ProbeState::Reliable);
    let ev = d.reliability.evidence.expect("evidence");
    assert_eq!((ev.probe_failures, ev.node_failures), (0, 30));
    assert!(notifications(&s.client, 0).await.notifications.is_empty());
    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_failure_rate_does_not_flap() {
    let b = TestBalancer::start_with(fast_retries).await;
    let s = setup(&b).await;
    let mut states = Vec::new();
    let mut k = 0;
    for _ in 0..60 {
        round(&s, 1, |_| {
            k += 1;
            if k % 8 == 0 {
                Outcome::Broken
            } else {
                Outcome::Ok
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        states.push(detail(&s.client).await.reliability.state);
    }
    let changes = states.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes <= 1, "{states:?}");
    assert!(
        states.iter().all(|s| *s != ProbeState::NeedsUpdate),
        "{states:?}"
    );
    assert!(notifications(&s.client, 0).await.notifications.is_empty());
    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_retried_while_the_receiver_is_down_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    fast_retries(&mut cfg);
    let running = plb_balancer::start(&cfg).await.expect("start");
    let b = TestBalancer {
        admin: Client::new(&running.url(), ADMIN).expect("client"),
        running,
        dir,
    };
    let s = setup(&b).await;
    // A port with nobody listening: every attempt fails to connect.
    let port = free_addr();
    let url = format!("http://{port}/hook");
    set_webhook(&s.client, &url).await;
    for _ in 0..4 {
        round(&s, 1, |_| Outcome::Trap).await;
    }
    let failed = eventually("three failed attempts", || async {
        let d = deliveries(&s.client).await;
        d.deliveries.first().filter(|d| d.log.len() >= 3).cloned()
    })
    .await;
    assert_eq!(failed.status, "pending");
    assert!(
        failed
            .log
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some()),
        "{failed:?}"
    );
    // Backoff: the gaps between attempts grow.
    let gaps: Vec<i64> = failed
        .log
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");

    // Restart on the same file; the receiver comes back on the same port.
    let TestBalancer { running, dir, .. } = b;
    running.stop().await.expect("stop");
    let rx = receiver_on(port);
    let running = plb_balancer::start(&cfg).await.expect("restart");
    let client = Client::new(&running.url(), s.client.token()).expect("client");
    let delivered = eventually("delivery after the restart", || async {
        let d = deliveries(&client).await;
        d.deliveries
            .first()
            .filter(|d| d.status == "delivered")
            .cloned()
    })
    .await;
    assert_eq!(delivered.id, failed.id);
    assert!(delivered.log.len() >= 4, "{delivered:?}");
    assert_eq!(delivered.log.last().and_then(|a| a.status), Some(204));
    let got = rx.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].signature_ok);
    assert_eq!(got[0].body.kind, NotificationKind::NeedsUpdate);
    // The restart replayed the samples without raising the prompt again.
    assert_eq!(notifications(&client, 0).await.notifications.len(), 1);
    let d = detail(&client).await;
    assert_eq!(d.reliability.state, ProbeState::NeedsUpdate);
    assert!(
        d.reliability.evidence.is_some_and(|e| e.runs >= 4),
        "windows warmed from stored samples"
    );
    drop(rx);
    running.stop().await.expect("stop");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_input_is_checked_and_scoped() {
    let b = TestBalancer::start().await;
    let client = b.client_with_pool("acme", "web").await;
    let url = format!("{}/v1/pools/web/webhook", b.url());
    let put = |body: serde_json::Value| {
        let url = url.clone();
        let token = client.token().to_string();
        async move {
            raw(
                &url,
                reqwest::Method::PUT,
                Some(&token),
                Some("application/json"),
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    assert_error(
        &put(serde_json::json!({"url": "ftp://x/y", "secret": SECRET})).await,
        400,
        "invalid_webhook",
        "http",
    );
    assert_error(
        &put(serde_json::json!({"url": "http://x/y", "secret": "short"})).await,
        400,
        "invalid_webhook",
        "secret",
    );
    assert_error(
        &put(serde_json::json!({"url": "http://x/y"})).await,
        422,
        "invalid_body",
        "secret",
    );
    let got = raw(&url, reqwest::Method::GET, Some(client.token()), None, None).await;
    assert_error(&got, 404, "not_found", "webhook");
    let other = b.client_with_pool("globex", "other").await;
    let got = raw(
        &url,
        reqwest::Method::PUT,
        Some(other.token()),
        Some("application/json"),
        Some(
            serde_json::json!({"url": "http://x/y", "secret": SECRET})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_error(&got, 404, "not_found", "web");
    assert_eq!(
        put(serde_json::json!({"url": "http://x/y", "secret": SECRET}))
            .await
            .0,
        200
    );
    assert_eq!(
        raw(
            &url,
            reqwest::Method::DELETE,
            Some(client.token()),
            None,
            None
        )
        .await
        .0,
        204
    );
    let got = raw(
        &format!("{}/v1/notifications?limit=0", b.url()),
        reqwest::Method::GET,
        Some(client.token()),
        None,
        None,
    )
    .await;
    assert_error(&got, 400, "invalid_request", "limit");
    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_probe_no_longer_feeds_the_engine_and_no_node_is_drained() {
    let b = TestBalancer::start_with(fast_retries).await;
    let s = setup(&b).await;
    for _ in 0..8 {
        round(&s, 1, |_| Outcome::Ok).await;
    }
    let v2 = new_version(&s, 1500).await;
    for _ in 0..3 {
        round(&s, v2, |_| Outcome::Trap).await;
    }
    eventually("needs_update", || async {
        (detail(&s.client).await.reliability.state == ProbeState::NeedsUpdate).then_some(())
    })
    .await;
    let excluded_at = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..5 {
        round(&s, v2, |_| Outcome::Trap).await;
    }
    // The engine saw `other` after the exclusion, and `p` only before it.
    let nodes = eventually("the engine's view of every node", || async {
        let v = s
            .client
            .get_value(&["v1", "pools", "web", "nodes"], &[])
            .await
            .expect("nodes");
        let nodes: plb_api::PoolNodes = serde_json::from_value(v).expect("PoolNodes");
        let fresh = nodes.nodes.iter().all(|n| {
            n.assessment.as_ref().is_some_and(|a| {
                a.probes
                    .iter()
                    .any(|p| p.probe == "other" && p.last_run_ms > excluded_at)
            })
        });
        fresh.then_some(nodes)
    })
    .await;
    for n in &nodes.nodes {
        let a = n.assessment.as_ref().expect("assessment");
        let p = a
            .probes
            .iter()
            .find(|p| p.probe == "p")
            .expect("p was seen before");
        assert!(p.last_run_ms < excluded_at, "{}: {p:?}", n.node);
        assert_ne!(a.state, plb_api::NodeState::Unhealthy, "{}: {a:?}", n.node);
    }
    // The node view and route reasons say which probe is left out.
    assert_eq!(nodes.excluded_probes, vec!["p".to_string()]);
    // Routing still spreads over every node.
    let mut chosen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let v = s
            .client
            .get_value(&["v1", "pools", "web", "route"], &[])
            .await
            .expect("route");
        let d: plb_api::RouteDecision = serde_json::from_value(v).expect("RouteDecision");
        assert!(
            d.reason.contains("probe(s) p need an update"),
            "{}",
            d.reason
        );
        chosen.insert(d.node);
    }
    assert_eq!(chosen.len(), 3, "{chosen:?}");
    // The samples themselves are kept.
    assert_eq!(
        b.count("SELECT COUNT(*) FROM samples WHERE probe = 'p' AND outcome = 'trap'"),
        24
    );
    b.running.stop().await.expect("stop");
}
