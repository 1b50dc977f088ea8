//! The balancer's storage behind one trait. All SQL lives in this module: [`Store`] is
//! what handlers see (`Arc<dyn Store>` in the app state), with two implementations:
//! [`SqliteStore`] (the embedded default: a group-committing writer thread plus a pool
//! of read connections) and [`PgStore`] (PostgreSQL, pools of connections; `pg/`). The
//! trait and the types it speaks (this file, `reliability_sql`'s record types) name no
//! backend type; `sqlite.rs` holds the SQLite plumbing and the `*_sql.rs` modules its
//! SQL, one per group of tables, `pg/` the same for PostgreSQL.
//!
//! Every method takes the caller's identity (client id or agent token id) and answers
//! [`StoreError::NotFound`] for anything outside it, so one client can never read or
//! change another's pools, probes or nodes.
mod clients_sql;
mod engine_sql;
mod fold;
mod history_sql;
mod nodes_sql;
mod pg;
mod pools_sql;
mod probes_sql;
mod readers;
mod reliability_sql;
mod samples_sql;
mod schema;
mod sqlite;
mod writer;

use bytes::Bytes;
use futures::future::BoxFuture;
use plb_api::{
    Assignments, CreatePool, PoolNodes, PoolView, ProbeSettings, ProbeView, RegisterRequest,
    ReportAck, ReportBatch, Sample,
};
use plb_routing::PolicyKind;

pub use fold::FoldStats;
pub use history_sql::TimedMetrics;
pub use pg::{PgOptions, PgStore, elect, is_postgres_url};
pub use reliability_sql::{
    AttemptNext, AttemptRecord, DueDelivery, ReliabilityRecord, ReliabilityStore, ReplaySample,
    ScalingRecord, StoredReliability,
};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};
pub use writer::WriterMetrics;

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::PostgresPool(other.to_string()),
        }
    }
}

/// A future answered by the store.
pub type StoreFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

/// sha256 of a token: what the store keeps instead of the token.
pub type TokenHash = [u8; 32];

/// A failed store operation. The first four name a problem of the request; the rest are
/// internal. A backend's own failures have variants named after it (`Sqlite`,
/// `SqliteMigration`, `Postgres`, `PostgresPool`, `PostgresMigration`), and callers only
/// match the backend-neutral ones (anything else is an internal error).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing named does not exist for this caller.
    #[error("{0} not found")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (an agent token outside its pools or node).
    #[error("{0}")]
    Forbidden(String),
    /// The request refers to something it may not (a pool the node is not in, ...).
    #[error("{0}")]
    Invalid(String),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrating the SQLite schema failed.
    #[error("migrating the SQLite schema: {0}")]
    SqliteMigration(#[from] rusqlite_migration::Error),
    /// PostgreSQL failed (a statement, or the connection).
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("postgres connection pool: {0}")]
    PostgresPool(String),
    /// Migrating the PostgreSQL schema failed, or the database's schema is not one this
    /// build can use.
    #[error("migrating the PostgreSQL schema: {0}")]
    PostgresMigration(String),
    /// A stored JSON column could not be read or written.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The transaction holding this write failed to commit; nothing of it is stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer thread or the reader pool is gone.
    #[error("the store is shut down")]
    Closed,
    /// The write would take the caller past one of its quotas; nothing is stored.
    #[error("{0}")]
    Quota(QuotaExceeded),
}

/// Per-client quotas, enforced by the store inside the transaction that would exceed
/// them (so concurrent requests cannot overshoot), with counts over the existing tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Pools per client.
    pub pools: u64,
    /// Active (not deleted) probes per pool.
    pub probes_per_pool: u64,
    /// Stored versions per probe (superseded versions are removed by retention once
    /// their raw samples have aged out, every version when the probe is deleted).
    pub versions_per_probe: u64,
    /// Nodes per pool.
    pub nodes_per_pool: u64,
    /// Bytes of the distinct modules the client's stored probe versions use.
    pub module_bytes: u64,
    /// Live (not revoked) agent tokens per client.
    pub agent_tokens: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            pools: 100,
            probes_per_pool: 50,
            versions_per_probe: 100,
            nodes_per_pool: 1000,
            module_bytes: 256 * 1024 * 1024,
            agent_tokens: 2000,
        }
    }
}

/// Which quota a write would exceed, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The quota's name: `pools`, `probes`, `probe_versions`, `nodes`, `module_bytes`,
    /// `agent_tokens` (the flag is `--quota-` and the name with `-` for `_`).
    pub quota: &'static str,
    /// Its value.
    pub limit: u64,
}

