//! Sample probe `memory-bench`: memory bandwidth (sequential copy) and latency (pointer chasing).
//!
//! Bandwidth: copy a buffer of `size-kib` KiB into another `passes` times and
//! divide the bytes copied by the time. Latency: follow a random cyclic
//! permutation (Sattolo's algorithm, fixed seed) over a buffer of `size-kib`
//! KiB for `chase-steps` dependent loads, so that each load waits for the one
//! before; the time per load is the latency. A buffer larger than the CPU's
//! caches measures DRAM; a small one measures a cache level.
//!
//! Config: `size-kib` (default 4096, 4..=262144), `passes` (default 4, 1..=1000),
//! `chase-steps` (default 200000, 1..=100000000).
//! Metrics: `mem-bandwidth-mib-per-s`, `mem-latency-ns`, `mem-buffer-kib`.
//! The probe needs about 2 × `size-kib` of memory plus a little: keep the
//! probe's memory limit above that.

use std::hint::black_box;
use std::time::Instant;

use plb_guest_sdk::{Context, Failure, Probe, Report, export_probe};

struct MemoryBench;

/// A small deterministic generator (xorshift64*), so every run chases the same cycle.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound` > 0); the small modulo bias does not matter here.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// One cycle through all of `0..len` (Sattolo's algorithm): `next[i]` is the
/// index visited after `i`.
fn random_cycle(len: usize, seed: u64) -> Vec<u32> {
    let mut next: Vec<u32> = (0..len as u32).collect();
    let mut rng = XorShift(seed | 1);
    for i in (1..len).rev() {
        let j = rng.below(i);
        next.swap(i, j);
    }
    next
}

/// Follow `steps` links from index 0; returns where it ended.
fn chase(next: &[u32], steps: u64) -> u32 {
    let mut at = 0u32;
    for _ in 0..steps {
        at = next[at as usize];
    }
    at
}

fn bandwidth_mib_per_s(size: usize, passes: u32) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31)).collect();
    let mut dst = vec![0u8; size];
    // One untimed pass so that both buffers are mapped and warm.
    dst.copy_from_slice(&src);
    let start = Instant::now();
    for pass in 0..passes {
        let (src, dst) = (black_box(&src), black_box(&mut dst));
        dst.copy_from_slice(src);
        dst[pass as usize % size] ^= 1;
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    black_box(&dst);
    let mib = size as f64 * f64::from(passes) / (1024.0 * 1024.0);
    mib / seconds
}

fn latency_ns(size: usize, steps: u64) -> f64 {
    let len = (size / std::mem::size_of::<u32>()).max(2);
    let next = random_cycle(len, 0x5eed_cafe);
    // Warm up: walk the cycle once (bounded by `steps`).
    black_box(chase(&next, (len as u64).min(steps)));
    let start = Instant::now();
    let end = chase(black_box(&next), black_box(steps));
    let nanos = start.elapsed().as_secs_f64() * 1e9;
    black_box(end);
    nanos / steps as f64
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, Failure> {
    if value < lo || value > hi {
        return Err(Failure::broken(format!(
            "config `{key}`: {value} is outside {lo}..={hi}"
        )));
    }
    Ok(value)
}

impl Probe for MemoryBench {
    fn run(ctx: Context) -> Result<Report, Failure> {
        let size_kib = in_range(
            "size-kib",
            ctx.config_parse("size-kib", 4096usize)?,
            4,
            262_144,
        )?;
        let passes = in_range("passes", ctx.config_parse("passes", 4u32)?, 1, 1_000)?;
        let steps = in_range(
            "chase-steps",
            ctx.config_parse("chase-steps", 200_000u64)?,
            1,
            100_000_000,
        )?;
        let size = size_kib * 1024;

        let bandwidth = bandwidth_mib_per_s(size, passes);
        let latency = latency_ns(size, steps);
        Ok(Report::new()
            .metric("mem-bandwidth-mib-per-s", bandwidth)
            .metric("mem-latency-ns", latency)
            .metric("mem-buffer-kib", size_kib as f64))
    }
}

export_probe!(MemoryBench);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_cycle_visits_every_index_once() {
        let next = random_cycle(1000, 42);
        let mut seen = vec![false; next.len()];
        let mut at = 0usize;
        for _ in 0..next.len() {
            assert!(!seen[at], "index {at} visited twice");
            seen[at] = true;
            at = next[at] as usize;
        }
        assert_eq!(at, 0, "the walk is one cycle back to the start");
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn reports_positive_figures_and_rejects_bad_config() {
        let ctx = Context::new("n", "127.0.0.1:1", 5_000)
            .with_config("size-kib", "64")
            .with_config("chase-steps", "10000");
        let report = MemoryBench::run(ctx).expect("runs");
        assert!(
            report
                .get("mem-bandwidth-mib-per-s")
                .is_some_and(|v| v > 0.0)
        );
        assert!(report.get("mem-latency-ns").is_some_and(|v| v > 0.0));
        let ctx = Context::new("n", "127.0.0.1:1", 5_000).with_config("size-kib", "1");
        assert!(matches!(MemoryBench::run(ctx), Err(Failure::Broken(_))));
    }
}
