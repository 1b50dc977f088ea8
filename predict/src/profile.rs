//! A metric's robust baseline: median and MAD from its first samples, then tracked
//! slowly with sign-driven (stochastic-approximation) median and MAD updates, so one
//! outlier moves it by one small step whatever its size.
use serde::{Deserialize, Serialize};

use crate::error::{PredictError, Result};
use crate::num::{acceptable, clean, median_mad};

/// MAD times this estimates the standard deviation of normal noise.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// How a profile learns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProfileParams {
    /// Samples whose exact median and MAD start the profile (>= 3).
    pub warmup: u32,
    /// Step size of the slow tracking after warm-up, as a fraction of the scale per
    /// sample (0 < rate < 1). A persistent shift widens the MAD first, which speeds
    /// the median up; with 0.02 a shift of 10 sigma is adopted in a few hundred samples.
    pub rate: f64,
    /// Floor on the scale relative to |median|, so a constant metric does not get a
    /// zero-width band (0.01: changes under about 1 % x band_k never count).
    pub min_rel_scale: f64,
    /// Absolute floor on the scale.
    pub min_abs_scale: f64,
}

impl Default for ProfileParams {
    fn default() -> Self {
        ProfileParams {
            warmup: 30,
            rate: 0.02,
            min_rel_scale: 0.01,
            min_abs_scale: 1e-9,
        }
    }
}

impl ProfileParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, message: String| Err(PredictError::InvalidParam { name, message });
        if !(3..=100_000).contains(&self.warmup) {
            return bad("warmup", format!("must be 3..=100000, got {}", self.warmup));
        }
        if !(self.rate > 0.0 && self.rate < 1.0) {
            return bad("rate", format!("must be in (0, 1), got {}", self.rate));
        }
        if !(self.min_rel_scale >= 0.0 && self.min_rel_scale < 1.0) {
            return bad("min_rel_scale", format!("must be in [0, 1), got {}", self.min_rel_scale));
        }
        if !(self.min_abs_scale > 0.0 && self.min_abs_scale.is_finite()) {
            return bad("min_abs_scale", format!("must be positive, got {}", self.min_abs_scale));
        }
        Ok(())
    }
}

/// One metric's baseline.
#[derive(Debug, Clone)]
pub struct Profile {
    params: ProfileParams,
    /// Warm-up samples; emptied (and freed) once the profile is ready.
    warm: Vec<f64>,
    median: f64,
    /// Median absolute deviation (unscaled), kept at or above the floor after warm-up.
    mad: f64,
    n: u64,
    last_seen_ms: Option<i64>,
}

impl Profile {
    /// An empty profile.
    pub fn new(params: ProfileParams) -> Profile {
        Profile {
            params,
            warm: Vec::new(),
            median: 0.0,
            mad: 0.0,
            n: 0,
            last_seen_ms: None,
        }
    }

    fn floor(&self, median: f64) -> f64 {
        (self.params.min_rel_scale * median.abs()).max(self.params.min_abs_scale)
    }

    /// Learns one value seen at `t_ms`. Unacceptable values (NaN, infinite, beyond
    /// ±1e300) are ignored; check them at ingest.
    pub fn observe(&mut self, t_ms: i64, y: f64) {
        if !acceptable(y) {
            return;
        }
        self.n += 1;
        self.last_seen_ms = Some(self.last_seen_ms.map_or(t_ms, |l| l.max(t_ms)));
        let warmup = u64::from(self.params.warmup);
        if self.n <= warmup {
            self.warm.push(y);
            if self.n == warmup
                && let Some((m, mad)) = median_mad(&self.warm)
            {
                self.median = m;
                self.mad = mad.max(self.floor(m));
                self.warm = Vec::new();
            }
            return;
        }
        let rate = self.params.rate;
        let scale = self.mad * MAD_TO_SIGMA;
        let m = if y > self.median {
            self.median + rate * scale
        } else if y < self.median {
            self.median - rate * scale
        } else {
            self.median
        };
        // Never step past the value itself.
        self.median = if (y - self.median) * (y - m) < 0.0 { y } else { m };
        let d = (y - self.median).abs();
        // The scale moves at a quarter of the rate: a shift first widens the band a
        // little (which speeds the median up) rather than swallowing itself at once.
        let r = rate / 4.0;
        let factor = if d > self.mad { 1.0 + r } else { 1.0 / (1.0 + r) };
        self.mad = clean(self.mad * factor).max(self.floor(self.median));
    }

