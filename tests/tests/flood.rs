//! A slow-client flood against the balancer's API while a real agent reports: thousands
//! of idle connections, headers that never finish and request bodies that trickle in
//! (a hostile tenant's, with its valid token, and unauthenticated ones), each reopened
//! as soon as the balancer closes it. The balancer (`plb balancer`, default limits) and
//! the agent (`plb agent`) are real processes; the flood comes from this process.
//!
//! What must hold: every sample the agent took is stored exactly once (none lost, none
//! doubled), and none waited for the balancer longer than the agent's batching age plus
//! its retry window (`--retry-max-ms`): the agent's reports keep flowing through the
//! flood.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plb_testkit::{free_port, metric_sum, now_ms, tcp_target, test_dir, wait_for};
use plb_tests::cluster::{AgentSpec, Balancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POOL: &str = "web";
const NODE_EARLY: &str = "n-early";
const NODE_LATE: &str = "n-late";
/// The agent's batching age and retry window (its `--retry-max-ms`, the default).
const BATCH_AGE_MS: i64 = 200;
const RETRY_MAX_MS: i64 = 5_000;
/// The flood's length.
const FLOOD: Duration = Duration::from_secs(12);

/// The soft limit on open files of this process.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// One kind of hostile connection.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Sends a request line and headers one byte a second, never the blank line.
    SlowHeaders,
    /// A hostile tenant: complete headers with its valid token, then a body of a
    /// megabyte one byte every 2 s.
    SlowBody,
    /// The same without a valid token.
    SlowBodyNoToken,
}

#[derive(Debug, Default)]
struct FloodStats {
    /// Connections opened.
    opened: AtomicU64,
    /// Connections the balancer closed (or refused).
    closed: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
    /// Most open at once.
    peak: AtomicU64,
}

