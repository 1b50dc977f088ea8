//! An agent given two balancer replicas (`plb agent --balancer A,B`) on one PostgreSQL
//! database (Debian's PostgreSQL 15 in a temporary directory, `scripts/pg-temp.sh`):
//! when the replica it reports to is killed (`kill -9`), its reports move to the other
//! one and nothing it took is lost or stored twice. Real processes: two `plb balancer`
//! replicas and one `plb agent` with its node sampler every 100 ms.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use plb_testkit::{metric_sum, now_ms, test_dir, wait_for};
use plb_tests::cluster::{AgentSpec, Balancer, pg_samples, shared_pg_database, stop_agent_flushed};

const POOL: &str = "web";
const NODE: &str = "n1";

fn stored(rt: &tokio::runtime::Runtime, db: &str, node: &str) -> Vec<(String, i64)> {
    pg_samples(rt, db, node).expect("the database answers")
}

#[test]
fn an_agent_moves_to_the_next_replica_when_its_balancer_dies() {
    let started = Instant::now();
    let dir = test_dir(module_path!());
    let (rt, db) = shared_pg_database().expect("a database on PostgreSQL (scripts/pg-temp.sh)");
    let mut a = Balancer::start_replica(&dir.path().join("a"), &db, "a").expect("replica a");
    let b = Balancer::start_replica(&dir.path().join("b"), &db, "b").expect("replica b");
    let client = a.client_with_pool("acme", POOL).expect("client");
    let agent = AgentSpec::sampling(
        format!("{},{}", a.url(), b.url()),
        a.agent_token(&client, &[POOL]).expect("agent token"),
        NODE,
        POOL,
        dir.path(),
    );
    let mut proc = agent.start(&dir.path().join("agent.log")).expect("agent");

    // Reports reach replica a first.
    wait_for(Duration::from_secs(15), "samples stored through a", || {
        (stored(&rt, &db, NODE).len() >= 10).then_some(())
    })
    .expect("samples through a");
    let m = agent.metrics().expect("agent metrics");
    assert_eq!(metric_sum(&m, "plb_agent_balancer_index", &[]), 0.0);

    // Kill a; the agent's next failed call moves it to b.
    a.kill9().expect("kill a");
    let killed_at = now_ms();
    wait_for(
        Duration::from_secs(15),
        "a sample taken after the kill stored",
        || {
            stored(&rt, &db, NODE)
                .iter()
                .any(|(_, t)| *t > killed_at + 1_000)
                .then_some(())
        },
    )
    .expect("reports through b");
    let moved_after_ms = now_ms() - killed_at;
    std::thread::sleep(Duration::from_secs(2));
    let m = agent.metrics().expect("agent metrics");
    assert_eq!(metric_sum(&m, "plb_agent_balancer_index", &[]), 1.0);
    assert!(metric_sum(&m, "plb_agent_balancer_switches_total", &[]) >= 1.0);

    // Stop the agent: it flushes what is left to b. Nothing lost, nothing twice.
    stop_agent_flushed(&mut proc).expect("the agent stops and has sent everything");
    let taken = metric_sum(&m, "plb_agent_samples_taken_total", &[]);
    let rows = stored(&rt, &db, NODE);
    let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "a sample stored twice");
    assert!(
        rows.len() as f64 >= taken,
        "{} stored of {taken} taken (read before the stop)",
        rows.len()
    );
    // No gap in the node sampler's series around the kill (100 ms apart, so a gap
    // longer than a second means samples were lost).
    let mut times: Vec<i64> = rows.iter().map(|r| r.1).collect();
    times.sort_unstable();
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(worst < 1_000, "a gap of {worst} ms in the stored samples");
    eprintln!(
        "{} samples stored ({taken} taken before the stop), reports through b {moved_after_ms} ms \
         after the kill, longest gap between stored samples {worst} ms; wall {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    drop(b);
}
