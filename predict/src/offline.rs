//! Offline forecasting for `plb forecast`: a `timestamp,value` CSV parser and a
//! point-by-point rolling forecast of a whole series.
use crate::error::{PredictError, Result};
use crate::forecast::{AutoForecaster, BankSpec, ForecastParams, Forecaster};
use crate::num::{acceptable, check_input};

/// Largest horizon scored separately by [`forecast_series`]; longer ones reuse its errors.
const MAX_SCORED_HORIZON: u32 = 64;

/// One parsed CSV row.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The timestamp column, as written (trimmed, quotes removed).
    pub timestamp: String,
    /// The value.
    pub value: f64,
}

/// Feeds `values` to an [`AutoForecaster`] one at a time and, after each value `t`
/// (0-based), forecasts every horizon in `horizons`: rows `(t, h, yhat)` in order of
/// `t`, then of `horizons` as given. Horizons of 0 and values that are NaN, infinite or
/// beyond ±1e300 are skipped (no row for them, and the model does not see them); no
/// row is written before the first usable value. Every `yhat` is finite.
pub fn forecast_series(values: &[f64], horizons: &[u32]) -> Vec<(usize, u32, f64)> {
    forecast_series_with_step(values, horizons, None)
}

/// [`forecast_series`] for values `step_ms` apart: the seasonal members then look for
/// hourly, daily and weekly periods. The background refits (period detection, ARIMA
/// fit) run inline whenever due.
pub fn forecast_series_with_step(
    values: &[f64],
    horizons: &[u32],
    step_ms: Option<f64>,
) -> Vec<(usize, u32, f64)> {
    let horizons: Vec<u32> = horizons.iter().copied().filter(|&h| h > 0).collect();
    let hmax = horizons
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .clamp(6, MAX_SCORED_HORIZON);
    let params = ForecastParams {
        max_horizon: hmax,
        ..ForecastParams::default()
    };
    let mut model = match BankSpec::new(BankSpec::default_members(None), params) {
        Ok(spec) => AutoForecaster::with_spec(spec),
        Err(_) => AutoForecaster::new(),
    };
    let mut out = Vec::with_capacity(values.len() * horizons.len());
    for (t, &v) in values.iter().enumerate() {
        if !acceptable(v) {
            continue;
        }
        model.update(v);
        model.refit_inline(step_ms);
        for &h in &horizons {
            out.push((t, h, model.forecast(h).mean));
        }
    }
    out
}

/// Parses a horizon list such as `1,3,6` (positive integers, comma separated).
pub fn parse_horizons(input: &str) -> Result<Vec<u32>> {
    let err = |message: String| PredictError::Horizons {
        input: input.to_string(),
        message,
    };
    let mut out = Vec::new();
    for part in input.split(',') {
        let part = part.trim();
        let h: u32 = part
            .parse()
            .map_err(|_| err(format!("`{part}` is not a positive integer")))?;
        if h == 0 {
            return Err(err("horizons start at 1".to_string()));
        }
        out.push(h);
    }
    Ok(out)
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .trim()
}

/// Parses a `timestamp,value` CSV. The first line may be a header (it is skipped when
/// its value column is not a number); blank lines are skipped; fields may be quoted;
/// extra columns are an error. Errors name the 1-based line. Values must be finite and
/// within ±1e300.
pub fn parse_csv(text: &str) -> Result<Vec<Point>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: String| PredictError::Csv {
            line: line_no,
            message,
        };
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 2 {
            return Err(err(format!(
                "expected 2 columns `timestamp,value`, found {}",
                fields.len()
            )));
        }
        let timestamp = unquote(fields[0]);
        let value_text = unquote(fields[1]);
        let value: f64 = match value_text.parse() {
            Ok(v) => v,
            Err(_) if out.is_empty() && line_no == 1 => continue, // header
            Err(_) => return Err(err(format!("value `{value_text}` is not a number"))),
        };
        check_input("value", value).map_err(|e| err(e.to_string()))?;
        if timestamp.is_empty() {
            return Err(err("empty timestamp".to_string()));
        }
        out.push(Point {
            timestamp: timestamp.to_string(),
            value,
        });
    }
    Ok(out)
}

