//! The prediction engine: per client and pool, a [`PoolRouter`] holding the pool's
//! prediction pipeline ([`plb_pipeline::PoolPredictor`]: node models fed from
//! committed samples, capacity models trained in the background from feedback, the
//! routing views) and the routing snapshot built from it. The engine is glue: it feeds
//! the pipeline, runs its fits on a blocking thread, installs its views and stores
//! what it decided; every policy decision is the pipeline's. Time comes from a
//! [`Clock`] (Unix ms), so the engine runs in simulated time in tests.
//!
//! Data flow: committed report batches arrive through [`IngestObserver`] and go down a
//! channel to the engine task (the request task never waits); the task feeds the node
//! models, rebuilds the snapshots of pools whose predictions moved (at most every
//! 100 ms), and once a tick (1 s) refreshes the topology from the store, moves stale
//! nodes to `unknown`, records loads and capacities, stores state changes with their
//! evidence and per-minute decision counts, releases HTTP decisions whose feedback
//! never came, and starts capacity fits on a blocking thread. Route decisions read the
//! snapshot through `arc-swap`: no lock, no store, no await.
//!
//! On start, [`Engine::warm`] replays the stored recent samples into fresh models before
//! the server accepts requests, so a restart keeps profiles, forecasts and states.
mod clock;
mod models;
mod router;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use plb_api::{Assignments, NodeAssessment, NodeRouting, NodeState, Tier};
use plb_pipeline::{FitOutcome, PipelineConfig, PoolPredictor};
use plb_predict::NodeConfig;
use plb_routing::{Shaping, Snapshot};
use tokio::sync::mpsc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use router::{FeedbackError, HttpDecision, PoolRouter, RouteQuery, Routed};

use crate::ingest::{CommittedBatch, IngestObserver};
use crate::metrics::Metrics;
use crate::store::{PoolTopology, Store, StoreError};
use clock::secs;
use models::PoolState;
use router::lock;

/// A pool as the engine knows it: pool names are unique per client only.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// The owning client.
    pub client_id: i64,
    /// The pool's name.
    pub pool: String,
}

