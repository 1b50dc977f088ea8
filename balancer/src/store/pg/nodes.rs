//! Nodes (PostgreSQL): `nodes` and `pool_nodes` (registering an agent's node into its
//! pools within the nodes-per-pool quota, the node an agent token owns, its assignments,
//! a pool's nodes with their newest samples).
use std::collections::{BTreeSet, HashMap};

use plb_api::{
    Assignment, Assignments, NodeView, PoolNodes, ProbeSettings, RegisterRequest, Sample,
};

use super::pools::pool_id;
use super::{Tx, count, execute, lock_client, query, query_one, query_opt, text, u32_of};
use crate::store::{QuotaExceeded, Quotas, StoreError};

pub(super) async fn register_node(
    tx: &Tx<'_>,
    token_id: i64,
    client_id: i64,
    req: &RegisterRequest,
    now_ms: i64,
    q: &Quotas,
) -> Result<(), StoreError> {
    lock_client(tx, client_id).await?;
    let mut pools = BTreeSet::new();
    for name in &req.pools {
        let id = query_opt(
            tx,
            "SELECT p.id FROM agent_token_pools atp JOIN pools p ON p.id = atp.pool_id
             WHERE atp.token_id = $1 AND p.name = $2",
            &[&token_id, name],
        )
        .await?;
        match id {
            Some(r) => pools.insert(r.try_get::<_, i64>(0)?),
            None => {
                return Err(StoreError::Forbidden(format!(
                    "this agent token is not enrolled for pool `{name}`"
                )));
            }
        };
    }
    let bound = query_opt(
        tx,
        "SELECT name FROM nodes WHERE agent_token_id = $1 LIMIT 1",
        &[&token_id],
    )
    .await?;
    if let Some(bound) = bound {
        let bound: String = bound.try_get(0)?;
        if bound != req.node {
            return Err(StoreError::Forbidden(format!(
                "this agent token registered node `{bound}`; it cannot register node `{}`",
                req.node
            )));
        }
    }
    let labels = serde_json::to_string(&req.labels)?;
    let address = text(&req.address);
    let existing = query_opt(
        tx,
        "SELECT n.id, n.agent_token_id, t.revoked_at_ms IS NOT NULL
         FROM nodes n JOIN agent_tokens t ON t.id = n.agent_token_id
         WHERE n.client_id = $1 AND n.name = $2",
        &[&client_id, &req.node],
    )
    .await?
    .map(|r| {
        Ok::<_, tokio_postgres::Error>((
            r.try_get::<_, i64>(0)?,
            r.try_get::<_, i64>(1)?,
            r.try_get::<_, bool>(2)?,
        ))
    })
    .transpose()?;
    let node_id: i64 = match existing {
        Some((_, other, false)) if other != token_id => {
            return Err(StoreError::Forbidden(format!(
                "node `{}` is registered by another agent token; revoke that one first",
                req.node
            )));
        }
        Some((id, _, _)) => {
            execute(
                tx,
                "UPDATE nodes SET agent_token_id = $2, address = $3, labels = $4,
                   registered_at_ms = $5, last_seen_ms = $5 WHERE id = $1",
                &[&id, &token_id, &address.as_ref(), &labels, &now_ms],
            )
            .await?;
            id
        }
        None => query_one(
            tx,
            "INSERT INTO nodes (client_id, name, address, labels, agent_token_id,
               registered_at_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)
             RETURNING id",
            &[
                &client_id,
                &req.node,
                &address.as_ref(),
                &labels,
                &token_id,
                &now_ms,
            ],
        )
        .await?
        .try_get(0)?,
    };
    let current: BTreeSet<i64> = query(
        tx,
        "SELECT pool_id FROM pool_nodes WHERE node_id = $1",
        &[&node_id],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    for gone in current.difference(&pools) {
        execute(
            tx,
            "DELETE FROM pool_nodes WHERE pool_id = $1 AND node_id = $2",
            &[gone, &node_id],
        )
        .await?;
    }
    for new in pools.difference(&current) {
        let n = count(
            tx,
            "SELECT count(*) FROM pool_nodes WHERE pool_id = $1",
            &[new],
        )
        .await?;
        if n >= q.nodes_per_pool {
            // The transaction rolls back what this registration changed above.
            return Err(StoreError::Quota(QuotaExceeded {
                quota: "nodes",
                limit: q.nodes_per_pool,
            }));
        }
        execute(
            tx,
            "INSERT INTO pool_nodes (pool_id, node_id, joined_at_ms) VALUES ($1, $2, $3)",
            &[new, &node_id, &now_ms],
        )
        .await?;
    }
    Ok(())
}

