//! Plain HTTP from synchronous tests (a blocking GET), and Prometheus text parsing.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};

/// A blocking GET with a 5 s timeout: the body of a 2xx, an error otherwise (a fresh
/// current-thread runtime per call, so it works from plain `#[test]`s).
pub fn http_get(url: &str) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        Ok(body)
    })
}

/// Parses Prometheus text into `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of every series of `name` whose labels contain all of `labels` (`k="v"` pairs).
pub fn metric_sum(m: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(lk, lv)| rest.contains(&format!("{lk}=\"{lv}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}
