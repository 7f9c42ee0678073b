//! The `agentgate` binary: parse arguments, run, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;

// The request path allocates small, short-lived objects across threads (policy values,
// headers); mimalloc's thread-local free lists serve that far better than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agentgate::telemetry::init_logging();
    match agentgate::cli::run(agentgate::cli::Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("agentgate: {err:#}");
            ExitCode::from(1)
        }
    }
}
