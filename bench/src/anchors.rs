//! Real balancers as anchors of the live run: HAProxy (`roundrobin`, `leastconn`),
//! nginx (`least_conn`) and PLB's own reverse proxy (`plb balancer --proxy`, on its
//! feedback alone and with agents running a probe), each a child process on a free
//! loopback port in front of its own lane of live backends. Their config files are generated in a temporary directory
//! pointing at the lane's backends; the load generator sends the same arrivals through
//! them as through the in-process policies, and the lane's backends report where each
//! request arrived (the share and failure-window figures).
//!
//! Settings, the same for every run:
//! - HAProxy: active health checks like the in-process baselines' (`GET /health` every
//!   1 s, 500 ms timeout, down after 2 failures, up after 2 passes), `retries 3` and
//!   `option redispatch` (a refused connection is retried on another server).
//! - nginx: its defaults (passive checks: `max_fails=1 fail_timeout=10s` on connection
//!   errors and timeouts, which it retries on the next server), upstream keep-alive.
//! - PLB (`plb-proxy`): a fresh balancer with an empty SQLite file, one client, the
//!   pool with the scenario's SLO, every backend registered as a node; no agent and no
//!   probe, so it routes on the proxy's feedback alone.
//! - PLB with the probe (`plb-proxy-probe`): the same, plus the `http-check` sample
//!   probe uploaded to the pool (every 500 ms, `GET /status`, its `queued` field a
//!   metric, 400 ms timeout) and a `plb agent` per backend, started once the backends
//!   serve and a few seconds before the load (node sampler off: every "node" here is
//!   the same machine; reports batched for at most 250 ms). Its CPU includes the agents'.
//! - PLB with a health probe (`plb-proxy-health`): the same agents, but the probe times
//!   `GET /health` (a small fixed piece of work at the node's current speed), so its
//!   `http-*-ms` metrics measure how fast the node is now, queue or not: the useful
//!   probe, where `plb-proxy-probe`'s queue depth stays at 0 on a 2-worker node until it
//!   saturates.
//!
//! Cost: the CPU time (user + system, from `/proc/<pid>/stat`, children included) each
//! process tree spends from the first arrival to the last reply, per request sent.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use plb_routing::PolicyKind;
use serde::Serialize;
use tokio::process::{Child, Command};

/// A real balancer run beside the in-process policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// HAProxy, `balance roundrobin`.
    HaproxyRoundRobin,
    /// HAProxy, `balance leastconn`.
    HaproxyLeastConn,
    /// nginx, `least_conn`.
    NginxLeastConn,
    /// PLB's reverse proxy (`plb balancer --proxy`), on its feedback alone.
    PlbProxy,
    /// PLB's reverse proxy with an agent per backend running the `http-check` sample
    /// probe on the backend's `/status` every 500 ms (its `queued` field a metric).
    PlbProxyProbe,
    /// PLB's reverse proxy with an agent per backend running the `http-check` sample
    /// probe on the backend's `/health` every 500 ms (its timings the metrics).
    PlbProxyHealth,
}

impl Anchor {
    /// Every anchor, in table order.
    pub const ALL: [Anchor; 6] = [
        Anchor::HaproxyRoundRobin,
        Anchor::HaproxyLeastConn,
        Anchor::NginxLeastConn,
        Anchor::PlbProxy,
        Anchor::PlbProxyProbe,
        Anchor::PlbProxyHealth,
    ];

