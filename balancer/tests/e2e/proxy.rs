//! Reverse-proxy mode against a real balancer (engine, SQLite file, nodes registered over
//! the API) and real HTTP backends on loopback: bodies of several MB both ways, a backend
//! killed mid-test, keep-alive reuse of node connections, `X-Forwarded-*`, a POST to a
//! dead node, feedback in the nodes view, pipelined requests and requests left to hyper on
//! one client connection, malformed and oversized requests (4xx, no node reached),
//! a node that refuses connections and comes back on its port (a connection check brings
//! it back at once), a pool with no nodes yet, and a pool name two clients use (the proxy and the
//! agent-check name the owner: the other tenant's pool neither captures nor breaks them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{self, TestBalancer, register};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use plb_balancer::proxy::ProxySpec;
use plb_client::Client;
use plb_testkit::free_addr;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const POOL: &str = "web";
/// The pool's owner: the first client the tests create in a fresh store.
const OWNER: i64 = 1;

/// Requests a backend saw, by method.
#[derive(Default)]
struct Seen {
    get: AtomicU64,
    put: AtomicU64,
    post: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Answer every request `503` (a node out of service).
    unavailable: AtomicBool,
}

/// A real HTTP/1.1 server on a loopback port; `kill` closes its listener and every open
/// connection at once, as a crashed process would.
struct Backend {
    name: String,
    addr: SocketAddr,
    seen: Arc<Seen>,
    kill: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Deterministic bytes `0..n`.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

async fn handle(name: Arc<str>, seen: Arc<Seen>, req: Request<Incoming>) -> Response<Body> {
    match *req.method() {
        hyper::Method::GET => seen.get.fetch_add(1, Ordering::Relaxed),
        hyper::Method::PUT => seen.put.fetch_add(1, Ordering::Relaxed),
        hyper::Method::POST => seen.post.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    if seen.unavailable.load(Ordering::Relaxed) {
        // A maintenance page streamed in two parts (chunked, the second 10 ms later),
        // as a page that does not arrive with its headers.
        let head = Bytes::from(format!("{name} is out"));
        let page = futures::StreamExt::chain(
            futures::stream::once(async move { Ok(Frame::data(head)) }),
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(Frame::data(Bytes::from_static(b" of service")))
            }),
        );
        let mut resp = Response::new(StreamBody::new(page).boxed());
        *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return resp;
    }
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().expect("ms"))).await;
    }
    let body = if path == "/parts" {
        // Two parts, the second 10 ms later: sent chunked.
        StreamBody::new(futures::StreamExt::chain(
            futures::stream::once(async { Ok(Frame::data(Bytes::from_static(b"first"))) }),
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(Frame::data(Bytes::from_static(b" second")))
            }),
        ))
        .boxed()
    } else if path == "/echo" {
        // Streams the request body back as it arrives.
        req.into_body().boxed()
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        full(pattern(n.parse().expect("a byte count")))
    } else if path == "/headers" {
        let h: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        full(serde_json::to_vec(&h).expect("json"))
    } else {
        full(name.as_bytes().to_vec())
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("x-backend", name.parse().expect("header value"));
    resp
}

impl Backend {
    async fn start(name: &str) -> Backend {
        Backend::start_at(name, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// A backend on `addr` (a restarted process on its old port).
    async fn start_at(name: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let (kill, mut killed) = oneshot::channel::<()>();
        let n: Arc<str> = Arc::from(name);
        let s = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut killed => break,
                    a = listener.accept() => {
                        let Ok((stream, _)) = a else { continue };
                        // As servers do (else a body written in parts waits on Nagle).
                        let _ = stream.set_nodelay(true);
                        s.accepted.fetch_add(1, Ordering::Relaxed);
                        let (n, s) = (Arc::clone(&n), Arc::clone(&s));
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let (n, s) = (Arc::clone(&n), Arc::clone(&s));
                                async move { Ok::<_, std::convert::Infallible>(handle(n, s, req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                }
            }
            drop(listener);
            conns.shutdown().await;
        });
        Backend {
            name: name.to_owned(),
            addr,
            seen,
            kill: Some(kill),
            task,
        }
    }

    async fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        (&mut self.task).await.expect("backend task");
    }
}

/// A balancer proxying `web` on a loopback port, and a client owning the pool.
struct Setup {
    bal: TestBalancer,
    client: Client,
    proxy: String,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut plb_balancer::BalancerConfig)) -> Setup {
    let bal = TestBalancer::start_with(|cfg| {
        cfg.proxy = vec![ProxySpec {
            client_id: OWNER,
            pool: POOL.into(),
            listen: "127.0.0.1:0".parse().expect("addr"),
        }];
        cfg.proxy_connect_timeout_ms = 500;
        cfg.proxy_timeout_ms = 20_000;
        tweak(cfg);
    })
    .await;
    let proxy = bal
        .running
        .edges
        .proxy(OWNER, POOL)
        .expect("proxy runs")
        .url();
    let client = bal.client_with_pool("acme", POOL).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    Setup {
        bal,
        client,
        proxy,
        http,
    }
}

