//! A bank of forecasting members run side by side (exponential smoothing, seasonal
//! naive, Holt-Winters, ARIMA), each scored per horizon by the exponentially weighted
//! absolute error of its own past forecasts; and the per-series state the seasonal and
//! ARIMA members share (history, seasonal profile, fitted models), refreshed by a
//! background refit ([`Bank::refit_job`], [`RefitJob::run`], [`Bank::install`]).
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::arima::{self, ArimaModel, ArimaState};
use super::refit::{RefitJob, RefitResult, SeasonChange};
use super::season::{self, History, Season};
use super::{Forecast, INTERVAL_Z};
use crate::error::{PredictError, Result};
use crate::num::{acceptable, clean, clean_or};

/// Innovations beyond this many one-step standard deviations are clipped before a
/// smoothing member learns from them (Huber-style robust smoothing, as in Gelper,
/// Fried and Croux 2010), so one spike moves a level or trend by a bounded step. The
/// naive member is never clipped, so a real level shift is still followed at once.
const CLIP_SIGMAS: f64 = 3.0;

/// Once a bank's seasonal or ARIMA members are in play (a period or a fit installed), a
/// member replaces the naive forecast only when its recent error is lower by more than
/// this share. The more members, the likelier one beats the last value on noise alone
/// (selection bias), and on series where nothing really does, switching between members
/// costs more than it wins. Until then, and in banks of naive, SES and Holt only, the
/// plain rule holds (their choices and accuracy are unchanged).
const NAIVE_EDGE: f64 = 0.03;

/// sqrt(pi / 2): the standard deviation of a normal error per unit of mean absolute error.
const MAE_TO_SIGMA: f64 = 1.253_314_137_315_500_3;

/// Model families, for display and for choosing between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The last value.
    Naive,
    /// Simple exponential smoothing.
    Ses,
    /// Holt's linear trend with damping.
    Holt,
    /// The value one season ago.
    SeasonalNaive,
    /// Additive Holt-Winters with damped trend (level and trend of the deseasonalised
    /// series plus the series' seasonal profile).
    HoltWinters,
    /// ARIMA(p, d, q), order and coefficients fitted in the background.
    Arima,
}

impl Family {
    /// Display name.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Naive => "naive",
            Family::Ses => "ses",
            Family::Holt => "holt",
            Family::SeasonalNaive => "seasonal_naive",
            Family::HoltWinters => "holt_winters",
            Family::Arima => "arima",
        }
    }
}

/// One smoothing model with fixed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Member {
    /// Forecast = last value.
    Naive,
    /// Level `l += alpha (y - l)`; forecast = level.
    Ses {
        /// Level smoothing, in (0, 1].
        alpha: f64,
    },
    /// Damped-trend Holt: forecast(h) = level + (phi + ... + phi^h) trend.
    Holt {
        /// Level smoothing, in (0, 1].
        alpha: f64,
        /// Trend smoothing, in (0, 1].
        beta: f64,
        /// Trend damping, in (0, 1]; 1 is Holt's undamped linear trend.
        phi: f64,
    },
    /// Forecast = the series' level one period before the target (the last value
    /// until a period is detected).
    SeasonalNaive,
    /// Additive Holt-Winters with damped trend: damped Holt on `y - season(t)`, plus
    /// `season(t + h)`. The seasonal profile is the series' own (one per series, see
    /// [`super::season`]); before a period is detected it is damped Holt.
    HoltWinters {
        /// Level smoothing, in (0, 1].
        alpha: f64,
        /// Trend smoothing, in [0, 1]; 0 keeps no trend (seasonal SES).
        beta: f64,
        /// Trend damping, in (0, 1].
        phi: f64,
    },
    /// ARIMA with the order and coefficients of the series' last background fit (the
    /// last value until then); with `seasonal`, fitted to and run on the
    /// deseasonalised series.
    Arima {
        /// Runs on `y - season(t)` and adds `season(t + h)`.
        seasonal: bool,
    },
}

impl Member {
    /// The member's family.
    pub fn family(&self) -> Family {
        match self {
            Member::Naive => Family::Naive,
            Member::Ses { .. } => Family::Ses,
            Member::Holt { .. } => Family::Holt,
            Member::SeasonalNaive => Family::SeasonalNaive,
            Member::HoltWinters { .. } => Family::HoltWinters,
            Member::Arima { .. } => Family::Arima,
        }
    }

