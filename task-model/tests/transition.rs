//! The transition rules of `task_model::transition`: one example per rule, and
//! property tests over random sequences of portal updates.

use proptest::prelude::*;
use serde_json::json;
use task_model::transition::{apply_update, local_status_for};
use task_model::{
    HostTask, IgnoreReason, LocalStatus, LocalTask, PortalDate, PortalState, PortalStatus,
    PortalTask, Subject, UpdateDecision, decide_update, decide_update_for,
};

const HOST_ID: &str = "task-1";

fn date(s: &str) -> PortalDate {
    PortalDate::parse(s).expect("test date")
}

fn update(status: PortalStatus, revision: u64) -> PortalTask {
    PortalTask {
        code: "P1".into(),
        host_system_id: HOST_ID.into(),
        subject_code: "S1".into(),
        status,
        date_created: Some(date("2026-01-01 10:00:00")),
        date_started: None,
        date_completed: None,
        assessment: None,
        revision,
        acknowledged: false,
    }
}

fn local_task() -> LocalTask {
    LocalTask {
        task: HostTask {
            host_system_id: HOST_ID.into(),
            display_name: "Form".into(),
            instrument: json!({}).into(),
            form: json!({}).into(),
            subject: Subject {
                host_system_id: "s".into(),
                display_name: "S".into(),
                users: vec![],
            },
            parameters: None,
            assessment: None,
        },
        status: LocalStatus::AwaitingSubmission,
        portal: None,
        error: None,
    }
}

fn state(u: &PortalTask) -> PortalState {
    PortalState::from(u)
}

fn ignored(d: &UpdateDecision) -> Option<IgnoreReason> {
    match d {
        UpdateDecision::Ignore(r) => Some(*r),
        _ => None,
    }
}

#[test]
fn portal_statuses_map_to_local_statuses() {
    assert_eq!(
        local_status_for(PortalStatus::Waiting),
        LocalStatus::AwaitingCompletion
    );
    assert_eq!(
        local_status_for(PortalStatus::InProgress),
        LocalStatus::AwaitingCompletion
    );
    assert_eq!(
        local_status_for(PortalStatus::Complete),
        LocalStatus::Complete
    );
    assert_eq!(
        local_status_for(PortalStatus::Cancelled),
        LocalStatus::Cancelled
    );
}

#[test]
fn submission_answer_advances_to_awaiting_completion() {
    let u = update(PortalStatus::Waiting, 1);
    let d = decide_update(LocalStatus::AwaitingSubmission, None, &u);
    assert_eq!(
        d,
        UpdateDecision::Advance {
            status: LocalStatus::AwaitingCompletion,
            portal: state(&u)
        }
    );
}

#[test]
fn same_update_twice_is_repeated() {
    let u = update(PortalStatus::Waiting, 1);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&u)), &u);
    assert_eq!(ignored(&d), Some(IgnoreReason::Repeated));
}

#[test]
fn lower_revision_is_stale() {
    let held = update(PortalStatus::InProgress, 3);
    let old = update(PortalStatus::Waiting, 2);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &old);
    assert_eq!(ignored(&d), Some(IgnoreReason::Stale));
}

#[test]
fn newer_revision_within_awaiting_completion_advances() {
    let held = update(PortalStatus::Waiting, 1);
    let mut newer = update(PortalStatus::InProgress, 2);
    newer.date_started = Some(date("2026-01-02 09:00:00"));
    newer.assessment = Some(json!({"values": {"q1": {"value": 1}}}));
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &newer);
    assert_eq!(
        d,
        UpdateDecision::Advance {
            status: LocalStatus::AwaitingCompletion,
            portal: state(&newer)
        }
    );
}

#[test]
fn complete_advances_to_complete() {
    let held = update(PortalStatus::InProgress, 2);
    let done = update(PortalStatus::Complete, 3);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &done);
    assert_eq!(
        d,
        UpdateDecision::Advance {
            status: LocalStatus::Complete,
            portal: state(&done)
        }
    );
}

#[test]
fn final_status_never_changes() {
    let held = update(PortalStatus::Complete, 3);
    for status in [
        PortalStatus::Waiting,
        PortalStatus::InProgress,
        PortalStatus::Cancelled,
    ] {
        let later = update(status, 4);
        let d = decide_update(LocalStatus::Complete, Some(&state(&held)), &later);
        assert_eq!(ignored(&d), Some(IgnoreReason::Backwards), "{status}");
    }
    let held = update(PortalStatus::Cancelled, 3);
    let later = update(PortalStatus::Complete, 4);
    let d = decide_update(LocalStatus::Cancelled, Some(&state(&held)), &later);
    assert_eq!(ignored(&d), Some(IgnoreReason::Backwards));
}

