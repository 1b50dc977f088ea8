//! Agent endpoints (agent token): register the node, poll its assignments (strong ETag,
//! `If-None-Match` answered 304), and fetch modules by sha256.
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plb_api::{Assignments, ErrorBody, RegisterRequest};
use sha2::{Digest, Sha256};

use super::{check_name, check_node_name, now_ms};
use crate::auth::Principal;
use crate::error::{ApiJson, ApiPath, AppError};
use crate::netpolicy::{Denied, NetPolicy};
use crate::state::AppState;

/// Most pools a node registers into, and most labels.
const MAX_POOLS: usize = 64;
const MAX_LABELS: usize = 64;

fn check_register(req: &RegisterRequest) -> Result<(), AppError> {
    check_node_name(&req.node)?;
    check_address(&req.address)?;
    if req.pools.is_empty() || req.pools.len() > MAX_POOLS {
        return Err(AppError::bad_request(format!(
            "`pools` must name 1 to {MAX_POOLS} pools"
        )));
    }
    for p in &req.pools {
        check_name("pool", p)?;
    }
    if req.labels.len() > MAX_LABELS {
        return Err(AppError::bad_request(format!(
            "at most {MAX_LABELS} labels"
        )));
    }
    for (k, v) in &req.labels {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 {
            return Err(AppError::bad_request(
                "label keys must be 1 to 128 bytes and values at most 1024 bytes",
            ));
        }
    }
    Ok(())
}

/// `host:port` with a non-empty host and a port.
fn check_address(addr: &str) -> Result<(), AppError> {
    let bad = || {
        AppError::bad_request(format!(
            "`address` must be `host:port`, got `{}`",
            addr.chars().take(100).collect::<String>()
        ))
    };
    if addr.len() > 255 || addr.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Refuses an address whose host resolves only to addresses outside the operator's node
/// networks (by default: link-local and cloud metadata addresses). A name that does not
/// resolve now is accepted; the proxy checks again at every connect.
async fn check_node_target(addr: &str, nodes: &NetPolicy) -> Result<(), AppError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Ok(());
    };
    let Ok(port) = port.parse::<u16>() else {
        return Ok(());
    };
    match nodes.resolve(host, port).await {
        Ok(_) | Err(Denied::Unresolved(_)) => Ok(()),
        Err(Denied::Address(ip)) => Err(AppError::BadRequest(
            "node_address_denied",
            format!(
                "`address` host `{host}` resolves only to addresses outside the networks \
                 nodes may be in ({ip}; link-local and metadata addresses are refused \
                 unless the operator's --node-networks names them)"
            ),
        )),
    }
}

/// Registers the agent token's node into pools the token is enrolled for (again on
/// every agent start; the address, labels and pools are replaced).
#[utoipa::path(
    post, path = "/v1/agents/register", operation_id = "register_node", tag = "agents",
    request_body = RegisterRequest,
    responses(
        (status = 204, description = "Registered"),
        (status = 400, description = "Bad node, address, pools or labels, or an address outside the allowed node networks", body = ErrorBody),
        (status = 403, description = "A pool the token is not enrolled for, another node, or a pool's node quota would be exceeded (quota_exceeded)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(st): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<StatusCode, AppError> {
    let (token_id, client_id) = who.agent()?;
    check_register(&req)?;
    check_node_target(&req.address, &st.nodes).await?;
    let (node, pools) = (req.node.clone(), req.pools.clone());
    st.store
        .register_node(token_id, client_id, req, now_ms())
        .await?;
    tracing::info!(%node, ?pools, token = token_id, "node registered");
    // The next route to these pools rereads the topology at once, so a node is routable
    // as soon as its registration is answered.
    st.engine.topology_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for it).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The probes the node must run. Carries a strong ETag; with a matching
/// `If-None-Match` it answers 304 and no body.
#[utoipa::path(
    get, path = "/v1/agents/{node}/assignments", operation_id = "get_assignments", tag = "agents",
    params(("node" = String, Path, description = "The token's node")),
    responses(
        (status = 200, description = "The assignments", body = Assignments,
         headers(("ETag" = String, description = "Send back as If-None-Match"))),
        (status = 304, description = "Unchanged since the ETag sent"),
        (status = 403, description = "Not the token's node", body = ErrorBody),
        (status = 404, description = "The node is not registered", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn assignments(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(node): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (token_id, client_id) = who.agent()?;
    check_node_name(&node)?;
    let mut a = st.store.assignments(token_id, client_id, node).await?;
    // Adaptive probing: deep probes run more often while the node is degrading.
    st.engine.adapt_assignments(client_id, &mut a);
    let body = serde_json::to_vec(&a).map_err(AppError::internal)?;
    let digest = hex::encode(Sha256::digest(&body));
    let etag = format!("\"{}\"", &digest[..32]);
    let etag_value = HeaderValue::from_str(&etag).map_err(AppError::internal)?;
    let cache = HeaderValue::from_static("no-cache");
    if matches_etag(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}

/// A module's bytes by sha256, for modules of pools the agent token is enrolled for.
#[utoipa::path(
    get, path = "/v1/modules/{sha256}", operation_id = "get_module", tag = "agents",
    params(("sha256" = String, Path, description = "Hex sha256 of the module")),
    responses(
        (status = 200, description = "The component", content_type = "application/wasm", body = Vec<u8>),
        (status = 400, description = "Not a sha256", body = ErrorBody),
        (status = 404, description = "No such module in the token's pools", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn module(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(sha256): ApiPath<String>,
) -> Result<Response, AppError> {
    let (token_id, _) = who.agent()?;
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(AppError::bad_request(
            "a module is named by its sha256: 64 lowercase hex digits",
        ));
    }
    let bytes = st.store.module(token_id, sha256.clone()).await?;
    let etag = HeaderValue::from_str(&format!("\"{sha256}\"")).map_err(AppError::internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/wasm"),
            ),
            (header::ETAG, etag),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=31536000, immutable"),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1:80", "node-1.example:8080", "[::1]:9000"] {
            check_address(ok).expect(ok);
        }
        for bad in [
            "",
            "host",
            ":80",
            "host:",
            "host:99999",
            "http://h:80",
            "a b:1",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(matches_etag(&h, "\"b\""));
        assert!(matches_etag(&h, "\"a\""));
        assert!(!matches_etag(&h, "\"c\""));
        assert!(!matches_etag(&HeaderMap::new(), "\"a\""));
    }
}
