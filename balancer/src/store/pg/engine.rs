//! The prediction engine's SQL (PostgreSQL): the routing topology, recent samples to warm
//! the models, state changes with their evidence, per-minute route decision counts and
//! periodic forecast errors.
use std::collections::HashMap;

use plb_api::{Evidence, ForecastErrorRecord, NodeState, NodeStateChange, Sample, StateChange};

use super::pools::pool_id;
use super::{Tx, execute, limit_of, query, query_one, u32_of, u64_of};
use crate::store::pools_sql::parse_policy;
use crate::store::{
    EngineWrites, MinuteDecisions, PoolTopology, StoreError, TopologyNode, WarmSample,
};

pub(super) async fn topology(tx: &Tx<'_>) -> Result<Vec<PoolTopology>, StoreError> {
    let mut pools = Vec::new();
    for r in query(
        tx,
        "SELECT id, client_id, name, latency_slo_ms, policy FROM pools ORDER BY id",
        &[],
    )
    .await?
    {
        let pool_id: i64 = r.try_get(0)?;
        pools.push(PoolTopology {
            pool_id,
            client_id: r.try_get(1)?,
            name: r.try_get(2)?,
            slo_ms: r.try_get(3)?,
            policy: parse_policy(pool_id, r.try_get(4)?),
            nodes: Vec::new(),
        });
    }
    let by_id: HashMap<i64, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pool_id, i))
        .collect();
    for r in query(
        tx,
        "SELECT pn.pool_id, n.id, n.name, n.address FROM pool_nodes pn
         JOIN nodes n ON n.id = pn.node_id ORDER BY pn.pool_id, n.name",
        &[],
    )
    .await?
    {
        let pid: i64 = r.try_get(0)?;
        if let Some(&i) = by_id.get(&pid) {
            pools[i].nodes.push(TopologyNode {
                id: r.try_get(1)?,
                name: r.try_get(2)?,
                address: r.try_get(3)?,
            });
        }
    }
    Ok(pools)
}