#[test]
fn final_task_follows_newer_revision_of_same_status() {
    let held = update(PortalStatus::Complete, 3);
    let mut later = update(PortalStatus::Complete, 4);
    later.assessment = Some(json!({"values": {}}));
    let d = decide_update(LocalStatus::Complete, Some(&state(&held)), &later);
    assert_eq!(
        d,
        UpdateDecision::Advance {
            status: LocalStatus::Complete,
            portal: state(&later)
        }
    );
}

#[test]
fn other_code_is_a_conflict() {
    let held = update(PortalStatus::Waiting, 1);
    let mut other = update(PortalStatus::Waiting, 2);
    other.code = "P2".into();
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &other);
    match d {
        UpdateDecision::Conflict(msg) => assert!(msg.contains("P2") && msg.contains("P1"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn other_subject_code_is_a_conflict() {
    let held = update(PortalStatus::Waiting, 1);
    let mut other = update(PortalStatus::Waiting, 2);
    other.subject_code = "S2".into();
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &other);
    assert!(matches!(d, UpdateDecision::Conflict(_)), "{d:?}");
}

#[test]
fn other_host_id_is_a_conflict() {
    let mut u = update(PortalStatus::Waiting, 1);
    u.host_system_id = "task-2".into();
    let d = decide_update_for(&local_task(), &u);
    match d {
        UpdateDecision::Conflict(msg) => assert!(msg.contains("task-2"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn same_revision_with_other_content_is_a_conflict() {
    let held = update(PortalStatus::Waiting, 2);
    let other = update(PortalStatus::InProgress, 2);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &other);
    assert!(matches!(d, UpdateDecision::Conflict(_)), "{d:?}");
}

#[test]
fn without_revisions_further_status_advances_and_earlier_is_backwards() {
    let held = update(PortalStatus::InProgress, 0);
    let done = update(PortalStatus::Complete, 0);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &done);
    assert!(d.is_advance(), "{d:?}");
    let back = update(PortalStatus::Waiting, 0);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &back);
    assert_eq!(ignored(&d), Some(IgnoreReason::Backwards));
}

#[test]
fn without_revisions_changed_assessment_advances_and_lost_date_is_stale() {
    let mut held = update(PortalStatus::InProgress, 0);
    held.date_started = Some(date("2026-01-02 09:00:00"));
    let mut saved = held.clone();
    saved.assessment = Some(json!({"values": {"q1": {"value": 2}}}));
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &saved);
    assert!(d.is_advance(), "{d:?}");

    let mut older = held.clone();
    older.date_started = None;
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &older);
    assert_eq!(ignored(&d), Some(IgnoreReason::Stale));
}

#[test]
fn unrevisioned_update_over_revisioned_state_is_stale() {
    let held = update(PortalStatus::Waiting, 2);
    let u = update(PortalStatus::InProgress, 0);
    let d = decide_update(LocalStatus::AwaitingCompletion, Some(&state(&held)), &u);
    assert_eq!(ignored(&d), Some(IgnoreReason::Stale));
}

#[test]
fn ignore_reason_displays_its_label() {
    assert_eq!(IgnoreReason::Repeated.to_string(), "repeated");
    assert_eq!(IgnoreReason::Stale.to_string(), "stale");
    assert_eq!(IgnoreReason::Backwards.to_string(), "backwards");
}

// ---- properties ------------------------------------------------------------

fn rank(s: LocalStatus) -> u8 {
    match s {
        LocalStatus::AwaitingSubmission => 0,
        LocalStatus::AwaitingCompletion => 1,
        LocalStatus::Complete | LocalStatus::Cancelled => 2,
    }
}

fn any_portal_status() -> impl Strategy<Value = PortalStatus> {
    prop::sample::select(PortalStatus::ALL.to_vec())
}

/// Any update, consistent or not: small value ranges so that repeats, equal
/// revisions and foreign codes all occur.
fn any_update() -> impl Strategy<Value = PortalTask> {
    (
        any_portal_status(),
        0u64..5,
        prop::bool::weighted(0.1),
        prop::option::of(0u8..3),
        prop::option::of(0u8..3),
        prop::bool::ANY,
    )
        .prop_map(|(status, revision, foreign, started, answer, created)| {
            let mut u = update(status, revision);
            if foreign {
                u.code = "P9".into();
            }
            if !created {
                u.date_created = None;
            }
            u.date_started = started.map(|d| date(&format!("2026-01-0{} 09:00:00", d + 2)));
            u.assessment = answer.map(|a| json!({"values": {"q1": {"value": a}}}));
            u
        })
}

/// A history a real portal could produce: revisions 1..=n, portal status
/// never going back, at most one final status (which then stays), each step a
/// distinct snapshot.
fn consistent_history() -> impl Strategy<Value = Vec<PortalTask>> {
    (
        prop::collection::vec(0u8..3, 1..10),
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(mut steps, cancelled, with_revisions)| {
            steps.sort_unstable();
            steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let status = match step {
                        0 => PortalStatus::Waiting,
                        1 => PortalStatus::InProgress,
                        _ if cancelled => PortalStatus::Cancelled,
                        _ => PortalStatus::Complete,
                    };
                    let rev = if with_revisions { i as u64 + 1 } else { 0 };
                    let mut u = update(status, rev);
                    u.assessment = Some(json!({"values": {"step": i}}));
                    u
                })
                .collect::<Vec<_>>()
        })
        // Without revisions only one snapshot per status can be ordered (see
        // the module doc), so keep the last of each status.
        .prop_map(|h| {
            if h.first().is_some_and(|u| u.revision == 0) {
                let mut out: Vec<PortalTask> = Vec::new();
                for u in h {
                    match out.last_mut() {
                        Some(last) if last.status == u.status => *last = u,
                        _ => out.push(u),
                    }
                }
                out
            } else {
                h
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn local_status_never_goes_backwards(updates in prop::collection::vec(any_update(), 0..20)) {
        let mut task = local_task();
        for u in &updates {
            let before = task.status;
            let decision = apply_update(&mut task, u);
            prop_assert!(rank(task.status) >= rank(before), "{before} -> {} by {u:?}", task.status);
            if before.is_final() {
                prop_assert_eq!(task.status, before);
            }
            if !decision.is_advance() {
                prop_assert_eq!(task.status, before);
            }
        }
    }

    #[test]
    fn applying_an_update_twice_equals_once(updates in prop::collection::vec(any_update(), 0..20)) {
        let mut once = local_task();
        let mut twice = local_task();
        for u in &updates {
            apply_update(&mut once, u);
            apply_update(&mut twice, u);
            let snapshot = twice.clone();
            let second = apply_update(&mut twice, u);
            prop_assert!(!second.is_advance(), "second application advanced: {second:?}");
            prop_assert_eq!(&twice, &snapshot);
            prop_assert_eq!(&twice, &once);
        }
    }

    #[test]
    fn any_order_ends_at_the_latest_update(
        (history, order) in consistent_history().prop_flat_map(|h| {
            let n = h.len();
            // Every update at least once, some twice or more, in any order.
            let order = prop::collection::vec(0..n, 0..=n)
                .prop_map(move |mut extra| {
                    extra.extend(0..n);
                    extra
                })
                .prop_shuffle();
            (Just(h), order)
        }),
        start_submitted in prop::bool::ANY,
    ) {
        let sequence: Vec<&PortalTask> = order.iter().map(|&i| &history[i]).collect();
        let mut task = local_task();
        if start_submitted {
            task.status = LocalStatus::AwaitingCompletion;
        }
        for u in &sequence {
            apply_update(&mut task, u);
        }
        let latest = history.last().expect("non-empty history");
        prop_assert_eq!(task.status, local_status_for(latest.status));
        prop_assert_eq!(task.portal, Some(PortalState::from(latest)));
    }
}

#[test]
fn abbreviated_update_at_held_revision_is_repeated() {
    let mut held = update(PortalStatus::InProgress, 4);
    held.assessment = Some(json!({"values": {"q1": {"value": 1}}}));
    let mut abbreviated = held.clone();
    abbreviated.assessment = None;
    let d = decide_update(
        LocalStatus::AwaitingCompletion,
        Some(&state(&held)),
        &abbreviated,
    );
    assert_eq!(ignored(&d), Some(IgnoreReason::Repeated));
}

#[test]
fn fuller_update_at_held_revision_fills_in() {
    let abbreviated = update(PortalStatus::InProgress, 4);
    let mut full = abbreviated.clone();
    full.assessment = Some(json!({"values": {"q1": {"value": 1}}}));
    let d = decide_update(
        LocalStatus::AwaitingCompletion,
        Some(&state(&abbreviated)),
        &full,
    );
    assert_eq!(
        d,
        UpdateDecision::Advance {
            status: LocalStatus::AwaitingCompletion,
            portal: state(&full)
        }
    );
}

#[test]
fn without_revisions_a_dropped_assessment_is_stale() {
    let mut held = update(PortalStatus::InProgress, 0);
    held.assessment = Some(json!({"values": {"q1": {"value": 1}}}));
    let mut abbreviated = held.clone();
    abbreviated.assessment = None;
    let d = decide_update(
        LocalStatus::AwaitingCompletion,
        Some(&state(&held)),
        &abbreviated,
    );
    assert_eq!(ignored(&d), Some(IgnoreReason::Stale));
}
