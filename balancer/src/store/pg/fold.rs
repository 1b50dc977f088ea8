//! Retention (PostgreSQL): raw samples older than the raw window are folded into
//! per-minute aggregates (the same [`MinuteAgg`] arithmetic as SQLite's) and deleted;
//! aggregates older than their own window are deleted. Freed space is PostgreSQL's
//! autovacuum's to reuse.
use std::collections::BTreeMap;

use super::{Tx, execute, limit_of, query, query_opt, u64_of};
use crate::store::fold::{MINUTE_MS, MinuteAgg};
use crate::store::{FoldStats, StoreError};

type Key = (i64, String, String, i64);

pub(super) async fn fold(
    tx: &Tx<'_>,
    raw_before_ms: i64,
    aggregates_before_ms: i64,
    max_samples: usize,
) -> Result<FoldStats, StoreError> {
    let mut stats = FoldStats::default();
    let mut groups: BTreeMap<Key, MinuteAgg> = BTreeMap::new();
    let mut seqs: Vec<i64> = Vec::new();
    // Locked, so a concurrent fold (another replica's) skips them rather than folding
    // them twice.
    for r in query(
        tx,
        "SELECT seq, node_id, pool, probe, taken_at_ms, outcome, metrics
         FROM samples WHERE taken_at_ms < $1 ORDER BY taken_at_ms LIMIT $2
         FOR UPDATE SKIP LOCKED",
        &[&raw_before_ms, &limit_of(max_samples)],
    )
    .await?
    {
        let taken: i64 = r.try_get(4)?;
        let key: Key = (
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            taken.div_euclid(MINUTE_MS) * MINUTE_MS,
        );
        let metrics: BTreeMap<String, f64> =
            serde_json::from_str(r.try_get::<_, &str>(6)?).unwrap_or_default();
        groups.entry(key).or_default().add(r.try_get(5)?, metrics);
        seqs.push(r.try_get(0)?);
    }
    for ((node_id, pool, probe, minute), mut agg) in groups {
        // A late sample may land in a minute folded before: merge with it.
        let old = query_opt(
            tx,
            "SELECT samples, outcomes, metrics FROM sample_minutes
             WHERE node_id = $1 AND pool = $2 AND probe = $3 AND minute_ms = $4 FOR UPDATE",
            &[&node_id, &pool, &probe, &minute],
        )
        .await?;
        if let Some(r) = old {
            agg.merge(MinuteAgg {
                samples: u64_of(r.try_get(0)?),
                outcomes: serde_json::from_str(r.try_get::<_, &str>(1)?)?,
                metrics: serde_json::from_str(r.try_get::<_, &str>(2)?)?,
            });
        }
        execute(
            tx,
            "INSERT INTO sample_minutes (node_id, pool, probe, minute_ms, samples, outcomes, metrics)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (node_id, pool, probe, minute_ms) DO UPDATE SET
               samples = excluded.samples, outcomes = excluded.outcomes, metrics = excluded.metrics",
            &[
                &node_id,
                &pool,
                &probe,
                &minute,
                &i64::try_from(agg.samples).unwrap_or(i64::MAX),
                &serde_json::to_string(&agg.outcomes)?,
                &serde_json::to_string(&agg.metrics)?,
            ],
        )
        .await?;
        stats.minutes += 1;
    }
    if !seqs.is_empty() {
        stats.folded = execute(tx, "DELETE FROM samples WHERE seq = ANY($1)", &[&seqs]).await?;
    }
    stats.expired_minutes = execute(
        tx,
        "DELETE FROM sample_minutes WHERE minute_ms < $1",
        &[&aggregates_before_ms],
    )
    .await?;
    Ok(stats)
}
