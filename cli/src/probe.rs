//! `plb probe ...`: run a probe locally in the same sandbox the agents use.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use plb_runtime::{Limits, Probe, RunSpec, Runtime, RuntimeConfig, Target};

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Run one probe locally and print its outcome as JSON.
    Run(RunArgs),
    /// Upload a probe to a pool (a new version when the module or settings change).
    Upload {
        #[command(flatten)]
        remote: crate::remote::Remote,
        #[command(flatten)]
        args: crate::remote::UploadArgs,
    },
    /// List a pool's probes.
    List {
        #[command(flatten)]
        remote: crate::remote::Remote,
        /// The pool.
        #[arg(long)]
        pool: String,
    },
    /// Probes with their version and reliability (state, failure rate and its
    /// interval, evidence); all of the pool's probes without a name.
    Status {
        #[command(flatten)]
        remote: crate::remote::Remote,
        /// The pool.
        #[arg(long)]
        pool: String,
        /// The probe (default: every probe of the pool).
        name: Option<String>,
    },
    /// Delete a probe (no longer assigned; its samples are kept, its versions and unused
    /// modules removed).
    Delete {
        #[command(flatten)]
        remote: crate::remote::Remote,
        /// The pool.
        #[arg(long)]
        pool: String,
        /// The probe.
        name: String,
    },
}

/// `plb probe run FILE.wasm ...`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The probe component (.wasm).
    pub file: PathBuf,
    /// Fuel budget (roughly, wasm instructions); 0 turns fuel metering off.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub fuel: u64,
    /// Wall-clock limit in ms, including time blocked in host calls.
    #[arg(long, default_value_t = 1_000)]
    pub timeout_ms: u32,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u32,
    /// A config entry `key=value`; repeat for more.
    #[arg(long = "config", value_parser = parse_kv)]
    pub config: Vec<(String, String)>,
    /// The node address the probe measures (`host:port`).
    #[arg(long, default_value = "127.0.0.1:80")]
    pub target: String,
    /// The node id passed to the probe.
    #[arg(long, default_value = "local")]
    pub node: String,
    /// Keep compiled probes here, so the next run of the same module skips compiling
    /// (keyed by the module's sha256 and the engine's settings).
    #[arg(long, env = "PLB_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

pub async fn run(cmd: ProbeCommand) -> anyhow::Result<()> {
    match cmd {
        ProbeCommand::Run(args) => run_local(args).await,
        ProbeCommand::Upload { remote, args } => crate::remote::upload(&remote, args).await,
        ProbeCommand::List { remote, pool } => crate::remote::probes(&remote, &pool).await,
        ProbeCommand::Status { remote, pool, name } => {
            crate::remote::probe_status(&remote, &pool, name.as_deref()).await
        }
        ProbeCommand::Delete { remote, pool, name } => {
            crate::remote::delete_probe(&remote, &pool, &name).await
        }
    }
}

async fn run_local(args: RunArgs) -> anyhow::Result<()> {
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if args.memory_mib == 0 || args.timeout_ms == 0 {
        bail!("--memory-mib and --timeout-ms must be positive");
    }
    let cfg = RuntimeConfig {
        max_concurrent_runs: 2,
        max_memory_mib: args.memory_mib.max(64),
        cache_dir: args.cache_dir,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(cfg).context("starting the sandbox")?;
    let spec = RunSpec {
        target: Target {
            node: args.node,
            address: args.target,
        },
        config: args.config.into_iter().collect::<BTreeMap<_, _>>(),
        limits: Limits {
            fuel: (args.fuel > 0).then_some(args.fuel),
            timeout_ms: args.timeout_ms,
            memory_mib: args.memory_mib,
        },
    };
    let report = runtime.run(&Probe::new(wasm), &spec).await;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
