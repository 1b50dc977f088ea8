//! Proxy benchmark: throughput and latency of PLB's reverse proxy (`plb-balancer --proxy`,
//! its own process, the real engine routing every request and taking its feedback) next to
//! HAProxy (round-robin, its own process) and to the backends directly, over the same two
//! loopback backends with the same closed-loop load, in the same run. Prints a table with
//! the added latency (against direct) and the ratio of throughput against HAProxy.
//!
//! `cargo bench -p plb-balancer --bench proxy` (5 rounds of 3 s per target and phase), or
//! with `--quick` / `PLB_BENCH_QUICK=1` (3 rounds of 1 s). Needs `haproxy` on PATH.
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
use plb_testkit::{free_addr, spawn_haproxy, which};
use tokio::net::{TcpListener, TcpStream};

const ADMIN: &str = "bench-admin-token-0123456789";
const CONNECTIONS: usize = 32;
const BODY: &[u8] =
    b"{\"ok\":true,\"node\":\"backend\",\"padding\":\"0123456789abcdef0123456789abcdef\"}";
const GOAL_RATIO: f64 = 0.8;
const GOAL_ADDED_P50_US: f64 = 100.0;

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
}

/// Closed-loop load over `targets` (connections spread round-robin) for `secs`.
async fn load(targets: &[SocketAddr], conns: usize, warmup: Duration, secs: Duration) -> Run {
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
    record.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    record.store(false, Ordering::Relaxed);
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(secs, warmup, rounds));
}

async fn bench(secs: Duration, warmup: Duration, rounds: usize) {
    let haproxy = which("haproxy").expect("haproxy is not installed: `apt-get install -y haproxy`");
    let backends = [backend().await, backend().await];
    let dir = tempfile::tempdir().expect("tempdir");

    // PLB: the balancer process with the proxy, nodes registered over the API.
    let plb_addr = free_addr();
    let api = free_addr();
    let mut plb = tokio::process::Command::new(env!("CARGO_BIN_EXE_plb-balancer"))
        .arg("--listen")
        .arg(api.to_string())
        .arg("--db")
        .arg(dir.path().join("plb.db"))
        .arg("--admin-token")
        .arg(ADMIN)
        .arg("--proxy")
        // The first client of a fresh database gets id 1 (checked below).
        .arg(format!("1/web={plb_addr}"))
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
    for (i, b) in backends.iter().enumerate() {
        let t = client
            .create_agent_token(&["web"], None)
            .await
            .expect("agent token");
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
    wait_ok(plb_addr, "PLB's proxy").await;

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
    wait_ok(ha_addr, "HAProxy").await;

    // Throughput under load (32 connections), then latency unloaded (1 connection). The
    // machine is shared: the targets take turns over several rounds and each figure is the
    // median of its rounds, so a burst of other work does not land on one target only.
    let mut runs: [Vec<Run>; 6] = Default::default();
    for _ in 0..rounds {
        runs[0].push(load(&backends, CONNECTIONS, warmup, secs).await);
        runs[1].push(load(&[ha_addr], CONNECTIONS, warmup, secs).await);
        runs[2].push(load(&[plb_addr], CONNECTIONS, warmup, secs).await);
        runs[3].push(load(&backends[..1], 1, warmup, secs).await);
        runs[4].push(load(&[ha_addr], 1, warmup, secs).await);
        runs[5].push(load(&[plb_addr], 1, warmup, secs).await);
    }
    let ratios: Vec<f64> = runs[2]
        .iter()
        .zip(&runs[1])
        .map(|(p, h)| p.rps / h.rps)
        .collect();
    let [direct, ha_run, plb_run, direct1, ha1, plb1] = runs.map(|r| median_run(&r));
    let _ = plb.start_kill();
    let _ = ha.start_kill();

    println!(
        "proxy: closed loop over keep-alive connections, {rounds} rounds of {} ms per target and phase (medians), 2 backends on loopback, 2 cores shared by load, proxies and backends",
        secs.as_millis()
    );
    println!(
        "{:<8} | {:>9} {:>9} {:>9} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>9}",
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
    ] {
        println!(
            "{:<8} | {:>9.0} {:>9.0} {:>9.0} {:>6.2}x | {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>9.0}",
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
        "@32: 32 connections (throughput; latency includes queueing). @1: one connection (added latency, unloaded); + is against direct."
    );
    println!(
        "plb/haproxy throughput per round: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ratio = median(ratios);
    let added = plb1.p50 - direct1.p50;
    println!(
        "goals: throughput >= {GOAL_RATIO}x HAProxy: {ratio:.2}x {}; added p50 < {GOAL_ADDED_P50_US} µs: {added:.0} µs {}",
        if ratio >= GOAL_RATIO {
            "met"
        } else {
            "NOT met"
        },
        if added < GOAL_ADDED_P50_US {
            "met"
        } else {
            "NOT met"
        },
    );
}
