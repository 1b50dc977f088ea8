//! End-to-end tests of the node agent with a real balancer (`plb balancer` with a SQLite
//! file in a tempdir), a real agent (`plb agent`), and the sample probes. Every sample
//! is counted in the balancer's SQLite file.
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use plb_probe_artifacts::{MISBEHAVE, TCP_CONNECT, TRIVIAL};
use plb_testkit::{Proc, free_port, metric_sum, now_ms, tcp_target, test_dir, wait_for};
use plb_tests::cluster::{AgentSpec, Balancer, ModuleProxy, ProbeUpload, StoredSample};

const POOL: &str = "web";

fn upload<'a>(
    name: &'a str,
    wasm: &'a [u8],
    interval_ms: u64,
    timeout_ms: u32,
    config: &'a [(&'a str, &'a str)],
) -> ProbeUpload<'a> {
    ProbeUpload::quick(POOL, name, wasm, interval_ms, timeout_ms, config)
}

struct Cluster {
    balancer: Balancer,
    client_token: String,
    agent: AgentSpec,
}

fn cluster(dir: &Path, node: &str, extra: &[&str]) -> Cluster {
    let balancer = Balancer::start(&dir.join("balancer")).expect("balancer");
    let client_token = balancer
        .client_with_pool("acme", POOL)
        .expect("client and pool");
    let token = balancer
        .agent_token(&client_token, &[POOL])
        .expect("agent token");
    let mut flags = vec![
        "--poll-ms",
        "500",
        "--batch-max-age-ms",
        "200",
        "--retry-max-ms",
        "1000",
    ];
    if !extra.contains(&"--node-sample-ms") {
        flags.extend(["--node-sample-ms", "1000"]);
    }
    flags.extend_from_slice(extra);
    let agent = AgentSpec {
        balancer: balancer.url(),
        token,
        node: node.into(),
        address: tcp_target(),
        pools: vec![POOL.into()],
        spool: dir.join("spool"),
        metrics_port: free_port(),
        extra: flags.into_iter().map(String::from).collect(),
    };
    Cluster {
        balancer,
        client_token,
        agent,
    }
}

fn by_probe(samples: &[StoredSample]) -> BTreeMap<String, Vec<StoredSample>> {
    let mut m: BTreeMap<String, Vec<StoredSample>> = BTreeMap::new();
    for s in samples {
        m.entry(s.probe.clone()).or_default().push(s.clone());
    }
    for v in m.values_mut() {
        v.sort_by_key(|s| s.taken_at_ms);
    }
    m
}

/// Largest gap between consecutive samples taken in `[from, to]`.
fn max_gap(samples: &[StoredSample], from: i64, to: i64) -> i64 {
    let t: Vec<i64> = samples
        .iter()
        .map(|s| s.taken_at_ms)
        .filter(|t| (from..=to).contains(t))
        .collect();
    t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(i64::MAX)
}

/// No sample stored twice: unique ids, and no two samples of one probe at one instant.
fn assert_exactly_once(samples: &[StoredSample]) {
    let ids: HashSet<&str> = samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), samples.len(), "a sample id stored twice");
    let runs: HashSet<(&str, &str, i64)> = samples
        .iter()
        .map(|s| (s.pool.as_str(), s.probe.as_str(), s.taken_at_ms))
        .collect();
    assert_eq!(
        runs.len(),
        samples.len(),
        "one run stored twice under different ids"
    );
}

fn wait_spool_empty(agent: &AgentSpec, within: Duration) {
    wait_for(within, "the agent's spool to drain", || {
        agent.metrics().ok().filter(|m| {
            metric_sum(m, "plb_agent_spool_samples", &[]) == 0.0
                && metric_sum(m, "plb_agent_samples_sent_total", &[]) > 0.0
        })
    })
    .expect("spool drained");
}

