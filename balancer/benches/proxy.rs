//! Proxy benchmark: throughput and latency of PLB's reverse proxy (`plb-balancer --proxy`,
//! its own process, the real engine routing every request and taking its feedback) next to
//! HAProxy (round-robin, its own process) and to the backends directly, over the same two
//! loopback backends with the same closed-loop load, in the same run; PLB twice, as it
//! ships (the fast path) and with every request through hyper (`--proxy-fast-path
//! false`). Prints a table with the added latency (against direct) and the ratio of
//! throughput against HAProxy, and the fast path's against hyper's.
//!
//! Then what each costs: CPU per request under load (user + system time of the proxy's
//! process from `/proc`), and CPU idle, without traffic: HAProxy, PLB's balancer, and a
//! `plb agent` running the `http-check` sample probe every 500 ms on one backend (the
//! setup of issue 13's harness), with the balancer taking its reports.
//!
//! `cargo bench -p plb-balancer --bench proxy` (5 rounds of 3 s per target and phase, 20 s
//! idle; `PLB_BENCH_IDLE_S=N` for N s), or with `--quick` / `PLB_BENCH_QUICK=1` (3 rounds
//! of 1 s, 8 s idle). Needs `haproxy` on PATH; the agent row needs the `plb` binary of
//! the same profile (built by `scripts/test.sh`, or `cargo build -p plb --profile ...`),
//! and says so when it is not.
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use plb_bench::anchors::tree_cpu_seconds;
use plb_testkit::{free_addr, spawn_haproxy, which};
use tokio::net::{TcpListener, TcpStream};

const ADMIN: &str = "bench-admin-token-0123456789";
const CONNECTIONS: usize = 32;
const BODY: &[u8] =
    b"{\"ok\":true,\"node\":\"backend\",\"padding\":\"0123456789abcdef0123456789abcdef\"}";
/// Throughput against HAProxy's (issue 13 asks 0.9x; an earlier issue asked 0.8x).
const GOAL_RATIO: f64 = 0.9;
/// Added latency at one connection (an earlier issue's goal).
const GOAL_ADDED_P50_US: f64 = 100.0;
/// CPU per request answered against HAProxy's (issue 13).
const GOAL_CPU_RATIO: f64 = 1.5;

/// A minimal HTTP/1.1 backend answering every request with a small body.
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        BODY,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One keep-alive connection sending GETs back to back until `stop`; latencies in µs.
async fn worker(target: SocketAddr, stop: Arc<AtomicBool>, record: Arc<AtomicBool>) -> Vec<u32> {
    let stream = TcpStream::connect(target).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let req = Request::get("/")
            .header("host", "bench")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let t = Instant::now();
        let resp = send.send_request(req).await.expect("response");
        assert!(resp.status().is_success(), "status {}", resp.status());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), BODY.len());
        if record.load(Ordering::Relaxed) {
            lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
    }
    lat
}

#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    /// CPU µs of the measured process per request answered (when one was measured).
    cpu_us: f64,
}

/// Closed-loop load over `targets` (connections spread round-robin) for `secs`; the CPU
/// time of process `pid` (and its children) over the measured seconds, per request.
async fn load(
    targets: &[SocketAddr],
    conns: usize,
    warmup: Duration,
    secs: Duration,
    pid: Option<u32>,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..conns)
        .map(|i| {
            tokio::spawn(worker(
                targets[i % targets.len()],
                Arc::clone(&stop),
                Arc::clone(&record),
            ))
        })
        .collect();
    tokio::time::sleep(warmup).await;
    let cpu = || pid.and_then(tree_cpu_seconds).unwrap_or(0.0);
    record.store(true, Ordering::Relaxed);
    let cpu0 = cpu();
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    record.store(false, Ordering::Relaxed);
    let cpu_s = cpu() - cpu0;
    let elapsed = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all.sort_unstable();
    let q = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64;
    Run {
        rps: all.len() as f64 / elapsed,
        p50: q(0.5),
        p99: q(0.99),
        cpu_us: cpu_s * 1e6 / all.len().max(1) as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each figure's median over the rounds.
fn median_run(r: &[Run]) -> Run {
    Run {
        rps: median(r.iter().map(|x| x.rps).collect()),
        p50: median(r.iter().map(|x| x.p50).collect()),
        p99: median(r.iter().map(|x| x.p99).collect()),
        cpu_us: median(r.iter().map(|x| x.cpu_us).collect()),
    }
}

async fn wait_ok(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(addr).await
            && let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(s)).await
        {
            tokio::spawn(conn);
            let req = Request::get("/")
                .header("host", "bench")
                .body(Empty::<Bytes>::new())
                .expect("request");
            if let Ok(r) = send.send_request(req).await
                && r.status().is_success()
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not answer 200 within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("PLB_BENCH_QUICK").is_ok_and(|v| v == "1");
    let secs = Duration::from_millis(if quick { 1000 } else { 3000 });
    let warmup = Duration::from_millis(if quick { 200 } else { 500 });
    let rounds = if quick { 3 } else { 5 };
    // `PLB_BENCH_IDLE_S`: a longer idle window resolves an idle agent's few
    // milliseconds of CPU a second more finely (the clock ticks are 10 ms).
    let idle = std::env::var("PLB_BENCH_IDLE_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(
            Duration::from_secs(if quick { 8 } else { 20 }),
            Duration::from_secs,
        );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(secs, warmup, rounds, idle));
}

