//! Multi-tenant hardening (issue 15) against a real balancer: webhook URLs and node
//! addresses that point at internal or metadata networks are refused (and checked again
//! at connect time), and forwarding headers from untrusted peers are replaced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use plb_balancer::BalancerConfig;
use plb_balancer::proxy::ProxySpec;
use plb_client::Client;
use tokio::net::TcpListener;

const SECRET: &str = "a-webhook-secret-of-32-bytes-xyz";
const POOL: &str = "web";

async fn put_webhook(b: &TestBalancer, client: &Client, url: &str) -> (u16, serde_json::Value) {
    raw(
        &format!("{}/v1/pools/{POOL}/webhook", b.url()),
        reqwest::Method::PUT,
        Some(client.token()),
        Some("application/json"),
        Some(
            serde_json::json!({"url": url, "secret": SECRET})
                .to_string()
                .into_bytes(),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_internal_addresses_are_refused_unless_the_operator_allows_them() {
    let b = TestBalancer::start().await;
    let client = b.client_with_pool("acme", POOL).await;
    for url in [
        "http://127.0.0.1:9000/x",
        "http://localhost:9000/x",
        "http://[::1]:9000/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/x",
        "http://192.168.1.1/x",
        "http://[fd00:ec2::254]/x",
        "http://100.100.100.200/x",
        "http://[::ffff:127.0.0.1]:9000/x",
    ] {
        assert_error(
            &put_webhook(&b, &client, url).await,
            400,
            "webhook_address_denied",
            "--webhook-allow-networks",
        );
    }
    // Nothing was stored.
    let got = raw(
        &format!("{}/v1/pools/{POOL}/webhook", b.url()),
        reqwest::Method::GET,
        Some(client.token()),
        None,
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", "webhook");
    b.running.stop().await.expect("stop");

    // The operator's allow-list opens loopback, and only loopback.
    let b = TestBalancer::start_with(|cfg| {
        cfg.webhook_allow_networks = vec!["127.0.0.0/8".parse().expect("network")];
    })
    .await;
    let client = b.client_with_pool("acme", POOL).await;
    let (status, body) = put_webhook(&b, &client, "http://127.0.0.1:9000/x").await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &put_webhook(&b, &client, "http://169.254.169.254/x").await,
        400,
        "webhook_address_denied",
        "169.254.169.254",
    );
    b.running.stop().await.expect("stop");
}

async fn register_at(
    b: &TestBalancer,
    client: &Client,
    node: &str,
    address: &str,
) -> Result<(), plb_client::ClientError> {
    b.agent(client, &[POOL])
        .await
        .register(&register(node, address, &[POOL]))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_at_link_local_or_metadata_addresses_are_refused_at_registration() {
    let b = TestBalancer::start().await;
    let client = b.client_with_pool("acme", POOL).await;
    for (i, address) in [
        "169.254.169.254:80",
        "169.254.10.1:8080",
        "100.100.100.200:80",
        "[fd00:ec2::254]:80",
        "[fe80::1]:80",
    ]
    .into_iter()
    .enumerate()
    {
        let e = register_at(&b, &client, &format!("n{i}"), address)
            .await
            .expect_err(address);
        assert_api_error(&e, 400, "node_address_denied", "--node-networks");
    }
    // Loopback and private networks stay allowed by default.
    register_at(&b, &client, "local", "127.0.0.1:8080")
        .await
        .expect("loopback node");
    register_at(&b, &client, "private", "10.1.2.3:8080")
        .await
        .expect("private node");
    b.running.stop().await.expect("stop");

    // With --node-networks, only those networks.
    let b = TestBalancer::start_with(|cfg| {
        cfg.node_networks = vec!["10.0.0.0/8".parse().expect("network")];
    })
    .await;
    let client = b.client_with_pool("acme", POOL).await;
    let e = register_at(&b, &client, "local", "127.0.0.1:8080")
        .await
        .expect_err("outside the node networks");
    assert_api_error(&e, 400, "node_address_denied", "127.0.0.1");
    register_at(&b, &client, "private", "10.1.2.3:8080")
        .await
        .expect("inside");
    b.running.stop().await.expect("stop");
}

/// A backend that answers every request with the request's headers as JSON, and counts.
async fn header_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    s.fetch_add(1, Ordering::Relaxed);
                    let h: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                        .collect();
                    let body = serde_json::to_vec(&h).expect("json");
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn with_proxy(cfg: &mut BalancerConfig) {
    cfg.proxy = vec![ProxySpec {
        client_id: 1,
        pool: POOL.into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
    }];
    cfg.proxy_connect_timeout_ms = 500;
    cfg.proxy_timeout_ms = 10_000;
}

async fn wait_for_nodes(b: &TestBalancer, n: usize) {
    let engine = &b.running.state.engine;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let key = plb_balancer::engine::PoolKey {
            client_id: 1,
            pool: POOL.into(),
        };
        let known = engine.pool(&key).map_or(0, |r| r.snapshot().len());
        if known == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{known} of {n} nodes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client_are_replaced() {
    let b = TestBalancer::start_with(with_proxy).await;
    let client = b.client_with_pool("acme", POOL).await;
    let (addr, _) = header_backend().await;
    register_at(&b, &client, "a", &addr.to_string())
        .await
        .expect("register");
    wait_for_nodes(&b, 1).await;
    let proxy = b.running.edges.proxy(1, POOL).expect("proxy").url();
    let resp = http()
        .get(format!("{proxy}/headers"))
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "admin.internal")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let seen: BTreeMap<String, String> = resp.json().await.expect("json");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen:?}");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert_eq!(
        seen["forwarded"],
        "for=127.0.0.1;proto=http;host=\"shop.example\""
    );
    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_does_not_connect_to_a_node_outside_the_node_networks() {
    // A node registered while loopback was allowed...
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    with_proxy(&mut cfg);
    let running = plb_balancer::start(&cfg).await.expect("start");
    let b = TestBalancer {
        admin: Client::new(&running.url(), ADMIN).expect("client"),
        running,
        dir,
    };
    let client = b.client_with_pool("acme", POOL).await;
    let (addr, seen) = header_backend().await;
    register_at(&b, &client, "a", &addr.to_string())
        .await
        .expect("register");
    wait_for_nodes(&b, 1).await;
    let proxy = b.running.edges.proxy(1, POOL).expect("proxy").url();
    let resp = http().get(format!("{proxy}/x")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    b.running.stop().await.expect("stop");

    // ...is not connected to once the operator allows only 10.0.0.0/8.
    cfg.node_networks = vec!["10.0.0.0/8".parse().expect("network")];
    let running = plb_balancer::start(&cfg).await.expect("restart");
    let b = TestBalancer {
        admin: Client::new(&running.url(), ADMIN).expect("client"),
        running,
        dir: b.dir,
    };
    wait_for_nodes(&b, 1).await;
    let proxy = b.running.edges.proxy(1, POOL).expect("proxy").url();
    let resp = http().get(format!("{proxy}/x")).send().await.expect("send");
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not allow")),
        "{body}"
    );
    assert_eq!(
        seen.load(Ordering::Relaxed),
        1,
        "the backend saw nothing more"
    );

    b.running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_of_a_deleted_probe_are_refused_unless_taken_before_the_deletion() {
    let b = TestBalancer::start().await;
    let client = b.client_with_pool("acme", POOL).await;
    client
        .upload_probe(POOL, "p", plb_probe_artifacts::TRIVIAL, &quick(1000))
        .await
        .expect("upload");
    let agent = b.agent(&client, &[POOL]).await;
    agent
        .register(&register("n1", "127.0.0.1:9001", &[POOL]))
        .await
        .expect("register");
    let before = plb_testkit::now_ms();
    agent
        .report(&batch("n1", vec![sample(POOL, "p", 1, before)]))
        .await
        .expect("a live probe's sample");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    client.delete_probe(POOL, "p").await.expect("delete");
    let after = plb_testkit::now_ms() + 10;
    let e = agent
        .report(&batch("n1", vec![sample(POOL, "p", 1, after)]))
        .await
        .expect_err("a deleted probe's sample");
    assert_api_error(&e, 422, "invalid_reference", "was deleted");
    // Taken before the deletion (an agent's spool draining late): still stored.
    let ack = agent
        .report(&batch("n1", vec![sample(POOL, "p", 1, before + 1)]))
        .await
        .expect("a sample taken before the deletion");
    assert_eq!(ack.accepted, 1);
    b.running.stop().await.expect("stop");
}

/// Reads what the server sends until it closes the connection or `wait` passes: the
/// bytes, and whether it closed.
async fn read_until_closed(
    s: &mut tokio::net::TcpStream,
    wait: std::time::Duration,
) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::AsyncWriteExt;
    let b = TestBalancer::start_with(|cfg| {
        cfg.http_header_timeout_ms = 300;
        cfg.http_body_timeout_ms = 300;
        cfg.http_idle_timeout_ms = 500;
        cfg.max_connections = 2;
    })
    .await;
    let addr = b.running.addr;
    let wait = std::time::Duration::from_secs(3);

    // Headers that never finish: the connection is closed.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut s, wait).await;
    assert!(closed, "a slow header is cut off");

    // A body that never finishes: answered with an error, not waited on forever.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /v1/clients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let (answer, _) = read_until_closed(&mut s, wait).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");

    // Two idle connections hold both slots: a third client does not wait for them to
    // time out, one of them gives way once past its grace (75 ms here; who gives way,
    // and who never does: below).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let resp = http()
        .get(format!("{}/healthz", b.url()))
        .timeout(wait)
        .send()
        .await
        .expect("served at once");
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(200),
        "waited {:?} for idle connections to time out",
        started.elapsed()
    );
    drop(held);
    b.running.stop().await.expect("stop");
}

/// Sends `head` on a new connection to `addr`.
async fn send_on_new(addr: SocketAddr, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

/// Reads until `s` has sent a whole response head or `wait` passes: the bytes read.
async fn response_head(s: &mut tokio::net::TcpStream, wait: std::time::Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// At the connection cap a new connection is not left waiting behind idle or slow ones:
/// a connection that never sent a request gives way first, then an idle keep-alive
/// one, then a client's request whose body is still arriving; a connection in its
/// grace (250 ms here) and an agent's request are never cut, so when only agents hold
/// the slots new connections wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_and_slow_clients_give_way_but_agents_do_not() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let b = TestBalancer::start_with(|cfg| {
        cfg.http_header_timeout_ms = 5_000;
        cfg.http_body_timeout_ms = 4_000;
        cfg.http_idle_timeout_ms = 10_000;
        cfg.max_connections = 2;
    })
    .await;
    let addr = b.running.addr;
    let client = b.client_with_pool("acme", POOL).await;
    let agent = b.agent(&client, &[POOL]).await;
    agent
        .register(&register("n1", "127.0.0.1:9", &[POOL]))
        .await
        .expect("register");
    let healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let report = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        agent.token()
    );
    let short = Duration::from_millis(300);
    // Past a connection's grace.
    let grace = || tokio::time::sleep(Duration::from_millis(300));
    let ok = |head: String| head.starts_with("HTTP/1.1 200");

    // Two connections that sent nothing: the older gives way to a third, at once.
    let mut older = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut newer = tokio::net::TcpStream::connect(addr).await.expect("connect");
    grace().await;
    let mut third = send_on_new(addr, healthz).await;
    assert!(ok(response_head(&mut third, Duration::from_secs(2)).await));
    assert!(
        read_until_closed(&mut older, short).await.1,
        "the older one gave way"
    );
    assert!(
        !read_until_closed(&mut newer, short).await.1,
        "the newer one is open"
    );
    drop((newer, third));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A client's body still arriving, and a keep-alive connection idle after an answer:
    // the idle one gives way.
    let mut slow = send_on_new(
        addr,
        &format!(
            "POST /v1/pools/{POOL}/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[",
            client.token()
        ),
    )
    .await;
    let mut kept = send_on_new(addr, healthz).await;
    assert!(ok(response_head(&mut kept, Duration::from_secs(2)).await));
    grace().await;
    let mut next = send_on_new(addr, healthz).await;
    assert!(ok(response_head(&mut next, Duration::from_secs(2)).await));
    assert!(
        read_until_closed(&mut kept, short).await.1,
        "the idle one gave way"
    );
    assert!(
        !read_until_closed(&mut slow, short).await.1,
        "the slow body is open"
    );
    drop(next);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A connection that sent nothing goes before the slow body.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    grace().await;
    let mut last = send_on_new(addr, healthz).await;
    assert!(ok(response_head(&mut last, Duration::from_secs(2)).await));
    assert!(
        read_until_closed(&mut idle, short).await.1,
        "the silent one gave way"
    );
    drop(last);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Beside an agent's report, the slow body gives way.
    let mut agent_report = send_on_new(addr, &report).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut after = send_on_new(addr, healthz).await;
    assert!(ok(response_head(&mut after, Duration::from_secs(2)).await));
    let (answer, closed) = read_until_closed(&mut slow, short).await;
    assert!(
        closed && answer.is_empty(),
        "the slow body gave way: {answer:?}"
    );
    let _ = agent_report.shutdown().await;
    drop((after, agent_report));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two agents' reports whose bodies are still arriving hold both slots: they are not
    // cut, and a new client waits until one ends (its body timeout).
    let mut agents = vec![
        send_on_new(addr, &report).await,
        send_on_new(addr, &report).await,
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let mut waiting = send_on_new(addr, healthz).await;
    assert_eq!(
        response_head(&mut waiting, Duration::from_secs(1)).await,
        "",
        "served while agents held every slot"
    );
    assert!(
        ok(response_head(&mut waiting, Duration::from_secs(6)).await),
        "served once an agent's request ended"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(3_500),
        "{:?}",
        started.elapsed()
    );
    for a in &mut agents {
        let (answer, _) = read_until_closed(a, Duration::from_secs(3)).await;
        assert!(
            answer.starts_with("HTTP/1.1 4"),
            "an agent's request was cut: {answer:?}"
        );
    }
    b.running.stop().await.expect("stop");
}

/// A JSON body must be an object where the API expects one: serde reads a struct from an
/// array too, so `[null, null]` was a valid `PATCH /v1/pools/{pool}` (both fields
/// absent) and answered 200 (found by the API fuzzing, scripts/fuzz-api.sh). Feedback,
/// which takes a bare array of items, refuses an item that is not an object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_of_the_wrong_type_are_refused() {
    let b = TestBalancer::start().await;
    let client = b.client_with_pool("acme", POOL).await;
    let call = |method: reqwest::Method, path: &str, body: &str| {
        let url = format!("{}{path}", b.url());
        let (token, body) = (client.token().to_string(), body.as_bytes().to_vec());
        async move {
            raw(
                &url,
                method,
                Some(&token),
                Some("application/json"),
                Some(body),
            )
            .await
        }
    };
    let pool_path = format!("/v1/pools/{POOL}");
    for (body, kind) in [
        ("[null, null]", "an array"),
        (" [\"plb\", 150]", "an array"),
        ("\"plb\"", "a string"),
        ("150", "a number"),
        ("true", "a boolean"),
        ("null", "null"),
    ] {
        assert_error(
            &call(reqwest::Method::PATCH, &pool_path, body).await,
            422,
            "invalid_body",
            &format!("must be a JSON object (`{{...}}`), got {kind}"),
        );
    }
    // Not JSON at all stays a 400, and an object is still read.
    assert_error(
        &call(reqwest::Method::PATCH, &pool_path, "[null,").await,
        400,
        "invalid_json",
        "malformed JSON",
    );
    assert_error(
        &call(reqwest::Method::POST, "/v1/pools", "[\"api\", 150]").await,
        422,
        "invalid_body",
        "got an array",
    );
    let (status, pool) = call(
        reqwest::Method::PATCH,
        &pool_path,
        r#"{"latency_slo_ms": 150}"#,
    )
    .await;
    assert_eq!(
        (status, &pool["latency_slo_ms"]),
        (200, &serde_json::json!(150.0)),
        "{pool}"
    );
    let pools = client.pools().await.expect("pools");
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(
        (pools[0].latency_slo_ms, pools[0].policy.as_str()),
        (150.0, "plb")
    );

    // Feedback: an item given as an array is refused, naming the item.
    let feedback = format!("/v1/pools/{POOL}/feedback");
    assert_error(
        &call(reqwest::Method::POST, &feedback, r#"[["n1", 12.5, true]]"#).await,
        422,
        "invalid_feedback",
        "item 0: expected an object",
    );
    assert_error(
        &call(
            reqwest::Method::POST,
            &feedback,
            r#"{"items": [{"node": "n1", "latency_ms": 1, "ok": true}, [1]]}"#,
        )
        .await,
        422,
        "invalid_feedback",
        "item 1: expected an object",
    );
    b.running.stop().await.expect("stop");
}
