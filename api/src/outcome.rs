//! The classes of a probe run's outcome and whom each one counts against.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How one probe run ended (see DESIGN.md, "Outcomes").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The probe returned a report.
    Ok,
    /// The probe said the node failed the check.
    Unhealthy,
    /// The probe said it could not do its job, or returned a NaN/infinite metric.
    Broken,
    /// A panic or wasm trap.
    Trap,
    /// The run used up its fuel.
    FuelExhausted,
    /// The run passed its wall-clock limit (including time blocked in host calls).
    Timeout,
    /// The guest tried to grow memory past its limit.
    MemoryLimit,
    /// Too many metrics, too long a name, or too much log output.
    OutputLimit,
    /// Not a component, the wrong world, or failed to instantiate.
    Invalid,
}

/// Whom an outcome counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// Nobody: the run succeeded.
    None,
    /// The node under test.
    Node,
    /// The probe itself.
    Probe,
    /// Decided from context: the node if its other probes slow down too, else the probe.
    Depends,
}

impl Outcome {
    /// Every outcome, in a stable order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Unhealthy,
        Outcome::Broken,
        Outcome::Trap,
        Outcome::FuelExhausted,
        Outcome::Timeout,
        Outcome::MemoryLimit,
        Outcome::OutputLimit,
        Outcome::Invalid,
    ];

    /// The snake_case name used on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unhealthy => "unhealthy",
            Outcome::Broken => "broken",
            Outcome::Trap => "trap",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::OutputLimit => "output_limit",
            Outcome::Invalid => "invalid",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whom this outcome counts against.
    pub fn blame(self) -> Blame {
        match self {
            Outcome::Ok => Blame::None,
            Outcome::Unhealthy => Blame::Node,
            Outcome::Timeout => Blame::Depends,
            Outcome::Broken
            | Outcome::Trap
            | Outcome::FuelExhausted
            | Outcome::MemoryLimit
            | Outcome::OutputLimit
            | Outcome::Invalid => Blame::Probe,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            let json = serde_json::to_string(&o).expect("serialize");
            assert_eq!(json, format!("\"{}\"", o.as_str()));
        }
        assert_eq!(Outcome::parse("nope"), None);
    }

    #[test]
    fn blame_follows_the_design() {
        assert_eq!(Outcome::Unhealthy.blame(), Blame::Node);
        assert_eq!(Outcome::Timeout.blame(), Blame::Depends);
        assert_eq!(Outcome::Trap.blame(), Blame::Probe);
        assert_eq!(Outcome::Ok.blame(), Blame::None);
    }
}
