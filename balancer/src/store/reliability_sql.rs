//! Probe reliability's SQL: each probe's persisted state, the notifications (update
//! prompts) raised on its transitions, the per-pool webhook and the delivery outbox with
//! every attempt. A transition, its notification and its queued delivery are written in
//! one transaction, so a prompt is raised once and never lost.
use plb_api::{
    DeliveryAttempt, Notification, NotificationKind, ProbeState, ReliabilityEvidence, Sample,
    ScalingNotice, WebhookDelivery, WebhookView,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::pools_sql::pool_id;
use super::{StoreError, StoreFuture};

/// A probe's state as stored.
#[derive(Debug, Clone)]
pub struct StoredReliability {
    /// The pool's owner.
    pub client_id: i64,
    /// Pool name.
    pub pool: String,
    /// Probe name.
    pub probe: String,
    /// State.
    pub state: ProbeState,
    /// The version it is about.
    pub version: u32,
    /// Since when, Unix ms.
    pub since_ms: Option<i64>,
}

/// A probe's state transition to store, with the notification it raises (if any).
#[derive(Debug, Clone)]
pub struct ReliabilityRecord {
    /// The pool's owner.
    pub client_id: i64,
    /// Pool name.
    pub pool: String,
    /// Probe name.
    pub probe: String,
    /// New state.
    pub state: ProbeState,
    /// The version it is about.
    pub version: u32,
    /// When, Unix ms.
    pub at_ms: i64,
    /// The evidence at the transition.
    pub evidence: ReliabilityEvidence,
    /// The notification to raise: `needs_update` on entering it (or on a newer broken
    /// version), `resolved` on leaving it.
    pub notify: Option<NotificationKind>,
}

/// A pool's scaling recommendation that changed, to store as a `scaling` notification
/// with its queued webhook delivery.
#[derive(Debug, Clone)]
pub struct ScalingRecord {
    /// The pool's owner.
    pub client_id: i64,
    /// Pool name.
    pub pool: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// What changed.
    pub notice: ScalingNotice,
}

/// A sample for replaying into the tracker after a restart.
#[derive(Debug, Clone)]
pub struct ReplaySample {
    /// The node's owner.
    pub client_id: i64,
    /// The node.
    pub node: String,
    /// The sample.
    pub sample: Sample,
}

/// A client's next pending delivery, with what it takes to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// The client whose pool it is for.
    pub client_id: i64,
    /// When it is due, Unix ms.
    pub due_at_ms: i64,
    /// The notification id.
    pub notification_id: i64,
    /// The notification kind (for the event header).
    pub kind: NotificationKind,
    /// The JSON body to POST.
    pub body: String,
    /// The webhook's URL now (`None`: the webhook was removed).
    pub url: Option<String>,
    /// Its secret.
    pub secret: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
}

/// One delivery attempt's result to store.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Delivery id.
    pub delivery_id: i64,
    /// URL used.
    pub url: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Duration, ms.
    pub duration_ms: f64,
    /// What follows: delivered, retry at a time, or give up.
    pub next: AttemptNext,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// Delivered (2xx).
    Delivered,
    /// Retry at this time, Unix ms.
    RetryAt(i64),
    /// No more attempts.
    GiveUp,
}

pub(super) fn states(c: &Connection) -> Result<Vec<StoredReliability>, StoreError> {
    let mut q = c.prepare_cached(
        "SELECT p.client_id, p.name, r.probe, r.state, r.version, r.since_ms
         FROM probe_reliability r JOIN pools p ON p.id = r.pool_id ORDER BY r.pool_id, r.probe",
    )?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, u32>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (client_id, pool, probe, state, version, since_ms) = row?;
        let state = ProbeState::parse(&state)
            .ok_or_else(|| StoreError::Invalid(format!("stored probe state `{state}`")))?;
        out.push(StoredReliability {
            client_id,
            pool,
            probe,
            state,
            version,
            since_ms,
        });
    }
    Ok(out)
}