/// How the engine runs (its schedule; everything the pipeline decides is in
/// [`PipelineConfig`]).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The prediction pipeline of every pool (node models, capacity training, views).
    pub pipeline: PipelineConfig,
    /// Every pool's demand forecast and scaling advice.
    pub demand: plb_pipeline::DemandConfig,
    /// Tick: staleness, loads, stored changes, topology refresh, ms.
    pub tick_ms: u64,
    /// Snapshots of pools whose predictions moved are rebuilt this often, ms.
    pub rebuild_ms: u64,
    /// The topology (pools, nodes, policies) is reread from the store this often, ms.
    /// A route to an unknown or empty pool and a sample from an unknown node reread it
    /// at once.
    pub topology_every_ms: i64,
    /// HTTP decisions without feedback are released after this, ms.
    pub outstanding_timeout_ms: u64,
    /// How far back stored samples warm the models on start, ms.
    pub warm_window_ms: i64,
    /// Most samples replayed on start.
    pub warm_limit: usize,
    /// Forecast errors are stored this often, ms.
    pub errors_every_ms: i64,
    /// Decision counts and forecast errors are kept this long, ms.
    pub keep_history_ms: i64,
    /// Shortest interval a `deep` probe is shortened to while its node is `degrading`, ms.
    pub min_deep_interval_ms: u64,
    /// Most forecaster refits (period detection, ARIMA) started per pool and tick.
    pub refits_per_tick: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pipeline: PipelineConfig::default(),
            demand: plb_pipeline::DemandConfig::default(),
            tick_ms: 1_000,
            rebuild_ms: 100,
            topology_every_ms: 5_000,
            outstanding_timeout_ms: 30_000,
            warm_window_ms: 30 * 60 * 1000,
            warm_limit: 2_000_000,
            errors_every_ms: 5 * 60 * 1000,
            keep_history_ms: 7 * 24 * 3600 * 1000,
            min_deep_interval_ms: 1_000,
            refits_per_tick: 8,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Its parameters are invalid.
    #[error("prediction parameters: {0}")]
    Params(#[from] plb_predict::PredictError),
    /// Its pipeline settings are invalid.
    #[error("{0}")]
    Pipeline(#[from] plb_pipeline::PipelineError),
    /// The store failed while warming up.
    #[error("warming the models: {0}")]
    Store(#[from] StoreError),
}

pub(crate) enum Event {
    Batch(Arc<CommittedBatch>),
    /// A pool's demand forecaster refit finished (`None`: it failed).
    DemandRefitted {
        key: PoolKey,
        result: Option<Box<plb_predict::forecast::RefitResult>>,
    },
    Fitted {
        key: PoolKey,
        outcome: Box<FitOutcome>,
    },
    /// A node series' forecaster refit (period detection, ARIMA) finished.
    Refitted {
        key: PoolKey,
        node: String,
        series: String,
        result: Box<plb_predict::forecast::RefitResult>,
    },
}

/// The prediction engine. One per balancer, in [`crate::AppState`] as `engine`.
pub struct Engine {
    pools: ArcSwap<HashMap<PoolKey, Arc<PoolRouter>>>,
    tx: mpsc::UnboundedSender<Event>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    config: EngineConfig,
    node_config: Arc<NodeConfig>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    refresh: tokio::sync::Mutex<()>,
    last_refresh: std::sync::atomic::AtomicU64,
    /// Set when the stored topology changed (a pool created, a node registered): the
    /// next tick rereads it whatever its schedule.
    topology_dirty: std::sync::atomic::AtomicBool,
    warmed: ArcSwapOption<WarmReport>,
}

/// Least time between two on-demand topology refreshes, ms.
const MIN_REFRESH_MS: u64 = 200;

/// What [`Engine::warm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmReport {
    /// Samples replayed.
    pub samples: usize,
    /// Of which the models refused.
    pub rejected: usize,
    /// Pools loaded.
    pub pools: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pools", &self.pools.load().len())
            .finish_non_exhaustive()
    }
}

impl IngestObserver for Engine {
    fn committed(&self, batch: &Arc<CommittedBatch>) {
        // Unbounded: the engine keeps up at ~10 µs a sample, and a bound would have
        // to drop accepted samples; the HTTP layer already bounds what arrives.
        let _ = self.tx.send(Event::Batch(Arc::clone(batch)));
    }
}

impl Engine {
    /// An engine with no pools yet; [`Engine::warm`] loads them and [`Engine::spawn`]
    /// starts its task.
    pub fn new(config: EngineConfig, metrics: Arc<Metrics>) -> Result<Arc<Engine>, EngineError> {
        Self::with_clock(config, metrics, Arc::new(SystemClock::new()))
    }

