//! Probes: upload a version (the component as the body, settings as query parameters),
//! list, get, delete. An upload is checked in this order, cheapest first, and nothing is
//! stored unless every check passes: token, names, settings, content type, pool, size,
//! the quotas it may already be past, the client's turn ([`UploadGate`]: one upload per
//! client read and compiled at a time, a short queue, 429 past it), the body, every
//! quota, then the component itself (compiled by the runtime on a blocking thread).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use plb_api::{ErrorBody, NODE_SAMPLER_PROBE, ProbeList, ProbeSettings, ProbeView, Tier};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{check_name, now_ms};
use crate::auth::Principal;
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};
use crate::metrics::UploadLabels;
use crate::state::AppState;
use crate::store::{NewProbeVersion, PutProbe};

/// A refused upload's body is read and dropped up to this many times the upload limit.
const DRAIN_FACTOR: usize = 4;

/// `Retry-After` of an upload refused because its client has enough in progress, s.
const UPLOAD_RETRY_AFTER_S: u64 = 2;

/// Per-client admission of uploads, in front of the global compile slots: each client
/// has one upload at a time past this gate (its body read, then compiled), and at most
/// `queue` more waiting for their turn (up to `wait`, their bodies unread); beyond that
/// an upload is answered 429 `too_many_uploads` with `Retry-After`. So one client holds
/// at most one compile slot and one buffered body, and another client's upload is not
/// queued behind a flood of its uploads.
#[derive(Debug)]
pub struct UploadGate {
    clients: Mutex<HashMap<i64, Arc<ClientTurns>>>,
    queue: usize,
    wait: Duration,
}

/// One client's turn and the uploads waiting for it.
#[derive(Debug)]
struct ClientTurns {
    turn: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Counts one waiting upload until dropped (also when its request is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl UploadGate {
    /// A gate letting `queue` uploads per client wait up to `wait` for their turn.
    pub fn new(queue: usize, wait: Duration) -> Self {
        UploadGate {
            clients: Mutex::new(HashMap::new()),
            queue,
            wait,
        }
    }

    /// Waits for `client_id`'s turn to upload; held until the upload is stored or refused.
    pub async fn admit(&self, client_id: i64) -> Result<OwnedSemaphorePermit, AppError> {
        let turns = {
            let mut m = self
                .clients
                .lock()
                .map_err(|_| AppError::internal("upload gate lock poisoned"))?;
            Arc::clone(m.entry(client_id).or_insert_with(|| {
                Arc::new(ClientTurns {
                    turn: Arc::new(Semaphore::new(1)),
                    waiting: AtomicUsize::new(0),
                })
            }))
        };
        if let Ok(p) = Arc::clone(&turns.turn).try_acquire_owned() {
            return Ok(p);
        }
        let busy = |why: &str| AppError::TooManyRequests {
            code: "too_many_uploads",
            message: format!(
                "this client has an upload in progress and {} waiting ({why}); try again later",
                self.queue
            ),
            retry_after_s: UPLOAD_RETRY_AFTER_S,
        };
        if turns.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            turns.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy("the queue is full"));
        }
        let _waiting = Waiting(&turns.waiting);
        match tokio::time::timeout(self.wait, Arc::clone(&turns.turn).acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(AppError::Unavailable("shutting down".into())),
            Err(_) => Err(busy("waited too long")),
        }
    }
}

