//! The `Expose` traits apalis-board reads, against a private redis-server.

mod common;

use std::time::Duration;

use apalis_core::backend::codec::Codec;
use apalis_core::backend::{
    Backend, BackendConfig, Expose, FetchById, Filter, ListAllTasks, ListQueues, ListTasks,
    ListWorkers, Metrics, TaskSink, WireFormatBackend,
};
use apalis_core::task::Task;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use common::*;
use job_queue::testing::RedisServer;
use job_queue::{Dashboard, JobError, JobQueue, PushOptions, RetryPolicy};
use serde_json::Value;

/// The bounds apalis-board-api 1.0's `RegisterRoute` puts on a backend.
fn board_compatible<B, T>()
where
    B: Metrics + ListWorkers + ListAllTasks + ListQueues + BackendConfig + Send + 'static,
    B: ListTasks + FetchById + TaskSink<T, B::Kind> + Send + Sync,
    B: WireFormatBackend<Compact = Value> + Backend<Task = Task<Value>>,
    B::Codec: Codec<T, Compact = Value>,
    B: Expose<T, B::Kind>,
{
}

fn stat(stats: &[apalis_core::backend::Statistic], title: &str) -> String {
    stats
        .iter()
        .find(|s| s.title == title)
        .map(|s| s.value.clone())
        .unwrap_or_else(|| panic!("no statistic {title}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_what_was_pushed() {
    board_compatible::<Dashboard<TestJob>, TestJob>();
    let redis = RedisServer::start().expect("redis");
    let config = config(&redis, "board")
        .retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let other = JobQueue::connect(common::config(&redis, "other").build().expect("config"))
        .await
        .expect("connect");
    other
        .push(&TestJob { n: 99 }, PushOptions::default())
        .await
        .expect("push");
    // 3 done, 2 dead, then 4 pending and 1 scheduled.
    for n in 0..5 {
        queue
            .push(&TestJob { n }, PushOptions::with_id(format!("j{n}")))
            .await
            .expect("push");
    }
    let worker = InProcessWorker::start(&queue, "board-worker", |job, _| async move {
        if job.n >= 3 {
            Err(JobError::retry("no luck"))
        } else {
            Ok(())
        }
    });
    eventually("3 done 2 dead", Duration::from_secs(10), || async {
        let c = queue.counts().await.expect("counts");
        c.done == 3 && c.dead == 2
    })
    .await;
    let mut board: Dashboard<TestJob> = queue.dashboard();
    let workers = board.list_workers().await.expect("workers");
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, "board-worker");
    assert_eq!(workers[0].queue, "board");
    worker.stop().await;
    assert!(
        board.list_workers().await.expect("workers").is_empty(),
        "no stale workers"
    );

    for n in 10..14 {
        queue
            .push(&TestJob { n }, PushOptions::default())
            .await
            .expect("push");
    }
    board
        .push(TestJob { n: 20 })
        .await
        .expect("push through the board");
    let delayed = PushOptions {
        delay: Duration::from_secs(600),
        ..PushOptions::default()
    };
    queue.push(&TestJob { n: 30 }, delayed).await.expect("push");

    let stats = board.fetch_by_queue().await.expect("stats");
    assert_eq!(stat(&stats, "PENDING_JOBS"), "5");
    assert_eq!(stat(&stats, "SCHEDULED_JOBS"), "1");
    assert_eq!(stat(&stats, "RUNNING_JOBS"), "0");
    assert_eq!(stat(&stats, "DONE_JOBS"), "3");
    assert_eq!(stat(&stats, "FAILED_JOBS"), "2");
    assert_eq!(stat(&stats, "TOTAL_JOBS"), "11");
    let global = board.global().await.expect("global");
    assert_eq!(stat(&global, "PENDING_JOBS"), "6", "both queues");

    let queues = board.list_queues().await.expect("queues");
    let names: Vec<_> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, vec!["board", "other"]);
    assert_eq!(queues[0].activity.len(), 7);
    assert_eq!(queues[0].activity[6], 3, "3 completed today");

    let filter = |status: Option<Status>, page: u32, size: u32| Filter {
        status,
        page,
        page_size: Some(size),
    };
    let dead = board
        .list_tasks(&filter(Some(Status::Failed), 1, 10))
        .await
        .expect("dead");
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|t| t.ctx().metadata().get("last_error") == Some("no luck"))
    );
    let pending = board
        .list_tasks(&filter(Some(Status::Pending), 1, 10))
        .await
        .expect("pending");
    let ns: Vec<u64> = pending
        .iter()
        .map(|t| t.args["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(ns, vec![10, 11, 12, 13, 20]);
    let all_page_2 = board.list_tasks(&filter(None, 2, 4)).await.expect("page");
    assert_eq!(all_page_2.len(), 4);
    let everything = board
        .list_all_tasks(&filter(None, 1, 100))
        .await
        .expect("all");
    assert_eq!(everything.len(), 12);

    let task = board
        .fetch_by_id(&TaskId::from_string("j0"))
        .await
        .expect("fetch")
        .expect("present");
    assert_eq!(task.args["n"], 0);
    assert_eq!(task.ctx().status(), Status::Done);
    assert_eq!(task.ctx().attempt(), 1);
    assert!(
        board
            .fetch_by_id(&TaskId::from_string("nope"))
            .await
            .expect("fetch")
            .is_none()
    );
}
