//! Pools (PostgreSQL): a client's pool by name, its view, creating one within the pool
//! quota, changing its policy and latency objective.
use plb_api::{CreatePool, PoolView};
use plb_routing::PolicyKind;
use tokio_postgres::Row;

use super::{Tx, count, execute, lock_client, query, query_opt, u64_of};
use crate::store::{QuotaExceeded, Quotas, StoreError};

pub(super) async fn pool_id(tx: &Tx<'_>, client_id: i64, pool: &str) -> Result<i64, StoreError> {
    query_opt(
        tx,
        "SELECT id FROM pools WHERE client_id = $1 AND name = $2",
        &[&client_id, &pool],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("pool `{pool}`")))
}

const POOL_VIEW: &str = "SELECT p.name, p.latency_slo_ms, p.policy, p.created_at_ms,
    (SELECT count(*) FROM pool_nodes pn WHERE pn.pool_id = p.id),
    (SELECT count(*) FROM probes pr WHERE pr.pool_id = p.id AND pr.deleted_at_ms IS NULL)
    FROM pools p";

fn pool_view(r: &Row) -> Result<PoolView, StoreError> {
    Ok(PoolView {
        name: r.try_get(0)?,
        latency_slo_ms: r.try_get(1)?,
        policy: r.try_get(2)?,
        created_at_ms: r.try_get(3)?,
        nodes: u64_of(r.try_get(4)?),
        probes: u64_of(r.try_get(5)?),
    })
}

pub(super) async fn get_pool(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
) -> Result<PoolView, StoreError> {
    let sql = format!("{POOL_VIEW} WHERE p.client_id = $1 AND p.name = $2");
    match query_opt(tx, &sql, &[&client_id, &pool]).await? {
        Some(r) => pool_view(&r),
        None => Err(StoreError::NotFound(format!("pool `{pool}`"))),
    }
}

pub(super) async fn list_pools(tx: &Tx<'_>, client_id: i64) -> Result<Vec<PoolView>, StoreError> {
    let sql = format!("{POOL_VIEW} WHERE p.client_id = $1 ORDER BY p.name");
    query(tx, &sql, &[&client_id])
        .await?
        .iter()
        .map(pool_view)
        .collect()
}

pub(super) async fn create_pool(
    tx: &Tx<'_>,
    client_id: i64,
    req: &CreatePool,
    now_ms: i64,
    q: &Quotas,
) -> Result<PoolView, StoreError> {
    lock_client(tx, client_id).await?;
    let exists = query_opt(
        tx,
        "SELECT id FROM pools WHERE client_id = $1 AND name = $2",
        &[&client_id, &req.name],
    )
    .await?;
    if exists.is_some() {
        return Err(StoreError::Conflict(format!(
            "pool `{}` exists already",
            req.name
        )));
    }
    let pools = count(
        tx,
        "SELECT count(*) FROM pools WHERE client_id = $1",
        &[&client_id],
    )
    .await?;
    if pools >= q.pools {
        return Err(StoreError::Quota(QuotaExceeded {
            quota: "pools",
            limit: q.pools,
        }));
    }
    execute(
        tx,
        "INSERT INTO pools (client_id, name, latency_slo_ms, created_at_ms)
         VALUES ($1, $2, $3, $4)",
        &[&client_id, &req.name, &req.latency_slo_ms, &now_ms],
    )
    .await?;
    get_pool(tx, client_id, &req.name).await
}

pub(super) async fn update_pool(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    policy: Option<PolicyKind>,
    slo_ms: Option<f64>,
) -> Result<PoolView, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    if let Some(p) = policy {
        execute(
            tx,
            "UPDATE pools SET policy = $2 WHERE id = $1",
            &[&pid, &p.as_str()],
        )
        .await?;
    }
    if let Some(s) = slo_ms {
        execute(
            tx,
            "UPDATE pools SET latency_slo_ms = $2 WHERE id = $1",
            &[&pid, &s],
        )
        .await?;
    }
    get_pool(tx, client_id, pool).await
}