    /// Floats of running state per member (and per remembered step).
    fn width(&self) -> usize {
        match self {
            Member::Arima { .. } => 5,
            _ => 2,
        }
    }

    /// True for members that read the seasonal profile or an ARIMA fit.
    fn needs_refit(&self) -> bool {
        matches!(
            self,
            Member::SeasonalNaive | Member::HoltWinters { .. } | Member::Arima { .. }
        )
    }

    /// A short label with the parameters, e.g. `holt(0.5,0.1,0.9)`.
    pub fn label(&self) -> String {
        match self {
            Member::Naive => "naive".to_string(),
            Member::Ses { alpha } => format!("ses({alpha})"),
            Member::Holt { alpha, beta, phi } => format!("holt({alpha},{beta},{phi})"),
            Member::SeasonalNaive => "seasonal_naive".to_string(),
            Member::HoltWinters { alpha, beta, phi } => format!("hw({alpha},{beta},{phi})"),
            Member::Arima { seasonal: false } => "arima".to_string(),
            Member::Arima { seasonal: true } => "arima+season".to_string(),
        }
    }

    fn validate(&self) -> Result<()> {
        let unit = |name: &'static str, v: f64| {
            let ok = v > 0.0 && v <= 1.0;
            if ok {
                Ok(())
            } else {
                Err(PredictError::InvalidParam {
                    name,
                    message: format!("{v} is outside its range"),
                })
            }
        };
        match *self {
            Member::Naive => Ok(()),
            Member::Ses { alpha } => unit("alpha", alpha),
            Member::Holt { alpha, beta, phi } => {
                unit("alpha", alpha)?;
                unit("beta", beta)?;
                unit("phi", phi)
            }
            Member::HoltWinters { alpha, beta, phi } => {
                unit("alpha", alpha)?;
                if !(0.0..=1.0).contains(&beta) {
                    return Err(PredictError::InvalidParam {
                        name: "beta",
                        message: format!("{beta} is outside its range"),
                    });
                }
                unit("phi", phi)
            }
            Member::SeasonalNaive | Member::Arima { .. } => Ok(()),
        }
    }

    /// Sum phi + phi^2 + ... + phi^h (0 for members without a trend).
    fn damp_sum(&self, h: u64) -> f64 {
        match *self {
            Member::Holt { phi, .. } | Member::HoltWinters { phi, .. } if phi >= 1.0 => h as f64,
            Member::Holt { phi, .. } | Member::HoltWinters { phi, .. } => {
                let h = i32::try_from(h).unwrap_or(i32::MAX);
                phi * (1.0 - phi.powi(h)) / (1.0 - phi)
            }
            _ => 0.0,
        }
    }
}

/// How the forecasters score and remember.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastParams {
    /// Largest horizon scored separately (1..=64); longer horizons reuse its errors,
    /// scaled by sqrt(h / max_horizon) for the interval.
    pub max_horizon: u32,
    /// Weight of the newest error in the exponentially weighted errors (0 < decay <= 1);
    /// 0.02 remembers about the last 50 forecasts.
    pub decay: f64,
    /// How many of the best members (by recent error at the horizon) are averaged
    /// into the forecast (1..=8; 1 = the single best).
    pub combine: u32,
    /// Samples between background refits (period detection, ARIMA fit) of banks with
    /// seasonal or ARIMA members (16..=1_000_000). The first refits come sooner: at
    /// 128 samples, then each time the count has doubled, until this interval.
    #[serde(default = "default_refit_every")]
    pub refit_every: u32,
}

fn default_refit_every() -> u32 {
    256
}

impl Default for ForecastParams {
    fn default() -> Self {
        ForecastParams {
            max_horizon: 6,
            decay: 0.02,
            combine: 1,
            refit_every: default_refit_every(),
        }
    }
}

impl ForecastParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(1..=64).contains(&self.max_horizon) {
            return Err(PredictError::InvalidParam {
                name: "max_horizon",
                message: format!("must be 1..=64, got {}", self.max_horizon),
            });
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(PredictError::InvalidParam {
                name: "decay",
                message: format!("must be in (0, 1], got {}", self.decay),
            });
        }
        if !(1..=8).contains(&self.combine) {
            return Err(PredictError::InvalidParam {
                name: "combine",
                message: format!("must be 1..=8, got {}", self.combine),
            });
        }
        if !(16..=1_000_000).contains(&self.refit_every) {
            return Err(PredictError::InvalidParam {
                name: "refit_every",
                message: format!("must be 16..=1000000, got {}", self.refit_every),
            });
        }
        Ok(())
    }
}