#[test]
fn samples_arrive_at_their_intervals_and_changes_reach_the_agent_within_a_poll() {
    let dir = test_dir(module_path!());
    let c = cluster(dir.path(), "n-sched", &[]);
    let b = &c.balancer;
    b.upload(
        &c.client_token,
        &upload("tcp", TCP_CONNECT, 1000, 1000, &[("attempts", "1")]),
    )
    .expect("upload tcp");
    b.upload(&c.client_token, &upload("triv", TRIVIAL, 700, 1000, &[]))
        .expect("upload triv");
    let mut agent = c.agent.start(&dir.path().join("agent.log")).expect("agent");

    std::thread::sleep(Duration::from_secs(7));
    let seen = by_probe(&b.samples("n-sched").expect("samples"));
    for (probe, interval) in [("tcp", 1000), ("triv", 700), ("node", 1000)] {
        let s = seen
            .get(probe)
            .unwrap_or_else(|| panic!("no samples of {probe}: {seen:?}"));
        let (first, last) = (s[0].taken_at_ms, s[s.len() - 1].taken_at_ms);
        // One sample per interval (±10 % jitter each) between the first and the last.
        let expected = (last - first) / interval + 1;
        assert!(
            s.len() as i64 >= expected - 1 && s.len() as i64 <= expected + 1,
            "{probe}: {} samples over {} ms",
            s.len(),
            last - first
        );
        assert!(s.len() >= 4, "{probe}: only {} samples in 7 s", s.len());
        let gap = max_gap(s, first, last);
        assert!(
            gap <= interval * 12 / 10 + 250,
            "{probe}: gap of {gap} ms at a {interval} ms interval"
        );
        assert!(
            s.iter().all(|s| s.outcome == "ok"),
            "{probe}: {:?}",
            s.iter()
                .map(|s| (&s.outcome, &s.message))
                .collect::<Vec<_>>()
        );
    }

    // Shorten tcp's interval and upload a new version of triv; each change exists from
    // the moment its upload returns.
    let (tcp_v, _) = b
        .upload(
            &c.client_token,
            &upload("tcp", TCP_CONNECT, 300, 1000, &[("attempts", "1")]),
        )
        .expect("re-upload tcp");
    let changed_at = now_ms();
    let (triv_v, _) = b
        .upload(
            &c.client_token,
            &upload("triv", MISBEHAVE, 700, 1000, &[("mode", "ok")]),
        )
        .expect("new triv");
    let uploaded_at = now_ms();
    assert!(tcp_v >= 2 && triv_v >= 2);
    std::thread::sleep(Duration::from_secs(4));
    let seen = by_probe(&b.samples("n-sched").expect("samples"));
    let tcp: Vec<_> = seen["tcp"]
        .iter()
        .filter(|s| s.version == tcp_v)
        .cloned()
        .collect();
    let first = tcp
        .first()
        .expect("samples at the new interval")
        .taken_at_ms;
    // The agent learns within one poll (500 ms ± 10 %); the next run comes at most one
    // new interval (± 10 %) after that; 250 ms of slack for a busy machine.
    assert!(
        first - changed_at <= 550 + 330 + 250,
        "new interval reached the agent after {} ms",
        first - changed_at
    );
    let gap = max_gap(&tcp, first, i64::MAX);
    assert!(
        gap <= 300 * 12 / 10 + 200,
        "gap of {gap} ms at the new 300 ms interval"
    );
    assert!(tcp.len() >= 8, "{} samples in ~3 s at 300 ms", tcp.len());
    let triv: Vec<_> = seen["triv"]
        .iter()
        .filter(|s| s.version == triv_v)
        .collect();
    let first = triv.first().expect("the new version ran").taken_at_ms;
    // Within one poll the agent has it; it downloads, verifies and compiles the new
    // module, and runs it at the probe's next turn (one interval ± 10 %).
    assert!(
        first - uploaded_at <= 550 + 770 + 600,
        "new version ran {} ms after upload",
        first - uploaded_at
    );
    assert!(triv.iter().all(|s| s.outcome == "ok"));
    assert!(
        seen["triv"]
            .iter()
            .all(|s| s.taken_at_ms < first || s.version == triv_v),
        "old version ran after the new one"
    );

    assert_exactly_once(&b.samples("n-sched").expect("samples"));
    assert!(
        agent
            .terminate(Duration::from_secs(15))
            .expect("stop")
            .success()
    );
}

