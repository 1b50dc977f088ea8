//! Clients and tokens: `clients`, `agent_tokens` and `agent_token_pools` (whom a token
//! hash belongs to, creating and revoking clients and agent tokens).
use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::pools_sql::pool_id;
use super::{QuotaExceeded, Quotas, StoreError, TokenHash, TokenOwner};

pub(super) fn token_owner(
    c: &Connection,
    hash: &TokenHash,
    agent: bool,
) -> Result<Option<TokenOwner>, StoreError> {
    if agent {
        Ok(c.prepare_cached(
            "SELECT t.id, t.client_id FROM agent_tokens t JOIN clients c ON c.id = t.client_id
             WHERE t.token_hash = ?1 AND t.revoked_at_ms IS NULL AND c.revoked_at_ms IS NULL",
        )?
        .query_row([&hash[..]], |r| {
            Ok(TokenOwner::Agent {
                token_id: r.get(0)?,
                client_id: r.get(1)?,
            })
        })
        .optional()?)
    } else {
        Ok(c.prepare_cached(
            "SELECT id FROM clients WHERE token_hash = ?1 AND revoked_at_ms IS NULL",
        )?
        .query_row([&hash[..]], |r| {
            Ok(TokenOwner::Client {
                client_id: r.get(0)?,
            })
        })
        .optional()?)
    }
}

/// Creates a client with the given token hash; returns its id.
pub(super) fn create_client(
    c: &Connection,
    name: &str,
    hash: &TokenHash,
    now_ms: i64,
) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO clients (name, token_hash, created_at_ms) VALUES (?1, ?2, ?3)",
        params![name, &hash[..], now_ms],
    )?;
    Ok(c.last_insert_rowid())
}

/// Revokes a client's token and every agent token of its.
pub(super) fn revoke_client(c: &Connection, id: i64, now_ms: i64) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE clients SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
        params![id, now_ms],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("client {id}")));
    }
    c.execute(
        "UPDATE agent_tokens SET revoked_at_ms = ?2
         WHERE client_id = ?1 AND revoked_at_ms IS NULL",
        params![id, now_ms],
    )?;
    Ok(())
}

/// Creates an agent token of `client_id` enrolled for `pools`, within the client's quota
/// of live agent tokens; returns its id.
pub(super) fn create_agent_token(
    c: &Connection,
    client_id: i64,
    pools: &[String],
    hash: &TokenHash,
    now_ms: i64,
    q: &Quotas,
) -> Result<i64, StoreError> {
    let live: Option<i64> = c
        .query_row(
            "SELECT id FROM clients WHERE id = ?1 AND revoked_at_ms IS NULL",
            [client_id],
            |r| r.get(0),
        )
        .optional()?;
    if live.is_none() {
        return Err(StoreError::NotFound(format!("client {client_id}")));
    }
    let mut ids = BTreeSet::new();
    for p in pools {
        ids.insert(pool_id(c, client_id, p)?);
    }
    let live: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM agent_tokens WHERE client_id = ?1 AND revoked_at_ms IS NULL",
        )?
        .query_row([client_id], |r| r.get(0))?;
    if u64::try_from(live).unwrap_or(0) >= q.agent_tokens {
        return Err(StoreError::Quota(QuotaExceeded {
            quota: "agent_tokens",
            limit: q.agent_tokens,
        }));
    }
    c.execute(
        "INSERT INTO agent_tokens (client_id, token_hash, created_at_ms) VALUES (?1, ?2, ?3)",
        params![client_id, &hash[..], now_ms],
    )?;
    let token_id = c.last_insert_rowid();
    let mut ins =
        c.prepare_cached("INSERT INTO agent_token_pools (token_id, pool_id) VALUES (?1, ?2)")?;
    for pid in ids {
        ins.execute(params![token_id, pid])?;
    }
    Ok(token_id)
}

/// Revokes an agent token; `owner` limits it to that client's tokens.
pub(super) fn revoke_agent_token(
    c: &Connection,
    id: i64,
    owner: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE agent_tokens SET revoked_at_ms = ?2
         WHERE id = ?1 AND revoked_at_ms IS NULL AND (?3 IS NULL OR client_id = ?3)",
        params![id, now_ms, owner],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("agent token {id}")));
    }
    Ok(())
}
