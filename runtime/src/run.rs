//! Running a probe: one `Store` per run with its limits, the deadline enforced twice
//! (epochs for CPU-bound guests, a tokio timeout for guests blocked in host calls), and
//! the classification of how the run ended.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plb_api::Outcome;
use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

use crate::bindings::{Context, Failure, ProbePre, Report};
use crate::cache::{self, Cache};
use crate::capture::{Capture, OutputLimitHit};
use crate::engine::{EngineSlot, Slots, Ticker, start_ticker};
use crate::host::RunState;
use crate::limits::{MemoryLimitHit, RunLimiter, TableLimitHit};
use crate::{RunReport, RunSpec, RuntimeConfig, RuntimeError};

/// A probe module known to the runtime: its bytes and their sha256. Cheap to clone.
#[derive(Clone)]
pub struct Probe {
    sha256: Arc<str>,
    wasm: Arc<[u8]>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("sha256", &self.sha256)
            .field("bytes", &self.wasm.len())
            .finish()
    }
}

impl Probe {
    /// Wraps module bytes, hashing them.
    pub fn new(wasm: impl Into<Arc<[u8]>>) -> Self {
        let wasm = wasm.into();
        let sha256 = hex::encode(Sha256::digest(&wasm));
        Probe {
            sha256: sha256.into(),
            wasm,
        }
    }

    /// Hex sha256 of the module.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The module bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.wasm
    }
}

/// The sandbox. Clone it freely: clones share engines and the compiled cache.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

struct Inner {
    cfg: RuntimeConfig,
    /// `[unmetered, metered]`.
    slots: Slots,
    cache: Cache,
    /// Runs in flight, for the epoch ticker.
    ticker: Arc<Ticker>,
}

/// Raised by the epoch callback when the run's wall-clock budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock limit of {0} ms passed")]
struct DeadlineHit(u32);

/// Where a run failed: instantiation failures are `invalid`, call failures are classified.
enum Stage {
    Instantiate,
    Call,
}

/// Longest failure message a probe may return, in bytes.
const MAX_MESSAGE: usize = 4096;

