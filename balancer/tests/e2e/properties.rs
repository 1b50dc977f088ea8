//! Property tests of every parser the balancer runs on outside input, against a real
//! balancer on a loopback port over a real SQLite file: report batches (agents),
//! feedback batches and route query strings (clients), probe settings (upload query
//! parameters), HAProxy agent-check lines, and webhook signature headers.
//!
//! Inputs are generated near the valid shape (a valid body with one field replaced by a
//! hostile value, removed, or an unknown one added; edge numbers; long and non-ASCII
//! text), not only random noise. Each property checks an oracle written from the
//! documented rules: what is valid is accepted and stored exactly as sent, what is not
//! is refused with a 4xx whose message names the field, and nothing answers 5xx or
//! drops the connection.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use plb_api::{
    Feedback, Outcome, PoolNodes, ProbeSettings, RegisterRequest, ReportBatch, RouteDecision,
    Sample,
};
use plb_balancer::{BalancerConfig, RunningBalancer};
use plb_client::Client;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

const ADMIN: &str = "properties-admin-token-0123456789";
const POOL: &str = "web";
const NODE: &str = "n1";
/// An uploaded probe with one version, besides the built-in `node` sampler.
const PROBE: &str = "p";
const DAY_MS: i64 = 24 * 3600 * 1000;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        // PROPTEST_CASES=N for a deeper run by hand.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    })
}

/// A balancer with a client, its pool `web`, an agent token and the node `n1` in it.
struct World {
    rt: tokio::runtime::Runtime,
    running: Option<RunningBalancer>,
    dir: tempfile::TempDir,
    url: String,
    client_id: i64,
    client_token: String,
    agent_token: String,
    http: reqwest::Client,
}

impl World {
    fn start(agent_check: bool, probe: bool) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = BalancerConfig::new(dir.path().join("plb.db"), ADMIN);
        cfg.listen = "127.0.0.1:0".parse().expect("addr");
        // Samples dated long ago stay raw for the read-back.
        cfg.retention_every = Duration::from_secs(3600);
        if agent_check {
            cfg.agent_check = Some("127.0.0.1:0".parse().expect("addr"));
        }
        let (running, client_id, client_token, agent_token) = rt.block_on(async {
            let running = plb_balancer::start(&cfg).await.expect("balancer starts");
            let admin = Client::new(&running.url(), ADMIN).expect("client");
            let created = admin.create_client("acme").await.expect("client");
            let client = admin.with_token(created.token.clone());
            client.create_pool(POOL, 200.0).await.expect("pool");
            if probe {
                client
                    .upload_probe(
                        POOL,
                        PROBE,
                        plb_probe_artifacts::TRIVIAL,
                        &ProbeSettings::default(),
                    )
                    .await
                    .expect("upload");
            }
            let t = client
                .create_agent_token(&[POOL], None)
                .await
                .expect("agent token");
            let agent = admin.with_token(t.token.clone());
            agent
                .register(&RegisterRequest {
                    node: NODE.into(),
                    address: "127.0.0.1:9".into(),
                    pools: vec![POOL.into()],
                    labels: BTreeMap::new(),
                })
                .await
                .expect("register");
            (running, created.id, created.token, t.token)
        });
        let url = running.url();
        World {
            rt,
            running: Some(running),
            dir,
            url,
            client_id,
            client_token,
            agent_token,
            http: reqwest::Client::new(),
        }
    }

    /// One request; `(status, JSON body or Null)`. A dropped connection fails the test.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .bearer_auth(token)
                .timeout(Duration::from_secs(20));
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    fn post_json(&self, path: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            token,
            Some("application/json"),
            Some(body),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, &self.client_token, None, None)
    }

    fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(
            self.dir.path().join("plb.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open db");
        c.busy_timeout(Duration::from_secs(5)).expect("busy");
        c
    }

    fn stop(mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop()).expect("stop");
        }
    }
}

/// How many cases the oracle expected to be accepted and refused: a property whose
/// cases all take one branch tests less than it seems.
#[derive(Debug, Default)]
struct Tally {
    yes: AtomicUsize,
    no: AtomicUsize,
}

impl Tally {
    fn yes(&self) {
        self.yes.fetch_add(1, Ordering::Relaxed);
    }

    fn no(&self) {
        self.no.fetch_add(1, Ordering::Relaxed);
    }

    /// Both branches taken by at least a tenth of the cases.
    #[track_caller]
    fn check(&self, what: &str) {
        let (yes, no) = (
            self.yes.load(Ordering::Relaxed),
            self.no.load(Ordering::Relaxed),
        );
        eprintln!("{what}: {yes} accepted, {no} refused");
        let tenth = (yes + no) / 10;
        assert!(
            yes >= tenth && no >= tenth,
            "{what}: {yes} accepted, {no} refused"
        );
    }
}

/// The error's message, after checking the error shape.
fn error_message(status: u16, body: &Value) -> String {
    let code = body["error"]["code"].as_str();
    let msg = body["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()) && msg.is_some(),
        "a {status} without the error shape: {body}"
    );
    msg.unwrap_or_default().to_string()
}

