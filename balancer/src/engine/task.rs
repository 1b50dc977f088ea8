//! The engine task: applies committed batches to each pool's pipeline, rebuilds the
//! snapshots that moved, and runs the tick (topology, feedback into capacity training,
//! staleness, loads, capacity fits on a blocking thread, stored changes and decision
//! counts, forecast errors, expired HTTP decisions). The tick itself ([`on_tick`]) is a
//! plain async function over the engine and its clock, tested in simulated time.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use plb_pipeline::{Feedback, FitOutcome};

use super::models::NodeChange;
use super::router::lock;
use super::{Engine, Event, PoolKey};
use crate::store::{
    DecisionCount, EngineWrites, NewForecastError, NewStateChange, ScalingRecord, Store,
};

#[derive(Default)]
pub(super) struct TaskState {
    dirty: HashSet<PoolKey>,
    changes: Vec<NewStateChange>,
    /// Decisions already counted per (pool, node): the live `started` counter then.
    started: HashMap<(i64, String), u64>,
    last_errors_ms: i64,
    last_expire_ms: i64,
    last_topology_ms: i64,
    /// Scaling recommendation changes to store (notification + webhook delivery).
    scaling: Vec<ScalingRecord>,
    /// The minute each pool's scaling gauges were last set.
    gauges_minute: HashMap<PoolKey, i64>,
}

impl TaskState {
    /// Whether `key`'s snapshot is due for a rebuild.
    #[cfg(test)]
    pub(super) fn is_dirty(&self, key: &PoolKey) -> bool {
        self.dirty.contains(key)
    }
}

fn minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

pub(super) async fn run(
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(engine.config.tick_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebuild =
        tokio::time::interval(Duration::from_millis(engine.config.rebuild_ms.max(10)));
    rebuild.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut st = TaskState {
        last_errors_ms: engine.now_ms(),
        ..TaskState::default()
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = rx.recv() => match ev {
                None => break,
                Some(Event::Batch(b)) => apply_batch(&engine, &store, &b, &mut st).await,
                Some(Event::Fitted { key, outcome }) => installed(&engine, &key, *outcome, &mut st),
                Some(Event::DemandRefitted { key, result }) => demand_refitted(&engine, &key, result),
                Some(Event::Refitted { key, node, series, result }) => {
                    if let Some(router) = engine.pool(&key) {
                        lock(&router.models).predictor.install_refit(&node, &series, *result);
                    }
                }
            },
            _ = rebuild.tick() => {
                let now_ms = engine.now_ms();
                let routers = engine.routers();
                for key in st.dirty.drain() {
                    if let Some(r) = routers.get(&key) {
                        engine.rebuild(r, now_ms);
                    }
                }
                // State changes are stored promptly, not only once a tick.
                if !st.changes.is_empty() {
                    write(&store, EngineWrites {
                        changes: std::mem::take(&mut st.changes),
                        ..EngineWrites::default()
                    });
                }
            }
            _ = tick.tick() => on_tick(&engine, &store, &mut st).await,
        }
    }
    tracing::debug!("prediction engine stopped");
}

pub(super) async fn apply_batch(
    engine: &Engine,
    store: &Arc<dyn Store>,
    batch: &crate::ingest::CommittedBatch,
    st: &mut TaskState,
) {
    let mut refreshed = false;
    for s in &batch.samples {
        let key = PoolKey {
            client_id: batch.client_id,
            pool: s.pool.clone(),
        };
        let mut router = engine.pool(&key);
        let known = router
            .as_ref()
            .is_some_and(|r| lock(&r.models).predictor.contains(&batch.node));
        if !known && !refreshed {
            // A pool or node the engine has not loaded yet.
            refreshed = true;
            if let Err(e) = engine.refresh_topology(store).await {
                tracing::warn!(error = %e, "engine: cannot refresh the topology");
            }
            router = engine.pool(&key);
        }
        let Some(router) = router else {
            continue;
        };
        let result = lock(&router.models).observe(&batch.node, s);
        match result {
            Ok(Some(c)) => {
                push_change(engine, router.pool_id(), c, st);
            }
            Ok(None) => {}
            Err(e) => {
                engine.metrics().engine_rejected_samples.inc();
                tracing::debug!(node = %batch.node, error = %e, "engine: sample refused");
            }
        }
        st.dirty.insert(key);
    }
}

