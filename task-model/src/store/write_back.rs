//! Write-back, shared by both backends: read the current state of a batch of
//! tasks, let [`decide_update`] judge each portal update in order, then write
//! every changed task with a compare-and-set on its `row_version`. A task
//! whose row changed between the read and the write (another worker got
//! there first) is read and judged again, so a racing writer can make an
//! update stale but can never make a task go backwards.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use super::row::{CurrentState, PortalColumns};
use super::{DEFAULT_BATCH_SIZE, RowError, StoreError, WriteBackReport};
use crate::task::{LocalStatus, PortalTask, TaskId};
use crate::transition::{IgnoreReason, UpdateDecision, decide_update};

/// Rounds of read-judge-write before a task is declared contended.
const MAX_ROUNDS: u32 = 16;

/// A changed task, to be written only if its row is still at `version`.
#[derive(Debug)]
pub(crate) struct PlannedWrite {
    pub id: TaskId,
    pub version: i64,
    pub status: LocalStatus,
    pub portal: PortalColumns,
}

/// The two things a backend does for write-back.
pub(crate) trait WriteBackBackend: Sync {
    /// The current state of `ids` (absent ids are left out of the map).
    fn read_states(
        &self,
        ids: &[TaskId],
    ) -> impl Future<Output = Result<HashMap<TaskId, Result<CurrentState, RowError>>, StoreError>> + Send;

    /// Writes `writes` in one transaction, each only where `row_version`
    /// still matches; answers the ids written.
    fn apply_writes(
        &self,
        writes: &[PlannedWrite],
    ) -> impl Future<Output = Result<HashSet<TaskId>, StoreError>> + Send;

    /// Records a conflict as the task's error.
    fn record_conflict(
        &self,
        id: &str,
        message: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Applies `updates` in order, in batches.
pub(crate) async fn write_back_with<B: WriteBackBackend>(
    backend: &B,
    updates: &[PortalTask],
) -> Result<WriteBackReport, StoreError> {
    let mut report = WriteBackReport::default();
    for chunk in updates.chunks(DEFAULT_BATCH_SIZE) {
        report.absorb(write_back_batch(backend, chunk).await?);
    }
    for (id, message) in &report.conflicts {
        backend.record_conflict(id, message).await?;
    }
    Ok(report)
}

async fn write_back_batch<B: WriteBackBackend>(
    backend: &B,
    updates: &[PortalTask],
) -> Result<WriteBackReport, StoreError> {
    let mut report = WriteBackReport::default();
    let mut pending: Vec<&PortalTask> = updates.iter().collect();
    let mut round = 0;
    while !pending.is_empty() {
        round += 1;
        if round > MAX_ROUNDS {
            return Err(StoreError::Contended {
                task_id: pending[0].host_system_id.clone(),
                rounds: MAX_ROUNDS,
            });
        }
        let mut ids: Vec<TaskId> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for update in &pending {
            if seen.insert(update.host_system_id.as_str()) {
                ids.push(update.host_system_id.clone());
            }
        }
        let states = backend.read_states(&ids).await?;
        let plan = judge(&pending, states);
        let written = if plan.writes.is_empty() {
            HashSet::new()
        } else {
            backend.apply_writes(&plan.writes).await?
        };
        let mut retry: HashSet<TaskId> = HashSet::new();
        for write in &plan.writes {
            if !written.contains(&write.id) {
                retry.insert(write.id.clone());
            }
        }
        for (id, tally) in plan.tallies {
            if !retry.contains(&id) {
                report.absorb(tally);
            }
        }
        pending.retain(|u| retry.contains(&u.host_system_id));
    }
    Ok(report)
}

#[derive(Debug, Default)]
struct Plan {
    writes: Vec<PlannedWrite>,
    /// What the updates of each task came to in this round.
    tallies: HashMap<TaskId, WriteBackReport>,
}

/// Judges each update against the state the previous updates of its task
/// left (so several updates for one task in one batch apply in order).
fn judge(
    pending: &[&PortalTask],
    mut states: HashMap<TaskId, Result<CurrentState, RowError>>,
) -> Plan {
    let mut plan = Plan::default();
    // Each judged task's state as its updates so far left it, and whether
    // any of them changed it.
    let mut judged: HashMap<TaskId, (CurrentState, bool)> = HashMap::new();
    for update in pending {
        let id = &update.host_system_id;
        let tally = plan.tallies.entry(id.clone()).or_default();
        let (state, dirty) = match judged.get_mut(id) {
            Some((state, dirty)) => (state, dirty),
            None => match states.get(id) {
                None => {
                    tally.unknown.push(id.clone());
                    continue;
                }
                Some(Err(e)) => {
                    tally.bad_rows.push(e.clone());
                    continue;
                }
                Some(Ok(_)) => {
                    let Some(Ok(state)) = states.remove(id) else {
                        continue;
                    };
                    let (state, dirty) = judged.entry(id.clone()).or_insert((state, false));
                    (state, dirty)
                }
            },
        };
        match decide_update(state.status, state.portal.as_ref(), update) {
            UpdateDecision::Advance { status, portal } => {
                tally.applied += 1;
                state.status = status;
                state.portal = Some(portal);
                *dirty = true;
            }
            UpdateDecision::Ignore(IgnoreReason::Repeated) => tally.repeated += 1,
            UpdateDecision::Ignore(IgnoreReason::Stale) => tally.stale += 1,
            UpdateDecision::Ignore(IgnoreReason::Backwards) => tally.backwards += 1,
            UpdateDecision::Conflict(message) => tally.conflicts.push((id.clone(), message)),
        }
    }
    for (id, (state, dirty)) in judged {
        let (true, Some(portal)) = (dirty, state.portal.as_ref()) else {
            continue;
        };
        plan.writes.push(PlannedWrite {
            portal: PortalColumns::from_state(portal),
            status: state.status,
            version: state.version,
            id,
        });
    }
    plan
}
