//! Per-tenant limits against a real balancer on loopback over a real store (each test on
//! SQLite and on PostgreSQL): fair
//! upload admission (one tenant's flood of uploads does not hold another's), a bounded
//! reader pool under a flood of unknown tokens, webhook delivery that one hanging
//! endpoint cannot hold up for other tenants, per-client quotas, and the garbage
//! collection of modules no probe version uses.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plb_probe_artifacts::{CPU_BENCH, MISBEHAVE, TCP_CONNECT, TRIVIAL};
use plb_testkit::{WebhookReceiver, loopback, now_ms};

use crate::common::*;

/// A raw probe upload: status, `Retry-After` and how long it took.
async fn put_wasm(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    pool: &str,
    name: &str,
    wasm: &'static [u8],
) -> (u16, Option<String>, serde_json::Value, Duration) {
    let started = Instant::now();
    let resp = http
        .put(format!("{base}/v1/pools/{pool}/probes/{name}"))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, retry, body, started.elapsed())
}

/// One tenant uploading many probes at once takes at most one compile slot and a short
/// queue; the rest are told to come back (429 with `Retry-After`), so another tenant's
/// upload is compiled beside them at once instead of after all of them.
async fn a_flood_of_uploads_from_one_tenant_does_not_hold_up_another(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let a = b.client_with_pool("flooder", "web").await;
    let other = b.client_with_pool("bystander", "web").await;
    let http = reqwest::Client::new();
    let base = b.url();
    // A compile on its own, twice (the first warms the runtime up).
    let mut solo = Duration::ZERO;
    for i in 0..2 {
        let (s, _, body, took) = put_wasm(
            &http,
            &base,
            other.token(),
            "web",
            &format!("solo{i}"),
            MISBEHAVE,
        )
        .await;
        assert_eq!(s, 201, "{body}");
        solo = took;
    }
    const FLOOD: usize = 24;
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let (http, base, token) = (http.clone(), base.clone(), a.token().to_string());
        flood.push(tokio::spawn(async move {
            put_wasm(&http, &base, &token, "web", &format!("p{i}"), MISBEHAVE).await
        }));
    }
    // Every upload of the flood is read and waiting by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, body, took) = put_wasm(&http, &base, other.token(), "web", "mine", MISBEHAVE).await;
    assert_eq!(s, 201, "{body}");
    let mut statuses = Vec::new();
    for f in flood {
        let (s, retry, body, _) = f.await.expect("upload task");
        if s == 429 {
            assert_eq!(body["error"]["code"], "too_many_uploads", "{body}");
            let secs: u64 = retry
                .as_deref()
                .and_then(|r| r.parse().ok())
                .expect("429 carries Retry-After in seconds");
            assert!(secs >= 1, "{secs}");
        } else {
            assert_eq!(s, 201, "{body}");
        }
        statuses.push(s);
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert!(
        (1..=4).contains(&created),
        "one in progress and a short queue per tenant, the rest refused: {statuses:?}"
    );
    assert!(
        took < solo * 4 + Duration::from_millis(750),
        "the bystander's upload took {took:?} beside the flood (one compile alone: {solo:?})"
    );
}

/// File descriptors of this process open on `db` (one per SQLite connection).
fn open_fds(db: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == db))
        .count()
}

