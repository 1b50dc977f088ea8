//! The engine in simulated time: a [`ManualClock`], a real SQLite store in a temporary
//! directory, committed batches and the tick driven by hand (no sleeps): the state
//! machine, capacity fits and their installation, staleness and the expiry of HTTP
//! decisions without feedback.
use std::collections::BTreeMap;
use std::sync::Arc;

use plb_api::{CreatePool, NodeState, Outcome, RegisterRequest, Sample};

use super::task::{self, TaskState};
use super::*;
use crate::ingest::CommittedBatch;
use crate::store::{SqliteOptions, SqliteStore};

pub(super) const T0: i64 = 1_700_000_000_000;

/// An engine on a [`ManualClock`] at [`T0`] over a real SQLite store in a temporary
/// directory, with client `c`, its pool `web` (SLO 200 ms) and the nodes given; the
/// engine task is not running (tests drive batches and ticks by hand).
pub(super) struct Fixture {
    pub(super) _dir: tempfile::TempDir,
    pub(super) store: Arc<dyn Store>,
    pub(super) engine: Arc<Engine>,
    pub(super) clock: Arc<ManualClock>,
    pub(super) rx: mpsc::UnboundedReceiver<Event>,
    pub(super) key: PoolKey,
    pub(super) client_id: i64,
}

async fn fixture(nodes: &[&str]) -> Fixture {
    fixture_with(nodes, EngineConfig::default()).await
}

pub(super) async fn fixture_with(nodes: &[&str], config: EngineConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("plb.db"), SqliteOptions::default()).expect("open"),
    );
    let client_id = store
        .create_client("c".into(), [1; 32], T0)
        .await
        .expect("client");
    store
        .create_pool(
            client_id,
            CreatePool {
                name: "web".into(),
                latency_slo_ms: 200.0,
            },
            T0,
        )
        .await
        .expect("pool");
    for (i, n) in nodes.iter().enumerate() {
        let token = store
            .create_agent_token(client_id, vec!["web".into()], [i as u8 + 2; 32], T0)
            .await
            .expect("token");
        store
            .register_node(
                token,
                client_id,
                RegisterRequest {
                    node: (*n).into(),
                    address: format!("127.0.0.1:{}", 9000 + i),
                    pools: vec!["web".into()],
                    labels: BTreeMap::new(),
                },
                T0,
            )
            .await
            .expect("register");
    }
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::with_clock(
        config,
        Arc::new(Metrics::new()),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .expect("engine");
    let rx = lock(&engine.rx).take().expect("receiver");
    engine.refresh_topology(&store).await.expect("topology");
    Fixture {
        _dir: dir,
        store,
        engine,
        clock,
        rx,
        key: PoolKey {
            client_id,
            pool: "web".into(),
        },
        client_id,
    }
}

fn sample(t_ms: i64, latency: f64) -> Sample {
    Sample {
        id: format!("s{t_ms}"),
        pool: "web".into(),
        probe: "http".into(),
        version: 1,
        taken_at_ms: t_ms,
        outcome: Outcome::Ok,
        metrics: BTreeMap::from([("latency-ms".to_string(), latency)]),
        duration_ms: 1.0,
        fuel_used: None,
        message: String::new(),
        stderr: String::new(),
    }
}

impl Fixture {
    async fn report(&self, st: &mut TaskState, node: &str, latency: f64) {
        let batch = CommittedBatch {
            client_id: self.client_id,
            node_id: 0,
            node: node.into(),
            received_at_ms: self.clock.now_ms(),
            samples: vec![sample(self.clock.now_ms(), latency)],
        };
        task::apply_batch(&self.engine, &self.store, &batch, st).await;
    }

    fn router(&self) -> Arc<PoolRouter> {
        self.engine.pool(&self.key).expect("pool loaded")
    }

    fn state(&self, node: &str) -> NodeState {
        let snap = self.router().snapshot();
        let i = snap.index_of(node).expect("node");
        snap.node(i).expect("view").state
    }
}

