//! What a portal update does to a local task: the one place that decides
//! whether a portal answer (submission answer, refresh, pulled change) moves a
//! task forward, is ignored (and counted), or contradicts what we hold.
//!
//! # Rules
//!
//! Portal statuses map to local ones ([`local_status_for`]): `waiting` and
//! `in-progress` → `awaiting-completion`, `complete` → `complete`,
//! `cancelled` → `cancelled`. Local statuses only move forward
//! (`awaiting-submission → awaiting-completion → complete | cancelled`) and a
//! final status (`complete`, `cancelled`) never changes.
//!
//! [`decide_update`] checks, in this order:
//!
//! 1. **Identity.** If we hold a portal state, an update with another `code` or
//!    another `subject_code` is a [`UpdateDecision::Conflict`]. (A different
//!    `host_system_id` is a conflict too; only [`decide_update_for`] knows the
//!    task id, so callers holding a [`LocalTask`] use that.)
//! 2. **Repeated.** An update whose portal state equals the one held
//!    (same revision, same content) changes nothing.
//! 3. **Stale.** An update whose `revision` is lower than the one held.
//! 4. **Same revision, other content.** Dates and assessment are compared
//!    field by field, an absent field counting as "less known". If the update
//!    knows less than the held state and agrees on the rest (an abbreviated
//!    listing without the assessment), it is **Repeated**; if it knows more
//!    and agrees on the rest, it is applied (step 5 on); if the two disagree
//!    (other status, other date, other assessment) the portal said two
//!    different things at one revision: a **Conflict**. Revision 0 on both
//!    sides is the revision-less case below.
//! 5. **Backwards.** An update whose mapped local status is behind the local
//!    status, or that would change a final status into another one.
//! 6. Otherwise [`UpdateDecision::Advance`]: the task takes the mapped status
//!    and records the update's portal state. Within `awaiting-completion` a
//!    newer revision (`waiting → in-progress`, a saved partial assessment) is
//!    still an advance: the status stays, the portal state is updated. A final
//!    task still follows newer revisions *of the same status* (its portal state
//!    is updated, its status is not), so the last revision always wins.
//!
//! The submission answer (nothing held yet, local `awaiting-submission`) is an
//! advance to the mapped status, normally `awaiting-completion`.
//!
//! # A portal without revisions
//!
//! The original portal has no revisions; every update then reads as revision 0
//! and cannot be ordered by number. When both the held state and the update
//! are at revision 0 the update is ordered by its content instead:
//!
//! - portal status behind the held one (`in-progress` → `waiting`, or
//!   `complete` ↔ `cancelled`): **Backwards**;
//! - portal status further along: **Advance**;
//! - same portal status: a date or an assessment the held state has but the
//!   update lacks marks the update as an older or abbreviated snapshot
//!   (**Stale**; portal dates are set once and never cleared, and an answer
//!   once saved is not dropped); otherwise changed dates or assessment are an
//!   **Advance**.
//!
//! The last case is last-writer-wins: two snapshots at the same status with
//! different partial assessments cannot be ordered without revisions, so the
//! one received last is kept. Consequently order-independence holds for
//! revision-less updates only across status steps; within one status only a
//! portal with revisions can guarantee it. Once a portal reports revisions
//! (held 0, update > 0) the numbers take over; an update at 0 over a held
//! revision > 0 is stale.

use std::fmt;

use crate::task::{LocalStatus, LocalTask, PortalState, PortalStatus, PortalTask};

/// What a portal update does to a local task.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateDecision {
    /// Apply: the task moves to `status` and records `portal`.
    Advance {
        status: LocalStatus,
        portal: PortalState,
    },
    /// Change nothing and count it.
    Ignore(IgnoreReason),
    /// The update contradicts what we hold (e.g. another portal code for the
    /// same host id); change nothing, record the message as the task's error.
    Conflict(String),
}

