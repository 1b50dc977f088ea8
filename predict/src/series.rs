//! One metric series of one node: its profile, its self-tuning forecaster, the scoring
//! of every forecast against what then happened, and its sampling interval.
use std::sync::Arc;

use crate::error::{PredictError, Result};
use crate::forecast::{AutoForecaster, BankSpec, Forecast, Forecaster, RefitJob, RefitResult};
use crate::num::{check_input, clean};
use crate::profile::{Profile, ProfileParams};

/// Weight of the newest gap in the smoothed sampling interval.
const INTERVAL_DECAY: f64 = 0.1;

/// Profile + forecaster + freshness for one series. Horizons count samples of this
/// series; [`SeriesModel::step_ms`] converts them to time.
#[derive(Debug, Clone)]
pub struct SeriesModel {
    profile: Profile,
    forecaster: AutoForecaster,
    last_t_ms: Option<i64>,
    step_ms: f64,
}

impl SeriesModel {
    /// An empty series over a shared forecaster spec.
    pub fn new(spec: Arc<BankSpec>, profile: ProfileParams) -> SeriesModel {
        SeriesModel {
            profile: Profile::new(profile),
            forecaster: AutoForecaster::with_spec(spec),
            last_t_ms: None,
            step_ms: 0.0,
        }
    }

    /// Learns `y` seen at `t_ms`. Refuses NaN, infinite, out-of-range values and
    /// values older than the newest one (equal times are accepted), naming `name`.
    pub fn observe(&mut self, name: &str, t_ms: i64, y: f64) -> Result<()> {
        check_input(name, y)?;
        if let Some(last) = self.last_t_ms {
            if t_ms < last {
                return Err(PredictError::OutOfOrder {
                    name: name.to_string(),
                    t_ms,
                    last_ms: last,
                });
            }
            let gap = (t_ms - last) as f64;
            self.step_ms = if self.forecaster.bank().count() <= 1 {
                gap
            } else {
                self.step_ms + INTERVAL_DECAY * (gap - self.step_ms)
            };
        }
        self.last_t_ms = Some(t_ms);
        self.profile.observe(t_ms, y);
        self.forecaster.update(y);
        self.profile.observe_level(self.forecaster.forecast(1).mean);
        Ok(())
    }

    /// True when a background refit of the forecaster (period detection, ARIMA fit) is
    /// due; it stays true until a result is installed, so keep one job in flight.
    pub fn refit_due(&self) -> bool {
        self.forecaster.refit_due()
    }

    /// The refit job for this series (owns its data; run it off the sample path with
    /// [`RefitJob::run`], then [`SeriesModel::install`] the result). Candidate periods
    /// come from the smoothed sampling interval.
    pub fn refit_job(&self) -> Option<RefitJob> {
        self.forecaster.refit_job(self.step_ms())
    }

    /// Installs a refit result.
    pub fn install(&mut self, result: RefitResult) {
        self.forecaster.install(result)
    }

    /// Runs a due refit inline (offline callers).
    pub fn refit_inline(&mut self) {
        let step = self.step_ms();
        self.forecaster.refit_inline(step)
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The forecaster (choice, errors).
    pub fn forecaster(&self) -> &AutoForecaster {
        &self.forecaster
    }

    /// Forecast `h` samples ahead (`None` before any value).
    pub fn forecast(&self, h: u32) -> Option<Forecast> {
        (self.count() > 0).then(|| self.forecaster.forecast(h))
    }

    /// Values learnt.
    pub fn count(&self) -> u64 {
        self.forecaster.bank().count()
    }

    /// The newest value (0 before any).
    pub fn last_value(&self) -> f64 {
        self.forecaster.bank().last()
    }

    /// Time of the newest value.
    pub fn last_seen_ms(&self) -> Option<i64> {
        self.last_t_ms
    }

    /// Smoothed time between values, once two have been seen.
    pub fn step_ms(&self) -> Option<f64> {
        (self.count() >= 2).then(|| clean(self.step_ms))
    }

    /// Bytes of this series: the struct and its heap (the shared spec not counted).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.profile.heap_bytes()
            + self.forecaster.bank().heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::ForecastParams;

    fn series() -> SeriesModel {
        let spec = AutoForecaster::spec(ForecastParams::default()).expect("spec");
        SeriesModel::new(spec, ProfileParams::default())
    }

    #[test]
    fn refuses_bad_values_and_time_travel() {
        let mut s = series();
        assert!(matches!(
            s.observe("m", 0, f64::NAN),
            Err(PredictError::NonFinite { .. })
        ));
        s.observe("m", 1_000, 1.0).expect("ok");
        s.observe("m", 1_000, 2.0).expect("same time is fine");
        assert!(matches!(
            s.observe("m", 999, 1.0),
            Err(PredictError::OutOfOrder { .. })
        ));
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn step_follows_the_sampling_interval() {
        let mut s = series();
        assert_eq!(s.step_ms(), None);
        for i in 0..100 {
            s.observe("m", i * 5_000, 1.0).expect("ok");
        }
        assert_eq!(s.step_ms(), Some(5_000.0));
        assert!(s.bytes() > 1_000 && s.bytes() < 32 * 1024, "{}", s.bytes());
    }
}
