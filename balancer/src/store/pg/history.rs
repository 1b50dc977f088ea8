//! The dashboard's history read (PostgreSQL): one node's stored `ok` samples of one probe
//! in one of the client's pools, newest first in SQL (so a capped read keeps the newest
//! part), answered oldest first; through `samples_by_series`.
use super::{Tx, limit_of, query};
use crate::store::{StoreError, TimedMetrics};

pub(super) async fn node_probe_samples(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    node: &str,
    probe: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<TimedMetrics>, StoreError> {
    let rows = query(
        tx,
        "SELECT s.taken_at_ms, s.metrics FROM samples s
         WHERE s.node_id = (SELECT id FROM nodes WHERE client_id = $2 AND name = $3)
           AND s.pool = $4 AND s.probe = $5 AND s.taken_at_ms >= $1 AND s.outcome = 'ok'
         ORDER BY s.taken_at_ms DESC, s.seq DESC LIMIT $6",
        &[
            &since_ms,
            &client_id,
            &node,
            &pool,
            &probe,
            &limit_of(limit),
        ],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(TimedMetrics {
            taken_at_ms: r.try_get(0)?,
            metrics: serde_json::from_str(r.try_get::<_, &str>(1)?)?,
        });
    }
    out.reverse();
    Ok(out)
}
