//! Pools: `pools` (a client's pool by name, its view with node and probe counts,
//! creating one within the pool quota, changing its policy and latency objective).
use plb_api::{CreatePool, PoolView};
use plb_routing::PolicyKind;
use rusqlite::{Connection, OptionalExtension, params};

use super::{QuotaExceeded, Quotas, StoreError};

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

pub(super) fn pool_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<PoolView> {
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

/// The client's pools, by name.
pub(super) fn list_pools(c: &Connection, client_id: i64) -> Result<Vec<PoolView>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "{POOL_VIEW} WHERE p.client_id = ?1 ORDER BY p.name"
    ))?;
    let rows = stmt.query_map([client_id], pool_view)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Creates a pool (its policy is the column's default, `plb`), within the client's pool
/// quota.
pub(super) fn create_pool(
    c: &Connection,
    client_id: i64,
    req: &CreatePool,
    now_ms: i64,
    q: &Quotas,
) -> Result<PoolView, StoreError> {
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
    let pools: i64 = c
        .prepare_cached("SELECT count(*) FROM pools WHERE client_id = ?1")?
        .query_row([client_id], |r| r.get(0))?;
    if u64::try_from(pools).unwrap_or(0) >= q.pools {
        return Err(StoreError::Quota(QuotaExceeded {
            quota: "pools",
            limit: q.pools,
        }));
    }
    c.execute(
        "INSERT INTO pools (client_id, name, latency_slo_ms, created_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![client_id, req.name, req.latency_slo_ms, now_ms],
    )?;
    get_pool(c, client_id, &req.name)
}

/// Changes a pool's policy and/or latency objective.
pub(super) fn update_pool(
    c: &Connection,
    client_id: i64,
    pool: &str,
    policy: Option<PolicyKind>,
    slo_ms: Option<f64>,
) -> Result<PoolView, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    if let Some(p) = policy {
        c.execute(
            "UPDATE pools SET policy = ?2 WHERE id = ?1",
            params![pid, p.as_str()],
        )?;
    }
    if let Some(s) = slo_ms {
        c.execute(
            "UPDATE pools SET latency_slo_ms = ?2 WHERE id = ?1",
            params![pid, s],
        )?;
    }
    get_pool(c, client_id, pool)
}

/// A stored policy name as a [`PolicyKind`]. The column is only written with a known
/// name (its default `plb`, or a validated `PATCH`); a name this build does not know (a
/// newer build's policy after a downgrade, a hand edit) routes with the default policy,
/// `plb`, and is logged, rather than failing the read of every pool.
pub(super) fn parse_policy(pool_id: i64, stored: &str) -> PolicyKind {
    stored.parse::<PolicyKind>().unwrap_or_else(|_| {
        tracing::warn!(
            pool_id,
            policy = stored,
            "unknown stored routing policy; routing with the default (plb)"
        );
        PolicyKind::default()
    })
}
