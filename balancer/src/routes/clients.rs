//! Clients and agent tokens: create (the token is shown once) and revoke.
use axum::extract::State;
use axum::http::StatusCode;
use plb_api::{AgentTokenCreated, ClientCreated, CreateAgentToken, CreateClient, ErrorBody};

use super::{check_name, now_ms};
use crate::auth::{AGENT_PREFIX, CLIENT_PREFIX, Principal, generate_token, hash_token};
use crate::error::{ApiJson, ApiPath, AppError};
use crate::state::AppState;

/// Most pools one agent token may be enrolled for.
const MAX_TOKEN_POOLS: usize = 64;

/// Creates a client and its API token (admin token).
#[utoipa::path(
    post, path = "/v1/clients", operation_id = "create_client", tag = "clients",
    request_body = CreateClient,
    responses(
        (status = 201, description = "The client and its token (shown once)", body = ClientCreated),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<CreateClient>,
) -> Result<(StatusCode, ApiJson<ClientCreated>), AppError> {
    who.admin()?;
    // As the document says: at most 128 characters, and some that are not ASCII
    // whitespace (`[^\t\n\f\r ]`), which is trimmed.
    let name = req
        .name
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_string();
    if name.is_empty() || req.name.chars().count() > 128 {
        return Err(AppError::BadRequest(
            "invalid_name",
            "client name must be at most 128 characters and not blank".into(),
        ));
    }
    let token = generate_token(CLIENT_PREFIX);
    let id = st
        .store
        .create_client(name.clone(), hash_token(&token), now_ms())
        .await?;
    tracing::info!(client = id, %name, "client created");
    Ok((
        StatusCode::CREATED,
        ApiJson(ClientCreated { id, name, token }),
    ))
}

/// Revokes a client's API token and all its agent tokens (admin token).
#[utoipa::path(
    delete, path = "/v1/clients/{id}", operation_id = "revoke_client", tag = "clients",
    params(("id" = i64, Path, description = "Client id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live client", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, AppError> {
    who.admin()?;
    st.store.revoke_client(id, now_ms()).await?;
    st.auth.revoked();
    tracing::info!(client = id, "client revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an agent token enrolled for some of one client's pools (admin, naming the
/// client, or the pools' owner).
#[utoipa::path(
    post, path = "/v1/agent-tokens", operation_id = "create_agent_token", tag = "clients",
    request_body = CreateAgentToken,
    responses(
        (status = 201, description = "The agent token (shown once)", body = AgentTokenCreated),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 403, description = "Another client's pools, or the agent token quota would be exceeded (quota_exceeded)", body = ErrorBody),
        (status = 404, description = "Unknown pool or client", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_agent_token(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<CreateAgentToken>,
) -> Result<(StatusCode, ApiJson<AgentTokenCreated>), AppError> {
    let client_id = match who {
        Principal::Admin => req.client.ok_or_else(|| {
            AppError::bad_request(
                "`client` (the owning client's id) is required with the admin token",
            )
        })?,
        Principal::Client { client_id } => {
            if req.client.is_some_and(|c| c != client_id) {
                return Err(AppError::Forbidden(
                    "a client token creates agent tokens for its own pools only".into(),
                ));
            }
            client_id
        }
        Principal::Agent { .. } => {
            return Err(AppError::Forbidden(
                "an agent token cannot create agent tokens".into(),
            ));
        }
    };
    if req.pools.is_empty() || req.pools.len() > MAX_TOKEN_POOLS {
        return Err(AppError::bad_request(format!(
            "`pools` must name 1 to {MAX_TOKEN_POOLS} pools"
        )));
    }
    for p in &req.pools {
        check_name("pool", p)?;
    }
    let mut pools = req.pools.clone();
    pools.sort();
    pools.dedup();
    let token = generate_token(AGENT_PREFIX);
    let id = st
        .store
        .create_agent_token(client_id, pools.clone(), hash_token(&token), now_ms())
        .await?;
    tracing::info!(
        client = client_id,
        token = id,
        ?pools,
        "agent token created"
    );
    Ok((
        StatusCode::CREATED,
        ApiJson(AgentTokenCreated { id, token, pools }),
    ))
}

/// Revokes an agent token (admin, or the owning client).
#[utoipa::path(
    delete, path = "/v1/agent-tokens/{id}", operation_id = "revoke_agent_token", tag = "clients",
    params(("id" = i64, Path, description = "Agent token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live token of the caller", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_agent_token(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, AppError> {
    let owner = match who {
        Principal::Admin => None,
        Principal::Client { client_id } => Some(client_id),
        Principal::Agent { .. } => {
            return Err(AppError::Forbidden(
                "an agent token cannot revoke tokens".into(),
            ));
        }
    };
    st.store.revoke_agent_token(id, owner, now_ms()).await?;
    st.auth.revoked();
    tracing::info!(token = id, "agent token revoked");
    Ok(StatusCode::NO_CONTENT)
}
