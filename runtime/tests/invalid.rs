//! Modules that are not probes: each is `invalid` with a message naming the problem,
//! both from `validate` (the balancer's upload check) and from a run.
mod common;

use common::{run, runtime, spec};
use plb_api::Outcome;
use plb_probe_artifacts::{OTHER_WORLD, TRIVIAL};
use plb_runtime::{Limits, RuntimeError};

fn invalid_message(rt: &plb_runtime::Runtime, wasm: &[u8]) -> String {
    match rt.validate(wasm) {
        Err(RuntimeError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_components_are_invalid_with_a_reason() {
    let rt = runtime();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "text file",
            b"hello, I am not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        ("empty", Vec::new(), "empty"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        (
            "truncated component",
            TRIVIAL[..TRIVIAL.len() / 2].to_vec(),
            "malformed component",
        ),
        (
            "component of another world",
            OTHER_WORLD.to_vec(),
            "plb:probe/probe",
        ),
    ];
    for (what, wasm, needle) in cases {
        let m = invalid_message(&rt, &wasm);
        assert!(m.contains(needle), "{what}: {m}");
        let r = run(&rt, &wasm, &spec("127.0.0.1:1", &[], Limits::default())).await;
        assert_eq!(r.outcome, Outcome::Invalid, "{what}: {r:?}");
        assert!(r.message.contains(needle), "{what}: {}", r.message);
    }
    // A real probe validates and returns its sha256.
    let sha = rt.validate(TRIVIAL).expect("valid");
    assert_eq!(sha.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_outside_the_runtime_are_invalid() {
    let rt = runtime();
    let l = Limits {
        memory_mib: 100_000,
        ..Limits::default()
    };
    let r = run(&rt, TRIVIAL, &spec("127.0.0.1:1", &[], l)).await;
    assert_eq!(r.outcome, Outcome::Invalid);
    assert!(r.message.contains("memory_mib"));
}
