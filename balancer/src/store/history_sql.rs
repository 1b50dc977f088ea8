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

/// The history read: the node's id from `(client_id, name)` (unique), then the series'
/// newest rows through `samples_by_series` (migration 4), never the time index over every
/// tenant's samples. `?1` since, `?2` client id, `?3` node, `?4` pool, `?5` probe, `?6`
/// limit.
pub(super) const NODE_PROBE_SAMPLES_SQL: &str = "SELECT s.taken_at_ms, s.metrics FROM samples s
     WHERE s.node_id = (SELECT id FROM nodes WHERE client_id = ?2 AND name = ?3)
       AND s.pool = ?4 AND s.probe = ?5 AND s.taken_at_ms >= ?1 AND s.outcome = 'ok'
     ORDER BY s.taken_at_ms DESC, s.seq DESC LIMIT ?6";

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
    let mut q = c.prepare_cached(NODE_PROBE_SAMPLES_SQL)?;
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
