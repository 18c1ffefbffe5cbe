//! `portal-sync enqueue` against a real Redis and real stores, through the
//! real binary.

mod support;

use support::{Harness, StoreKind, WORKER_MAX_ATTEMPTS, invalid_task, task, tasks};
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
    assert!(
        queued
            .max_attempts
            .iter()
            .all(|&m| m == WORKER_MAX_ATTEMPTS),
        "jobs carry the workers' max_attempts from the settings: {:?}",
        queued.max_attempts
    );

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

async fn dry_run_counts_and_changes_nothing(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&tasks(45)).await;
    h.import(&[invalid_task("z-bad")]).await;

    let (code, summary) = h.run_json(&["enqueue", "--dry-run", "--json"]);
    assert_eq!(code, 1, "the invalid task is reported: {summary}");
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["kinds"]["submit"]["jobs"], 3);
    assert_eq!(summary["kinds"]["submit"]["tasks"], 45);
    let first: Vec<&str> = summary["kinds"]["submit"]["first_ids"]
        .as_array()
        .expect("first ids")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0], "t-000000");
    assert_eq!(summary["skipped"]["invalid"], 1);

    assert_eq!(h.queued().await.pending, 0, "nothing pushed");
    assert_eq!(h.leased().await, 0, "nothing leased");
    let loaded = h.store.load(&["z-bad".to_string()]).await.expect("load");
    assert!(
        loaded[0].as_ref().expect("z-bad").error.is_none(),
        "a dry run records no error"
    );
    // The human form names the counts too.
    let run = h.run(&["enqueue", "--dry-run"]);
    assert!(
        run.stdout.contains("would queue 3 job(s)"),
        "{}",
        run.stdout
    );
}

async fn max_pending_holds_back_and_says_partial(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&tasks(200)).await; // 10 packages of 20

    let (code, summary) = h.run_json(&["enqueue", "--max-pending", "4", "--json"]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["outcome"], "partial");
    assert_eq!(summary["kinds"]["submit"]["jobs"], 4);
    assert_eq!(summary["backpressure"]["max_pending"], 4);
    assert_eq!(summary["backpressure"]["pending_before"], 0);
    assert_eq!(summary["backpressure"]["held_back"], true);
    assert_eq!(h.queued().await.pending, 4);
    assert_eq!(h.leased().await, 80, "held-back tasks are not leased");

    // The queue is full: a second run queues nothing.
    let (code, summary) = h.run_json(&["enqueue", "--max-pending", "4", "--json"]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["kinds"]["submit"]["jobs"], 0);
    assert_eq!(h.queued().await.pending, 4);

    // A higher limit takes the rest, up to the limit in total.
    let (code, summary) = h.run_json(&["enqueue", "--max-pending", "100", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["kinds"]["submit"]["jobs"], 6);
    assert_eq!(h.queued().await.task_ids.len(), 200);
}

async fn task_flag_queues_only_those_whatever_their_lease(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&tasks(30)).await;
    h.mark_submitted(&["t-000029"]).await;

    // Lease everything through a normal run first.
    let (code, _) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0);
    let before = h.queued().await.pending;

    let (code, summary) = h.run_json(&[
        "enqueue", "--task", "t-000003", "--task", "t-000029", "--task", "nope", "--json",
    ]);
    assert_eq!(code, 1, "an unknown id makes the run partial: {summary}");
    assert_eq!(summary["skipped"]["unknown"], 1);
    assert_eq!(summary["skipped"]["examples"]["unknown"][0]["id"], "nope");
    assert_eq!(summary["kinds"]["submit"]["tasks"], 1);
    assert_eq!(summary["kinds"]["submit"]["first_ids"][0], "t-000003");
    assert_eq!(
        summary["kinds"]["refresh"]["tasks"], 1,
        "awaiting completion → refresh"
    );
    assert_eq!(summary["kinds"]["refresh"]["first_ids"][0], "t-000029");
    assert_eq!(summary["kinds"]["pull"]["jobs"], 0, "--task queues no pull");
    let queued = h.queued().await;
    assert_eq!(queued.pending, before + 2);
    assert_eq!(queued.refresh_jobs, 1);
}

