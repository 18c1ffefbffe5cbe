//! `portal-sync`: the command cron runs.
//!
//! It reads the task store, decides what needs syncing, splits the work into
//! package-sized jobs and pushes them onto the Redis queue that the
//! `sync-worker` processes drain. It also reports status, imports host tasks,
//! re-drives dead jobs and checks that every dependency answers.
//!
//! | module | command |
//! |---|---|
//! | [`enqueue`] | `enqueue` (the default): stream, validate, package, lease, push |
//! | [`status`] | `status`: tasks by status, queue depth, last run |
//! | [`import`] | `import FILE\|-` |
//! | [`dead`] | `dead list\|retry\|purge` |
//! | [`check`] | `check`: settings, Redis, store, portal, with latencies |
//! | [`completions`] | `completions bash\|zsh\|fish` |
//! | [`demo`] | `demo`: the whole system in one process on sample data |
//!
//! The library exists so that other commands (the demo) and tests can run the
//! enqueue path in-process: [`enqueue_once`] takes loaded settings and returns
//! the run's summary; [`run`] is what the binary calls. Nothing here calls
//! `std::process::exit`.
//!
//! What it deliberately does not do: talk to the portal while enqueueing (jobs
//! carry task ids only; the workers make the portal calls), or put task
//! contents in Redis.

pub mod check;
pub mod cli;
pub mod completions;
pub mod context;
pub mod dead;
pub mod demo;
pub mod enqueue;
pub mod exit;
pub mod import;
pub mod last_run;
pub mod output;
pub mod run_lock;
pub mod status;
pub mod summary;

use std::time::Duration;

use indicatif::ProgressBar;
use task_model::settings::Settings;

use cli::{Command, EnqueueArgs, GlobalArgs};
use enqueue::{EnqueueContext, RunObserver};
use exit::{CommandError, ExitStatus};
use output::{Output, print_json};
use run_lock::{LockError, RunLock};
use summary::EnqueueSummary;

/// Runs one parsed command, printing its output; answers the exit status.
pub async fn run(
    global: GlobalArgs,
    command: Command,
    output: Output,
) -> Result<ExitStatus, CommandError> {
    match command {
        Command::Completions(args) => {
            completions::write_completions(args.shell, &mut std::io::stdout());
            Ok(ExitStatus::Done)
        }
        Command::Check(args) => check::run_check(&global.config, &args).await,
        Command::Demo(args) => demo::run_demo(&global, &args, output).await,
        Command::Import(args) => {
            let settings = context::load_settings(&global.config)?;
            let store = context::open_task_store(&settings).await?;
            import::run_import(&store, settings.store.url.redacted(), &args).await
        }
        Command::Status(args) => {
            let settings = context::load_settings(&global.config)?;
            let store = context::open_task_store(&settings).await?;
            let redis = context::connect_redis(&settings).await?;
            let queue = context::connect_queue(&settings).await?;
            let sources = status::StatusSources {
                store: &store,
                store_url: settings.store.url.redacted(),
                queue: &queue,
                redis,
                redis_url: settings.redis.url.redacted(),
                namespace: &settings.redis.namespace,
            };
            status::run_status(sources, &args).await
        }
        Command::Dead(cmd) => {
            let settings = context::load_settings(&global.config)?;
            let queue = context::connect_queue(&settings).await?;
            dead::run_dead(&queue, &cmd).await
        }
        Command::Enqueue(args) => {
            let settings = context::load_settings(&global.config)?;
            let progress = ProgressObserver(output.progress(None, "reading"));
            let result = enqueue_once(&settings, &args, &progress).await;
            progress.0.finish_and_clear();
            match result {
                Ok(summary) => {
                    if args.json {
                        print_json(&summary);
                    } else {
                        print!("{}", summary.human());
                    }
                    Ok(ExitStatus::done_or_partial(summary.outcome == "partial"))
                }
                Err(error) => {
                    if args.json {
                        print_json(&serde_json::json!({
                            "outcome": if matches!(error, CommandError::Locked { .. }) { "locked" } else { "failed" },
                            "exit_code": error.exit_status().code(),
                            "error": error.to_string(),
                        }));
                    }
                    Err(error)
                }
            }
        }
    }
}

/// Draws the progress bar (hidden when not on a terminal).
struct ProgressObserver(ProgressBar);

impl RunObserver for ProgressObserver {
    fn tasks_read(&self, n: u64) {
        self.0.inc(n);
    }
    fn batch_pushed(&self, jobs: u64, _tasks: u64) {
        if jobs > 0 {
            self.0.set_message("queueing");
        }
    }
}

/// One enqueue run from loaded settings: opens the store, takes the run lock
/// (not for a dry run, which touches neither Redis nor the store's leases),
/// queues the work, records the run for `status`, and releases the lock.
/// Prints nothing; the caller decides how to show the summary.
pub async fn enqueue_once(
    settings: &Settings,
    args: &EnqueueArgs,
    observer: &dyn RunObserver,
) -> Result<EnqueueSummary, CommandError> {
    let run_id = ulid::Ulid::new().to_string();
    let store = context::open_task_store(settings).await?;
    let mut ctx = EnqueueContext {
        store,
        store_url: settings.store.url.redacted().to_string(),
        queue: None,
        task_package_size: settings.portal_client.task_package_size,
        lease_for: Duration::from_secs(args.lease_secs),
    };
    if args.dry_run {
        let mut dry = args.clone();
        // A dry run reads the queue only for `--max-pending`.
        if dry.max_pending.is_some() {
            ctx.queue = Some(context::connect_queue(settings).await?);
        }
        dry.dry_run = true;
        return enqueue::run_enqueue(&ctx, &dry, &run_id, observer).await;
    }

    let mut redis = context::connect_redis(settings).await?;
    let lock = RunLock::acquire(redis.clone(), &settings.redis.namespace, &run_id)
        .await
        .map_err(|e| match e {
            LockError::Held {
                holder,
                expires_in_ms,
            } => CommandError::Locked {
                holder,
                expires_in_ms,
            },
            LockError::Redis(e) => CommandError::redis(settings.redis.url.redacted(), e),
        })?;
    tracing::info!(run_id = %run_id, "enqueue run started");
    let result = async {
        ctx.queue = Some(context::connect_queue(settings).await?);
        enqueue::run_enqueue(&ctx, args, &run_id, observer).await
    }
    .await;
    if let Ok(summary) = &result {
        if let Err(e) =
            last_run::record_last_run(&mut redis, &settings.redis.namespace, summary).await
        {
            tracing::warn!(error = %e, "could not record the run for `status`");
        }
        tracing::info!(
            run_id = %run_id,
            outcome = %summary.outcome,
            jobs = summary.jobs(),
            submit_tasks = summary.kinds.get("submit").map(|k| k.tasks).unwrap_or(0),
            refresh_tasks = summary.kinds.get("refresh").map(|k| k.tasks).unwrap_or(0),
            invalid = summary.skipped.invalid,
            duration_ms = summary.duration_ms,
            "enqueue run finished"
        );
    }
    lock.release().await;
    result
}