/// A flood of requests with unknown tokens, each a token lookup in the store, opens no
/// more read connections than `--db-readers`, and a known client is still served.
async fn unknown_tokens_do_not_open_read_connections_without_bound(backend: Backend) {
    let b = TestBalancer::start_with_on(backend, |c| c.db_readers = 2).await;
    let acme = b.client_with_pool("acme", "web").await;
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = match &b.store_db() {
        // SQLite: file descriptors on the database file, one per connection.
        TestDb::Sqlite(path) => {
            let db = std::fs::canonicalize(path).expect("db path");
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(open_fds(&db), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        }
        // PostgreSQL: the server's sessions of the balancer's reader pool.
        TestDb::Postgres(url) => {
            let (peak, stop, url) = (Arc::clone(&peak), Arc::clone(&stop), url.clone());
            let rt = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                rt.block_on(async move {
                    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .expect("connect");
                    tokio::spawn(conn);
                    while !stop.load(Ordering::Relaxed) {
                        let n: i64 = c
                            .query_one(
                                "SELECT count(*) FROM pg_stat_activity
                                 WHERE datname = current_database()
                                   AND application_name = 'plb-balancer reader'",
                                &[],
                            )
                            .await
                            .expect("sessions")
                            .get(0);
                        peak.fetch_max(usize::try_from(n).unwrap_or(0), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                })
            })
        }
    };
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (http, url) = (http.clone(), format!("{}/v1/pools", b.url()));
        tasks.push(tokio::spawn(async move {
            let token = format!("plbc_{:064x}", i + 1);
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let pools = acme
        .pools()
        .await
        .expect("a known client is served during the flood");
    assert_eq!(pools.len(), 1);
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("answered"), 401);
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    let peak = peak.load(Ordering::Relaxed);
    // SQLite: two readers and the writer; PostgreSQL: two reader sessions.
    let (most, least) = match backend {
        Backend::Sqlite => (3, 2),
        Backend::Postgres => (2, 1),
    };
    assert!(
        peak <= most,
        "{peak} connections were open on the database at once"
    );
    assert!(peak >= least, "the watcher saw the connections ({peak})");
}

async fn set_webhook(c: &plb_client::Client, url: &str) {
    c.send_value(
        reqwest::Method::PUT,
        &["v1", "pools", "web", "webhook"],
        &serde_json::json!({"url": url, "secret": "a-webhook-secret-of-32-bytes-xyz"}),
    )
    .await
    .expect("put webhook");
}

/// The id of the client behind `token` (the admin creates it; tests read it back).
fn client_id(b: &TestBalancer, name: &str) -> i64 {
    b.count(&format!("SELECT id FROM clients WHERE name = '{name}'"))
}

/// Tenant A's webhook never answers; tenant B's notification is delivered within a
/// couple of seconds anyway (deliveries run per tenant, one in flight each).
async fn a_hanging_webhook_does_not_delay_another_tenants_delivery(backend: Backend) {
    let b = TestBalancer::start_with_on(backend, |c| {
        c.webhook_timeout_ms = 10_000;
        c.webhook_allow_networks = vec!["127.0.0.0/8".parse().expect("network")];
    })
    .await;
    let a = b.client_with_pool("hangs", "web").await;
    let ok = b.client_with_pool("answers", "web").await;
    let silent = WebhookReceiver::never_answering(loopback(0));
    let rx = WebhookReceiver::start(loopback(0), |_, _| true);
    set_webhook(&a, &silent.url()).await;
    set_webhook(&ok, &rx.url()).await;
    let (ida, idb) = (client_id(&b, "hangs"), client_id(&b, "answers"));
    let store = &b.running.state.store;
    for to in 2..5 {
        store
            .record_scaling(scaling(ida, "web", to))
            .await
            .expect("a's notification");
    }
    // A's first delivery is in flight (and hangs) before B's notification exists.
    b.running.state.reliability.wake.notify_one();
    let t0 = Instant::now();
    while silent.received().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a's delivery never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store
        .record_scaling(scaling(idb, "web", 3))
        .await
        .expect("b's notification");
    b.running.state.reliability.wake.notify_one();
    let t0 = Instant::now();
    while rx.received().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "b's delivery waits behind a's hanging endpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, "pool.scaling");
    // One of A's deliveries in flight at a time, not all three.
    assert_eq!(silent.received().len(), 1);
}

/// Modules rows (and bytes) stored.
fn modules(b: &TestBalancer) -> (i64, i64) {
    (
        b.count("SELECT count(*) FROM modules"),
        b.count("SELECT coalesce(sum(length(bytes)), 0) FROM modules"),
    )
}

/// Deleting a probe removes its versions and every module no other version uses (a
/// module another tenant uses too stays); retention removes superseded versions whose
/// samples have aged out, with their modules.
async fn modules_no_version_uses_are_collected(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let acme = b.client_with_pool("acme", "web").await;
    let other = b.client_with_pool("other", "web").await;
    acme.upload_probe("web", "p", TRIVIAL, &quick(1000))
        .await
        .expect("v1");
    acme.upload_probe("web", "p", CPU_BENCH, &quick(1000))
        .await
        .expect("v2");
    acme.upload_probe("web", "q", MISBEHAVE, &quick(1000))
        .await
        .expect("q");
    other
        .upload_probe("web", "shared", MISBEHAVE, &quick(1000))
        .await
        .expect("other's");
    assert_eq!(modules(&b).0, 3);

    // A deleted probe's versions go, and its modules with them unless used elsewhere.
    acme.delete_probe("web", "p").await.expect("delete p");
    assert_eq!(b.count("SELECT count(*) FROM probe_versions pv JOIN probes pr ON pr.id = pv.probe_id WHERE pr.name = 'p'"), 0);
    let (n, bytes) = modules(&b);
    assert_eq!(n, 1, "TRIVIAL and CPU_BENCH were only p's");
    assert_eq!(bytes, MISBEHAVE.len() as i64);
    acme.delete_probe("web", "q").await.expect("delete q");
    assert_eq!(modules(&b).0, 1, "the other tenant still uses MISBEHAVE");
    // The probe row stays (its version numbering and late samples); re-uploading
    // continues the numbering.
    let up = acme
        .upload_probe("web", "p", TRIVIAL, &quick(1000))
        .await
        .expect("again");
    assert_eq!(up.probe.version, 3);

    // A superseded version stays while its samples may still be raw, then retention
    // removes it and its module.
    acme.upload_probe("web", "p", CPU_BENCH, &quick(1000))
        .await
        .expect("v4");
    assert_eq!(modules(&b).0, 3);
    let st = &b.running.state;
    let r = plb_balancer::retention::Retention::from(&config(b.dir.path()));
    plb_balancer::retention::pass(st.store.as_ref(), &st.metrics, r, now_ms())
        .await
        .expect("pass now");
    assert_eq!(modules(&b).0, 3, "superseded just now: kept");
    let later = now_ms() + 25 * 3600 * 1000;
    plb_balancer::retention::pass(st.store.as_ref(), &st.metrics, r, later)
        .await
        .expect("pass a day later");
    let (n, bytes) = modules(&b);
    assert_eq!(n, 2, "TRIVIAL (v3's) is collected");
    assert_eq!(bytes, (CPU_BENCH.len() + MISBEHAVE.len()) as i64);
    let active = acme.probe("web", "p").await.expect("active");
    assert_eq!(active.version, 4);
    assert_eq!(
        b.count("SELECT count(*) FROM probe_versions"),
        2,
        "p's v4 and the other tenant's probe"
    );
    // The agent path still serves the active module.
    let agent = b.agent(&acme, &["web"]).await;
    let m = agent.module(&active.sha256).await.expect("module");
    assert_eq!(m.len(), CPU_BENCH.len());
}

/// Every quota, set small, refuses the request that would pass it with 403
/// `quota_exceeded` naming the quota and its value; freeing some lets the next one in,
/// and another client's quotas are its own.
async fn each_quota_refuses_past_its_value(backend: Backend) {
    let module_quota = (TRIVIAL.len() + CPU_BENCH.len()) as u64;
    let b = TestBalancer::start_with_on(backend, |c| {
        c.quota_pools = 2;
        c.quota_agent_tokens = 3;
        c.quota_nodes = 2;
        c.quota_probes = 2;
        c.quota_probe_versions = 2;
        c.quota_module_bytes = module_quota;
    })
    .await;
    let quota = |e: &plb_client::ClientError, name: &str, value: u64| {
        assert_api_error(
            e,
            403,
            "quota_exceeded",
            &format!("quota `{name}` exceeded: at most {value} "),
        );
    };

    // Pools per client.
    let acme = b.client_with_pool("acme", "web").await;
    acme.create_pool("api", 100.0).await.expect("second pool");
    let e = acme
        .create_pool("third", 100.0)
        .await
        .expect_err("third pool");
    quota(&e, "pools", 2);
    let other = b.client_with_pool("other", "web").await;
    other
        .create_pool("api", 100.0)
        .await
        .expect("another client's quota is its own");
    // The raw answer is the one error shape.
    let got = raw(
        &format!("{}/v1/pools", b.url()),
        reqwest::Method::POST,
        Some(acme.token()),
        Some("application/json"),
        Some(br#"{"name":"x","latency_slo_ms":100}"#.to_vec()),
    )
    .await;
    assert_error(
        &got,
        403,
        "quota_exceeded",
        "quota `pools` exceeded: at most 2 pools per client",
    );

    // Agent tokens per client (live ones), nodes per pool.
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(b.agent(&acme, &["web"]).await);
    }
    let e = acme
        .create_agent_token(&["web"], None)
        .await
        .expect_err("fourth token");
    quota(&e, "agent_tokens", 3);
    for (i, a) in agents.iter().take(2).enumerate() {
        a.register(&register(
            &format!("n{i}"),
            &format!("127.0.0.1:{}", 9000 + i),
            &["web"],
        ))
        .await
        .expect("register");
    }
    let e = agents[2]
        .register(&register("n2", "127.0.0.1:9002", &["web"]))
        .await
        .expect_err("third node");
    quota(&e, "nodes", 2);
    assert_eq!(
        b.count("SELECT count(*) FROM nodes"),
        2,
        "the refused registration left nothing"
    );
    agents[0]
        .register(&register("n0", "127.0.0.1:9000", &["web"]))
        .await
        .expect("re-registering a member is no new node");
    let third = b.count("SELECT max(id) FROM agent_tokens");
    acme.revoke_agent_token(third).await.expect("revoke");
    acme.create_agent_token(&["web"], None)
        .await
        .expect("a token again after a revocation");

    // Active probes per pool.
    acme.upload_probe("web", "p1", TRIVIAL, &quick(1000))
        .await
        .expect("p1");
    acme.upload_probe("web", "p2", TRIVIAL, &quick(1000))
        .await
        .expect("p2");
    let e = acme
        .upload_probe("web", "p3", TRIVIAL, &quick(1000))
        .await
        .expect_err("p3");
    quota(&e, "probes", 2);
    acme.delete_probe("web", "p2").await.expect("delete p2");
    acme.upload_probe("web", "p3", CPU_BENCH, &quick(1000))
        .await
        .expect("p3 after a delete");

    // Stored versions per probe; an unchanged upload is no version.
    acme.upload_probe("web", "p1", TRIVIAL, &quick(2000))
        .await
        .expect("p1 v2");
    let e = acme
        .upload_probe("web", "p1", TRIVIAL, &quick(3000))
        .await
        .expect_err("p1 v3");
    quota(&e, "probe_versions", 2);
    let same = acme
        .upload_probe("web", "p1", TRIVIAL, &quick(2000))
        .await
        .expect("unchanged");
    assert!(!same.created);

    // Module bytes per client: TRIVIAL (p1's) and CPU_BENCH (p3's) fill it; a version of
    // a module the client already stores costs nothing, a new module does not fit.
    acme.upload_probe("web", "p3", TRIVIAL, &quick(1000))
        .await
        .expect("a module it has");
    acme.delete_probe("web", "p1")
        .await
        .expect("delete p1: TRIVIAL stays, p3 uses it");
    let e = acme
        .upload_probe("web", "p4", TCP_CONNECT, &quick(1000))
        .await
        .expect_err("a new one");
    quota(&e, "module_bytes", module_quota);
    let e = acme.probe("web", "p4").await.expect_err("nothing stored");
    assert_eq!(e.status(), Some(404));
    // Deleting frees the module bytes its versions held.
    acme.delete_probe("web", "p3").await.expect("delete p3");
    acme.upload_probe("web", "p4", TCP_CONNECT, &quick(1000))
        .await
        .expect("fits now");
}

on_each_backend!(
    a_flood_of_uploads_from_one_tenant_does_not_hold_up_another,
    unknown_tokens_do_not_open_read_connections_without_bound,
    a_hanging_webhook_does_not_delay_another_tenants_delivery,
    modules_no_version_uses_are_collected,
    each_quota_refuses_past_its_value,
);
