//! Load with faults: one real agent (`plb agent`) runs a thousand hostile probe runs of
//! every class the sandbox knows (an infinite loop by wall clock and by fuel, a memory
//! bomb, a stack overflow, a panic, metric, log and aliased-name floods, a sleeper, a
//! NaN, reads of files, sockets and other hosts) beside two well-behaved probes, against
//! a real balancer (`plb balancer`, SQLite file).
//!
//! What must hold: the agent does not crash; every hostile run is classified (each
//! stored sample carries its probe's class, and the agent's run counters match what is
//! stored, so no run vanished); and the good probes keep their sample rate within 10 %
//! of a run of the same agent without the hostile probes, measured first on this
//! machine.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use plb_probe_artifacts::{MISBEHAVE, TCP_CONNECT, TRIVIAL};
use plb_testkit::{Proc, free_port, metric_sum, now_ms, tcp_target, test_dir, wait_for};
use plb_tests::cluster::{AgentSpec, Balancer, ProbeUpload, StoredSample, stop_agent_flushed};

const CALM: &str = "calm";
const STORM: &str = "storm";
/// Hostile runs the storm must reach.
const HOSTILE_RUNS: usize = 1_000;
/// The good probes' interval.
const GOOD_MS: u64 = 200;
/// How long the baseline runs, and the storm at least.
const BASELINE: Duration = Duration::from_secs(12);
/// Copies of each hostile probe (13 kinds; the pool quota is 50 probes).
const COPIES: usize = 3;
/// The agent's concurrent runs (`--max-concurrent-runs`; default 8).
const CONCURRENT_RUNS: &str = "32";

/// One hostile probe: its name, `misbehave` config, interval, timeout, fuel, memory,
/// and the class every one of its runs must get.
struct Hostile {
    name: String,
    config: &'static [(&'static str, &'static str)],
    interval_ms: u64,
    timeout_ms: u32,
    fuel: Option<u64>,
    memory_mib: u32,
    class: &'static str,
}

fn hostile(
    name: &str,
    config: &'static [(&'static str, &'static str)],
    class: &'static str,
) -> Hostile {
    Hostile {
        name: name.to_string(),
        config,
        interval_ms: 100,
        timeout_ms: 1_000,
        fuel: None,
        memory_mib: 16,
        class,
    }
}

/// Every class of misbehaviour. The CPU-bound ones run less often: two cores are shared
/// with everything else on the machine.
fn hostiles() -> Vec<Hostile> {
    vec![
        Hostile {
            interval_ms: 500,
            timeout_ms: 100,
            ..hostile("spin", &[("mode", "spin")], "timeout")
        },
        Hostile {
            fuel: Some(5_000_000),
            ..hostile("spin-fuel", &[("mode", "spin")], "fuel_exhausted")
        },
        Hostile {
            timeout_ms: 100,
            ..hostile("sleep", &[("mode", "sleep"), ("ms", "60000")], "timeout")
        },
        hostile("alloc", &[("mode", "alloc")], "memory_limit"),
        hostile("recurse", &[("mode", "recurse")], "trap"),
        hostile("panic", &[("mode", "panic")], "trap"),
        Hostile {
            interval_ms: 300,
            ..hostile(
                "metrics-flood",
                &[("mode", "metrics-flood")],
                "output_limit",
            )
        },
        Hostile {
            interval_ms: 300,
            ..hostile("log-flood", &[("mode", "log-flood")], "output_limit")
        },
        Hostile {
            interval_ms: 300,
            ..hostile(
                "metrics-alias",
                &[("mode", "metrics-alias")],
                "output_limit",
            )
        },
        hostile("nan", &[("mode", "nan")], "broken"),
        hostile("read-file", &[("mode", "read-file")], "broken"),
        hostile(
            "socket",
            &[("mode", "socket"), ("addr", "127.0.0.1:22")],
            "broken",
        ),
        hostile(
            "http-elsewhere",
            &[("mode", "http-elsewhere"), ("url", "http://127.0.0.1:1/")],
            "broken",
        ),
    ]
}

/// The well-behaved probes, in every pool.
fn upload_good(b: &Balancer, token: &str, pool: &str) {
    for (name, wasm, config) in [
        ("tcp", TCP_CONNECT, &[("attempts", "1")][..]),
        ("trivial", TRIVIAL, &[][..]),
    ] {
        b.upload(
            token,
            &ProbeUpload::quick(pool, name, wasm, GOOD_MS, 1_000, config),
        )
        .expect("upload a good probe");
    }
}

fn agent(b: &Balancer, client: &str, pool: &str, dir: &Path) -> AgentSpec {
    AgentSpec {
        balancer: b.url(),
        token: b.agent_token(client, &[pool]).expect("agent token"),
        node: format!("n-{pool}"),
        address: tcp_target(),
        pools: vec![pool.into()],
        spool: dir.join(format!("spool-{pool}")),
        metrics_port: free_port(),
        extra: [
            "--poll-ms",
            "1000",
            "--batch-max-age-ms",
            "200",
            "--max-concurrent-runs",
            CONCURRENT_RUNS,
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    }
}

/// Reads the agent's metrics, then stops it: it must still run, exit cleanly and send
/// every sample it took before it exits (its reporter flushes the spool at shutdown).
/// Returns the metrics.
fn stop(spec: &AgentSpec, mut proc: Proc) -> BTreeMap<String, f64> {
    assert!(proc.alive(), "the agent crashed:\n{}", proc.log_tail(4000));
    let m = spec.metrics().expect("agent metrics");
    stop_agent_flushed(&mut proc).expect("the agent stops and has sent everything");
    m
}

/// Good samples per second of each good probe taken in `[from, to]` ms, and whether
/// every one of them succeeded.
fn good_rate(samples: &[StoredSample], from: i64, to: i64) -> BTreeMap<String, f64> {
    let secs = (to - from) as f64 / 1e3;
    let mut rate = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        (s.probe == "tcp" || s.probe == "trivial") && (from..=to).contains(&s.taken_at_ms)
    }) {
        assert_eq!(s.outcome, "ok", "a good probe failed: {s:?}");
        *rate.entry(s.probe.clone()).or_insert(0.0) += 1.0 / secs;
    }
    rate
}