/// Text: plain names, any Unicode (control characters, NUL and astral planes included).
fn text(max_chars: usize) -> BoxedStrategy<String> {
    prop_oneof![
        prop::string::string_regex("[a-zA-Z0-9._-]{0,16}").expect("regex"),
        prop::collection::vec(any::<char>(), 0..max_chars).prop_map(|c| c.into_iter().collect()),
    ]
    .boxed()
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

fn finite_non_negative() -> BoxedStrategy<f64> {
    prop_oneof![
        Just(0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        prop::num::f64::POSITIVE | prop::num::f64::NORMAL,
        prop::num::f64::POSITIVE | prop::num::f64::SUBNORMAL,
        0.0f64..10_000.0,
    ]
    .boxed()
}

fn finite() -> BoxedStrategy<f64> {
    prop_oneof![
        finite_non_negative(),
        finite_non_negative().prop_map(|v| -v),
        Just(f64::MIN),
    ]
    .boxed()
}

/// A JSON value where a field is expected: every JSON type, edge numbers, long text.
fn hostile_json() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(-0.0),
            json!(0.5),
            json!(1e308),
            json!(-1e308),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(4.9e-324),
        ]),
        any::<i64>().prop_map(|v| json!(v)),
        finite().prop_map(|v| json!(v)),
        text(24).prop_map(Value::String),
        (60_000usize..70_000).prop_map(|n| Value::String("x".repeat(n))),
        Just(json!([])),
        Just(json!([1, "a", null])),
        Just(json!({})),
        Just(json!({"k": 1.5})),
        Just(json!({"": 1.0})),
        (1usize..4).prop_map(|n| json!({ "m".repeat(63 + n): 1.0 })),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------
// Report batches (POST /v1/reports, agent token).

fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(Outcome::ALL.to_vec())
}

fn metrics() -> BoxedStrategy<BTreeMap<String, f64>> {
    prop_oneof![
        8 => prop::collection::btree_map(
            text(20).prop_filter_map("1 to 64 bytes", |n| {
                let n = cut(n, 64);
                (!n.is_empty()).then_some(n)
            }),
            finite(),
            0..6
        ),
        1 => Just((0..256).map(|i| (format!("m{i}"), f64::from(i))).collect()),
    ]
    .boxed()
}

