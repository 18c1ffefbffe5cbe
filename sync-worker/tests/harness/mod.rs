//! One harness for the worker's process tests: a private Redis, a fresh
//! SQLite store, the portal simulator (in this process), a settings file,
//! and real `sync-worker` child processes. A test reads as a scenario:
//! start, import tasks, push jobs, start workers, wait for an outcome.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use job_queue::testing::{RedisServer, free_port};
use job_queue::{JobQueue, NewJob, PushOptions, QueueCounts};
use portal_api::sim::{RunningSim, SimConfig, SimHandle, Simulator, TaskValidator};
use serde_json::json;
use task_model::store::{AnyStore, LeaseRequest, StatusCounts, TaskStore, open_store};
use task_model::{Env, LocalStatus, LocalTask, PullPage, QUEUE_NAME, Settings, SyncJob, TaskId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const SIM_KEY: &str = "sim-key-0123456789";

/// How a scenario starts.
pub struct Options {
    pub sim: SimConfig,
    /// The key the workers present (the sim accepts [`SIM_KEY`]).
    pub worker_key: String,
    pub concurrency: usize,
    pub package_size: usize,
    pub max_attempts: u32,
    pub backoff_base: f64,
    pub backoff_cap: f64,
    pub shutdown_grace: u64,
    pub portal_timeout: u64,
    pub job_timeout: u64,
    /// `worker.rate_limit_per_second`; unset (no limit) when `None`.
    pub rate_limit_per_second: Option<f64>,
    pub dashboard_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sim: SimConfig::new(SIM_KEY),
            worker_key: SIM_KEY.to_owned(),
            concurrency: 8,
            package_size: 20,
            max_attempts: 5,
            backoff_base: 0.05,
            backoff_cap: 0.5,
            shutdown_grace: 10,
            portal_timeout: 5,
            job_timeout: 60,
            rate_limit_per_second: None,
            dashboard_token: None,
        }
    }
}

impl Options {
    pub fn validator(mut self, v: impl TaskValidator) -> Self {
        self.sim.validator = Arc::new(v);
        self
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub redis: RedisServer,
    pub sim: Option<RunningSim>,
    pub sim_addr: SocketAddr,
    pub store: AnyStore,
    pub queue: JobQueue,
    pub settings: Settings,
    pub settings_path: PathBuf,
    pub options_package: usize,
}

/// A task that passes validation on both sides.
pub fn host_task(id: &str) -> serde_json::Value {
    json!({
        "host_system_id": id,
        "display_name": format!("Task {id}"),
        "instrument": {"id": "urn:test-instrument", "version": "1.0"},
        "form": {"instrument": {"id": "urn:test-instrument", "version": "1.0"}},
        "subject": {
            "host_system_id": format!("s-{id}"),
            "display_name": format!("Subject {id}"),
            "users": [{"host_system_id": format!("u-{id}"), "display_name": "User", "email": format!("{id}@example.org")}]
        }
    })
}

pub fn task_ids(prefix: &str, n: usize) -> Vec<TaskId> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = RedisServer::start().expect("redis-server");
        let sim = Simulator::start(options.sim).await.expect("simulator");
        let sim_addr = sim.addr;
        let db = dir.path().join("store.db");
        let store_url = format!("sqlite://{}", db.display());
        let store = open_store(&store_url).await.expect("store");
        let settings_path = dir.path().join("settings.yaml");
        let yaml = format!(
            "portal_client:\n  url: {url}\n  api_key: {key}\n  timeout: {timeout}\n  task_package_size: {pkg}\n\
             redis:\n  url: {redis}\n  namespace: test\n\
             store:\n  url: {store_url}\n\
             worker:\n  concurrency: {conc}\n  job_timeout: {job_timeout}\n  shutdown_grace: {grace}\n  max_attempts: {max}\n  backoff_base: {base}\n  backoff_cap: {cap}\n",
            url = sim.url(),
            key = options.worker_key,
            timeout = options.portal_timeout,
            pkg = options.package_size,
            redis = redis.url(),
            conc = options.concurrency,
            job_timeout = options.job_timeout,
            grace = options.shutdown_grace,
            max = options.max_attempts,
            base = options.backoff_base,
            cap = options.backoff_cap,
        );
        let yaml = match &options.dashboard_token {
            Some(t) => format!("{yaml}  dashboard_token: {t}\n"),
            None => yaml,
        };
        let yaml = match options.rate_limit_per_second {
            Some(r) => format!("{yaml}  rate_limit_per_second: {r}\n"),
            None => yaml,
        };
        std::fs::File::create(&settings_path)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .expect("settings file");
        let settings = Settings::load(&settings_path, &Env::empty()).expect("settings load");
        let queue = JobQueue::connect(
            sync_worker::settings::queue_config(&settings, QUEUE_NAME, 1, None)
                .expect("queue config"),
        )
        .await
        .expect("queue");
        Harness {
            dir,
            redis,
            sim: Some(sim),
            sim_addr,
            store,
            queue,
            settings,
            settings_path,
            options_package: options.package_size,
        }
    }

    pub fn sim(&self) -> SimHandle {
        self.sim.as_ref().expect("simulator running").handle()
    }

    /// Imports tasks with these ids into the store.
    pub async fn import(&self, ids: &[TaskId]) {
        let mut ndjson = Vec::new();
        for id in ids {
            serde_json::to_writer(&mut ndjson, &host_task(id)).expect("json");
            ndjson.push(b'\n');
        }
        self.import_ndjson(ndjson).await;
    }

    pub async fn import_ndjson(&self, ndjson: Vec<u8>) {
        let report = self
            .store
            .import(std::io::Cursor::new(ndjson))
            .await
            .expect("import");
        assert!(
            report.errors.is_empty(),
            "import errors: {:?}",
            report.errors
        );
    }

    /// Leases the packages under fresh job ids and pushes them, as the
    /// enqueue command does. Answers the job ids.
    pub async fn push_packages(&self, jobs: Vec<SyncJob>) -> Vec<String> {
        let now = chrono::Utc::now();
        let until = now + chrono::Duration::minutes(15);
        let mut new = Vec::with_capacity(jobs.len());
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = ulid_like();
            if !job.task_ids.is_empty() {
                self.store
                    .lease(LeaseRequest::new(
                        job.task_ids.clone(),
                        id.clone(),
                        until,
                        now,
                    ))
                    .await
                    .expect("lease");
            }
            ids.push(id.clone());
            new.push(NewJob {
                options: PushOptions {
                    id: Some(id),
                    idempotency_key: Some(job.idempotency_key()),
                    ..PushOptions::default()
                },
                job,
            });
        }
        let outcomes = self.queue.push_bulk(new).await.expect("push");
        assert!(outcomes.iter().all(|o| o.new), "every job is new");
        ids
    }

    /// Submit jobs of `package` tasks each over `ids`.
    pub async fn push_submits(&self, ids: &[TaskId], package: usize) -> Vec<String> {
        let jobs = ids
            .chunks(package)
            .map(|c| SyncJob::submit("test-run", c.to_vec()).expect("job"))
            .collect();
        self.push_packages(jobs).await
    }

    /// Pull jobs for the first `pages` pages.
    pub async fn push_pulls(&self, pages: u64) -> Vec<String> {
        let limit = self.options_package as u32;
        let jobs = (0..pages)
            .map(|p| {
                SyncJob::pull(
                    "test-run",
                    PullPage {
                        offset: p * u64::from(limit),
                        limit,
                    },
                )
                .expect("job")
            })
            .collect();
        self.push_packages(jobs).await
    }

    pub async fn counts(&self) -> StatusCounts {
        self.store.counts(chrono::Utc::now()).await.expect("counts")
    }

    pub async fn status_count(&self, status: LocalStatus) -> u64 {
        self.counts()
            .await
            .by_status
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    pub async fn queue_counts(&self) -> QueueCounts {
        self.queue.counts().await.expect("queue counts")
    }

    pub async fn load(&self, id: &str) -> LocalTask {
        self.store
            .load(&[id.to_owned()])
            .await
            .expect("load")
            .pop()
            .expect("one")
            .expect("task")
    }

    /// Starts a `sync-worker` process on a free HTTP port.
    pub fn spawn_worker(&self) -> WorkerProcess {
        self.spawn_worker_with(&[])
    }

    pub fn spawn_worker_with(&self, extra: &[&str]) -> WorkerProcess {
        self.spawn(extra, "info", None)
    }

    /// Starts a `sync-worker` process whose log lines (at `rust_log`) go to
    /// a file instead of the test's stderr; see [`WorkerProcess::log_text`].
    pub fn spawn_worker_logged(&self, extra: &[&str], rust_log: &str) -> WorkerProcess {
        let path = self.dir.path().join(format!("worker-{}.log", ulid_like()));
        self.spawn(extra, rust_log, Some(path))
    }

    fn spawn(&self, extra: &[&str], rust_log: &str, log: Option<PathBuf>) -> WorkerProcess {
        let port = free_port().expect("port");
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sync-worker"));
        cmd.arg("--config")
            .arg(&self.settings_path)
            .arg("--http-bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log-format")
            .arg("json")
            .arg("--auth-retry-interval")
            .arg("0.2")
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn sync-worker");
        WorkerProcess { child, port, log }
    }
}

