//! The `plb` command: one binary for the balancer, the node agent, probe tools,
//! offline forecasting, benchmarks and the local dev cluster. Each subcommand's
//! config is one typed clap struct with `PLB_*` environment fallbacks.
#![forbid(unsafe_code)]

mod logging;
mod probe;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "plb", version, about = "PLB, the predictive load balancer")]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with probes: run one locally, upload, list.
    Probe {
        #[command(subcommand)]
        command: probe::ProbeCommand,
    },
    /// Benchmarks: `plb bench lb`, the load-balancing scenarios (live and simulated).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Run the node agent: run this node's assigned probes and report their samples.
    Agent(plb_agent::AgentConfig),
    /// Run the balancer: the REST API, the sample store and the prediction pipeline.
    Balancer(plb_balancer::BalancerConfig),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The load-balancing benchmark: every routing policy on scripted scenarios.
    Lb(plb_bench::LbArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plb: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Probe { command } => probe::run(command).await,
            Command::Bench {
                command: BenchCommand::Lb(args),
            } => plb_bench::lb::run(args)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from),
            Command::Agent(config) => plb_agent::run(config, plb_agent::shutdown_signal())
                .await
                .map_err(anyhow::Error::from),
            Command::Balancer(config) => {
                plb_balancer::serve(config, plb_balancer::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plb: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