/// A sample valid by every documented rule, for pool `web` and the probes there (`node`
/// with any version, `p` with version 1). The id is made unique by the test.
fn valid_sample(now_ms: i64) -> impl Strategy<Value = Sample> {
    (
        text(40),
        prop_oneof![any::<u32>().prop_map(|v| ("node", v)), Just((PROBE, 1u32)),],
        prop_oneof![1i64..=now_ms + DAY_MS - 60_000, Just(1i64), Just(now_ms)],
        outcome(),
        metrics(),
        finite_non_negative(),
        prop::option::of(prop_oneof![any::<u64>(), 0u64..1_000_000_000]),
        prop_oneof![
            4 => (text(60), text(60)),
            1 => Just(("m".repeat(64 * 1024), "s".repeat(64 * 1024))),
        ],
    )
        .prop_map(
            |(
                id,
                (probe, version),
                taken_at_ms,
                outcome,
                metrics,
                duration_ms,
                fuel_used,
                (message, stderr),
            )| Sample {
                id,
                pool: POOL.into(),
                probe: probe.into(),
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

/// Makes each sample's id unique (a fresh UUID, then the generated text, at most 128
/// bytes in all).
fn unique_ids(samples: &mut [Sample]) {
    for s in samples {
        let suffix = std::mem::take(&mut s.id);
        s.id = cut(format!("{}{suffix}", uuid::Uuid::new_v4()), 128);
    }
}

const SAMPLE_FIELDS: [&str; 11] = [
    "id",
    "pool",
    "probe",
    "version",
    "taken_at_ms",
    "outcome",
    "metrics",
    "duration_ms",
    "fuel_used",
    "message",
    "stderr",
];

/// Which documented rule a sample breaks first, as the words its error must contain
/// (any one of them: a sample may break several).
fn sample_problems(s: &Sample, now_ms: i64) -> Vec<&'static str> {
    let mut p = Vec::new();
    if s.id.is_empty() || s.id.len() > 128 {
        p.push("`id`");
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.as_bytes()[0].is_ascii_alphanumeric()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !name_ok(&s.pool) {
        p.push("pool");
    }
    if !name_ok(&s.probe) {
        p.push("probe");
    }
    if s.taken_at_ms <= 0 || s.taken_at_ms > now_ms + DAY_MS {
        p.push("taken_at_ms");
    }
    if !s.duration_ms.is_finite() || s.duration_ms < 0.0 {
        p.push("duration_ms");
    }
    if s.metrics.len() > 256
        || s.metrics
            .iter()
            .any(|(n, v)| n.is_empty() || n.len() > 64 || !v.is_finite())
    {
        p.push("metric");
    }
    if s.message.len() > 64 * 1024 || s.stderr.len() > 64 * 1024 {
        p.push("message");
    }
    p
}

/// What the store refuses of a sample whose own fields are fine: a pool the node is not
/// in, a probe not assigned there, a version that does not exist.
fn store_problems(s: &Sample) -> Vec<&'static str> {
    if s.pool != POOL {
        return vec!["pool"];
    }
    match s.probe.as_str() {
        "node" => vec![],
        PROBE if s.version == 1 => vec![],
        PROBE => vec!["version"],
        _ => vec!["probe"],
    }
}

/// The expected answer to a batch: `Ok(())`, or the words one of which the error names.
fn batch_problems(b: &ReportBatch, now_ms: i64) -> Result<(), Vec<&'static str>> {
    if b.node != NODE {
        return Err(vec!["node"]);
    }
    for s in &b.samples {
        let p = sample_problems(s, now_ms);
        if !p.is_empty() {
            return Err(p);
        }
    }
    for s in &b.samples {
        let p = store_problems(s);
        if !p.is_empty() {
            return Err(p);
        }
    }
    Ok(())
}

/// A change to a valid batch's JSON.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    /// Sets field `.1` of sample `.0` (modulo the count) to a value.
    SetSample(usize, &'static str, Value),
    /// Sets one metric of sample `.0` to a value.
    SetMetric(usize, String, Value),
    RemoveSample(usize, &'static str),
    AddToSample(usize, String, Value),
    SetTop(&'static str, Value),
    RemoveTop(&'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = prop::sample::select(SAMPLE_FIELDS.to_vec());
    let top = prop::sample::select(vec!["node", "samples", "dropped", "extra"]);
    prop_oneof![
        1 => Just(Mutation::None),
        6 => (any::<usize>(), field.clone(), hostile_json())
            .prop_map(|(i, f, v)| Mutation::SetSample(i, f, v)),
        2 => (any::<usize>(), text(8), hostile_json())
            .prop_map(|(i, n, v)| Mutation::SetMetric(i, n, v)),
        1 => (any::<usize>(), field).prop_map(|(i, f)| Mutation::RemoveSample(i, f)),
        1 => (any::<usize>(), "[a-z_]{1,12}", hostile_json())
            .prop_map(|(i, f, v)| Mutation::AddToSample(i, format!("x_{f}"), v)),
        2 => (top.clone(), hostile_json()).prop_map(|(f, v)| Mutation::SetTop(f, v)),
        1 => top.prop_map(Mutation::RemoveTop),
    ]
}

impl Mutation {
    fn apply(&self, v: &mut Value) {
        fn sample(v: &mut Value, i: usize) -> Option<&mut serde_json::Map<String, Value>> {
            let n = v["samples"].as_array().map_or(0, Vec::len);
            if n == 0 {
                return None;
            }
            v["samples"][i % n].as_object_mut()
        }
        match self {
            Mutation::None => {}
            Mutation::SetSample(i, f, x) => {
                if let Some(s) = sample(v, *i) {
                    s.insert((*f).to_string(), x.clone());
                }
            }
            Mutation::SetMetric(i, name, x) => {
                if let Some(s) = sample(v, *i) {
                    let m = s.entry("metrics").or_insert_with(|| json!({}));
                    if let Some(m) = m.as_object_mut() {
                        m.insert(name.clone(), x.clone());
                    }
                }
            }
            Mutation::RemoveSample(i, f) => {
                if let Some(s) = sample(v, *i) {
                    s.remove(*f);
                }
            }
            Mutation::AddToSample(i, f, x) => {
                if let Some(s) = sample(v, *i) {
                    s.insert(f.clone(), x.clone());
                }
            }
            Mutation::SetTop(f, x) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert((*f).to_string(), x.clone());
                }
            }
            Mutation::RemoveTop(f) => {
                if let Some(o) = v.as_object_mut() {
                    o.remove(*f);
                }
            }
        }
    }

    /// The name the error of a body serde cannot read must mention.
    fn field(&self) -> Option<String> {
        match self {
            Mutation::None => None,
            Mutation::SetSample(_, f, _) | Mutation::RemoveSample(_, f) => Some((*f).into()),
            Mutation::SetMetric(..) => Some("metrics".into()),
            Mutation::AddToSample(_, f, _) => Some(f.clone()),
            Mutation::SetTop(f, _) | Mutation::RemoveTop(f) => Some((*f).into()),
        }
    }
}

/// The stored row of sample `id`, as a `Sample`.
fn stored(db: &rusqlite::Connection, id: &str) -> Option<Sample> {
    db.query_row(
        "SELECT pool, probe, version, taken_at_ms, outcome, metrics, duration_ms, fuel_used,
                message, stderr FROM samples WHERE id = ?1",
        [id],
        |r| {
            let outcome: String = r.get(4)?;
            let metrics: String = r.get(5)?;
            let fuel: Option<i64> = r.get(7)?;
            Ok(Sample {
                id: id.to_string(),
                pool: r.get(0)?,
                probe: r.get(1)?,
                version: r.get(2)?,
                taken_at_ms: r.get(3)?,
                outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Invalid),
                metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                duration_ms: r.get(6)?,
                fuel_used: fuel.and_then(|f| u64::try_from(f).ok()),
                message: r.get(8)?,
                stderr: r.get(9)?,
            })
        },
    )
    .ok()
}

#[test]
fn report_batches_are_stored_exactly_as_sent_or_refused_naming_the_field() {
    let w = World::start(false, true);
    let now = plb_balancer::clock::now_ms();
    let strategy = (
        prop::collection::vec(valid_sample(now), 1..5),
        prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(i64::MAX as u64),
            any::<u64>()
        ],
        mutation(),
    );
    // Drops reported by batches that stored something (a resend counts none).
    let dropped_sum = Mutex::new(0i64);
    let tally = Tally::default();
    runner(256)
        .run(&strategy, |(mut samples, dropped, m)| {
            unique_ids(&mut samples);
            let batch = ReportBatch {
                node: NODE.into(),
                samples,
                dropped,
            };
            let mut v = serde_json::to_value(&batch).expect("to value");
            m.apply(&mut v);
            let body = serde_json::to_vec(&v).expect("body");
            let (status, answer) = w.post_json("/v1/reports", &w.agent_token, body.clone());
            prop_assert!(status < 500, "{status} {answer} for {v}");
            let sent = match serde_json::from_value::<ReportBatch>(v.clone()) {
                Ok(b) => b,
                Err(e) => {
                    tally.no();
                    prop_assert!(
                        status == 400 || status == 422,
                        "{status} {answer}: serde refuses {v}: {e}"
                    );
                    let msg = error_message(status, &answer);
                    let field = m.field().unwrap_or_default();
                    prop_assert!(
                        msg.contains(&field),
                        "the error {msg:?} does not name `{field}` ({m:?})"
                    );
                    return Ok(());
                }
            };
            match batch_problems(&sent, plb_balancer::clock::now_ms()) {
                Err(words) => {
                    tally.no();
                    prop_assert!((400..500).contains(&status), "{status} {answer} for {v}");
                    let msg = error_message(status, &answer);
                    prop_assert!(
                        words.iter().any(|w| msg.contains(w)),
                        "{status}: the error {msg:?} names none of {words:?} ({m:?})"
                    );
                    let db = w.db();
                    for s in &sent.samples {
                        prop_assert!(stored(&db, &s.id).is_none(), "a refused batch was stored");
                    }
                }
                Ok(()) => {
                    tally.yes();
                    prop_assert_eq!(status, 200, "{} for {}", answer, v);
                    let ids: std::collections::HashSet<&str> =
                        sent.samples.iter().map(|s| s.id.as_str()).collect();
                    prop_assert_eq!(answer["accepted"].as_u64(), Some(ids.len() as u64));
                    let db = w.db();
                    for s in &sent.samples {
                        let mut want = s.clone();
                        // The column is a signed 64-bit integer: fuel past it saturates.
                        want.fuel_used = s.fuel_used.map(|f| f.min(i64::MAX as u64));
                        let got = stored(&db, &s.id);
                        prop_assert_eq!(got.as_ref(), Some(&want), "stored differently");
                    }
                    {
                        let mut sum = dropped_sum.lock().unwrap_or_else(PoisonError::into_inner);
                        *sum = sum.saturating_add(i64::try_from(sent.dropped).unwrap_or(i64::MAX));
                        let node_dropped = db.query_row(
                            "SELECT dropped_samples FROM nodes WHERE name = ?1",
                            [NODE],
                            |r| r.get::<_, i64>(0),
                        );
                        prop_assert_eq!(
                            node_dropped.as_ref().ok(),
                            Some(&*sum),
                            "the node's drop count: {:?}",
                            node_dropped
                        );
                    }
                    // Sent again: every sample a duplicate, nothing stored twice.
                    let (status, again) = w.post_json("/v1/reports", &w.agent_token, body);
                    prop_assert_eq!(status, 200);
                    prop_assert_eq!(again["accepted"].as_u64(), Some(0));
                    prop_assert_eq!(
                        again["duplicates"].as_u64(),
                        Some(sent.samples.len() as u64)
                    );
                    if sent.samples.is_empty() {
                        // No sample to recognise the resend by: its drops count again.
                        let mut sum = dropped_sum.lock().unwrap_or_else(PoisonError::into_inner);
                        *sum = sum.saturating_add(i64::try_from(sent.dropped).unwrap_or(i64::MAX));
                    }
                    // The read side still answers with what was stored.
                    let (status, nodes) = w.get(&format!("/v1/pools/{POOL}/nodes"));
                    prop_assert_eq!(status, 200, "{}", nodes);
                    let parsed = serde_json::from_value::<PoolNodes>(nodes.clone());
                    prop_assert!(
                        parsed.is_ok(),
                        "nodes view does not parse: {:?}",
                        parsed.err()
                    );
                }
            }
            Ok(())
        })
        .expect("property");
    tally.check("report batches");
    w.stop();
}

