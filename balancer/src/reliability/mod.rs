//! Probe reliability in the balancer: the [`Reliability`] service feeds one
//! [`plb_reliability::Tracker`] per client from committed report batches (an
//! [`IngestObserver`]: the request task only sends down a channel), stores every state
//! transition with its notification in one transaction, wakes the webhook deliverer, and
//! keeps the set of probes in `needs_update` that forecasts and routing must leave out.
//!
//! A restart loses nothing: [`Reliability::warm`] restores the stored states, replays
//! the stored raw samples of the window into fresh trackers and evaluates once, so a
//! transition missed by a crash is raised then, and one already raised is not raised
//! again.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use plb_api::{NotificationKind, ProbeReliability, ProbeState};
use plb_reliability::{Observation, Persisted, Policy, Tracker, Transition};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};

use crate::ingest::{CommittedBatch, IngestObserver};
use crate::leader::Leadership;
use crate::store::{ReliabilityRecord, Store, StoreError};

/// Most queued batches observed before one evaluation.
const COALESCE_BATCHES: usize = 1024;

/// Most stored samples replayed on start.
const REPLAY_LIMIT: usize = 2_000_000;

/// Labels of one probe.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// The owning client's id.
    pub client: String,
    /// Pool.
    pub pool: String,
    /// Probe.
    pub probe: String,
}

/// Labels naming a state or kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `reliable`, `flaky`, `needs_update`; `resolved`; `delivered`, `retry`, `failed`.
    pub kind: &'static str,
}

/// Reliability's metrics, registered in the balancer's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ReliabilityMetrics {
    /// Per probe: 0 reliable, 1 flaky, 2 needs_update.
    pub probe_state: Family<ProbeLabels, Gauge>,
    /// Per probe: share of its newest version's recent runs failing by its own fault.
    pub probe_failure_rate: Family<ProbeLabels, Gauge<f64, AtomicU64>>,
    /// Transitions by the state entered.
    pub transitions: Family<KindLabels, Counter>,
    /// Notifications raised by kind.
    pub notifications: Family<KindLabels, Counter>,
    /// Webhook delivery attempts by result.
    pub webhook_attempts: Family<KindLabels, Counter>,
    /// Probes excluded from forecasts and routing now.
    pub excluded_probes: Gauge,
}

impl ReliabilityMetrics {
    /// Registers every metric (prefix `plb_`): the per-probe series, labelled with a
    /// tenant's pool and probe names, under `tenant`, the aggregates under `registry`.
    pub fn register(&self, registry: &mut Registry, tenant: &mut Registry) {
        tenant.register(
            "probe_reliability_state",
            "Probe state: 0 reliable, 1 flaky, 2 needs_update",
            self.probe_state.clone(),
        );
        tenant.register(
            "probe_failure_rate",
            "Share of a probe's recent runs (newest version) failing by its own fault",
            self.probe_failure_rate.clone(),
        );
        registry.register(
            "probe_reliability_transitions",
            "Probe state transitions by the state entered",
            self.transitions.clone(),
        );
        registry.register(
            "notifications",
            "Update prompts raised by kind",
            self.notifications.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by result",
            self.webhook_attempts.clone(),
        );
        registry.register(
            "probes_excluded",
            "Probes in needs_update, excluded from forecasts and routing",
            self.excluded_probes.clone(),
        );
    }
}

fn state_value(s: ProbeState) -> i64 {
    match s {
        ProbeState::Reliable => 0,
        ProbeState::Flaky => 1,
        ProbeState::NeedsUpdate => 2,
    }
}

/// The probes excluded from forecasts and routing: `(client id, pool, probe)`. Shared
/// with the ingest path; reads take a read lock and allocate nothing (the list is short:
/// only probes in `needs_update`).
#[derive(Debug, Default)]
pub struct Exclusions {
    set: RwLock<Vec<(i64, String, String)>>,
}

impl Exclusions {
    /// Whether the client's probe is excluded.
    pub fn contains(&self, client_id: i64, pool: &str, probe: &str) -> bool {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        set.iter()
            .any(|(c, p, n)| *c == client_id && p == pool && n == probe)
    }