impl UpdateDecision {
    /// True for [`UpdateDecision::Advance`].
    pub fn is_advance(&self) -> bool {
        matches!(self, UpdateDecision::Advance { .. })
    }
}

/// Why an update was ignored (a label for counters and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// The same portal state as the one held.
    Repeated,
    /// An older portal revision (or, without revisions, an older snapshot).
    Stale,
    /// It would move the local status backwards or change a final status.
    Backwards,
}

impl IgnoreReason {
    pub const ALL: [IgnoreReason; 3] = [
        IgnoreReason::Repeated,
        IgnoreReason::Stale,
        IgnoreReason::Backwards,
    ];

    /// Lower-case label (`repeated`, `stale`, `backwards`), used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Repeated => "repeated",
            IgnoreReason::Stale => "stale",
            IgnoreReason::Backwards => "backwards",
        }
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The local status a portal status stands for.
pub fn local_status_for(portal: PortalStatus) -> LocalStatus {
    match portal {
        PortalStatus::Waiting | PortalStatus::InProgress => LocalStatus::AwaitingCompletion,
        PortalStatus::Complete => LocalStatus::Complete,
        PortalStatus::Cancelled => LocalStatus::Cancelled,
    }
}

/// Position along the forward path; both final statuses share the last step.
fn local_rank(status: LocalStatus) -> u8 {
    match status {
        LocalStatus::AwaitingSubmission => 0,
        LocalStatus::AwaitingCompletion => 1,
        LocalStatus::Complete | LocalStatus::Cancelled => 2,
    }
}

fn portal_rank(status: PortalStatus) -> u8 {
    match status {
        PortalStatus::Waiting => 0,
        PortalStatus::InProgress => 1,
        PortalStatus::Complete | PortalStatus::Cancelled => 2,
    }
}

impl From<&PortalTask> for PortalState {
    fn from(t: &PortalTask) -> PortalState {
        PortalState {
            code: t.code.clone(),
            subject_code: t.subject_code.clone(),
            status: t.status,
            revision: t.revision,
            date_created: t.date_created,
            date_started: t.date_started,
            date_completed: t.date_completed,
            assessment: t.assessment.clone(),
        }
    }
}

/// Decides what `update` does to a task whose local status is `status` and
/// whose last applied portal state is `current`. See the module doc for the
/// rules. Pure: the caller applies the decision.
pub fn decide_update(
    status: LocalStatus,
    current: Option<&PortalState>,
    update: &PortalTask,
) -> UpdateDecision {
    let target = local_status_for(update.status);
    if let Some(cur) = current {
        if cur.code != update.code {
            return UpdateDecision::Conflict(format!(
                "portal reported code {:?} for this task, which already has portal code {:?}",
                update.code, cur.code
            ));
        }
        if cur.subject_code != update.subject_code {
            return UpdateDecision::Conflict(format!(
                "portal task {:?} reported subject code {:?}, previously {:?}",
                update.code, update.subject_code, cur.subject_code
            ));
        }
        if same_state(cur, update) {
            return UpdateDecision::Ignore(IgnoreReason::Repeated);
        }
        let unrevisioned = cur.revision == 0 && update.revision == 0;
        if !unrevisioned {
            if update.revision < cur.revision {
                return UpdateDecision::Ignore(IgnoreReason::Stale);
            }
            if update.revision == cur.revision {
                match compare_known(cur, update) {
                    Known::Less => return UpdateDecision::Ignore(IgnoreReason::Repeated),
                    Known::More => {}
                    Known::Disagree => {
                        return UpdateDecision::Conflict(format!(
                            "portal task {:?} reported revision {} twice with different content",
                            update.code, update.revision
                        ));
                    }
                }
            }
        }
        if moves_backwards(status, target) {
            return UpdateDecision::Ignore(IgnoreReason::Backwards);
        }
        if unrevisioned && let Some(reason) = unrevisioned_ignore(cur, update) {
            return UpdateDecision::Ignore(reason);
        }
    } else if moves_backwards(status, target) {
        return UpdateDecision::Ignore(IgnoreReason::Backwards);
    }
    UpdateDecision::Advance {
        status: target,
        portal: PortalState::from(update),
    }
}