#[test]
fn arbitrary_report_bodies_are_refused_without_a_5xx() {
    let w = World::start(false, false);
    let now = plb_balancer::clock::now_ms();
    let valid = prop::collection::vec(valid_sample(now), 1..3)
        .prop_map(|mut s| {
            unique_ids(&mut s);
            serde_json::to_vec(&ReportBatch {
                node: NODE.into(),
                samples: s,
                dropped: 0,
            })
            .expect("body")
        })
        .boxed();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        // A valid body cut short, or with one byte changed.
        (valid.clone(), any::<prop::sample::Index>())
            .prop_map(|(b, i)| b[..i.index(b.len())].to_vec()),
        (valid, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, i, x)| {
            let i = i.index(b.len());
            b[i] = x;
            b
        }),
        Just(b"{\"node\":\"n1\",\"samples\":[".repeat(2000)),
        Just(b"[".repeat(10_000)),
    ];
    runner(256)
        .run(&strategy, |body| {
            let (status, answer) = w.post_json("/v1/reports", &w.agent_token, body.clone());
            prop_assert!(status < 500, "{status} {answer}");
            if status != 200 {
                error_message(status, &answer);
            } else {
                // Accepted: it was a valid batch after all.
                let b: Result<ReportBatch, _> = serde_json::from_slice(&body);
                prop_assert!(b.is_ok(), "accepted a body serde refuses");
            }
            Ok(())
        })
        .expect("property");
    w.stop();
}

// ---------------------------------------------------------------------------------
// Feedback (POST /v1/pools/{pool}/feedback, client token) and what routing makes of it.

/// One feedback item as JSON: valid, or with one field replaced, removed or added.
fn feedback_item() -> impl Strategy<Value = (Value, Option<&'static str>)> {
    let valid = (
        prop_oneof![4 => Just(NODE.to_string()), 1 => text(12)],
        finite_non_negative(),
        any::<bool>(),
    )
        .prop_map(|(node, latency_ms, ok)| {
            serde_json::to_value(Feedback {
                node,
                latency_ms,
                ok,
            })
            .expect("value")
        });
    let field = prop::sample::select(vec!["node", "latency_ms", "ok", "x_extra"]);
    // Valid items are six in ten: a batch is accepted only when every item is, and
    // at three in seven about an eighth of the batches were (23 of 256 once, under
    // the tally's tenth); at six in ten about a fifth are.
    prop_oneof![
        6 => valid.clone().prop_map(|v| (v, None)),
        3 => (valid.clone(), field.clone(), hostile_json()).prop_map(|(mut v, f, x)| {
            v[f] = x;
            (v, Some(f))
        }),
        1 => (valid, field).prop_map(|(mut v, f)| {
            if let Some(o) = v.as_object_mut() {
                o.remove(f);
            }
            (v, Some(f))
        }),
    ]
}

