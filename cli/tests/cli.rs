//! The `plb` binary end to end: the Python example probe (built by
//! `scripts/build-python-probe.sh`, which `scripts/test.sh` runs first) checked against a
//! real HTTP server through `plb probe run`, and `plb forecast` on a committed NAB
//! series.
use std::process::Command;

use plb_testkit::{KillOnDrop, free_port, workspace_root as root};

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

fn run_guest_probe(
    file: &str,
    script: &str,
    target: std::net::SocketAddr,
    extra: &[&str],
) -> serde_json::Value {
    let wasm = root().join("target/probes").join(file);
    assert!(
        wasm.exists(),
        "{} is missing: build it with scripts/{script} {} (scripts/test.sh does)",
        wasm.display(),
        wasm.display()
    );
    let out = plb()
        .args(["probe", "run"])
        .arg(&wasm)
        .args(["--target", &target.to_string(), "--timeout-ms", "5000"])
        .args(["--fuel", "0", "--memory-mib", "128"])
        // Compiled once per module for the whole test run (a 12-18 MB component takes
        // seconds to compile).
        .arg("--cache-dir")
        .arg(root().join("target/probes/compiled"))
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

fn run_python_probe(target: std::net::SocketAddr, extra: &[&str]) -> serde_json::Value {
    run_guest_probe("python-probe.wasm", "build-python-probe.sh", target, extra)
}

fn run_js_probe(target: std::net::SocketAddr, extra: &[&str]) -> serde_json::Value {
    run_guest_probe("js-probe.wasm", "build-js-probe.sh", target, extra)
}

#[test]
fn the_javascript_probe_checks_a_real_endpoint() {
    let up = serve(200, "all good");
    let report = run_js_probe(up, &["--config", "body-contains=good"]);
    assert_eq!(report["outcome"], "ok", "{report:#}");
    let total = report["metrics"]["http-total-ms"]
        .as_f64()
        .expect("http-total-ms");
    assert!(total > 0.0 && total < 5000.0, "{report:#}");
    assert_eq!(report["metrics"]["http-body-bytes"].as_f64(), Some(8.0));

    let down = serve(503, "overloaded");
    let report = run_js_probe(down, &[]);
    assert_eq!(report["outcome"], "unhealthy", "{report:#}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{report:#}"
    );

    let report = run_js_probe(up, &["--config", "expect-status=2yy"]);
    assert_eq!(report["outcome"], "broken", "{report:#}");
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

fn get_json(url: &str, token: &str) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    })
}

/// Waits until every demo node has a sample of every uploaded quick probe and the
/// route API answers; returns the client token.
fn wait_for_cluster(data: &std::path::Path, base: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "plb dev did not come up with samples from every node within 90 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let Ok(state) = std::fs::read(data.join("dev.json")) else {
            continue;
        };
        let state: serde_json::Value = serde_json::from_slice(&state).expect("dev.json");
        let token = state["client_token"]
            .as_str()
            .expect("client_token")
            .to_string();
        let Some(nodes) = get_json(&format!("{base}/v1/pools/demo/nodes"), &token) else {
            continue;
        };
        let nodes = nodes["nodes"].as_array().cloned().unwrap_or_default();
        let ready = nodes.len() == 3
            && nodes.iter().all(|n| {
                let probes: Vec<&str> = n["latest"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|s| s["probe"].as_str()).collect())
                    .unwrap_or_default();
                ["health", "queue", "tcp"]
                    .iter()
                    .all(|p| probes.contains(p))
            });
        if ready && get_json(&format!("{base}/v1/pools/demo/route"), &token).is_some() {
            return token;
        }
    }
}

#[test]
fn plb_dev_runs_a_cluster_and_a_second_start_reuses_its_data() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        KillOnDrop(
            plb()
                .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
                .args([
                    "--exit-after-s",
                    "120",
                    "--load-rps",
                    "10",
                    "--proxy",
                    "127.0.0.1:0",
                ])
                .arg("--data")
                .arg(data.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting plb dev"),
        )
    };
    let mut first = start();
    let token = wait_for_cluster(data.path(), &base);
    // The banner names the proxy; traffic through it reaches a demo node.
    let stdout = first.0.stdout.take().expect("stdout");
    let proxy = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|l| {
            let l = l.trim().to_string();
            l.strip_prefix("proxy")
                .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
        })
        .expect("a proxy line in the banner");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = rt
        .block_on(async {
            reqwest::get(proxy.clone())
                .await?
                .error_for_status()?
                .text()
                .await
        })
        .expect("a request through the proxy");
    assert!(body.starts_with("served by node-"), "{body}");

    // The remote subcommands against it.
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = plb()
            .args(args)
            .args(["--balancer", &base, "--token", &token])
            .output()
            .expect("running plb");
        assert!(
            out.status.success(),
            "plb {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };
    let share = cli(&["route", "demo", "--count", "30"]);
    let total: u64 = share
        .as_object()
        .expect("a share per node")
        .iter()
        .map(|(node, n)| {
            assert!(node.starts_with("node-"), "{share}");
            n.as_u64().expect("a count")
        })
        .sum();
    assert_eq!(total, 30, "{share}");
    let tcp = plb_probe_artifacts::path("tcp-connect").expect("the tcp-connect sample");
    let up = cli(&[
        "probe",
        "upload",
        tcp.to_str().expect("utf-8 path"),
        "--pool",
        "demo",
        "--name",
        "tcp-cli",
        "--interval-ms",
        "3000",
        "--config",
        "attempts=2",
    ]);
    assert_eq!(up["name"], "tcp-cli", "{up}");
    assert_eq!(up["version"], 1, "{up}");
    let status = cli(&["probe", "status", "--pool", "demo"]);
    let names: Vec<&str> = status["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"tcp-cli") && names.contains(&"health"),
        "{status}"
    );
    let one = cli(&["probe", "status", "--pool", "demo", "health"]);
    assert!(one["reliability"].is_object(), "{one}");
    let decision = get_json(&format!("{base}/v1/pools/demo/route"), &token).expect("route");
    assert!(
        decision["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("node-")),
        "{decision}"
    );
    drop(first);

    let second = start();
    let again = wait_for_cluster(data.path(), &base);
    assert_eq!(token, again, "the second start reuses the demo client");
    let probes = get_json(&format!("{base}/v1/pools/demo/probes"), &token).expect("probes");
    let text = probes.to_string();
    for p in ["health", "queue", "tcp", "cpu"] {
        assert!(text.contains(&format!("\"{p}\"")), "{p} missing: {text}");
    }
    // Same modules and settings: still version 1 after the second upload.
    assert!(!text.contains("\"version\":2"), "{text}");
    drop(second);

    // Stopping by itself (as on Ctrl-C) shuts everything down cleanly: exit code 0.
    let mut third = plb()
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--exit-after-s", "5", "--proxy", "127.0.0.1:0"])
        .arg("--data")
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting plb dev");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = third.try_wait().expect("waiting") {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "plb dev did not stop");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.success(), "{status}");
}
