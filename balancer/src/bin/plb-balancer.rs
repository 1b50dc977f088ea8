//! A standalone balancer process for this crate's durability tests and benchmark (the
//! product binary is `plb balancer`, which flattens the same [`BalancerConfig`]).
use clap::Parser;
use plb_balancer::BalancerConfig;

/// The allocator of `plb` (see cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "plb-balancer",
    about = "PLB balancer (test binary; use `plb balancer`)"
)]
struct Cli {
    #[command(flatten)]
    config: BalancerConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match plb_balancer::serve(cli.config, plb_balancer::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plb-balancer: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
