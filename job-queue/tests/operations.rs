//! Retention and Redis Cluster, against private redis-servers.

mod common;

use std::time::Duration;

use common::*;
use job_queue::testing::{RedisCluster, RedisServer};
use job_queue::{JobError, JobQueue, NewJob, PushOptions, QueueConfig, Retention, RetryPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_and_memory_returns_to_baseline() {
    let redis =
        RedisServer::start_with_args(false, vec!["--enable-debug-command".into(), "local".into()])
            .expect("redis");
    let config = config(&redis, "retention")
        .concurrency(50)
        .retention(Retention {
            done: Duration::from_secs(2),
            dead: Duration::from_secs(3),
        })
        .retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let worker = InProcessWorker::start(&queue, "retention", |job, _| async move {
        if job.n.is_multiple_of(100) {
            Err(JobError::no_retry("refused"))
        } else {
            Ok(())
        }
    });
    // Warm up (scripts loaded, worker registered), then take the baseline.
    queue
        .push(&TestJob { n: 1 }, PushOptions::default())
        .await
        .expect("push");
    eventually("warm-up done", Duration::from_secs(5), || async {
        queue.counts().await.expect("counts").done == 1
    })
    .await;
    let baseline = redis.used_memory().expect("memory");
    // 40,000 jobs through in debug mode (the benchmark runs 200,000 in release).
    const N: u64 = 40_000;
    let jobs = (0..N).map(|n| NewJob::from(TestJob { n }));
    queue.push_bulk(jobs).await.expect("push");
    let peak = redis.used_memory().expect("memory");
    eventually("all finished", Duration::from_secs(15), || async {
        let c = queue.counts().await.expect("counts");
        c.pending + c.scheduled + c.running == 0
    })
    .await;
    assert!(
        peak > baseline + 2_000_000,
        "jobs took memory: {baseline} → {peak}"
    );
    // Settles trim the indexes; a trickle of jobs keeps settles running.
    let mut polls = 0u32;
    eventually("expired", Duration::from_secs(10), || {
        polls += 1;
        let trickle = polls.is_multiple_of(50);
        let queue = queue.clone();
        async move {
            if trickle {
                queue
                    .push(&TestJob { n: 7 }, PushOptions::default())
                    .await
                    .expect("push");
            }
            let c = queue.counts().await.expect("counts");
            c.done <= 3 && c.dead == 0
        }
    })
    .await;
    worker.stop().await;
    // No job data is left: at most the few trickle jobs still within retention.
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let job_keys: Vec<String> = redis::cmd("KEYS")
        .arg("{test:retention}:job:*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(job_keys.len() <= 3, "{} job hashes left", job_keys.len());
    // Memory: what remains above the baseline is Redis' own bucket arrays of
    // the emptied index sets, which it shrinks lazily; it must be a small
    // fraction of what the jobs took.
    let after = redis.used_memory().expect("memory");
    assert!(
        after < baseline + (peak - baseline) / 10,
        "memory back near its start: baseline {baseline}, peak {peak}, after {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_flow_runs_on_a_three_node_cluster() {
    let cluster = RedisCluster::start(3).expect("cluster");
    let urls = cluster.urls();
    let config = QueueConfig::builder(urls[0].clone(), "clustered")
        .namespace("test")
        .cluster(urls)
        .retry(RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
        })
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let jobs: Vec<NewJob<TestJob>> = (0..300).map(|n| TestJob { n }.into()).collect();
    let pushed = queue.push_bulk(jobs).await.expect("push");
    assert!(pushed.iter().all(|o| o.new));
    let dup = queue
        .push(
            &TestJob { n: 0 },
            PushOptions::with_id(pushed[0].id.clone()),
        )
        .await
        .expect("push");
    assert!(!dup.new);
    let worker = InProcessWorker::start(&queue, "cluster-worker", |job, _| async move {
        if job.n == 7 {
            Err(JobError::retry("flaky"))
        } else {
            Ok(())
        }
    });
    eventually("all settled", Duration::from_secs(15), || async {
        let c = queue.counts().await.expect("counts");
        c.done == 299 && c.dead == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(queue.retry_all_dead().await.expect("redrive"), 1);
    let dead = queue.counts().await.expect("counts");
    assert_eq!((dead.pending, dead.running), (1, 0));
    assert_eq!(
        queue.queue_names().await.expect("names"),
        vec!["clustered".to_owned()]
    );
}
