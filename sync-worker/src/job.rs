//! The job service: what the apalis worker calls for each job it takes from
//! the queue. It
//!
//! - takes no job while the portal refuses our key (`poll_ready` waits on the
//!   [`AuthGate`], so the worker does not fetch: jobs stay in the queue);
//!   how many jobs run at once is the queue backend's `concurrency`;
//! - runs each job on its own tokio task inside a tracing span carrying job
//!   id, kind, run, package size and attempt, bounded by the job timeout;
//!   a panic ends that task only and fails that job only;
//! - parks a job that met a 401/403 until the key works again and then runs
//!   it again, so an authentication outage uses up no attempts;
//! - maps any other failure to what the queue should do with the job
//!   ([`classify`], the one place) and records the error on the job's tasks.
//!
//! Retry delays are the queue's [`RetryPolicy`] (exponential, full jitter,
//! capped), never shorter than the portal's `Retry-After`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::task::Task;
use futures::FutureExt;
use futures::future::BoxFuture;
use job_queue::{JobError, Lease, RetryDecision, RetryPolicy};
use portal_api::PortalError;
use task_model::store::TaskStore;
use task_model::{JobKind, SyncJob};
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::Instrument;

use crate::auth_gate::AuthGate;
use crate::handlers::{
    HandlerError, JobContext, JobReport, pull_updates, refresh_tasks, submit_package,
};
use crate::metrics::JobOutcome;

/// Limits of one job attempt.
#[derive(Clone, Copy, Debug)]
pub struct JobLimits {
    /// Wall time one attempt may take before it is abandoned and retried.
    pub job_timeout: Duration,
    /// The queue's retry policy, for the delay of a retryable failure.
    pub retry: RetryPolicy,
    /// The delay of a job handed back because the worker stopped while the
    /// portal refused our key.
    pub auth_backoff: Duration,
}

/// What the queue should do with a failed attempt, and how it is counted.
#[derive(Debug)]
pub struct Classified {
    pub error: JobError,
    pub outcome: JobOutcome,
    /// Record the error on the job's tasks.
    pub record_on_tasks: bool,
}

/// Maps a handler failure to a queue decision. `attempt` is 1-based.
///
/// - network errors, timeouts, 408, 429, 5xx: retry after the queue's
///   backoff for this attempt, never sooner than `Retry-After`;
/// - 401/403: hand back for later without recording anything on the tasks
///   (reached only when the worker stops while parked, see the module doc);
/// - other portal answers (undecodable, a broken contract, an unexpected
///   404/409): no retry, the job goes dead with the error;
/// - store failures: retry (the database may be back).
pub fn classify(err: &HandlerError, attempt: u32, limits: &JobLimits) -> Classified {
    let message = err.to_string();
    match err {
        HandlerError::Portal(PortalError::Unauthorized { .. }) => Classified {
            error: JobError::retry_after(message, limits.auth_backoff),
            outcome: JobOutcome::Deferred,
            record_on_tasks: false,
        },
        HandlerError::Portal(p) if p.is_retryable() => {
            let backoff = limits.retry.backoff(attempt);
            let error = match p.retry_after() {
                Some(ra) => JobError::retry_after(message, backoff.max(ra)),
                None => JobError::retry_after(message, backoff),
            };
            Classified {
                error,
                outcome: JobOutcome::Retried,
                record_on_tasks: true,
            }
        }
        HandlerError::Portal(_) => Classified {
            error: JobError::no_retry(message),
            outcome: JobOutcome::Failed,
            record_on_tasks: true,
        },
        HandlerError::Store(_) | HandlerError::StoreStopped => Classified {
            error: JobError::retry_after(message, limits.retry.backoff(attempt)),
            outcome: JobOutcome::Retried,
            record_on_tasks: false,
        },
    }
}

/// The tower service the apalis worker drives.
pub struct JobService {
    ctx: JobContext,
    gate: AuthGate,
    limits: JobLimits,
    shutdown: CancellationToken,
    admitting: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService")
            .field("limits", &self.limits)
            .field("gate_open", &self.gate.is_open())
            .finish_non_exhaustive()
    }
}

