//! `portal-sync demo`: the whole system in one process, on embedded
//! defaults, in well under a minute.
//!
//! ```text
//! samples ─► SQLite store (demo folder) ─► enqueue (the real path, every second, like cron)
//!                  ▲                              │
//!                  │ write-back                    ▼
//!            N in-process sync workers ◄── Redis (REDIS_URL, settings, or a private redis-server)
//!                  │
//!                  ▼
//!        portal simulator (in-process, patients start and complete a share of the tasks)
//! ```
//!
//! The run has four phases: seed the store ([`samples`]); enqueue and let the
//! workers submit until every valid task is on the portal; let the
//! simulator's patients finish what they started, then stop them; run pulls
//! until the store agrees with the portal. Then every task is compared with
//! the portal's copy and the run checks itself ([`summary::DemoSummary`]):
//! no duplicates on the portal, every valid task submitted, every invalid
//! one rejected with its reason, every completion written back, the queue
//! drained, the workers stopped cleanly. Exit code 0 only if all hold
//! (1 if a check failed, 3 if no Redis could be had).
//!
//! Timing (release build, the default 1,000 tasks and 2 workers, on the
//! 2-core development machine under load): about 2.2 s wall, of which
//! 0.4–0.7 s submitting (1,400–2,500 tasks/s); 10,000 tasks with 4 workers:
//! 11 s wall. Measure with
//! `cargo build --release -p enqueue-cli && target/release/portal-sync demo --json | jq '.wall_time_ms, .submit_time_ms, .tasks_per_sec'`.
//!
//! The module owns the orchestration; the parts are the real ones:
//! [`crate::enqueue_once`], [`sync_worker::Worker`], [`job_queue`] and
//! [`portal_api::sim`].

pub mod redis_server;
pub mod samples;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use job_queue::JobQueue;
use portal_api::sim::{PatientsMode, RunningSim, SimConfig, Simulator};
use sync_worker::{Worker, WorkerIdentity, WorkerOptions};
use task_model::settings::{Env, Settings};
use task_model::store::{AnyStore, StatusCounts, TaskStore};
use task_model::{LocalStatus, PortalStatus, QUEUE_NAME};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{EnqueueArgs, GlobalArgs};
use crate::enqueue::NoObserver;
use crate::exit::{CommandError, ExitStatus};
use crate::output::{Output, print_json};
use redis_server::DemoRedis;
use summary::{Check, DemoSummary, PortalCounts, QueueTotals, Rejected, StoreCounts};

/// How often the demo runs `enqueue`, as cron would every minute.
const ENQUEUE_EVERY: Duration = Duration::from_secs(1);
/// How often the demo looks at the store, the queue and the portal.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// The patients are done when nothing changed on the portal for this long
/// (they act every 50 ms while they have work).
const PATIENTS_QUIET_FOR: Duration = Duration::from_millis(500);
/// Longest the demo lets the patients go on after the last submission.
const PATIENTS_AT_MOST: Duration = Duration::from_secs(15);
/// Pull rounds before the demo gives up on the store matching the portal.
const MAX_PULL_ROUNDS: u32 = 5;
/// Jobs each in-process worker runs at once.
const WORKER_CONCURRENCY: usize = 8;
/// Tasks per package (and per pull page), the settings default.
const PACKAGE_SIZE: usize = 20;
/// Mismatched task ids listed in the summary.
const LIST_AT_MOST: usize = 10;
/// The demo's store file in the demo folder.
const STORE_FILE: &str = "demo.db";
/// The settings the demo ran with, written for `portal-sync --config … status`.
const SETTINGS_FILE: &str = "portal-sync.yaml";

