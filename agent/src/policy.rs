//! Pure timing policy: run-time jitter and phase, catching up after delays, the tier
//! budget and retry backoff. No I/O and no clock: time and randomness are parameters.
use std::time::Duration;

use plb_api::Tier;
use tokio::time::Instant;

/// Each run moves by up to this fraction of its interval, either way.
pub const JITTER_FRACTION: f64 = 0.1;
/// ... but never by more than this.
pub const MAX_JITTER: Duration = Duration::from_secs(5);

/// Clamps a "uniform in [0, 1)" draw into range, so a bad draw cannot break the maths.
fn unit(u: f64) -> f64 {
    if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.5
    }
}

/// The first anchor of a newly assigned probe: a random phase within one interval,
/// so that agents started together do not probe their nodes in lockstep.
pub fn first_anchor(now: Instant, interval: Duration, u: f64) -> Instant {
    now + interval.mul_f64(unit(u))
}

/// When a run anchored at `anchor` actually starts: moved by a jitter of up to
/// [`JITTER_FRACTION`] of the interval (at most [`MAX_JITTER`]) either way. Anchors
/// stay on the unjittered grid, so jitter never accumulates into drift.
pub fn jittered(anchor: Instant, interval: Duration, u: f64) -> Instant {
    let span = interval.mul_f64(JITTER_FRACTION).min(MAX_JITTER);
    let offset = span.mul_f64(2.0 * unit(u));
    // anchor - span + offset, without going below what Instant can represent.
    match (anchor + offset).checked_sub(span) {
        Some(t) => t,
        None => anchor,
    }
}

/// The anchor after `anchor`: one interval later, unless that is already more than a
/// whole interval in the past (the agent was stalled or suspended), in which case the
/// missed runs are skipped and the schedule restarts at `now`. Returns the new anchor
/// and how many runs were skipped.
pub fn next_anchor(anchor: Instant, interval: Duration, now: Instant) -> (Instant, u64) {
    let next = anchor + interval;
    if next + interval > now || interval.is_zero() {
        return (next, 0);
    }
    let behind = now.saturating_duration_since(next);
    let missed = (behind.as_nanos() / interval.as_nanos().max(1)) as u64;
    (now, missed)
}

/// The next anchor after the probe's interval changed to `new`: one new interval after
/// the last run started (`last`), and never in the past, so a shorter interval takes
/// effect at once and a longer one counts from the last run.
pub fn retimed_anchor(last: Instant, new: Duration, now: Instant) -> Instant {
    (last + new).max(now)
}

/// How many runs of each tier may run at once. Deep probes get at most `deep_max`
/// slots, so at least `total - deep_max` (one or more) are always left for quick
/// probes, which may use every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Runs at once, both tiers.
    pub total: u32,
    /// Deep runs at once.
    pub deep_max: u32,
}

impl Budget {
    /// Half the slots (at least one, and never all of them when there are two or
    /// more) may run deep probes.
    pub fn new(total: u32) -> Budget {
        let total = total.max(1);
        let deep_max = if total == 1 { 1 } else { (total / 2).max(1) };
        Budget { total, deep_max }
    }

    /// Whether a run of `tier` may start while `quick` and `deep` runs are in flight.
    pub fn admits(&self, tier: Tier, quick: u32, deep: u32) -> bool {
        if quick.saturating_add(deep) >= self.total {
            return false;
        }
        match tier {
            Tier::Quick => true,
            Tier::Deep => deep < self.deep_max,
        }
    }
}

/// Exponential backoff with "equal jitter": the ceiling doubles from `base` per failed
/// attempt up to `cap`, and the wait is uniform in the upper half of it, so retries
/// spread out yet never come back-to-back.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, u: f64) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    ceiling / 2 + (ceiling / 2).mul_f64(unit(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn phase_is_within_one_interval() {
        let now = Instant::now();
        assert_eq!(first_anchor(now, ms(1000), 0.0), now);
        assert_eq!(first_anchor(now, ms(1000), 0.5), now + ms(500));
        assert!(first_anchor(now, ms(1000), 0.999_999) < now + ms(1000));
        assert_eq!(first_anchor(now, ms(1000), f64::NAN), now + ms(500));
    }

    #[test]
    fn jitter_is_bounded_and_centred() {
        let t = Instant::now() + ms(100_000);
        assert_eq!(jittered(t, ms(1000), 0.0), t - ms(100));
        assert_eq!(jittered(t, ms(1000), 0.5), t);
        assert_eq!(jittered(t, ms(1000), 1.0), t + ms(100));
        // capped for long intervals
        assert_eq!(jittered(t, ms(600_000), 1.0), t + MAX_JITTER);
        assert_eq!(jittered(t, ms(600_000), 0.0), t - MAX_JITTER);
    }

    #[test]
    fn anchors_do_not_drift_and_skip_long_stalls() {
        let t0 = Instant::now();
        // On time or slightly late: exactly one interval on.
        assert_eq!(next_anchor(t0, ms(1000), t0 + ms(10)), (t0 + ms(1000), 0));
        assert_eq!(next_anchor(t0, ms(1000), t0 + ms(1500)), (t0 + ms(1000), 0));
        // Stalled for 3.5 intervals: the missed runs are skipped, restart now.
        let now = t0 + ms(4500);
        assert_eq!(next_anchor(t0, ms(1000), now), (now, 3));
    }

    #[test]
    fn interval_changes_count_from_the_last_run() {
        let t0 = Instant::now(); // the last run started at t0
        // Shortened to 1 s at t0 + 300 ms: next run at t0 + 1 s.
        assert_eq!(retimed_anchor(t0, ms(1000), t0 + ms(300)), t0 + ms(1000));
        // Shortened at t0 + 5 s: due now, not in the past.
        assert_eq!(retimed_anchor(t0, ms(1000), t0 + ms(5000)), t0 + ms(5000));
        // Lengthened: from the last run.
        assert_eq!(
            retimed_anchor(t0, ms(30_000), t0 + ms(5000)),
            t0 + ms(30_000)
        );
    }

    #[test]
    fn deep_probes_never_take_the_quick_reserve() {
        for total in 2..20 {
            let b = Budget::new(total);
            assert!(b.deep_max >= 1 && b.deep_max < total, "{b:?}");
            // Deep fills what it may: quick still gets in.
            let deep = (0..).take_while(|d| b.admits(Tier::Deep, 0, *d)).count() as u32;
            assert_eq!(deep, b.deep_max);
            assert!(b.admits(Tier::Quick, 0, deep));
            // Quick may use every slot; nothing beyond the total.
            assert!(b.admits(Tier::Quick, total - 1, 0));
            assert!(!b.admits(Tier::Quick, total, 0));
            assert!(!b.admits(Tier::Quick, total - deep, deep));
        }
        assert_eq!(
            Budget::new(8),
            Budget {
                total: 8,
                deep_max: 4
            }
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let (base, cap) = (ms(100), ms(5000));
        assert_eq!(backoff(0, base, cap, 0.0), ms(50));
        assert_eq!(backoff(0, base, cap, 1.0), ms(100));
        assert_eq!(backoff(3, base, cap, 1.0), ms(800));
        assert_eq!(backoff(3, base, cap, 0.0), ms(400));
        assert_eq!(backoff(10, base, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, base, cap, 0.0), cap / 2);
        for a in 0..40 {
            let d = backoff(a, base, cap, 0.37);
            assert!(d >= base / 2 && d <= cap, "{a}: {d:?}");
        }
    }
}