#[test]
fn feedback_is_applied_whole_or_refused_naming_the_item_and_field() {
    let w = World::start(false, false);
    // The pool is loaded and routes to n1.
    let (s, _) = w.get(&format!("/v1/pools/{POOL}/route"));
    assert_eq!(s, 200);
    let strategy = (
        prop::collection::vec(feedback_item(), 1..5),
        prop::sample::select(vec!["one", "items", "array"]),
    );
    let tally = Tally::default();
    runner(256)
        .run(&strategy, |(items, shape)| {
            let shape = if items.len() > 1 && shape == "one" {
                "array"
            } else {
                shape
            };
            let values: Vec<Value> = items.iter().map(|(v, _)| v.clone()).collect();
            let body = match shape {
                "one" => values[0].clone(),
                "items" => json!({ "items": values }),
                _ => Value::Array(values.clone()),
            };
            // Routed requests outstanding on n1, so feedback has decisions to release.
            for _ in 0..values.len() {
                let (s, d) = w.get(&format!("/v1/pools/{POOL}/route"));
                prop_assert_eq!(s, 200, "{}", d);
            }
            let (status, answer) = w.post_json(
                &format!("/v1/pools/{POOL}/feedback"),
                &w.client_token,
                serde_json::to_vec(&body).expect("body"),
            );
            prop_assert!(status < 500, "{status} {answer}");
            // The oracle: every item is read before any is checked, so the first item
            // that serde refuses, else the first that breaks a rule.
            let many = values.len() > 1;
            let parsed: Vec<_> = items
                .iter()
                .map(|(v, _)| serde_json::from_value::<Feedback>(v.clone()))
                .collect();
            let unreadable = parsed
                .iter()
                .position(Result::is_err)
                .map(|i| (i, vec![items[i].1.map(str::to_string).unwrap_or_default()]));
            let problem = unreadable.or_else(|| {
                parsed.iter().enumerate().find_map(|(i, f)| match f {
                    Ok(f) if f.node != NODE => Some((i, vec!["node".to_string()])),
                    Ok(f) if !(f.latency_ms.is_finite() && f.latency_ms >= 0.0) => {
                        Some((i, vec!["latency_ms".to_string()]))
                    }
                    _ => None,
                })
            });
            match problem {
                None => {
                    tally.yes();
                    prop_assert_eq!(status, 200, "{} for {}", answer, body);
                    prop_assert_eq!(answer["accepted"].as_u64(), Some(values.len() as u64));
                }
                Some((i, words)) => {
                    tally.no();
                    prop_assert_eq!(status, 422, "{} for {}", answer, body);
                    let msg = error_message(status, &answer);
                    prop_assert!(
                        words.iter().any(|w| msg.contains(w.as_str())),
                        "the error {msg:?} names none of {words:?} (item {i}: {})",
                        values[i]
                    );
                    if many {
                        prop_assert!(
                            msg.contains(&format!("item {i}")),
                            "the error {msg:?} does not name item {i}"
                        );
                    }
                }
            }
            // Whatever was applied (huge latencies included), routing still answers
            // with a finite score.
            let (s, d) = w.get(&format!("/v1/pools/{POOL}/route"));
            prop_assert_eq!(s, 200, "{}", d);
            let d: Result<RouteDecision, _> = serde_json::from_value(d.clone());
            prop_assert!(
                d.as_ref()
                    .is_ok_and(|d| d.score.is_finite() && d.node == NODE),
                "route after feedback: {d:?}"
            );
            Ok(())
        })
        .expect("property");
    tally.check("feedback");
    w.stop();
}

// ---------------------------------------------------------------------------------
// Route query strings (GET /v1/pools/{pool}/route).

const ROUTE_PARAMS: [&str; 4] = ["key", "size", "cost", "policy"];
const POLICIES: [&str; 6] = [
    "plb",
    "round-robin",
    "least-request",
    "least-conn",
    "peak-ewma",
    "prequal",
];

fn query_value() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "", "0", "1", "-1", "-0", "0.5", "1e308", "1e309", "-1e309", "NaN", "nan", "inf",
            "-inf", "infinity", "+1", " 1", "1 ", "0x10", "1_000", "4.9e-324", "PLB", "plb ",
        ])
        .prop_map(str::to_string),
        prop::sample::select(POLICIES.to_vec()).prop_map(str::to_string),
        finite().prop_map(|v| v.to_string()),
        text(24),
        (1000usize..1100).prop_map(|n| "k".repeat(n)),
    ]
    .boxed()
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        8 => prop::sample::select(ROUTE_PARAMS.to_vec()).prop_map(str::to_string),
        1 => text(8),
    ];
    prop::collection::vec((name, query_value()), 0..5)
}

