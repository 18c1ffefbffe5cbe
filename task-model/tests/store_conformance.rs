//! The task store conformance suite: one set of behaviours, each run
//! unchanged against a real SQLite file (`sqlite::*`) and a real PostgreSQL
//! database (`postgres::*`), each test in its own fresh store.
//!
//! PostgreSQL is found through `PORTAL_SYNC_TEST_POSTGRES` (default: this
//! machine's server); if none answers the `postgres::*` tests fail saying how
//! to start one, unless `PORTAL_SYNC_TEST_POSTGRES=skip` opts out explicitly.

use std::collections::{BTreeSet, HashSet};

use chrono::{Duration, Utc};
use futures::StreamExt as _;
use serde_json::{Value, json};
use task_model::store::testing::{TestDatabase, execute_sql, query_i64};
use task_model::store::{
    AnyStore, DueQuery, LeaseRequest, RecordPosition, RowError, StoreError, TaskStore,
    open_store_with,
};
use task_model::{HostTask, LocalStatus, LocalTask, PortalDate, PortalStatus, PortalTask, TaskId};

// ---------------------------------------------------------------------------
// Fixtures

/// A host task as JSON; `instrument` picks one of a few shared instruments.
fn task_json(id: &str, instrument: usize) -> Value {
    json!({
        "host_system_id": id,
        "display_name": format!("Task {id}"),
        "instrument": {"id": format!("urn:instrument-{instrument}"), "version": "1.0",
                       "title": "Instrument", "record": [{"id": "q1", "type": "text"}]},
        "form": {"instrument": {"id": format!("urn:instrument-{instrument}"), "version": "1.0"},
                 "defaultLocalization": "en", "pages": []},
        "subject": {"host_system_id": format!("subject-{id}"), "display_name": "Subject",
                    "users": [{"host_system_id": format!("user-{id}"), "display_name": "User",
                               "email": "user@example.org"}]},
        "parameters": {"visit": 1},
    })
}

