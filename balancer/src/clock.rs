//! Wall-clock time as the balancer stores and compares it: Unix milliseconds. The one
//! place that reads the system clock for timestamps, at the bottom of the module graph so
//! every layer (store callers, engine, reliability, webhooks, retention, routes) can use it.

/// Now, Unix ms (0 before 1970, `i64::MAX` past the year 292 million).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
