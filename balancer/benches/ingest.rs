//! Ingest benchmark: samples per second accepted over HTTP (`POST /v1/reports`, batches
//! of 100 from 4 concurrent agents) and directly into the store, each acknowledged only
//! after its commit, on a real SQLite file. Prints a table with ratios against the
//! store measured in the same run, once with `synchronous=NORMAL` and once with `FULL`
//! (`--db-sync`), and FULL's rate relative to NORMAL's per path; then the same paths on
//! PostgreSQL (a throwaway server from `scripts/pg-temp.sh`: fsync off, so a commit costs
//! what SQLite's NORMAL does, a write to the OS) and its rate relative to SQLite NORMAL's.
//! `cargo bench -p plb-balancer --bench ingest` (`PLB_BENCH_DB=sqlite` or `postgres` for
//! one backend only). The database lives in `PLB_BENCH_DIR` if set, else the system's
//! temporary directory: it must be a real disk for FULL's fsync to cost what it costs in
//! production (not tmpfs).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plb_api::{Outcome, ProbeSettings, RegisterRequest, ReportBatch, Sample};
use plb_balancer::BalancerConfig;
use plb_balancer::store::{Ingest, Store, Synchronous};
use plb_testkit::{PgServer, now_ms};

const ADMIN: &str = "bench-admin-token-0123456789";
const BATCH: usize = 100;
const CLIENTS: usize = 4;
const BATCHES_PER_CLIENT: usize = 500;
const GOAL: f64 = 50_000.0;

/// Agents name samples with time-ordered UUIDs (v7); `random` uses v4 instead.
fn sample(pool: &str, probe: &str, t: i64, random: bool) -> Sample {
    let id = if random {
        uuid::Uuid::new_v4()
    } else {
        uuid::Uuid::now_v7()
    };
    Sample {
        id: id.to_string(),
        pool: pool.into(),
        probe: probe.into(),
        version: 1,
        taken_at_ms: t,
        outcome: Outcome::Ok,
        metrics: BTreeMap::from([
            ("latency-ms".to_string(), 1.25),
            ("connect-ms".to_string(), 0.31),
            ("first-byte-ms".to_string(), 0.97),
        ]),
        duration_ms: 2.5,
        fuel_used: Some(123_456),
        message: String::new(),
        stderr: String::new(),
    }
}

fn batches(node: &str, n: usize, size: usize, random: bool) -> Vec<ReportBatch> {
    let t = now_ms();
    (0..n)
        .map(|i| ReportBatch {
            node: node.into(),
            samples: (0..size)
                .map(|j| sample("web", "ping", t + (i * size + j) as i64, random))
                .collect(),
            dropped: 0,
        })
        .collect()
}

struct Row {
    path: &'static str,
    clients: usize,
    batch: usize,
    samples: usize,
    took: Duration,
}

impl Row {
    fn rate(&self) -> f64 {
        self.samples as f64 / self.took.as_secs_f64()
    }
}

/// Four nodes, each with its own agent token; returns their typed clients and
/// `(token_id, client_id)` for direct store calls.
async fn fleet(url: &str) -> (Vec<plb_client::Client>, Vec<(i64, i64)>) {
    let admin = plb_client::Client::new(url, ADMIN).expect("client");
    let c = admin.create_client("bench").await.expect("client");
    let client = admin.with_token(&c.token);
    client.create_pool("web", 100.0).await.expect("pool");
    client
        .upload_probe(
            "web",
            "ping",
            plb_probe_artifacts::TRIVIAL,
            &ProbeSettings::default(),
        )
        .await
        .expect("upload");
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for i in 0..CLIENTS * 2 {
        let t = client
            .create_agent_token(&["web"], None)
            .await
            .expect("agent token");
        let agent = admin.with_token(t.token);
        agent
            .register(&RegisterRequest {
                node: format!("n{i}"),
                address: format!("10.0.0.{i}:80"),
                pools: vec!["web".into()],
                labels: BTreeMap::new(),
            })
            .await
            .expect("register");
        agents.push(agent);
        ids.push((t.id, c.id));
    }
    (agents, ids)
}