impl QuotaExceeded {
    /// What the quota counts and what frees some of it.
    fn unit_and_hint(&self) -> (&'static str, &'static str) {
        match self.quota {
            "pools" => ("pools per client", "ask the operator for more"),
            "probes" => ("active probes per pool", "delete a probe first"),
            "probe_versions" => (
                "stored versions per probe",
                "superseded versions are removed once their raw samples have aged out, and all of them when the probe is deleted",
            ),
            "nodes" => ("nodes per pool", "ask the operator for more"),
            "module_bytes" => (
                "bytes of modules per client",
                "delete probes: modules no version uses are removed",
            ),
            "agent_tokens" => ("live agent tokens per client", "revoke one first"),
            _ => ("", ""),
        }
    }
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (unit, hint) = self.unit_and_hint();
        write!(
            f,
            "quota `{}` exceeded: at most {} {unit}; {hint}",
            self.quota, self.limit
        )
    }
}

/// What one garbage collection of probe versions and modules removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleGc {
    /// Probe versions removed (superseded ones past the window, deleted probes' ones).
    pub versions: u64,
    /// Modules removed (no stored version used them any more).
    pub modules: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Whom a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOwner {
    /// A client's API token.
    Client {
        /// The client.
        client_id: i64,
    },
    /// An agent token.
    Agent {
        /// The token.
        token_id: i64,
        /// The client that owns the pools it is enrolled for.
        client_id: i64,
    },
}

/// A probe version to store (`PUT /v1/pools/{pool}/probes/{name}`), already validated.
#[derive(Debug, Clone)]
pub struct NewProbeVersion {
    /// Owner of the pool.
    pub client_id: i64,
    /// Pool name.
    pub pool: String,
    /// Probe name.
    pub name: String,
    /// Hex sha256 of `module`.
    pub sha256: String,
    /// The component.
    pub module: Bytes,
    /// Its settings.
    pub settings: ProbeSettings,
    /// Now, Unix ms.
    pub now_ms: i64,
}

/// What storing a probe version did.
#[derive(Debug, Clone, PartialEq)]
pub enum PutProbe {
    /// A new version was stored.
    Created(ProbeView),
    /// The active version already had this module and these settings: nothing changed.
    Unchanged(ProbeView),
}

/// A report batch to store, from an agent token.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The reporting token.
    pub token_id: i64,
    /// Its client.
    pub client_id: i64,
    /// The batch, already checked for well-formedness.
    pub batch: ReportBatch,
    /// Now, Unix ms.
    pub now_ms: i64,
}

/// A committed report batch.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The answer to the agent.
    pub ack: ReportAck,
    /// The node's row id.
    pub node_id: i64,
    /// The samples newly stored (duplicates left out), in batch order.
    pub stored: Vec<Sample>,
}

/// What [`Store::tail_samples`] read: the positions of every row read (this process's
/// own included) and the batches other processes stored, grouped per node in order.
#[derive(Debug, Default)]
pub struct TailPage {
    /// Every `seq` read, ascending.
    pub seqs: Vec<i64>,
    /// Samples other processes stored, as committed batches.
    pub batches: Vec<crate::ingest::CommittedBatch>,
}

/// A pool and its nodes, as the prediction engine routes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTopology {
    /// The pool's row id.
    pub pool_id: i64,
    /// Its owner.
    pub client_id: i64,
    /// Its name.
    pub name: String,
    /// Latency objective, ms.
    pub slo_ms: f64,
    /// Routing policy. A stored name this build does not know reads as the default
    /// (`plb`), with a warning in the log.
    pub policy: PolicyKind,
    /// Its nodes, by name.
    pub nodes: Vec<TopologyNode>,
}

/// A node of a [`PoolTopology`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNode {
    /// The node's row id.
    pub id: i64,
    /// Its name (unique within its client).
    pub name: String,
    /// Its registered address.
    pub address: String,
}

/// Route decisions of one node in one minute, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteDecisions {
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// The node's name.
    pub node: String,
    /// Decisions for it in that minute.
    pub decisions: u64,
}

/// A stored sample for warming the models after a restart.
#[derive(Debug, Clone)]
pub struct WarmSample {
    /// The node's owner.
    pub client_id: i64,
    /// The node.
    pub node: String,
    /// The sample (message and stderr left out).
    pub sample: Sample,
}