pub(super) async fn recent_samples(
    tx: &Tx<'_>,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<WarmSample>, StoreError> {
    let rows = query(
        tx,
        "SELECT n.client_id, s.node, s.id, s.pool, s.probe, s.version, s.taken_at_ms,
                s.outcome, s.metrics, s.duration_ms, s.fuel_used
         FROM samples s JOIN nodes n ON n.id = s.node_id
         WHERE s.taken_at_ms >= $1 ORDER BY s.taken_at_ms, s.seq LIMIT $2",
        &[&since_ms, &limit_of(limit)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(outcome) = plb_api::Outcome::parse(r.try_get(7)?) else {
            continue;
        };
        let fuel: Option<i64> = r.try_get(10)?;
        out.push(WarmSample {
            client_id: r.try_get(0)?,
            node: r.try_get(1)?,
            sample: Sample {
                id: r.try_get(2)?,
                pool: r.try_get(3)?,
                probe: r.try_get(4)?,
                version: u32_of(r.try_get(5)?),
                taken_at_ms: r.try_get(6)?,
                outcome,
                metrics: serde_json::from_str(r.try_get::<_, &str>(8)?)?,
                duration_ms: r.try_get(9)?,
                fuel_used: fuel.and_then(|f| u64::try_from(f).ok()),
                message: String::new(),
                stderr: String::new(),
            },
        });
    }
    Ok(out)
}

pub(super) async fn write(tx: &Tx<'_>, w: &EngineWrites) -> Result<(), StoreError> {
    for ch in &w.changes {
        // A node deleted meanwhile: its change has nothing to point at.
        execute(
            tx,
            "INSERT INTO state_changes (pool_id, node_id, at_ms, from_state, to_state, reason, evidence)
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $2)",
            &[
                &ch.pool_id,
                &ch.node_id,
                &ch.change.at_ms,
                &ch.change.from.as_str(),
                &ch.change.to.as_str(),
                &ch.change.reason,
                &serde_json::to_string(&ch.change.evidence)?,
            ],
        )
        .await?;
    }
    if !w.decisions.is_empty() {
        // One row per key (an upsert may not touch a row twice), summed here.
        let mut sums: Vec<((i64, i64, i64), i64)> = Vec::new();
        let mut at: HashMap<(i64, i64, i64), usize> = HashMap::new();
        for d in &w.decisions {
            let key = (d.pool_id, d.node_id, d.minute_ms);
            let n = i64::try_from(d.decisions).unwrap_or(i64::MAX);
            match at.get(&key) {
                Some(&i) => sums[i].1 = sums[i].1.saturating_add(n),
                None => {
                    at.insert(key, sums.len());
                    sums.push((key, n));
                }
            }
        }
        let pools: Vec<i64> = sums.iter().map(|((p, _, _), _)| *p).collect();
        let nodes: Vec<i64> = sums.iter().map(|((_, n, _), _)| *n).collect();
        let minutes: Vec<i64> = sums.iter().map(|((_, _, m), _)| *m).collect();
        let counts: Vec<i64> = sums.iter().map(|(_, c)| *c).collect();
        execute(
            tx,
            "INSERT INTO route_decisions (pool_id, node_id, minute_ms, decisions)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
             ON CONFLICT (pool_id, minute_ms, node_id)
             DO UPDATE SET decisions = route_decisions.decisions + excluded.decisions",
            &[&pools, &nodes, &minutes, &counts],
        )
        .await?;
    }
    for e in &w.errors {
        execute(
            tx,
            "INSERT INTO forecast_errors (pool_id, node_id, at_ms, series, h, model, mae, naive_mae, scored)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &e.pool_id,
                &e.node_id,
                &e.record.at_ms,
                &e.record.series,
                &i64::from(e.record.h),
                &e.record.model,
                &e.record.mae,
                &e.record.naive_mae,
                &i64::try_from(e.record.scored).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    }
    if let Some(before) = w.expire_before_ms {
        execute(
            tx,
            "DELETE FROM route_decisions WHERE minute_ms < $1",
            &[&before],
        )
        .await?;
        execute(
            tx,
            "DELETE FROM forecast_errors WHERE at_ms < $1",
            &[&before],
        )
        .await?;
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

pub(super) async fn state_changes(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    since_ms: i64,
    node: Option<&str>,
    limit: usize,
) -> Result<Vec<NodeStateChange>, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let rows = query(
        tx,
        "SELECT n.name, sc.at_ms, sc.from_state, sc.to_state, sc.reason, sc.evidence
         FROM state_changes sc JOIN nodes n ON n.id = sc.node_id
         WHERE sc.pool_id = $1 AND sc.at_ms >= $2 AND ($3::text IS NULL OR n.name = $3::text)
         ORDER BY sc.at_ms DESC, sc.id DESC LIMIT $4",
        &[&pid, &since_ms, &node, &limit_of(limit)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let evidence: Vec<Evidence> = serde_json::from_str(r.try_get::<_, &str>(5)?)?;
        out.push(NodeStateChange {
            node: r.try_get(0)?,
            change: StateChange {
                at_ms: r.try_get(1)?,
                from: parse_state(r.try_get(2)?),
                to: parse_state(r.try_get(3)?),
                reason: r.try_get(4)?,
                evidence,
            },
        });
    }
    out.reverse();
    Ok(out)
}

pub(super) async fn route_decisions(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    since_ms: i64,
    max_minutes: usize,
) -> Result<Vec<MinuteDecisions>, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let cutoff: Option<i64> = query_one(
        tx,
        "SELECT MIN(minute_ms) FROM (
           SELECT DISTINCT minute_ms FROM route_decisions
           WHERE pool_id = $1 AND minute_ms >= $2 ORDER BY minute_ms DESC LIMIT $3) AS newest",
        &[&pid, &since_ms, &limit_of(max_minutes)],
    )
    .await?
    .try_get(0)?;
    let Some(from_ms) = cutoff else {
        return Ok(Vec::new());
    };
    query(
        tx,
        "SELECT rd.minute_ms, n.name, rd.decisions FROM route_decisions rd
         JOIN nodes n ON n.id = rd.node_id
         WHERE rd.pool_id = $1 AND rd.minute_ms >= $2 ORDER BY rd.minute_ms, n.name",
        &[&pid, &from_ms.max(since_ms)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(MinuteDecisions {
            minute_ms: r.try_get(0)?,
            node: r.try_get(1)?,
            decisions: u64_of(r.try_get(2)?),
        })
    })
    .collect()
}

pub(super) async fn forecast_errors(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<ForecastErrorRecord>, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    query(
        tx,
        "SELECT fe.at_ms, n.name, fe.series, fe.h, fe.model, fe.mae, fe.naive_mae, fe.scored
         FROM forecast_errors fe JOIN nodes n ON n.id = fe.node_id
         WHERE fe.pool_id = $1 AND fe.at_ms >= $2
         ORDER BY fe.at_ms, n.name, fe.series, fe.h LIMIT $3",
        &[&pid, &since_ms, &limit_of(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ForecastErrorRecord {
            at_ms: r.try_get(0)?,
            node: r.try_get(1)?,
            series: r.try_get(2)?,
            h: u32_of(r.try_get(3)?),
            model: r.try_get(4)?,
            mae: r.try_get(5)?,
            naive_mae: r.try_get(6)?,
            scored: u64_of(r.try_get(7)?),
        })
    })
    .collect()
}