    /// [`Engine::new`] on `clock` (a [`ManualClock`] in tests).
    pub fn with_clock(
        config: EngineConfig,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Engine>, EngineError> {
        config.pipeline.validate()?;
        config.demand.validate()?;
        let node_config = NodeConfig::new(config.pipeline.node.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Engine {
            pools: ArcSwap::from_pointee(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
            config,
            node_config,
            clock,
            metrics,
            refresh: tokio::sync::Mutex::new(()),
            last_refresh: std::sync::atomic::AtomicU64::new(f64::NEG_INFINITY.to_bits()),
            topology_dirty: std::sync::atomic::AtomicBool::new(false),
            warmed: ArcSwapOption::empty(),
        }))
    }

    /// Now, Unix ms, on the engine's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// One pool's router.
    pub fn pool(&self, key: &PoolKey) -> Option<Arc<PoolRouter>> {
        self.pools.load().get(key).cloned()
    }

    /// What the start-up warm-up replayed, once it ran.
    pub fn warmed(&self) -> Option<WarmReport> {
        self.warmed.load_full().map(|w| *w)
    }

    /// The pool's router, loading the pool (and its nodes) from the store first if the
    /// engine does not know it or knows it without nodes (a pool created or a node
    /// registered since the last tick).
    pub async fn pool_fresh(
        &self,
        store: &Arc<dyn Store>,
        key: &PoolKey,
    ) -> Result<Option<Arc<PoolRouter>>, StoreError> {
        let known = self.pool(key);
        match &known {
            Some(p) if !p.snapshot().is_empty() || !self.refresh_due() => return Ok(known),
            Some(_) => {}
            // A pool the caller does not have costs one indexed read, not a refresh.
            None => match store.get_pool(key.client_id, key.pool.clone()).await {
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
                Ok(_) => {}
            },
        }
        self.refresh_topology(store).await?;
        Ok(self.pool(key))
    }

    /// The stored topology changed (a pool created, a node registered): the next
    /// on-demand refresh runs whatever the time since the last one, and the next tick
    /// (within a second) rereads it for the proxy and agent-check, which never refresh
    /// on demand.
    pub fn topology_changed(&self) {
        self.topology_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.last_refresh.store(
            f64::NEG_INFINITY.to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Takes the "topology changed" mark (for the tick).
    pub(crate) fn take_topology_dirty(&self) -> bool {
        self.topology_dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether an on-demand refresh may run: a pool without nodes asks the store at
    /// most every [`MIN_REFRESH_MS`], however often it is routed to.
    fn refresh_due(&self) -> bool {
        let now = secs(self.clock.now_ms());
        let last = f64::from_bits(self.last_refresh.load(std::sync::atomic::Ordering::Relaxed));
        now - last >= MIN_REFRESH_MS as f64 / 1000.0
    }

    /// Loads every pool and node from the store: new pools get a router, changed node
    /// sets are synced and their snapshots rebuilt.
    pub(crate) async fn refresh_topology(&self, store: &Arc<dyn Store>) -> Result<(), StoreError> {
        self.last_refresh.store(
            secs(self.clock.now_ms()).to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let topo = store.engine_topology().await?;
        let _guard = self.refresh.lock().await;
        self.apply_topology(topo);
        Ok(())
    }

    fn apply_topology(&self, topo: Vec<PoolTopology>) {
        let current = self.pools.load_full();
        let mut next: HashMap<PoolKey, Arc<PoolRouter>> = HashMap::with_capacity(topo.len());
        let mut set_changed = current.len() != topo.len();
        let now_ms = self.clock.now_ms();
        for t in topo {
            let key = PoolKey {
                client_id: t.client_id,
                pool: t.name.clone(),
            };
            let policy = t.policy;
            let router = match current.get(&key) {
                Some(r) if r.pool_id() == t.pool_id => Arc::clone(r),
                _ => {
                    set_changed = true;
                    Arc::new(PoolRouter::new(
                        t.pool_id,
                        t.name.clone(),
                        Arc::clone(&self.clock),
                        policy,
                        t.slo_ms,
                        PoolState::new(self.predictor(t.slo_ms)),
                        Some(Arc::clone(&self.metrics.route_decisions)),
                    ))
                }
            };
            router.set_policy(policy);
            router.set_slo_ms(t.slo_ms);
            let changed = {
                let mut m = lock(&router.models);
                m.predictor.set_slo_ms(t.slo_ms);
                m.sync(&t.nodes)
            };
            if changed || router.snapshot().len() != t.nodes.len() {
                self.rebuild(&router, now_ms);
            }
            next.insert(key, router);
        }
        if set_changed {
            self.pools.store(Arc::new(next));
        }
    }

    /// A new pool's pipeline, with the demand settings.
    fn predictor(&self, slo_ms: f64) -> PoolPredictor {
        let mut p = PoolPredictor::with_node_config(
            self.config.pipeline.clone(),
            Arc::clone(&self.node_config),
            slo_ms,
        );
        if let Err(e) = p.set_demand_config(self.config.demand.clone()) {
            // Validated in `with_clock`: not reached.
            tracing::error!(error = %e, "engine: demand settings refused");
        }
        p
    }

    /// Rebuilds `router`'s snapshot from its models' views at `now_ms`.
    pub(crate) fn rebuild(&self, router: &PoolRouter, now_ms: i64) {
        let views = lock(&router.models).predictor.views(now_ms);
        self.install(router, views, secs(now_ms));
    }

    pub(crate) fn install(&self, router: &PoolRouter, views: Vec<plb_routing::NodeView>, now: f64) {
        match Snapshot::new(views, &router.live, Shaping::default(), now) {
            Ok(s) => router.snapshot.store(s),
            Err(e) => {
                tracing::error!(pool = router.name(), error = %e, "cannot build a routing snapshot")
            }
        }
    }

    /// Replays stored recent samples into the models (call once, before serving).
    pub async fn warm(&self, store: &Arc<dyn Store>) -> Result<WarmReport, EngineError> {
        self.refresh_topology(store).await?;
        let now_ms = self.clock.now_ms();
        let samples = store
            .recent_samples(now_ms - self.config.warm_window_ms, self.config.warm_limit)
            .await?;
        let pools = self.pools.load_full();
        let mut rejected = 0;
        for w in &samples {
            let key = PoolKey {
                client_id: w.client_id,
                pool: w.sample.pool.clone(),
            };
            let Some(router) = pools.get(&key) else {
                continue;
            };
            if lock(&router.models).observe(&w.node, &w.sample).is_err() {
                rejected += 1;
            }
        }
        for router in pools.values() {
            self.rebuild(router, now_ms);
        }
        let report = WarmReport {
            samples: samples.len(),
            rejected,
            pools: pools.len(),
        };
        tracing::info!(?report, "prediction engine warmed from stored samples");
        self.warmed.store(Some(Arc::new(report)));
        Ok(report)
    }

    /// Starts the engine task (once; later calls return `None`) on a thread of its own
    /// with its own single-threaded runtime: a tick over thousands of nodes takes
    /// milliseconds of CPU, which must not hold up a worker that serves route
    /// requests. The returned handle owns the task: aborting or dropping its future
    /// stops the engine thread.
    pub fn spawn(self: &Arc<Self>, store: Arc<dyn Store>) -> Option<tokio::task::JoinHandle<()>> {
        let rx = lock(&self.rx).take()?;
        let (keep, stop) = tokio::sync::oneshot::channel::<()>();
        let engine = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("plb-engine".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(task::run(engine, store, rx, stop)),
                    Err(e) => tracing::error!(error = %e, "cannot start the engine's runtime"),
                }
            });
        match thread {
            Ok(_) => Some(tokio::spawn(async move {
                // Holding `keep` keeps the engine running; dropping it stops it.
                let _keep = keep;
                std::future::pending::<()>().await;
            })),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the engine thread");
                None
            }
        }
    }

    /// Every node's assessment and live routing figures in one of the client's pools.
    pub fn node_details(
        &self,
        key: &PoolKey,
    ) -> HashMap<String, (NodeAssessment, Option<NodeRouting>)> {
        let Some(router) = self.pool(key) else {
            return HashMap::new();
        };
        let now_ms = self.clock.now_ms();
        let (assessments, outlooks) = {
            let models = lock(&router.models);
            let a = models.predictor.assess(now_ms);
            let o: HashMap<String, f64> = a
                .keys()
                .filter_map(|n| Some((n.clone(), models.predictor.latency_outlook(n, now_ms)?)))
                .collect();
            (a, o)
        };
        let snap = router.snapshot();
        let now = router.now();
        let total: f64 = snap
            .eligible()
            .iter()
            .map(|&i| snap.weight_at(i, now))
            .sum();
        assessments
            .into_iter()
            .map(|(name, a)| {
                let routing = snap.index_of(&name).and_then(|i| {
                    let v = snap.node(i)?;
                    let live = snap.live(i)?;
                    let eligible = snap.eligible().contains(&i);
                    Some(NodeRouting {
                        state: v.state,
                        weight: finite(snap.weight_fraction_at(i, now)),
                        share: if eligible && total > 0.0 {
                            finite(snap.weight_at(i, now) / total)
                        } else {
                            0.0
                        },
                        degrade_score: finite(v.degrade_score),
                        latency_outlook_ms: outlooks.get(&name).copied().filter(|l| l.is_finite()),
                        capacity: v.capacity.filter(|c| c.is_finite()),
                        in_flight: live.in_flight(),
                        latency_ms: live
                            .latency(now)
                            .map(|l| l * 1000.0)
                            .filter(|l| l.is_finite()),
                        mean_latency_ms: live
                            .mean_latency_since(None)
                            .map(|l| l * 1000.0)
                            .filter(|l| l.is_finite()),
                        error_rate: finite(live.error_rate(now)),
                        decisions: live.started(),
                        completed: live.completed(),
                        errors: live.errors(),
                    })
                });
                (name, (a, routing))
            })
            .collect()
    }

    /// Each probe metric's trust in routing on the pool, with the evidence behind it.
    pub fn metric_trust(&self, key: &PoolKey) -> Vec<plb_api::MetricTrust> {
        self.pool(key)
            .map(|router| lock(&router.models).predictor.metric_trust())
            .unwrap_or_default()
    }

    /// The pool's capacity model (once fitted), the feedback rows held for training,
    /// and how past fits did on the feedback that came after them (the model in use,
    /// the load-only baseline and the probe-feature models).
    pub fn capacity_view(
        &self,
        key: &PoolKey,
    ) -> Option<(
        Option<plb_api::CapacityModelView>,
        u64,
        Vec<plb_api::CapacityScoreView>,
    )> {
        let router = self.pool(key)?;
        let m = lock(&router.models);
        Some((
            m.predictor.capacity_view(self.clock.now_ms()),
            m.predictor.feedback_rows() as u64,
            m.predictor.capacity_scores(),
        ))
    }

    /// The pool's demand, its forecast and the nodes it needs now and at each horizon,
    /// with the per-node capacity used and the recommendation (`None`: no such pool).
    pub fn scaling_view(&self, key: &PoolKey) -> Option<plb_api::PoolScaling> {
        let router = self.pool(key)?;
        let mut view = lock(&router.models).predictor.scaling(self.clock.now_ms());
        view.pool = key.pool.clone();
        Some(view)
    }

    /// Adaptive probing: while a node is `degrading` in a pool, its `deep` probes there
    /// run twice as often (not below [`EngineConfig::min_deep_interval_ms`]); the
    /// assignments' ETag changes with them, so the agent follows within one poll.
    pub fn adapt_assignments(&self, client_id: i64, a: &mut Assignments) {
        for p in &mut a.probes {
            if p.tier != Tier::Deep {
                continue;
            }
            let key = PoolKey {
                client_id,
                pool: p.pool.clone(),
            };
            let Some(router) = self.pool(&key) else {
                continue;
            };
            let snap = router.snapshot();
            let degrading = snap
                .index_of(&a.node)
                .and_then(|i| snap.node(i))
                .is_some_and(|n| n.state == NodeState::Degrading);
            if degrading && p.interval_ms > self.config.min_deep_interval_ms {
                p.interval_ms = (p.interval_ms / 2).max(self.config.min_deep_interval_ms);
            }
        }
    }

    pub(crate) fn sender(&self) -> mpsc::UnboundedSender<Event> {
        self.tx.clone()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn routers(&self) -> Arc<HashMap<PoolKey, Arc<PoolRouter>>> {
        self.pools.load_full()
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

#[cfg(test)]
mod scaling_tests;
#[cfg(test)]
mod tests;
