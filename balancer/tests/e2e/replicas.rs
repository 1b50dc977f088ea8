//! Replicas on one PostgreSQL database (issue 16): exactly one leads, chosen through
//! the database, and only it delivers the webhook outbox (a notification is POSTed once,
//! not once per replica); when the leader stops, another replica leads within 10 s with
//! a higher epoch and delivers what follows; a replica started again joins as a
//! follower. `/healthz` and `/metrics` say which replica leads. A balancer on SQLite is
//! alone and always leads.

use std::time::{Duration, Instant};

use plb_api::Health;
use plb_testkit::{WebhookReceiver, loopback, metric_sum, now_ms, parse_metrics};

use crate::common::*;

async fn health(b: &TestBalancer) -> Health {
    reqwest::get(format!("{}/healthz", b.url()))
        .await
        .expect("healthz")
        .json()
        .await
        .expect("health json")
}

async fn leader_gauge(b: &TestBalancer) -> f64 {
    let text = b.admin.metrics_text().await.expect("metrics");
    metric_sum(&parse_metrics(&text), "plb_leader", &[])
}

async fn replica(db: &TestDb, name: &str) -> TestBalancer {
    let name = name.to_string();
    TestBalancer::start_with_db(db.clone(), move |c| {
        c.replica = Some(name);
        c.webhook_allow_networks = vec!["127.0.0.0/8".parse().expect("network")];
        c.webhook_retry_ms = 200;
    })
    .await
}

