//! Webhook delivery: the outbox in the store (one row per notification and pool webhook,
//! written with the notification) is drained by one task that POSTs each notification's
//! JSON, signed, and retries with exponential backoff. Every attempt is logged in the
//! store; a restart replays whatever is still pending.
//!
//! Fair per tenant: each client has at most one delivery in flight (its oldest due
//! first), and different clients' deliveries run concurrently (up to
//! [`MAX_IN_FLIGHT`]), so an endpoint that never answers holds up only its own
//! client's deliveries, each for at most the POST timeout.
//!
//! Signature: `X-PLB-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares
//! in constant time and refuses old timestamps (replays). `X-PLB-Delivery` carries the
//! delivery id (the same on every retry: deduplicate on it), `X-PLB-Event` the kind.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::netpolicy::{NetPolicy, ReqwestResolver};
use crate::reliability::KindLabels;
use crate::store::{AttemptNext, AttemptRecord, DueDelivery, Store};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-plb-signature";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "x-plb-delivery";
/// The event header (`probe.needs_update`, `probe.resolved`).
pub const EVENT_HEADER: &str = "x-plb-event";

type HmacSha256 = Hmac<Sha256>;

/// How deliveries are retried, and where they may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Time allowed for one POST, ms.
    pub timeout_ms: u64,
    /// Delay before the first retry, ms; doubles with each failed attempt.
    pub backoff_base_ms: u64,
    /// Longest delay between attempts, ms.
    pub backoff_max_ms: u64,
    /// Attempts before a delivery is given up (`failed`).
    pub max_attempts: u32,
    /// The addresses receivers may have (checked when the URL is set and, after DNS
    /// resolution, at every delivery).
    pub networks: NetPolicy,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_ms: 10_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 10 * 60 * 1000,
            // 1 s doubling to 10 min: about 26 hours of retries.
            max_attempts: 160,
            networks: NetPolicy::webhooks(&[]),
        }
    }
}

impl DeliveryConfig {
    /// The delay after the `attempts`-th failed attempt (1-based).
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let shift = attempts.saturating_sub(1).min(40);
        self.backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.backoff_max_ms)
    }
}

/// The signature header's value for `body` at Unix time `t` (seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=...,v1=...`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is too far from now.
    #[error("timestamp outside the tolerance")]
    Stale,
    /// The MAC does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// Checks a signature header against `body` (what a receiver does), with timestamps up
/// to `tolerance_s` away from `now_s`. Only the form [`sign`] writes is accepted: each
/// of `t` and `v1` once, `t` a decimal integer without sign or leading zeros (but for a
/// negative one's `-`), `v1` 64 lowercase hex digits; so no byte of a signed header can
/// change and still verify.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        let (slot, v) = match part.trim().split_once('=') {
            Some(("t", v)) => (&mut t, v),
            Some(("v1", v)) => (&mut v1, v),
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(SignatureError::Malformed);
        }
    }
    let t = t
        .and_then(|v| v.parse::<i64>().ok().filter(|t| t.to_string() == v))
        .ok_or(SignatureError::Malformed)?;
    let v1 = v1
        .filter(|v| v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|v| hex::decode(v).ok())
        .ok_or(SignatureError::Malformed)?;
    // `abs_diff`: `now_s - t` overflows for a hostile `t` such as i64::MIN.
    if now_s.abs_diff(t) > u64::try_from(tolerance_s).unwrap_or(0) {
        return Err(SignatureError::Stale);
    }
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Malformed)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).map_err(|_| SignatureError::Mismatch)
}

/// Deliveries in flight at once (each for a different client).
pub const MAX_IN_FLIGHT: usize = 32;
/// Clients whose next delivery is read per look at the outbox.
const CLIENTS_PER_ROUND: usize = 256;
/// Longest sleep between looks at the outbox when nothing is due.
const IDLE: Duration = Duration::from_secs(5);

/// Runs the deliverer until aborted: starts each client's next due delivery unless that
/// client has one in flight, then sleeps until the next one is due, an attempt ends, or
/// `wake` is notified.
pub async fn run(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    cfg: DeliveryConfig,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        // Names resolve only to allowed addresses (connect to what was checked), and no
        // environment proxy stands between the check and the receiver.
        .dns_resolver(Arc::new(ReqwestResolver::new(cfg.networks.clone())))
        .no_proxy()
        .user_agent(concat!("plb-balancer/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot build the HTTP client; deliveries stay queued");
            return;
        }
    };
    let cfg = Arc::new(cfg);
    // Clients with a delivery in flight; each task answers its client when done.
    let mut busy: HashSet<i64> = HashSet::new();
    let mut tasks: JoinSet<i64> = JoinSet::new();
    loop {
        while let Some(done) = tasks.try_join_next() {
            if let Ok(client) = done {
                busy.remove(&client);
            }
        }
        let next = match store.due_deliveries(CLIENTS_PER_ROUND).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        let now = crate::clock::now_ms();
        let mut wait = IDLE;
        for d in next {
            if busy.contains(&d.client_id) {
                continue;
            }
            if d.due_at_ms > now {
                let until = u64::try_from(d.due_at_ms - now).unwrap_or(0);
                wait = wait.min(Duration::from_millis(until));
                continue;
            }
            if busy.len() >= MAX_IN_FLIGHT {
                break;
            }
            busy.insert(d.client_id);
            let (store, metrics, http, cfg) = (
                Arc::clone(&store),
                Arc::clone(&metrics),
                http.clone(),
                Arc::clone(&cfg),
            );
            tasks.spawn(async move {
                let client = d.client_id;
                deliver(store.as_ref(), &metrics, &http, &cfg, d).await;
                client
            });
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(client) = done {
                    busy.remove(&client);
                }
            }
        }
    }
}

