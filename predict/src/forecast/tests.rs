//! Known-answer tests of the forecasters on synthetic series, and a seeded fuzz loop
//! for the no-NaN-out property.
use super::*;
use crate::testutil::Rng;

fn feed(f: &mut dyn Forecaster, ys: impl IntoIterator<Item = f64>) {
    for y in ys {
        f.update(y);
    }
}

#[test]
fn linear_ramp_is_forecast_with_its_slope() {
    for noise in [0.0, 1.0] {
        let mut rng = Rng::new(42);
        let mut auto = AutoForecaster::new();
        let slope = 2.0;
        let n = 400;
        feed(
            &mut auto,
            (0..n).map(|t| 5.0 + slope * t as f64 + noise * rng.normal()),
        );
        let last_true = 5.0 + slope * (n - 1) as f64;
        let f1 = auto.forecast(1).mean;
        let f6 = auto.forecast(6).mean;
        let est = (f6 - f1) / 5.0;
        assert!(
            (est - slope).abs() < 0.1 * slope,
            "noise {noise}: slope {est} from {} / {}",
            auto.chosen(1),
            auto.chosen(6)
        );
        assert!(
            (f1 - (last_true + slope)).abs() < 0.5 + 2.0 * noise,
            "noise {noise}: f1 {f1}"
        );
        assert_eq!(auto.chosen_family(6), Family::Holt);
        // The interval covers the truth at h = 6.
        let f = auto.forecast(6);
        let truth = last_true + 6.0 * slope;
        assert!(f.lo <= truth && truth <= f.hi, "{f:?} vs {truth}");
    }
}

#[test]
fn level_shift_is_adopted() {
    let mut rng = Rng::new(1);
    let mut auto = AutoForecaster::new();
    feed(&mut auto, (0..300).map(|_| 10.0 + 0.5 * rng.normal()));
    feed(&mut auto, (0..60).map(|_| 50.0 + 0.5 * rng.normal()));
    for h in [1, 3, 6] {
        let f = auto.forecast(h).mean;
        assert!((f - 50.0).abs() < 1.5, "h={h}: {f} ({})", auto.chosen(h));
    }
}

#[test]
fn noise_is_smoothed_below_the_naive_error() {
    let mut rng = Rng::new(2);
    let mut auto = AutoForecaster::new();
    feed(&mut auto, (0..2_000).map(|_| 100.0 + rng.normal()));
    let (mae, naive) = (auto.mae(1).expect("mae"), auto.naive_mae(1).expect("naive"));
    // Naive on white noise: E|e1 - e2| = 2/sqrt(pi) = 1.13; the mean does 0.8.
    assert!(mae < 0.9 && naive > 1.0, "auto {mae} naive {naive}");
    assert_eq!(auto.chosen_family(1), Family::Ses);
    let fams = auto.family_errors(1);
    assert_eq!(fams.len(), 6);
    let ses = fams.iter().find(|f| f.family == Family::Ses).expect("ses");
    assert!(ses.relative_to_naive.expect("ratio") < 0.8);
}

#[test]
fn family_forecasters_have_their_names_and_tune() {
    let mut models: Vec<Box<dyn Forecaster>> = vec![
        Box::new(Naive::new()),
        Box::new(Ses::new()),
        Box::new(Holt::new()),
        Box::new(AutoForecaster::new()),
    ];
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["naive", "ses", "holt", "auto"]);
    for m in &mut models {
        feed(m.as_mut(), (0..50).map(|t| t as f64));
        assert!(m.forecast(1).mean > 45.0, "{}", m.name());
    }
    let holt = Holt::with_params(ForecastParams {
        max_horizon: 12,
        ..Default::default()
    })
    .expect("params");
    assert_eq!(holt.bank().spec().max_horizon(), 12);
}

#[test]
fn constant_and_empty_series() {
    let auto = AutoForecaster::new();
    assert_eq!(auto.forecast(1), Forecast::default());
    assert_eq!(auto.mae(1), None);
    let mut auto = AutoForecaster::new();
    feed(&mut auto, std::iter::repeat_n(7.0, 100));
    let f = auto.forecast(6);
    assert_eq!((f.mean, f.lo, f.hi), (7.0, 7.0, 7.0));
}

