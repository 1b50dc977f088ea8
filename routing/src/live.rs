//! Per-node live state updated on every request and every feedback, without locks:
//! requests in flight, a peak-EWMA latency estimate, a decaying error rate and counters.
//!
//! Time is a parameter everywhere (`now`, seconds on any clock the caller likes), so the
//! live balancer, the proxy and the simulator share this code. Latencies are seconds too.
//!
//! The estimators pack an `f32` value and a `u32` millisecond timestamp into one
//! `AtomicU64` and update it with a compare-and-swap loop, so a reader never sees a value
//! from one update with the time of another. The timestamp wraps every 49.7 days and the
//! difference of two is read as a signed 32-bit count, so gaps up to 24.8 days decay
//! correctly; a longer gap reads as "no time passed" (harmless: the value is stale anyway).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The packed word of an estimator that has never been fed (an `f32` NaN pattern that
/// [`pack`] never produces, since only finite values are stored).
const EMPTY: u64 = u64::MAX;

fn millis(now: f64) -> u32 {
    // Truncating to u32 is the wrap-around described in the module docs. A non-finite or
    // negative clock maps to 0 (`as` saturates), which only disables decay.
    ((now * 1000.0) as u64) as u32
}

fn pack(value: f32, t_ms: u32) -> u64 {
    (u64::from(value.to_bits()) << 32) | u64::from(t_ms)
}

fn unpack(word: u64) -> (f32, u32) {
    (f32::from_bits((word >> 32) as u32), word as u32)
}

/// Seconds from `then` to `now` (both wrapped milliseconds), never negative.
fn elapsed(then_ms: u32, now_ms: u32) -> f64 {
    (now_ms.wrapping_sub(then_ms) as i32).max(0) as f64 / 1000.0
}

/// Later of two wrapped millisecond stamps.
fn later(a: u32, b: u32) -> u32 {
    if (b.wrapping_sub(a) as i32) > 0 { b } else { a }
}

/// Whether the observation packed in `word` came before `since` (seconds).
fn older_than(word: u64, since: f64) -> bool {
    (millis(since).wrapping_sub(unpack(word).1) as i32) > 0
}

/// A time constant in seconds from a setting: at least 1 ms, `default` if not finite.
fn time_constant(tau: f64, default: f64) -> f64 {
    if tau.is_finite() {
        tau.max(0.001)
    } else {
        default
    }
}

/// Feeds one latency (seconds) at `now` to the estimator packed in `word`: ignored if
/// not finite, negative counts as zero; the first is stored as it is, a later one as
/// `next(estimate, seconds since the last, latency)`.
fn observe_latency(word: &AtomicU64, latency: f64, now: f64, next: impl Fn(f64, f64, f64) -> f64) {
    if !latency.is_finite() {
        return;
    }
    let x = latency.max(0.0);
    let t = millis(now);
    update(word, |cur| {
        if cur == EMPTY {
            return pack(x as f32, t);
        }
        let (v, t0) = unpack(cur);
        pack(next(f64::from(v), elapsed(t0, t), x) as f32, later(t0, t))
    });
}

/// `v` moved toward `x` by `1 - exp(-dt / tau)`.
fn blend(v: f64, x: f64, dt: f64, tau: f64) -> f64 {
    let w = (-dt / tau).exp();
    v * w + x * (1.0 - w)
}

/// Stores `next(current)` in `word`, retrying while another update comes between the
/// read and the write (a compare-and-swap loop).
fn update(word: &AtomicU64, next: impl Fn(u64) -> u64) {
    let mut cur = word.load(Ordering::Relaxed);
    while let Err(actual) =
        word.compare_exchange_weak(cur, next(cur), Ordering::AcqRel, Ordering::Relaxed)
    {
        cur = actual;
    }
}

/// Peak-sensitive EWMA of latency (Finagle's `PeakEwma`, linkerd's `PeakEwma`): a new
/// observation above the estimate replaces it at once; one below it is blended in with
/// weight `1 - exp(-dt / tau)` where `dt` is the time since the previous observation; and
/// while nothing arrives, reads decay the estimate toward zero with the same time
/// constant, so a node that stopped being chosen is eventually tried again.
#[derive(Debug)]
pub struct PeakEwma {
    word: AtomicU64,
    tau: f64,
}

impl PeakEwma {
    /// An empty estimator with decay time constant `tau` seconds (clamped to at least 1 ms).
    pub fn new(tau: f64) -> Self {
        PeakEwma {
            word: AtomicU64::new(EMPTY),
            tau: time_constant(tau, 10.0),
        }
    }

    /// The decay time constant in seconds.
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// Feeds one observed latency (seconds) at time `now`. Non-finite values are ignored;
    /// negative ones count as zero.
    pub fn observe(&self, latency: f64, now: f64) {
        observe_latency(&self.word, latency, now, |v, dt, x| {
            if x >= v { x } else { blend(v, x, dt, self.tau) }
        });
    }

    /// The estimate at time `now`, decayed for the time since the last observation, or
    /// `None` if nothing was ever observed.
    pub fn get(&self, now: f64) -> Option<f64> {
        let word = self.word.load(Ordering::Acquire);
        if word == EMPTY {
            return None;
        }
        let (v, t0) = unpack(word);
        Some(f64::from(v) * (-elapsed(t0, millis(now)) / self.tau).exp())
    }

