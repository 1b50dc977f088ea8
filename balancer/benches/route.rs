//! Routing benchmark (issue 6): in-process decision time through the engine at 10, 100
//! and 1,000 nodes, next to the bare `plb-routing` policy on the same snapshot (the
//! engine's overhead); then HTTP `GET /v1/pools/{pool}/route` requests per second and
//! latency percentiles with N concurrent keep-alive clients, next to `/healthz` measured
//! the same way in the same run. Real balancer on a loopback port, real SQLite file,
//! nodes registered and sampled over the REST API. Then the keyed route load on two
//! balancer replicas sharing a throwaway PostgreSQL (`scripts/pg-temp.sh`) against the
//! SQLite balancer, in turns (`PLB_BENCH_DB=sqlite` leaves PostgreSQL out).
//!
//! `cargo bench -p plb-balancer --bench route` (add `-- --quick` for a short run; the
//! environment variable `PLB_BENCH_QUICK=1` does the same).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plb_api::{NODE_SAMPLER_PROBE, Outcome, RegisterRequest, ReportBatch, Sample};
use plb_balancer::engine::{PoolKey, RouteQuery};
use plb_client::Client;
use plb_routing::{Policy, PolicyKind, RouteRequest};
use plb_testkit::now_ms;

const ADMIN: &str = "bench-admin-token-0123456789";

struct Setup {
    quick: bool,
    decisions: usize,
    http_secs: f64,
    clients: usize,
}

fn setup() -> Setup {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("PLB_BENCH_QUICK").is_ok_and(|v| v == "1");
    Setup {
        quick,
        decisions: if quick { 20_000 } else { 200_000 },
        http_secs: if quick { 2.0 } else { 8.0 },
        clients: 32,
    }
}

/// A pool of `n` nodes with 35 samples each (profiles ready, all healthy).
async fn pool(admin: &Client, name: &str, n: usize) -> Client {
    let c = admin.create_client(name).await.expect("client");
    let client = admin.with_token(c.token);
    client.create_pool("web", 100.0).await.expect("pool");
    let t0 = now_ms() - 35_000;
    for i in 0..n {
        let t = client
            .create_agent_token(&["web"], None)
            .await
            .expect("agent token");
        let agent = admin.with_token(t.token);
        let node = format!("n{i:04}");
        agent
            .register(&RegisterRequest {
                node: node.clone(),
                address: format!("10.0.{}.{}:8080", i / 250, i % 250 + 1),
                pools: vec!["web".into()],
                labels: BTreeMap::new(),
            })
            .await
            .expect("register");
        let samples = (0..35)
            .map(|k| Sample {
                id: format!("{node}-{k}"),
                pool: "web".into(),
                probe: NODE_SAMPLER_PROBE.into(),
                version: 0,
                taken_at_ms: t0 + 1000 * k,
                outcome: Outcome::Ok,
                metrics: BTreeMap::from([(
                    "latency-ms".to_string(),
                    10.0 + (i % 7) as f64 + 0.1 * (k % 5) as f64,
                )]),
                duration_ms: 1.0,
                fuel_used: None,
                message: String::new(),
                stderr: String::new(),
            })
            .collect();
        agent
            .report(&ReportBatch {
                node,
                samples,
                dropped: 0,
            })
            .await
            .expect("report");
    }
    client
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// One keep-alive HTTP/1.1 connection sending `req` back to back until `deadline`:
/// latencies of 200 answers and the count of others. A raw client (no URL parsing,
/// no header maps), so the load generator takes as little of the shared CPU as it can.
async fn connection(
    addr: std::net::SocketAddr,
    req: Arc<Vec<u8>>,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut lat = Vec::with_capacity(100_000);
    let mut errors = 0;
    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
        return (lat, 1);
    };
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < deadline {
        let t = Instant::now();
        if conn.write_all(&req).await.is_err() {
            return (lat, errors + 1);
        }
        // Read the head, then the body by its Content-Length.
        let mut have = 0;
        let (head_end, body_len) = loop {
            match conn.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => return (lat, errors + 1),
                Ok(n) => have += n,
            }
            if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (i + 4, len);
            }
            if have == buf.len() {
                return (lat, errors + 1);
            }
        };
        while have < head_end + body_len {
            if have == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match conn.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => return (lat, errors + 1),
                Ok(n) => have += n,
            }
        }
        if buf.starts_with(b"HTTP/1.1 200") {
            lat.push(t.elapsed());
        } else {
            errors += 1;
        }
    }
    (lat, errors)
}

