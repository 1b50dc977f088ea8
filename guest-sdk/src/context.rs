//! The run's [`Context`]: the target node, the probe's config and the time budget.

use std::fmt::Display;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::Failure;
use crate::wit::plb::probe::types as raw;

/// The node a run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node's id in its pool.
    pub node: String,
    /// The address (`host:port`) that the node's traffic goes to, and the only
    /// address that [`crate::http`] and [`crate::tcp_connect`] reach.
    pub address: String,
}

/// Everything one run of a probe is given.
///
/// The config is the key/value map uploaded with the probe. Keys are
/// kebab-case by convention (`timeout-ms`, `expect-status`); read them with
/// [`Context::config`], [`Context::config_or`] or [`Context::config_parse`].
#[derive(Debug, Clone)]
pub struct Context {
    target: Target,
    config: Vec<(String, String)>,
    deadline_ms: u32,
    started: Instant,
}

impl Context {
    /// A context for running a probe's logic outside the sandbox, e.g. in a
    /// unit test. Inside the sandbox the SDK builds it from the host's context.
    pub fn new(node: impl Into<String>, address: impl Into<String>, deadline_ms: u32) -> Self {
        Context {
            target: Target {
                node: node.into(),
                address: address.into(),
            },
            config: Vec::new(),
            deadline_ms,
            started: Instant::now(),
        }
    }

    /// Add one config entry (builder style, for tests); a later entry for the
    /// same key wins.
    #[must_use]
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    pub(crate) fn from_raw(raw: raw::Context) -> Self {
        Context {
            target: Target {
                node: raw.target.node,
                address: raw.target.address,
            },
            config: raw.config,
            deadline_ms: raw.deadline_ms,
            started: Instant::now(),
        }
    }

    /// The node under test.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The node's id.
    pub fn node(&self) -> &str {
        &self.target.node
    }

    /// The node's address (`host:port`).
    pub fn address(&self) -> &str {
        &self.target.address
    }

    /// The run's wall-clock budget in milliseconds, counted by the host from
    /// the start of the run. A probe still running past it is stopped and the
    /// run counts as a `timeout`.
    pub fn deadline_ms(&self) -> u32 {
        self.deadline_ms
    }

    /// Time since the probe's `run` was entered.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Milliseconds left of the budget, measured from when `run` was entered
    /// (the host started its clock a little earlier, so keep a margin).
    pub fn remaining_ms(&self) -> u32 {
        let elapsed = u32::try_from(self.elapsed().as_millis()).unwrap_or(u32::MAX);
        self.deadline_ms.saturating_sub(elapsed)
    }

    /// The value of config `key`, if set (the last one wins if it is repeated).
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of config `key`, or `default` when it is not set.
    pub fn config_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.config(key).unwrap_or(default)
    }

    /// Config `key` parsed as a `T`, or `default` when it is not set.
    ///
    /// A value that does not parse is the probe's fault, so the error is a
    /// [`Failure::Broken`] naming the key, the value and the reason:
    ///
    /// ```
    /// # use plb_guest_sdk::{Context, Failure};
    /// let ctx = Context::new("n1", "127.0.0.1:80", 1000).with_config("rounds", "lots");
    /// let err = ctx.config_parse::<u32>("rounds", 10).unwrap_err();
    /// assert!(matches!(err, Failure::Broken(m) if m.starts_with("config `rounds`:")));
    /// ```
    pub fn config_parse<T>(&self, key: &str, default: T) -> Result<T, Failure>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.config(key) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e: T::Err| {
                Failure::Broken(format!("config `{key}`: cannot parse {value:?}: {e}"))
            }),
        }
    }

    /// Every config entry, in the order given.
    pub fn config_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.config.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::new("node-1", "127.0.0.1:8080", 2_000)
            .with_config("rounds", " 1000 ")
            .with_config("path", "/a")
            .with_config("path", "/b")
            .with_config("bad", "-3")
    }

    #[test]
    fn target_and_deadline() {
        let ctx = ctx();
        assert_eq!(ctx.node(), "node-1");
        assert_eq!(ctx.address(), "127.0.0.1:8080");
        assert_eq!(ctx.deadline_ms(), 2_000);
        assert!(ctx.remaining_ms() <= 2_000);
        assert!(ctx.remaining_ms() > 1_000);
    }

    #[test]
    fn config_lookup_last_wins_and_defaults() {
        let ctx = ctx();
        assert_eq!(ctx.config("path"), Some("/b"));
        assert_eq!(ctx.config("missing"), None);
        assert_eq!(ctx.config_or("missing", "/health"), "/health");
        assert_eq!(ctx.config_or("path", "/health"), "/b");
        assert_eq!(ctx.config_entries().count(), 4);
    }

    #[test]
    fn config_parse_trims_defaults_and_reports_broken() {
        let ctx = ctx();
        assert_eq!(ctx.config_parse::<u64>("rounds", 5), Ok(1000));
        assert_eq!(ctx.config_parse::<u64>("missing", 5), Ok(5));
        match ctx.config_parse::<u32>("bad", 1) {
            Err(Failure::Broken(message)) => {
                assert!(
                    message.starts_with("config `bad`: cannot parse \"-3\""),
                    "{message}"
                );
            }
            other => panic!("expected Broken, got {other:?}"),
        }
    }

    #[test]
    fn from_raw_keeps_everything() {
        let ctx = Context::from_raw(raw::Context {
            target: raw::Target {
                node: "n".into(),
                address: "10.0.0.1:1".into(),
            },
            config: vec![("k".into(), "v".into())],
            deadline_ms: 7,
        });
        assert_eq!(ctx.target().node, "n");
        assert_eq!(ctx.address(), "10.0.0.1:1");
        assert_eq!(ctx.config("k"), Some("v"));
        assert_eq!(ctx.deadline_ms(), 7);
    }
}