    /// Its name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Anchor::HaproxyRoundRobin => "haproxy-rr",
            Anchor::HaproxyLeastConn => "haproxy-lc",
            Anchor::NginxLeastConn => "nginx-lc",
            Anchor::PlbProxy => "plb-proxy",
            Anchor::PlbProxyProbe => "plb-proxy-probe",
            Anchor::PlbProxyHealth => "plb-proxy-health",
        }
    }

    /// Whether it is a baseline (every anchor but PLB's own proxy).
    pub fn is_baseline(self) -> bool {
        !self.is_plb()
    }

    /// Whether it is PLB's own proxy (with or without a probe).
    pub fn is_plb(self) -> bool {
        matches!(
            self,
            Anchor::PlbProxy | Anchor::PlbProxyProbe | Anchor::PlbProxyHealth
        )
    }

    /// The `http-check` config of its probe, if it runs agents with one.
    pub fn probe_config(self) -> Option<serde_json::Value> {
        match self {
            Anchor::PlbProxyProbe => {
                Some(serde_json::json!({"path": "/status", "json-field": "queued"}))
            }
            Anchor::PlbProxyHealth => Some(serde_json::json!({"path": "/health"})),
            _ => None,
        }
    }

    /// The program it runs.
    pub fn program(self) -> &'static str {
        match self {
            Anchor::HaproxyRoundRobin | Anchor::HaproxyLeastConn => "haproxy",
            Anchor::NginxLeastConn => "nginx",
            Anchor::PlbProxy | Anchor::PlbProxyProbe | Anchor::PlbProxyHealth => "plb",
        }
    }

    /// `all`, `none` or a comma-separated list of names.
    pub fn parse_list(text: &str) -> Result<Vec<Anchor>, String> {
        match text.trim() {
            "all" => return Ok(Anchor::ALL.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let a = Anchor::ALL
                .into_iter()
                .find(|a| a.name() == part)
                .ok_or_else(|| {
                    format!(
                        "unknown anchor {part:?}; known: all, none, {}",
                        Anchor::ALL.map(Anchor::name).join(", ")
                    )
                })?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }
}

/// Where the anchors' programs are (`None`: not found), and which policy PLB's proxy
/// lanes route by.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// `haproxy`.
    pub haproxy: Option<PathBuf>,
    /// `nginx`.
    pub nginx: Option<PathBuf>,
    /// `plb` (for `plb balancer --proxy`).
    pub plb: Option<PathBuf>,
    /// The routing policy of PLB's proxy lanes (the pool's `policy`); `None`: the pool's
    /// default, `plb`.
    pub proxy_policy: Option<PolicyKind>,
    /// Whether the live run reads what PLB's proxy lanes publish ([`Watch`]).
    pub watch: bool,
}

impl Tools {
    /// Looks for `haproxy` and `nginx` on `PATH` (and in `/usr/sbin`, `/sbin`), and for
    /// `plb` at `plb_bin` if given, else this program if it is `plb`, else beside it
    /// or one directory up (a test binary in `target/<profile>/deps`), else on `PATH`.
    pub fn find(plb_bin: Option<&Path>) -> Tools {
        let plb = match plb_bin {
            Some(p) => p.is_file().then(|| p.to_path_buf()),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| {
                    let name = format!("plb{}", std::env::consts::EXE_SUFFIX);
                    if exe.file_name().is_some_and(|n| n == name.as_str()) {
                        return Some(exe);
                    }
                    let dir = exe.parent()?;
                    [dir.join(&name), dir.parent()?.join(&name)]
                        .into_iter()
                        .find(|p| p.is_file())
                })
                .or_else(|| which("plb")),
        };
        Tools {
            haproxy: which("haproxy"),
            nginx: which("nginx"),
            plb,
            proxy_policy: None,
            watch: false,
        }
    }

    /// The program of `anchor`, or why it cannot run.
    pub fn program(&self, anchor: Anchor) -> Result<&Path, String> {
        let found = match anchor.program() {
            "haproxy" => &self.haproxy,
            "nginx" => &self.nginx,
            _ => &self.plb,
        };
        found.as_deref().ok_or_else(|| match anchor.program() {
            "haproxy" => "haproxy not found (apt-get install -y haproxy)".to_owned(),
            "nginx" => "nginx not found (apt-get install -y nginx-light)".to_owned(),
            _ => "plb not found (cargo build -p plb, or --plb-bin)".to_owned(),
        })
    }
}

/// `bin` on `PATH`, or in `/usr/sbin` or `/sbin` (where Debian puts daemons).
fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// A temporary directory, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "plb-bench-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback address (bound, then released).
fn free_addr() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr().map_err(|e| format!("free port: {e}"))
}

