//! `status`, `import`, `dead`, `check`, `completions`, `--help` and the log
//! format, through the real binary.

mod support;

use std::io::Write;
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use job_queue::JobError;
use portal_api::sim::{SimConfig, Simulator};
use support::{BIN, Harness, StoreKind, invalid_task, task, tasks};

#[tokio::test]
async fn status_reports_tasks_queue_and_the_last_run() {
    let h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(30)).await;
    h.import(&[invalid_task("z-1")]).await;
    let (_, none) = h.run_json(&["status", "--json"]);
    assert!(none["last_run"].is_null(), "{none}");

    let (code, run) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 1, "{run}");
    let (code, status) = h.run_json(&["status", "--json"]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["tasks"]["by_status"]["awaiting-submission"], 31);
    assert_eq!(status["tasks"]["by_status"]["complete"], 0);
    assert_eq!(status["tasks"]["with_error"], 1);
    assert_eq!(status["tasks"]["leased"], 30);
    assert_eq!(status["tasks"]["total"], 31);
    assert_eq!(status["queue"]["pending"], 2);
    assert_eq!(status["queue"]["dead"], 0);
    assert!(
        status["queue"]["oldest_pending_age_secs"]
            .as_f64()
            .is_some_and(|s| s >= 0.0)
    );
    assert_eq!(status["last_run"]["run_id"], run["run_id"]);
    assert_eq!(status["last_run"]["outcome"], "partial");

    let human = h.run(&["status"]);
    assert_eq!(human.code, 0);
    for needle in [
        "awaiting-submission",
        "with an error",
        "pending",
        "last enqueue run",
    ] {
        assert!(
            human.stdout.contains(needle),
            "{needle} in {}",
            human.stdout
        );
    }
}