#[tokio::test]
async fn the_tick_runs_states_fits_staleness_and_expiry_in_simulated_time() {
    let mut f = fixture(&["a", "b"]).await;
    let mut st = TaskState::default();
    assert_eq!(f.router().snapshot().len(), 2);

    // Both nodes probed once a second for a minute: healthy.
    for k in 0..60 {
        f.report(&mut st, "a", 10.0 + (k % 3) as f64 * 0.1).await;
        f.report(&mut st, "b", 10.0 + (k % 2) as f64 * 0.1).await;
        task::on_tick(&f.engine, &f.store, &mut st).await;
        f.clock.advance(1_000);
    }
    assert_eq!(
        (f.state("a"), f.state("b")),
        (NodeState::Healthy, NodeState::Healthy)
    );

    // b's latency climbs: degrading after `enter_after` crossings, stored as a change.
    let enter = EngineConfig::default().pipeline.node.state.enter_after;
    let mut k = 0;
    while f.state("b") != NodeState::Degrading {
        k += 1;
        assert!(k < 60, "b never turned degrading");
        f.report(&mut st, "a", 10.0).await;
        f.report(&mut st, "b", 10.0 * (1.0 + 0.05 * f64::from(k)))
            .await;
        task::on_tick(&f.engine, &f.store, &mut st).await;
        f.clock.advance(1_000);
    }
    assert!(k >= enter as i32);
    let degrading = f
        .engine
        .node_details(&f.key)
        .remove("b")
        .expect("b")
        .1
        .expect("routing");
    assert!(degrading.degrade_score > 0.5, "{degrading:?}");

    // Feedback through the route API: a capacity fit is started on the tick, runs on
    // a blocking thread, and is installed from the engine's channel.
    // Rounds of 8 decisions, then their feedback, oldest first: the j-th decision a
    // node got in a round was sent with j requests in flight there.
    let router = f.router();
    for _ in 0..60 {
        let nodes: Vec<String> = (0..8)
            .map(|_| {
                router
                    .route_http(&RouteQuery::default(), None)
                    .expect("a node")
                    .decision
                    .node
            })
            .collect();
        let mut seen: BTreeMap<&str, f64> = BTreeMap::new();
        for n in &nodes {
            let j = seen.entry(n.as_str()).or_insert(0.0);
            *j += 1.0;
            router
                .feedback_http(n, 20.0 + 15.0 * *j, true)
                .expect("known");
        }
    }
    task::on_tick(&f.engine, &f.store, &mut st).await;
    let Some(Event::Fitted { key, outcome }) = f.rx.recv().await else {
        panic!("no fit came back");
    };
    task::installed(&f.engine, &key, *outcome, &mut st);
    assert!(st_dirty(&st, &f.key), "the pool's snapshot is rebuilt next");
    f.engine.rebuild(&router, f.clock.now_ms());
    let (model, rows, _) = f.engine.capacity_view(&f.key).expect("pool");
    assert!(rows >= 400, "{rows}");
    let model = model.expect("the fit is installed");
    // latency = 20 + 15 x in flight: the SLO (200 ms) at 12.
    let cap = model.pool_capacity.expect("pool capacity");
    assert!((cap - 12.0).abs() < 0.5, "{model:?}");
    assert_eq!(model.nodes.len(), 2, "{model:?}");
    assert!(
        f.router()
            .snapshot()
            .nodes()
            .iter()
            .all(|v| v.capacity.is_some_and(|c| (c - 12.0).abs() < 1.0)),
        "views carry the capacity"
    );

    // An HTTP decision without feedback is released after the timeout, on the tick.
    router
        .route_http(&RouteQuery::default(), None)
        .expect("a node");
    assert_eq!(router.outstanding(), 1);
    f.clock
        .advance(EngineConfig::default().outstanding_timeout_ms as i64 + 1_000);
    task::on_tick(&f.engine, &f.store, &mut st).await;
    assert_eq!(router.outstanding(), 0);

    // No samples for longer than the stale limit: unknown, and the change is stored.
    assert_eq!(
        (f.state("a"), f.state("b")),
        (NodeState::Unknown, NodeState::Unknown)
    );
    // The engine writes in the background: wait (bounded) for the store's writer.
    let mut stored = Vec::new();
    for _ in 0..200 {
        stored = f
            .store
            .state_changes(f.client_id, "web".into(), 0, None, 100)
            .await
            .expect("read");
        if stored
            .iter()
            .filter(|c| c.change.to == NodeState::Unknown)
            .count()
            == 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let to = |n: &str, s: NodeState| stored.iter().any(|c| c.node == n && c.change.to == s);
    assert!(to("b", NodeState::Degrading), "{stored:?}");
    assert!(
        to("a", NodeState::Unknown) && to("b", NodeState::Unknown),
        "{stored:?}"
    );
}

fn st_dirty(st: &TaskState, key: &PoolKey) -> bool {
    st.is_dirty(key)
}

/// ARCHITECTURE.md: the route decision path never touches the store or waits on the
/// engine task. Here the engine task never runs and the store is closed: routing and
/// feedback still answer (they are synchronous, so a wait would hang this test).
#[tokio::test]
async fn the_route_path_needs_neither_the_store_nor_the_engine_task() {
    let f = fixture(&["a", "b", "c"]).await;
    let router = f.router();
    let Fixture { store, _dir, .. } = f;
    drop(store);
    drop(_dir);
    for _ in 0..1_000 {
        let d = router
            .route_http(&RouteQuery::default(), None)
            .expect("a node");
        router
            .feedback_http(&d.decision.node, 12.0, true)
            .expect("known node");
        let r = router.route(&RouteQuery::default(), &[]).expect("a node");
        router.feedback(&r, 12.0, true);
    }
    assert_eq!(router.outstanding(), 0);
}

/// A probe metric that leads feedback latency earns trust, and the nodes view reports
/// it: node d's metric stands out for a few seconds at a time and its request latency
/// follows two seconds later.
#[tokio::test]
async fn a_probe_metric_that_leads_latency_earns_trust() {
    let f = fixture(&["a", "b", "c", "d"]).await;
    let mut st = TaskState::default();
    let router = f.router();
    assert!(f.engine.metric_trust(&f.key).is_empty());
    let hot = |k: i64| k >= 40 && (k / 5) % 2 == 0;
    for k in 0..120i64 {
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            let wobble = ((k * 7 + i as i64 * 3) % 5) as f64 * 0.1;
            let metric = if *n == "d" && hot(k) {
                30.0
            } else {
                10.0 + wobble
            };
            f.report(&mut st, n, metric).await;
            let slow = *n == "d" && k >= 2 && hot(k - 2);
            for _ in 0..4 {
                let ms = if slow { 90.0 } else { 20.0 + wobble };
                router.feedback_http(n, ms, true).expect("known node");
            }
        }
        task::on_tick(&f.engine, &f.store, &mut st).await;
        f.clock.advance(1_000);
    }
    let trust = f.engine.metric_trust(&f.key);
    let m = trust
        .iter()
        .find(|m| m.metric == "http/latency-ms")
        .unwrap_or_else(|| panic!("reported: {trust:?}"));
    assert!(m.pairs > 10.0 && m.correlation > 0.3, "{m:?}");
    assert!(m.trust > 0.8, "{m:?}");
    assert!(m.reason.contains("stood out in latency 2 s later"), "{m:?}");
}
