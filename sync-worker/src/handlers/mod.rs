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
use task_model::store::{AnyStore, StoreError, TaskStore, WriteBackReport};
use task_model::{PortalTask, TaskId};

use crate::metrics::Metrics;
use crate::portal::Portal;

/// What a handler needs: the store, the portal, the metrics.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub store: AnyStore,
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
    /// Portal states written back (refresh, pull).
    pub updated: u64,
    /// Updates the store ignored as stale, repeated or backwards.
    pub ignored: u64,
    /// Acknowledgements the portal accepted.
    pub acknowledged: u64,
    /// Acknowledgements answered 409 and resolved by reading again.
    pub ack_conflicts: u64,
}

/// Writes `updates` back and counts the outcome in the metrics. Answers the
/// report and the ids whose update is durable in the store (everything but
/// unknown tasks, unreadable rows and identity conflicts).
async fn write_back_counted(
    ctx: &JobContext,
    updates: &[PortalTask],
) -> Result<(WriteBackReport, Vec<TaskId>), StoreError> {
    if updates.is_empty() {
        return Ok((WriteBackReport::default(), Vec::new()));
    }
    let report = ctx.store.write_back(updates).await?;
    let m = &ctx.metrics;
    m.written_back("applied", report.applied);
    m.written_back("repeated", report.repeated);
    m.written_back("stale", report.stale);
    m.written_back("backwards", report.backwards);
    m.written_back("conflict", report.conflicts.len() as u64);
    m.written_back("unknown", report.unknown.len() as u64);
    m.written_back("bad_row", report.bad_rows.len() as u64);
    m.stale_ignored(report.stale + report.backwards);
    for (id, why) in &report.conflicts {
        tracing::warn!(task_id = %id, reason = %why, "portal state contradicts the stored one; not applied");
        ctx.store
            .record_error(id, &format!("portal state not applied: {why}"))
            .await?;
    }
    for id in &report.unknown {
        tracing::warn!(task_id = %id, "portal reports a task the store does not hold");
    }
    let refused: std::collections::HashSet<&str> = report
        .conflicts
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(report.unknown.iter().map(String::as_str))
        .chain(report.bad_rows.iter().map(|r| r.task_id()))
        .collect();
    let durable = updates
        .iter()
        .map(|u| &u.host_system_id)
        .filter(|id| !refused.contains(id.as_str()))
        .cloned()
        .collect();
    Ok((report, durable))
}