async fn awaiting_completion_gets_one_pull_and_complete_refreshes_them_all(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&tasks(50)).await;
    let submitted: Vec<String> = (0..45).map(|i| format!("t-{i:06}")).collect();
    let refs: Vec<&str> = submitted.iter().map(String::as_str).collect();
    h.mark_submitted(&refs).await;

    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["kinds"]["pull"]["jobs"], 1);
    assert_eq!(summary["kinds"]["submit"]["tasks"], 5);
    assert_eq!(
        summary["kinds"]["refresh"]["jobs"], 0,
        "no sweep without --complete"
    );

    // The pull job is single while queued.
    let (_, again) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(again["kinds"]["pull"]["jobs"], 0);
    assert_eq!(again["kinds"]["pull"]["already_queued"], 1);

    let (code, sweep) = h.run_json(&["enqueue", "--complete", "--json"]);
    assert_eq!(code, 0, "{sweep}");
    assert_eq!(sweep["kinds"]["refresh"]["tasks"], 45);
    assert_eq!(sweep["kinds"]["refresh"]["jobs"], 3);
    let queued = h.queued().await;
    assert_eq!(
        (queued.pull_jobs, queued.refresh_jobs, queued.submit_jobs),
        (1, 3, 1)
    );
    assert_eq!(queued.task_ids.len(), 50);
}

#[tokio::test]
async fn bad_settings_exit_2_naming_the_key() {
    let h = Harness::new(StoreKind::Sqlite).await;
    std::fs::write(
        &h.config,
        "portal_client:\n  url: ftp://x\n  api_key: k\n  task_package_size: many\n",
    )
    .expect("write");
    let run = h.run(&["enqueue"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("portal_client.task_package_size"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("portal_client.url"), "{}", run.stderr);
    assert!(
        run.stderr.lines().all(|l| l.starts_with("portal-sync: ")),
        "one problem per line: {}",
        run.stderr
    );

    let missing = std::process::Command::new(support::BIN)
        .args(["--config", "/nonexistent/ps.yaml", "enqueue"])
        .output();
    let missing = support::Run::from(missing.expect("run"));
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("/nonexistent/ps.yaml"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn redis_down_at_start_exits_3_and_leases_nothing() {
    let mut h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(40)).await;
    h.redis.stop().expect("stop redis");

    let started = std::time::Instant::now();
    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 3, "{summary}");
    assert_eq!(summary["outcome"], "failed");
    assert!(
        summary["error"]
            .as_str()
            .is_some_and(|e| e.contains("redis")),
        "{summary}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fails fast"
    );
    assert_eq!(h.leased().await, 0);

    h.redis.start_again().expect("start redis again");
    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        h.queued().await.task_ids.len(),
        40,
        "the next run does the work"
    );
}

async fn a_row_the_host_wrote_badly_is_reported_and_skipped(kind: StoreKind) {
    let h = Harness::new(kind).await;
    h.import(&tasks(25)).await;
    task_model::store::testing::execute_sql(
        &h.store,
        "UPDATE tasks SET subject = '{not json' WHERE host_system_id = 't-000007'",
    )
    .await
    .expect("corrupt one row");

    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["skipped"]["bad_rows"], 1);
    assert_eq!(
        summary["skipped"]["examples"]["bad_row"][0]["id"],
        "t-000007"
    );
    assert_eq!(
        summary["kinds"]["submit"]["tasks"], 24,
        "the others still go"
    );
    let queued = h.queued().await;
    assert!(!queued.task_ids.contains(&"t-000007".to_string()));
    assert_eq!(queued.task_ids.len(), 24);
}

#[tokio::test]
async fn a_row_the_host_wrote_badly_is_reported_and_skipped_sqlite() {
    a_row_the_host_wrote_badly_is_reported_and_skipped(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_row_the_host_wrote_badly_is_reported_and_skipped_postgres() {
    a_row_the_host_wrote_badly_is_reported_and_skipped(StoreKind::Postgres).await;
}

#[tokio::test]
async fn dry_run_counts_and_changes_nothing_sqlite() {
    dry_run_counts_and_changes_nothing(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn dry_run_counts_and_changes_nothing_postgres() {
    dry_run_counts_and_changes_nothing(StoreKind::Postgres).await;
}

#[tokio::test]
async fn max_pending_holds_back_and_says_partial_sqlite() {
    max_pending_holds_back_and_says_partial(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn max_pending_holds_back_and_says_partial_postgres() {
    max_pending_holds_back_and_says_partial(StoreKind::Postgres).await;
}

#[tokio::test]
async fn task_flag_queues_only_those_whatever_their_lease_sqlite() {
    task_flag_queues_only_those_whatever_their_lease(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn task_flag_queues_only_those_whatever_their_lease_postgres() {
    task_flag_queues_only_those_whatever_their_lease(StoreKind::Postgres).await;
}

#[tokio::test]
async fn awaiting_completion_gets_one_pull_and_complete_refreshes_them_all_sqlite() {
    awaiting_completion_gets_one_pull_and_complete_refreshes_them_all(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn awaiting_completion_gets_one_pull_and_complete_refreshes_them_all_postgres() {
    awaiting_completion_gets_one_pull_and_complete_refreshes_them_all(StoreKind::Postgres).await;
}
