//! Property tests of the wire types' own checks: probe settings against their documented
//! ranges (every field, edge values included), and the JSON round trip of every body an
//! agent or a client sends (settings, samples, report batches, feedback). The balancer's
//! handling of the same bodies over HTTP is in `balancer/tests/e2e/properties.rs`.
use std::collections::BTreeMap;

use plb_api::{Feedback, Outcome, ProbeSettings, ReportBatch, Sample, Tier};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn runner() -> TestRunner {
    TestRunner::new(Config {
        // PROPTEST_CASES=N for a deeper run by hand.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    })
}

/// A u64 near the interesting places: zero, the documented bounds, the type's end.
fn edgy_u64(bounds: &'static [u64]) -> BoxedStrategy<u64> {
    prop_oneof![
        prop::sample::select(bounds),
        prop::sample::select(bounds).prop_map(|b| b.saturating_add(1)),
        prop::sample::select(bounds).prop_map(|b| b.saturating_sub(1)),
        Just(0u64),
        Just(u64::MAX),
        any::<u64>(),
        0u64..1_000_000,
    ]
    .boxed()
}

fn edgy_u32(bounds: &'static [u64]) -> BoxedStrategy<u32> {
    edgy_u64(bounds)
        .prop_map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .boxed()
}

fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        prop::string::string_regex("[a-z0-9._-]{0,12}").expect("regex"),
        prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
    ]
    .boxed()
}

fn config_map() -> BoxedStrategy<BTreeMap<String, String>> {
    prop_oneof![
        prop::collection::btree_map(text(24), text(24), 0..6),
        // Past the entry count, and past the key and value lengths.
        prop::collection::btree_map("[a-z]{1,8}", "[a-z]{0,4}", 60..70),
        (1usize..3).prop_map(|n| BTreeMap::from([("k".repeat(4095 + n), "v".into())])),
        (1usize..3).prop_map(|n| BTreeMap::from([("k".into(), "v".repeat(4095 + n))])),
        Just(BTreeMap::from([(String::new(), "v".to_string())])),
    ]
    .boxed()
}

fn settings() -> impl Strategy<Value = ProbeSettings> {
    (
        prop_oneof![Just(Tier::Quick), Just(Tier::Deep)],
        edgy_u64(&[100, 1_000, 86_400_000]),
        edgy_u32(&[1, 300_000]),
        prop_oneof![Just(None), edgy_u64(&[1]).prop_map(Some)],
        edgy_u32(&[1, 512, 4096]),
        config_map(),
    )
        .prop_map(
            |(tier, interval_ms, timeout_ms, fuel, memory_mib, config)| ProbeSettings {
                tier,
                interval_ms,
                timeout_ms,
                fuel,
                memory_mib,
                config,
            },
        )
}

/// The fields outside their documented ranges (README, `ProbeSettings`' field docs).
fn out_of_range(s: &ProbeSettings) -> Vec<&'static str> {
    let mut bad = Vec::new();
    if !(100..=86_400_000).contains(&s.interval_ms) {
        bad.push("interval_ms");
    }
    if !(1..=300_000).contains(&s.timeout_ms)
        || u64::from(s.timeout_ms) > s.interval_ms.max(1_000).saturating_mul(10)
    {
        bad.push("timeout_ms");
    }
    if s.fuel == Some(0) {
        bad.push("fuel");
    }
    if !(1..=512).contains(&s.memory_mib) {
        bad.push("memory_mib");
    }
    if s.config.len() > 64
        || s.config
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 4096 || v.len() > 4096)
    {
        bad.push("config");
    }
    bad
}

#[test]
fn settings_are_accepted_exactly_within_their_ranges_and_errors_name_the_field() {
    runner()
        .run(&settings(), |s| {
            let bad = out_of_range(&s);
            match s.validate() {
                Ok(()) => prop_assert!(bad.is_empty(), "accepted with {bad:?} out of range: {s:?}"),
                Err(e) => {
                    prop_assert!(
                        bad.contains(&e.field),
                        "refused for `{}` but the out-of-range fields are {bad:?}: {s:?}",
                        e.field
                    );
                    prop_assert!(e.to_string().contains(e.field), "{e}");
                }
            }
            Ok(())
        })
        .expect("property");
}

#[test]
fn settings_round_trip_through_json() {
    runner()
        .run(&settings(), |s| {
            let json = serde_json::to_string(&s).expect("serialize");
            let back: ProbeSettings = serde_json::from_str(&json).expect("parse");
            prop_assert_eq!(back, s);
            Ok(())
        })
        .expect("property");
}

