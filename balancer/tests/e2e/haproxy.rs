//! A real HAProxy (Debian's `haproxy` package) configured with `agent-check` against PLB's
//! `--agent-check` port sets the server weights and states PLB says, read back from
//! HAProxy's stats socket (`show servers state`). Needs `haproxy` on PATH: the test fails,
//! never skips, without it (`apt-get install -y haproxy`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{TestBalancer, batch, register, sample};
use plb_api::{NODE_SAMPLER_PROBE, NodeState, Outcome};
use plb_testkit::{free_addr, now_ms, spawn_haproxy, which};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const POOL: &str = "web";
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Runs `cmd` on HAProxy's stats socket and returns its answer.
async fn stats(sock: &std::path::Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock).await?;
    s.write_all(format!("{cmd}\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// One server of `show servers state`.
#[derive(Debug, Clone, PartialEq)]
struct HaServer {
    /// `srv_op_state`: 0 stopped (down), 2 running.
    op_state: u32,
    /// `srv_admin_state`: 0 = ready.
    admin_state: u32,
    /// `srv_uweight`: the weight in use.
    weight: u32,
}

/// Parses `show servers state` by column name.
fn parse_state(text: &str) -> BTreeMap<String, HaServer> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let _version = lines.next();
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name} in {header}"))
    };
    let (name, op, admin, weight) = (
        col("srv_name"),
        col("srv_op_state"),
        col("srv_admin_state"),
        col("srv_uweight"),
    );
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > weight)
        .map(|f| {
            let num = |i: usize| f[i].parse::<u32>().expect("a number");
            (
                f[name].to_string(),
                HaServer {
                    op_state: num(op),
                    admin_state: num(admin),
                    weight: num(weight),
                },
            )
        })
        .collect()
}

