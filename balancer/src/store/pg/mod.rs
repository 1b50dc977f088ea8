//! [`PgStore`]: the [`Store`] over PostgreSQL (tokio-postgres with deadpool-postgres
//! pools), selected by a `postgres://` or `postgresql://` URL. The same semantics as
//! [`super::SqliteStore`]: every write is one transaction that commits before its future
//! resolves (so an acknowledgement follows the commit), every method is scoped to the
//! caller's identity, quotas are checked inside the write that would pass them, and the
//! same limits and orderings hold. The SQL lives in one module per group of tables,
//! mirroring the SQLite ones: async functions over a [`Tx`] that this file's
//! `impl Store` runs in a transaction.
//!
//! Where SQLite has one writer thread (so writes never run concurrently), PostgreSQL
//! runs writes concurrently on a pool of writer connections: a write that checks a quota
//! or creates a named thing first locks its client's row (`FOR UPDATE`), so the counts it
//! reads cannot change under it; the writes that create or remove modules (shared by
//! sha256 across clients) take one advisory lock; a transaction that loses a deadlock or
//! a serialization check is retried whole. Reads run in a read-only `REPEATABLE READ`
//! transaction (one snapshot for every statement, like SQLite's read transactions) on a
//! separate pool of at most `--db-readers` connections.
//!
//! PostgreSQL's `text` cannot hold NUL: free text (sample ids, messages, captured
//! stderr, client names, addresses, URLs) is stored with NUL replaced by U+FFFD.
mod clients;
mod engine;
mod fold;
mod history;
mod leader;
mod nodes;
mod pools;
mod probes;
mod reliability;
mod samples;
mod schema;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use plb_api::{
    Assignments, CreatePool, ForecastErrorRecord, NodeStateChange, Notification, PoolNodes,
    PoolView, ProbeView, RegisterRequest, WebhookDelivery, WebhookView,
};
use plb_routing::PolicyKind;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};

pub use leader::elect;

use super::writer::WriterMetrics;
use super::{
    AttemptRecord, DueDelivery, EngineWrites, FoldStats, Ingest, Ingested, MinuteDecisions,
    ModuleGc, NewProbeVersion, PoolTopology, PutProbe, Quotas, ReliabilityRecord, ReliabilityStore,
    ReplaySample, ScalingRecord, Store, StoreError, StoreFuture, StoredReliability, TailPage,
    TimedMetrics, TokenHash, TokenOwner, WarmSample,
};

/// A transaction on one of the store's connections.
pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// A statement's parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// How often a write that lost a deadlock or a serialization check is run again.
const MAX_TRIES: u32 = 5;

/// How to open a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Read connections open at most; more reads wait for one.
    pub readers: usize,
    /// Write connections open at most; more writes wait for one.
    pub writers: usize,
    /// Counters of committed and failed write transactions (the SQLite writer's).
    pub metrics: WriterMetrics,
    /// Per-client quotas.
    pub quotas: Quotas,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            readers: 4,
            writers: 8,
            metrics: WriterMetrics::default(),
            quotas: Quotas::default(),
        }
    }
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

struct Inner {
    readers: Pool,
    writers: Pool,
    metrics: WriterMetrics,
    quotas: Quotas,
    /// The connection settings (for the LISTEN connection).
    cfg: tokio_postgres::Config,
    /// This process's mark on the samples it stores (their `writer`), never 0: its tail
    /// skips them.
    writer: i64,
    /// The same as this process's name on the samples channel: its own notifications are
    /// ignored.
    me: String,
    /// Poked after each ingest that stored a sample: the [`notifier`] sends the
    /// notification.
    poke: Arc<tokio::sync::Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The notifier sees the store gone and returns.
        self.poke.notify_one();
    }
}

/// The channel the [`notifier`] notifies after ingests (payload: the writer's `me`).
const SAMPLES_CHANNEL: &str = "plb_samples";

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// A pool of at most `max` connections, named `plb-balancer {role}` in
/// `pg_stat_activity` unless the URL names them.
fn pool(cfg: &tokio_postgres::Config, role: &str, max: usize) -> Result<Pool, StoreError> {
    let mut cfg = cfg.clone();
    if cfg.get_application_name().is_none() {
        cfg.application_name(format!("plb-balancer {role}"));
    }
    // Short statements, run often, planned once per connection: JIT compiling a generic
    // plan whose estimate is high (a LIMIT given as a parameter) costs more than the
    // statement (150 ms against 15 ms for the samples tail).
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c jit=off"),
        _ => "-c jit=off".to_string(),
    };
    cfg.options(&options);
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StoreError::PostgresPool(e.to_string()))
}

