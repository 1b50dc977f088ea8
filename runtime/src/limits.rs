//! Per-run resource limits: a `ResourceLimiter` that caps linear memory across all of a
//! component's memories and records a hit, so a memory bomb is classified as
//! `memory_limit` rather than as the allocation-failure trap it would otherwise become.
use wasmtime::ResourceLimiter;

/// The trap raised when a guest grows memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit: the probe tried to grow its memory to {wanted_mib:.1} MiB, past its limit of {limit_mib} MiB"
)]
pub(crate) struct MemoryLimitHit {
    pub wanted_mib: f64,
    pub limit_mib: u32,
}

/// The trap raised when a guest grows a table past its limit.
#[derive(Debug, thiserror::Error)]
#[error("table limit: the probe tried to grow a table to {0} elements")]
pub(crate) struct TableLimitHit(pub usize);

pub(crate) struct RunLimiter {
    limit_bytes: usize,
    limit_mib: u32,
    /// Bytes of linear memory across every memory of the run.
    total: usize,
    pub hit: bool,
}

const MAX_TABLE_ELEMENTS: usize = 100_000;
const MAX_INSTANCES: usize = 64;

impl RunLimiter {
    pub(crate) fn new(memory_mib: u32) -> Self {
        RunLimiter {
            limit_bytes: (memory_mib as usize) << 20,
            limit_mib: memory_mib,
            total: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let wanted = self.total.saturating_add(growth);
        if wanted > self.limit_bytes {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryLimitHit {
                wanted_mib: wanted as f64 / (1024.0 * 1024.0),
                limit_mib: self.limit_mib,
            }));
        }
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.total = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(TableLimitHit(desired)));
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_INSTANCES
    }
    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_memory_and_records_the_hit() {
        let mut l = RunLimiter::new(1);
        assert!(l.memory_growing(0, 600 << 10, None).expect("fits"));
        assert!(l.memory_growing(0, 300 << 10, None).expect("fits"));
        assert!(l.memory_growing(300 << 10, 500 << 10, None).is_err());
        assert!(l.hit);
    }
}