fn push_change(engine: &Engine, pool_id: i64, c: NodeChange, st: &mut TaskState) {
    engine.metrics().state_changes.inc();
    tracing::info!(
        node = %c.node, from = c.change.from.as_str(), to = c.change.to.as_str(),
        reason = %c.change.reason, "node state changed"
    );
    st.changes.push(NewStateChange {
        pool_id,
        node_id: c.node_id,
        change: c.change,
    });
}

pub(super) fn installed(engine: &Engine, key: &PoolKey, outcome: FitOutcome, st: &mut TaskState) {
    let Some(router) = engine.pool(key) else {
        return;
    };
    engine.metrics().capacity_fits.inc();
    lock(&router.models).predictor.install_fit(outcome);
    st.dirty.insert(key.clone());
}

pub(super) fn demand_refitted(
    engine: &Engine,
    key: &PoolKey,
    result: Option<Box<plb_predict::forecast::RefitResult>>,
) {
    let Some(router) = engine.pool(key) else {
        return;
    };
    let mut m = lock(&router.models);
    match result {
        Some(r) => m.predictor.install_demand_refit(*r),
        None => m.predictor.demand_refit_failed(),
    }
}

/// The pool's demand: the requests routed this tick (route decisions and proxied
/// requests alike: both go through the router), a demand refit on a blocking thread
/// when due, a change of the scaling recommendation to store, and the scaling gauges.
fn demand(
    engine: &Engine,
    key: &PoolKey,
    router: &super::PoolRouter,
    now_ms: i64,
    requests: u64,
    st: &mut TaskState,
) {
    let (job, change) = {
        let mut m = lock(&router.models);
        m.predictor.observe_requests(now_ms, requests);
        (
            m.predictor.due_demand_refit(),
            m.predictor.take_scaling_change(),
        )
    };
    if let Some(job) = job {
        let tx = engine.sender();
        let key = key.clone();
        tokio::spawn(async move {
            let result = match tokio::task::spawn_blocking(move || job.run()).await {
                Ok(r) => Some(Box::new(r)),
                Err(e) => {
                    tracing::error!(error = %e, "demand refit panicked");
                    None
                }
            };
            let _ = tx.send(Event::DemandRefitted { key, result });
        });
    }
    if let Some(c) = change {
        tracing::info!(
            pool = %key.pool, from = c.change.from, to = c.change.to,
            reason = %c.change.reason, "scaling recommendation changed"
        );
        st.scaling.push(ScalingRecord {
            client_id: key.client_id,
            pool: key.pool.clone(),
            at_ms: c.at_ms,
            notice: c.notice(),
        });
    }
    // The gauges move once a minute, with the demand.
    let minute_ms = minute(now_ms);
    if st.gauges_minute.get(key) != Some(&minute_ms) {
        st.gauges_minute.insert(key.clone(), minute_ms);
        let view = lock(&router.models).predictor.scaling(now_ms);
        engine
            .metrics()
            .scaling
            .set(key.client_id, &key.pool, &view);
    }
}