    /// [`Self::get`], but `None` when the last observation is older than `since`: what
    /// a node measured before it left service says nothing of the process that came
    /// back.
    pub fn get_since(&self, now: f64, since: f64) -> Option<f64> {
        let word = self.word.load(Ordering::Acquire);
        if word == EMPTY || older_than(word, since) {
            return None;
        }
        self.get(now)
    }
}

/// Time-weighted mean of latency: each observation is blended in with weight
/// `1 - exp(-dt / tau)`, `dt` the time since the previous one, so the estimate is about
/// the mean of the answers of the last `tau` seconds however many there were. Unlike
/// [`PeakEwma`] it neither jumps to a slow answer nor decays while nothing arrives: it
/// says how slow a node's answers are, where peak-EWMA says how slow its worst recent one
/// was (which depends on how many answers there were to be slow).
#[derive(Debug)]
pub struct MeanEwma {
    word: AtomicU64,
    tau: f64,
}

impl MeanEwma {
    /// An empty estimator with time constant `tau` seconds (clamped to at least 1 ms).
    pub fn new(tau: f64) -> Self {
        MeanEwma {
            word: AtomicU64::new(EMPTY),
            tau: time_constant(tau, 10.0),
        }
    }

    /// Feeds one observed latency (seconds) at time `now`. Non-finite values are ignored;
    /// negative ones count as zero.
    pub fn observe(&self, latency: f64, now: f64) {
        observe_latency(&self.word, latency, now, |v, dt, x| {
            blend(v, x, dt, self.tau)
        });
    }

    /// The estimate, or `None` if nothing was observed (or nothing since `since`, when
    /// given: what a node measured before it left service says nothing of the process
    /// that came back).
    pub fn get_since(&self, since: Option<f64>) -> Option<f64> {
        self.read_since(since).map(|(v, _)| f64::from(v))
    }

    /// [`Self::get_since`] with the seconds from its last observation to `now`:
    /// `(mean, idle)`.
    pub fn get_since_at(&self, since: Option<f64>, now: f64) -> Option<(f64, f64)> {
        self.read_since(since)
            .map(|(v, t0)| (f64::from(v), elapsed(t0, millis(now))))
    }

    /// The estimate and when it was last observed, unless empty or older than `since`.
    fn read_since(&self, since: Option<f64>) -> Option<(f32, u32)> {
        let word = self.word.load(Ordering::Acquire);
        if word == EMPTY || since.is_some_and(|t| t.is_finite() && older_than(word, t)) {
            return None;
        }
        Some(unpack(word))
    }
}

/// Fraction of failed requests: each outcome moves the estimate by `alpha` toward 0 or 1,
/// and between outcomes it decays toward 0 with time constant `tau`, so a node that
/// failed and was then left alone is forgiven and tried again.
#[derive(Debug)]
pub struct ErrorRate {
    word: AtomicU64,
    alpha: f64,
    tau: f64,
}

impl ErrorRate {
    /// A zero error rate; `alpha` in (0, 1], `tau` seconds.
    pub fn new(alpha: f64, tau: f64) -> Self {
        let alpha = if alpha.is_finite() {
            alpha.clamp(1e-6, 1.0)
        } else {
            0.1
        };
        ErrorRate {
            word: AtomicU64::new(EMPTY),
            alpha,
            tau: time_constant(tau, 30.0),
        }
    }

    /// Feeds one outcome at time `now`.
    pub fn observe(&self, ok: bool, now: f64) {
        let x = if ok { 0.0 } else { 1.0 };
        let t = millis(now);
        update(&self.word, |cur| {
            let (e, t_new) = if cur == EMPTY {
                (0.0, t)
            } else {
                let (v, t0) = unpack(cur);
                (
                    f64::from(v) * (-elapsed(t0, t) / self.tau).exp(),
                    later(t0, t),
                )
            };
            pack((e + self.alpha * (x - e)) as f32, t_new)
        });
    }

    /// Forgets every outcome: the rate is zero again (a node that could not be reached
    /// is reachable again; its refusals say nothing of the process that answers now).
    pub fn reset(&self) {
        self.word.store(EMPTY, Ordering::Release);
    }

    /// The error rate at time `now`, in 0..=1.
    pub fn get(&self, now: f64) -> f64 {
        let word = self.word.load(Ordering::Acquire);
        if word == EMPTY {
            return 0.0;
        }
        let (v, t0) = unpack(word);
        if v == 0.0 {
            return 0.0;
        }
        (f64::from(v) * (-elapsed(t0, millis(now)) / self.tau).exp()).clamp(0.0, 1.0)
    }
}

/// Failed outcomes in a row after which a node's next success counts as a return to
/// service (its process restarted, its network came back): slow start begins again, and
/// the latency it showed before is forgotten, as for a node the pipeline sees return.
pub const OUT_AFTER_FAILURES: u32 = 3;

