//! End-to-end tests of probe reliability: a real balancer (`plb balancer` over a SQLite
//! file), three real agents (`plb agent`) running sample probes against loopback
//! targets, and a local webhook receiver (axum on loopback) that checks every signature
//! with its own HMAC-SHA256.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use plb_api::{
    Notification, NotificationKind, NotificationList, PoolNodes, ProbeDetail, ProbeState,
    RouteDecision, WebhookDeliveries,
};
use plb_probe_artifacts::{MISBEHAVE, TCP_CONNECT, TRIVIAL};
use plb_testkit::{
    Proc, WebhookReceiver, free_addr, free_port, loopback, now_s, tcp_target, test_dir, wait_for,
};
use plb_tests::cluster::{AgentSpec, Balancer, ProbeUpload};
use sha2::Sha256;

const POOL: &str = "web";
const SECRET: &str = "e2e-webhook-secret-0123456789abcdef";

/// Checks `t=..,v1=..` over `t.body` with an HMAC computed here.
fn signature_ok(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_s() - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// A webhook receiver on `port` (0: any) checking signatures with [`signature_ok`].
fn receiver(port: u16) -> WebhookReceiver {
    WebhookReceiver::start(loopback(port), signature_ok)
}

/// A loopback address where nothing listens.
fn dead_address() -> String {
    free_addr().to_string()
}

fn upload<'a>(
    name: &'a str,
    wasm: &'a [u8],
    interval_ms: u64,
    config: &'a [(&'a str, &'a str)],
) -> ProbeUpload<'a> {
    ProbeUpload::quick(POOL, name, wasm, interval_ms, 1000, config)
}

struct Cluster {
    balancer: Balancer,
    token: String,
    agents: Vec<Proc>,
}

impl Cluster {
    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, v) = self
            .balancer
            .call("GET", path, &self.token, None)
            .expect("call");
        assert_eq!(status, 200, "GET {path}: {v}");
        serde_json::from_value(v).expect("the documented shape")
    }

    fn probe(&self, name: &str) -> ProbeDetail {
        self.get(&format!("/v1/pools/{POOL}/probes/{name}"))
    }

    fn notifications(&self) -> Vec<Notification> {
        self.get::<NotificationList>("/v1/notifications")
            .notifications
    }

    fn set_webhook(&self, url: &str) {
        let (status, v) = self
            .balancer
            .call(
                "PUT",
                &format!("/v1/pools/{POOL}/webhook"),
                &self.token,
                Some(serde_json::json!({"url": url, "secret": SECRET})),
            )
            .expect("put webhook");
        assert_eq!(status, 200, "{v}");
        assert!(!v.to_string().contains(SECRET));
    }

    fn route_nodes(&self, n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|_| {
                self.get::<RouteDecision>(&format!("/v1/pools/{POOL}/route"))
                    .node
            })
            .collect()
    }

    /// Runs of `probe` version `version` stored so far, across nodes.
    fn runs(&self, probe: &str, version: u32) -> usize {
        ["n1", "n2", "n3"]
            .iter()
            .flat_map(|n| self.balancer.samples(n).expect("samples"))
            .filter(|s| s.probe == probe && s.version == version)
            .count()
    }
}

