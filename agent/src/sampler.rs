//! The built-in node sampler: load average, CPU and memory use of the node (via
//! `sysinfo`), reported for each pool as samples of the reserved probe
//! [`plb_api::NODE_SAMPLER_PROBE`], so forecasts have context before any probe exists.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plb_api::{NODE_SAMPLER_PROBE, Outcome, Sample};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tokio::sync::watch;

use crate::reporter::Outbox;

/// One reading of the node, in plain numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// CPU use across all cores since the previous reading, 0..=100.
    pub cpu_percent: f64,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory, bytes.
    pub memory_total: u64,
    /// Memory available to new work, bytes.
    pub memory_available: u64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The sample metrics of a reading (kebab-case names, unit last). Non-finite values
/// are left out, so a bad reading never sends NaN.
pub fn node_metrics(r: &Reading) -> BTreeMap<String, f64> {
    let used = r.memory_total.saturating_sub(r.memory_available);
    let used_percent = if r.memory_total > 0 {
        used as f64 * 100.0 / r.memory_total as f64
    } else {
        f64::NAN
    };
    let cpus = r.cpus.max(1) as f64;
    [
        ("load-1m", r.load[0]),
        ("load-5m", r.load[1]),
        ("load-15m", r.load[2]),
        ("load-per-cpu-1m", r.load[0] / cpus),
        ("cpu-percent", r.cpu_percent),
        ("cpu-count", r.cpus as f64),
        ("memory-used-percent", used_percent),
        ("memory-used-mib", used as f64 / MIB),
        ("memory-available-mib", r.memory_available as f64 / MIB),
        ("memory-total-mib", r.memory_total as f64 / MIB),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_finite())
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The samples of one reading: one per pool, all with the same time.
pub fn node_samples(
    pools: &[String],
    metrics: &BTreeMap<String, f64>,
    taken_at_ms: i64,
    duration_ms: f64,
) -> Vec<Sample> {
    pools
        .iter()
        .map(|pool| Sample {
            id: uuid::Uuid::now_v7().to_string(),
            pool: pool.clone(),
            probe: NODE_SAMPLER_PROBE.to_string(),
            version: 0,
            taken_at_ms,
            outcome: Outcome::Ok,
            metrics: metrics.clone(),
            duration_ms,
            fuel_used: None,
            message: String::new(),
            stderr: String::new(),
        })
        .collect()
}

fn refresh_kind() -> RefreshKind {
    RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
        .with_memory(MemoryRefreshKind::nothing().with_ram())
}

fn read(sys: &mut System) -> Reading {
    sys.refresh_specifics(refresh_kind());
    let load = System::load_average();
    Reading {
        load: [load.one, load.five, load.fifteen],
        cpu_percent: f64::from(sys.global_cpu_usage()),
        cpus: sys.cpus().len(),
        memory_total: sys.total_memory(),
        memory_available: sys.available_memory(),
    }
}

/// Samples the node every `every` until `stop` turns true.
pub async fn run(
    pools: Vec<String>,
    every: Duration,
    outbox: Arc<Outbox>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sys = System::new_with_specifics(refresh_kind());
    // Random phase, like probes: a fleet does not sample in lockstep.
    let phase = every.mul_f64(rand::random::<f64>());
    let mut next = tokio::time::Instant::now() + phase.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        next += every;
        let started = std::time::Instant::now();
        let taken_at_ms = crate::unix_ms();
        let reading = read(&mut sys);
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        for s in node_samples(&pools, &node_metrics(&reading), taken_at_ms, duration_ms) {
            outbox.push(s).await;
        }
        let now = tokio::time::Instant::now();
        if next < now {
            next = now + every;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_and_finite() {
        let r = Reading {
            load: [1.5, 1.0, 0.5],
            cpu_percent: 37.5,
            cpus: 2,
            memory_total: 4 << 30,
            memory_available: 1 << 30,
        };
        let m = node_metrics(&r);
        assert_eq!(m["load-1m"], 1.5);
        assert_eq!(m["load-per-cpu-1m"], 0.75);
        assert_eq!(m["memory-used-percent"], 75.0);
        assert_eq!(m["memory-total-mib"], 4096.0);
        assert_eq!(m["memory-used-mib"], 3072.0);
        let none = node_metrics(&Reading {
            memory_total: 0,
            ..r
        });
        assert!(!none.contains_key("memory-used-percent"));
        assert!(none.values().all(|v| v.is_finite()));
    }

    #[test]
    fn one_sample_per_pool_under_the_reserved_name() {
        let pools = vec!["web".to_string(), "api".to_string()];
        let s = node_samples(&pools, &BTreeMap::from([("load-1m".into(), 1.0)]), 42, 0.1);
        assert_eq!(s.len(), 2);
        assert!(
            s.iter()
                .all(|s| s.probe == NODE_SAMPLER_PROBE && s.version == 0 && s.taken_at_ms == 42)
        );
        assert_ne!(s[0].id, s[1].id);
        assert_eq!(s[1].pool, "api");
    }

    #[test]
    fn reads_this_machine() {
        let mut sys = System::new_with_specifics(refresh_kind());
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let r = read(&mut sys);
        assert!(
            r.cpus >= 1 && r.memory_total > 0 && r.memory_available <= r.memory_total,
            "{r:?}"
        );
        assert!((0.0..=100.0).contains(&r.cpu_percent), "{r:?}");
        assert!(r.load.iter().all(|l| *l >= 0.0));
    }
}
