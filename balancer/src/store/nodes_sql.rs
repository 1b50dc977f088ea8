//! Nodes: `nodes` and `pool_nodes` (registering an agent's node into its pools within
//! the nodes-per-pool quota, the node an agent token owns, its assignments, a pool's
//! nodes with their newest samples).
use std::collections::BTreeSet;

use plb_api::{
    Assignment, Assignments, NodeView, PoolNodes, ProbeSettings, RegisterRequest, Sample,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::pools_sql::pool_id;
use super::{QuotaExceeded, Quotas, StoreError};

pub(super) fn register_node(
    c: &Connection,
    token_id: i64,
    client_id: i64,
    req: RegisterRequest,
    now_ms: i64,
    q: &Quotas,
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
    let mut members = c.prepare_cached("SELECT count(*) FROM pool_nodes WHERE pool_id = ?1")?;
    for new in pools.difference(&current) {
        let n: i64 = members.query_row([new], |r| r.get(0))?;
        if u64::try_from(n).unwrap_or(0) >= q.nodes_per_pool {
            // The savepoint rolls back what this registration changed above.
            return Err(StoreError::Quota(QuotaExceeded {
                quota: "nodes",
                limit: q.nodes_per_pool,
            }));
        }
        c.execute(
            "INSERT INTO pool_nodes (pool_id, node_id, joined_at_ms) VALUES (?1, ?2, ?3)",
            params![new, node_id, now_ms],
        )?;
    }
    Ok(())
}

/// A node as its agent token sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OwnNode {
    /// The node's row id.
    pub(super) id: i64,
    /// Its registered address.
    pub(super) address: String,
}

/// The node's row id and address, checked to belong to the agent token.
pub(super) fn own_node(
    c: &Connection,
    token_id: i64,
    client_id: i64,
    node: &str,
) -> Result<OwnNode, StoreError> {
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
        Some((id, _, address)) => Ok(OwnNode { id, address }),
    }
}

pub(super) fn assignments(
    c: &Connection,
    token_id: i64,
    client_id: i64,
    node: String,
) -> Result<Assignments, StoreError> {
    let OwnNode {
        id: node_id,
        address,
    } = own_node(c, token_id, client_id, &node)?;
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

pub(super) fn pool_nodes(
    c: &Connection,
    client_id: i64,
    pool: String,
) -> Result<PoolNodes, StoreError> {
    let pid = pool_id(c, client_id, &pool)?;
    let mut nodes_q = c.prepare_cached(
        "SELECT n.id, n.name, n.address, n.labels, n.registered_at_ms, n.last_seen_ms
         FROM pool_nodes pn JOIN nodes n ON n.id = pn.node_id
         WHERE pn.pool_id = ?1 ORDER BY n.name",
    )?;
    let mut latest_q = c.prepare_cached(
        "SELECT sample FROM latest_samples WHERE node_id = ?1 AND pool = ?2 ORDER BY probe",
    )?;
    /// A node row of the pool, before its samples are read.
    struct Row {
        id: i64,
        name: String,
        address: String,
        labels: String,
        registered_at_ms: i64,
        last_seen_ms: Option<i64>,
    }
    let rows: Vec<Row> = nodes_q
        .query_map([pid], |r| {
            Ok(Row {
                id: r.get(0)?,
                name: r.get(1)?,
                address: r.get(2)?,
                labels: r.get(3)?,
                registered_at_ms: r.get(4)?,
                last_seen_ms: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::with_capacity(rows.len());
    for row in rows {
        let latest = latest_q
            .query_map(params![row.id, pool], |r| r.get::<_, String>(0))?
            .map(|s| Ok(serde_json::from_str::<Sample>(&s?)?))
            .collect::<Result<Vec<_>, StoreError>>()?;
        nodes.push(NodeView {
            node: row.name,
            address: row.address,
            labels: serde_json::from_str(&row.labels)?,
            registered_at_ms: row.registered_at_ms,
            last_seen_ms: row.last_seen_ms,
            latest,
            assessment: None,
            routing: None,
        });
    }
    Ok(PoolNodes {
        pool,
        nodes,
        excluded_probes: Vec::new(),
        metric_trust: Vec::new(),
    })
}