/// One attempt of `d`, counted and logged in the store.
async fn deliver(
    store: &dyn Store,
    metrics: &Metrics,
    http: &reqwest::Client,
    cfg: &DeliveryConfig,
    d: DueDelivery,
) {
    let rec = attempt(http, cfg, d).await;
    let result = match rec.next {
        AttemptNext::Delivered => "delivered",
        AttemptNext::RetryAt(_) => "retry",
        AttemptNext::GiveUp => "failed",
    };
    metrics
        .reliability
        .webhook_attempts
        .get_or_create(&KindLabels { kind: result })
        .inc();
    if let Err(e) = store.record_attempt(rec).await {
        tracing::warn!(error = %e, "webhooks: cannot log an attempt");
    }
}

/// One POST of one delivery; answers what to log.
async fn attempt(http: &reqwest::Client, cfg: &DeliveryConfig, d: DueDelivery) -> AttemptRecord {
    let at_ms = crate::clock::now_ms();
    let (Some(url), Some(secret)) = (d.url, d.secret) else {
        return AttemptRecord {
            delivery_id: d.id,
            url: String::new(),
            at_ms,
            status: None,
            error: Some("the pool's webhook was removed".into()),
            duration_ms: 0.0,
            next: AttemptNext::GiveUp,
        };
    };
    // An IP literal never reaches the resolver: check it here.
    if let Some(ip) = literal_ip(&url)
        && !cfg.networks.allows(ip)
    {
        return AttemptRecord {
            delivery_id: d.id,
            url,
            at_ms,
            status: None,
            error: Some(format!(
                "not sent: {ip} is in a network the operator does not allow"
            )),
            duration_ms: 0.0,
            next: AttemptNext::GiveUp,
        };
    }
    let started = Instant::now();
    let t = at_ms.div_euclid(1000);
    let event = match d.kind {
        plb_api::NotificationKind::Scaling => "pool.scaling".to_string(),
        kind => format!("probe.{}", kind.as_str()),
    };
    let result = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            sign(secret.as_bytes(), t, d.body.as_bytes()),
        )
        .header(DELIVERY_HEADER, d.id.to_string())
        .header(EVENT_HEADER, event)
        .body(d.body)
        .send()
        .await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let attempts = d.attempts.saturating_add(1);
    let retry = || {
        if attempts >= cfg.max_attempts {
            AttemptNext::GiveUp
        } else {
            let delay = i64::try_from(cfg.backoff_ms(attempts)).unwrap_or(i64::MAX);
            AttemptNext::RetryAt(crate::clock::now_ms().saturating_add(delay))
        }
    };
    let (status, error, next) = match result {
        Ok(resp) if resp.status().is_success() => {
            (Some(resp.status().as_u16()), None, AttemptNext::Delivered)
        }
        Ok(resp) => (
            Some(resp.status().as_u16()),
            Some(format!("answered {}", resp.status())),
            retry(),
        ),
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            };
            (None, Some(format!("{what}: {e}")), retry())
        }
    };
    if next != AttemptNext::Delivered {
        tracing::info!(delivery = d.id, notification = d.notification_id, %url, ?status, ?error, attempts, "webhook delivery failed");
    }
    AttemptRecord {
        delivery_id: d.id,
        url,
        at_ms,
        status,
        error,
        duration_ms,
        next,
    }
}

/// The host of `url` when it is an IP address.
fn literal_ip(url: &str) -> Option<std::net::IpAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_timestamp_is_stale_not_an_overflow() {
        let h = format!("t={},v1={}", i64::MIN, "0".repeat(64));
        assert_eq!(
            verify(b"s3cret-s3cret-16", &h, b"", i64::MAX, 300),
            Err(SignatureError::Stale)
        );
        let h = format!("t={},v1={}", i64::MAX, "0".repeat(64));
        assert_eq!(
            verify(b"s3cret-s3cret-16", &h, b"", -5, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn ip_literals_are_found_in_urls() {
        assert_eq!(
            literal_ip("http://127.0.0.1:9/x"),
            Some([127, 0, 0, 1].into())
        );
        assert_eq!(
            literal_ip("http://[::1]:9/x"),
            Some(std::net::Ipv6Addr::LOCALHOST.into())
        );
        assert_eq!(literal_ip("https://hooks.example.com/x"), None);
    }

    #[test]
    fn a_signature_verifies_and_a_changed_body_or_old_time_does_not() {
        let h = sign(b"s3cret-s3cret-16", 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        verify(b"s3cret-s3cret-16", &h, b"{\"a\":1}", 1_700_000_010, 300).expect("valid");
        assert_eq!(
            verify(b"s3cret-s3cret-16", &h, b"{\"a\":2}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other-secret-xyz", &h, b"{\"a\":1}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret-s3cret-16", &h, b"{\"a\":1}", 1_700_001_000, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"s3cret-s3cret-16", "v1=00", b"", 0, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // HMAC-SHA256(key="key", "1.body") computed with Python's hmac module.
        let h = sign(b"key", 1, b"body");
        assert_eq!(
            h,
            "t=1,v1=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = DeliveryConfig {
            timeout_ms: 1000,
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            max_attempts: 5,
            ..DeliveryConfig::default()
        };
        let v: Vec<u64> = (1..=6).map(|a| c.backoff_ms(a)).collect();
        assert_eq!(v, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
