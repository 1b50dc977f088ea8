//! The end-to-end cluster: a real balancer and real agents as `plb` child processes
//! (started, stopped, restarted on the same port, SQLite file and spool), probe uploads,
//! the agent's `/metrics`, the stored samples read from the SQLite file, and a module
//! proxy that corrupts module bytes on their way to the agent. Generic helpers (ports,
//! processes, polling) are in `plb-testkit`.
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use plb_testkit::{Proc, free_port, http_get, loopback, parse_metrics, plb_bin, wait_for};

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Balancer base URL.
    pub balancer: String,
    /// Agent token.
    pub token: String,
    /// Node id.
    pub node: String,
    /// Node address (the probes' target).
    pub address: String,
    /// Pools.
    pub pools: Vec<String>,
    /// Spool directory (kept across restarts).
    pub spool: PathBuf,
    /// `/metrics` port.
    pub metrics_port: u16,
    /// Extra flags, e.g. `--poll-ms 500`.
    pub extra: Vec<String>,
}

impl AgentSpec {
    /// The `plb agent ...` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "agent".into(),
            "--balancer".into(),
            self.balancer.clone(),
            "--token".into(),
            self.token.clone(),
            "--node".into(),
            self.node.clone(),
            "--address".into(),
            self.address.clone(),
            "--spool".into(),
            self.spool.display().to_string(),
            "--metrics-listen".into(),
            loopback(self.metrics_port).to_string(),
        ];
        for p in &self.pools {
            a.push("--pool".into());
            a.push(p.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts the agent and waits for its `/healthz`.
    pub fn start(&self, log: &Path) -> Result<Proc> {
        let mut p = Proc::spawn(
            &format!("agent {}", self.node),
            &plb_bin(),
            &self.args(),
            &[
                ("PLB_LOG", "info,plb_agent=debug".into()),
                ("PLB_LOG_JSON", "true".into()),
            ],
            log,
        )?;
        let url = format!("http://{}/healthz", loopback(self.metrics_port));
        let ok = wait_for(Duration::from_secs(30), "the agent's /healthz", || {
            if !p.alive() {
                return Some(false);
            }
            http_get(&url).ok().map(|_| true)
        })?;
        if !ok {
            bail!("agent exited at start; log:\n{}", p.log_tail(4000));
        }
        Ok(p)
    }

    /// An agent of `node` in `pool` on `balancer` (one URL, or several comma-separated)
    /// whose node sampler takes a sample every 100 ms and whose reports retry within
    /// 1 s, its spool under `dir`.
    pub fn sampling(balancer: String, token: String, node: &str, pool: &str, dir: &Path) -> Self {
        AgentSpec {
            balancer,
            token,
            node: node.into(),
            address: plb_testkit::tcp_target(),
            pools: vec![pool.into()],
            spool: dir.join(format!("spool-{node}")),
            metrics_port: free_port(),
            extra: [
                "--node-sample-ms",
                "100",
                "--batch-max-age-ms",
                "200",
                "--retry-max-ms",
                "1000",
                "--poll-ms",
                "1000",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }

    /// Scrapes the agent's `/metrics`.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        Ok(parse_metrics(&http_get(&format!(
            "http://{}/metrics",
            loopback(self.metrics_port)
        ))?))
    }
}

/// Stops an agent cleanly (SIGTERM) and checks that it exited with success and sent
/// every sample it took first (its reporter flushes the spool at shutdown and says so
/// when it cannot).
pub fn stop_agent_flushed(proc: &mut Proc) -> Result<()> {
    let status = proc.terminate(Duration::from_secs(20))?;
    if !status.success() {
        bail!("the agent exited with {status}:\n{}", proc.log_tail(4000));
    }
    if proc
        .log_tail(1 << 20)
        .contains("unsent samples stay in the spool")
    {
        bail!("samples left unsent:\n{}", proc.log_tail(4000));
    }
    Ok(())
}

/// A current-thread runtime (for [`pg_samples`]) and the URL of a fresh database on
/// the test binary's shared PostgreSQL server (`scripts/pg-temp.sh`).
pub fn shared_pg_database() -> Result<(tokio::runtime::Runtime, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pg = plb_testkit::PgServer::shared()?;
    let db = rt.block_on(pg.create_database())?;
    Ok((rt, db))
}

/// `(id, taken_at_ms)` of every stored sample of `node` in the PostgreSQL database at
/// `db_url`, or `None` while it does not answer.
pub fn pg_samples(
    rt: &tokio::runtime::Runtime,
    db_url: &str,
    node: &str,
) -> Option<Vec<(String, i64)>> {
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
            .await
            .ok()?;
        let task = tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT id, taken_at_ms FROM samples WHERE node = $1",
                &[&node],
            )
            .await
            .ok()?;
        drop(client);
        let _ = task.await;
        Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    })
}

