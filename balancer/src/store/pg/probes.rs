//! Probes (PostgreSQL): `probes`, `probe_versions` and `modules` (storing a version and
//! its module within the client's quotas, the active probes of a pool, deleting one, a
//! module's bytes for an agent, the garbage collection of versions and modules).
use bytes::Bytes;
use plb_api::{ProbeSettings, ProbeView};
use tokio_postgres::Row;

use super::pools::pool_id;
use super::{
    Tx, count, execute, lock_client, lock_modules, query, query_one, query_opt, u32_of, u64_of,
};
use crate::store::{ModuleGc, NewProbeVersion, PutProbe, QuotaExceeded, Quotas, StoreError};

/// Active probes of one client's pool; `$3` NULL for all, else one name.
const PROBE_VIEW: &str = "SELECT p.name, pr.name, pv.version, pv.sha256, m.size, pv.settings,
    pv.created_at_ms
    FROM probes pr JOIN pools p ON p.id = pr.pool_id
    JOIN probe_versions pv ON pv.probe_id = pr.id AND pv.version = pr.version
    JOIN modules m ON m.sha256 = pv.sha256
    WHERE p.client_id = $1 AND p.name = $2 AND pr.deleted_at_ms IS NULL
      AND ($3::text IS NULL OR pr.name = $3::text)";

fn probe_view(r: &Row) -> Result<ProbeView, StoreError> {
    let settings: String = r.try_get(5)?;
    Ok(ProbeView {
        pool: r.try_get(0)?,
        name: r.try_get(1)?,
        version: u32_of(r.try_get(2)?),
        sha256: r.try_get(3)?,
        size: u64_of(r.try_get(4)?),
        settings: serde_json::from_str::<ProbeSettings>(&settings)?,
        created_at_ms: r.try_get(6)?,
    })
}

pub(super) async fn get_probe(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    name: &str,
) -> Result<ProbeView, StoreError> {
    pool_id(tx, client_id, pool).await?;
    match query_opt(tx, PROBE_VIEW, &[&client_id, &pool, &Some(name)]).await? {
        Some(r) => probe_view(&r),
        None => Err(StoreError::NotFound(format!(
            "probe `{name}` in pool `{pool}`"
        ))),
    }
}

/// What storing a version will do, once every quota has passed.
pub(super) enum Plan {
    /// The active version already has this module and these settings.
    Unchanged(ProbeView),
    /// A new version of the probe in pool `pool_id`; `existing` is the probe's row id
    /// and newest version, if it has a row (deleted or not).
    Create {
        pool_id: i64,
        existing: Option<(i64, i64)>,
    },
}

fn exceeded(quota: &'static str, limit: u64) -> StoreError {
    StoreError::Quota(QuotaExceeded { quota, limit })
}

const CLIENT_MODULE_BYTES: &str = "SELECT coalesce(sum(m.size), 0)::bigint FROM modules m
    WHERE m.sha256 IN (SELECT pv.sha256 FROM probe_versions pv
      JOIN probes pr ON pr.id = pv.probe_id JOIN pools p ON p.id = pr.pool_id
      WHERE p.client_id = $1)";

const CLIENT_USES_MODULE: &str = "SELECT count(*) FROM probe_versions pv
    JOIN probes pr ON pr.id = pv.probe_id JOIN pools p ON p.id = pr.pool_id
    WHERE p.client_id = $1 AND pv.sha256 = $2";

const ACTIVE_PROBES: &str =
    "SELECT count(*) FROM probes WHERE pool_id = $1 AND deleted_at_ms IS NULL";

/// The probe row of `name` in pool `pid`: (id, newest version, deleted).
async fn probe_row(
    tx: &Tx<'_>,
    pid: i64,
    name: &str,
) -> Result<Option<(i64, i64, bool)>, StoreError> {
    match query_opt(
        tx,
        "SELECT id, version, deleted_at_ms IS NOT NULL FROM probes
         WHERE pool_id = $1 AND name = $2",
        &[&pid, &name],
    )
    .await?
    {
        Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))),
        None => Ok(None),
    }
}

pub(super) async fn check_upload(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    name: &str,
    q: &Quotas,
) -> Result<(), StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let active = matches!(probe_row(tx, pid, name).await?, Some((_, _, false)));
    if !active && count(tx, ACTIVE_PROBES, &[&pid]).await? >= q.probes_per_pool {
        return Err(exceeded("probes", q.probes_per_pool));
    }
    Ok(())
}

pub(super) async fn plan_put(
    tx: &Tx<'_>,
    p: &NewProbeVersion,
    q: &Quotas,
) -> Result<Plan, StoreError> {
    let pid = pool_id(tx, p.client_id, &p.pool).await?;
    let existing = probe_row(tx, pid, &p.name).await?;
    match existing {
        Some((_, _, false)) => {
            let active = get_probe(tx, p.client_id, &p.pool, &p.name).await?;
            if active.sha256 == p.sha256 && active.settings == p.settings {
                return Ok(Plan::Unchanged(active));
            }
        }
        _ => {
            if count(tx, ACTIVE_PROBES, &[&pid]).await? >= q.probes_per_pool {
                return Err(exceeded("probes", q.probes_per_pool));
            }
        }
    }
    if let Some((id, _, _)) = existing
        && count(
            tx,
            "SELECT count(*) FROM probe_versions WHERE probe_id = $1",
            &[&id],
        )
        .await?
            >= q.versions_per_probe
    {
        return Err(exceeded("probe_versions", q.versions_per_probe));
    }
    if count(tx, CLIENT_USES_MODULE, &[&p.client_id, &p.sha256]).await? == 0 {
        let used = count(tx, CLIENT_MODULE_BYTES, &[&p.client_id]).await?;
        let size = u64::try_from(p.module.len()).unwrap_or(u64::MAX);
        if used.saturating_add(size) > q.module_bytes {
            return Err(exceeded("module_bytes", q.module_bytes));
        }
    }
    Ok(Plan::Create {
        pool_id: pid,
        existing: existing.map(|(id, v, _)| (id, v)),
    })
}

