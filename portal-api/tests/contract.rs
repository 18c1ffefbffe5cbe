//! Contract tests: the client against the simulator, endpoint by endpoint,
//! and every error class the client distinguishes.

mod support;

use portal_api::sim::{CountMode, DuplicatePolicy, SimConfig};
use portal_api::wire::{
    EnrollmentProfile, NewConsent, Study, SubjectUpdate, TaskQuery, TaskUpdate, UserUpdate,
};
use portal_api::{Client, ClientConfig, NetworkErrorKind, PortalError};
use serde_json::{Map, json};
use support::*;
use task_model::PortalStatus;

#[tokio::test]
async fn submitted_package_can_be_read_by_code_and_by_host_id() {
    let sim = sim().await;
    let client = client(sim.url());
    let package = tasks("a", 3);
    let stored = client.submit_tasks(&package).await.expect("submit");
    assert_eq!(stored.len(), 3);
    for (sent, got) in package.iter().zip(&stored) {
        assert_eq!(got.host_system_id, sent.host_system_id);
        assert_eq!(got.status, PortalStatus::Waiting);
        assert_eq!(got.revision, 1);
        assert!(!got.acknowledged);
        assert!(got.date_created.is_some());
    }
    let one = client
        .get_task(&stored[1].code)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(one.host_system_id, "a-001");
    let by_id = client
        .tasks_by_host_ids(&["a-002".to_owned(), "a-000".to_owned(), "nope".to_owned()])
        .await
        .expect("by host id");
    let mut ids: Vec<_> = by_id.iter().map(|t| t.host_system_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a-000", "a-002"]);
    assert_eq!(client.get_task("T99999999").await.expect("get"), None);
    let stats = sim.handle().stats();
    assert_eq!(stats.requests_with("POST /tasks", 201), 1);
    assert_eq!(stats.requests_with("GET /tasks/@{code}", 404), 1);
    assert_eq!(stats.tasks_total, 3);
}

#[tokio::test]
async fn paging_with_exactly_limit_items_stops_on_the_empty_page() {
    let sim = sim().await;
    let client = client_with_page(sim.url(), 5);
    for chunk in tasks("p", 10).chunks(5) {
        client.submit_tasks(chunk).await.expect("submit");
    }
    let all = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 10);
    // Pages of 5, 5 and an empty one.
    assert_eq!(sim.handle().stats().requests_with("GET /tasks", 200), 3);
}

#[tokio::test]
async fn paging_stops_on_a_short_page() {
    let sim = sim().await;
    let client = client_with_page(sim.url(), 5);
    client.submit_tasks(&tasks("s", 5)).await.expect("submit");
    client.submit_tasks(&tasks("t", 2)).await.expect("submit");
    let all = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 7);
    assert_eq!(sim.handle().stats().requests_with("GET /tasks", 200), 2);
    let none = client
        .list_tasks(&TaskQuery::by_host_ids(["missing"]))
        .await
        .expect("list");
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_portal_reporting_totals_as_count_does_not_make_paging_loop() {
    let mut config = SimConfig::new(KEY);
    config.count = CountMode::Total;
    let sim = start_sim(config).await;
    let client = client_with_page(sim.url(), 5);
    for chunk in tasks("c", 12).chunks(6) {
        client.submit_tasks(chunk).await.expect("submit");
    }
    let all = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 12);
    assert_eq!(sim.handle().stats().requests_with("GET /tasks", 200), 3);
}

