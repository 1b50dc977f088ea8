//! A probe's run settings (tier, interval, limits, config) and their validation.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How often and how expensively a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Cheap, every ~1-5 s.
    #[default]
    Quick,
    /// A detailed benchmark, every ~30-60 s.
    Deep,
}

impl Tier {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Quick => "quick",
            Tier::Deep => "deep",
        }
    }
}

/// The settings a probe is uploaded with. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// `quick` or `deep`.
    #[serde(default)]
    pub tier: Tier,
    /// Time between runs on one node, in ms (100 ..= 86,400,000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Wall-clock limit of one run, in ms (1 ..= 300,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Fuel (wasm instructions, roughly) for one run; `None` runs without fuel metering.
    #[serde(default = "default_fuel")]
    pub fuel: Option<u64>,
    /// Linear-memory limit of one run, in MiB (1 ..= 512, what agents allow by default).
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// The probe's key/value config, passed to every run.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn default_interval_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u32 {
    1_000
}
fn default_fuel() -> Option<u64> {
    Some(1_000_000_000)
}
fn default_memory_mib() -> u32 {
    64
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            tier: Tier::Quick,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            fuel: default_fuel(),
            memory_mib: default_memory_mib(),
            config: BTreeMap::new(),
        }
    }
}

/// A setting outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{field}`: {message}")]
pub struct SettingsError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ProbeSettings {
    /// Largest allowed config: number of keys and bytes per key or value.
    pub const MAX_CONFIG_ENTRIES: usize = 64;
    /// Largest allowed config key or value, in bytes.
    pub const MAX_CONFIG_LEN: usize = 4096;
    /// Largest `memory_mib`: agents cap a run's memory at 512 MiB by default
    /// (`plb agent --max-memory-mib`), so a probe asking for more would fail every run.
    pub const MAX_MEMORY_MIB: u32 = 512;

    /// Checks every field against its range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |field, message: String| Err(SettingsError { field, message });
        if !(100..=86_400_000).contains(&self.interval_ms) {
            return err(
                "interval_ms",
                format!("must be between 100 and 86400000, got {}", self.interval_ms),
            );
        }
        if !(1..=300_000).contains(&self.timeout_ms) {
            return err(
                "timeout_ms",
                format!("must be between 1 and 300000, got {}", self.timeout_ms),
            );
        }
        if u64::from(self.timeout_ms) > self.interval_ms.max(1_000) * 10 {
            return err(
                "timeout_ms",
                "must not exceed ten times interval_ms".to_string(),
            );
        }
        if let Some(f) = self.fuel
            && f == 0
        {
            return err("fuel", "must be positive, or null to turn fuel off".into());
        }
        if !(1..=Self::MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return err(
                "memory_mib",
                format!(
                    "must be between 1 and {} (the agents' cap), got {}",
                    Self::MAX_MEMORY_MIB,
                    self.memory_mib
                ),
            );
        }
        if self.config.len() > Self::MAX_CONFIG_ENTRIES {
            return err(
                "config",
                format!("at most {} entries", Self::MAX_CONFIG_ENTRIES),
            );
        }
        for (k, v) in &self.config {
            if k.is_empty() || k.len() > Self::MAX_CONFIG_LEN || v.len() > Self::MAX_CONFIG_LEN {
                return err(
                    "config",
                    format!(
                        "keys must be non-empty and keys and values at most {} bytes",
                        Self::MAX_CONFIG_LEN
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ProbeSettings::default().validate().expect("valid");
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let s = ProbeSettings {
            timeout_ms: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().expect_err("timeout").field, "timeout_ms");
        let s = ProbeSettings {
            interval_ms: 5,
            ..Default::default()
        };
        assert_eq!(s.validate().expect_err("interval").field, "interval_ms");
        let s = ProbeSettings {
            memory_mib: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().expect_err("memory").field, "memory_mib");
        // Above what agents run: every run would fail.
        for mib in [513, 4096] {
            let s = ProbeSettings {
                memory_mib: mib,
                ..Default::default()
            };
            let e = s.validate().expect_err("above the agents' cap");
            assert_eq!(e.field, "memory_mib");
            assert!(e.message.contains("512"), "{e}");
        }
        let s = ProbeSettings {
            memory_mib: 512,
            ..Default::default()
        };
        s.validate().expect("the agents' cap itself");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<ProbeSettings, _> = serde_json::from_str(r#"{"tier":"deep","bogus":1}"#);
        assert!(r.is_err());
    }
}
