//! Retention: raw samples older than the raw window are folded into per-minute aggregates
//! (count by outcome, per-metric count/min/mean/max) and deleted; aggregates older than
//! their own window are deleted; freed pages are returned to the file system.
use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// What one fold pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Raw samples folded and deleted.
    pub folded: u64,
    /// Minute rows written (new or merged).
    pub minutes: u64,
    /// Minute rows deleted as older than their window.
    pub expired_minutes: u64,
}

/// One metric over one minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricAgg {
    pub n: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl MetricAgg {
    fn one(v: f64) -> MetricAgg {
        MetricAgg {
            n: 1,
            min: v,
            mean: v,
            max: v,
        }
    }

    fn merge(&mut self, o: &MetricAgg) {
        let n = self.n + o.n;
        if n == 0 {
            return;
        }
        self.mean = (self.mean * self.n as f64 + o.mean * o.n as f64) / n as f64;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.n = n;
    }
}

/// One (node, pool, probe, minute).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MinuteAgg {
    pub samples: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub metrics: BTreeMap<String, MetricAgg>,
}

impl MinuteAgg {
    pub(crate) fn add(&mut self, outcome: String, metrics: BTreeMap<String, f64>) {
        self.samples += 1;
        *self.outcomes.entry(outcome).or_default() += 1;
        for (k, v) in metrics {
            if !v.is_finite() {
                continue;
            }
            match self.metrics.get_mut(&k) {
                Some(a) => a.merge(&MetricAgg::one(v)),
                None => {
                    self.metrics.insert(k, MetricAgg::one(v));
                }
            }
        }
    }

    pub(crate) fn merge(&mut self, o: MinuteAgg) {
        self.samples += o.samples;
        for (k, v) in o.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in o.metrics {
            match self.metrics.get_mut(&k) {
                Some(a) => a.merge(&v),
                None => {
                    self.metrics.insert(k, v);
                }
            }
        }
    }
}

type Key = (i64, String, String, i64);

pub(crate) const MINUTE_MS: i64 = 60_000;

/// Pages returned to the file system per pass at most (4 KiB each).
const VACUUM_PAGES: i64 = 4096;

pub(crate) fn fold(
    conn: &Connection,
    raw_before_ms: i64,
    aggregates_before_ms: i64,
    max_samples: usize,
) -> Result<FoldStats, StoreError> {
    let mut stats = FoldStats::default();
    let mut groups: BTreeMap<Key, MinuteAgg> = BTreeMap::new();
    let mut seqs: Vec<i64> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, node_id, pool, probe, taken_at_ms, outcome, metrics
             FROM samples WHERE taken_at_ms < ?1 ORDER BY taken_at_ms LIMIT ?2",
        )?;
        let limit = i64::try_from(max_samples).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![raw_before_ms, limit])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let taken: i64 = r.get(4)?;
            let key: Key = (
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                taken.div_euclid(MINUTE_MS) * MINUTE_MS,
            );
            let metrics: BTreeMap<String, f64> =
                serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default();
            groups.entry(key).or_default().add(r.get(5)?, metrics);
            seqs.push(seq);
        }
    }
    {
        let mut get = conn.prepare_cached(
            "SELECT samples, outcomes, metrics FROM sample_minutes
             WHERE node_id = ?1 AND pool = ?2 AND probe = ?3 AND minute_ms = ?4",
        )?;
        let mut put = conn.prepare_cached(
            "INSERT INTO sample_minutes (node_id, pool, probe, minute_ms, samples, outcomes, metrics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (node_id, pool, probe, minute_ms) DO UPDATE SET
               samples = excluded.samples, outcomes = excluded.outcomes, metrics = excluded.metrics",
        )?;
        for ((node_id, pool, probe, minute), mut agg) in groups {
            // A late sample may land in a minute folded before: merge with it.
            let old = get
                .query_row(params![node_id, pool, probe, minute], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            if let Some((n, outcomes, metrics)) = old {
                agg.merge(MinuteAgg {
                    samples: u64::try_from(n).unwrap_or(0),
                    outcomes: serde_json::from_str(&outcomes)?,
                    metrics: serde_json::from_str(&metrics)?,
                });
            }
            put.execute(params![
                node_id,
                pool,
                probe,
                minute,
                i64::try_from(agg.samples).unwrap_or(i64::MAX),
                serde_json::to_string(&agg.outcomes)?,
                serde_json::to_string(&agg.metrics)?,
            ])?;
            stats.minutes += 1;
        }
    }
    {
        let mut del = conn.prepare_cached("DELETE FROM samples WHERE seq = ?1")?;
        for seq in &seqs {
            stats.folded += del.execute([seq])? as u64;
        }
    }
    stats.expired_minutes = conn.execute(
        "DELETE FROM sample_minutes WHERE minute_ms < ?1",
        [aggregates_before_ms],
    )? as u64;
    if stats.folded > 0 || stats.expired_minutes > 0 {
        // Only effective with `auto_vacuum = INCREMENTAL` (set on new databases).
        let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_aggregates_merge_exactly() {
        let mut a = MinuteAgg::default();
        for (o, v) in [("ok", 1.0), ("ok", 3.0), ("timeout", f64::NAN)] {
            a.add(o.into(), BTreeMap::from([("x".to_string(), v)]));
        }
        let mut b = MinuteAgg::default();
        b.add("ok".into(), BTreeMap::from([("x".to_string(), 8.0)]));
        a.merge(b);
        assert_eq!(a.samples, 4);
        assert_eq!(a.outcomes["ok"], 3);
        assert_eq!(a.outcomes["timeout"], 1);
        let x = a.metrics["x"];
        assert_eq!((x.n, x.min, x.max), (3, 1.0, 8.0));
        assert!((x.mean - 4.0).abs() < 1e-12);
    }
}