async fn bench(secs: Duration, warmup: Duration, rounds: usize, idle: Duration) {
    let haproxy = which("haproxy").expect("haproxy is not installed: `apt-get install -y haproxy`");
    let backends = [backend().await, backend().await];
    let dir = tempfile::tempdir().expect("tempdir");

    // PLB twice: the proxy as it ships (the fast path on), and every request through
    // hyper (`--proxy-fast-path false`), the path the fast one replaced for the common
    // exchange.
    let mut plb = start_plb(&dir.path().join("fast"), &backends, true).await;
    let mut plb_hyper = start_plb(&dir.path().join("hyper"), &backends, false).await;
    let (plb_pid, plb_addr) = (plb.child.id(), plb.proxy);
    let (hyper_pid, hyper_addr) = (plb_hyper.child.id(), plb_hyper.proxy);

    // HAProxy: round-robin over the same backends, keep-alive both sides.
    let ha_addr = free_addr();
    let mut cfg = format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    http-reuse always\n\
         frontend fe\n    bind {ha_addr}\n    default_backend be\n\
         backend be\n    balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server s{i} {b}\n"));
    }
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).expect("write haproxy.cfg");
    let mut ha = spawn_haproxy(&haproxy, &cfg_path, Stdio::null());
    let ha_pid = ha.id();
    wait_ok(ha_addr, "HAProxy").await;

    // Throughput under load (32 connections), then latency unloaded (1 connection). The
    // machine is shared: the targets take turns over several rounds and each figure is the
    // median of its rounds, so a burst of other work does not land on one target only.
    let mut runs: [Vec<Run>; 8] = Default::default();
    for _ in 0..rounds {
        runs[0].push(load(&backends, CONNECTIONS, warmup, secs, None).await);
        runs[1].push(load(&[ha_addr], CONNECTIONS, warmup, secs, ha_pid).await);
        runs[2].push(load(&[plb_addr], CONNECTIONS, warmup, secs, plb_pid).await);
        runs[3].push(load(&[hyper_addr], CONNECTIONS, warmup, secs, hyper_pid).await);
        runs[4].push(load(&backends[..1], 1, warmup, secs, None).await);
        runs[5].push(load(&[ha_addr], 1, warmup, secs, ha_pid).await);
        runs[6].push(load(&[plb_addr], 1, warmup, secs, plb_pid).await);
        runs[7].push(load(&[hyper_addr], 1, warmup, secs, hyper_pid).await);
    }
    let cpu_ratios: Vec<f64> = runs[2]
        .iter()
        .zip(&runs[1])
        .map(|(p, h)| p.cpu_us / h.cpu_us)
        .collect();
    let ratios: Vec<f64> = runs[2]
        .iter()
        .zip(&runs[1])
        .map(|(p, h)| p.rps / h.rps)
        .collect();
    let fast_vs_hyper: Vec<f64> = runs[2]
        .iter()
        .zip(&runs[3])
        .map(|(f, h)| f.rps / h.rps)
        .collect();
    let [
        direct,
        ha_run,
        plb_run,
        hyper_run,
        direct1,
        ha1,
        plb1,
        hyper1,
    ] = runs.map(|r| median_run(&r));
    let _ = plb_hyper.child.start_kill();
    let agent = start_agent(
        &plb.client,
        &format!("http://{}", plb.api),
        &plb.agent_tokens[0],
        backends[0],
        dir.path(),
    )
    .await;
    let agent_pid = agent.as_ref().and_then(tokio::process::Child::id);
    let idle_cost = idle_cpu(idle, &plb.admin, [ha_pid, plb_pid, agent_pid]).await;
    drop(agent);
    let _ = plb.child.start_kill();
    let _ = ha.start_kill();

    println!(
        "proxy: closed loop over keep-alive connections, {rounds} rounds of {} ms per target and phase (medians), 2 backends on loopback, 2 cores shared by load, proxies and backends",
        secs.as_millis()
    );
    println!(
        "{:<9} | {:>9} {:>9} {:>9} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>9}",
        "target",
        "req/s@32",
        "p50 µs",
        "p99 µs",
        "vs HA",
        "p50@1",
        "p99@1",
        "+p50@1",
        "+p99@1",
        "req/s@1"
    );
    for (name, r, r1) in [
        ("direct", direct, direct1),
        ("haproxy", ha_run, ha1),
        ("plb", plb_run, plb1),
        ("plb-hyper", hyper_run, hyper1),
    ] {
        println!(
            "{:<9} | {:>9.0} {:>9.0} {:>9.0} {:>6.2}x | {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>9.0}",
            name,
            r.rps,
            r.p50,
            r.p99,
            r.rps / ha_run.rps,
            r1.p50,
            r1.p99,
            r1.p50 - direct1.p50,
            r1.p99 - direct1.p99,
            r1.rps,
        );
    }
    println!(
        "@32: 32 connections (throughput; latency includes queueing). @1: one connection (added latency, unloaded); + is against direct. plb: as shipped (fast path); plb-hyper: `--proxy-fast-path false`."
    );
    println!(
        "plb fast path / plb through hyper, throughput per round: {} (median {:.2}x); CPU per request at 32 connections {:.1} µs against {:.1} µs ({:.2}x)",
        fast_vs_hyper
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" "),
        median(fast_vs_hyper.clone()),
        plb_run.cpu_us,
        hyper_run.cpu_us,
        plb_run.cpu_us / hyper_run.cpu_us,
    );
    println!(
        "plb/haproxy throughput per round: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "CPU per request answered (the proxy's process, user + system): haproxy {:.1} µs, plb {:.1} µs at 32 connections ({:.2}x; per round {}); at 1 connection haproxy {:.1} µs, plb {:.1} µs ({:.2}x)",
        ha_run.cpu_us,
        plb_run.cpu_us,
        median(cpu_ratios.clone()),
        cpu_ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" "),
        ha1.cpu_us,
        plb1.cpu_us,
        plb1.cpu_us / ha1.cpu_us,
    );
    println!("{idle_cost}");
    let ratio = median(ratios);
    let cpu_ratio = median(cpu_ratios);
    let added = plb1.p50 - direct1.p50;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goals: throughput >= {GOAL_RATIO}x HAProxy: {ratio:.2}x {}; added p50 < {GOAL_ADDED_P50_US} µs: {added:.0} µs {}; CPU per request <= {GOAL_CPU_RATIO}x HAProxy's: {cpu_ratio:.2}x {}",
        verdict(ratio >= GOAL_RATIO),
        verdict(added < GOAL_ADDED_P50_US),
        verdict(cpu_ratio <= GOAL_CPU_RATIO),
    );
}

