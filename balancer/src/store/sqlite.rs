//! [`SqliteStore`]: the [`Store`] over one SQLite file (bundled SQLite, WAL, foreign keys
//! on). Writes go to the group-committing writer thread, reads to a pool of read-only
//! connections on blocking threads; nothing here runs on an async worker.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plb_api::{
    Assignment, Assignments, CreatePool, NODE_SAMPLER_PROBE, NodeView, PoolNodes, PoolView,
    ProbeSettings, ProbeView, RegisterRequest, ReportAck, Sample,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rusqlite::{Connection, OptionalExtension, params};

use super::readers::Readers;
use super::writer::Writer;
use super::{
    EngineWrites, FoldStats, Ingest, Ingested, NewProbeVersion, PoolTopology, PutProbe, Store,
    StoreError, StoreFuture, TokenHash, TokenOwner, WarmSample, engine_sql, fold, schema,
};
use plb_api::{ForecastErrorRecord, NodeStateChange};

/// Bytes of the database file read through a memory map, per connection.
pub(crate) const MMAP_BYTES: i64 = 256 * 1024 * 1024;

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

/// Counters of the writer thread, registered in `/metrics` by the caller.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Transactions committed.
    pub commits: Counter,
    /// Transactions that failed to commit.
    pub failed_commits: Counter,
    /// Writes per transaction.
    pub group_size: Histogram,
    /// Time to run and commit one transaction, in seconds.
    pub commit_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            commits: Counter::default(),
            failed_commits: Counter::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl WriterMetrics {
    pub(crate) fn observe_commit(&self, jobs: usize, took: Duration, ok: bool) {
        if ok {
            self.commits.inc();
        } else {
            self.failed_commits.inc();
        }
        self.group_size.observe(jobs as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of a commit.
    pub synchronous: Synchronous,
    /// Read connections kept open.
    pub readers: usize,
    /// Writes that may wait for the writer before callers are held back.
    pub writer_queue: usize,
    /// The writer's counters.
    pub metrics: WriterMetrics,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            readers: 4,
            writer_queue: 4096,
            metrics: WriterMetrics::default(),
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: Arc<Readers>,
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
        self.read(move |c| token_owner(c, &hash, agent))
    }

    fn create_client(&self, name: String, hash: TokenHash, now_ms: i64) -> StoreFuture<i64> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO clients (name, token_hash, created_at_ms) VALUES (?1, ?2, ?3)",
                params![name, &hash[..], now_ms],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn revoke_client(&self, id: i64, now_ms: i64) -> StoreFuture<()> {
        self.write(move |c| {
            let n = c.execute(
                "UPDATE clients SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![id, now_ms],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("client {id}")));
            }
            c.execute(
                "UPDATE agent_tokens SET revoked_at_ms = ?2
                 WHERE client_id = ?1 AND revoked_at_ms IS NULL",
                params![id, now_ms],
            )?;
            Ok(())
        })
    }

    fn create_agent_token(
        &self,
        client_id: i64,
        pools: Vec<String>,
        hash: TokenHash,
        now_ms: i64,
    ) -> StoreFuture<i64> {
        self.write(move |c| {
            let live: Option<i64> = c
                .query_row(
                    "SELECT id FROM clients WHERE id = ?1 AND revoked_at_ms IS NULL",
                    [client_id],
                    |r| r.get(0),
                )
                .optional()?;
            if live.is_none() {
                return Err(StoreError::NotFound(format!("client {client_id}")));
            }
            let mut ids = BTreeSet::new();
            for p in &pools {
                ids.insert(pool_id(c, client_id, p)?);
            }
            c.execute(
                "INSERT INTO agent_tokens (client_id, token_hash, created_at_ms) VALUES (?1, ?2, ?3)",
                params![client_id, &hash[..], now_ms],
            )?;
            let token_id = c.last_insert_rowid();
            let mut ins = c.prepare_cached(
                "INSERT INTO agent_token_pools (token_id, pool_id) VALUES (?1, ?2)",
            )?;
            for pid in ids {
                ins.execute(params![token_id, pid])?;
            }
            Ok(token_id)
        })
    }

    fn revoke_agent_token(&self, id: i64, owner: Option<i64>, now_ms: i64) -> StoreFuture<()> {
        self.write(move |c| {
            let n = c.execute(
                "UPDATE agent_tokens SET revoked_at_ms = ?2
                 WHERE id = ?1 AND revoked_at_ms IS NULL AND (?3 IS NULL OR client_id = ?3)",
                params![id, now_ms, owner],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("agent token {id}")));
            }
            Ok(())
        })
    }

    fn create_pool(&self, client_id: i64, req: CreatePool, now_ms: i64) -> StoreFuture<PoolView> {
        self.write(move |c| {
            let exists: Option<i64> = c
                .query_row(
                    "SELECT id FROM pools WHERE client_id = ?1 AND name = ?2",
                    params![client_id, req.name],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!(
                    "pool `{}` exists already",
                    req.name
                )));
            }
            c.execute(
                "INSERT INTO pools (client_id, name, latency_slo_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![client_id, req.name, req.latency_slo_ms, now_ms],
            )?;
            get_pool(c, client_id, &req.name)
        })
    }

    fn list_pools(&self, client_id: i64) -> StoreFuture<Vec<PoolView>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "{POOL_VIEW} WHERE p.client_id = ?1 ORDER BY p.name"
            ))?;
            let rows = stmt.query_map([client_id], pool_view)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_pool(&self, client_id: i64, pool: String) -> StoreFuture<PoolView> {
        self.read(move |c| get_pool(c, client_id, &pool))
    }

    fn put_probe(&self, p: NewProbeVersion) -> StoreFuture<PutProbe> {
        self.write(move |c| put_probe(c, p))
    }

    fn list_probes(&self, client_id: i64, pool: String) -> StoreFuture<Vec<ProbeView>> {
        self.read(move |c| {
            pool_id(c, client_id, &pool)?;
            let mut stmt = c.prepare_cached(&format!("{PROBE_VIEW} ORDER BY pr.name"))?;
            let rows = stmt.query_map(params![client_id, pool, None::<String>], probe_view)?;
            rows.map(|r| r?).collect()
        })
    }

    fn get_probe(&self, client_id: i64, pool: String, name: String) -> StoreFuture<ProbeView> {
        self.read(move |c| get_probe(c, client_id, &pool, &name))
    }

    fn delete_probe(
        &self,
        client_id: i64,
        pool: String,
        name: String,
        now_ms: i64,
    ) -> StoreFuture<()> {
        self.write(move |c| {
            let pid = pool_id(c, client_id, &pool)?;
            let n = c.execute(
                "UPDATE probes SET deleted_at_ms = ?3
                 WHERE pool_id = ?1 AND name = ?2 AND deleted_at_ms IS NULL",
                params![pid, name, now_ms],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "probe `{name}` in pool `{pool}`"
                )));
            }
            Ok(())
        })
    }

    fn register_node(
        &self,
        token_id: i64,
        client_id: i64,
        req: RegisterRequest,
        now_ms: i64,
    ) -> StoreFuture<()> {
        self.write(move |c| register_node(c, token_id, client_id, req, now_ms))
    }

    fn assignments(&self, token_id: i64, client_id: i64, node: String) -> StoreFuture<Assignments> {
        self.read(move |c| assignments(c, token_id, client_id, node))
    }

    fn module(&self, token_id: i64, sha256: String) -> StoreFuture<Bytes> {
        self.read(move |c| {
            let bytes: Option<Vec<u8>> = c
                .prepare_cached(
                    "SELECT m.bytes FROM modules m WHERE m.sha256 = ?2 AND EXISTS (
                       SELECT 1 FROM probe_versions pv
                       JOIN probes pr ON pr.id = pv.probe_id
                       JOIN agent_token_pools atp ON atp.pool_id = pr.pool_id
                       WHERE pv.sha256 = m.sha256 AND atp.token_id = ?1)",
                )?
                .query_row(params![token_id, sha256], |r| r.get(0))
                .optional()?;
            bytes
                .map(Bytes::from)
                .ok_or_else(|| StoreError::NotFound(format!("module {sha256}")))
        })
    }

    fn ingest(&self, ingest: Ingest) -> StoreFuture<Ingested> {
        self.write(move |c| ingest_batch(c, ingest))
    }

    fn pool_nodes(&self, client_id: i64, pool: String) -> StoreFuture<PoolNodes> {
        self.read(move |c| pool_nodes(c, client_id, pool))
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
    ) -> StoreFuture<Vec<(i64, String, u64)>> {
        self.read(move |c| engine_sql::route_decisions(c, client_id, &pool, since_ms))
    }

    fn node_probe_samples(
        &self,
        client_id: i64,
        pool: String,
        node: String,
        probe: String,
        since_ms: i64,
        limit: usize,
    ) -> StoreFuture<Vec<super::TimedMetrics>> {
        self.read(move |c| {
            super::history_sql::node_probe_samples(
                c, client_id, &pool, &node, &probe, since_ms, limit,
            )
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
        policy: Option<String>,
        slo_ms: Option<f64>,
    ) -> StoreFuture<PoolView> {
        self.write(move |c| engine_sql::update_pool(c, client_id, &pool, policy.as_deref(), slo_ms))
    }
}

fn token_owner(
    c: &Connection,
    hash: &TokenHash,
    agent: bool,
) -> Result<Option<TokenOwner>, StoreError> {
    if agent {
        Ok(c.prepare_cached(
            "SELECT t.id, t.client_id FROM agent_tokens t JOIN clients c ON c.id = t.client_id
             WHERE t.token_hash = ?1 AND t.revoked_at_ms IS NULL AND c.revoked_at_ms IS NULL",
        )?
        .query_row([&hash[..]], |r| {
            Ok(TokenOwner::Agent {
                token_id: r.get(0)?,
                client_id: r.get(1)?,
            })
        })
        .optional()?)
    } else {
        Ok(c.prepare_cached(
            "SELECT id FROM clients WHERE token_hash = ?1 AND revoked_at_ms IS NULL",
        )?
        .query_row([&hash[..]], |r| {
            Ok(TokenOwner::Client {
                client_id: r.get(0)?,
            })
        })
        .optional()?)
    }
}

pub(super) fn pool_id(c: &Connection, client_id: i64, pool: &str) -> Result<i64, StoreError> {
    c.prepare_cached("SELECT id FROM pools WHERE client_id = ?1 AND name = ?2")?
        .query_row(params![client_id, pool], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("pool `{pool}`")))
}

