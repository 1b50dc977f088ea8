//! [`SqliteStore`]: the [`Store`] over one SQLite file (bundled SQLite, WAL, foreign keys
//! on): opening and migrating it, its options, and the writer/reader plumbing. Writes go
//! to the group-committing writer thread, reads to a pool of read-only connections on
//! blocking threads; nothing here runs on an async worker. The SQL itself lives in one
//! module per group of tables (`clients_sql`, `pools_sql`, `probes_sql`, `nodes_sql`,
//! `samples_sql`, `engine_sql`, `history_sql`, `reliability_sql`, `fold`): plain
//! synchronous functions over a `&Connection` that this file's `impl Store` delegates to.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plb_api::{
    Assignments, CreatePool, ForecastErrorRecord, NodeStateChange, PoolNodes, PoolView, ProbeView,
    RegisterRequest,
};
use plb_routing::PolicyKind;
use rusqlite::Connection;

use super::readers::{MMAP_BYTES, Readers};
use super::writer::{Writer, WriterMetrics};
use super::{
    EngineWrites, FoldStats, Ingest, Ingested, MinuteDecisions, ModuleGc, NewProbeVersion,
    PoolTopology, PutProbe, Quotas, Store, StoreError, StoreFuture, TimedMetrics, TokenHash,
    TokenOwner, WarmSample, clients_sql, engine_sql, fold, history_sql, nodes_sql, pools_sql,
    probes_sql, samples_sql, schema,
};

/// SQLite's `synchronous` setting for the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Synchronous {
    /// A commit survives a crash of the process (`kill -9`), not of the machine.
    #[default]
    Normal,
    /// A commit also survives a power loss: one fsync per commit.
    Full,
}