/// How many of its own latency estimates a busy node may go without answering before
/// it is [overdue](NodeLive::overdue). A node that makes progress answers its oldest
/// request within about one estimate (peak-EWMA follows its slowest recent answers), so
/// twice that is a wait it does not show while it works, however slow it is.
pub const OVERDUE_LATENCIES: f64 = 2.0;

/// Longest rest, seconds, of a node its clients keep giving up on (see
/// [`NodeLive::resting`]). A rest is capacity the pool goes without once the node
/// answers again: with plb's full scan resting a node too, 8 s kept a node that
/// restarted at full speed idle for up to 8 s (leak then crash live, its peers' SLO
/// breaks in the ten seconds after the restart 3 with the node back at once, 11-18
/// with it resting), for one lost request per 9 s of a hang instead of one per 5 s.
pub const MAX_REST: f64 = 4.0;

/// Time constants of the live estimators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveConfig {
    /// Peak-EWMA latency decay time constant, seconds. Finagle and linkerd use 10 s;
    /// ours is 3 s. A peak holds a node's estimate up after one slow answer until it
    /// decays, and under a cost that weighs latency every node pays for its outliers
    /// for about `tau`: with 10 s, identical nodes' shares drifted 1.5 points from fair
    /// (the simulator's homogeneous pool, median over 60 runs) and a node shed during
    /// a slow spell stayed avoided into its next fast one (fluctuating speeds). With
    /// 3 s: 0.9 points, and fluctuating-slow's mean SLO-breaking share 1.98 -> 1.43 %,
    /// fluctuating-fast's median 1.85 -> 1.54 %; rolling restarts' 90th percentile
    /// went 2.77 -> 3.29 % (every figure: `bench/RESULTS.md`, ninth session).
    pub latency_tau: f64,
    /// Weight of one outcome in the error rate.
    pub error_alpha: f64,
    /// Decay of the error rate toward zero while no outcome arrives, seconds.
    pub error_tau: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            latency_tau: 3.0,
            error_alpha: 0.05,
            error_tau: 30.0,
        }
    }
}

/// The live state of one node.
#[derive(Debug)]
pub struct NodeLive {
    in_flight: AtomicI64,
    /// The pool-wide in-flight count this node adds to (shared with its [`LiveSet`]).
    pool_in_flight: Arc<AtomicI64>,
    started: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    latency: PeakEwma,
    mean_latency: MeanEwma,
    error_rate: ErrorRate,
    /// Failed outcomes since the last success.
    fail_streak: AtomicU32,
    /// When (`now`, as `f64` bits; [`EMPTY`] for never) it last returned to service
    /// ([`NodeLive::back_since`]).
    back_at: AtomicU64,
    /// Whether its last outcome was a failure to connect (nothing listening, or no
    /// route): any answer clears it.
    unreachable: AtomicBool,
    /// When (`now`, as `f64` bits; [`EMPTY`] for never) it last made progress: its
    /// last answer, or the moment it went from idle to busy (see [`NodeLive::overdue`]).
    progress_at: AtomicU64,
    /// Whether a client gave up on it after waiting longer than its latency estimate
    /// and it has not answered since: going busy again is then no fresh start.
    gave_up: AtomicBool,
    /// Requests its clients gave up on in a row with no answer between.
    give_ups: AtomicU32,
    /// When (`now`, as `f64` bits; [`EMPTY`] for never) a client last gave up on it.
    gave_up_at: AtomicU64,
}

impl NodeLive {
    /// Fresh state of a node on its own (not counted in any pool): nothing in flight,
    /// no latency known.
    pub fn new(config: &LiveConfig) -> Self {
        NodeLive::in_pool(config, Arc::new(AtomicI64::new(0)))
    }

    fn in_pool(config: &LiveConfig, pool_in_flight: Arc<AtomicI64>) -> Self {
        NodeLive {
            in_flight: AtomicI64::new(0),
            pool_in_flight,
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: PeakEwma::new(config.latency_tau),
            mean_latency: MeanEwma::new(config.latency_tau),
            error_rate: ErrorRate::new(config.error_alpha, config.error_tau),
            fail_streak: AtomicU32::new(0),
            back_at: AtomicU64::new(EMPTY),
            unreachable: AtomicBool::new(false),
            progress_at: AtomicU64::new(EMPTY),
            gave_up: AtomicBool::new(false),
            give_ups: AtomicU32::new(0),
            gave_up_at: AtomicU64::new(EMPTY),
        }
    }

    /// A request was sent to this node at `now`.
    pub fn begin(&self, now: f64) {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.pool_in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        // Idle until now: the wait for its next answer starts here, unless its clients
        // gave up on it the last time (a hung node is not forgiven for having idled).
        if before <= 0 && now.is_finite() && !self.gave_up.load(Ordering::Relaxed) {
            self.progress_at.store(now.to_bits(), Ordering::Relaxed);
        }
    }

    /// A request sent with [`NodeLive::begin`] finished after `latency` seconds.
    pub fn end(&self, latency: f64, ok: bool, now: f64) {
        self.release();
        self.observe(latency, ok, now);
    }