/// The node's row id and address, checked to belong to the agent token.
pub(super) async fn own_node(
    tx: &Tx<'_>,
    token_id: i64,
    client_id: i64,
    node: &str,
) -> Result<(i64, String), StoreError> {
    let row = query_opt(
        tx,
        "SELECT id, agent_token_id, address FROM nodes WHERE client_id = $1 AND name = $2",
        &[&client_id, &node],
    )
    .await?;
    let Some(r) = row else {
        return Err(StoreError::NotFound(format!(
            "node `{node}` (register it first)"
        )));
    };
    let owner: i64 = r.try_get(1)?;
    if owner != token_id {
        return Err(StoreError::Forbidden(format!(
            "this agent token did not register node `{node}`"
        )));
    }
    Ok((r.try_get(0)?, r.try_get(2)?))
}

pub(super) async fn assignments(
    tx: &Tx<'_>,
    token_id: i64,
    client_id: i64,
    node: &str,
) -> Result<Assignments, StoreError> {
    let (node_id, address) = own_node(tx, token_id, client_id, node).await?;
    let rows = query(
        tx,
        "SELECT p.name, pr.name, pv.version, pv.sha256, pv.settings
         FROM pool_nodes pn JOIN pools p ON p.id = pn.pool_id
         JOIN probes pr ON pr.pool_id = p.id AND pr.deleted_at_ms IS NULL
         JOIN probe_versions pv ON pv.probe_id = pr.id AND pv.version = pr.version
         WHERE pn.node_id = $1 ORDER BY p.name, pr.name",
        &[&node_id],
    )
    .await?;
    let mut probes = Vec::with_capacity(rows.len());
    for r in rows {
        let s: ProbeSettings = serde_json::from_str(r.try_get::<_, &str>(4)?)?;
        probes.push(Assignment {
            pool: r.try_get(0)?,
            probe: r.try_get(1)?,
            version: u32_of(r.try_get(2)?),
            sha256: r.try_get(3)?,
            tier: s.tier,
            interval_ms: s.interval_ms,
            timeout_ms: s.timeout_ms,
            fuel: s.fuel,
            memory_mib: s.memory_mib,
            config: s.config,
        });
    }
    Ok(Assignments {
        node: node.to_string(),
        address,
        probes,
    })
}

pub(super) async fn pool_nodes(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
) -> Result<PoolNodes, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let rows = query(
        tx,
        "SELECT n.id, n.name, n.address, n.labels, n.registered_at_ms, n.last_seen_ms
         FROM pool_nodes pn JOIN nodes n ON n.id = pn.node_id
         WHERE pn.pool_id = $1 ORDER BY n.name",
        &[&pid],
    )
    .await?;
    // Every node's newest samples in one read, by node then probe.
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut latest: HashMap<i64, Vec<Sample>> = HashMap::new();
    for r in query(
        tx,
        "SELECT node_id, sample FROM latest_samples
         WHERE node_id = ANY($1) AND pool = $2 ORDER BY node_id, probe",
        &[&ids, &pool],
    )
    .await?
    {
        let s: Sample = serde_json::from_str(r.try_get::<_, &str>(1)?)?;
        latest.entry(r.try_get(0)?).or_default().push(s);
    }
    let mut nodes = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get(0)?;
        nodes.push(NodeView {
            node: r.try_get(1)?,
            address: r.try_get(2)?,
            labels: serde_json::from_str(r.try_get::<_, &str>(3)?)?,
            registered_at_ms: r.try_get(4)?,
            last_seen_ms: r.try_get(5)?,
            latest: latest.remove(&id).unwrap_or_default(),
            assessment: None,
            routing: None,
        });
    }
    Ok(PoolNodes {
        pool: pool.to_string(),
        nodes,
        excluded_probes: Vec::new(),
        metric_trust: Vec::new(),
    })
}
