//! One harness for the `portal-sync` binary tests: a private `redis-server`,
//! a fresh store (SQLite file or PostgreSQL database), a settings file
//! pointing at both, and a way to run the real binary against them.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use job_queue::testing::RedisServer;
use job_queue::{JobQueue, QueueConfig};
use serde_json::{Value, json};
use task_model::store::testing::TestDatabase;
use task_model::store::{AnyStore, TaskStore};

pub const BIN: &str = env!("CARGO_BIN_EXE_portal-sync");

/// Which store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub redis: RedisServer,
    pub db: TestDatabase,
    pub store: AnyStore,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub namespace: String,
    pub package_size: usize,
}

impl Harness {
    pub async fn new(kind: StoreKind) -> Harness {
        Harness::with_package_size(kind, 20).await
    }

    pub async fn with_package_size(kind: StoreKind, package_size: usize) -> Harness {
        let redis = RedisServer::start_with_aof().expect("start a private redis-server");
        let db = match kind {
            StoreKind::Sqlite => TestDatabase::sqlite(),
            StoreKind::Postgres => TestDatabase::postgres()
                .await
                .expect("PostgreSQL tests opted out with PORTAL_SYNC_TEST_POSTGRES=skip"),
        };
        let store = db.open().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("portal-sync.yaml");
        let namespace = "ps-test".to_string();
        let h = Harness {
            redis,
            db,
            store,
            dir,
            config,
            namespace,
            package_size,
        };
        h.write_settings("http://127.0.0.1:9/api");
        h
    }

    /// Writes the settings file, with the portal at `portal_url`.
    pub fn write_settings(&self, portal_url: &str) {
        let yaml = format!(
            "portal_client:\n  url: {portal_url}\n  api_key: test-key-not-secret-enough\n  timeout: 5\n  task_package_size: {}\nredis:\n  url: {}\n  namespace: {}\nstore:\n  url: {}\nworker:\n  max_attempts: {WORKER_MAX_ATTEMPTS}\n",
            self.package_size,
            self.redis.url(),
            self.namespace,
            self.db.url()
        );
        std::fs::write(&self.config, yaml).expect("write settings");
    }

    /// The binary with `--config` set and a clean environment for our
    /// variables.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config);
        for (k, _) in std::env::vars() {
            if k.starts_with("PORTAL_SYNC_") && k != "PORTAL_SYNC_TEST_POSTGRES" {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("RUST_LOG");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command().args(args).output().expect("run portal-sync");
        Run::from(output)
    }

    /// Runs and parses stdout as one JSON object.
    pub fn run_json(&self, args: &[&str]) -> (i32, Value) {
        let run = self.run(args);
        let value = run.json();
        (run.code, value)
    }

    pub async fn queue(&self) -> JobQueue {
        let config = QueueConfig::builder(self.redis.url(), task_model::QUEUE_NAME)
            .namespace(&self.namespace)
            .build()
            .expect("queue config");
        JobQueue::connect(config).await.expect("connect to queue")
    }

    /// Imports `tasks` (JSON values) straight into the store.
    pub async fn import(&self, tasks: &[Value]) {
        let mut ndjson = String::new();
        for t in tasks {
            ndjson.push_str(&t.to_string());
            ndjson.push('\n');
        }
        let report = self
            .store
            .import(std::io::Cursor::new(ndjson.into_bytes()))
            .await
            .expect("import");
        assert!(
            report.errors.is_empty(),
            "import errors: {:?}",
            report.errors
        );
    }

    /// The number of pending jobs on the queue, by kind, and all task ids in
    /// them (sorted).
    pub async fn queued(&self) -> Queued {
        let queue = self.queue().await;
        let counts = queue.counts().await.expect("counts");
        let mut q = Queued {
            pending: counts.pending,
            ..Queued::default()
        };
        let mut conn = redis::Client::open(self.redis.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keys = queue.config().keys().clone();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.pending())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("lrange");
        for id in ids {
            let info = queue.job(&id).await.expect("job").expect("job exists");
            q.max_attempts.push(info.max_attempts);
            let job: task_model::SyncJob = info.decode(task_model::QUEUE_NAME).expect("decode");
            match job.kind {
                task_model::JobKind::Submit => q.submit_jobs += 1,
                task_model::JobKind::Refresh => q.refresh_jobs += 1,
                task_model::JobKind::Pull => q.pull_jobs += 1,
            }
            q.max_package = q.max_package.max(job.task_ids.len());
            q.task_ids.extend(job.task_ids);
        }
        q.task_ids.sort();
        q
    }
}

/// `worker.max_attempts` in the test settings (not the default, so a job
/// pushed with the default policy shows).
pub const WORKER_MAX_ATTEMPTS: u32 = 7;

#[derive(Debug, Default)]
pub struct Queued {
    /// Deliveries allowed, per queued job.
    pub max_attempts: Vec<u32>,
    pub pending: u64,
    pub submit_jobs: u64,
    pub refresh_jobs: u64,
    pub pull_jobs: u64,
    pub max_package: usize,
    pub task_ids: Vec<String>,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A valid host task with id `id`.
pub fn task(id: &str) -> Value {
    let instrument = json!({"id": "urn:phq9", "version": "1.0", "title": "PHQ-9", "record": [{"id": "q1", "type": "integer"}]});
    json!({
        "host_system_id": id,
        "display_name": format!("Task {id}"),
        "instrument": instrument,
        "form": {"instrument": {"id": "urn:phq9", "version": "1.0"}, "defaultLocalization": "en", "pages": []},
        "subject": {
            "host_system_id": format!("s-{id}"),
            "display_name": "Subject",
            "users": [{"host_system_id": format!("u-{id}"), "display_name": "Parent", "email": "parent@example.org"}]
        }
    })
}

/// A task that fails validation: its only user has no e-mail.
pub fn invalid_task(id: &str) -> Value {
    let mut t = task(id);
    t["subject"]["users"][0]
        .as_object_mut()
        .expect("user object")
        .remove("email");
    t
}

/// `n` valid tasks `t-000000`, `t-000001`, …
pub fn tasks(n: usize) -> Vec<Value> {
    (0..n).map(|i| task(&format!("t-{i:06}"))).collect()
}

impl Harness {
    /// Writes back a portal answer for `ids` so they await completion.
    pub async fn mark_submitted(&self, ids: &[&str]) {
        let updates: Vec<task_model::PortalTask> = ids
            .iter()
            .map(|id| task_model::PortalTask {
                code: format!("P-{id}"),
                host_system_id: id.to_string(),
                subject_code: format!("S-{id}"),
                status: task_model::PortalStatus::Waiting,
                date_created: None,
                date_started: None,
                date_completed: None,
                assessment: None,
                revision: 1,
                acknowledged: false,
            })
            .collect();
        let report = self.store.write_back(&updates).await.expect("write back");
        assert_eq!(report.applied, ids.len() as u64, "{report:?}");
    }

    /// Tasks under a live lease.
    pub async fn leased(&self) -> u64 {
        self.store
            .counts(chrono::Utc::now())
            .await
            .expect("counts")
            .leased
    }

    /// Settings loaded the way the binary loads them (no env overrides).
    pub fn settings(&self) -> task_model::Settings {
        task_model::Settings::load(&self.config, &task_model::Env::empty()).expect("settings")
    }
}