    /// A request sent with [`NodeLive::begin`] could not reach the node (the connection
    /// was refused or could not be made) after `latency` seconds: a failure that also
    /// marks the node unreachable until it answers again or [`NodeLive::reachable`] says
    /// it listens again.
    /// The time a refusal took says nothing of the node's latency and is not observed.
    pub fn end_unreachable(&self, now: f64) {
        self.release();
        self.outcome(None, false, now);
        self.unreachable.store(true, Ordering::Relaxed);
    }

    /// Whether traffic found the node refusing connections (nothing listening, or no
    /// route) and it has not answered since: worth a connection check, and
    /// [`NodeLive::reachable`] when it passes.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// A connection check found an [unreachable](Self::is_unreachable) node listening
    /// again at `now`: its refusals are forgiven (error rate back to zero), so it is
    /// tried at once instead of after its error rate has decayed, and it returns to
    /// service (slow start begins, the latency it showed before is forgotten): a
    /// refused connection means nothing listened, so the process that listens now is
    /// a new one, however few requests its absence refused. No effect on a node that
    /// is not unreachable: one that answers with errors keeps its error rate.
    pub fn reachable(&self, now: f64) {
        if !now.is_finite() || !self.unreachable.swap(false, Ordering::Relaxed) {
            return;
        }
        self.fail_streak.store(0, Ordering::Relaxed);
        self.back_at.store(now.to_bits(), Ordering::Relaxed);
        self.error_rate.reset();
    }

    /// A request that was not counted in flight here finished (e.g. feedback from a
    /// caller that routed on its own): updates the estimates only.
    pub fn observe(&self, latency: f64, ok: bool, now: f64) {
        self.outcome(Some(latency), ok, now);
    }

    fn outcome(&self, latency: Option<f64>, ok: bool, now: f64) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let was_unreachable = self.unreachable.swap(false, Ordering::Relaxed);
        if let Some(latency) = latency {
            self.latency.observe(latency, now);
            self.mean_latency.observe(latency, now);
            if now.is_finite() {
                self.progress_at.store(now.to_bits(), Ordering::Relaxed);
            }
            self.gave_up.store(false, Ordering::Relaxed);
            self.give_ups.store(0, Ordering::Relaxed);
        }
        if ok {
            let streak = self.fail_streak.swap(0, Ordering::Relaxed);
            if (streak >= OUT_AFTER_FAILURES || was_unreachable) && now.is_finite() {
                self.back_at.store(now.to_bits(), Ordering::Relaxed);
                if was_unreachable {
                    // Back from being unreachable: its refusals are forgiven.
                    self.error_rate.reset();
                }
            }
            self.error_rate.observe(ok, now);
        } else {
            self.error_rate.observe(ok, now);
            let _ = self
                .fail_streak
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_add(1))
                });
        }
    }

    /// When the node last returned to service, if ever: it answered after
    /// [`OUT_AFTER_FAILURES`] failures in a row, or after refusing a connection, or a
    /// connection check found it listening again after a refusal.
    pub fn back_since(&self) -> Option<f64> {
        match self.back_at.load(Ordering::Relaxed) {
            EMPTY => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    /// Gives back an in-flight slot without an observation (a cancelled request).
    pub fn abandon(&self) {
        self.release();
    }

    /// Gives back the slot of a request cancelled after `waited` seconds without an
    /// answer (its client gave up): no outcome, but the node's latency is at least
    /// `waited`, so an estimate below that rises to it (a node that hangs without
    /// answering is not left looking fast while every request to it is lost). A wait
    /// shorter than the estimate says nothing and changes nothing.
    pub fn abandon_after(&self, waited: f64, now: f64) {
        self.release();
        if waited.is_finite() && self.latency.get(now).is_some_and(|v| waited > v) {
            self.latency.observe(waited, now);
            self.gave_up.store(true, Ordering::Relaxed);
            self.give_ups.fetch_add(1, Ordering::Relaxed);
            if now.is_finite() {
                self.gave_up_at.store(now.to_bits(), Ordering::Relaxed);
            }
        }
    }

    /// Whether a client gave up on its last request (waited past its latency estimate
    /// with no answer) and it has answered nothing since: the last thing known of it
    /// is a wait, not an answer.
    pub fn given_up(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed)
    }

    /// Whether the node rests from looks at its recovery: its clients gave up on its
    /// last `k` requests in a row (each waited past its latency estimate, none
    /// answered) and the last give-up was less than `min(2^(k-1), MAX_REST)` seconds
    /// ago. A hung node then costs one lost request per rest instead of one per
    /// client timeout, and a node that answers again is seen within [`MAX_REST`].
    pub fn resting(&self, now: f64) -> bool {
        let k = self.give_ups.load(Ordering::Relaxed);
        let bits = self.gave_up_at.load(Ordering::Relaxed);
        if k == 0 || bits == EMPTY {
            return false;
        }
        let rest = 2f64.powi(k.min(16) as i32 - 1).min(MAX_REST);
        now - f64::from_bits(bits) < rest
    }

    /// Whether the node has work in flight and has answered nothing for more than
    /// [`OVERDUE_LATENCIES`] times its latency estimate since it last answered or went
    /// busy: it is not making progress (hung, or stalled far beyond its usual pace).
    /// Never overdue before its first answer (nothing to judge the wait by).
    pub fn overdue(&self, now: f64) -> bool {
        if self.in_flight() == 0 {
            return false;
        }
        let (Some(latency), bits) = (
            self.latency.get(now),
            self.progress_at.load(Ordering::Relaxed),
        ) else {
            return false;
        };
        bits != EMPTY && now - f64::from_bits(bits) > OVERDUE_LATENCIES * latency
    }

    /// Gives back one slot, never taking the counts below zero (an end without a begin
    /// is ignored rather than hiding a later request).
    fn release(&self) {
        let took = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v > 0).then(|| v - 1)
            })
            .is_ok();
        if took {
            self.pool_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed).max(0) as u64
    }

    /// Peak-EWMA latency in seconds at `now`, `None` before the first response.
    pub fn latency(&self, now: f64) -> Option<f64> {
        self.latency.get(now)
    }

    /// [`Self::latency`], `None` when the last response came before `since` (the node
    /// re-entered service since: slow start's `ready_since`).
    pub fn latency_since(&self, now: f64, since: Option<f64>) -> Option<f64> {
        match since {
            Some(t) if t.is_finite() => self.latency.get_since(now, t),
            _ => self.latency.get(now),
        }
    }

    /// Time-weighted mean latency of its recent answers in seconds ([`MeanEwma`]),
    /// `None` before the first response or, with `since`, when the last response came
    /// before it.
    pub fn mean_latency_since(&self, since: Option<f64>) -> Option<f64> {
        self.mean_latency.get_since(since)
    }

    /// [`Self::mean_latency_since`] with the seconds since the answer it last took in
    /// at `now`: `(mean, idle)`. A node priced by its mean gets no traffic, so no
    /// answer moves its mean; how long it has idled says how stale that mean is.
    pub fn mean_latency_idle(&self, now: f64, since: Option<f64>) -> Option<(f64, f64)> {
        self.mean_latency.get_since_at(since, now)
    }

    /// Recent error rate at `now`, 0..=1.
    pub fn error_rate(&self, now: f64) -> f64 {
        self.error_rate.get(now)
    }

    /// Requests begun.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Outcomes observed.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Failed outcomes observed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts a request in flight and returns a guard that gives the slot back when
    /// dropped unless [`InFlight::finish`] reported the outcome first.
    pub fn start(self: &Arc<Self>, now: f64) -> InFlight {
        self.begin(now);
        InFlight {
            node: Some(Arc::clone(self)),
        }
    }
}

