//! The `portal-sim` binary as a child process, steered through its JSON
//! control API over HTTP the way tests in other processes do; plus the
//! contract breaches only a foreign portal commits.

mod support;

use std::process::Stdio;
use std::time::Duration;

use portal_api::PortalError;
use portal_api::sim::SimStats;
use portal_api::wire::TaskQuery;
use serde_json::json;
use support::*;
use task_model::PortalStatus;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Child {
    child: tokio::process::Child,
    url: String,
}

async fn spawn_sim(extra: &[&str]) -> Child {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portal-sim"))
        .args(["--listen", "127.0.0.1:0", "--seed", "3"])
        .args(extra)
        .env("PORTAL_SIM_API_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("portal-sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("announces its URL in time")
        .expect("reads stdout")
        .expect("a line");
    let url = line
        .strip_prefix("PORTAL_SIM_URL=")
        .expect("PORTAL_SIM_URL line")
        .to_owned();
    Child { child, url }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn the_binary_is_steered_through_its_control_api_and_stops_on_sigterm() {
    let mut sim = spawn_sim(&["--fault", "error:503@GET /subjects"]).await;
    let client = client(&sim.url);
    let control = http();

    // Faults from the flag, then replaced at run time.
    let err = client.list_subjects().await.expect_err("flag fault");
    assert_eq!(err.status(), Some(503));
    let rules =
        json!([{"kind": "error", "status": 429, "retry_after": 4, "endpoint": "GET /tasks"}]);
    let r = control
        .put(format!("{}/_sim/faults", sim.url))
        .json(&rules)
        .send()
        .await
        .expect("put faults");
    assert_eq!(r.status(), 204);
    assert!(
        client
            .list_subjects()
            .await
            .expect("no longer faulty")
            .is_empty()
    );
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(4)));
    let bad = control
        .post(format!("{}/_sim/faults", sim.url))
        .json(&json!({"kind": "error", "endpoint": "GET /nowhere"}))
        .send()
        .await
        .expect("post fault");
    assert_eq!(bad.status(), 400);
    control
        .delete(format!("{}/_sim/faults", sim.url))
        .send()
        .await
        .expect("clear");

    // A patient completes a task through the control API.
    let stored = client.submit_tasks(&tasks("b", 2)).await.expect("submit");
    let done: task_model::PortalTask = control
        .post(format!(
            "{}/_sim/tasks/@{}/complete",
            sim.url, stored[0].code
        ))
        .send()
        .await
        .expect("complete")
        .json()
        .await
        .expect("task view");
    assert_eq!((done.status, done.revision), (PortalStatus::Complete, 2));
    let polled = client
        .get_task(&stored[0].code)
        .await
        .expect("get")
        .expect("some");
    assert!(polled.assessment.is_some());

    let stats: SimStats = control
        .get(format!("{}/_sim/stats", sim.url))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(stats.requests_with("GET /subjects", 503), 1);
    assert_eq!(stats.requests_with("GET /tasks", 429), 1);
    assert_eq!(stats.tasks_by_status.get("complete"), Some(&1));

    let r = control
        .post(format!("{}/_sim/reset", sim.url))
        .send()
        .await
        .expect("reset");
    assert_eq!(r.status(), 204);
    assert_eq!(
        client
            .list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .len(),
        0
    );

    let pid = sim.child.id().expect("pid") as i32;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), sim.child.wait())
        .await
        .expect("stops in time")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn background_patients_start_and_complete_waiting_tasks() {
    let sim = spawn_sim(&[]).await;
    let client = client(&sim.url);
    client.submit_tasks(&tasks("p", 10)).await.expect("submit");
    let r = http()
        .put(format!("{}/_sim/patients", sim.url))
        .json(&json!({"rate_per_sec": 400.0, "fraction": 1.0}))
        .send()
        .await
        .expect("patients");
    assert_eq!(r.status(), 204);
    // Wait for the event (all complete), bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = client
            .list_tasks(&TaskQuery::default())
            .await
            .expect("list");
        if all.iter().all(|t| t.status == PortalStatus::Complete) {
            assert!(all.iter().all(|t| t.revision == 3 && !t.acknowledged));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "patients too slow: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_portal_ignoring_offset_is_a_protocol_error_not_an_endless_loop() {
    let odd = support::odd_portal::start().await;
    let client = client_with_page(&odd.url, 3);
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("protocol");
    assert!(matches!(err, PortalError::Protocol { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_unknown_status_is_undecodable_at_its_path() {
    let odd = support::odd_portal::start().await;
    let err = client(&odd.url).get_task("T1").await.expect_err("decode");
    match &err {
        PortalError::Decode {
            path, truncated, ..
        } => {
            assert_eq!(path, "status");
            assert!(!truncated);
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert!(err.to_string().contains("/tasks/@T1"), "{err}");
}
