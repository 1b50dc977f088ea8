//! Shared helpers of the balancer's integration tests: a real balancer on a loopback
//! port 0 over a real SQLite file in a tempdir, typed clients for each role, raw HTTP
//! calls that check the error shape, and direct reads of the SQLite file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plb_api::{Outcome, ProbeSettings, RegisterRequest, ReportBatch, Sample};
use plb_balancer::{BalancerConfig, RunningBalancer};
use plb_client::Client;

pub const ADMIN: &str = "test-admin-token-0123456789";

/// A balancer in this process, its tempdir and an admin client.
pub struct TestBalancer {
    pub running: RunningBalancer,
    pub dir: tempfile::TempDir,
    pub admin: Client,
}

pub fn config(dir: &Path) -> BalancerConfig {
    let mut cfg = BalancerConfig::new(dir.join("plb.db"), ADMIN);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg
}

impl TestBalancer {
    pub async fn start() -> TestBalancer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BalancerConfig)) -> TestBalancer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let running = plb_balancer::start(&cfg).await.expect("balancer starts");
        let admin = Client::new(&running.url(), ADMIN).expect("client");
        TestBalancer {
            running,
            dir,
            admin,
        }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("plb.db")
    }

    /// A client with a pool; returns the client's typed client.
    pub async fn client_with_pool(&self, name: &str, pool: &str) -> Client {
        let c = self.admin.create_client(name).await.expect("create client");
        let client = self.admin.with_token(c.token);
        client.create_pool(pool, 200.0).await.expect("create pool");
        client
    }

    /// An agent token of `client` for `pools`, as a typed client.
    pub async fn agent(&self, client: &Client, pools: &[&str]) -> Client {
        let t = client
            .create_agent_token(pools, None)
            .await
            .expect("agent token");
        self.admin.with_token(t.token)
    }

    /// Rows of `sql` (one integer column) in the SQLite file.
    pub fn count(&self, sql: &str) -> i64 {
        count(&self.db(), sql)
    }
}

pub fn count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn.query_row(sql, [], |r| r.get(0)).expect("query")
}

pub fn register(node: &str, address: &str, pools: &[&str]) -> RegisterRequest {
    RegisterRequest {
        node: node.into(),
        address: address.into(),
        pools: pools.iter().map(|p| p.to_string()).collect(),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
    }
}

pub fn sample(pool: &str, probe: &str, version: u32, taken_at_ms: i64) -> Sample {
    Sample {
        id: uuid::Uuid::new_v4().to_string(),
        pool: pool.into(),
        probe: probe.into(),
        version,
        taken_at_ms,
        outcome: Outcome::Ok,
        metrics: BTreeMap::from([
            ("latency-ms".to_string(), 1.25),
            ("cpu-ms".to_string(), 3.0),
        ]),
        duration_ms: 2.5,
        fuel_used: Some(1234),
        message: String::new(),
        stderr: String::new(),
    }
}

pub fn batch(node: &str, samples: Vec<Sample>) -> ReportBatch {
    ReportBatch {
        node: node.into(),
        samples,
        dropped: 0,
    }
}

pub fn quick(interval_ms: u64) -> ProbeSettings {
    ProbeSettings {
        interval_ms,
        ..ProbeSettings::default()
    }
}

/// A raw HTTP call: status and parsed JSON body (Null if not JSON).
pub async fn raw(
    url: &str,
    method: reqwest::Method,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Asserts the error shape, status and code, and that the message mentions `needle`.
#[track_caller]
pub fn assert_error(got: &(u16, serde_json::Value), status: u16, code: &str, needle: &str) {
    let (s, v) = got;
    assert_eq!(*s, status, "status; body {v}");
    let e = &v["error"];
    assert_eq!(e["code"].as_str(), Some(code), "code; body {v}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {v}"
    );
}

/// Asserts a typed client error's status and code, and that its message mentions `needle`.
#[track_caller]
pub fn assert_api_error(e: &plb_client::ClientError, status: u16, code: &str, needle: &str) {
    match e {
        plb_client::ClientError::Api {
            status: s,
            code: c,
            message,
        } => {
            assert_eq!((*s, c.as_str()), (status, code), "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
        other => panic!("expected an API error, got {other}"),
    }
}