/// Reads and drops up to `cap` bytes of `body`, frame by frame (nothing is buffered).
async fn drain(mut body: Body, cap: usize) {
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            read = read.saturating_add(d.len());
            if read > cap {
                return;
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Content types accepted for the component.
const WASM_TYPES: [&str; 2] = ["application/wasm", "application/octet-stream"];

fn setting(field: &str, message: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(
        "invalid_settings",
        format!("invalid setting `{field}`: {message}"),
    )
}

fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, AppError> {
    v.trim().parse().map_err(|_| {
        setting(
            field,
            format!("must be a non-negative whole number, got `{v}`"),
        )
    })
}

/// Builds the settings from the query parameters (defaults for those not given) and
/// validates them.
pub fn parse_settings(pairs: Vec<(String, String)>) -> Result<ProbeSettings, AppError> {
    let mut s = ProbeSettings::default();
    let mut seen = HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            return Err(AppError::BadRequest(
                "invalid_settings",
                format!("query parameter `{k}` is given more than once"),
            ));
        }
        match k.as_str() {
            "tier" => {
                s.tier = match v.as_str() {
                    "quick" => Tier::Quick,
                    "deep" => Tier::Deep,
                    _ => {
                        return Err(setting(
                            "tier",
                            format!("must be `quick` or `deep`, got `{v}`"),
                        ));
                    }
                }
            }
            "interval_ms" => s.interval_ms = number("interval_ms", &v)?,
            "timeout_ms" => s.timeout_ms = number("timeout_ms", &v)?,
            "memory_mib" => s.memory_mib = number("memory_mib", &v)?,
            "fuel" => {
                s.fuel = match v.trim() {
                    "" | "null" | "none" | "off" => None,
                    n => Some(number("fuel", n)?),
                }
            }
            "config" => {
                s.config = serde_json::from_str::<BTreeMap<String, String>>(&v).map_err(|e| {
                    setting(
                        "config",
                        format!("must be a JSON object of string values ({e})"),
                    )
                })?
            }
            other => {
                return Err(AppError::BadRequest(
                    "invalid_settings",
                    format!(
                        "unknown query parameter `{other}`; expected tier, interval_ms, timeout_ms, fuel, memory_mib, config"
                    ),
                ));
            }
        }
    }
    s.validate()
        .map_err(|e| AppError::BadRequest("invalid_settings", e.to_string()))?;
    Ok(s)
}

fn check_probe_name(name: &str) -> Result<(), AppError> {
    check_name("probe", name)?;
    if name == NODE_SAMPLER_PROBE {
        return Err(AppError::BadRequest(
            "invalid_name",
            format!("probe name `{NODE_SAMPLER_PROBE}` is reserved for the agent's node sampler"),
        ));
    }
    Ok(())
}

/// Query parameters of an upload, for the OpenAPI document.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct UploadParams {
    /// `quick` (default) or `deep`.
    #[param(pattern = "^(quick|deep)$")]
    tier: Option<String>,
    /// Time between runs, ms (100 ..= 86,400,000; default 5000).
    #[param(minimum = 100, maximum = 86400000)]
    interval_ms: Option<u64>,
    /// Wall-clock limit of a run, ms (1 ..= 300,000, and at most ten times the larger of
    /// `interval_ms` and 1000; default 1000).
    #[param(minimum = 1, maximum = 300000)]
    timeout_ms: Option<u32>,
    /// Fuel per run (positive), or `null` for no metering (default 1e9).
    fuel: Option<String>,
    /// Memory limit, MiB (1 ..= 512, the agents' cap; default 64).
    #[param(minimum = 1, maximum = 512)]
    memory_mib: Option<u32>,
    /// The probe's config as a JSON object of strings, e.g. `{"path":"/health"}`.
    config: Option<String>,
}

/// Uploads a probe version: the component is the body (`application/wasm`). Answers 201
/// with the new version, or 200 when the active version already has these bytes and
/// settings (nothing changes).
#[utoipa::path(
    put, path = "/v1/pools/{pool}/probes/{name}", operation_id = "put_probe", tag = "probes",
    params(
        ("pool" = String, Path, description = "Pool name"),
        ("name" = String, Path, description = "Probe name"),
        UploadParams,
    ),
    request_body(content = Vec<u8>, content_type = "application/wasm",
                 description = "A WebAssembly component of the plb:probe/probe world"),
    responses(
        (status = 201, description = "A new version", body = ProbeView),
        (status = 200, description = "Unchanged: the active version has these bytes and settings", body = ProbeView),
        (status = 400, description = "Bad settings, name or empty body", body = ErrorBody),
        (status = 403, description = "A quota (probes per pool, versions per probe, module bytes) would be exceeded", body = ErrorBody),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 415, description = "Not application/wasm", body = ErrorBody),
        (status = 422, description = "Not a component of the plb:probe/probe world", body = ErrorBody),
        (status = 429, description = "The caller has an upload in progress and a full queue (Retry-After)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(st): State<AppState>,
    who: Principal,
    ApiPath((pool, name)): ApiPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    match put_checked(&st, who, pool, name, &uri, &headers, &mut body).await {
        Ok(r) => r,
        Err(e) => {
            // Read (and drop) what the client is still sending, up to a bound, so that
            // it gets this answer rather than a broken pipe. Past the bound the
            // connection is closed (see `close_after_error`).
            let cap = st.limits.max_upload_bytes.saturating_mul(DRAIN_FACTOR);
            if let Some(b) = body.take()
                && content_length(&headers).is_none_or(|n| n <= cap as u64)
            {
                drain(b, cap).await;
            }
            e.into_response()
        }
    }
}

