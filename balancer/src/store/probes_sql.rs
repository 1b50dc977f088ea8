//! Probes: `probes`, `probe_versions` and `modules` (storing a version and its module by
//! sha256 within the client's quotas, the active probes of a pool, deleting one, a
//! module's bytes for an agent, and the garbage collection of versions no longer needed
//! and of the modules no stored version uses).
use bytes::Bytes;
use plb_api::{ProbeSettings, ProbeView};
use rusqlite::{Connection, OptionalExtension, params};

use super::pools_sql::pool_id;
use super::{ModuleGc, NewProbeVersion, PutProbe, QuotaExceeded, Quotas, StoreError};

/// Active probes of one client's pool; `?3` NULL for all, else one name.
const PROBE_VIEW: &str = "SELECT p.name, pr.name, pv.version, pv.sha256, m.size, pv.settings,
    pv.created_at_ms
    FROM probes pr JOIN pools p ON p.id = pr.pool_id
    JOIN probe_versions pv ON pv.probe_id = pr.id AND pv.version = pr.version
    JOIN modules m ON m.sha256 = pv.sha256
    WHERE p.client_id = ?1 AND p.name = ?2 AND pr.deleted_at_ms IS NULL
      AND (?3 IS NULL OR pr.name = ?3)";

fn probe_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ProbeView, StoreError>> {
    let settings: String = r.get(5)?;
    let settings = match serde_json::from_str::<ProbeSettings>(&settings) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(Ok(ProbeView {
        pool: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        sha256: r.get(3)?,
        size: r.get(4)?,
        settings,
        created_at_ms: r.get(6)?,
    }))
}

pub(super) fn get_probe(
    c: &Connection,
    client_id: i64,
    pool: &str,
    name: &str,
) -> Result<ProbeView, StoreError> {
    pool_id(c, client_id, pool)?;
    c.prepare_cached(PROBE_VIEW)?
        .query_row(params![client_id, pool, name], probe_view)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("probe `{name}` in pool `{pool}`")))?
}

/// What storing a version will do, once every quota has passed.
pub(super) enum Plan {
    /// The active version already has this module and these settings.
    Unchanged(ProbeView),
    /// A new version of the probe in pool `pool_id`; `existing` is the probe's row id
    /// and newest version, if it has a row (deleted or not).
    Create {
        pool_id: i64,
        existing: Option<(i64, u32)>,
    },
}

fn exceeded(quota: &'static str, limit: u64) -> StoreError {
    StoreError::Quota(QuotaExceeded { quota, limit })
}

fn count(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<u64, StoreError> {
    let n: i64 = c.prepare_cached(sql)?.query_row(p, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Bytes of the distinct modules the client's stored probe versions use.
const CLIENT_MODULE_BYTES: &str = "SELECT coalesce(sum(m.size), 0) FROM modules m
    WHERE m.sha256 IN (SELECT pv.sha256 FROM probe_versions pv
      JOIN probes pr ON pr.id = pv.probe_id JOIN pools p ON p.id = pr.pool_id
      WHERE p.client_id = ?1)";

/// Whether one of the client's stored versions uses the module `?2`.
const CLIENT_USES_MODULE: &str = "SELECT count(*) FROM probe_versions pv
    JOIN probes pr ON pr.id = pv.probe_id JOIN pools p ON p.id = pr.pool_id
    WHERE p.client_id = ?1 AND pv.sha256 = ?2";

/// Active probes of a pool.
const ACTIVE_PROBES: &str =
    "SELECT count(*) FROM probes WHERE pool_id = ?1 AND deleted_at_ms IS NULL";

/// The probe row of `name` in pool `pid`: (id, newest version, deleted).
fn probe_row(c: &Connection, pid: i64, name: &str) -> Result<Option<(i64, u32, bool)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, version, deleted_at_ms IS NOT NULL FROM probes
             WHERE pool_id = ?1 AND name = ?2",
    )?
    .query_row(params![pid, name], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()?)
}

/// The quota an upload may be past before its body is read: a new (or deleted) probe
/// against the pool's active probes. (Module bytes need the module's digest: a module
/// the client already uses costs nothing.)
pub(super) fn check_upload(
    c: &Connection,
    client_id: i64,
    pool: &str,
    name: &str,
    q: &Quotas,
) -> Result<(), StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let active = matches!(probe_row(c, pid, name)?, Some((_, _, false)));
    if !active && count(c, ACTIVE_PROBES, [pid])? >= q.probes_per_pool {
        return Err(exceeded("probes", q.probes_per_pool));
    }
    Ok(())
}

