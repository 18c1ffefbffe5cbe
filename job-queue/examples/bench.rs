//! Release-mode benchmark of job-queue on a private redis-server (no AOF).
//!
//! ```text
//! cargo run --release -p job-queue --features testing --example bench
//! cargo run --release -p job-queue --features testing --example bench -- --million
//! ```
//!
//! Figures, all in one run on one Redis:
//! - `push_bulk` rate (200,000 jobs);
//! - one worker *process* (concurrency 50, no-op handler) draining 50,000
//!   queued jobs, and its peak RSS;
//! - apalis-redis 1.0.0 side by side with ours on 5,000 jobs (its backlog
//!   limit is about 8,000), push and drain, both with concurrency 50;
//! - a handler POSTing to a local HTTP stub that answers after 20 ms,
//!   concurrency 50, against a plain reqwest loop at the same concurrency;
//! - with `--million`: 1,000,000 jobs pushed before any worker starts, then
//!   drained by one worker process.
//!
//! Worker figures come from child processes (`bench worker …`), so RSS is the
//! worker's alone. Our drain time runs until Redis counts every job done
//! (acknowledged), not just handled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::TaskSink;
use apalis_core::worker::builder::WorkerBuilder;
use job_queue::testing::RedisServer;
use job_queue::{JobQueue, NewJob, QueueConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Job {
    ids: [u64; 2],
}

type Error = Box<dyn std::error::Error + Send + Sync>;

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

/// CPU time of this process so far, in ms (utime + stime from /proc).
fn cpu_ms() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10)
        })
        .unwrap_or(0)
}

/// Redis' own CPU time so far (user + sys), in ms.
fn redis_cpu_ms(redis: &RedisServer) -> u64 {
    let Ok(out) = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "info", "cpu"])
        .output()
    else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ((field("used_cpu_user:") + field("used_cpu_sys:")) * 1000.0) as u64
}

fn http_client() -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?)
}

/// POSTs one job's ids to the stub.
async fn post(client: &reqwest::Client, url: &str, job: &Job) -> Result<(), String> {
    let resp = client
        .post(url)
        .json(job)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("stub answered {}", resp.status()))
    }
}

/// Child mode: one of our workers drains `queue` until Redis counts `target`
/// jobs done; prints `elapsed_ms peak_rss_kb`. With a stub URL the handler
/// POSTs each job there.
async fn our_worker(
    url: &str,
    queue: &str,
    target: u64,
    stub: Option<String>,
) -> Result<(), Error> {
    let jobs = JobQueue::connect(config(url, queue)?).await?;
    let backend = jobs.backend::<Job>();
    let drain = backend.drain_handle();
    let client = http_client()?;
    let worker = WorkerBuilder::new(format!("bench-{queue}"))
        .backend(backend)
        .build(move |job: Job| {
            let client = client.clone();
            let stub = stub.clone();
            async move {
                if let Some(stub) = stub {
                    post(&client, &stub, &job)
                        .await
                        .map_err(job_queue::JobError::retry)?;
                }
                Ok::<(), job_queue::JobError>(())
            }
        });
    let watcher = jobs.clone();
    let start = Instant::now();
    let elapsed = Arc::new(AtomicU64::new(0));
    let elapsed2 = Arc::clone(&elapsed);
    worker
        .run_until(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let c = watcher.counts().await.map_err(std::io::Error::other)?;
                if c.done >= target {
                    elapsed2.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await?;
    drain.drained().await;
    println!(
        "{} {} {}",
        elapsed.load(Ordering::SeqCst),
        peak_rss_kb(),
        cpu_ms()
    );
    Ok(())
}

/// A concurrency limit for the apalis-redis worker (the workspace builds
/// apalis without its `limit` feature).
struct Limit<S> {
    inner: S,
    sem: tokio_util::sync::PollSemaphore,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<S: Clone> Clone for Limit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            sem: self.sem.clone(),
            permit: None,
        }
    }
}

impl<S, R> tower::Service<R> for Limit<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.permit.is_none() {
            match self.sem.poll_acquire(cx) {
                Poll::Ready(Some(p)) => self.permit = Some(p),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let permit = self.permit.take();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(permit);
            out
        })
    }
}

#[derive(Clone)]
struct LimitLayer(Arc<tokio::sync::Semaphore>);

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            sem: tokio_util::sync::PollSemaphore::new(Arc::clone(&self.0)),
            permit: None,
        }
    }
}

fn apalis_redis_config(queue: &str) -> apalis_redis::Config {
    apalis_redis::Config::default().queue(queue)
}