/// The fixed part of a bank, shared by every series that uses it: members, labels and
/// precomputed damping sums.
#[derive(Debug)]
pub struct BankSpec {
    members: Vec<Member>,
    labels: Vec<String>,
    hmax: usize,
    decay: f64,
    combine: usize,
    refit_every: u64,
    /// `damp[m * hmax + h - 1]` = phi + ... + phi^h of member m.
    damp: Vec<f64>,
    /// Offset of member m's state in the packed state; `offset[members.len()]` is the width.
    offset: Vec<usize>,
    naive: Option<usize>,
    /// True when some member reads the seasonal profile or an ARIMA fit.
    refit: bool,
    /// Whether plain / seasonal ARIMA members are present.
    arima: [bool; 2],
}

/// SES smoothing constants of the default banks. Noisy server metrics often want a
/// very small alpha (a slow mean), so the low end is fine-grained; naive is alpha = 1.
const SES_ALPHAS: [f64; 8] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.6];
/// Holt (alpha, beta, phi) of the default banks.
const HOLT_PARAMS: [(f64, f64, f64); 4] = [
    (0.2, 0.05, 0.9),
    (0.5, 0.1, 0.85),
    (0.2, 0.2, 0.9),
    (0.35, 0.1, 1.0),
];
/// Holt-Winters (alpha, beta, phi) of the default banks; beta = 0 is seasonal SES.
const HW_PARAMS: [(f64, f64, f64); 5] = [
    (0.02, 0.0, 1.0),
    (0.1, 0.0, 1.0),
    (0.35, 0.0, 1.0),
    (0.2, 0.05, 0.9),
    (0.5, 0.1, 0.85),
];

/// Raw values kept for ARIMA fits.
pub(super) const RECENT: usize = 256;
/// The first background refit, in samples.
const FIRST_REFIT: u64 = 128;

impl BankSpec {
    /// A bank of the given members (1..=255 of them).
    pub fn new(members: Vec<Member>, params: ForecastParams) -> Result<Arc<BankSpec>> {
        params.validate()?;
        if members.is_empty() || members.len() > usize::from(u8::MAX) {
            return Err(PredictError::InvalidParam {
                name: "members",
                message: format!("need 1..=255 members, got {}", members.len()),
            });
        }
        for m in &members {
            m.validate()?;
        }
        let hmax = params.max_horizon as usize;
        let mut damp = Vec::with_capacity(members.len() * hmax);
        for m in &members {
            for h in 1..=hmax as u64 {
                damp.push(m.damp_sum(h));
            }
        }
        let mut offset = Vec::with_capacity(members.len() + 1);
        let mut w = 0;
        for m in &members {
            offset.push(w);
            w += m.width();
        }
        offset.push(w);
        let combine = (params.combine as usize).min(members.len());
        Ok(Arc::new(BankSpec {
            labels: members.iter().map(Member::label).collect(),
            naive: members.iter().position(|m| *m == Member::Naive),
            refit: members.iter().any(Member::needs_refit),
            arima: [
                members.contains(&Member::Arima { seasonal: false }),
                members.contains(&Member::Arima { seasonal: true }),
            ],
            members,
            hmax,
            decay: params.decay,
            combine,
            refit_every: u64::from(params.refit_every),
            damp,
            offset,
        }))
    }

