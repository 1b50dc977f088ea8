//! Pool demand and the scaling notification through the engine, in simulated time (a
//! [`ManualClock`], a real SQLite store, the tick driven by hand): requests routed are
//! counted per minute from the live `started` counters, and the 15-minute
//! recommendation is announced once when it rises or falls past the node count, never
//! flapping on a demand that wavers around it.
use std::collections::BTreeMap;

use plb_api::{NotificationKind, Outcome, Sample};
use plb_pipeline::DemandConfig;
use plb_predict::DemandParams;

use super::task::{self, TaskState};
use super::tests::{Fixture, T0, fixture_with};
use super::*;
use crate::ingest::CommittedBatch;

const NODES: [&str; 3] = ["a", "b", "c"];

async fn setup() -> Fixture {
    // One node serves 1 request per second at the objective; plan for the mean at full
    // utilisation, so that the node counts are plain arithmetic: 60 requests a minute
    // per node.
    let config = EngineConfig {
        demand: DemandConfig {
            params: DemandParams {
                target_utilisation: 1.0,
                plan_z: 0.0,
                ..DemandParams::default()
            },
            node_capacity_rps: Some(1.0),
            ..DemandConfig::default()
        },
        ..EngineConfig::default()
    };
    let f = fixture_with(&NODES, config).await;
    f.store
        .put_webhook(
            f.client_id,
            "web".into(),
            "http://127.0.0.1:9/hook".into(),
            "0123456789abcdef".into(),
            T0,
        )
        .await
        .expect("webhook");
    f
}

fn sample(t_ms: i64) -> Sample {
    Sample {
        id: format!("s{t_ms}"),
        pool: "web".into(),
        probe: "http".into(),
        version: 1,
        taken_at_ms: t_ms,
        outcome: Outcome::Ok,
        metrics: BTreeMap::from([("latency-ms".to_string(), 10.0)]),
        duration_ms: 1.0,
        fuel_used: None,
        message: String::new(),
        stderr: String::new(),
    }
}

impl Fixture {
    /// One simulated minute: six ticks 10 s apart, every node probed before each, and
    /// `requests` route decisions (with their feedback) spread over them.
    async fn minute(&self, st: &mut TaskState, requests: u32) {
        let router = self.engine.pool(&self.key).expect("pool");
        for k in 0..6 {
            for n in NODES {
                let batch = CommittedBatch {
                    client_id: self.client_id,
                    node_id: 0,
                    node: n.into(),
                    received_at_ms: self.clock.now_ms(),
                    samples: vec![sample(self.clock.now_ms())],
                };
                task::apply_batch(&self.engine, &self.store, &batch, st).await;
            }
            let share = requests / 6 + u32::from(k < requests % 6);
            for _ in 0..share {
                let d = router
                    .route_http(&RouteQuery::default(), None)
                    .expect("a node");
                router
                    .feedback_http(&d.decision.node, 10.0, true)
                    .expect("known node");
            }
            task::on_tick(&self.engine, &self.store, st).await;
            self.clock.advance(10_000);
        }
    }

