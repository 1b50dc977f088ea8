//! Samples (PostgreSQL): `samples` and `latest_samples` (a report batch stored whole or
//! not at all, idempotent by sample id, with each node's newest sample per probe and its
//! drop count). A batch is a handful of statements whatever its size: the checks read
//! every pool and probe it names at once, the samples go in as arrays (`unnest`).
use std::collections::{BTreeMap, HashMap};

use plb_api::{NODE_SAMPLER_PROBE, ReportAck, Sample};
use tokio_postgres::types::ToSql;

use super::nodes::own_node;
use super::{Tx, execute, query, text};
use crate::store::{Ingest, Ingested, StoreError};

const INSERT_SAMPLES: &str = "INSERT INTO samples (node_id, id, node, pool, probe, version,
       taken_at_ms, outcome, metrics, duration_ms, fuel_used, message, stderr, received_at_ms,
       writer)
     SELECT $1, u.id, $2, u.pool, u.probe, u.version, u.taken_at_ms, u.outcome, u.metrics,
       u.duration_ms, u.fuel_used, u.message, u.stderr, $3, $15
     FROM unnest($4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[],
       $10::text[], $11::float8[], $12::bigint[], $13::text[], $14::text[])
       WITH ORDINALITY AS u(id, pool, probe, version, taken_at_ms, outcome, metrics,
         duration_ms, fuel_used, message, stderr, ord)
     ORDER BY u.ord
     ON CONFLICT (node_id, id) DO NOTHING
     RETURNING id";

/// The batch's pools that hold its node, each with the batch's probes assigned there
/// (one row per pool and probe; a pool without them has NULL probe columns).
const CHECK_POOLS: &str = "SELECT p.name, p.id, pr.name, pr.version, pr.deleted_at_ms
     FROM nodes n
     JOIN pool_nodes pn ON pn.node_id = n.id
     JOIN pools p ON p.id = pn.pool_id AND p.client_id = $1 AND p.name = ANY($3)
     LEFT JOIN probes pr ON pr.pool_id = p.id AND pr.name = ANY($4)
     WHERE n.client_id = $1 AND n.name = $2";

const UPSERT_LATEST: &str = "INSERT INTO latest_samples (node_id, pool, probe, taken_at_ms, sample)
     SELECT $1, u.pool, u.probe, u.taken_at_ms, u.sample
     FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[])
       AS u(pool, probe, taken_at_ms, sample)
     ON CONFLICT (node_id, pool, probe) DO UPDATE SET
       taken_at_ms = excluded.taken_at_ms, sample = excluded.sample
     WHERE excluded.taken_at_ms >= latest_samples.taken_at_ms";

