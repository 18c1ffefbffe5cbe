//! Benchmark of `portal-sync enqueue`, end to end: the release binary runs
//! as a child process against a private Redis and a store holding N tasks
//! awaiting submission (sharing 10 instruments), and is timed from start to
//! exit with its peak RSS (via `/usr/bin/time`).
//!
//! ```sh
//! cargo build --release -p enqueue-cli --bin portal-sync --example enqueue_bench
//! /var/tmp/portal-sync-target/release/examples/enqueue_bench                 # 100,000 tasks, SQLite and PostgreSQL
//! /var/tmp/portal-sync-target/release/examples/enqueue_bench --tasks 1000000 # the linear-scaling run
//! /var/tmp/portal-sync-target/release/examples/enqueue_bench --store sqlite --tasks 100000
//! /var/tmp/portal-sync-target/release/examples/enqueue_bench --dry-run      # read + validate only
//! ```
//!
//! PostgreSQL is found as the tests find it (`PORTAL_SYNC_TEST_POSTGRES`,
//! default this machine's server); each run uses a fresh database.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use job_queue::testing::RedisServer;
use job_queue::{JobQueue, QueueConfig};
use task_model::store::TaskStore;
use task_model::store::testing::TestDatabase;

/// Generates NDJSON tasks on the fly, so importing a million of them does
/// not hold a million in memory.
struct GeneratedTasks {
    next: usize,
    total: usize,
    line: Vec<u8>,
    pos: usize,
}

impl GeneratedTasks {
    fn new(total: usize) -> GeneratedTasks {
        GeneratedTasks {
            next: 0,
            total,
            line: Vec::new(),
            pos: 0,
        }
    }

    fn task(i: usize) -> String {
        let instrument = i % 10;
        serde_json::json!({
            "host_system_id": format!("bench-{i:08}"),
            "display_name": format!("Bench task {i}"),
            "instrument": {
                "id": format!("urn:bench-instrument-{instrument}"),
                "version": "1.0",
                "title": format!("Instrument {instrument}"),
                "record": (0..20).map(|q| serde_json::json!({"id": format!("q{q}"), "type": "text"})).collect::<Vec<_>>()
            },
            "form": {
                "instrument": {"id": format!("urn:bench-instrument-{instrument}"), "version": "1.0"},
                "defaultLocalization": "en",
                "pages": [{"id": "p1", "elements": (0..20).map(|q| serde_json::json!({"type": "question", "options": {"fieldId": format!("q{q}"), "text": {"en": "A question?"}}})).collect::<Vec<_>>()}]
            },
            "subject": {
                "host_system_id": format!("subject-{}", i / 2),
                "display_name": "Subject",
                "users": [{"host_system_id": format!("user-{}", i / 2), "display_name": "Parent", "email": format!("parent{}@example.org", i / 2)}]
            }
        })
        .to_string()
    }
}

impl Read for GeneratedTasks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.line.len() {
            if self.next >= self.total {
                return Ok(0);
            }
            self.line = Self::task(self.next).into_bytes();
            self.line.push(b'\n');
            self.pos = 0;
            self.next += 1;
        }
        let n = buf.len().min(self.line.len() - self.pos);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn portal_sync_binary() -> PathBuf {
    // target/release/examples/enqueue_bench → target/release/portal-sync
    let mut dir = std::env::current_exe().unwrap_or_default();
    dir.pop();
    if dir.ends_with("examples") {
        dir.pop();
    }
    dir.join("portal-sync")
}

struct Figures {
    store: &'static str,
    tasks: usize,
    import_s: f64,
    jobs: u64,
    wall_s: f64,
    peak_rss_mb: f64,
}

