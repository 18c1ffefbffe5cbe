//! Retries, dead letters and deduplication against a private redis-server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use job_queue::testing::RedisServer;
use job_queue::{JobError, JobQueue, JobState, PushOptions, RetryPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_policy_and_the_handler() {
    let redis = RedisServer::start().expect("redis");
    let policy = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(250),
    };
    let config = config(&redis, "retry")
        .retry(policy)
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    // 1: always fails → 4 attempts then dead; 2: refused for good → dead after 1;
    // 3: "retry after 700 ms" once, then succeeds; 4: per-job max_attempts 2.
    for (n, max) in [(1, None), (2, None), (3, None), (4, Some(2))] {
        let options = PushOptions {
            id: Some(format!("job-{n}")),
            max_attempts: max,
            ..PushOptions::default()
        };
        queue.push(&TestJob { n }, options).await.expect("push");
    }
    let worker = InProcessWorker::start(&queue, "retrier", |job, attempt| async move {
        match (job.n, attempt) {
            (2, _) => Err(JobError::no_retry("portal rejected the package for good")),
            (3, 1) => Err(JobError::retry_after(
                "429 Too Many Requests",
                Duration::from_millis(700),
            )),
            (3, _) => Ok(()),
            (_, a) => Err(JobError::retry(format!("attempt {a} failed"))),
        }
    });
    eventually("three dead, one done", Duration::from_secs(10), || async {
        let c = queue.counts().await.expect("counts");
        c.dead == 3 && c.done == 1
    })
    .await;
    let seen = worker.seen.lock().expect("seen").clone();
    worker.stop().await;

    assert_eq!(seen[&1].len(), 4, "max_attempts honoured exactly");
    for (i, pair) in seen[&1].windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        // full jitter within min(cap, base·2^i), plus the scheduler's slack
        let ceiling = policy.backoff_ceiling(u32::try_from(i).expect("small") + 1);
        assert!(
            gap <= ceiling + Duration::from_millis(150),
            "gap {i}: {gap:?} > {ceiling:?}"
        );
    }
    assert_eq!(seen[&2].len(), 1, "no-retry goes dead at once");
    assert_eq!(seen[&3].len(), 2);
    let waited = seen[&3][1] - seen[&3][0];
    assert!(
        waited >= Duration::from_millis(690),
        "retry-after honoured: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "retry-after not overshot: {waited:?}"
    );
    assert_eq!(seen[&4].len(), 2, "per-job max_attempts");

    let one = queue.job("job-1").await.expect("read").expect("kept");
    assert_eq!((one.state, one.attempts), (JobState::Dead, 4));
    assert_eq!(one.last_error.as_deref(), Some("attempt 4 failed"));
    let two = queue.job("job-2").await.expect("read").expect("kept");
    assert_eq!((two.state, two.attempts), (JobState::Dead, 1));
    assert_eq!(
        two.last_error.as_deref(),
        Some("portal rejected the package for good")
    );
    let three = queue.job("job-3").await.expect("read").expect("kept");
    assert_eq!((three.state, three.attempts), (JobState::Done, 2));
    assert_eq!(three.last_error.as_deref(), Some("429 Too Many Requests"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_redriven_and_purged() {
    let redis = RedisServer::start().expect("redis");
    let config = config(&redis, "dead")
        .retry(single_attempt())
        .build()
        .expect("config");
    let queue = JobQueue::connect(config).await.expect("connect");
    for n in 0..5 {
        queue
            .push(&TestJob { n }, PushOptions::with_id(format!("d{n}")))
            .await
            .expect("push");
    }
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fail2 = Arc::clone(&fail);
    let worker = InProcessWorker::start(&queue, "dead-worker", move |_, _| {
        let fail = Arc::clone(&fail2);
        async move {
            if fail.load(std::sync::atomic::Ordering::SeqCst) {
                Err(JobError::retry("portal down"))
            } else {
                Ok(())
            }
        }
    });
    eventually("5 dead", Duration::from_secs(10), || async {
        queue.counts().await.expect("counts").dead == 5
    })
    .await;
    let dead = queue.dead_letters(0, 10).await.expect("list");
    assert_eq!(dead.len(), 5);
    for job in &dead {
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.attempts, 1);
        assert_eq!(job.last_error.as_deref(), Some("portal down"));
        assert!(job.finished_ms.is_some());
        let payload: TestJob = job.decode("dead").expect("payload kept");
        assert_eq!(format!("d{}", payload.n), job.id);
    }
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let redriven = queue
        .retry_dead(&["d0".to_owned(), "d1".to_owned(), "nope".to_owned()])
        .await
        .expect("retry");
    assert_eq!(redriven, 2);
    until_settled(&queue, 2, 3, Duration::from_secs(10)).await;
    assert_eq!(
        queue.purge_dead(&["d2".to_owned()]).await.expect("purge"),
        1
    );
    assert!(
        queue.job("d2").await.expect("read").is_none(),
        "purged data gone"
    );
    assert_eq!(queue.retry_all_dead().await.expect("retry all"), 2);
    until_settled(&queue, 4, 0, Duration::from_secs(10)).await;
    worker.stop().await;
    assert_eq!(queue.purge_all_dead().await.expect("purge all"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_pushes_are_stored_once() {
    let redis = RedisServer::start().expect("redis");
    let queue = queue(&redis, "dedup").await;
    // 20 producers race to push the same idempotency key.
    let mut racers = Vec::new();
    for n in 0..20 {
        let queue = queue.clone();
        racers.push(tokio::spawn(async move {
            queue
                .push(
                    &TestJob { n },
                    PushOptions::with_idempotency_key("submit:pkg-7"),
                )
                .await
                .expect("push")
        }));
    }
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.expect("join"));
    }
    let winners: Vec<_> = outcomes.iter().filter(|o| o.new).collect();
    assert_eq!(winners.len(), 1, "exactly one stored: {outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o.id == winners[0].id),
        "duplicates name the holder"
    );
    // Same explicit id twice, also within one bulk.
    let bulk = queue
        .push_bulk(vec![
            job_queue::NewJob {
                job: TestJob { n: 100 },
                options: PushOptions::with_id("fixed"),
            },
            job_queue::NewJob {
                job: TestJob { n: 101 },
                options: PushOptions::with_id("fixed"),
            },
        ])
        .await
        .expect("bulk");
    assert_eq!(
        bulk.iter().map(|o| o.new).collect::<Vec<_>>(),
        vec![true, false]
    );
    assert_eq!(queue.counts().await.expect("counts").pending, 2);

    // While running it is still a duplicate; once done, the key is free again.
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let gate = Arc::new(tokio::sync::Notify::new());
    let gate2 = Arc::clone(&gate);
    let worker = InProcessWorker::start(&queue, "dedup-worker", move |job, _| {
        let started = started_tx.clone();
        let gate = Arc::clone(&gate2);
        async move {
            let _ = started.send(job.n);
            gate.notified().await;
            Ok(())
        }
    });
    let _ = started_rx.recv().await;
    let _ = started_rx.recv().await;
    let again = queue
        .push(
            &TestJob { n: 5 },
            PushOptions::with_idempotency_key("submit:pkg-7"),
        )
        .await
        .expect("push");
    assert!(!again.new, "running job still holds its key");
    gate.notify_waiters();
    gate.notify_one();
    eventually("both done", Duration::from_secs(10), || async {
        let c = queue.counts().await.expect("counts");
        if c.running > 0 {
            gate.notify_waiters();
        }
        c.done == 2
    })
    .await;
    let fresh = queue
        .push(
            &TestJob { n: 6 },
            PushOptions::with_idempotency_key("submit:pkg-7"),
        )
        .await
        .expect("push");
    assert!(fresh.new, "key free after completion");
    gate.notify_waiters();
    eventually("third done", Duration::from_secs(10), || async {
        let c = queue.counts().await.expect("counts");
        if c.running > 0 {
            gate.notify_waiters();
        }
        c.done == 3
    })
    .await;
    worker.stop().await;
}
