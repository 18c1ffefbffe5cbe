//! End to end: the real `portal-sync demo` binary as a child process, on a
//! private Redis, and its JSON summary checked against what the simulator
//! reported and against the demo's own SQLite store, re-opened after the run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use job_queue::testing::{RedisServer, free_port, sibling_binary};
use serde_json::Value;
use task_model::LocalStatus;
use task_model::store::{TaskStore, open_store};

/// How long the child may take (the 200-task run takes about 2 s in a debug
/// build; its own `--timeout` is shorter than this).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// `portal-sync` next to this test's target directory. `cargo nextest run
/// --workspace` builds it fresh; when only this package was built and the
/// binary is missing, it is built now with the same cargo, profile and target
/// directory (with `-p tests` alone, an existing binary is used as it is:
/// build `-p enqueue-cli` first).
fn portal_sync_binary() -> PathBuf {
    let path = sibling_binary("portal-sync");
    if path.exists() {
        return path;
    }
    let profile_dir = path.parent().expect("binary has a directory").to_owned();
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "-p",
            "enqueue-cli",
            "--bin",
            "portal-sync",
            "--target-dir",
        ])
        .arg(target_dir);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build for portal-sync");
    assert!(
        status.success(),
        "cargo build -p enqueue-cli failed: {status}"
    );
    assert!(
        path.exists(),
        "portal-sync not at {} after building",
        path.display()
    );
    path
}

/// Runs the command to its end (killing it after [`CHILD_LIMIT`]); stdout
/// and stderr go to files in `dir`.
fn run_to_end(mut cmd: Command, dir: &Path) -> (ExitStatus, String, String) {
    let out_path = dir.join("demo.stdout");
    let err_path = dir.join("demo.stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("starting portal-sync demo");
    let deadline = Instant::now() + CHILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for portal-sync") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "portal-sync demo still running after {CHILD_LIMIT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&out_path).expect("stdout"),
        std::fs::read_to_string(&err_path).expect("stderr"),
    )
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("summary field {key} missing or not a count: {v}"))
}

/// `portal-sync demo …` run in `work`, with no settings file and no
/// `PORTAL_SYNC_*` variables.
fn demo_command(work: &Path) -> Command {
    let mut cmd = Command::new(portal_sync_binary());
    cmd.arg("demo")
        .current_dir(work)
        .env_remove("PORTAL_SYNC_CONFIG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PORTAL_SYNC__") {
            cmd.env_remove(name);
        }
    }
    cmd
}

#[test]
fn demo_submits_every_valid_task_once_and_writes_back_every_completion() {
    let redis = RedisServer::start().expect("private redis-server");
    let work = tempfile::tempdir().expect("temp dir");
    let demo_dir = work.path().join("demo");

    let mut cmd = demo_command(work.path());
    cmd.args(["--tasks", "200", "--json", "--timeout", "30", "--dir"])
        .arg(&demo_dir)
        // The demo must take the Redis it is given.
        .env("REDIS_URL", redis.url());
    let (status, stdout, stderr) = run_to_end(cmd, work.path());
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "demo failed its checks: {:#}\nstderr:\n{stderr}",
        summary["checks"]
    );
    assert_eq!(summary["outcome"], "ok");
    assert_eq!(
        summary["redis_origin"], "env",
        "used the Redis it was given"
    );
    for check in summary["checks"].as_array().expect("checks") {
        assert_eq!(check["ok"], true, "{check}");
    }

    // The summary's own arithmetic.
    let tasks = u(&summary, "tasks");
    let valid = u(&summary, "valid");
    let invalid = u(&summary, "invalid");
    assert_eq!(tasks, 200);
    assert_eq!(valid + invalid, tasks);
    assert!(invalid >= 1, "some tasks are invalid on purpose");
    assert_eq!(u(&summary, "submitted"), valid);
    assert_eq!(u(&summary, "duplicates_on_portal"), 0);
    let rejected = summary["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len() as u64, invalid);

    // Against the simulator's own counts.
    let portal = &summary["portal"];
    assert_eq!(
        u(portal, "tasks_total"),
        valid,
        "the portal holds exactly one task per valid task"
    );
    let portal_complete = u(&portal["tasks_by_status"], "complete");
    assert_eq!(u(&summary, "completed_on_portal"), portal_complete);
    assert!(portal_complete > 0, "the patients completed some tasks");
    assert_eq!(u(&summary, "completed_written_back"), portal_complete);
    assert_eq!(
        u(&portal["tasks_by_status"], "waiting")
            + u(&portal["tasks_by_status"], "in-progress")
            + portal_complete
            + u(&portal["tasks_by_status"], "cancelled"),
        valid
    );

    // Against the store itself, re-opened after the demo has exited.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = format!("sqlite://{}", demo_dir.join("demo.db").display());
        let store = open_store(&url).await.expect("the demo's store opens");
        let counts = store
            .counts(chrono::Utc::now())
            .await
            .expect("store counts");
        let by = |s: LocalStatus| counts.by_status.get(&s).copied().unwrap_or(0);
        assert_eq!(counts.total, tasks);
        assert_eq!(by(LocalStatus::AwaitingSubmission), invalid);
        assert_eq!(by(LocalStatus::Complete), portal_complete);
        assert_eq!(
            by(LocalStatus::AwaitingCompletion) + by(LocalStatus::Complete),
            valid
        );
        assert_eq!(counts.leased, 0, "no task left leased");
        assert_eq!(
            u(&summary["store"]["by_status"], "complete"),
            by(LocalStatus::Complete)
        );
        // Each rejected task holds the reason the summary printed, and is
        // not on the portal.
        let ids: Vec<String> = rejected
            .iter()
            .map(|r| r["task_id"].as_str().expect("task_id").to_owned())
            .collect();
        let loaded = store.load(&ids).await.expect("load rejected tasks");
        for (row, shown) in loaded.into_iter().zip(rejected) {
            let task = row.expect("rejected task readable");
            assert_eq!(task.status, LocalStatus::AwaitingSubmission);
            assert!(task.portal.is_none());
            let error = task.error.expect("rejected task carries its error");
            assert_eq!(shown["reason"], error.message.as_str());
        }
    });

    // The demo worked in a namespace of its own on our Redis and removed it.
    let client = redis::Client::open(redis.url()).expect("redis client");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("redis connection");
    let keys: u64 = redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE");
    assert_eq!(keys, 0, "the demo left keys in the Redis it was given");
}

#[test]
fn demo_without_any_redis_fails_with_one_line_saying_how_to_get_one() {
    let work = tempfile::tempdir().expect("temp dir");
    let empty_path = work.path().join("empty-path");
    std::fs::create_dir(&empty_path).expect("empty PATH dir");
    let port = free_port().expect("free port");

    let mut cmd = demo_command(work.path());
    cmd.args(["--tasks", "10", "--dir"])
        .arg(work.path().join("demo"))
        // Nothing listens there, and no redis-server can be found.
        .env("REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .env("PATH", &empty_path)
        .env("RUST_LOG", "off");
    let (status, stdout, stderr) = run_to_end(cmd, work.path());
    assert_eq!(
        status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("portal-sync:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let line = errors[0];
    for needed in ["redis-server", "REDIS_URL", "install", &port.to_string()] {
        assert!(line.contains(needed), "{needed:?} missing from: {line}");
    }
    assert!(
        stdout.trim().is_empty(),
        "no summary without a run: {stdout}"
    );
}
