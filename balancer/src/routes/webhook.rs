//! A pool's webhook: `PUT` (url and secret), `GET` (never the secret), `DELETE`, and the
//! log of its deliveries with every attempt.
use axum::extract::State;
use axum::http::StatusCode;
use plb_api::{ErrorBody, PutWebhook, WebhookDeliveries, WebhookView};

use super::{check_name, now_ms};
use crate::auth::Principal;
use crate::error::{ApiJson, ApiPath, AppError};
use crate::netpolicy::{Denied, NetPolicy};
use crate::state::AppState;

/// Longest webhook URL.
const MAX_URL: usize = 2048;
/// Secret length bounds, characters.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Deliveries listed.
const DELIVERIES_LISTED: usize = 100;

fn check_webhook(w: &PutWebhook) -> Result<(), AppError> {
    let bad = |m: String| AppError::BadRequest("invalid_webhook", m);
    if w.url.len() > MAX_URL {
        return Err(bad(format!("`url` is at most {MAX_URL} bytes")));
    }
    let url = reqwest::Url::parse(&w.url).map_err(|e| bad(format!("`url` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(
            "`url` must be an http:// or https:// URL with a host".into()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "`url` must not carry credentials; the secret signs each POST".into(),
        ));
    }
    if !SECRET_LEN.contains(&w.secret.chars().count()) {
        return Err(bad(format!(
            "`secret` must be {} to {} characters",
            SECRET_LEN.start(),
            SECRET_LEN.end()
        )));
    }
    Ok(())
}

/// Refuses a URL whose host resolves only to addresses the operator does not allow
/// (loopback, private, link-local, metadata... unless `--webhook-allow-networks` names
/// them). A host that does not resolve now is accepted: deliveries check again.
async fn check_target(url: &str, networks: &NetPolicy) -> Result<(), AppError> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(());
    };
    match networks.resolve(host, port).await {
        Ok(_) | Err(Denied::Unresolved(_)) => Ok(()),
        Err(Denied::Address(ip)) => Err(AppError::BadRequest(
            "webhook_address_denied",
            format!(
                "`url` host `{host}` resolves only to addresses the balancer may not \
                 connect to ({ip} is loopback, private, link-local or metadata); the \
                 operator can allow a network with --webhook-allow-networks"
            ),
        )),
    }
}

/// Sets the pool's webhook: every notification about the pool's probes is POSTed there,
/// signed with `secret` (client token).
#[utoipa::path(
    put, path = "/v1/pools/{pool}/webhook", operation_id = "put_webhook", tag = "reliability",
    params(("pool" = String, Path, description = "Pool name")),
    request_body = PutWebhook,
    responses(
        (status = 200, description = "Set (the secret is never shown)", body = WebhookView),
        (status = 400, description = "A bad URL or secret", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
    ApiJson(w): ApiJson<PutWebhook>,
) -> Result<ApiJson<WebhookView>, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    check_webhook(&w)?;
    check_target(&w.url, &st.delivery.networks).await?;
    let view = st
        .store
        .put_webhook(client_id, pool, w.url, w.secret, now_ms())
        .await?;
    // Pending deliveries go to the new URL now.
    st.reliability.wake.notify_one();
    Ok(ApiJson(view))
}

/// The pool's webhook, without its secret (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/webhook", operation_id = "get_webhook", tag = "reliability",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 404, description = "No such pool, or no webhook set", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<ApiJson<WebhookView>, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    Ok(ApiJson(st.store.get_webhook(client_id, pool).await?))
}

/// Removes the pool's webhook; deliveries still pending fail (client token).
#[utoipa::path(
    delete, path = "/v1/pools/{pool}/webhook", operation_id = "delete_webhook", tag = "reliability",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such pool, or no webhook set", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    st.store.delete_webhook(client_id, pool).await?;
    st.reliability.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// The pool's newest deliveries with every attempt, newest first (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/webhook/deliveries", operation_id = "list_webhook_deliveries", tag = "reliability",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "Deliveries, newest first", body = WebhookDeliveries),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<ApiJson<WebhookDeliveries>, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    let deliveries = st
        .store
        .webhook_deliveries(client_id, pool, DELIVERIES_LISTED)
        .await?;
    Ok(ApiJson(WebhookDeliveries { deliveries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(url: &str, secret: &str) -> PutWebhook {
        PutWebhook {
            url: url.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn urls_and_secrets_are_checked() {
        check_webhook(&w("https://hooks.example.com/plb", "0123456789abcdef")).expect("valid");
        // Well-formed; where it points is checked by `check_target`.
        check_webhook(&w("http://127.0.0.1:9000/x", "0123456789abcdef")).expect("valid");
        for bad in [
            w("ftp://x/y", "0123456789abcdef"),
            w("not a url", "0123456789abcdef"),
            w("https://u:p@x/y", "0123456789abcdef"),
            w("https://x/y", "short"),
            w(
                &format!("https://x/{}", "a".repeat(MAX_URL)),
                "0123456789abcdef",
            ),
        ] {
            assert!(check_webhook(&bad).is_err(), "{}", bad.url);
        }
    }

    #[tokio::test]
    async fn internal_targets_are_refused_unless_allowed() {
        let deny = NetPolicy::webhooks(&[]);
        for url in [
            "http://127.0.0.1:9000/x",
            "http://localhost:9000/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/x",
            "http://[fd00:ec2::254]/x",
            "http://100.100.100.200/x",
        ] {
            let e = check_target(url, &deny).await.expect_err(url);
            assert!(
                matches!(e, AppError::BadRequest("webhook_address_denied", _)),
                "{url}: {e:?}"
            );
        }
        check_target("https://93.184.216.34/plb", &deny)
            .await
            .expect("public");
        let allow =
            NetPolicy::webhooks(&[crate::netpolicy::parse_network("127.0.0.0/8").expect("net")]);
        check_target("http://127.0.0.1:9000/x", &allow)
            .await
            .expect("allowed by the operator");
    }
}
