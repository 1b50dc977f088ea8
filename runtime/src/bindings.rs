//! Host bindings of the `plb:probe` WIT package (read from `guest-sdk/wit`, the same
//! files the guest SDK reads) and the conversions between them and our own types.
wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "probe",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub(crate) use plb::probe::host::{HttpResponse, Level};
pub(crate) use plb::probe::types::Target;

impl Level {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl Context {
    pub(crate) fn from_spec(spec: &crate::RunSpec) -> Self {
        Context {
            target: Target {
                node: spec.target.node.clone(),
                address: spec.target.address.clone(),
            },
            config: spec
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deadline_ms: spec.limits.timeout_ms,
        }
    }
}