    /// The default members of one family (or of all of them with `None`).
    pub fn default_members(family: Option<Family>) -> Vec<Member> {
        let mut out = Vec::new();
        let want = |f: Family| family.is_none_or(|x| x == f);
        if want(Family::Naive) {
            out.push(Member::Naive);
        }
        if want(Family::Ses) {
            out.extend(SES_ALPHAS.iter().map(|&alpha| Member::Ses { alpha }));
        }
        if want(Family::Holt) {
            out.extend(HOLT_PARAMS.iter().map(|&(alpha, beta, phi)| Member::Holt {
                alpha,
                beta,
                phi,
            }));
        }
        if want(Family::SeasonalNaive) {
            out.push(Member::SeasonalNaive);
        }
        if want(Family::HoltWinters) {
            out.extend(
                HW_PARAMS
                    .iter()
                    .map(|&(alpha, beta, phi)| Member::HoltWinters { alpha, beta, phi }),
            );
        }
        if want(Family::Arima) {
            out.push(Member::Arima { seasonal: false });
            out.push(Member::Arima { seasonal: true });
        }
        out
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member labels, in member order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Largest separately scored horizon.
    pub fn max_horizon(&self) -> u32 {
        self.hmax as u32
    }

    /// Index of the naive member, if the bank has one.
    pub fn naive_index(&self) -> Option<usize> {
        self.naive
    }

    /// True when the bank has members that need background refits.
    pub fn needs_refit(&self) -> bool {
        self.refit
    }

    fn damp(&self, m: usize, h: u64) -> f64 {
        if h >= 1 && h <= self.hmax as u64 {
            self.damp[m * self.hmax + h as usize - 1]
        } else {
            self.members[m].damp_sum(h)
        }
    }

    fn width(&self) -> usize {
        self.offset[self.members.len()]
    }
}

/// What the seasonal and ARIMA members share within one series.
#[derive(Debug, Clone)]
struct Extra {
    history: History,
    /// Ring of the newest raw values (slot `i % RECENT` holds value i).
    recent: Box<[f64]>,
    season: Option<Season>,
    /// Plain and seasonal ARIMA fits.
    arima: [Option<ArimaModel>; 2],
    next_refit: u64,
    refits: u32,
}

impl Extra {
    fn new() -> Extra {
        Extra {
            history: History::new(),
            recent: vec![0.0; RECENT].into_boxed_slice(),
            season: None,
            arima: [None, None],
            next_refit: FIRST_REFIT,
            refits: 0,
        }
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Extra>()
            + self.history.heap_bytes()
            + 8 * self.recent.len()
            + self.season.as_ref().map_or(0, Season::heap_bytes)
    }
}

/// Seasonal index and last-cycle value at one target sample (0 without a season).
#[derive(Clone, Copy, Default)]
struct At {
    index: f64,
    last_cycle: Option<f64>,
}

/// The running state of one bank over one series.
#[derive(Debug, Clone)]
pub struct Bank {
    spec: Arc<BankSpec>,
    /// Values seen.
    n: u64,
    /// Running state per member, packed at the spec's offsets (`[level, trend]` for the
    /// smoothing members, `[y, y-1, y-2, e, e-1]` for ARIMA).
    state: Box<[f64]>,
    /// Ring of past states: slot `k % hmax` holds the state after value k (1-based).
    hist: Box<[f64]>,
    /// `err[(h - 1) * members + m]`: EW mean absolute h-step error of member m.
    err: Box<[f64]>,
    /// Ring of the forecasts given: `given[slot * hmax + h - 1]` = forecast for h after value `slot`.
    given: Box<[f64]>,
    /// EW mean absolute error of the forecasts the bank actually gave, per horizon.
    emitted: Box<[f64]>,
    last: f64,
    extra: Option<Box<Extra>>,
}

impl Bank {
    /// An empty bank.
    pub fn new(spec: Arc<BankSpec>) -> Bank {
        let m = spec.members.len();
        let h = spec.hmax;
        let w = spec.width();
        Bank {
            n: 0,
            state: vec![0.0; w].into_boxed_slice(),
            hist: vec![0.0; w * h].into_boxed_slice(),
            err: vec![0.0; m * h].into_boxed_slice(),
            given: vec![0.0; h * h].into_boxed_slice(),
            emitted: vec![0.0; h].into_boxed_slice(),
            last: 0.0,
            extra: spec.refit.then(|| Box::new(Extra::new())),
            spec,
        }
    }

