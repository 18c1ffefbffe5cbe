//! Refreshing a package: the current portal state of given tasks, by host
//! id, written back through the store's monotonic rules and then
//! acknowledged.
//!
//! Tasks still `awaiting-submission` are asked about too: if an earlier
//! submission was accepted but its answer lost, this is where the portal's
//! code reaches the store. Final tasks (`complete`, `cancelled`) are asked
//! about as well when the job names them; the store ignores what is not
//! newer.

use std::collections::HashSet;

use task_model::{PortalTask, TaskId};

use super::acknowledge::acknowledge_all;
use super::{HandlerError, JobContext, JobReport, write_back_counted};

/// Refreshes the tasks `ids` from the portal.
pub async fn refresh_tasks(ctx: &JobContext, ids: &[TaskId]) -> Result<JobReport, HandlerError> {
    let mut report = JobReport::default();
    let mut known: Vec<TaskId> = Vec::with_capacity(ids.len());
    for loaded in ctx.batch.load(ids.to_vec()).await? {
        match loaded {
            Ok(task) => known.push(task.task.host_system_id),
            Err(row) => {
                tracing::warn!(task_id = %row.task_id(), error = %row, "task cannot be loaded; not refreshed");
                report.skipped += 1;
            }
        }
    }
    if known.is_empty() {
        return Ok(report);
    }
    let asked: HashSet<&str> = known.iter().map(String::as_str).collect();
    let found: Vec<PortalTask> = ctx
        .portal
        .tasks_by_host_ids(&known)
        .await?
        .into_iter()
        .filter(|t| asked.contains(t.host_system_id.as_str()))
        .collect();
    apply_and_acknowledge(ctx, found, &mut report).await?;
    Ok(report)
}

/// Writes `found` back, then acknowledges what is durable. Shared by
/// refresh and pull.
pub(super) async fn apply_and_acknowledge(
    ctx: &JobContext,
    found: Vec<PortalTask>,
    report: &mut JobReport,
) -> Result<HashSet<TaskId>, HandlerError> {
    let durable = write_back_counted(ctx, &found).await?;
    report.updated += durable.len() as u64;
    let durable: HashSet<TaskId> = durable.into_iter().collect();
    let to_ack: Vec<PortalTask> = found
        .into_iter()
        .filter(|t| durable.contains(&t.host_system_id))
        .collect();
    acknowledge_all(ctx, to_ack, report).await?;
    Ok(durable)
}