/// One request in flight to a node (see [`NodeLive::start`]).
#[derive(Debug)]
pub struct InFlight {
    node: Option<Arc<NodeLive>>,
}

impl InFlight {
    /// Reports the outcome and releases the slot.
    pub fn finish(mut self, latency: f64, ok: bool, now: f64) {
        if let Some(node) = self.node.take() {
            node.end(latency, ok, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.abandon();
        }
    }
}

/// Live state of every node one balancer instance routes to, keyed by node id, so it
/// survives snapshot swaps. Only [`crate::Snapshot::new`] and feedback by id touch the
/// map's lock; a route decision reads the handles the snapshot bound at build time.
///
/// One `LiveSet` per pool per balancer instance: it also keeps the pool's total of
/// requests in flight, which keyed routing's bounded-load rule reads.
#[derive(Debug, Default)]
pub struct LiveSet {
    config: LiveConfig,
    nodes: Mutex<HashMap<String, Arc<NodeLive>>>,
    in_flight: Arc<AtomicI64>,
}

impl LiveSet {
    /// An empty set whose nodes use `config`.
    pub fn new(config: LiveConfig) -> Self {
        LiveSet {
            config,
            nodes: Mutex::new(HashMap::new()),
            in_flight: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The estimators' configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The node's live state, created fresh if it is new.
    pub fn get_or_insert(&self, id: &str) -> Arc<NodeLive> {
        let mut nodes = self.lock();
        if let Some(node) = nodes.get(id) {
            return Arc::clone(node);
        }
        let node = Arc::new(NodeLive::in_pool(&self.config, Arc::clone(&self.in_flight)));
        nodes.insert(id.to_owned(), Arc::clone(&node));
        node
    }

    /// The node's live state if it has one.
    pub fn get(&self, id: &str) -> Option<Arc<NodeLive>> {
        self.lock().get(id).cloned()
    }

    /// Drops the state of every node not in `keep` (a node that left and comes back
    /// later starts fresh). Requests still in flight keep their own handle.
    pub fn retain<'a>(&self, keep: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = keep.into_iter().collect();
        self.lock().retain(|id, _| keep.contains(id.as_str()));
    }

    /// Requests in flight to all nodes of the set (including nodes dropped by
    /// [`LiveSet::retain`] whose requests have not finished yet).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed).max(0) as u64
    }

    /// The shared counter behind [`LiveSet::in_flight`].
    pub(crate) fn in_flight_counter(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.in_flight)
    }