impl JobService {
    /// `shutdown` is the worker's stop request: a job parked on the gate
    /// hands itself back when it fires.
    pub fn new(
        ctx: JobContext,
        gate: AuthGate,
        limits: JobLimits,
        shutdown: CancellationToken,
    ) -> Self {
        JobService {
            ctx,
            gate,
            limits,
            shutdown,
            admitting: None,
        }
    }
}

impl Service<Task<SyncJob>> for JobService {
    type Response = JobReport;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<JobReport, JobError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        if self.gate.is_open() {
            self.admitting = None;
            return Poll::Ready(Ok(()));
        }
        let gate = self.gate.clone();
        let fut = self
            .admitting
            .get_or_insert_with(|| async move { gate.wait_open().await }.boxed());
        match fut.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.admitting = None;
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, task: Task<SyncJob>) -> Self::Future {
        let ctx = self.ctx.clone();
        let gate = self.gate.clone();
        let limits = self.limits;
        let shutdown = self.shutdown.clone();
        let lease = task.ctx().data().get::<Lease>().cloned();
        let job_id = task
            .ctx()
            .task_id()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let attempt = lease.as_ref().map_or(1, |l| l.attempt.max(1));
        let max_attempts = lease.as_ref().map_or(1, |l| l.max_attempts);
        let job = task.args;
        Box::pin(async move {
            let kind = job.kind.as_str();
            let span = tracing::info_span!(
                "job",
                job_id = %job_id,
                kind,
                run_id = %job.run_id,
                package_size = job.task_ids.len(),
                attempt,
            );
            let start = Instant::now();
            let attempt_run = run_job(ctx.clone(), gate, limits, shutdown, job.clone(), attempt)
                .instrument(span.clone());
            let result = match run_isolated(attempt_run).await {
                Ok(result) => result,
                Err(what) => {
                    span.in_scope(|| {
                        tracing::error!(panic = %what, "job handler panicked; failing this job only")
                    });
                    ctx.metrics
                        .job_finished(kind, JobOutcome::Panicked, start.elapsed());
                    let message = format!("{kind} job handler panicked: {what}");
                    record_on_tasks(&ctx, &job, &message)
                        .instrument(span.clone())
                        .await;
                    Err(JobError::no_retry(message))
                }
            };
            let last = match &result {
                Ok(_) => true,
                Err(e) => e.decision() == RetryDecision::Never || attempt >= max_attempts,
            };
            if last {
                release_task_leases(&ctx, &job, &job_id)
                    .instrument(span)
                    .await;
            }
            result
        })
    }
}

/// Runs `fut` on its own tokio task, so that jobs run in parallel on the
/// runtime's threads and a panic stays inside that task. Answers the panic's
/// message if it panicked. Dropping the returned future aborts the task.
pub async fn run_isolated<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let mut task = AbortOnDrop(tokio::spawn(fut));
    match (&mut task.0).await {
        Ok(v) => Ok(v),
        Err(join) if join.is_panic() => Err(panic_message(join.into_panic())),
        Err(_) => Err("the job's task was cancelled".to_owned()),
    }
}

/// Aborts the job's task if the worker drops the job (the shutdown grace ran
/// out): the queue backend then releases its lease.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_owned()
    }
}

