//! The scheduler with the real sandbox and real probes, no balancer: a good probe keeps
//! its schedule beside misbehaving ones, every outcome lands in the spool with its class,
//! and a refused module is reported as `invalid` without being run.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use plb_agent::assignments::{Module, Plan};
use plb_agent::metrics::Metrics;
use plb_agent::policy::Budget;
use plb_agent::reporter::Outbox;
use plb_agent::scheduler::Scheduler;
use plb_agent::spool::Spool;
use plb_api::{Assignment, Outcome, Sample, Tier};
use plb_probe_artifacts::{MISBEHAVE, TCP_CONNECT};
use plb_runtime::{Probe, Runtime, RuntimeConfig};
use plb_testkit::tcp_target;
use tokio::sync::watch;

fn assignment(
    probe: &str,
    sha: &str,
    interval_ms: u64,
    timeout_ms: u32,
    config: &[(&str, &str)],
) -> Assignment {
    Assignment {
        pool: "web".into(),
        probe: probe.into(),
        version: 1,
        sha256: sha.into(),
        tier: Tier::Quick,
        interval_ms,
        timeout_ms,
        fuel: None,
        memory_mib: 16,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Runs the plan for `for_`, stops, and returns every spooled sample by probe.
async fn run_plan(plan: Plan, for_: Duration) -> (BTreeMap<String, Vec<Sample>>, Arc<Metrics>) {
    let dir = tempfile::tempdir().expect("tmp");
    let metrics = Arc::new(Metrics::new());
    let spool = Spool::open(dir.path(), 1 << 20).expect("spool");
    let outbox = Outbox::new(spool, Arc::clone(&metrics), Duration::from_secs(1));
    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent_runs: 6,
        max_memory_mib: 64,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    for (_, m) in &plan.probes {
        if let Module::Ready(p) = m {
            runtime.prepare(p, false).expect("prepare");
        }
    }
    // Start empty and hand the plan over later, as the syncer does.
    let (plan_tx, plan_rx) = watch::channel(Plan::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let sched = Scheduler::new(
        runtime,
        Arc::clone(&outbox),
        Arc::clone(&metrics),
        "n1".into(),
        plan_rx,
        Budget::new(6),
        Duration::from_secs(2),
    );
    let task = tokio::spawn(sched.run(stop_rx));
    tokio::time::sleep(Duration::from_millis(50)).await;
    plan_tx.send(plan).expect("send plan");
    tokio::time::sleep(for_).await;
    stop_tx.send(true).expect("stop");
    task.await.expect("scheduler");
    drop(outbox);
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    let batch = spool.peek(100_000, u64::MAX).expect("peek");
    let mut by: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in batch.samples {
        by.entry(s.probe.clone()).or_default().push(s);
    }
    (by, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_probe_keeps_its_schedule_beside_misbehaving_ones() {
    let address = tcp_target();
    let good = Probe::new(TCP_CONNECT.to_vec());
    let bad = Probe::new(MISBEHAVE.to_vec());
    let ready = |p: &Probe| Module::Ready(p.clone());
    let plan = Plan {
        address,
        probes: vec![
            (
                assignment("tcp", good.sha256(), 300, 1000, &[("attempts", "1")]),
                ready(&good),
            ),
            (
                assignment("spin", bad.sha256(), 300, 250, &[("mode", "spin")]),
                ready(&bad),
            ),
            (
                assignment("alloc", bad.sha256(), 300, 2000, &[("mode", "alloc")]),
                ready(&bad),
            ),
            (
                assignment(
                    "sleep",
                    bad.sha256(),
                    300,
                    250,
                    &[("mode", "sleep"), ("ms", "60000")],
                ),
                ready(&bad),
            ),
            (
                assignment("panic", bad.sha256(), 300, 1000, &[("mode", "panic")]),
                ready(&bad),
            ),
        ],
    };
    let (by, metrics) = run_plan(plan, Duration::from_secs(5)).await;

    let tcp = &by["tcp"];
    assert!(
        tcp.len() >= 13,
        "good probe ran {} times in 5 s at 300 ms",
        tcp.len()
    );
    assert!(
        tcp.iter().all(|s| s.outcome == Outcome::Ok),
        "{:?}",
        tcp.iter()
            .map(|s| (s.outcome, &s.message))
            .collect::<Vec<_>>()
    );
    let mut times: Vec<i64> = tcp.iter().map(|s| s.taken_at_ms).collect();
    times.sort_unstable();
    for w in times.windows(2) {
        // 300 ms ± 10 % jitter, plus scheduling slack on a busy machine.
        assert!(
            w[1] - w[0] <= 300 + 60 + 150,
            "gap of {} ms in the good probe's schedule",
            w[1] - w[0]
        );
    }
    let classes: HashMap<&str, Outcome> = [
        ("spin", Outcome::Timeout),
        ("alloc", Outcome::MemoryLimit),
        ("sleep", Outcome::Timeout),
        ("panic", Outcome::Trap),
    ]
    .into();
    for (probe, class) in classes {
        let samples = &by[probe];
        assert!(samples.len() >= 3, "{probe}: {} samples", samples.len());
        assert!(
            samples.iter().all(|s| s.outcome == class),
            "{probe}: {:?}",
            samples.iter().map(|s| s.outcome).collect::<Vec<_>>()
        );
        assert!(
            samples
                .iter()
                .all(|s| s.metrics.is_empty() && !s.message.is_empty())
        );
    }
    // A 250 ms timeout at a 300 ms interval never overlaps; ids are unique.
    let ids: std::collections::HashSet<&str> =
        by.values().flatten().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), by.values().map(Vec::len).sum::<usize>());
    assert!(
        metrics
            .render()
            .contains(r#"plb_agent_runs_total{pool="web",probe="spin",outcome="timeout"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_module_is_reported_as_invalid_and_never_run() {
    let plan = Plan {
        address: "127.0.0.1:1".into(),
        probes: vec![(
            assignment("bad-hash", "ab", 200, 1000, &[]),
            Module::Refused(
                "module refused: its bytes hash to sha256 cd but the assignment names ab; not run"
                    .into(),
            ),
        )],
    };
    let (by, _) = run_plan(plan, Duration::from_millis(1500)).await;
    let s = &by["bad-hash"];
    assert!(s.len() >= 4, "{} samples", s.len());
    for s in s {
        assert_eq!(s.outcome, Outcome::Invalid);
        assert!(s.message.contains("refused"), "{}", s.message);
        assert_eq!(s.duration_ms, 0.0, "never run");
        assert_eq!(s.fuel_used, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_probe_is_not_started_twice() {
    let bad = Probe::new(MISBEHAVE.to_vec());
    // Sleeps 700 ms at a 200 ms interval: at most one run at a time.
    let plan = Plan {
        address: "127.0.0.1:1".into(),
        probes: vec![(
            assignment(
                "slow",
                bad.sha256(),
                200,
                2000,
                &[("mode", "sleep"), ("ms", "700")],
            ),
            Module::Ready(bad.clone()),
        )],
    };
    let (by, metrics) = run_plan(plan, Duration::from_millis(3000)).await;
    let mut s = by["slow"].clone();
    s.sort_by_key(|s| s.taken_at_ms);
    assert!(s.iter().all(|s| s.outcome == Outcome::Ok), "{:?}", s);
    for w in s.windows(2) {
        let gap = w[1].taken_at_ms - w[0].taken_at_ms;
        assert!(
            gap as f64 >= w[0].duration_ms - 5.0,
            "started while running: gap {gap} ms, run {} ms",
            w[0].duration_ms
        );
    }
    assert!((3..=5).contains(&s.len()), "{} runs", s.len());
    assert!(
        metrics
            .render()
            .contains("plb_agent_runs_skipped_total{pool=\"web\",probe=\"slow\"}")
    );
}