impl Runtime {
    /// Builds the engines and starts the epoch ticker.
    pub fn new(cfg: RuntimeConfig) -> Result<Self, RuntimeError> {
        cfg.validate()?;
        let slots = [
            Arc::new(EngineSlot::new(&cfg, false)?),
            Arc::new(EngineSlot::new(&cfg, true)?),
        ];
        let ticker = Arc::new(Ticker::default());
        start_ticker(
            slots.iter().map(Arc::downgrade).collect(),
            Duration::from_millis(cfg.epoch_tick_ms),
            Arc::clone(&ticker),
        );
        Ok(Runtime {
            inner: Arc::new(Inner {
                cfg,
                slots,
                cache: Cache::default(),
                ticker,
            }),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    /// Checks that `wasm` is a component of the `plb:probe/probe` world by compiling and
    /// linking it. CPU-heavy and synchronous: call it from a blocking thread. Returns the
    /// module's sha256.
    pub fn validate(&self, wasm: &[u8]) -> Result<String, RuntimeError> {
        let probe = Probe::new(wasm.to_vec());
        cache::prepare(&self.inner.slots[1], None, probe.sha256(), probe.bytes())?;
        Ok(probe.sha256().to_string())
    }

    /// Compiles `probe` for the engine its runs will use (metered when `fuel` is on), unless
    /// already cached. CPU-heavy and synchronous; [`Runtime::run`] calls it on a blocking
    /// thread when needed, so calling it ahead of time only moves the cost.
    pub fn prepare(&self, probe: &Probe, metered: bool) -> Result<(), RuntimeError> {
        self.instance_pre(probe, metered).map(drop)
    }

    /// Number of compiled (module, engine) pairs held in memory.
    pub fn cached_modules(&self) -> usize {
        self.inner.cache.len()
    }

    fn instance_pre(
        &self,
        probe: &Probe,
        metered: bool,
    ) -> Result<ProbePre<RunState>, RuntimeError> {
        if let Some(pre) = self.inner.cache.get(probe.sha256(), metered) {
            return Ok(pre);
        }
        let slot = &self.inner.slots[usize::from(metered)];
        let dir: Option<PathBuf> = self.inner.cfg.cache_dir.clone();
        let pre = cache::prepare(slot, dir.as_deref(), probe.sha256(), probe.bytes())?;
        self.inner
            .cache
            .insert(probe.sha256(), metered, pre.clone());
        Ok(pre)
    }

    /// Runs `probe` once against `spec.target` under `spec.limits` and classifies how it
    /// ended. Never panics on guest behaviour; every failure becomes a [`RunReport`].
    pub async fn run(&self, probe: &Probe, spec: &RunSpec) -> RunReport {
        let limits = spec.limits;
        if limits.memory_mib == 0 || limits.memory_mib > self.inner.cfg.max_memory_mib {
            return RunReport::failed(
                Outcome::Invalid,
                format!(
                    "memory_mib {} is outside this runtime's range 1..={}",
                    limits.memory_mib, self.inner.cfg.max_memory_mib
                ),
            );
        }
        if limits.timeout_ms == 0 {
            return RunReport::failed(Outcome::Invalid, "timeout_ms must be positive");
        }
        let metered = limits.fuel.is_some();
        let pre = match self.inner.cache.get(probe.sha256(), metered) {
            Some(pre) => pre,
            None => {
                let rt = self.clone();
                let p = probe.clone();
                match tokio::task::spawn_blocking(move || rt.instance_pre(&p, metered)).await {
                    Ok(Ok(pre)) => pre,
                    Ok(Err(e)) => return RunReport::failed(Outcome::Invalid, e.to_string()),
                    Err(e) => {
                        return RunReport::failed(
                            Outcome::Invalid,
                            format!("compile task failed: {e}"),
                        );
                    }
                }
            }
        };
        let slot = &self.inner.slots[usize::from(metered)];
        let Ok(_permit) = slot.permits.acquire().await else {
            return RunReport::failed(Outcome::Invalid, "runtime is shutting down");
        };
        self.run_prepared(slot, &pre, spec).await
    }

    async fn run_prepared(
        &self,
        slot: &EngineSlot,
        pre: &ProbePre<RunState>,
        spec: &RunSpec,
    ) -> RunReport {
        let cfg = &self.inner.cfg;
        let limits = spec.limits;
        let capture = Capture::new(cfg.max_output_bytes);
        let wasi = WasiCtx::builder()
            .stdout(capture.clone())
            .stderr(capture.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let timeout = Duration::from_millis(u64::from(limits.timeout_ms));
        // Epochs advance while this run is in flight (its wall-clock limit and its yields).
        let _ticking = self.inner.ticker.begin();
        let start = Instant::now();
        let deadline = start + timeout;
        let state = RunState {
            wasi,
            table: ResourceTable::new(),
            limiter: RunLimiter::new(limits.memory_mib),
            capture: capture.clone(),
            address: spec.target.address.clone(),
            deadline,
            max_http_body: cfg.max_http_body,
        };
        let mut store = Store::new(&slot.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        if let Some(fuel) = limits.fuel
            && let Err(e) = store.set_fuel(fuel)
        {
            return RunReport::failed(Outcome::Invalid, format!("setting fuel: {e:#}"));
        }
        let timeout_ms = limits.timeout_ms;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineHit(timeout_ms)))
            } else {
                // Yield to the executor every tick, so a spinning guest shares its thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);

        let ctx = Context::from_spec(spec);
        let outcome = {
            let call = async {
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| (Stage::Instantiate, e))?;
                instance
                    .call_run(&mut store, &ctx)
                    .await
                    .map_err(|e| (Stage::Call, e))
            };
            tokio::time::timeout(timeout, call).await
        };
        let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        let fuel_used = limits
            .fuel
            .map(|f| f.saturating_sub(store.get_fuel().unwrap_or(0)));
        let memory_hit = store.data().limiter.hit;
        drop(store);

        let (outcome, metrics, message) = match outcome {
            Err(_) => (
                Outcome::Timeout,
                BTreeMap::new(),
                format!(
                    "wall-clock limit of {timeout_ms} ms passed (the probe was blocked or sleeping)"
                ),
            ),
            Ok(Err((stage, e))) => {
                let (o, m) = classify_error(stage, &e, memory_hit, capture.overflowed(), &capture);
                (o, BTreeMap::new(), m)
            }
            Ok(Ok(Err(failure))) => classify_failure(failure),
            Ok(Ok(Ok(report))) => self.check_report(report),
        };
        RunReport {
            outcome,
            metrics,
            duration_ms,
            fuel_used,
            message,
            stderr: capture.text(),
        }
    }

    fn check_report(&self, report: Report) -> (Outcome, BTreeMap<String, f64>, String) {
        let cfg = &self.inner.cfg;
        let fail = |o, m: String| (o, BTreeMap::new(), m);
        if report.metrics.len() > cfg.max_metrics {
            return fail(
                Outcome::OutputLimit,
                format!(
                    "{} metrics reported, at most {} allowed",
                    report.metrics.len(),
                    cfg.max_metrics
                ),
            );
        }
        let mut metrics = BTreeMap::new();
        for m in report.metrics {
            if m.name.len() > cfg.max_metric_name {
                return fail(
                    Outcome::OutputLimit,
                    format!(
                        "metric name of {} bytes, at most {} allowed",
                        m.name.len(),
                        cfg.max_metric_name
                    ),
                );
            }
            if m.name.is_empty()
                || !m
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return fail(
                    Outcome::Broken,
                    format!(
                        "invalid metric name {:?}: use kebab-case ASCII, e.g. \"latency-ms\"",
                        m.name
                    ),
                );
            }
            if !m.value.is_finite() {
                return fail(
                    Outcome::Broken,
                    format!("metric {:?} is not a finite number ({})", m.name, m.value),
                );
            }
            if metrics.insert(m.name.clone(), m.value).is_some() {
                return fail(
                    Outcome::Broken,
                    format!("metric {:?} reported twice", m.name),
                );
            }
        }
        (Outcome::Ok, metrics, String::new())
    }
}

fn classify_failure(failure: Failure) -> (Outcome, BTreeMap<String, f64>, String) {
    let (outcome, msg) = match failure {
        Failure::Unhealthy(m) => (Outcome::Unhealthy, m),
        Failure::Broken(m) => (Outcome::Broken, m),
    };
    if msg.len() > MAX_MESSAGE {
        return (
            Outcome::OutputLimit,
            BTreeMap::new(),
            format!(
                "failure message of {} bytes, at most {MAX_MESSAGE} allowed",
                msg.len()
            ),
        );
    }
    (outcome, BTreeMap::new(), msg)
}

/// Most bytes a guest may hand the host in one host call or in its result (wasmtime's
/// hostcall fuel, 128 MiB by default): far more than a report of `max_metrics` names of
/// `max_metric_name` bytes, and a bound on what one run makes the host allocate.
const HOSTCALL_FUEL: usize = 16 << 20;

/// How wasmtime words a host call or result over [`HOSTCALL_FUEL`] (its error type is
/// private).
const HOSTCALL_COPY_LIMIT: &str = "too much data is being copied between the host and the guest";

fn classify_error(
    stage: Stage,
    e: &wasmtime::Error,
    memory_hit: bool,
    output_overflowed: bool,
    capture: &Capture,
) -> (Outcome, String) {
    if let Some(hit) = e.downcast_ref::<MemoryLimitHit>() {
        return (Outcome::MemoryLimit, hit.to_string());
    }
    if memory_hit {
        return (
            Outcome::MemoryLimit,
            format!("memory limit reached: {}", first_line(e)),
        );
    }
    if let Some(hit) = e.downcast_ref::<TableLimitHit>() {
        return (Outcome::MemoryLimit, hit.to_string());
    }
    if let Some(hit) = e.downcast_ref::<OutputLimitHit>() {
        return (Outcome::OutputLimit, hit.to_string());
    }
    if output_overflowed {
        return (
            Outcome::OutputLimit,
            format!("output limit reached: {}", first_line(e)),
        );
    }
    if let Some(hit) = e.downcast_ref::<DeadlineHit>() {
        return (Outcome::Timeout, hit.to_string());
    }
    if format!("{e:#}").contains(HOSTCALL_COPY_LIMIT) {
        return (
            Outcome::OutputLimit,
            format!(
                "the probe handed the host more than {} MiB in one call or result (e.g. many metrics whose names share one buffer)",
                HOSTCALL_FUEL >> 20
            ),
        );
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => (Outcome::FuelExhausted, "all fuel consumed".into()),
            Trap::Interrupt => (Outcome::Timeout, "interrupted at its deadline".into()),
            _ => {
                let panic = panic_line(&capture.text());
                let msg = match panic {
                    Some(p) => format!("wasm trap: {trap}; {p}"),
                    None => format!("wasm trap: {trap}"),
                };
                (Outcome::Trap, msg)
            }
        };
    }
    match stage {
        Stage::Instantiate => (
            Outcome::Invalid,
            format!("failed to instantiate: {}", first_line(e)),
        ),
        Stage::Call => (Outcome::Trap, first_line(e)),
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_MESSAGE)
        .collect()
}

/// The guest's panic message, if its stderr has one.
fn panic_line(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let at = lines.position(|l| l.contains("panicked at"))?;
    let detail = stderr.lines().nth(at + 1).unwrap_or_default();
    Some(
        format!("{} {}", stderr.lines().nth(at)?.trim(), detail.trim())
            .chars()
            .take(512)
            .collect(),
    )
}