/// Percent-encodes every byte but unreserved ones.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The expected answer: `Ok(())`, or the words one of which the 400 names. The query is
/// read in order (the first unknown, repeated or unreadable parameter is the error),
/// then the handler checks the values.
fn route_problems(q: &[(String, String)]) -> Result<(), Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    for (k, v) in q {
        let unreadable = matches!(k.as_str(), "size" | "cost") && v.parse::<f64>().is_err();
        if !ROUTE_PARAMS.contains(&k.as_str()) || !seen.insert(k.as_str()) || unreadable {
            return Err(vec![k.clone()]);
        }
    }
    let mut problems = Vec::new();
    for (k, v) in q {
        match k.as_str() {
            "size" | "cost" => match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => {}
                _ => problems.push(k.clone()),
            },
            "key" if v.len() > 1024 => problems.push(k.clone()),
            "policy" if !POLICIES.contains(&v.as_str()) => problems.push("policy".into()),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[test]
fn route_query_strings_are_answered_or_refused_naming_the_parameter() {
    let w = World::start(false, false);
    let tally = Tally::default();
    runner(256)
        .run(&query(), |q| {
            let qs: Vec<String> = q
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            let path = format!("/v1/pools/{POOL}/route?{}", qs.join("&"));
            let (status, answer) = w.get(&path);
            prop_assert!(status < 500, "{status} {answer} for {path}");
            match route_problems(&q) {
                Ok(()) => {
                    tally.yes();
                    prop_assert_eq!(status, 200, "{} for {}", answer, path);
                    let d: Result<RouteDecision, _> = serde_json::from_value(answer.clone());
                    prop_assert!(
                        d.as_ref()
                            .is_ok_and(|d| d.node == NODE && d.score.is_finite()),
                        "{d:?}"
                    );
                    // Release the decision.
                    let (s, _) = w.post_json(
                        &format!("/v1/pools/{POOL}/feedback"),
                        &w.client_token,
                        br#"{"node":"n1","latency_ms":1,"ok":true}"#.to_vec(),
                    );
                    prop_assert_eq!(s, 200);
                }
                Err(words) => {
                    tally.no();
                    prop_assert_eq!(status, 400, "{} for {}", answer, path);
                    let msg = error_message(status, &answer);
                    prop_assert!(
                        words.iter().any(|w| msg.contains(w.as_str())),
                        "the error {msg:?} names none of {words:?} for {path}"
                    );
                }
            }
            Ok(())
        })
        .expect("property");
    tally.check("route queries");
    // Raw bytes after `?`, however malformed the encoding.
    let raw = prop::collection::vec(any::<u8>(), 0..64);
    runner(128)
        .run(&raw, |bytes| {
            let q: String = bytes
                .iter()
                .map(|&b| match b {
                    b'&' | b'=' | b'%' | b'+' => (b as char).to_string(),
                    b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect();
            let path = format!("/v1/pools/{POOL}/route?{q}");
            let (status, answer) = w.get(&path);
            prop_assert!(
                status == 200 || status == 400,
                "{status} {answer} for {path}"
            );
            Ok(())
        })
        .expect("property");
    w.stop();
}

// ---------------------------------------------------------------------------------
// Probe settings (PUT /v1/pools/{pool}/probes/{name} query parameters).

const SETTINGS: [&str; 6] = [
    "tier",
    "interval_ms",
    "timeout_ms",
    "fuel",
    "memory_mib",
    "config",
];

fn settings_value() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "99",
            "100",
            "512",
            "513",
            "4096",
            "300000",
            "300001",
            "86400000",
            "86400001",
            "-1",
            "1.5",
            "null",
            "none",
            "off",
            "quick",
            "deep",
            "QUICK",
            "18446744073709551615",
            "18446744073709551616",
            " 5000 ",
            "{}",
            "{\"k\":\"v\"}",
            "{\"k\":1}",
            "[]",
            "{\"\":\"v\"}",
            "{\"k\":\"v\",\"k\":\"w\"}",
        ])
        .prop_map(str::to_string),
        any::<u64>().prop_map(|v| v.to_string()),
        (0u64..400_000).prop_map(|v| v.to_string()),
        text(16),
        prop::collection::btree_map("[a-z]{1,6}", text(8), 0..70)
            .prop_map(|m| serde_json::to_string(&m).expect("json")),
    ]
    .boxed()
}

fn settings_query() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        8 => prop::sample::select(SETTINGS.to_vec()).prop_map(str::to_string),
        1 => text(8),
    ];
    prop::collection::vec((name, settings_value()), 0..6)
}

/// What `parse_settings` must do with `pairs`, from the documented rules: the settings,
/// or the words one of which the error names.
fn settings_oracle(pairs: &[(String, String)]) -> Result<ProbeSettings, Vec<String>> {
    let mut s = ProbeSettings::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.as_str()) {
            return Err(vec![k.clone()]);
        }
        let num = |v: &str| v.trim().parse::<u64>().ok();
        match k.as_str() {
            "tier" => {
                s.tier = match v.as_str() {
                    "quick" => plb_api::Tier::Quick,
                    "deep" => plb_api::Tier::Deep,
                    _ => return Err(vec!["tier".into()]),
                }
            }
            "interval_ms" => s.interval_ms = num(v).ok_or(vec!["interval_ms".to_string()])?,
            "timeout_ms" => {
                s.timeout_ms = num(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(vec!["timeout_ms".to_string()])?
            }
            "memory_mib" => {
                s.memory_mib = num(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(vec!["memory_mib".to_string()])?
            }
            "fuel" => {
                s.fuel = match v.trim() {
                    "" | "null" | "none" | "off" => None,
                    n => Some(num(n).ok_or(vec!["fuel".to_string()])?),
                }
            }
            "config" => {
                s.config = serde_json::from_str(v).map_err(|_| vec!["config".to_string()])?
            }
            other => return Err(vec![other.to_string()]),
        }
    }
    match s.validate() {
        Ok(()) => Ok(s),
        Err(e) => Err(vec![e.field.to_string()]),
    }
}

