//! The background refit of one series: a job that owns a copy of the data it needs
//! (history blocks, recent values, the current season), runs pure (period detection,
//! ARIMA order selection and fitting) off the sample path, and a result the bank
//! installs. The balancer runs jobs on a blocking thread; offline callers inline.
use super::arima::{self, ArimaModel, Order};
use super::season::{self, MIN_STRENGTH, SeasonFit};

/// Largest order the background ARIMA fit considers.
const ARIMA_MAX: Order = Order { p: 2, d: 1, q: 2 };
/// A new period replaces the current one only when its strength is this much higher.
const SEASON_SWITCH: f64 = 0.1;

/// Everything a refit needs, copied out of a bank ([`super::Bank::refit_job`]).
#[derive(Debug, Clone)]
pub struct RefitJob {
    pub(super) n: u64,
    pub(super) step_ms: Option<f64>,
    pub(super) blocks: Vec<f64>,
    pub(super) width: u64,
    pub(super) start: u64,
    pub(super) recent: Vec<f64>,
    pub(super) recent_start: u64,
    /// Current period, its strength and its profile (one value per slot).
    pub(super) current: Option<(u64, f64, Vec<f64>)>,
    /// Whether to fit the plain / the seasonal ARIMA member.
    pub(super) arima: [bool; 2],
}

/// What happens to the series' seasonal state.
#[derive(Debug, Clone, PartialEq)]
pub enum SeasonChange {
    /// Nothing to change.
    Keep,
    /// Same period; its strength re-measured.
    Strength(f64),
    /// A new (or first) period with its profile.
    Install(SeasonFit),
    /// The period no longer holds.
    Drop,
}

/// The outcome of a [`RefitJob`], for [`super::Bank::install`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefitResult {
    pub(super) n: u64,
    /// The seasonal decision.
    pub season: SeasonChange,
    /// The plain and seasonal ARIMA fits (`None`: keep the current one).
    pub arima: [Option<ArimaModel>; 2],
}

impl RefitJob {
    /// Samples the bank had seen when the job was made.
    pub fn samples(&self) -> u64 {
        self.n
    }

    /// Detects the period and fits the ARIMA members. Pure; takes about a millisecond.
    pub fn run(self) -> RefitResult {
        let candidates = self
            .step_ms
            .map(season::candidate_periods)
            .unwrap_or_default();
        let found = season::detect(&self.blocks, self.width, self.start, &candidates);
        let change = match (&self.current, found) {
            (None, Some(f)) => SeasonChange::Install(f),
            (None, None) => SeasonChange::Keep,
            (Some((p, _, _)), Some(f)) if f.period == *p => SeasonChange::Strength(f.strength),
            (Some((_, s, _)), Some(f)) if f.strength > s + SEASON_SWITCH => {
                SeasonChange::Install(f)
            }
            (Some((p, _, _)), _) => {
                match season::fit_period(&self.blocks, self.width, self.start, *p) {
                    Some(f) if f.strength < MIN_STRENGTH / 2.0 => SeasonChange::Drop,
                    Some(f) => SeasonChange::Strength(f.strength),
                    None => SeasonChange::Keep,
                }
            }
        };
        // The profile the seasonal ARIMA will run against.
        let profile: Option<(u64, &[f64])> = match &change {
            SeasonChange::Install(f) => Some((f.period, &f.profile)),
            SeasonChange::Drop => None,
            _ => self.current.as_ref().map(|(p, _, pr)| (*p, pr.as_slice())),
        };
        let plain = if self.arima[0] {
            arima::select(&self.recent, ARIMA_MAX).ok()
        } else {
            None
        };
        let seasonal = match profile {
            Some((p, pr)) if self.arima[1] && !pr.is_empty() => {
                let w = season::slot_width(p);
                let adjusted: Vec<f64> = self
                    .recent
                    .iter()
                    .enumerate()
                    .map(|(i, y)| {
                        let idx = self.recent_start + i as u64;
                        let slot = (((idx % p) / w) as usize).min(pr.len() - 1);
                        y - pr[slot]
                    })
                    .collect();
                arima::select(&adjusted, ARIMA_MAX).ok()
            }
            _ => None,
        };
        RefitResult {
            n: self.n,
            season: change,
            arima: [plain, seasonal],
        }
    }
}
