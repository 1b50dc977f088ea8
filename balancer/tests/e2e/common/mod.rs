//! Shared helpers of the balancer's integration tests: a real balancer on a loopback
//! port 0 over a real store (a SQLite file in a tempdir, or a database of its own on the
//! test binary's one throwaway PostgreSQL server), typed clients for each role, raw HTTP
//! calls that check the error shape, and direct reads of the store.
//!
//! `on_each_backend!(test_a, test_b)` turns `async fn test_a(backend: Backend)` into the
//! tests `sqlite::test_a` and `postgres::test_a`. Tests on PostgreSQL never skip: if its
//! server cannot start, they fail.
#![allow(dead_code)]

/// One `#[tokio::test]` per store backend for each `async fn name(backend: Backend)`,
/// in modules `sqlite` and `postgres` (one use per test file).
#[allow(unused_macros)]
macro_rules! on_each_backend {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::Backend::Postgres).await
                }
            )+
        }
    };
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plb_api::{Outcome, ProbeSettings, RegisterRequest, ReportBatch, Sample};
use plb_balancer::config::DbLocation;
use plb_balancer::{BalancerConfig, RunningBalancer};
use plb_client::Client;
use plb_testkit::PgServer;

pub const ADMIN: &str = "test-admin-token-0123456789";

/// A store backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's tempdir.
    Sqlite,
    /// A new database on this test binary's PostgreSQL server.
    Postgres,
}

/// A test's store: where it is, and direct reads of it (like the SQLite file's).
#[derive(Debug, Clone)]
pub enum TestDb {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// The PostgreSQL database's URL.
    Postgres(String),
}

impl TestDb {
    /// A fresh store for `backend`: `dir/plb.db`, or a new PostgreSQL database (the
    /// binary's server started on first use).
    pub async fn new(backend: Backend, dir: &Path) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::Sqlite(dir.join("plb.db")),
            Backend::Postgres => {
                let pg = tokio::task::spawn_blocking(PgServer::shared)
                    .await
                    .expect("task")
                    .expect("PostgreSQL starts (scripts/pg-temp.sh, postgresql-15)");
                TestDb::Postgres(pg.create_database().await.expect("CREATE DATABASE"))
            }
        }
    }

    /// As `--db` takes it.
    pub fn location(&self) -> DbLocation {
        match self {
            TestDb::Sqlite(p) => DbLocation::Sqlite(p.clone()),
            TestDb::Postgres(u) => DbLocation::Postgres(u.clone()),
        }
    }

    /// As the `--db` argument.
    pub fn arg(&self) -> String {
        match self {
            TestDb::Sqlite(p) => p.display().to_string(),
            TestDb::Postgres(u) => u.clone(),
        }
    }

    /// Every row of `sql`, each column as text (NULL as "").
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            TestDb::Sqlite(p) => sqlite_rows(p, sql),
            TestDb::Postgres(url) => pg_rows(url, sql),
        }
    }

    /// The integer of `sql` (one row, one column; NULL as 0).
    pub fn count(&self, sql: &str) -> i64 {
        match self {
            TestDb::Sqlite(p) => count(p, sql),
            TestDb::Postgres(url) => {
                let rows = pg_rows(url, sql);
                let cell = rows.first().and_then(|r| r.first()).cloned();
                let cell = cell.unwrap_or_default();
                if cell.is_empty() {
                    0
                } else {
                    cell.parse()
                        .unwrap_or_else(|e| panic!("{sql}: {cell:?}: {e}"))
                }
            }
        }
    }
}

fn sqlite_rows(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    let mut q = conn.prepare(sql).expect("prepare");
    let n = q.column_count();
    q.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                    rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                })
            })
            .collect()
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Rows of `sql` on a PostgreSQL database, as text (the simple query protocol), from
/// sync test code on a multi-threaded runtime.
fn pg_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    let run = async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        let msgs = client.simple_query(sql).await.expect(sql);
        drop(client);
        let _ = task.await;
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or_default().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(run))
}