/// `clients` agents posting their batches back to back, agent `i` to balancer
/// `bases[i % bases.len()]` (base URLs ending in `/`).
async fn over_http(
    agents: &[plb_client::Client],
    bases: &[String],
    clients: usize,
    random: bool,
    path: &'static str,
) -> Row {
    let http = reqwest::Client::new();
    // Bodies serialised before the clock starts: the server's work is measured.
    let work: Vec<(String, String, Vec<Vec<u8>>)> = agents
        .iter()
        .take(clients)
        .enumerate()
        .map(|(i, a)| {
            let bodies = batches(&format!("n{i}"), BATCHES_PER_CLIENT, BATCH, random)
                .iter()
                .map(|b| serde_json::to_vec(b).expect("json"))
                .collect();
            let url = format!("{}/v1/reports", bases[i % bases.len()]);
            (url, a.token().to_string(), bodies)
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(url, token, bodies)| {
            let http = http.clone();
            tokio::spawn(async move {
                for body in bodies {
                    let resp = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("send");
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let ack: plb_api::ReportAck = resp.json().await.expect("ack");
                    assert_eq!(ack.accepted, BATCH);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    Row {
        path,
        clients,
        batch: BATCH,
        samples: clients * BATCHES_PER_CLIENT * BATCH,
        took: started.elapsed(),
    }
}

async fn into_store(
    store: Arc<dyn Store>,
    ids: &[(i64, i64)],
    first_node: usize,
    tasks: usize,
    batch: usize,
    per_task: usize,
    path: &'static str,
) -> Row {
    let work: Vec<_> = (0..tasks)
        .map(|i| {
            let node = first_node + i;
            (
                ids[node],
                batches(&format!("n{node}"), per_task, batch, false),
            )
        })
        .collect();
    let started = Instant::now();
    let handles: Vec<_> = work
        .into_iter()
        .map(|((token_id, client_id), bs)| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in bs {
                    let n = b.samples.len();
                    let done = store
                        .ingest(Ingest {
                            token_id,
                            client_id,
                            batch: b,
                            now_ms: now_ms(),
                        })
                        .await
                        .expect("ingest");
                    assert_eq!(done.ack.accepted, n);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("store task");
    }
    Row {
        path,
        clients: tasks,
        batch,
        samples: tasks * per_task * batch,
        took: started.elapsed(),
    }
}

/// The store a run writes to.
#[derive(Debug, Clone)]
enum Db {
    /// A SQLite file with this `synchronous`.
    Sqlite(Synchronous),
    /// A PostgreSQL database at this URL.
    Postgres(String),
}

/// One full run of every path on a fresh balancer over `db`.
async fn run(db: Db) -> Vec<Row> {
    let dir = match std::env::var_os("PLB_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let mut cfg = BalancerConfig::new(dir.path().join("bench.db"), ADMIN);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    let title = match &db {
        Db::Sqlite(sync) => {
            cfg.db_sync = *sync;
            format!(
                "SQLite WAL, synchronous={}, {}",
                format!("{sync:?}").to_uppercase(),
                dir.path().display()
            )
        }
        Db::Postgres(url) => {
            cfg.db = url.as_str().into();
            cfg.replica = Some("a".into());
            "PostgreSQL 15, a throwaway server on a unix socket, fsync off".to_string()
        }
    };
    let running = plb_balancer::start(&cfg).await.expect("balancer");
    let base_url = running.url();
    let (agents, ids) = fleet(&running.url()).await;
    let store = running.state.store.clone();

    // Warm-up: page cache, prepared statements, connections.
    let _ = into_store(store.clone(), &ids, CLIENTS, CLIENTS, BATCH, 20, "warm-up").await;

    let mut rows = Vec::new();
    rows.push(
        into_store(
            store.clone(),
            &ids,
            CLIENTS,
            CLIENTS,
            BATCH,
            BATCHES_PER_CLIENT,
            "store, group commit",
        )
        .await,
    );
    rows.push(
        into_store(
            store.clone(),
            &ids,
            CLIENTS,
            1,
            BATCH,
            BATCHES_PER_CLIENT,
            "store, one writer",
        )
        .await,
    );
    rows.push(
        into_store(
            store.clone(),
            &ids,
            CLIENTS,
            CLIENTS,
            1,
            2_000,
            "store, 1-sample batches",
        )
        .await,
    );
    let one = [base_url.clone()];
    rows.push(over_http(&agents, &one, CLIENTS, false, "HTTP POST /v1/reports").await);
    rows.push(over_http(&agents, &one, CLIENTS, true, "HTTP, random (v4) ids").await);
    // A second replica on the same database (PostgreSQL only): agents split over both,
    // and each replica's tail reads what the other stores.
    let second = if let Db::Postgres(_) = &db {
        let mut b = cfg.clone();
        b.replica = Some("b".into());
        let b = plb_balancer::start(&b).await.expect("replica b");
        let both = [base_url.clone(), b.url()];
        rows.push(over_http(&agents, &both, CLIENTS * 2, false, "HTTP, two replicas").await);
        Some(b)
    } else {
        None
    };

    let base = rows[0].rate();
    println!();
    println!("Ingest: each batch acknowledged after its commit ({title})");
    println!(
        "| {:<26} | {:>7} | {:>5} | {:>8} | {:>8} | {:>11} | {:>8} |",
        "path", "clients", "batch", "samples", "seconds", "samples/s", "vs store"
    );
    println!(
        "|{:-<28}|{:-<9}|{:-<7}|{:-<10}|{:-<10}|{:-<13}|{:-<10}|",
        "", "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<26} | {:>7} | {:>5} | {:>8} | {:>8.3} | {:>11.0} | {:>7.2}x |",
            r.path,
            r.clients,
            r.batch,
            r.samples,
            r.took.as_secs_f64(),
            r.rate(),
            r.rate() / base
        );
    }
    let (path, http) = match rows.iter().find(|r| r.path == "HTTP, two replicas") {
        Some(r) => ("through two replicas", r.rate()),
        None => ("over HTTP", rows[3].rate()),
    };
    println!(
        "\nGoal: >= {GOAL:.0} samples/s {path}: {} ({http:.0}/s, {:.2}x the goal)",
        if http >= GOAL { "met" } else { "NOT met" },
        http / GOAL
    );
    let total: i64 = match &db {
        Db::Sqlite(_) => {
            let conn = rusqlite::Connection::open(dir.path().join("bench.db")).expect("db");
            conn.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
                .expect("count")
        }
        Db::Postgres(url) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            c.query_one("SELECT count(*) FROM samples", &[])
                .await
                .expect("count")
                .get(0)
        }
    };
    println!("Samples in the database at the end: {total}");
    if let Some(b) = second {
        b.stop().await.expect("stop b");
    }
    running.stop().await.expect("stop");
    rows
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let only = std::env::var("PLB_BENCH_DB").unwrap_or_default();
    let normal = if only == "postgres" {
        Vec::new()
    } else {
        run(Db::Sqlite(Synchronous::Normal)).await
    };
    if only != "sqlite" {
        let pg = tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("task")
            .expect("PostgreSQL starts (scripts/pg-temp.sh)");
        let url = pg.create_database().await.expect("database");
        let postgres = run(Db::Postgres(url)).await;
        tokio::task::spawn_blocking(move || drop(pg))
            .await
            .expect("stop");
        if !normal.is_empty() {
            println!("\nPostgreSQL against SQLite (NORMAL), same run");
            println!(
                "| {:<26} | {:>13} | {:>13} | {:>10} |",
                "path", "SQLite/s", "PostgreSQL/s", "PG/SQLite"
            );
            println!("|{:-<28}|{:-<15}|{:-<15}|{:-<13}|", "", "", "", "");
            for (n, p) in normal.iter().zip(&postgres) {
                println!(
                    "| {:<26} | {:>13.0} | {:>13.0} | {:>10.2}x |",
                    n.path,
                    n.rate(),
                    p.rate(),
                    p.rate() / n.rate()
                );
            }
            if let (Some(two), Some(one)) = (postgres.get(5), normal.get(3)) {
                println!(
                    "| {:<26} | {:>13.0} | {:>13.0} | {:>10.2}x |",
                    "two PG replicas / 1 SQLite",
                    one.rate(),
                    two.rate(),
                    two.rate() / one.rate()
                );
            }
        }
    }
    if only == "postgres" {
        return;
    }
    let full = run(Db::Sqlite(Synchronous::Full)).await;
    println!("\nDurability cost: FULL (fsync per commit) against NORMAL, same run");
    println!(
        "| {:<26} | {:>13} | {:>13} | {:>10} |",
        "path", "NORMAL/s", "FULL/s", "FULL/NORMAL"
    );
    println!("|{:-<28}|{:-<15}|{:-<15}|{:-<13}|", "", "", "", "");
    for (n, f) in normal.iter().zip(&full) {
        println!(
            "| {:<26} | {:>13.0} | {:>13.0} | {:>10.2}x |",
            n.path,
            n.rate(),
            f.rate(),
            f.rate() / n.rate()
        );
    }
}
