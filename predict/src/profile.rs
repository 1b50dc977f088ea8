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
    /// the median up; with 0.01 a shift of 10 sigma is adopted in several hundred samples.
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
            rate: 0.01,
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
            return bad(
                "min_rel_scale",
                format!("must be in [0, 1), got {}", self.min_rel_scale),
            );
        }
        if !(self.min_abs_scale > 0.0 && self.min_abs_scale.is_finite()) {
            return bad(
                "min_abs_scale",
                format!("must be positive, got {}", self.min_abs_scale),
            );
        }
        Ok(())
    }
}

/// sqrt(pi / 2): the standard deviation of normal noise per unit of mean absolute deviation.
const MEAN_AD_TO_SIGMA: f64 = 1.253_314_137_315_500_3;

/// Deviations beyond this many scales are clipped before the mean absolute deviation
/// learns from them, so one spike cannot blow the band open.
const MEAN_AD_CLIP: f64 = 3.0;

/// One metric's baseline. The spread is the larger of two robust estimates: the MAD
/// (ideal for noisy, symmetric metrics) and a clipped mean absolute deviation from the
/// median (which stays positive when more than half the values are identical, as with
/// quantised CPU percentages or mostly-zero byte counters, where the MAD is 0).
#[derive(Debug, Clone)]
pub struct Profile {
    params: ProfileParams,
    /// Warm-up samples; emptied (and freed) once the profile is ready.
    warm: Vec<f64>,
    median: f64,
    /// Median absolute deviation (unscaled), tracked.
    mad: f64,
    /// Mean absolute deviation from the median (clipped), tracked.
    mean_ad: f64,
    /// Typical forecast level: slow exponentially weighted mean of the one-step forecasts.
    level: f64,
    /// Slow exponentially weighted mean absolute deviation of the forecasts from `level`.
    level_ad: f64,
    n: u64,
    last_seen_ms: Option<i64>,
}

/// Median, MAD and mean absolute deviation from the median of a slice, the largest
/// tenth of the deviations left out of the mean (a spike among the first samples
/// must not set the spread).
fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    let (m, mad) = median_mad(values)?;
    let mut dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let keep = (dev.len() * 9).div_ceil(10).max(1);
    let mean_ad = dev[..keep].iter().sum::<f64>() / keep as f64;
    Some((m, mad, clean(mean_ad)))
}

impl Profile {
    /// An empty profile.
    pub fn new(params: ProfileParams) -> Profile {
        Profile {
            params,
            warm: Vec::new(),
            median: 0.0,
            mad: 0.0,
            mean_ad: 0.0,
            level: 0.0,
            level_ad: 0.0,
            n: 0,
            last_seen_ms: None,
        }
    }

    fn floor(&self, median: f64) -> f64 {
        (self.params.min_rel_scale * median.abs()).max(self.params.min_abs_scale)
    }