#[tokio::test]
async fn import_reports_each_bad_record_with_its_line_and_keeps_the_good_ones() {
    let h = Harness::new(StoreKind::Sqlite).await;
    let file = h.dir.path().join("tasks.ndjson");
    let mut f = std::fs::File::create(&file).expect("create");
    writeln!(f, "{}", task("i-1")).expect("write");
    writeln!(f, "{{not json").expect("write");
    writeln!(f, "{}", serde_json::json!({"host_system_id": "i-3"})).expect("write");
    writeln!(f, "{}", task("i-4")).expect("write");
    drop(f);
    let file = file.to_str().expect("utf-8 path");

    let run = h.run(&["import", file, "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let summary = run.json();
    assert_eq!(summary["inserted"], 2);
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["errors"][0]["position"], "line 2");
    assert_eq!(summary["errors"][1]["position"], "line 3");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("portal-sync: import"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per bad record: {}", run.stderr);
    assert!(lines[0].contains("line 2"), "{}", lines[0]);
    assert!(lines[1].contains("line 3"), "{}", lines[1]);

    // A JSON array on stdin.
    let mut child = h
        .command()
        .args(["import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let array = serde_json::json!([task("i-5"), task("i-6")]).to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(array.as_bytes())
        .expect("write stdin");
    let run = support::Run::from(child.wait_with_output().expect("wait"));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("2 new"), "{}", run.stdout);

    let missing = h.run(&["import", "/nonexistent/tasks.json"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("/nonexistent/tasks.json"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_listed_retried_and_purged() {
    let h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(60)).await;
    let (code, _) = h.run_json(&["enqueue", "--json"]);
    assert_eq!(code, 0);

    // A worker that refuses every job for good: all three go dead at once.
    let queue = h.queue().await;
    let worker = WorkerBuilder::new("refuser")
        .backend(queue.backend::<task_model::SyncJob>())
        .build(|_job: task_model::SyncJob| async move {
            Err::<(), JobError>(JobError::no_retry("portal refused the package"))
        });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        worker
            .run_until(async move {
                let _ = stop_rx.await;
                Ok::<(), std::io::Error>(())
            })
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue.counts().await.expect("counts").dead < 3 {
        assert!(std::time::Instant::now() < deadline, "jobs did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    let _ = running.await;

    let (code, list) = h.run_json(&["dead", "list", "--json"]);
    assert_eq!(code, 0, "{list}");
    assert_eq!(list["total"], 3);
    let jobs = list["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["kind"] == "submit"));
    assert!(
        jobs.iter()
            .all(|j| j["task_ids"].as_array().is_some_and(|t| t.len() == 20))
    );
    assert!(
        jobs.iter().all(|j| j["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused"))),
        "{list}"
    );
    let human = h.run(&["dead", "list"]);
    assert!(human.stdout.contains("3 dead job(s)"), "{}", human.stdout);

    let first = jobs[0]["id"].as_str().expect("id").to_string();
    let retry = h.run(&["dead", "retry", &first]);
    assert_eq!(retry.code, 0, "{retry:?}");
    let counts = queue.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (1, 2));

    let unknown = h.run(&["dead", "retry", "no-such-job"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("not dead jobs"),
        "{}",
        unknown.stderr
    );

    let (code, purged) = h.run_json(&["dead", "purge", "--all", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(purged["count"], 2);
    assert_eq!(queue.counts().await.expect("counts").dead, 0);
}

// Multi-threaded: the simulator must serve while the test thread waits for
// the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_dependency_and_fails_on_a_refused_key() {
    let mut h = Harness::new(StoreKind::Sqlite).await;
    let sim = Simulator::start(SimConfig::new("test-key-not-secret-enough"))
        .await
        .expect("simulator");
    h.write_settings(sim.url());

    let (code, report) = h.run_json(&["check", "--json"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["settings", "redis", "store", "portal"]);
    assert!(
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .all(|c| c["latency_ms"].is_f64())
    );

    // A key the portal refuses: exit 3, the portal check says why, the key
    // never shows.
    let other = Simulator::start(SimConfig::new("some-other-key"))
        .await
        .expect("simulator");
    h.write_settings(other.url());
    let run = h.run(&["check", "--json"]);
    assert_eq!(run.code, 3, "{run:?}");
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["checks"][3]["ok"], false);
    assert!(
        report["checks"][3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("API key")),
        "{report}"
    );
    assert!(run.stderr.contains("check portal"), "{}", run.stderr);
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains("test-key-not-secret-enough"),
            "the key leaked: {text}"
        );
    }

    // Redis down: that check fails, the others still run.
    h.write_settings(sim.url());
    h.redis.stop().expect("stop redis");
    let run = h.run(&["check"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("FAIL  redis"), "{}", run.stdout);
    assert!(run.stdout.contains("ok    portal"), "{}", run.stdout);
    sim.shutdown().await;
    other.shutdown().await;
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("portal-sync") && script.contains("enqueue"),
            "{shell}"
        );
    }
    let bad = std::process::Command::new(BIN)
        .args(["completions", "powershell-9"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn help_documents_exit_codes_and_an_example_per_command() {
    let root = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run");
    let root = String::from_utf8_lossy(&root.stdout).into_owned();
    for code in [
        "0  done",
        "1  partial",
        "2  usage",
        "3  a dependency",
        "4  another",
    ] {
        assert!(root.contains(code), "--help lacks exit code {code:?}");
    }
    for sub in [
        vec!["enqueue"],
        vec!["status"],
        vec!["import"],
        vec!["dead", "list"],
        vec!["dead", "retry"],
        vec!["dead", "purge"],
        vec!["check"],
        vec!["completions"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub:?}");
        assert!(
            text.contains("Examples:\n  portal-sync"),
            "{sub:?} --help has no example"
        );
    }
}

#[tokio::test]
async fn logs_are_json_lines_off_a_terminal_and_plain_on_request() {
    let h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(5)).await;
    let run = h.run(&["enqueue", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(!lines.is_empty(), "an info line per run");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("enqueue run finished")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("\u{1b}["), "no colour off a terminal");

    let plain = h.run(&["--log-format", "plain", "enqueue", "--json"]);
    assert_eq!(plain.code, 0);
    assert!(plain.stderr.lines().count() > 0);
    assert!(
        plain
            .stderr
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{}",
        plain.stderr
    );
    assert!(
        !plain.stderr.contains("\u{1b}["),
        "no colour off a terminal"
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`): readable
/// output, the human summary, no JSON log lines, the exit code kept.
#[tokio::test]
async fn on_a_terminal_the_summary_is_for_people() {
    let h = Harness::new(StoreKind::Sqlite).await;
    h.import(&tasks(30)).await;
    h.import(&[invalid_task("z-1")]).await;
    let command = format!(
        "{BIN} --config {} enqueue",
        h.config.to_str().expect("utf-8 path")
    );
    let out = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .expect("util-linux `script` runs the binary on a pseudo-terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "partial (one invalid task): {text}"
    );
    assert!(text.contains("queued 2 job(s)"), "{text}");
    assert!(text.contains("skipped       1 invalid"), "{text}");
    assert!(text.contains("z-1: task \"z-1\" is not valid"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("{\"timestamp\"")),
        "no JSON logs on a terminal: {text}"
    );
}
