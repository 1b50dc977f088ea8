//! The app state every handler gets: the store (behind its trait), the probe runtime
//! (for validating uploads), auth, metrics, limits, the prediction engine and the ingest
//! observers. Cheap to clone.
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::config::BalancerConfig;
use crate::engine::Engine;
use crate::ingest::{CommittedBatch, IngestObserver};
use crate::metrics::Metrics;
use crate::reliability::{ExcludingObserver, Reliability};
use crate::store::Store;

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest probe upload, bytes.
    pub max_upload_bytes: usize,
    /// Largest JSON body, bytes.
    pub max_json_bytes: usize,
}

/// Uploads validated at once; more wait (compiling a component is CPU-heavy).
const CONCURRENT_VALIDATIONS: usize = 2;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The probe sandbox, used to validate uploads.
    pub runtime: plb_runtime::Runtime,
    /// Token checking.
    pub auth: Arc<Auth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Size limits.
    pub limits: Limits,
    /// Bounds concurrent upload validations.
    pub validations: Arc<Semaphore>,
    /// One upload per client at a time, a short queue (`--upload-queue`).
    pub uploads: Arc<crate::routes::probes::UploadGate>,
    /// The prediction and routing engine (also an ingest observer).
    pub engine: Arc<Engine>,
    /// Probe reliability (also an ingest observer).
    pub reliability: Arc<Reliability>,
    /// How webhook deliveries are retried.
    pub delivery: crate::webhooks::DeliveryConfig,
    /// Where nodes may be (`--node-networks`), checked at registration.
    pub nodes: crate::netpolicy::NetPolicy,
    /// Whether this replica leads (always, on SQLite).
    pub leadership: crate::leader::Leadership,
    observers: Arc<[Arc<dyn IngestObserver>]>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `store` and `runtime`, with the admin token and limits of `cfg`; the
    /// engine (behind the reliability filter) and probe reliability are registered as
    /// observers of committed batches.
    pub fn new(
        cfg: &BalancerConfig,
        store: Arc<dyn Store>,
        runtime: plb_runtime::Runtime,
        metrics: Arc<Metrics>,
        engine: Arc<Engine>,
    ) -> Self {
        let reliability = Reliability::new(
            plb_reliability::Policy::default(),
            metrics.reliability.clone(),
        );
        // The engine never sees samples of a probe in `needs_update`.
        let observer: Arc<dyn IngestObserver> = Arc::new(ExcludingObserver::new(
            engine.clone(),
            reliability.exclusions(),
        ));
        let reliability_observer: Arc<dyn IngestObserver> = reliability.clone();
        AppState {
            store,
            runtime,
            auth: Arc::new(
                Auth::new(&cfg.admin_token)
                    .with_metrics_token(cfg.metrics_token.as_deref())
                    .with_lookup_limit(cfg.db_readers.div_ceil(2)),
            ),
            metrics,
            limits: Limits {
                max_upload_bytes: usize::try_from(cfg.max_upload_bytes).unwrap_or(usize::MAX),
                max_json_bytes: usize::try_from(cfg.max_json_bytes).unwrap_or(usize::MAX),
            },
            validations: Arc::new(Semaphore::new(CONCURRENT_VALIDATIONS)),
            uploads: Arc::new(crate::routes::probes::UploadGate::new(
                cfg.upload_queue,
                cfg.upload_wait(),
            )),
            engine,
            reliability,
            delivery: cfg.delivery(),
            nodes: cfg.node_policy(),
            leadership: crate::leader::Leadership::always(&cfg.replica_name()),
            observers: Arc::from(vec![observer, reliability_observer]),
        }
    }

    /// Replaces this replica's leadership (elected through a shared database).
    pub fn with_leadership(mut self, leadership: crate::leader::Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Adds an observer of committed report batches.
    pub fn with_observer(mut self, observer: Arc<dyn IngestObserver>) -> Self {
        let mut v: Vec<_> = self.observers.iter().cloned().collect();
        v.push(observer);
        self.observers = Arc::from(v);
        self
    }

    /// Every observer of committed batches as one (for the tail of what other replicas
    /// store: each replica learns from those as from its own ingest).
    pub fn observers(&self) -> Arc<dyn IngestObserver> {
        Arc::new(Fanout(Arc::clone(&self.observers)))
    }

    /// Hands a committed batch to every observer.
    pub(crate) fn committed(&self, batch: CommittedBatch) {
        if self.observers.is_empty() {
            return;
        }
        let batch = Arc::new(batch);
        for o in self.observers.iter() {
            o.committed(&batch);
        }
    }
}

/// Several observers as one.
struct Fanout(Arc<[Arc<dyn IngestObserver>]>);

impl IngestObserver for Fanout {
    fn committed(&self, batch: &Arc<CommittedBatch>) {
        for o in self.0.iter() {
            o.committed(batch);
        }
    }
}