#[test]
fn probe_settings_are_parsed_by_the_documented_rules_and_errors_name_the_field() {
    let w = World::start(false, false);
    let case = AtomicUsize::new(0);
    let tally = Tally::default();
    runner(256)
        .run(&settings_query(), |pairs| {
            let want = settings_oracle(&pairs);
            let got = plb_balancer::routes::probes::parse_settings(pairs.clone());
            match (&want, &got) {
                (Ok(w), Ok(g)) => prop_assert_eq!(w, g),
                (Err(words), Err(e)) => {
                    let msg = match e {
                        plb_balancer::AppError::BadRequest(_, m) => m.clone(),
                        other => format!("{other:?}"),
                    };
                    prop_assert!(
                        words.iter().any(|w| msg.contains(w.as_str())),
                        "{msg} names none of {words:?}"
                    );
                }
                _ => prop_assert!(false, "{pairs:?}: expected {want:?}, got {got:?}"),
            }
            // Over HTTP the settings are checked before the body: valid ones reach the
            // content-type check (415), bad ones are a 400 naming the field.
            let qs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            let n = case.fetch_add(1, Ordering::Relaxed);
            let path = format!("/v1/pools/{POOL}/probes/q{n}?{}", qs.join("&"));
            let (status, answer) = w.call(
                reqwest::Method::PUT,
                &path,
                &w.client_token,
                Some("text/plain"),
                Some(b"not wasm".to_vec()),
            );
            match &want {
                Ok(_) => {
                    tally.yes();
                    prop_assert_eq!(status, 415, "{} for {}", answer, path);
                }
                Err(words) => {
                    tally.no();
                    prop_assert_eq!(status, 400, "{} for {}", answer, path);
                    let msg = error_message(status, &answer);
                    prop_assert!(words.iter().any(|w| msg.contains(w.as_str())), "{msg}");
                }
            }
            Ok(())
        })
        .expect("property");
    tally.check("probe settings");
    // Valid settings from the typed struct, as the client encodes them, come back equal.
    let valid = (
        prop_oneof![Just(plb_api::Tier::Quick), Just(plb_api::Tier::Deep)],
        100u64..=86_400_000,
        1u32..=1000,
        prop::option::of(1u64..=u64::MAX),
        1u32..=512,
        prop::collection::btree_map(
            text(12).prop_filter("key", |k| !k.is_empty()),
            text(12),
            0..8,
        ),
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
        );
    runner(256)
        .run(&valid, |s| {
            let mut url = reqwest::Url::parse("http://x/").expect("url");
            url.query_pairs_mut()
                .append_pair("tier", s.tier.as_str())
                .append_pair("interval_ms", &s.interval_ms.to_string())
                .append_pair("timeout_ms", &s.timeout_ms.to_string())
                .append_pair("fuel", &s.fuel.map_or("null".into(), |f| f.to_string()))
                .append_pair("memory_mib", &s.memory_mib.to_string())
                .append_pair("config", &serde_json::to_string(&s.config).expect("json"));
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let got = plb_balancer::routes::probes::parse_settings(pairs);
            prop_assert_eq!(got.ok(), Some(s));
            Ok(())
        })
        .expect("property");
    w.stop();
}

// ---------------------------------------------------------------------------------
// HAProxy agent-check lines.

fn agent_check_line(client_id: i64) -> impl Strategy<Value = Vec<u8>> {
    let ws = prop::sample::select(vec!["", " ", "\t", "  ", "\r"]);
    prop_oneof![
        // The node's own line, with whitespace around its parts and junk after it.
        (
            ws.clone(),
            ws.clone(),
            ws.clone(),
            ws,
            prop::sample::select(vec!["\n", "", "\r\n", "\nrest\n"])
        )
            .prop_map(move |(a, b, c, d, end)| {
                format!("{a}{client_id}{b}/{c}{POOL}/{NODE}{d}{end}").into_bytes()
            }),
        // Near misses.
        prop::sample::select(vec![
            format!("{}/{POOL}/{NODE}\n", client_id + 1),
            format!("0/{POOL}/{NODE}\n"),
            format!("-{client_id}/{POOL}/{NODE}\n"),
            format!("+{client_id}/{POOL}/{NODE}\n"),
            format!("{client_id}/{POOL}/{NODE}/x\n"),
            format!("{client_id}//{NODE}\n"),
            format!("{client_id}/{POOL}/\n"),
            format!("/{POOL}/{NODE}\n"),
            format!("{POOL}/{NODE}\n"),
            "99999999999999999999/web/n1\n".into(),
            format!("{client_id}/{POOL}\n"),
            "\n".into(),
            String::new(),
        ])
        .prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
        text(40).prop_map(String::into_bytes),
        (500usize..700).prop_map(move |n| {
            let mut v = format!("{client_id}/{POOL}/").into_bytes();
            v.extend(std::iter::repeat_n(b'n', n));
            v
        }),
    ]
}

/// The reply HAProxy must get: `Some(line)` for the node's own line, `None` for an
/// empty line (anything else).
fn agent_check_oracle(line: &[u8], client_id: i64) -> bool {
    let text = String::from_utf8_lossy(&line[..line.len().min(512)]).to_string();
    let first = text.split('\n').next().unwrap_or("").trim();
    let Some((pool_ref, node)) = first.rsplit_once('/') else {
        return false;
    };
    let Some((client, pool)) = pool_ref.split_once('/') else {
        return false;
    };
    node == NODE && pool.trim() == POOL && client.trim().parse::<i64>() == Ok(client_id)
}

#[test]
fn agent_check_lines_get_one_haproxy_word_and_only_the_node_own_line_a_weight() {
    let w = World::start(true, false);
    let addr: SocketAddr = w
        .running
        .as_ref()
        .and_then(|r| r.edges.agent_check.as_ref())
        .map(|a| a.addr)
        .expect("agent-check listens");
    // The engine has the pool (a route loads it).
    let (s, _) = w.get(&format!("/v1/pools/{POOL}/route"));
    assert_eq!(s, 200);
    let client_id = w.client_id;
    let tally = Tally::default();
    runner(256)
        .run(&agent_check_line(client_id), |line| {
            let reply = w.rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                // The server may answer and close before reading all of a long line.
                let _ = s.write_all(&line).await;
                let _ = s.shutdown().await;
                let mut out = Vec::new();
                tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                    .await
                    .expect("answered in time")
                    .expect("read");
                out
            });
            let reply = String::from_utf8(reply).expect("ASCII reply");
            let words = reply.strip_suffix('\n').unwrap_or("<no newline>");
            prop_assert!(!words.contains('\n'), "one line: {reply:?}");
            let weighted = words
                .strip_prefix("up ready ")
                .and_then(|p| p.strip_suffix('%'))
                .and_then(|p| p.parse::<u8>().ok())
                .is_some_and(|p| (1..=100).contains(&p));
            prop_assert!(
                weighted || matches!(words, "drain" | "down" | ""),
                "{reply:?} is not an agent-check answer"
            );
            if agent_check_oracle(&line, client_id) {
                tally.yes();
                prop_assert_eq!(
                    words,
                    "up ready 100%",
                    "for {:?}",
                    String::from_utf8_lossy(&line)
                );
            } else {
                tally.no();
                prop_assert_eq!(words, "", "for {:?}", String::from_utf8_lossy(&line));
            }
            Ok(())
        })
        .expect("property");
    tally.check("agent-check lines");
    w.stop();
}