    /// The shared spec.
    pub fn spec(&self) -> &Arc<BankSpec> {
        &self.spec
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The last value seen (0 before any).
    pub fn last(&self) -> f64 {
        self.last
    }

    /// Bytes on the heap owned by this series (the spec is shared and not counted).
    pub fn heap_bytes(&self) -> usize {
        8 * (self.state.len()
            + self.hist.len()
            + self.err.len()
            + self.given.len()
            + self.emitted.len())
            + self.extra.as_ref().map_or(0, |e| e.heap_bytes())
    }

    /// The detected period in samples and its strength (share of within-cycle variance
    /// explained), if any.
    pub fn season(&self) -> Option<(u64, f64)> {
        let s = self.extra.as_ref()?.season.as_ref()?;
        Some((s.period(), s.strength()))
    }

    /// The installed ARIMA fits: plain, and on the deseasonalised series.
    pub fn arima(&self) -> [Option<ArimaModel>; 2] {
        self.extra.as_ref().map_or([None, None], |e| e.arima)
    }

    fn at(&self, target: u64) -> At {
        match self.extra.as_ref().and_then(|e| e.season.as_ref()) {
            Some(s) => At {
                index: s.index(target),
                last_cycle: Some(s.last_cycle(target)),
            },
            None => At::default(),
        }
    }

    /// Member `m`'s forecast `h` steps after the state `st` (its packed slice), for a
    /// target whose seasonal values are `at`.
    fn predict(&self, m: usize, st: &[f64], h: u64, at: At) -> f64 {
        match self.spec.members[m] {
            Member::Naive | Member::Ses { .. } => st[0],
            Member::Holt { .. } => st[0] + self.spec.damp(m, h) * st[1],
            Member::SeasonalNaive => at.last_cycle.unwrap_or(st[0]),
            Member::HoltWinters { .. } => st[0] + self.spec.damp(m, h) * st[1] + at.index,
            Member::Arima { seasonal } => {
                let off = if seasonal { at.index } else { 0.0 };
                let model = self
                    .extra
                    .as_ref()
                    .and_then(|e| e.arima[usize::from(seasonal)].as_ref());
                match model {
                    Some(md) => arima::forecast(md, &ArimaState::unpack(st), h) + off,
                    None => st[0] + off,
                }
            }
        }
    }

    /// Feeds one value; unacceptable values (NaN, infinite, beyond ±1e300) are ignored.
    pub fn update(&mut self, y: f64) {
        if !acceptable(y) {
            return;
        }
        let spec = Arc::clone(&self.spec);
        let nm = spec.members.len();
        let hmax = spec.hmax;
        let width = spec.width();
        let n = self.n;
        // Seasonal values at this sample (index n), read before the season learns it.
        let at_now = self.at(n);
        // Score every forecast made for this step: the one made h steps ago, h = 1..=hmax.
        let scored = (n as usize).min(hmax);
        let mut errs_now = [0.0f64; 256];
        for h in 1..=scored {
            let made_after = n + 1 - h as u64; // 1-based index of the value it was made after
            let count = made_after; // errors at h so far, this one included
            let w = spec.decay.max(1.0 / count as f64);
            let slot = (made_after % hmax as u64) as usize;
            for (m, e) in errs_now.iter_mut().enumerate().take(nm) {
                let o = slot * width + spec.offset[m];
                let past = &self.hist[o..o + spec.members[m].width()];
                *e = (y - self.predict(m, past, h as u64, at_now)).abs();
            }
            let errs = &mut self.err[(h - 1) * nm..h * nm];
            for (m, e) in errs.iter_mut().enumerate() {
                *e += w * (errs_now[m] - *e);
            }
            let e = (y - self.given[slot * hmax + h - 1]).abs();
            self.emitted[h - 1] += w * (e - self.emitted[h - 1]);
        }
        // Advance every member.
        for (m, member) in spec.members.iter().enumerate() {
            let (o, mw) = (spec.offset[m], member.width());
            let y_in = if n >= 2 && !matches!(member, Member::Naive | Member::SeasonalNaive) {
                let pred = self.predict(m, &self.state[o..o + mw], 1, at_now);
                let band = CLIP_SIGMAS * MAE_TO_SIGMA * self.err[m];
                y.clamp(pred - band, pred + band)
            } else {
                y
            };
            let pred1 = if matches!(member, Member::Arima { .. }) && n >= 1 {
                self.predict(m, &self.state[o..o + mw], 1, at_now)
            } else {
                0.0
            };
            let st = &mut self.state[o..o + mw];
            match *member {
                Member::Naive | Member::SeasonalNaive => {
                    st[0] = y;
                    st[1] = 0.0;
                }
                Member::Ses { alpha } => {
                    st[0] = if n == 0 {
                        y
                    } else {
                        st[0] + alpha * (y_in - st[0])
                    };
                    st[1] = 0.0;
                }
                Member::Holt { alpha, beta, phi } | Member::HoltWinters { alpha, beta, phi } => {
                    let x = if matches!(member, Member::HoltWinters { .. }) {
                        y_in - at_now.index
                    } else {
                        y_in
                    };
                    if n == 0 {
                        st[0] = x;
                        st[1] = 0.0;
                    } else {
                        let (l, b) = (st[0], st[1]);
                        let nl = alpha * x + (1.0 - alpha) * (l + phi * b);
                        st[1] = beta * (nl - l) + (1.0 - beta) * phi * b;
                        st[0] = nl;
                    }
                }
                Member::Arima { seasonal } => {
                    let off = if seasonal { at_now.index } else { 0.0 };
                    let x = y_in - off;
                    if n == 0 {
                        st.copy_from_slice(&[x, x, x, 0.0, 0.0]);
                    } else {
                        let mut s = ArimaState::unpack(st);
                        s.push(x, pred1 - off);
                        st.copy_from_slice(&s.pack());
                    }
                }
            }
            // Cannot happen for inputs within ±1e300, but a member must never go bad.
            if !st.iter().all(|v| v.is_finite()) {
                st.fill(0.0);
                st[0] = y;
                if mw == 5 {
                    st[1] = y;
                    st[2] = y;
                }
            }
        }
        if let Some(extra) = self.extra.as_mut() {
            if let Some(s) = extra.season.as_mut() {
                s.observe(n, y);
            }
            extra.history.push(y);
            extra.recent[(n % RECENT as u64) as usize] = y;
        }
        self.n = n + 1;
        self.last = y;
        let slot = (self.n % hmax as u64) as usize;
        self.hist[slot * width..(slot + 1) * width].copy_from_slice(&self.state);
        for h in 1..=hmax {
            self.given[slot * hmax + h - 1] = self.mean(h as u64);
        }
    }

    /// True when a background refit is due (period detection and ARIMA fit). It stays
    /// true until a result is installed: keep at most one job in flight per series.
    pub fn refit_due(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| self.n >= e.next_refit)
    }

