//! The `plb` binary end to end: the Python example probe (built by
//! `scripts/build-python-probe.sh`, which `scripts/test.sh` runs first) checked against a
//! real HTTP server through `plb probe run`, and `plb forecast` on a committed NAB
//! series.
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn plb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plb"))
}

/// A one-route HTTP server on a loopback port, in a thread of its own.
fn serve(status: u16, body: &'static str) -> std::net::SocketAddr {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/health",
                axum::routing::get(move || async move {
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        body,
                    )
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

fn run_python_probe(target: std::net::SocketAddr, extra: &[&str]) -> serde_json::Value {
    let wasm = root().join("target/probes/python-probe.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: build it with scripts/build-python-probe.sh {} (scripts/test.sh does)",
        wasm.display(),
        wasm.display()
    );
    let out = plb()
        .args(["probe", "run"])
        .arg(&wasm)
        .args(["--target", &target.to_string(), "--timeout-ms", "5000"])
        .args(["--fuel", "0", "--memory-mib", "128"])
        .args(extra)
        .output()
        .expect("running plb");
    assert!(
        out.status.success(),
        "plb probe run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn the_python_probe_checks_a_real_endpoint() {
    let up = serve(200, "all good");
    let report = run_python_probe(up, &["--config", "body-contains=good"]);
    assert_eq!(report["outcome"], "ok", "{report:#}");
    let total = report["metrics"]["http-total-ms"]
        .as_f64()
        .expect("http-total-ms");
    assert!(total > 0.0 && total < 5000.0, "{report:#}");
    assert_eq!(report["metrics"]["http-status"].as_f64(), Some(200.0));

    let down = serve(503, "overloaded");
    let report = run_python_probe(down, &[]);
    assert_eq!(report["outcome"], "unhealthy", "{report:#}");

    let report = run_python_probe(up, &["--config", "expect-status=2yy"]);
    assert_eq!(report["outcome"], "broken", "{report:#}");
}

#[test]
fn forecast_writes_one_row_per_point_and_horizon() {
    let input = root().join("data/nab/ec2_cpu_utilization_5f5533.csv");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("preds.csv");
    let out = plb()
        .args(["forecast", "--horizons", "1,3"])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .expect("running plb");
    assert!(
        out.status.success(),
        "plb forecast failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let points = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    let preds = std::fs::read_to_string(&output).expect("output");
    let mut lines = preds.lines();
    assert_eq!(lines.next(), Some("t,h,yhat"));
    let rows: Vec<(usize, u32, f64)> = lines
        .map(|l| {
            let mut f = l.split(',');
            (
                f.next().and_then(|x| x.parse().ok()).expect("t"),
                f.next().and_then(|x| x.parse().ok()).expect("h"),
                f.next().and_then(|x| x.parse().ok()).expect("yhat"),
            )
        })
        .collect();
    assert_eq!(rows.len(), points * 2);
    assert!(rows.iter().all(|r| r.2.is_finite()));
    assert_eq!(rows[0], (0, 1, rows[0].2));
    assert_eq!(rows[1].1, 3);
    // The summary on stderr scores the forecast against the naive one.
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("naive MAE"), "{summary}");

    let bad = plb()
        .args(["forecast", "--horizons", "0,x", "--input"])
        .arg(&input)
        .output()
        .expect("running plb");
    assert!(!bad.status.success());
}
