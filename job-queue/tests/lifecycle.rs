//! Clean shutdown and Redis faults against a private redis-server.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use job_queue::testing::RedisServer;
use job_queue::{JobQueue, NewJob, PushOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_returns_unstarted_jobs_and_leaves_nothing_leased() {
    let redis = RedisServer::start().expect("redis");
    let config = config(&redis, "shutdown")
        .concurrency(2)
        .prefetch(4)
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let jobs: Vec<NewJob<TestJob>> = (0..20).map(|n| TestJob { n }.into()).collect();
    queue.push_bulk(jobs).await.expect("push");
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let worker = InProcessWorker::start(&queue, "same-name", move |job, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(job.n);
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(())
        }
    });
    started.recv().await.expect("first start");
    started.recv().await.expect("second start");
    // 2 running + 4 prefetched are leased now.
    eventually("prefetch leased", Duration::from_secs(5), || async {
        queue.counts().await.expect("counts").running == 6
    })
    .await;
    let stop = tokio::spawn(worker.stop());
    // The prefetched, unstarted jobs go back at once — well before the
    // running ones finish.
    eventually("unstarted released", Duration::from_millis(300), || async {
        queue.counts().await.expect("counts").running == 2
    })
    .await;
    stop.await.expect("stopped");
    let counts = queue.counts().await.expect("counts");
    assert_eq!(counts.running, 0, "nothing leased after a clean exit");
    assert_eq!(counts.done, 2, "running jobs finished within the grace");
    assert_eq!(counts.pending, 18);
    assert_eq!(counts.workers, 0);
    // Released-unstarted jobs did not lose an attempt.
    let head = queue.dead_letters(0, 1).await.expect("dead");
    assert!(head.is_empty());
    // Restarted at once under the same name: picks up the rest.
    let again = InProcessWorker::start(&queue, "same-name", |_, _| async { Ok(()) });
    eventually("rest done", Duration::from_secs(10), || async {
        queue.counts().await.expect("counts").done == 20
    })
    .await;
    let seen = again.seen.lock().expect("seen").clone();
    again.stop().await;
    assert_eq!(seen.len(), 18);
    assert!(seen.values().all(|v| v.len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_running_past_the_grace_are_released() {
    let redis = RedisServer::start().expect("redis");
    let queue = queue(&redis, "grace").await;
    queue
        .push(&TestJob { n: 1 }, PushOptions::with_id("slow"))
        .await
        .expect("push");
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let worker = InProcessWorker::start(&queue, "impatient", move |job, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(job.n);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    });
    started.recv().await.expect("started");
    worker.abort().await;
    let counts = queue.counts().await.expect("counts");
    assert_eq!(
        (counts.running, counts.pending),
        (0, 1),
        "released, not left leased"
    );
    let job = queue.job("slow").await.expect("read").expect("kept");
    assert_eq!(job.state, job_queue::JobState::Pending);
    assert_eq!(job.attempts, 1, "the started attempt counts");
    assert!(job.last_error.as_deref().unwrap_or("").contains("released"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker_stops_cleanly_on_sigterm() {
    let redis = RedisServer::start().expect("redis");
    let queue = queue(&redis, "sigterm").await;
    let jobs: Vec<NewJob<TestJob>> = (0..10).map(|n| TestJob { n }.into()).collect();
    queue.push_bulk(jobs).await.expect("push");
    let mut child = ChildWorker::spawn(&redis, "sigterm", "term", 30_000, 2, 300);
    child.expect_line("started", Duration::from_secs(10)).await;
    child.signal("TERM");
    child.expect_line("exited", Duration::from_secs(10)).await;
    let status = child.child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
    let counts = queue.counts().await.expect("counts");
    assert_eq!(counts.running, 0, "nothing left leased: {counts:?}");
    assert_eq!(counts.pending + counts.done, 10);
    assert_eq!(counts.workers, 0);
}

/// A producer that pushes numbered jobs one by one and remembers which
/// pushes returned Ok.
fn spawn_producer(queue: JobQueue, count: u64) -> tokio::task::JoinHandle<HashSet<u64>> {
    tokio::spawn(async move {
        let mut acked = HashSet::new();
        for n in 0..count {
            if queue
                .push(&TestJob { n }, PushOptions::with_id(format!("p{n}")))
                .await
                .is_ok()
            {
                acked.insert(n);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acked
    })
}

async fn survives(fault: impl FnOnce(&mut RedisServer)) {
    let mut redis = RedisServer::start_with_aof().expect("redis");
    // A fetch whose answer is lost in the fault leaves its jobs leased until
    // the lease lapses: a short visibility timeout keeps the test short.
    let config = config(&redis, "faults")
        .visibility_timeout(Duration::from_secs(2))
        .reconnect_for(Duration::from_secs(15))
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let done: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let done2 = Arc::clone(&done);
    let worker = InProcessWorker::start(&queue, "faulty", move |job, _| {
        let done = Arc::clone(&done2);
        async move {
            done.lock().expect("done").insert(job.n);
            Ok(())
        }
    });
    let producer = spawn_producer(queue.clone(), 600);
    // Strike while jobs are both being pushed and being worked.
    eventually(
        "the first jobs processed",
        Duration::from_secs(10),
        || async { done.lock().expect("done").len() >= 50 },
    )
    .await;
    assert!(!producer.is_finished(), "the fault must hit mid-run");
    fault(&mut redis);
    let acked = producer.await.expect("producer");
    assert_eq!(acked.len(), 600, "the producer rode out the fault");
    eventually(
        "every acknowledged push processed",
        Duration::from_secs(15),
        || async { acked.is_subset(&done.lock().expect("done")) },
    )
    .await;
    worker.stop().await;
    let counts = queue.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.running), (0, 0), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_loses_no_pushed_job() {
    survives(|redis| redis.restart().expect("restart")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_for_a_while_then_back() {
    survives(|redis| {
        redis.kill_now();
        std::thread::sleep(Duration::from_secs(2));
        redis.start_again().expect("start again");
    })
    .await;
}