/// A balancer in this process, its tempdir and an admin client. Its store is
/// [`TestBalancer::store_db`]: the SQLite file in `dir`, unless it was started on
/// PostgreSQL (the database is then remembered by `dir`, so a test that stops and
/// restarts the balancer in the same `dir` keeps it).
pub struct TestBalancer {
    pub running: RunningBalancer,
    pub dir: tempfile::TempDir,
    pub admin: Client,
}

/// PostgreSQL databases of the balancers started on them, by tempdir.
static PG_DBS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

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
        Self::start_with_on(Backend::Sqlite, tweak).await
    }

    pub async fn start_on(backend: Backend) -> TestBalancer {
        Self::start_with_on(backend, |_| {}).await
    }

    pub async fn start_with_on(
        backend: Backend,
        tweak: impl FnOnce(&mut BalancerConfig),
    ) -> TestBalancer {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_db = TestDb::new(backend, dir.path()).await;
        Self::start_in(dir, store_db, tweak).await
    }

    /// A balancer on an existing store (a replica beside others on one PostgreSQL
    /// database), in a tempdir of its own.
    pub async fn start_with_db(store_db: TestDb, tweak: impl FnOnce(&mut BalancerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, store_db, tweak).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        store_db: TestDb,
        tweak: impl FnOnce(&mut BalancerConfig),
    ) -> TestBalancer {
        let mut cfg = config(dir.path());
        cfg.db = store_db.location();
        tweak(&mut cfg);
        let running = plb_balancer::start(&cfg).await.expect("balancer starts");
        let admin = Client::new(&running.url(), ADMIN).expect("client");
        if let TestDb::Postgres(url) = &store_db {
            PG_DBS
                .lock()
                .expect("lock")
                .push((dir.path().to_path_buf(), url.clone()));
        }
        TestBalancer {
            running,
            dir,
            admin,
        }
    }

    /// Its store.
    pub fn store_db(&self) -> TestDb {
        let dbs = PG_DBS.lock().expect("lock");
        match dbs.iter().find(|(d, _)| d == self.dir.path()) {
            Some((_, url)) => TestDb::Postgres(url.clone()),
            None => TestDb::Sqlite(self.db()),
        }
    }

    /// Its store's backend.
    pub fn backend(&self) -> Backend {
        match self.store_db() {
            TestDb::Sqlite(_) => Backend::Sqlite,
            TestDb::Postgres(_) => Backend::Postgres,
        }
    }

    /// A config for restarting it on the same store.
    pub fn config(&self) -> BalancerConfig {
        let mut cfg = config(self.dir.path());
        cfg.db = self.store_db().location();
        cfg
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    /// The SQLite file (meaningful on [`Backend::Sqlite`] only).
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

    /// Nodes `n1..=nN` of `client`'s pool `pool`, each registered by its own agent
    /// (addresses 127.0.0.1:9001 and on), with their agents.
    pub async fn nodes(&self, client: &Client, pool: &str, n: usize) -> Vec<(String, Client)> {
        let mut agents = Vec::new();
        for i in 1..=n {
            let node = format!("n{i}");
            let agent = self.agent(client, &[pool]).await;
            agent
                .register(&register(
                    &node,
                    &format!("127.0.0.1:{}", 9000 + i),
                    &[pool],
                ))
                .await
                .expect("register");
            agents.push((node, agent));
        }
        agents
    }

    /// The integer `sql` answers (one row, one column) in the store.
    pub fn count(&self, sql: &str) -> i64 {
        self.store_db().count(sql)
    }

    /// Every row of `sql` in the store, each column as text.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.store_db().rows(sql)
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

/// A scale-up notice for `client_id`'s pool `pool`, to `to` nodes (one node now).
pub fn scaling(client_id: i64, pool: &str, to: u32) -> plb_balancer::store::ScalingRecord {
    plb_balancer::store::ScalingRecord {
        client_id,
        pool: pool.into(),
        at_ms: plb_testkit::now_ms(),
        notice: plb_api::ScalingNotice {
            direction: "up".into(),
            from_nodes: 1,
            to_nodes: to,
            current_nodes: 1,
            horizon_min: 5,
            reason: "test".into(),
        },
    }
}