/// Stores `ing` marked as `writer`'s.
pub(super) async fn ingest(tx: &Tx<'_>, ing: &Ingest, writer: i64) -> Result<Ingested, StoreError> {
    let Ingest {
        token_id,
        client_id,
        batch,
        now_ms,
    } = ing;
    // Check every sample before writing any: a batch is stored whole or not at all.
    let mut pool_names: Vec<&str> = batch.samples.iter().map(|s| s.pool.as_str()).collect();
    pool_names.sort_unstable();
    pool_names.dedup();
    let mut probe_names: Vec<&str> = batch.samples.iter().map(|s| s.probe.as_str()).collect();
    probe_names.sort_unstable();
    probe_names.dedup();
    // One round trip for both reads (tokio-postgres pipelines concurrent statements on a
    // connection); the pools and probes are only looked at once the node is the token's.
    let check: [&(dyn ToSql + Sync); 4] = [client_id, &batch.node, &pool_names, &probe_names];
    let ((node_id, _), rows) = tokio::try_join!(
        own_node(tx, *token_id, *client_id, &batch.node),
        query(tx, CHECK_POOLS, &check),
    )?;
    let mut pools: HashMap<String, i64> = HashMap::new();
    let mut probes: HashMap<(i64, String), (i64, Option<i64>)> = HashMap::new();
    for r in &rows {
        let pool_id: i64 = r.try_get(1)?;
        pools.insert(r.try_get(0)?, pool_id);
        if let Some(probe) = r.try_get::<_, Option<String>>(2)? {
            probes.insert((pool_id, probe), (r.try_get(3)?, r.try_get(4)?));
        }
    }
    for s in &batch.samples {
        let Some(&pid) = pools.get(&s.pool) else {
            return Err(StoreError::Invalid(format!(
                "sample `{}`: node `{}` is not in pool `{}`",
                s.id, batch.node, s.pool
            )));
        };
        if s.probe == NODE_SAMPLER_PROBE {
            continue;
        }
        let Some(&(newest, deleted_at)) = probes.get(&(pid, s.probe.clone())) else {
            return Err(StoreError::Invalid(format!(
                "sample `{}`: probe `{}` is not assigned in pool `{}`",
                s.id, s.probe, s.pool
            )));
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
        if s.version == 0 || i64::from(s.version) > newest {
            return Err(StoreError::Invalid(format!(
                "sample `{}`: probe `{}` in pool `{}` has no version {}",
                s.id, s.probe, s.pool, s.version
            )));
        }
    }
    let total = batch.samples.len();
    let n = total;
    let (mut ids, mut spools, mut sprobes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut versions, mut taken, mut outcomes, mut metrics) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut durations, mut fuels, mut messages, mut stderrs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in &batch.samples {
        ids.push(text(&s.id));
        spools.push(s.pool.as_str());
        sprobes.push(s.probe.as_str());
        versions.push(i64::from(s.version));
        taken.push(s.taken_at_ms);
        outcomes.push(s.outcome.as_str());
        metrics.push(serde_json::to_string(&s.metrics)?);
        durations.push(s.duration_ms);
        fuels.push(s.fuel_used.map(|f| i64::try_from(f).unwrap_or(i64::MAX)));
        messages.push(text(&s.message));
        stderrs.push(text(&s.stderr));
    }
    let ids_ref: Vec<&str> = ids.iter().map(|s| s.as_ref()).collect();
    let messages: Vec<&str> = messages.iter().map(|s| s.as_ref()).collect();
    let stderrs: Vec<&str> = stderrs.iter().map(|s| s.as_ref()).collect();
    let node = text(&batch.node);
    let inserted = query(
        tx,
        INSERT_SAMPLES,
        &[
            &node_id,
            &node.as_ref(),
            now_ms,
            &ids_ref,
            &spools,
            &sprobes,
            &versions,
            &taken,
            &outcomes,
            &metrics,
            &durations,
            &fuels,
            &messages,
            &stderrs,
            &writer,
        ],
    )
    .await?;
    // Which samples are new: each returned id once, in batch order (a duplicate id
    // inside the batch stores its first sample).
    let mut new_ids: HashMap<String, usize> = HashMap::with_capacity(inserted.len());
    for r in &inserted {
        *new_ids.entry(r.try_get(0)?).or_default() += 1;
    }
    let mut stored: Vec<Sample> = Vec::with_capacity(inserted.len());
    for (s, id) in batch.samples.iter().zip(&ids_ref) {
        if let Some(left) = new_ids.get_mut(*id)
            && *left > 0
        {
            *left -= 1;
            stored.push(s.clone());
        }
    }
    // A resent batch (every sample a duplicate) does not count its drops again.
    let dropped = if total > 0 && stored.is_empty() {
        0
    } else {
        i64::try_from(batch.dropped).unwrap_or(i64::MAX)
    };
    let seen_params: [&(dyn ToSql + Sync); 3] = [&node_id, now_ms, &dropped];
    let seen = execute(
        tx,
        "UPDATE nodes SET last_seen_ms = GREATEST(coalesce(last_seen_ms, 0), $2),
           dropped_samples = dropped_samples + $3 WHERE id = $1",
        &seen_params,
    );
    if stored.is_empty() {
        seen.await?;
    } else {
        let mut newest: BTreeMap<(&str, &str), &Sample> = BTreeMap::new();
        for s in &stored {
            let e = newest.entry((&s.pool, &s.probe)).or_insert(s);
            if s.taken_at_ms >= e.taken_at_ms {
                *e = s;
            }
        }
        let mut lp = Vec::with_capacity(newest.len());
        let mut lq = Vec::with_capacity(newest.len());
        let mut lt = Vec::with_capacity(newest.len());
        let mut ls = Vec::with_capacity(newest.len());
        for ((pool, probe), s) in newest {
            lp.push(pool);
            lq.push(probe);
            lt.push(s.taken_at_ms);
            ls.push(serde_json::to_string(s)?);
        }
        // Pipelined, one round trip.
        let latest: [&(dyn ToSql + Sync); 5] = [&node_id, &lp, &lq, &lt, &ls];
        tokio::try_join!(execute(tx, UPSERT_LATEST, &latest), seen)?;
    }
    Ok(Ingested {
        ack: ReportAck {
            accepted: stored.len(),
            duplicates: total - stored.len(),
        },
        node_id,
        stored,
    })
}

/// The newest `seq` now (0 for an empty table).
pub(super) async fn tail_start(tx: &Tx<'_>) -> Result<Option<i64>, StoreError> {
    let rows = query(tx, "SELECT coalesce(max(seq), 0) FROM samples", &[]).await?;
    Ok(Some(match rows.first() {
        Some(r) => r.try_get(0)?,
        None => 0,
    }))
}

/// The tail's read. Each part reads a range of the primary key whatever the plan (`seq >
/// $1 OR seq = ANY($2)` in one WHERE scans the table from its start under a generic
/// plan); the other processes' rows are then fetched one by one.
const TAIL: &str = "WITH page AS (
         (SELECT seq, writer FROM samples WHERE seq > $1 ORDER BY seq LIMIT $3)
         UNION ALL
         (SELECT seq, writer FROM samples WHERE seq = ANY($2)))
     SELECT p.seq, o.* FROM page p
     LEFT JOIN LATERAL (
         SELECT n.client_id, s.node_id, s.node, s.received_at_ms, s.id, s.pool, s.probe,
                s.version, s.taken_at_ms, s.outcome, s.metrics, s.duration_ms, s.fuel_used,
                s.message, s.stderr
         FROM samples s JOIN nodes n ON n.id = s.node_id
         WHERE s.seq = p.seq AND p.writer <> $4 LIMIT 1) o ON true
     ORDER BY p.seq";

