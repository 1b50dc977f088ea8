//! Retention: raw samples older than the raw window are folded into exact per-minute
//! aggregates and deleted, old aggregates expire, and the SQLite file stops growing
//! under a steady stream of samples; the background task does it on its own. On both
//! backends (the file sizes on SQLite only: PostgreSQL's autovacuum reuses the space).

use std::time::{Duration, Instant};

use crate::common::*;
use plb_api::Outcome;
use plb_balancer::retention::{self, Retention};
use plb_balancer::store::Ingest;
use plb_probe_artifacts::TRIVIAL;
use plb_testkit::now_ms;

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

async fn old_samples_fold_into_exact_minutes_and_the_file_stops_growing(backend: Backend) {
    let b = TestBalancer::start_on(backend).await;
    let acme = b.client_with_pool("acme", "web").await;
    acme.upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    let agent = b.agent(&acme, &["web"]).await;
    agent
        .register(&register("n1", "127.0.0.1:9", &["web"]))
        .await
        .expect("register");
    let store = b.running.state.store.clone();
    let metrics = b.running.state.metrics.clone();
    let (token_id, client_id) = (
        b.count("SELECT id FROM agent_tokens"),
        b.count("SELECT client_id FROM agent_tokens"),
    );
    let r = Retention {
        raw: Duration::from_secs(24 * 3600),
        aggregates: Duration::from_secs(30 * 24 * 3600),
        every: Duration::from_secs(60),
    };
    let now = now_ms();
    // Minute-aligned base two days back, so each round fills ten whole minutes.
    let base = (now - 48 * HOUR_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    let per_round = 6_000;
    let mut sizes = Vec::new();
    for round in 0..12i64 {
        let start = base + round * 10 * MINUTE_MS;
        let mut samples = Vec::with_capacity(per_round);
        for i in 0..per_round as i64 {
            let mut s = sample("web", "ping", 1, start + i * 100);
            // Every 10th run times out (no metrics); the others report i % 7.
            if i % 10 == 0 {
                s.outcome = Outcome::Timeout;
                s.metrics.clear();
            } else {
                s.metrics = [("latency-ms".to_string(), (i % 7) as f64)].into();
            }
            samples.push(s);
        }
        for chunk in samples.chunks(500) {
            store
                .ingest(Ingest {
                    token_id,
                    client_id,
                    batch: batch("n1", chunk.to_vec()),
                    now_ms: now,
                })
                .await
                .expect("ingest");
        }
        // A fresh sample stays raw.
        store
            .ingest(Ingest {
                token_id,
                client_id,
                batch: batch("n1", vec![sample("web", "ping", 1, now - 1000)]),
                now_ms: now,
            })
            .await
            .expect("fresh");
        let s = retention::pass(store.as_ref(), &metrics, r, now)
            .await
            .expect("pass");
        assert_eq!(s.folded, per_round as u64, "round {round}");
        // Ten minutes, one of them split across two chunks of the pass and merged.
        assert!(s.minutes >= 10, "{s:?}");
        assert_eq!(
            b.count(&format!(
                "SELECT count(*) FROM samples WHERE taken_at_ms < {}",
                now - HOUR_MS
            )),
            0
        );
        assert_eq!(b.count("SELECT count(*) FROM samples"), round + 1);
        if backend == Backend::Sqlite {
            sizes.push((
                b.count(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                ) as u64,
                file_size(&b.db()) + file_size(&b.db().with_extension("db-wal")),
            ));
        }
    }
    // Aggregates are exact: 12 rounds x 10 minutes, 600 samples each.
    assert_eq!(b.count("SELECT count(*) FROM sample_minutes"), 120);
    assert_eq!(
        b.count("SELECT sum(samples) FROM sample_minutes"),
        12 * per_round as i64
    );
    assert_eq!(
        b.count("SELECT count(*) FROM sample_minutes WHERE samples != 600"),
        0
    );
    let first = b.rows("SELECT outcomes, metrics FROM sample_minutes ORDER BY minute_ms LIMIT 1");
    let (outcomes, metrics_json) = (first[0][0].clone(), first[0][1].clone());
    let outcomes: serde_json::Value = serde_json::from_str(&outcomes).expect("json");
    assert_eq!(outcomes["ok"], 540);
    assert_eq!(outcomes["timeout"], 60);
    // i in 0..600 with i % 10 != 0: values i % 7.
    let vals: Vec<f64> = (0..600)
        .filter(|i| i % 10 != 0)
        .map(|i| (i % 7) as f64)
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let m: serde_json::Value = serde_json::from_str(&metrics_json).expect("json");
    let lat = &m["latency-ms"];
    assert_eq!(lat["n"], 540);
    assert_eq!(lat["min"], 0.0);
    assert_eq!(lat["max"], 6.0);
    assert!((lat["mean"].as_f64().expect("mean") - mean).abs() < 1e-9);

    if backend == Backend::Sqlite {
        eprintln!("(database size, db + wal file size) after each round: {sizes:?}");
        // The file stops growing: 72,000 samples went through it, yet it holds only minutes.
        let peak_early = sizes[..4].iter().map(|s| s.0).max().unwrap_or(0);
        let peak_late = sizes[8..].iter().map(|s| s.0).max().unwrap_or(0);
        assert!(
            peak_late <= peak_early + peak_early / 4,
            "the database keeps growing: {sizes:?}"
        );
        // Raw, these samples would take about 10 MB; the database holds only their minutes.
        let raw_equivalent = 72_000u64 * 150;
        assert!(peak_late < raw_equivalent / 20, "{sizes:?}");
        // The files on disk (the WAL is reused after each checkpoint) stop growing too.
        let files_early = sizes[..4].iter().map(|s| s.1).max().unwrap_or(0);
        let files_late = sizes[8..].iter().map(|s| s.1).max().unwrap_or(0);
        assert!(
            files_late <= files_early + files_early / 4,
            "the files keep growing: {sizes:?}"
        );
    }

    // Aggregates expire past their own window.
    let later = now + 40 * 24 * HOUR_MS;
    let s = retention::pass(store.as_ref(), &metrics, r, later)
        .await
        .expect("pass");
    // The 120 old minutes, and the minute of the fresh samples (folded by this pass too).
    assert_eq!(s.folded, 12);
    assert_eq!(s.expired_minutes, 121);
    assert_eq!(b.count("SELECT count(*) FROM sample_minutes"), 0);
    // The read side still shows the newest sample after all of that.
    let nodes = acme.pool_nodes("web").await.expect("nodes");
    assert_eq!(nodes.nodes[0].latest.len(), 1);
}

async fn the_background_task_folds_on_its_own(backend: Backend) {
    let b = TestBalancer::start_with_on(backend, |c| {
        c.retention_raw = Duration::from_secs(3600);
        c.retention_aggregates = Duration::from_secs(7200);
        c.retention_every = Duration::from_secs(1);
    })
    .await;
    let acme = b.client_with_pool("acme", "web").await;
    acme.upload_probe("web", "ping", TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    let agent = b.agent(&acme, &["web"]).await;
    agent
        .register(&register("n1", "127.0.0.1:9", &["web"]))
        .await
        .expect("register");
    let now = now_ms();
    // 90 minutes old: folded. 3 hours old: folded, then expired with its minute.
    let old: Vec<_> = (0..300)
        .map(|i| sample("web", "ping", 1, now - 90 * MINUTE_MS + i))
        .chain((0..10).map(|i| sample("web", "ping", 1, now - 180 * MINUTE_MS + i)))
        .chain((0..5).map(|i| sample("web", "ping", 1, now - i)))
        .collect();
    agent.report(&batch("n1", old)).await.expect("report");
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.count("SELECT count(*) FROM samples") > 5 {
        assert!(Instant::now() < deadline, "retention did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.count("SELECT sum(samples) FROM sample_minutes"), 300);
    let text = b.admin.metrics_text().await.expect("metrics");
    assert!(
        text.contains("plb_retention_folded_samples_total 310"),
        "{text}"
    );
}

on_each_backend!(
    old_samples_fold_into_exact_minutes_and_the_file_stops_growing,
    the_background_task_folds_on_its_own,
);