/// One attempt, inside the job's span: run the handler within the job
/// timeout, park on a refused key, count it, classify a failure.
async fn run_job(
    ctx: JobContext,
    gate: AuthGate,
    limits: JobLimits,
    shutdown: CancellationToken,
    job: SyncJob,
    attempt: u32,
) -> Result<JobReport, JobError> {
    let kind = job.kind.as_str();
    loop {
        let start = Instant::now();
        let handled = tokio::time::timeout(limits.job_timeout, handle(&ctx, &job, attempt)).await;
        let took = start.elapsed();
        return match handled {
            Ok(Ok(report)) => {
                ctx.metrics.job_finished(kind, JobOutcome::Succeeded, took);
                tracing::info!(
                    submitted = report.submitted,
                    already_submitted = report.already_submitted,
                    rejected = report.rejected,
                    skipped = report.skipped,
                    updated = report.updated,
                    acknowledged = report.acknowledged,
                    ack_conflicts = report.ack_conflicts,
                    took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    "job done"
                );
                Ok(report)
            }
            Ok(Err(err @ HandlerError::Portal(PortalError::Unauthorized { .. }))) => {
                gate.refuse(&err.to_string());
                ctx.metrics.job_finished(kind, JobOutcome::Deferred, took);
                tokio::select! {
                    _ = gate.wait_open() => {
                        tracing::debug!("key accepted again; running the job again");
                        continue;
                    }
                    _ = shutdown.cancelled() => {
                        Err(classify(&err, attempt, &limits).error)
                    }
                }
            }
            Ok(Err(err)) => {
                let c = classify(&err, attempt, &limits);
                ctx.metrics.job_finished(kind, c.outcome, took);
                tracing::warn!(error = %err, outcome = c.outcome.as_str(), "job attempt failed");
                if c.record_on_tasks {
                    record_on_tasks(&ctx, &job, c.error.message()).await;
                }
                Err(c.error)
            }
            Err(_elapsed) => {
                let message = format!(
                    "{kind} job did not finish within the job timeout of {:?}",
                    limits.job_timeout
                );
                ctx.metrics.job_finished(kind, JobOutcome::Retried, took);
                tracing::warn!(error = %message, "job attempt timed out");
                record_on_tasks(&ctx, &job, &message).await;
                Err(JobError::retry_after(
                    message,
                    limits.retry.backoff(attempt),
                ))
            }
        };
    }
}

async fn handle(ctx: &JobContext, job: &SyncJob, attempt: u32) -> Result<JobReport, HandlerError> {
    match job.kind {
        JobKind::Submit => submit_package(ctx, &job.task_ids, attempt as usize).await,
        JobKind::Refresh => refresh_tasks(ctx, &job.task_ids).await,
        JobKind::Pull => match job.page {
            Some(page) => pull_updates(ctx, page).await,
            // The payload's shape is checked when it is decoded.
            None => Ok(JobReport::default()),
        },
    }
}

/// The enqueue run leased the job's tasks in the store under the job's id,
/// so that no other run queues them meanwhile. Once the job is finished for
/// good (done, or dead) they are released; a job that will be retried keeps
/// them. A lease left behind by a crash lapses on its own.
async fn release_task_leases(ctx: &JobContext, job: &SyncJob, job_id: &str) {
    if job.task_ids.is_empty() || job_id.is_empty() {
        return;
    }
    if let Err(e) = ctx
        .batch
        .release(job.task_ids.clone(), job_id.to_owned())
        .await
    {
        tracing::warn!(error = %e, "could not release the job's task leases; they lapse on their own");
    }
}

/// Records `message` on every task of the job (the attempts count rises).
/// A store failure here is logged, not raised: the job's own error matters.
async fn record_on_tasks(ctx: &JobContext, job: &SyncJob, message: &str) {
    for id in &job.task_ids {
        if let Err(e) = ctx.store.record_error(id, message).await {
            tracing::warn!(task_id = %id, error = %e, "could not record the job's error on the task");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_fails_only_its_own_job() {
        let bad = run_isolated(async {
            if true {
                panic!("boom in task t-1");
            }
            1
        });
        let good = run_isolated(async { 2 });
        let (bad, good) = tokio::join!(bad, good);
        assert_eq!(bad, Err("boom in task t-1".to_owned()));
        assert_eq!(good, Ok(2));
    }

    #[tokio::test]
    async fn dropping_the_job_aborts_its_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fut = run_isolated(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let _ = tx.send(());
        });
        let _ = tokio::time::timeout(Duration::from_millis(20), fut).await;
        // The task was aborted: its sender is dropped unsent.
        assert!(rx.await.is_err());
    }
}
