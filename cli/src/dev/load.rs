//! The built-in load of `plb dev`: an open-loop Poisson stream of requests. Every other
//! request goes through the reverse proxy; the rest are routed by the route API
//! (`GET /v1/pools/demo/route`), sent to the chosen demo node and reported back as
//! feedback, exactly as a real caller of the route API would.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plb_client::{Client, Method};
use rand::Rng as _;
use tokio::sync::watch;

use super::POOL;

/// Runs until `stop` turns true.
pub async fn run(
    client: Client,
    proxy: String,
    nodes: HashMap<String, SocketAddr>,
    rps: f64,
    mut stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut last_warning: Option<Instant> = None;
    let mut via_proxy = false;
    loop {
        via_proxy = !via_proxy;
        let gap = {
            let u: f64 = rand::rng().random_range(f64::EPSILON..1.0);
            -u.ln() / rps
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_secs_f64(gap)) => {}
        }
        let client = client.clone();
        let http = http.clone();
        let nodes = nodes.clone();
        let proxy = proxy.clone();
        let warn = last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if warn {
            last_warning = Some(Instant::now());
        }
        tokio::spawn(async move {
            let r = if via_proxy {
                through_proxy(&http, &proxy).await
            } else {
                one(&client, &http, &nodes).await
            };
            if let Err(e) = r
                && warn
            {
                tracing::warn!(error = %e, "demo load: a request failed (more are not logged for a minute)");
            }
        });
    }
}

async fn through_proxy(http: &reqwest::Client, proxy: &str) -> anyhow::Result<()> {
    let r = http.get(format!("{proxy}/")).send().await?;
    let status = r.status();
    r.bytes().await?;
    anyhow::ensure!(status.is_success(), "the proxy answered {status}");
    Ok(())
}

async fn one(
    client: &Client,
    http: &reqwest::Client,
    nodes: &HashMap<String, SocketAddr>,
) -> anyhow::Result<()> {
    let decision = client
        .get_value(&["v1", "pools", POOL, "route"], &[])
        .await?;
    let node = decision
        .get("node")
        .and_then(|n| n.as_str())
        .ok_or_else(|| anyhow::anyhow!("a route decision without a node: {decision}"))?
        .to_string();
    let addr = nodes
        .get(&node)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("routed to an unknown node {node}"))?;
    let start = Instant::now();
    let ok = match http.get(format!("http://{addr}/")).send().await {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    };
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    client
        .send_value(
            Method::POST,
            &["v1", "pools", POOL, "feedback"],
            &serde_json::json!({ "node": node, "latency_ms": latency_ms, "ok": ok }),
        )
        .await?;
    Ok(())
}