pub(super) fn replay_samples(
    c: &Connection,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<ReplaySample>, StoreError> {
    let mut q = c.prepare_cached(
        "SELECT n.client_id, s.node, s.id, s.pool, s.probe, s.version, s.taken_at_ms, s.outcome,
                s.duration_ms, s.fuel_used, s.message, s.stderr
         FROM samples s JOIN nodes n ON n.id = s.node_id
         WHERE s.taken_at_ms >= ?1 ORDER BY s.taken_at_ms, s.seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = q.query_map(params![since_ms, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            Sample {
                id: r.get(2)?,
                pool: r.get(3)?,
                probe: r.get(4)?,
                version: r.get(5)?,
                taken_at_ms: r.get(6)?,
                outcome: plb_api::Outcome::Ok,
                metrics: Default::default(),
                duration_ms: r.get(8)?,
                fuel_used: r
                    .get::<_, Option<i64>>(9)?
                    .and_then(|f| u64::try_from(f).ok()),
                message: r.get(10)?,
                stderr: r.get(11)?,
            },
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (client_id, node, mut sample, outcome) = row?;
        let Some(o) = plb_api::Outcome::parse(&outcome) else {
            continue;
        };
        sample.outcome = o;
        out.push(ReplaySample {
            client_id,
            node,
            sample,
        });
    }
    Ok(out)
}

/// The summary of a probe's notification (both backends).
pub(super) fn notification_summary(
    kind: NotificationKind,
    pool: &str,
    probe: &str,
    ev: &ReliabilityEvidence,
) -> String {
    match kind {
        NotificationKind::NeedsUpdate => {
            let classes: Vec<String> = ev
                .outcomes
                .iter()
                .filter(|(k, _)| k.as_str() != "ok")
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            format!(
                "Probe `{probe}` version {} in pool `{pool}` fails by its own fault in {} of {} recent runs ({}) on {} node(s); its samples are excluded from forecasts and routing until a version runs reliably. Upload a fixed version.",
                ev.version,
                ev.probe_failures,
                ev.runs,
                classes.join(", "),
                ev.nodes_affected.len()
            )
        }
        NotificationKind::Resolved => format!(
            "Probe `{probe}` version {} in pool `{pool}` runs reliably ({} failures by its own fault in {} runs); its samples feed forecasts and routing again.",
            ev.version, ev.probe_failures, ev.runs
        ),
        // Scaling notifications have their own summary (`record_scaling`).
        NotificationKind::Scaling => String::new(),
    }
}

/// Stores a transition; answers the notification raised, if any.
pub(super) fn record(
    c: &Connection,
    r: ReliabilityRecord,
) -> Result<Option<Notification>, StoreError> {
    let pid = pool_id(c, r.client_id, &r.pool)?;
    let stored: Option<(String, u32, Option<i64>)> = c
        .prepare_cached(
            "SELECT state, version, open_notification_id FROM probe_reliability
             WHERE pool_id = ?1 AND probe = ?2",
        )?
        .query_row(params![pid, r.probe], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    // Already the stored state (raised by another replica, or again after a restart):
    // nothing to record, no second notification.
    if let Some((state, version, _)) = &stored
        && state.as_str() == r.state.as_str()
        && *version == r.version
    {
        return Ok(None);
    }
    let open = stored.and_then(|(_, _, open)| open);
    let evidence = serde_json::to_string(&r.evidence)?;
    let mut notification = None;
    let mut open_after = if r.state == ProbeState::NeedsUpdate {
        open
    } else {
        None
    };
    if let Some(kind) = r.notify {
        let resolves = match kind {
            NotificationKind::Resolved => open,
            NotificationKind::NeedsUpdate | NotificationKind::Scaling => None,
        };
        let mut n = Notification {
            id: 0,
            kind,
            pool: r.pool.clone(),
            probe: r.probe.clone(),
            version: r.version,
            created_at_ms: r.at_ms,
            resolves,
            summary: notification_summary(kind, &r.pool, &r.probe, &r.evidence),
            evidence: r.evidence.clone(),
            scaling: None,
        };
        c.prepare_cached(
            "INSERT INTO notifications (client_id, pool_id, probe, version, kind, resolves, created_at_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '{}')",
        )?
        .execute(params![
            r.client_id,
            pid,
            r.probe,
            r.version,
            kind.as_str(),
            resolves,
            r.at_ms
        ])?;
        n.id = c.last_insert_rowid();
        c.prepare_cached("UPDATE notifications SET body = ?2 WHERE id = ?1")?
            .execute(params![n.id, serde_json::to_string(&n)?])?;
        // Queue a delivery if the pool has a webhook.
        c.prepare_cached(
            "INSERT INTO webhook_deliveries (pool_id, notification_id, url, status, attempts, next_attempt_at_ms, created_at_ms)
             SELECT pool_id, ?2, url, 'pending', 0, ?3, ?3 FROM webhooks WHERE pool_id = ?1",
        )?
        .execute(params![pid, n.id, r.at_ms])?;
        if kind == NotificationKind::NeedsUpdate {
            open_after = Some(n.id);
        }
        notification = Some(n);
    }
    c.prepare_cached(
        "INSERT INTO probe_reliability (pool_id, probe, state, version, since_ms, evidence, open_notification_id, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5)
         ON CONFLICT (pool_id, probe) DO UPDATE SET state = excluded.state, version = excluded.version,
           since_ms = excluded.since_ms, evidence = excluded.evidence,
           open_notification_id = excluded.open_notification_id, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![
        pid,
        r.probe,
        r.state.as_str(),
        r.version,
        r.at_ms,
        evidence,
        open_after
    ])?;
    Ok(notification)
}

/// Stores a `scaling` notification and queues its delivery to the pool's webhook, in
/// the one transaction the writer runs this in (the reliability outbox path).
/// A pool's `scaling` notification (its id not yet known), for both backends.
pub(super) fn scaling_notification(r: &ScalingRecord) -> Notification {
    let s = &r.notice;
    let summary = format!(
        "Pool `{}` needs {} node(s) within {} min ({} from {}; {} in service): scale {}. {}",
        r.pool,
        s.to_nodes,
        s.horizon_min,
        s.direction,
        s.from_nodes,
        s.current_nodes,
        s.direction,
        s.reason
    );
    Notification {
        id: 0,
        kind: NotificationKind::Scaling,
        pool: r.pool.clone(),
        probe: String::new(),
        version: 0,
        created_at_ms: r.at_ms,
        resolves: None,
        summary,
        evidence: ReliabilityEvidence {
            version: 0,
            runs: 0,
            probe_failures: 0,
            node_failures: 0,
            outcomes: Default::default(),
            failure_rate: 0.0,
            failure_rate_lo: 0.0,
            failure_rate_hi: 0.0,
            nodes_affected: Vec::new(),
            nodes_seen: 0,
            failing_since_ms: None,
            examples: Vec::new(),
            reason: String::new(),
        },
        scaling: Some(r.notice.clone()),
    }
}

pub(super) fn record_scaling(c: &Connection, r: ScalingRecord) -> Result<Notification, StoreError> {
    let pid = pool_id(c, r.client_id, &r.pool)?;
    let mut n = scaling_notification(&r);
    c.prepare_cached(
        "INSERT INTO notifications (client_id, pool_id, probe, version, kind, resolves, created_at_ms, body)
         VALUES (?1, ?2, '', 0, ?3, NULL, ?4, '{}')",
    )?
    .execute(params![
        r.client_id,
        pid,
        NotificationKind::Scaling.as_str(),
        r.at_ms
    ])?;
    n.id = c.last_insert_rowid();
    c.prepare_cached("UPDATE notifications SET body = ?2 WHERE id = ?1")?
        .execute(params![n.id, serde_json::to_string(&n)?])?;
    c.prepare_cached(
        "INSERT INTO webhook_deliveries (pool_id, notification_id, url, status, attempts, next_attempt_at_ms, created_at_ms)
         SELECT pool_id, ?2, url, 'pending', 0, ?3, ?3 FROM webhooks WHERE pool_id = ?1",
    )?
    .execute(params![pid, n.id, r.at_ms])?;
    Ok(n)
}

pub(super) fn notifications(
    c: &Connection,
    client_id: i64,
    since_id: i64,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut q = c.prepare_cached(
        "SELECT body FROM notifications
         WHERE client_id = ?1 AND id > ?2 AND created_at_ms >= ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = q.query_map(
        params![client_id, since_id, since_ms.unwrap_or(i64::MIN), limit],
        |r| r.get::<_, String>(0),
    )?;
    let mut out = Vec::new();
    for body in rows {
        out.push(serde_json::from_str(&body?)?);
    }
    Ok(out)
}

pub(super) fn put_webhook(
    c: &Connection,
    client_id: i64,
    pool: &str,
    url: &str,
    secret: &str,
    now_ms: i64,
) -> Result<WebhookView, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    c.prepare_cached(
        "INSERT INTO webhooks (pool_id, url, secret, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (pool_id) DO UPDATE SET url = excluded.url, secret = excluded.secret,
           updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![pid, url, secret, now_ms])?;
    Ok(WebhookView {
        pool: pool.to_string(),
        url: url.to_string(),
        updated_at_ms: now_ms,
    })
}

pub(super) fn get_webhook(
    c: &Connection,
    client_id: i64,
    pool: &str,
) -> Result<WebhookView, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    c.prepare_cached("SELECT url, updated_at_ms FROM webhooks WHERE pool_id = ?1")?
        .query_row([pid], |r| {
            Ok(WebhookView {
                pool: pool.to_string(),
                url: r.get(0)?,
                updated_at_ms: r.get(1)?,
            })
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("webhook of pool `{pool}`")))
}

pub(super) fn delete_webhook(c: &Connection, client_id: i64, pool: &str) -> Result<(), StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let n = c
        .prepare_cached("DELETE FROM webhooks WHERE pool_id = ?1")?
        .execute([pid])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("webhook of pool `{pool}`")));
    }
    Ok(())
}

