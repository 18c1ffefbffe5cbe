//! Release-mode benchmark of job-queue on a private redis-server (no AOF).
//!
//! ```text
//! cargo run --release -p job-queue --features testing --example bench
//! cargo run --release -p job-queue --features testing --example bench -- --million
//! ```
//!
//! Figures: `push_bulk` rate; one worker *process* (concurrency 50, no-op
//! handler) draining 50,000 queued jobs, with its peak RSS; with `--million`,
//! a 1,000,000-job backlog pushed before any worker starts and fully drained.

use std::time::{Duration, Instant};

use apalis_core::worker::builder::WorkerBuilder;
use job_queue::testing::RedisServer;
use job_queue::{JobQueue, NewJob, QueueConfig};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Job {
    ids: [u64; 2],
}

fn config(url: &str, queue: &str) -> Result<QueueConfig, job_queue::QueueError> {
    QueueConfig::builder(url, queue)
        .namespace("bench")
        .concurrency(50)
        .push_chunk(1000)
        .build()
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Child mode: one worker drains `queue` until `target` jobs are done, then
/// prints `elapsed_ms peak_rss_kb`.
async fn worker_mode(url: &str, queue: &str, target: u64) -> Result<(), Error> {
    let jobs = JobQueue::connect(config(url, queue)?).await?;
    let backend = jobs.backend::<Job>();
    let drain = backend.drain_handle();
    let worker = WorkerBuilder::new(format!("bench-{queue}"))
        .backend(backend)
        .build(|_job: Job| async { Ok::<(), job_queue::JobError>(()) });
    let watcher = jobs.clone();
    let start = Instant::now();
    let elapsed = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let elapsed2 = std::sync::Arc::clone(&elapsed);
    worker
        .run_until(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let c = watcher.counts().await.map_err(std::io::Error::other)?;
                if c.done >= target {
                    *elapsed2.lock().map_err(|_| std::io::Error::other("lock"))? = start.elapsed();
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await?;
    drain.drained().await;
    let ms = elapsed.lock().map_err(|_| "lock")?.as_millis();
    println!("{ms} {}", peak_rss_kb());
    Ok(())
}

async fn push(queue: &JobQueue, n: u64) -> Result<Duration, Error> {
    let start = Instant::now();
    let mut left = n;
    let mut next = 0u64;
    while left > 0 {
        let batch = left.min(100_000);
        let jobs = (next..next + batch).map(|i| NewJob::from(Job { ids: [i, i + 1] }));
        let out = queue.push_bulk(jobs).await?;
        assert_eq!(out.len() as u64, batch);
        next += batch;
        left -= batch;
    }
    Ok(start.elapsed())
}

fn run_worker_process(url: &str, queue: &str, target: u64) -> Result<(u64, u64), Error> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["worker", url, queue, &target.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!("worker failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let ms: u64 = parts.next().ok_or("no elapsed")?.parse()?;
    let rss: u64 = parts.next().ok_or("no rss")?.parse()?;
    Ok((ms, rss))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let url = args.get(2).ok_or("url")?;
        let queue = args.get(3).ok_or("queue")?;
        let target: u64 = args.get(4).ok_or("target")?.parse()?;
        return worker_mode(url, queue, target).await;
    }
    let million = args.iter().any(|a| a == "--million");
    let redis = RedisServer::start()?;
    let url = redis.url();
    println!(
        "redis-server {} (no persistence), job payload {:?}",
        url,
        serde_json::to_string(&Job { ids: [1, 2] })?
    );

    // push_bulk
    let q = JobQueue::connect(config(&url, "push")?).await?;
    let n = 200_000;
    let took = push(&q, n).await?;
    println!(
        "push_bulk: {n} jobs in {:.3} s = {:.0} jobs/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    if std::env::var_os("BENCH_STATS").is_some() {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "info", "commandstats"])
            .output()?;
        println!("{}", String::from_utf8_lossy(&out.stdout));
    }
    // one worker process, concurrency 50, 50,000 queued
    let q = JobQueue::connect(config(&url, "drain50k")?).await?;
    push(&q, 50_000).await?;
    let (ms, rss) = run_worker_process(&url, "drain50k", 50_000)?;
    println!(
        "worker (1 process, concurrency 50, no-op): 50000 queued jobs in {:.3} s = {:.0} jobs/s, peak RSS {:.1} MB",
        ms as f64 / 1000.0,
        50_000.0 / (ms as f64 / 1000.0),
        rss as f64 / 1024.0
    );

    if std::env::var_os("BENCH_STATS").is_some() {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "info", "commandstats"])
            .output()?;
        println!("{}", String::from_utf8_lossy(&out.stdout));
    }
    if million {
        let q = JobQueue::connect(config(&url, "million")?).await?;
        let took = push(&q, 1_000_000).await?;
        println!(
            "backlog: 1000000 jobs pushed in {:.1} s ({:.0} jobs/s), redis used_memory {:.0} MB",
            took.as_secs_f64(),
            1_000_000.0 / took.as_secs_f64(),
            redis.used_memory()? as f64 / 1e6
        );
        let (ms, rss) = run_worker_process(&url, "million", 1_000_000)?;
        let c = q.counts().await?;
        println!(
            "backlog: 1000000 jobs drained by one worker in {:.1} s = {:.0} jobs/s, peak RSS {:.1} MB; left pending {} running {} dead {}",
            ms as f64 / 1000.0,
            1_000_000.0 / (ms as f64 / 1000.0),
            rss as f64 / 1024.0,
            c.pending,
            c.running,
            c.dead
        );
    }
    Ok(())
}