/// Holds one hostile connection of `kind` open until the balancer closes it; then opens
/// another (after 200 ms), until `stop`.
async fn hostile(
    addr: std::net::SocketAddr,
    kind: Kind,
    token: Arc<String>,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
        else {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak.fetch_max(open, Ordering::Relaxed);
        let (head, every): (Vec<u8>, Duration) = match kind {
            Kind::Idle => (Vec::new(), Duration::from_secs(3600)),
            Kind::SlowHeaders => (
                b"POST /v1/reports HTTP/1.1\r\nHost: plb\r\nX-Slow: ".to_vec(),
                Duration::from_secs(1),
            ),
            Kind::SlowBody => (
                format!(
                    "POST /v1/pools/{POOL}/feedback HTTP/1.1\r\nHost: plb\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                     Content-Length: 1000000\r\n\r\n["
                )
                .into_bytes(),
                Duration::from_secs(2),
            ),
            Kind::SlowBodyNoToken => (
                b"POST /v1/reports HTTP/1.1\r\nHost: plb\r\nAuthorization: Bearer plba_made_up\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
                    .to_vec(),
                Duration::from_secs(2),
            ),
        };
        let mut alive = head.is_empty() || s.write_all(&head).await.is_ok();
        let mut buf = [0u8; 1024];
        let mut next = tokio::time::Instant::now() + every;
        while alive && !stop.load(Ordering::Relaxed) {
            tokio::select! {
                r = s.read(&mut buf) => {
                    // An answer (an error status) or the end: the balancer let go.
                    if !matches!(r, Ok(n) if n > 0) {
                        alive = false;
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    alive = s.write_all(b" ").await.is_ok();
                    next += every;
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `(id, taken_at_ms, received_at_ms)` of every stored sample of `node`.
fn stored(b: &Balancer, node: &str) -> Vec<(String, i64, i64)> {
    let conn = rusqlite::Connection::open_with_flags(
        b.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("db");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    let mut st = conn
        .prepare("SELECT id, taken_at_ms, received_at_ms FROM samples WHERE node = ?1")
        .expect("prepare");
    st.query_map([node], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn agent_spec(b: &Balancer, client: &str, node: &str, dir: &std::path::Path) -> AgentSpec {
    AgentSpec {
        balancer: b.url(),
        token: b.agent_token(client, &[POOL]).expect("agent token"),
        node: node.into(),
        address: tcp_target(),
        pools: vec![POOL.into()],
        spool: dir.join(format!("spool-{node}")),
        metrics_port: free_port(),
        extra: [
            "--node-sample-ms",
            "100",
            "--batch-max-age-ms",
            &BATCH_AGE_MS.to_string(),
            "--retry-max-ms",
            &RETRY_MAX_MS.to_string(),
            "--poll-ms",
            "1000",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    }
}

/// Delays (received - taken, ms) of the samples taken in `[from, to]`, sorted.
fn delays(rows: &[(String, i64, i64)], from: i64, to: i64) -> Vec<i64> {
    let mut d: Vec<i64> = rows
        .iter()
        .filter(|r| (from..=to).contains(&r.1))
        .map(|r| r.2 - r.1)
        .collect();
    d.sort_unstable();
    d
}

#[test]
fn agents_reports_keep_flowing_through_a_slow_client_flood() {
    let started = Instant::now();
    let dir = test_dir(module_path!());
    let mut balancer = Balancer::start(&dir.path().join("balancer")).expect("balancer");
    let client = balancer.client_with_pool("acme", POOL).expect("client");
    let hostile_tenant = balancer
        .client_with_pool("mallory", POOL)
        .expect("hostile tenant");
    // One agent connected before the flood (its keep-alive connection may live through
    // it), and one that starts during the flood and must connect through it.
    let early = agent_spec(&balancer, &client, NODE_EARLY, dir.path());
    let late = agent_spec(&balancer, &client, NODE_LATE, dir.path());
    let mut early_proc = early
        .start(&dir.path().join("agent-early.log"))
        .expect("agent");
    std::thread::sleep(Duration::from_secs(2));

    // Thousands of hostile connections (within this process's open-file limit), past
    // the balancer's default cap of 1024 connections.
    let limit = open_files_limit();
    let size = 3_000u64.min(limit.saturating_sub(1_000)).max(100);
    eprintln!("flood of {size} connections (open-file limit {limit})");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(FloodStats::default());
    let token = Arc::new(hostile_tenant);
    let addr = plb_testkit::loopback(balancer.port);
    let flood_from = now_ms();
    let tasks: Vec<_> = (0..size)
        .map(|i| {
            let kind = match i % 4 {
                0 => Kind::Idle,
                1 => Kind::SlowHeaders,
                2 => Kind::SlowBody,
                _ => Kind::SlowBodyNoToken,
            };
            rt.spawn(hostile(
                addr,
                kind,
                Arc::clone(&token),
                Arc::clone(&stop),
                Arc::clone(&stats),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let late_from = now_ms();
    let mut late_proc = late
        .start(&dir.path().join("agent-late.log"))
        .expect("agent started during the flood");
    std::thread::sleep(FLOOD.saturating_sub(Duration::from_secs(2)));
    let flood_to = now_ms();
    let during = [
        early.metrics().expect("agent metrics during the flood"),
        late.metrics().expect("agent metrics during the flood"),
    ];
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(rt);
    eprintln!(
        "flood: {} connections opened, {} closed by the balancer, at most {} open at once",
        stats.opened.load(Ordering::Relaxed),
        stats.closed.load(Ordering::Relaxed),
        stats.peak.load(Ordering::Relaxed),
    );

    // Everything taken reaches the balancer once the flood is over.
    let mut results = Vec::new();
    for (spec, proc, node, from, m_during) in [
        (&early, &mut early_proc, NODE_EARLY, flood_from, &during[0]),
        (&late, &mut late_proc, NODE_LATE, late_from, &during[1]),
    ] {
        wait_for(
            Duration::from_secs(15),
            "the agent's spool to drain",
            || {
                spec.metrics()
                    .ok()
                    .filter(|m| metric_sum(m, "plb_agent_spool_samples", &[]) == 0.0)
            },
        )
        .expect("spool drained");
        let m = spec.metrics().expect("agent metrics");
        assert!(
            proc.terminate(Duration::from_secs(15))
                .expect("stop agent")
                .success(),
            "the agent survived"
        );
        let taken = metric_sum(&m, "plb_agent_samples_taken_total", &[]);
        let failures = metric_sum(m_during, "plb_agent_report_failures_total", &[]);
        results.push((node, from, taken, failures));
    }
    let rows: Vec<_> = results
        .iter()
        .map(|(node, ..)| stored(&balancer, node))
        .collect();
    balancer
        .stop()
        .expect("the balancer survived and stops cleanly");

    let mut late_flood = Vec::new();
    for ((node, from, taken, failures), rows) in results.iter().zip(&rows) {
        let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(ids.len(), rows.len(), "{node}: a sample stored twice");
        assert!(
            rows.len() as f64 >= *taken,
            "{node}: stored {} of {taken} samples taken",
            rows.len()
        );
        let before = delays(rows, 0, flood_from - 1);
        let during = delays(rows, *from, flood_to);
        eprintln!(
            "{node}: report delay (received - taken) before the flood: p50 {} ms, max {} ms \
             ({} samples); during: p50 {} ms, p99 {} ms, max {} ms ({} samples); failed report \
             attempts during the flood {failures}; {} samples stored of {taken} taken",
            percentile(&before, 0.5),
            before.last().copied().unwrap_or(0),
            before.len(),
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            during.last().copied().unwrap_or(0),
            during.len(),
            rows.len(),
        );
        // The node sampler every 100 ms: about 10 samples a second of the flood.
        assert!(
            during.len() as i64 >= (flood_to - from) / 100 * 7 / 10,
            "{node}: {} samples taken during {} ms of flood",
            during.len(),
            flood_to - from
        );
        late_flood.push((node, during.last().copied().unwrap_or(0)));
    }
    eprintln!("wall {:.1} s", started.elapsed().as_secs_f64());
    for (node, worst) in late_flood {
        assert!(
            worst <= BATCH_AGE_MS + RETRY_MAX_MS,
            "{node}: a sample waited {worst} ms for the balancer, past the agent's batching \
             age and retry window ({} ms)",
            BATCH_AGE_MS + RETRY_MAX_MS
        );
    }
}