/// A node's state change to store.
#[derive(Debug, Clone)]
pub struct NewStateChange {
    /// The pool.
    pub pool_id: i64,
    /// The node.
    pub node_id: i64,
    /// The change.
    pub change: plb_api::StateChange,
}

/// Route decisions of one node in one minute, to add.
#[derive(Debug, Clone, Copy)]
pub struct DecisionCount {
    /// The pool.
    pub pool_id: i64,
    /// The node.
    pub node_id: i64,
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// Decisions to add.
    pub decisions: u64,
}

/// A forecast error to store.
#[derive(Debug, Clone)]
pub struct NewForecastError {
    /// The pool.
    pub pool_id: i64,
    /// The node.
    pub node_id: i64,
    /// The record (its `node` field is not stored; `node_id` is).
    pub record: plb_api::ForecastErrorRecord,
}

/// What the engine writes in one transaction.
#[derive(Debug, Clone, Default)]
pub struct EngineWrites {
    /// State changes with their evidence.
    pub changes: Vec<NewStateChange>,
    /// Decision counts to add.
    pub decisions: Vec<DecisionCount>,
    /// Forecast errors.
    pub errors: Vec<NewForecastError>,
    /// Delete decision counts and forecast errors older than this, Unix ms.
    pub expire_before_ms: Option<i64>,
}

impl EngineWrites {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.decisions.is_empty()
            && self.errors.is_empty()
            && self.expire_before_ms.is_none()
    }
}