/// Child mode: an apalis-redis 1.0.0 worker (default config, concurrency
/// 50) handles `target` jobs; prints `elapsed_ms peak_rss_kb`.
async fn apalis_redis_worker(url: &str, queue: &str, target: u64) -> Result<(), Error> {
    let conn = apalis_redis::connect(url).await?;
    let storage =
        apalis_redis::RedisStorage::<Job>::new(conn).with_config(apalis_redis_config(queue));
    let handled = Arc::new(AtomicU64::new(0));
    let handled2 = Arc::clone(&handled);
    let start = Instant::now();
    let elapsed = Arc::new(AtomicU64::new(0));
    let elapsed2 = Arc::clone(&elapsed);
    let worker = WorkerBuilder::new(format!("apalis-redis-{queue}"))
        .backend(storage)
        .layer(LimitLayer(Arc::new(tokio::sync::Semaphore::new(50))))
        .build(
            move |_job: Job, wrk: apalis_core::worker::context::WorkerContext| {
                let handled = Arc::clone(&handled2);
                let elapsed = Arc::clone(&elapsed2);
                async move {
                    if handled.fetch_add(1, Ordering::SeqCst) + 1 == target {
                        elapsed.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                        let _ = wrk.stop();
                    }
                    Ok::<(), std::io::Error>(())
                }
            },
        );
    worker.run().await?;
    println!(
        "{} {} {}",
        elapsed.load(Ordering::SeqCst),
        peak_rss_kb(),
        cpu_ms()
    );
    Ok(())
}

async fn push_ours(queue: &JobQueue, n: u64) -> Result<Duration, Error> {
    let start = Instant::now();
    let mut next = 0u64;
    while next < n {
        let batch = (n - next).min(100_000);
        let jobs = (next..next + batch).map(|i| NewJob::from(Job { ids: [i, i + 1] }));
        let out = queue.push_bulk(jobs).await?;
        assert_eq!(out.len() as u64, batch);
        next += batch;
    }
    Ok(start.elapsed())
}

async fn push_apalis_redis(url: &str, queue: &str, n: u64) -> Result<Duration, Error> {
    let conn = apalis_redis::connect(url).await?;
    let mut storage =
        apalis_redis::RedisStorage::<Job>::new(conn).with_config(apalis_redis_config(queue));
    let jobs: Vec<Job> = (0..n).map(|i| Job { ids: [i, i + 1] }).collect();
    let start = Instant::now();
    storage.push_bulk(jobs).await?;
    Ok(start.elapsed())
}

/// Runs a child worker; returns (elapsed ms, peak RSS kB, its CPU ms).
fn child(args: &[&str]) -> Result<(u64, u64, u64), Error> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("child {args:?} failed: {}", out.status).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let ms: u64 = parts.next().ok_or("no elapsed")?.parse()?;
    let rss: u64 = parts.next().ok_or("no rss")?.parse()?;
    let cpu: u64 = parts.next().ok_or("no cpu")?.parse()?;
    Ok((ms, rss, cpu))
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m.max(1))
}

/// A minimal HTTP/1.1 keep-alive stub: every request is answered `200 ok`
/// after `delay`.
async fn serve_stub(delay: Duration) -> Result<String, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    // read one request: headers, then Content-Length bytes
                    let header_end = loop {
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break pos + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < header_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..header_end + len);
                    tokio::time::sleep(delay).await;
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(format!("http://{addr}/tasks"))
}

