//! Submitting a package of tasks.
//!
//! 1. Load the tasks by id; drop those no longer `awaiting-submission`
//!    (another run or worker got there first) and validate the rest — an
//!    invalid task gets the validation errors recorded and is not sent.
//! 2. On a retry (attempt > 1) first ask the portal which of them it
//!    already holds: an earlier attempt may have been accepted even though
//!    its answer never arrived ("accept then fail"). Those are written back
//!    as submitted and not sent again.
//! 3. POST the package and write back code, subject code and status.
//!    - The portal's duplicate answer: look the package up by host id,
//!      write back what it holds, send only the rest. Never a second copy.
//!    - Any other 400: the package is rejected whole, so split it in halves
//!      and send each, recursively, until the offending tasks stand alone;
//!      each of those gets the portal's error, the others go through.
//! 4. Acknowledge the submission answers, so that the portal's list of
//!    unacknowledged changes holds only what patients did afterwards.

use std::collections::HashSet;

use portal_api::PortalError;
use task_model::store::TaskStore;
use task_model::validate::validate_task;
use task_model::{HostTask, LocalStatus, PortalTask, TaskId};

use super::acknowledge::acknowledge_all;
use super::{HandlerError, JobContext, JobReport, write_back_counted};

/// Submits the tasks `ids` (one job's package). `attempt` is 1-based.
pub async fn submit_package(
    ctx: &JobContext,
    ids: &[TaskId],
    attempt: usize,
) -> Result<JobReport, HandlerError> {
    let mut report = JobReport::default();
    let mut pending: Vec<HostTask> = Vec::with_capacity(ids.len());
    for loaded in ctx.batch.load(ids.to_vec()).await? {
        match loaded {
            Ok(task) if task.status == LocalStatus::AwaitingSubmission => {
                match validate_task(&task.task) {
                    Ok(()) => pending.push(task.task),
                    Err(errors) => {
                        tracing::info!(task_id = %task.id(), "task fails validation; not submitted");
                        ctx.store
                            .record_error(task.id(), &errors.to_string())
                            .await?;
                        report.rejected += 1;
                    }
                }
            }
            Ok(task) => {
                tracing::debug!(task_id = %task.id(), status = %task.status, "no longer awaiting submission; skipped");
                report.skipped += 1;
            }
            Err(row) => {
                tracing::warn!(task_id = %row.task_id(), error = %row, "task cannot be loaded; skipped");
                if matches!(row, task_model::store::RowError::BadColumn { .. }) {
                    ctx.store
                        .record_error(row.task_id(), &row.to_string())
                        .await?;
                }
                report.skipped += 1;
            }
        }
    }
    if pending.is_empty() {
        return Ok(report);
    }

    let mut answers: Vec<PortalTask> = Vec::with_capacity(pending.len());
    if attempt > 1 {
        let held = take_already_submitted(ctx, &mut pending, &mut answers).await?;
        report.already_submitted += held;
    }

    // Packages still to send; a rejected package comes back as two halves.
    let mut packages: Vec<Vec<HostTask>> = vec![pending];
    while let Some(mut package) = packages.pop() {
        if package.is_empty() {
            continue;
        }
        match ctx.portal.submit_tasks(&package).await {
            Ok(created) => {
                report.submitted += created.len() as u64;
                let sent: HashSet<&str> =
                    package.iter().map(|t| t.host_system_id.as_str()).collect();
                for t in created
                    .iter()
                    .filter(|t| !sent.contains(t.host_system_id.as_str()))
                {
                    tracing::warn!(task_id = %t.host_system_id, "portal answered with a task we did not send");
                }
                answers.extend(created);
                // Write back per package: what the portal holds is recorded
                // before the next request, so a crash loses no code.
                flush(ctx, &mut answers, &mut report).await?;
            }
            Err(PortalError::TaskAlreadySubmitted { .. }) => {
                let before = package.len();
                let held = take_already_submitted(ctx, &mut package, &mut answers).await?;
                report.already_submitted += held;
                flush(ctx, &mut answers, &mut report).await?;
                if package.len() < before {
                    packages.push(package);
                } else if package.len() == 1 {
                    // The portal says it exists but will not show it to us.
                    let t = &package[0];
                    let msg = "the portal reports this task as already submitted but does not list it by host id";
                    tracing::warn!(task_id = %t.host_system_id, "{msg}");
                    ctx.store.record_error(&t.host_system_id, msg).await?;
                    report.rejected += 1;
                } else {
                    split_into(package, &mut packages);
                }
            }
            Err(PortalError::Rejected { message, .. }) => {
                if package.len() == 1 {
                    let t = &package[0];
                    tracing::info!(task_id = %t.host_system_id, "portal rejected the task");
                    ctx.store
                        .record_error(
                            &t.host_system_id,
                            &format!("portal rejected the task: {message}"),
                        )
                        .await?;
                    report.rejected += 1;
                } else {
                    tracing::debug!(
                        size = package.len(),
                        "portal rejected the package; splitting it"
                    );
                    split_into(package, &mut packages);
                }
            }
            Err(e) => {
                // Retryable or not, this attempt ends here. What went through
                // is already written back; a retry looks the rest up first.
                return Err(e.into());
            }
        }
    }
    flush(ctx, &mut answers, &mut report).await?;
    Ok(report)
}

/// Moves the tasks of `package` that the portal already holds out of it;
/// their portal state goes to `answers`. Answers how many there were.
async fn take_already_submitted(
    ctx: &JobContext,
    package: &mut Vec<HostTask>,
    answers: &mut Vec<PortalTask>,
) -> Result<u64, HandlerError> {
    let ids: Vec<TaskId> = package.iter().map(|t| t.host_system_id.clone()).collect();
    let found = ctx.portal.tasks_by_host_ids(&ids).await?;
    let asked: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let held: HashSet<TaskId> = found
        .iter()
        .filter(|t| asked.contains(t.host_system_id.as_str()))
        .map(|t| t.host_system_id.clone())
        .collect();
    package.retain(|t| !held.contains(&t.host_system_id));
    if !held.is_empty() {
        let ids: Vec<&str> = held.iter().map(String::as_str).collect();
        tracing::info!(task_ids = ?ids, "tasks already on the portal; recorded as submitted, not sent again");
    }
    answers.extend(
        found
            .into_iter()
            .filter(|t| held.contains(&t.host_system_id)),
    );
    Ok(held.len() as u64)
}

fn split_into(mut package: Vec<HostTask>, packages: &mut Vec<Vec<HostTask>>) {
    let second = package.split_off(package.len() / 2);
    packages.push(second);
    packages.push(package);
}

/// Writes back and acknowledges the answers gathered so far.
async fn flush(
    ctx: &JobContext,
    answers: &mut Vec<PortalTask>,
    report: &mut JobReport,
) -> Result<(), HandlerError> {
    if answers.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(answers);
    let durable = write_back_counted(ctx, &batch).await?;
    report.updated += durable.len() as u64;
    let durable: HashSet<TaskId> = durable.into_iter().collect();
    let to_ack: Vec<PortalTask> = batch
        .into_iter()
        .filter(|t| durable.contains(&t.host_system_id))
        .collect();
    acknowledge_all(ctx, to_ack, report).await
}