/// A balancer, a client with pool `web`, the probes, and agents `n1`..`n3` (`n3`'s
/// address from `n3_address`).
fn cluster(dir: &Path, probes: &[ProbeUpload<'_>], n3_address: String) -> Cluster {
    let balancer = Balancer::start(&dir.join("balancer")).expect("balancer");
    let token = balancer.client_with_pool("acme", POOL).expect("client");
    for p in probes {
        balancer.upload(&token, p).expect("upload");
    }
    let mut agents = Vec::new();
    for (i, address) in [tcp_target(), tcp_target(), n3_address]
        .into_iter()
        .enumerate()
    {
        let node = format!("n{}", i + 1);
        // One agent token per node: a token registers one node.
        let agent_token = balancer.agent_token(&token, &[POOL]).expect("agent token");
        let spec = AgentSpec {
            balancer: balancer.url(),
            token: agent_token,
            node: node.clone(),
            address,
            pools: vec![POOL.into()],
            spool: dir.join(format!("spool-{node}")),
            metrics_port: free_port(),
            extra: [
                "--poll-ms",
                "300",
                "--batch-max-age-ms",
                "100",
                "--retry-max-ms",
                "500",
                "--node-sample-ms",
                "1000",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        };
        agents.push(
            spec.start(&dir.join(format!("agent-{node}.log")))
                .expect("agent"),
        );
    }
    Cluster {
        balancer,
        token,
        agents,
    }
}

#[test]
fn a_version_that_panics_everywhere_is_prompted_once_without_draining_and_a_fix_resolves_it() {
    let dir = test_dir("rel-panic");
    let rx = receiver(0);
    let c = cluster(
        dir.path(),
        &[
            upload("tcp", TCP_CONNECT, 300, &[("attempts", "1")]),
            upload("p", MISBEHAVE, 300, &[("mode", "ok")]),
        ],
        tcp_target(),
    );
    c.set_webhook(&rx.url());
    wait_for(
        Duration::from_secs(60),
        "version 1 running on every node",
        || {
            ["n1", "n2", "n3"]
                .iter()
                .all(|n| {
                    c.balancer
                        .samples(n)
                        .expect("samples")
                        .iter()
                        .filter(|s| s.probe == "p" && s.outcome == "ok")
                        .count()
                        >= 3
                })
                .then_some(())
        },
    )
    .expect("v1 runs");
    let before = c.route_nodes(60);
    assert_eq!(before.len(), 3, "{before:?}");

    // Version 2 panics on every run.
    let (v2, _) = c
        .balancer
        .upload(&c.token, &upload("p", MISBEHAVE, 300, &[("mode", "panic")]))
        .expect("upload v2");
    let uploaded = std::time::Instant::now();
    wait_for(Duration::from_secs(60), "needs_update", || {
        (c.probe("p").reliability.state == ProbeState::NeedsUpdate).then_some(())
    })
    .expect("needs_update");
    let runs_then = c.runs("p", v2);
    eprintln!(
        "needs_update {:?} after the upload, {runs_then} runs of v{v2} stored by then",
        uploaded.elapsed()
    );
    // 4 runs decide it (the Wilson lower end of 4/4 is 0.51); agents run in parallel and
    // report in batches, so a few more may be stored by the time we look.
    assert!((4..=15).contains(&runs_then), "{runs_then} runs of v{v2}");
    let d = c.probe("p");
    assert!(d.reliability.excluded);

    let first = wait_for(Duration::from_secs(20), "the webhook", || {
        rx.received().first().cloned()
    })
    .expect("webhook");
    // Keep failing for a while: still exactly one prompt.
    std::thread::sleep(Duration::from_secs(3));
    let got = rx.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(first.signature_ok);
    let n = &first.body;
    assert_eq!(
        (n.kind, n.probe.as_str(), n.version),
        (NotificationKind::NeedsUpdate, "p", v2)
    );
    assert!(
        n.evidence.outcomes.get("trap").copied().unwrap_or(0) >= 4,
        "{n:?}"
    );
    assert!(!n.evidence.nodes_affected.is_empty());
    assert!(n.evidence.failing_since_ms.is_some());
    assert!(
        n.evidence
            .examples
            .iter()
            .any(|e| e.message.contains("panic") || e.stderr.contains("panic")),
        "{:?}",
        n.evidence.examples
    );
    assert_eq!(c.notifications().len(), 1);

    // Routing is unchanged: every node still chosen, none drained.
    let after = c.route_nodes(60);
    assert_eq!(after, before);
    let nodes: PoolNodes = c.get(&format!("/v1/pools/{POOL}/nodes"));
    for node in &nodes.nodes {
        let state = node.assessment.as_ref().map(|a| a.state);
        assert_ne!(state, Some(plb_api::NodeState::Unhealthy), "{}", node.node);
    }

    // A fixed version resolves it.
    let (v3, _) = c
        .balancer
        .upload(
            &c.token,
            &upload("p", MISBEHAVE, 300, &[("mode", "ok"), ("fixed", "yes")]),
        )
        .expect("upload v3");
    let fixed = std::time::Instant::now();
    wait_for(Duration::from_secs(60), "resolved", || {
        (c.probe("p").reliability.state == ProbeState::Reliable).then_some(())
    })
    .expect("resolved");
    eprintln!(
        "resolved {:?} after the fixed upload, {} runs of v{v3}",
        fixed.elapsed(),
        c.runs("p", v3)
    );
    let all = c.notifications();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (all[1].kind, all[1].version, all[1].resolves),
        (NotificationKind::Resolved, v3, Some(first.body.id))
    );
    let second = wait_for(Duration::from_secs(20), "the resolved webhook", || {
        rx.received().get(1).cloned()
    })
    .expect("resolved webhook");
    assert!(second.signature_ok);
    assert_eq!(second.body.kind, NotificationKind::Resolved);
    assert_eq!(rx.received().len(), 2);
    drop(c.agents);
}

#[test]
fn a_probe_unhealthy_on_one_node_drains_that_node_and_stays_reliable() {
    let dir = test_dir("rel-one-node");
    let c = cluster(
        dir.path(),
        &[
            upload("tcp", TCP_CONNECT, 300, &[("attempts", "1")]),
            upload("trivial", TRIVIAL, 300, &[]),
        ],
        dead_address(),
    );
    wait_for(
        Duration::from_secs(60),
        "n3 failing and the others passing",
        || {
            let unhealthy = c
                .balancer
                .samples("n3")
                .expect("samples")
                .iter()
                .filter(|s| s.probe == "tcp" && s.outcome == "unhealthy")
                .count();
            let ok = ["n1", "n2"].iter().all(|n| {
                c.balancer
                    .samples(n)
                    .expect("samples")
                    .iter()
                    .filter(|s| s.probe == "tcp" && s.outcome == "ok")
                    .count()
                    >= 10
            });
            (unhealthy >= 10 && ok).then_some(())
        },
    )
    .expect("runs");
    std::thread::sleep(Duration::from_millis(500));
    let d = c.probe("tcp");
    assert_eq!(d.reliability.state, ProbeState::Reliable, "{d:?}");
    let ev = d.reliability.evidence.expect("evidence");
    assert_eq!(ev.probe_failures, 0, "{ev:?}");
    assert!(ev.node_failures >= 10, "{ev:?}");
    assert!(c.notifications().is_empty());
    let nodes: PoolNodes = c.get(&format!("/v1/pools/{POOL}/nodes"));
    let n3 = nodes.nodes.iter().find(|n| n.node == "n3").expect("n3");
    assert_eq!(
        n3.assessment.as_ref().map(|a| a.state),
        Some(plb_api::NodeState::Unhealthy)
    );
    let chosen = c.route_nodes(60);
    assert!(!chosen.contains("n3"), "{chosen:?}");
    assert_eq!(chosen.len(), 2, "{chosen:?}");
    drop(c.agents);
}

#[test]
fn webhooks_retry_while_the_receiver_is_down_and_none_is_lost_across_a_restart() {
    let dir = test_dir("rel-retry");
    let mut c = cluster(
        dir.path(),
        &[
            upload("trivial", TRIVIAL, 300, &[]),
            upload("p", MISBEHAVE, 300, &[("mode", "panic")]),
        ],
        tcp_target(),
    );
    let port = free_port();
    c.set_webhook(&format!("http://127.0.0.1:{port}/hook"));
    wait_for(Duration::from_secs(60), "two failed attempts", || {
        let d: WebhookDeliveries = c.get(&format!("/v1/pools/{POOL}/webhook/deliveries"));
        d.deliveries.first().filter(|d| d.log.len() >= 2).cloned()
    })
    .expect("attempts");
    c.balancer.stop().expect("stop");
    let rx = receiver(port);
    c.balancer.restart().expect("restart");
    let delivered = wait_for(
        Duration::from_secs(60),
        "delivery after the restart",
        || {
            let d: WebhookDeliveries = c.get(&format!("/v1/pools/{POOL}/webhook/deliveries"));
            d.deliveries
                .first()
                .filter(|d| d.status == "delivered")
                .cloned()
        },
    )
    .expect("delivered");
    assert!(delivered.log.len() >= 3, "{delivered:?}");
    assert!(
        delivered.log[..delivered.log.len() - 1]
            .iter()
            .all(|a| a.error.is_some())
    );
    std::thread::sleep(Duration::from_secs(2));
    let got = rx.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].signature_ok);
    assert_eq!(got[0].delivery, delivered.id.to_string());
    assert_eq!(got[0].body.kind, NotificationKind::NeedsUpdate);
    // The restart raised nothing again.
    assert_eq!(c.notifications().len(), 1);
    assert_eq!(c.probe("p").reliability.state, ProbeState::NeedsUpdate);
    drop(c.agents);
}
