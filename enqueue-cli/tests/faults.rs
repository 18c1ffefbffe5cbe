//! Overlapping runs and Redis failing in the middle of a run.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enqueue_cli::cli::EnqueueArgs;
use enqueue_cli::enqueue::RunObserver;
use enqueue_cli::enqueue_once;
use enqueue_cli::exit::ExitStatus;
use job_queue::testing::RedisServer;
use support::{Harness, StoreKind, tasks};

/// Holds the run in its first batch until told to go on.
struct PauseInFirstBatch {
    reached: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    go_on: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl RunObserver for PauseInFirstBatch {
    fn batch_pushed(&self, _jobs: u64, _tasks: u64) {
        if let Some(tx) = self.reached.lock().expect("lock").take() {
            let _ = tx.send(());
            // Blocks this runtime worker thread only; the lock keeps being
            // renewed on the other.
            let _ = self
                .go_on
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(15));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_while_one_holds_the_lock_exits_4_at_once() {
    let h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(100)).await;
    let settings = h.settings();

    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let observer = PauseInFirstBatch {
        reached: Mutex::new(Some(reached_tx)),
        go_on: Mutex::new(go_rx),
    };
    let first =
        tokio::spawn(
            async move { enqueue_once(&settings, &EnqueueArgs::default(), &observer).await },
        );
    reached_rx.await.expect("first run reaches its first batch");

    let started = std::time::Instant::now();
    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 4, "{summary}");
    assert_eq!(summary["outcome"], "locked");
    assert!(
        summary["error"]
            .as_str()
            .is_some_and(|e| e.contains("another enqueue run holds the lock")),
        "{summary}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "exits at once");
    let plain = h.run(&["enqueue"]);
    assert_eq!(plain.code, 4);
    assert_eq!(
        plain.stderr.lines().count(),
        1,
        "one line: {}",
        plain.stderr
    );
    assert!(
        plain.stderr.contains("safe to let cron try again"),
        "{}",
        plain.stderr
    );

    go_tx.send(()).expect("let the first run go on");
    let summary = first.await.expect("join").expect("first run succeeds");
    assert_eq!(summary.kinds["submit"].tasks, 100);

    // The lock is released at the end: the next run goes ahead.
    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["kinds"]["submit"]["jobs"], 0);
}

#[tokio::test]
async fn two_runs_started_together_queue_each_task_once() {
    let h = Harness::with_package_size(StoreKind::Sqlite, 5).await;
    h.import(&tasks(3000)).await;
    let spawn = || {
        h.command()
            .args(["enqueue", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let a = support::Run::from(a.wait_with_output().expect("wait"));
    let b = support::Run::from(b.wait_with_output().expect("wait"));
    let mut codes = [a.code, b.code];
    codes.sort();
    assert!(
        codes == [0, 0] || codes == [0, 4],
        "one run works, the other finds nothing left or the lock held: {a:?} {b:?}"
    );
    let queued = h.queued().await;
    let expected: Vec<String> = (0..3000).map(|i| format!("t-{i:06}")).collect();
    assert_eq!(queued.task_ids, expected, "each task queued exactly once");
}

/// Stops Redis as soon as the first batch is pushed.
struct StopRedisAfterFirstBatch<'a> {
    redis: Mutex<&'a mut RedisServer>,
    stopped: AtomicBool,
    pushed_tasks: std::sync::atomic::AtomicU64,
}

impl RunObserver for StopRedisAfterFirstBatch<'_> {
    fn batch_pushed(&self, _jobs: u64, tasks: u64) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            self.pushed_tasks.store(tasks, Ordering::SeqCst);
            self.redis.lock().expect("lock").stop().expect("stop redis");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_mid_run_loses_nothing_and_the_next_run_finishes() {
    let mut h = Harness::with_package_size(StoreKind::Sqlite, 2).await;
    h.import(&tasks(1500)).await;
    let settings = h.settings();
    let namespace = h.namespace.clone();

    let observer = StopRedisAfterFirstBatch {
        redis: Mutex::new(&mut h.redis),
        stopped: AtomicBool::new(false),
        pushed_tasks: 0.into(),
    };
    let result = enqueue_once(&settings, &EnqueueArgs::default(), &observer).await;
    let pushed = observer.pushed_tasks.load(Ordering::SeqCst);
    let error = result.expect_err("the run fails once Redis is gone");
    assert_eq!(error.exit_status(), ExitStatus::Unreachable, "{error}");
    assert!(
        pushed > 0 && pushed < 1500,
        "Redis stopped mid-run ({pushed} pushed)"
    );
    assert_eq!(
        h.leased().await,
        pushed,
        "only the tasks of pushed jobs stay leased; the failed batch was released"
    );

    // Redis comes back (with its append-only file). The dead run's lock
    // survives until its expiry (30 s); lapse it now rather than wait.
    h.redis.start_again().expect("start redis again");
    let mut conn = redis::Client::open(h.redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = enqueue_cli::run_lock::lock_key(&namespace);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(
        ttl > 0 && ttl <= 30_000,
        "the dead run's lock lapses on its own (pttl {ttl})"
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("del");

    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        summary["kinds"]["submit"]["tasks"].as_u64(),
        Some(1500 - pushed)
    );
    let queued = h.queued().await;
    let expected: Vec<String> = (0..1500).map(|i| format!("t-{i:06}")).collect();
    assert_eq!(
        queued.task_ids, expected,
        "every task queued exactly once across both runs"
    );
}

#[tokio::test]
async fn a_lost_job_is_queued_again_after_its_lease_but_a_queued_one_never_twice() {
    let h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(40)).await;
    let (code, _) = h.run_json(&["enqueue", "--lease-secs", "1", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(h.queued().await.pending, 2);

    // Leases lapse while the jobs are still queued: the packages re-form
    // identically and their idempotency keys match, so nothing is added.
    wait_for_leases_to_lapse(&h).await;
    let (code, summary) = h.run_json(&["enqueue", "--lease-secs", "5", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["kinds"]["submit"]["jobs"], 0);
    assert_eq!(summary["kinds"]["submit"]["already_queued"], 2);
    assert_eq!(h.queued().await.pending, 2);
    assert_eq!(h.leased().await, 40, "leases handed to the queued jobs");

    // Now the queue loses its jobs (as a Redis without persistence would):
    // once the leases lapse, the next run queues the tasks again.
    let queue = h.queue().await;
    let mut conn = redis::Client::open(h.redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    assert_eq!(queue.counts().await.expect("counts").pending, 0);
    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        summary["kinds"]["submit"]["jobs"], 0,
        "still leased (5 s): nothing yet"
    );
    wait_for_leases_to_lapse(&h).await;
    let (code, summary) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["kinds"]["submit"]["jobs"], 2);
    assert_eq!(h.queued().await.task_ids.len(), 40);
}

async fn wait_for_leases_to_lapse(h: &Harness) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.leased().await > 0 {
        assert!(std::time::Instant::now() < deadline, "leases did not lapse");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