fn ulid_like() -> String {
    ulid::Ulid::new().to_string()
}

/// A running `sync-worker` child process.
pub struct WorkerProcess {
    pub child: Child,
    pub port: u16,
    /// Where its log lines go, when not to the test's stderr.
    pub log: Option<PathBuf>,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// `GET path` on the worker's HTTP server: (status, body), or `None`
    /// when nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path).await
    }

    /// Everything the process logged so far (spawned with
    /// [`Harness::spawn_worker_logged`]).
    pub fn log_text(&self) -> String {
        let path = self.log.as_ref().expect("spawned with a log file");
        String::from_utf8_lossy(&std::fs::read(path).expect("log file")).into_owned()
    }

    /// The parsed `/metrics` exposition: `(series with labels, value)`.
    pub async fn metrics(&self) -> Vec<(String, f64)> {
        let (status, body) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        parse_metrics(&body)
    }

    /// Waits until the HTTP server answers `/healthz`.
    pub async fn wait_serving(&self) {
        wait_for("the worker's /healthz", Duration::from_secs(20), || async {
            matches!(self.get("/healthz").await, Some((200, _)))
        })
        .await;
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// A minimal HTTP/1.1 GET, enough for the worker's own endpoints.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, "").await
}

/// [`http_get`] with extra header lines (each ending in CRLF).
pub async fn http_get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    http_request(port, path, headers)
        .await
        .map(|a| (a.status, a.body))
}

/// An answer of [`http_request`].
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with extra header lines (each ending in CRLF): status,
/// headers and body; `None` when nothing answers within 5 s.
pub async fn http_request(port: u16, path: &str, headers: &str) -> Option<HttpAnswer> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(HttpAnswer {
            status,
            headers,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// `name{labels} value` lines of a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (
                series.to_owned(),
                value.parse::<f64>().expect("numeric value"),
            )
        })
        .collect()
}

/// The value of one series (`name{labels}` exactly as exposed).
pub fn metric(series: &[(String, f64)], name: &str) -> f64 {
    series
        .iter()
        .find(|(s, _)| s == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no series {name}"))
}

/// Polls `cond` every 25 ms until it holds; panics after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
