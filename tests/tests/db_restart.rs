//! The balancer's PostgreSQL restarts while an agent reports (issue 16): the balancer
//! answers reports with errors while the database is down, the agent keeps its samples
//! in its spool and resends them, and once the database is back every sample arrives,
//! none twice. Real processes: Debian's PostgreSQL 15 (`scripts/pg-temp.sh`, stopped
//! and started with `pg_ctl`), one `plb balancer` on it and one `plb agent` with its node
//! sampler every 100 ms.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use plb_testkit::{PgServer, metric_sum, now_ms, test_dir, wait_for};
use plb_tests::cluster::{AgentSpec, Balancer, pg_samples, stop_agent_flushed};

const POOL: &str = "web";
const NODE: &str = "n1";
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(4);

fn stored(rt: &tokio::runtime::Runtime, db: &str, node: &str) -> Option<Vec<(String, i64)>> {
    pg_samples(rt, db, node)
}

#[test]
fn samples_spool_through_a_database_restart_and_arrive_once() {
    let started = Instant::now();
    let dir = test_dir(module_path!());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A server of its own: this test stops it.
    let pg = PgServer::start().expect("PostgreSQL (scripts/pg-temp.sh)");
    let db = rt.block_on(pg.create_database()).expect("a test database");
    let mut balancer =
        Balancer::start_replica(&dir.path().join("balancer"), &db, "a").expect("balancer");
    let client = balancer.client_with_pool("acme", POOL).expect("client");
    let agent = AgentSpec::sampling(
        balancer.url(),
        balancer.agent_token(&client, &[POOL]).expect("agent token"),
        NODE,
        POOL,
        dir.path(),
    );
    let mut proc = agent.start(&dir.path().join("agent.log")).expect("agent");
    wait_for(Duration::from_secs(15), "samples stored", || {
        stored(&rt, &db, NODE).filter(|s| s.len() >= 10).map(|_| ())
    })
    .expect("samples before the restart");

    pg.stop_server().expect("stop PostgreSQL");
    let down_at = now_ms();
    std::thread::sleep(OUTAGE);
    let during = agent.metrics().expect("agent metrics");
    pg.start_server().expect("start PostgreSQL again");
    let up_at = now_ms();
    let failures = metric_sum(&during, "plb_agent_report_failures_total", &[]);
    assert!(
        failures >= 1.0,
        "no report failed while the database was down: the test did not test"
    );

    // Samples taken while it was down arrive after it is back.
    wait_for(
        Duration::from_secs(30),
        "the outage's samples stored",
        || {
            stored(&rt, &db, NODE)
                .filter(|s| s.iter().any(|(_, t)| *t > up_at + 500))
                .map(|_| ())
        },
    )
    .expect("samples after the restart");
    let arrived_after_ms = now_ms() - up_at;
    let m = agent.metrics().expect("agent metrics");
    stop_agent_flushed(&mut proc).expect("the agent stops and has sent everything");
    let rows = stored(&rt, &db, NODE).expect("the database answers");
    balancer
        .stop()
        .expect("the balancer survived the outage and stops cleanly");

    let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "a sample stored twice");
    let taken = metric_sum(&m, "plb_agent_samples_taken_total", &[]);
    assert!(
        rows.len() as f64 >= taken,
        "{} stored of {taken} taken (read before the stop)",
        rows.len()
    );
    // The node sampler's series has no hole where the database was down.
    let outage: Vec<i64> = rows
        .iter()
        .map(|r| r.1)
        .filter(|t| (down_at..up_at).contains(t))
        .collect();
    assert!(
        outage.len() as i64 >= (up_at - down_at) / 100 * 8 / 10,
        "{} samples taken during {} ms of outage stored",
        outage.len(),
        up_at - down_at
    );
    eprintln!(
        "database down {} ms; {failures} failed report attempts meanwhile; {} samples stored \
         ({} taken during the outage), all {taken} taken before the stop, none twice; the \
         outage's samples arrived {arrived_after_ms} ms after the database was back; wall \
         {:.1} s",
        up_at - down_at,
        rows.len(),
        outage.len(),
        started.elapsed().as_secs_f64()
    );
}