/// `clients` keep-alive connections calling `path` back to back for `secs`.
async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    clients: usize,
    secs: f64,
) -> Load {
    let req = Arc::new(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n")
            .into_bytes(),
    );
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(connection(addr, Arc::clone(&req), deadline)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        all.extend(l);
        errors += e;
    }
    let took = started.elapsed().as_secs_f64();
    all.sort();
    Load {
        rps: all.len() as f64 / took,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
    }
}

fn main() {
    let s = setup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(s));
}

async fn run(s: Setup) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = plb_balancer::BalancerConfig::new(dir.path().join("bench.db"), ADMIN);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    let running = plb_balancer::start(&cfg).await.expect("balancer");
    let admin = Client::new(&running.url(), ADMIN).expect("admin");
    let engine = Arc::clone(&running.state.engine);
    println!(
        "routing benchmark ({} mode): 2 tokio workers, balancer and load generator in one process",
        if s.quick { "quick" } else { "full" }
    );

    // 1. In-process decision time.
    println!();
    println!(
        "in-process: engine route (decision, counted in flight), route + feedback, and the bare policy pick (ns)"
    );
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>14} {:>9}",
        "nodes", "policy", "route", "route+fb", "bare policy", "route/bare"
    );
    let mut http_pool = None;
    for (i, n) in [10usize, 100, 1000].into_iter().enumerate() {
        let client = pool(&admin, &format!("bench{i}"), n).await;
        let key = PoolKey {
            client_id: (i + 1) as i64,
            pool: "web".into(),
        };
        let router = loop {
            if let Some(r) = engine.pool(&key)
                && r.snapshot().len() == n
                && r.snapshot().eligible().len() == n
            {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for kind in [
            PolicyKind::Plb,
            PolicyKind::PeakEwma,
            PolicyKind::LeastRequest,
        ] {
            router.set_policy(kind);
            let q = RouteQuery::default();
            let snap = router.snapshot();
            let policy = plb_routing::AnyPolicy::new(kind, plb_routing::PolicyConfig::default());
            let req = RouteRequest::default();
            // Three alternating rounds, best of each (the machine is shared).
            let (mut full, mut decide, mut bare) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..s.decisions {
                    let r = router.route(&q, &[]).expect("a node");
                    router.feedback(&r, 5.0, true);
                }
                full = full.min(t.elapsed().as_nanos() as f64 / s.decisions as f64);
                let t = Instant::now();
                for _ in 0..s.decisions {
                    // Dropped unreported: the slot is given back (a cancelled request).
                    let r = router.route(&q, &[]).expect("a node");
                    std::hint::black_box(&r);
                }
                decide = decide.min(t.elapsed().as_nanos() as f64 / s.decisions as f64);
                // The bare policy on the same snapshot, with the same in-flight
                // bookkeeping.
                let mut rng = rand::rng();
                let t = Instant::now();
                for k in 0..s.decisions {
                    let now = 1000.0 + k as f64 * 1e-6;
                    let d = policy.pick(&snap, &req, now, &mut rng).expect("a node");
                    if let Some(l) = snap.live(d.index) {
                        l.begin(0.0);
                        l.end(0.005, true, now);
                    }
                }
                bare = bare.min(t.elapsed().as_nanos() as f64 / s.decisions as f64);
            }
            println!(
                "{:>6} {:>14} {:>14.0} {:>14.0} {:>14.0} {:>8.2}x",
                n,
                kind.as_str(),
                decide,
                full,
                bare,
                decide / bare
            );
        }
        router.set_policy(PolicyKind::Plb);
        if n == 100 {
            http_pool = Some(client);
        }
    }

    // 2. HTTP route requests against /healthz.
    let client = http_pool.expect("the 100-node pool");
    let token = client.token().to_string();
    let addr = running.addr;
    // Saturated (32 clients: latency is then mostly queueing, by Little's law) and at
    // moderate concurrency (8 clients).
    for clients in [s.clients, 8] {
        println!();
        println!(
            "HTTP, {clients} keep-alive connections (raw HTTP/1.1 client), {:.0} s each, 100-node pool, policy plb",
            s.http_secs
        );
        println!(
            "{:>10} {:>12} {:>10} {:>10} {:>8} {:>10}",
            "endpoint", "req/s", "p50 ms", "p99 ms", "errors", "vs healthz"
        );
        let health = load(addr, "/healthz", &token, clients, s.http_secs).await;
        let route = load(
            addr,
            "/v1/pools/web/route?key=user-1&cost=1",
            &token,
            clients,
            s.http_secs,
        )
        .await;
        let route_nokey = load(addr, "/v1/pools/web/route", &token, clients, s.http_secs).await;
        for (name, l) in [
            ("healthz", &health),
            ("route+key", &route),
            ("route", &route_nokey),
        ] {
            println!(
                "{:>10} {:>12.0} {:>10.3} {:>10.3} {:>8} {:>9.2}x",
                name,
                l.rps,
                l.p50.as_secs_f64() * 1000.0,
                l.p99.as_secs_f64() * 1000.0,
                l.errors,
                l.rps / health.rps
            );
        }
    }
    println!();
    println!("goals: < 1 us per decision at 100 nodes; >= 20,000 route req/s with p99 < 2 ms");

    // 3. The same keyed route load on two PostgreSQL replicas, against this SQLite
    // balancer, in turns.
    if std::env::var("PLB_BENCH_DB").is_ok_and(|v| v == "sqlite") {
        running.stop().await.expect("stop");
        return;
    }
    let pg = tokio::task::spawn_blocking(plb_testkit::PgServer::start)
        .await
        .expect("task")
        .expect("PostgreSQL starts (scripts/pg-temp.sh)");
    let url = pg.create_database().await.expect("database");
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let mut c = cfg.clone();
        c.listen = "127.0.0.1:0".parse().expect("addr");
        c.db = url.as_str().into();
        c.replica = Some(name.into());
        replicas.push(plb_balancer::start(&c).await.expect("replica"));
    }
    let pg_admin = Client::new(&replicas[0].url(), ADMIN).expect("admin");
    let pg_client = pool(&pg_admin, "bench-pg", 100).await;
    // Both replicas' engines hold the pool: b's learnt it from its tail.
    let key = PoolKey {
        client_id: 1,
        pool: "web".into(),
    };
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(30);
        while r
            .state
            .engine
            .pool(&key)
            .is_none_or(|p| p.snapshot().eligible().len() != 100)
        {
            assert!(
                Instant::now() < deadline,
                "the pool never became routable on a replica"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let path = "/v1/pools/web/route?key=user-1&cost=1";
    let targets = [
        ("SQLite", addr, token.clone()),
        (
            "PG replica a",
            replicas[0].addr,
            pg_client.token().to_string(),
        ),
        (
            "PG replica b",
            replicas[1].addr,
            pg_client.token().to_string(),
        ),
    ];
    // Two rounds in turns, the best of each (the machine is shared).
    let mut best: Vec<Option<Load>> = targets.iter().map(|_| None).collect();
    for _ in 0..2 {
        for (i, (_, a, t)) in targets.iter().enumerate() {
            let l = load(*a, path, t, s.clients, s.http_secs).await;
            if best[i].as_ref().is_none_or(|b| l.rps > b.rps) {
                best[i] = Some(l);
            }
        }
    }
    println!();
    println!(
        "HTTP keyed route, {} connections, {:.0} s, best of 2 rounds in turns: SQLite vs PostgreSQL replicas (two on one database)",
        s.clients, s.http_secs
    );
    println!(
        "{:>14} {:>12} {:>10} {:>10} {:>8} {:>10}",
        "store", "req/s", "p50 ms", "p99 ms", "errors", "vs SQLite"
    );
    let base = best[0].as_ref().map_or(1.0, |l| l.rps);
    for ((name, _, _), l) in targets.iter().zip(&best) {
        let Some(l) = l else { continue };
        println!(
            "{:>14} {:>12.0} {:>10.3} {:>10.3} {:>8} {:>9.2}x",
            name,
            l.rps,
            l.p50.as_secs_f64() * 1000.0,
            l.p99.as_secs_f64() * 1000.0,
            l.errors,
            l.rps / base
        );
    }
    let worst = best[1..]
        .iter()
        .flatten()
        .map(|l| l.rps / base)
        .fold(f64::INFINITY, f64::min);
    println!(
        "goal: route throughput per PostgreSQL replica within 10 % of SQLite's: {} (worst {worst:.2}x)",
        if worst >= 0.9 { "met" } else { "NOT met" }
    );
    for r in replicas {
        r.stop().await.expect("stop replica");
    }
    tokio::task::spawn_blocking(move || drop(pg))
        .await
        .expect("stop PostgreSQL");
    running.stop().await.expect("stop");
}