    /// The scaling notifications stored so far (waits for the background writes).
    async fn notices(&self) -> Vec<plb_api::Notification> {
        let mut last = Vec::new();
        let mut stable = 0;
        for _ in 0..300 {
            let got: Vec<plb_api::Notification> = self
                .store
                .notifications(self.client_id, 0, None, 1000)
                .await
                .expect("read")
                .into_iter()
                .filter(|n| n.kind == NotificationKind::Scaling)
                .collect();
            if got.len() == last.len() {
                stable += 1;
                if stable >= 5 {
                    return got;
                }
            } else {
                stable = 0;
            }
            last = got;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        last
    }
}

fn directions(ns: &[plb_api::Notification]) -> Vec<(String, u32, u32)> {
    ns.iter()
        .map(|n| {
            let s = n.scaling.as_ref().expect("scaling content");
            (s.direction.clone(), s.from_nodes, s.to_nodes)
        })
        .collect()
}

#[tokio::test]
async fn the_scaling_notification_has_hysteresis_in_simulated_time() {
    let s = setup().await;
    let mut st = TaskState::default();
    // Steady 150 requests a minute: 3 nodes, as the pool has. Nothing to say.
    for _ in 0..20 {
        s.minute(&mut st, 150).await;
    }
    let v = s.engine.scaling_view(&s.key).expect("pool");
    assert_eq!(v.current_nodes, 3, "{v:?}");
    assert_eq!(v.needed_now, Some(3), "{v:?}");
    assert!(v.minutes_observed >= 18, "{v:?}");
    assert!(v.demand_rps.is_some_and(|r| (r - 2.5).abs() < 0.1), "{v:?}");
    assert_eq!(v.node_capacity_rps, Some(1.0));
    assert_eq!(s.notices().await.len(), 0);

    // Demand wavering around the node count (a minute in four well above): at most
    // one rise, never a rise and a fall.
    for k in 0..20 {
        s.minute(&mut st, if k % 4 == 0 { 230 } else { 150 }).await;
    }
    let wavering = directions(&s.notices().await);
    assert!(wavering.len() <= 1, "flapping: {wavering:?}");
    assert!(wavering.iter().all(|d| d.0 == "up"), "{wavering:?}");
    let before = wavering.len();

    // A sustained rise to 400 a minute (7 nodes): announced within minutes, as rises
    // only (the trend the forecasters see in a step can take it past 7 on the way).
    let rise_at = s.clock.now_ms();
    for _ in 0..20 {
        s.minute(&mut st, 400).await;
    }
    let ns = s.notices().await;
    let ups = directions(&ns[before..]);
    assert!((1..=4).contains(&ups.len()), "{ups:?}");
    assert!(ups.iter().all(|d| d.0 == "up" && d.2 > d.1), "{ups:?}");
    assert!(ups.last().is_some_and(|d| d.2 >= 7), "{ups:?}");
    let up = &ns[before];
    assert!(up.created_at_ms - rise_at <= 5 * 60_000, "{up:?}");
    assert!(up.summary.contains("scale up"), "{}", up.summary);
    let v = s.engine.scaling_view(&s.key).expect("pool");
    assert_eq!(
        v.last_changed_ms,
        ns.last().map(|n| n.created_at_ms),
        "{v:?}"
    );
    assert_eq!(v.advised, ups.last().map(|d| d.2));
    let before = ns.len();

    // Back to 150: falls only, each after 10 minutes of plans below the announced count
    // (so never within 10 minutes of the last rise or fall).
    let last_up_at = ns.last().map_or(0, |n| n.created_at_ms);
    for _ in 0..60 {
        s.minute(&mut st, 150).await;
    }
    let ns = s.notices().await;
    let downs = directions(&ns[before..]);
    assert!(!downs.is_empty(), "no fall announced");
    assert!(
        downs.iter().all(|d| d.0 == "down" && d.2 < d.1),
        "{downs:?}"
    );
    assert!(
        ns[before].created_at_ms - last_up_at >= 10 * 60_000,
        "{ns:?}"
    );
    for w in ns[before..].windows(2) {
        assert!(
            w[1].created_at_ms - w[0].created_at_ms >= 10 * 60_000,
            "{ns:?}"
        );
    }
    assert!(downs.last().is_some_and(|d| d.2 <= 4), "{downs:?}");

    // Each notification queued a delivery to the pool's webhook.
    let deliveries = s
        .store
        .webhook_deliveries(s.client_id, "web".into(), 100)
        .await
        .expect("deliveries");
    assert_eq!(deliveries.len(), ns.len(), "{deliveries:?}");

    // The gauges: nodes and demand per horizon.
    let text = s
        .engine
        .metrics()
        .encode(crate::metrics::Exposure::Full)
        .expect("encode");
    let client = s.client_id;
    assert!(
        text.contains(&format!(
            "plb_pool_desired_nodes{{client=\"{client}\",pool=\"web\",horizon=\"15m\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "plb_pool_demand_forecast_rps{{client=\"{client}\",pool=\"web\",horizon=\"1h\"}}"
        )),
        "{text}"
    );
    // Tenant-labelled: not in the public exposition.
    let public = s
        .engine
        .metrics()
        .encode(crate::metrics::Exposure::Public)
        .expect("encode");
    assert!(!public.contains("plb_pool_desired_nodes"), "{public}");
}