    /// A refit job owning the data it needs (history, recent values, the current
    /// season), for a sampling interval of `step_ms` (candidate periods of an hour, a
    /// day and a week are derived from it; without it no period is sought). `None`
    /// when the bank has no seasonal or ARIMA member.
    pub fn refit_job(&self, step_ms: Option<f64>) -> Option<RefitJob> {
        let extra = self.extra.as_ref()?;
        let (blocks, width, start) = extra.history.snapshot();
        let len = (self.n as usize).min(RECENT);
        let first = self.n - len as u64;
        let recent: Vec<f64> = (first..self.n)
            .map(|i| extra.recent[(i % RECENT as u64) as usize])
            .collect();
        Some(RefitJob {
            n: self.n,
            step_ms,
            blocks,
            width,
            start,
            recent,
            recent_start: first,
            current: extra.season.as_ref().map(|s| {
                let p = s.period();
                let w = season::slot_width(p);
                let profile = (0..p.div_ceil(w)).map(|k| s.index(k * w)).collect();
                (p, s.strength(), profile)
            }),
            arima: self.spec.arima,
        })
    }

    /// Installs a refit result (from a job of this bank; results of an older job than
    /// the last installed one are ignored).
    pub fn install(&mut self, result: RefitResult) {
        let Some(extra) = self.extra.as_mut() else {
            return;
        };
        let every = self.spec.refit_every;
        if result.n + FIRST_REFIT <= extra.next_refit && extra.refits > 0 {
            return;
        }
        match result.season {
            SeasonChange::Keep => {}
            SeasonChange::Strength(s) => {
                if let Some(cur) = extra.season.as_mut() {
                    cur.set_strength(s);
                }
            }
            SeasonChange::Install(fit) => extra.season = Some(Season::from_fit(&fit)),
            SeasonChange::Drop => extra.season = None,
        }
        for (slot, model) in extra.arima.iter_mut().zip(result.arima) {
            if model.is_some() {
                *slot = model;
            }
        }
        extra.refits += 1;
        extra.next_refit = result.n + result.n.clamp(FIRST_REFIT, every.max(1));
    }

    /// Runs a due refit inline (offline callers: `plb forecast`, benchmarks).
    pub fn refit_inline(&mut self, step_ms: Option<f64>) {
        if self.refit_due()
            && let Some(job) = self.refit_job(step_ms)
        {
            self.install(job.run());
        }
    }

    /// The largest horizon (<= `h`, <= max horizon) with at least one scored error; 0 if none.
    fn scored_horizon(&self, h: u64) -> usize {
        let h = h.clamp(1, self.spec.hmax as u64);
        h.min(self.n.saturating_sub(1)) as usize
    }