/// Each client's next pending delivery (the soonest due, then the oldest), soonest
/// first, at most `limit` clients. The window runs over delivery ids only; the bodies of
/// the chosen ones are joined afterwards.
pub(super) fn due(c: &Connection, limit: usize) -> Result<Vec<DueDelivery>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut q = c.prepare_cached(
        "WITH firsts AS (
           SELECT id FROM (
             SELECT d.id, row_number() OVER (
               PARTITION BY p.client_id ORDER BY d.next_attempt_at_ms, d.id) AS rn
             FROM webhook_deliveries d JOIN pools p ON p.id = d.pool_id
             WHERE d.status = 'pending')
           WHERE rn = 1)
         SELECT d.id, d.notification_id, n.kind, n.body, w.url, w.secret, d.attempts,
                p.client_id, d.next_attempt_at_ms
         FROM firsts f JOIN webhook_deliveries d ON d.id = f.id
         JOIN pools p ON p.id = d.pool_id
         JOIN notifications n ON n.id = d.notification_id
         LEFT JOIN webhooks w ON w.pool_id = d.pool_id
         ORDER BY d.next_attempt_at_ms, d.id LIMIT ?1",
    )?;
    let rows = q.query_map(params![limit], |r| {
        Ok((
            (
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ),
            (
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, u32>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let ((id, notification_id, kind, body), (url, secret, attempts, client_id, due)) = row?;
        let kind = NotificationKind::parse(&kind)
            .ok_or_else(|| StoreError::Invalid(format!("stored notification kind `{kind}`")))?;
        out.push(DueDelivery {
            id,
            client_id,
            due_at_ms: due.unwrap_or(0),
            notification_id,
            kind,
            body,
            url,
            secret,
            attempts,
        });
    }
    Ok(out)
}

pub(super) fn next_due(c: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT MIN(next_attempt_at_ms) FROM webhook_deliveries WHERE status = 'pending'",
    )?
    .query_row([], |r| r.get(0))?)
}

pub(super) fn record_attempt(c: &Connection, a: AttemptRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO webhook_attempts (delivery_id, at_ms, status, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        a.delivery_id,
        a.at_ms,
        a.status,
        a.error,
        a.duration_ms
    ])?;
    let (status, next, delivered) = match a.next {
        AttemptNext::Delivered => ("delivered", None, Some(a.at_ms)),
        AttemptNext::RetryAt(t) => ("pending", Some(t), None),
        AttemptNext::GiveUp => ("failed", None, None),
    };
    c.prepare_cached(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?2,
           next_attempt_at_ms = ?3, delivered_at_ms = ?4, url = ?5 WHERE id = ?1",
    )?
    .execute(params![a.delivery_id, status, next, delivered, a.url])?;
    Ok(())
}

