//! Shared scenario pieces for job-queue's tests: a private Redis, queue
//! configs, in-process workers and child worker processes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::worker::builder::WorkerBuilder;
use job_queue::testing::RedisServer;
use job_queue::{DrainHandle, JobError, JobQueue, QueueConfig, QueueConfigBuilder, RetryPolicy};
use tokio::sync::mpsc;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TestJob {
    pub n: u64,
}

pub fn config(redis: &RedisServer, queue: &str) -> QueueConfigBuilder {
    QueueConfig::builder(redis.url(), queue).namespace("test")
}

/// One delivery, no retry: a failure is dead at once.
pub fn single_attempt() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    }
}

/// A plain connection to the test's Redis, for reading keys directly.
pub async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn")
}

pub async fn queue(redis: &RedisServer, queue_name: &str) -> JobQueue {
    JobQueue::connect(config(redis, queue_name).build().expect("config"))
        .await
        .expect("connect")
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `queue` counts `done` completed and `dead` dead jobs.
pub async fn until_settled(queue: &JobQueue, done: u64, dead: u64, timeout: Duration) {
    let what = format!("{done} done, {dead} dead");
    eventually(&what, timeout, || async {
        let c = queue.counts().await.expect("counts");
        c.done == done && c.dead == dead
    })
    .await;
}

/// What an in-process test handler saw: job number → attempts seen (with times).
pub type Seen = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

/// Runs an in-process worker until `stop` is sent; its handler records each
/// delivery and then runs `behaviour(job, attempt)`.
pub struct InProcessWorker {
    pub seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
    pub drain: DrainHandle,
}

impl InProcessWorker {
    pub fn start<F, Fut>(queue: &JobQueue, name: &str, behaviour: F) -> Self
    where
        F: Fn(TestJob, usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let seen: Seen = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let backend = queue.backend::<TestJob>();
        let drain = backend.drain_handle();
        let seen2 = Arc::clone(&seen);
        let worker = WorkerBuilder::new(name).backend(backend).build(
            move |job: TestJob, attempt: apalis_core::task::attempt::Attempt| {
                let seen = Arc::clone(&seen2);
                let behaviour = behaviour.clone();
                async move {
                    seen.lock()
                        .expect("seen lock")
                        .entry(job.n)
                        .or_default()
                        .push(Instant::now());
                    behaviour(job, attempt.current()).await
                }
            },
        );
        let handle = tokio::spawn(async move {
            let result = worker
                .run_until(async move {
                    let _ = rx.await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            if let Err(e) = result {
                panic!("worker failed: {e}");
            }
        });
        Self {
            seen,
            stop: Some(tx),
            handle,
            drain,
        }
    }

    /// Stops the worker, waits for it and for its backend's drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.handle)
            .await
            .expect("worker stops within 15 s")
            .expect("worker task");
        tokio::time::timeout(Duration::from_secs(15), self.drain.drained())
            .await
            .expect("drained within 15 s");
    }

    /// Drops the worker mid-flight (as a shutdown whose grace ran out
    /// would), then waits for the backend's drain.
    pub async fn abort(self) {
        self.handle.abort();
        let _ = self.handle.await;
        tokio::time::timeout(Duration::from_secs(15), self.drain.drained())
            .await
            .expect("drained within 15 s");
    }

    pub fn seen_count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }
}

/// A `job-queue-test-worker` child process and the lines it prints.
pub struct ChildWorker {
    pub child: Child,
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl ChildWorker {
    pub fn spawn(
        redis: &RedisServer,
        queue: &str,
        name: &str,
        visibility_ms: u64,
        concurrency: usize,
        handler_ms: u64,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_job-queue-test-worker"))
            .args([
                redis.url(),
                "test".to_owned(),
                queue.to_owned(),
                name.to_owned(),
                visibility_ms.to_string(),
                concurrency.to_string(),
                handler_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines: rx }
    }

    /// Waits for a printed line starting with `prefix`.
    pub async fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line starting {prefix:?} within {timeout:?}"))
                .unwrap_or_else(|| panic!("worker exited before printing {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig}");
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
