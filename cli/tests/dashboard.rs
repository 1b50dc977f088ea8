//! The dashboard in a real browser: starts the real `plb dev` cluster on a loopback
//! port, waits until the demo pool has nodes with samples, predictions and routed
//! requests, then loads `http://ADDR/#token=...` in Debian's headless Chromium and checks
//! the DOM it rendered: the node rows match `GET /v1/pools/demo/nodes`, the probe rows
//! match `GET /v1/pools/demo/probes`, and the uPlot charts exist with data points. A
//! wrong token shows the 401 message and no data. Saves a screenshot to
//! `artifacts/dashboard.png`. Needs `/usr/bin/chromium` (`apt-get install -y chromium`).
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plb_testkit::{KillOnDrop, free_port, workspace_root as root};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// GET `path` with the token: the status and the JSON body (Null when not JSON).
    fn get(&self, path: &str) -> (u16, Value) {
        self.rt.block_on(async {
            match self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.json().await.unwrap_or(Value::Null))
                }
                Err(_) => (0, Value::Null),
            }
        })
    }

    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Runs headless Chromium with `extra` args on `url`; its stdout.
fn chromium(profile: &Path, extra: &[String], url: &str) -> String {
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1400,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start chromium");
    let started = Instant::now();
    let pid = child.id();
    // A watchdog: a hung browser fails the test instead of blocking it.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().expect("chromium output");
    let _ = done_tx.send(());
    let _ = watchdog.join();
    assert!(
        out.status.success(),
        "chromium failed after {:?} ({}): {}",
        started.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The opening tag of the element with id `id` in serialized HTML.
fn open_tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let start = dom[..at].rfind('<').expect("a tag start");
    let end = at + dom[at..].find('>').expect("a tag end");
    &dom[start..=end]
}

/// An attribute's value in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let at = tag.find(&needle)? + needle.len();
    let len = tag[at..].find('"')?;
    Some(&tag[at..at + len])
}

/// The content of the element with id `id`, up to `</section>` (every chart and table
/// sits in a section of its own).
fn section_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let end = at + dom[at..].find("</section>").expect("its section's end");
    &dom[at..end]
}

/// Every value of `attribute` on tags inside `html`.
fn all_attrs(html: &str, attribute: &str) -> BTreeSet<String> {
    let needle = format!(" {attribute}=\"");
    let mut out = BTreeSet::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        if let Some(len) = rest.find('"') {
            out.insert(rest[..len].to_string());
        }
    }
    out
}

fn chart_points(dom: &str, id: &str) -> u64 {
    let tag = open_tag(dom, id);
    attr(tag, "data-points")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("#{id} has no data-points: {tag}"))
}

fn assert_chart(dom: &str, id: &str) {
    let points = chart_points(dom, id);
    assert!(points > 0, "#{id} has no data points");
    let inner = section_of(dom, id);
    assert!(
        inner.contains("class=\"uplot") && inner.contains("<canvas"),
        "#{id} holds no uPlot canvas"
    );
}

