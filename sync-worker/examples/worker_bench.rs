//! Throughput and scaling benchmark of the `sync-worker` binary.
//!
//! ```text
//! cargo build --release -p sync-worker --bins --examples
//! target/release/examples/worker_bench [--tasks 20000] [--scale-tasks 8000]
//! ```
//! (with `CARGO_TARGET_DIR`, the binaries are under that directory.)
//!
//! Everything is local: a private `redis-server`, the portal simulator in
//! this process (every endpoint delayed by a fixed latency), a fresh SQLite
//! store, and `sync-worker` child processes (found next to this example's
//! directory: `target/release/sync-worker`).
//!
//! 1. **Throughput**: latency 20 ms, package 20, one worker at concurrency
//!    64. Tasks/s submitted and written back (each task: its share of one
//!    POST, one acknowledgement, its store write-back), compared with a bare
//!    client loop making the same requests at the same concurrency with no
//!    queue and no store; the ideal bound; the worker's CPU seconds per 1000
//!    tasks and peak RSS.
//! 2. **Scaling**: latency 100 ms, concurrency 16 per worker: one worker,
//!    then two on the same Redis.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use job_queue::testing::{RedisServer, free_port};
use job_queue::{JobQueue, NewJob, PushOptions};
use portal_api::sim::{FaultKind, FaultRule, SimConfig, Simulator};
use portal_api::{Client, ClientConfig};
use serde_json::json;
use task_model::store::{TaskStore, open_store_with};
use task_model::{Env, HostTask, QUEUE_NAME, Settings, SyncJob};
use tokio::process::{Child, Command};

const KEY: &str = "bench-key-0123456789";
const PACKAGE: usize = 20;
/// Acknowledgements in flight per job, as the worker does.
const ACK_CONCURRENCY: usize = 4;

fn host_task(id: &str) -> serde_json::Value {
    json!({
        "host_system_id": id,
        "display_name": format!("Task {id}"),
        "instrument": {"id": "urn:bench-instrument", "version": "1.0"},
        "form": {"instrument": {"id": "urn:bench-instrument", "version": "1.0"}},
        "subject": {
            "host_system_id": format!("s-{id}"),
            "display_name": format!("Subject {id}"),
            "users": [{"host_system_id": format!("u-{id}"), "display_name": "User", "email": format!("{id}@example.org")}]
        }
    })
}

fn sim_config(latency_ms: u64) -> SimConfig {
    let mut c = SimConfig::new(KEY);
    c.faults = vec![FaultRule::new(FaultKind::Latency {
        ms: Some(latency_ms),
        min_ms: None,
        max_ms: None,
    })];
    c
}

fn worker_binary() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap_or_default();
    dir.pop(); // examples/
    dir.pop();
    dir.join("sync-worker")
}

/// `(utime + stime)` seconds and peak RSS (kB) of a process, from /proc.
fn cpu_and_peak_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime are fields 14 and 15 of the line: indexes 11, 12 here.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

struct World {
    _dir: tempfile::TempDir,
    _redis: RedisServer,
    settings_path: PathBuf,
    queue: JobQueue,
    store: task_model::store::AnyStore,
}

async fn world(sim_url: &str, concurrency: usize, namespace: &str) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start().expect("redis-server");
    let db = dir.path().join("store.db");
    let settings_path = dir.path().join("settings.yaml");
    let yaml = format!(
        "portal_client:\n  url: {sim_url}\n  api_key: {KEY}\n  timeout: 30\n  task_package_size: {PACKAGE}\n\
         redis:\n  url: {}\n  namespace: {namespace}\n\
         store:\n  url: sqlite://{}\n\
         worker:\n  concurrency: {concurrency}\n  shutdown_grace: 10\n",
        redis.url(),
        db.display()
    );
    std::fs::write(&settings_path, yaml).expect("settings");
    let settings = Settings::load(&settings_path, &Env::empty()).expect("settings");
    let store = open_store_with(settings.store.url.expose(), settings.store.pool_size)
        .await
        .expect("store");
    let queue = JobQueue::connect(
        sync_worker::settings::queue_config(&settings, QUEUE_NAME, 1, None).expect("config"),
    )
    .await
    .expect("queue");
    World {
        _dir: dir,
        _redis: redis,
        settings_path,
        queue,
        store,
    }
}

async fn import(store: &task_model::store::AnyStore, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:06}")).collect();
    let mut ndjson = Vec::new();
    for id in &ids {
        serde_json::to_writer(&mut ndjson, &host_task(id)).expect("json");
        ndjson.push(b'\n');
    }
    let report = store
        .import(std::io::Cursor::new(ndjson))
        .await
        .expect("import");
    assert_eq!(report.inserted as usize, n);
    ids
}

async fn push(queue: &JobQueue, ids: &[String]) -> usize {
    let jobs: Vec<NewJob<SyncJob>> = ids
        .chunks(PACKAGE)
        .map(|c| NewJob {
            job: SyncJob::submit("bench", c.to_vec()).expect("job"),
            options: PushOptions::default(),
        })
        .collect();
    let n = jobs.len();
    queue.push_bulk(jobs).await.expect("push");
    n
}

fn spawn_worker(settings: &Path) -> Child {
    let port = free_port().expect("port");
    Command::new(worker_binary())
        .arg("--config")
        .arg(settings)
        .arg("--http-bind")
        .arg(format!("127.0.0.1:{port}"))
        .env(
            "RUST_LOG",
            std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "spawn {}: {e} (build it: cargo build --release -p sync-worker)",
                worker_binary().display()
            )
        })
}