pub(super) async fn put_probe(
    tx: &Tx<'_>,
    p: &NewProbeVersion,
    q: &Quotas,
) -> Result<PutProbe, StoreError> {
    lock_client(tx, p.client_id).await?;
    let (pid, existing) = match plan_put(tx, p, q).await? {
        Plan::Unchanged(active) => return Ok(PutProbe::Unchanged(active)),
        Plan::Create { pool_id, existing } => (pool_id, existing),
    };
    lock_modules(tx).await?;
    let size = i64::try_from(p.module.len()).unwrap_or(i64::MAX);
    let bytes: &[u8] = &p.module[..];
    execute(
        tx,
        "INSERT INTO modules (sha256, bytes, size, created_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (sha256) DO NOTHING",
        &[&p.sha256, &bytes, &size, &p.now_ms],
    )
    .await?;
    let (probe_id, version) = match existing {
        Some((id, v)) => {
            let v = v + 1;
            execute(
                tx,
                "UPDATE probes SET version = $2, deleted_at_ms = NULL WHERE id = $1",
                &[&id, &v],
            )
            .await?;
            (id, v)
        }
        None => {
            let id: i64 = query_one(
                tx,
                "INSERT INTO probes (pool_id, name, version) VALUES ($1, $2, 1) RETURNING id",
                &[&pid, &p.name],
            )
            .await?
            .try_get(0)?;
            (id, 1)
        }
    };
    let settings = serde_json::to_string(&p.settings)?;
    execute(
        tx,
        "INSERT INTO probe_versions (probe_id, version, sha256, settings, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[&probe_id, &version, &p.sha256, &settings, &p.now_ms],
    )
    .await?;
    Ok(PutProbe::Created(
        get_probe(tx, p.client_id, &p.pool, &p.name).await?,
    ))
}

pub(super) async fn list_probes(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
) -> Result<Vec<ProbeView>, StoreError> {
    pool_id(tx, client_id, pool).await?;
    let sql = format!("{PROBE_VIEW} ORDER BY pr.name");
    query(tx, &sql, &[&client_id, &pool, &None::<&str>])
        .await?
        .iter()
        .map(probe_view)
        .collect()
}

pub(super) async fn delete_probe(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    name: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let id = query_opt(
        tx,
        "UPDATE probes SET deleted_at_ms = $3
         WHERE pool_id = $1 AND name = $2 AND deleted_at_ms IS NULL RETURNING id",
        &[&pid, &name, &now_ms],
    )
    .await?;
    let Some(id) = id else {
        return Err(StoreError::NotFound(format!(
            "probe `{name}` in pool `{pool}`"
        )));
    };
    let id: i64 = id.try_get(0)?;
    lock_modules(tx).await?;
    let shas: Vec<String> = query(
        tx,
        "DELETE FROM probe_versions WHERE probe_id = $1 RETURNING sha256",
        &[&id],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    for sha in shas {
        execute(
            tx,
            "DELETE FROM modules WHERE sha256 = $1
             AND NOT EXISTS (SELECT 1 FROM probe_versions pv WHERE pv.sha256 = $1)",
            &[&sha],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn collect_modules(
    tx: &Tx<'_>,
    superseded_before_ms: i64,
) -> Result<ModuleGc, StoreError> {
    lock_modules(tx).await?;
    let versions = execute(
        tx,
        "DELETE FROM probe_versions WHERE (probe_id, version) IN (
           SELECT pv.probe_id, pv.version FROM probe_versions pv
           JOIN probes pr ON pr.id = pv.probe_id
           WHERE pr.deleted_at_ms IS NOT NULL
              OR (pv.version < pr.version AND (
                    SELECT min(nx.created_at_ms) FROM probe_versions nx
                    WHERE nx.probe_id = pv.probe_id AND nx.version > pv.version
                  ) < $1))",
        &[&superseded_before_ms],
    )
    .await?;
    let r = query_one(
        tx,
        "WITH gone AS (
           DELETE FROM modules m
           WHERE NOT EXISTS (SELECT 1 FROM probe_versions pv WHERE pv.sha256 = m.sha256)
           RETURNING size)
         SELECT count(*), coalesce(sum(size), 0)::bigint FROM gone",
        &[],
    )
    .await?;
    Ok(ModuleGc {
        versions,
        modules: u64_of(r.try_get(0)?),
        bytes: u64_of(r.try_get(1)?),
    })
}

pub(super) async fn module(tx: &Tx<'_>, token_id: i64, sha256: &str) -> Result<Bytes, StoreError> {
    let row = query_opt(
        tx,
        "SELECT m.bytes FROM modules m WHERE m.sha256 = $2 AND EXISTS (
           SELECT 1 FROM probe_versions pv
           JOIN probes pr ON pr.id = pv.probe_id
           JOIN agent_token_pools atp ON atp.pool_id = pr.pool_id
           WHERE pv.sha256 = m.sha256 AND atp.token_id = $1)",
        &[&token_id, &sha256],
    )
    .await?;
    match row {
        Some(r) => Ok(Bytes::from(r.try_get::<_, Vec<u8>>(0)?)),
        None => Err(StoreError::NotFound(format!("module {sha256}"))),
    }
}