pub(super) async fn on_tick(engine: &Arc<Engine>, store: &Arc<dyn Store>, st: &mut TaskState) {
    let now_ms = engine.now_ms();
    if engine.take_topology_dirty()
        || now_ms - st.last_topology_ms >= engine.config.topology_every_ms
    {
        st.last_topology_ms = now_ms;
        if let Err(e) = engine.refresh_topology(store).await {
            tracing::warn!(error = %e, "engine: cannot refresh the topology");
        }
    }
    let routers = engine.routers();
    let cfg = &engine.config;
    let timeout = cfg.outstanding_timeout_ms as f64 / 1000.0;
    let mut writes = EngineWrites::default();
    let write_errors = now_ms - st.last_errors_ms >= cfg.errors_every_ms;
    for (key, router) in routers.iter() {
        // Capacity: new feedback in, a fit started when due (at most one per pool in
        // flight), an expired fit dropped.
        let job = {
            let rows = router.take_rows();
            let mut m = lock(&router.models);
            for r in &rows {
                m.predictor.observe_feedback(Feedback {
                    node: &r.node,
                    at_ms: r.at_ms,
                    load: r.load,
                    latency_ms: r.latency_ms,
                    ok: r.ok,
                });
            }
            let refits = m.predictor.due_refits(engine.config.refits_per_tick);
            if !refits.is_empty() {
                // Period detection and ARIMA fits never run on the sample path.
                let tx = engine.sender();
                let key = key.clone();
                tokio::task::spawn_blocking(move || {
                    for r in refits {
                        let result = Box::new(r.job.run());
                        let _ = tx.send(Event::Refitted {
                            key: key.clone(),
                            node: r.node.to_string(),
                            series: r.key,
                            result,
                        });
                    }
                });
            }
            m.predictor.due_fit(now_ms)
        };
        if let Some(job) = job {
            let tx = engine.sender();
            let key = key.clone();
            tokio::spawn(async move {
                match tokio::task::spawn_blocking(move || job.run()).await {
                    Ok(outcome) => {
                        let _ = tx.send(Event::Fitted {
                            key,
                            outcome: Box::new(outcome),
                        });
                    }
                    Err(e) => tracing::error!(error = %e, "capacity fit panicked"),
                }
            });
        }

        // Released HTTP decisions whose feedback never came.
        let released = router.expire_outstanding(timeout);
        if released > 0 {
            tracing::debug!(pool = %key.pool, released, "HTTP route decisions expired without feedback");
        }

        // Staleness, loads, views.
        let snap = router.snapshot();
        let now = router.now();
        let mut changes = Vec::new();
        let views = {
            let in_flight = |n: &str| snap.live_by_id(n).map(|l| l.in_flight() as f64);
            let mut m = lock(&router.models);
            for (node, c) in m.predictor.tick(now_ms, &in_flight) {
                changes.extend(m.change(&node, c));
            }
            m.predictor.views(now_ms)
        };
        for c in changes {
            push_change(engine, router.pool_id(), c, st);
        }
        engine.install(router, views, now);

        // Decisions per node this minute.
        let ids: HashMap<String, i64> = lock(&router.models).ids.clone();
        let snap = router.snapshot();
        let mut requests = 0u64;
        for (i, v) in snap.nodes().iter().enumerate() {
            let (Some(live), Some(&node_id)) = (snap.live(i), ids.get(&v.id)) else {
                continue;
            };
            let now_started = live.started();
            let last = st
                .started
                .entry((router.pool_id(), v.id.clone()))
                .or_insert(0);
            // A node's live state restarts at 0 when it leaves and comes back.
            let delta = if now_started >= *last {
                now_started - *last
            } else {
                now_started
            };
            *last = now_started;
            requests = requests.saturating_add(delta);
            if delta > 0 {
                writes.decisions.push(DecisionCount {
                    pool_id: router.pool_id(),
                    node_id,
                    minute_ms: minute(now_ms),
                    decisions: delta,
                });
            }
        }

        demand(engine, key, router, now_ms, requests, st);

        if write_errors {
            let assessed = lock(&router.models).predictor.assess(now_ms);
            for (node, a) in assessed {
                let Some(&node_id) = ids.get(&node) else {
                    continue;
                };
                for m in &a.metrics {
                    for e in &m.errors {
                        let model = m
                            .forecasts
                            .iter()
                            .find(|f| f.h == e.h)
                            .map_or_else(String::new, |f| f.model.clone());
                        writes.errors.push(NewForecastError {
                            pool_id: router.pool_id(),
                            node_id,
                            record: plb_api::ForecastErrorRecord {
                                at_ms: now_ms,
                                node: node.clone(),
                                series: m.name.clone(),
                                h: e.h,
                                model,
                                mae: e.mae,
                                naive_mae: e.naive_mae,
                                scored: e.scored,
                            },
                        });
                    }
                }
            }
        }
    }
    if write_errors {
        st.last_errors_ms = now_ms;
    }
    if now_ms - st.last_expire_ms >= 3_600_000 {
        st.last_expire_ms = now_ms;
        writes.expire_before_ms = Some(now_ms - cfg.keep_history_ms);
    }
    for r in std::mem::take(&mut st.scaling) {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            if let Err(e) = store.record_scaling(r).await {
                tracing::error!(error = %e, "engine: cannot store a scaling notification");
            }
        });
    }
    writes.changes = std::mem::take(&mut st.changes);
    if !writes.is_empty() {
        write(store, writes);
    }
}

/// Stores `writes` in the background (the engine loop never waits on the store's writer).
fn write(store: &Arc<dyn Store>, writes: EngineWrites) {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        if let Err(e) = store.engine_write(writes).await {
            tracing::error!(error = %e, "engine: cannot store state changes and decision counts");
        }
    });
}
