//! The typed [`Report`] builder: the metrics of a successful run.

use crate::wit::plb::probe::types as raw;

/// One measured value.
///
/// Names are kebab-case with the unit last: `latency-ms`, `queue-depth-count`,
/// `mem-bandwidth-mib-per-s`. Values must be finite: the host turns a run
/// with a NaN or infinite value into a `broken` outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric's name.
    pub name: String,
    /// The measured value.
    pub value: f64,
}

/// The metrics of a successful run, built with [`Report::metric`]:
///
/// ```
/// use plb_guest_sdk::Report;
///
/// let report = Report::new().metric("latency-ms", 12.5).metric("http-status", 200u16);
/// assert_eq!(report.get("latency-ms"), Some(12.5));
/// assert_eq!(report.len(), 2);
/// ```
///
/// The host caps the number of metrics and the length of their names; a run
/// past either cap counts as `output_limit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    metrics: Vec<Metric>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Report::default()
    }

    /// Add a metric (builder style).
    #[must_use]
    pub fn metric(mut self, name: impl Into<String>, value: impl Into<f64>) -> Self {
        self.push(name, value);
        self
    }

    /// Add a metric in place.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<f64>) {
        self.metrics.push(Metric {
            name: name.into(),
            value: value.into(),
        });
    }

    /// The metrics, in the order added.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The value of the last metric called `name`, if any.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .rev()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// The number of metrics.
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    /// Whether the report has no metric.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    pub(crate) fn into_raw(self) -> raw::Report {
        raw::Report {
            metrics: self
                .metrics
                .into_iter()
                .map(|m| raw::Metric {
                    name: m.name,
                    value: m.value,
                })
                .collect(),
        }
    }
}

/// Whether `name` follows the naming convention: non-empty lowercase ASCII
/// letters and digits in `-`-separated words, starting with a letter
/// (`latency-ms`, `p99-latency-ms`). The host does not enforce it.
pub fn is_kebab_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('-').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

impl Metric {
    /// Whether the name follows the kebab-case convention (see [`is_kebab_case`]).
    pub fn has_conventional_name(&self) -> bool {
        is_kebab_case(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_order_and_converts_numbers() {
        let mut report = Report::new()
            .metric("a-ms", 1.5)
            .metric("b-count", 2u32)
            .metric("c-status", 404u16);
        report.push("a-ms", 3.0f32);
        assert_eq!(report.len(), 4);
        assert!(!report.is_empty());
        assert_eq!(report.get("a-ms"), Some(3.0));
        assert_eq!(report.get("b-count"), Some(2.0));
        assert_eq!(report.get("nope"), None);
        let names: Vec<_> = report.metrics().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a-ms", "b-count", "c-status", "a-ms"]);
        let raw = report.into_raw();
        assert_eq!(raw.metrics.len(), 4);
        assert_eq!(raw.metrics[2].value, 404.0);
    }

    #[test]
    fn non_finite_values_pass_through_for_the_host_to_judge() {
        let report = Report::new().metric("x-ms", f64::NAN);
        assert!(report.get("x-ms").is_some_and(f64::is_nan));
    }

    #[test]
    fn kebab_case_convention() {
        assert!(is_kebab_case("latency-ms"));
        assert!(is_kebab_case("p99-latency-ms"));
        assert!(is_kebab_case("mem-bandwidth-mib-per-s"));
        assert!(!is_kebab_case(""));
        assert!(!is_kebab_case("Latency-ms"));
        assert!(!is_kebab_case("latency_ms"));
        assert!(!is_kebab_case("latency--ms"));
        assert!(!is_kebab_case("-ms"));
        assert!(!is_kebab_case("9-ms"));
        assert!(
            Metric {
                name: "ok-count".into(),
                value: 1.0
            }
            .has_conventional_name()
        );
    }
}