pub(super) fn deliveries(
    c: &Connection,
    client_id: i64,
    pool: &str,
    limit: usize,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let pid = pool_id(c, client_id, pool)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut q = c.prepare_cached(
        "SELECT id, notification_id, url, status, attempts, next_attempt_at_ms, created_at_ms,
                delivered_at_ms
         FROM webhook_deliveries WHERE pool_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let mut out: Vec<WebhookDelivery> = q
        .query_map(params![pid, limit], |r| {
            Ok(WebhookDelivery {
                id: r.get(0)?,
                notification_id: r.get(1)?,
                url: r.get(2)?,
                status: r.get(3)?,
                attempts: r.get(4)?,
                next_attempt_at_ms: r.get(5)?,
                created_at_ms: r.get(6)?,
                delivered_at_ms: r.get(7)?,
                log: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut aq = c.prepare_cached(
        "SELECT at_ms, status, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ?1 ORDER BY id",
    )?;
    for d in &mut out {
        d.log = aq
            .query_map([d.id], |r| {
                Ok(DeliveryAttempt {
                    at_ms: r.get(0)?,
                    status: r.get(1)?,
                    error: r.get(2)?,
                    duration_ms: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

/// The store's probe-reliability operations (a supertrait of [`super::Store`]). Every
/// client-facing method is scoped by the caller's client id.
pub trait ReliabilityStore {
    /// Every probe's persisted state (all clients), for warming the tracker.
    fn reliability_states(&self) -> StoreFuture<Vec<StoredReliability>>;

    /// Up to `limit` stored raw samples taken at or after `since_ms`, oldest first, with
    /// their messages and captured output.
    fn replay_samples(&self, since_ms: i64, limit: usize) -> StoreFuture<Vec<ReplaySample>>;

    /// Stores a probe's transition and the notification it raises (queued for the pool's
    /// webhook) in one transaction; answers the notification.
    fn record_reliability(&self, r: ReliabilityRecord) -> StoreFuture<Option<Notification>>;

    /// Stores a pool's scaling recommendation change as a `scaling` notification with
    /// its queued webhook delivery, in one transaction; answers the notification.
    fn record_scaling(&self, r: ScalingRecord) -> StoreFuture<Notification>;

    /// The client's notifications with an id above `since_id` (and raised at or after
    /// `since_ms`, if given), oldest first, at most `limit`.
    fn notifications(
        &self,
        client_id: i64,
        since_id: i64,
        since_ms: Option<i64>,
        limit: usize,
    ) -> StoreFuture<Vec<Notification>>;

    /// Sets a pool's webhook.
    fn put_webhook(
        &self,
        client_id: i64,
        pool: String,
        url: String,
        secret: String,
        now_ms: i64,
    ) -> StoreFuture<WebhookView>;

    /// A pool's webhook (without its secret).
    fn get_webhook(&self, client_id: i64, pool: String) -> StoreFuture<WebhookView>;

    /// Removes a pool's webhook; its pending deliveries then fail.
    fn delete_webhook(&self, client_id: i64, pool: String) -> StoreFuture<()>;

    /// Each client's next pending delivery (due or not), soonest first, at most `limit`
    /// clients: the deliverer sends one per client at a time.
    fn due_deliveries(&self, limit: usize) -> StoreFuture<Vec<DueDelivery>>;

    /// When the next pending delivery is due.
    fn next_delivery_due(&self) -> StoreFuture<Option<i64>>;

    /// Logs an attempt and moves its delivery on.
    fn record_attempt(&self, a: AttemptRecord) -> StoreFuture<()>;

    /// A pool's newest deliveries with every attempt, newest first.
    fn webhook_deliveries(
        &self,
        client_id: i64,
        pool: String,
        limit: usize,
    ) -> StoreFuture<Vec<WebhookDelivery>>;
}

impl ReliabilityStore for SqliteStore {
    fn reliability_states(&self) -> StoreFuture<Vec<StoredReliability>> {
        self.read(states)
    }

    fn replay_samples(&self, since_ms: i64, limit: usize) -> StoreFuture<Vec<ReplaySample>> {
        self.read(move |c| replay_samples(c, since_ms, limit))
    }

    fn record_reliability(&self, r: ReliabilityRecord) -> StoreFuture<Option<Notification>> {
        self.write(move |c| record(c, r))
    }

    fn record_scaling(&self, r: ScalingRecord) -> StoreFuture<Notification> {
        self.write(move |c| record_scaling(c, r))
    }

    fn notifications(
        &self,
        client_id: i64,
        since_id: i64,
        since_ms: Option<i64>,
        limit: usize,
    ) -> StoreFuture<Vec<Notification>> {
        self.read(move |c| notifications(c, client_id, since_id, since_ms, limit))
    }

    fn put_webhook(
        &self,
        client_id: i64,
        pool: String,
        url: String,
        secret: String,
        now_ms: i64,
    ) -> StoreFuture<WebhookView> {
        self.write(move |c| put_webhook(c, client_id, &pool, &url, &secret, now_ms))
    }

    fn get_webhook(&self, client_id: i64, pool: String) -> StoreFuture<WebhookView> {
        self.read(move |c| get_webhook(c, client_id, &pool))
    }

    fn delete_webhook(&self, client_id: i64, pool: String) -> StoreFuture<()> {
        self.write(move |c| delete_webhook(c, client_id, &pool))
    }

    fn due_deliveries(&self, limit: usize) -> StoreFuture<Vec<DueDelivery>> {
        self.read(move |c| due(c, limit))
    }

    fn next_delivery_due(&self) -> StoreFuture<Option<i64>> {
        self.read(next_due)
    }

    fn record_attempt(&self, a: AttemptRecord) -> StoreFuture<()> {
        self.write(move |c| record_attempt(c, a))
    }

    fn webhook_deliveries(
        &self,
        client_id: i64,
        pool: String,
        limit: usize,
    ) -> StoreFuture<Vec<WebhookDelivery>> {
        self.read(move |c| deliveries(c, client_id, &pool, limit))
    }
}
