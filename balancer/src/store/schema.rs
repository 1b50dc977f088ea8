//! The SQLite schema as versioned migrations (`rusqlite_migration`, tracked in
//! `PRAGMA user_version`). A released migration is never edited: later issues (state
//! changes, forecast errors, notifications, webhooks, route decisions) append new ones.
use rusqlite_migration::{M, Migrations};

/// Version 1: clients, tokens, pools, nodes, probes, modules, samples, aggregates.
const V1: &str = r#"
CREATE TABLE clients (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

CREATE TABLE pools (
    id             INTEGER PRIMARY KEY,
    client_id      INTEGER NOT NULL REFERENCES clients(id),
    name           TEXT    NOT NULL,
    latency_slo_ms REAL    NOT NULL,
    policy         TEXT    NOT NULL DEFAULT 'plb',
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (client_id, name)
);

CREATE TABLE nodes (
    id               INTEGER PRIMARY KEY,
    client_id        INTEGER NOT NULL REFERENCES clients(id),
    name             TEXT    NOT NULL,
    address          TEXT    NOT NULL,
    labels           TEXT    NOT NULL DEFAULT '{}',
    -- The agent token that registered it: only that token reports for it.
    agent_token_id   INTEGER NOT NULL REFERENCES agent_tokens(id),
    registered_at_ms INTEGER NOT NULL,
    last_seen_ms     INTEGER,
    dropped_samples  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (client_id, name)
);
CREATE INDEX nodes_by_token ON nodes(agent_token_id);

CREATE TABLE agent_tokens (
    id            INTEGER PRIMARY KEY,
    client_id     INTEGER NOT NULL REFERENCES clients(id),
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

CREATE TABLE agent_token_pools (
    token_id INTEGER NOT NULL REFERENCES agent_tokens(id),
    pool_id  INTEGER NOT NULL REFERENCES pools(id),
    PRIMARY KEY (token_id, pool_id)
) WITHOUT ROWID;

CREATE TABLE pool_nodes (
    pool_id      INTEGER NOT NULL REFERENCES pools(id),
    node_id      INTEGER NOT NULL REFERENCES nodes(id),
    joined_at_ms INTEGER NOT NULL,
    PRIMARY KEY (pool_id, node_id)
) WITHOUT ROWID;
CREATE INDEX pool_nodes_by_node ON pool_nodes(node_id);

CREATE TABLE modules (
    sha256        TEXT    PRIMARY KEY,
    bytes         BLOB    NOT NULL,
    size          INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE probes (
    id            INTEGER PRIMARY KEY,
    pool_id       INTEGER NOT NULL REFERENCES pools(id),
    name          TEXT    NOT NULL,
    -- The active (newest) version.
    version       INTEGER NOT NULL,
    -- Deleted probes keep their row (and version numbering) for late samples.
    deleted_at_ms INTEGER,
    UNIQUE (pool_id, name)
);

CREATE TABLE probe_versions (
    probe_id      INTEGER NOT NULL REFERENCES probes(id),
    version       INTEGER NOT NULL,
    sha256        TEXT    NOT NULL REFERENCES modules(sha256),
    settings      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (probe_id, version)
) WITHOUT ROWID;
CREATE INDEX probe_versions_by_sha ON probe_versions(sha256);

-- Raw samples, kept for the raw retention window. `id` is the agent's id:
-- unique per node, which makes reports idempotent.
CREATE TABLE samples (
    seq            INTEGER PRIMARY KEY,
    node_id        INTEGER NOT NULL REFERENCES nodes(id),
    id             TEXT    NOT NULL,
    node           TEXT    NOT NULL,
    pool           TEXT    NOT NULL,
    probe          TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    taken_at_ms    INTEGER NOT NULL,
    outcome        TEXT    NOT NULL,
    metrics        TEXT    NOT NULL,
    duration_ms    REAL    NOT NULL,
    fuel_used      INTEGER,
    message        TEXT    NOT NULL,
    stderr         TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (node_id, id)
);
CREATE INDEX samples_by_time ON samples(taken_at_ms);

-- The newest sample of each (node, pool, probe), for the read side; survives retention.
CREATE TABLE latest_samples (
    node_id     INTEGER NOT NULL REFERENCES nodes(id),
    pool        TEXT    NOT NULL,
    probe       TEXT    NOT NULL,
    taken_at_ms INTEGER NOT NULL,
    sample      TEXT    NOT NULL,
    PRIMARY KEY (node_id, pool, probe)
) WITHOUT ROWID;

-- Raw samples older than the raw window, folded per minute.
CREATE TABLE sample_minutes (
    node_id   INTEGER NOT NULL REFERENCES nodes(id),
    pool      TEXT    NOT NULL,
    probe     TEXT    NOT NULL,
    minute_ms INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    -- {"ok": 12, "timeout": 1}
    outcomes  TEXT    NOT NULL,
    -- {"latency-ms": {"n": 12, "min": 1.0, "mean": 2.0, "max": 3.0}}
    metrics   TEXT    NOT NULL,
    PRIMARY KEY (node_id, pool, probe, minute_ms)
) WITHOUT ROWID;
CREATE INDEX sample_minutes_by_time ON sample_minutes(minute_ms);
"#;

/// Version 2 (prediction engine): node state changes with their evidence, route
/// decisions counted per node and minute, and forecast errors written periodically.
const V2_ENGINE: &str = r#"
CREATE TABLE state_changes (
    id         INTEGER PRIMARY KEY,
    pool_id    INTEGER NOT NULL REFERENCES pools(id),
    node_id    INTEGER NOT NULL REFERENCES nodes(id),
    at_ms      INTEGER NOT NULL,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    -- [{"metric": ..., "forecast": ..., "threshold": ..., "horizon": ..., "reason": ...}]
    evidence   TEXT    NOT NULL
);
CREATE INDEX state_changes_by_pool ON state_changes(pool_id, at_ms);

CREATE TABLE route_decisions (
    pool_id   INTEGER NOT NULL REFERENCES pools(id),
    node_id   INTEGER NOT NULL REFERENCES nodes(id),
    minute_ms INTEGER NOT NULL,
    decisions INTEGER NOT NULL,
    PRIMARY KEY (pool_id, minute_ms, node_id)
) WITHOUT ROWID;

CREATE TABLE forecast_errors (
    pool_id   INTEGER NOT NULL REFERENCES pools(id),
    node_id   INTEGER NOT NULL REFERENCES nodes(id),
    at_ms     INTEGER NOT NULL,
    series    TEXT    NOT NULL,
    h         INTEGER NOT NULL,
    model     TEXT    NOT NULL,
    mae       REAL    NOT NULL,
    naive_mae REAL    NOT NULL,
    scored    INTEGER NOT NULL
);
CREATE INDEX forecast_errors_by_pool ON forecast_errors(pool_id, at_ms);
"#;

/// Version 3 (probe reliability): each probe's state, the update prompts raised on its
/// transitions, the per-pool webhook, and the delivery outbox with every attempt.
const V3_RELIABILITY: &str = r#"
CREATE TABLE probe_reliability (
    pool_id              INTEGER NOT NULL REFERENCES pools(id),
    probe                TEXT    NOT NULL,
    -- reliable, flaky, needs_update
    state                TEXT    NOT NULL,
    version              INTEGER NOT NULL,
    since_ms             INTEGER,
    -- ReliabilityEvidence JSON at the newest transition
    evidence             TEXT    NOT NULL,
    -- The needs_update notification a later `resolved` resolves.
    open_notification_id INTEGER REFERENCES notifications(id),
    updated_at_ms        INTEGER NOT NULL,
    PRIMARY KEY (pool_id, probe)
) WITHOUT ROWID;

CREATE TABLE notifications (
    id            INTEGER PRIMARY KEY,
    client_id     INTEGER NOT NULL REFERENCES clients(id),
    pool_id       INTEGER NOT NULL REFERENCES pools(id),
    probe         TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    -- needs_update, resolved
    kind          TEXT    NOT NULL,
    resolves      INTEGER REFERENCES notifications(id),
    created_at_ms INTEGER NOT NULL,
    -- The Notification JSON, as served and POSTed.
    body          TEXT    NOT NULL
);
CREATE INDEX notifications_by_client ON notifications(client_id, id);

CREATE TABLE webhooks (
    pool_id       INTEGER PRIMARY KEY REFERENCES pools(id),
    url           TEXT    NOT NULL,
    -- The HMAC key: needed in clear to sign; never served.
    secret        TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- The outbox: one row per notification and webhook, retried until delivered.
CREATE TABLE webhook_deliveries (
    id                 INTEGER PRIMARY KEY,
    pool_id            INTEGER NOT NULL REFERENCES pools(id),
    notification_id    INTEGER NOT NULL REFERENCES notifications(id),
    url                TEXT    NOT NULL,
    -- pending, delivered, failed
    status             TEXT    NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER,
    created_at_ms      INTEGER NOT NULL,
    delivered_at_ms    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_by_pool ON webhook_deliveries(pool_id, id);

CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id),
    at_ms       INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms REAL    NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts(delivery_id, id);
"#;

/// Version 4 (per-tenant reads): one series' raw samples (a node's probe in a pool) by
/// time, for the history read, which otherwise could only use `samples_by_time` and scan
/// every tenant's samples of the window. The other per-pool reads already have theirs:
/// route decisions their primary key (pool_id, minute_ms, node_id), state changes and
/// forecast errors their `(pool_id, at_ms)` indexes.
const V4_TENANT_READS: &str = r#"
CREATE INDEX samples_by_series ON samples(node_id, pool, probe, taken_at_ms);
"#;

/// Every migration, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1).foreign_key_check(),
        M::up(V2_ENGINE).foreign_key_check(),
        M::up(V3_RELIABILITY).foreign_key_check(),
        M::up(V4_TENANT_READS),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().expect("valid migrations");
    }

    /// `EXPLAIN QUERY PLAN`'s detail lines of `sql` with `params`.
    fn plan(c: &rusqlite::Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let mut q = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = q
            .query_map(params, |r| r.get::<_, String>(3))
            .expect("plan rows");
        rows.collect::<Result<_, _>>().expect("plan")
    }

    #[track_caller]
    fn assert_uses(plan: &[String], table: &str, index: &str) {
        let text = plan.join("\n");
        assert!(
            plan.iter()
                .any(|l| l.starts_with(&format!("SEARCH {table} ")) && l.contains(index)),
            "{table} is not searched through {index}:\n{text}"
        );
        assert!(
            !plan.iter().any(|l| l.starts_with(&format!("SCAN {table}"))),
            "{table} is scanned:\n{text}"
        );
    }

    /// The per-tenant reads that grow with history use an index that starts with the
    /// tenant's key (node or pool), never a scan nor the bare time index, on a store
    /// migrated as the balancer opens it (a real SQLite file).
    #[test]
    fn per_tenant_reads_use_their_indexes() {
        use super::super::{engine_sql, history_sql};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.db");
        let store = super::super::SqliteStore::open(&path, super::super::SqliteOptions::default())
            .expect("open");
        drop(store);
        let c = rusqlite::Connection::open(&path).expect("reopen");

        // History: one node's series, newest first.
        let p = plan(
            &c,
            history_sql::NODE_PROBE_SAMPLES_SQL,
            rusqlite::params![0, 1, "n1", "web", "ping", 100],
        );
        assert_uses(&p, "s", "samples_by_series");
        assert!(!p.iter().any(|l| l.contains("samples_by_time")), "{p:?}");
        assert!(
            !p.iter().any(|l| l.contains("TEMP B-TREE")),
            "history sorts in memory: {p:?}"
        );
        assert_uses(&p, "nodes", "sqlite_autoindex_nodes_1");

        // Decisions: the first minute of the newest `limit`, then the rows from it.
        let p = plan(
            &c,
            engine_sql::DECISIONS_CUTOFF_SQL,
            rusqlite::params![1, 0, 120],
        );
        assert_uses(&p, "route_decisions", "PRIMARY KEY");
        let p = plan(&c, engine_sql::ROUTE_DECISIONS_SQL, rusqlite::params![1, 0]);
        assert_uses(&p, "rd", "PRIMARY KEY");

        // State changes and forecast errors of a pool.
        let p = plan(
            &c,
            engine_sql::STATE_CHANGES_SQL,
            rusqlite::params![1, 0, None::<String>, 100],
        );
        assert_uses(&p, "sc", "state_changes_by_pool");
        let p = plan(
            &c,
            engine_sql::FORECAST_ERRORS_SQL,
            rusqlite::params![1, 0, 100],
        );
        assert_uses(&p, "fe", "forecast_errors_by_pool");
    }
}
