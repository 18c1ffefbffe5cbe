//! Acknowledging portal changes once they are durable in the store.
//!
//! `PUT /tasks/@{code} {"acknowledged": true, "revision": r}` answers 409
//! when the task changed after revision `r`: a patient saved or completed
//! between our read and our acknowledgement. That change must not be lost,
//! so the task is read again, written back, and the new revision
//! acknowledged — a few rounds at most; a task that keeps changing stays
//! unacknowledged and the next pull brings it.

use futures::StreamExt;
use portal_api::PortalError;
use task_model::PortalTask;

use super::{HandlerError, JobContext, JobReport, write_back_counted};

/// Acknowledgements in flight at once within one job.
const ACK_CONCURRENCY: usize = 4;
/// Read-again rounds after a 409 before leaving a task to the next pull.
const MAX_ACK_ROUNDS: u32 = 4;

enum AckOutcome {
    Acknowledged {
        conflicts: u64,
        updated: u64,
    },
    /// Gone from the portal, not durable, or still changing: left alone.
    Left {
        conflicts: u64,
        updated: u64,
    },
}

/// Acknowledges every task in `updates` that is not acknowledged yet. The
/// caller has written them back and passes only durable ones.
pub(super) async fn acknowledge_all(
    ctx: &JobContext,
    updates: Vec<PortalTask>,
    report: &mut JobReport,
) -> Result<(), HandlerError> {
    let mut acks = futures::stream::iter(
        updates
            .into_iter()
            .filter(|t| !t.acknowledged)
            .map(|t| acknowledge_one(ctx, t)),
    )
    .buffer_unordered(ACK_CONCURRENCY);
    let mut first_error = None;
    while let Some(outcome) = acks.next().await {
        match outcome {
            Ok(AckOutcome::Acknowledged { conflicts, updated }) => {
                report.acknowledged += 1;
                report.ack_conflicts += conflicts;
                report.updated += updated;
            }
            Ok(AckOutcome::Left { conflicts, updated }) => {
                report.ack_conflicts += conflicts;
                report.updated += updated;
            }
            // Let the other acknowledgements finish: each one done is one
            // fewer change to pull again.
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn acknowledge_one(
    ctx: &JobContext,
    mut task: PortalTask,
) -> Result<AckOutcome, HandlerError> {
    let mut conflicts = 0;
    let mut updated = 0;
    for _ in 0..MAX_ACK_ROUNDS {
        match ctx.portal.acknowledge_task(&task.code, task.revision).await {
            Ok(()) => return Ok(AckOutcome::Acknowledged { conflicts, updated }),
            Err(PortalError::Conflict { .. }) => {
                conflicts += 1;
                tracing::debug!(task_id = %task.host_system_id, revision = task.revision, "acknowledgement raced a newer change; reading again");
                let Some(fresh) = ctx.portal.get_task(&task.code).await? else {
                    return Ok(AckOutcome::Left { conflicts, updated });
                };
                let durable = write_back_counted(ctx, std::slice::from_ref(&fresh)).await?;
                updated += durable.len() as u64;
                if durable.is_empty() {
                    return Ok(AckOutcome::Left { conflicts, updated });
                }
                if fresh.acknowledged {
                    return Ok(AckOutcome::Acknowledged { conflicts, updated });
                }
                task = fresh;
            }
            Err(PortalError::NotFound { .. }) => {
                tracing::warn!(task_id = %task.host_system_id, "task vanished from the portal before its acknowledgement");
                return Ok(AckOutcome::Left { conflicts, updated });
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(task_id = %task.host_system_id, "task keeps changing; left for the next pull");
    Ok(AckOutcome::Left { conflicts, updated })
}
