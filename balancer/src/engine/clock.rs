//! The engine's time source: a [`Clock`] gives Unix milliseconds, the one time unit
//! inside the engine (model time, routing time, fit schedules, expiry of in-flight
//! slots). [`SystemClock`] reads the system clock once and then advances monotonically;
//! [`ManualClock`] is set by hand, so the engine's state machine, fits, expiry and tick
//! are tested in simulated time without sleeping.
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

/// A source of time in Unix ms.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, Unix ms; never goes backwards.
    fn now_ms(&self) -> i64;
}

/// The routing clock in seconds, as `plb-routing` takes it (the same epoch as ms).
pub(crate) fn secs(now_ms: i64) -> f64 {
    now_ms as f64 / 1000.0
}

/// The system clock, read once at start and advanced by a monotonic timer, so that a
/// wall-clock step (NTP) never moves engine time backwards.
#[derive(Debug)]
pub struct SystemClock {
    base_ms: i64,
    start: Instant,
}

impl SystemClock {
    /// Starts now.
    pub fn new() -> Self {
        SystemClock {
            base_ms: crate::clock::now_ms(),
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// A clock that moves only when told to (tests, simulation).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at `ms`.
    pub fn new(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    /// Moves to `ms` (never backwards).
    pub fn set(&self, ms: i64) {
        self.0.fetch_max(ms, Ordering::Relaxed);
    }

    /// Moves forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms.max(0), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
