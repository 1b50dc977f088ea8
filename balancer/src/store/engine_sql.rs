//! The prediction engine's SQL: the routing topology (every pool with its nodes), recent
//! samples to warm the models after a restart, state changes with their evidence,
//! per-minute route decision counts and periodic forecast errors.
use plb_api::{Evidence, ForecastErrorRecord, NodeState, NodeStateChange, Sample, StateChange};
use rusqlite::{Connection, params};

use super::pools_sql::{parse_policy, pool_id};
use super::{EngineWrites, MinuteDecisions, PoolTopology, StoreError, TopologyNode, WarmSample};

pub(super) fn topology(c: &Connection) -> Result<Vec<PoolTopology>, StoreError> {
    let mut pools_q = c.prepare_cached(
        "SELECT id, client_id, name, latency_slo_ms, policy FROM pools ORDER BY id",
    )?;
    let mut pools: Vec<PoolTopology> = pools_q
        .query_map([], |r| {
            let pool_id = r.get(0)?;
            Ok(PoolTopology {
                pool_id,
                client_id: r.get(1)?,
                name: r.get(2)?,
                slo_ms: r.get(3)?,
                policy: parse_policy(pool_id, &r.get::<_, String>(4)?),
                nodes: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut nodes_q = c.prepare_cached(
        "SELECT pn.pool_id, n.id, n.name, n.address FROM pool_nodes pn
         JOIN nodes n ON n.id = pn.node_id ORDER BY pn.pool_id, n.name",
    )?;
    let rows = nodes_q.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let by_id: std::collections::HashMap<i64, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pool_id, i))
        .collect();
    for row in rows {
        let (pid, nid, name, address) = row?;
        if let Some(&i) = by_id.get(&pid) {
            pools[i].nodes.push(TopologyNode {
                id: nid,
                name,
                address,
            });
        }
    }
    Ok(pools)
}

pub(super) fn recent_samples(
    c: &Connection,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<WarmSample>, StoreError> {
    let mut q = c.prepare_cached(
        "SELECT n.client_id, s.node, s.id, s.pool, s.probe, s.version, s.taken_at_ms,
                s.outcome, s.metrics, s.duration_ms, s.fuel_used
         FROM samples s JOIN nodes n ON n.id = s.node_id
         WHERE s.taken_at_ms >= ?1 ORDER BY s.taken_at_ms, s.seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = q.query(params![since_ms, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let outcome: String = r.get(7)?;
        let Some(outcome) = plb_api::Outcome::parse(&outcome) else {
            continue;
        };
        let metrics: String = r.get(8)?;
        let fuel: Option<i64> = r.get(10)?;
        out.push(WarmSample {
            client_id: r.get(0)?,
            node: r.get(1)?,
            sample: Sample {
                id: r.get(2)?,
                pool: r.get(3)?,
                probe: r.get(4)?,
                version: r.get(5)?,
                taken_at_ms: r.get(6)?,
                outcome,
                metrics: serde_json::from_str(&metrics)?,
                duration_ms: r.get(9)?,
                fuel_used: fuel.and_then(|f| u64::try_from(f).ok()),
                message: String::new(),
                stderr: String::new(),
            },
        });
    }
    Ok(out)
}

pub(super) fn write(c: &Connection, w: EngineWrites) -> Result<(), StoreError> {
    {
        let mut ins = c.prepare_cached(
            "INSERT INTO state_changes (pool_id, node_id, at_ms, from_state, to_state, reason, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for ch in &w.changes {
            // A node deleted meanwhile: its change has nothing to point at.
            let exists: bool = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM nodes WHERE id = ?1)")?
                .query_row([ch.node_id], |r| r.get(0))?;
            if !exists {
                continue;
            }
            ins.execute(params![
                ch.pool_id,
                ch.node_id,
                ch.change.at_ms,
                ch.change.from.as_str(),
                ch.change.to.as_str(),
                ch.change.reason,
                serde_json::to_string(&ch.change.evidence)?,
            ])?;
        }
    }
    {
        let mut up = c.prepare_cached(
            "INSERT INTO route_decisions (pool_id, node_id, minute_ms, decisions)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pool_id, minute_ms, node_id)
             DO UPDATE SET decisions = decisions + excluded.decisions",
        )?;
        for d in &w.decisions {
            up.execute(params![
                d.pool_id,
                d.node_id,
                d.minute_ms,
                i64::try_from(d.decisions).unwrap_or(i64::MAX)
            ])?;
        }
    }
    {
        let mut ins = c.prepare_cached(
            "INSERT INTO forecast_errors (pool_id, node_id, at_ms, series, h, model, mae, naive_mae, scored)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for e in &w.errors {
            ins.execute(params![
                e.pool_id,
                e.node_id,
                e.record.at_ms,
                e.record.series,
                e.record.h,
                e.record.model,
                e.record.mae,
                e.record.naive_mae,
                i64::try_from(e.record.scored).unwrap_or(i64::MAX),
            ])?;
        }
    }
    if let Some(before) = w.expire_before_ms {
        c.execute("DELETE FROM route_decisions WHERE minute_ms < ?1", [before])?;
        c.execute("DELETE FROM forecast_errors WHERE at_ms < ?1", [before])?;
    }
    Ok(())
}

fn parse_state(s: &str) -> NodeState {
    match s {
        "healthy" => NodeState::Healthy,
        "degrading" => NodeState::Degrading,
        "unhealthy" => NodeState::Unhealthy,
        _ => NodeState::Unknown,
    }
}

/// A pool's state changes, newest first, through `state_changes_by_pool`.
pub(super) const STATE_CHANGES_SQL: &str =
    "SELECT n.name, sc.at_ms, sc.from_state, sc.to_state, sc.reason, sc.evidence
     FROM state_changes sc JOIN nodes n ON n.id = sc.node_id
     WHERE sc.pool_id = ?1 AND sc.at_ms >= ?2 AND (?3 IS NULL OR n.name = ?3)
     ORDER BY sc.at_ms DESC, sc.id DESC LIMIT ?4";

pub(super) fn state_changes(
    c: &Connection,
    client_id: i64,
    pool: &str,
    since_ms: i64,
    node: Option<&str>,
    limit: usize,
) -> Result<Vec<NodeStateChange>, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let mut q = c.prepare_cached(STATE_CHANGES_SQL)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = q.query(params![pid, since_ms, node, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let evidence: String = r.get(5)?;
        let evidence: Vec<Evidence> = serde_json::from_str(&evidence)?;
        out.push(NodeStateChange {
            node: r.get(0)?,
            change: StateChange {
                at_ms: r.get(1)?,
                from: parse_state(&r.get::<_, String>(2)?),
                to: parse_state(&r.get::<_, String>(3)?),
                reason: r.get(4)?,
                evidence,
            },
        });
    }
    out.reverse();
    Ok(out)
}

/// The newest `?3` minutes at or after `?2` of pool `?1` that have decisions: the
/// first of them, through the primary key (pool_id, minute_ms, node_id).
pub(super) const DECISIONS_CUTOFF_SQL: &str = "SELECT MIN(minute_ms) FROM (
         SELECT DISTINCT minute_ms FROM route_decisions
         WHERE pool_id = ?1 AND minute_ms >= ?2 ORDER BY minute_ms DESC LIMIT ?3)";

/// A pool's decisions per node and minute from `?2` on, through the primary key.
pub(super) const ROUTE_DECISIONS_SQL: &str =
    "SELECT rd.minute_ms, n.name, rd.decisions FROM route_decisions rd
     JOIN nodes n ON n.id = rd.node_id
     WHERE rd.pool_id = ?1 AND rd.minute_ms >= ?2 ORDER BY rd.minute_ms, n.name";

/// The pool's decisions per node and minute in the newest `max_minutes` minutes (that
/// have any) at or after `since_ms`, oldest first.
pub(super) fn route_decisions(
    c: &Connection,
    client_id: i64,
    pool: &str,
    since_ms: i64,
    max_minutes: usize,
) -> Result<Vec<MinuteDecisions>, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let limit = i64::try_from(max_minutes).unwrap_or(i64::MAX);
    let cutoff: Option<i64> = c
        .prepare_cached(DECISIONS_CUTOFF_SQL)?
        .query_row(params![pid, since_ms, limit], |r| r.get(0))?;
    let Some(from_ms) = cutoff else {
        return Ok(Vec::new());
    };
    let mut q = c.prepare_cached(ROUTE_DECISIONS_SQL)?;
    let rows = q.query_map(params![pid, from_ms.max(since_ms)], |r| {
        Ok(MinuteDecisions {
            minute_ms: r.get(0)?,
            node: r.get(1)?,
            decisions: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A pool's forecast errors from `?2` on, through `forecast_errors_by_pool`.
pub(super) const FORECAST_ERRORS_SQL: &str =
    "SELECT fe.at_ms, n.name, fe.series, fe.h, fe.model, fe.mae, fe.naive_mae, fe.scored
     FROM forecast_errors fe JOIN nodes n ON n.id = fe.node_id
     WHERE fe.pool_id = ?1 AND fe.at_ms >= ?2
     ORDER BY fe.at_ms, n.name, fe.series, fe.h LIMIT ?3";

pub(super) fn forecast_errors(
    c: &Connection,
    client_id: i64,
    pool: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<ForecastErrorRecord>, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let mut q = c.prepare_cached(FORECAST_ERRORS_SQL)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = q.query_map(params![pid, since_ms, limit], |r| {
        Ok(ForecastErrorRecord {
            at_ms: r.get(0)?,
            node: r.get(1)?,
            series: r.get(2)?,
            h: r.get(3)?,
            model: r.get(4)?,
            mae: r.get(5)?,
            naive_mae: r.get(6)?,
            scored: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
