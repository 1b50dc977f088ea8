//! Seasonality of one series: the bounded history kept for period detection, the
//! detection itself (candidate periods of an hour, a day and a week from the sampling
//! interval, scored by how much of the variance a per-phase profile explains), and the
//! online seasonal state the seasonal members read (a coarse additive profile and the
//! last cycle's values).
//!
//! Memory is bounded whatever the period: the profile keeps at most [`MAX_SLOTS`] slots,
//! each the mean of `width = ceil(period / MAX_SLOTS)` consecutive samples (a daily
//! period at 5-minute samples is 288 one-sample slots; at 1-minute samples, 288 slots of
//! 5 samples; a weekly period at 1-minute samples, 288 slots of 35 samples). The history
//! is a ring of [`HISTORY_BLOCKS`] block means whose block width doubles whenever it
//! fills, so it always spans at least half its capacity in blocks and reaches back
//! weeks at a coarser resolution.
use crate::num::{acceptable, clean};

/// Most slots of a seasonal profile (the profile is decimated beyond).
pub const MAX_SLOTS: usize = 288;
/// Blocks kept for period detection.
pub const HISTORY_BLOCKS: usize = 512;
/// Candidate periods in milliseconds: an hour, a day, a week.
pub const CANDIDATE_PERIODS_MS: [f64; 3] = [3_600_000.0, 86_400_000.0, 604_800_000.0];
/// Smallest period, in samples, worth modelling.
const MIN_PERIOD: u64 = 4;
/// Fewest phase buckets a candidate must resolve in the history.
const MIN_BUCKETS: usize = 4;
/// Seasonal strength (share of the within-cycle variance the profile explains, net of
/// what noise alone would explain with so few cycles) a period needs to be adopted.
pub const MIN_STRENGTH: f64 = 0.2;
/// Weight of a slot's newest deviation in the online profile (per cycle).
const GAMMA: f64 = 0.1;
/// Weight, per slot width, of the newest value in the deseasonalised reference level.
const REF_ALPHA: f64 = 0.05;

/// Block means of the series' past, with a block width that doubles when the ring fills.
#[derive(Debug, Clone)]
pub(crate) struct History {
    buf: Box<[f64]>,
    head: usize,
    len: usize,
    /// Samples per block (a power of two).
    width: u64,
    /// Absolute index of the first sample of the oldest block.
    start: u64,
    acc: f64,
    acc_n: u64,
}

impl History {
    pub(crate) fn new() -> History {
        History {
            buf: vec![0.0; HISTORY_BLOCKS].into_boxed_slice(),
            head: 0,
            len: 0,
            width: 1,
            start: 0,
            acc: 0.0,
            acc_n: 0,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        8 * self.buf.len()
    }

    /// Adds the next sample (absolute indices are consecutive from 0).
    pub(crate) fn push(&mut self, y: f64) {
        self.acc += y;
        self.acc_n += 1;
        if self.acc_n < self.width {
            return;
        }
        let v = clean(self.acc / self.acc_n as f64);
        self.acc = 0.0;
        self.acc_n = 0;
        if self.len < self.buf.len() {
            let cap = self.buf.len();
            self.buf[(self.head + self.len) % cap] = v;
            self.len += 1;
            return;
        }
        // Full: halve the resolution, pairs of blocks aligned to the doubled width.
        let mut blocks = self.blocks();
        blocks.push(v);
        if (self.start / self.width) % 2 == 1 {
            blocks.remove(0);
            self.start += self.width;
        }
        let merged: Vec<f64> = blocks
            .chunks_exact(2)
            .map(|p| p[0] / 2.0 + p[1] / 2.0)
            .collect();
        // An unpaired newest block becomes the first half of the block being filled.
        if blocks.len() % 2 == 1 {
            self.acc = blocks[blocks.len() - 1] * self.width as f64;
            self.acc_n = self.width;
        }
        self.width *= 2;
        self.head = 0;
        self.len = merged.len();
        self.buf[..merged.len()].copy_from_slice(&merged);
    }

    /// The complete blocks, oldest first.
    pub(crate) fn blocks(&self) -> Vec<f64> {
        let cap = self.buf.len();
        (0..self.len)
            .map(|i| self.buf[(self.head + i) % cap])
            .collect()
    }

    /// A copy for a refit job: (block means, samples per block, absolute start).
    pub(crate) fn snapshot(&self) -> (Vec<f64>, u64, u64) {
        (self.blocks(), self.width, self.start)
    }
}

/// Candidate periods in samples for a sampling interval, shortest first.
pub fn candidate_periods(step_ms: f64) -> Vec<u64> {
    if !(step_ms.is_finite() && step_ms > 0.0) {
        return Vec::new();
    }
    CANDIDATE_PERIODS_MS
        .iter()
        .map(|p| (p / step_ms).round())
        .filter(|p| p.is_finite() && *p >= MIN_PERIOD as f64 && *p < 1e12)
        .map(|p| p as u64)
        .collect()
}

/// A detected period with its profile, ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonFit {
    /// Samples per cycle.
    pub period: u64,
    /// Share of the within-cycle variance explained by the profile, net of noise (0..1).
    pub strength: f64,
    /// Additive profile (mean 0) at the slot resolution of [`slot_width`].
    pub profile: Vec<f64>,
    /// Level of each slot in the newest cycle seen (for the seasonal naive member).
    pub last_cycle: Vec<f64>,
}