#[test]
fn dashboard_renders_the_cluster_in_headless_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs Debian's chromium (`apt-get install -y chromium`)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("plb-dev.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_plb"))
        .arg("dev")
        .arg("--data")
        .arg(&data)
        .args([
            "--listen",
            &addr,
            "--load-rps",
            "20",
            "--exit-after-s",
            "600",
        ])
        // The demo proxy on a free port (by env: older `plb dev` builds have no proxy).
        .env("PLB_DEV_PROXY", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("start plb dev");
    let mut dev = KillOnDrop(child);

    // The client token, once plb dev wrote it.
    let started = Instant::now();
    let token = loop {
        if let Ok(b) = std::fs::read(data.join("dev.json")) {
            let v: Value = serde_json::from_slice(&b).expect("dev.json is JSON");
            if let Some(t) = v["client_token"].as_str() {
                break t.to_string();
            }
        }
        if let Ok(Some(st)) = dev.0.try_wait() {
            panic!("plb dev exited ({st}):\n{}", log_tail(&log));
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "plb dev wrote no dev.json in 120 s:\n{}",
            log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let api = Api {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client"),
        base: format!("http://{addr}"),
        token: token.clone(),
    };

    // Wait until every node has samples and a forecast, the history endpoint has a
    // series with a few points, and route decisions are stored.
    let ready = |api: &Api| -> Result<(), String> {
        let (st, nodes) = api.get("/v1/pools/demo/nodes");
        if st != 200 {
            return Err(format!("nodes: {st} {nodes}"));
        }
        let nodes = nodes["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() < 3 {
            return Err(format!("{} nodes", nodes.len()));
        }
        for n in &nodes {
            if n["latest"].as_array().is_none_or(|l| l.is_empty()) {
                return Err(format!("{} has no samples", n["node"]));
            }
            let forecasting = n["assessment"]["metrics"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["forecasts"].as_array().is_some_and(|f| !f.is_empty()))
            });
            if !forecasting {
                return Err(format!("{} has no forecasts yet", n["node"]));
            }
        }
        // Every node has a few stored samples of the quick HTTP check (the series the
        // history checks below read).
        for n in &nodes {
            let node = n["node"].as_str().unwrap_or_default();
            let (st, h) = api.get(&format!(
                "/v1/pools/demo/nodes/{node}/history?metric=health/http-total-ms"
            ));
            let points = h["points"].as_array().map_or(0, Vec::len);
            if st != 200 || points < 3 {
                return Err(format!("history of {node}: {st}, {points} points"));
            }
        }
        let (st, d) = api.get("/v1/pools/demo/decisions");
        let decided = d["minutes"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["total"].as_u64().unwrap_or(0) > 0));
        if st != 200 || !decided {
            return Err(format!("decisions: {st} {d}"));
        }
        Ok(())
    };
    let started = Instant::now();
    loop {
        match ready(&api) {
            Ok(()) => break,
            Err(why) => {
                if let Ok(Some(st)) = dev.0.try_wait() {
                    panic!("plb dev exited ({st}):\n{}", log_tail(&log));
                }
                assert!(
                    started.elapsed() < Duration::from_secs(180),
                    "the demo cluster was not ready in 180 s ({why}):\n{}",
                    log_tail(&log)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("cluster ready after {:?}", started.elapsed());
    check_history_endpoint(&api);

    // The page renders the cluster: dump the DOM after ~8 s of page time (four polls).
    let profile = tempfile::tempdir().expect("browser profile dir");
    let url = format!("http://{addr}/#token={token}");
    let dom = chromium(
        profile.path(),
        &["--virtual-time-budget=8000".into(), "--dump-dom".into()],
        &url,
    );
    let nodes = api.ok("/v1/pools/demo/nodes");
    let probes = api.ok("/v1/pools/demo/probes");

    assert!(
        !open_tag(&dom, "main").contains(" hidden"),
        "the dashboard stayed hidden with a valid token: {}",
        open_tag(&dom, "message")
    );
    let api_nodes: BTreeSet<String> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["node"].as_str().expect("node id").to_string())
        .collect();
    let dom_nodes = all_attrs(section_of(&dom, "nodes"), "data-node");
    assert_eq!(dom_nodes, api_nodes, "node rows against the API");
    // Each row shows the state the API gives (unless it changed between the two reads).
    let states = all_attrs(section_of(&dom, "nodes"), "data-state");
    assert!(
        states
            .iter()
            .all(|s| ["healthy", "degrading", "unhealthy", "unknown"].contains(&s.as_str())),
        "states {states:?}"
    );
    let api_probes: BTreeSet<String> = probes["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["name"].as_str().expect("probe name").to_string())
        .collect();
    assert!(!api_probes.is_empty(), "plb dev uploads sample probes");
    let dom_probes = all_attrs(section_of(&dom, "probes"), "data-probe");
    assert_eq!(dom_probes, api_probes, "probe rows against the API");
    assert!(
        section_of(&dom, "probes").contains("class=\"badge reliable")
            || section_of(&dom, "probes").contains("class=\"badge flaky")
            || section_of(&dom, "probes").contains("class=\"badge needs_update"),
        "probe reliability badges"
    );

    // The state-change list read its endpoint (a change, or the words for none).
    let changes = section_until(&dom, "changes", "</ul>");
    assert!(
        changes.contains("data-change=") || changes.contains("no state changes"),
        "state changes: {changes}"
    );
    // The probe metrics' trust table read the nodes endpoint's `metric_trust`.
    let trust = section_until(&dom, "trust", "</table>");
    assert!(
        trust.contains("data-metric=") || trust.contains("no probe metrics compared"),
        "metric trust: {trust}"
    );
    assert_chart(&dom, "metric-chart");
    let metric_tag = open_tag(&dom, "metric-chart");
    let forecasts: u64 = attr(metric_tag, "data-forecasts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        forecasts > 0,
        "the metric chart shows forecasts: {metric_tag}"
    );
    let shown_node = attr(metric_tag, "data-node").expect("chart node");
    assert!(api_nodes.contains(shown_node), "chart of {shown_node}");
    assert_chart(&dom, "shares-chart");
    assert_chart(&dom, "capacity-chart");
    assert!(
        open_tag(&dom, "main")
            .split("data-updates=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 2),
        "the page polled more than once: {}",
        open_tag(&dom, "main")
    );

    // A wrong token: the 401 message and no data.
    let bad = chromium(
        tempfile::tempdir().expect("profile").path(),
        &["--virtual-time-budget=3000".into(), "--dump-dom".into()],
        &format!("http://{addr}/#token=not-a-token"),
    );
    assert!(
        open_tag(&bad, "main").contains(" hidden"),
        "data shown without a valid token"
    );
    let message = section_until(&bad, "message", "</div>");
    assert!(message.contains("401"), "the 401 message: {message}");
    assert!(
        all_attrs(&bad, "data-node").is_empty(),
        "node rows without a valid token"
    );

    // The screenshot, for CI artifacts and for a human to look at.
    let out_dir = root().join("artifacts");
    std::fs::create_dir_all(&out_dir).expect("artifacts dir");
    let png = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        profile.path(),
        &[
            "--virtual-time-budget=8000".into(),
            format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "a real screenshot ({} bytes)",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
}

/// The history endpoint the metric chart reads: the stored samples of one series, in
/// time order, matching what the node view shows as the newest sample; `since` pages;
/// errors take the API's shape.
fn check_history_endpoint(api: &Api) {
    let nodes = api.ok("/v1/pools/demo/nodes");
    // A node whose newest run of the quick `health` probe succeeded, and that sample.
    let (node, sample) = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find_map(|n| {
            let s = n["latest"]
                .as_array()?
                .iter()
                .find(|s| s["probe"] == "health" && s["outcome"] == "ok")?;
            Some((n, s))
        })
        .expect("a node whose newest health sample is ok");
    let id = node["node"].as_str().expect("node id");
    let (name, value) = sample["metrics"]
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == "http-total-ms"))
        .expect("http-total-ms in the health sample");
    let value = value.as_f64().expect("a number");
    let taken = sample["taken_at_ms"].as_i64().expect("taken_at_ms");
    let path = format!("/v1/pools/demo/nodes/{id}/history?metric=health/{name}");
    let h = api.ok(&path);
    let points: Vec<(i64, f64)> = h["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p[0].as_i64().expect("time"), p[1].as_f64().expect("value")))
        .collect();
    assert!(points.len() >= 3, "history points: {h}");
    assert!(
        points.windows(2).all(|w| w[0].0 <= w[1].0),
        "oldest first: {h}"
    );
    let since = h["since_ms"].as_i64().expect("since_ms");
    assert!(points.iter().all(|p| p.0 >= since), "within the window");
    assert!(
        points.iter().any(|p| p.0 == taken && p.1 == value),
        "the node view's newest sample ({taken}, {value}) is in the history: {h}"
    );
    assert_eq!(h["truncated"], false);
    // `since` pages: only points at or after it.
    let mid = points[points.len() / 2].0;
    let later = api.ok(&format!("{path}&since={mid}"));
    let later = later["points"].as_array().expect("points");
    assert!(!later.is_empty(), "points after {mid}");
    assert!(
        later
            .iter()
            .all(|p| p[0].as_i64().is_some_and(|t| t >= mid))
    );
    // Errors.
    for (bad, status, code) in [
        (
            "/v1/pools/demo/nodes/no-such-node/history?metric=health/x",
            404,
            "not_found",
        ),
        (
            "/v1/pools/nope/nodes/node-1/history?metric=health/x",
            404,
            "not_found",
        ),
        (
            &format!("/v1/pools/demo/nodes/{id}/history?metric=nometric"),
            400,
            "invalid_query",
        ),
        (
            &format!("/v1/pools/demo/nodes/{id}/history"),
            400,
            "invalid_query",
        ),
    ] {
        let (st, body) = api.get(bad);
        assert_eq!(st, status, "{bad}: {body}");
        assert_eq!(body["error"]["code"], code, "{bad}: {body}");
    }
    let anon = Api {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        http: reqwest::Client::new(),
        base: api.base.clone(),
        token: "not-a-token".into(),
    };
    let (st, body) = anon.get(&path);
    assert_eq!(st, 401, "{body}");
    // Documented in the OpenAPI document with its body schema.
    let doc = api.ok("/v1/openapi.json");
    assert!(
        doc["paths"]["/v1/pools/{pool}/nodes/{node}/history"]["get"].is_object(),
        "history in the OpenAPI document"
    );
    assert!(doc["components"]["schemas"]["MetricHistory"].is_object());
}

fn section_until<'a>(dom: &'a str, id: &str, end: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let stop = dom[at..].find(end).map_or(dom.len(), |e| at + e);
    &dom[at..stop]
}
