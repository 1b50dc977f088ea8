//! The runtime's configuration: pool sizes, per-run caps and the compiled cache.
use std::path::PathBuf;

/// How a [`crate::Runtime`] is sized. The defaults suit an agent running a few dozen
/// probes; every limit of a single run comes from its [`crate::RunSpec`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Runs at once (pooling-allocator slots per engine); further runs wait for a slot.
    pub max_concurrent_runs: u32,
    /// The largest `memory_mib` a run may ask for; each pool slot reserves this much
    /// virtual memory.
    pub max_memory_mib: u32,
    /// Where precompiled components are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most metrics one run may report.
    pub max_metrics: usize,
    /// Longest metric name, in bytes.
    pub max_metric_name: usize,
    /// Bytes of stdout + stderr + host `log` captured per run; more is `output_limit`.
    pub max_output_bytes: usize,
    /// Largest HTTP response body the host `http` function reads, in bytes.
    pub max_http_body: usize,
    /// Epoch tick, in ms: the granularity of CPU-bound deadlines.
    pub epoch_tick_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_runs: 32,
            max_memory_mib: 512,
            cache_dir: None,
            max_metrics: 256,
            max_metric_name: 64,
            max_output_bytes: 64 * 1024,
            max_http_body: 1024 * 1024,
            epoch_tick_ms: 5,
        }
    }
}

impl RuntimeConfig {
    pub(crate) fn validate(&self) -> Result<(), crate::RuntimeError> {
        let bad = |m: &str| Err(crate::RuntimeError::Config(m.to_string()));
        if self.max_concurrent_runs == 0 || self.max_concurrent_runs > 10_000 {
            return bad("max_concurrent_runs must be in 1..=10000");
        }
        if self.max_memory_mib == 0 || self.max_memory_mib > 4096 {
            return bad("max_memory_mib must be in 1..=4096");
        }
        if self.epoch_tick_ms == 0 {
            return bad("epoch_tick_ms must be positive");
        }
        Ok(())
    }
}