/// Samples per profile slot for a period.
pub fn slot_width(period: u64) -> u64 {
    period.div_ceil(MAX_SLOTS as u64).max(1)
}

fn slot_count(period: u64) -> usize {
    period.div_ceil(slot_width(period)) as usize
}

/// Scores one candidate period over block means (`width` samples per block, the
/// first starting at absolute sample `start`) and builds its profile.
pub fn fit_period(blocks: &[f64], width: u64, start: u64, period: u64) -> Option<SeasonFit> {
    if period < MIN_PERIOD || width == 0 {
        return None;
    }
    let buckets = (period as f64 / width as f64).round() as usize;
    if buckets < MIN_BUCKETS || blocks.len() < 2 * buckets {
        return None;
    }
    let center = |i: usize| start + i as u64 * width + width / 2;
    let bucket =
        |i: usize| (((center(i) % period) as f64 / period as f64) * buckets as f64) as usize;
    // Demean each cycle (so a wandering level is not taken for a season).
    let cycle = |i: usize| center(i) / period;
    let first_cycle = cycle(0);
    let n_cycles = (cycle(blocks.len() - 1) - first_cycle + 1) as usize;
    let mut csum = vec![0.0; n_cycles];
    let mut ccnt = vec![0usize; n_cycles];
    for (i, &v) in blocks.iter().enumerate() {
        let c = (cycle(i) - first_cycle) as usize;
        csum[c] += v;
        ccnt[c] += 1;
    }
    // Cycles seen for less than half their length are left out.
    let keep = |c: usize| ccnt[c] * 2 >= buckets;
    let mut bsum = vec![0.0; buckets];
    let mut bcnt = vec![0usize; buckets];
    let mut demeaned = Vec::with_capacity(blocks.len());
    for (i, &v) in blocks.iter().enumerate() {
        let c = (cycle(i) - first_cycle) as usize;
        if !keep(c) {
            continue;
        }
        let x = v - csum[c] / ccnt[c] as f64;
        let b = bucket(i).min(buckets - 1);
        bsum[b] += x;
        bcnt[b] += 1;
        demeaned.push((b, x));
    }
    let used = demeaned.len();
    if used < 2 * buckets || bcnt.contains(&0) {
        return None;
    }
    let prof: Vec<f64> = bsum.iter().zip(&bcnt).map(|(s, &c)| s / c as f64).collect();
    let (mut ss_tot, mut ss_rem) = (0.0, 0.0);
    for &(b, x) in &demeaned {
        ss_tot += x * x;
        ss_rem += (x - prof[b]).powi(2);
    }
    if ss_tot.is_nan() || ss_tot <= 0.0 {
        return None;
    }
    let raw = 1.0 - ss_rem / ss_tot;
    // With k values per bucket, noise alone explains about 1/k of the variance.
    let per_bucket = used as f64 / buckets as f64;
    let noise = 1.0 / per_bucket;
    let strength = clean(((raw - noise) / (1.0 - noise)).clamp(0.0, 1.0));
    // Profile and last cycle at the slot resolution, interpolated from the buckets.
    let slots = slot_count(period);
    let sw = slot_width(period);
    let at = |table: &[f64], slot: usize| {
        let phase = (slot as f64 + 0.5) * sw as f64 / period as f64 * buckets as f64 - 0.5;
        let lo = phase.floor();
        let frac = phase - lo;
        let i0 = (lo as i64).rem_euclid(buckets as i64) as usize;
        let i1 = (i0 + 1) % buckets;
        table[i0] * (1.0 - frac) + table[i1] * frac
    };
    let mean = prof.iter().sum::<f64>() / buckets as f64;
    let centred: Vec<f64> = prof.iter().map(|p| p - mean).collect();
    let profile: Vec<f64> = (0..slots).map(|s| clean(at(&centred, s))).collect();
    let mut last = vec![f64::NAN; buckets];
    for (i, &v) in blocks.iter().enumerate() {
        last[bucket(i).min(buckets - 1)] = v;
    }
    let fallback = blocks[blocks.len() - 1];
    for v in &mut last {
        if !v.is_finite() {
            *v = fallback;
        }
    }
    let last_cycle: Vec<f64> = (0..slots).map(|s| clean(at(&last, s))).collect();
    Some(SeasonFit {
        period,
        strength,
        profile,
        last_cycle,
    })
}

