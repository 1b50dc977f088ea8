//! Probe runtime benchmark: instantiate + run of a trivial probe through the full sandbox
//! (warm compiled cache, pooling allocator, per-run store with limits, WASI context,
//! epoch deadline, output capture) next to two bare wasmtime baselines measured in the
//! same run: an empty component's empty export (the floor of any instantiate + call),
//! and the same trivial probe component under bare wasmtime with WASI and no sandbox
//! (the ratio that says what PLB's sandbox costs); plus the CPU probe with fuel on and
//! off. Prints a table with medians, p99, runs/s and ratios against the bare probe.
use std::time::{Duration, Instant};

use plb_probe_artifacts::{CPU_BENCH, TRIVIAL};
use plb_runtime::{Limits, Probe, RunSpec, Runtime, RuntimeConfig, Target};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

const EMPTY_COMPONENT: &str = r#"
(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func (export "empty") (canon lift (core func $i "f")))
)"#;

struct Stats {
    median: Duration,
    p99: Duration,
    per_sec: f64,
}

fn stats(mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    let n = samples.len();
    Stats {
        median: samples[n / 2],
        p99: samples[(n * 99 / 100).min(n - 1)],
        per_sec: n as f64 / wall.as_secs_f64(),
    }
}

fn measure(iters: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..iters / 10 {
        f(); // warm up
    }
    let mut samples = Vec::with_capacity(iters);
    let wall = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    stats(samples, wall.elapsed())
}

fn bare_wasmtime(iters: usize) -> anyhow::Result<Stats> {
    let engine = Engine::default();
    let bytes = wat::parse_str(EMPTY_COMPONENT)?;
    let component = Component::new(&engine, &bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let linker: Linker<()> = Linker::new(&engine);
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok(measure(iters, || {
        let mut store = Store::new(&engine, ());
        let instance = pre.instantiate(&mut store).expect("instantiate");
        let f = instance
            .get_typed_func::<(), ()>(&mut store, "empty")
            .expect("export");
        f.call(&mut store, ()).expect("call");
    }))
}

struct BareHost {
    wasi: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
}

impl wasmtime_wasi::WasiView for BareHost {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The same trivial probe component under bare wasmtime: default engine and allocator,
/// WASI p2 linked with an empty context, the `host` imports defined as traps (the probe
/// does not call them), `run` called through the dynamic API. What PLB adds on top of
/// this is the sandbox: limits, fuel choice, epoch deadline, capture, classification.
fn bare_wasmtime_probe(
    tokio: &tokio::runtime::Runtime,
    wasm: &[u8],
    iters: usize,
) -> anyhow::Result<Stats> {
    use wasmtime::component::Val;
    let engine = Engine::default();
    let component = Component::new(&engine, wasm).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut linker: Linker<BareHost> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // The probe's own host functions, as traps (the trivial probe calls none). Not
    // `define_unknown_imports_as_traps`: it would shadow WASI's semver-compatible names.
    let mut host = linker
        .instance("plb:probe/host@0.1.0")
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    for name in ["log", "http", "tcp-connect"] {
        host.func_new(name, |_, _, _, _| {
            Err(wasmtime::Error::msg("not available in the baseline"))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    }
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let ctx = Val::Record(vec![
        (
            "target".into(),
            Val::Record(vec![
                ("node".into(), Val::String("bench".into())),
                ("address".into(), Val::String("127.0.0.1:1".into())),
            ]),
        ),
        ("config".into(), Val::List(vec![])),
        ("deadline-ms".into(), Val::U32(10_000)),
    ]);
    Ok(measure(iters, || {
        tokio.block_on(async {
            let mut store = Store::new(
                &engine,
                BareHost {
                    wasi: wasmtime_wasi::WasiCtx::builder().build(),
                    table: wasmtime::component::ResourceTable::new(),
                },
            );
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .expect("instantiate");
            let run = instance.get_func(&mut store, "run").expect("export run");
            let mut out = [Val::Bool(false)];
            run.call_async(&mut store, std::slice::from_ref(&ctx), &mut out)
                .await
                .expect("call");
            assert!(matches!(out[0], Val::Result(Ok(_))), "{:?}", out[0]);
        })
    }))
}

fn sandbox(
    rt: &Runtime,
    tokio: &tokio::runtime::Runtime,
    wasm: &[u8],
    fuel: Option<u64>,
    iters: usize,
) -> Stats {
    let probe = Probe::new(wasm.to_vec());
    let spec = RunSpec {
        target: Target {
            node: "bench".into(),
            address: "127.0.0.1:1".into(),
        },
        config: Default::default(),
        limits: Limits {
            fuel,
            timeout_ms: 10_000,
            memory_mib: 64,
        },
    };
    rt.prepare(&probe, fuel.is_some()).expect("prepare");
    measure(iters, || {
        let r = tokio.block_on(rt.run(&probe, &spec));
        assert_eq!(r.outcome, plb_api::Outcome::Ok, "{r:?}");
    })
}

fn main() -> anyhow::Result<()> {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("PLB_BENCH_QUICK").is_some();
    let iters = if quick { 200 } else { 3_000 };
    let cpu_iters = if quick { 10 } else { 100 };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rt = Runtime::new(RuntimeConfig::default())?;

    let bare = bare_wasmtime_probe(&tokio, TRIVIAL, iters)?;
    let rows = [
        (
            "bare wasmtime: empty component, call empty export",
            bare_wasmtime(iters)?,
        ),
        (
            "bare wasmtime: trivial probe, WASI, call run",
            bare_wasmtime_probe(&tokio, TRIVIAL, iters)?,
        ),
        (
            "plb: trivial probe, fuel off",
            sandbox(&rt, &tokio, TRIVIAL, None, iters),
        ),
        (
            "plb: trivial probe, fuel on",
            sandbox(&rt, &tokio, TRIVIAL, Some(1_000_000_000), iters),
        ),
        (
            "plb: cpu-bench probe, fuel off",
            sandbox(&rt, &tokio, CPU_BENCH, None, cpu_iters),
        ),
        (
            "plb: cpu-bench probe, fuel on",
            sandbox(&rt, &tokio, CPU_BENCH, Some(u64::MAX / 2), cpu_iters),
        ),
    ];
    println!("\nprobe runtime benchmark ({iters} runs; cpu-bench {cpu_iters} runs)");
    println!(
        "{:<50} {:>12} {:>12} {:>12} {:>10}",
        "case", "median", "p99", "runs/s", "vs bare probe"
    );
    for (name, s) in &rows {
        println!(
            "{:<50} {:>12.1?} {:>12.1?} {:>12.0} {:>9.2}x",
            name,
            s.median,
            s.p99,
            s.per_sec,
            s.median.as_secs_f64() / bare.median.as_secs_f64()
        );
    }
    let fuel_cost = rows[5].1.median.as_secs_f64() / rows[4].1.median.as_secs_f64();
    println!("cpu-bench fuel on / fuel off: {fuel_cost:.2}x");
    Ok(())
}