/// Whatever goes in, nothing non-finite comes out.
#[test]
fn fuzz_no_nan_or_infinity_leaves() {
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        -1e300,
        1e301,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.0,
        -0.0,
    ];
    let mut rng = Rng::new(0xF00D);
    for case in 0..300 {
        let mut models: Vec<Box<dyn Forecaster>> = vec![
            Box::new(AutoForecaster::new()),
            Box::new(Holt::new()),
            Box::new(Naive::new()),
        ];
        let len = (rng.next_u64() % 200) as usize;
        let scale = [1.0, 1e6, 1e150, 1e300][case % 4];
        for _ in 0..len {
            let y = match rng.next_u64() % 5 {
                0 => specials[(rng.next_u64() % specials.len() as u64) as usize],
                1 => scale * if rng.uniform() < 0.5 { 1.0 } else { -1.0 },
                _ => scale * rng.normal(),
            };
            for m in &mut models {
                m.update(y);
            }
        }
        for m in &models {
            for h in [0, 1, 3, 6, 7, 100, u32::MAX] {
                let f = m.forecast(h);
                assert!(
                    f.mean.is_finite() && f.lo.is_finite() && f.hi.is_finite(),
                    "case {case} {} h={h}: {f:?}",
                    m.name()
                );
                assert!(f.lo <= f.mean && f.mean <= f.hi, "case {case}: {f:?}");
            }
        }
    }
}

/// A daily cycle at 5-minute samples: 288 per day, with noise.
fn daily_series(days: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..days * 288)
        .map(|t| {
            let ph = (t % 288) as f64 / 288.0 * std::f64::consts::TAU;
            100.0 + 40.0 * ph.sin() + 15.0 * (2.0 * ph).cos() + 3.0 * rng.normal()
        })
        .collect()
}

#[test]
fn seasonal_member_wins_on_a_seasonal_series() {
    let ys = daily_series(8, 21);
    let mut auto = AutoForecaster::new();
    for &y in &ys {
        auto.update(y);
        auto.refit_inline(Some(300_000.0));
    }
    let (period, strength) = auto.bank().season().expect("period found");
    assert_eq!(period, 288);
    assert!(strength > 0.8, "{strength}");
    for h in [1, 3, 6] {
        let label = auto.chosen(h);
        let seasonal = matches!(
            auto.chosen_family(h),
            Family::HoltWinters | Family::SeasonalNaive
        ) || label == "arima+season";
        assert!(seasonal, "h={h}: {label}");
    }
    // The seasonal forecast beats the best non-seasonal member by a wide margin at h=6.
    let fams = auto.family_errors(6);
    let err = |f: Family| fams.iter().find(|e| e.family == f).map(|e| e.mae);
    let hw = err(Family::HoltWinters).expect("hw");
    let holt = err(Family::Holt).expect("holt");
    assert!(hw < 0.8 * holt, "hw {hw} holt {holt}");
    // Next value's forecast lands near the truth.
    let t = ys.len();
    let ph = (t % 288) as f64 / 288.0 * std::f64::consts::TAU;
    let truth = 100.0 + 40.0 * ph.sin() + 15.0 * (2.0 * ph).cos();
    assert!((auto.forecast(1).mean - truth).abs() < 8.0);
}

#[test]
fn refit_job_is_due_until_installed_and_bounded() {
    let mut auto = AutoForecaster::new();
    let ys = daily_series(3, 5);
    let mut jobs = 0;
    for (i, &y) in ys.iter().enumerate() {
        auto.update(y);
        if auto.refit_due() {
            let job = auto.refit_job(Some(300_000.0)).expect("job");
            assert_eq!(job.samples(), i as u64 + 1);
            // Still due while the job runs elsewhere.
            assert!(auto.refit_due());
            auto.install(job.run());
            assert!(!auto.refit_due());
            jobs += 1;
        }
    }
    // 128, 256, 512, then every 256.
    assert_eq!(jobs, 4, "{jobs}");
    assert!(auto.bank().arima()[0].is_some());
    assert!(
        auto.bank().heap_bytes() < 32 * 1024,
        "{}",
        auto.bank().heap_bytes()
    );
    // Banks without seasonal or ARIMA members never need a refit.
    let mut holt = Holt::new();
    feed(&mut holt, ys.iter().copied());
    assert!(!holt.refit_due());
    assert!(holt.refit_job(Some(300_000.0)).is_none());
    assert!(holt.bank().heap_bytes() < 2_000);
}

#[test]
fn without_refits_the_full_bank_forecasts_like_the_plain_one() {
    let classic: Vec<Member> = BankSpec::default_members(None)
        .into_iter()
        .filter(|m| matches!(m.family(), Family::Naive | Family::Ses | Family::Holt))
        .collect();
    let spec = BankSpec::new(classic, ForecastParams::default()).expect("spec");
    let mut plain = AutoForecaster::with_spec(spec);
    let mut full = AutoForecaster::new();
    let ys = daily_series(2, 9);
    for &y in &ys {
        plain.update(y);
        full.update(y);
        for h in [1, 3, 6] {
            assert_eq!(plain.forecast(h), full.forecast(h));
        }
    }
    // Once refits run, the seasonal members take over.
    for &y in &ys {
        full.update(y);
        full.refit_inline(Some(300_000.0));
    }
    assert!(full.bank().season().is_some());
}