/// What PLB says each node should get, from the nodes view: `Some(pct)` for up (the
/// node's `plb` share relative to the largest, 1-100), `None` for down/drain.
async fn plb_expected(client: &plb_client::Client) -> BTreeMap<String, (NodeState, Option<u32>)> {
    let nodes = client.pool_nodes(POOL).await.expect("nodes view").nodes;
    let max = nodes
        .iter()
        .filter_map(|n| n.routing.as_ref().map(|r| r.share))
        .fold(0.0_f64, f64::max);
    nodes
        .into_iter()
        .filter_map(|n| {
            let r = n.routing?;
            let pct = (r.share > 0.0 && max > 0.0)
                .then(|| (100.0 * r.share / max).round().clamp(1.0, 100.0) as u32);
            Some((n.node, (r.state, pct)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_agent_check_sets_the_weights_plb_says() {
    let haproxy = which("haproxy").unwrap_or_else(|| {
        panic!(
            "haproxy is not installed; this test needs the real peer: `apt-get install -y haproxy` \
             (Debian's package; CI installs it in scripts/test.sh)"
        )
    });

    let bal = TestBalancer::start_with(|cfg| {
        cfg.agent_check = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let agent_port = bal
        .running
        .edges
        .agent_check
        .as_ref()
        .expect("agent-check runs")
        .addr
        .port();
    let client = bal.client_with_pool("acme", POOL).await;
    let mut agents = BTreeMap::new();
    for node in NODES {
        let agent = bal.agent(&client, &[POOL]).await;
        let addr = free_addr();
        agent
            .register(&register(node, &addr.to_string(), &[POOL]))
            .await
            .expect("register");
        agents.insert(node, (agent, addr));
    }

    // node-1 reports healthy samples, node-3 fails its checks, node-2 reports nothing
    // (unknown: half weight).
    let node3_ok = Arc::new(AtomicBool::new(false));
    let reporters: Vec<_> = ["node-1", "node-3"]
        .into_iter()
        .map(|node| {
            let agent = agents[node].0.clone();
            let node3_ok = Arc::clone(&node3_ok);
            tokio::spawn(async move {
                loop {
                    let mut s = sample(POOL, NODE_SAMPLER_PROBE, 0, now_ms());
                    if node == "node-3" && !node3_ok.load(Ordering::Relaxed) {
                        s.outcome = Outcome::Unhealthy;
                        s.message = "connection refused".into();
                    }
                    let _ = agent.report(&batch(node, vec![s])).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect();

    // HAProxy: one backend, the three nodes as servers with equal configured weights,
    // each asking PLB for its weight with `agent-send "CLIENT_ID/POOL/NODE\n"` (client 1: acme) every 200 ms.
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("admin.sock");
    let frontend = free_addr();
    let mut cfg = format!(
        "global\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n    timeout check 1s\n\
         frontend fe\n    bind {frontend}\n    default_backend be\n\
         backend be\n    balance roundrobin\n",
        sock.display()
    );
    for (i, node) in NODES.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{} {} weight 100 agent-check agent-addr 127.0.0.1 agent-port {agent_port} agent-inter 200ms agent-send \"1/{POOL}/{node}\\n\"\n",
            i + 1,
            agents[node].1,
        ));
    }
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).expect("write haproxy.cfg");
    let check = std::process::Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .expect("run haproxy -c");
    assert!(
        check.status.success(),
        "haproxy rejects the config:\n{cfg}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut ha = spawn_haproxy(&haproxy, &cfg_path, Stdio::piped());

    // Until PLB's own weights have settled apart (node-1 at full weight, node-2 at half,
    // node-3 unhealthy), and HAProxy shows the same.
    let first = agreement(&client, &sock, |want| {
        want.get("node-3")
            .is_some_and(|w| w.0 == NodeState::Unhealthy)
            && want.get("node-1").and_then(|w| w.1) == Some(100)
            && want
                .get("node-2")
                .and_then(|w| w.1)
                .is_some_and(|p| p <= 60)
    })
    .await;
    // Then node-3 recovers: HAProxy brings it back up at the weight PLB gives it.
    node3_ok.store(true, Ordering::Relaxed);
    let second = match &first {
        Ok(_) => {
            agreement(&client, &sock, |want| {
                want.get("node-3")
                    .is_some_and(|w| w.0 != NodeState::Unhealthy && w.1.is_some())
            })
            .await
        }
        Err(e) => Err(e.clone()),
    };
    for r in reporters {
        r.abort();
    }
    let _ = ha.start_kill();
    let out = ha.wait_with_output().await.expect("haproxy output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (want, got) = first.unwrap_or_else(|e| panic!("{e}\nhaproxy stderr:\n{stderr}"));
    eprintln!("PLB {want:?}\nHAProxy {got:?}");
    assert_eq!(got["s1"].weight, 100);
    assert!(got["s2"].weight < 70 && got["s2"].weight > 0, "{got:?}");
    assert_eq!(got["s3"].op_state, 0, "node-3 is down in HAProxy");
    let (want, got) =
        second.unwrap_or_else(|e| panic!("after recovery: {e}\nhaproxy stderr:\n{stderr}"));
    eprintln!("after recovery: PLB {want:?}\nHAProxy {got:?}");
    assert_eq!(got["s3"].op_state, 2, "node-3 is up again in HAProxy");
    bal.running.stop().await.expect("stop");
}

/// Polls PLB's nodes view and HAProxy's stats socket until PLB's figures satisfy
/// `settled` and HAProxy's servers match them (up at PLB's percentage within 2 points, or
/// down), for up to 60 s.
async fn agreement(
    client: &plb_client::Client,
    sock: &std::path::Path,
    settled: impl Fn(&BTreeMap<String, (NodeState, Option<u32>)>) -> bool,
) -> Result<
    (
        BTreeMap<String, (NodeState, Option<u32>)>,
        BTreeMap<String, HaServer>,
    ),
    String,
> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last: String;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = plb_expected(client).await;
        match stats(sock, "show servers state be").await {
            Ok(text) => {
                let got = parse_state(&text);
                last = format!("PLB {want:?}\nHAProxy {got:?}");
                let matches = NODES.iter().enumerate().all(|(i, node)| {
                    let (Some(w), Some(h)) = (want.get(*node), got.get(&format!("s{}", i + 1)))
                    else {
                        return false;
                    };
                    match w.1 {
                        Some(pct) => h.op_state == 2 && h.weight.abs_diff(pct) <= 2,
                        None => h.op_state == 0,
                    }
                });
                if settled(&want) && matches {
                    return Ok((want, got));
                }
            }
            Err(e) => last = format!("stats socket: {e}"),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "HAProxy's weights never matched PLB's within 60 s:\n{last}"
            ));
        }
    }
}
