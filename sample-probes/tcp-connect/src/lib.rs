//! Sample probe `tcp-connect`: the time to open a TCP connection to the node.
//!
//! Config: `timeout-ms` (default 1000, per attempt, capped by what is left of
//! the run's budget), `attempts` (default 3, 1..=100).
//! Metrics: `tcp-connect-ms` (median of the successful attempts),
//! `tcp-connect-min-ms`, `tcp-connect-max-ms`, `tcp-connect-failures-count`.
//! When every attempt fails (refused, timed out) the run is `Unhealthy`.

use plb_guest_sdk::{Context, Failure, Probe, Report, export_probe, tcp_connect};

struct TcpConnect;

fn median(samples: &mut [f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    Some(if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    })
}

impl Probe for TcpConnect {
    fn run(ctx: Context) -> Result<Report, Failure> {
        let attempts: u32 = ctx.config_parse("attempts", 3)?;
        if !(1..=100).contains(&attempts) {
            return Err(Failure::broken(format!(
                "config `attempts`: {attempts} is outside 1..=100"
            )));
        }
        let timeout_ms: u32 = ctx.config_parse("timeout-ms", 1_000)?;
        if timeout_ms == 0 {
            return Err(Failure::broken("config `timeout-ms`: must be at least 1"));
        }

        let mut times = Vec::with_capacity(attempts as usize);
        let mut last_error = None;
        for _ in 0..attempts {
            let timeout = timeout_ms.min(ctx.remaining_ms().max(1));
            match tcp_connect(timeout) {
                Ok(ms) => times.push(ms),
                Err(e) => last_error = Some(e),
            }
        }
        let failures = attempts as usize - times.len();
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match (median(&mut times), last_error) {
            (Some(median), _) => Ok(Report::new()
                .metric("tcp-connect-ms", median)
                .metric("tcp-connect-min-ms", min)
                .metric("tcp-connect-max-ms", max)
                .metric("tcp-connect-failures-count", failures as f64)),
            (None, Some(error)) => Err(Failure::unhealthy(format!(
                "all {attempts} attempts failed, the last with {error}"
            ))),
            (None, None) => Err(Failure::broken("no attempt was made")),
        }
    }
}

export_probe!(TcpConnect);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_cases() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5.0]), Some(5.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }

    #[test]
    fn bad_config_is_broken_and_no_connection_is_unhealthy() {
        let ctx = Context::new("n", "127.0.0.1:1", 1_000).with_config("attempts", "0");
        assert!(matches!(TcpConnect::run(ctx), Err(Failure::Broken(_))));
        let ctx = Context::new("n", "127.0.0.1:1", 1_000).with_config("timeout-ms", "x");
        assert!(matches!(TcpConnect::run(ctx), Err(Failure::Broken(_))));
        let ctx = Context::new("n", "127.0.0.1:1", 1_000);
        match TcpConnect::run(ctx) {
            Err(Failure::Unhealthy(m)) => assert!(m.starts_with("all 3 attempts failed"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