#[test]
fn samples_taken_while_the_balancer_is_down_or_the_agent_killed_are_stored_exactly_once() {
    let dir = test_dir(module_path!());
    let node = "n-outage";
    let mut c = cluster(dir.path(), node, &[]);
    c.balancer
        .upload(
            &c.client_token,
            &upload("tcp", TCP_CONNECT, 500, 1000, &[("attempts", "1")]),
        )
        .expect("upload");
    let log = dir.path().join("agent.log");
    let mut agent = c.agent.start(&log).expect("agent");
    std::thread::sleep(Duration::from_secs(3));

    // The balancer is down for 10 s.
    c.balancer.stop().expect("stop balancer");
    let down_at = now_ms();
    std::thread::sleep(Duration::from_secs(10));
    let up_at = now_ms();
    c.balancer.restart().expect("restart balancer");
    wait_spool_empty(&c.agent, Duration::from_secs(15));
    let m = c.agent.metrics().expect("metrics");
    assert!(
        metric_sum(&m, "plb_agent_samples_spooled_total", &[]) >= 20.0,
        "{m:?}"
    );

    let seen = by_probe(&c.balancer.samples(node).expect("samples"));
    let tcp = &seen["tcp"];
    let gap_count = tcp
        .iter()
        .filter(|s| (down_at..=up_at).contains(&s.taken_at_ms))
        .count();
    assert!(
        (18..=22).contains(&gap_count),
        "{gap_count} tcp samples stored from the 10 s gap at 500 ms"
    );
    let gap = max_gap(tcp, tcp[0].taken_at_ms, i64::MAX);
    assert!(
        gap <= 500 * 12 / 10 + 250,
        "a hole of {gap} ms in the tcp samples"
    );
    let node_samples = seen["node"]
        .iter()
        .filter(|s| (down_at..=up_at).contains(&s.taken_at_ms))
        .count();
    eprintln!(
        "outage of {} ms: {gap_count} tcp and {node_samples} node samples from it stored; largest tcp gap {gap} ms",
        up_at - down_at
    );
    assert!(
        (9..=11).contains(&node_samples),
        "{node_samples} node samples from the gap"
    );

    // Down again; samples pile up in the spool; the agent is killed with kill -9.
    c.balancer.stop().expect("stop balancer");
    std::thread::sleep(Duration::from_secs(3));
    let before = c.agent.metrics().expect("metrics");
    assert!(metric_sum(&before, "plb_agent_spool_samples", &[]) >= 6.0);
    agent.kill9();
    let killed_at = now_ms();
    c.balancer.restart().expect("restart balancer");
    let mut agent = c.agent.start(&log).expect("agent after kill -9");
    let restarted_at = now_ms();
    wait_spool_empty(&c.agent, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        agent
            .terminate(Duration::from_secs(15))
            .expect("stop agent")
            .success()
    );
    c.balancer.stop().expect("stop balancer");

    let all = c.balancer.samples(node).expect("samples");
    assert_exactly_once(&all);
    let seen = by_probe(&all);
    let tcp = &seen["tcp"];
    // Continuous up to the kill and from the restart on: nothing spooled was lost.
    let before_kill = max_gap(tcp, tcp[0].taken_at_ms, killed_at);
    assert!(
        before_kill <= 500 * 12 / 10 + 250,
        "hole of {before_kill} ms before the kill"
    );
    let after = max_gap(tcp, restarted_at, i64::MAX);
    assert!(
        after <= 500 * 12 / 10 + 250,
        "hole of {after} ms after the restart"
    );
    let last_before = tcp
        .iter()
        .rev()
        .find(|s| s.taken_at_ms <= killed_at)
        .expect("before kill")
        .taken_at_ms;
    assert!(
        killed_at - last_before <= 500 * 12 / 10 + 250,
        "spooled samples before the kill are missing"
    );
    // Every sample the first process took is stored once: none lost, none doubled.
    let stored_before_kill = all.iter().filter(|s| s.taken_at_ms <= killed_at).count() as f64;
    let taken = metric_sum(&before, "plb_agent_samples_taken_total", &[]);
    assert!(
        stored_before_kill >= taken && stored_before_kill <= taken + 3.0,
        "stored {stored_before_kill}, taken {taken}"
    );
    // The clean stop says it left nothing behind.
    let text = std::fs::read_to_string(&log).expect("log");
    let last_stop: serde_json::Value = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "agent stopped")
        .expect("stop line");
    assert_eq!(last_stop["fields"]["left_in_spool"], 0, "{last_stop}");
}