/// A running anchor: its process (killed when dropped) and where it listens.
#[derive(Debug)]
pub struct Running {
    /// Which anchor.
    pub anchor: Anchor,
    /// Where the load goes.
    pub listen: SocketAddr,
    child: Child,
    dir: TempDir,
    /// The agents still to start (the anchors with a probe), then started.
    agents: Agents,
    /// PLB's API with the client's token, to read what the balancer predicts.
    watch: Option<Watch>,
}

/// A PLB anchor's API, read during the run for what its pipeline publishes.
#[derive(Debug, Clone)]
pub struct Watch {
    api: SocketAddr,
    token: String,
}

/// What a PLB anchor's pipeline published, from its nodes view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// `(node index, routed degrade score, share of the pool's routing weight)`, for
    /// the nodes `n0`, `n1`, ... it lists with routing figures.
    pub nodes: Vec<(usize, f64, f64)>,
    /// `(probe metric, trust)`.
    pub trust: Vec<(String, f64)>,
}

impl Published {
    /// Reads a `GET /v1/pools/{pool}/nodes` body; what it does not hold is left out.
    pub fn from_view(view: &serde_json::Value) -> Published {
        let nodes = view["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| {
                        let i = n["node"].as_str()?.strip_prefix('n')?.parse().ok()?;
                        let r = &n["routing"];
                        Some((i, r["degrade_score"].as_f64()?, r["share"].as_f64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let trust = view["metric_trust"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| Some((m["metric"].as_str()?.to_owned(), m["trust"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Published { nodes, trust }
    }
}

impl Watch {
    /// The pool's nodes view now.
    pub async fn read(&self, http: &ApiClient) -> Result<Published, String> {
        let url = format!("http://{}/v1/pools/web/nodes", self.api);
        let (status, body) = call(http, Method::GET, url, &self.token, None).await?;
        if status.is_success() {
            Ok(Published::from_view(&body))
        } else {
            Err(format!("nodes view: {status} {body}"))
        }
    }
}

/// A client for [`Watch::read`].
pub fn api_client() -> ApiClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The agents of an anchor with a probe: one per backend.
#[derive(Debug, Default)]
enum Agents {
    /// Not that anchor.
    #[default]
    None,
    /// To start once the backends serve (see [`Running::start_agents`]).
    Planned {
        /// `plb`.
        program: PathBuf,
        /// The balancer's API.
        api: SocketAddr,
        /// `(node id, backend address, agent token)`.
        nodes: Vec<(String, SocketAddr, String)>,
    },
    /// Running, killed when dropped.
    Started(Vec<Child>),
}

impl Running {
    /// A PLB anchor's API, to read what it publishes ([`Watch::read`]).
    pub fn watch(&self) -> Option<Watch> {
        self.watch.clone()
    }

    /// The process id of the anchor's main process.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU seconds (user + system) its process trees (the anchor's and its agents')
    /// have used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let own = self.pid().and_then(tree_cpu_seconds)?;
        let agents: f64 = match &self.agents {
            Agents::Started(children) => children
                .iter()
                .filter_map(|c| c.id().and_then(tree_cpu_seconds))
                .sum(),
            _ => 0.0,
        };
        Some(own + agents)
    }

    /// Starts the agents of an anchor with a probe (no effect for the others): call
    /// it once the backends serve, so that no probe runs against a backend that does
    /// not answer yet. The agents fetch the probe, compile it and run it on their own;
    /// give them a few seconds before the load starts.
    pub fn start_agents(&mut self) -> Result<(), String> {
        let Agents::Planned {
            program,
            api,
            nodes,
        } = std::mem::take(&mut self.agents)
        else {
            return Ok(());
        };
        let mut children = Vec::with_capacity(nodes.len());
        for (node, backend, token) in nodes {
            let log = std::fs::File::create(self.dir.0.join(format!("agent-{node}.log")))
                .map_err(|e| format!("agent log: {e}"))?;
            let log2 = log.try_clone().map_err(|e| format!("agent log: {e}"))?;
            let metrics = free_addr()?;
            let mut cmd = Command::new(&program);
            cmd.arg("agent")
                .arg("--balancer")
                .arg(format!("http://{api}"))
                .arg("--token")
                .arg(&token)
                .arg("--node")
                .arg(&node)
                .arg("--address")
                .arg(backend.to_string())
                .arg("--pool")
                .arg("web")
                .arg("--spool")
                .arg(self.dir.0.join(format!("spool-{node}")))
                .arg("--metrics-listen")
                .arg(metrics.to_string())
                // Every "node" here shares one machine: its own sampler would report
                // the same host eight times.
                .arg("--node-sample-ms")
                .arg("0")
                .arg("--poll-ms")
                .arg("500")
                .arg("--batch-max-age-ms")
                .arg("250")
                .env("PLB_LOG", "warn")
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log2))
                .stdin(Stdio::null())
                .kill_on_drop(true);
            children.push(
                cmd.spawn()
                    .map_err(|e| format!("starting the agent of {node}: {e}"))?,
            );
        }
        self.agents = Agents::Started(children);
        Ok(())
    }

    /// The tail of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.0.join("log"))
    }

    /// Stops it and every process it started: SIGTERM first (nginx's master then stops
    /// its workers, which a SIGKILL of the master would leave behind), SIGKILL to
    /// whatever is left after 3 s.
    pub async fn stop(mut self) {
        if let Agents::Started(children) = &mut self.agents {
            for c in children.iter_mut() {
                if let Some(pid) = c.id() {
                    signal("TERM", pid).await;
                }
            }
            for c in children.iter_mut() {
                if tokio::time::timeout(Duration::from_secs(3), c.wait())
                    .await
                    .is_err()
                {
                    let _ = c.start_kill();
                }
            }
        }
        let Some(pid) = self.pid() else {
            return;
        };
        let tree = descendants(pid);
        signal("TERM", pid).await;
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        }
        for p in tree {
            if proc_stat(p).is_some() {
                signal("KILL", p).await;
            }
        }
    }
}

/// Sends `sig` to process `pid` (with `kill`: the crate has no unsafe code).
async fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// The processes descending from `pid` (children, their children, ...).
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| proc_stat(p).map(|(ppid, _)| (p, ppid)))
        .collect();
    let mut tree = vec![pid];
    let mut k = 0;
    while k < tree.len() {
        let parent = tree[k];
        tree.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        k += 1;
    }
    tree.remove(0);
    tree
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(1500);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].trim().to_owned()
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds of `pid` and its descendants (live ones, from `/proc`).
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let own = proc_stat(pid)?.1;
    let children: u64 = descendants(pid)
        .into_iter()
        .filter_map(|p| proc_stat(p).map(|(_, t)| t))
        .sum();
    Some((own + children) as f64 / TICKS)
}

