//! The smallest probe: one constant metric at once. The runtime benchmark measures the sandbox with it.

use plb_guest_sdk::{Context, Failure, Probe, Report, export_probe};

struct Trivial;

impl Probe for Trivial {
    fn run(_ctx: Context) -> Result<Report, Failure> {
        Ok(Report::new().metric("trivial-count", 1.0))
    }
}

export_probe!(Trivial);
