//! A worker process for job-queue's own tests (feature `testing`): works one
//! queue and prints `started <id> <attempt>` / `finished <id>` lines, so tests
//! can SIGKILL or SIGSTOP a real process in the middle of a job.
//!
//! Usage: `job-queue-test-worker <redis-url> <namespace> <queue> <worker-name>
//! <visibility-ms> <concurrency> <handler-ms>`

use std::io::Write;
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use job_queue::{JobQueue, QueueConfig};

#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct TestJob {
    n: u64,
}

fn arg(args: &[String], i: usize, name: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("missing argument {i}: {name}"))
}

fn num(args: &[String], i: usize, name: &str) -> Result<u64, String> {
    arg(args, i, name)?
        .parse()
        .map_err(|e| format!("argument {i} ({name}): {e}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, 1, "redis url")?;
    let namespace = arg(&args, 2, "namespace")?;
    let queue = arg(&args, 3, "queue")?;
    let name = arg(&args, 4, "worker name")?;
    let visibility = Duration::from_millis(num(&args, 5, "visibility ms")?);
    let concurrency = usize::try_from(num(&args, 6, "concurrency")?)?;
    let handler_ms = num(&args, 7, "handler ms")?;
    let config = QueueConfig::builder(url, queue)
        .namespace(namespace)
        .visibility_timeout(visibility)
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(200))
        .build()?;
    let jobs = JobQueue::connect(config).await?;
    let backend = jobs.backend::<TestJob>();
    let drain = backend.drain_handle();
    let worker = WorkerBuilder::new(name).backend(backend).build(
        move |job: TestJob,
              task_id: apalis_core::task::task_id::TaskId,
              attempt: apalis_core::task::attempt::Attempt| async move {
            println!("started {task_id} {} {}", job.n, attempt.current());
            let _ = std::io::stdout().flush();
            tokio::time::sleep(Duration::from_millis(handler_ms)).await;
            println!("finished {task_id} {}", job.n);
            let _ = std::io::stdout().flush();
            Ok::<(), job_queue::JobError>(())
        },
    );
    worker
        .run_until(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            term.recv().await;
            Ok::<(), std::io::Error>(())
        })
        .await?;
    drain.drained().await;
    println!("exited");
    Ok(())
}