/// A JSON value where a settings field is expected: right and wrong types, edges.
fn hostile_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
        prop::num::f64::NORMAL.prop_map(|v| json!(v)),
        Just(json!(-0.0)),
        Just(json!(1.5)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        text(16).prop_map(Value::String),
        Just(json!([])),
        Just(json!({"k": 1})),
        Just(json!({"k": "v"})),
    ]
}

#[test]
fn settings_json_near_the_shape_is_parsed_or_refused_naming_the_field() {
    let fields = [
        "tier",
        "interval_ms",
        "timeout_ms",
        "fuel",
        "memory_mib",
        "config",
        "bogus",
    ];
    let strategy = (
        settings(),
        prop::sample::select(fields.to_vec()),
        hostile_json(),
    );
    runner()
        .run(&strategy, |(s, field, value)| {
            let mut v = serde_json::to_value(&s).expect("to value");
            v[field] = value;
            match serde_json::from_value::<ProbeSettings>(v.clone()) {
                Ok(parsed) => {
                    prop_assert!(field != "bogus", "an unknown field was accepted: {v}");
                    // Parsed: the field holds what was sent.
                    let back = serde_json::to_value(&parsed).expect("to value");
                    prop_assert_eq!(&back[field], &v[field]);
                }
                Err(e) => {
                    if field == "bogus" {
                        prop_assert!(e.to_string().contains("bogus"), "{e}");
                    }
                }
            }
            Ok(())
        })
        .expect("property");
}

fn finite() -> BoxedStrategy<f64> {
    prop_oneof![
        prop::num::f64::NORMAL,
        prop::num::f64::SUBNORMAL,
        prop::num::f64::ZERO,
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        -1e6f64..1e6,
    ]
    .boxed()
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(Outcome::ALL.to_vec())
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        text(40),
        text(20),
        text(20),
        any::<u32>(),
        any::<i64>(),
        outcome(),
        prop::collection::btree_map(text(20), finite(), 0..8),
        finite(),
        prop::option::of(any::<u64>()),
        (text(64), text(64)),
    )
        .prop_map(
            |(
                id,
                pool,
                probe,
                version,
                taken_at_ms,
                outcome,
                metrics,
                duration_ms,
                fuel_used,
                (message, stderr),
            )| Sample {
                id,
                pool,
                probe,
                version,
                taken_at_ms,
                outcome,
                metrics,
                duration_ms,
                fuel_used,
                message,
                stderr,
            },
        )
}

#[test]
fn report_batches_round_trip_through_json() {
    let strategy = (
        text(20),
        prop::collection::vec(sample(), 0..6),
        any::<u64>(),
    );
    runner()
        .run(&strategy, |(node, samples, dropped)| {
            let batch = ReportBatch {
                node,
                samples,
                dropped,
            };
            let json = serde_json::to_vec(&batch).expect("serialize");
            let back: ReportBatch = serde_json::from_slice(&json).expect("parse");
            prop_assert_eq!(&back.node, &batch.node);
            prop_assert_eq!(back.dropped, batch.dropped);
            prop_assert_eq!(&back.samples, &batch.samples);
            Ok(())
        })
        .expect("property");
}

#[test]
fn feedback_round_trips_through_json() {
    let strategy = (text(20), finite(), any::<bool>());
    runner()
        .run(&strategy, |(node, latency_ms, ok)| {
            let f = Feedback {
                node,
                latency_ms,
                ok,
            };
            let back: Feedback =
                serde_json::from_str(&serde_json::to_string(&f).expect("serialize"))
                    .expect("parse");
            prop_assert_eq!(&back.node, &f.node);
            prop_assert_eq!(back.latency_ms.to_bits(), f.latency_ms.to_bits());
            prop_assert_eq!(back.ok, f.ok);
            Ok(())
        })
        .expect("property");
}

#[test]
fn outcome_names_parse_back_and_nothing_else_does() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::parse(o.as_str()), Some(o));
    }
    runner()
        .run(&text(24), |s| {
            match Outcome::parse(&s) {
                Some(o) => prop_assert_eq!(o.as_str(), s.as_str()),
                None => prop_assert!(Outcome::ALL.iter().all(|o| o.as_str() != s)),
            }
            Ok(())
        })
        .expect("property");
}