impl Setup {
    /// Registers `node` with an agent token of its own (one token registers one node).
    async fn register(&self, node: &str, addr: SocketAddr) {
        self.bal
            .agent(&self.client, &[POOL])
            .await
            .register(&register(node, &addr.to_string(), &[POOL]))
            .await
            .expect("register");
    }

    /// Registers `node` with an agent that reports a node-sampler sample for it every
    /// 200 ms until the returned task is aborted: the node is `healthy`, and a node
    /// beside it that reports nothing is `unknown`, routed at half weight and tried a
    /// few times a second by the recovery floor.
    async fn register_reporting(
        &self,
        node: &str,
        addr: SocketAddr,
    ) -> tokio::task::JoinHandle<()> {
        let agent = self.bal.agent(&self.client, &[POOL]).await;
        agent
            .register(&register(node, &addr.to_string(), &[POOL]))
            .await
            .expect("register");
        let node = node.to_owned();
        tokio::spawn(async move {
            loop {
                let samples = vec![common::sample(
                    POOL,
                    plb_api::NODE_SAMPLER_PROBE,
                    0,
                    plb_testkit::now_ms(),
                )];
                let _ = agent.report(&common::batch(&node, samples)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// Waits until `reporting` is assessed `healthy` and `silent` has no assessment or
    /// an `unknown` one.
    async fn wait_healthy_beside_unknown(&self, reporting: &str, silent: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let view = self.client.pool_nodes(POOL).await.expect("nodes view");
            let state = |id: &str| {
                view.nodes
                    .iter()
                    .find(|n| n.node == id)
                    .and_then(|n| n.assessment.as_ref())
                    .map(|a| a.state)
            };
            if state(reporting) == Some(plb_api::NodeState::Healthy)
                && matches!(state(silent), None | Some(plb_api::NodeState::Unknown))
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{reporting} not healthy beside an unknown {silent} after 10 s: {:?}",
                view.nodes
                    .iter()
                    .map(|n| (&n.node, n.assessment.as_ref().map(|a| a.state)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the engine knows `n` nodes of the pool (its topology refresh runs every
    /// tick).
    async fn wait_for_nodes(&self, n: usize) {
        let engine = &self.bal.running.state.engine;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let known = engine
                .pool(&pool_key(OWNER, POOL))
                .map_or(0, |r| r.snapshot().len());
            if known == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the engine knows {known} of {n} nodes after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Routing figures per node from `GET /v1/pools/web/nodes`.
    async fn routing(&self) -> BTreeMap<String, plb_api::NodeRouting> {
        self.client
            .pool_nodes(POOL)
            .await
            .expect("nodes view")
            .nodes
            .into_iter()
            .filter_map(|n| n.routing.map(|r| (n.node, r)))
            .collect()
    }
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_several_mb_pass_intact_both_ways() {
    let s = setup().await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    s.register("node-a", a.addr).await;
    s.register("node-b", b.addr).await;
    s.wait_for_nodes(2).await;

    // Upload and echo: 8 MiB POST, 5 MiB PUT (too big to buffer: streamed, one attempt).
    for (method, len) in [
        (reqwest::Method::POST, 8 << 20),
        (reqwest::Method::PUT, 5 << 20),
    ] {
        let body: Vec<u8> = (0..len).map(|i: usize| (i ^ (i >> 9)) as u8).collect();
        let want = sha(&body);
        let resp = s
            .http
            .request(method.clone(), format!("{}/echo", s.proxy))
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "{method}");
        let got = resp.bytes().await.expect("body");
        assert_eq!(got.len(), len, "{method} echo length");
        assert_eq!(sha(&got), want, "{method} echo checksum");
    }
    // Download 6 MiB.
    let n = 6 << 20;
    let resp = s
        .http
        .get(format!("{}/bytes/{n}", s.proxy))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(n.to_string().as_str())
    );
    let got = resp.bytes().await.expect("body");
    assert_eq!(sha(&got), sha(&pattern(n)));
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_to_the_node_carry_request_after_request() {
    let s = setup().await;
    let a = Backend::start("a").await;
    s.register("node-a", a.addr).await;
    s.wait_for_nodes(1).await;
    // Every way a response ends: a known length, an empty body, a chunked body streamed
    // back, a HEAD answer (no body at all). Each gives the connection back.
    for i in 0..10 {
        let r = s
            .http
            .get(format!("{}/bytes/{}", s.proxy, 100 * i))
            .send()
            .await;
        let r = r.expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("body").len(), 100 * i);
        let r = s.http.head(format!("{}/bytes/5", s.proxy)).send().await;
        assert_eq!(r.expect("send").status(), 200);
        let r = s
            .http
            .post(format!("{}/echo", s.proxy))
            .body(vec![7u8; 3000]);
        let r = r.send().await.expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("body").len(), 3000);
    }
    // One client connection lands on one proxy thread, whose keep-alive connection to
    // the node carries the requests. hyper-util's pool puts a connection back from a
    // task of its own, so a request sent right after the last answer sometimes opens a
    // second connection (1 in 4 of 10 runs, 2 in 6; with one always idle, a third is not
    // needed); without reuse it would be 30.
    assert_eq!(a.seen.get.load(Ordering::Relaxed), 10);
    assert_eq!(a.seen.post.load(Ordering::Relaxed), 10);
    let accepted = a.seen.accepted.load(Ordering::Relaxed);
    assert!(accepted <= 5, "{accepted} connections for 30 requests");
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_arrive_and_hop_by_hop_headers_do_not() {
    // The test client stands in for a trusted proxy: its X-Forwarded-For is extended.
    let s = setup_with(|cfg| {
        cfg.trusted_proxies = vec!["127.0.0.0/8".parse().expect("network")];
    })
    .await;
    let a = Backend::start("a").await;
    s.register("node-a", a.addr).await;
    s.wait_for_nodes(1).await;
    let resp = s
        .http
        .get(format!("{}/headers", s.proxy))
        .header("host", "shop.example:8443")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "a");
    let seen: BTreeMap<String, String> = resp.json().await.expect("json");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example:8443");
    assert_eq!(
        seen["host"], "shop.example:8443",
        "the client's Host is kept"
    );
    assert_eq!(
        seen["forwarded"],
        "for=127.0.0.1;proto=http;host=\"shop.example:8443\""
    );
    assert_eq!(seen["x-end-to-end"], "kept");
    assert!(!seen.contains_key("x-hop"), "{seen:?}");
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_test_fails_no_idempotent_request() {
    let s = setup().await;
    let mut backends = Vec::new();
    for name in ["a", "b", "c"] {
        let b = Backend::start(name).await;
        s.register(&format!("node-{name}"), b.addr).await;
        backends.push(b);
    }
    s.wait_for_nodes(3).await;

    let done = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for w in 0..4u64 {
        let (http, proxy, done) = (s.http.clone(), s.proxy.clone(), Arc::clone(&done));
        workers.spawn(async move {
            let mut by_backend: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..150u64 {
                let resp = if i % 2 == 0 {
                    http.get(format!("{proxy}/name")).send().await
                } else {
                    http.put(format!("{proxy}/echo"))
                        .body(format!("worker {w} request {i}"))
                        .send()
                        .await
                };
                let resp = resp.expect("the proxy answers");
                let status = resp.status();
                let backend = resp
                    .headers()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
                    .to_owned();
                let body = resp.text().await.expect("body");
                assert_eq!(status, 200, "worker {w} request {i}: {body}");
                if i % 2 == 0 {
                    assert_eq!(body, backend);
                } else {
                    assert_eq!(body, format!("worker {w} request {i}"));
                }
                *by_backend.entry(backend).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            by_backend
        });
    }
    // Kill `b` once a third of the requests are through.
    while done.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before_kill =
        backends[1].seen.get.load(Ordering::Relaxed) + backends[1].seen.put.load(Ordering::Relaxed);
    backends[1].kill().await;
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = workers.join_next().await {
        for (k, v) in r.expect("a worker panicked: a request failed") {
            *served.entry(k).or_default() += v;
        }
    }
    assert_eq!(served.values().sum::<u64>(), 600);
    assert!(before_kill > 0, "b served before it died");
    assert!(served["a"] > 0 && served["c"] > 0, "{served:?}");

    // No node reports probe samples here, so nothing but its cost sends traffic to the
    // dead node: it is tried again once its latency estimate has decayed below its
    // peers'. GETs (retried elsewhere when refused, so none fails) until one has met
    // it; the deadline only bounds a failure. Usually the kill itself refuses a
    // request. When b's answers before the kill were slow (its one answer, a cold
    // connection, at 2.5 ms against its peers' 0.3 ms, on a loaded CI machine), the
    // full scan's mean gate priced it out and it took nothing more: it is tried again
    // once its mean has faded (`scan_mean_fade`, 30 s time constant), within a minute
    // for a mean up to 8 times its peers'.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while s.routing().await["node-b"].errors == 0 && tokio::time::Instant::now() < deadline {
        for _ in 0..20 {
            let (status, body) = send(&s, reqwest::Method::GET, "/name").await;
            assert_eq!(status, 200, "{body}");
        }
    }
    // The failed attempts on the dead node were reported as feedback.
    let routing = s.routing().await;
    let dead = &routing["node-b"];
    assert!(
        dead.errors >= 1,
        "attempts on the dead node count as errors: {dead:?}"
    );
    let completed: u64 = routing.values().map(|r| r.completed).sum();
    assert!(completed >= 600, "every answer is feedback: {routing:?}");
    for b in &mut backends {
        if b.name != "b" {
            b.kill().await;
        }
    }
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_a_dead_node_goes_elsewhere_unless_it_streams_and_feedback_is_recorded() {
    let s = setup().await;
    let live = Backend::start("live").await;
    // The live node reports samples and the dead one nothing: an `unknown` node beside
    // one that reports keeps the recovery floor's share of the decisions, so traffic
    // tries it a few times a second. (In a pool where no node reports, a node that
    // refused is left to the connection checks.)
    let reporter = s.register_reporting("node-live", live.addr).await;
    // A free port: nothing listens there.
    s.register("node-dead", free_addr()).await;
    s.wait_for_nodes(2).await;
    s.wait_healthy_beside_unknown("node-live", "node-dead")
        .await;

    // Small POSTs (buffered by the proxy: nothing was sent when the connection was
    // refused, so they go to the live node) and POSTs larger than the retry buffer
    // (streamed: not replayable, the dead node's get 502), in turns.
    let before = s.routing().await;
    let big = vec![b'x'; 70 * 1024];
    let (mut sent, mut bad_gateway, mut small_to_dead) = (0u64, 0u64, 0u64);
    // The dead node is explored a few times a second and which kind of POST meets it
    // is chance (six in a row were all big once in a suite run): the loop ends as soon
    // as both kinds have met it, the cap only bounds a failure.
    while sent < 3000 && (bad_gateway < 1 || small_to_dead < 1 || sent < 40) {
        let small = sent % 2 == 0;
        let body = if small {
            b"not idempotent".to_vec()
        } else {
            big.clone()
        };
        // The big ones to `/echo`, which reads its body (the other paths answer without
        // reading it, and a node may close a connection whose body it left unread).
        let path = if small { "/post" } else { "/echo" };
        let (status, text) = common::raw(
            &format!("{}{path}", s.proxy),
            reqwest::Method::POST,
            None,
            Some("text/plain"),
            Some(body),
        )
        .await;
        sent += 1;
        if status == 502 && !small {
            bad_gateway += 1;
            common::assert_error(&(status, text), 502, "bad_gateway", "node-dead");
        } else {
            assert_eq!(
                status,
                200,
                "{} POST: {text}",
                if small { "small" } else { "big" }
            );
        }
        if sent % 20 == 0 {
            // Every attempt at the dead node is an error: the big POSTs' 502s, the
            // rest the small POSTs that went on to the live node.
            let now = s.routing().await;
            let dead_errors =
                now["node-dead"].errors - before.get("node-dead").map_or(0, |r| r.errors);
            small_to_dead = dead_errors.saturating_sub(bad_gateway);
        }
    }
    // None sent twice: the live node saw every POST that was not answered 502, once.
    assert_eq!(live.seen.post.load(Ordering::Relaxed), sent - bad_gateway);

    // Feedback: one outcome per attempt, the dead node's as errors.
    let after = s.routing().await;
    let delta = |node: &str, f: fn(&plb_api::NodeRouting) -> u64| {
        f(&after[node]) - before.get(node).map_or(0, f)
    };
    let dead_errors = delta("node-dead", |r| r.errors);
    let small_to_dead = dead_errors.saturating_sub(bad_gateway);
    assert!(
        bad_gateway >= 1 && small_to_dead >= 1,
        "in {sent} POSTs the dead node was tried by {bad_gateway} big and {small_to_dead} small ones"
    );
    assert_eq!(delta("node-dead", |r| r.completed), dead_errors);
    assert_eq!(delta("node-live", |r| r.completed), sent - bad_gateway);
    assert_eq!(delta("node-live", |r| r.errors), 0);
    assert!(after["node-live"].latency_ms.is_some(), "{after:?}");
    // The dead node's errors lower its share of decisions below the live node's.
    assert!(
        delta("node-dead", |r| r.decisions) < delta("node-live", |r| r.decisions),
        "{before:?} -> {after:?}"
    );

    // The same pool answers every GET: a connection refused is retried on the live node.
    let served = get_until(&s, 40, |_| false).await;
    assert_eq!(served, BTreeMap::from([("live".to_owned(), 40)]));
    reporter.abort();
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_another_node_within_the_retry_budget() {
    let s = setup().await;
    let live = Backend::start("live").await;
    let down = Backend::start("down").await;
    down.seen.unavailable.store(true, Ordering::Relaxed);
    // As above: the live node reports, the down node nothing, so the recovery floor
    // tries the down node a few times a second.
    let reporter = s.register_reporting("node-live", live.addr).await;
    s.register("node-down", down.addr).await;
    s.wait_for_nodes(2).await;
    s.wait_healthy_beside_unknown("node-live", "node-down")
        .await;

    // Every GET is answered 200 by the live node, the down node's 503s retried there
    // (its error rate makes it costly; it is explored a few times a second).
    let served = get_until(&s, 20_000, |_| down.seen.get.load(Ordering::Relaxed) >= 12).await;
    let explored = down.seen.get.load(Ordering::Relaxed);
    assert!(explored >= 12, "the down node was not tried: {served:?}");
    assert_eq!(served.keys().collect::<Vec<_>>(), ["live"], "{served:?}");
    // The 503s that another node's answer replaced were read to their end, so the down
    // node's keep-alive connections carried exploring requests one after another
    // (dropped before the page's second part, each would have been closed: a new
    // connection per request; read, half of them or fewer in ten runs).
    let accepted = down.seen.accepted.load(Ordering::Relaxed);
    assert!(
        accepted * 4 <= explored * 3,
        "{accepted} connections to the down node for {explored} requests"
    );

    // A POST is not retried: the one the down node takes gets its 503.
    let (mut ok, mut unavailable) = (0u64, 0u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while unavailable == 0 && std::time::Instant::now() < deadline {
        let (status, body) = send(&s, reqwest::Method::POST, "/post").await;
        if status == 503 {
            assert!(body.contains("down is out of service"), "{body}");
            unavailable += 1;
        } else {
            assert_eq!(status, 200, "{body}");
            ok += 1;
        }
    }
    assert_eq!(unavailable, 1, "no POST reached the down node in 30 s");
    assert_eq!(down.seen.post.load(Ordering::Relaxed), 1);
    assert_eq!(live.seen.post.load(Ordering::Relaxed), ok);

    // Every node out of service: the client gets a node's 503, and the retries stay
    // within the budget (a fifth of the requests, after a burst of ten per thread).
    live.seen.unavailable.store(true, Ordering::Relaxed);
    let seen = || live.seen.get.load(Ordering::Relaxed) + down.seen.get.load(Ordering::Relaxed);
    let before = seen();
    const SENT: u64 = 200;
    for i in 0..SENT {
        let (status, body) = send(&s, reqwest::Method::GET, "/sleep/0").await;
        assert_eq!(status, 503, "GET {i}: {body}");
        assert!(body.contains("is out of service"), "GET {i}: {body}");
    }
    let attempts = seen() - before;
    // Each proxy thread has its own budget and burst.
    let threads = plb_balancer::proxy::default_threads();
    let budget = SENT as f64 * 0.2 + plb_balancer::proxy::RETRY_BURST * threads as f64;
    assert!(
        attempts > SENT && attempts as f64 <= SENT as f64 + budget,
        "{attempts} attempts for {SENT} requests (budget {budget})"
    );
    reporter.abort();
    s.bal.running.stop().await.expect("stop");
}

/// One request through the proxy (a POST carries a small body): status and body text.
async fn send(s: &Setup, method: reqwest::Method, path: &str) -> (u16, String) {
    let mut req = s.http.request(method.clone(), format!("{}{path}", s.proxy));
    if method == reqwest::Method::POST {
        req = req.body("not idempotent");
    }
    let resp = req.send().await.expect("the proxy answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// GETs through the proxy, in waves of four at once (so that a node with requests in
/// flight is not every decision's cheapest), until `stop` says so or `limit` have been
/// sent, every one answered 200; how many each backend served.
async fn get_until(
    s: &Setup,
    limit: u64,
    stop: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    const WAVE: u64 = 4;
    let mut served = BTreeMap::new();
    let mut sent = 0;
    while sent < limit {
        let wave = WAVE.min(limit - sent);
        let answers = futures::future::join_all((sent..sent + wave).map(|i| async move {
            let resp = s
                .http
                .get(format!("{}/sleep/2", s.proxy))
                .send()
                .await
                .expect("the proxy answers");
            let status = resp.status();
            let body = resp.text().await.expect("body");
            assert_eq!(status, 200, "GET {i}: {body}");
            body
        }))
        .await;
        sent += wave;
        for name in answers {
            *served.entry(name).or_insert(0u64) += 1;
        }
        if stop(&served) {
            break;
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_on_its_port_is_tried_again_as_soon_as_it_listens() {
    let s = setup().await;
    let a = Backend::start("a").await;
    let mut b = Backend::start("b").await;
    s.register("node-a", a.addr).await;
    s.register("node-b", b.addr).await;
    s.wait_for_nodes(2).await;
    let both = get_until(&s, 2000, |m| m.len() == 2).await;
    assert_eq!(both.len(), 2, "both nodes serve: {both:?}");

    // `b`'s process dies: its refused connections are retried on `a` (every GET is
    // answered) until the policy leaves it alone.
    let port = b.addr;
    b.kill().await;
    let errors_before = s.routing().await["node-b"].errors;
    get_until(&s, 200, |_| false).await;
    let routing = s.routing().await;
    assert!(
        routing["node-b"].errors > errors_before,
        "a GET was routed to the dead node: {routing:?}"
    );

    // It comes back on its port. Without a connection check nothing would tell: the
    // policy leaves it alone, and its error rate (which keeps it out) decays over
    // 30 s. The check, every 500 ms, forgives its refusals with no request sent.
    let b = Backend::start_at("b", port).await;
    let back = tokio::time::Instant::now();
    loop {
        let e = s.routing().await["node-b"].error_rate;
        if e == 0.0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_millis(1500),
            "node-b's error rate is still {e} {:?} after it listened again",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = get_until(&s, 100_000, |m| {
        m.contains_key("b") || back.elapsed() > Duration::from_secs(3)
    })
    .await;
    assert!(
        served.contains_key("b"),
        "node-b served nothing for {:?} after it listened again: {served:?}",
        back.elapsed()
    );
    assert!(b.seen.get.load(Ordering::Relaxed) >= 1);
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_nodes_answers_503_until_nodes_appear() {
    let bal = TestBalancer::start_with(|cfg| {
        cfg.proxy = vec!["1/later=127.0.0.1:0".parse().expect("spec")];
    })
    .await;
    let proxy = bal
        .running
        .edges
        .proxy(OWNER, "later")
        .expect("proxy")
        .url();
    let url = format!("{proxy}/x");
    let get = async || common::raw(&url, reqwest::Method::GET, None, None, None).await;
    common::assert_error(&get().await, 503, "no_pool", "later");

    let client = bal.client_with_pool("acme", "later").await;
    // The engine learns the pool at its next tick; until a node registers: no nodes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = get().await;
    while got.1["error"]["code"] == "no_pool" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = get().await;
    }
    common::assert_error(&got, 503, "no_nodes", "later");

    let backend = Backend::start("late").await;
    let agent = bal.agent(&client, &["later"]).await;
    agent
        .register(&register(
            "node-late",
            &backend.addr.to_string(),
            &["later"],
        ))
        .await
        .expect("register");
    let mut got = get().await;
    while got.0 == 503 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = get().await;
    }
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(backend.seen.get.load(Ordering::Relaxed), 1);
    bal.running.stop().await.expect("stop");
}

fn pool_key(client_id: i64, pool: &str) -> plb_balancer::engine::PoolKey {
    plb_balancer::engine::PoolKey {
        client_id,
        pool: pool.into(),
    }
}

/// One HAProxy agent check: sends `line`, reads the answer to the end.
async fn agent_check(addr: SocketAddr, line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("agent-check connect");
    s.write_all(line.as_bytes()).await.expect("agent-send");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("agent-check reply");
    out
}

/// The proxy's answer to `GET /name` (the backend's name, or the error code).
async fn proxied_name(proxy: &str) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
        .get(format!("{proxy}/name"))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    (status, code.unwrap_or(text))
}

/// Waits until the engine knows `n` nodes of the pool `key`.
async fn wait_for_pool(
    bal: &plb_balancer::RunningBalancer,
    key: &plb_balancer::engine::PoolKey,
    n: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let known = bal.state.engine.pool(key).map_or(0, |r| r.snapshot().len());
        if known == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine knows {known} of {n} nodes of {key:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_pool_of_the_same_name_neither_captures_nor_breaks_the_proxy() {
    let with_edges = |cfg: &mut plb_balancer::BalancerConfig| {
        cfg.proxy = vec![format!("{OWNER}/{POOL}=127.0.0.1:0").parse().expect("spec")];
        cfg.agent_check = Some("127.0.0.1:0".parse().expect("addr"));
    };
    let bal = TestBalancer::start_with(with_edges).await;
    let acme = bal.admin.create_client("acme").await.expect("acme");
    assert_eq!(acme.id, OWNER, "the operator's first client");
    let acme = bal.admin.with_token(acme.token);
    // Before the operator's tenant has created its pool, another tenant creates one of
    // the same name, with a node of its own.
    let globex = bal.client_with_pool("globex", POOL).await;
    let intruder = Backend::start("intruder").await;
    bal.agent(&globex, &[POOL])
        .await
        .register(&register("node-x", &intruder.addr.to_string(), &[POOL]))
        .await
        .expect("register");
    wait_for_pool(&bal.running, &pool_key(2, POOL), 1).await;
    let proxy = bal.running.edges.proxy(OWNER, POOL).expect("proxy").url();
    let check = bal
        .running
        .edges
        .agent_check
        .as_ref()
        .expect("agent-check")
        .addr;
    // Not captured: the proxy has no pool to serve yet, the agent-check knows no node.
    assert_eq!(proxied_name(&proxy).await, (503, "no_pool".to_owned()));
    assert_eq!(intruder.seen.get.load(Ordering::Relaxed), 0);
    assert_eq!(
        agent_check(check, &format!("{OWNER}/{POOL}/node-x\n")).await,
        "\n"
    );
    // A bare pool name is no longer an address.
    assert_eq!(agent_check(check, &format!("{POOL}/node-x\n")).await, "\n");

    // The owner's pool appears: the proxy and the agent-check serve it, not the other.
    acme.create_pool(POOL, 200.0).await.expect("pool");
    let own = Backend::start("own").await;
    bal.agent(&acme, &[POOL])
        .await
        .register(&register("node-a", &own.addr.to_string(), &[POOL]))
        .await
        .expect("register");
    wait_for_pool(&bal.running, &pool_key(OWNER, POOL), 1).await;
    for _ in 0..10 {
        assert_eq!(proxied_name(&proxy).await, (200, "own".to_owned()));
    }
    assert_eq!(intruder.seen.get.load(Ordering::Relaxed), 0);
    assert!(
        agent_check(check, &format!("{OWNER}/{POOL}/node-a\n"))
            .await
            .starts_with("up ready"),
    );
    assert_eq!(
        agent_check(check, &format!("{OWNER}/{POOL}/node-x\n")).await,
        "\n"
    );
    assert!(
        agent_check(check, &format!("2/{POOL}/node-x\n"))
            .await
            .starts_with("up ready"),
        "the other tenant's pool is reachable under its own owner"
    );

    // Two pools named `web` in the store: a restart still starts and serves the owner's.
    let mut cfg = common::config(bal.dir.path());
    with_edges(&mut cfg);
    let dir = bal.dir;
    bal.running.stop().await.expect("stop");
    let again = plb_balancer::start(&cfg).await.expect("restarts");
    let proxy = again.edges.proxy(OWNER, POOL).expect("proxy").url();
    wait_for_pool(&again, &pool_key(OWNER, POOL), 1).await;
    assert_eq!(proxied_name(&proxy).await, (200, "own".to_owned()));
    assert_eq!(intruder.seen.get.load(Ordering::Relaxed), 0);
    again.stop().await.expect("stop");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_slower_than_the_total_timeout_gets_504_and_an_error_as_feedback() {
    let s = setup_with(|cfg| cfg.proxy_timeout_ms = 300).await;
    let slow = Backend::start("slow").await;
    s.register("node-slow", slow.addr).await;
    s.wait_for_nodes(1).await;
    let before = s.routing().await;
    let started = std::time::Instant::now();
    let got = common::raw(
        &format!("{}/sleep/2000", s.proxy),
        reqwest::Method::GET,
        None,
        None,
        None,
    )
    .await;
    let took = started.elapsed();
    common::assert_error(&got, 504, "gateway_timeout", "node-slow");
    assert!(
        took < Duration::from_millis(1500),
        "answered at the timeout, not when the node did: {took:?}"
    );
    let after = s.routing().await;
    let errors =
        |m: &BTreeMap<String, plb_api::NodeRouting>| m.get("node-slow").map_or(0, |r| r.errors);
    assert_eq!(errors(&after) - errors(&before), 1, "{after:?}");
    // A fast answer still passes.
    let got = common::raw(
        &format!("{}/name", s.proxy),
        reqwest::Method::GET,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(got.0, 200);
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_requests_left_to_hyper_share_one_client_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let b = Backend::start("only").await;
    s.register("node-only", b.addr).await;
    s.wait_for_nodes(1).await;
    let addr = s.proxy.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Three requests in one write, for the fast path: a GET, a GET the node answers in
    // two chunks, and a small POST that it echoes back.
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /parts HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .expect("write");
    // Then a chunked upload, which the fast path leaves to hyper for the rest of the
    // connection, and a GET that closes it.
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection after the last answer")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let answers: Vec<&str> = text.split("http/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 5, "{text}");
    for a in &answers {
        assert!(a.starts_with("200 "), "{a}");
        assert!(a.contains("\r\ndate: "), "{a}");
    }
    assert!(answers[0].ends_with("\r\n\r\nonly"), "{}", answers[0]);
    assert!(
        answers[1].contains("transfer-encoding: chunked"),
        "{}",
        answers[1]
    );
    assert!(
        answers[1].ends_with("\r\n\r\n5\r\nfirst\r\n7\r\n second\r\n0\r\n\r\n"),
        "{}",
        answers[1]
    );
    assert!(answers[2].ends_with("\r\n\r\nhello"), "{}", answers[2]);
    assert!(answers[3].contains("abc"), "{}", answers[3]);
    assert!(answers[4].contains("connection: close"), "{}", answers[4]);
    assert!(answers[4].ends_with("only"), "{}", answers[4]);
    assert_eq!(b.seen.get.load(Ordering::Relaxed), 3);
    assert_eq!(b.seen.post.load(Ordering::Relaxed), 2);
    s.bal.running.stop().await.expect("stop");
}

/// What the proxy answers on a fresh connection that sends `bytes` and stops.
async fn raw_exchange(proxy: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(proxy.trim_start_matches("http://"))
        .await
        .expect("connect");
    c.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_oversized_requests_get_a_4xx_and_reach_no_node() {
    let s = setup().await;
    let b = Backend::start("only").await;
    s.register("node-only", b.addr).await;
    s.wait_for_nodes(1).await;
    // Not HTTP, a bad header name, conflicting lengths, a head past any limit: the
    // fast path leaves them to hyper, which answers 4xx and closes.
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    for (what, bytes) in [
        (
            "not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03hello\r\n\r\n".to_vec(),
        ),
        (
            "bad header name",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
        ),
        (
            "conflicting lengths",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        ),
        ("oversized head", huge.into_bytes()),
    ] {
        let answer = raw_exchange(&s.proxy, &bytes).await;
        let status: u16 = answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no status line in {answer:?}"));
        assert!((400..500).contains(&status), "{what}: {answer:?}");
    }
    assert_eq!(b.seen.get.load(Ordering::Relaxed), 0);
    assert_eq!(b.seen.post.load(Ordering::Relaxed), 0);
    // The proxy still serves.
    let (status, body) = send(&s, reqwest::Method::GET, "/").await;
    assert_eq!((status, body.as_str()), (200, "only"));
    s.bal.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_frees_the_nodes_slot_at_once_on_either_path() {
    use tokio::io::AsyncWriteExt;
    for fast in [true, false] {
        let s = setup_with(|cfg| cfg.proxy_fast_path = fast).await;
        let b = Backend::start("slow").await;
        s.register("node-slow", b.addr).await;
        s.wait_for_nodes(1).await;
        // One answer first, so that the node has a latency to raise.
        assert_eq!(send(&s, reqwest::Method::GET, "/").await.0, 200);
        let in_flight = |m: &BTreeMap<String, plb_api::NodeRouting>| {
            m.get("node-slow").map_or(u64::MAX, |r| r.in_flight)
        };
        let mut c = tokio::net::TcpStream::connect(s.proxy.trim_start_matches("http://"))
            .await
            .expect("connect");
        c.write_all(b"GET /sleep/5000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while in_flight(&s.routing().await) != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "fast path {fast}: the request never reached the node"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The client gives up: its connection closes 0.4 s in, 4.6 s before the node
        // would answer.
        drop(c);
        let closed = std::time::Instant::now();
        loop {
            let routing = s.routing().await;
            if in_flight(&routing) == 0 {
                let r = &routing["node-slow"];
                assert_eq!(r.errors, 0, "fast path {fast}: a give-up is no outcome");
                assert!(
                    r.latency_ms.is_some_and(|l| l >= 400.0),
                    "fast path {fast}: the wait is a lower bound on the latency: {r:?}"
                );
                break;
            }
            assert!(
                closed.elapsed() < Duration::from_secs(2),
                "fast path {fast}: the node's slot is still taken 2 s after the client left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.bal.running.stop().await.expect("stop");
    }
}
