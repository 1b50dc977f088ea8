//! The sandbox against misbehaving guests: every misbehaviour gets its exact outcome
//! class within its limits, and the same process keeps running good probes.
mod common;

use std::time::{Duration, Instant};

use common::{closed_port, http_server, run, runtime, spec};
use plb_api::Outcome;
use plb_probe_artifacts::{MISBEHAVE, TRIVIAL};
use plb_runtime::Limits;

const MARGIN: Duration = Duration::from_millis(100);

fn limits(fuel: Option<u64>, timeout_ms: u32, memory_mib: u32) -> Limits {
    Limits {
        fuel,
        timeout_ms,
        memory_mib,
    }
}

async fn assert_good_probe_still_runs(rt: &plb_runtime::Runtime) {
    let r = run(rt, TRIVIAL, &spec("127.0.0.1:1", &[], Limits::default())).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(!r.metrics.is_empty());
}

/// (misbehave mode, extra config, limits, expected outcome)
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Limits,
    Outcome,
);

fn cases() -> Vec<Case> {
    vec![
        (
            "ok",
            vec![],
            limits(Some(100_000_000), 1000, 32),
            Outcome::Ok,
        ),
        ("spin", vec![], limits(None, 200, 32), Outcome::Timeout),
        (
            "spin",
            vec![],
            limits(Some(5_000_000), 5000, 32),
            Outcome::FuelExhausted,
        ),
        (
            "alloc",
            vec![],
            limits(None, 5000, 16),
            Outcome::MemoryLimit,
        ),
        ("recurse", vec![], limits(None, 5000, 32), Outcome::Trap),
        ("panic", vec![], limits(None, 1000, 32), Outcome::Trap),
        (
            "metrics-flood",
            vec![],
            limits(None, 5000, 32),
            Outcome::OutputLimit,
        ),
        (
            "log-flood",
            vec![],
            limits(None, 5000, 32),
            Outcome::OutputLimit,
        ),
        // 1000 names of 1 MiB sharing one buffer: 1 MiB of guest memory, 1000 MiB for
        // the host to copy. Stopped by the host-call copy limit: an output flood.
        (
            "metrics-alias",
            vec![],
            limits(None, 5000, 32),
            Outcome::OutputLimit,
        ),
        (
            "sleep",
            vec![("ms", "60000")],
            limits(None, 200, 32),
            Outcome::Timeout,
        ),
        (
            "sleep",
            vec![("ms", "60000")],
            limits(Some(1_000_000_000), 200, 32),
            Outcome::Timeout,
        ),
        ("nan", vec![], limits(None, 1000, 32), Outcome::Broken),
        (
            "unhealthy",
            vec![],
            limits(None, 1000, 32),
            Outcome::Unhealthy,
        ),
        ("broken", vec![], limits(None, 1000, 32), Outcome::Broken),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_misbehaviour_gets_its_class_within_its_limit() {
    let rt = runtime();
    for (mode, extra, lim, expected) in cases() {
        let mut cfg = vec![("mode", mode)];
        cfg.extend(extra.iter().copied());
        let s = spec("127.0.0.1:1", &cfg, lim);
        // Compile outside the timed part: the first run of a module compiles it.
        rt.prepare(
            &plb_runtime::Probe::new(MISBEHAVE.to_vec()),
            lim.fuel.is_some(),
        )
        .expect("prepare");
        let started = Instant::now();
        let r = run(&rt, MISBEHAVE, &s).await;
        let took = started.elapsed();
        assert_eq!(r.outcome, expected, "mode {mode}: {r:#?}");
        assert!(
            took <= Duration::from_millis(u64::from(lim.timeout_ms)) + MARGIN,
            "mode {mode} took {took:?}, limit {} ms",
            lim.timeout_ms
        );
        if expected != Outcome::Ok {
            assert!(!r.message.is_empty(), "mode {mode} has no message");
            assert!(r.metrics.is_empty(), "mode {mode} leaked metrics");
        }
        assert_good_probe_still_runs(&rt).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_name_the_problem() {
    let rt = runtime();
    let r = run(
        &rt,
        MISBEHAVE,
        &spec("127.0.0.1:1", &[("mode", "panic")], limits(None, 1000, 32)),
    )
    .await;
    assert!(r.message.contains("panicked"), "{r:#?}");
    let r = run(
        &rt,
        MISBEHAVE,
        &spec("127.0.0.1:1", &[("mode", "alloc")], limits(None, 5000, 16)),
    )
    .await;
    assert!(r.message.contains("16 MiB"), "{r:#?}");
    let r = run(
        &rt,
        MISBEHAVE,
        &spec("127.0.0.1:1", &[("mode", "nan")], limits(None, 1000, 32)),
    )
    .await;
    assert!(r.message.contains("finite"), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_metric_names_are_an_output_limit_not_a_trap() {
    let rt = runtime();
    for (count, kib) in [("1000", "1024"), ("20", "1024"), ("100000", "1")] {
        let r = run(
            &rt,
            MISBEHAVE,
            &spec(
                "127.0.0.1:1",
                &[("mode", "metrics-alias"), ("count", count), ("kib", kib)],
                limits(None, 5000, 32),
            ),
        )
        .await;
        assert_eq!(
            r.outcome,
            Outcome::OutputLimit,
            "{count} x {kib} KiB: {r:#?}"
        );
        assert!(r.metrics.is_empty(), "{r:#?}");
        if count != "100000" {
            assert!(r.message.contains("MiB in one call or result"), "{r:#?}");
        }
    }
    assert_good_probe_still_runs(&rt).await;
}

/// A small pool filled with runs at the memory limit, and more waiting: a good probe
/// beside them still gets a slot and succeeds, and every hostile run is classified by
/// its own limit (none fails to instantiate on a pool another run exhausted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_at_the_memory_limit_do_not_starve_a_good_probe() {
    let rt = plb_runtime::Runtime::new(plb_runtime::RuntimeConfig {
        max_concurrent_runs: 3,
        max_memory_mib: 64,
        ..plb_runtime::RuntimeConfig::default()
    })
    .expect("runtime");
    let mut hostile = Vec::new();
    for i in 0..8 {
        let rt = rt.clone();
        hostile.push(tokio::spawn(async move {
            // Half grow until the limit stops them, half hold 60 MiB and finish.
            let cfg: Vec<(&str, &str)> = if i % 2 == 0 {
                vec![("mode", "alloc")]
            } else {
                vec![("mode", "alloc"), ("mib", "60")]
            };
            (
                i,
                run(
                    &rt,
                    MISBEHAVE,
                    &spec("127.0.0.1:1", &cfg, limits(None, 10_000, 64)),
                )
                .await,
            )
        }));
    }
    let mut good = Vec::new();
    for _ in 0..3 {
        let rt = rt.clone();
        good.push(tokio::spawn(async move {
            run(
                &rt,
                TRIVIAL,
                &spec("127.0.0.1:1", &[], limits(None, 10_000, 32)),
            )
            .await
        }));
    }
    for g in good {
        let r = g.await.expect("good task");
        assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    }
    for h in hostile {
        let (i, r) = h.await.expect("hostile task");
        let want = if i % 2 == 0 {
            Outcome::MemoryLimit
        } else {
            Outcome::Ok
        };
        assert_eq!(r.outcome, want, "run {i}: {r:#?}");
    }
    assert_good_probe_still_runs(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_reported_when_metered() {
    let rt = runtime();
    let r = run(
        &rt,
        TRIVIAL,
        &spec("127.0.0.1:1", &[], limits(Some(1_000_000_000), 1000, 32)),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok);
    let used = r.fuel_used.expect("fuel metered");
    assert!(used > 0 && used < 1_000_000_000, "fuel used {used}");
    let r = run(
        &rt,
        TRIVIAL,
        &spec("127.0.0.1:1", &[], limits(None, 1000, 32)),
    )
    .await;
    assert_eq!(r.fuel_used, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_misbehaving_runs_in_parallel_leave_the_process_healthy() {
    let rt = runtime();
    let modes = ["spin", "alloc", "panic", "sleep", "recurse", "log-flood"];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let rt = rt.clone();
        let mode = modes[i % modes.len()];
        tasks.push(tokio::spawn(async move {
            let s = spec(
                "127.0.0.1:1",
                &[("mode", mode), ("ms", "60000")],
                limits(None, 150, 16),
            );
            (mode, run(&rt, MISBEHAVE, &s).await)
        }));
    }
    for t in tasks {
        let (mode, r) = t.await.expect("task");
        assert_ne!(r.outcome, Outcome::Ok, "mode {mode}");
        assert_ne!(r.outcome, Outcome::Invalid, "mode {mode}: {r:?}");
    }
    assert_good_probe_still_runs(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_files_no_env_no_sockets_no_other_addresses() {
    let rt = runtime();
    let target = http_server().await;
    let elsewhere = http_server().await;
    let t = target.to_string();
    let l = limits(None, 2000, 32);

    let r = run(&rt, MISBEHAVE, &spec(&t, &[("mode", "read-file")], l)).await;
    assert_eq!(r.outcome, Outcome::Broken, "{r:#?}");
    assert!(!r.metrics.contains_key("leaked-bytes"));

    // SAFETY-free way to make sure the host has an environment to leak.
    assert!(std::env::vars().count() > 0);
    let r = run(&rt, MISBEHAVE, &spec(&t, &[("mode", "env")], l)).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    assert_eq!(r.metrics.get("env-vars"), Some(&0.0), "{r:#?}");

    let addr = elsewhere.to_string();
    let r = run(
        &rt,
        MISBEHAVE,
        &spec(&t, &[("mode", "socket"), ("addr", &addr)], l),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Broken, "{r:#?}");
    assert!(!r.metrics.contains_key("connected"));

    let url = format!("http://{elsewhere}/health");
    let r = run(
        &rt,
        MISBEHAVE,
        &spec(&t, &[("mode", "http-elsewhere"), ("url", &url)], l),
    )
    .await;
    assert_ne!(r.outcome, Outcome::Ok, "{r:#?}");
    assert!(r.message.contains("path must start with '/'"), "{r:#?}");

    // The target itself is reachable through the host functions.
    let r = run(
        &rt,
        plb_probe_artifacts::HTTP_CHECK,
        &spec(&t, &[("path", "/health")], l),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    let _ = closed_port().await;
}
