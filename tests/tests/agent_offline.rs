//! The agent as a process with no balancer reachable: it comes up, samples its node,
//! keeps every sample in its spool across a clean stop and across `kill -9`, and a
//! second agent cannot take the same spool.
use std::time::Duration;

use plb_testkit::{free_port, metric_sum, wait_for};
use plb_tests::cluster::AgentSpec;

fn spec(spool: &std::path::Path) -> AgentSpec {
    AgentSpec {
        // Nothing listens there: the balancer is down for the whole test.
        balancer: format!("http://127.0.0.1:{}", free_port()),
        token: "t".into(),
        node: "n1".into(),
        address: "127.0.0.1:9".into(),
        pools: vec!["web".into(), "api".into()],
        spool: spool.to_path_buf(),
        metrics_port: free_port(),
        extra: [
            "--node-sample-ms",
            "200",
            "--retry-max-ms",
            "300",
            "--shutdown-grace-ms",
            "1000",
        ]
        .map(String::from)
        .to_vec(),
    }
}

#[test]
fn samples_wait_in_the_spool_across_a_clean_stop_and_kill_9() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = dir.path().join("spool");
    let log = dir.path().join("agent.log");
    let s = spec(&spool);
    let mut agent = s.start(&log).expect("agent");

    // The node sampler reports for both pools; nothing can be sent.
    let m = wait_for(
        Duration::from_secs(10),
        "10 spooled samples and a failed report",
        || {
            s.metrics().ok().filter(|m| {
                metric_sum(m, "plb_agent_spool_samples", &[]) >= 10.0
                    && metric_sum(m, "plb_agent_report_failures_total", &[]) >= 1.0
                    && metric_sum(m, "plb_agent_samples_spooled_total", &[]) >= 10.0
            })
        },
    )
    .expect("spooled");
    assert_eq!(metric_sum(&m, "plb_agent_samples_sent_total", &[]), 0.0);
    assert!(metric_sum(&m, "plb_agent_spool_bytes", &[]) > 0.0);

    // A second agent on the same spool is refused.
    let mut other = spec(&spool);
    other.metrics_port = free_port();
    let err = other.start(&dir.path().join("other.log"));
    assert!(err.is_err(), "a second agent took the spool");
    let other_log = std::fs::read_to_string(dir.path().join("other.log")).unwrap_or_default();
    assert!(other_log.contains("in use by another agent"), "{other_log}");

    // Clean stop: exits 0 within its grace; the samples stay spooled.
    let status = agent.terminate(Duration::from_secs(10)).expect("terminate");
    assert!(status.success(), "{status}; log:\n{}", agent.log_tail(3000));
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(
        log_text.contains("unsent samples stay in the spool"),
        "{log_text}"
    );

    let kept = 12.0_f64.max(metric_sum(&m, "plb_agent_spool_samples", &[]));
    let mut agent = s.start(&log).expect("restart");
    // The restarted agent sees what was spooled before and adds its own samples.
    let before_kill = wait_for(
        Duration::from_secs(10),
        "the restarted agent to add to its spool",
        || {
            s.metrics()
                .ok()
                .filter(|m| metric_sum(m, "plb_agent_samples_taken_total", &[]) >= 4.0)
        },
    )
    .map(|m| metric_sum(&m, "plb_agent_spool_samples", &[]))
    .expect("spool kept across a clean restart");
    assert!(before_kill >= kept + 4.0, "{before_kill} < {kept} + 4");
    agent.kill9();

    let mut agent = s.start(&log).expect("restart after kill -9");
    let after = s.metrics().expect("metrics");
    assert!(
        metric_sum(&after, "plb_agent_spool_samples", &[]) >= before_kill,
        "samples lost across kill -9: {} < {before_kill}",
        metric_sum(&after, "plb_agent_spool_samples", &[])
    );
    agent.terminate(Duration::from_secs(10)).expect("terminate");
    if std::env::var_os("PLB_TEST_KEEP").is_some() {
        std::fs::copy(&log, "/tmp/agent_offline.log").expect("copy log");
    }
}