#[test]
fn a_thousand_hostile_runs_beside_good_probes_are_all_classified() {
    let started = Instant::now();
    let dir = test_dir(module_path!());
    let mut balancer = Balancer::start(&dir.path().join("balancer")).expect("balancer");
    let client = balancer.client_with_pool("acme", CALM).expect("client");
    let (status, v) = balancer
        .call(
            "POST",
            "/v1/pools",
            &client,
            Some(serde_json::json!({ "name": STORM, "latency_slo_ms": 200 })),
        )
        .expect("create the storm pool");
    assert!((200..300).contains(&status), "{status}: {v}");
    upload_good(&balancer, &client, CALM);
    upload_good(&balancer, &client, STORM);
    let hostiles: Vec<Hostile> = (0..COPIES)
        .flat_map(|i| {
            hostiles().into_iter().map(move |h| Hostile {
                name: format!("{}-{i}", h.name),
                ..h
            })
        })
        .collect();
    for h in &hostiles {
        balancer
            .upload(
                &client,
                &ProbeUpload {
                    fuel: h.fuel,
                    memory_mib: h.memory_mib,
                    ..ProbeUpload::quick(
                        STORM,
                        &h.name,
                        MISBEHAVE,
                        h.interval_ms,
                        h.timeout_ms,
                        h.config,
                    )
                },
            )
            .expect("upload a hostile probe");
    }

    // The baseline: the same agent with the good probes alone.
    let calm = agent(&balancer, &client, CALM, dir.path());
    let proc = calm
        .start(&dir.path().join("agent-calm.log"))
        .expect("agent");
    // Past the first poll and the first runs' random phase.
    std::thread::sleep(Duration::from_secs(2));
    let calm_from = now_ms();
    std::thread::sleep(BASELINE);
    let calm_to = now_ms();
    stop(&calm, proc);
    let base = good_rate(
        &balancer.samples(&calm.node).expect("samples"),
        calm_from,
        calm_to,
    );

    // The storm: good and hostile probes until a thousand hostile runs are stored.
    let storm = agent(&balancer, &client, STORM, dir.path());
    let proc = storm
        .start(&dir.path().join("agent-storm.log"))
        .expect("agent");
    std::thread::sleep(Duration::from_secs(2));
    let storm_from = now_ms();
    let hostile_names: Vec<&str> = hostiles.iter().map(|h| h.name.as_str()).collect();
    let count_hostile = |from: i64| {
        balancer
            .samples(&storm.node)
            .map(|s| {
                s.iter()
                    .filter(|s| s.taken_at_ms >= from && hostile_names.contains(&s.probe.as_str()))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_for(
        Duration::from_secs(60),
        "a thousand hostile runs stored",
        || {
            (count_hostile(storm_from) >= HOSTILE_RUNS
                && now_ms() - storm_from >= BASELINE.as_millis() as i64)
                .then_some(())
        },
    )
    .expect("hostile runs");
    let storm_to = now_ms();
    let m = stop(&storm, proc);
    let samples = balancer.samples(&storm.node).expect("samples");
    let in_window = count_hostile(storm_from);
    balancer.stop().expect("the balancer stops cleanly");

    // Every hostile run classified as its misbehaviour, and none lost: the agent's
    // counters per probe and outcome match what was stored.
    let mut by_probe: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for s in &samples {
        *by_probe
            .entry(s.probe.as_str())
            .or_default()
            .entry(s.outcome.as_str())
            .or_default() += 1;
    }
    let mut hostile_total = 0;
    for h in &hostiles {
        let got = by_probe.get(h.name.as_str()).cloned().unwrap_or_default();
        let n: usize = got.values().sum();
        hostile_total += n;
        assert!(n >= 5, "{}: only {n} runs: {got:?}", h.name);
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            vec![h.class],
            "{}: every run must be classified {}: {got:?}",
            h.name,
            h.class
        );
        let counted = metric_sum(
            &m,
            "plb_agent_runs_total",
            &[("probe", &h.name), ("outcome", h.class)],
        );
        // The counters were read just before the stop signal: a run that ended in
        // between, and one in flight then (a probe is never started twice), are stored
        // too.
        assert!(
            (counted as usize..=counted as usize + 2).contains(&n),
            "{}: the agent counted {counted} runs, {n} are stored",
            h.name
        );
    }
    let ids: std::collections::HashSet<&str> = samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), samples.len(), "a sample stored twice");

    let during = good_rate(&samples, storm_from, storm_to);
    eprintln!(
        "hostile runs stored: {hostile_total} ({} during {:.1} s of storm); by probe: {by_probe:?}",
        in_window,
        (storm_to - storm_from) as f64 / 1e3
    );
    eprintln!("good probes' samples/s: without hostile {base:?}, with {during:?}");
    for (probe, want) in &base {
        let got = during.get(probe).copied().unwrap_or(0.0);
        let ratio = got / want;
        eprintln!("{probe}: {got:.2}/s vs {want:.2}/s = {ratio:.3}");
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{probe}: {got:.2} samples/s beside the hostile probes, {want:.2}/s without"
        );
    }
    eprintln!("wall {:.1} s", started.elapsed().as_secs_f64());
}