    fn scale_of(&self, median: f64, mad: f64, mean_ad: f64) -> f64 {
        clean(
            (mad * MAD_TO_SIGMA)
                .max(mean_ad * MEAN_AD_TO_SIGMA)
                .max(self.floor(median)),
        )
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
                && let Some((m, mad, mean_ad)) = stats(&self.warm)
            {
                self.median = m;
                self.mad = mad;
                self.mean_ad = mean_ad;
                self.level = m;
                self.warm = Vec::new();
            }
            return;
        }
        let rate = self.params.rate;
        let scale = self.scale_of(self.median, self.mad, self.mean_ad);
        let m = if y > self.median {
            self.median + rate * scale
        } else if y < self.median {
            self.median - rate * scale
        } else {
            self.median
        };
        // Never step past the value itself.
        self.median = if (y - self.median) * (y - m) < 0.0 {
            y
        } else {
            m
        };
        let d = (y - self.median).abs();
        // The spreads move at a quarter of the rate: a shift first widens the band a
        // little (which speeds the median up) rather than swallowing itself at once.
        let r = rate / 4.0;
        let floor = self.floor(self.median);
        let factor = if d > self.mad {
            1.0 + r
        } else {
            1.0 / (1.0 + r)
        };
        self.mad = clean((self.mad.max(floor) * factor).max(0.0));
        let clipped = d.min(MEAN_AD_CLIP * scale);
        self.mean_ad = clean(self.mean_ad + r * (clipped - self.mean_ad));
    }

    /// Learns the series' one-step forecast after a value. Forecasts are held against
    /// the normal range of forecasts: centred on their typical level (for a symmetric
    /// metric, the median; for a skewed one such as a mostly-zero byte counter, where a
    /// smoothed forecast normally sits) and as wide as the larger of the values' spread
    /// and the forecasts' own spread. Both move at a quarter of the rate.
    pub fn observe_level(&mut self, forecast: f64) {
        if !acceptable(forecast) || !self.is_ready() {
            return;
        }
        let r = self.params.rate / 4.0;
        self.level = clean(self.level + r * (forecast - self.level));
        self.level_ad = clean(self.level_ad + r * ((forecast - self.level).abs() - self.level_ad));
    }

    /// The band forecasts are held against: `level ± k · max(scale, forecast spread)`
    /// (see [`Profile::observe_level`]); before the profile is ready, the value band.
    /// `None` before any value.
    pub fn forecast_band(&self, k: f64) -> Option<(f64, f64)> {
        if !self.is_ready() {
            return self.band(k);
        }
        let scale = self
            .scale_of(self.median, self.mad, self.mean_ad)
            .max(self.level_ad * MEAN_AD_TO_SIGMA);
        let half = clean(k.abs() * scale);
        Some((clean(self.level - half), clean(self.level + half)))
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

    /// Median and MAD (unscaled); provisional from the warm-up samples before the
    /// profile is ready; `None` before any value.
    pub fn median_mad(&self) -> Option<(f64, f64)> {
        self.current().map(|(m, mad, _)| (m, mad))
    }

    fn current(&self) -> Option<(f64, f64, f64)> {
        if self.n == 0 {
            return None;
        }
        if self.is_ready() {
            return Some((self.median, self.mad, self.mean_ad));
        }
        stats(&self.warm)
    }

    /// The robust standard deviation: the larger of 1.4826 MAD and 1.2533 times the
    /// mean absolute deviation, floored; `None` before any value.
    pub fn scale(&self) -> Option<f64> {
        let (m, mad, mean_ad) = self.current()?;
        Some(self.scale_of(m, mad, mean_ad))
    }

    /// The normal range `median ± k · scale`; `None` before any value.
    pub fn band(&self, k: f64) -> Option<(f64, f64)> {
        let (m, mad, mean_ad) = self.current()?;
        let half = clean(k.abs() * self.scale_of(m, mad, mean_ad));
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
            let y = if t % 50 == 0 {
                1e6
            } else {
                10.0 + rng.normal()
            };
            p.observe(t, y);
        }
        let (m, mad) = p.median_mad().expect("ready");
        assert!((m - 10.0).abs() < 0.2, "median {m}");
        assert!(
            (mad * MAD_TO_SIGMA - 1.0).abs() < 0.2,
            "MAD scale {}",
            mad * MAD_TO_SIGMA
        );
        let scale = p.scale().expect("scale");
        assert!(
            (scale - 1.0).abs() < 0.25,
            "scale {scale} despite the spikes"
        );
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
        assert!(
            hi < 18.0,
            "a 60-sample shift is not yet normal: band ({lo}, {hi})"
        );
        for t in 560..2_000 {
            p.observe(t, 20.0 + rng.normal());
        }
        let (m, _) = p.median_mad().expect("ready");
        assert!((m - 20.0).abs() < 0.5, "median {m}");
        let scale = p.scale().expect("scale");
        assert!(scale < 2.0, "scale back down: {scale}");
    }

    #[test]
    fn mostly_identical_values_still_have_a_spread() {
        // Quantised CPU: 70 % at 0.066, the rest higher; the MAD is 0.
        let mut p = Profile::new(ProfileParams::default());
        for t in 0..1_000 {
            let y = match t % 10 {
                0..=6 => 0.066,
                7 | 8 => 0.134,
                _ => 0.2,
            };
            p.observe(t, y);
        }
        let (m, mad) = p.median_mad().expect("ready");
        assert!((m - 0.066).abs() < 0.003, "median {m}");
        assert!(mad < 0.003, "MAD {mad}");
        let (_, hi) = p.band(3.0).expect("band");
        // The MAD alone would give a band of ±0.002 (the floor); the mean, 0.0998, is inside.
        assert!(hi > 0.12, "hi {hi}");
    }

    #[test]
    fn forecasts_are_held_against_where_forecasts_normally_sit() {
        // A mostly-zero byte counter with bursts: the median is 0, a smoothed
        // forecast sits near the mean; the forecast band is centred there.
        let mut rng = Rng::new(4);
        let mut p = Profile::new(ProfileParams::default());
        let mut level = 0.0;
        for t in 0..4_000 {
            let y = if rng.uniform() < 0.15 {
                1e6 * (1.0 + rng.uniform())
            } else {
                0.0
            };
            level += 0.05 * (y - level);
            p.observe(t, y);
            p.observe_level(level);
        }
        let (m, _) = p.median_mad().expect("ready");
        assert!(m < 50_000.0, "median {m}");
        let (lo, hi) = p.forecast_band(3.0).expect("band");
        assert!(lo < 225_000.0 && hi > 225_000.0 * 2.0, "({lo}, {hi})");
        // Before warm-up it is the value band.
        let mut q = Profile::new(ProfileParams::default());
        q.observe(0, 1.0);
        assert_eq!(q.forecast_band(3.0), q.band(3.0));
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
