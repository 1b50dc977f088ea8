//! Durability: the balancer as a real process (`plb-balancer`, this crate's test binary)
//! is killed with SIGKILL right after acknowledging uploads and reports, and while
//! reports are in flight; after a restart on the same store (a SQLite file, or a
//! PostgreSQL database: each test on both) everything it acknowledged is there, and
//! resending everything stores nothing twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use plb_client::Client;
use plb_probe_artifacts::TRIVIAL;
use plb_testkit::{Proc, free_port, now_ms};

async fn spawn(db: &TestDb, port: u16, log: &Path) -> Proc {
    let args = [
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--db".to_string(),
        db.arg(),
    ];
    let mut p = Proc::spawn(
        "plb-balancer",
        Path::new(env!("CARGO_BIN_EXE_plb-balancer")),
        &args,
        &[("PLB_ADMIN_TOKEN", ADMIN.to_string())],
        log,
    )
    .expect("spawn plb-balancer");
    let c = Client::new(&format!("http://127.0.0.1:{port}"), ADMIN).expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if c.health().await.is_ok() {
            return p;
        }
        if let Some(st) = p.exited() {
            panic!(
                "balancer exited with {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "balancer did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Setup {
    dir: tempfile::TempDir,
    db: TestDb,
    port: u16,
    client: Client,
    agent: Client,
}

impl Setup {
    fn db(&self) -> &TestDb {
        &self.db
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("balancer.log")
    }
}

async fn setup(backend: Backend) -> (Setup, Proc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let db = TestDb::new(backend, dir.path()).await;
    let p = spawn(&db, port, &dir.path().join("balancer.log")).await;
    let admin = Client::new(&format!("http://127.0.0.1:{port}"), ADMIN).expect("client");
    let created = admin.create_client("acme").await.expect("client");
    let client = admin.with_token(created.token);
    client.create_pool("web", 100.0).await.expect("pool");
    let t = client
        .create_agent_token(&["web"], None)
        .await
        .expect("agent token");
    let agent = admin.with_token(t.token);
    agent
        .register(&register("n1", "127.0.0.1:9", &["web"]))
        .await
        .expect("register");
    (
        Setup {
            dir,
            db,
            port,
            client,
            agent,
        },
        p,
    )
}

async fn an_acknowledged_upload_survives_kill_9(backend: Backend) {
    let (s, mut p) = setup(backend).await;
    let up = s
        .client
        .upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    p.kill9();
    let _p = spawn(s.db(), s.port, &s.log()).await;
    let got = s
        .client
        .probe("web", "ping")
        .await
        .expect("probe after restart");
    assert_eq!(got.version, up.probe.version);
    assert_eq!(got.sha256, up.probe.sha256);
    assert_eq!(
        &s.agent.module(&got.sha256).await.expect("module")[..],
        TRIVIAL
    );
    // A version bumped right before a second kill is there too.
    let v2 = s
        .client
        .upload_probe("web", "ping", TRIVIAL, &quick(2000))
        .await
        .expect("v2");
    drop(_p);
    let _p = spawn(s.db(), s.port, &s.log()).await;
    assert_eq!(
        s.client.probe("web", "ping").await.expect("probe").version,
        v2.probe.version
    );
}

async fn acknowledged_reports_survive_kill_9_mid_stream_and_resends_store_nothing_twice(
    backend: Backend,
) {
    let (s, mut p) = setup(backend).await;
    s.client
        .upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    // Report 1: acknowledged, then the process is killed at once.
    let first: Vec<_> = (0..100)
        .map(|i| sample("web", "ping", 1, now_ms() + i))
        .collect();
    let ack = s
        .agent
        .report(&batch("n1", first.clone()))
        .await
        .expect("report");
    assert_eq!(ack.accepted, 100);
    p.kill9();
    p = spawn(s.db(), s.port, &s.log()).await;
    assert_eq!(s.db().count("SELECT count(*) FROM samples"), 100);

    // Then: four reporters stream batches while the balancer is killed under them,
    // three times over.
    let acked: Arc<Mutex<HashSet<String>>> =
        Arc::new(Mutex::new(first.iter().map(|s| s.id.clone()).collect()));
    let sent: Arc<Mutex<Vec<plb_api::ReportBatch>>> =
        Arc::new(Mutex::new(vec![batch("n1", first)]));
    for round in 0..3 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (agent, acked, sent, stop) =
                (s.agent.clone(), acked.clone(), sent.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let b = batch(
                        "n1",
                        (0..100)
                            .map(|i| sample("web", "ping", 1, now_ms() + i))
                            .collect(),
                    );
                    sent.lock().expect("lock").push(b.clone());
                    match agent.report(&b).await {
                        Ok(ack) => {
                            assert_eq!(ack.accepted, 100);
                            acked
                                .lock()
                                .expect("lock")
                                .extend(b.samples.iter().map(|s| s.id.clone()));
                        }
                        Err(e) => {
                            assert!(e.retryable(), "only transport errors expected: {e}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        // Let acknowledgements flow, then kill in the middle of the stream.
        let before = acked.lock().expect("lock").len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.lock().expect("lock").len() < before + 2000 {
            assert!(
                Instant::now() < deadline,
                "round {round}: reports do not flow"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.expect("reporter");
        }
        p = spawn(s.db(), s.port, &s.log()).await;
        let stored: HashSet<String> = s
            .db()
            .rows("SELECT id FROM samples")
            .into_iter()
            .map(|mut r| r.swap_remove(0))
            .collect();
        let acked = acked.lock().expect("lock");
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged samples lost after kill -9 (of {})",
            lost.len(),
            acked.len()
        );
    }

    // Everything resent, acknowledged or not: each sample is stored exactly once.
    let all: Vec<_> = sent.lock().expect("lock").clone();
    let mut distinct = HashSet::new();
    for b in &all {
        distinct.extend(b.samples.iter().map(|s| s.id.clone()));
        let ack = s.agent.report(b).await.expect("resend");
        assert_eq!(ack.accepted + ack.duplicates, b.samples.len());
    }
    assert_eq!(
        s.db().count("SELECT count(*) FROM samples") as usize,
        distinct.len()
    );
    assert_eq!(
        s.db().count("SELECT count(DISTINCT id) FROM samples") as usize,
        distinct.len()
    );
    drop(p);
}

on_each_backend!(
    an_acknowledged_upload_survives_kill_9,
    acknowledged_reports_survive_kill_9_mid_stream_and_resends_store_nothing_twice,
);