/// Seconds since the Unix epoch of a timestamp written as Unix seconds (`1393424700`)
/// or as a UTC date-time `YYYY-MM-DD HH:MM[:SS[.frac]]` (a `T` may replace the space,
/// a trailing `Z` is accepted). `None` when it is neither.
pub fn timestamp_seconds(ts: &str) -> Option<f64> {
    let ts = ts.trim();
    if let Ok(v) = ts.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let ts = ts.strip_suffix('Z').unwrap_or(ts);
    let (date, time) = ts.split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: f64 = match t.next() {
        Some(s) => s.parse().ok()?,
        None => 0.0,
    };
    if t.next().is_some() || !(0..24).contains(&hour) || !(0..60).contains(&minute) {
        return None;
    }
    if !(0.0..61.0).contains(&second) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3_600 + minute * 60) as f64 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_t_then_horizon_and_skip_bad_values() {
        let rows = forecast_series(&[1.0, f64::NAN, 2.0, 3.0], &[1, 0, 3]);
        let keys: Vec<(usize, u32)> = rows.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(keys, vec![(0, 1), (0, 3), (2, 1), (2, 3), (3, 1), (3, 3)]);
        assert_eq!(rows[0].2, 1.0);
        assert!(rows.iter().all(|r| r.2.is_finite()));
        assert!(forecast_series(&[], &[1]).is_empty());
        assert!(forecast_series(&[1.0], &[]).is_empty());
    }

    #[test]
    fn long_horizons_are_finite() {
        let values: Vec<f64> = (0..200)
            .map(|i| 1e300 * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let rows = forecast_series(&values, &[1, 100, u32::MAX]);
        assert!(rows.iter().all(|r| r.2.is_finite()));
    }

    #[test]
    fn horizons_parse_and_refuse_junk() {
        assert_eq!(parse_horizons("1, 3,6").expect("ok"), vec![1, 3, 6]);
        assert!(parse_horizons("1,,3").is_err());
        assert!(parse_horizons("0").is_err());
        assert!(parse_horizons("-1").is_err());
        assert!(parse_horizons("x").is_err());
    }

    #[test]
    fn csv_with_and_without_header() {
        let with = parse_csv("timestamp,value\r\n2014-02-14 14:30:00,0.132\n\n\"t2\",\"1e3\"\n")
            .expect("parse");
        assert_eq!(with.len(), 2);
        assert_eq!(with[0].timestamp, "2014-02-14 14:30:00");
        assert_eq!(with[1].value, 1000.0);
        let without = parse_csv("1,2\n2,3").expect("parse");
        assert_eq!(without.len(), 2);
        assert!(parse_csv("").expect("empty").is_empty());
    }

    #[test]
    fn csv_errors_name_the_line() {
        let cases = [
            ("timestamp,value\n1,2\n3,abc\n", 3, "not a number"),
            ("1,2\n3,4,5\n", 2, "2 columns"),
            ("1,2\n3,NaN\n", 2, "not a finite"),
            ("1,2\n3,inf\n", 2, "not a finite"),
            ("1,2\n3,1e305\n", 2, "range"),
            ("1,2\n,4\n", 2, "empty timestamp"),
            ("just-one-column\n", 1, "2 columns"),
        ];
        for (text, line, needle) in cases {
            match parse_csv(text) {
                Err(PredictError::Csv { line: l, message }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(message.contains(needle), "{message} lacks {needle}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        // A non-numeric value on the first line is a header only there.
        assert!(parse_csv("1,2\nt,v\n").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_seconds("1970-01-01 00:00:00"), Some(0.0));
        assert_eq!(
            timestamp_seconds("2014-02-26 13:45:00.000000"),
            Some(1_393_422_300.0)
        );
        assert_eq!(
            timestamp_seconds("2014-02-26T13:45Z"),
            Some(1_393_422_300.0)
        );
        assert_eq!(
            timestamp_seconds("2000-03-01 00:00:01"),
            Some(951_868_801.0)
        );
        assert_eq!(timestamp_seconds("12.5"), Some(12.5));
        assert_eq!(timestamp_seconds("2014-13-01 00:00"), None);
        assert_eq!(timestamp_seconds("yesterday"), None);
    }
}
