//! Sample probe `cpu-bench`: the time a fixed unit of CPU work takes on the node.
//!
//! The unit is `rounds` rounds of a 64-bit multiply/rotate/xor mix over four
//! lanes (integer ALU and multiplier, no memory traffic). It is repeated
//! `repeats` times; the median and the fastest repeat are reported, so one
//! preemption does not swing the result.
//!
//! Config: `rounds` (default 200000, 1..=100000000), `repeats` (default 3, 1..=50).
//! Metrics: `cpu-work-ms` (median repeat), `cpu-work-min-ms` (fastest repeat),
//! `cpu-ops-per-ms` (rounds per millisecond of the median repeat).

use std::hint::black_box;
use std::time::Instant;

use plb_guest_sdk::{Context, Failure, Probe, Report, export_probe};

struct CpuBench;

/// One unit of work: `rounds` rounds of mixing; returns a checksum so that the
/// optimiser cannot drop the work.
fn work(rounds: u64, seed: u64) -> u64 {
    let mut lanes = [
        seed ^ 0x9e37_79b9_7f4a_7c15,
        seed.wrapping_add(0xbf58_476d_1ce4_e5b9),
        seed.rotate_left(17) ^ 0x94d0_49bb_1331_11eb,
        !seed,
    ];
    for round in 0..rounds {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let x = lane.wrapping_add(round).wrapping_mul(0x2545_f491_4f6c_dd1d);
            *lane = (x ^ (x >> 29)).rotate_left(13 + i as u32);
        }
        lanes.rotate_left(1);
    }
    lanes.iter().fold(0, |acc, lane| acc ^ lane)
}

fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

impl Probe for CpuBench {
    fn run(ctx: Context) -> Result<Report, Failure> {
        let rounds: u64 = ctx.config_parse("rounds", 200_000)?;
        let repeats: usize = ctx.config_parse("repeats", 3)?;
        if !(1..=100_000_000).contains(&rounds) {
            return Err(Failure::broken(format!(
                "config `rounds`: {rounds} is outside 1..=100000000"
            )));
        }
        if !(1..=50).contains(&repeats) {
            return Err(Failure::broken(format!(
                "config `repeats`: {repeats} is outside 1..=50"
            )));
        }

        let mut times_ms = Vec::with_capacity(repeats);
        let mut checksum = 0u64;
        for repeat in 0..repeats {
            let start = Instant::now();
            checksum ^= work(black_box(rounds), black_box(repeat as u64));
            times_ms.push(start.elapsed().as_secs_f64() * 1_000.0);
        }
        black_box(checksum);

        let min_ms = times_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let median = median_ms(&mut times_ms);
        // A clock too coarse to see the work would give 0 ms: report the
        // resolution floor rather than an infinite rate.
        let per_ms = rounds as f64 / median.max(1e-6);
        Ok(Report::new()
            .metric("cpu-work-ms", median)
            .metric("cpu-work-min-ms", min_ms)
            .metric("cpu-ops-per-ms", per_ms))
    }
}

export_probe!(CpuBench);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_deterministic_and_depends_on_its_inputs() {
        assert_eq!(work(1000, 1), work(1000, 1));
        assert_ne!(work(1000, 1), work(1000, 2));
        assert_ne!(work(1000, 1), work(1001, 1));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median_ms(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_ms(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn reports_three_metrics_and_rejects_bad_config() {
        let ctx = Context::new("n", "127.0.0.1:1", 1_000).with_config("rounds", "1000");
        let report = CpuBench::run(ctx).expect("runs");
        assert!(report.get("cpu-work-ms").is_some_and(|v| v >= 0.0));
        assert!(report.get("cpu-ops-per-ms").is_some_and(|v| v > 0.0));
        let ctx = Context::new("n", "127.0.0.1:1", 1_000).with_config("rounds", "0");
        assert!(matches!(CpuBench::run(ctx), Err(Failure::Broken(_))));
    }
}
