//! `plb-bench-lb`: the load-balancing benchmark on its own, the same as `plb bench lb`
//! without building the rest of `plb` (handy on a busy machine).
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "plb-bench-lb", about = "PLB's load-balancing benchmark")]
struct Cli {
    #[command(flatten)]
    args: plb_bench::LbArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plb-bench-lb: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(plb_bench::lb::run(cli.args)) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plb-bench-lb: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