async fn wait_done(queue: &JobQueue, jobs: u64) {
    loop {
        let c = queue.counts().await.expect("counts");
        if c.done >= jobs {
            assert_eq!(c.dead, 0, "no job may die in the benchmark: {c:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `workers` worker processes over `n` tasks; tasks/s, and per worker
/// (cpu s, peak rss kB).
async fn run_workers(
    sim_url: &str,
    n: usize,
    concurrency: usize,
    workers: usize,
    tag: &str,
) -> (f64, Vec<(f64, u64)>) {
    let w = world(sim_url, concurrency, tag).await;
    let ids = import(&w.store, tag, n).await;
    let mut children: Vec<Child> = (0..workers)
        .map(|_| spawn_worker(&w.settings_path))
        .collect();
    // Let the workers connect before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let jobs = push(&w.queue, &ids).await as u64;
    wait_done(&w.queue, jobs).await;
    let took = start.elapsed().as_secs_f64();
    let usage: Vec<(f64, u64)> = children
        .iter()
        .map(|c| cpu_and_peak_rss(c.id().unwrap_or(0)))
        .collect();
    let done = w
        .store
        .counts(chrono::Utc::now())
        .await
        .expect("counts")
        .by_status
        .get(&task_model::LocalStatus::AwaitingCompletion)
        .copied()
        .unwrap_or(0);
    assert_eq!(done as usize, n, "every task written back");
    for c in &mut children {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    (n as f64 / took, usage)
}

/// The same requests as the worker (POST per package, then one
/// acknowledgement per task, 8 at a time), at the same concurrency, with no
/// queue and no store.
async fn bare_loop(sim_url: &str, n: usize, concurrency: usize) -> f64 {
    let client =
        Client::new(ClientConfig::new(sim_url, KEY.to_owned().into()).with_page_size(PACKAGE))
            .expect("client");
    let packages: Vec<Vec<HostTask>> = (0..n)
        .map(|i| serde_json::from_value(host_task(&format!("bare-{i:06}"))).expect("task"))
        .collect::<Vec<HostTask>>()
        .chunks(PACKAGE)
        .map(<[HostTask]>::to_vec)
        .collect();
    let client = Arc::new(client);
    let start = Instant::now();
    futures::stream::iter(packages)
        .map(|p| {
            let client = client.clone();
            async move {
                let created = client.submit_tasks(&p).await.expect("submit");
                futures::stream::iter(created)
                    .map(|t| {
                        let client = client.clone();
                        async move {
                            client
                                .acknowledge_task(&t.code, t.revision)
                                .await
                                .expect("ack")
                        }
                    })
                    .buffer_unordered(ACK_CONCURRENCY)
                    .collect::<Vec<()>>()
                    .await;
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let tasks = arg("--tasks", 20_000);
    let scale_tasks = arg("--scale-tasks", 8_000);
    // The portal code path installs rustls' provider itself; nothing to do here.

    // 1. Throughput at 20 ms.
    let sim = Simulator::start(sim_config(20)).await.expect("sim");
    let bare = bare_loop(sim.url(), tasks, 64).await;
    let (rate, usage) = run_workers(sim.url(), tasks, 64, 1, "tput").await;
    let (cpu, rss_kb) = usage[0];
    let stats = sim.handle().stats();
    sim.shutdown().await;
    // Per package: one POST, then ⌈20/8⌉ rounds of acknowledgements.
    let rounds = 1.0 + (PACKAGE as f64 / ACK_CONCURRENCY as f64).ceil();
    let ideal_post_only = 64.0 * PACKAGE as f64 / 0.020;
    let ideal_with_acks = ideal_post_only / rounds;
    println!(
        "== throughput: latency 20 ms, package {PACKAGE}, one worker, concurrency 64, SQLite, {tasks} tasks"
    );
    println!("bare client loop (same requests, no queue/store): {bare:.0} tasks/s");
    println!(
        "sync-worker:                                      {rate:.0} tasks/s  ({:.0} % of the bare loop)",
        100.0 * rate / bare
    );
    println!("ideal bound, POST only (64 × 20 / 0.020 s):      {ideal_post_only:.0} tasks/s");
    println!(
        "ideal bound with the acknowledgements ({rounds} round trips per package): {ideal_with_acks:.0} tasks/s"
    );
    println!(
        "worker CPU: {:.2} s per 1000 tasks; peak RSS {:.1} MB",
        cpu * 1000.0 / tasks as f64,
        rss_kb as f64 / 1024.0
    );
    println!(
        "simulator: {} tasks, {} duplicate submissions",
        stats.tasks_total, stats.duplicate_submissions
    );

    // 2. Scaling at 100 ms, concurrency 16 per worker.
    let sim = Simulator::start(sim_config(100)).await.expect("sim");
    let (one, _) = run_workers(sim.url(), scale_tasks, 16, 1, "one").await;
    let (two, usage2) = run_workers(sim.url(), scale_tasks, 16, 2, "two").await;
    sim.shutdown().await;
    println!("== scaling: latency 100 ms, concurrency 16 per worker, {scale_tasks} tasks");
    println!("one worker:  {one:.0} tasks/s");
    println!("two workers: {two:.0} tasks/s  ({:.2}× one)", two / one);
    for (i, (cpu, rss)) in usage2.iter().enumerate() {
        println!(
            "  worker {i}: {cpu:.2} CPU s, peak RSS {:.1} MB",
            *rss as f64 / 1024.0
        );
    }
}
