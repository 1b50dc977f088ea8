//! The named forecasters: [`Naive`], [`Ses`], [`Holt`], [`HoltWinters`] and
//! [`AutoForecaster`], each a [`Bank`] of members of its family (all families for the
//! automatic one).
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::{Bank, BankSpec, Family, Forecast, ForecastParams, Forecaster, RefitJob, RefitResult};
use crate::error::Result;
use crate::num::clean;

fn default_spec(family: Option<Family>) -> Arc<BankSpec> {
    static SPECS: [OnceLock<Arc<BankSpec>>; 7] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let i = match family {
        None => 0,
        Some(Family::Naive) => 1,
        Some(Family::Ses) => 2,
        Some(Family::Holt) => 3,
        Some(Family::SeasonalNaive) => 4,
        Some(Family::HoltWinters) => 5,
        Some(Family::Arima) => 6,
    };
    Arc::clone(SPECS[i].get_or_init(|| {
        BankSpec::new(BankSpec::default_members(family), ForecastParams::default())
            .expect("built-in bank is valid")
    }))
}

macro_rules! family_forecaster {
    ($(#[$doc:meta])* $name:ident, $family:expr, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(Bank);

        impl $name {
            /// With the default members and parameters.
            pub fn new() -> Self {
                $name(Bank::new(default_spec(Some($family))))
            }

            /// With the default members and the given parameters.
            pub fn with_params(params: ForecastParams) -> Result<Self> {
                Ok($name(Bank::new(BankSpec::new(
                    BankSpec::default_members(Some($family)),
                    params,
                )?)))
            }

            /// The bank inside, for its per-member errors.
            pub fn bank(&self) -> &Bank {
                &self.0
            }

            /// See [`Bank::refit_due`].
            pub fn refit_due(&self) -> bool {
                self.0.refit_due()
            }

            /// See [`Bank::refit_job`].
            pub fn refit_job(&self, step_ms: Option<f64>) -> Option<RefitJob> {
                self.0.refit_job(step_ms)
            }

            /// See [`Bank::install`].
            pub fn install(&mut self, result: RefitResult) {
                self.0.install(result)
            }

            /// See [`Bank::refit_inline`].
            pub fn refit_inline(&mut self, step_ms: Option<f64>) {
                self.0.refit_inline(step_ms)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Forecaster for $name {
            fn update(&mut self, y: f64) {
                self.0.update(y)
            }
            fn forecast(&self, h: u32) -> Forecast {
                self.0.forecast(h)
            }
            fn name(&self) -> &str {
                $label
            }
        }
    };
}

family_forecaster!(
    /// The last value; its interval comes from its own recent h-step errors.
    Naive,
    Family::Naive,
    "naive"
);
family_forecaster!(
    /// Simple exponential smoothing, alpha chosen per horizon by recent error.
    Ses,
    Family::Ses,
    "ses"
);
family_forecaster!(
    /// Damped-trend Holt, (alpha, beta, phi) chosen per horizon by recent error.
    Holt,
    Family::Holt,
    "holt"
);

family_forecaster!(
    /// Additive Holt-Winters with damped trend over the series' detected period,
    /// (alpha, beta, phi) chosen per horizon by recent error. Needs background refits
    /// (period detection) to be seasonal: see [`Bank::refit_job`].
    HoltWinters,
    Family::HoltWinters,
    "holt_winters"
);

/// One family's recent error at one horizon: its best member's, next to the naive one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyError {
    /// The family.
    pub family: Family,
    /// Its member with the lowest recent error.
    pub best_member: String,
    /// That member's recent mean absolute error.
    pub mae: f64,
    /// `mae` divided by the naive forecast's (`None` when the naive error is 0).
    pub relative_to_naive: Option<f64>,
}

/// Runs naive, SES, Holt, seasonal naive, Holt-Winters and ARIMA members side by side
/// and, per horizon, forecasts with the one whose recent error is lowest. The choice
/// and every family's error are visible. The seasonal and ARIMA members need the
/// background refit ([`AutoForecaster::refit_job`]) to find a period and fit a model.
#[derive(Debug, Clone)]
pub struct AutoForecaster(Bank);

impl AutoForecaster {
    /// With the default members and parameters (the spec is shared by all series).
    pub fn new() -> Self {
        AutoForecaster(Bank::new(default_spec(None)))
    }

    /// The default members with other parameters; share the returned spec with
    /// [`AutoForecaster::with_spec`] across series.
    pub fn spec(params: ForecastParams) -> Result<Arc<BankSpec>> {
        BankSpec::new(BankSpec::default_members(None), params)
    }

    /// Over a given spec (it should contain [`super::Member::Naive`] for the baseline).
    pub fn with_spec(spec: Arc<BankSpec>) -> Self {
        AutoForecaster(Bank::new(spec))
    }

    /// The bank inside.
    pub fn bank(&self) -> &Bank {
        &self.0
    }

    /// See [`Bank::refit_due`].
    pub fn refit_due(&self) -> bool {
        self.0.refit_due()
    }

    /// See [`Bank::refit_job`].
    pub fn refit_job(&self, step_ms: Option<f64>) -> Option<RefitJob> {
        self.0.refit_job(step_ms)
    }

    /// See [`Bank::install`].
    pub fn install(&mut self, result: RefitResult) {
        self.0.install(result)
    }

    /// See [`Bank::refit_inline`].
    pub fn refit_inline(&mut self, step_ms: Option<f64>) {
        self.0.refit_inline(step_ms)
    }

    /// Once a period is installed, the forecast at horizon `h` of the seasonal member
    /// (seasonal naive, Holt-Winters, seasonal ARIMA) with the lowest recent error
    /// there, with its label: what the cycle alone predicts.
    pub fn seasonal_forecast(&self, h: u32) -> Option<(Forecast, &str)> {
        let bank = &self.0;
        bank.season()?;
        let h = u64::from(h.max(1));
        let spec = bank.spec();
        let best = spec
            .members()
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                matches!(
                    m,
                    super::Member::SeasonalNaive
                        | super::Member::HoltWinters { .. }
                        | super::Member::Arima { seasonal: true }
                )
            })
            .filter_map(|(i, _)| Some((i, bank.member_mae(i, h)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((
            bank.member_forecast(best.0, h),
            spec.labels()[best.0].as_str(),
        ))
    }

    /// The member forecasting horizon `h` now, e.g. `holt(0.5,0.05,0.9)`.
    pub fn chosen(&self, h: u32) -> &str {
        &self.0.spec().labels()[self.0.choose(u64::from(h))]
    }

    /// The family forecasting horizon `h` now.
    pub fn chosen_family(&self, h: u32) -> Family {
        self.0.spec().members()[self.0.choose(u64::from(h))].family()
    }

    /// Recent mean absolute error of the forecasts actually given at horizon `h`.
    pub fn mae(&self, h: u32) -> Option<f64> {
        self.0.emitted_mae(u64::from(h))
    }

    /// Recent mean absolute error of the last-value forecast at horizon `h`.
    pub fn naive_mae(&self, h: u32) -> Option<f64> {
        let i = self.0.spec().naive_index()?;
        self.0.member_mae(i, u64::from(h))
    }

    /// Each family's best recent error at horizon `h`, next to naive.
    pub fn family_errors(&self, h: u32) -> Vec<FamilyError> {
        let h = u64::from(h);
        let spec = self.0.spec();
        let naive = spec
            .naive_index()
            .and_then(|i| self.0.member_mae(i, h))
            .filter(|&e| e > 0.0);
        let mut out: Vec<FamilyError> = Vec::new();
        for (m, member) in spec.members().iter().enumerate() {
            let Some(mae) = self.0.member_mae(m, h) else {
                continue;
            };
            let family = member.family();
            match out.iter_mut().find(|f| f.family == family) {
                Some(f) if f.mae <= mae => {}
                Some(f) => {
                    f.mae = mae;
                    f.best_member.clone_from(&spec.labels()[m]);
                }
                None => out.push(FamilyError {
                    family,
                    best_member: spec.labels()[m].clone(),
                    mae,
                    relative_to_naive: None,
                }),
            }
        }
        for f in &mut out {
            f.relative_to_naive = naive.map(|n| clean(f.mae / n));
        }
        out
    }
}

impl Default for AutoForecaster {
    fn default() -> Self {
        Self::new()
    }
}

impl Forecaster for AutoForecaster {
    fn update(&mut self, y: f64) {
        self.0.update(y)
    }
    fn forecast(&self, h: u32) -> Forecast {
        self.0.forecast(h)
    }
    fn name(&self) -> &str {
        "auto"
    }
}