impl PgStore {
    /// Connects to the database at `url` and applies the migrations it lacks (in one
    /// transaction, under an advisory lock, so replicas starting together migrate once).
    pub async fn open(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let mut cfg: tokio_postgres::Config = url.parse()?;
        cfg.connect_timeout(Duration::from_secs(10));
        let writer = loop {
            let w = rand::random::<i64>();
            if w != 0 {
                break w;
            }
        };
        let store = PgStore {
            inner: Arc::new(Inner {
                readers: pool(&cfg, "reader", opts.readers)?,
                writers: pool(&cfg, "writer", opts.writers)?,
                metrics: opts.metrics,
                quotas: opts.quotas,
                cfg: cfg.clone(),
                writer,
                me: format!("{writer:016x}"),
                poke: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        let mut c = store.inner.writers.get().await?;
        schema::migrate(&mut c).await?;
        tokio::spawn(notifier(
            Arc::downgrade(&store.inner),
            Arc::clone(&store.inner.poke),
        ));
        Ok(store)
    }

    /// Closes every connection; later calls fail with [`StoreError::Closed`].
    pub fn close(&self) {
        self.inner.readers.close();
        self.inner.writers.close();
        self.inner.poke.notify_one();
    }
}

/// The least time between two notifications from one process.
const NOTIFY_GAP: Duration = Duration::from_millis(10);

/// Wakes the other replicas' tails after ingests: one `NOTIFY`, in its own statement,
/// for all the commits since the last one. Inside each ingest transaction, a `NOTIFY`
/// made every commit on the database queue behind one global lock (PostgreSQL takes it
/// at the commit of any transaction that notified); here it follows the commits it
/// reports, so a tail woken by it reads them. Returns when the store is dropped or
/// closed.
async fn notifier(inner: std::sync::Weak<Inner>, poke: Arc<tokio::sync::Notify>) {
    loop {
        poke.notified().await;
        let Some(store) = inner.upgrade() else {
            return;
        };
        if store.writers.is_closed() {
            return;
        }
        let sent = match store.writers.get().await {
            Ok(c) => c
                .execute("SELECT pg_notify($1, $2)", &[&SAMPLES_CHANNEL, &store.me])
                .await
                .map(drop)
                .map_err(StoreError::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = sent {
            // The tails poll as well: a lost wake-up costs latency, not samples.
            tracing::debug!(error = %e, "sample notification not sent");
        }
        drop(store);
        tokio::time::sleep(NOTIFY_GAP).await;
    }
}

/// [`listen`] again a second after each failure.
async fn listen_forever(
    inner: Arc<Inner>,
    wake: Arc<tokio::sync::Notify>,
) -> Result<(), StoreError> {
    loop {
        listen(&inner, &wake).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One LISTEN connection on the samples channel: wakes `wake` for every notification
/// another process sent, and once when listening starts; returns when the connection
/// fails.
async fn listen(inner: &Inner, wake: &tokio::sync::Notify) {
    let mut cfg = inner.cfg.clone();
    if cfg.get_application_name().is_none() {
        cfg.application_name("plb-balancer sample tail");
    }
    let (client, mut conn) = match cfg.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "sample tail: cannot connect to LISTEN; polling");
            return;
        }
    };
    // The connection delivers notifications only while it is polled.
    let drive = async {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if n.payload() != inner.me {
                        wake.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "sample tail: LISTEN connection failed; polling");
                    return;
                }
                None => return,
            }
        }
    };
    tokio::pin!(drive);
    let sql = format!("LISTEN {SAMPLES_CHANNEL}");
    tokio::select! {
        r = client.batch_execute(&sql) => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "sample tail: LISTEN failed; polling");
                return;
            }
        }
        () = &mut drive => return,
    }
    // What was committed before LISTEN took effect is read now.
    wake.notify_one();
    drive.await;
    drop(client);
}

/// Whether a failed statement or commit is worth running the transaction again.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        ),
        _ => false,
    }
}