fn ndjson(tasks: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for t in tasks {
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn ids(prefix: &str, n: usize) -> Vec<TaskId> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

async fn import_tasks(store: &AnyStore, ids: &[TaskId]) {
    let tasks: Vec<Value> = ids.iter().map(|id| task_json(id, 0)).collect();
    let report = store
        .import(std::io::Cursor::new(ndjson(&tasks)))
        .await
        .expect("import");
    assert_eq!(report.inserted, ids.len() as u64, "{report:?}");
}

fn date(s: &str) -> PortalDate {
    PortalDate::parse(s).expect("date")
}

fn portal(id: &str, status: PortalStatus, revision: u64) -> PortalTask {
    PortalTask {
        code: format!("C-{id}"),
        host_system_id: id.to_string(),
        subject_code: "S-1".into(),
        status,
        date_created: Some(date("2026-01-02 03:04:05")),
        date_started: (status != PortalStatus::Waiting).then(|| date("2026-01-03 00:00:00")),
        date_completed: (status == PortalStatus::Complete).then(|| date("2026-01-04 00:00:00")),
        assessment: (status == PortalStatus::Complete).then(|| json!({"q1": "answer"})),
        revision,
        acknowledged: false,
    }
}

async fn load_one(store: &AnyStore, id: &str) -> LocalTask {
    let mut loaded = store.load(&[id.to_string()]).await.expect("load");
    loaded
        .pop()
        .expect("one answer")
        .unwrap_or_else(|e| panic!("task {id}: {e}"))
}

async fn due_ids(
    store: &AnyStore,
    statuses: Vec<LocalStatus>,
    now: chrono::DateTime<Utc>,
) -> Vec<String> {
    let mut query = DueQuery::new(statuses, now);
    query.batch_size = 7;
    let items: Vec<_> = store.stream_due(query).collect().await;
    items
        .into_iter()
        .map(|r| {
            r.map(|t| t.id().to_string())
                .unwrap_or_else(|e| panic!("stream: {e}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Behaviours: each takes a fresh store.

async fn import_round_trips_a_task(store: AnyStore) {
    let input = task_json("t-1", 3);
    let report = store
        .import(std::io::Cursor::new(ndjson(std::slice::from_ref(&input))))
        .await
        .expect("import");
    assert_eq!((report.inserted, report.errors.len()), (1, 0));
    let loaded = load_one(&store, "t-1").await;
    let expected: HostTask = serde_json::from_value(input).expect("host task");
    assert_eq!(loaded.task, expected);
    assert_eq!(loaded.status, LocalStatus::AwaitingSubmission);
    assert_eq!((loaded.portal, loaded.error), (None, None));
    // Explicit nulls are absent optionals; pretty-printed input reads the same.
    let mut nulls = task_json("t-2", 3);
    nulls["parameters"] = Value::Null;
    nulls["assessment"] = Value::Null;
    let pretty = serde_json::to_string_pretty(&json!([nulls])).expect("json");
    let report = store
        .import(std::io::Cursor::new(pretty.into_bytes()))
        .await
        .expect("import");
    assert_eq!(report.inserted, 1, "{report:?}");
    let loaded = load_one(&store, "t-2").await;
    assert_eq!(
        (loaded.task.parameters, loaded.task.assessment),
        (None, None)
    );
    assert_eq!(*loaded.task.instrument, nulls["instrument"]);
}

async fn import_reports_bad_lines_and_lands_the_good_ones(store: AnyStore) {
    let mut text = String::new();
    text.push_str(&task_json("good-1", 0).to_string());
    text.push_str("\n{\"host_system_id\": \"broken\", \n");
    text.push('\n');
    let mut missing_form = task_json("no-form", 0);
    missing_form.as_object_mut().map(|o| o.remove("form"));
    text.push_str(&missing_form.to_string());
    text.push('\n');
    text.push_str(&task_json("good-2", 1).to_string());
    text.push('\n');
    let report = store
        .import(std::io::Cursor::new(text.into_bytes()))
        .await
        .expect("import");
    assert_eq!(report.inserted, 2, "{report:?}");
    let positions: Vec<_> = report.errors.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        vec![RecordPosition::Line(2), RecordPosition::Line(4)]
    );
    assert_eq!(report.errors[1].task_id.as_deref(), Some("no-form"));
    assert!(
        report.errors[1].message.contains("form"),
        "{}",
        report.errors[1]
    );
    let loaded = store
        .load(&["good-1".into(), "no-form".into(), "good-2".into()])
        .await
        .expect("load");
    assert!(loaded[0].is_ok() && loaded[2].is_ok());
    assert_eq!(
        loaded[1],
        Err(RowError::Missing {
            task_id: "no-form".into()
        })
    );
}

async fn import_reads_a_json_array_and_reports_the_index(store: AnyStore) {
    let mut bad = task_json("bad", 0);
    bad["subject"] = json!("not an object");
    let array = json!([task_json("a-0", 0), bad, task_json("a-2", 0)]);
    let report = store
        .import(std::io::Cursor::new(array.to_string().into_bytes()))
        .await
        .expect("import");
    assert_eq!(report.inserted, 2, "{report:?}");
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].position, RecordPosition::Index(1));
    assert_eq!(report.errors[0].task_id.as_deref(), Some("bad"));
    // The message names the problem without echoing the host's values.
    assert!(
        !report.errors[0].message.contains("not an object"),
        "{}",
        report.errors[0]
    );
}

async fn reimport_updates_unsubmitted_tasks_and_skips_submitted_ones(store: AnyStore) {
    import_tasks(&store, &["keep".into(), "frozen".into()]).await;
    store
        .write_back(&[portal("frozen", PortalStatus::Waiting, 1)])
        .await
        .expect("write back");
    store
        .record_error("keep", "no e-mail")
        .await
        .expect("record");
    let mut changed = task_json("keep", 5);
    changed["display_name"] = json!("Renamed");
    let mut frozen = task_json("frozen", 5);
    frozen["display_name"] = json!("Renamed");
    let report = store
        .import(std::io::Cursor::new(ndjson(&[changed, frozen])))
        .await
        .expect("reimport");
    assert_eq!((report.inserted, report.updated), (0, 1), "{report:?}");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].task_id, "frozen");
    assert_eq!(report.skipped[0].position, RecordPosition::Line(2));
    assert_eq!(report.skipped[0].status, "awaiting-completion");
    let keep = load_one(&store, "keep").await;
    assert_eq!(keep.task.display_name, "Renamed");
    assert_eq!(keep.task.instrument["id"], "urn:instrument-5");
    assert_eq!(
        keep.error, None,
        "a corrected task starts without its old error"
    );
    let frozen = load_one(&store, "frozen").await;
    assert_eq!(frozen.task.display_name, "Task frozen");
    assert_eq!(frozen.status, LocalStatus::AwaitingCompletion);
}

async fn import_stores_each_instrument_and_form_once(store: AnyStore) {
    let tasks: Vec<Value> = (0..600)
        .map(|i| task_json(&format!("d-{i}"), i % 10))
        .collect();
    let report = store
        .import(std::io::Cursor::new(ndjson(&tasks)))
        .await
        .expect("import");
    assert_eq!(report.inserted, 600);
    let instruments = query_i64(&store, "SELECT COUNT(*) FROM instruments")
        .await
        .expect("count");
    let forms = query_i64(&store, "SELECT COUNT(*) FROM forms")
        .await
        .expect("count");
    assert_eq!((instruments, forms), (10, 10));
    // A second import of the same documents adds none.
    let more: Vec<Value> = (0..20)
        .map(|i| task_json(&format!("e-{i}"), i % 10))
        .collect();
    store
        .import(std::io::Cursor::new(ndjson(&more)))
        .await
        .expect("import");
    let instruments = query_i64(&store, "SELECT COUNT(*) FROM instruments")
        .await
        .expect("count");
    assert_eq!(instruments, 10);
    // The same documents written differently (a pretty-printed JSON array,
    // the instrument's keys in another order) are still the same documents.
    let reordered = task_json("f-0", 3);
    let instrument = reordered["instrument"].to_string();
    let title_first = format!(
        "{{\"title\":\"Instrument\",{}",
        instrument
            .trim_start_matches('{')
            .replace(",\"title\":\"Instrument\"", "")
    );
    assert_ne!(title_first, instrument, "the key order differs");
    let text = format!(
        "[{},\n{}]",
        serde_json::to_string_pretty(&task_json("f-1", 4)).expect("json"),
        reordered.to_string().replace(&instrument, &title_first)
    );
    let report = store
        .import(std::io::Cursor::new(text.into_bytes()))
        .await
        .expect("import");
    assert_eq!(report.inserted, 2, "{report:?}");
    let documents = query_i64(
        &store,
        "SELECT (SELECT COUNT(*) FROM instruments) + (SELECT COUNT(*) FROM forms)",
    )
    .await
    .expect("count");
    assert_eq!(documents, 20);
}

async fn stream_yields_each_due_task_once_by_status(store: AnyStore) {
    let all = ids("s", 50);
    import_tasks(&store, &all).await;
    // Ten move on to awaiting-completion, five of those to complete.
    let submitted: Vec<PortalTask> = all[..10]
        .iter()
        .map(|id| portal(id, PortalStatus::Waiting, 1))
        .collect();
    store.write_back(&submitted).await.expect("write back");
    let completed: Vec<PortalTask> = all[..5]
        .iter()
        .map(|id| portal(id, PortalStatus::Complete, 2))
        .collect();
    store.write_back(&completed).await.expect("write back");
    let now = Utc::now();
    let waiting = due_ids(&store, vec![LocalStatus::AwaitingSubmission], now).await;
    assert_eq!(waiting, all[10..].to_vec(), "in id order, each once");
    let open = due_ids(&store, vec![LocalStatus::AwaitingCompletion], now).await;
    assert_eq!(open, all[5..10].to_vec());
    let both = due_ids(
        &store,
        vec![
            LocalStatus::AwaitingSubmission,
            LocalStatus::AwaitingCompletion,
        ],
        now,
    )
    .await;
    // Status by status, in the order asked, each in id order.
    let mut expected = all[10..].to_vec();
    expected.extend_from_slice(&all[5..10]);
    assert_eq!(both, expected);
    assert!(due_ids(&store, vec![], now).await.is_empty());
}

async fn stream_leaves_out_live_leases_and_takes_expired_ones(store: AnyStore) {
    let all = ids("l", 30);
    import_tasks(&store, &all).await;
    let now = Utc::now();
    let live = store
        .lease(LeaseRequest::new(
            all[0..10].to_vec(),
            "job-live",
            now + Duration::minutes(5),
            now,
        ))
        .await
        .expect("lease");
    assert_eq!(live.len(), 10);
    let expired = store
        .lease(LeaseRequest::new(
            all[10..20].to_vec(),
            "job-old",
            now - Duration::seconds(1),
            now - Duration::minutes(10),
        ))
        .await
        .expect("lease");
    assert_eq!(expired.len(), 10);
    let due = due_ids(&store, vec![LocalStatus::AwaitingSubmission], now).await;
    assert_eq!(due, all[10..].to_vec());
    // Once the live lease lapses, its tasks are due again.
    let later = due_ids(
        &store,
        vec![LocalStatus::AwaitingSubmission],
        now + Duration::minutes(6),
    )
    .await;
    assert_eq!(later, all);
}

async fn stream_reports_bad_host_rows_and_goes_on(store: AnyStore) {
    import_tasks(&store, &["a-good".into(), "z-good".into()]).await;
    let hash = query_i64(&store, "SELECT COUNT(*) FROM instruments")
        .await
        .expect("count");
    assert_eq!(hash, 1);
    // The host writes rows by hand: bad JSON, an unknown status, a document
    // that is not JSON.
    execute_sql(
        &store,
        "INSERT INTO instruments (hash, body) VALUES ('bad-doc', '{\"unclosed\": ');
         INSERT INTO tasks (host_system_id, display_name, instrument_hash, form_hash, subject, status)
           SELECT 'b-json', 'x', instrument_hash, form_hash, '{not json', 'awaiting-submission'
           FROM tasks WHERE host_system_id = 'a-good';
         INSERT INTO tasks (host_system_id, display_name, instrument_hash, form_hash, subject, status)
           SELECT 'c-status', 'x', instrument_hash, form_hash, subject, 'waiting-for-godot'
           FROM tasks WHERE host_system_id = 'a-good';
         INSERT INTO tasks (host_system_id, display_name, instrument_hash, form_hash, subject, status)
           SELECT 'd-doc', 'x', 'bad-doc', form_hash, subject, 'awaiting-submission'
           FROM tasks WHERE host_system_id = 'a-good';
         INSERT INTO tasks (host_system_id, display_name, instrument_hash, form_hash, subject, parameters, status)
           SELECT 'e-params', 'x', instrument_hash, form_hash, subject, '[1,', 'awaiting-submission'
           FROM tasks WHERE host_system_id = 'a-good';",
    )
    .await
    .expect("host rows");
    let mut query = DueQuery::new(vec![LocalStatus::AwaitingSubmission], Utc::now());
    query.batch_size = 2;
    let items: Vec<Result<LocalTask, StoreError>> = store.stream_due(query).collect().await;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in items {
        match item {
            Ok(task) => good.push(task.id().to_string()),
            Err(StoreError::BadRow(RowError::BadColumn {
                task_id, column, ..
            })) => bad.push((task_id, column)),
            Err(e) => panic!("the stream must go on past bad rows: {e}"),
        }
    }
    assert_eq!(good, vec!["a-good", "z-good"]);
    assert_eq!(
        bad,
        vec![
            ("b-json".to_string(), "subject"),
            ("d-doc".to_string(), "instruments.body"),
            ("e-params".to_string(), "parameters"),
            // Unknown statuses come last, whatever the filter.
            ("c-status".to_string(), "status"),
        ]
    );
    // Loading reports the same per task.
    let loaded = store
        .load(&["c-status".into(), "a-good".into()])
        .await
        .expect("load");
    assert!(matches!(
        &loaded[0],
        Err(RowError::BadColumn {
            column: "status",
            ..
        })
    ));
    assert!(loaded[1].is_ok());
    let counts = store.counts(Utc::now()).await.expect("counts");
    assert_eq!(counts.unknown_status, 1);
}

async fn load_answers_in_the_order_asked(store: AnyStore) {
    import_tasks(&store, &ids("o", 3)).await;
    let asked: Vec<TaskId> = vec![
        "o-0002".into(),
        "nope".into(),
        "o-0000".into(),
        "o-0002".into(),
    ];
    let loaded = store.load(&asked).await.expect("load");
    let answered: Vec<String> = loaded
        .iter()
        .map(|r| match r {
            Ok(t) => t.id().to_string(),
            Err(e) => format!("missing {}", e.task_id()),
        })
        .collect();
    assert_eq!(answered, vec!["o-0002", "missing nope", "o-0000", "o-0002"]);
}

async fn lease_takes_only_tasks_no_other_job_holds(store: AnyStore) {
    let all = ids("k", 4);
    import_tasks(&store, &all).await;
    let now = Utc::now();
    let until = now + Duration::minutes(5);
    let first = store
        .lease(LeaseRequest::new(all[0..2].to_vec(), "job-a", until, now))
        .await
        .expect("lease");
    assert_eq!(first, all[0..2].to_vec());
    let mut asked = all.clone();
    asked.push("unknown".into());
    let second: BTreeSet<TaskId> = store
        .lease(LeaseRequest::new(asked, "job-b", until, now))
        .await
        .expect("lease")
        .into_iter()
        .collect();
    assert_eq!(second, all[2..4].iter().cloned().collect());
    // The holder may renew its own lease.
    let renewed = store
        .lease(LeaseRequest::new(
            all[0..1].to_vec(),
            "job-a",
            until + Duration::minutes(1),
            now,
        ))
        .await
        .expect("lease");
    assert_eq!(renewed, all[0..1].to_vec());
    // Release only frees what the job still holds.
    assert_eq!(store.release(&all, "job-a").await.expect("release"), 2);
    assert_eq!(store.release(&all, "job-a").await.expect("release"), 0);
    let counts = store.counts(now).await.expect("counts");
    assert_eq!(counts.leased, 2);
    // A forced lease takes tasks from another job's live lease.
    let forced: BTreeSet<TaskId> = store
        .lease(LeaseRequest::new(all.clone(), "job-op", until, now).forced())
        .await
        .expect("lease")
        .into_iter()
        .collect();
    assert_eq!(forced, all.iter().cloned().collect());
    assert_eq!(store.release(&all, "job-b").await.expect("release"), 0);
}

async fn lease_many_gives_each_task_to_one_request(store: AnyStore) {
    let all = ids("m", 5);
    import_tasks(&store, &all).await;
    let now = Utc::now();
    let until = now + Duration::minutes(5);
    store
        .lease(LeaseRequest::new(vec![all[4].clone()], "other", until, now))
        .await
        .expect("lease");
    let got = store
        .lease_many(&[
            LeaseRequest::new(all[0..3].to_vec(), "job-1", until, now),
            LeaseRequest::new(all[2..4].to_vec(), "job-2", until, now),
            LeaseRequest::new(vec![all[4].clone()], "job-3", until, now),
            LeaseRequest::new(vec![], "job-4", until, now),
        ])
        .await
        .expect("lease many");
    assert_eq!(
        got,
        vec![all[0..3].to_vec(), vec![all[3].clone()], vec![], vec![]]
    );
    assert_eq!(
        store.release(&all[2..3], "job-2").await.expect("release"),
        0
    );
    assert_eq!(
        store.release(&all[2..3], "job-1").await.expect("release"),
        1
    );
}

async fn write_back_is_monotonic_idempotent_and_counted(store: AnyStore) {
    let all = ids("w", 3);
    import_tasks(&store, &all).await;
    let submitted: Vec<PortalTask> = all
        .iter()
        .map(|id| portal(id, PortalStatus::Waiting, 1))
        .collect();
    let report = store.write_back(&submitted).await.expect("write back");
    assert_eq!(report.applied, 3, "{report:?}");
    // The same answers again change nothing.
    let again = store.write_back(&submitted).await.expect("write back");
    assert_eq!((again.applied, again.repeated), (0, 3), "{again:?}");
    let complete = portal(&all[0], PortalStatus::Complete, 3);
    let report = store
        .write_back(&[
            complete.clone(),
            portal(&all[0], PortalStatus::InProgress, 2), // older revision: stale
            portal(&all[0], PortalStatus::Waiting, 4),    // complete → waiting: backwards
            portal("not-ours", PortalStatus::Waiting, 1),
        ])
        .await
        .expect("write back");
    assert_eq!(
        (
            report.applied,
            report.stale,
            report.backwards,
            report.repeated
        ),
        (1, 1, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.unknown, vec!["not-ours".to_string()]);
    let task = load_one(&store, &all[0]).await;
    assert_eq!(task.status, LocalStatus::Complete);
    let held = task.portal.expect("portal state");
    assert_eq!((held.revision, held.status), (3, PortalStatus::Complete));
    assert_eq!(held.assessment, complete.assessment);
    assert_eq!(held.date_completed, complete.date_completed);
    let other = load_one(&store, &all[1]).await;
    assert_eq!(other.status, LocalStatus::AwaitingCompletion);
    assert_eq!(other.portal.map(|p| p.code), Some("C-w-0001".to_string()));
}

async fn write_back_conflict_changes_nothing_and_is_recorded(store: AnyStore) {
    import_tasks(&store, &["c".into()]).await;
    store
        .write_back(&[portal("c", PortalStatus::Waiting, 1)])
        .await
        .expect("write back");
    let mut other_code = portal("c", PortalStatus::Complete, 2);
    other_code.code = "SOMEONE-ELSE".into();
    let report = store.write_back(&[other_code]).await.expect("write back");
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(report.applied, 0);
    let task = load_one(&store, "c").await;
    assert_eq!(task.status, LocalStatus::AwaitingCompletion);
    assert_eq!(task.portal.map(|p| p.code), Some("C-c".to_string()));
    assert_eq!(task.error.map(|e| e.attempts), Some(1));
}

async fn racing_write_backs_never_move_a_task_backwards(store: AnyStore) {
    let all = ids("r", 40);
    import_tasks(&store, &all).await;
    let steps = [
        (PortalStatus::Waiting, 1),
        (PortalStatus::InProgress, 2),
        (PortalStatus::InProgress, 3),
        (PortalStatus::Complete, 4),
    ];
    // Four writers deliver the steps in different orders at the same time.
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        let all = all.clone();
        writers.push(tokio::spawn(async move {
            let mut order: Vec<usize> = (0..steps.len()).collect();
            order.rotate_left(w);
            for step in order {
                let (status, revision) = steps[step];
                let batch: Vec<PortalTask> =
                    all.iter().map(|id| portal(id, status, revision)).collect();
                store.write_back(&batch).await.expect("write back");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    for result in store.load(&all).await.expect("load") {
        let task = result.expect("task");
        assert_eq!(task.status, LocalStatus::Complete, "{}", task.id());
        assert_eq!(
            task.portal.as_ref().map(|p| p.revision),
            Some(4),
            "{}",
            task.id()
        );
    }
}

async fn record_error_keeps_the_status(store: AnyStore) {
    import_tasks(&store, &["e".into()]).await;
    store
        .write_back(&[portal("e", PortalStatus::Waiting, 1)])
        .await
        .expect("write back");
    let before = Utc::now() - Duration::seconds(1);
    assert!(
        store
            .record_error("e", "portal said 500")
            .await
            .expect("record")
    );
    assert!(
        store
            .record_error("e", "portal said 502")
            .await
            .expect("record")
    );
    assert!(!store.record_error("absent", "x").await.expect("record"));
    let task = load_one(&store, "e").await;
    assert_eq!(task.status, LocalStatus::AwaitingCompletion);
    let error = task.error.expect("error");
    assert_eq!(
        (error.message.as_str(), error.attempts),
        ("portal said 502", 2)
    );
    assert!(error.at >= before && error.at <= Utc::now() + Duration::seconds(1));
    let counts = store.counts(Utc::now()).await.expect("counts");
    assert_eq!(counts.with_error, 1);
    assert_eq!(store.clear_error(&["e".into()]).await.expect("clear"), 1);
    assert_eq!(load_one(&store, "e").await.error, None);
    assert_eq!(store.clear_error(&["e".into()]).await.expect("clear"), 0);
}

async fn counts_by_status_with_errors_and_leases(store: AnyStore) {
    let all = ids("n", 6);
    import_tasks(&store, &all).await;
    store
        .write_back(&[
            portal(&all[0], PortalStatus::Waiting, 1),
            portal(&all[1], PortalStatus::Waiting, 1),
            portal(&all[2], PortalStatus::Complete, 1),
            portal(&all[3], PortalStatus::Cancelled, 1),
        ])
        .await
        .expect("write back");
    store.record_error(&all[4], "boom").await.expect("record");
    let now = Utc::now();
    store
        .lease(LeaseRequest::new(
            all[4..6].to_vec(),
            "job",
            now + Duration::minutes(1),
            now,
        ))
        .await
        .expect("lease");
    let counts = store.counts(now).await.expect("counts");
    let by: Vec<(LocalStatus, u64)> = counts.by_status.iter().map(|(s, n)| (*s, *n)).collect();
    assert_eq!(
        by,
        vec![
            (LocalStatus::AwaitingSubmission, 2),
            (LocalStatus::AwaitingCompletion, 2),
            (LocalStatus::Complete, 1),
            (LocalStatus::Cancelled, 1),
        ]
    );
    assert_eq!(
        (
            counts.with_error,
            counts.leased,
            counts.total,
            counts.unknown_status
        ),
        (1, 2, 6, 0)
    );
    // After the lease lapses it no longer counts.
    assert_eq!(
        store
            .counts(now + Duration::minutes(2))
            .await
            .expect("counts")
            .leased,
        0
    );
}

async fn reopening_keeps_the_tasks(store: AnyStore, db: &TestDatabase) {
    import_tasks(&store, &ids("p", 3)).await;
    drop(store);
    let again = db.open().await;
    let counts = again.counts(Utc::now()).await.expect("counts");
    assert_eq!(counts.total, 3);
    let seen: HashSet<String> = due_ids(&again, vec![LocalStatus::AwaitingSubmission], Utc::now())
        .await
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 3);
}

async fn stream_pages_ahead_and_stops_when_dropped(store: AnyStore) {
    let all = ids("r", 25);
    import_tasks(&store, &all).await;
    let now = Utc::now();
    let mut query = DueQuery::new(vec![LocalStatus::AwaitingSubmission], now);
    query.batch_size = 4;
    let got: Vec<TaskId> = store
        .stream_due(query.clone())
        .map(|t| t.expect("task").task.host_system_id)
        .collect()
        .await;
    assert_eq!(got, all, "every page, in order, each task once");
    // A stream dropped after its first task leaves the store usable.
    let mut due = store.stream_due(query);
    assert_eq!(
        due.next()
            .await
            .expect("a task")
            .expect("task")
            .task
            .host_system_id,
        all[0]
    );
    drop(due);
    let leased = store
        .lease(LeaseRequest::new(
            all.clone(),
            "job-after",
            now + Duration::minutes(5),
            now,
        ))
        .await
        .expect("lease");
    assert_eq!(leased, all);
}

async fn the_pool_holds_the_connections_asked_for(store: AnyStore, db: &TestDatabase) {
    drop(store);
    let store = open_store_with(db.url(), 3).await.expect("open");
    let max = match &store {
        AnyStore::Sqlite(s) => s.pool().options().get_max_connections(),
        AnyStore::Postgres(s) => s.pool().options().get_max_connections(),
    };
    assert_eq!(max, 3);
}

async fn leases_taken_before_the_lease_table_are_kept(store: AnyStore, db: &TestDatabase) {
    let all = ids("m", 4);
    import_tasks(&store, &all).await;
    let until = (Utc::now() + Duration::minutes(5)).timestamp_millis();
    // Back to the schema of migration 1, leases inside the task rows, with
    // one task leased; then let the store migrate it again.
    execute_sql(
        &store,
        &format!(
            "DROP TABLE task_leases; \
             ALTER TABLE tasks ADD COLUMN lease_job TEXT; \
             ALTER TABLE tasks ADD COLUMN lease_until BIGINT; \
             UPDATE tasks SET lease_job = 'job-old', lease_until = {until} \
             WHERE host_system_id = 'm-0000'; \
             DELETE FROM _sqlx_migrations WHERE version = 2;"
        ),
    )
    .await
    .expect("old schema");
    drop(store);
    let again = db.open().await;
    let now = Utc::now();
    let due = due_ids(&again, vec![LocalStatus::AwaitingSubmission], now).await;
    assert_eq!(due, all[1..].to_vec(), "the leased task stays out");
    let taken = again
        .lease(LeaseRequest::new(
            vec![all[0].clone()],
            "job-new",
            now + Duration::minutes(5),
            now,
        ))
        .await
        .expect("lease");
    assert!(taken.is_empty(), "another job cannot take it: {taken:?}");
    assert_eq!(again.counts(now).await.expect("counts").leased, 1);
    let released = again
        .release(std::slice::from_ref(&all[0]), "job-old")
        .await
        .expect("release");
    assert_eq!(released, 1, "its job still holds it");
    assert!(
        execute_sql(&again, "SELECT lease_job FROM tasks")
            .await
            .is_err(),
        "the old lease columns are gone"
    );
}

// ---------------------------------------------------------------------------
// One test per behaviour and backend.

macro_rules! conformance {
    ($($name:ident),* $(,)?; reopening: $($reopen:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = TestDatabase::sqlite();
                    let store = db.open().await;
                    super::$name(store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $reopen() {
                    let db = TestDatabase::sqlite();
                    let store = db.open().await;
                    super::$reopen(store, &db).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = TestDatabase::postgres().await else {
                        eprintln!("skipped: PORTAL_SYNC_TEST_POSTGRES=skip");
                        return;
                    };
                    let store = db.open().await;
                    super::$name(store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $reopen() {
                    let Some(db) = TestDatabase::postgres().await else {
                        eprintln!("skipped: PORTAL_SYNC_TEST_POSTGRES=skip");
                        return;
                    };
                    let store = db.open().await;
                    super::$reopen(store, &db).await;
                }
            )*
        }
    };
}

conformance!(
    import_round_trips_a_task,
    import_reports_bad_lines_and_lands_the_good_ones,
    import_reads_a_json_array_and_reports_the_index,
    reimport_updates_unsubmitted_tasks_and_skips_submitted_ones,
    import_stores_each_instrument_and_form_once,
    stream_yields_each_due_task_once_by_status,
    stream_leaves_out_live_leases_and_takes_expired_ones,
    stream_reports_bad_host_rows_and_goes_on,
    load_answers_in_the_order_asked,
    lease_takes_only_tasks_no_other_job_holds,
    lease_many_gives_each_task_to_one_request,
    write_back_is_monotonic_idempotent_and_counted,
    write_back_conflict_changes_nothing_and_is_recorded,
    racing_write_backs_never_move_a_task_backwards,
    record_error_keeps_the_status,
    counts_by_status_with_errors_and_leases,
    stream_pages_ahead_and_stops_when_dropped;
    reopening:
    reopening_keeps_the_tasks,
    leases_taken_before_the_lease_table_are_kept,
    the_pool_holds_the_connections_asked_for,
);