    /// Number of nodes with state.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no node has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<NodeLive>>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-4 * b.abs().max(1e-3)
    }

    #[test]
    fn a_success_after_a_run_of_failures_is_a_return_to_service() {
        let n = NodeLive::new(&LiveConfig::default());
        assert_eq!(n.back_since(), None);
        // Failures short of the run, then a success: nothing.
        for t in 0..OUT_AFTER_FAILURES - 1 {
            n.observe(0.0, false, f64::from(t));
        }
        n.observe(0.01, true, 3.0);
        assert_eq!(n.back_since(), None);
        // A full run: the next success marks the return; later ones do not move it.
        for t in 0..OUT_AFTER_FAILURES {
            n.observe(0.0, false, 4.0 + f64::from(t));
        }
        n.observe(0.01, true, 10.0);
        n.observe(0.01, true, 11.0);
        assert_eq!(n.back_since(), Some(10.0));
    }

    #[test]
    fn the_mean_follows_the_answers_not_their_peak() {
        let n = NodeLive::new(&LiveConfig::default());
        assert_eq!(n.mean_latency_since(None), None);
        // 20 ms every 10 ms for 3 s, with one 100 ms answer in the middle: the peak
        // jumps to it, the mean moves by a fraction of a millisecond.
        for k in 0..300 {
            let lat = if k == 150 { 0.1 } else { 0.02 };
            n.observe(lat, true, 0.01 * f64::from(k));
        }
        assert!(n.latency(1.5).is_some());
        let mean = n.mean_latency_since(None).expect("answered");
        assert!((0.02..0.0205).contains(&mean), "{mean}");
        assert!(n.latency(2.99).expect("answered") > 0.04);
        // A node answering 40 ms ten times a second for 10 s: its mean is 40 ms, however
        // few answers there were.
        let sparse = NodeLive::new(&LiveConfig::default());
        for k in 0..100 {
            sparse.observe(0.04, true, 0.1 * f64::from(k));
        }
        let mean = sparse.mean_latency_since(None).expect("answered");
        assert!(close(mean, 0.04), "{mean}");
        // Nothing since a return to service: no mean.
        assert_eq!(sparse.mean_latency_since(Some(20.0)), None);
        assert!(sparse.mean_latency_since(Some(5.0)).is_some());
    }

    #[test]
    fn one_slow_answer_among_steady_ones_is_forgotten_within_seconds() {
        // A node answering in 20 ms every 10 ms has one 100 ms answer: the peak takes
        // the estimate to it at once, and eight seconds of steady answers later it is
        // back within 1.5x of 20 ms (with Finagle's 10 s it would still be near 56 ms,
        // and the full scan would still send this node less than its identical peers).
        let n = NodeLive::new(&LiveConfig::default());
        let mut t = 0.0;
        while t < 1.0 {
            n.observe(0.02, true, t);
            t += 0.01;
        }
        n.observe(0.1, true, t);
        assert!(n.latency(t).expect("fed") > 0.09);
        let slow_at = t;
        while t < slow_at + 8.0 {
            t += 0.01;
            n.observe(0.02, true, t);
        }
        let l = n.latency(t).expect("fed");
        assert!(l < 0.03, "{l}");
    }

    #[test]
    fn a_node_refusing_connections_is_unreachable_until_a_check_or_an_answer() {
        let n = NodeLive::new(&LiveConfig::default());
        n.observe(0.02, true, 0.0);
        // One refusal is enough to check, and to start afresh once the check finds
        // the node listening: whatever listens now is a new process.
        n.begin(0.0);
        n.end_unreachable(0.5);
        assert!(n.is_unreachable());
        n.reachable(0.6);
        assert!(!n.is_unreachable());
        assert_eq!(n.error_rate(0.6), 0.0);
        assert_eq!(n.back_since(), Some(0.6));
        assert_eq!(n.latency_since(0.6, n.back_since()), None);
        for t in 0..OUT_AFTER_FAILURES {
            n.begin(0.0);
            n.end_unreachable(1.0 + f64::from(t));
        }
        assert!(n.is_unreachable());
        assert_eq!(n.in_flight(), 0);
        // Refusals take no part in the latency estimate; they do raise the error rate.
        let decay = (-1.0 / LiveConfig::default().latency_tau).exp();
        assert!(close(n.latency(1.0).expect("fed"), 0.02 * decay));
        assert!(n.error_rate(4.0) > 0.1);
        // The check finds it listening: back in service, its refusals forgiven.
        n.reachable(5.0);
        assert!(!n.is_unreachable());
        assert_eq!(n.back_since(), Some(5.0));
        assert_eq!(n.error_rate(5.0), 0.0);
        assert_eq!(n.latency_since(5.0, n.back_since()), None);
        // A node that answers with errors is not unreachable, and a check forgives it
        // nothing.
        for t in 0..OUT_AFTER_FAILURES + 2 {
            n.observe(0.001, false, 6.0 + f64::from(t));
        }
        assert!(!n.is_unreachable());
        let e = n.error_rate(12.0);
        n.reachable(12.0);
        assert_eq!(n.error_rate(12.0), e);
        assert_eq!(n.back_since(), Some(5.0));
    }

    #[test]
    fn an_answer_after_one_refusal_returns_the_node() {
        let n = NodeLive::new(&LiveConfig::default());
        n.observe(0.02, true, 0.0);
        n.begin(1.0);
        n.end_unreachable(1.0);
        assert!(n.is_unreachable());
        assert_eq!(n.back_since(), None);
        // Answered without a connection check in between: a new process all the same.
        n.observe(0.03, true, 2.0);
        assert!(!n.is_unreachable());
        assert_eq!(n.back_since(), Some(2.0));
        // An answer after an answer (no refusal between) changes nothing.
        n.observe(0.03, true, 3.0);
        assert_eq!(n.back_since(), Some(2.0));
    }

    #[test]
    fn an_answer_after_refusals_returns_the_node_and_forgives_them() {
        let n = NodeLive::new(&LiveConfig::default());
        for t in 0..OUT_AFTER_FAILURES + 3 {
            n.begin(0.0);
            n.end_unreachable(f64::from(t));
        }
        n.observe(0.02, true, 7.0);
        assert!(!n.is_unreachable());
        assert_eq!(n.back_since(), Some(7.0));
        assert!(n.error_rate(7.0) < 1e-9, "one success after forgiveness");
    }

    #[test]
    fn a_request_given_up_on_raises_the_latency_to_its_wait() {
        let n = NodeLive::new(&LiveConfig::default());
        n.begin(0.0);
        n.abandon_after(0.5, 0.0);
        assert_eq!(
            n.latency(0.0),
            None,
            "nothing known: a wait alone sets nothing"
        );
        n.observe(0.02, true, 1.0);
        n.begin(0.0);
        n.begin(0.0);
        n.abandon_after(0.01, 1.0);
        assert!(
            close(n.latency(1.0).expect("fed"), 0.02),
            "a short wait says nothing"
        );
        n.abandon_after(1.0, 2.0);
        assert!(
            close(n.latency(2.0).expect("fed"), 1.0),
            "a long wait is a lower bound"
        );
        assert_eq!(n.in_flight(), 0);
        assert_eq!((n.completed(), n.errors()), (1, 0), "no outcome counted");
    }

    #[test]
    fn a_busy_node_that_answers_nothing_for_twice_its_latency_is_overdue() {
        let n = NodeLive::new(&LiveConfig::default());
        n.begin(0.0);
        assert!(!n.overdue(5.0), "no answer yet: nothing to judge by");
        n.end(0.1, true, 1.0);
        assert!(!n.overdue(9.0), "idle is not overdue");
        // Busy from 2.0 on, answering every 0.1 s: never overdue.
        n.begin(2.0);
        for k in 1..=10 {
            let t = 2.0 + 0.1 * f64::from(k);
            n.begin(t);
            n.end(0.1, true, t);
            assert!(!n.overdue(t + 0.15), "at its pace at {t}");
        }
        // Then nothing: overdue once the wait passes twice its latency (~0.1 s).
        assert!(!n.overdue(3.15));
        assert!(n.overdue(3.25));
    }

    #[test]
    fn a_node_given_up_on_is_overdue_again_as_soon_as_it_is_busy() {
        let n = NodeLive::new(&LiveConfig::default());
        n.begin(0.0);
        n.end(0.1, true, 0.1);
        n.begin(1.0);
        n.abandon_after(1.0, 2.0);
        assert!(!n.overdue(2.0), "nothing in flight");
        n.begin(2.2);
        // It went busy at 1.0 and never answered; the wait it was given up after (1 s)
        // is its latency estimate now, so it is overdue about 2 s after 1.0, although
        // it has been busy again only since 2.2.
        assert!(
            n.overdue(3.1),
            "idle only because its clients gave up: no fresh start"
        );
        n.end(0.05, true, 3.2);
        n.begin(3.3);
        assert!(!n.overdue(3.4), "it answered: a fresh start");
    }

    #[test]
    fn a_node_given_up_on_again_and_again_rests_longer_each_time() {
        let n = NodeLive::new(&LiveConfig::default());
        n.begin(0.0);
        n.end(0.05, true, 0.1);
        assert!(!n.resting(0.2), "never given up on");
        // Hung from 1.0: each request is given up on after 1 s; the rests double.
        let mut t = 1.0;
        for rest in [1.0, 2.0, 4.0, 4.0, 4.0] {
            n.begin(t);
            n.abandon_after(1.0, t + 1.0);
            t += 1.0;
            assert!(n.resting(t + rest - 0.01), "rests {rest} s at {t}");
            assert!(!n.resting(t + rest + 0.01), "looks again after {rest} s");
            t += rest;
        }
        // A request that waited less than its estimate says nothing.
        n.begin(t);
        n.abandon_after(0.001, t + 0.001);
        assert!(!n.resting(t + 0.01));
        // An answer ends it.
        n.begin(t);
        n.abandon_after(2.0, t + 2.0);
        assert!(n.resting(t + 2.5));
        n.observe(0.05, true, t + 2.6);
        assert!(!n.resting(t + 2.7));
    }

    #[test]
    fn peak_ewma_is_empty_until_fed() {
        let e = PeakEwma::new(10.0);
        assert_eq!(e.get(0.0), None);
        e.observe(f64::NAN, 0.0);
        assert_eq!(e.get(0.0), None);
        e.observe(0.05, 1.0);
        assert!(close(e.get(1.0).expect("fed"), 0.05));
    }

    #[test]
    fn a_latency_from_before_a_node_came_back_is_forgotten() {
        let e = PeakEwma::new(10.0);
        e.observe(2.0, 100.0);
        assert_eq!(e.get_since(101.0, 99.0), Some(2.0 * (-0.1f64).exp()));
        assert_eq!(e.get_since(101.0, 100.5), None, "observed before `since`");
        e.observe(0.02, 102.0);
        assert!(e.get_since(102.0, 100.5).is_some(), "observed after it");
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_at_once() {
        let e = PeakEwma::new(10.0);
        e.observe(0.010, 0.0);
        e.observe(0.500, 0.001);
        assert!(close(e.get(0.001).expect("fed"), 0.5));
    }

    #[test]
    fn peak_ewma_falls_with_the_time_constant_on_a_virtual_clock() {
        let tau = 10.0;
        let e = PeakEwma::new(tau);
        e.observe(1.0, 100.0);
        // One observation of 0 after exactly tau: weight of the old value is e^-1.
        e.observe(0.0, 100.0 + tau);
        let v = e.get(100.0 + tau).expect("fed");
        assert!(close(v, (-1.0f64).exp()), "{v}");
        // Many low observations close together move it little; spread over time a lot.
        let slow = PeakEwma::new(tau);
        slow.observe(1.0, 0.0);
        for i in 1..=100 {
            slow.observe(0.1, f64::from(i) * 0.001);
        }
        let after_100ms = slow.get(0.1).expect("fed");
        assert!(after_100ms > 0.98, "{after_100ms}");
        for i in 1..=100 {
            slow.observe(0.1, 0.1 + f64::from(i));
        }
        let after_100s = slow.get(100.1).expect("fed");
        assert!((after_100s - 0.1).abs() < 0.01, "{after_100s}");
    }

    #[test]
    fn peak_ewma_decays_toward_zero_while_idle() {
        let e = PeakEwma::new(5.0);
        e.observe(0.2, 0.0);
        let a = e.get(0.0).expect("fed");
        let b = e.get(5.0).expect("fed");
        let c = e.get(50.0).expect("fed");
        assert!(close(a, 0.2));
        assert!(close(b, 0.2 * (-1.0f64).exp()), "{b}");
        assert!(c < 0.2 * 1e-4, "{c}");
        // A clock that went backwards (another thread's older `now`) does not inflate it.
        assert!(close(e.get(-3.0).expect("fed"), 0.2));
    }

    #[test]
    fn error_rate_tracks_failures_and_forgives_over_time() {
        let r = ErrorRate::new(0.1, 10.0);
        assert_eq!(r.get(0.0), 0.0);
        for i in 0..200 {
            r.observe(i % 2 == 0, 0.0);
        }
        let half = r.get(0.0);
        assert!((half - 0.5).abs() < 0.06, "{half}");
        assert!(r.get(100.0) < 0.001);
        for _ in 0..200 {
            r.observe(true, 100.0);
        }
        assert!(r.get(100.0) < 0.001);
    }

    #[test]
    fn in_flight_counts_and_guard_gives_back_on_drop() {
        let set = LiveSet::new(LiveConfig::default());
        let n = set.get_or_insert("a");
        let g1 = n.start(0.0);
        let g2 = n.start(0.0);
        assert_eq!(n.in_flight(), 2);
        g1.finish(0.02, true, 1.0);
        assert_eq!(n.in_flight(), 1);
        drop(g2);
        assert_eq!(n.in_flight(), 0);
        assert_eq!(n.started(), 2);
        assert_eq!(n.completed(), 1);
        // An end without a begin is not counted against a later request.
        n.end(0.01, false, 2.0);
        assert_eq!(n.in_flight(), 0);
        n.begin(0.0);
        assert_eq!(n.in_flight(), 1);
        assert_eq!(set.in_flight(), 1);
        n.abandon();
        assert_eq!(set.in_flight(), 0);
        assert_eq!(n.errors(), 1);
    }

    #[test]
    fn live_set_keeps_state_by_id_and_retains() {
        let set = LiveSet::new(LiveConfig::default());
        let a = set.get_or_insert("a");
        a.begin(0.0);
        assert_eq!(set.get_or_insert("a").in_flight(), 1);
        set.get_or_insert("b").begin(0.0);
        assert_eq!(set.in_flight(), 2);
        assert_eq!(set.len(), 2);
        set.retain(["b"]);
        assert!(set.get("a").is_none());
        assert_eq!(set.get_or_insert("a").in_flight(), 0);
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let n = Arc::new(NodeLive::new(&LiveConfig::default()));
        std::thread::scope(|s| {
            for t in 0..4 {
                let n = Arc::clone(&n);
                s.spawn(move || {
                    for i in 0..10_000 {
                        n.begin(0.0);
                        n.end(0.001 * f64::from(t + 1), i % 10 != 0, f64::from(i) * 1e-3);
                    }
                });
            }
        });
        assert_eq!(n.in_flight(), 0);
        assert_eq!(n.completed(), 40_000);
        assert_eq!(n.errors(), 4_000);
        let l = n.latency(10.0).expect("fed");
        assert!(l > 0.0 && l <= 0.004 + 1e-6, "{l}");
    }
}