/// A `plb-balancer --proxy` process with the two backends registered as the nodes of
/// pool 1/web.
struct Plb {
    child: tokio::process::Child,
    /// Its API.
    api: SocketAddr,
    /// Its proxy.
    proxy: SocketAddr,
    admin: plb_client::Client,
    /// The client owning pool `web`.
    client: plb_client::Client,
    agent_tokens: Vec<String>,
}

/// Starts a balancer with its database under `dir`, the fast path on or off.
async fn start_plb(dir: &std::path::Path, backends: &[SocketAddr], fast: bool) -> Plb {
    std::fs::create_dir_all(dir).expect("balancer dir");
    let proxy = free_addr();
    let api = free_addr();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_plb-balancer"))
        .arg("--listen")
        .arg(api.to_string())
        .arg("--db")
        .arg(dir.join("plb.db"))
        .arg("--admin-token")
        .arg(ADMIN)
        .arg("--proxy")
        // The first client of a fresh database gets id 1 (checked below).
        .arg(format!("1/web={proxy}"))
        .arg("--proxy-fast-path")
        .arg(fast.to_string())
        .env("PLB_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start plb-balancer");
    let admin = plb_client::Client::new(&format!("http://{api}"), ADMIN).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.health().await.is_err() {
        assert!(Instant::now() < deadline, "plb-balancer did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = admin.create_client("bench").await.expect("create client");
    assert_eq!(created.id, 1, "the proxied pool is addressed as 1/web");
    let client = admin.with_token(created.token);
    client.create_pool("web", 200.0).await.expect("pool");
    let mut agent_tokens = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let t = client
            .create_agent_token(&["web"], None)
            .await
            .expect("agent token");
        agent_tokens.push(t.token.clone());
        admin
            .with_token(t.token)
            .register(&plb_api::RegisterRequest {
                node: format!("node-{i}"),
                address: b.to_string(),
                pools: vec!["web".into()],
                labels: Default::default(),
            })
            .await
            .expect("register");
    }
    wait_ok(proxy, "PLB's proxy").await;
    Plb {
        child,
        api,
        proxy,
        admin,
        client,
        agent_tokens,
    }
}

/// Uploads the `http-check` probe (every 500 ms, on `/health`) to the pool and starts a
/// `plb agent` for node-0 at `backend`, reporting to `api`; `None` when no `plb` binary
/// was built beside this bench.
async fn start_agent(
    client: &plb_client::Client,
    api: &str,
    agent_token: &str,
    backend: SocketAddr,
    dir: &std::path::Path,
) -> Option<tokio::process::Child> {
    let settings = plb_api::ProbeSettings {
        interval_ms: 500,
        timeout_ms: 400,
        fuel: None,
        memory_mib: 32,
        config: [("path".to_string(), "/health".to_string())].into(),
        ..plb_api::ProbeSettings::default()
    };
    client
        .upload_probe(
            "web",
            "health",
            plb_probe_artifacts::HTTP_CHECK.to_vec(),
            &settings,
        )
        .await
        .expect("upload the http-check probe");
    let bin = plb_testkit::built_plb_bin()?;
    let agent = tokio::process::Command::new(bin)
        .args(["agent", "--balancer", api, "--token", agent_token])
        .args(["--node", "node-0", "--address", &backend.to_string()])
        .args(["--pool", "web", "--spool"])
        .arg(dir.join("spool"))
        .arg("--metrics-listen")
        .arg(free_addr().to_string())
        .env("PLB_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start plb agent");
    Some(agent)
}

/// CPU of the idle processes `[haproxy, balancer, agent]` over `secs` (no traffic), as
/// a percentage of one core, after 5 s in which the agent pulls, compiles and first runs
/// its probe.
async fn idle_cpu(secs: Duration, admin: &plb_client::Client, pids: [Option<u32>; 3]) -> String {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = |pid: Option<u32>| pid.and_then(tree_cpu_seconds);
    let ingested_before = ingested(admin).await;
    let before = pids.map(cpu);
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    let after = pids.map(cpu);
    let elapsed = t.elapsed().as_secs_f64();
    let pct = |i: usize| match (before[i], after[i]) {
        (Some(b), Some(a)) => format!("{:.2} %", (a - b) / elapsed * 100.0),
        _ => "not measured".to_string(),
    };
    let samples = ingested(admin).await - ingested_before;
    let agent_row = if pids[2].is_some() {
        format!("plb agent (http-check every 500 ms) {}", pct(2))
    } else {
        "plb agent: not measured (no `plb` binary beside this bench: build it in the same profile first)".to_string()
    };
    format!(
        "CPU idle over {elapsed:.0} s, % of one core: haproxy {}, plb balancer {} (taking the agent's reports: {samples:.0} samples ingested meanwhile), {agent_row}",
        pct(0),
        pct(1),
    )
}

/// The balancer's count of ingested samples (`/metrics`).
async fn ingested(admin: &plb_client::Client) -> f64 {
    let text = admin.metrics_text().await.expect("the balancer's /metrics");
    plb_testkit::metric_sum(
        &plb_testkit::parse_metrics(&text),
        "plb_samples_ingested_total",
        &[],
    )
}
