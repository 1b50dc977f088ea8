//! Shared by the benchmarks: loading the NAB series and their labelled anomaly windows
//! from the project's `data/nab/`, and small statistics helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use plb_predict::{parse_csv, timestamp_seconds};

/// One NAB series: name, timestamps (Unix seconds) and values.
pub struct Series {
    pub name: String,
    pub times: Vec<f64>,
    pub values: Vec<f64>,
    /// Labelled anomaly windows, `(start, end)` in Unix seconds.
    pub windows: Vec<(f64, f64)>,
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/nab")
}

/// Every `*.csv` under `data/nab/`, sorted by name, with its windows.
pub fn load_nab() -> Vec<Series> {
    let dir = data_dir();
    let windows_text =
        std::fs::read_to_string(dir.join("windows.json")).expect("read data/nab/windows.json");
    let windows: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&windows_text).expect("parse windows.json");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read data/nab")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("read csv");
            let points = parse_csv(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let times = points
                .iter()
                .map(|p| timestamp_seconds(&p.timestamp).expect("timestamp"))
                .collect();
            let values = points.iter().map(|p| p.value).collect();
            let windows = windows
                .get(&name)
                .map(|ws| {
                    ws.iter()
                        .map(|(a, b)| {
                            (
                                timestamp_seconds(a).expect("window start"),
                                timestamp_seconds(b).expect("window end"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Series {
                name: name.trim_end_matches(".csv").to_string(),
                times,
                values,
                windows,
            }
        })
        .collect()
}

pub fn geomean(xs: &[f64]) -> f64 {
    let logs: Vec<f64> = xs.iter().filter(|x| **x > 0.0).map(|x| x.ln()).collect();
    if logs.is_empty() {
        return f64::NAN;
    }
    (logs.iter().sum::<f64>() / logs.len() as f64).exp()
}
