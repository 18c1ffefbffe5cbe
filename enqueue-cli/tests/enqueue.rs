//! `portal-sync enqueue` against a real Redis and real stores, through the
//! real binary.

mod support;

use support::{Harness, StoreKind, invalid_task, task, tasks};
use task_model::LocalStatus;
use task_model::store::TaskStore;

async fn queues_every_valid_task_once_in_packages(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&tasks(105)).await;

    let (code, first) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["outcome"], "done");
    assert_eq!(first["exit_code"], 0);
    assert_eq!(first["kinds"]["submit"]["jobs"], 6);
    assert_eq!(first["kinds"]["submit"]["tasks"], 105);
    assert_eq!(
        first["kinds"]["pull"]["jobs"], 0,
        "nothing awaits completion"
    );
    assert_eq!(
        first["kinds"]["submit"]["first_ids"][0], "t-000000",
        "first ids listed in store order"
    );
    assert!(first["run_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(first["duration_ms"].is_u64());

    let queued = h.queued().await;
    assert_eq!(queued.submit_jobs, 6);
    assert_eq!(
        queued.max_package, 20,
        "packages hold at most task_package_size"
    );
    let expected: Vec<String> = (0..105).map(|i| format!("t-{i:06}")).collect();
    assert_eq!(queued.task_ids, expected, "every task queued exactly once");

    let counts = h.store.counts(chrono::Utc::now()).await.expect("counts");
    assert_eq!(counts.leased, 105, "every queued task is leased");

    // A second run while the jobs are pending adds nothing.
    let (code, second) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["kinds"]["submit"]["jobs"], 0);
    assert_eq!(second["kinds"]["submit"]["tasks"], 0);
    assert_eq!(h.queued().await.pending, 6);
}

#[tokio::test]
async fn queues_every_valid_task_once_in_packages_sqlite() {
    queues_every_valid_task_once_in_packages(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn queues_every_valid_task_once_in_packages_postgres() {
    queues_every_valid_task_once_in_packages(StoreKind::Postgres).await;
}

async fn invalid_tasks_are_recorded_and_skipped(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&[task("a-1"), invalid_task("a-2"), task("a-3")])
        .await;

    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 1, "an invalid task makes the run partial: {summary}");
    assert_eq!(summary["outcome"], "partial");
    assert_eq!(summary["skipped"]["invalid"], 1);
    assert_eq!(summary["skipped"]["examples"]["invalid"][0]["id"], "a-2");
    assert_eq!(summary["kinds"]["submit"]["tasks"], 2);

    let queued = h.queued().await;
    assert_eq!(queued.task_ids, vec!["a-1".to_string(), "a-3".to_string()]);

    let loaded = h.store.load(&["a-2".to_string()]).await.expect("load");
    let bad = loaded[0].as_ref().expect("a-2 is in the store");
    assert_eq!(
        bad.status,
        LocalStatus::AwaitingSubmission,
        "status untouched"
    );
    let error = bad
        .error
        .as_ref()
        .expect("the validation error is recorded");
    assert!(error.message.contains("email"), "{}", error.message);
    assert_eq!(error.attempts, 1);

    // Each cron run sees it again, but the same error is not re-recorded.
    let (code, again) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(again["skipped"]["invalid"], 1);
    let loaded = h.store.load(&["a-2".to_string()]).await.expect("load");
    let bad = loaded[0].as_ref().expect("a-2");
    assert_eq!(bad.error.as_ref().map(|e| e.attempts), Some(1));
}

#[tokio::test]
async fn invalid_tasks_are_recorded_and_skipped_sqlite() {
    invalid_tasks_are_recorded_and_skipped(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn invalid_tasks_are_recorded_and_skipped_postgres() {
    invalid_tasks_are_recorded_and_skipped(StoreKind::Postgres).await;
}