/// `(ppid, utime + stime)` of a process.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Starts `anchor` in front of `backends` for a pool whose SLO is `slo` seconds; returns
/// once it listens (PLB: once its engine knows every node).
pub async fn start(
    anchor: Anchor,
    tools: &Tools,
    backends: &[SocketAddr],
    slo: f64,
) -> Result<Running, String> {
    let program = tools.program(anchor)?.to_path_buf();
    let dir = TempDir::new(anchor.name())?;
    let listen = free_addr()?;
    let log = std::fs::File::create(dir.0.join("log")).map_err(|e| format!("log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    let mut cmd = Command::new(&program);
    cmd.stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let admin = "plb-bench-admin-token-0123456789";
    let mut api = None;
    match anchor {
        Anchor::HaproxyRoundRobin | Anchor::HaproxyLeastConn => {
            let cfg = dir.0.join("haproxy.cfg");
            let balance = if anchor == Anchor::HaproxyLeastConn {
                "leastconn"
            } else {
                "roundrobin"
            };
            write(&cfg, &haproxy_config(listen, backends, balance))?;
            cmd.arg("-db").arg("-f").arg(&cfg);
        }
        Anchor::NginxLeastConn => {
            let cfg = dir.0.join("nginx.conf");
            write(&cfg, &nginx_config(listen, backends, &dir.0))?;
            cmd.arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&cfg)
                .arg("-e")
                .arg(dir.0.join("error.log"));
        }
        Anchor::PlbProxy | Anchor::PlbProxyProbe | Anchor::PlbProxyHealth => {
            let a = free_addr()?;
            api = Some(a);
            // `plb balancer ...`, or the balancer crate's own `plb-balancer ...`.
            let standalone = program
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("plb-balancer"));
            if !standalone {
                cmd.arg("balancer");
            }
            cmd.arg("--listen")
                .arg(a.to_string())
                .arg("--db")
                .arg(dir.0.join("plb.db"))
                .arg("--admin-token")
                .arg(admin)
                .arg("--proxy")
                .arg(format!("1/web={listen}"))
                .arg("--proxy-timeout-ms")
                .arg("30000")
                .env("PLB_LOG", "warn");
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    let mut running = Running {
        anchor,
        listen,
        child,
        dir,
        agents: Agents::None,
        watch: None,
    };
    let ready = async {
        let mut agents = Agents::None;
        let mut watch = None;
        if let Some(api) = api {
            let policy = tools.proxy_policy;
            let setup = setup_plb(api, admin, backends, slo, policy).await?;
            watch = Some(Watch {
                api,
                token: setup.client_token.clone(),
            });
            if let Some(config) = anchor.probe_config() {
                upload_probe(api, &setup.client_token, &config).await?;
                agents = Agents::Planned {
                    program: program.clone(),
                    api,
                    nodes: setup.nodes,
                };
            }
        }
        wait_listening(listen).await.map(|()| (agents, watch))
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), ready).await;
    let exited = running.child.try_wait().ok().flatten();
    match (outcome, exited) {
        (Ok(Ok((agents, watch))), None) => {
            running.agents = agents;
            running.watch = watch;
            Ok(running)
        }
        (_, Some(status)) => Err(format!(
            "{} exited at start ({status}): {}",
            anchor.name(),
            running.log_tail()
        )),
        (Ok(Err(e)), None) => {
            let tail = running.log_tail();
            running.stop().await;
            Err(format!("{}: {e}; log: {tail}", anchor.name()))
        }
        (Err(_), None) => {
            let tail = running.log_tail();
            running.stop().await;
            Err(format!("{} not ready in 30 s; log: {tail}", anchor.name()))
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// HAProxy's config: health checks as the in-process baselines get them.
pub fn haproxy_config(listen: SocketAddr, backends: &[SocketAddr], balance: &str) -> String {
    let mut cfg = format!(
        "global\n    maxconn 8192\n\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    \
         timeout server 30s\n    timeout check 500ms\n    retries 3\n    option redispatch\n\n\
         frontend fe\n    bind {listen}\n    default_backend be\n\n\
         backend be\n    balance {balance}\n    option httpchk GET /health\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} {b} check inter 1s fall 2 rise 2\n"
        ));
    }
    cfg
}

/// nginx's config: `least_conn` with its default passive checks, keep-alive upstream,
/// everything under `dir`.
pub fn nginx_config(listen: SocketAddr, backends: &[SocketAddr], dir: &Path) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for b in backends {
        servers.push_str(&format!("        server {b};\n"));
    }
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{\n    worker_connections 8192;\n}}\n\
         http {{\n    access_log off;\n\
         \x20   client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         \x20   upstream be {{\n        least_conn;\n{servers}        keepalive 64;\n    }}\n\
         \x20   server {{\n        listen {listen};\n        location / {{\n\
         \x20           proxy_pass http://be;\n            proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n        }}\n    }}\n}}\n"
    )
}

/// Waits until `addr` accepts connections.
async fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The client of PLB's API.
pub type ApiClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One JSON call to PLB's API; the status and the parsed body.
async fn call(
    http: &ApiClient,
    method: Method,
    url: String,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value), String> {
    let body = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
    let (status, bytes) = send(http, method, &url, token, "application/json", body).await?;
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

/// One authenticated request with a `content_type` body: the status and the body.
async fn send(
    http: &ApiClient,
    method: Method,
    url: &str,
    token: &str,
    content_type: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(Full::new(body))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = http.request(req).await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// PLB as a user sets it up: a client (id 1, the proxy's owner), the pool `web` with the
/// SLO (and `policy`, if given), one agent token per node registering the node; then
/// waits until the engine routes to every node (its topology refresh runs on its tick).
async fn setup_plb(
    api: SocketAddr,
    admin: &str,
    backends: &[SocketAddr],
    slo: f64,
    policy: Option<PolicyKind>,
) -> Result<PlbSetup, String> {
    let http = api_client();
    let base = format!("http://{api}");
    loop {
        let health = call(&http, Method::GET, format!("{base}/healthz"), admin, None).await;
        if matches!(health, Ok((StatusCode::OK, _))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = |what: &str, (status, body): (StatusCode, serde_json::Value)| {
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{what}: {status} {body}"))
        }
    };
    let created = ok(
        "creating the client",
        call(
            &http,
            Method::POST,
            format!("{base}/v1/clients"),
            admin,
            Some(serde_json::json!({"name": "bench"})),
        )
        .await?,
    )?;
    if created["id"] != 1 {
        return Err(format!(
            "the client got id {} (the proxy expects 1)",
            created["id"]
        ));
    }
    let token = created["token"]
        .as_str()
        .ok_or("no client token")?
        .to_owned();
    ok(
        "creating the pool",
        call(
            &http,
            Method::POST,
            format!("{base}/v1/pools"),
            &token,
            Some(serde_json::json!({"name": "web", "latency_slo_ms": slo * 1000.0})),
        )
        .await?,
    )?;
    if let Some(policy) = policy {
        ok(
            "setting the pool's policy",
            call(
                &http,
                Method::PATCH,
                format!("{base}/v1/pools/web"),
                &token,
                Some(serde_json::json!({ "policy": policy.as_str() })),
            )
            .await?,
        )?;
    }
    let mut nodes = Vec::with_capacity(backends.len());
    for (i, b) in backends.iter().enumerate() {
        let agent = ok(
            "an agent token",
            call(
                &http,
                Method::POST,
                format!("{base}/v1/agent-tokens"),
                &token,
                Some(serde_json::json!({"pools": ["web"]})),
            )
            .await?,
        )?;
        let agent = agent["token"].as_str().ok_or("no agent token")?.to_owned();
        nodes.push((format!("n{i}"), *b, agent.clone()));
        ok(
            "registering a node",
            call(
                &http,
                Method::POST,
                format!("{base}/v1/agents/register"),
                &agent,
                Some(serde_json::json!({
                    "node": format!("n{i}"),
                    "address": b.to_string(),
                    "pools": ["web"],
                })),
            )
            .await?,
        )?;
    }
    // The engine reads the pool's nodes on its tick: wait until it lists them all.
    loop {
        let (status, body) = call(
            &http,
            Method::GET,
            format!("{base}/v1/pools/web/nodes"),
            &token,
            None,
        )
        .await?;
        let listed = body["nodes"].as_array().map_or(0, Vec::len);
        if status.is_success() && listed >= backends.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One more engine tick so the proxy's router has them too.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    Ok(PlbSetup {
        client_token: token,
        nodes,
    })
}

/// What [`setup_plb`] made: the client's token and each node's agent token.
struct PlbSetup {
    client_token: String,
    /// `(node id, backend address, agent token)`.
    nodes: Vec<(String, SocketAddr, String)>,
}

/// Uploads the `http-check` sample probe to the pool `web` as a user would, run every
/// 500 ms with `config` (the anchor's [`Anchor::probe_config`]).
async fn upload_probe(
    api: SocketAddr,
    token: &str,
    config: &serde_json::Value,
) -> Result<(), String> {
    let http = api_client();
    let config = config.to_string();
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("tier", "quick"),
            ("interval_ms", "500"),
            ("timeout_ms", "400"),
            ("memory_mib", "32"),
            ("fuel", "null"),
            ("config", config.as_str()),
        ])
        .finish();
    let url = format!("http://{api}/v1/pools/web/probes/http-check?{query}");
    let (status, body) = send(
        &http,
        Method::PUT,
        &url,
        token,
        "application/wasm",
        Bytes::from_static(plb_probe_artifacts::HTTP_CHECK),
    )
    .await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "uploading the probe: {status} {}",
            String::from_utf8_lossy(&body)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_view_gives_each_nodes_score_and_each_metrics_trust() {
        let view = serde_json::json!({
            "pool": "web",
            "nodes": [
                {"node": "n0", "routing": {"degrade_score": 0.25, "share": 0.6}},
                {"node": "n3", "routing": {"degrade_score": 1.0, "share": 0.4}},
                {"node": "n1", "routing": null},
                {"node": "other", "routing": {"degrade_score": 0.5, "share": 1.0}},
            ],
            "metric_trust": [{"metric": "http-check/http-total-ms", "trust": 0.4}],
        });
        let p = Published::from_view(&view);
        assert_eq!(p.nodes, vec![(0, 0.25, 0.6), (3, 1.0, 0.4)]);
        assert_eq!(p.trust, vec![("http-check/http-total-ms".to_owned(), 0.4)]);
        assert_eq!(
            Published::from_view(&serde_json::Value::Null),
            Published::default()
        );
    }

    #[test]
    fn names_parse_and_unknown_is_refused() {
        assert_eq!(Anchor::parse_list("all").expect("all").len(), 6);
        assert!(Anchor::parse_list("none").expect("none").is_empty());
        assert_eq!(
            Anchor::parse_list("nginx-lc, haproxy-lc,nginx-lc").expect("two"),
            vec![Anchor::NginxLeastConn, Anchor::HaproxyLeastConn]
        );
        let e = Anchor::parse_list("envoy").expect_err("unknown");
        assert!(e.contains("haproxy-rr"), "{e}");
        assert!(!Anchor::PlbProxy.is_baseline() && Anchor::NginxLeastConn.is_baseline());
    }

    #[test]
    fn configs_point_at_every_backend() {
        let listen: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let b: Vec<SocketAddr> = ["127.0.0.1:9001", "127.0.0.1:9002"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let h = haproxy_config(listen, &b, "leastconn");
        assert!(h.contains("bind 127.0.0.1:9000") && h.contains("balance leastconn"));
        assert!(h.contains("server s1 127.0.0.1:9002 check inter 1s fall 2 rise 2"));
        let n = nginx_config(listen, &b, Path::new("/tmp/x"));
        assert!(n.contains("least_conn;") && n.contains("server 127.0.0.1:9001;"));
        assert!(n.contains("listen 127.0.0.1:9000;"));
    }

    #[tokio::test]
    async fn nginx_starts_in_front_of_backends_and_stops_with_its_workers() {
        let tools = Tools::find(None);
        if tools.nginx.is_none() {
            // The bench reports it as not run; nothing to check here.
            assert!(
                tools
                    .program(Anchor::NginxLeastConn)
                    .expect_err("missing")
                    .contains("nginx-light")
            );
            return;
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let backend = l.local_addr().expect("addr");
        let running = start(Anchor::NginxLeastConn, &tools, &[backend], 0.1)
            .await
            .expect("nginx starts");
        let pid = running.pid().expect("running");
        let workers = descendants(pid);
        assert!(!workers.is_empty(), "nginx runs a worker");
        assert!(running.cpu_seconds().is_some());
        running.stop().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for w in workers {
            assert!(proc_stat(w).is_none(), "worker {w} left behind");
        }
    }

    #[test]
    fn cpu_of_this_process_is_read() {
        let pid = std::process::id();
        let before = tree_cpu_seconds(pid).expect("readable");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 7);
        let after = tree_cpu_seconds(pid).expect("readable");
        assert!(after - before >= 0.1, "{before} -> {after}");
    }
}