#[test]
fn misbehaving_probes_do_not_disturb_a_good_one_or_the_agents_memory() {
    let dir = test_dir(module_path!());
    let node = "n-bad";
    let c = cluster(dir.path(), node, &[]);
    let b = &c.balancer;
    b.upload(
        &c.client_token,
        &upload("tcp", TCP_CONNECT, 500, 1000, &[("attempts", "1")]),
    )
    .expect("upload");
    b.upload(
        &c.client_token,
        &upload("spin", MISBEHAVE, 1000, 300, &[("mode", "spin")]),
    )
    .expect("spin");
    b.upload(
        &c.client_token,
        &upload("alloc", MISBEHAVE, 1000, 2000, &[("mode", "alloc")]),
    )
    .expect("alloc");
    b.upload(
        &c.client_token,
        &upload(
            "sleep",
            MISBEHAVE,
            1000,
            300,
            &[("mode", "sleep"), ("ms", "60000")],
        ),
    )
    .expect("sleep");
    let mut fuel = upload("fuel", MISBEHAVE, 1000, 5000, &[("mode", "spin")]);
    fuel.fuel = Some(5_000_000);
    b.upload(&c.client_token, &fuel).expect("fuel");
    let mut agent: Proc = c.agent.start(&dir.path().join("agent.log")).expect("agent");

    let mut rss = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        rss.push(agent.rss_bytes().expect("rss"));
    }
    let seen = by_probe(&b.samples(node).expect("samples"));
    let tcp = &seen["tcp"];
    assert!(
        tcp.len() >= 14,
        "good probe: {} samples in 10 s at 500 ms",
        tcp.len()
    );
    assert!(tcp.iter().all(|s| s.outcome == "ok"));
    let gap = max_gap(tcp, tcp[0].taken_at_ms, i64::MAX);
    assert!(
        gap <= 500 * 12 / 10 + 300,
        "good probe's schedule slipped by a gap of {gap} ms"
    );
    for (probe, class) in [
        ("spin", "timeout"),
        ("alloc", "memory_limit"),
        ("sleep", "timeout"),
        ("fuel", "fuel_exhausted"),
    ] {
        let s = seen
            .get(probe)
            .unwrap_or_else(|| panic!("no {probe} samples"));
        assert!(s.len() >= 5, "{probe}: {} samples", s.len());
        assert!(
            s.iter().all(|s| s.outcome == class),
            "{probe}: {:?}",
            s.iter().map(|s| &s.outcome).collect::<Vec<_>>()
        );
        assert!(s.iter().all(|s| !s.message.is_empty()));
    }
    // Bounded: the memory bomb's 32 MiB per run is given back; no growth run after run.
    let max = *rss.iter().max().expect("rss");
    let warm = rss[4];
    let last = *rss.last().expect("rss");
    eprintln!(
        "agent RSS MiB over 10 s: {:?}",
        rss.iter().map(|r| r >> 20).collect::<Vec<_>>()
    );
    assert!(max < 400 << 20, "agent RSS peaked at {} MiB", max >> 20);
    assert!(
        last <= warm + (48 << 20),
        "agent RSS grew from {} to {} MiB",
        warm >> 20,
        last >> 20
    );
    assert!(
        agent
            .terminate(Duration::from_secs(15))
            .expect("stop")
            .success()
    );
}

