//! The command line: every subcommand, its flags, its `--help` text and an
//! example. Parsing only; what a command does lives in its own module.
//!
//! To add a subcommand (e.g. `demo`): add a variant to [`Command`] with its
//! `Args` struct, and one arm in `lib.rs`'s `run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, as `--help` shows them. Kept beside [`crate::exit::ExitStatus`].
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done: everything that needed doing was done
  1  partial: some work was held back (--max-pending) or some records were
     skipped (invalid tasks, unknown --task ids, bad import records)
  2  usage or settings error: bad flags, bad or missing settings file
  3  a dependency is unreachable or failing (Redis, the task store, the portal);
     nothing is left leased, the next run does the work
  4  another `portal-sync enqueue` run holds the lock; this run did nothing";

const ROOT_AFTER_HELP: &str = "\
Examples:
  portal-sync                              # same as `portal-sync enqueue`
  portal-sync --config /etc/portal-sync.yaml enqueue --json
  portal-sync status
  * * * * *  portal-sync --config /etc/portal-sync.yaml enqueue   (crontab)

Settings: one YAML file (--config, default ./portal-sync.yaml); every key can be
overridden by an environment variable (see the settings documentation).
";

/// `portal-sync`: keeps the task store and the Patient Portal in step by queuing
/// sync jobs for the `sync-worker` processes.
///
/// Run with no subcommand it does `enqueue`, the command cron runs every
/// minute: it decides what needs syncing, splits it into package-sized jobs
/// and puts them on the Redis queue. It is safe to run as often as you like: a
/// task already queued is not queued again, and overlapping runs exit at once.
#[derive(Debug, Parser)]
#[command(
    name = "portal-sync",
    version,
    after_long_help = format!("{ROOT_AFTER_HELP}\n{EXIT_CODES_HELP}"),
    after_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Flags of `enqueue`, for when no subcommand is given.
    #[command(flatten)]
    pub enqueue: EnqueueArgs,
}

impl Cli {
    /// The subcommand to run: `enqueue` when none was named. Enqueue flags
    /// given before a subcommand name are a usage error (they would be
    /// silently ignored otherwise).
    pub fn into_command(self) -> Result<(GlobalArgs, Command), clap::Error> {
        match self.command {
            None => Ok((self.global, Command::Enqueue(self.enqueue))),
            Some(command) => {
                if self.enqueue.names_work() {
                    use clap::CommandFactory;
                    return Err(Cli::command().error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "enqueue flags (--complete, --task, --dry-run, --max-pending, --json) go after the subcommand name, e.g. `portal-sync enqueue --json`",
                    ));
                }
                Ok((self.global, command))
            }
        }
    }
}

/// Flags that every subcommand takes.
#[derive(Clone, Debug, Args)]
pub struct GlobalArgs {
    /// Settings file (YAML). Every key can be overridden by environment variables.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "PATH",
        env = "PORTAL_SYNC_CONFIG",
        default_value = "portal-sync.yaml"
    )]
    pub config: PathBuf,

    /// Log format on stderr. `auto`: readable on a terminal, one JSON object
    /// per line otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue sync jobs for the tasks that need them (the default; what cron runs).
    ///
    /// Tasks awaiting submission that pass validation are grouped into
    /// packages of at most `portal_client.task_package_size` and queued as
    /// submit jobs; tasks failing validation get the error recorded on them and
    /// are counted, not queued. If any task awaits completion, one pull job
    /// (a page of the portal's unacknowledged updates) is queued. Every task is
    /// leased in the store before its job is pushed, so a task whose job is
    /// still pending is not queued again, and a run that fails half-way leaves
    /// nothing leased that it did not push.
    #[command(after_help = "\
Examples:
  portal-sync enqueue                      # what cron runs
  portal-sync enqueue --dry-run            # show what would be queued
  portal-sync enqueue --complete           # also refresh every task awaiting completion
  portal-sync enqueue --task T-17 --task T-18
  portal-sync enqueue --max-pending 10000 --json")]
    Enqueue(EnqueueArgs),

    /// Show tasks by status, queue depth and the last enqueue run.
    #[command(after_help = "\
Examples:
  portal-sync status
  portal-sync status --json | jq .queue.pending")]
    Status(StatusArgs),

    /// Load host tasks into the task store from a JSON array or NDJSON file.
    ///
    /// Each bad record is reported with its line number and skipped; the good
    /// ones still land. Tasks already in the store are left as they are (see
    /// the store documentation).
    #[command(after_help = "\
Examples:
  portal-sync import tasks.json
  portal-sync import tasks.ndjson --json
  host-export | portal-sync import -")]
    Import(ImportArgs),

    /// Inspect and re-drive jobs that ran out of attempts (dead letters).
    #[command(subcommand)]
    Dead(DeadCommand),

    /// Validate the settings and reach every dependency (Redis, store, portal).
    ///
    /// Reports each check with its result and latency. The portal check makes
    /// one cheap authenticated request (`GET /tasks?limit=1`), so a wrong API
    /// key shows here.
    #[command(after_help = "\
