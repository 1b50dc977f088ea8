//! Helpers of the engine tests (predict.rs, route.rs): a pool of registered nodes on a
//! real balancer, samples from the agent's built-in node sampler posted over
//! `/v1/reports` with their own timestamps, and raw route/feedback calls.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use plb_api::{NODE_SAMPLER_PROBE, NodeView, Outcome, RouteDecision, Sample};
use plb_client::Client;

use crate::common::{TestBalancer, batch, register};

/// The metric the tests drive, and its series key in the node models.
pub const METRIC: &str = "latency-ms";
pub const SERIES: &str = "node/latency-ms";

/// A pool with nodes, each with its own agent.
pub struct Pool {
    pub name: String,
    pub client: Client,
    pub agents: HashMap<String, Client>,
    pub http: reqwest::Client,
    pub url: String,
}

impl Pool {
    /// A client with pool `name` and `nodes` registered into it (addresses 127.0.0.1:9001..).
    pub async fn new(b: &TestBalancer, client: &str, name: &str, nodes: &[&str]) -> Pool {
        let c = b.client_with_pool(client, name).await;
        let mut agents = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let agent = b.agent(&c, &[name]).await;
            agent
                .register(&register(n, &format!("127.0.0.1:{}", 9001 + i), &[name]))
                .await
                .expect("register");
            agents.insert(n.to_string(), agent);
        }
        Pool {
            name: name.to_string(),
            client: c,
            agents,
            http: reqwest::Client::new(),
            url: b.url(),
        }
    }

    /// Points every client at a restarted balancer on `url`.
    pub fn rebase(&mut self, url: &str) {
        self.client = Client::new(url, self.client.token()).expect("client");
        for a in self.agents.values_mut() {
            *a = Client::new(url, a.token()).expect("agent");
        }
        self.url = url.to_string();
    }

    /// Posts node-sampler samples `(t_ms, value)` of `node` in one batch.
    pub async fn samples(&self, node: &str, points: &[(i64, f64)]) {
        let samples = points
            .iter()
            .map(|&(t, v)| sample_of(&self.name, t, Outcome::Ok, v))
            .collect();
        self.agents[node]
            .report(&batch(node, samples))
            .await
            .expect("report");
    }

    /// Posts one node-sampler sample of `node` at `t_ms`.
    pub async fn sample(&self, node: &str, t_ms: i64, outcome: Outcome, value: f64) {
        let s = sample_of(&self.name, t_ms, outcome, value);
        self.agents[node]
            .report(&batch(node, vec![s]))
            .await
            .expect("report");
    }

    fn token(&self) -> &str {
        self.client.token()
    }

    /// `GET .../route` with a raw query string: status and body.
    pub async fn route_raw(&self, query: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(format!("{}/v1/pools/{}/route?{query}", self.url, self.name))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("route");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// One decision.
    pub async fn route(&self, query: &str) -> RouteDecision {
        let (s, v) = self.route_raw(query).await;
        assert_eq!(s, 200, "route: {v}");
        serde_json::from_value(v).expect("decision")
    }

    /// `POST .../feedback` with a JSON body: status and body.
    pub async fn feedback(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}/v1/pools/{}/feedback", self.url, self.name))
            .bearer_auth(self.token())
            .json(&body)
            .send()
            .await
            .expect("feedback");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `GET /v1/pools/{pool}/state-changes?{query}`: the stored changes (asserts 200).
    pub async fn state_changes(&self, query: &str) -> Vec<serde_json::Value> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/pools/{}/state-changes?{query}",
                self.url, self.name
            ))
            .bearer_auth(self.client.token())
            .send()
            .await
            .expect("state changes");
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.json().await.expect("JSON");
        assert_eq!(status, 200, "{v}");
        v["changes"].as_array().expect("changes").clone()
    }

    /// `n` decisions, each answered with feedback (in batches of 20, so few are in
    /// flight at once); decisions per node.
    pub async fn shares(&self, n: usize, query: &str) -> HashMap<String, usize> {
        self.shares_with(n, query, |_| 5.0).await
    }

    /// [`Pool::shares`] with each decision's feedback latency given per node (ms).
    pub async fn shares_with(
        &self,
        n: usize,
        query: &str,
        latency_ms: impl Fn(&str) -> f64,
    ) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        let mut pending = Vec::new();
        for i in 0..n {
            let d = self.route(query).await;
            *counts.entry(d.node.clone()).or_insert(0) += 1;
            let latency = latency_ms(&d.node);
            pending.push(serde_json::json!({"node": d.node, "latency_ms": latency, "ok": true}));
            if pending.len() == 20 || i + 1 == n {
                let (s, v) = self
                    .feedback(serde_json::json!({ "items": std::mem::take(&mut pending) }))
                    .await;
                assert_eq!(s, 200, "feedback: {v}");
            }
        }
        counts
    }

    /// The nodes view, by node id.
    pub async fn nodes(&self) -> HashMap<String, NodeView> {
        self.client
            .pool_nodes(&self.name)
            .await
            .expect("nodes")
            .nodes
            .into_iter()
            .map(|n| (n.node.clone(), n))
            .collect()
    }

    /// Waits until `ok` holds for the nodes view (the engine applies batches and
    /// rebuilds snapshots in the background, within ~100 ms).
    pub async fn wait_for(
        &self,
        what: &str,
        ok: impl Fn(&HashMap<String, NodeView>) -> bool,
    ) -> HashMap<String, NodeView> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.nodes().await;
            if ok(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                v.values()
                    .map(|n| (&n.node, n.routing.as_ref().map(|r| r.state)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// A node-sampler sample.
pub fn sample_of(pool: &str, t_ms: i64, outcome: Outcome, value: f64) -> Sample {
    Sample {
        id: uuid::Uuid::new_v4().to_string(),
        pool: pool.to_string(),
        probe: NODE_SAMPLER_PROBE.into(),
        version: 0,
        taken_at_ms: t_ms,
        outcome,
        metrics: if outcome == Outcome::Ok {
            BTreeMap::from([(METRIC.to_string(), value)])
        } else {
            BTreeMap::new()
        },
        duration_ms: 1.0,
        fuel_used: None,
        message: String::new(),
        stderr: String::new(),
    }
}

/// `n` decisions, each answered with feedback at once; decisions per node.
pub async fn shares_one_by_one(p: &Pool, n: usize, query: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let d = p.route(query).await;
        *counts.entry(d.node.clone()).or_insert(0) += 1;
        let (s, v) = p
            .feedback(serde_json::json!({"node": d.node, "latency_ms": 5.0, "ok": true}))
            .await;
        assert_eq!(s, 200, "feedback: {v}");
    }
    counts
}

/// The routing state of `node` in a nodes view.
pub fn routing_state(v: &HashMap<String, NodeView>, node: &str) -> Option<plb_api::NodeState> {
    v.get(node)?.routing.as_ref().map(|r| r.state)
}

/// A small deterministic jitter around 0 (±3 %).
pub fn jitter(k: usize) -> f64 {
    [
        0.0, 0.02, -0.015, 0.01, -0.03, 0.025, -0.005, 0.015, -0.02, 0.03,
    ][k % 10]
}
