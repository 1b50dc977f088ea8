//! The dashboard's history read: one node's stored `ok` samples of one probe in one of
//! the client's pools, newest first in SQL (so a capped read keeps the newest part),
//! answered oldest first.
use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::StoreError;

/// A stored sample's time and its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedMetrics {
    /// When it was taken, Unix ms.
    pub taken_at_ms: i64,
    /// Its metrics by name.
    pub metrics: BTreeMap<String, f64>,
}

/// Time and metrics of the node's `ok` runs of `probe` in `pool` taken at or
/// after `since_ms`: the newest `limit`, oldest first.
pub(super) fn node_probe_samples(
    c: &Connection,
    client_id: i64,
    pool: &str,
    node: &str,
    probe: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<TimedMetrics>, StoreError> {
    let mut q = c.prepare_cached(
        "SELECT s.taken_at_ms, s.metrics
         FROM samples s JOIN nodes n ON n.id = s.node_id
         WHERE s.taken_at_ms >= ?1 AND n.client_id = ?2 AND s.node = ?3 AND s.pool = ?4
           AND s.probe = ?5 AND s.outcome = 'ok'
         ORDER BY s.taken_at_ms DESC, s.seq DESC LIMIT ?6",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = q.query(params![since_ms, client_id, node, pool, probe, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let metrics: String = r.get(1)?;
        out.push(TimedMetrics {
            taken_at_ms: r.get(0)?,
            metrics: serde_json::from_str(&metrics)?,
        });
    }
    out.reverse();
    Ok(out)
}
