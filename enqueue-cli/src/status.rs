//! `portal-sync status`: tasks by status (and how many carry an error), the
//! queue's depth and oldest pending age, and the last enqueue run.

use std::collections::BTreeMap;

use job_queue::{JobQueue, QueueCounts};
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use task_model::LocalStatus;
use task_model::store::{AnyStore, TaskStore};

use crate::cli::StatusArgs;
use crate::exit::{CommandError, ExitStatus};
use crate::last_run::read_last_run;
use crate::output::{human_duration, print_json};
use crate::summary::EnqueueSummary;

/// The `--json` form of `status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub tasks: TaskReport,
    pub queue: QueueReport,
    pub last_run: Option<EnqueueSummary>,
}

#[derive(Debug, Serialize)]
pub struct TaskReport {
    /// Every status, with 0 when no task has it.
    pub by_status: BTreeMap<String, u64>,
    pub unknown_status: u64,
    pub with_error: u64,
    pub leased: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub pending: u64,
    pub scheduled: u64,
    pub running: u64,
    pub done: u64,
    pub dead: u64,
    /// Seconds the oldest pending job has waited; `null` when none is pending.
    pub oldest_pending_age_secs: Option<f64>,
    pub workers: u64,
}

impl From<&QueueCounts> for QueueReport {
    fn from(c: &QueueCounts) -> QueueReport {
        QueueReport {
            pending: c.pending,
            scheduled: c.scheduled,
            running: c.running,
            done: c.done,
            dead: c.dead,
            oldest_pending_age_secs: c.oldest_pending_age.map(|d| d.as_secs_f64()),
            workers: c.workers,
        }
    }
}

/// Everything `status` reads from.
#[derive(Debug)]
pub struct StatusSources<'a> {
    pub store: &'a AnyStore,
    pub store_url: &'a str,
    pub queue: &'a JobQueue,
    pub redis: MultiplexedConnection,
    pub redis_url: &'a str,
    pub namespace: &'a str,
}

/// Runs `status`.
pub async fn run_status(
    mut sources: StatusSources<'_>,
    args: &StatusArgs,
) -> Result<ExitStatus, CommandError> {
    let counts = sources
        .store
        .counts(chrono::Utc::now())
        .await
        .map_err(|e| CommandError::store(sources.store_url, e))?;
    let queue_counts = sources
        .queue
        .counts()
        .await
        .map_err(|source| CommandError::Queue {
            action: "reading queue counts",
            source,
        })?;
    let last_run = read_last_run(&mut sources.redis, sources.namespace)
        .await
        .map_err(|e| CommandError::redis(sources.redis_url, e))?;
    let report = StatusReport {
        tasks: TaskReport {
            by_status: LocalStatus::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str().to_string(),
                        counts.by_status.get(s).copied().unwrap_or(0),
                    )
                })
                .collect(),
            unknown_status: counts.unknown_status,
            with_error: counts.with_error,
            leased: counts.leased,
            total: counts.total,
        },
        queue: QueueReport::from(&queue_counts),
        last_run,
    };
    if args.json {
        print_json(&report);
    } else {
        print!("{}", human(&report));
    }
    Ok(ExitStatus::Done)
}

fn human(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "tasks ({} in all)", r.tasks.total);
    for (status, n) in &r.tasks.by_status {
        let _ = writeln!(out, "  {status:<20} {n:>9}");
    }
    if r.tasks.unknown_status > 0 {
        let _ = writeln!(
            out,
            "  {:<20} {:>9}  (rows with an unknown status)",
            "unknown", r.tasks.unknown_status
        );
    }
    let _ = writeln!(out, "  {:<20} {:>9}", "with an error", r.tasks.with_error);
    let _ = writeln!(out, "  {:<20} {:>9}", "leased to a job", r.tasks.leased);
    let q = &r.queue;
    let _ = writeln!(out, "queue");
    let oldest = q
        .oldest_pending_age_secs
        .map(|s| {
            format!(
                " (oldest waiting {})",
                human_duration(std::time::Duration::from_secs_f64(s))
            )
        })
        .unwrap_or_default();
    let _ = writeln!(out, "  {:<20} {:>9}{oldest}", "pending", q.pending);
    let _ = writeln!(out, "  {:<20} {:>9}", "scheduled", q.scheduled);
    let _ = writeln!(out, "  {:<20} {:>9}", "running", q.running);
    let _ = writeln!(out, "  {:<20} {:>9}", "done (retained)", q.done);
    let _ = writeln!(out, "  {:<20} {:>9}", "dead", q.dead);
    let _ = writeln!(out, "  {:<20} {:>9}", "workers", q.workers);
    match &r.last_run {
        None => {
            let _ = writeln!(out, "last enqueue run: none recorded");
        }
        Some(run) => {
            let _ = writeln!(
                out,
                "last enqueue run: {} at {} ({} ago), {}, {} job(s) queued",
                run.run_id,
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                human_duration(
                    (chrono::Utc::now() - run.started_at)
                        .to_std()
                        .unwrap_or_default()
                ),
                run.outcome,
                run.jobs()
            );
        }
    }
    out
}