/// The balancer's storage. Every future resolves only after the operation is durable
/// (for writes: committed).
pub trait Store: ReliabilityStore + Send + Sync + 'static {
    /// A trivial query: is the store answering?
    fn ping(&self) -> StoreFuture<()>;

    /// Whom the token with this hash belongs to, if it exists and is not revoked.
    fn token_owner(&self, hash: TokenHash, agent: bool) -> StoreFuture<Option<TokenOwner>>;

    /// Creates a client with the given token hash; returns its id.
    fn create_client(&self, name: String, hash: TokenHash, now_ms: i64) -> StoreFuture<i64>;

    /// Revokes a client's token and every agent token of its.
    fn revoke_client(&self, id: i64, now_ms: i64) -> StoreFuture<()>;

    /// Creates an agent token of `client_id` enrolled for `pools`; returns its id.
    fn create_agent_token(
        &self,
        client_id: i64,
        pools: Vec<String>,
        hash: TokenHash,
        now_ms: i64,
    ) -> StoreFuture<i64>;

    /// Revokes an agent token; `owner` limits it to that client's tokens.
    fn revoke_agent_token(&self, id: i64, owner: Option<i64>, now_ms: i64) -> StoreFuture<()>;

    /// Creates a pool.
    fn create_pool(&self, client_id: i64, req: CreatePool, now_ms: i64) -> StoreFuture<PoolView>;

    /// The client's pools, by name.
    fn list_pools(&self, client_id: i64) -> StoreFuture<Vec<PoolView>>;

    /// One of the client's pools.
    fn get_pool(&self, client_id: i64, pool: String) -> StoreFuture<PoolView>;

    /// Stores a probe version (the module by sha256) and makes it active.
    fn put_probe(&self, p: NewProbeVersion) -> StoreFuture<PutProbe>;

    /// Active probes of a pool, by name.
    fn list_probes(&self, client_id: i64, pool: String) -> StoreFuture<Vec<ProbeView>>;

    /// One active probe.
    fn get_probe(&self, client_id: i64, pool: String, name: String) -> StoreFuture<ProbeView>;

    /// Checks, before an upload's body is read, the quota it may already be past: a new
    /// (or deleted) probe `name` against the pool's probe quota.
    fn check_upload(&self, client_id: i64, pool: String, name: String) -> StoreFuture<()>;

    /// Checks that storing `p` would pass every quota (what [`Store::put_probe`] checks
    /// again in its transaction), without storing anything.
    fn check_probe_version(&self, p: NewProbeVersion) -> StoreFuture<()>;

    /// Deletes a probe: no longer assigned; its samples and its row (its version
    /// numbering) are kept, its versions removed with every module no other version
    /// uses.
    fn delete_probe(
        &self,
        client_id: i64,
        pool: String,
        name: String,
        now_ms: i64,
    ) -> StoreFuture<()>;

    /// Registers (or re-registers) the agent token's node into pools it is enrolled for.
    fn register_node(
        &self,
        token_id: i64,
        client_id: i64,
        req: RegisterRequest,
        now_ms: i64,
    ) -> StoreFuture<()>;

    /// The probes the agent token's node must run.
    fn assignments(&self, token_id: i64, client_id: i64, node: String) -> StoreFuture<Assignments>;

    /// A module's bytes, if it belongs to a pool the agent token is enrolled for.
    fn module(&self, token_id: i64, sha256: String) -> StoreFuture<Bytes>;

    /// Stores a report batch, idempotent by sample id; resolves after commit.
    fn ingest(&self, ingest: Ingest) -> StoreFuture<Ingested>;

    /// Where a tail of the samples other processes store starts (the newest `seq`
    /// now), or `None` for a store only this process writes (SQLite).
    fn tail_start(&self) -> StoreFuture<Option<i64>> {
        Box::pin(async { Ok(None) })
    }

    /// Samples stored after position `after` or at the positions in `also` (ones
    /// not yet committed at the last read), at most `limit` rows, in `seq` order; the
    /// batches leave out what this process stored itself. Nothing where only this
    /// process writes the store.
    fn tail_samples(&self, after: i64, also: Vec<i64>, limit: i64) -> StoreFuture<TailPage> {
        let _ = (after, also, limit);
        Box::pin(async { Ok(TailPage::default()) })
    }

    /// Wakes `wake` each time another process commits samples (PostgreSQL: LISTEN on
    /// the channel every ingest transaction notifies), reconnecting as needed, until
    /// dropped; and once after each (re)connection, for what was committed unheard.
    /// Never resolves where only this process writes the store.
    fn listen_samples(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> StoreFuture<()> {
        let _ = wake;
        Box::pin(std::future::pending())
    }

    /// A pool's nodes with their newest samples.
    fn pool_nodes(&self, client_id: i64, pool: String) -> StoreFuture<PoolNodes>;

    /// Folds up to `max_samples` raw samples taken before `raw_before_ms` into per-minute
    /// aggregates, and deletes aggregates older than `aggregates_before_ms`.
    fn fold(
        &self,
        raw_before_ms: i64,
        aggregates_before_ms: i64,
        max_samples: usize,
    ) -> StoreFuture<FoldStats>;

    /// Removes the versions of deleted probes, versions superseded (by a newer stored
    /// version) before `superseded_before_ms`, and the modules no stored version uses.
    fn collect_modules(&self, superseded_before_ms: i64) -> StoreFuture<ModuleGc>;

    /// Every pool with its nodes (the prediction engine's view; all clients).
    fn engine_topology(&self) -> StoreFuture<Vec<PoolTopology>>;

    /// Up to `limit` stored raw samples taken at or after `since_ms`, oldest first.
    fn recent_samples(&self, since_ms: i64, limit: usize) -> StoreFuture<Vec<WarmSample>>;

    /// Stores the engine's state changes, decision counts and forecast errors in one
    /// transaction.
    fn engine_write(&self, w: EngineWrites) -> StoreFuture<()>;

    /// A pool's stored state changes at or after `since_ms` (of one node if given),
    /// the newest `limit`, oldest first.
    fn state_changes(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        node: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<plb_api::NodeStateChange>>;

    /// A pool's route decisions per minute and node in the newest `max_minutes` minutes
    /// (with decisions) at or after `since_ms`, by minute then node.
    fn route_decisions(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        max_minutes: usize,
    ) -> StoreFuture<Vec<MinuteDecisions>>;

    /// One node's stored `ok` samples of one probe in one of the client's pools, taken
    /// at or after `since_ms`: the newest `limit`, oldest first (the dashboard's history).
    fn node_probe_samples(
        &self,
        client_id: i64,
        pool: String,
        node: String,
        probe: String,
        since_ms: i64,
        limit: usize,
    ) -> StoreFuture<Vec<TimedMetrics>>;

    /// A pool's stored forecast errors from `since_ms`, oldest first, at most `limit`.
    fn forecast_errors(
        &self,
        client_id: i64,
        pool: String,
        since_ms: i64,
        limit: usize,
    ) -> StoreFuture<Vec<plb_api::ForecastErrorRecord>>;

    /// Changes a pool's policy and/or latency objective (already validated).
    fn update_pool(
        &self,
        client_id: i64,
        pool: String,
        policy: Option<PolicyKind>,
        slo_ms: Option<f64>,
    ) -> StoreFuture<PoolView>;
}