const POOL_VIEW: &str = "SELECT p.name, p.latency_slo_ms, p.policy, p.created_at_ms,
    (SELECT count(*) FROM pool_nodes pn WHERE pn.pool_id = p.id),
    (SELECT count(*) FROM probes pr WHERE pr.pool_id = p.id AND pr.deleted_at_ms IS NULL)
    FROM pools p";

fn pool_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<PoolView> {
    Ok(PoolView {
        name: r.get(0)?,
        latency_slo_ms: r.get(1)?,
        policy: r.get(2)?,
        created_at_ms: r.get(3)?,
        nodes: r.get(4)?,
        probes: r.get(5)?,
    })
}

pub(super) fn get_pool(c: &Connection, client_id: i64, pool: &str) -> Result<PoolView, StoreError> {
    c.prepare_cached(&format!(
        "{POOL_VIEW} WHERE p.client_id = ?1 AND p.name = ?2"
    ))?
    .query_row(params![client_id, pool], pool_view)
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("pool `{pool}`")))
}

/// Active probes of one client's pool; `?3` NULL for all, else one name.
const PROBE_VIEW: &str = "SELECT p.name, pr.name, pv.version, pv.sha256, m.size, pv.settings,
    pv.created_at_ms
    FROM probes pr JOIN pools p ON p.id = pr.pool_id
    JOIN probe_versions pv ON pv.probe_id = pr.id AND pv.version = pr.version
    JOIN modules m ON m.sha256 = pv.sha256
    WHERE p.client_id = ?1 AND p.name = ?2 AND pr.deleted_at_ms IS NULL
      AND (?3 IS NULL OR pr.name = ?3)";