#[test]
fn a_module_whose_bytes_do_not_match_its_sha256_is_refused_and_reported() {
    let dir = test_dir(module_path!());
    let node = "n-hash";
    let mut c = cluster(dir.path(), node, &["--node-sample-ms", "0"]);
    let proxy = ModuleProxy::start(&c.balancer.url()).expect("proxy");
    proxy.set_corrupt(true);
    c.agent.balancer = proxy.url();
    c.balancer
        .upload(
            &c.client_token,
            &upload("tcp", TCP_CONNECT, 300, 1000, &[("attempts", "1")]),
        )
        .expect("upload");
    let mut agent = c.agent.start(&dir.path().join("agent.log")).expect("agent");

    let refused = wait_for(Duration::from_secs(10), "refusal samples", || {
        let s = c.balancer.samples(node).ok()?;
        (s.len() >= 3).then_some(s)
    })
    .expect("reported");
    assert!(proxy.modules_served() >= 1);
    for s in &refused {
        assert_eq!(s.outcome, "invalid", "{s:?}");
        assert!(
            s.message.contains("refused") && s.message.contains("sha256"),
            "{}",
            s.message
        );
        assert_eq!(s.duration_ms, 0.0, "not run");
    }
    let m = c.agent.metrics().expect("metrics");
    assert!(metric_sum(&m, "plb_agent_modules_rejected_total", &[]) >= 1.0);
    assert_eq!(
        metric_sum(&m, "plb_agent_runs_total", &[("outcome", "ok")]),
        0.0
    );

    // Once the bytes are right again, the module is fetched, verified and run.
    proxy.set_corrupt(false);
    wait_for(
        Duration::from_secs(15),
        "an ok sample after the bytes are right",
        || {
            c.balancer
                .samples(node)
                .ok()?
                .into_iter()
                .find(|s| s.outcome == "ok")
        },
    )
    .expect("recovered");
    assert!(
        agent
            .terminate(Duration::from_secs(15))
            .expect("stop")
            .success()
    );
}

/// The value of `field` in the agent's last "agent stopped" log line.
fn stop_field(log: &Path, field: &str) -> i64 {
    let text = std::fs::read_to_string(log).expect("log");
    let line: serde_json::Value = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "agent stopped")
        .expect("stop line");
    line["fields"][field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {line}"))
}

#[test]
fn a_full_spool_drops_the_oldest_samples_and_reports_how_many() {
    let dir = test_dir(module_path!());
    let node = "n-full";
    // A 16 KiB spool holds a few dozen node samples; they come 10 a second.
    let mut c = cluster(
        dir.path(),
        node,
        &["--spool-max-bytes", "16384", "--node-sample-ms", "100"],
    );
    let log = dir.path().join("agent.log");
    let mut agent = c.agent.start(&log).expect("agent");
    std::thread::sleep(Duration::from_secs(1));
    c.balancer.stop().expect("stop balancer");
    let down_at = now_ms();
    wait_for(Duration::from_secs(20), "the spool to overflow", || {
        c.agent
            .metrics()
            .ok()
            .filter(|m| metric_sum(m, "plb_agent_samples_dropped_total", &[]) >= 20.0)
    })
    .expect("overflow");
    let m = c.agent.metrics().expect("metrics");
    assert!(
        metric_sum(&m, "plb_agent_spool_bytes", &[]) <= 16384.0 + 4096.0,
        "{m:?}"
    );
    let up_at = now_ms();
    c.balancer.restart().expect("restart balancer");
    wait_spool_empty(&c.agent, Duration::from_secs(15));
    assert!(
        agent
            .terminate(Duration::from_secs(15))
            .expect("stop agent")
            .success()
    );
    c.balancer.stop().expect("stop balancer");

    let taken = stop_field(&log, "samples_taken");
    let dropped = stop_field(&log, "samples_dropped");
    let stored = c.balancer.samples(node).expect("samples");
    assert_exactly_once(&stored);
    let conn = rusqlite::Connection::open_with_flags(
        c.balancer.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("db");
    let reported: i64 = conn
        .query_row(
            "SELECT dropped_samples FROM nodes WHERE name = ?1",
            [node],
            |r| r.get(0),
        )
        .expect("node row");
    eprintln!(
        "full spool: taken {taken}, stored {}, dropped {dropped}, reported dropped {reported}",
        stored.len()
    );
    assert!(dropped >= 20);
    assert_eq!(
        reported, dropped,
        "the balancer learnt how many were dropped"
    );
    assert_eq!(
        stored.len() as i64 + dropped,
        taken,
        "every sample is stored or counted as dropped"
    );
    // The oldest of the outage were dropped; the newest were kept and sent.
    let in_outage: Vec<i64> = stored
        .iter()
        .map(|s| s.taken_at_ms)
        .filter(|t| (down_at..=up_at).contains(t))
        .collect();
    let newest = *in_outage.last().expect("outage samples kept");
    assert!(up_at - newest <= 300, "the newest samples were kept");
    assert!(
        in_outage[0] - down_at >= 1000,
        "the oldest samples were dropped"
    );
}
