//! The three job handlers and what they share.
//!
//! - [`submit_package`]: POST a package of tasks, write back what the portal
//!   made of them, never create a second copy, isolate rejected tasks.
//! - [`refresh_tasks`]: read given tasks' current portal state by host id,
//!   write it back, acknowledge.
//! - [`pull_updates`]: page through the portal's unacknowledged changes,
//!   write them back, acknowledge.
//!
//! Handlers do the work of one attempt and say what happened
//! ([`JobReport`]) or why not ([`HandlerError`]). Whether and when a failed
//! attempt is retried is decided in one place, [`crate::job::classify`].
//!
//! Write-back always comes before acknowledgement: the store's answer is
//! durable when `write_back` returns, and only then is the portal told that
//! we have the revision. A crash between the two leaves the change
//! unacknowledged, so it is pulled again (and the repeat changes nothing).

mod acknowledge;
mod pull;
mod refresh;
mod submit;

pub use pull::pull_updates;
pub use refresh::refresh_tasks;
pub use submit::submit_package;

use portal_api::PortalError;
use task_model::store::{AnyStore, StoreError, TaskStore};
use task_model::{PortalTask, TaskId};

use crate::metrics::Metrics;
use crate::portal::Portal;
use crate::store_batch::{BatchError, StoreBatcher};

/// What a handler needs: the store (batched for loads, write-backs and
/// releases), the portal, the metrics.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub store: AnyStore,
    pub batch: StoreBatcher,
    pub portal: Portal,
    pub metrics: Metrics,
}

/// Why one attempt of a job failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The portal call failed (retryable or not: see
    /// [`PortalError::is_retryable`]).
    #[error(transparent)]
    Portal(#[from] PortalError),
    /// The store failed; the database may be back on the next attempt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store batcher stopped under us (the worker is shutting down).
    #[error("the store batcher has stopped (shutting down)")]
    StoreStopped,
}

impl From<BatchError> for HandlerError {
    fn from(e: BatchError) -> HandlerError {
        match e {
            BatchError::Store(e) => HandlerError::Store(e),
            BatchError::Stopped => HandlerError::StoreStopped,
        }
    }
}

/// What one successful attempt did, in task counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Tasks the portal now holds for the first time (submit).
    pub submitted: u64,
    /// Tasks found already on the portal and written back as submitted.
    pub already_submitted: u64,
    /// Tasks skipped because they were no longer awaiting submission (or
    /// not in the store).
    pub skipped: u64,
    /// Tasks that failed validation or that the portal rejected; each
    /// carries the error in the store.
    pub rejected: u64,
    /// Portal states durable in the store after this job's write-backs
    /// (applied now, or already held; stale ones are counted in the metrics).
    pub updated: u64,
    /// Acknowledgements the portal accepted.
    pub acknowledged: u64,
    /// Acknowledgements answered 409 and resolved by reading again.
    pub ack_conflicts: u64,
}

/// Writes `updates` back (batched with other jobs' write-backs; the counts
/// go to the metrics there). Answers the ids whose update is durable in the
/// store (everything but unknown tasks, unreadable rows and identity
/// conflicts); conflicts are recorded as the task's error.
async fn write_back_counted(
    ctx: &JobContext,
    updates: &[PortalTask],
) -> Result<Vec<TaskId>, HandlerError> {
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    let outcome = ctx.batch.write_back(updates.to_vec()).await?;
    for (id, why) in &outcome.conflicts {
        tracing::warn!(task_id = %id, reason = %why, "portal state contradicts the stored one; not applied");
        ctx.store
            .record_error(id, &format!("portal state not applied: {why}"))
            .await?;
    }
    for id in &outcome.unknown {
        tracing::warn!(task_id = %id, "portal reports a task the store does not hold");
    }
    Ok(outcome.durable)
}
