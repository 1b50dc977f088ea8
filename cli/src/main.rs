//! The `plb` command: one binary for the balancer, the node agent, probe tools,
//! offline forecasting, benchmarks and the local dev cluster. Each subcommand's
//! config is one typed clap struct with `PLB_*` environment fallbacks.
#![forbid(unsafe_code)]

mod dev;
mod forecast;
mod logging;
mod probe;
mod remote;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the proxy allocates and frees a few small
/// buffers per request, and glibc's consolidation of freed chunks showed in its profile
/// (`cargo bench -p plb-balancer --bench proxy`: CPU per request 1.77x -> 1.6x HAProxy's).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Balancer(Box<plb_balancer::BalancerConfig>),
    /// A whole local cluster on the embedded default: balancer, demo nodes with agents,
    /// the sample probes, a built-in load, the dashboard.
    Dev(dev::DevArgs),
    /// Forecast a `timestamp,value` CSV offline (rows `t,h,yhat`).
    Forecast(forecast::ForecastArgs),
    /// Ask the balancer for a route decision (or many, to see the share per node).
    Route {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::RouteArgs,
    },
    /// Tell the balancer what happened to a routed request.
    Feedback {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::FeedbackArgs,
    },
    /// Pools: create, list, show, nodes with their predictions.
    Pool {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        command: remote::PoolCommand,
    },
    /// Clients and their API tokens (admin token).
    Client {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        command: remote::ClientCommand,
    },
    /// Agent tokens.
    AgentToken {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        command: remote::AgentTokenCommand,
    },
    /// Probe owners' notifications (probes that need an update, and their resolution).
    Notifications {
        #[command(flatten)]
        remote: remote::Remote,
        /// Only notifications after this id or time.
        #[arg(long)]
        since: Option<String>,
    },
    /// A pool's demand forecast and the nodes it needs now and at 5 min, 15 min, 1 h
    /// (the autoscaling advice).
    Scaling {
        #[command(flatten)]
        remote: remote::Remote,
        /// Pool name.
        pool: String,
    },
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
            Command::Forecast(args) => forecast::run(args),
            Command::Dev(args) => dev::run(args).await,
            Command::Route { remote, args } => remote::route(&remote, args).await,
            Command::Feedback { remote, args } => remote::feedback(&remote, args).await,
            Command::Pool { remote, command } => remote::pool_cmd(&remote, command).await,
            Command::Client { remote, command } => remote::client_cmd(&remote, command).await,
            Command::AgentToken { remote, command } => {
                remote::agent_token_cmd(&remote, command).await
            }
            Command::Notifications { remote, since } => remote::notifications(&remote, since).await,
            Command::Scaling { remote, pool } => remote::scaling(&remote, &pool).await,
            Command::Balancer(config) => {
                plb_balancer::serve(*config, plb_balancer::shutdown_signal())
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
