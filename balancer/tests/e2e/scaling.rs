//! `GET /v1/pools/{pool}/scaling` on a real balancer on a loopback port: the shape of
//! the demand forecast and scaling advice, and its auth (no token 401, another client's
//! pool 404), and the route in the OpenAPI document.

use crate::common::{ADMIN, TestBalancer, assert_error, raw};
use reqwest::Method;

#[tokio::test]
async fn scaling_view_shape_and_auth() {
    let b = TestBalancer::start().await;
    let a = b.admin.create_client("a").await.expect("client a");
    let other = b.admin.create_client("b").await.expect("client b");
    let ca = b.admin.with_token(a.token.clone());
    ca.create_pool("web", 250.0).await.expect("pool");
    let cb = b.admin.with_token(other.token.clone());
    cb.create_pool("own", 200.0).await.expect("pool of b");
    let url = format!("{}/v1/pools/web/scaling", b.url());

    let (status, v) = raw(&url, Method::GET, Some(&a.token), None, None).await;
    assert_eq!(status, 200, "{v}");
    let s: plb_api::PoolScaling = serde_json::from_value(v.clone()).expect("PoolScaling");
    assert_eq!(s.pool, "web");
    assert_eq!(s.current_nodes, 0);
    assert_eq!(s.objective.latency_slo_ms, 250.0);
    assert_eq!(s.objective.recommend_horizon_min, 15);
    assert!((s.objective.target_utilisation - 0.8).abs() < 1e-9);
    // A new pool: no complete minute yet, no capacity model.
    assert_eq!(s.needed_now, None);
    assert_eq!(s.node_capacity_rps, None);
    assert!(s.horizons.is_empty(), "{v}");
    assert!(s.history.is_empty());
    assert_eq!(s.last_changed_ms, None);
    assert!(!s.reason.is_empty());
    for key in [
        "current_nodes",
        "needed_now",
        "recommended",
        "advised",
        "demand_rps",
        "horizons",
        "node_capacity_rps",
        "capacity_source",
        "objective",
        "last_changed_ms",
        "history",
    ] {
        assert!(v.get(key).is_some(), "`{key}` missing: {v}");
    }

    // Auth: no token, a bad token, another client's pool, an unknown pool.
    let got = raw(&url, Method::GET, None, None, None).await;
    assert_eq!(got.0, 401, "{}", got.1);
    let got = raw(&url, Method::GET, Some("plbc_nope"), None, None).await;
    assert_eq!(got.0, 401, "{}", got.1);
    let got = raw(&url, Method::GET, Some(&other.token), None, None).await;
    assert_error(&got, 404, "not_found", "web");
    let got = raw(
        &format!("{}/v1/pools/nope/scaling", b.url()),
        Method::GET,
        Some(&a.token),
        None,
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", "nope");
    // The admin token is not a client's.
    let got = raw(&url, Method::GET, Some(ADMIN), None, None).await;
    assert!(matches!(got.0, 401 | 403), "{got:?}");

    // In the OpenAPI document.
    let (status, doc) = raw(
        &format!("{}/v1/openapi.json", b.url()),
        Method::GET,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        doc["paths"].get("/v1/pools/{pool}/scaling").is_some(),
        "scaling route not documented"
    );
    assert!(doc["components"]["schemas"].get("PoolScaling").is_some());
}
