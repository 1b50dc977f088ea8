//! The wasmtime engines (fuel metering on and off: a precompiled artifact only loads into
//! an engine with the same settings), their linkers, and the epoch ticker thread.
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::Probe as ProbeWorld;
use crate::host::RunState;
use crate::{RuntimeConfig, RuntimeError};

/// One engine with its linker; `metered` says whether it consumes fuel.
pub(crate) struct EngineSlot {
    pub engine: Engine,
    pub linker: Linker<RunState>,
    /// Hex of the engine's precompile-compatibility hash: part of every cache key.
    pub compat: String,
    /// One permit per pool slot: runs wait here instead of failing on a full pool.
    pub permits: tokio::sync::Semaphore,
}

/// What one run (one component instance) may take from its engine's pool at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PerRun {
    /// Core module instances of the component.
    pub core_instances: u32,
    /// Linear memories.
    pub memories: u32,
    /// Tables.
    pub tables: u32,
    /// Fiber stacks (the run's one async call).
    pub stacks: u32,
}

/// The per-run caps, enforced by the pool per component: room for components of other
/// toolchains, which have more core instances than a Rust probe's few.
pub(crate) const PER_RUN: PerRun = PerRun {
    core_instances: 64,
    memories: 8,
    tables: 32,
    stacks: 1,
};

/// The pool's totals: every one of the `runs` runs admitted at once (the slot's
/// semaphore) at its per-run caps, so no run, however greedy, can exhaust the pool and
/// make another probe's instantiation fail and be blamed on it.
pub(crate) fn pool_totals(runs: u32) -> PerRun {
    PerRun {
        core_instances: runs.saturating_mul(PER_RUN.core_instances),
        memories: runs.saturating_mul(PER_RUN.memories),
        tables: runs.saturating_mul(PER_RUN.tables),
        stacks: runs.saturating_mul(PER_RUN.stacks),
    }
}

impl EngineSlot {
    pub(crate) fn new(cfg: &RuntimeConfig, metered: bool) -> Result<Self, RuntimeError> {
        let runs = cfg.max_concurrent_runs;
        let totals = pool_totals(runs);
        let mut pool = PoolingAllocationConfig::new();
        // Each memory slot is a virtual reservation of `max_memory_mib` plus its guard,
        // not resident memory: 32 runs x 8 memories x 514 MiB is 128 GiB of address
        // space per engine.
        pool.total_component_instances(runs)
            .total_core_instances(totals.core_instances)
            .total_memories(totals.memories)
            .total_tables(totals.tables)
            .total_stacks(totals.stacks)
            .max_core_instances_per_component(PER_RUN.core_instances)
            .max_memories_per_component(PER_RUN.memories)
            .max_tables_per_component(PER_RUN.tables)
            .max_memory_size((cfg.max_memory_mib as usize) << 20)
            .table_elements(100_000)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20)
            .max_unused_warm_slots(runs.min(16));

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(metered)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Smaller reservations than the 4 GiB default keep the pool's virtual
            // footprint proportional to the configured memory limit.
            .memory_reservation((cfg.max_memory_mib as u64) << 20)
            .memory_guard_size(2 << 20)
            .memory_reservation_for_growth(0)
            .max_wasm_stack(1 << 20)
            .async_stack_size(2 << 20);
        let engine = Engine::new(&config).map_err(RuntimeError::engine)?;

        let mut linker = Linker::new(&engine);
        // Every WASI p2 interface is linked (a componentize-py probe imports sockets even
        // if it never uses them); what a probe may actually do is decided per run by its
        // WasiCtx, which grants nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(RuntimeError::engine)?;
        ProbeWorld::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(RuntimeError::engine)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        Ok(EngineSlot {
            engine,
            linker,

            compat,
            permits: tokio::sync::Semaphore::new(runs as usize),
        })
    }
}

/// The epoch ticker's switch: it ticks only while a run is in flight (an idle agent
/// would otherwise wake it 200 times a second for nothing).
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    /// Runs in flight.
    active: AtomicUsize,
    /// The ticker thread, to wake when the first run starts.
    thread: OnceLock<std::thread::Thread>,
}

/// A run in flight: the ticker ticks until every such guard is dropped.
pub(crate) struct Ticking<'a>(&'a Ticker);

impl Ticker {
    /// Counts a run in flight (waking the ticker if it was the only one).
    pub(crate) fn begin(&self) -> Ticking<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Ticking(self)
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Increments the engines' epochs every tick while `ticker` counts a run in flight,
/// until every engine is dropped. While none runs it sleeps (a run that starts wakes it;
/// it looks every second whether the engines are gone).
pub(crate) fn start_ticker(engines: Vec<Weak<EngineSlot>>, tick: Duration, ticker: Arc<Ticker>) {
    let spawned = std::thread::Builder::new()
        .name("plb-epoch-ticker".into())
        .spawn({
            let ticker = Arc::clone(&ticker);
            move || {
                loop {
                    if ticker.active.load(Ordering::Acquire) == 0 {
                        std::thread::park_timeout(Duration::from_secs(1));
                    } else {
                        std::thread::sleep(tick);
                    }
                    let mut alive = false;
                    for slot in engines.iter().filter_map(Weak::upgrade) {
                        slot.engine.increment_epoch();
                        alive = true;
                    }
                    if !alive {
                        return;
                    }
                }
            }
        });
    match spawned {
        Ok(handle) => {
            let _ = ticker.thread.set(handle.thread().clone());
            // A run that started before the handle was known is ticked for from now.
            handle.thread().unpark();
        }
        Err(e) => tracing::error!(
            "could not start the epoch ticker: {e}; CPU-bound probes are stopped by fuel and timeouts only"
        ),
    }
}

/// Shorthand for the engines of a runtime.
pub(crate) type Slots = [Arc<EngineSlot>; 2];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every run the semaphore admits, each at every per-run cap, fits in the pool at
    /// once (it did not: 16 core instances, 4 memories and 16 tables per run in the
    /// pool against 64, 8 and 32 allowed to one component).
    #[test]
    fn the_pool_holds_every_admitted_run_at_its_caps() {
        for runs in [1, 2, 16, 32, 1000] {
            let t = pool_totals(runs);
            assert!(t.core_instances >= runs * PER_RUN.core_instances, "{t:?}");
            assert!(t.memories >= runs * PER_RUN.memories, "{t:?}");
            assert!(t.tables >= runs * PER_RUN.tables, "{t:?}");
            assert!(t.stacks >= runs * PER_RUN.stacks, "{t:?}");
        }
    }
}