    /// The members used for horizon `h`, best first: the lowest recent errors at `h`
    /// (or at the largest horizon scored so far). Ties go to the earlier member.
    fn top(&self, h: u64) -> ([usize; 8], usize) {
        let nm = self.spec.members.len();
        let k = self.spec.combine.max(1);
        let mut idx = [0usize; 8];
        let hs = self.scored_horizon(h);
        if hs == 0 {
            idx[0] = self.spec.naive.unwrap_or(0);
            return (idx, 1);
        }
        let raw = &self.err[(hs - 1) * nm..hs * nm];
        // A seasonal or ARIMA member is scored from the start but chosen only once its
        // refit state exists (before, it merely duplicates a plain member).
        let (season, fitted) = self.extra.as_ref().map_or((false, [false; 2]), |e| {
            (
                e.season.is_some(),
                [e.arima[0].is_some(), e.arima[1].is_some()],
            )
        });
        let ready = |m: usize| match self.spec.members[m] {
            Member::SeasonalNaive | Member::HoltWinters { .. } => season,
            Member::Arima { seasonal: false } => fitted[0],
            Member::Arima { seasonal: true } => season && fitted[1],
            _ => true,
        };
        let any_ready = (0..nm).any(ready);
        let eligible = |m: usize| !any_ready || ready(m);
        let naive = self.spec.naive.filter(|_| season || fitted[0]);
        let score = |m: usize| {
            if Some(m) == naive {
                raw[m] * (1.0 - NAIVE_EDGE)
            } else {
                raw[m]
            }
        };
        let mut len = 0;
        for m in (0..nm).filter(|&m| eligible(m)) {
            // Insertion into the sorted top-k.
            let mut pos = len;
            while pos > 0 && score(m) < score(idx[pos - 1]) {
                pos -= 1;
            }
            if pos < k {
                let end = len.min(k - 1);
                let mut j = end;
                while j > pos {
                    idx[j] = idx[j - 1];
                    j -= 1;
                }
                idx[pos] = m;
                len = (len + 1).min(k);
            }
        }
        (idx, len)
    }

    /// The best member for horizon `h` now.
    pub fn choose(&self, h: u64) -> usize {
        self.top(h).0[0]
    }

    fn mean(&self, h: u64) -> f64 {
        let (idx, len) = self.top(h);
        let sum: f64 = idx[..len].iter().map(|&m| self.member_mean(m, h)).sum();
        clean_or(sum / len as f64, self.last)
    }

    /// Member `m`'s point forecast `h` steps ahead.
    pub fn member_mean(&self, m: usize, h: u64) -> f64 {
        let Some(member) = self.spec.members.get(m) else {
            return self.last;
        };
        let h = h.max(1);
        let o = self.spec.offset[m];
        let st = &self.state[o..o + member.width()];
        let at = if member.needs_refit() {
            self.at((self.n + h).saturating_sub(1))
        } else {
            At::default()
        };
        clean_or(self.predict(m, st, h, at), st[0])
    }

    /// Member `m`'s recent mean absolute error at horizon `h` (`None` before any is scored).
    pub fn member_mae(&self, m: usize, h: u64) -> Option<f64> {
        let hs = self.scored_horizon(h);
        (hs > 0 && m < self.spec.members.len())
            .then(|| clean(self.err[(hs - 1) * self.spec.members.len() + m]))
    }

    /// Recent mean absolute error of the forecasts this bank gave at horizon `h`.
    pub fn emitted_mae(&self, h: u64) -> Option<f64> {
        let hs = self.scored_horizon(h);
        (hs > 0).then(|| clean(self.emitted[hs - 1]))
    }

    /// Number of scored forecasts behind the errors at horizon `h`.
    pub fn scored_count(&self, h: u64) -> u64 {
        let hs = self.scored_horizon(h) as u64;
        if hs == 0 { 0 } else { self.n - hs }
    }

    fn interval(mean: f64, mae: f64, h: u64, hs: usize) -> Forecast {
        let sigma = if hs == 0 {
            0.0
        } else {
            mae * MAE_TO_SIGMA * (h as f64 / hs as f64).sqrt()
        };
        let half = clean(INTERVAL_Z * sigma);
        Forecast {
            mean,
            lo: clean_or(mean - half, mean),
            hi: clean_or(mean + half, mean),
        }
    }

