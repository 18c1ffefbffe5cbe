//! `portal-sync dead list|retry|purge`: the jobs that ran out of attempts or
//! were refused for good, kept by the queue with their last error.

use job_queue::{JobInfo, JobQueue};
use serde::Serialize;
use task_model::job::QUEUE_NAME;
use task_model::job::SyncJob;

use crate::cli::{DeadCommand, DeadListArgs, DeadSelectArgs};
use crate::exit::{CommandError, ExitStatus};
use crate::output::print_json;

/// One dead job as listed.
#[derive(Debug, Serialize)]
pub struct DeadJob {
    pub id: String,
    /// `submit`, `refresh`, `pull`, or `unreadable` if the payload does not decode.
    pub kind: String,
    pub task_ids: Vec<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    /// When the job died (UTC, RFC 3339), if recorded.
    pub died_at: Option<String>,
    pub run_id: Option<String>,
}

impl DeadJob {
    fn from_info(info: &JobInfo) -> DeadJob {
        let decoded = info.decode::<SyncJob>(QUEUE_NAME);
        let (kind, task_ids, run_id) = match decoded {
            Ok(job) => (job.kind.to_string(), job.task_ids, Some(job.run_id)),
            Err(_) => ("unreadable".to_string(), Vec::new(), None),
        };
        DeadJob {
            id: info.id.clone(),
            kind,
            task_ids,
            attempts: info.attempts,
            max_attempts: info.max_attempts,
            last_error: info.last_error.clone(),
            died_at: info.finished_ms.and_then(ms_to_rfc3339),
            run_id,
        }
    }
}

fn ms_to_rfc3339(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

fn queue_error(action: &'static str, source: job_queue::QueueError) -> CommandError {
    CommandError::Queue { action, source }
}

/// Runs a `dead` subcommand.
pub async fn run_dead(queue: &JobQueue, command: &DeadCommand) -> Result<ExitStatus, CommandError> {
    match command {
        DeadCommand::List(args) => list(queue, args).await,
        DeadCommand::Retry(args) => retry_or_purge(queue, args, Action::Retry).await,
        DeadCommand::Purge(args) => retry_or_purge(queue, args, Action::Purge).await,
    }
}

async fn list(queue: &JobQueue, args: &DeadListArgs) -> Result<ExitStatus, CommandError> {
    let jobs = queue
        .dead_letters(0, args.limit as u64)
        .await
        .map_err(|e| queue_error("listing dead jobs", e))?;
    let counts = queue
        .counts()
        .await
        .map_err(|e| queue_error("counting dead jobs", e))?;
    let jobs: Vec<DeadJob> = jobs.iter().map(DeadJob::from_info).collect();
    if args.json {
        #[derive(Serialize)]
        struct Listing<'a> {
            total: u64,
            shown: usize,
            jobs: &'a [DeadJob],
        }
        print_json(&Listing {
            total: counts.dead,
            shown: jobs.len(),
            jobs: &jobs,
        });
    } else if jobs.is_empty() {
        println!("no dead jobs");
    } else {
        println!(
            "{} dead job(s){}:",
            counts.dead,
            if counts.dead > jobs.len() as u64 {
                format!(", newest {} shown", jobs.len())
            } else {
                String::new()
            }
        );
        for job in &jobs {
            println!(
                "  {}  {:<8} {:>3} task(s)  attempts {}/{}  {}  {}",
                job.id,
                job.kind,
                job.task_ids.len(),
                job.attempts,
                job.max_attempts,
                job.died_at.as_deref().unwrap_or("-"),
                job.last_error.as_deref().unwrap_or("(no error recorded)")
            );
        }
        println!("re-drive with `portal-sync dead retry ID…` or `--all`; delete with `dead purge`");
    }
    Ok(ExitStatus::Done)
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Retry,
    Purge,
}

async fn retry_or_purge(
    queue: &JobQueue,
    args: &DeadSelectArgs,
    action: Action,
) -> Result<ExitStatus, CommandError> {
    let (verb, what) = match action {
        Action::Retry => ("retried", "re-driving dead jobs"),
        Action::Purge => ("purged", "purging dead jobs"),
    };
    let done = match (action, args.all) {
        (Action::Retry, true) => queue.retry_all_dead().await,
        (Action::Purge, true) => queue.purge_all_dead().await,
        (Action::Retry, false) => queue.retry_dead(&args.ids).await,
        (Action::Purge, false) => queue.purge_dead(&args.ids).await,
    }
    .map_err(|e| queue_error(what, e))?;
    let asked = if args.all {
        None
    } else {
        Some(args.ids.len() as u64)
    };
    let missing = asked.map(|n| n.saturating_sub(done)).unwrap_or(0);
    if args.json {
        #[derive(Serialize)]
        struct Outcome {
            action: &'static str,
            count: u64,
            not_dead: u64,
        }
        print_json(&Outcome {
            action: verb,
            count: done,
            not_dead: missing,
        });
    } else {
        println!("{verb} {done} dead job(s)");
    }
    if missing > 0 {
        eprintln!(
            "portal-sync: {missing} of the given job id(s) are not dead jobs (check the ids with `portal-sync dead list`)"
        );
    }
    Ok(ExitStatus::done_or_partial(missing > 0))
}