fn probe_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ProbeView, StoreError>> {
    let settings: String = r.get(5)?;
    let settings = match serde_json::from_str::<ProbeSettings>(&settings) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(Ok(ProbeView {
        pool: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        sha256: r.get(3)?,
        size: r.get(4)?,
        settings,
        created_at_ms: r.get(6)?,
    }))
}

fn get_probe(
    c: &Connection,
    client_id: i64,
    pool: &str,
    name: &str,
) -> Result<ProbeView, StoreError> {
    pool_id(c, client_id, pool)?;
    c.prepare_cached(PROBE_VIEW)?
        .query_row(params![client_id, pool, name], probe_view)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("probe `{name}` in pool `{pool}`")))?
}

fn put_probe(c: &Connection, p: NewProbeVersion) -> Result<PutProbe, StoreError> {
    let pid = pool_id(c, p.client_id, &p.pool)?;
    let existing: Option<(i64, u32, bool)> = c
        .query_row(
            "SELECT id, version, deleted_at_ms IS NOT NULL FROM probes
             WHERE pool_id = ?1 AND name = ?2",
            params![pid, p.name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((_, _, false)) = existing {
        let active = get_probe(c, p.client_id, &p.pool, &p.name)?;
        if active.sha256 == p.sha256 && active.settings == p.settings {
            return Ok(PutProbe::Unchanged(active));
        }
    }
    c.execute(
        "INSERT INTO modules (sha256, bytes, size, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sha256) DO NOTHING",
        params![p.sha256, &p.module[..], p.module.len() as i64, p.now_ms],
    )?;
    let (probe_id, version) = match existing {
        Some((id, v, _)) => {
            let v = v + 1;
            c.execute(
                "UPDATE probes SET version = ?2, deleted_at_ms = NULL WHERE id = ?1",
                params![id, v],
            )?;
            (id, v)
        }
        None => {
            c.execute(
                "INSERT INTO probes (pool_id, name, version) VALUES (?1, ?2, 1)",
                params![pid, p.name],
            )?;
            (c.last_insert_rowid(), 1)
        }
    };
    c.execute(
        "INSERT INTO probe_versions (probe_id, version, sha256, settings, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            probe_id,
            version,
            p.sha256,
            serde_json::to_string(&p.settings)?,
            p.now_ms
        ],
    )?;
    Ok(PutProbe::Created(get_probe(
        c,
        p.client_id,
        &p.pool,
        &p.name,
    )?))
}

fn register_node(
    c: &Connection,
    token_id: i64,
    client_id: i64,
    req: RegisterRequest,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut pools = BTreeSet::new();
    for name in &req.pools {
        let id: Option<i64> = c
            .prepare_cached(
                "SELECT p.id FROM agent_token_pools atp JOIN pools p ON p.id = atp.pool_id
                 WHERE atp.token_id = ?1 AND p.name = ?2",
            )?
            .query_row(params![token_id, name], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => pools.insert(id),
            None => {
                return Err(StoreError::Forbidden(format!(
                    "this agent token is not enrolled for pool `{name}`"
                )));
            }
        };
    }
    let bound: Option<String> = c
        .query_row(
            "SELECT name FROM nodes WHERE agent_token_id = ?1 LIMIT 1",
            [token_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(bound) = bound
        && bound != req.node
    {
        return Err(StoreError::Forbidden(format!(
            "this agent token registered node `{bound}`; it cannot register node `{}`",
            req.node
        )));
    }
    let labels = serde_json::to_string(&req.labels)?;
    let existing: Option<(i64, i64, bool)> = c
        .query_row(
            "SELECT n.id, n.agent_token_id, t.revoked_at_ms IS NOT NULL
             FROM nodes n JOIN agent_tokens t ON t.id = n.agent_token_id
             WHERE n.client_id = ?1 AND n.name = ?2",
            params![client_id, req.node],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let node_id = match existing {
        Some((_, other, false)) if other != token_id => {
            return Err(StoreError::Forbidden(format!(
                "node `{}` is registered by another agent token; revoke that one first",
                req.node
            )));
        }
        Some((id, _, _)) => {
            // Re-registration, or a new token taking over from a revoked one.
            c.execute(
                "UPDATE nodes SET agent_token_id = ?2, address = ?3, labels = ?4,
                   registered_at_ms = ?5, last_seen_ms = ?5 WHERE id = ?1",
                params![id, token_id, req.address, labels, now_ms],
            )?;
            id
        }
        None => {
            c.execute(
                "INSERT INTO nodes (client_id, name, address, labels, agent_token_id,
                   registered_at_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![client_id, req.node, req.address, labels, token_id, now_ms],
            )?;
            c.last_insert_rowid()
        }
    };
    let current: BTreeSet<i64> = c
        .prepare_cached("SELECT pool_id FROM pool_nodes WHERE node_id = ?1")?
        .query_map([node_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for gone in current.difference(&pools) {
        c.execute(
            "DELETE FROM pool_nodes WHERE pool_id = ?1 AND node_id = ?2",
            params![gone, node_id],
        )?;
    }
    for new in pools.difference(&current) {
        c.execute(
            "INSERT INTO pool_nodes (pool_id, node_id, joined_at_ms) VALUES (?1, ?2, ?3)",
            params![new, node_id, now_ms],
        )?;
    }
    Ok(())
}

/// The node's row id, checked to belong to the agent token.
fn own_node(
    c: &Connection,
    token_id: i64,
    client_id: i64,
    node: &str,
) -> Result<(i64, String), StoreError> {
    let row: Option<(i64, i64, String)> = c
        .prepare_cached(
            "SELECT id, agent_token_id, address FROM nodes WHERE client_id = ?1 AND name = ?2",
        )?
        .query_row(params![client_id, node], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match row {
        None => Err(StoreError::NotFound(format!(
            "node `{node}` (register it first)"
        ))),
        Some((_, owner, _)) if owner != token_id => Err(StoreError::Forbidden(format!(
            "this agent token did not register node `{node}`"
        ))),
        Some((id, _, address)) => Ok((id, address)),
    }
}

fn assignments(
    c: &Connection,
    token_id: i64,
    client_id: i64,
    node: String,
) -> Result<Assignments, StoreError> {
    let (node_id, address) = own_node(c, token_id, client_id, &node)?;
    let mut stmt = c.prepare_cached(
        "SELECT p.name, pr.name, pv.version, pv.sha256, pv.settings
         FROM pool_nodes pn JOIN pools p ON p.id = pn.pool_id
         JOIN probes pr ON pr.pool_id = p.id AND pr.deleted_at_ms IS NULL
         JOIN probe_versions pv ON pv.probe_id = pr.id AND pv.version = pr.version
         WHERE pn.node_id = ?1 ORDER BY p.name, pr.name",
    )?;
    let mut rows = stmt.query([node_id])?;
    let mut probes = Vec::new();
    while let Some(r) = rows.next()? {
        let s: ProbeSettings = serde_json::from_str(&r.get::<_, String>(4)?)?;
        probes.push(Assignment {
            pool: r.get(0)?,
            probe: r.get(1)?,
            version: r.get(2)?,
            sha256: r.get(3)?,
            tier: s.tier,
            interval_ms: s.interval_ms,
            timeout_ms: s.timeout_ms,
            fuel: s.fuel,
            memory_mib: s.memory_mib,
            config: s.config,
        });
    }
    Ok(Assignments {
        node,
        address,
        probes,
    })
}

fn ingest_batch(c: &Connection, ing: Ingest) -> Result<Ingested, StoreError> {
    let Ingest {
        token_id,
        client_id,
        batch,
        now_ms,
    } = ing;
    let (node_id, _) = own_node(c, token_id, client_id, &batch.node)?;
    // Check every sample before writing any: a batch is stored whole or not at all.
    {
        let mut pool_q = c.prepare_cached(
            "SELECT p.id FROM pools p JOIN pool_nodes pn ON pn.pool_id = p.id AND pn.node_id = ?3
             WHERE p.client_id = ?1 AND p.name = ?2",
        )?;
        let mut probe_q =
            c.prepare_cached("SELECT version FROM probes WHERE pool_id = ?1 AND name = ?2")?;
        let mut pools: HashMap<&str, i64> = HashMap::new();
        let mut probes: HashMap<(&str, &str), u32> = HashMap::new();
        for s in &batch.samples {
            let pid = match pools.get(s.pool.as_str()) {
                Some(id) => *id,
                None => {
                    let id: i64 = pool_q
                        .query_row(params![client_id, s.pool, node_id], |r| r.get(0))
                        .optional()?
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "sample `{}`: node `{}` is not in pool `{}`",
                                s.id, batch.node, s.pool
                            ))
                        })?;
                    pools.insert(&s.pool, id);
                    id
                }
            };
            if s.probe == NODE_SAMPLER_PROBE {
                continue;
            }
            let newest = match probes.get(&(s.pool.as_str(), s.probe.as_str())) {
                Some(v) => *v,
                None => {
                    let v: u32 = probe_q
                        .query_row(params![pid, s.probe], |r| r.get(0))
                        .optional()?
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "sample `{}`: probe `{}` is not assigned in pool `{}`",
                                s.id, s.probe, s.pool
                            ))
                        })?;
                    probes.insert((&s.pool, &s.probe), v);
                    v
                }
            };
            if s.version == 0 || s.version > newest {
                return Err(StoreError::Invalid(format!(
                    "sample `{}`: probe `{}` in pool `{}` has no version {}",
                    s.id, s.probe, s.pool, s.version
                )));
            }
        }
    }
    let total = batch.samples.len();
    let mut stored = Vec::with_capacity(total);
    {
        let mut ins = c.prepare_cached(
            "INSERT INTO samples (node_id, id, node, pool, probe, version, taken_at_ms, outcome,
               metrics, duration_ms, fuel_used, message, stderr, received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (node_id, id) DO NOTHING",
        )?;
        for s in batch.samples {
            let fuel = s.fuel_used.map(|f| i64::try_from(f).unwrap_or(i64::MAX));
            let n = ins.execute(params![
                node_id,
                s.id,
                batch.node,
                s.pool,
                s.probe,
                s.version,
                s.taken_at_ms,
                s.outcome.as_str(),
                serde_json::to_string(&s.metrics)?,
                s.duration_ms,
                fuel,
                s.message,
                s.stderr,
                now_ms,
            ])?;
            if n == 1 {
                stored.push(s);
            }
        }
    }
    {
        let mut newest: BTreeMap<(&str, &str), &Sample> = BTreeMap::new();
        for s in &stored {
            let e = newest.entry((&s.pool, &s.probe)).or_insert(s);
            if s.taken_at_ms >= e.taken_at_ms {
                *e = s;
            }
        }
        let mut up = c.prepare_cached(
            "INSERT INTO latest_samples (node_id, pool, probe, taken_at_ms, sample)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (node_id, pool, probe) DO UPDATE SET
               taken_at_ms = excluded.taken_at_ms, sample = excluded.sample
             WHERE excluded.taken_at_ms >= latest_samples.taken_at_ms",
        )?;
        for ((pool, probe), s) in newest {
            up.execute(params![
                node_id,
                pool,
                probe,
                s.taken_at_ms,
                serde_json::to_string(s)?
            ])?;
        }
    }
    // A resent batch (every sample a duplicate) does not count its drops again.
    let dropped = if total > 0 && stored.is_empty() {
        0
    } else {
        i64::try_from(batch.dropped).unwrap_or(i64::MAX)
    };
    c.prepare_cached(
        "UPDATE nodes SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2),
           dropped_samples = dropped_samples + ?3 WHERE id = ?1",
    )?
    .execute(params![node_id, now_ms, dropped])?;
    Ok(Ingested {
        ack: ReportAck {
            accepted: stored.len(),
            duplicates: total - stored.len(),
        },
        node_id,
        stored,
    })
}

