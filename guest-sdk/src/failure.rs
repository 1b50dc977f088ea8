//! Why a run produced no report ([`Failure`]), the errors of host calls ([`Error`]),
//! and [`ResultExt`] to turn any error into the right failure.

use std::fmt::Display;

/// Why a run did not produce a [`crate::Report`].
///
/// Pick the variant by whose fault it is:
/// - [`Failure::Unhealthy`]: the **node** failed the check (refused the
///   connection, answered 503, returned the wrong body). Counts against the node.
/// - [`Failure::Broken`]: the **probe** could not do its job (bad config, a
///   response it cannot understand). Counts against the probe, and its owner is
///   told that the probe needs an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The node failed the check.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    /// The probe could not do its job.
    #[error("broken: {0}")]
    Broken(String),
}

impl Failure {
    /// A failure that counts against the node.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Failure::Unhealthy(message.into())
    }

    /// A failure that counts against the probe.
    pub fn broken(message: impl Into<String>) -> Self {
        Failure::Broken(message.into())
    }

    /// The message, without the variant.
    pub fn message(&self) -> &str {
        match self {
            Failure::Unhealthy(m) | Failure::Broken(m) => m,
        }
    }

    /// Whether this failure counts against the node.
    pub fn is_unhealthy(&self) -> bool {
        matches!(self, Failure::Unhealthy(_))
    }
}

/// An error from a host function ([`crate::http`], [`crate::tcp_connect`]).
///
/// With `?` in a probe it becomes [`Failure::Unhealthy`], because a node that
/// cannot be reached has failed the check; use [`ResultExt::or_broken`] where
/// the probe, not the node, is to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The host could not complete the HTTP request (refused, timed out, not
    /// allowed); the host's message says which.
    #[error("http {method} {path}: {message}")]
    Http {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// The host's reason.
        message: String,
    },
    /// The host could not open the TCP connection; the host's message says why.
    #[error("tcp connect: {0}")]
    Tcp(String),
    /// Not running inside PLB's sandbox (e.g. a native unit test), so there
    /// is no host to call.
    #[error("host function `{0}` is only available inside the PLB sandbox")]
    NotInSandbox(&'static str),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Unhealthy(error.to_string())
    }
}

/// Turn any `Result<T, E: Display>` into a `Result<T, Failure>` with context.
///
/// ```
/// use plb_guest_sdk::{Failure, ResultExt};
///
/// let parsed: Result<u32, Failure> = "x".parse::<u32>().or_broken("queue depth");
/// assert_eq!(
///     parsed,
///     Err(Failure::broken("queue depth: invalid digit found in string"))
/// );
/// ```
pub trait ResultExt<T> {
    /// On error, a [`Failure::Unhealthy`] of `"{what}: {error}"`.
    fn or_unhealthy(self, what: &str) -> Result<T, Failure>;
    /// On error, a [`Failure::Broken`] of `"{what}: {error}"`.
    fn or_broken(self, what: &str) -> Result<T, Failure>;
}

impl<T, E: Display> ResultExt<T> for Result<T, E> {
    fn or_unhealthy(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::Unhealthy(format!("{what}: {e}")))
    }

    fn or_broken(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::Broken(format!("{what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_and_display() {
        let u = Failure::unhealthy("503");
        assert!(u.is_unhealthy());
        assert_eq!(u.message(), "503");
        assert_eq!(u.to_string(), "unhealthy: 503");
        let b = Failure::broken("bad config");
        assert!(!b.is_unhealthy());
        assert_eq!(b.to_string(), "broken: bad config");
    }

    #[test]
    fn host_errors_count_against_the_node() {
        let f: Failure = Error::Tcp("connection refused".into()).into();
        assert_eq!(f, Failure::unhealthy("tcp connect: connection refused"));
        let f: Failure = Error::Http {
            method: "GET".into(),
            path: "/health".into(),
            message: "timed out".into(),
        }
        .into();
        assert_eq!(f, Failure::unhealthy("http GET /health: timed out"));
    }

    #[test]
    fn result_ext_wraps_with_context() {
        let r: Result<(), &str> = Err("boom");
        assert_eq!(
            r.or_unhealthy("check"),
            Err(Failure::unhealthy("check: boom"))
        );
        let r: Result<u8, &str> = Ok(3);
        assert_eq!(r.or_broken("check"), Ok(3));
    }
}