/// [`decide_update`] for a whole local task, also checking that the update is
/// for this task's `host_system_id`.
pub fn decide_update_for(task: &LocalTask, update: &PortalTask) -> UpdateDecision {
    if task.id() != update.host_system_id {
        return UpdateDecision::Conflict(format!(
            "portal task {:?} is for host id {:?}, not this task {:?}",
            update.code,
            update.host_system_id,
            task.id()
        ));
    }
    decide_update(task.status, task.portal.as_ref(), update)
}

/// Decides and, on [`UpdateDecision::Advance`], applies `update` to `task` in
/// memory (status and portal state; the error is left to the caller). Returns
/// the decision.
pub fn apply_update(task: &mut LocalTask, update: &PortalTask) -> UpdateDecision {
    let decision = decide_update_for(task, update);
    if let UpdateDecision::Advance { status, portal } = &decision {
        task.status = *status;
        task.portal = Some(portal.clone());
    }
    decision
}

fn same_state(cur: &PortalState, update: &PortalTask) -> bool {
    cur.code == update.code
        && cur.subject_code == update.subject_code
        && cur.status == update.status
        && cur.revision == update.revision
        && cur.date_created == update.date_created
        && cur.date_started == update.date_started
        && cur.date_completed == update.date_completed
        && cur.assessment == update.assessment
}

/// How an update at the held revision relates to the held state.
enum Known {
    /// Agrees, and lacks some fields the held state has (or has the same).
    Less,
    /// Agrees, and has fields the held state lacks.
    More,
    /// Some field differs.
    Disagree,
}

fn compare_known(cur: &PortalState, update: &PortalTask) -> Known {
    fn field<T: PartialEq>(held: &Option<T>, new: &Option<T>, more: &mut bool) -> bool {
        match (held, new) {
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => {
                *more = true;
                true
            }
            _ => true,
        }
    }
    let mut more = false;
    let agree = cur.status == update.status
        && field(&cur.date_created, &update.date_created, &mut more)
        && field(&cur.date_started, &update.date_started, &mut more)
        && field(&cur.date_completed, &update.date_completed, &mut more)
        && field(&cur.assessment, &update.assessment, &mut more);
    let less = [
        cur.date_created.is_some() && update.date_created.is_none(),
        cur.date_started.is_some() && update.date_started.is_none(),
        cur.date_completed.is_some() && update.date_completed.is_none(),
        cur.assessment.is_some() && update.assessment.is_none(),
    ]
    .contains(&true);
    match (agree, more, less) {
        (false, _, _) | (true, true, true) => Known::Disagree,
        (true, true, false) => Known::More,
        (true, false, _) => Known::Less,
    }
}

/// A final status never changes; otherwise the status may not go back.
fn moves_backwards(status: LocalStatus, target: LocalStatus) -> bool {
    if status.is_final() {
        target != status
    } else {
        local_rank(target) < local_rank(status)
    }
}

/// Ordering by content when neither side has a revision (module doc).
fn unrevisioned_ignore(cur: &PortalState, update: &PortalTask) -> Option<IgnoreReason> {
    let (held, new) = (portal_rank(cur.status), portal_rank(update.status));
    if new < held || (new == held && cur.status != update.status) {
        return Some(IgnoreReason::Backwards);
    }
    if new > held {
        return None;
    }
    let lost_date = (cur.date_created.is_some() && update.date_created.is_none())
        || (cur.date_started.is_some() && update.date_started.is_none())
        || (cur.date_completed.is_some() && update.date_completed.is_none());
    let lost_assessment = cur.assessment.is_some() && update.assessment.is_none();
    (lost_date || lost_assessment).then_some(IgnoreReason::Stale)
}
