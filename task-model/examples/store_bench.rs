//! Task store benchmark (issue 2, "Performance"): for each backend, import
//! N tasks (~2 KB each) sharing 10 instruments, stream + lease all of them in
//! packages of 20, then write back N portal results. Each phase runs in its
//! own process, so the peak RSS printed for the streaming phase is that
//! phase's alone (VmHWM from /proc/self/status).
//!
//! ```text
//! cargo run --release -p task-model --example store_bench            # both backends, 100,000 tasks
//! cargo run --release -p task-model --example store_bench -- --tasks 20000 --backend sqlite
//! ```
//!
//! PostgreSQL comes from `PORTAL_SYNC_TEST_POSTGRES` (default: this
//! machine's server); a fresh database is created and dropped.

use std::io::{BufWriter, Write as _};
use std::process::Command;
use std::time::Instant;

use chrono::{Duration, Utc};
use futures::StreamExt as _;
use serde_json::json;
use task_model::store::testing::TestDatabase;
use task_model::store::{DueQuery, LeaseRequest, TaskStore, open_store};
use task_model::{LocalStatus, PortalDate, PortalStatus, PortalTask};

const INSTRUMENTS: usize = 10;
const PACKAGE: usize = 20;
/// Write-backs in flight at once, as several workers would have.
const WRITERS: usize = 4;

type Fail = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Fail> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let tasks: usize = value("--tasks").map_or(Ok(100_000), |v| v.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match (value("--phase"), value("--url")) {
        (Some(phase), Some(url)) => runtime.block_on(run_phase(&phase, &url, tasks)),
        _ => {
            let backend = value("--backend").unwrap_or_else(|| "both".into());
            runtime.block_on(run_all(&backend, tasks))
        }
    }
}

async fn run_all(backend: &str, tasks: usize) -> Result<(), Fail> {
    let mut dbs = Vec::new();
    if backend == "both" || backend == "sqlite" {
        dbs.push(("sqlite", TestDatabase::sqlite()));
    }
    if backend == "both" || backend == "postgres" {
        let db = TestDatabase::postgres()
            .await
            .ok_or("PORTAL_SYNC_TEST_POSTGRES=skip: no PostgreSQL to benchmark")?;
        dbs.push(("postgres", db));
    }
    let exe = std::env::current_exe()?;
    for (name, db) in &dbs {
        println!("== {name}: {tasks} tasks, {INSTRUMENTS} instruments, packages of {PACKAGE}");
        for phase in ["import", "stream", "stream-single", "writeback"] {
            let status = Command::new(&exe)
                .args(["--phase", phase, "--url", db.url(), "--tasks"])
                .arg(tasks.to_string())
                .status()?;
            if !status.success() {
                return Err(format!("{name} {phase} phase failed: {status}").into());
            }
        }
    }
    Ok(())
}

/// Rows per stream page: `STORE_BENCH_PAGE`, else the store's default.
fn page_size() -> usize {
    std::env::var("STORE_BENCH_PAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(task_model::store::DEFAULT_PAGE_SIZE)
}

fn peak_rss_mb() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| format!("{:.1} MB", kb / 1024.0))
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn report(phase: &str, n: usize, started: Instant, cpu_before: Option<f64>) {
    let secs = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) => format!(", {:.2} s CPU in this process", b - a),
        _ => String::new(),
    };
    println!(
        "{phase:>30}: {n} tasks in {secs:.2} s = {:.0} tasks/s, peak RSS (VmHWM) {}{cpu}",
        n as f64 / secs,
        peak_rss_mb()
    );
}

/// A realistic host task line: ~2 KB of which the instrument and form are
/// shared by every task on the same instrument.
fn task_line(i: usize) -> serde_json::Value {
    let instrument = i % INSTRUMENTS;
    let fields: Vec<serde_json::Value> = (0..12)
        .map(|q| {
            json!({"id": format!("q{q:02}"), "type": "text", "required": q % 3 == 0,
                   "description": "How often in the last two weeks have you felt this way?"})
        })
        .collect();
    let pages: Vec<serde_json::Value> = (0..3)
        .map(|p| json!({"id": format!("page{p}"), "elements": [{"type": "question", "options": {"fieldId": format!("q{:02}", p * 4)}}]}))
        .collect();
    json!({
        "host_system_id": format!("task-{i:07}"),
        "display_name": format!("Follow-up questionnaire, visit {}", i % 7),
        "instrument": {"id": format!("urn:study-instrument-{instrument}"), "version": "1.2",
                       "title": format!("Study instrument {instrument}"), "record": fields},
        "form": {"instrument": {"id": format!("urn:study-instrument-{instrument}"), "version": "1.2"},
                 "defaultLocalization": "en", "title": {"en": "Questionnaire"}, "pages": pages},
        "subject": {"host_system_id": format!("subject-{i:07}"), "display_name": format!("Participant {i}"),
                    "users": [
                        {"host_system_id": format!("user-{i:07}-a"), "display_name": "Parent A",
                         "email": format!("parent.a.{i}@example.org")},
                        {"host_system_id": format!("user-{i:07}-b"), "display_name": "Parent B",
                         "email": format!("parent.b.{i}@example.org")}]},
        "parameters": {"visit": i % 7, "arm": if i.is_multiple_of(2) { "control" } else { "treatment" },
                       "site": "Site 04", "note": "Please complete before the next clinic visit."},
    })
}

