//! `/metrics` on a real balancer: the series labelled with tenants' pool and probe names
//! are shown only to the metrics or the admin token (and, with `--metrics-token` set,
//! nothing is shown without a token); two clients' pools of the same name are two
//! series; the request method label takes values from a fixed set.

use crate::common::{ADMIN, TestBalancer};
use plb_balancer::metrics::ScalingLabels;
use plb_balancer::reliability::ProbeLabels;

const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// `GET /metrics` with an optional bearer token: status and body.
async fn scrape(b: &TestBalancer, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", b.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Two clients, both with a pool `web` and a probe `secret-probe`: their per-probe and
/// scaling series, as reliability and the engine set them.
fn tenant_series(b: &TestBalancer) {
    let m = &b.running.state.metrics;
    for client in ["1", "2"] {
        let probe = ProbeLabels {
            client: client.into(),
            pool: "web".into(),
            probe: "secret-probe".into(),
        };
        m.reliability.probe_state.get_or_create(&probe).set(1);
        let scaling = ScalingLabels {
            client: client.into(),
            pool: "web".into(),
            horizon: "15m".into(),
        };
        let nodes = if client == "1" { 3 } else { 7 };
        m.scaling.desired_nodes.get_or_create(&scaling).set(nodes);
    }
}

fn assert_tenant_series(text: &str) {
    for (client, nodes) in [("1", 3), ("2", 7)] {
        let line = format!(
            "plb_pool_desired_nodes{{client=\"{client}\",pool=\"web\",horizon=\"15m\"}} {nodes}"
        );
        assert!(text.contains(&line), "{line} in {text}");
        let line = format!(
            "plb_probe_reliability_state{{client=\"{client}\",pool=\"web\",probe=\"secret-probe\"}} 1"
        );
        assert!(text.contains(&line), "{line} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_metrics_token_tenant_series_need_the_admin_token() {
    let b = TestBalancer::start().await;
    let acme = b.client_with_pool("acme", "web").await;
    b.client_with_pool("globex", "web").await;
    tenant_series(&b);
    // Invented methods: one label value, not one per method.
    for m in ["BREW", "PROPFIND", "XYZZY"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        reqwest::Client::new()
            .request(method, format!("{}/healthz", b.url()))
            .send()
            .await
            .expect("send");
    }

    let (status, public) = scrape(&b, None).await;
    assert_eq!(status, 200, "{public}");
    assert!(public.contains("plb_http_requests_total{"), "{public}");
    assert!(
        public.contains("route=\"/healthz\",method=\"other\""),
        "{public}"
    );
    for hidden in [
        "BREW",
        "PROPFIND",
        "XYZZY",
        "secret-probe",
        "plb_pool_desired_nodes",
        "plb_probe_reliability_state",
        "plb_probe_failure_rate",
        "plb_pool_demand_forecast_rps",
        "pool=",
    ] {
        assert!(!public.contains(hidden), "`{hidden}` in {public}");
    }
    // Aggregates stay public.
    assert!(public.contains("plb_probes_excluded"), "{public}");
    assert!(public.ends_with("# EOF\n"), "{public}");

    let (status, full) = scrape(&b, Some(ADMIN)).await;
    assert_eq!(status, 200, "{full}");
    assert_tenant_series(&full);
    assert_eq!(full.matches("# EOF").count(), 1, "{full}");

    // A client token is not a metrics reader; nor is a made-up one.
    let client_token = acme.token().to_owned();
    assert_eq!(scrape(&b, Some(&client_token)).await.0, 401);
    assert_eq!(scrape(&b, Some(METRICS_TOKEN)).await.0, 401);
    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_token_metrics_need_it_or_the_admin_token() {
    let b = TestBalancer::start_with(|cfg| cfg.metrics_token = Some(METRICS_TOKEN.into())).await;
    b.client_with_pool("acme", "web").await;
    b.client_with_pool("globex", "web").await;
    tenant_series(&b);

    let (status, body) = scrape(&b, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("plb_"), "{body}");
    assert_eq!(scrape(&b, Some("not-the-metrics-token")).await.0, 401);
    for token in [METRICS_TOKEN, ADMIN] {
        let (status, full) = scrape(&b, Some(token)).await;
        assert_eq!(status, 200, "{full}");
        assert_tenant_series(&full);
    }
    b.running.stop().await.expect("stop");
}

#[test]
fn a_short_metrics_token_is_refused() {
    let mut cfg = plb_balancer::BalancerConfig::new("plb.db", ADMIN);
    cfg.metrics_token = Some("short".into());
    let e = cfg.validate().expect_err("too short");
    assert!(e.to_string().contains("--metrics-token"), "{e}");
}