async fn bench_one(kind: &'static str, tasks: usize, package: usize, dry_run: bool) -> Figures {
    let redis = RedisServer::start().expect("start redis-server");
    let db = match kind {
        "sqlite" => TestDatabase::sqlite(),
        _ => TestDatabase::postgres()
            .await
            .expect("PostgreSQL opted out with PORTAL_SYNC_TEST_POSTGRES=skip"),
    };
    let store = db.open().await;
    let started = Instant::now();
    let report = store
        .import(GeneratedTasks::new(tasks))
        .await
        .expect("import");
    let import_s = started.elapsed().as_secs_f64();
    assert_eq!(
        report.inserted as usize,
        tasks,
        "{:?}",
        report.errors.first()
    );

    if std::env::var_os("BENCH_PROFILE_READ").is_some() {
        profile_read(&store).await;
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("portal-sync.yaml");
    std::fs::write(
        &config,
        format!(
            "portal_client:\n  url: http://127.0.0.1:9/api\n  api_key: bench\n  task_package_size: {package}\nredis:\n  url: {}\n  namespace: bench\nstore:\n  url: {}\n",
            redis.url(),
            db.url()
        ),
    )
    .expect("settings");

    let out = Command::new("/usr/bin/time")
        .args(["-f", "BENCH %e %M"])
        .arg(portal_sync_binary())
        .arg("--config")
        .arg(&config)
        .args(["enqueue", "--json"])
        .args(dry_run.then_some("--dry-run"))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .output()
        .expect("run /usr/bin/time portal-sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "enqueue failed: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("enqueue --json summary");
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("BENCH "))
        .expect("/usr/bin/time output");
    let mut parts = line.split_whitespace().skip(1);
    let wall_s: f64 = parts.next().and_then(|v| v.parse().ok()).expect("wall");
    let rss_kb: f64 = parts.next().and_then(|v| v.parse().ok()).expect("rss");

    let jobs = summary["kinds"]["submit"]["jobs"].as_u64().expect("jobs");
    let expected = tasks.div_ceil(package) as u64;
    assert_eq!(jobs, expected, "{summary}");
    let queue = JobQueue::connect(
        QueueConfig::builder(redis.url(), task_model::QUEUE_NAME)
            .namespace("bench")
            .build()
            .expect("queue config"),
    )
    .await
    .expect("queue");
    let pending = queue.counts().await.expect("counts").pending;
    assert_eq!(
        pending,
        if dry_run { 0 } else { expected },
        "jobs on the queue"
    );
    Figures {
        store: kind,
        tasks,
        import_s,
        jobs,
        wall_s,
        peak_rss_mb: rss_kb / 1024.0,
    }
}

/// In-process split of the read path: streaming alone, then streaming and
/// validating (set `BENCH_PROFILE_READ=1`).
async fn profile_read(store: &task_model::store::AnyStore) {
    use futures::StreamExt;
    use task_model::LocalStatus;
    use task_model::store::DueQuery;
    for validate in [false, true] {
        let started = Instant::now();
        let mut stream = store.stream_due(DueQuery::new(
            vec![LocalStatus::AwaitingSubmission],
            chrono::Utc::now(),
        ));
        let mut n = 0u64;
        let mut valid = 0u64;
        while let Some(item) = stream.next().await {
            let task = item.expect("row");
            n += 1;
            if validate && task_model::validate_task(&task.task).is_ok() {
                valid += 1;
            }
        }
        println!(
            "  read profile: {n} tasks streamed{} in {:.2} s",
            if validate {
                format!(", {valid} valid")
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut tasks = 100_000;
    let mut package = 20;
    let mut stores = vec!["sqlite", "postgres"];
    let mut dry_run = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--dry-run" {
            dry_run = true;
            continue;
        }
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--tasks" => tasks = value.parse().expect("--tasks N"),
            "--package" => package = value.parse().expect("--package N"),
            "--store" => {
                stores = match value.as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    _ => panic!("--store sqlite|postgres"),
                }
            }
            other => panic!("unknown argument {other}; see the file's doc"),
        }
    }
    assert!(
        portal_sync_binary().exists(),
        "build the release binary first: cargo build --release -p enqueue-cli --bin portal-sync"
    );
    println!("store     tasks     import_s  jobs     enqueue_wall_s  tasks/s   peak_rss_mb");
    for kind in stores {
        let f = bench_one(kind, tasks, package, dry_run).await;
        println!(
            "{:<9} {:<9} {:<9.1} {:<8} {:<15.2} {:<9.0} {:.1}",
            f.store,
            f.tasks,
            f.import_s,
            f.jobs,
            f.wall_s,
            f.tasks as f64 / f.wall_s,
            f.peak_rss_mb
        );
    }
}
