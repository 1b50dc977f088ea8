//! Probe reliability's SQL (PostgreSQL): each probe's persisted state, the notifications
//! raised on its transitions, the per-pool webhook and the delivery outbox with every
//! attempt. A transition, its notification and its queued delivery are one transaction.
use plb_api::{
    DeliveryAttempt, Notification, NotificationKind, ProbeState, Sample, WebhookDelivery,
    WebhookView,
};

use super::pools::pool_id;
use super::{Tx, execute, limit_of, query, query_one, query_opt, text, u32_of};
use crate::store::reliability_sql::{notification_summary, scaling_notification};
use crate::store::{
    AttemptNext, AttemptRecord, DueDelivery, ReliabilityRecord, ReplaySample, ScalingRecord,
    StoreError, StoredReliability,
};

pub(super) async fn states(tx: &Tx<'_>) -> Result<Vec<StoredReliability>, StoreError> {
    let mut out = Vec::new();
    for r in query(
        tx,
        "SELECT p.client_id, p.name, r.probe, r.state, r.version, r.since_ms
         FROM probe_reliability r JOIN pools p ON p.id = r.pool_id ORDER BY r.pool_id, r.probe",
        &[],
    )
    .await?
    {
        let state: String = r.try_get(3)?;
        let state = ProbeState::parse(&state)
            .ok_or_else(|| StoreError::Invalid(format!("stored probe state `{state}`")))?;
        out.push(StoredReliability {
            client_id: r.try_get(0)?,
            pool: r.try_get(1)?,
            probe: r.try_get(2)?,
            state,
            version: u32_of(r.try_get(4)?),
            since_ms: r.try_get(5)?,
        });
    }
    Ok(out)
}

pub(super) async fn replay_samples(
    tx: &Tx<'_>,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<ReplaySample>, StoreError> {
    let mut out = Vec::new();
    for r in query(
        tx,
        "SELECT n.client_id, s.node, s.id, s.pool, s.probe, s.version, s.taken_at_ms, s.outcome,
                s.duration_ms, s.fuel_used, s.message, s.stderr
         FROM samples s JOIN nodes n ON n.id = s.node_id
         WHERE s.taken_at_ms >= $1 ORDER BY s.taken_at_ms, s.seq LIMIT $2",
        &[&since_ms, &limit_of(limit)],
    )
    .await?
    {
        let Some(outcome) = plb_api::Outcome::parse(r.try_get(7)?) else {
            continue;
        };
        out.push(ReplaySample {
            client_id: r.try_get(0)?,
            node: r.try_get(1)?,
            sample: Sample {
                id: r.try_get(2)?,
                pool: r.try_get(3)?,
                probe: r.try_get(4)?,
                version: u32_of(r.try_get(5)?),
                taken_at_ms: r.try_get(6)?,
                outcome,
                metrics: Default::default(),
                duration_ms: r.try_get(8)?,
                fuel_used: r
                    .try_get::<_, Option<i64>>(9)?
                    .and_then(|f| u64::try_from(f).ok()),
                message: r.try_get(10)?,
                stderr: r.try_get(11)?,
            },
        });
    }
    Ok(out)
}

/// Inserts a notification (its body written once its id is known) and queues its
/// delivery to the pool's webhook, if it has one; answers it with its id.
async fn notify(
    tx: &Tx<'_>,
    client_id: i64,
    pid: i64,
    mut n: Notification,
) -> Result<Notification, StoreError> {
    let version = i64::from(n.version);
    n.id = query_one(
        tx,
        "INSERT INTO notifications (client_id, pool_id, probe, version, kind, resolves, created_at_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, '{}') RETURNING id",
        &[
            &client_id,
            &pid,
            &n.probe,
            &version,
            &n.kind.as_str(),
            &n.resolves,
            &n.created_at_ms,
        ],
    )
    .await?
    .try_get(0)?;
    execute(
        tx,
        "UPDATE notifications SET body = $2 WHERE id = $1",
        &[&n.id, &serde_json::to_string(&n)?],
    )
    .await?;
    execute(
        tx,
        "INSERT INTO webhook_deliveries (pool_id, notification_id, url, status, attempts, next_attempt_at_ms, created_at_ms)
         SELECT pool_id, $2, url, 'pending', 0, $3, $3 FROM webhooks WHERE pool_id = $1",
        &[&pid, &n.id, &n.created_at_ms],
    )
    .await?;
    Ok(n)
}