/// The strongest candidate period over the history, if any is strong enough.
pub fn detect(blocks: &[f64], width: u64, start: u64, candidates: &[u64]) -> Option<SeasonFit> {
    candidates
        .iter()
        .filter_map(|&p| fit_period(blocks, width, start, p))
        .filter(|f| f.strength >= MIN_STRENGTH)
        .max_by(|a, b| a.strength.total_cmp(&b.strength))
}

/// The online seasonal state the seasonal members read.
#[derive(Debug, Clone)]
pub(crate) struct Season {
    period: u64,
    width: u64,
    profile: Box<[f64]>,
    last_cycle: Box<[f64]>,
    acc: f64,
    acc_n: u64,
    level: f64,
    level_set: bool,
    mad: f64,
    strength: f64,
}

impl Season {
    pub(crate) fn from_fit(fit: &SeasonFit) -> Season {
        Season {
            period: fit.period,
            width: slot_width(fit.period),
            profile: fit.profile.clone().into_boxed_slice(),
            last_cycle: fit.last_cycle.clone().into_boxed_slice(),
            acc: 0.0,
            acc_n: 0,
            level: 0.0,
            level_set: false,
            mad: 0.0,
            strength: fit.strength,
        }
    }

    pub(crate) fn period(&self) -> u64 {
        self.period
    }

    pub(crate) fn strength(&self) -> f64 {
        self.strength
    }

    pub(crate) fn set_strength(&mut self, s: f64) {
        self.strength = s;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        8 * (self.profile.len() + self.last_cycle.len())
    }

    fn slot(&self, idx: u64) -> usize {
        (((idx % self.period) / self.width) as usize).min(self.profile.len() - 1)
    }

    /// The additive seasonal index of absolute sample `idx`.
    pub(crate) fn index(&self, idx: u64) -> f64 {
        self.profile[self.slot(idx)]
    }

    /// The newest cycle's level at the phase of absolute sample `idx`.
    pub(crate) fn last_cycle(&self, idx: u64) -> f64 {
        self.last_cycle[self.slot(idx)]
    }

