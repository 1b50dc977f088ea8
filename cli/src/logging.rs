//! Logging setup shared by every subcommand: `tracing` to stderr, text or JSON.
use clap::Args;
use tracing_subscriber::EnvFilter;

/// Logging flags.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `plb_balancer=debug` (RUST_LOG syntax).
    #[arg(long, global = true, env = "PLB_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "PLB_LOG_JSON")]
    pub log_json: bool,
}

pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if args.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
