//! Numeric guards: the input range every model accepts and the clamp every output passes.
use crate::error::{PredictError, Result};

/// Largest accepted input magnitude. Smoothing and error tracking stay far from
/// `f64::MAX` below it, so no intermediate can overflow.
pub const MAX_INPUT: f64 = 1e300;

/// Largest magnitude any output takes; larger or infinite results are clamped to it.
pub const MAX_OUTPUT: f64 = 1e306;

/// Checks that `value` is finite and within ±[`MAX_INPUT`].
pub fn check_input(name: &str, value: f64) -> Result<f64> {
    if !value.is_finite() {
        return Err(PredictError::NonFinite {
            name: name.to_string(),
            value,
        });
    }
    if value.abs() > MAX_INPUT {
        return Err(PredictError::OutOfRange {
            name: name.to_string(),
            value,
            limit: MAX_INPUT,
        });
    }
    Ok(value)
}

/// True when `value` would pass [`check_input`].
pub fn acceptable(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_INPUT
}

/// Makes an output safe to hand out: NaN becomes `fallback` (itself cleaned), and
/// anything beyond ±[`MAX_OUTPUT`] (infinities included) is clamped.
pub fn clean_or(value: f64, fallback: f64) -> f64 {
    if value.is_nan() {
        if fallback.is_nan() {
            0.0
        } else {
            fallback.clamp(-MAX_OUTPUT, MAX_OUTPUT)
        }
    } else {
        value.clamp(-MAX_OUTPUT, MAX_OUTPUT)
    }
}

/// [`clean_or`] with 0 as the fallback.
pub fn clean(value: f64) -> f64 {
    clean_or(value, 0.0)
}

/// Median of a slice (sorts a copy); `None` when empty. Ignores nothing: callers pass finite values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        v[n / 2 - 1] / 2.0 + v[n / 2] / 2.0
    })
}

/// Median and median absolute deviation (unscaled) of a slice; `None` when empty.
pub fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    Some((m, median(&dev)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_never_returns_non_finite() {
        for v in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            -1e308,
            3.0,
        ] {
            assert!(clean(v).is_finite());
            assert!(clean_or(v, f64::NAN).is_finite());
        }
        assert_eq!(clean(3.0), 3.0);
        assert_eq!(clean_or(f64::NAN, 2.0), 2.0);
    }

    #[test]
    fn input_check_names_the_problem() {
        assert!(matches!(
            check_input("x", f64::NAN),
            Err(PredictError::NonFinite { .. })
        ));
        assert!(matches!(
            check_input("x", 1e301),
            Err(PredictError::OutOfRange { .. })
        ));
        assert_eq!(check_input("x", -1e300), Ok(-1e300));
    }

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]), Some((3.0, 1.0)));
        // Halves before adding: no overflow at the extremes.
        assert_eq!(median(&[1e300, 1e300]), Some(1e300));
    }
}