async fn put_checked(
    st: &AppState,
    who: Principal,
    pool: String,
    name: String,
    uri: &Uri,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, AppError> {
    let client_id = who.client()?;
    check_name("pool", &pool)?;
    check_probe_name(&name)?;
    let ApiQuery(pairs) = ApiQuery::<Vec<(String, String)>>::try_from_uri(uri)?;
    let settings = parse_settings(pairs)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !ct.as_deref().is_some_and(|c| WASM_TYPES.contains(&c)) {
        return Err(AppError::UnsupportedMediaType(format!(
            "the probe must be uploaded as `Content-Type: application/wasm`, got {}",
            ct.map_or("none".to_string(), |c| format!("`{c}`"))
        )));
    }
    let limit = st.limits.max_upload_bytes;
    let too_large = || {
        AppError::TooLarge(format!(
            "the component is larger than the upload limit of {limit} bytes"
        ))
    };
    if content_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // 404 for a pool that is not there, 403 for a quota already reached, before a large
    // body is read.
    st.store
        .check_upload(client_id, pool.clone(), name.clone())
        .await?;
    // Held until the version is stored or refused: this client's only upload in
    // progress, the only one of its bodies in memory.
    let _turn = st.uploads.admit(client_id).await?;
    let body = body
        .take()
        .ok_or_else(|| AppError::internal("upload body taken twice"))?;
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(AppError::bad_request(format!("cannot read the body: {e}"))),
    };
    if bytes.is_empty() {
        return Err(AppError::BadRequest(
            "empty_body",
            "the request body is empty; expected a WebAssembly component".into(),
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let version = NewProbeVersion {
        client_id,
        pool: pool.clone(),
        name: name.clone(),
        sha256,
        module: bytes.clone(),
        settings,
        now_ms: now_ms(),
    };
    // Every quota with the module's size and digest, before the compile.
    st.store.check_probe_version(version.clone()).await?;
    {
        let _permit = st
            .validations
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("shutting down".into()))?;
        let runtime = st.runtime.clone();
        let wasm = bytes.clone();
        let verdict = tokio::task::spawn_blocking(move || runtime.validate(&wasm).map(|_| ()))
            .await
            .map_err(AppError::internal)?;
        match verdict {
            Ok(()) => {}
            Err(plb_runtime::RuntimeError::Invalid(why)) => {
                st.metrics
                    .probe_uploads
                    .get_or_create(&UploadLabels { result: "invalid" })
                    .inc();
                return Err(AppError::Unprocessable(
                    "invalid_probe",
                    format!(
                        "not a probe component of the {} world: {why}",
                        plb_runtime::WORLD
                    ),
                ));
            }
            Err(e) => return Err(AppError::internal(format!("validating an upload: {e}"))),
        }
    }
    let put = st
        .store
        .put_probe(NewProbeVersion {
            now_ms: now_ms(),
            ..version
        })
        .await?;
    let (status, view, result) = match put {
        PutProbe::Created(v) => (StatusCode::CREATED, v, "created"),
        PutProbe::Unchanged(v) => (StatusCode::OK, v, "unchanged"),
    };
    st.metrics
        .probe_uploads
        .get_or_create(&UploadLabels { result })
        .inc();
    tracing::info!(%pool, probe = %name, version = view.version, sha256 = %view.sha256, result, "probe upload");
    let location = format!("/v1/pools/{pool}/probes/{name}");
    Ok((status, [(header::LOCATION, location)], ApiJson(view)).into_response())
}

/// The pool's active probes (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/probes", operation_id = "list_probes", tag = "probes",
    params(("pool" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "Active probes", body = ProbeList),
        (status = 404, description = "The caller has no such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(st): State<AppState>,
    who: Principal,
    ApiPath(pool): ApiPath<String>,
) -> Result<ApiJson<ProbeList>, AppError> {
    let client_id = who.client()?;
    let probes = st.store.list_probes(client_id, pool).await?;
    Ok(ApiJson(ProbeList { probes }))
}

/// One active probe (client token).
#[utoipa::path(
    get, path = "/v1/pools/{pool}/probes/{name}", operation_id = "get_probe", tag = "probes",
    params(
        ("pool" = String, Path, description = "Pool name"),
        ("name" = String, Path, description = "Probe name"),
    ),
    responses(
        (status = 200, description = "The probe's active version and its reliability", body = plb_api::ProbeDetail),
        (status = 404, description = "No such pool or probe", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(st): State<AppState>,
    who: Principal,
    ApiPath((pool, name)): ApiPath<(String, String)>,
) -> Result<ApiJson<plb_api::ProbeDetail>, AppError> {
    let client_id = who.client()?;
    let probe = st
        .store
        .get_probe(client_id, pool.clone(), name.clone())
        .await?;
    let reliability =
        st.reliability
            .probe(client_id, &pool, &name)
            .unwrap_or(plb_api::ProbeReliability {
                state: plb_api::ProbeState::Reliable,
                since_ms: None,
                excluded: false,
                version: probe.version,
                evidence: None,
            });
    Ok(ApiJson(plb_api::ProbeDetail { probe, reliability }))
}

/// Deletes a probe: agents stop running it; its samples are kept, its versions removed
/// with every module no other version uses (client token). Uploading it again continues
/// its version numbering.
#[utoipa::path(
    delete, path = "/v1/pools/{pool}/probes/{name}", operation_id = "delete_probe", tag = "probes",
    params(
        ("pool" = String, Path, description = "Pool name"),
        ("name" = String, Path, description = "Probe name"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pool or probe", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(st): State<AppState>,
    who: Principal,
    ApiPath((pool, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, AppError> {
    let client_id = who.client()?;
    st.store
        .delete_probe(client_id, pool, name, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn message(e: AppError) -> String {
        match e {
            AppError::BadRequest(_, m) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn settings_from_query() {
        let s = parse_settings(q(&[
            ("tier", "deep"),
            ("interval_ms", "30000"),
            ("timeout_ms", "5000"),
            ("fuel", "null"),
            ("memory_mib", "32"),
            ("config", r#"{"path":"/health"}"#),
        ]))
        .expect("valid");
        assert_eq!(s.tier, Tier::Deep);
        assert_eq!(s.fuel, None);
        assert_eq!(s.config["path"], "/health");
        assert_eq!(
            parse_settings(vec![]).expect("defaults"),
            ProbeSettings::default()
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        let m = message(parse_settings(q(&[("interval_ms", "-5")])).expect_err("rejected"));
        assert!(m.contains("`interval_ms`") && m.contains("-5"), "{m}");
        let m = message(parse_settings(q(&[("timeout_ms", "0")])).expect_err("rejected"));
        assert!(m.contains("`timeout_ms`"), "{m}");
        let m = message(parse_settings(q(&[("tier", "fast")])).expect_err("rejected"));
        assert!(m.contains("`tier`"), "{m}");
        let m = message(parse_settings(q(&[("config", "[1]")])).expect_err("rejected"));
        assert!(m.contains("`config`"), "{m}");
        let m = message(parse_settings(q(&[("bogus", "1")])).expect_err("rejected"));
        assert!(m.contains("`bogus`"), "{m}");
        let m = message(parse_settings(q(&[("fuel", "1"), ("fuel", "2")])).expect_err("rejected"));
        assert!(m.contains("more than once"), "{m}");
    }
}
