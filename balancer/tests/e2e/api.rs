//! The REST API against a real balancer on a loopback port and a real store: the happy
//! paths of every resource, and every kind of bad input answered with a 4xx JSON error
//! naming the problem, with nothing half-written. The tests that reach the store run on
//! both backends (`sqlite::` and `postgres::`), the isolation tests among them.

use std::sync::{Arc, Mutex};

use crate::common::*;
use plb_api::ProbeSettings;
use plb_balancer::{CommittedBatch, IngestObserver};
use plb_client::Fetched;
use plb_probe_artifacts::{CPU_BENCH, OTHER_WORLD, TRIVIAL};
use plb_testkit::now_ms;
use reqwest::Method;

async fn clients_pools_and_tokens(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let acme = b.client_with_pool("acme", "web").await;
    acme.create_pool("api", 50.0).await.expect("second pool");
    let pools = acme.pools().await.expect("list");
    let names: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    let web = acme.pool("web").await.expect("get");
    assert_eq!((web.latency_slo_ms, web.nodes, web.probes), (200.0, 0, 0));

    // A duplicate name is a conflict; bad names and objectives are named.
    let e = acme.create_pool("web", 1.0).await.expect_err("dup");
    assert_api_error(&e, 409, "conflict", "`web`");
    let e = acme.create_pool("a b", 1.0).await.expect_err("name");
    assert_api_error(&e, 400, "invalid_name", "pool name");
    let e = acme.create_pool("x", -3.0).await.expect_err("slo");
    assert_api_error(&e, 400, "invalid_settings", "latency_slo_ms");

    // Only the admin creates clients; a client token cannot.
    let e = acme.create_client("evil").await.expect_err("not admin");
    assert_api_error(&e, 403, "forbidden", "admin");
    // The admin token is not a client: it owns no pools.
    let e = b.admin.pools().await.expect_err("admin has no pools");
    assert_api_error(&e, 403, "forbidden", "client");
    assert_eq!(b.count("SELECT count(*) FROM pools"), 2);
}