/// Flags of `portal-sync demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Sample tasks to generate (a few of them invalid on purpose), at most
    /// 100,000.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub tasks: u64,

    /// In-process sync workers.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: u64,

    /// Folder for the store, the settings and a private Redis's files (kept
    /// afterwards). Default: a temporary folder, removed at the end. A demo
    /// store left there by an earlier run is replaced.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Share of the tasks the simulated patients start and complete (0 to 1).
    #[arg(long, value_name = "SHARE", default_value_t = 0.4)]
    pub complete_share: f64,

    /// Seed of the sample generator and the patients.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Give up waiting after this many seconds (the run then fails its checks).
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// After the summary, leave the workers, the simulator and Redis up until
    /// Ctrl-C (try `portal-sync --config DIR/portal-sync.yaml status`).
    #[arg(long)]
    pub keep_running: bool,

    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the demo; prints progress on stderr and the summary on stdout.
pub async fn run_demo(
    global: &GlobalArgs,
    args: &DemoArgs,
    output: Output,
) -> Result<ExitStatus, CommandError> {
    let started = Instant::now();
    if !(0.0..=1.0).contains(&args.complete_share) {
        return Err(CommandError::Usage {
            message: format!(
                "--complete-share {} is not between 0 and 1",
                args.complete_share
            ),
        });
    }
    let say = Say::new(!args.json || output.interactive);
    let folder = DemoFolder::prepare(args.dir.as_deref())?;
    say.line(&format!("demo folder: {}", folder.path.display()));

    let mut notes = Vec::new();
    let redis = match DemoRedis::provide(&global.config, &folder.path, &mut notes).await {
        Ok(redis) => redis,
        Err(e) => {
            for note in notes {
                say.line(&note);
            }
            if args.json {
                print_json(&serde_json::json!({
                    "outcome": "failed",
                    "exit_code": ExitStatus::Unreachable.code(),
                    "error": e.to_string(),
                }));
            }
            eprintln!("portal-sync: {e}");
            return Ok(ExitStatus::Unreachable);
        }
    };
    for note in notes {
        say.line(&note);
    }
    say.line(&format!("redis: {}", redis.describe()));

    // Ctrl-C ends the run early but cleanly: the workers stop, the private
    // Redis goes, the summary says it was interrupted.
    let interrupt = CancellationToken::new();
    let listener = {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        })
    };
    let result = run_on(&folder, &redis, args, output, &say, started, &interrupt).await;
    listener.abort();
    if let Some(note) = redis.finish().await {
        say.line(&note);
    }
    let mut summary = result?;
    summary.wall_time_ms = millis(started.elapsed());
    summary.outcome = if summary.passed() { "ok" } else { "failed" };
    let status = ExitStatus::done_or_partial(!summary.passed());
    summary.exit_code = status.code();
    if args.keep_running {
        // The summary was printed before waiting for Ctrl-C; only the
        // shutdown is new.
        if let Some(check) = summary.checks.last() {
            eprintln!("portal-sync demo: {}: {}", check.name, check.detail);
        }
    } else if args.json {
        print_json(&summary);
    } else {
        print!("{}", summary.human());
        if !folder.kept {
            println!("  (a temporary folder, now removed; pass --dir to keep it)");
        }
    }
    Ok(status)
}