    /// True once the warm-up samples are in.
    pub fn is_ready(&self) -> bool {
        self.n >= u64::from(self.params.warmup)
    }

    /// Values learnt.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Time of the newest value, if any.
    pub fn last_seen_ms(&self) -> Option<i64> {
        self.last_seen_ms
    }

    /// Median and MAD (unscaled, floored); provisional from the warm-up samples
    /// before the profile is ready; `None` before any value.
    pub fn median_mad(&self) -> Option<(f64, f64)> {
        if self.n == 0 {
            return None;
        }
        if self.is_ready() {
            return Some((self.median, self.mad));
        }
        let (m, mad) = median_mad(&self.warm)?;
        Some((m, mad.max(self.floor(m))))
    }

    /// The normal range `median ± k · 1.4826 · MAD`; `None` before any value.
    pub fn band(&self, k: f64) -> Option<(f64, f64)> {
        let (m, mad) = self.median_mad()?;
        let half = clean(k.abs() * MAD_TO_SIGMA * mad);
        Some((clean(m - half), clean(m + half)))
    }

    /// Heap bytes owned (the warm-up buffer, freed once ready).
    pub fn heap_bytes(&self) -> usize {
        self.warm.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn warmup_gives_exact_median_and_mad() {
        let mut p = Profile::new(ProfileParams {
            warmup: 5,
            ..Default::default()
        });
        assert_eq!(p.band(3.0), None);
        for (i, v) in [10.0, 12.0, 11.0, 100.0, 9.0].into_iter().enumerate() {
            p.observe(i as i64, v);
        }
        assert!(p.is_ready());
        assert_eq!(p.median_mad(), Some((11.0, 1.0)));
        assert_eq!(p.heap_bytes(), 0);
        assert_eq!(p.last_seen_ms(), Some(4));
    }

    #[test]
    fn tracks_noise_and_ignores_outliers() {
        let mut rng = Rng::new(7);
        let mut p = Profile::new(ProfileParams::default());
        for t in 0..5_000 {
            let y = if t % 50 == 0 { 1e6 } else { 10.0 + rng.normal() };
            p.observe(t, y);
        }
        let (m, mad) = p.median_mad().expect("ready");
        assert!((m - 10.0).abs() < 0.2, "median {m}");
        assert!((mad * MAD_TO_SIGMA - 1.0).abs() < 0.2, "scale {}", mad * MAD_TO_SIGMA);
    }

    #[test]
    fn adopts_a_persistent_shift_slowly() {
        let mut rng = Rng::new(3);
        let mut p = Profile::new(ProfileParams::default());
        for t in 0..500 {
            p.observe(t, 10.0 + rng.normal());
        }
        for t in 500..560 {
            p.observe(t, 20.0 + rng.normal());
        }
        let (lo, hi) = p.band(4.0).expect("band");
        assert!(hi < 18.0, "a 60-sample shift is not yet normal: band ({lo}, {hi})");
        for t in 560..2_000 {
            p.observe(t, 20.0 + rng.normal());
        }
        let (m, mad) = p.median_mad().expect("ready");
        assert!((m - 20.0).abs() < 0.5, "median {m}");
        assert!(mad * MAD_TO_SIGMA < 2.0, "scale back down: {}", mad * MAD_TO_SIGMA);
    }

    #[test]
    fn constant_series_gets_a_floor_and_huge_values_stay_finite() {
        let mut p = Profile::new(ProfileParams::default());
        for t in 0..100 {
            p.observe(t, 5.0);
        }
        let (lo, hi) = p.band(4.0).expect("band");
        assert!(lo < 5.0 && hi > 5.0);
        let mut p = Profile::new(ProfileParams::default());
        for t in 0..200 {
            p.observe(t, if t % 2 == 0 { 1e300 } else { -1e300 });
            p.observe(t, f64::NAN);
        }
        let (lo, hi) = p.band(1e6).expect("band");
        assert!(lo.is_finite() && hi.is_finite());
    }

    #[test]
    fn params_are_checked() {
        assert!(ProfileParams::default().validate().is_ok());
        let p = ProfileParams {
            rate: 1.0,
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
