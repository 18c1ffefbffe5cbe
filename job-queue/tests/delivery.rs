//! Delivery guarantees against a private redis-server: leases, killed and
//! paused worker processes, large backlogs, pickup latency.

mod common;

use std::time::{Duration, Instant};

use common::*;
use job_queue::testing::RedisServer;
use job_queue::{JobQueue, JobState, NewJob, PushOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_jobs_are_all_processed_once() {
    let redis = RedisServer::start().expect("redis");
    let queue = queue(&redis, "basic").await;
    let jobs: Vec<NewJob<TestJob>> = (0..200).map(|n| TestJob { n }.into()).collect();
    let outcomes = queue.push_bulk(jobs).await.expect("push");
    assert!(outcomes.iter().all(|o| o.new));
    let worker = InProcessWorker::start(&queue, "w1", |_, _| async { Ok(()) });
    eventually("200 done", Duration::from_secs(10), || async {
        queue.counts().await.expect("counts").done == 200
    })
    .await;
    let seen = worker.seen.lock().expect("seen").clone();
    worker.stop().await;
    assert_eq!(seen.len(), 200);
    assert!(seen.values().all(|v| v.len() == 1), "each job ran once");
    let counts = queue.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.running, counts.dead), (0, 0, 0));
    assert_eq!(counts.workers, 0, "worker record removed on clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_process_loses_no_job() {
    let redis = RedisServer::start().expect("redis");
    let queue = queue(&redis, "kill").await;
    let jobs: Vec<NewJob<TestJob>> = (0..20).map(|n| TestJob { n }.into()).collect();
    queue.push_bulk(jobs).await.expect("push");
    // Holds 4 jobs (concurrency 4) for 60 s each, lease 1 s.
    let mut doomed = ChildWorker::spawn(&redis, "kill", "doomed", 1000, 4, 60_000);
    for _ in 0..4 {
        doomed.expect_line("started", Duration::from_secs(10)).await;
    }
    doomed.signal("KILL");
    let _ = doomed.child.wait();
    let running = queue.counts().await.expect("counts").running;
    assert!(running >= 4, "the killed worker held leases ({running})");
    // A survivor with another name takes everything, the killed worker's jobs
    // once their leases lapse.
    let survivor = InProcessWorker::start(&queue, "survivor", |_, _| async { Ok(()) });
    eventually("all 20 done", Duration::from_secs(10), || async {
        queue.counts().await.expect("counts").done == 20
    })
    .await;
    survivor.stop().await;
    let counts = queue.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.running, counts.dead), (0, 0, 0));
    assert!(
        counts.lapsed_leases >= 4,
        "lapsed leases counted: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_cannot_ack_a_redelivered_job() {
    let redis = RedisServer::start().expect("redis");
    let queue = queue(&redis, "pause").await;
    let pushed = queue
        .push(&TestJob { n: 1 }, PushOptions::with_id("job-1"))
        .await
        .expect("push");
    assert!(pushed.new);
    // Lease 800 ms; the handler takes 1.5 s and the process is frozen meanwhile.
    let mut paused = ChildWorker::spawn(&redis, "pause", "paused", 800, 1, 1500);
    paused
        .expect_line("started job-1", Duration::from_secs(10))
        .await;
    paused.signal("STOP");
    let other = InProcessWorker::start(&queue, "other", |_, _| async { Ok(()) });
    eventually(
        "job redelivered and done",
        Duration::from_secs(10),
        || async { queue.counts().await.expect("counts").done == 1 },
    )
    .await;
    other.stop().await;
    paused.signal("CONT");
    paused
        .expect_line("finished job-1", Duration::from_secs(10))
        .await;
    eventually("stale ack counted", Duration::from_secs(10), || async {
        queue.counts().await.expect("counts").stale_acks == 1
    })
    .await;
    let job = queue.job("job-1").await.expect("read").expect("job kept");
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.attempts, 2, "delivered twice");
    assert_eq!(job.worker.as_deref(), Some("other"));
    let counts = queue.counts().await.expect("counts");
    assert_eq!((counts.running, counts.done), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_due_at_once_moves_in_bounded_batches() {
    // 20,000 jobs become due in the same instant: more than apalis-redis'
    // 8,000 `unpack` limit, and 20 times the move batch of 1,000.
    // (The 1,000,000-job proof is in examples/bench.rs.)
    const N: u64 = 20_000;
    let redis = RedisServer::start().expect("redis");
    let config = config(&redis, "backlog")
        .concurrency(50)
        .move_batch(1000)
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let jobs = (0..N).map(|n| NewJob {
        job: TestJob { n },
        options: PushOptions {
            delay: Duration::from_millis(300),
            ..PushOptions::default()
        },
    });
    queue.push_bulk(jobs).await.expect("push");
    assert_eq!(queue.counts().await.expect("counts").scheduled, N);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let worker = InProcessWorker::start(&queue, "drain", |_, _| async { Ok(()) });
    eventually("backlog drained", Duration::from_secs(18), || async {
        queue.counts().await.expect("counts").done == N
    })
    .await;
    let seen = worker.seen_count();
    worker.stop().await;
    assert_eq!(seen as u64, N);
    let counts = queue.counts().await.expect("counts");
    assert_eq!(
        (counts.pending, counts.scheduled, counts.running),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_starts_a_new_job_within_50ms() {
    let redis = RedisServer::start().expect("redis");
    // A poll interval far above the bound, so only the wake-up path can be fast.
    let config = config(&redis, "latency")
        .poll_interval(Duration::from_secs(2))
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let worker = InProcessWorker::start(&queue, "idle", move |job, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((job.n, Instant::now()));
            Ok(())
        }
    });
    // The scenario: the worker sits idle (blocked on its wake-up list) for a
    // minute — through many blocking-pop timeouts and polls — before the
    // first push. This sleep is the idle time under test, not a wait.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let mut latencies = Vec::new();
    for n in 0..100 {
        let pushed_at = Instant::now();
        queue
            .push(&TestJob { n }, PushOptions::default())
            .await
            .expect("push");
        let (got, started) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("job started")
            .expect("channel");
        assert_eq!(got, n);
        latencies.push(started - pushed_at);
        // Idle again between pushes, sometimes longer than a poll would hide.
        tokio::time::sleep(Duration::from_millis(if n.is_multiple_of(10) {
            300
        } else {
            20
        }))
        .await;
    }
    worker.stop().await;
    // The first push after the minute is the one a stalled worker would miss;
    // a p99 over 100 could hide that one outlier, so it is checked on its own.
    assert!(
        latencies[0] < Duration::from_millis(50),
        "first pickup after a minute idle took {:?}",
        latencies[0]
    );
    latencies.sort();
    let p99 = latencies[98];
    assert!(
        p99 < Duration::from_millis(50),
        "p99 pickup {p99:?}; all: {latencies:?}"
    );
}
