//! `portal-sync`, the command cron runs. Parses the command line, sets up
//! logging and hands over to [`enqueue_cli::run`]; an error becomes one line on
//! stderr and its exit code.

use std::process::ExitCode;

use clap::Parser;
use enqueue_cli::cli::Cli;
use enqueue_cli::output::{Output, init_logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = Output::detect();
    init_logging(cli.global.log_format, cli.global.verbose, output);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portal-sync: cannot start the async runtime: {e}");
            return ExitCode::from(enqueue_cli::exit::ExitStatus::Unreachable);
        }
    };
    let (global, command) = match cli.into_command() {
        Ok(parts) => parts,
        Err(e) => e.exit(),
    };
    match runtime.block_on(enqueue_cli::run(global, command, output)) {
        Ok(status) => status.into(),
        Err(error) => {
            for line in error.lines() {
                eprintln!("portal-sync: {line}");
            }
            error.exit_status().into()
        }
    }
}