Examples:
  portal-sync check
  portal-sync --config /etc/portal-sync.yaml check --json")]
    Check(CheckArgs),

    /// Run the whole system in one process on sample data, and check it.
    ///
    /// Seeds an embedded SQLite store with sample tasks (a few invalid on
    /// purpose), uses Redis (REDIS_URL, the settings file, or a private
    /// redis-server it starts), runs the portal simulator with simulated
    /// patients, enqueues, runs sync workers in-process, pulls the
    /// completions back, and prints what happened. Exit code 0 only if no task
    /// was duplicated, every valid task was submitted and every completion
    /// written back; 1 if a check failed; 3 if no Redis could be had.
    #[command(after_help = "\
Examples:
  portal-sync demo
  portal-sync demo --tasks 10000 --workers 4
  portal-sync demo --dir ./demo --keep-running
  portal-sync demo --tasks 200 --json | jq .checks")]
    Demo(crate::demo::DemoArgs),

    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  portal-sync completions bash > /etc/bash_completion.d/portal-sync
  portal-sync completions zsh > \"${fpath[1]}/_portal-sync\"
  portal-sync completions fish > ~/.config/fish/completions/portal-sync.fish")]
    Completions(CompletionsArgs),
}

#[derive(Clone, Debug, Args)]
pub struct EnqueueArgs {
    /// Also queue refresh jobs for every task awaiting completion, not only a
    /// pull of the unacknowledged updates (the full sweep).
    #[arg(long)]
    pub complete: bool,

    /// Only these tasks (host_system_id), whatever their lease. Repeatable.
    /// Unknown ids are reported (exit code 1).
    #[arg(long = "task", value_name = "ID")]
    pub tasks: Vec<String>,

    /// Print what would be queued (counts per kind, first ids); change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Backpressure: if the queue already holds N pending jobs, queue only up to
    /// N in total and say so (exit code 1).
    #[arg(long, value_name = "N")]
    pub max_pending: Option<u64>,

    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,

    /// How long a queued task stays leased to its job, in seconds. A task
    /// whose job was lost (e.g. Redis lost its data) is queued again after
    /// this; a job still queued is never duplicated.
    #[arg(
        long,
        value_name = "SECS",
        env = "PORTAL_SYNC_LEASE_SECS",
        default_value_t = DEFAULT_LEASE_SECS,
        value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600)
    )]
    pub lease_secs: u64,
}

impl EnqueueArgs {
    /// Whether any flag that shapes a run was given (`--lease-secs` aside,
    /// which may come from the environment).
    fn names_work(&self) -> bool {
        self.complete
            || !self.tasks.is_empty()
            || self.dry_run
            || self.max_pending.is_some()
            || self.json
    }
}

/// Default of `enqueue --lease-secs`: 30 minutes.
pub const DEFAULT_LEASE_SECS: u64 = 1800;

impl Default for EnqueueArgs {
    fn default() -> EnqueueArgs {
        EnqueueArgs {
            complete: false,
            tasks: Vec::new(),
            dry_run: false,
            max_pending: None,
            json: false,
            lease_secs: DEFAULT_LEASE_SECS,
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The file to import (JSON array or NDJSON); `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs: id, kind, attempts, last error, when.
    #[command(after_help = "\
Examples:
  portal-sync dead list
  portal-sync dead list --limit 10 --json")]
    List(DeadListArgs),

    /// Put dead jobs back on the queue (attempts reset).
    #[command(after_help = "\
Examples:
  portal-sync dead retry 01J9ZK5X3Q4W
  portal-sync dead retry --all")]
    Retry(DeadSelectArgs),

    /// Delete dead jobs for good.
    #[command(after_help = "\
Examples:
  portal-sync dead purge 01J9ZK5X3Q4W
  portal-sync dead purge --all")]
    Purge(DeadSelectArgs),
}

#[derive(Clone, Debug, Args)]
pub struct DeadListArgs {
    /// Show at most N jobs (newest first).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,

    /// Print a JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
pub struct DeadSelectArgs {
    /// Job ids, as `dead list` shows them.
    #[arg(value_name = "JOB_ID")]
    pub ids: Vec<String>,

    /// Every dead job.
    #[arg(long)]
    pub all: bool,

    /// Print a JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// Print a JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_enqueue_with_its_flags() {
        let cli = Cli::try_parse_from(["portal-sync", "--dry-run", "--task", "a"]).expect("parses");
        match cli.into_command().expect("no conflict").1 {
            Command::Enqueue(args) => {
                assert!(args.dry_run);
                assert_eq!(args.tasks, vec!["a".to_string()]);
            }
            other => panic!("expected enqueue, got {other:?}"),
        }
    }

    #[test]
    fn enqueue_flags_before_another_subcommand_are_refused() {
        let cli = Cli::try_parse_from(["portal-sync", "--json", "status"]).expect("parses");
        assert!(cli.into_command().is_err());
        let cli = Cli::try_parse_from(["portal-sync", "--config", "x.yaml", "status", "--json"])
            .expect("parses");
        assert!(cli.into_command().is_ok());
    }

    #[test]
    fn dead_retry_needs_ids_or_all() {
        assert!(Cli::try_parse_from(["portal-sync", "dead", "retry"]).is_err());
        assert!(Cli::try_parse_from(["portal-sync", "dead", "retry", "--all"]).is_ok());
    }
}