/// `n` POSTs with `concurrency` loops sharing one client.
async fn plain_reqwest(stub: &str, n: u64, concurrency: u64) -> Result<Duration, Error> {
    let client = http_client()?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = Arc::clone(&next);
        let stub = stub.to_owned();
        loops.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return Ok::<(), String>(());
                }
                post(&client, &stub, &Job { ids: [i, i + 1] }).await?;
            }
        }));
    }
    for l in loops {
        l.await??;
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    match args.get(1).map(String::as_str) {
        Some("worker") => {
            return our_worker(arg(2)?, arg(3)?, arg(4)?.parse()?, args.get(5).cloned()).await;
        }
        Some("apalis-redis-worker") => {
            return apalis_redis_worker(arg(2)?, arg(3)?, arg(4)?.parse()?).await;
        }
        _ => {}
    }
    let million = args.iter().any(|a| a == "--million");
    let redis = RedisServer::start()?;
    let url = redis.url();
    println!(
        "redis-server {} on {url} (no persistence); payload {}",
        redis_version(),
        serde_json::to_string(&Job { ids: [1, 2] })?
    );

    // push_bulk, ours alone
    let q = JobQueue::connect(config(&url, "push")?).await?;
    let n = 200_000;
    let (cpu0, rcpu0) = (cpu_ms(), redis_cpu_ms(&redis));
    let took = push_ours(&q, n).await?;
    let (cpu1, rcpu1) = (cpu_ms(), redis_cpu_ms(&redis));
    println!(
        "ours   push_bulk {n:>7} jobs: {:>7.3} s = {:>8.0} jobs/s  (CPU per job: client {:.1} us, redis {:.1} us)",
        took.as_secs_f64(),
        rate(n, took),
        (cpu1 - cpu0) as f64 * 1000.0 / n as f64,
        (rcpu1 - rcpu0) as f64 * 1000.0 / n as f64
    );

    // one worker process, concurrency 50, 50,000 queued
    let q = JobQueue::connect(config(&url, "drain50k")?).await?;
    push_ours(&q, 50_000).await?;
    let slowlog = std::env::var_os("BENCH_SLOWLOG").is_some();
    let cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    if slowlog {
        cli(&["config", "set", "slowlog-max-len", "3000"]);
        cli(&["config", "set", "slowlog-log-slower-than", "0"]);
        cli(&["slowlog", "reset"]);
    }
    let rcpu0 = redis_cpu_ms(&redis);
    let (m, rss, wcpu) = child(&["worker", &url, "drain50k", "50000"])?;
    let rcpu1 = redis_cpu_ms(&redis);
    if slowlog {
        cli(&["config", "set", "slowlog-log-slower-than", "10000000"]);
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(3000)
            .query_async(&mut conn)
            .await?;
        let mut by: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
        for e in entries {
            let redis::Value::Array(f) = e else { continue };
            let dur = match f.get(2) {
                Some(redis::Value::Int(d)) => *d as u64,
                _ => 0,
            };
            let Some(redis::Value::Array(argv)) = f.get(3) else {
                continue;
            };
            let text = |v: &redis::Value| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            let name = argv.first().map(text).unwrap_or_default();
            let key = if name.eq_ignore_ascii_case("evalsha") {
                format!(
                    "evalsha {} key {}",
                    &text(&argv[1])[..8],
                    argv.get(3).map(text).unwrap_or_default()
                )
            } else {
                name
            };
            let n: u64 = argv
                .get(5)
                .map(text)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let ent = by.entry(key).or_default();
            ent.0 += 1;
            ent.1 += dur;
            ent.2 += n;
        }
        for (k, (calls, us, n)) in by {
            println!("  slowlog {k}: {calls} calls, {us} us, arg5 sum {n}");
        }
    }
    println!(
        "ours   drain     {:>7} jobs: {:>7.3} s = {:>8.0} jobs/s  (1 worker process, concurrency 50, no-op; peak RSS {:.1} MB; CPU per job: worker {:.1} us, redis {:.1} us)",
        50_000,
        ms(m).as_secs_f64(),
        rate(50_000, ms(m)),
        rss as f64 / 1024.0,
        wcpu as f64 * 1000.0 / 50_000.0,
        (rcpu1 - rcpu0) as f64 * 1000.0 / 50_000.0
    );

    // side by side on 5,000 jobs
    let small = 5_000;
    let q = JobQueue::connect(config(&url, "side-ours")?).await?;
    let ours_push = push_ours(&q, small).await?;
    let (ours_ms, ours_rss, _) = child(&["worker", &url, "side-ours", &small.to_string()])?;
    let theirs_push = push_apalis_redis(&url, "side-apalis", small).await?;
    let (theirs_ms, theirs_rss, _) = child(&[
        "apalis-redis-worker",
        &url,
        "side-apalis",
        &small.to_string(),
    ])?;
    println!("side by side, {small} jobs, concurrency 50, no-op handler:");
    println!(
        "  push_bulk: ours {:>8.0} jobs/s, apalis-redis {:>8.0} jobs/s ({:.1}x)",
        rate(small, ours_push),
        rate(small, theirs_push),
        rate(small, ours_push) / rate(small, theirs_push)
    );
    println!(
        "  drain:     ours {:>8.0} jobs/s (RSS {:.1} MB), apalis-redis {:>8.0} jobs/s (RSS {:.1} MB) ({:.1}x)",
        rate(small, ms(ours_ms)),
        ours_rss as f64 / 1024.0,
        rate(small, ms(theirs_ms)),
        theirs_rss as f64 / 1024.0,
        rate(small, ms(ours_ms)) / rate(small, ms(theirs_ms))
    );

    // HTTP stub answering after 20 ms, concurrency 50
    let stub = serve_stub(Duration::from_millis(20)).await?;
    let http_n = 5_000;
    let plain = plain_reqwest(&stub, http_n, 50).await?;
    let q = JobQueue::connect(config(&url, "http")?).await?;
    push_ours(&q, http_n).await?;
    let (http_ms, http_rss, _) = child(&["worker", &url, "http", &http_n.to_string(), &stub])?;
    println!(
        "http stub (20 ms), {http_n} POSTs, concurrency 50: plain reqwest {:.0} req/s, ours {:.0} jobs/s = {:.1} % of plain (worker RSS {:.1} MB)",
        rate(http_n, plain),
        rate(http_n, ms(http_ms)),
        100.0 * rate(http_n, ms(http_ms)) / rate(http_n, plain),
        http_rss as f64 / 1024.0
    );

    if million {
        let q = JobQueue::connect(config(&url, "million")?).await?;
        let took = push_ours(&q, 1_000_000).await?;
        println!(
            "ours   backlog 1000000 jobs pushed in {:.1} s ({:.0} jobs/s); redis used_memory {:.0} MB",
            took.as_secs_f64(),
            rate(1_000_000, took),
            redis.used_memory()? as f64 / 1e6
        );
        let (m, rss, _) = child(&["worker", &url, "million", "1000000"])?;
        let c = q.counts().await?;
        println!(
            "ours   backlog 1000000 jobs drained by one worker process in {:.1} s = {:.0} jobs/s (peak RSS {:.1} MB); left: pending {} running {} dead {}",
            ms(m).as_secs_f64(),
            rate(1_000_000, ms(m)),
            rss as f64 / 1024.0,
            c.pending,
            c.running,
            c.dead
        );
    }
    Ok(())
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}
