//! The `sync-worker` binary as child processes against a private Redis, a
//! real SQLite store and the portal simulator: throughput paths, failure
//! paths, kills and shutdowns. Each test builds its own world (harness).

mod harness;

use std::time::Duration;

use harness::{Harness, Options, task_ids, wait_for};
use portal_api::wire::TaskQuery;
use portal_api::{Client, ClientConfig};
use serde_json::json;
use task_model::LocalStatus;

fn portal_client(h: &Harness) -> Client {
    Client::new(ClientConfig::new(
        h.sim.as_ref().expect("sim").url(),
        harness::SIM_KEY.to_owned().into(),
    ))
    .expect("client")
}

async fn unacknowledged(h: &Harness) -> usize {
    portal_client(h)
        .list_tasks(&TaskQuery::unacknowledged())
        .await
        .expect("list unacknowledged")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_submit_two_thousand_tasks_exactly_once_and_pull_completions_back() {
    let h = Harness::start(Options {
        concurrency: 16,
        ..Options::default()
    })
    .await;
    let ids = task_ids("t", 2000);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w1 = h.spawn_worker();
    let mut w2 = h.spawn_worker();

    wait_for("2000 tasks awaiting completion", Duration::from_secs(60), || async {
        h.status_count(LocalStatus::AwaitingCompletion).await == 2000
    })
    .await;
    let stats = h.sim().stats();
    assert_eq!(stats.tasks_total, 2000);
    assert_eq!(stats.duplicate_submissions, 0, "{stats:?}");
    assert_eq!(stats.requests_with("POST /tasks", 201), 100, "one POST per package");
    wait_for("the submission answers acknowledged", Duration::from_secs(20), || async {
        unacknowledged(&h).await == 0
    })
    .await;

    // Patients complete every other task.
    let sim = h.sim();
    let mut completed = Vec::new();
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let task = sim.task_by_host_id(id).expect("on the portal");
        sim.complete_task(&task.code, json!({"instrument": {"id": "urn:test-instrument", "version": "1.0"}, "values": {"q": {"value": i}}}))
            .expect("complete");
        completed.push(id.clone());
    }
    assert_eq!(unacknowledged(&h).await, 1000);
    h.push_pulls(50).await;

    wait_for("1000 completions written back", Duration::from_secs(60), || async {
        h.status_count(LocalStatus::Complete).await == 1000
    })
    .await;
    wait_for("nothing left unacknowledged", Duration::from_secs(20), || async {
        unacknowledged(&h).await == 0
    })
    .await;
    for id in completed.iter().step_by(97) {
        let task = h.load(id).await;
        let portal = task.portal.expect("portal state");
        let i: usize = id[2..].parse().expect("index");
        assert_eq!(
            portal.assessment.as_ref().and_then(|a| a.pointer("/values/q/value")),
            Some(&json!(i)),
            "assessment of {id}"
        );
    }
    assert_eq!(h.status_count(LocalStatus::AwaitingCompletion).await, 1000);
    let q = h.queue_counts().await;
    assert_eq!((q.dead, q.pending, q.running), (0, 0, 0), "{q:?}");

    w1.signal("TERM");
    w2.signal("TERM");
    for w in [&mut w1, &mut w2] {
        let status = w.wait_exit(Duration::from_secs(15)).await.expect("exits");
        assert!(status.success(), "{status:?}");
    }
    assert_eq!(h.counts().await.leased, 0, "every task lease released");
}