    /// Learns sample `idx`: the reference level every sample, the slot at the end of
    /// its block.
    pub(crate) fn observe(&mut self, idx: u64, y: f64) {
        if !acceptable(y) {
            return;
        }
        let r = y - self.index(idx);
        if self.level_set {
            self.level += (REF_ALPHA / self.width as f64) * (r - self.level);
        } else {
            self.level = r;
            self.level_set = true;
        }
        self.acc += y;
        self.acc_n += 1;
        let phase = idx % self.period;
        if (phase + 1).is_multiple_of(self.width) || phase + 1 == self.period {
            let j = self.slot(idx);
            let mean = self.acc / self.acc_n as f64;
            self.last_cycle[j] = clean(mean);
            let dev = mean - self.level - self.profile[j];
            let band = 6.0 * 1.25 * self.mad;
            let clipped = if self.mad > 0.0 {
                dev.clamp(-band, band)
            } else {
                dev
            };
            self.profile[j] = clean(self.profile[j] + GAMMA * clipped);
            self.mad = clean(self.mad + 0.05 * (dev.abs() - self.mad));
            self.acc = 0.0;
            self.acc_n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn daily(n: usize, period: usize, noise: f64, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|t| {
                let ph = (t % period) as f64 / period as f64 * std::f64::consts::TAU;
                50.0 + 10.0 * ph.sin() + noise * rng.normal()
            })
            .collect()
    }

    #[test]
    fn candidates_follow_the_sampling_interval() {
        assert_eq!(candidate_periods(300_000.0), vec![12, 288, 2016]);
        assert_eq!(candidate_periods(60_000.0), vec![60, 1440, 10080]);
        assert_eq!(candidate_periods(3_600_000.0), vec![24, 168]);
        assert!(candidate_periods(0.0).is_empty());
        assert!(candidate_periods(f64::NAN).is_empty());
    }

    #[test]
    fn history_compacts_and_keeps_alignment() {
        let mut h = History::new();
        for i in 0..(HISTORY_BLOCKS as u64 * 5 + 3) {
            h.push(i as f64);
        }
        let (blocks, width, start) = h.snapshot();
        assert_eq!(width, 8);
        assert_eq!(start % width, 0);
        // Each block is the mean of its samples' indices.
        for (i, b) in blocks.iter().enumerate() {
            let first = start + i as u64 * width;
            let want = first as f64 + (width - 1) as f64 / 2.0;
            assert!((b - want).abs() < 1e-9, "block {i}: {b} vs {want}");
        }
        assert!(blocks.len() >= HISTORY_BLOCKS / 2);
        assert_eq!(h.heap_bytes(), 8 * HISTORY_BLOCKS);
    }

    #[test]
    fn detects_a_daily_period_and_not_noise() {
        let ys = daily(288 * 4, 288, 2.0, 3);
        let mut h = History::new();
        for &y in &ys {
            h.push(y);
        }
        let (b, w, s) = h.snapshot();
        let fit = detect(&b, w, s, &candidate_periods(300_000.0)).expect("season");
        assert_eq!(fit.period, 288);
        assert!(fit.strength > 0.8, "{}", fit.strength);
        assert_eq!(fit.profile.len(), 288);
        // The profile follows the sine (mean 0), the last cycle the level.
        assert!((fit.profile[72] - 10.0).abs() < 2.0, "{}", fit.profile[72]);
        assert!((fit.last_cycle[216] - 40.0).abs() < 4.0);
        let mut rng = Rng::new(4);
        let mut h = History::new();
        for _ in 0..288 * 4 {
            h.push(50.0 + rng.normal());
        }
        let (b, w, s) = h.snapshot();
        assert_eq!(detect(&b, w, s, &candidate_periods(300_000.0)), None);
    }

    #[test]
    fn decimated_profile_for_long_periods() {
        // A daily cycle at 1-minute samples: 288 slots of 5 samples.
        let ys = daily(1440 * 3, 1440, 1.0, 5);
        let mut h = History::new();
        for &y in &ys {
            h.push(y);
        }
        let (b, w, s) = h.snapshot();
        assert!(w > 1);
        let fit = detect(&b, w, s, &candidate_periods(60_000.0)).expect("season");
        assert_eq!(fit.period, 1440);
        assert_eq!(fit.profile.len(), 288);
        let season = Season::from_fit(&fit);
        assert!(season.heap_bytes() <= 2 * 8 * MAX_SLOTS);
        // The quarter-day peak.
        assert!(
            (season.index(360) - 10.0).abs() < 2.0,
            "{}",
            season.index(360)
        );
    }

    #[test]
    fn online_profile_learns_a_changed_shape() {
        let fit = SeasonFit {
            period: 24,
            strength: 1.0,
            profile: vec![0.0; 24],
            last_cycle: vec![0.0; 24],
        };
        let mut s = Season::from_fit(&fit);
        for t in 0..24 * 60u64 {
            let y = if t % 24 == 5 { 20.0 } else { 0.0 };
            s.observe(t, y);
        }
        assert!(s.index(5) > 15.0, "{}", s.index(5));
        assert!(s.index(6).abs() < 3.0, "{}", s.index(6));
        assert_eq!(s.last_cycle(5), 20.0);
    }
}
