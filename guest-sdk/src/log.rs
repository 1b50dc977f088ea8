//! Lines for the run's captured log, with a severity.
//!
//! The host keeps a bounded log per run (past the cap the run counts as
//! `output_limit`). Outside the sandbox the lines go to stderr.

/// A log line's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for the probe's author.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd that did not stop the run.
    Warn,
    /// Something that made the run fail.
    Error,
}

/// Write `message` to the run's log at `level`.
pub fn log(level: Level, message: &str) {
    write(level, message);
}

/// Write `message` at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Write `message` at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Write `message` at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Write `message` at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
fn write(level: Level, message: &str) {
    use crate::wit::plb::probe::host::{self, Level as Raw};
    let raw = match level {
        Level::Debug => Raw::Debug,
        Level::Info => Raw::Info,
        Level::Warn => Raw::Warn,
        Level::Error => Raw::Error,
    };
    host::log(raw, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn write(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_logging_works_outside_the_sandbox() {
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
        debug("d");
        info("i");
        warn("w");
        error("e");
    }
}