    /// The client's excluded probes in `pool`, by name.
    pub fn in_pool(&self, client_id: i64, pool: &str) -> Vec<String> {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = set
            .iter()
            .filter(|(c, p, _)| *c == client_id && p == pool)
            .map(|(_, _, n)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Whether any probe of the client's `pool` is excluded (no allocation).
    pub fn any_in_pool(&self, client_id: i64, pool: &str) -> bool {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        set.iter().any(|(c, p, _)| *c == client_id && p == pool)
    }

    fn set(&self, key: (i64, String, String), excluded: bool) -> usize {
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        let at = set.iter().position(|k| *k == key);
        match (at, excluded) {
            (None, true) => set.push(key),
            (Some(i), false) => {
                set.swap_remove(i);
            }
            _ => {}
        }
        set.len()
    }
}

/// An observer that hands `inner` each batch without the samples of excluded probes
/// (kept in the store, left out of forecasts and routing).
pub struct ExcludingObserver {
    inner: Arc<dyn IngestObserver>,
    exclusions: Arc<Exclusions>,
}

impl ExcludingObserver {
    /// Filters what `inner` sees through `exclusions`.
    pub fn new(inner: Arc<dyn IngestObserver>, exclusions: Arc<Exclusions>) -> Self {
        ExcludingObserver { inner, exclusions }
    }
}

impl IngestObserver for ExcludingObserver {
    fn committed(&self, batch: &Arc<CommittedBatch>) {
        let excluded =
            |s: &plb_api::Sample| self.exclusions.contains(batch.client_id, &s.pool, &s.probe);
        if !batch.samples.iter().any(excluded) {
            self.inner.committed(batch);
            return;
        }
        let samples: Vec<_> = batch
            .samples
            .iter()
            .filter(|s| !excluded(s))
            .cloned()
            .collect();
        if samples.is_empty() {
            return;
        }
        self.inner.committed(&Arc::new(CommittedBatch {
            client_id: batch.client_id,
            node_id: batch.node_id,
            node: batch.node.clone(),
            received_at_ms: batch.received_at_ms,
            samples,
        }));
    }
}

/// The reliability service. One per balancer, in [`crate::AppState`] as `reliability`.
pub struct Reliability {
    policy: Policy,
    trackers: Mutex<HashMap<i64, Tracker>>,
    exclusions: Arc<Exclusions>,
    tx: mpsc::UnboundedSender<Arc<CommittedBatch>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<CommittedBatch>>>>,
    metrics: ReliabilityMetrics,
    /// Woken when a notification is queued for delivery.
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for Reliability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reliability")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl IngestObserver for Reliability {
    fn committed(&self, batch: &Arc<CommittedBatch>) {
        // Unbounded like the engine's: accepted samples are never dropped, and the HTTP
        // layer bounds what arrives.
        let _ = self.tx.send(Arc::clone(batch));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn observation<'a>(node: &'a str, s: &'a plb_api::Sample) -> Observation<'a> {
    Observation {
        node,
        pool: &s.pool,
        probe: &s.probe,
        version: s.version,
        outcome: s.outcome,
        taken_at_ms: s.taken_at_ms,
        duration_ms: s.duration_ms,
        message: &s.message,
        stderr: &s.stderr,
    }
}

impl Reliability {
    /// A service with `policy`, reporting to `metrics`.
    pub fn new(policy: Policy, metrics: ReliabilityMetrics) -> Arc<Reliability> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Reliability {
            policy,
            trackers: Mutex::new(HashMap::new()),
            exclusions: Arc::new(Exclusions::default()),
            tx,
            rx: Mutex::new(Some(rx)),
            metrics,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The shared set of excluded probes (for the prediction engine).
    pub fn exclusions(&self) -> Arc<Exclusions> {
        Arc::clone(&self.exclusions)
    }

    /// Whether the client's probe is in `needs_update`: its samples are kept but must
    /// not feed forecasts or routing.
    pub fn excluded(&self, client_id: i64, pool: &str, probe: &str) -> bool {
        self.exclusions.contains(client_id, pool, probe)
    }

    /// The probe's reliability (`None` if no run of it was seen and no state stored).
    pub fn probe(&self, client_id: i64, pool: &str, probe: &str) -> Option<ProbeReliability> {
        lock(&self.trackers)
            .get(&client_id)
            .and_then(|t| t.reliability(pool, probe))
    }

    /// Every tracked probe of the client: `(pool, probe, reliability)`.
    pub fn client_probes(&self, client_id: i64) -> Vec<(String, String, ProbeReliability)> {
        lock(&self.trackers)
            .get(&client_id)
            .map(Tracker::all)
            .unwrap_or_default()
    }

    /// Feeds samples and evaluates: the transitions per client.
    fn apply<'a>(
        &self,
        client_id: i64,
        runs: impl Iterator<Item = Observation<'a>>,
        now_ms: i64,
    ) -> Vec<Transition> {
        let mut trackers = lock(&self.trackers);
        let t = trackers
            .entry(client_id)
            .or_insert_with(|| Tracker::new(self.policy.clone()));
        let mut touched = HashSet::new();
        for o in runs {
            t.observe(&o);
            touched.insert((o.pool.to_string(), o.probe.to_string()));
        }
        let transitions = t.evaluate(now_ms);
        for (pool, probe) in touched {
            if let Some(r) = t.reliability(&pool, &probe) {
                self.publish(client_id, &pool, &probe, &r);
            }
        }
        transitions
    }

    fn publish(&self, client_id: i64, pool: &str, probe: &str, r: &ProbeReliability) {
        let labels = ProbeLabels {
            client: client_id.to_string(),
            pool: pool.to_string(),
            probe: probe.to_string(),
        };
        self.metrics
            .probe_state
            .get_or_create(&labels)
            .set(state_value(r.state));
        if let Some(ev) = &r.evidence {
            self.metrics
                .probe_failure_rate
                .get_or_create(&labels)
                .set(ev.failure_rate);
        }
        let n = self.exclusions.set(
            (client_id, pool.to_string(), probe.to_string()),
            r.state == ProbeState::NeedsUpdate,
        );
        self.metrics
            .excluded_probes
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Stores a transition and its notification; wakes the deliverer if one was raised.
    async fn persist(&self, store: &Arc<dyn Store>, client_id: i64, tr: Transition) {
        let notify = match (tr.from, tr.to) {
            (_, ProbeState::NeedsUpdate) => Some(NotificationKind::NeedsUpdate),
            (ProbeState::NeedsUpdate, _) => Some(NotificationKind::Resolved),
            _ => None,
        };
        self.metrics
            .transitions
            .get_or_create(&KindLabels {
                kind: tr.to.as_str(),
            })
            .inc();
        tracing::info!(
            client_id, pool = %tr.pool, probe = %tr.probe, from = tr.from.as_str(),
            to = tr.to.as_str(), version = tr.version, reason = %tr.evidence.reason,
            "probe reliability changed"
        );
        let rec = ReliabilityRecord {
            client_id,
            pool: tr.pool,
            probe: tr.probe,
            state: tr.to,
            version: tr.version,
            at_ms: tr.at_ms,
            evidence: tr.evidence,
            notify,
        };
        match store.record_reliability(rec).await {
            Ok(Some(n)) => {
                self.metrics
                    .notifications
                    .get_or_create(&KindLabels {
                        kind: n.kind.as_str(),
                    })
                    .inc();
                self.wake.notify_one();
            }
            Ok(None) => {}
            // The pool was deleted meanwhile, or the store is closing: the state in
            // memory stands; the next start re-derives it from the stored samples.
            Err(e) => tracing::warn!(error = %e, "cannot store a probe reliability transition"),
        }
    }

    /// Restores the stored states and replays the stored samples of the window (call
    /// once, before serving). Answers the samples replayed.
    pub async fn warm(
        &self,
        store: &Arc<dyn Store>,
        leadership: &Leadership,
    ) -> Result<usize, StoreError> {
        let now_ms = crate::clock::now_ms();
        let states = store.reliability_states().await?;
        let samples = store
            .replay_samples(now_ms - self.policy.window_ms, REPLAY_LIMIT)
            .await?;
        let mut pending = Vec::new();
        {
            let mut trackers = lock(&self.trackers);
            for s in &states {
                trackers
                    .entry(s.client_id)
                    .or_insert_with(|| Tracker::new(self.policy.clone()))
                    .restore(
                        &s.pool,
                        &s.probe,
                        Persisted {
                            state: s.state,
                            since_ms: s.since_ms,
                            version: s.version,
                        },
                    );
            }
            for w in &samples {
                trackers
                    .entry(w.client_id)
                    .or_insert_with(|| Tracker::new(self.policy.clone()))
                    .observe(&observation(&w.node, &w.sample));
            }
            for (client_id, t) in trackers.iter_mut() {
                for tr in t.evaluate(now_ms) {
                    pending.push((*client_id, tr));
                }
                for (pool, probe, r) in t.all() {
                    self.publish(*client_id, &pool, &probe, &r);
                }
            }
        }
        // A follower leaves them to the leader (or to itself when it leads: see
        // `reconcile`).
        if leadership.is_leader() {
            for (client_id, tr) in pending {
                self.persist(store, client_id, tr).await;
            }
        }
        tracing::info!(
            samples = samples.len(),
            states = states.len(),
            "probe reliability warmed from the store"
        );
        Ok(samples.len())
    }

    /// Stores what this replica's trackers hold where the stored state differs: the
    /// transitions a follower saw while another replica led, one of which the old leader
    /// may have died before storing. Run when this replica starts to lead; `record`
    /// leaves a state already stored alone, so nothing is raised twice.
    pub async fn reconcile(&self, store: &Arc<dyn Store>) -> Result<usize, StoreError> {
        let stored: HashMap<(i64, String, String), (ProbeState, u32)> = store
            .reliability_states()
            .await?
            .into_iter()
            .map(|s| ((s.client_id, s.pool, s.probe), (s.state, s.version)))
            .collect();
        let now_ms = crate::clock::now_ms();
        let mut pending = Vec::new();
        for (client_id, t) in lock(&self.trackers).iter() {
            for (pool, probe, r) in t.all() {
                let (from, from_version) = stored
                    .get(&(*client_id, pool.clone(), probe.clone()))
                    .copied()
                    .unwrap_or((ProbeState::Reliable, r.version));
                if (from, from_version) == (r.state, r.version) {
                    continue;
                }
                // A state restored from the store but not seen since: nothing new.
                let Some(evidence) = r.evidence else {
                    continue;
                };
                pending.push((
                    *client_id,
                    Transition {
                        pool,
                        probe,
                        from,
                        from_version,
                        to: r.state,
                        version: r.version,
                        at_ms: r.since_ms.unwrap_or(now_ms),
                        evidence,
                    },
                ));
            }
        }
        let n = pending.len();
        for (client_id, tr) in pending {
            self.persist(store, client_id, tr).await;
        }
        Ok(n)
    }

    /// Starts the task that feeds the trackers from committed batches (once; later
    /// calls return `None`). Every replica tracks every sample (its own ingest and its
    /// tail of the others'); only the leader stores transitions and raises
    /// notifications.
    pub fn spawn(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        leadership: Leadership,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut rx = lock(&self.rx).take()?;
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Batches queued meanwhile are observed together and evaluated once:
                // evaluation costs O(nodes) per probe, observing O(1) per sample.
                let mut by_client: HashMap<i64, Vec<Arc<CommittedBatch>>> = HashMap::new();
                by_client.entry(first.client_id).or_default().push(first);
                for _ in 1..COALESCE_BATCHES {
                    match rx.try_recv() {
                        Ok(b) => by_client.entry(b.client_id).or_default().push(b),
                        Err(_) => break,
                    }
                }
                let now_ms = crate::clock::now_ms();
                for (client_id, batches) in by_client {
                    let runs = batches
                        .iter()
                        .flat_map(|b| b.samples.iter().map(|s| observation(&b.node, s)));
                    let transitions = me.apply(client_id, runs, now_ms);
                    if !leadership.is_leader() {
                        continue;
                    }
                    for tr in transitions {
                        me.persist(&store, client_id, tr).await;
                    }
                }
            }
        }))
    }
}