fn pool_nodes(c: &Connection, client_id: i64, pool: String) -> Result<PoolNodes, StoreError> {
    let pid = pool_id(c, client_id, &pool)?;
    let mut nodes_q = c.prepare_cached(
        "SELECT n.id, n.name, n.address, n.labels, n.registered_at_ms, n.last_seen_ms
         FROM pool_nodes pn JOIN nodes n ON n.id = pn.node_id
         WHERE pn.pool_id = ?1 ORDER BY n.name",
    )?;
    let mut latest_q = c.prepare_cached(
        "SELECT sample FROM latest_samples WHERE node_id = ?1 AND pool = ?2 ORDER BY probe",
    )?;
    let rows: Vec<(i64, String, String, String, i64, Option<i64>)> = nodes_q
        .query_map([pid], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::with_capacity(rows.len());
    for (id, name, address, labels, registered_at_ms, last_seen_ms) in rows {
        let latest = latest_q
            .query_map(params![id, pool], |r| r.get::<_, String>(0))?
            .map(|s| Ok(serde_json::from_str::<Sample>(&s?)?))
            .collect::<Result<Vec<_>, StoreError>>()?;
        nodes.push(NodeView {
            node: name,
            address,
            labels: serde_json::from_str(&labels)?,
            registered_at_ms,
            last_seen_ms,
            latest,
            assessment: None,
            routing: None,
        });
    }
    Ok(PoolNodes {
        pool,
        nodes,
        excluded_probes: Vec::new(),
    })
}