/// A reverse proxy in front of the balancer that, while `corrupt` is on, flips one byte
/// of every module it serves (`GET /v1/modules/...`): the agent must refuse those
/// modules by their sha256. Everything else passes through unchanged.
#[derive(Debug)]
pub struct ModuleProxy {
    /// Where the agent connects.
    pub addr: SocketAddr,
    corrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    corrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

async fn proxy_handler(
    axum::extract::State(st): axum::extract::State<ProxyState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut up = st
        .http
        .request(parts.method.clone(), format!("{}{path}", st.upstream))
        .body(body);
    for (k, v) in &parts.headers {
        if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
            up = up.header(k, v);
        }
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    if path.starts_with("/v1/modules/") && status.is_success() {
        st.served.fetch_add(1, Ordering::Relaxed);
        if st.corrupt.load(Ordering::Relaxed)
            && let Some(last) = bytes.last_mut()
        {
            *last ^= 0x01;
        }
    }
    let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
    *out.status_mut() = status;
    for (k, v) in &headers {
        if k != axum::http::header::CONTENT_LENGTH && k != axum::http::header::TRANSFER_ENCODING {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

impl ModuleProxy {
    /// Starts the proxy on a free loopback port, forwarding to `upstream` (a base URL).
    pub fn start(upstream: &str) -> Result<ModuleProxy> {
        let corrupt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            corrupt: corrupt.clone(),
            served: served.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new()
                    .fallback(proxy_handler)
                    .with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(ModuleProxy {
            addr,
            corrupt,
            served,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Turns corruption of module bytes on or off.
    pub fn set_corrupt(&self, on: bool) {
        self.corrupt.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Modules served so far.
    pub fn modules_served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ModuleProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A real balancer (`plb balancer`) as a child process on a fixed loopback port with a
/// SQLite file in `dir`; it can be stopped and started again on the same port and file.
#[derive(Debug)]
pub struct Balancer {
    /// Its port.
    pub port: u16,
    /// Its state directory (the SQLite file lives here).
    pub dir: PathBuf,
    /// Admin token.
    pub admin_token: String,
    proc: Option<Proc>,
    starts: u32,
    /// A PostgreSQL URL and replica name instead of the SQLite file.
    replica: Option<(String, String)>,
}

/// A probe as the tests upload it.
#[derive(Debug, Clone)]
pub struct ProbeUpload<'a> {
    /// Pool.
    pub pool: &'a str,
    /// Probe name.
    pub name: &'a str,
    /// The component.
    pub wasm: &'a [u8],
    /// `quick` or `deep`.
    pub tier: &'a str,
    /// Interval.
    pub interval_ms: u64,
    /// Wall-clock limit.
    pub timeout_ms: u32,
    /// Fuel, `None` for unmetered.
    pub fuel: Option<u64>,
    /// Memory limit.
    pub memory_mib: u32,
    /// Config.
    pub config: &'a [(&'a str, &'a str)],
}

impl<'a> ProbeUpload<'a> {
    /// A `quick` probe without fuel metering and with 32 MiB of memory.
    pub fn quick(
        pool: &'a str,
        name: &'a str,
        wasm: &'a [u8],
        interval_ms: u64,
        timeout_ms: u32,
        config: &'a [(&'a str, &'a str)],
    ) -> Self {
        ProbeUpload {
            pool,
            name,
            wasm,
            tier: "quick",
            interval_ms,
            timeout_ms,
            fuel: None,
            memory_mib: 32,
            config,
        }
    }
}

/// One stored sample, read from the balancer's SQLite file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    /// Sample id.
    pub id: String,
    /// Node.
    pub node: String,
    /// Pool.
    pub pool: String,
    /// Probe.
    pub probe: String,
    /// Version.
    pub version: u32,
    /// When taken.
    pub taken_at_ms: i64,
    /// Outcome.
    pub outcome: String,
    /// Message.
    pub message: String,
    /// Duration.
    pub duration_ms: f64,
}

impl Balancer {
    /// Starts a balancer on a free port with a fresh state directory under `dir`.
    pub fn start(dir: &Path) -> Result<Balancer> {
        Self::start_with(dir, None)
    }

    /// Starts replica `name` on the PostgreSQL database at `db_url` (several replicas
    /// share one database), on a free port with its logs under `dir`.
    pub fn start_replica(dir: &Path, db_url: &str, name: &str) -> Result<Balancer> {
        Self::start_with(dir, Some((db_url.to_string(), name.to_string())))
    }

    fn start_with(dir: &Path, replica: Option<(String, String)>) -> Result<Balancer> {
        std::fs::create_dir_all(dir)?;
        let mut b = Balancer {
            port: free_port(),
            dir: dir.to_path_buf(),
            admin_token: "admin-secret-token".into(),
            proc: None,
            starts: 0,
            replica,
        };
        b.restart()?;
        Ok(b)
    }

    /// Kills it with SIGKILL (no clean shutdown); [`Self::restart`] starts it again.
    pub fn kill9(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(mut p) => {
                p.kill9();
                Ok(())
            }
            None => bail!("balancer not running"),
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", loopback(self.port))
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("plb.sqlite")
    }

    /// Starts it again (same port, same file) and waits for `/healthz`.
    pub fn restart(&mut self) -> Result<()> {
        if self.proc.is_some() {
            bail!("balancer already running");
        }
        self.starts += 1;
        let db = match &self.replica {
            Some((url, _)) => url.clone(),
            None => self.db_path().display().to_string(),
        };
        let mut args: Vec<String> = vec![
            "balancer".into(),
            "--listen".into(),
            loopback(self.port).to_string(),
            "--db".into(),
            db,
            // The tests' webhook receivers are on loopback (the operator's allow-list).
            "--webhook-allow-networks".into(),
            "127.0.0.0/8".into(),
        ];
        if let Some((_, name)) = &self.replica {
            args.extend(["--replica".into(), name.clone()]);
        }
        let log = self.dir.join(format!("balancer-{}.log", self.starts));
        let mut p = Proc::spawn(
            "balancer",
            &plb_bin(),
            &args,
            &[("PLB_ADMIN_TOKEN", self.admin_token.clone())],
            &log,
        )?;
        let url = format!("{}/healthz", self.url());
        let up = wait_for(Duration::from_secs(30), "the balancer's /healthz", || {
            if !p.alive() {
                return Some(false);
            }
            http_get(&url).ok().map(|_| true)
        })?;
        if !up {
            bail!("balancer exited at start; log:\n{}", p.log_tail(4000));
        }
        self.proc = Some(p);
        Ok(())
    }

    /// Stops it cleanly (SIGTERM).
    pub fn stop(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(mut p) => {
                let st = p.terminate(Duration::from_secs(15))?;
                if !st.success() {
                    bail!("balancer exited with {st}; log:\n{}", p.log_tail(3000));
                }
                Ok(())
            }
            None => bail!("balancer not running"),
        }
    }

    /// A JSON call with `token`; returns the status and the parsed body (or `null`).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let url = format!("{}{path}", self.url());
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method, &url)
                .bearer_auth(token)
                .timeout(Duration::from_secs(30));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            Ok((status, v))
        })
    }

    fn ok(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let (status, v) = self.call(method, path, token, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status}: {v}");
        }
        Ok(v)
    }

    /// Creates a client and a pool; returns the client's token.
    pub fn client_with_pool(&self, client: &str, pool: &str) -> Result<String> {
        let c = self.ok(
            "POST",
            "/v1/clients",
            &self.admin_token,
            Some(serde_json::json!({"name": client})),
        )?;
        let token = c["token"].as_str().context("client token")?.to_string();
        self.ok(
            "POST",
            "/v1/pools",
            &token,
            Some(serde_json::json!({"name": pool, "latency_slo_ms": 200})),
        )?;
        Ok(token)
    }

    /// An agent token for `pools`.
    pub fn agent_token(&self, client_token: &str, pools: &[&str]) -> Result<String> {
        let v = self.ok(
            "POST",
            "/v1/agent-tokens",
            client_token,
            Some(serde_json::json!({ "pools": pools })),
        )?;
        Ok(v["token"].as_str().context("agent token")?.to_string())
    }

    /// Uploads a probe (a new version when it exists); returns `(version, sha256)`.
    pub fn upload(&self, client_token: &str, p: &ProbeUpload<'_>) -> Result<(u32, String)> {
        let config: serde_json::Map<String, serde_json::Value> = p
            .config
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let mut url = reqwest::Url::parse(&format!(
            "{}/v1/pools/{}/probes/{}",
            self.url(),
            p.pool,
            p.name
        ))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("tier", p.tier)
                .append_pair("interval_ms", &p.interval_ms.to_string())
                .append_pair("timeout_ms", &p.timeout_ms.to_string())
                .append_pair("memory_mib", &p.memory_mib.to_string())
                .append_pair("config", &serde_json::Value::Object(config).to_string());
            match p.fuel {
                Some(f) => q.append_pair("fuel", &f.to_string()),
                None => q.append_pair("fuel", "null"),
            };
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let wasm = p.wasm.to_vec();
        let token = client_token.to_string();
        rt.block_on(async move {
            let resp = reqwest::Client::new()
                .put(url)
                .bearer_auth(token)
                .header("content-type", "application/wasm")
                .body(wasm)
                .timeout(Duration::from_secs(60))
                .send()
                .await?;
            let status = resp.status();
            let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            if !status.is_success() {
                bail!("upload {}: {status}: {v}", p.name);
            }
            let version = v["version"].as_u64().context("version")? as u32;
            let sha = v["sha256"].as_str().context("sha256")?.to_string();
            Ok((version, sha))
        })
    }

    /// Every stored sample of `node`, read from the SQLite file (read-only; safe while
    /// the balancer runs, as SQLite readers do not block its writer in WAL mode).
    pub fn samples(&self, node: &str) -> Result<Vec<StoredSample>> {
        let conn = rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = conn.prepare(
            "SELECT id, node, pool, probe, version, taken_at_ms, outcome, message, duration_ms
             FROM samples WHERE node = ?1 ORDER BY taken_at_ms",
        )?;
        let rows = stmt.query_map([node], |r| {
            Ok(StoredSample {
                id: r.get(0)?,
                node: r.get(1)?,
                pool: r.get(2)?,
                probe: r.get(3)?,
                version: r.get(4)?,
                taken_at_ms: r.get(5)?,
                outcome: r.get(6)?,
                message: r.get(7)?,
                duration_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
