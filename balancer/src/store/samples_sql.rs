//! Samples: `samples` and `latest_samples` (a report batch stored whole or not at all,
//! idempotent by sample id, with each node's newest sample per probe and its drop count).
use std::collections::{BTreeMap, HashMap};

use plb_api::{NODE_SAMPLER_PROBE, ReportAck, Sample};
use rusqlite::{Connection, OptionalExtension, params};

use super::nodes_sql::own_node;
use super::{Ingest, Ingested, StoreError};

pub(super) fn ingest(c: &Connection, ing: Ingest) -> Result<Ingested, StoreError> {
    let Ingest {
        token_id,
        client_id,
        batch,
        now_ms,
    } = ing;
    let node_id = own_node(c, token_id, client_id, &batch.node)?.id;
    // Check every sample before writing any: a batch is stored whole or not at all.
    {
        let mut pool_q = c.prepare_cached(
            "SELECT p.id FROM pools p JOIN pool_nodes pn ON pn.pool_id = p.id AND pn.node_id = ?3
             WHERE p.client_id = ?1 AND p.name = ?2",
        )?;
        let mut probe_q = c.prepare_cached(
            "SELECT version, deleted_at_ms FROM probes WHERE pool_id = ?1 AND name = ?2",
        )?;
        let mut pools: HashMap<&str, i64> = HashMap::new();
        let mut probes: HashMap<(&str, &str), (u32, Option<i64>)> = HashMap::new();
        for s in &batch.samples {
            let pid = match pools.get(s.pool.as_str()) {
                Some(id) => *id,
                None => {
                    let id: i64 = pool_q
                        .query_row(params![client_id, s.pool, node_id], |r| r.get(0))
                        .optional()?
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "sample `{}`: node `{}` is not in pool `{}`",
                                s.id, batch.node, s.pool
                            ))
                        })?;
                    pools.insert(&s.pool, id);
                    id
                }
            };
            if s.probe == NODE_SAMPLER_PROBE {
                continue;
            }
            let (newest, deleted_at) = match probes.get(&(s.pool.as_str(), s.probe.as_str())) {
                Some(v) => *v,
                None => {
                    let v: (u32, Option<i64>) = probe_q
                        .query_row(params![pid, s.probe], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "sample `{}`: probe `{}` is not assigned in pool `{}`",
                                s.id, s.probe, s.pool
                            ))
                        })?;
                    probes.insert((&s.pool, &s.probe), v);
                    v
                }
            };
            // A deleted probe takes no samples taken after its deletion (those taken
            // before, still in an agent's spool, are kept).
            if let Some(d) = deleted_at
                && s.taken_at_ms > d
            {
                return Err(StoreError::Invalid(format!(
                    "sample `{}`: probe `{}` in pool `{}` was deleted",
                    s.id, s.probe, s.pool
                )));
            }
            if s.version == 0 || s.version > newest {
                return Err(StoreError::Invalid(format!(
                    "sample `{}`: probe `{}` in pool `{}` has no version {}",
                    s.id, s.probe, s.pool, s.version
                )));
            }
        }
    }
    let total = batch.samples.len();
    let mut stored = Vec::with_capacity(total);
    {
        let mut ins = c.prepare_cached(
            "INSERT INTO samples (node_id, id, node, pool, probe, version, taken_at_ms, outcome,
               metrics, duration_ms, fuel_used, message, stderr, received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (node_id, id) DO NOTHING",
        )?;
        for s in batch.samples {
            let fuel = s.fuel_used.map(|f| i64::try_from(f).unwrap_or(i64::MAX));
            let n = ins.execute(params![
                node_id,
                s.id,
                batch.node,
                s.pool,
                s.probe,
                s.version,
                s.taken_at_ms,
                s.outcome.as_str(),
                serde_json::to_string(&s.metrics)?,
                s.duration_ms,
                fuel,
                s.message,
                s.stderr,
                now_ms,
            ])?;
            if n == 1 {
                stored.push(s);
            }
        }
    }
    {
        let mut newest: BTreeMap<(&str, &str), &Sample> = BTreeMap::new();
        for s in &stored {
            let e = newest.entry((&s.pool, &s.probe)).or_insert(s);
            if s.taken_at_ms >= e.taken_at_ms {
                *e = s;
            }
        }
        let mut up = c.prepare_cached(
            "INSERT INTO latest_samples (node_id, pool, probe, taken_at_ms, sample)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (node_id, pool, probe) DO UPDATE SET
               taken_at_ms = excluded.taken_at_ms, sample = excluded.sample
             WHERE excluded.taken_at_ms >= latest_samples.taken_at_ms",
        )?;
        for ((pool, probe), s) in newest {
            up.execute(params![
                node_id,
                pool,
                probe,
                s.taken_at_ms,
                serde_json::to_string(s)?
            ])?;
        }
    }
    // A resent batch (every sample a duplicate) does not count its drops again.
    let dropped = if total > 0 && stored.is_empty() {
        0
    } else {
        i64::try_from(batch.dropped).unwrap_or(i64::MAX)
    };
    // Saturating: SQLite turns an integer sum past 2^63 - 1 into a REAL, which no longer
    // reads back as an integer (a hostile agent's `dropped` can be u64::MAX twice).
    c.prepare_cached(
        "UPDATE nodes SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2),
           dropped_samples = CASE WHEN dropped_samples > 9223372036854775807 - ?3
             THEN 9223372036854775807 ELSE dropped_samples + ?3 END
         WHERE id = ?1",
    )?
    .execute(params![node_id, now_ms, dropped])?;
    Ok(Ingested {
        ack: ReportAck {
            accepted: stored.len(),
            duplicates: total - stored.len(),
        },
        node_id,
        stored,
    })
}