/// Runs `$body` (an expression over `$tx: &Tx`, evaluated again on a retry) in a
/// read-write transaction on a writer connection; resolves after the commit.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let inner = ::std::sync::Arc::clone(&$store.inner);
        let fut: StoreFuture<_> = Box::pin(async move {
            let mut tries = 0u32;
            loop {
                let started = ::std::time::Instant::now();
                let mut conn = inner.writers.get().await?;
                let tx = conn.transaction().await?;
                let out = {
                    let $tx = &tx;
                    $body.await
                };
                let out = match out {
                    Ok(v) => tx.commit().await.map(|()| v).map_err(|e| {
                        let e = StoreError::from(e);
                        if retryable(&e) {
                            e
                        } else {
                            StoreError::Commit(e.to_string())
                        }
                    }),
                    Err(e) => {
                        // A broken connection fails this too; the pool drops it.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                };
                match out {
                    Err(e) if retryable(&e) && tries + 1 < MAX_TRIES => {
                        tries += 1;
                        tracing::debug!(error = %e, tries, "retrying a store transaction");
                    }
                    Err(StoreError::Commit(e)) => {
                        inner.metrics.observe_commit(1, started.elapsed(), false);
                        return Err(StoreError::Commit(e));
                    }
                    other => {
                        if other.is_ok() {
                            inner.metrics.observe_commit(1, started.elapsed(), true);
                        }
                        return other;
                    }
                }
            }
        });
        fut
    }};
}

/// Runs `$body` (an expression over `$tx: &Tx`) in a read-only `REPEATABLE READ`
/// transaction on a reader connection: one snapshot for all its statements.
macro_rules! read_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let inner = ::std::sync::Arc::clone(&$store.inner);
        let fut: StoreFuture<_> = Box::pin(async move {
            let mut conn = inner.readers.get().await?;
            let tx = conn
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let out = {
                let $tx = &tx;
                $body.await
            }?;
            tx.commit().await?;
            Ok(out)
        });
        fut
    }};
}

/// Rows of `sql` with `params` (a statement prepared once per connection).
pub(super) async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, params).await?)
}

/// The row of `sql`, if any (an error if more than one).
pub(super) async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, params).await?)
}

/// The one row of `sql`.
pub(super) async fn query_one(
    tx: &Tx<'_>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, StoreError> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&st, params).await?)
}

/// Rows changed by `sql`.
pub(super) async fn execute(
    tx: &Tx<'_>,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, params).await?)
}

