//! Probes: `probes`, `probe_versions` and `modules` (storing a version and its module by
//! sha256, the active probes of a pool, deleting one, a module's bytes for an agent).
use bytes::Bytes;
use plb_api::{ProbeSettings, ProbeView};
use rusqlite::{Connection, OptionalExtension, params};

use super::pools_sql::pool_id;
use super::{NewProbeVersion, PutProbe, StoreError};

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

pub(super) fn put_probe(c: &Connection, p: NewProbeVersion) -> Result<PutProbe, StoreError> {
    let pid = pool_id(c, p.client_id, &p.pool)?;
    let existing: Option<(i64, u32, bool)> = c
        .query_row(
            "SELECT id, version, deleted_at_ms IS NOT NULL FROM probes
             WHERE pool_id = ?1 AND name = ?2",
            params![pid, p.name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((_, _, false)) = existing {
        let active = get_probe(c, p.client_id, &p.pool, &p.name)?;
        if active.sha256 == p.sha256 && active.settings == p.settings {
            return Ok(PutProbe::Unchanged(active));
        }
    }
    c.execute(
        "INSERT INTO modules (sha256, bytes, size, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sha256) DO NOTHING",
        params![p.sha256, &p.module[..], p.module.len() as i64, p.now_ms],
    )?;
    let (probe_id, version) = match existing {
        Some((id, v, _)) => {
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

/// Deletes a probe: no longer assigned; its versions and samples are kept.
pub(super) fn delete_probe(
    c: &Connection,
    client_id: i64,
    pool: &str,
    name: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let n = c.execute(
        "UPDATE probes SET deleted_at_ms = ?3
         WHERE pool_id = ?1 AND name = ?2 AND deleted_at_ms IS NULL",
        params![pid, name, now_ms],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "probe `{name}` in pool `{pool}`"
        )));
    }
    Ok(())
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
