//! Two balancer replicas on one PostgreSQL database, three agents given both URLs, and
//! route load against both replicas (issue 16): `kill -9` of the leading replica loses
//! no sample an agent took, the survivor keeps answering route decisions, takes the
//! lead within 10 s, and the killed replica, started again, joins as a follower. Real
//! processes throughout: PostgreSQL 15 (`scripts/pg-temp.sh`), two `plb balancer
//! --replica`, three `plb agent`.
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plb_testkit::{http_get, now_ms, test_dir, wait_for};
use plb_tests::cluster::{AgentSpec, Balancer, pg_samples, shared_pg_database, stop_agent_flushed};

const POOL: &str = "web";

/// `(replica, leader, epoch)` from a replica's `/healthz`, or `None` if it does not answer.
fn health(b: &Balancer) -> Option<(String, bool, i64)> {
    let text = http_get(&format!("{}/healthz", b.url())).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        v["replica"].as_str().unwrap_or_default().to_string(),
        v["leader"].as_bool().unwrap_or(false),
        v["leader_epoch"].as_i64().unwrap_or(0),
    ))
}

/// Asks the balancer at `base` for route decisions every 20 ms until `stop`; returns
/// when each was answered (Unix ms).
fn route_load(base: String, token: String, stop: Arc<AtomicBool>) -> Vec<i64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let url = format!("{base}/v1/pools/{POOL}/route");
        let client = reqwest::Client::new();
        let mut answered = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let ok = client
                .get(&url)
                .bearer_auth(&token)
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                answered.push(now_ms());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answered
    })
}

#[test]
fn the_survivor_answers_leads_and_loses_nothing_when_the_leader_is_killed() {
    let started = Instant::now();
    let dir = test_dir(module_path!());
    let (rt, db) = shared_pg_database().expect("a database on PostgreSQL (scripts/pg-temp.sh)");
    let mut replicas = [
        Balancer::start_replica(&dir.path().join("a"), &db, "a").expect("replica a"),
        Balancer::start_replica(&dir.path().join("b"), &db, "b").expect("replica b"),
    ];
    // Exactly one leads.
    let leader = wait_for(Duration::from_secs(15), "one replica leading", || {
        let hs: Vec<_> = replicas.iter().map(health).collect();
        let leaders: Vec<usize> = (0..2)
            .filter(|&i| hs[i].as_ref().is_some_and(|h| h.1))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    })
    .expect("a leader");
    let survivor = 1 - leader;
    let epoch_before = health(&replicas[leader]).expect("leader health").2;

    let client = replicas[0].client_with_pool("acme", POOL).expect("client");
    // The agents list the leader first: their reports go through it until it dies.
    let urls = format!("{},{}", replicas[leader].url(), replicas[survivor].url());
    let mut agents = Vec::new();
    for i in 0..3 {
        let spec = AgentSpec::sampling(
            urls.clone(),
            replicas[0]
                .agent_token(&client, &[POOL])
                .expect("agent token"),
            &format!("n{i}"),
            POOL,
            dir.path(),
        );
        let proc = spec
            .start(&dir.path().join(format!("agent-{i}.log")))
            .expect("agent");
        agents.push((spec, proc));
    }
    wait_for(
        Duration::from_secs(20),
        "every agent's samples stored",
        || {
            (0..3)
                .all(|i| pg_samples(&rt, &db, &format!("n{i}")).is_some_and(|s| s.len() >= 10))
                .then_some(())
        },
    )
    .expect("samples before the kill");

    // Route load on both replicas, then kill -9 of the leader.
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Vec<i64>>>> = Arc::new(Mutex::new(Vec::new()));
    let loads: Vec<_> = [leader, survivor]
        .into_iter()
        .map(|i| {
            let base = replicas[i].url();
            let (token, stop, answers) = (client.clone(), Arc::clone(&stop), Arc::clone(&answers));
            std::thread::spawn(move || {
                let a = route_load(base, token, stop);
                answers.lock().unwrap_or_else(|e| e.into_inner()).push(a);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    replicas[leader].kill9().expect("kill the leader");
    let killed_at = now_ms();
    let (took_ms, epoch_after) = wait_for(Duration::from_secs(15), "the survivor leading", || {
        health(&replicas[survivor])
            .filter(|h| h.1)
            .map(|h| (now_ms() - killed_at, h.2))
    })
    .expect("the survivor leads");
    assert!(took_ms <= 10_000, "the lead moved after {took_ms} ms");
    assert!(
        epoch_after > epoch_before,
        "a new epoch: {epoch_after} vs {epoch_before}"
    );
    // Reports flow through the survivor: a sample of every node taken after the kill.
    wait_for(Duration::from_secs(15), "samples after the kill", || {
        (0..3)
            .all(|i| {
                pg_samples(&rt, &db, &format!("n{i}"))
                    .is_some_and(|s| s.iter().any(|(_, t)| *t > killed_at + 1_000))
            })
            .then_some(())
    })
    .expect("samples through the survivor");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().expect("route load");
    }

    // The killed replica starts again and follows.
    replicas[leader]
        .restart()
        .expect("restart the killed replica");
    let rejoined = wait_for(
        Duration::from_secs(15),
        "the restarted replica's health",
        || health(&replicas[leader]),
    )
    .expect("restarted");
    assert!(!rejoined.1, "the restarted replica leads: {rejoined:?}");
    assert!(health(&replicas[survivor]).is_some_and(|h| h.1));

    // Nothing an agent took is lost or stored twice.
    let mut stored = 0;
    for (i, (spec, mut proc)) in agents.into_iter().enumerate() {
        let m = spec.metrics().expect("agent metrics");
        stop_agent_flushed(&mut proc).expect("the agent stops and has sent everything");
        let taken = plb_testkit::metric_sum(&m, "plb_agent_samples_taken_total", &[]);
        let rows = pg_samples(&rt, &db, &format!("n{i}")).expect("samples");
        let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(ids.len(), rows.len(), "n{i}: a sample stored twice");
        assert!(
            rows.len() as f64 >= taken,
            "n{i}: {} of {taken}",
            rows.len()
        );
        stored += rows.len();
    }

    // The survivor answered route decisions throughout.
    let answers = answers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let survivor_answers = answers
        .iter()
        .max_by_key(|a| a.last().copied().unwrap_or(0))
        .cloned()
        .unwrap_or_default();
    let gap = survivor_answers
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(i64::MAX);
    assert!(
        survivor_answers.iter().any(|t| *t > killed_at + 1_000),
        "the survivor answered no route request after the kill"
    );
    assert!(
        gap <= 2_000,
        "a gap of {gap} ms in the survivor's route answers"
    );
    eprintln!(
        "lead moved {took_ms} ms after kill -9 (epoch {epoch_before} -> {epoch_after}); \
         survivor answered {} route requests, longest gap {gap} ms; {stored} samples of 3 \
         agents stored, none lost or twice; wall {:.1} s",
        survivor_answers.len(),
        started.elapsed().as_secs_f64()
    );
}
