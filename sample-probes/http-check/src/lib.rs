//! Sample probe `http-check`: an HTTP request to the node's own endpoint, judged and timed.
//!
//! Config:
//! - `path` (default `/health`): the path to request on the node.
//! - `method` (default `GET`).
//! - `expect-status` (default `200-399`): accepted statuses, a comma list of
//!   codes (`200`), ranges (`200-204`) and classes (`2xx`).
//! - `body-contains` (optional): text the body must contain.
//! - `timeout-ms` (default 2000, capped by what is left of the run's budget).
//! - `body` (optional): the request body; `header:NAME` (optional, any
//!   number): request headers, e.g. `header:accept` = `application/json`.
//! - `json-field` (optional): a top-level numeric field of a JSON body to report
//!   as a metric (e.g. `queue_depth` from a status page), named by
//!   `json-metric` (default: the field name, lowercased, `_` turned into `-`).
//!
//! Metrics: `http-connect-ms`, `http-first-byte-ms`, `http-total-ms`,
//! `http-status`, `http-body-bytes`, and the `json-field` metric if set.
//!
//! Outcomes: no response (refused, timed out), an unexpected status or a body
//! without `body-contains` is `Unhealthy`; bad config, or a `json-field` that
//! is missing or not a number, is `Broken`.

use std::fmt;

use plb_guest_sdk::{Context, Failure, Probe, Report, ResultExt, export_probe, http};

struct HttpCheck;

/// The accepted statuses: inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    fn parse(spec: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let range =
                if let Some(class) = part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
                    let digit: u16 = class
                        .parse()
                        .map_err(|_| format!("bad status class {part:?}"))?;
                    if !(1..=5).contains(&digit) {
                        return Err(format!("bad status class {part:?}"));
                    }
                    (digit * 100, digit * 100 + 99)
                } else if let Some((lo, hi)) = part.split_once('-') {
                    let lo = parse_status(lo)?;
                    let hi = parse_status(hi)?;
                    if lo > hi {
                        return Err(format!("empty status range {part:?}"));
                    }
                    (lo, hi)
                } else {
                    let code = parse_status(part)?;
                    (code, code)
                };
            ranges.push(range);
        }
        Ok(StatusSet(ranges))
    }

    fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

fn parse_status(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!("bad status code {:?}", text.trim())),
    }
}

/// The metric name for a JSON field: lowercase, `_` and spaces turned into `-`.
fn metric_name_for_field(field: &str) -> String {
    field
        .trim()
        .chars()
        .map(|c| {
            if c == '_' || c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The numeric value of top-level `field` in a JSON object body.
fn json_number(body: &[u8], field: &str) -> Result<f64, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let object = value.as_object().ok_or("body is not a JSON object")?;
    match object.get(field) {
        None => Err(format!("field `{field}` is missing")),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("field `{field}` is not a number: {v}")),
    }
}

impl Probe for HttpCheck {
    fn run(ctx: Context) -> Result<Report, Failure> {
        let path = ctx.config_or("path", "/health");
        let method = ctx.config_or("method", "GET").trim().to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Failure::broken(format!(
                "config `method`: bad method {method:?}"
            )));
        }
        let expect = StatusSet::parse(ctx.config_or("expect-status", "200-399"))
            .or_broken("config `expect-status`")?;
        let budget = ctx.remaining_ms().max(1);
        let timeout_ms = ctx.config_parse("timeout-ms", 2_000u32)?.clamp(1, budget);

        let mut request = http::Request::new(method, path).timeout_ms(timeout_ms);
        for (key, value) in ctx.config_entries() {
            if let Some(name) = key.strip_prefix("header:") {
                request = request.header(name.trim(), value);
            }
        }
        if let Some(body) = ctx.config("body") {
            request = request.body(body);
        }

        let response = request.send()?;

        if !expect.contains(response.status) {
            return Err(Failure::unhealthy(format!(
                "{path} answered {}, expected {expect}",
                response.status
            )));
        }
        if let Some(needle) = ctx.config("body-contains")
            && !response.text().contains(needle)
        {
            return Err(Failure::unhealthy(format!(
                "{path} answered {} without {needle:?} in its body",
                response.status
            )));
        }

        let mut report = Report::new()
            .metric("http-connect-ms", response.connect_ms)
            .metric("http-first-byte-ms", response.first_byte_ms)
            .metric("http-total-ms", response.total_ms)
            .metric("http-status", response.status)
            .metric("http-body-bytes", response.body.len() as f64);
        if let Some(field) = ctx.config("json-field") {
            let value = json_number(&response.body, field).or_broken("config `json-field`")?;
            let name = ctx
                .config("json-metric")
                .map(str::to_string)
                .unwrap_or_else(|| metric_name_for_field(field));
            report.push(name, value);
        }
        Ok(report)
    }
}

export_probe!(HttpCheck);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_parse_codes_ranges_and_classes() {
        let set = StatusSet::parse("200, 204-206,3xx").expect("parses");
        assert!(set.contains(200) && set.contains(205) && set.contains(399));
        assert!(!set.contains(201) && !set.contains(404));
        assert_eq!(set.to_string(), "200,204-206,300-399");
        assert!(StatusSet::parse("200-399").expect("parses").contains(302));
        for bad in ["", "abc", "99", "600", "300-200", "9xx", "2x"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn json_fields() {
        assert_eq!(
            json_number(br#"{"queue_depth": 7, "x": "a"}"#, "queue_depth"),
            Ok(7.0)
        );
        assert!(json_number(br#"{"x": "a"}"#, "x").is_err_and(|e| e.contains("not a number")));
        assert!(json_number(br#"{"x": 1}"#, "y").is_err_and(|e| e.contains("missing")));
        assert!(json_number(b"[1]", "y").is_err_and(|e| e.contains("not a JSON object")));
        assert!(json_number(b"nope", "y").is_err_and(|e| e.contains("not JSON")));
        assert_eq!(metric_name_for_field("Queue_Depth"), "queue-depth");
    }

    #[test]
    fn bad_config_is_broken_and_no_host_is_unhealthy() {
        let ctx = Context::new("n", "127.0.0.1:1", 1_000).with_config("expect-status", "2yy");
        assert!(
            matches!(HttpCheck::run(ctx), Err(Failure::Broken(m)) if m.contains("expect-status"))
        );
        let ctx = Context::new("n", "127.0.0.1:1", 1_000).with_config("method", "GE T");
        assert!(matches!(HttpCheck::run(ctx), Err(Failure::Broken(_))));
        // Outside the sandbox the request fails, which counts against the node.
        let ctx = Context::new("n", "127.0.0.1:1", 1_000);
        assert!(matches!(HttpCheck::run(ctx), Err(Failure::Unhealthy(_))));
    }
}