pub(super) async fn record(
    tx: &Tx<'_>,
    r: &ReliabilityRecord,
) -> Result<Option<Notification>, StoreError> {
    let pid = pool_id(tx, r.client_id, &r.pool).await?;
    let stored = query_opt(
        tx,
        "SELECT state, version, open_notification_id FROM probe_reliability
         WHERE pool_id = $1 AND probe = $2 FOR UPDATE",
        &[&pid, &r.probe],
    )
    .await?;
    let mut open = None;
    if let Some(row) = stored {
        let (state, version): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        // Already the stored state (raised by another replica, or again after a
        // restart): nothing to record, no second notification.
        if state == r.state.as_str() && version == i64::from(r.version) {
            return Ok(None);
        }
        open = row.try_get::<_, Option<i64>>(2)?;
    }
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
        let n = Notification {
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
        let n = notify(tx, r.client_id, pid, n).await?;
        if kind == NotificationKind::NeedsUpdate {
            open_after = Some(n.id);
        }
        notification = Some(n);
    }
    execute(
        tx,
        "INSERT INTO probe_reliability (pool_id, probe, state, version, since_ms, evidence, open_notification_id, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $5)
         ON CONFLICT (pool_id, probe) DO UPDATE SET state = excluded.state, version = excluded.version,
           since_ms = excluded.since_ms, evidence = excluded.evidence,
           open_notification_id = excluded.open_notification_id, updated_at_ms = excluded.updated_at_ms",
        &[
            &pid,
            &r.probe,
            &r.state.as_str(),
            &i64::from(r.version),
            &r.at_ms,
            &evidence,
            &open_after,
        ],
    )
    .await?;
    Ok(notification)
}

pub(super) async fn record_scaling(
    tx: &Tx<'_>,
    r: &ScalingRecord,
) -> Result<Notification, StoreError> {
    let pid = pool_id(tx, r.client_id, &r.pool).await?;
    notify(tx, r.client_id, pid, scaling_notification(r)).await
}

pub(super) async fn notifications(
    tx: &Tx<'_>,
    client_id: i64,
    since_id: i64,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let mut out = Vec::new();
    for r in query(
        tx,
        "SELECT body FROM notifications
         WHERE client_id = $1 AND id > $2 AND created_at_ms >= $3 ORDER BY id LIMIT $4",
        &[
            &client_id,
            &since_id,
            &since_ms.unwrap_or(i64::MIN),
            &limit_of(limit),
        ],
    )
    .await?
    {
        out.push(serde_json::from_str(r.try_get::<_, &str>(0)?)?);
    }
    Ok(out)
}

pub(super) async fn put_webhook(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    url: &str,
    secret: &str,
    now_ms: i64,
) -> Result<WebhookView, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let url = text(url);
    let secret = text(secret);
    execute(
        tx,
        "INSERT INTO webhooks (pool_id, url, secret, updated_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (pool_id) DO UPDATE SET url = excluded.url, secret = excluded.secret,
           updated_at_ms = excluded.updated_at_ms",
        &[&pid, &url.as_ref(), &secret.as_ref(), &now_ms],
    )
    .await?;
    Ok(WebhookView {
        pool: pool.to_string(),
        url: url.into_owned(),
        updated_at_ms: now_ms,
    })
}

pub(super) async fn get_webhook(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
) -> Result<WebhookView, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    match query_opt(
        tx,
        "SELECT url, updated_at_ms FROM webhooks WHERE pool_id = $1",
        &[&pid],
    )
    .await?
    {
        Some(r) => Ok(WebhookView {
            pool: pool.to_string(),
            url: r.try_get(0)?,
            updated_at_ms: r.try_get(1)?,
        }),
        None => Err(StoreError::NotFound(format!("webhook of pool `{pool}`"))),
    }
}

pub(super) async fn delete_webhook(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
) -> Result<(), StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    if execute(tx, "DELETE FROM webhooks WHERE pool_id = $1", &[&pid]).await? == 0 {
        return Err(StoreError::NotFound(format!("webhook of pool `{pool}`")));
    }
    Ok(())
}

