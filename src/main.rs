//! The `agentgate` binary: parse arguments, run, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;

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
