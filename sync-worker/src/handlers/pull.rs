//! Pulling unacknowledged changes: one job asks for a page of the portal's
//! list of tasks changed since our last acknowledgement, writes each change
//! back and acknowledges it.
//!
//! Acknowledged tasks leave that list, so the list shrinks under our feet
//! and fixed page offsets would skip changes. A pull job therefore keeps
//! going from its offset until the portal hands it a short page: the tasks
//! it acknowledged are gone, and only those it could not take (unknown to
//! the store, or still changing) are stepped over. Jobs for later pages
//! find little or nothing and end quickly; the job at offset 0 sees
//! everything. The number of pages one job takes is bounded so that a
//! stream of patient activity cannot hold a worker forever; whatever is left
//! waits for the next enqueue run.

use task_model::job::PullPage;

use super::refresh::apply_and_acknowledge;
use super::{HandlerError, JobContext, JobReport};

/// Most pages one pull job reads.
const MAX_PAGES_PER_JOB: u32 = 200;

/// Pulls unacknowledged changes starting at `page`.
pub async fn pull_updates(ctx: &JobContext, page: PullPage) -> Result<JobReport, HandlerError> {
    let mut report = JobReport::default();
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX).max(1);
    let mut offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
    for _ in 0..MAX_PAGES_PER_JOB {
        let found = ctx.portal.unacknowledged_page(limit, offset).await?;
        let n = found.len();
        if n == 0 {
            break;
        }
        let before = report.acknowledged;
        let fetched: Vec<_> = found.iter().map(|t| t.host_system_id.clone()).collect();
        apply_and_acknowledge(ctx, found, &mut report).await?;
        let acknowledged = usize::try_from(report.acknowledged - before).unwrap_or(n);
        tracing::debug!(
            offset,
            fetched = fetched.len(),
            acknowledged,
            "pulled a page"
        );
        if n < limit {
            break;
        }
        // Acknowledged tasks left the list; the others are still in front.
        offset += n.saturating_sub(acknowledged);
    }
    Ok(report)
}