    /// Member `m`'s forecast with its interval: sigma from its recent error at the
    /// horizon, scaled by sqrt for horizons beyond those scored.
    pub fn member_forecast(&self, m: usize, h: u64) -> Forecast {
        if self.n == 0 {
            return Forecast::default();
        }
        let h = h.max(1);
        let hs = self.scored_horizon(h);
        let mae = if hs == 0 {
            0.0
        } else {
            self.err[(hs - 1) * self.spec.members.len() + m]
        };
        Self::interval(self.member_mean(m, h), mae, h, hs)
    }

    /// The bank's forecast: the best member's (or the mean of the best few), with an
    /// interval from the recent errors of the forecasts the bank actually gave.
    pub fn forecast(&self, h: u32) -> Forecast {
        if self.n == 0 {
            return Forecast::default();
        }
        let h = u64::from(h.max(1));
        let hs = self.scored_horizon(h);
        let mae = if hs == 0 { 0.0 } else { self.emitted[hs - 1] };
        Self::interval(self.mean(h), mae, h, hs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(family: Option<Family>) -> Bank {
        let spec = BankSpec::new(BankSpec::default_members(family), ForecastParams::default())
            .expect("spec");
        Bank::new(spec)
    }

    #[test]
    fn empty_bank_forecasts_zero() {
        let b = bank(None);
        assert_eq!(b.forecast(3), Forecast::default());
        assert_eq!(b.member_mae(0, 1), None);
    }

    #[test]
    fn bad_params_are_refused() {
        let p = ForecastParams::default();
        assert!(BankSpec::new(vec![Member::Ses { alpha: 0.0 }], p).is_err());
        assert!(
            BankSpec::new(
                vec![Member::Holt {
                    alpha: 0.5,
                    beta: 0.1,
                    phi: 1.5
                }],
                p
            )
            .is_err()
        );
        assert!(BankSpec::new(vec![], p).is_err());
        let p = ForecastParams {
            max_horizon: 0,
            ..p
        };
        assert!(BankSpec::new(vec![Member::Naive], p).is_err());
    }

    #[test]
    fn member_errors_match_a_hand_computation() {
        // Naive alone: the h-step error on a ramp of slope 2 is exactly 2h.
        let spec = BankSpec::new(
            vec![Member::Naive],
            ForecastParams {
                max_horizon: 3,
                decay: 0.5,
                combine: 1,
                ..Default::default()
            },
        )
        .expect("spec");
        let mut b = Bank::new(spec);
        for i in 0..20 {
            b.update(2.0 * i as f64);
        }
        for h in 1..=3 {
            assert_eq!(b.member_mae(0, h), Some(2.0 * h as f64));
            assert_eq!(b.emitted_mae(h), Some(2.0 * h as f64));
        }
        assert_eq!(b.scored_count(1), 19);
        assert_eq!(b.scored_count(3), 17);
    }

    #[test]
    fn combine_averages_the_best_members() {
        let members = vec![
            Member::Naive,
            Member::Ses { alpha: 0.5 },
            Member::Ses { alpha: 0.05 },
        ];
        let one = ForecastParams {
            combine: 1,
            ..Default::default()
        };
        let two = ForecastParams {
            combine: 2,
            ..Default::default()
        };
        let mut a = Bank::new(BankSpec::new(members.clone(), one).expect("spec"));
        let mut b = Bank::new(BankSpec::new(members, two).expect("spec"));
        for i in 0..100 {
            let y = (i % 5) as f64;
            a.update(y);
            b.update(y);
        }
        let best = a.choose(1);
        let mut errs: Vec<(f64, usize)> = (0..3)
            .map(|m| (a.member_mae(m, 1).expect("mae"), m))
            .collect();
        errs.sort_by(|x, y| x.0.total_cmp(&y.0));
        assert_eq!(best, errs[0].1);
        let want = (a.member_mean(errs[0].1, 1) + a.member_mean(errs[1].1, 1)) / 2.0;
        assert!((b.forecast(1).mean - want).abs() < 1e-12);
        assert!(
            ForecastParams {
                combine: 9,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn unacceptable_values_are_ignored() {
        let mut b = bank(None);
        for v in [f64::NAN, f64::INFINITY, 1e301] {
            b.update(v);
        }
        assert_eq!(b.count(), 0);
        b.update(1.0);
        assert_eq!(b.count(), 1);
        assert_eq!(b.forecast(1).mean, 1.0);
    }
}
