//! Retention and Redis Cluster, against private redis-servers.

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use common::*;
use job_queue::testing::{RedisCluster, RedisServer};
use job_queue::{JobError, JobQueue, NewJob, PushOptions, QueueConfig, Retention, RetryPolicy};

/// `INFO memory` `used_memory` over the test's async connection (no blocking
/// client on the runtime's threads while the worker runs).
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

async fn stat(conn: &mut redis::aio::MultiplexedConnection, key: &str, field: &str) -> u64 {
    let v: Option<u64> = redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .expect("hget");
    v.unwrap_or(0)
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<u64>(conn)
        .await
        .expect("exists")
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_and_memory_returns_to_baseline() {
    const N: u64 = 200_000;
    const DEAD: u64 = N / 100;
    let retention = Retention {
        done: Duration::from_secs(2),
        dead: Duration::from_secs(3),
    };
    let redis = RedisServer::start_with_args(false, vec!["--latency-tracking".into(), "no".into()])
        .expect("redis");
    // A wide worker: 100 at once and 400 leased ahead, so fetches and settles
    // go in batches of hundreds. Heartbeats (and so idle trims) every 200 ms.
    let config = config(&redis, "retention")
        .concurrency(100)
        .prefetch(400)
        .heartbeat_interval(Duration::from_millis(200))
        .retention(retention)
        .retry(single_attempt())
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
    let mut conn = redis_conn(&redis).await;
    let stats = "{test:retention}:stats";
    let done_key = "{test:retention}:done";
    let dead_key = "{test:retention}:dead";
    // Warm up (scripts loaded, worker registered), then take the baseline.
    queue
        .push(&TestJob { n: N + 1 }, PushOptions::default())
        .await
        .expect("push");
    eventually("warm-up done", Duration::from_secs(5), || async {
        queue.counts().await.expect("counts").done == 1
    })
    .await;
    let baseline = used_memory(&mut conn).await;

    // 200,000 jobs through the real queue: pushed in bulk while the worker
    // runs, each fetched, leased and settled (1 in 100 refused: dead).
    let started = Instant::now();
    let jobs = (0..N).map(|n| NewJob::from(TestJob { n }));
    let pushed = queue.push_bulk(jobs).await.expect("push");
    assert!(pushed.iter().all(|o| o.new));
    drop(pushed);
    let pushed_in = started.elapsed();
    let peak = Cell::new(used_memory(&mut conn).await);
    let settled = Cell::new((0, 0));
    // A guard against a hang, not a throughput claim (that is the benchmark's).
    eventually("all 200,000 settled", Duration::from_secs(60), || {
        let (mut conn, peak, settled) = (conn.clone(), &peak, &settled);
        async move {
            peak.set(peak.get().max(used_memory(&mut conn).await));
            let s = (
                stat(&mut conn, stats, "completed").await,
                stat(&mut conn, stats, "died").await,
            );
            settled.set(s);
            s.0 + s.1 > N // the N and the warm-up job
        }
    })
    .await;
    let settled_in = started.elapsed();
    let peak = peak.get();
    assert_eq!(settled.get(), (N + 1 - DEAD, DEAD), "completed, died");
    let c = queue.counts().await.expect("counts");
    assert_eq!((c.pending, c.scheduled, c.running), (0, 0, 0));
    assert_eq!(worker.seen_count(), usize::try_from(N + 1).expect("N"));
    assert!(
        worker
            .seen
            .lock()
            .expect("seen")
            .values()
            .all(|v| v.len() == 1),
        "each job delivered once"
    );
    // 200,000 job hashes and their index entries: tens of megabytes.
    assert!(
        peak > baseline + N * 100,
        "jobs took memory: {baseline} → {peak}"
    );

    // Expiry with no further traffic: the job hashes expire by TTL, and the
    // worker's heartbeat trims the done and dead indexes (no settle runs now).
    // Emptied, the sorted sets are deleted, hash tables and all.
    eventually(
        "indexes trimmed and job hashes expired",
        retention.dead + Duration::from_secs(10),
        || {
            let (queue, mut conn) = (&queue, conn.clone());
            async move {
                let c = queue.counts().await.expect("counts");
                let keys: u64 = redis::cmd("DBSIZE")
                    .query_async(&mut conn)
                    .await
                    .expect("dbsize");
                c.done == 0
                    && c.dead == 0
                    && !exists(&mut conn, done_key).await
                    && !exists(&mut conn, dead_key).await
                    && keys < 20
            }
        },
    )
    .await;
    let expired_in = started.elapsed();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(
        keys.iter()
            .all(|k| !k.contains(":job:") && !k.contains(":idem:")),
        "no job data left: {keys:?}"
    );
    assert_eq!(
        stat(&mut conn, stats, "completed").await + stat(&mut conn, stats, "died").await,
        N + 1,
        "no settles while idle"
    );

    // Memory back near the baseline: within 1 % of what the load took (the
    // 200,000 job hashes, or either index left untrimmed, would be far more).
    // Expired hashes are freed by Redis' active expiry, emptied keyspace
    // tables shrink and client buffers are resized in its cron: give that a
    // moment. (The server runs without latency tracking: the per-command
    // histograms it allocates on a command's first use are Redis' own
    // instrumentation, tens of kilobytes each, not queue data.)
    let bound = baseline + (peak - baseline) / 100;
    let after = Cell::new(u64::MAX);
    eventually("memory back near baseline", Duration::from_secs(10), || {
        let (mut conn, after) = (conn.clone(), &after);
        async move {
            after.set(used_memory(&mut conn).await);
            after.get() < bound
        }
    })
    .await;
    eprintln!(
        "retention: {N} pushed by {pushed_in:?}, settled by {settled_in:?}, \
         expired and trimmed by {expired_in:?}, memory back by {:?}; \
         used_memory baseline {baseline}, peak {peak}, after {} (bound {bound})",
        started.elapsed(),
        after.get()
    );
    worker.stop().await;
}

async fn zcard(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(conn)
        .await
        .expect("zcard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_queue_trims_its_finished_jobs_on_the_heartbeat() {
    let redis = RedisServer::start().expect("redis");
    let retention = Retention {
        done: Duration::from_secs(1),
        dead: Duration::from_secs(3),
    };
    let config = config(&redis, "idle")
        .heartbeat_interval(Duration::from_millis(100))
        .retention(retention)
        .retry(single_attempt())
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    let mut conn = redis_conn(&redis).await;
    let (done_key, dead_key, stats) = ("{test:idle}:done", "{test:idle}:dead", "{test:idle}:stats");
    let jobs: Vec<NewJob<TestJob>> = (0..50).map(|n| TestJob { n }.into()).collect();
    queue.push_bulk(jobs).await.expect("push");
    let worker = InProcessWorker::start(&queue, "first", |job, _| async move {
        if job.n % 5 == 0 {
            Err(JobError::no_retry("refused"))
        } else {
            Ok(())
        }
    });
    until_settled(&queue, 40, 10, Duration::from_secs(10)).await;
    worker.stop().await;
    let pushed = stat(&mut conn, stats, "pushed").await;
    assert_eq!(pushed, 50);

    // No worker and no traffic: nothing trims the indexes, but counts() only
    // counts what is within retention, so it does not over-report.
    eventually("done out of retention", Duration::from_secs(5), || async {
        queue.counts().await.expect("counts").done == 0
    })
    .await;
    assert_eq!(zcard(&mut conn, done_key).await, 40, "untrimmed: no worker");
    assert_eq!(queue.counts().await.expect("counts").dead, 10);

    // An idle worker (nothing is pushed) trims on its heartbeat: the done
    // index first, the dead one once its longer retention passes; emptied,
    // both keys are gone, and the job hashes have expired with them.
    let idle = InProcessWorker::start(&queue, "idle", |_, _| async { Ok(()) });
    eventually("done index trimmed", Duration::from_secs(5), || {
        let mut conn = conn.clone();
        async move { !exists(&mut conn, done_key).await }
    })
    .await;
    assert_eq!(zcard(&mut conn, dead_key).await, 10, "dead kept longer");
    eventually(
        "dead index trimmed, job hashes gone",
        retention.dead + Duration::from_secs(5),
        || {
            let mut conn = conn.clone();
            async move {
                let jobs: Vec<String> = redis::cmd("KEYS")
                    .arg("{test:idle}:job:*")
                    .query_async(&mut conn)
                    .await
                    .expect("keys");
                !exists(&mut conn, dead_key).await && jobs.is_empty()
            }
        },
    )
    .await;
    let c = queue.counts().await.expect("counts");
    assert_eq!((c.done, c.dead, c.pending, c.running), (0, 0, 0, 0));
    assert_eq!(c.workers, 1, "the idle worker is live");
    assert_eq!(
        stat(&mut conn, stats, "pushed").await,
        pushed,
        "nothing pushed"
    );
    assert_eq!(
        stat(&mut conn, stats, "completed").await + stat(&mut conn, stats, "died").await,
        50,
        "no settles while idle"
    );
    assert_eq!(idle.seen_count(), 0);
    idle.stop().await;
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
    until_settled(&queue, 299, 1, Duration::from_secs(15)).await;
    worker.stop().await;
    assert_eq!(queue.retry_all_dead().await.expect("redrive"), 1);
    let dead = queue.counts().await.expect("counts");
    assert_eq!((dead.pending, dead.running), (1, 0));
    assert_eq!(
        queue.queue_names().await.expect("names"),
        vec!["clustered".to_owned()]
    );
}