pub(super) async fn due(tx: &Tx<'_>, limit: usize) -> Result<Vec<DueDelivery>, StoreError> {
    let mut out = Vec::new();
    for r in query(
        tx,
        "WITH firsts AS (
           SELECT id FROM (
             SELECT d.id, row_number() OVER (
               PARTITION BY p.client_id ORDER BY d.next_attempt_at_ms, d.id) AS rn
             FROM webhook_deliveries d JOIN pools p ON p.id = d.pool_id
             WHERE d.status = 'pending') AS ranked
           WHERE rn = 1)
         SELECT d.id, d.notification_id, n.kind, n.body, w.url, w.secret, d.attempts,
                p.client_id, d.next_attempt_at_ms
         FROM firsts f JOIN webhook_deliveries d ON d.id = f.id
         JOIN pools p ON p.id = d.pool_id
         JOIN notifications n ON n.id = d.notification_id
         LEFT JOIN webhooks w ON w.pool_id = d.pool_id
         ORDER BY d.next_attempt_at_ms, d.id LIMIT $1",
        &[&limit_of(limit)],
    )
    .await?
    {
        let kind: String = r.try_get(2)?;
        let kind = NotificationKind::parse(&kind)
            .ok_or_else(|| StoreError::Invalid(format!("stored notification kind `{kind}`")))?;
        out.push(DueDelivery {
            id: r.try_get(0)?,
            client_id: r.try_get(7)?,
            due_at_ms: r.try_get::<_, Option<i64>>(8)?.unwrap_or(0),
            notification_id: r.try_get(1)?,
            kind,
            body: r.try_get(3)?,
            url: r.try_get(4)?,
            secret: r.try_get(5)?,
            attempts: u32_of(r.try_get(6)?),
        });
    }
    Ok(out)
}

pub(super) async fn next_due(tx: &Tx<'_>) -> Result<Option<i64>, StoreError> {
    Ok(query_one(
        tx,
        "SELECT MIN(next_attempt_at_ms) FROM webhook_deliveries WHERE status = 'pending'",
        &[],
    )
    .await?
    .try_get(0)?)
}

pub(super) async fn record_attempt(tx: &Tx<'_>, a: &AttemptRecord) -> Result<(), StoreError> {
    let status = a.status.map(i64::from);
    let error = a.error.as_deref().map(text);
    let error = error.as_deref();
    execute(
        tx,
        "INSERT INTO webhook_attempts (delivery_id, at_ms, status, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[&a.delivery_id, &a.at_ms, &status, &error, &a.duration_ms],
    )
    .await?;
    let (state, next, delivered) = match a.next {
        AttemptNext::Delivered => ("delivered", None, Some(a.at_ms)),
        AttemptNext::RetryAt(t) => ("pending", Some(t), None),
        AttemptNext::GiveUp => ("failed", None, None),
    };
    let url = text(&a.url);
    execute(
        tx,
        "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2,
           next_attempt_at_ms = $3, delivered_at_ms = $4, url = $5 WHERE id = $1",
        &[&a.delivery_id, &state, &next, &delivered, &url.as_ref()],
    )
    .await?;
    Ok(())
}

pub(super) async fn deliveries(
    tx: &Tx<'_>,
    client_id: i64,
    pool: &str,
    limit: usize,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let pid = pool_id(tx, client_id, pool).await?;
    let mut out: Vec<WebhookDelivery> = Vec::new();
    for r in query(
        tx,
        "SELECT id, notification_id, url, status, attempts, next_attempt_at_ms, created_at_ms,
                delivered_at_ms
         FROM webhook_deliveries WHERE pool_id = $1 ORDER BY id DESC LIMIT $2",
        &[&pid, &limit_of(limit)],
    )
    .await?
    {
        out.push(WebhookDelivery {
            id: r.try_get(0)?,
            notification_id: r.try_get(1)?,
            url: r.try_get(2)?,
            status: r.try_get(3)?,
            attempts: u32_of(r.try_get(4)?),
            next_attempt_at_ms: r.try_get(5)?,
            created_at_ms: r.try_get(6)?,
            delivered_at_ms: r.try_get(7)?,
            log: Vec::new(),
        });
    }
    let ids: Vec<i64> = out.iter().map(|d| d.id).collect();
    let mut logs: std::collections::HashMap<i64, Vec<DeliveryAttempt>> = Default::default();
    for r in query(
        tx,
        "SELECT delivery_id, at_ms, status, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ANY($1) ORDER BY delivery_id, id",
        &[&ids],
    )
    .await?
    {
        let status: Option<i64> = r.try_get(2)?;
        logs.entry(r.try_get(0)?)
            .or_default()
            .push(DeliveryAttempt {
                at_ms: r.try_get(1)?,
                status: status.and_then(|s| u16::try_from(s).ok()),
                error: r.try_get(3)?,
                duration_ms: r.try_get(4)?,
            });
    }
    for d in &mut out {
        d.log = logs.remove(&d.id).unwrap_or_default();
    }
    Ok(out)
}
