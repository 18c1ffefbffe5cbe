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
use job_queue::{Dashboard, JobError, JobQueue, PushOptions};
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
        .retry(single_attempt())
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
    until_settled(&queue, 3, 2, Duration::from_secs(10)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_drops_out_of_the_listing() {
    let redis = RedisServer::start().expect("redis");
    // The child worker's settings: a 3 s lease, so a 1 s heartbeat and a worker
    // record kept 3 s after the last one.
    let config = config(&redis, "workers")
        .visibility_timeout(Duration::from_secs(3))
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let board: Dashboard<TestJob> = queue.dashboard();
    let mut conn = redis_conn(&redis).await;
    let record = "{test:workers}:worker:doomed";
    let alive = InProcessWorker::start(&queue, "alive", |_, _| async { Ok(()) });
    let mut doomed = ChildWorker::spawn(&redis, "workers", "doomed", 3000, 1, 10);
    let names = || async {
        let mut names: Vec<String> = board
            .list_workers()
            .await
            .expect("workers")
            .into_iter()
            .map(|w| w.id)
            .collect();
        names.sort();
        names
    };
    eventually("both workers listed", Duration::from_secs(10), || async {
        names().await == ["alive", "doomed"] && queue.counts().await.expect("counts").workers == 2
    })
    .await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(record)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(
        ttl > 0 && ttl <= 3000,
        "the record expires 3 heartbeats on: {ttl} ms"
    );

    // SIGKILL: no deregistration, the heartbeats just stop.
    doomed.signal("KILL");
    let _ = doomed.child.wait();
    eventually(
        "the killed worker gone, the live one still listed",
        Duration::from_secs(8),
        || {
            let mut conn = conn.clone();
            let (names, queue) = (&names, &queue);
            async move {
                let record_left: u64 = redis::cmd("EXISTS")
                    .arg(record)
                    .query_async(&mut conn)
                    .await
                    .expect("exists");
                let indexed: Option<f64> = redis::cmd("ZSCORE")
                    .arg("{test:workers}:workers")
                    .arg("doomed")
                    .query_async(&mut conn)
                    .await
                    .expect("zscore");
                names().await == ["alive"]
                    && queue.counts().await.expect("counts").workers == 1
                    && record_left == 0
                    && indexed.is_none()
            }
        },
    )
    .await;
    alive.stop().await;
    assert!(names().await.is_empty(), "no stale workers");
}
