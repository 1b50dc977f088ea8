//! Clients and tokens (PostgreSQL): `clients`, `agent_tokens`, `agent_token_pools`.
use std::collections::BTreeSet;

use super::pools::pool_id;
use super::{Tx, count, execute, lock_client, query_one, query_opt, text};
use crate::store::{QuotaExceeded, Quotas, StoreError, TokenHash, TokenOwner};

pub(super) async fn token_owner(
    tx: &Tx<'_>,
    hash: &TokenHash,
    agent: bool,
) -> Result<Option<TokenOwner>, StoreError> {
    let h: &[u8] = &hash[..];
    if agent {
        let row = query_opt(
            tx,
            "SELECT t.id, t.client_id FROM agent_tokens t JOIN clients c ON c.id = t.client_id
             WHERE t.token_hash = $1 AND t.revoked_at_ms IS NULL AND c.revoked_at_ms IS NULL",
            &[&h],
        )
        .await?;
        Ok(match row {
            Some(r) => Some(TokenOwner::Agent {
                token_id: r.try_get(0)?,
                client_id: r.try_get(1)?,
            }),
            None => None,
        })
    } else {
        let row = query_opt(
            tx,
            "SELECT id FROM clients WHERE token_hash = $1 AND revoked_at_ms IS NULL",
            &[&h],
        )
        .await?;
        Ok(match row {
            Some(r) => Some(TokenOwner::Client {
                client_id: r.try_get(0)?,
            }),
            None => None,
        })
    }
}

pub(super) async fn create_client(
    tx: &Tx<'_>,
    name: &str,
    hash: &TokenHash,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let h: &[u8] = &hash[..];
    let name = text(name);
    let r = query_one(
        tx,
        "INSERT INTO clients (name, token_hash, created_at_ms) VALUES ($1, $2, $3) RETURNING id",
        &[&name.as_ref(), &h, &now_ms],
    )
    .await?;
    Ok(r.try_get(0)?)
}

pub(super) async fn revoke_client(tx: &Tx<'_>, id: i64, now_ms: i64) -> Result<(), StoreError> {
    let n = execute(
        tx,
        "UPDATE clients SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
        &[&id, &now_ms],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("client {id}")));
    }
    execute(
        tx,
        "UPDATE agent_tokens SET revoked_at_ms = $2
         WHERE client_id = $1 AND revoked_at_ms IS NULL",
        &[&id, &now_ms],
    )
    .await?;
    Ok(())
}

pub(super) async fn create_agent_token(
    tx: &Tx<'_>,
    client_id: i64,
    pools: &[String],
    hash: &TokenHash,
    now_ms: i64,
    q: &Quotas,
) -> Result<i64, StoreError> {
    if !lock_client(tx, client_id).await? {
        return Err(StoreError::NotFound(format!("client {client_id}")));
    }
    let mut ids = BTreeSet::new();
    for p in pools {
        ids.insert(pool_id(tx, client_id, p).await?);
    }
    let live = count(
        tx,
        "SELECT count(*) FROM agent_tokens WHERE client_id = $1 AND revoked_at_ms IS NULL",
        &[&client_id],
    )
    .await?;
    if live >= q.agent_tokens {
        return Err(StoreError::Quota(QuotaExceeded {
            quota: "agent_tokens",
            limit: q.agent_tokens,
        }));
    }
    let h: &[u8] = &hash[..];
    let token_id: i64 = query_one(
        tx,
        "INSERT INTO agent_tokens (client_id, token_hash, created_at_ms) VALUES ($1, $2, $3)
         RETURNING id",
        &[&client_id, &h, &now_ms],
    )
    .await?
    .try_get(0)?;
    let ids: Vec<i64> = ids.into_iter().collect();
    execute(
        tx,
        "INSERT INTO agent_token_pools (token_id, pool_id) SELECT $1, unnest($2::bigint[])",
        &[&token_id, &ids],
    )
    .await?;
    Ok(token_id)
}

pub(super) async fn revoke_agent_token(
    tx: &Tx<'_>,
    id: i64,
    owner: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let n = execute(
        tx,
        "UPDATE agent_tokens SET revoked_at_ms = $2
         WHERE id = $1 AND revoked_at_ms IS NULL AND ($3::bigint IS NULL OR client_id = $3)",
        &[&id, &now_ms, &owner],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("agent token {id}")));
    }
    Ok(())
}
