//! Forecasting behind one trait: naive, simple exponential smoothing, damped-trend Holt,
//! seasonal naive, additive Holt-Winters with damped trend, small ARIMA, and the
//! automatic choice between them, all self-tuning online.
//!
//! Every model is a [`Bank`] of smoothing members with fixed parameters, run side by
//! side. Each member's own forecasts are scored against what then happened, per
//! horizon, by an exponentially weighted mean absolute error; the forecast for horizon
//! `h` comes from the member with the lowest recent error at `h`. So `Ses` tunes its
//! alpha, `Holt` its (alpha, beta, phi), and [`AutoForecaster`] its model family, with
//! no hand tuning per series. Intervals come from the same errors.
//!
//! The seasonal members read a per-series period and profile ([`season`]) and the
//! ARIMA members a per-series fit ([`arima`]); both come from a background refit
//! ([`Bank::refit_job`] → [`RefitJob::run`] → [`Bank::install`]) that never runs on the
//! sample path. Until a period is found, the seasonal members behave like their
//! non-seasonal twins and are chosen only if they earn it on recent error.
pub mod arima;
mod bank;
mod models;
mod refit;
pub mod season;

pub use arima::{ArimaModel, ArimaState, Order};
pub use bank::{Bank, BankSpec, Family, ForecastParams, Member};
pub use models::{AutoForecaster, FamilyError, Holt, HoltWinters, Naive, Ses};
pub use refit::{RefitJob, RefitResult, SeasonChange};
pub use season::SeasonFit;

use serde::{Deserialize, Serialize};

/// Interval half-width in standard deviations (about 95 % if errors were normal).
pub const INTERVAL_Z: f64 = 1.96;

/// A point forecast with its prediction interval. Always finite.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Forecast {
    /// Expected value.
    pub mean: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
}

impl Forecast {
    /// The standard deviation implied by the interval.
    pub fn sigma(&self) -> f64 {
        ((self.hi - self.lo) / (2.0 * INTERVAL_Z)).max(0.0)
    }
}

/// A model that is fed a series one value at a time and forecasts `h` steps ahead.
pub trait Forecaster {
    /// Feeds the next value. NaN, infinite and out-of-range values (beyond
    /// [`crate::num::MAX_INPUT`]) are ignored: validate at ingest with
    /// [`crate::num::check_input`] to refuse them with an error instead.
    fn update(&mut self, y: f64);
    /// The forecast `h` steps after the last value (`h = 0` is treated as 1).
    /// Before any value it is all zeros.
    fn forecast(&self, h: u32) -> Forecast;
    /// The model's name, e.g. `holt`.
    fn name(&self) -> &str;
}

#[cfg(test)]
mod tests;
