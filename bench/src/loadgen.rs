//! The open-loop Poisson load: arrival times from the scenario's (possibly time-varying)
//! rate by thinning, shared by the simulator and the live generator. Live, each request
//! is sent at its intended time whatever happened to earlier ones, and its latency is
//! measured from that intended time, so a stalled sender cannot hide queueing
//! (no coordinated omission).
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::scenario::{Scenario, exp_draw};

/// The next arrival after `now`, before the end of the run: candidates at the peak rate,
/// each kept with probability `rate(t) / peak` (exact for a non-homogeneous Poisson
/// process).
pub fn next_arrival<R: Rng + ?Sized>(sc: &Scenario, rng: &mut R, now: f64) -> Option<f64> {
    let peak = sc.max_rate();
    if peak <= 0.0 || !peak.is_finite() {
        return None;
    }
    let mut t = now;
    loop {
        t += exp_draw(rng, peak);
        if t >= sc.duration() {
            return None;
        }
        if rng.random::<f64>() * peak < sc.rate(t) {
            return Some(t);
        }
    }
}

/// Calls `send(t0)` at every arrival's intended time `t0` (seconds after `start`),
/// without waiting for earlier requests; `send` should spawn. Returns the number sent.
/// `tick` is called about once a second with the run time, for progress lines.
pub async fn drive<R, S, Fut>(
    sc: &Scenario,
    rng: &mut R,
    start: Instant,
    mut send: S,
    mut tick: impl FnMut(f64),
) -> u64
where
    R: Rng + ?Sized,
    S: FnMut(f64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sent = 0;
    let mut t = 0.0;
    let mut next_tick = 1.0;
    while let Some(t0) = next_arrival(sc, rng, t) {
        t = t0;
        let at = start + Duration::from_secs_f64(t0);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        tokio::spawn(send(t0));
        sent += 1;
        if t0 >= next_tick {
            tick(t0);
            next_tick = t0.floor() + 1.0;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::scenario::select;

    #[test]
    fn arrivals_follow_the_rate() {
        let def = select("bursts").expect("known")[0];
        let sc = Scenario::new(def, 16, 1, 1.0);
        let mut rng = SmallRng::seed_from_u64(5);
        let (mut quiet, mut burst) = (0u32, 0u32);
        let mut t = 0.0;
        while let Some(t0) = next_arrival(&sc, &mut rng, t) {
            assert!(t0 > t && t0 < sc.duration());
            t = t0;
            if sc.load_at(t0) > 1.0 {
                burst += 1;
            } else {
                quiet += 1;
            }
        }
        // 5 s of bursts at 1.3 and 35 s quiet at 0.65 of 1,600/s.
        let (b, q) = (f64::from(burst) / 5.0, f64::from(quiet) / 35.0);
        assert!((b / 2080.0 - 1.0).abs() < 0.03, "{b}");
        assert!((q / 1040.0 - 1.0).abs() < 0.03, "{q}");
    }

    #[tokio::test(start_paused = true)]
    async fn sends_on_schedule_without_waiting_for_replies() {
        let def = select("homogeneous").expect("known")[0];
        let sc = Scenario::new(def, 2, 1, 0.1);
        let mut rng = SmallRng::seed_from_u64(1);
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sent = drive(
            &sc,
            &mut rng,
            start,
            |t0| {
                let tx = tx.clone();
                async move {
                    // A reply that never comes must not hold back the next send.
                    let _ = tx.send((t0, Instant::now()));
                    std::future::pending::<()>().await;
                }
            },
            |_| {},
        )
        .await;
        drop(tx);
        tokio::task::yield_now().await;
        let mut got = 0;
        while let Ok((t0, at)) = rx.try_recv() {
            let late = (at - start).as_secs_f64() - t0;
            assert!((0.0..0.002).contains(&late), "{late}");
            got += 1;
        }
        // 2 nodes × 100/s × 0.7 for 3 s.
        assert!((300..540).contains(&sent), "{sent}");
        assert_eq!(got, sent);
    }
}