async fn missing_wrong_and_revoked_tokens_are_401(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let url = format!("{}/v1/pools", b.url());
    let got = raw(&url, Method::GET, None, None, None).await;
    assert_error(&got, 401, "unauthorized", "Authorization");
    let got = raw(&url, Method::GET, Some("plbc_nope"), None, None).await;
    assert_error(&got, 401, "unauthorized", "unknown or revoked");
    let got = raw(&url, Method::GET, Some("garbage"), None, None).await;
    assert_error(&got, 401, "unauthorized", "unknown or revoked");

    let created = b.admin.create_client("acme").await.expect("client");
    let acme = b.admin.with_token(&created.token);
    acme.create_pool("web", 100.0).await.expect("pool");
    let agent_token = acme
        .create_agent_token(&["web"], None)
        .await
        .expect("agent token");
    let agent = b.admin.with_token(&agent_token.token);
    agent
        .register(&register("n1", "127.0.0.1:1", &["web"]))
        .await
        .expect("register");

    // Revoking the agent token stops it at once (the token cache is emptied).
    acme.revoke_agent_token(agent_token.id)
        .await
        .expect("revoke agent");
    let e = agent.assignments("n1", None).await.expect_err("revoked");
    assert_api_error(&e, 401, "unauthorized", "revoked");
    let e = acme
        .revoke_agent_token(agent_token.id)
        .await
        .expect_err("twice");
    assert_api_error(&e, 404, "not_found", "agent token");

    // Revoking a client revokes its token and its agent tokens.
    let t2 = acme.create_agent_token(&["web"], None).await.expect("t2");
    let agent2 = b.admin.with_token(&t2.token);
    agent2
        .register(&register("n1", "127.0.0.1:1", &["web"]))
        .await
        .expect("a new token takes over the node of a revoked one");
    acme.pools().await.expect("works before");
    b.admin.revoke_client(created.id).await.expect("revoke");
    let e = acme.pools().await.expect_err("revoked client");
    assert_api_error(&e, 401, "unauthorized", "revoked");
    let e = agent2
        .assignments("n1", None)
        .await
        .expect_err("its agents too");
    assert_api_error(&e, 401, "unauthorized", "revoked");
    // Tokens are stored hashed, never in the clear.
    assert_eq!(
        b.count(&format!(
            "SELECT count(*) FROM clients WHERE token_hash = '{}' OR CAST(token_hash AS TEXT) = '{}'",
            created.token, created.token
        )),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_bodies_get_the_error_shape() {
    let b = TestBalancer::start().await;
    let acme = b.client_with_pool("acme", "web").await;
    let created = b.admin.create_client("tok").await.expect("client");
    let url = format!("{}/v1/pools", b.url());
    let t = Some(created.token.as_str());
    let json = Some("application/json");

    let got = raw(
        &url,
        Method::POST,
        t,
        json,
        Some(b"{\"name\": \"x\",".to_vec()),
    )
    .await;
    assert_error(&got, 400, "invalid_json", "malformed JSON");
    let got = raw(
        &url,
        Method::POST,
        t,
        Some("text/plain"),
        Some(b"{}".to_vec()),
    )
    .await;
    assert_error(&got, 415, "unsupported_media_type", "application/json");
    let got = raw(&url, Method::POST, t, None, Some(b"{}".to_vec())).await;
    assert_error(&got, 415, "unsupported_media_type", "application/json");
    let got = raw(&url, Method::POST, t, json, Some(Vec::new())).await;
    assert_error(&got, 400, "empty_body", "empty");
    let got = raw(&url, Method::POST, t, json, None).await;
    assert_error(&got, 400, "empty_body", "empty");
    let got = raw(
        &url,
        Method::POST,
        t,
        json,
        Some(br#"{"name":"x","latency_slo_ms":5,"bogus":1}"#.to_vec()),
    )
    .await;
    assert_error(&got, 422, "invalid_body", "bogus");
    let got = raw(
        &url,
        Method::POST,
        t,
        json,
        Some(br#"{"name":"x"}"#.to_vec()),
    )
    .await;
    assert_error(&got, 422, "invalid_body", "latency_slo_ms");
    // Nothing was created by any of them.
    assert_eq!(b.count("SELECT count(*) FROM pools"), 1);
    drop(acme);

    // Unknown routes and methods have the same shape.
    let got = raw(&format!("{}/v2/nope", b.url()), Method::GET, t, None, None).await;
    assert_error(&got, 404, "not_found", "endpoint");
    let got = raw(&url, Method::PATCH, t, None, None).await;
    assert_error(&got, 405, "method_not_allowed", "method");
    let got = raw(
        &format!("{}/v1/clients/abc", b.url()),
        Method::DELETE,
        Some(ADMIN),
        None,
        None,
    )
    .await;
    assert_error(&got, 400, "invalid_path", "");

    // A body past the JSON limit is 413 with the shape.
    let small = TestBalancer::start_with(|c| c.max_json_bytes = 2048).await;
    let c = small.admin.create_client("c").await.expect("client");
    let big = format!(r#"{{"name":"{}","latency_slo_ms":5}}"#, "x".repeat(4096));
    let got = raw(
        &format!("{}/v1/pools", small.url()),
        Method::POST,
        Some(&c.token),
        json,
        Some(big.into_bytes()),
    )
    .await;
    assert_error(&got, 413, "payload_too_large", "larger");
}

fn upload_url(b: &TestBalancer, pool: &str, name: &str, query: &str) -> String {
    format!("{}/v1/pools/{pool}/probes/{name}?{query}", b.url())
}

async fn probe_uploads_version_and_reject_bad_input(backend: Backend) {
    let b = TestBalancer::start_with_on(backend, |c| c.max_upload_bytes = 150_000).await;
    let acme = b.client_with_pool("acme", "web").await;

    let first = acme
        .upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    assert!(first.created);
    assert_eq!(first.probe.version, 1);
    assert_eq!(first.probe.size, TRIVIAL.len() as u64);
    assert_eq!(first.probe.settings.interval_ms, 1000);
    assert_eq!(first.probe.sha256.len(), 64);
    // The same bytes and settings again: nothing changes.
    let again = acme
        .upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("again");
    assert!(!again.created);
    assert_eq!(again.probe.version, 1);
    // New settings: version 2, same module row.
    let v2 = acme
        .upload_probe("web", "ping", TRIVIAL, &quick(2000))
        .await
        .expect("v2");
    assert!(v2.created);
    assert_eq!(v2.probe.version, 2);
    assert_eq!(b.count("SELECT count(*) FROM modules"), 1);
    assert_eq!(b.count("SELECT count(*) FROM probe_versions"), 2);

    let state = || {
        (
            b.count("SELECT count(*) FROM modules"),
            b.count("SELECT count(*) FROM probe_versions"),
            b.count("SELECT coalesce(max(version), 0) FROM probes"),
        )
    };
    let before = state();
    let t = Some(acme.token());
    let wasm = Some("application/wasm");

    // Not wasm at all.
    let got = raw(
        &upload_url(&b, "web", "ping", ""),
        Method::PUT,
        t,
        wasm,
        Some(b"hello, world".to_vec()),
    )
    .await;
    assert_error(&got, 422, "invalid_probe", "plb:probe/probe");
    // A component of another world.
    let got = raw(
        &upload_url(&b, "web", "ping", ""),
        Method::PUT,
        t,
        wasm,
        Some(OTHER_WORLD.to_vec()),
    )
    .await;
    assert_error(&got, 422, "invalid_probe", "plb:probe/probe");
    // Larger than the limit.
    let big = vec![0u8; 150_001];
    let got = raw(
        &upload_url(&b, "web", "ping", ""),
        Method::PUT,
        t,
        wasm,
        Some(big),
    )
    .await;
    assert_error(&got, 413, "payload_too_large", "150000");
    // Empty, wrong content type.
    let got = raw(
        &upload_url(&b, "web", "ping", ""),
        Method::PUT,
        t,
        wasm,
        Some(Vec::new()),
    )
    .await;
    assert_error(&got, 400, "empty_body", "empty");
    let got = raw(
        &upload_url(&b, "web", "ping", ""),
        Method::PUT,
        t,
        Some("application/json"),
        Some(TRIVIAL.to_vec()),
    )
    .await;
    assert_error(&got, 415, "unsupported_media_type", "application/wasm");
    // Invalid settings, each named.
    for (q, field) in [
        ("interval_ms=-5", "interval_ms"),
        ("interval_ms=10", "interval_ms"),
        ("timeout_ms=0", "timeout_ms"),
        ("memory_mib=0", "memory_mib"),
        ("fuel=0", "fuel"),
        ("tier=fast", "tier"),
        ("config=notjson", "config"),
        ("colour=blue", "colour"),
    ] {
        let got = raw(
            &upload_url(&b, "web", "ping", q),
            Method::PUT,
            t,
            wasm,
            Some(TRIVIAL.to_vec()),
        )
        .await;
        assert_error(&got, 400, "invalid_settings", field);
    }
    // Unknown pool, bad and reserved names.
    let got = raw(
        &upload_url(&b, "nope", "ping", ""),
        Method::PUT,
        t,
        wasm,
        Some(TRIVIAL.to_vec()),
    )
    .await;
    assert_error(&got, 404, "not_found", "pool `nope`");
    let got = raw(
        &upload_url(&b, "web", "node", ""),
        Method::PUT,
        t,
        wasm,
        Some(TRIVIAL.to_vec()),
    )
    .await;
    assert_error(&got, 400, "invalid_name", "reserved");
    let got = raw(
        &upload_url(&b, "web", "-x", ""),
        Method::PUT,
        t,
        wasm,
        Some(TRIVIAL.to_vec()),
    )
    .await;
    assert_error(&got, 400, "invalid_name", "probe name");
    // Nothing half-written by any of them.
    assert_eq!(state(), before);
    assert_eq!(acme.probe("web", "ping").await.expect("get").version, 2);

    // Read, list, delete; a new upload after delete continues the numbering.
    acme.upload_probe("web", "cpu", CPU_BENCH, &ProbeSettings::default())
        .await
        .expect("cpu");
    let list = acme.probes("web").await.expect("list");
    assert_eq!(
        list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["cpu", "ping"]
    );
    let e = acme.probe("web", "nope").await.expect_err("unknown probe");
    assert_api_error(&e, 404, "not_found", "probe `nope`");
    let e = acme.probes("nope").await.expect_err("unknown pool");
    assert_api_error(&e, 404, "not_found", "pool `nope`");
    acme.delete_probe("web", "ping").await.expect("delete");
    let e = acme.probe("web", "ping").await.expect_err("deleted");
    assert_api_error(&e, 404, "not_found", "ping");
    let e = acme.delete_probe("web", "ping").await.expect_err("twice");
    assert_api_error(&e, 404, "not_found", "ping");
    let v3 = acme
        .upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("re-upload");
    assert_eq!(v3.probe.version, 3);
}

async fn another_clients_pool_is_404_never_its_data(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let acme = b.client_with_pool("acme", "web").await;
    let evil = b.client_with_pool("evil", "mine").await;
    acme.upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    let agent = b.agent(&acme, &["web"]).await;
    agent
        .register(&register("n1", "10.0.0.1:80", &["web"]))
        .await
        .expect("register");

    let e = evil.pool("web").await.expect_err("get");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let e = evil.probes("web").await.expect_err("probes");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let e = evil.probe("web", "ping").await.expect_err("probe");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let e = evil.pool_nodes("web").await.expect_err("nodes");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let e = evil.delete_probe("web", "ping").await.expect_err("delete");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let e = evil
        .upload_probe("web", "ping", TRIVIAL, &quick(5000))
        .await
        .expect_err("overwrite");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let e = evil
        .create_agent_token(&["web"], None)
        .await
        .expect_err("enrol into another's pool");
    assert_api_error(&e, 404, "not_found", "pool `web`");
    let pools = evil.pools().await.expect("own list");
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "mine");
    // The same name is free in another client's namespace.
    evil.create_pool("web", 10.0).await.expect("own `web`");
    assert!(evil.probes("web").await.expect("own probes").is_empty());
    // Acme's probe is untouched.
    assert_eq!(
        acme.probe("web", "ping")
            .await
            .expect("get")
            .settings
            .interval_ms,
        1000
    );
}

async fn agents_register_poll_with_etag_and_fetch_modules(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let acme = b.client_with_pool("acme", "web").await;
    acme.create_pool("other", 10.0).await.expect("other");
    let up = acme
        .upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    acme.upload_probe("other", "cpu", CPU_BENCH, &quick(1000))
        .await
        .expect("upload other");
    let agent = b.agent(&acme, &["web"]).await;

    let e = agent
        .assignments("n1", None)
        .await
        .expect_err("unregistered");
    assert_api_error(&e, 404, "not_found", "node `n1`");
    let e = agent
        .register(&register("n1", "10.0.0.1:80", &["web", "other"]))
        .await
        .expect_err("not enrolled");
    assert_api_error(&e, 403, "forbidden", "pool `other`");
    let e = agent
        .register(&register("n1", "no-port", &["web"]))
        .await
        .expect_err("bad address");
    assert_api_error(&e, 400, "invalid_request", "host:port");
    agent
        .register(&register("n1", "10.0.0.1:80", &["web"]))
        .await
        .expect("register");
    agent
        .register(&register("n1", "10.0.0.1:81", &["web"]))
        .await
        .expect("re-register (agent restart)");
    let e = agent
        .register(&register("n2", "10.0.0.2:80", &["web"]))
        .await
        .expect_err("a second node");
    assert_api_error(&e, 403, "forbidden", "node `n1`");
    // A client token is not an agent token.
    let e = acme
        .assignments("n1", None)
        .await
        .expect_err("client token");
    assert_api_error(&e, 403, "forbidden", "agent token");

    let Fetched::Changed { assignments, etag } = agent.assignments("n1", None).await.expect("poll")
    else {
        panic!("first poll has a body")
    };
    let etag = etag.expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    assert_eq!(assignments.address, "10.0.0.1:81");
    assert_eq!(assignments.probes.len(), 1);
    let a = &assignments.probes[0];
    assert_eq!(
        (a.pool.as_str(), a.probe.as_str(), a.version),
        ("web", "ping", 1)
    );
    assert_eq!(a.sha256, up.probe.sha256);
    assert_eq!(a.interval_ms, 1000);
    assert_eq!(
        agent.assignments("n1", Some(&etag)).await.expect("poll"),
        Fetched::Unchanged
    );
    // A new version changes the ETag.
    acme.upload_probe("web", "ping", TRIVIAL, &quick(3000))
        .await
        .expect("v2");
    match agent.assignments("n1", Some(&etag)).await.expect("poll") {
        Fetched::Changed {
            assignments,
            etag: e2,
        } => {
            assert_ne!(e2.as_deref(), Some(etag.as_str()));
            assert_eq!(assignments.probes[0].version, 2);
            assert_eq!(assignments.probes[0].interval_ms, 3000);
        }
        Fetched::Unchanged => panic!("a new version must change the assignments"),
    }

    // Modules: its own pools' only, byte for byte.
    let bytes = agent.module(&up.probe.sha256).await.expect("module");
    assert_eq!(&bytes[..], TRIVIAL);
    let other_sha = acme.probe("other", "cpu").await.expect("cpu").sha256;
    let e = agent.module(&other_sha).await.expect_err("not enrolled");
    assert_api_error(&e, 404, "not_found", "module");
    let e = agent.module("XYZ").await.expect_err("not a sha");
    assert_api_error(&e, 400, "invalid_request", "sha256");
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl IngestObserver for Recorder {
    fn committed(&self, batch: &Arc<CommittedBatch>) {
        let mut v = self.0.lock().expect("lock");
        v.extend(batch.samples.iter().map(|s| s.id.clone()));
    }
}

async fn reports_are_idempotent_checked_whole_and_observed_once(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    let db = TestDb::new(backend, dir.path()).await;
    cfg.db = db.location();
    let recorder = Arc::new(Recorder::default());
    let state = plb_balancer::build_state(&cfg)
        .await
        .expect("state")
        .with_observer(recorder.clone());
    let running = plb_balancer::start_with_state(&cfg, state)
        .await
        .expect("start");
    let admin = plb_client::Client::new(&running.url(), ADMIN).expect("client");
    let created = admin.create_client("acme").await.expect("client");
    let acme = admin.with_token(created.token);
    acme.create_pool("web", 100.0).await.expect("pool");
    acme.create_pool("api", 100.0).await.expect("pool");
    acme.upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    let t1 = acme
        .create_agent_token(&["web", "api"], None)
        .await
        .expect("t1");
    let n1 = admin.with_token(t1.token);
    n1.register(&register("n1", "10.0.0.1:80", &["web"]))
        .await
        .expect("register");
    let t2 = acme.create_agent_token(&["web"], None).await.expect("t2");
    let n2 = admin.with_token(t2.token);
    n2.register(&register("n2", "10.0.0.2:80", &["web"]))
        .await
        .expect("register");
    let samples = |sql: &str| db.count(sql);

    let now = now_ms();
    let mut good: Vec<_> = (0..50)
        .map(|i| sample("web", "ping", 1, now - 1000 + i))
        .collect();
    let mut node_sample = sample("web", "node", 0, now);
    node_sample.metrics = [("load-1m".to_string(), 0.5)].into();
    good.push(node_sample);
    let ack = n1.report(&batch("n1", good.clone())).await.expect("report");
    assert_eq!((ack.accepted, ack.duplicates), (51, 0));
    // Resent whole: nothing stored twice.
    let ack = n1.report(&batch("n1", good.clone())).await.expect("again");
    assert_eq!((ack.accepted, ack.duplicates), (0, 51));
    // Half new, half old.
    let mut mixed = good[..10].to_vec();
    mixed.extend((0..5).map(|i| sample("web", "ping", 1, now + i)));
    let ack = n1.report(&batch("n1", mixed)).await.expect("mixed");
    assert_eq!((ack.accepted, ack.duplicates), (5, 10));
    assert_eq!(samples("SELECT count(*) FROM samples"), 56);
    assert_eq!(samples("SELECT count(DISTINCT id) FROM samples"), 56);
    // Every stored sample reached the observer exactly once.
    {
        let seen = recorder.0.lock().expect("lock");
        assert_eq!(seen.len(), 56);
        let unique: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 56);
    }

    // Bad batches: each names the problem and stores none of its samples.
    let fresh = || sample("web", "ping", 1, now_ms());
    let cases: Vec<(plb_client::Client, plb_api::ReportBatch, u16, &str, &str)> = vec![
        (
            n2.clone(),
            batch("n1", vec![fresh()]),
            403,
            "forbidden",
            "node `n1`",
        ),
        (
            n1.clone(),
            batch("n9", vec![fresh()]),
            404,
            "not_found",
            "node `n9`",
        ),
        (
            n1.clone(),
            batch("n1", vec![fresh(), sample("api", "ping", 1, now)]),
            422,
            "invalid_reference",
            "pool `api`",
        ),
        (
            n1.clone(),
            batch("n1", vec![fresh(), sample("web", "nope", 1, now)]),
            422,
            "invalid_reference",
            "probe `nope`",
        ),
        (
            n1.clone(),
            batch("n1", vec![fresh(), sample("web", "ping", 7, now)]),
            422,
            "invalid_reference",
            "version 7",
        ),
        (
            n1.clone(),
            batch("n1", vec![fresh(), sample("web", "ping", 1, -5)]),
            422,
            "invalid_report",
            "taken_at_ms",
        ),
        (
            acme.clone(),
            batch("n1", vec![fresh()]),
            403,
            "forbidden",
            "agent token",
        ),
    ];
    for (who, bad, status, code, needle) in cases {
        let e = who.report(&bad).await.expect_err("rejected");
        assert_api_error(&e, status, code, needle);
    }
    assert_eq!(samples("SELECT count(*) FROM samples"), 56);
    assert_eq!(recorder.0.lock().expect("lock").len(), 56);

    // A value JSON cannot carry as a number.
    let token = n1.token().to_string();
    let mut s = serde_json::to_value(fresh()).expect("json");
    s["metrics"]["latency-ms"] = serde_json::Value::Null;
    let body = serde_json::json!({"node": "n1", "samples": [s]}).to_string();
    let got = raw(
        &format!("{}/v1/reports", running.url()),
        Method::POST,
        Some(&token),
        Some("application/json"),
        Some(body.clone().into_bytes()),
    )
    .await;
    assert_error(&got, 422, "invalid_body", "samples[0]");
    let body = body.replace("null", "1e999");
    let got = raw(
        &format!("{}/v1/reports", running.url()),
        Method::POST,
        Some(&token),
        Some("application/json"),
        Some(body.into_bytes()),
    )
    .await;
    assert!(matches!(got.0, 400 | 422), "{got:?}");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(samples("SELECT count(*) FROM samples"), 56);

    // The read side: the node, when it was seen, its newest sample per probe.
    let view = acme.pool_nodes("web").await.expect("nodes");
    assert_eq!(view.nodes.len(), 2);
    let v1 = &view.nodes[0];
    assert_eq!(
        (v1.node.as_str(), v1.address.as_str()),
        ("n1", "10.0.0.1:80")
    );
    assert!(v1.last_seen_ms.is_some_and(|t| t >= now - 5000));
    let probes: Vec<_> = v1.latest.iter().map(|s| s.probe.as_str()).collect();
    assert_eq!(probes, ["node", "ping"]);
    let newest = v1.latest.iter().find(|s| s.probe == "ping").expect("ping");
    assert_eq!(newest.taken_at_ms, now + 4);
    assert!(view.nodes[1].latest.is_empty());
    assert_eq!(view.nodes[1].labels["zone"], "a");

    // Metrics count what was stored.
    let text = admin.metrics_text().await.expect("metrics");
    assert!(text.contains("plb_samples_ingested_total 56"), "{text}");
    assert!(text.contains("plb_samples_duplicate_total 61"), "{text}");
    assert!(
        text.contains(r#"route="/v1/reports",method="POST",status="200""#),
        "{text}"
    );
    running.stop().await.expect("stop");
}

async fn health_metrics_and_openapi(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let h = b.admin.health().await.expect("health");
    assert_eq!(h.status, "ok");
    let doc = b.admin.openapi().await.expect("openapi");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/clients",
        "/v1/pools/{pool}/probes/{name}",
        "/v1/agents/{node}/assignments",
        "/v1/reports",
        "/v1/pools/{pool}/nodes",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "ReportBatch",
        "Sample",
        "ProbeView",
        "ErrorBody",
        "Assignments",
        "PoolNodes",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    let params = &doc["paths"]["/v1/pools/{pool}/probes/{name}"]["put"]["parameters"];
    let names: Vec<_> = params
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for q in [
        "interval_ms",
        "timeout_ms",
        "fuel",
        "memory_mib",
        "config",
        "tier",
    ] {
        assert!(names.contains(&q), "{q} not documented: {names:?}");
    }
    let text = b.admin.metrics_text().await.expect("metrics");
    assert!(
        text.contains(
            "plb_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("plb_store_commits_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_errors_on_bodies_never_break_the_next_request() {
    let b = TestBalancer::start_with(|c| c.max_upload_bytes = 150_000).await;
    let acme = b.client_with_pool("acme", "web").await;
    let stranger = acme.with_token("plbc_unknown");
    // One client (one connection pool): each refused body is followed by a good call.
    for i in 0..20 {
        let e = acme
            .upload_probe("nope", "ping", TRIVIAL, &quick(1000))
            .await
            .expect_err("unknown pool");
        assert_api_error(&e, 404, "not_found", "pool `nope`");
        let e = stranger
            .upload_probe("web", "ping", TRIVIAL, &quick(1000))
            .await
            .expect_err("unknown token");
        assert_api_error(&e, 401, "unauthorized", "token");
        // Past the limit (but within what the balancer drains): a clean 413.
        let e = acme
            .upload_probe("web", "ping", vec![0u8; 500_000], &quick(1000))
            .await
            .expect_err("too large");
        assert!(e.status() == Some(413), "round {i}: {e}");
        // Far past it: the connection is closed, never reused.
        let e = acme
            .upload_probe("web", "ping", vec![0u8; 4_000_000], &quick(1000))
            .await
            .expect_err("far too large");
        assert!(e.status() == Some(413) || e.retryable(), "round {i}: {e}");
        acme.pool("web").await.expect("the next call works");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_query_strings_get_the_error_shape_naming_the_parameter() {
    let b = TestBalancer::start().await;
    let acme = b.client_with_pool("acme", "web").await;
    let get = async |path: &str| {
        let url = format!("{}{path}", b.url());
        raw(&url, Method::GET, Some(acme.token()), None, None).await
    };
    for (path, param) in [
        ("/v1/notifications?limit=abc", "limit"),
        ("/v1/notifications?since_ms=yesterday", "since_ms"),
        ("/v1/pools/web/route?size=abc", "size"),
        ("/v1/pools/web/decisions?since=soon", "since"),
        ("/v1/pools/web/model?since=soon", "since"),
        ("/v1/pools/web/state-changes?limit=-1", "limit"),
        (
            "/v1/pools/web/nodes/n1/history?metric=a/b&since=soon",
            "since",
        ),
    ] {
        assert_error(&get(path).await, 400, "invalid_query", param);
    }
    // A well-formed query on the same endpoint still works.
    let (status, body) = get("/v1/notifications?limit=5").await;
    assert_eq!(status, 200, "{body}");
}

/// Free text a store may not hold as such (NUL: PostgreSQL's text cannot) is stored,
/// served back and deduplicated all the same (on PostgreSQL, NUL reads back as U+FFFD).
async fn free_text_with_nul_is_stored(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let acme = b.client_with_pool("acme\0corp", "web").await;
    acme.upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    let agent = b.agent(&acme, &["web"]).await;
    agent
        .register(&register("n1", "127.0.0.1:9", &["web"]))
        .await
        .expect("register");
    let mut s = sample("web", "ping", 1, now_ms());
    s.id = "id\0with-nul".into();
    s.outcome = plb_api::Outcome::Trap;
    s.message = "trapped\0here".into();
    s.stderr = "err\0out".into();
    let report = batch("n1", vec![s]);
    let ack = agent.report(&report).await.expect("report");
    assert_eq!((ack.accepted, ack.duplicates), (1, 0));
    let ack = agent.report(&report).await.expect("again");
    assert_eq!((ack.accepted, ack.duplicates), (0, 1));
    let nodes = acme.pool_nodes("web").await.expect("nodes");
    assert_eq!(nodes.nodes[0].latest[0].message, "trapped\0here");
    let nul = match backend {
        Backend::Sqlite => "\0",
        Backend::Postgres => "\u{FFFD}",
    };
    assert_eq!(
        b.rows("SELECT id, message, stderr FROM samples"),
        vec![vec![
            format!("id{nul}with-nul"),
            format!("trapped{nul}here"),
            format!("err{nul}out"),
        ]]
    );
    assert_eq!(b.count("SELECT count(*) FROM samples"), 1);
}

on_each_backend!(
    free_text_with_nul_is_stored,
    clients_pools_and_tokens,
    missing_wrong_and_revoked_tokens_are_401,
    probe_uploads_version_and_reject_bad_input,
    another_clients_pool_is_404_never_its_data,
    agents_register_poll_with_etag_and_fetch_modules,
    reports_are_idempotent_checked_whole_and_observed_once,
    health_metrics_and_openapi,
);