/// Rows after `after` or at `also`, in `seq` order: the positions of all and, as batches
/// per node, the samples another process than `writer` stored (this process's own rows
/// are read as their position only).
pub(super) async fn tail_samples(
    c: &impl deadpool_postgres::GenericClient,
    after: i64,
    also: &[i64],
    limit: i64,
    writer: i64,
) -> Result<crate::store::TailPage, StoreError> {
    use crate::ingest::CommittedBatch;
    let st = c.prepare_cached(TAIL).await?;
    let rows = c.query(&st, &[&after, &also, &limit, &writer]).await?;
    let mut page = crate::store::TailPage::default();
    for r in &rows {
        page.seqs.push(r.try_get(0)?);
        // This process's own row.
        let Some(node_id) = r.try_get::<_, Option<i64>>(2)? else {
            continue;
        };
        let client_id: i64 = r.try_get(1)?;
        let node: String = r.try_get(3)?;
        let received_at_ms: i64 = r.try_get(4)?;
        let outcome: String = r.try_get(10)?;
        let metrics: String = r.try_get(11)?;
        let fuel: Option<i64> = r.try_get(13)?;
        let version: i64 = r.try_get(8)?;
        let sample = Sample {
            id: r.try_get(5)?,
            pool: r.try_get(6)?,
            probe: r.try_get(7)?,
            version: u32::try_from(version).unwrap_or(u32::MAX),
            taken_at_ms: r.try_get(9)?,
            outcome: serde_json::from_value(serde_json::Value::String(outcome))?,
            metrics: serde_json::from_str(&metrics)?,
            duration_ms: r.try_get(12)?,
            fuel_used: fuel.and_then(|f| u64::try_from(f).ok()),
            message: r.try_get(14)?,
            stderr: r.try_get(15)?,
        };
        match page.batches.last_mut() {
            Some(b) if b.node_id == node_id && b.received_at_ms == received_at_ms => {
                b.samples.push(sample);
            }
            _ => page.batches.push(CommittedBatch {
                client_id,
                node_id,
                node,
                received_at_ms,
                samples: vec![sample],
            }),
        }
    }
    Ok(page)
}