/// Decides what storing `p` does and checks every quota it touches: active probes per
/// pool (a new or deleted probe), stored versions per probe, and the client's module
/// bytes (a module it does not use yet).
pub(super) fn plan_put(
    c: &Connection,
    p: &NewProbeVersion,
    q: &Quotas,
) -> Result<Plan, StoreError> {
    let pid = pool_id(c, p.client_id, &p.pool)?;
    let existing = probe_row(c, pid, &p.name)?;
    match existing {
        Some((_, _, false)) => {
            let active = get_probe(c, p.client_id, &p.pool, &p.name)?;
            if active.sha256 == p.sha256 && active.settings == p.settings {
                return Ok(Plan::Unchanged(active));
            }
        }
        _ => {
            if count(c, ACTIVE_PROBES, [pid])? >= q.probes_per_pool {
                return Err(exceeded("probes", q.probes_per_pool));
            }
        }
    }
    if let Some((id, _, _)) = existing
        && count(
            c,
            "SELECT count(*) FROM probe_versions WHERE probe_id = ?1",
            [id],
        )? >= q.versions_per_probe
    {
        return Err(exceeded("probe_versions", q.versions_per_probe));
    }
    if count(c, CLIENT_USES_MODULE, params![p.client_id, p.sha256])? == 0 {
        let used = count(c, CLIENT_MODULE_BYTES, [p.client_id])?;
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

pub(super) fn put_probe(
    c: &Connection,
    p: NewProbeVersion,
    q: &Quotas,
) -> Result<PutProbe, StoreError> {
    let (pid, existing) = match plan_put(c, &p, q)? {
        Plan::Unchanged(active) => return Ok(PutProbe::Unchanged(active)),
        Plan::Create { pool_id, existing } => (pool_id, existing),
    };
    c.execute(
        "INSERT INTO modules (sha256, bytes, size, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sha256) DO NOTHING",
        params![p.sha256, &p.module[..], p.module.len() as i64, p.now_ms],
    )?;
    let (probe_id, version) = match existing {
        Some((id, v)) => {
            let v = v + 1;
            c.execute(
                "UPDATE probes SET version = ?2, deleted_at_ms = NULL WHERE id = ?1",
                params![id, v],
            )?;
            (id, v)
        }
        None => {
            c.execute(
                "INSERT INTO probes (pool_id, name, version) VALUES (?1, ?2, 1)",
                params![pid, p.name],
            )?;
            (c.last_insert_rowid(), 1)
        }
    };
    c.execute(
        "INSERT INTO probe_versions (probe_id, version, sha256, settings, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            probe_id,
            version,
            p.sha256,
            serde_json::to_string(&p.settings)?,
            p.now_ms
        ],
    )?;
    Ok(PutProbe::Created(get_probe(
        c,
        p.client_id,
        &p.pool,
        &p.name,
    )?))
}

/// Active probes of a pool, by name.
pub(super) fn list_probes(
    c: &Connection,
    client_id: i64,
    pool: &str,
) -> Result<Vec<ProbeView>, StoreError> {
    pool_id(c, client_id, pool)?;
    let mut stmt = c.prepare_cached(&format!("{PROBE_VIEW} ORDER BY pr.name"))?;
    let rows = stmt.query_map(params![client_id, pool, None::<String>], probe_view)?;
    rows.map(|r| r?).collect()
}

/// Deletes a probe: no longer assigned; its row (version numbering) and samples are
/// kept, its versions removed with every module no other version uses.
pub(super) fn delete_probe(
    c: &Connection,
    client_id: i64,
    pool: &str,
    name: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let id: Option<i64> = c
        .query_row(
            "UPDATE probes SET deleted_at_ms = ?3
             WHERE pool_id = ?1 AND name = ?2 AND deleted_at_ms IS NULL RETURNING id",
            params![pid, name, now_ms],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Err(StoreError::NotFound(format!(
            "probe `{name}` in pool `{pool}`"
        )));
    };
    let shas: Vec<String> = c
        .prepare_cached("DELETE FROM probe_versions WHERE probe_id = ?1 RETURNING sha256")?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut gone = c.prepare_cached(
        "DELETE FROM modules WHERE sha256 = ?1
         AND NOT EXISTS (SELECT 1 FROM probe_versions pv WHERE pv.sha256 = ?1)",
    )?;
    for sha in shas {
        gone.execute([sha])?;
    }
    Ok(())
}

/// Removes the versions of deleted probes, versions superseded (by the next stored
/// version) before `superseded_before_ms`, then every module no stored version uses.
pub(super) fn collect_modules(
    c: &Connection,
    superseded_before_ms: i64,
) -> Result<ModuleGc, StoreError> {
    let versions = c
        .prepare_cached(
            "DELETE FROM probe_versions WHERE (probe_id, version) IN (
               SELECT pv.probe_id, pv.version FROM probe_versions pv
               JOIN probes pr ON pr.id = pv.probe_id
               WHERE pr.deleted_at_ms IS NOT NULL
                  OR (pv.version < pr.version AND (
                        SELECT min(nx.created_at_ms) FROM probe_versions nx
                        WHERE nx.probe_id = pv.probe_id AND nx.version > pv.version
                      ) < ?1))",
        )?
        .execute([superseded_before_ms])?;
    let unused = "FROM modules m
        WHERE NOT EXISTS (SELECT 1 FROM probe_versions pv WHERE pv.sha256 = m.sha256)";
    let (modules, bytes): (i64, i64) = c
        .prepare_cached(&format!(
            "SELECT count(*), coalesce(sum(m.size), 0) {unused}"
        ))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if modules > 0 {
        c.prepare_cached(&format!(
            "DELETE FROM modules WHERE sha256 IN (SELECT m.sha256 {unused})"
        ))?
        .execute([])?;
    }
    Ok(ModuleGc {
        versions: u64::try_from(versions).unwrap_or(u64::MAX),
        modules: u64::try_from(modules).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    })
}

/// A module's bytes, if it belongs to a pool the agent token is enrolled for.
pub(super) fn module(c: &Connection, token_id: i64, sha256: &str) -> Result<Bytes, StoreError> {
    let bytes: Option<Vec<u8>> = c
        .prepare_cached(
            "SELECT m.bytes FROM modules m WHERE m.sha256 = ?2 AND EXISTS (
               SELECT 1 FROM probe_versions pv
               JOIN probes pr ON pr.id = pv.probe_id
               JOIN agent_token_pools atp ON atp.pool_id = pr.pool_id
               WHERE pv.sha256 = m.sha256 AND atp.token_id = ?1)",
        )?
        .query_row(params![token_id, sha256], |r| r.get(0))
        .optional()?;
    bytes
        .map(Bytes::from)
        .ok_or_else(|| StoreError::NotFound(format!("module {sha256}")))
}