async fn run_phase(phase: &str, url: &str, tasks: usize) -> Result<(), Fail> {
    let store = open_store(url).await?;
    match phase {
        "import" => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("tasks.ndjson");
            let mut out = BufWriter::new(std::fs::File::create(&path)?);
            for i in 0..tasks {
                serde_json::to_writer(&mut out, &task_line(i))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            drop(out);
            let bytes = std::fs::metadata(&path)?.len();
            println!(
                "{:>30}: input {} bytes ({} bytes per task)",
                "import",
                bytes,
                bytes / tasks.max(1) as u64
            );
            let started = Instant::now();
            let cpu_before = cpu_seconds();
            let report_ = store.import(std::fs::File::open(&path)?).await?;
            if report_.inserted != tasks as u64 || !report_.errors.is_empty() {
                return Err(format!("import: {report_:?}").into());
            }
            report("import", tasks, started, cpu_before);
        }
        "stream-only" => {
            // Diagnostic: the stream alone, no leases.
            let started = Instant::now();
            let cpu_before = cpu_seconds();
            let later = Utc::now() + Duration::hours(2);
            let mut query = DueQuery::new(vec![LocalStatus::AwaitingSubmission], later);
            query.batch_size = page_size();
            let mut due = store.stream_due(query);
            let mut n = 0usize;
            while let Some(item) = due.next().await {
                item?;
                n += 1;
            }
            report("stream only", n, started, cpu_before);
        }
        "stream" | "stream-single" => {
            // `stream` leases a page's packages (25 of 20) in one call, as
            // the enqueue does; `stream-single` makes one call per package.
            // It runs after `stream`, at a `now` when those leases have
            // lapsed, so every task is due again.
            let single = phase == "stream-single";
            let now = if single {
                Utc::now() + Duration::minutes(31)
            } else {
                Utc::now()
            };
            let until = now + Duration::minutes(30);
            let started = Instant::now();
            let cpu_before = cpu_seconds();
            let mut query = DueQuery::new(vec![LocalStatus::AwaitingSubmission], now);
            query.batch_size = page_size();
            let page = query.batch_size;
            let mut due = store.stream_due(query);
            let mut package = Vec::with_capacity(PACKAGE);
            let mut requests: Vec<LeaseRequest> = Vec::new();
            let mut leased = 0usize;
            let mut job = 0usize;
            let mut leasing = std::time::Duration::ZERO;
            loop {
                let item = due.next().await;
                let end = item.is_none();
                if let Some(item) = item {
                    package.push(item?.task.host_system_id);
                }
                if package.len() == PACKAGE || (end && !package.is_empty()) {
                    job += 1;
                    let ids = std::mem::replace(&mut package, Vec::with_capacity(PACKAGE));
                    requests.push(LeaseRequest::new(ids, format!("job-{job}"), until, now));
                }
                let flush = if single {
                    !requests.is_empty()
                } else {
                    requests.len() * PACKAGE >= page || (end && !requests.is_empty())
                };
                if flush {
                    let call = Instant::now();
                    for got in store.lease_many(&requests).await? {
                        leased += got.len();
                    }
                    leasing += call.elapsed();
                    requests.clear();
                }
                if end {
                    break;
                }
            }
            if leased != tasks {
                return Err(format!("{phase}: leased {leased} of {tasks}").into());
            }
            report(
                if single {
                    "stream+lease (1 call/package)"
                } else {
                    "stream+lease"
                },
                leased,
                started,
                cpu_before,
            );
            println!(
                "{:>30}  of which {:.2} s waiting on lease calls",
                "",
                leasing.as_secs_f64()
            );
        }
        "writeback" => {
            let created = PortalDate::parse("2026-12-01 10:00:00")?;
            let packages: Vec<Vec<PortalTask>> = (0..tasks)
                .collect::<Vec<_>>()
                .chunks(PACKAGE)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|&i| PortalTask {
                            code: format!("P{i:07}"),
                            host_system_id: format!("task-{i:07}"),
                            subject_code: format!("S{i:07}"),
                            status: PortalStatus::Waiting,
                            date_created: Some(created),
                            date_started: None,
                            date_completed: None,
                            assessment: None,
                            revision: 1,
                            acknowledged: false,
                        })
                        .collect()
                })
                .collect();
            let store = &store;
            let started = Instant::now();
            let cpu_before = cpu_seconds();
            let applied: Vec<Result<u64, Fail>> = futures::stream::iter(packages)
                .map(|package| async move {
                    let r = store.write_back(&package).await?;
                    Ok::<u64, Fail>(r.applied)
                })
                .buffer_unordered(WRITERS)
                .collect()
                .await;
            let mut total = 0;
            for a in applied {
                total += a?;
            }
            if total != tasks as u64 {
                return Err(format!("write-back: applied {total} of {tasks}").into());
            }
            report("write-back", tasks, started, cpu_before);
        }
        other => return Err(format!("unknown phase {other:?}").into()),
    }
    Ok(())
}
