//! Engine scale benchmark (issue 16): the prediction engine that ships (`Engine`, on its
//! own `plb-engine` thread, over a real SQLite store) fed every node's sample once a
//! second, as agents with 1 Hz probes would after ingest, at 1,000 nodes (the baseline,
//! same run) and at 10,000. Prints the engine thread's CPU (from
//! `/proc/self/task/TID/stat`) per second of load, i.e. per tick, and the process's
//! resident memory, with ratios to the baseline. Goal at 10,000 nodes: under one core
//! and under 2 GiB.
//!
//! `cargo bench -p plb-balancer --bench engine_scale` (`-- --quick`: 8 s per size
//! instead of 30).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plb_api::{CreatePool, Outcome, RegisterRequest, Sample};
use plb_balancer::auth::hash_token;
use plb_balancer::engine::{Engine, EngineConfig};
use plb_balancer::metrics::Metrics;
use plb_balancer::store::{Quotas, SqliteOptions, SqliteStore, Store};
use plb_balancer::{CommittedBatch, IngestObserver};
use plb_testkit::{now_ms, proc_status};

/// Clock ticks per second of `/proc` CPU times (Linux: USER_HZ is 100).
const TICKS_PER_S: f64 = 100.0;

/// The `plb-engine` threads alive and their CPU time so far, seconds.
fn engine_cpu_s() -> (usize, f64) {
    let mut threads = 0;
    let mut total = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0.0);
    };
    for dir in tasks.flatten().map(|t| t.path()) {
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "plb-engine" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis; utime and stime are the
        // 14th and 15th fields of the line, the 12th and 13th after it.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        threads += 1;
        total += (ticks(11) + ticks(12)) / TICKS_PER_S;
    }
    (threads, total)
}

/// The process's resident memory, bytes.
fn rss_bytes() -> u64 {
    proc_status("VmRSS")
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

struct Figures {
    nodes: usize,
    samples_per_s: f64,
    cpu_per_tick_ms: f64,
    cores: f64,
    rss_mib: f64,
}

async fn run(nodes: usize, secs: u64) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &dir.path().join("bench.db"),
            SqliteOptions {
                quotas: Quotas {
                    nodes_per_pool: 100_000,
                    agent_tokens: 100_000,
                    ..Quotas::default()
                },
                ..SqliteOptions::default()
            },
        )
        .expect("store"),
    );
    let now = now_ms();
    let client_id = store
        .create_client("bench".into(), hash_token("plbc_bench"), now)
        .await
        .expect("client");
    store
        .create_pool(
            client_id,
            CreatePool {
                name: "web".into(),
                latency_slo_ms: 100.0,
            },
            now,
        )
        .await
        .expect("pool");
    // One agent token per node, as agents have.
    for i in 0..nodes {
        let token_id = store
            .create_agent_token(
                client_id,
                vec!["web".into()],
                hash_token(&format!("plba_bench_{i}")),
                now,
            )
            .await
            .expect("agent token");
        store
            .register_node(
                token_id,
                client_id,
                RegisterRequest {
                    node: format!("n{i:05}"),
                    address: format!("10.{}.{}.{}:8080", i / 65_536, (i / 256) % 256, i % 256),
                    pools: vec!["web".into()],
                    labels: BTreeMap::new(),
                },
                now,
            )
            .await
            .expect("register");
    }
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::new(EngineConfig::default(), Arc::clone(&metrics)).expect("engine");
    engine.warm(&store).await.expect("warm");
    let task = engine.spawn(Arc::clone(&store)).expect("engine task");

    let feed = |t: i64, second: u64| {
        for i in 0..nodes {
            // A CPU-work metric that wobbles per node and second, as a probe reports.
            let x = 10.0 + ((i as u64 * 7919 + second * 104_729) % 1000) as f64 / 250.0;
            let node = format!("n{i:05}");
            engine.committed(&Arc::new(CommittedBatch {
                client_id,
                node_id: i as i64 + 1,
                node: node.clone(),
                received_at_ms: t,
                samples: vec![Sample {
                    id: format!("{node}-{second}"),
                    pool: "web".into(),
                    probe: "bench".into(),
                    version: 1,
                    taken_at_ms: t,
                    outcome: Outcome::Ok,
                    metrics: BTreeMap::from([("work_ms".to_string(), x)]),
                    duration_ms: 1.0,
                    fuel_used: None,
                    message: String::new(),
                    stderr: String::new(),
                }],
            }));
        }
    };
    // Warm-up: profiles need their first samples (not measured).
    let start = tokio::time::Instant::now();
    for s in 0..5u64 {
        feed(now_ms(), s);
        tokio::time::sleep_until(start + Duration::from_secs(s + 1)).await;
    }
    let (threads, cpu0) = engine_cpu_s();
    assert_eq!(
        threads, 1,
        "one engine thread runs (the previous size's has stopped)"
    );
    let t0 = Instant::now();
    let start = tokio::time::Instant::now();
    let mut fed = 0usize;
    for s in 0..secs {
        feed(now_ms(), 5 + s);
        fed += nodes;
        tokio::time::sleep_until(start + Duration::from_secs(s + 1)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = engine_cpu_s().1 - cpu0;
    let rejected = metrics.engine_rejected_samples.get();
    assert_eq!(
        rejected, 0,
        "the engine refused {rejected} samples: the figures would not count them"
    );
    // Stop this engine (aborting its task stops its thread) before the next size.
    task.abort();
    let _ = task.await;
    for _ in 0..50 {
        if engine_cpu_s().0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Figures {
        nodes,
        samples_per_s: fed as f64 / wall,
        cpu_per_tick_ms: cpu / secs as f64 * 1000.0,
        cores: cpu / wall,
        rss_mib: rss_bytes() as f64 / (1024.0 * 1024.0),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("PLB_BENCH_QUICK").is_ok_and(|v| v == "1");
    let secs = if quick { 8 } else { 30 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "engine scale: one pool, one 1 Hz probe per node fed after ingest, {secs} s per size \
         after 5 s of warm-up; engine thread CPU, process RSS"
    );
    let base = rt.block_on(run(1_000, secs));
    let big = rt.block_on(run(10_000, secs));
    println!(
        "{:>7} {:>10} {:>16} {:>8} {:>9} {:>10} {:>9}",
        "nodes", "samples/s", "CPU ms per tick", "cores", "RSS MiB", "CPU ratio", "RSS ratio"
    );
    for f in [&base, &big] {
        println!(
            "{:>7} {:>10.0} {:>16.1} {:>8.3} {:>9.0} {:>9.2}x {:>8.2}x",
            f.nodes,
            f.samples_per_s,
            f.cpu_per_tick_ms,
            f.cores,
            f.rss_mib,
            f.cpu_per_tick_ms / base.cpu_per_tick_ms.max(1e-9),
            f.rss_mib / base.rss_mib.max(1e-9)
        );
    }
    println!(
        "goal at 10,000 nodes: < 1 core ({:.3}: {}), < 2 GiB ({:.0} MiB: {}); RSS is the \
         whole process's (store, runtime, the 1,000-node run before it)",
        big.cores,
        if big.cores < 1.0 { "met" } else { "NOT met" },
        big.rss_mib,
        if big.rss_mib < 2048.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