#[test]
fn pool_references_parse_back_to_themselves() {
    use plb_balancer::agent_check::parse_pool_ref;
    let valid = (1i64..=i64::MAX, "[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}");
    runner(256)
        .run(&valid, |(id, pool)| {
            let key = parse_pool_ref(&format!("{id}/{pool}")).expect("valid");
            prop_assert_eq!((key.client_id, key.pool.as_str()), (id, pool.as_str()));
            Ok(())
        })
        .expect("property");
    runner(256)
        .run(&text(40), |s| {
            if let Ok(key) = parse_pool_ref(&s) {
                prop_assert!(key.client_id > 0 && !key.pool.is_empty() && !key.pool.contains('/'));
                let again = parse_pool_ref(&format!("{}/{}", key.client_id, key.pool));
                prop_assert_eq!(again.ok(), Some(key));
            }
            Ok(())
        })
        .expect("property");
}

// ---------------------------------------------------------------------------------
// Webhook signatures (`X-PLB-Signature: t=<unix s>,v1=<hex HMAC>`), as receivers verify.

const TOLERANCE_S: i64 = 300;

fn secret() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 16..=64)
}

fn timestamp() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        Just(-1i64),
        any::<i64>(),
        1_600_000_000i64..2_000_000_000,
    ]
    .boxed()
}

#[test]
fn a_signature_verifies_for_exactly_its_message_and_time_window() {
    use plb_balancer::webhooks::{SignatureError, sign, verify};
    let strategy = (
        secret(),
        prop::collection::vec(any::<u8>(), 0..200),
        timestamp(),
        prop_oneof![-TOLERANCE_S..=TOLERANCE_S, any::<i64>()],
    );
    runner(256)
        .run(&strategy, |(key, body, t, skew)| {
            let header = sign(&key, t, &body);
            let now = t.checked_add(skew);
            if let Some(now) = now {
                let r = verify(&key, &header, &body, now, TOLERANCE_S);
                if skew.abs() <= TOLERANCE_S {
                    prop_assert_eq!(r, Ok(()), "{} at now {}", header, now);
                } else {
                    prop_assert_eq!(r, Err(SignatureError::Stale));
                }
            }
            // Far from any window, at the ends of the clock: stale, never an overflow.
            for now in [i64::MIN, i64::MAX, 0] {
                let r = verify(&key, &header, &body, now, TOLERANCE_S);
                let within = i128::from(now).abs_diff(i128::from(t)) <= TOLERANCE_S as u128;
                prop_assert_eq!(r.is_ok(), within);
            }
            let now = t.saturating_add(skew.clamp(-TOLERANCE_S, TOLERANCE_S));
            if now.abs_diff(t) <= TOLERANCE_S as u64 {
                // Any single byte of the body changed: refused.
                if !body.is_empty() {
                    let mut b = body.clone();
                    let i = (skew.unsigned_abs() as usize) % b.len();
                    b[i] ^= 1 << (t.unsigned_abs() % 8);
                    prop_assert_eq!(
                        verify(&key, &header, &b, now, TOLERANCE_S),
                        Err(SignatureError::Mismatch)
                    );
                }
                // Any other secret: refused.
                let mut k = key.clone();
                k[0] ^= 0x80;
                prop_assert_eq!(
                    verify(&k, &header, &body, now, TOLERANCE_S),
                    Err(SignatureError::Mismatch)
                );
                // Any single byte of the header changed, to anything: refused.
                let hb = header.as_bytes();
                for i in 0..hb.len() {
                    for x in [
                        hb[i] ^ 0x01,
                        hb[i] ^ 0x20,
                        b'0',
                        b'f',
                        b'F',
                        b' ',
                        b',',
                        b'+',
                    ] {
                        if x == hb[i] {
                            continue;
                        }
                        let mut h = hb.to_vec();
                        h[i] = x;
                        let Ok(h) = String::from_utf8(h) else {
                            continue;
                        };
                        prop_assert!(
                            verify(&key, &h, &body, now, TOLERANCE_S).is_err(),
                            "{h} (byte {i} of {header}) verified"
                        );
                    }
                }
            }
            Ok(())
        })
        .expect("property");
    // Arbitrary headers never panic, and never verify without the key.
    let header = prop_oneof![
        text(80),
        (timestamp(), "[0-9a-fA-F]{0,70}").prop_map(|(t, h)| format!("t={t},v1={h}")),
        (timestamp(), timestamp()).prop_map(|(a, b)| format!("t={a},t={b},v1=00")),
    ];
    runner(256)
        .run(&(header, timestamp(), any::<i64>()), |(h, now, tol)| {
            let r = verify(b"a-secret-of-16-bytes", &h, b"{}", now, tol);
            prop_assert!(r.is_err(), "{h} verified");
            Ok(())
        })
        .expect("property");
}