/// Everything between "Redis is there" and the summary; stops what it
/// started before returning, also on error.
async fn run_on(
    folder: &DemoFolder,
    redis: &DemoRedis,
    args: &DemoArgs,
    output: Output,
    say: &Say,
    started: Instant,
    interrupt: &CancellationToken,
) -> Result<DemoSummary, CommandError> {
    let samples = std::sync::Arc::new(samples::generate(
        usize::try_from(args.tasks).unwrap_or(usize::MAX),
        args.seed,
    ));
    let total = samples.len() as u64;
    let valid = samples.valid() as u64;

    let patients = PatientsMode {
        // Two actions (start, complete) per completed task, fast enough to
        // keep up with the submissions.
        rate_per_sec: (total as f64 * 2.0 / 3.0).max(200.0),
        fraction: args.complete_share,
    };
    let mut sim_config = SimConfig::new(&folder.api_key);
    sim_config.seed = args.seed;
    sim_config.patients = Some(patients);
    let sim = Simulator::start(sim_config)
        .await
        .map_err(|e| CommandError::Portal {
            url: "the in-process simulator".to_owned(),
            message: e.to_string(),
        })?;
    say.line(&format!(
        "portal simulator: {} (its counts: {}/_sim/stats)",
        sim.url(),
        sim.url()
    ));

    let settings = folder.write_settings(sim.url(), redis)?;
    let store = crate::context::open_task_store(&settings).await?;
    let store_url = settings.store.url.redacted().to_string();
    let imported = store
        .import(samples::SampleReader::new(samples.clone()))
        .await
        .map_err(|e| CommandError::store(&store_url, e))?;
    if imported.inserted + imported.updated != total {
        let first = imported
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(CommandError::Usage {
            message: format!(
                "seeding the store stored {} of {total} sample tasks: {first}",
                imported.inserted + imported.updated
            ),
        });
    }
    say.line(&format!(
        "store: {} sample tasks ({} invalid on purpose) in {}",
        total,
        samples.invalid.len(),
        settings.store.url.redacted()
    ));

    let queue = crate::context::connect_queue(&settings).await?;
    let workers = Workers::start(&settings, &store, args.workers).await?;
    say.line(&format!(
        "{} workers; their /metrics, /healthz, /readyz: {}",
        workers.handles.len(),
        workers
            .addrs
            .iter()
            .map(|a| format!("http://{a}/metrics"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(first) = workers.addrs.first() {
        say.line(&format!("queue dashboard: http://{first}/"));
    }

    let bar = output.progress(Some(valid), "submitting");
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} submitted  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let run = Drive {
        store: &store,
        store_url: &store_url,
        queue: &queue,
        sim: &sim,
        settings: &settings,
        bar: &bar,
        deadline: Instant::now() + Duration::from_secs(args.timeout),
        interrupt,
        invalid: samples.invalid.len() as u64,
        enqueue_runs: 0,
        last_enqueue: None,
    };
    let driven = run.drive().await;
    bar.finish_and_clear();

    // The comparison runs over a quiet system: the workers are stopped
    // first (with --keep-running they stay, idle once the queue drained).
    let worker_count = workers.handles.len();
    let worker_urls: Vec<String> = workers
        .addrs
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    let mut running = Some(workers);
    let mut stopped = None;
    if !args.keep_running
        && let Some(w) = running.take()
    {
        stopped = Some(w.stop().await);
    }

    let mut summary = match driven {
        Ok(measures) => build_summary(&samples, &store, &store_url, &queue, &sim, measures).await,
        Err(e) => Err(e),
    };
    if let Ok(s) = &mut summary {
        s.dir = folder.path.display().to_string();
        s.store_url = store_url.clone();
        s.redis = redis.describe();
        s.redis_origin = redis.origin_name();
        s.portal_url = sim.url().to_owned();
        s.workers = worker_count;
        s.worker_urls = worker_urls;
        s.wall_time_ms = millis(started.elapsed());
    }

    if args.keep_running && summary.is_ok() {
        if let Ok(s) = &mut summary {
            s.outcome = if s.passed() { "ok" } else { "failed" };
            s.exit_code = ExitStatus::done_or_partial(!s.passed()).code();
            if args.json {
                print_json(s);
            } else {
                print!("{}", s.human());
            }
        }
        let _ = std::io::stdout().flush();
        eprintln!(
            "portal-sync demo: running until Ctrl-C; try `portal-sync --config {} status`",
            folder.path.join(SETTINGS_FILE).display()
        );
        interrupt.cancelled().await;
        eprintln!("portal-sync demo: stopping");
    }

    if let Some(w) = running.take() {
        stopped = Some(w.stop().await);
    }
    sim.shutdown().await;
    let mut summary = summary?;
    summary.checks.push(Check {
        name: "workers stopped cleanly",
        ok: matches!(stopped, Some(Ok(()))),
        detail: match stopped {
            Some(Ok(())) => "every worker finished its jobs and returned".to_owned(),
            Some(Err(why)) => why,
            None => "the workers were not stopped".to_owned(),
        },
    });
    Ok(summary)
}

/// Where the demo keeps its files.
struct DemoFolder {
    path: PathBuf,
    /// `false` for a temporary folder (removed when this is dropped).
    kept: bool,
    _temp: Option<tempfile::TempDir>,
    /// The simulator's key for this run, fresh each time.
    api_key: String,
}

impl DemoFolder {
    fn prepare(dir: Option<&Path>) -> Result<DemoFolder, CommandError> {
        let io = |what: String| move |source| CommandError::Input { what, source };
        let api_key = format!("demo-{}", ulid::Ulid::new());
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io(format!("the demo folder {}", dir.display())))?;
                let path = std::fs::canonicalize(dir)
                    .map_err(io(format!("the demo folder {}", dir.display())))?;
                for suffix in ["", "-wal", "-shm"] {
                    let file = path.join(format!("{STORE_FILE}{suffix}"));
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(CommandError::Input {
                                what: format!("the old demo store {}", file.display()),
                                source: e,
                            });
                        }
                    }
                }
                Ok(DemoFolder {
                    path,
                    kept: true,
                    _temp: None,
                    api_key,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("portal-sync-demo-")
                    .tempdir()
                    .map_err(io("a temporary demo folder".to_owned()))?;
                Ok(DemoFolder {
                    path: temp.path().to_owned(),
                    kept: false,
                    _temp: Some(temp),
                    api_key,
                })
            }
        }
    }

    /// The demo's settings, through the one loader, also written to
    /// `portal-sync.yaml` in the folder (owner-only: it holds the demo key).
    fn write_settings(
        &self,
        portal_url: &str,
        redis: &DemoRedis,
    ) -> Result<Settings, CommandError> {
        let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let store_url = format!("sqlite://{}", self.path.join(STORE_FILE).display());
        let text = format!(
            "# Written by `portal-sync demo` for this run.\n\
             portal_client:\n  url: {portal}\n  api_key: {key}\n  timeout: 10\n  task_package_size: {PACKAGE_SIZE}\n\
             redis:\n  url: {redis_url}\n  namespace: {namespace}\n\
             store:\n  url: {store}\n\
             worker:\n  concurrency: {WORKER_CONCURRENCY}\n  shutdown_grace: 10\n  backoff_base: 0.2\n  backoff_cap: 5\n  http_bind: 127.0.0.1:0\n",
            portal = quote(portal_url),
            key = quote(&self.api_key),
            redis_url = quote(&redis.url),
            namespace = quote(&redis.namespace),
            store = quote(&store_url),
        );
        let path = self.path.join(SETTINGS_FILE);
        let settings = Settings::from_yaml(&text, &path, &Env::empty()).map_err(|e| {
            CommandError::Settings {
                lines: e.to_string().lines().map(str::to_string).collect(),
            }
        })?;
        write_private_file(&path, text.as_bytes()).map_err(|source| CommandError::Input {
            what: format!("the demo settings {}", path.display()),
            source,
        })?;
        Ok(settings)
    }
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The in-process workers and how to stop them.
struct Workers {
    token: CancellationToken,
    handles: Vec<JoinHandle<Result<sync_worker::RunSummary, sync_worker::WorkerError>>>,
    addrs: Vec<SocketAddr>,
}

impl Workers {
    /// Starts `n` workers, each with its own queue connection and portal
    /// client, sharing the store. If one cannot start, those started are
    /// stopped again.
    async fn start(settings: &Settings, store: &AnyStore, n: u64) -> Result<Workers, CommandError> {
        let mut workers = Workers {
            token: CancellationToken::new(),
            handles: Vec::new(),
            addrs: Vec::new(),
        };
        for i in 1..=n {
            match build_worker(settings, store, i).await {
                Ok(worker) => {
                    workers.addrs.extend(worker.http_addr());
                    workers
                        .handles
                        .push(tokio::spawn(worker.run(workers.token.clone())));
                }
                Err(e) => {
                    let _ = workers.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// Stops every worker gracefully and waits; answers why not clean.
    async fn stop(self) -> Result<(), String> {
        self.token.cancel();
        let mut problems = Vec::new();
        for (i, handle) in self.handles.into_iter().enumerate() {
            match handle.await {
                Ok(Ok(run)) if !run.grace_exceeded => {}
                Ok(Ok(_)) => problems.push(format!("worker {} ran out of grace", i + 1)),
                Ok(Err(e)) => problems.push(format!("worker {}: {e}", i + 1)),
                Err(e) => problems.push(format!("worker {} panicked: {e}", i + 1)),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

async fn build_worker(
    settings: &Settings,
    store: &AnyStore,
    i: u64,
) -> Result<Worker, CommandError> {
    let config =
        sync_worker::settings::queue_config(settings, QUEUE_NAME, WORKER_CONCURRENCY, None)
            .map_err(|source| CommandError::Queue {
                action: "configuring a demo worker's queue",
                source,
            })?;
    let queue = JobQueue::connect(config)
        .await
        .map_err(|source| CommandError::Queue {
            action: "connecting a demo worker to the queue",
            source,
        })?;
    let portal_url = settings.portal_client.url.redacted().to_string();
    let client = portal_api::Client::new(sync_worker::settings::portal_client_config(
        &settings.portal_client,
    ))
    .map_err(|e| CommandError::Portal {
        url: portal_url.clone(),
        message: e.to_string(),
    })?;
    let probe_every = Duration::from_secs(1);
    let options = WorkerOptions {
        identity: WorkerIdentity::with_host(&format!("demo-worker-{i}")),
        http_bind: Some(settings.worker.http_bind),
        shutdown_grace: settings.worker.shutdown_grace,
        limits: sync_worker::settings::job_limits(settings, probe_every),
        auth_probe_every: probe_every,
    };
    // The first worker also serves the queue dashboard (apalis-board).
    let dashboard = (i == 1).then(|| {
        sync_worker::dashboard::dashboard_routes(&queue, settings.worker.dashboard_token.clone())
    });
    let worker = Worker::new(queue, store.clone(), client, None, options)
        .await
        .map_err(|e| CommandError::Portal {
            url: portal_url,
            message: format!("starting demo worker {i}: {e}"),
        })?;
    Ok(match dashboard {
        Some(routes) => worker.with_routes(routes),
        None => worker,
    })
}

/// Timings and counters of the driven run.
#[derive(Debug)]
struct Measures {
    enqueue_runs: u64,
    submit_time: Duration,
    timed_out: bool,
    interrupted: bool,
}

/// The phases of a run, over opened parts.
struct Drive<'a> {
    store: &'a AnyStore,
    store_url: &'a str,
    queue: &'a JobQueue,
    sim: &'a RunningSim,
    settings: &'a Settings,
    bar: &'a ProgressBar,
    deadline: Instant,
    interrupt: &'a CancellationToken,
    invalid: u64,
    enqueue_runs: u64,
    last_enqueue: Option<Instant>,
}

impl Drive<'_> {
    async fn drive(mut self) -> Result<Measures, CommandError> {
        let submit_started = Instant::now();
        let submitted = self.until_submitted().await?;
        let submit_time = submit_started.elapsed();
        let patients_done = submitted && self.until_patients_rest().await?;
        self.sim.handle().set_patients(None).ok();
        let pulled = patients_done && self.until_store_matches_portal().await?;
        let interrupted = self.interrupt.is_cancelled();
        Ok(Measures {
            enqueue_runs: self.enqueue_runs,
            submit_time,
            timed_out: !(interrupted || submitted && patients_done && pulled),
            interrupted,
        })
    }

    /// Past `--timeout`, or interrupted: time to stop waiting.
    fn timed_out(&self) -> bool {
        Instant::now() >= self.deadline || self.interrupt.is_cancelled()
    }

    /// One `enqueue` run (what cron does), every [`ENQUEUE_EVERY`]. Answers
    /// how many tasks it queued for submission, if it ran.
    async fn enqueue_if_due(&mut self) -> Result<Option<u64>, CommandError> {
        if self
            .last_enqueue
            .is_some_and(|at| at.elapsed() < ENQUEUE_EVERY)
        {
            return Ok(None);
        }
        self.enqueue_now().await.map(Some)
    }

    async fn enqueue_now(&mut self) -> Result<u64, CommandError> {
        self.last_enqueue = Some(Instant::now());
        let args = EnqueueArgs {
            lease_secs: 120,
            ..EnqueueArgs::default()
        };
        let run = match crate::enqueue_once(self.settings, &args, &NoObserver).await {
            Ok(run) => run,
            // A run still holding the lock is the previous one finishing.
            Err(CommandError::Locked { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        self.enqueue_runs += 1;
        Ok(run.kinds.get("submit").map(|k| k.tasks).unwrap_or(0))
    }

    async fn store_counts(&self) -> Result<StatusCounts, CommandError> {
        self.store
            .counts(Utc::now())
            .await
            .map_err(|e| CommandError::store(self.store_url, e))
    }

    async fn queue_busy(&self) -> Result<u64, CommandError> {
        let c = self
            .queue
            .counts()
            .await
            .map_err(|source| CommandError::Queue {
                action: "reading the queue counts",
                source,
            })?;
        Ok(c.pending + c.scheduled + c.running)
    }

    fn show(&self, counts: &StatusCounts) {
        let awaiting = status_count(counts, LocalStatus::AwaitingSubmission);
        self.bar.set_position(counts.total.saturating_sub(awaiting));
        let portal = self.sim.handle().stats().tasks_by_status;
        self.bar.set_message(format!(
            "{} complete on the portal, {} written back",
            portal.get("complete").copied().unwrap_or(0),
            status_count(counts, LocalStatus::Complete)
        ));
    }

    /// Phase 2: enqueue until every valid task is submitted, or nothing more
    /// happens (the queue is idle and an enqueue run finds nothing to submit).
    async fn until_submitted(&mut self) -> Result<bool, CommandError> {
        loop {
            let queued = self.enqueue_if_due().await?;
            let counts = self.store_counts().await?;
            self.show(&counts);
            if status_count(&counts, LocalStatus::AwaitingSubmission) <= self.invalid {
                return Ok(true);
            }
            if queued == Some(0) && self.queue_busy().await? == 0 {
                // Settled with valid tasks left over: the checks will say so.
                return Ok(true);
            }
            if self.timed_out() {
                return Ok(false);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Phase 3: the patients go on until the portal has been quiet for a
    /// while with nothing in progress (they finish what they start before
    /// starting more), at most [`PATIENTS_AT_MOST`].
    async fn until_patients_rest(&mut self) -> Result<bool, CommandError> {
        let until = Instant::now() + PATIENTS_AT_MOST;
        let mut last = self.sim.handle().stats().tasks_by_status;
        let mut quiet_since = Instant::now();
        loop {
            self.enqueue_if_due().await?;
            let counts = self.store_counts().await?;
            self.show(&counts);
            let now = self.sim.handle().stats().tasks_by_status;
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if last.get("in-progress").copied().unwrap_or(0) == 0
                && quiet_since.elapsed() >= PATIENTS_QUIET_FOR
            {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(true);
            }
            if self.timed_out() {
                return Ok(false);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Phase 4: with the patients stopped, enqueue (which queues a pull of
    /// the unacknowledged changes) and let the workers drain the queue,
    /// until a round leaves the store agreeing with an unchanged portal.
    async fn until_store_matches_portal(&mut self) -> Result<bool, CommandError> {
        self.bar.set_message("pulling the last changes");
        for _ in 0..MAX_PULL_ROUNDS {
            let before = self.sim.handle().stats().tasks_by_status;
            self.enqueue_now().await?;
            while self.queue_busy().await? > 0 {
                if self.timed_out() {
                    return Ok(false);
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
            let counts = self.store_counts().await?;
            self.show(&counts);
            let after = self.sim.handle().stats().tasks_by_status;
            let portal = |s: PortalStatus| after.get(s.as_str()).copied().unwrap_or(0);
            if before == after
                && status_count(&counts, LocalStatus::Complete) == portal(PortalStatus::Complete)
                && status_count(&counts, LocalStatus::Cancelled) == portal(PortalStatus::Cancelled)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn status_count(counts: &StatusCounts, status: LocalStatus) -> u64 {
    counts.by_status.get(&status).copied().unwrap_or(0)
}

/// Compares every sample task in the store with the portal's copy and
/// makes the checks.
async fn build_summary(
    samples: &samples::Samples,
    store: &AnyStore,
    store_url: &str,
    queue: &JobQueue,
    sim: &RunningSim,
    measures: Measures,
) -> Result<DemoSummary, CommandError> {
    let handle = sim.handle();
    let stats = handle.stats();
    let invalid: HashMap<&str, samples::Defect> = samples
        .invalid
        .iter()
        .map(|(id, d)| (id.as_str(), *d))
        .collect();

    let mut submitted = 0u64;
    let mut found_on_portal = 0u64;
    let mut completed_on_portal = 0u64;
    let mut completed_written_back = 0u64;
    let mut in_progress = 0u64;
    let mut mismatched = Vec::new();
    let mut mismatch_count = 0u64;
    let mut rejected = Vec::new();
    let mut invalid_submitted = Vec::new();

    let ids: Vec<String> = samples.ids().map(str::to_owned).collect();
    for chunk in ids.chunks(500) {
        let loaded = store
            .load(chunk)
            .await
            .map_err(|e| CommandError::store(store_url, e))?;
        for (id, item) in chunk.iter().zip(loaded) {
            let local = item.ok();
            let remote = handle.task_by_host_id(id);
            if remote.is_some() {
                found_on_portal += 1;
            }
            if let Some(r) = &remote {
                match r.status {
                    PortalStatus::Complete => completed_on_portal += 1,
                    PortalStatus::InProgress => in_progress += 1,
                    _ => {}
                }
            }
            let Some(local) = local else {
                mismatch_count += 1;
                if mismatched.len() < LIST_AT_MOST {
                    mismatched.push(format!("{id}: not readable in the store"));
                }
                continue;
            };
            if let Some(defect) = invalid.get(id.as_str()) {
                if local.status == LocalStatus::AwaitingSubmission && remote.is_none() {
                    rejected.push(Rejected {
                        task_id: id.clone(),
                        defect: defect.describe().to_owned(),
                        reason: local
                            .error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                    });
                } else {
                    invalid_submitted.push(id.clone());
                }
                continue;
            }
            let agrees = match (&local.portal, &remote) {
                (None, None) => local.status == LocalStatus::AwaitingSubmission,
                (Some(state), Some(r)) => {
                    state.code == r.code
                        && state.status == r.status
                        && local_matches(local.status, r.status)
                }
                _ => false,
            };
            if agrees && remote.is_some() {
                submitted += 1;
                if local.status == LocalStatus::Complete {
                    completed_written_back += 1;
                }
            }
            if !agrees {
                mismatch_count += 1;
                if mismatched.len() < LIST_AT_MOST {
                    mismatched.push(format!(
                        "{id}: store {} / portal {}",
                        local
                            .portal
                            .as_ref()
                            .map(|p| p.status.as_str())
                            .unwrap_or(local.status.as_str()),
                        remote
                            .as_ref()
                            .map(|r| r.status.as_str())
                            .unwrap_or("absent")
                    ));
                }
            }
        }
    }

    let counts = store
        .counts(Utc::now())
        .await
        .map_err(|e| CommandError::store(store_url, e))?;
    let q = queue.counts().await.map_err(|source| CommandError::Queue {
        action: "reading the queue counts",
        source,
    })?;
    let valid = samples.valid() as u64;
    let invalid_n = samples.invalid.len() as u64;
    let duplicates = stats.tasks_total.saturating_sub(found_on_portal);
    let submit_secs = measures.submit_time.as_secs_f64();

    let mut checks = vec![
        Check {
            name: "no duplicates on the portal",
            ok: duplicates == 0,
            detail: format!(
                "the portal holds {} tasks for {} host ids ({} resubmissions recognised as already there)",
                stats.tasks_total, found_on_portal, stats.duplicate_submissions
            ),
        },
        Check {
            name: "every valid task submitted",
            ok: submitted == valid,
            detail: format!(
                "{submitted} of {valid} valid tasks are on the portal and in the store as submitted"
            ),
        },
        Check {
            name: "every invalid task rejected with its reason",
            ok: rejected.len() as u64 == invalid_n && rejected.iter().all(|r| !r.reason.is_empty()),
            detail: if invalid_submitted.is_empty() {
                format!(
                    "{} of {invalid_n} held back, each with the error recorded",
                    rejected.len()
                )
            } else {
                format!(
                    "submitted although invalid: {}",
                    invalid_submitted.join(", ")
                )
            },
        },
        Check {
            name: "every completion written back",
            ok: completed_written_back == completed_on_portal && mismatch_count == 0,
            detail: if mismatch_count == 0 {
                format!(
                    "{completed_written_back} of {completed_on_portal} completed on the portal are complete in the store; every task's state agrees"
                )
            } else {
                format!(
                    "{mismatch_count} tasks disagree with the portal: {}",
                    mismatched.join(", ")
                )
            },
        },
        Check {
            name: "queue drained",
            ok: q.pending + q.scheduled + q.running == 0 && q.dead == 0,
            detail: format!(
                "{} pending, {} scheduled, {} running, {} dead, {} done",
                q.pending, q.scheduled, q.running, q.dead, q.done
            ),
        },
    ];
    if measures.interrupted {
        checks.push(Check {
            name: "ran to the end",
            ok: false,
            detail: "interrupted (Ctrl-C) before the run settled".to_owned(),
        });
    }
    if measures.timed_out {
        checks.push(Check {
            name: "finished in time",
            ok: false,
            detail: "the run did not settle before --timeout".to_owned(),
        });
    }

    Ok(DemoSummary {
        outcome: "ok",
        exit_code: 0,
        dir: String::new(),
        store_url: String::new(),
        redis: String::new(),
        redis_origin: "",
        portal_url: String::new(),
        workers: 0,
        worker_urls: Vec::new(),
        tasks: samples.len() as u64,
        valid,
        invalid: invalid_n,
        submitted,
        rejected,
        completed_on_portal,
        completed_written_back,
        in_progress_on_portal: in_progress,
        duplicates_on_portal: duplicates,
        mismatched,
        enqueue_runs: measures.enqueue_runs,
        wall_time_ms: 0,
        submit_time_ms: millis(measures.submit_time),
        tasks_per_sec: if submit_secs > 0.0 {
            submitted as f64 / submit_secs
        } else {
            0.0
        },
        portal: PortalCounts {
            tasks_total: stats.tasks_total,
            tasks_by_status: stats.tasks_by_status.clone(),
            packages_accepted: stats.packages_accepted,
            packages_rejected: stats.packages_rejected,
            duplicate_submissions: stats.duplicate_submissions,
            stale_acknowledgements: stats.stale_acknowledgements,
        },
        store: StoreCounts {
            total: counts.total,
            by_status: counts
                .by_status
                .iter()
                .map(|(s, n)| (s.as_str().to_owned(), *n))
                .collect::<BTreeMap<_, _>>(),
            with_error: counts.with_error,
        },
        queue: QueueTotals {
            pending: q.pending,
            scheduled: q.scheduled,
            running: q.running,
            done: q.done,
            dead: q.dead,
        },
        checks,
    })
}

/// The local status a portal status must have produced.
fn local_matches(local: LocalStatus, portal: PortalStatus) -> bool {
    match portal {
        PortalStatus::Waiting | PortalStatus::InProgress => {
            local == LocalStatus::AwaitingCompletion
        }
        PortalStatus::Complete => local == LocalStatus::Complete,
        PortalStatus::Cancelled => local == LocalStatus::Cancelled,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Progress lines on stderr (not with `--json` off a terminal). They are
/// printed before the progress bar starts and after it ends.
struct Say {
    enabled: bool,
}

impl Say {
    fn new(enabled: bool) -> Say {
        Say { enabled }
    }

    fn line(&self, text: &str) {
        if self.enabled {
            eprintln!("portal-sync demo: {text}");
        }
    }
}
