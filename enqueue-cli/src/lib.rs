//! `portal-sync`: the command cron runs.
//!
//! It reads the task store, decides what needs syncing, splits the work into
//! package-sized jobs and pushes them onto the Redis queue that the
//! `sync-worker` processes drain. It also reports status, imports host tasks,
//! re-drives dead jobs and checks that every dependency answers.
//!
//! The library exists so that other commands (the demo) and tests can call a
//! command in-process: [`run`] takes parsed arguments and returns the exit
//! status; nothing here calls `std::process::exit`.
//!
//! It deliberately does not talk to the portal while enqueueing: jobs carry
//! task ids only, and the workers do the portal calls.

pub mod cli;
pub mod completions;
pub mod exit;
pub mod output;
pub mod run_lock;
pub mod summary;

use cli::{Command, GlobalArgs};
use exit::{CommandError, ExitStatus};
use output::Output;

/// Runs one parsed command.
pub async fn run(
    global: GlobalArgs,
    command: Command,
    output: Output,
) -> Result<ExitStatus, CommandError> {
    let _ = (&global, output);
    match command {
        Command::Completions(args) => {
            completions::write_completions(args.shell, &mut std::io::stdout());
            Ok(ExitStatus::Done)
        }
        _ => Err(CommandError::Usage {
            message: "not implemented yet".into(),
        }),
    }
}