/// Waits for `n` deliveries, then checks no more come within `settle`.
async fn exactly(rx: &WebhookReceiver, n: usize, within: Duration, settle: Duration) {
    let t0 = Instant::now();
    while rx.received().len() < n {
        assert!(
            t0.elapsed() < within,
            "{} of {n} deliveries after {within:?}",
            rx.received().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(settle).await;
    assert_eq!(rx.received().len(), n, "a notification was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_leads_delivers_once_and_the_lead_moves_when_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let a = replica(&db, "a").await;
    let b = replica(&db, "b").await;

    // Exactly one leads, within a couple of election rounds.
    let t0 = Instant::now();
    let (ha, hb) = loop {
        let (ha, hb) = (health(&a).await, health(&b).await);
        if ha.leader != hb.leader {
            break (ha, hb);
        }
        assert!(!(ha.leader && hb.leader), "two leaders: {ha:?} {hb:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no leader: {ha:?} {hb:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((ha.replica.as_str(), hb.replica.as_str()), ("a", "b"));
    let (leader, follower) = if ha.leader { (a, b) } else { (b, a) };
    let epoch = health(&leader).await.leader_epoch;
    assert!(epoch >= 1);
    assert_eq!(health(&follower).await.leader_epoch, 0);
    assert_eq!(leader_gauge(&leader).await, 1.0);
    assert_eq!(leader_gauge(&follower).await, 0.0);

    // A notification is delivered once, whichever replica's deliverer is woken.
    let acme = follower.client_with_pool("acme", "web").await;
    let rx = WebhookReceiver::start(loopback(0), |_, _| true);
    acme.send_value(
        reqwest::Method::PUT,
        &["v1", "pools", "web", "webhook"],
        &serde_json::json!({"url": rx.url(), "secret": "a-webhook-secret-of-32-bytes-xyz"}),
    )
    .await
    .expect("put webhook");
    let client_id = follower.count("SELECT id FROM clients WHERE name = 'acme'");
    follower
        .running
        .state
        .store
        .record_scaling(scaling(client_id, "web", 2))
        .await
        .expect("notification");
    for r in [&leader, &follower] {
        r.running.state.reliability.wake.notify_one();
    }
    exactly(&rx, 1, Duration::from_secs(5), Duration::from_secs(2)).await;

    // The leader stops: the follower leads within 10 s, in a later epoch, and delivers.
    let stopped_at = Instant::now();
    leader.running.stop().await.expect("stop");
    loop {
        let h = health(&follower).await;
        if h.leader {
            assert!(h.leader_epoch > epoch, "{h:?} after epoch {epoch}");
            break;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "no new leader 10 s after the leader stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the lead moved in {:?}", stopped_at.elapsed());
    follower
        .running
        .state
        .store
        .record_scaling(scaling(client_id, "web", 3))
        .await
        .expect("notification");
    follower.running.state.reliability.wake.notify_one();
    exactly(&rx, 2, Duration::from_secs(10), Duration::from_secs(1)).await;

    // A replica started again joins as a follower.
    let again = replica(&db, "a-again").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!health(&again).await.leader);
    assert!(health(&follower).await.leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_on_sqlite_always_leads() {
    let b = TestBalancer::start_with(|c| c.replica = Some("solo".into())).await;
    let h = health(&b).await;
    assert_eq!(
        (h.replica.as_str(), h.leader, h.leader_epoch),
        ("solo", true, 1)
    );
    assert_eq!(leader_gauge(&b).await, 1.0);
}

/// Each replica's engine learns from the samples the other stores (the tail of the
/// samples table): a report taken by `a` reaches `b`'s engine within a second, and
/// `a`'s engine sees it once (its own samples are not fed to it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sample_stored_through_one_replica_reaches_the_other_replicas_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let a = replica(&db, "a").await;
    let b = replica(&db, "b").await;
    let client = a.client_with_pool("acme", "web").await;
    let agent = a.agent(&client, &["web"]).await;
    agent
        .register(&register("n1", "127.0.0.1:9", &["web"]))
        .await
        .expect("register");
    let on_b = plb_client::Client::new(&b.url(), client.token()).expect("client on b");
    let last_seen = |nodes: &plb_api::PoolNodes| {
        nodes
            .nodes
            .iter()
            .find(|n| n.node == "n1")
            .and_then(|n| n.assessment.as_ref())
            .and_then(|x| x.last_seen_ms)
    };
    let mut lags = Vec::new();
    // Report 0 can also wait for b's engine to assess the new node at all (once, in a
    // suite run on two busy cores, b showed no sample for it a second after a took the
    // first; the cause is read from that, not traced): 10 s for it, then 1 s for each
    // of the five after.
    for k in 0..6 {
        let bound = Duration::from_secs(if k == 0 { 10 } else { 1 });
        let t = now_ms();
        agent
            .report(&plb_api::ReportBatch {
                node: "n1".into(),
                samples: vec![sample("web", plb_api::NODE_SAMPLER_PROBE, 0, t)],
                dropped: 0,
            })
            .await
            .expect("report to a");
        let acked = Instant::now();
        loop {
            let nodes = on_b.pool_nodes("web").await.expect("b's nodes");
            if last_seen(&nodes) == Some(t) {
                break;
            }
            assert!(
                acked.elapsed() < bound,
                "report {k}: b's engine had not seen it {bound:?} after a acknowledged it \
                 (last seen {:?}, sample at {t})",
                last_seen(&nodes)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if k > 0 {
            lags.push(acked.elapsed().as_millis());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // a's own engine has it too (from its own ingest), and b's tail did not feed b's
    // samples back to it: nothing was refused as out of order or twice.
    let on_a = a.admin.with_token(client.token().to_string());
    assert_eq!(
        last_seen(&on_a.pool_nodes("web").await.expect("a's nodes")),
        last_seen(&on_b.pool_nodes("web").await.expect("b's nodes"))
    );
    eprintln!("b's engine saw a's samples {lags:?} ms after a acknowledged them");
    b.running.stop().await.expect("stop b");
    a.running.stop().await.expect("stop a");
}

/// Probe reliability across replicas: every replica tracks every sample (its tail feeds
/// its trackers as its own ingest does), only the leader stores transitions and raises
/// notifications. A broken version reported only through the follower is flagged on
/// both replicas and prompted once; when the leader stops, the replica that takes over
/// raises the fixed version's `resolved`, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe_reliability_is_tracked_on_every_replica_and_raised_once_by_the_leader() {
    use plb_api::{NotificationKind, NotificationList, Outcome, ProbeDetail, ProbeState};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let a = replica(&db, "a").await;
    let t0 = Instant::now();
    while !health(&a).await.leader {
        assert!(t0.elapsed() < Duration::from_secs(5), "a never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = replica(&db, "b").await;
    let client = a.client_with_pool("acme", "web").await;
    let on_b = plb_client::Client::new(&b.url(), client.token()).expect("client on b");
    let agents = b.nodes(&on_b, "web", 3).await;
    let upload = |interval: u64| {
        let on_b = on_b.clone();
        async move {
            on_b.upload_probe("web", "p", plb_probe_artifacts::TRIVIAL, &quick(interval))
                .await
                .expect("upload")
                .probe
                .version
        }
    };
    let round = |version: u32, outcome: Outcome| {
        let agents = &agents;
        async move {
            let at = now_ms();
            for (node, agent) in agents {
                let mut s = sample("web", "p", version, at);
                s.outcome = outcome;
                if outcome != Outcome::Ok {
                    s.metrics.clear();
                    s.message = "trap in probe p".into();
                }
                agent
                    .report(&batch(node, vec![s]))
                    .await
                    .expect("report to b");
            }
        }
    };
    let state = |c: plb_client::Client| async move {
        let v = c
            .get_value(&["v1", "pools", "web", "probes", "p"], &[])
            .await
            .expect("probe");
        serde_json::from_value::<ProbeDetail>(v)
            .expect("a ProbeDetail")
            .reliability
    };
    let prompts = |c: plb_client::Client| async move {
        let v = c
            .get_value(&["v1", "notifications"], &[("since", "0")])
            .await
            .expect("notifications");
        let list: NotificationList = serde_json::from_value(v).expect("a NotificationList");
        list.notifications
            .iter()
            .map(|n| (n.kind, n.version))
            .collect::<Vec<_>>()
    };
    let v1 = upload(1000).await;
    for _ in 0..3 {
        round(v1, Outcome::Ok).await;
    }
    let v2 = upload(1500).await;
    for _ in 0..5 {
        round(v2, Outcome::Trap).await;
    }
    // Both replicas flag it: a (the leader) only from its tail of b's ingest.
    let t0 = Instant::now();
    for c in [client.clone(), on_b.clone()] {
        loop {
            let r = state(c.clone()).await;
            if r.state == ProbeState::NeedsUpdate && r.version == v2 {
                assert!(r.excluded);
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "not flagged: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        prompts(client.clone()).await,
        vec![(NotificationKind::NeedsUpdate, v2)],
        "one prompt, raised by the leader"
    );

    // The leader stops; b leads and raises the fix's `resolved` once.
    a.running.stop().await.expect("stop a");
    let t0 = Instant::now();
    while !health(&b).await.leader {
        assert!(t0.elapsed() < Duration::from_secs(10), "b never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v3 = upload(2000).await;
    let t0 = Instant::now();
    loop {
        round(v3, Outcome::Ok).await;
        if state(on_b.clone()).await.state == ProbeState::Reliable {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kinds: Vec<_> = prompts(on_b.clone())
        .await
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        kinds,
        vec![NotificationKind::NeedsUpdate, NotificationKind::Resolved],
        "the fix resolved once"
    );
    b.running.stop().await.expect("stop b");
}
