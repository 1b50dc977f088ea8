//! The sample probes against real local servers return sensible metrics, and the
//! compiled cache survives a restart of the runtime.
mod common;

use common::{closed_port, http_server, run, runtime, spec};
use plb_api::Outcome;
use plb_probe_artifacts::{CPU_BENCH, HTTP_CHECK, MEMORY_BENCH, TCP_CONNECT, TRIVIAL};
use plb_runtime::{Limits, Probe, Runtime, RuntimeConfig};

fn lim() -> Limits {
    Limits {
        fuel: None,
        timeout_ms: 5_000,
        memory_mib: 64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_measures_and_judges_the_node() {
    let rt = runtime();
    let addr = http_server().await.to_string();
    let r = run(
        &rt,
        HTTP_CHECK,
        &spec(
            &addr,
            &[("path", "/health"), ("body-contains", "ok")],
            lim(),
        ),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    for m in ["http-connect-ms", "http-first-byte-ms", "http-total-ms"] {
        let v = r.metrics[m];
        assert!((0.0..5_000.0).contains(&v), "{m} = {v}");
    }
    assert_eq!(r.metrics["http-status"], 200.0);
    assert!(r.metrics["http-total-ms"] >= r.metrics["http-connect-ms"]);

    let r = run(&rt, HTTP_CHECK, &spec(&addr, &[("path", "/fail")], lim())).await;
    assert_eq!(r.outcome, Outcome::Unhealthy, "{r:#?}");
    assert!(r.message.contains("500"), "{}", r.message);

    let r = run(
        &rt,
        HTTP_CHECK,
        &spec(
            &addr,
            &[("path", "/health"), ("body-contains", "absent")],
            lim(),
        ),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Unhealthy, "{r:#?}");

    let closed = closed_port().await.to_string();
    let r = run(
        &rt,
        HTTP_CHECK,
        &spec(&closed, &[("path", "/health")], lim()),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Unhealthy, "{r:#?}");

    let r = run(
        &rt,
        HTTP_CHECK,
        &spec(&addr, &[("timeout-ms", "not a number")], lim()),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Broken, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connect_times_the_connection() {
    let rt = runtime();
    let addr = http_server().await.to_string();
    let r = run(&rt, TCP_CONNECT, &spec(&addr, &[], lim())).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    let v = r.metrics["tcp-connect-ms"];
    assert!(v > 0.0 && v < 1_000.0, "{v}");
    let closed = closed_port().await.to_string();
    let r = run(&rt, TCP_CONNECT, &spec(&closed, &[], lim())).await;
    assert_eq!(r.outcome, Outcome::Unhealthy, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_report_positive_finite_figures() {
    let rt = runtime();
    for (name, wasm) in [("cpu-bench", CPU_BENCH), ("memory-bench", MEMORY_BENCH)] {
        let r = run(&rt, wasm, &spec("127.0.0.1:1", &[], lim())).await;
        assert_eq!(r.outcome, Outcome::Ok, "{name}: {r:#?}");
        assert!(!r.metrics.is_empty(), "{name}");
        for (m, v) in &r.metrics {
            assert!(v.is_finite() && *v > 0.0, "{name}: {m} = {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_cache_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RuntimeConfig {
        max_concurrent_runs: 4,
        max_memory_mib: 64,
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let probe = Probe::new(TRIVIAL.to_vec());
    let s = spec("127.0.0.1:1", &[], Limits::default());
    {
        let rt = Runtime::new(cfg.clone()).expect("runtime");
        assert_eq!(rt.run(&probe, &s).await.outcome, Outcome::Ok);
    }
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(probe.sha256()))
        .collect();
    assert_eq!(
        artifacts.len(),
        1,
        "one precompiled artifact keyed by sha256"
    );
    let path = artifacts[0].path();
    let before = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let rt = Runtime::new(cfg).expect("runtime");
    assert_eq!(rt.run(&probe, &s).await.outcome, Outcome::Ok);
    let after = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(
        before, after,
        "the restarted runtime loaded the artifact instead of recompiling"
    );
}

/// Several runs of one module compiling it at once (three probes sharing a module, first
/// runs together) all get it, and the cache holds one whole artifact: the writers used
/// to share one temporary file, so one rename failed and its run was reported `invalid`
/// (seen once in 3,900 hostile runs of tests/tests/hostile_load.rs).
#[test]
fn concurrent_first_compiles_of_one_module_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RuntimeConfig {
        max_concurrent_runs: 4,
        max_memory_mib: 64,
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let probe = Probe::new(TRIVIAL.to_vec());
    let runtimes: Vec<_> = (0..6)
        .map(|_| Runtime::new(cfg.clone()).expect("runtime"))
        .collect();
    let barrier = std::sync::Barrier::new(runtimes.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = runtimes
            .iter()
            .map(|rt| {
                let (probe, barrier) = (&probe, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    rt.prepare(probe, false)
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread").expect("prepared");
        }
    });
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one artifact, no temporary left: {names:?}");
    // And it loads.
    let rt = Runtime::new(cfg).expect("runtime");
    rt.prepare(&probe, false).expect("from the cache");
}