/// The first column of `sql`'s one row, a count, as u64.
pub(super) async fn count(tx: &Tx<'_>, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
    let n: i64 = query_one(tx, sql, params).await?.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Locks the client's row until the transaction ends: the quota counts and names a write
/// checks cannot change under it. Answers whether the client exists and is not revoked.
pub(super) async fn lock_client(tx: &Tx<'_>, client_id: i64) -> Result<bool, StoreError> {
    Ok(query_opt(
        tx,
        "SELECT revoked_at_ms IS NULL FROM clients WHERE id = $1 FOR UPDATE",
        &[&client_id],
    )
    .await?
    .map(|r| r.try_get::<_, bool>(0))
    .transpose()?
    .unwrap_or(false))
}

/// Key of the advisory lock that writes creating or removing modules take.
const MODULES_LOCK: i64 = 0x504c_425f_4d4f_4453; // "PLB_MODS"

/// Serialises the writes that add or remove modules (shared by sha256 across clients).
pub(super) async fn lock_modules(tx: &Tx<'_>) -> Result<(), StoreError> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&MODULES_LOCK]).await?;
    Ok(())
}

/// `s` as PostgreSQL text: NUL (which `text` cannot hold) replaced by U+FFFD.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A stored count or version as the wire's u32.
pub(super) fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A stored count as the wire's u64.
pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A limit as a bind parameter.
pub(super) fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn ping(&self) -> StoreFuture<()> {
        read_tx!(self, |tx| async move {
            query_one(tx, "SELECT 1", &[]).await.map(drop)
        })
    }

    fn token_owner(&self, hash: TokenHash, agent: bool) -> StoreFuture<Option<TokenOwner>> {
        read_tx!(self, |tx| clients::token_owner(tx, &hash, agent))
    }

    fn create_client(&self, name: String, hash: TokenHash, now_ms: i64) -> StoreFuture<i64> {
        write_tx!(self, |tx| clients::create_client(tx, &name, &hash, now_ms))
    }

    fn revoke_client(&self, id: i64, now_ms: i64) -> StoreFuture<()> {
        write_tx!(self, |tx| clients::revoke_client(tx, id, now_ms))
    }

    fn create_agent_token(
        &self,
        client_id: i64,
        pools: Vec<String>,
        hash: TokenHash,
        now_ms: i64,
    ) -> StoreFuture<i64> {
        let q = self.inner.quotas;
        write_tx!(self, |tx| clients::create_agent_token(
            tx, client_id, &pools, &hash, now_ms, &q
        ))
    }

    fn revoke_agent_token(&self, id: i64, owner: Option<i64>, now_ms: i64) -> StoreFuture<()> {
        write_tx!(self, |tx| clients::revoke_agent_token(
            tx, id, owner, now_ms
        ))
    }

    fn create_pool(&self, client_id: i64, req: CreatePool, now_ms: i64) -> StoreFuture<PoolView> {
        let q = self.inner.quotas;
        write_tx!(self, |tx| pools::create_pool(
            tx, client_id, &req, now_ms, &q
        ))
    }

    fn list_pools(&self, client_id: i64) -> StoreFuture<Vec<PoolView>> {
        read_tx!(self, |tx| pools::list_pools(tx, client_id))
    }

    fn get_pool(&self, client_id: i64, pool: String) -> StoreFuture<PoolView> {
        read_tx!(self, |tx| pools::get_pool(tx, client_id, &pool))
    }

    fn put_probe(&self, p: NewProbeVersion) -> StoreFuture<PutProbe> {
        let q = self.inner.quotas;
        write_tx!(self, |tx| probes::put_probe(tx, &p, &q))
    }

    fn list_probes(&self, client_id: i64, pool: String) -> StoreFuture<Vec<ProbeView>> {
        read_tx!(self, |tx| probes::list_probes(tx, client_id, &pool))
    }

    fn get_probe(&self, client_id: i64, pool: String, name: String) -> StoreFuture<ProbeView> {
        read_tx!(self, |tx| probes::get_probe(tx, client_id, &pool, &name))
    }

    fn check_upload(&self, client_id: i64, pool: String, name: String) -> StoreFuture<()> {
        let q = self.inner.quotas;
        read_tx!(self, |tx| probes::check_upload(
            tx, client_id, &pool, &name, &q
        ))
    }

    fn check_probe_version(&self, p: NewProbeVersion) -> StoreFuture<()> {
        let q = self.inner.quotas;
        read_tx!(self, |tx| async {
            probes::plan_put(tx, &p, &q).await.map(drop)
        })
    }

    fn delete_probe(
        &self,
        client_id: i64,
        pool: String,
        name: String,
        now_ms: i64,
    ) -> StoreFuture<()> {
        write_tx!(self, |tx| probes::delete_probe(
            tx, client_id, &pool, &name, now_ms
        ))
    }

    fn register_node(
        &self,
        token_id: i64,
        client_id: i64,
        req: RegisterRequest,
        now_ms: i64,
    ) -> StoreFuture<()> {
        let q = self.inner.quotas;
        write_tx!(self, |tx| nodes::register_node(
            tx, token_id, client_id, &req, now_ms, &q
        ))
    }

    fn assignments(&self, token_id: i64, client_id: i64, node: String) -> StoreFuture<Assignments> {
        read_tx!(self, |tx| nodes::assignments(
            tx, token_id, client_id, &node
        ))
    }

    fn module(&self, token_id: i64, sha256: String) -> StoreFuture<Bytes> {
        read_tx!(self, |tx| probes::module(tx, token_id, &sha256))
    }

    fn ingest(&self, ingest: Ingest) -> StoreFuture<Ingested> {
        let store = Arc::clone(&self.inner);
        let writer = store.writer;
        let commit = write_tx!(self, |tx| samples::ingest(tx, &ingest, writer));
        Box::pin(async move {
            let ingested = commit.await?;
            if !ingested.stored.is_empty() {
                store.poke.notify_one();
            }
            Ok(ingested)
        })
    }

    fn listen_samples(&self, wake: Arc<tokio::sync::Notify>) -> StoreFuture<()> {
        Box::pin(listen_forever(Arc::clone(&self.inner), wake))
    }

    fn tail_start(&self) -> StoreFuture<Option<i64>> {
        read_tx!(self, |tx| samples::tail_start(tx))
    }

    fn tail_samples(&self, after: i64, also: Vec<i64>, limit: i64) -> StoreFuture<TailPage> {
        let inner = Arc::clone(&self.inner);
        // One statement, one snapshot: no transaction around it (two round trips fewer
        // on a read that runs each time another replica commits).
        Box::pin(async move {
            let conn = inner.readers.get().await?;
            samples::tail_samples(&conn, after, &also, limit, inner.writer).await
        })
    }

    fn pool_nodes(&self, client_id: i64, pool: String) -> StoreFuture<PoolNodes> {
        read_tx!(self, |tx| nodes::pool_nodes(tx, client_id, &pool))
    }

    fn fold(
        &self,
        raw_before_ms: i64,
        aggregates_before_ms: i64,
        max_samples: usize,
    ) -> StoreFuture<FoldStats> {
        write_tx!(self, |tx| fold::fold(
            tx,
            raw_before_ms,
            aggregates_before_ms,
            max_samples
        ))
    }

    fn collect_modules(&self, superseded_before_ms: i64) -> StoreFuture<ModuleGc> {
        write_tx!(self, |tx| probes::collect_modules(tx, superseded_before_ms))
    }

    fn engine_topology(&self) -> StoreFuture<Vec<PoolTopology>> {
        read_tx!(self, |tx| engine::topology(tx))
    }

    fn recent_samples(&self, since_ms: i64, limit: usize) -> StoreFuture<Vec<WarmSample>> {
        read_tx!(self, |tx| engine::recent_samples(tx, since_ms, limit))
    }

    fn engine_write(&self, w: EngineWrites) -> StoreFuture<()> {
        write_tx!(self, |tx| engine::write(tx, &w))
    }

    fn state_changes(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        node: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<NodeStateChange>> {
        read_tx!(self, |tx| engine::state_changes(
            tx,
            client_id,
            &pool,
            since_ms,
            node.as_deref(),
            limit
        ))
    }

    fn route_decisions(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        max_minutes: usize,
    ) -> StoreFuture<Vec<MinuteDecisions>> {
        read_tx!(self, |tx| engine::route_decisions(
            tx,
            client_id,
            &pool,
            since_ms,
            max_minutes
        ))
    }

    fn node_probe_samples(
        &self,
        client_id: i64,
        pool: String,
        node: String,
        probe: String,
        since_ms: i64,
        limit: usize,
    ) -> StoreFuture<Vec<TimedMetrics>> {
        read_tx!(self, |tx| history::node_probe_samples(
            tx, client_id, &pool, &node, &probe, since_ms, limit
        ))
    }

    fn forecast_errors(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        limit: usize,
    ) -> StoreFuture<Vec<ForecastErrorRecord>> {
        read_tx!(self, |tx| engine::forecast_errors(
            tx, client_id, &pool, since_ms, limit
        ))
    }

    fn update_pool(
        &self,
        client_id: i64,
        pool: String,
        policy: Option<PolicyKind>,
        slo_ms: Option<f64>,
    ) -> StoreFuture<PoolView> {
        write_tx!(self, |tx| pools::update_pool(
            tx, client_id, &pool, policy, slo_ms
        ))
    }
}

impl ReliabilityStore for PgStore {
    fn reliability_states(&self) -> StoreFuture<Vec<StoredReliability>> {
        read_tx!(self, |tx| reliability::states(tx))
    }

    fn replay_samples(&self, since_ms: i64, limit: usize) -> StoreFuture<Vec<ReplaySample>> {
        read_tx!(self, |tx| reliability::replay_samples(tx, since_ms, limit))
    }

    fn record_reliability(&self, r: ReliabilityRecord) -> StoreFuture<Option<Notification>> {
        write_tx!(self, |tx| reliability::record(tx, &r))
    }

    fn record_scaling(&self, r: ScalingRecord) -> StoreFuture<Notification> {
        write_tx!(self, |tx| reliability::record_scaling(tx, &r))
    }

    fn notifications(
        &self,
        client_id: i64,
        since_id: i64,
        since_ms: Option<i64>,
        limit: usize,
    ) -> StoreFuture<Vec<Notification>> {
        read_tx!(self, |tx| reliability::notifications(
            tx, client_id, since_id, since_ms, limit
        ))
    }

    fn put_webhook(
        &self,
        client_id: i64,
        pool: String,
        url: String,
        secret: String,
        now_ms: i64,
    ) -> StoreFuture<WebhookView> {
        write_tx!(self, |tx| reliability::put_webhook(
            tx, client_id, &pool, &url, &secret, now_ms
        ))
    }

    fn get_webhook(&self, client_id: i64, pool: String) -> StoreFuture<WebhookView> {
        read_tx!(self, |tx| reliability::get_webhook(tx, client_id, &pool))
    }

    fn delete_webhook(&self, client_id: i64, pool: String) -> StoreFuture<()> {
        write_tx!(self, |tx| reliability::delete_webhook(tx, client_id, &pool))
    }

    fn due_deliveries(&self, limit: usize) -> StoreFuture<Vec<DueDelivery>> {
        read_tx!(self, |tx| reliability::due(tx, limit))
    }

    fn next_delivery_due(&self) -> StoreFuture<Option<i64>> {
        read_tx!(self, |tx| reliability::next_due(tx))
    }

    fn record_attempt(&self, a: AttemptRecord) -> StoreFuture<()> {
        write_tx!(self, |tx| reliability::record_attempt(tx, &a))
    }

    fn webhook_deliveries(
        &self,
        client_id: i64,
        pool: String,
        limit: usize,
    ) -> StoreFuture<Vec<WebhookDelivery>> {
        read_tx!(self, |tx| reliability::deliveries(
            tx, client_id, &pool, limit
        ))
    }
}