#[tokio::test]
async fn acknowledgement_is_refused_when_the_task_changed_since_the_revision_read() {
    let sim = sim().await;
    let client = client(sim.url());
    let handle = sim.handle();
    let stored = client.submit_tasks(&tasks("k", 3)).await.expect("submit");
    let pending = client
        .list_tasks(&TaskQuery::unacknowledged())
        .await
        .expect("list");
    assert_eq!(pending.len(), 3);
    for t in &pending {
        client
            .acknowledge_task(&t.code, t.revision)
            .await
            .expect("ack");
    }
    assert!(
        client
            .list_tasks(&TaskQuery::unacknowledged())
            .await
            .expect("list")
            .is_empty()
    );

    // The patient starts a task: it is unacknowledged again at revision 2.
    let code = stored[0].code.clone();
    handle.start_task(&code).expect("start");
    let pending = client
        .list_tasks(&TaskQuery::unacknowledged())
        .await
        .expect("list");
    assert_eq!(pending.len(), 1);
    let read = pending[0].clone();
    assert_eq!((read.status, read.revision), (PortalStatus::InProgress, 2));
    assert!(read.date_started.is_some());

    // An update lands between our read and our acknowledgement.
    let answers = json!({"instrument": {"id": "urn:phq-test", "version": "1.0"}, "values": {"q000": {"value": "often"}}});
    handle
        .complete_task(&code, answers.clone())
        .expect("complete");
    let err = client
        .acknowledge_task(&code, read.revision)
        .await
        .expect_err("stale ack refused");
    assert!(matches!(err, PortalError::Conflict { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(handle.stats().stale_acknowledgements, 1);

    // Nothing was lost: reading again shows the completion.
    let again = client
        .list_tasks(&TaskQuery::unacknowledged())
        .await
        .expect("list");
    assert_eq!(again.len(), 1);
    let done = &again[0];
    assert_eq!((done.status, done.revision), (PortalStatus::Complete, 3));
    assert_eq!(done.assessment.as_ref(), Some(&answers));
    assert!(done.date_completed.is_some());
    client
        .acknowledge_task(&code, done.revision)
        .await
        .expect("ack");
    assert!(
        client
            .get_task(&code)
            .await
            .expect("get")
            .expect("some")
            .acknowledged
    );
}

#[tokio::test]
async fn patient_actions_move_the_lifecycle_forward_only() {
    let sim = sim().await;
    let client = client(sim.url());
    let handle = sim.handle();
    let stored = client.submit_tasks(&tasks("l", 2)).await.expect("submit");
    let partial = json!({"instrument": {"id": "urn:phq-test", "version": "1.0"}, "values": {}});
    let saved = handle
        .save_assessment(&stored[0].code, partial.clone())
        .expect("save");
    assert_eq!(
        (saved.status, saved.revision),
        (PortalStatus::InProgress, 2)
    );
    let cancelled = handle.cancel_task(&stored[1].code).expect("cancel");
    assert_eq!(cancelled.status, PortalStatus::Cancelled);
    assert!(
        handle.start_task(&stored[1].code).is_err(),
        "cancelled is final"
    );
    let stats = handle.stats();
    assert_eq!(stats.tasks_by_status.get("in-progress"), Some(&1));
    assert_eq!(stats.tasks_by_status.get("cancelled"), Some(&1));
}

#[tokio::test]
async fn tasks_can_be_updated_and_deleted() {
    let sim = sim().await;
    let client = client(sim.url());
    let stored = client.submit_tasks(&tasks("u", 1)).await.expect("submit");
    let code = &stored[0].code;
    let update = TaskUpdate {
        display_name: Some("Renamed".into()),
        ..TaskUpdate::default()
    };
    let updated = client
        .update_task(code, &update)
        .await
        .expect("update")
        .expect("body");
    assert_eq!(updated.code, *code);
    assert!(client.delete_task(code).await.expect("delete"));
    assert!(!client.delete_task(code).await.expect("delete again"));
    let err = client.update_task(code, &update).await.expect_err("gone");
    assert!(matches!(err, PortalError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn a_resubmitted_task_is_reported_as_already_submitted_with_its_id() {
    let sim = sim().await;
    let client = client(sim.url());
    client.submit_tasks(&tasks("d", 1)).await.expect("first");
    // A package mixing new tasks with the one already on the portal.
    let mut package = vec![task("new-1"), task("d-000"), task("new-2")];
    let err = client.submit_tasks(&package).await.expect_err("duplicate");
    match &err {
        PortalError::TaskAlreadySubmitted {
            host_system_id,
            message,
            ..
        } => {
            assert_eq!(host_system_id.as_deref(), Some("d-000"));
            assert!(message.starts_with("Specified host_system_id already exists"));
            assert!(message.contains("While creating Task for submission"));
        }
        other => panic!("expected TaskAlreadySubmitted, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // The package was rejected whole.
    let handle = sim.handle();
    assert!(handle.task_by_host_id("new-1").is_none());
    assert_eq!(handle.stats().duplicate_submissions, 1);
    package.retain(|t| t.host_system_id != "d-000");
    assert_eq!(client.submit_tasks(&package).await.expect("rest").len(), 2);
}

#[tokio::test]
async fn ignore_identical_accepts_an_identical_resubmission_only() {
    let mut config = SimConfig::new(KEY);
    config.duplicates = DuplicatePolicy::IgnoreIdentical;
    let sim = start_sim(config).await;
    let client = client(sim.url());
    let first = client.submit_tasks(&tasks("i", 2)).await.expect("first");
    let again = client
        .submit_tasks(&tasks("i", 2))
        .await
        .expect("identical again");
    assert_eq!(first[0].code, again[0].code);
    assert_eq!(sim.handle().stats().tasks_total, 2);
    let mut changed = task("i-000");
    changed.display_name = "Other".into();
    let err = client.submit_tasks(&[changed]).await.expect_err("changed");
    assert!(
        matches!(err, PortalError::TaskAlreadySubmitted { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_tasks_are_rejected_with_the_portal_error_and_nothing_is_stored() {
    let sim = sim().await;
    let client = client(sim.url());
    let mut no_email = task("v-2");
    no_email.subject.users[0].email = None;
    let mut wrong_version = task("v-3");
    std::sync::Arc::make_mut(&mut wrong_version.form)["instrument"]["version"] = json!("2.0");
    let mut wrong_assessment = task("v-4");
    wrong_assessment.assessment =
        Some(json!({"instrument": {"id": "urn:other", "version": "1.0"}, "values": {}}));
    let mut no_users = task("v-5");
    no_users.subject.users.clear();
    for (bad, expect) in [
        (no_email, "email: required"),
        (wrong_version, "form.instrument.version"),
        (wrong_assessment, "assessment.instrument.id"),
        (no_users, "subject.users"),
    ] {
        let err = client
            .submit_tasks(&[task("v-ok"), bad.clone()])
            .await
            .expect_err("invalid");
        match &err {
            PortalError::Rejected { message, .. } => {
                assert!(message.contains(expect), "{message}");
                assert!(message.contains(&bad.host_system_id), "{message}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(err.status(), Some(400));
        assert!(!err.is_retryable());
    }
    assert_eq!(sim.handle().stats().tasks_total, 0);
}

#[tokio::test]
async fn a_package_over_the_maximum_is_refused_with_413() {
    let mut config = SimConfig::new(KEY);
    config.max_package_size = 4;
    let sim = start_sim(config).await;
    let client = client(sim.url());
    let err = client
        .submit_tasks(&tasks("m", 5))
        .await
        .expect_err("too big");
    assert!(
        matches!(err, PortalError::Status { status: 413, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        client
            .submit_tasks(&tasks("m", 4))
            .await
            .expect("fits")
            .len(),
        4
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_unauthorized_and_not_retryable() {
    let sim = sim().await;
    let config = ClientConfig::new(sim.url(), "wrong-key".to_owned().into());
    let client = Client::new(config).expect("client");
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("401");
    assert!(
        matches!(err, PortalError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("GET http://"), "{err}");
    assert_eq!(sim.handle().stats().requests_with("GET /tasks", 401), 1);
}

#[tokio::test]
async fn an_unreachable_portal_is_a_retryable_connect_error() {
    let sim = sim().await;
    let url = sim.url().to_owned();
    sim.shutdown().await;
    let err = client(&url).get_task("T1").await.expect_err("down");
    assert!(
        matches!(
            err,
            PortalError::Network {
                kind: NetworkErrorKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_wrong_base_path_is_not_found_not_an_empty_list() {
    let sim = sim().await;
    let client = client(&format!("{}/not-the-api/", sim.url()));
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("404");
    assert!(matches!(err, PortalError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("/not-the-api/tasks"), "{err}");
}

#[tokio::test]
async fn subjects_and_their_users_can_be_listed_and_updated() {
    let sim = sim().await;
    let client = client_with_page(sim.url(), 2);
    client.submit_tasks(&tasks("s", 3)).await.expect("submit");
    let subjects = client.list_subjects().await.expect("subjects");
    assert_eq!(subjects.len(), 3);
    let subject = &subjects[0];
    assert_eq!(subject.host_system_id, "subj-s-000");
    let renamed = client
        .update_subject(
            &subject.code,
            &SubjectUpdate {
                display_name: Some("Renamed".into()),
                extra: Map::new(),
            },
        )
        .await
        .expect("update")
        .expect("body");
    assert_eq!(renamed.display_name.as_deref(), Some("Renamed"));
    let users = client
        .list_subject_users(&subject.code)
        .await
        .expect("users");
    assert_eq!(users.len(), 1);
    let user = client
        .update_subject_user(
            &subject.code,
            &users[0].code,
            &UserUpdate {
                email: Some("new@example.org".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .expect("update user")
        .expect("body");
    assert_eq!(user.email.as_deref(), Some("new@example.org"));
    let err = client
        .list_subject_users("S999999")
        .await
        .expect_err("absent");
    assert!(matches!(err, PortalError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn consents_are_submitted_in_packages_listed_acknowledged_and_deleted() {
    let sim = sim().await;
    let client = client_with_page(sim.url(), 2);
    client.submit_tasks(&tasks("c", 1)).await.expect("submit");
    let consents: Vec<NewConsent> = (0..5)
        .map(|i| NewConsent {
            host_system_id: format!("consent-{i}"),
            subject_host_system_id: "subj-c-000".into(),
            extra: Map::new(),
        })
        .collect();
    let stored = client.submit_consents(&consents).await.expect("consents");
    assert_eq!(stored.len(), 5);
    assert_eq!(sim.handle().stats().requests_with("POST /consents", 201), 3);
    let pending = client.list_unacknowledged_consents().await.expect("list");
    assert_eq!(pending.len(), 5);
    let first = &pending[0];
    client
        .update_consent(
            &first.code,
            &json!({"acknowledged": true, "revision": first.revision}),
        )
        .await
        .expect("ack");
    assert!(
        client
            .delete_consent(&pending[1].code)
            .await
            .expect("delete")
    );
    assert!(
        !client
            .delete_consent(&pending[1].code)
            .await
            .expect("again")
    );
    assert_eq!(
        client
            .list_unacknowledged_consents()
            .await
            .expect("list")
            .len(),
        3
    );
    let bad = NewConsent {
        host_system_id: "x".into(),
        subject_host_system_id: "nobody".into(),
        extra: Map::new(),
    };
    let err = client
        .submit_consents(&[bad])
        .await
        .expect_err("unknown subject");
    assert!(matches!(err, PortalError::Rejected { .. }), "{err:?}");
}

#[tokio::test]
async fn studies_are_absent_until_created_and_profiles_need_a_study() {
    let sim = sim().await;
    let client = client(sim.url());
    assert_eq!(client.get_study("st-1").await.expect("get"), None);
    let study = Study {
        id: "st-1".into(),
        title: Some("A study".into()),
        extra: Map::new(),
    };
    assert_eq!(client.create_study(&study).await.expect("create"), study);
    assert_eq!(client.get_study("st-1").await.expect("get"), Some(study));
    let profile = EnrollmentProfile {
        study_id: "st-1".into(),
        extra: Map::new(),
    };
    assert!(
        client
            .publish_enrollment_profile(&profile)
            .await
            .expect("publish")
            .is_some()
    );
    let orphan = EnrollmentProfile {
        study_id: "st-404".into(),
        extra: Map::new(),
    };
    let err = client
        .publish_enrollment_profile(&orphan)
        .await
        .expect_err("no study");
    assert!(matches!(err, PortalError::Rejected { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_base_url_or_package_size_fails_when_building_the_client() {
    for url in ["ftp://portal", "not a url", "mailto:x@y"] {
        let err = Client::new(ClientConfig::new(url, "k".to_owned().into())).expect_err(url);
        assert!(matches!(err, PortalError::Config { .. }), "{err:?}");
    }
    let err = Client::new(ClientConfig::new("http://x", "k".to_owned().into()).with_page_size(0))
        .expect_err("zero");
    assert!(err.to_string().contains("task_package_size"), "{err}");
    let ok = Client::new(ClientConfig::new(
        "http://portal.example/api///",
        "k".to_owned().into(),
    ))
    .expect("ok");
    assert_eq!(ok.base_url(), "http://portal.example/api");
}

/// A stricter portal plugged in through the validator seam.
struct NoDoses;

impl portal_api::sim::TaskValidator for NoDoses {
    fn validate(&self, task: &task_model::HostTask) -> Result<(), String> {
        if task
            .parameters
            .as_ref()
            .is_some_and(|p| p.get("dose").is_some())
        {
            return Err("parameters.dose: not accepted by this portal".into());
        }
        portal_api::sim::BasicValidator.validate(task)
    }
}

#[tokio::test]
async fn a_custom_validator_plugs_into_the_simulator() {
    let mut config = SimConfig::new(KEY);
    config.validator = std::sync::Arc::new(NoDoses);
    let sim = start_sim(config).await;
    let client = client(sim.url());
    let mut dosed = task("dose-1");
    dosed.parameters = Some(json!({"dose": 3}));
    let err = client.submit_tasks(&[dosed]).await.expect_err("refused");
    assert!(err.to_string().contains("parameters.dose"), "{err}");
    // The basic checks still apply through the seam.
    let mut no_email = task("dose-2");
    no_email.subject.users[0].email = None;
    let err = client.submit_tasks(&[no_email]).await.expect_err("refused");
    assert!(err.to_string().contains("email: required"), "{err}");
    assert_eq!(
        client
            .submit_tasks(&[task("dose-3")])
            .await
            .expect("ok")
            .len(),
        1
    );
}