impl Synchronous {
    fn as_str(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of a commit.
    pub synchronous: Synchronous,
    /// Read connections open at most; more reads wait for one.
    pub readers: usize,
    /// Writes that may wait for the writer before callers are held back.
    pub writer_queue: usize,
    /// The writer's counters.
    pub metrics: WriterMetrics,
    /// Per-client quotas.
    pub quotas: Quotas,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            readers: 4,
            writer_queue: 4096,
            metrics: WriterMetrics::default(),
            quotas: Quotas::default(),
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: Arc<Readers>,
    quotas: Quotas,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`, then starts the
    /// writer thread. Blocking: call it before serving or from a blocking thread.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Only takes effect on a new file: lets retention give freed pages back.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "{} cannot use WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", opts.synchronous.as_str())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        // Index pages of a large samples table stay in memory: 64 MiB of page cache
        // (negative: KiB) and reads through a memory map instead of a syscall per page.
        conn.pragma_update(None, "cache_size", -64 * 1024)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrations().to_latest(&mut conn)?;
        let (writer, _thread) = Writer::start(conn, opts.metrics, opts.writer_queue)
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Arc::new(writer),
            readers: Readers::new(path.to_path_buf(), opts.readers),
            quotas: opts.quotas,
        })
    }

    pub(super) fn write<T, F>(&self, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let w = Arc::clone(&self.writer);
        Box::pin(async move { w.write(f).await })
    }

    pub(super) fn read<T, F>(&self, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let r = Arc::clone(&self.readers);
        Box::pin(async move { r.read(f).await })
    }
}

impl Store for SqliteStore {
    fn ping(&self) -> StoreFuture<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    fn token_owner(&self, hash: TokenHash, agent: bool) -> StoreFuture<Option<TokenOwner>> {
        self.read(move |c| clients_sql::token_owner(c, &hash, agent))
    }

    fn create_client(&self, name: String, hash: TokenHash, now_ms: i64) -> StoreFuture<i64> {
        self.write(move |c| clients_sql::create_client(c, &name, &hash, now_ms))
    }

    fn revoke_client(&self, id: i64, now_ms: i64) -> StoreFuture<()> {
        self.write(move |c| clients_sql::revoke_client(c, id, now_ms))
    }

    fn create_agent_token(
        &self,
        client_id: i64,
        pools: Vec<String>,
        hash: TokenHash,
        now_ms: i64,
    ) -> StoreFuture<i64> {
        let q = self.quotas;
        self.write(move |c| {
            clients_sql::create_agent_token(c, client_id, &pools, &hash, now_ms, &q)
        })
    }

    fn revoke_agent_token(&self, id: i64, owner: Option<i64>, now_ms: i64) -> StoreFuture<()> {
        self.write(move |c| clients_sql::revoke_agent_token(c, id, owner, now_ms))
    }

    fn create_pool(&self, client_id: i64, req: CreatePool, now_ms: i64) -> StoreFuture<PoolView> {
        let q = self.quotas;
        self.write(move |c| pools_sql::create_pool(c, client_id, &req, now_ms, &q))
    }

    fn list_pools(&self, client_id: i64) -> StoreFuture<Vec<PoolView>> {
        self.read(move |c| pools_sql::list_pools(c, client_id))
    }

    fn get_pool(&self, client_id: i64, pool: String) -> StoreFuture<PoolView> {
        self.read(move |c| pools_sql::get_pool(c, client_id, &pool))
    }

    fn put_probe(&self, p: NewProbeVersion) -> StoreFuture<PutProbe> {
        let q = self.quotas;
        self.write(move |c| probes_sql::put_probe(c, p, &q))
    }

    fn check_upload(&self, client_id: i64, pool: String, name: String) -> StoreFuture<()> {
        let q = self.quotas;
        self.read(move |c| probes_sql::check_upload(c, client_id, &pool, &name, &q))
    }

    fn check_probe_version(&self, p: NewProbeVersion) -> StoreFuture<()> {
        let q = self.quotas;
        self.read(move |c| probes_sql::plan_put(c, &p, &q).map(drop))
    }

    fn collect_modules(&self, superseded_before_ms: i64) -> StoreFuture<ModuleGc> {
        self.write(move |c| probes_sql::collect_modules(c, superseded_before_ms))
    }

    fn list_probes(&self, client_id: i64, pool: String) -> StoreFuture<Vec<ProbeView>> {
        self.read(move |c| probes_sql::list_probes(c, client_id, &pool))
    }

    fn get_probe(&self, client_id: i64, pool: String, name: String) -> StoreFuture<ProbeView> {
        self.read(move |c| probes_sql::get_probe(c, client_id, &pool, &name))
    }

    fn delete_probe(
        &self,
        client_id: i64,
        pool: String,
        name: String,
        now_ms: i64,
    ) -> StoreFuture<()> {
        self.write(move |c| probes_sql::delete_probe(c, client_id, &pool, &name, now_ms))
    }

    fn register_node(
        &self,
        token_id: i64,
        client_id: i64,
        req: RegisterRequest,
        now_ms: i64,
    ) -> StoreFuture<()> {
        let q = self.quotas;
        self.write(move |c| nodes_sql::register_node(c, token_id, client_id, req, now_ms, &q))
    }

    fn assignments(&self, token_id: i64, client_id: i64, node: String) -> StoreFuture<Assignments> {
        self.read(move |c| nodes_sql::assignments(c, token_id, client_id, node))
    }

    fn module(&self, token_id: i64, sha256: String) -> StoreFuture<Bytes> {
        self.read(move |c| probes_sql::module(c, token_id, &sha256))
    }

    fn ingest(&self, ingest: Ingest) -> StoreFuture<Ingested> {
        self.write(move |c| samples_sql::ingest(c, ingest))
    }

    fn pool_nodes(&self, client_id: i64, pool: String) -> StoreFuture<PoolNodes> {
        self.read(move |c| nodes_sql::pool_nodes(c, client_id, pool))
    }

    fn fold(
        &self,
        raw_before_ms: i64,
        aggregates_before_ms: i64,
        max_samples: usize,
    ) -> StoreFuture<FoldStats> {
        self.write(move |c| fold::fold(c, raw_before_ms, aggregates_before_ms, max_samples))
    }

    fn engine_topology(&self) -> StoreFuture<Vec<PoolTopology>> {
        self.read(engine_sql::topology)
    }

    fn recent_samples(&self, since_ms: i64, limit: usize) -> StoreFuture<Vec<WarmSample>> {
        self.read(move |c| engine_sql::recent_samples(c, since_ms, limit))
    }

    fn engine_write(&self, w: EngineWrites) -> StoreFuture<()> {
        self.write(move |c| engine_sql::write(c, w))
    }

    fn state_changes(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        node: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<NodeStateChange>> {
        self.read(move |c| {
            engine_sql::state_changes(c, client_id, &pool, since_ms, node.as_deref(), limit)
        })
    }

    fn route_decisions(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        max_minutes: usize,
    ) -> StoreFuture<Vec<MinuteDecisions>> {
        self.read(move |c| engine_sql::route_decisions(c, client_id, &pool, since_ms, max_minutes))
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
        self.read(move |c| {
            history_sql::node_probe_samples(c, client_id, &pool, &node, &probe, since_ms, limit)
        })
    }

    fn forecast_errors(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        limit: usize,
    ) -> StoreFuture<Vec<ForecastErrorRecord>> {
        self.read(move |c| engine_sql::forecast_errors(c, client_id, &pool, since_ms, limit))
    }

    fn update_pool(
        &self,
        client_id: i64,
        pool: String,
        policy: Option<PolicyKind>,
        slo_ms: Option<f64>,
    ) -> StoreFuture<PoolView> {
        self.write(move |c| pools_sql::update_pool(c, client_id, &pool, policy, slo_ms))
    }
}
