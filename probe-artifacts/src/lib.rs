//! The sample and test probes, built for `wasm32-wasip2` by `build.rs` and embedded as bytes.
//!
//! One constant per component of the `sample-probes/` workspace (`CPU_BENCH`,
//! `MEMORY_BENCH`, `HTTP_CHECK`, `TCP_CONNECT`, `TRIVIAL`, `MISBEHAVE`,
//! `OTHER_WORLD`), its path (`CPU_BENCH_PATH`, ...), the lists [`ALL`],
//! [`SAMPLES`] (the ones useful to users) and [`PATHS`], and the
//! [`foreach_probe!`] macro. The components are built by the build, never
//! committed; building this crate needs `rustup target add wasm32-wasip2`.

#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/probes.rs"));

/// The component called `name` (e.g. `"cpu-bench"`), if there is one.
pub fn get(name: &str) -> Option<&'static [u8]> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The path of the component called `name` in the build's target dir.
pub fn path(name: &str) -> Option<&'static std::path::Path> {
    PATHS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| std::path::Path::new(*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\x00\x01\x00";

    macro_rules! each_probe_is_a_component {
        ($name:ident, $constant:ident) => {
            #[test]
            fn $name() {
                assert!($constant.starts_with(COMPONENT_HEADER), "not a component");
                let on_disk = std::fs::read(path_of(stringify!($name))).expect("file is there");
                assert!(on_disk == $constant, "the path holds the embedded bytes");
            }
        };
    }

    fn path_of(stem: &str) -> &'static str {
        let name = stem.replace('_', "-");
        PATHS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .expect("every probe has a path")
    }

    foreach_probe!(each_probe_is_a_component);

    #[test]
    fn lists_and_lookups_agree() {
        assert_eq!(ALL.len(), 7);
        let samples: Vec<_> = SAMPLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            samples,
            ["cpu-bench", "memory-bench", "http-check", "tcp-connect"]
        );
        assert_eq!(get("misbehave"), Some(MISBEHAVE));
        assert_eq!(get("nope"), None);
        assert!(path("trivial").is_some_and(|p| p.ends_with("trivial.wasm")));
    }
}
