//! The `sync-worker` binary as child processes against a private Redis, a
//! real SQLite store and the portal simulator: throughput paths, failure
//! paths, kills and shutdowns. Each test builds its own world (harness).

mod harness;

use std::time::Duration;

use harness::{Harness, Options, metric, parse_metrics, task_ids, wait_for};
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

    wait_for(
        "2000 tasks awaiting completion",
        Duration::from_secs(60),
        || async { h.status_count(LocalStatus::AwaitingCompletion).await == 2000 },
    )
    .await;
    let stats = h.sim().stats();
    assert_eq!(stats.tasks_total, 2000);
    assert_eq!(stats.duplicate_submissions, 0, "{stats:?}");
    assert_eq!(
        stats.requests_with("POST /tasks", 201),
        100,
        "one POST per package"
    );
    wait_for(
        "the submission answers acknowledged",
        Duration::from_secs(20),
        || async { unacknowledged(&h).await == 0 },
    )
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

    wait_for(
        "1000 completions written back",
        Duration::from_secs(60),
        || async { h.status_count(LocalStatus::Complete).await == 1000 },
    )
    .await;
    wait_for(
        "nothing left unacknowledged",
        Duration::from_secs(20),
        || async { unacknowledged(&h).await == 0 },
    )
    .await;
    for id in completed.iter().step_by(97) {
        let task = h.load(id).await;
        let portal = task.portal.expect("portal state");
        let i: usize = id[2..].parse().expect("index");
        assert_eq!(
            portal
                .assessment
                .as_ref()
                .and_then(|a| a.pointer("/values/q/value")),
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

/// The simulator's basic checks, plus a refusal of the listed ids.
struct RejectIds(Vec<String>);

impl portal_api::sim::TaskValidator for RejectIds {
    fn validate(&self, task: &task_model::HostTask) -> Result<(), String> {
        if self.0.contains(&task.host_system_id) {
            return Err("parameters.dose: not accepted by this portal".to_owned());
        }
        portal_api::sim::BasicValidator.validate(task)
    }
}

fn fault(kind: portal_api::sim::FaultKind, endpoint: &str) -> portal_api::sim::FaultRule {
    portal_api::sim::FaultRule::new(kind).on(endpoint)
}

async fn stop_worker(w: &mut harness::WorkerProcess) {
    w.signal("TERM");
    let status = w
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("worker exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_then_fail_leaves_no_duplicate_on_the_portal() {
    let mut options = Options::default();
    options.sim.faults =
        vec![fault(portal_api::sim::FaultKind::AcceptThenFail, "POST /tasks").times(3)];
    let h = Harness::start(options).await;
    let ids = task_ids("a", 100);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for(
        "100 tasks submitted, 5 jobs done",
        Duration::from_secs(20),
        || async {
            h.status_count(LocalStatus::AwaitingCompletion).await == 100
                && h.queue_counts().await.done == 5
        },
    )
    .await;
    let stats = h.sim().stats();
    assert_eq!(
        stats.faults_injected.get("accept_then_fail"),
        Some(&3),
        "{stats:?}"
    );
    assert_eq!(stats.tasks_total, 100);
    assert_eq!(stats.duplicate_submissions, 0, "{stats:?}");
    let q = h.queue_counts().await;
    assert_eq!((q.done, q.dead), (5, 0), "{q:?}");
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_is_isolated_and_the_other_nineteen_go_through() {
    let poison = "p-00007".to_owned();
    let h = Harness::start(Options::default().validator(RejectIds(vec![poison.clone()]))).await;
    let ids = task_ids("p", 20);
    h.import(&ids).await;
    let jobs = h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for(
        "19 tasks submitted and the job done",
        Duration::from_secs(20),
        || async {
            h.status_count(LocalStatus::AwaitingCompletion).await == 19
                && h.queue_counts().await.done == 1
        },
    )
    .await;
    let bad = h.load(&poison).await;
    assert_eq!(bad.status, LocalStatus::AwaitingSubmission);
    let error = bad
        .error
        .expect("the poison task carries the portal's error");
    assert!(
        error.message.contains("parameters.dose: not accepted"),
        "{error:?}"
    );
    assert!(h.sim().task_by_host_id(&poison).is_none());
    let job = h.queue.job(&jobs[0]).await.expect("job").expect("stored");
    assert_eq!(job.attempts, 1, "isolated within one attempt");
    assert_eq!(h.sim().stats().tasks_total, 19);
    assert_eq!(h.counts().await.leased, 0, "leases released");
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let mut options = Options::default();
    options.sim.faults = vec![
        fault(
            portal_api::sim::FaultKind::Error {
                status: 429,
                retry_after: Some(2),
            },
            "POST /tasks",
        )
        .times(1),
    ];
    let h = Harness::start(options).await;
    let ids = task_ids("r", 20);
    h.import(&ids).await;
    let mut w = h.spawn_worker();
    w.wait_serving().await;
    let jobs = h.push_submits(&ids, 20).await;
    let pushed = std::time::Instant::now();
    wait_for(
        "the first POST refused with 429",
        Duration::from_secs(10),
        || async { h.sim().stats().requests_with("POST /tasks", 429) == 1 },
    )
    .await;
    wait_for("20 tasks submitted", Duration::from_secs(20), || async {
        h.status_count(LocalStatus::AwaitingCompletion).await == 20
    })
    .await;
    let took = pushed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "retried after {took:?}, before Retry-After: 2"
    );
    let job = h.queue.job(&jobs[0]).await.expect("job").expect("stored");
    assert_eq!(job.attempts, 2);
    assert_eq!(h.sim().stats().duplicate_submissions, 0);
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_portal_sends_the_job_dead_and_the_tasks_carry_the_error() {
    let mut options = Options {
        max_attempts: 3,
        ..Options::default()
    };
    options.sim.faults = vec![fault(
        portal_api::sim::FaultKind::Error {
            status: 503,
            retry_after: None,
        },
        "POST /tasks",
    )];
    let h = Harness::start(options).await;
    let ids = task_ids("d", 20);
    h.import(&ids).await;
    let jobs = h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for("the job dead", Duration::from_secs(20), || async {
        h.queue_counts().await.dead == 1
    })
    .await;
    let job = h.queue.job(&jobs[0]).await.expect("job").expect("stored");
    assert_eq!(job.attempts, 3);
    assert!(
        job.last_error.as_deref().unwrap_or("").contains("503"),
        "{job:?}"
    );
    let task = h.load(&ids[0]).await;
    assert_eq!(task.status, LocalStatus::AwaitingSubmission);
    let error = task.error.expect("the task carries the error");
    assert!(error.message.contains("503"), "{error:?}");
    assert_eq!(error.attempts, 3);
    assert_eq!(h.counts().await.leased, 0, "leases released once dead");
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_pauses_the_worker_without_burning_jobs() {
    let h = Harness::start(Options {
        worker_key: "wrong-key-0000".to_owned(),
        concurrency: 2,
        ..Options::default()
    })
    .await;
    let ids = task_ids("k", 200);
    h.import(&ids).await;
    let jobs = h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    w.wait_serving().await;
    wait_for("/readyz refusing", Duration::from_secs(10), || async {
        matches!(w.get("/readyz").await, Some((503, body)) if body.contains("refuses our API key"))
    })
    .await;
    // The worker keeps probing; give it several rounds to burn jobs if it would.
    let tried = h.sim().stats().requests_with("POST /tasks", 401);
    assert!(
        (1..=2).contains(&tried),
        "at most the jobs already running tried: {tried}"
    );
    wait_for("a few key probes", Duration::from_secs(10), || async {
        h.sim().stats().requests_with("GET /tasks", 401) >= 5
    })
    .await;
    let q = h.queue_counts().await;
    assert_eq!(q.dead, 0, "{q:?}");
    assert_eq!(
        h.sim().stats().requests_with("POST /tasks", 401),
        tried,
        "paused: no more jobs tried"
    );
    assert_eq!(
        (q.pending + q.scheduled + q.running, q.done),
        (10, 0),
        "every job still waits (in the queue, or leased and untried): {q:?}"
    );
    for id in &jobs {
        let job = h.queue.job(id).await.expect("job").expect("stored");
        assert!(job.attempts <= 1, "{job:?}");
    }
    assert!(
        h.load(&ids[0]).await.error.is_none(),
        "an auth failure is not the task's error"
    );

    // The portal accepts the key again (here: a portal that knows it).
    let mut h = h;
    let old = h.sim.take().expect("sim");
    old.shutdown().await;
    let mut config = portal_api::sim::SimConfig::new("wrong-key-0000");
    config.listen = h.sim_addr;
    h.sim = Some(
        portal_api::sim::Simulator::start(config)
            .await
            .expect("sim again"),
    );
    wait_for(
        "200 tasks submitted after the key works",
        Duration::from_secs(20),
        || async {
            h.status_count(LocalStatus::AwaitingCompletion).await == 200
                && h.queue_counts().await.done == 10
        },
    )
    .await;
    wait_for("/readyz ready again", Duration::from_secs(10), || async {
        matches!(w.get("/readyz").await, Some((200, _)))
    })
    .await;
    for id in &jobs {
        let job = h.queue.job(id).await.expect("job").expect("stored");
        assert_eq!(job.attempts, 1, "no attempt used by the outage: {job:?}");
    }
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_landing_between_pull_and_acknowledgement_still_arrives() {
    let h = Harness::start(Options::default()).await;
    let ids = task_ids("c", 1);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for(
        "submitted and acknowledged",
        Duration::from_secs(20),
        || async {
            h.status_count(LocalStatus::AwaitingCompletion).await == 1
                && unacknowledged(&h).await == 0
        },
    )
    .await;
    let sim = h.sim();
    let code = sim.task_by_host_id(&ids[0]).expect("on portal").code;
    sim.start_task(&code).expect("start");
    // The acknowledgement of the pulled change is slow; the patient
    // completes the task while it is on its way.
    sim.add_fault(
        fault(
            portal_api::sim::FaultKind::Latency {
                ms: Some(1500),
                min_ms: None,
                max_ms: None,
            },
            "PUT /tasks/@{code}",
        )
        .times(1),
    )
    .expect("fault");
    h.push_pulls(1).await;
    wait_for(
        "the pulled start written back",
        Duration::from_secs(10),
        || async {
            h.load(&ids[0])
                .await
                .portal
                .is_some_and(|p| p.status == task_model::PortalStatus::InProgress)
        },
    )
    .await;
    sim.complete_task(&code, json!({"instrument": {"id": "urn:test-instrument", "version": "1.0"}, "values": {"q": {"value": "late"}}}))
        .expect("complete");
    wait_for(
        "the completion written back",
        Duration::from_secs(10),
        || async { h.status_count(LocalStatus::Complete).await == 1 },
    )
    .await;
    wait_for(
        "nothing unacknowledged",
        Duration::from_secs(10),
        || async { unacknowledged(&h).await == 0 },
    )
    .await;
    assert!(sim.stats().stale_acknowledgements >= 1, "{:?}", sim.stats());
    let task = h.load(&ids[0]).await;
    assert_eq!(
        task.portal
            .and_then(|p| p.assessment)
            .and_then(|a| a.pointer("/values/q/value").cloned()),
        Some(json!("late"))
    );
    stop_worker(&mut w).await;
}

fn latency(ms: u64, endpoint: &str) -> portal_api::sim::FaultRule {
    fault(
        portal_api::sim::FaultKind::Latency {
            ms: Some(ms),
            min_ms: None,
            max_ms: None,
        },
        endpoint,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_no_task_and_duplicates_none() {
    let mut options = Options {
        concurrency: 4,
        ..Options::default()
    };
    options.sim.faults = vec![latency(50, "POST /tasks")];
    let h = Harness::start(options).await;
    let ids = task_ids("x", 1000);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w1 = h.spawn_worker_with(&["--lease-timeout", "1"]);
    let mut w2 = h.spawn_worker_with(&["--lease-timeout", "1"]);
    wait_for("some progress", Duration::from_secs(20), || async {
        h.status_count(LocalStatus::AwaitingCompletion).await >= 200
    })
    .await;
    w1.signal("KILL");
    let status = w1.wait_exit(Duration::from_secs(5)).await.expect("killed");
    assert!(!status.success());
    wait_for("every task submitted", Duration::from_secs(30), || async {
        h.status_count(LocalStatus::AwaitingCompletion).await == 1000
    })
    .await;
    let stats = h.sim().stats();
    assert_eq!(stats.tasks_total, 1000);
    assert_eq!(stats.duplicate_submissions, 0, "{stats:?}");
    wait_for("every job done", Duration::from_secs(10), || async {
        h.queue_counts().await.done == 50
    })
    .await;
    assert_eq!(h.queue_counts().await.dead, 0);
    stop_worker(&mut w2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_within_the_grace_and_leaves_nothing_leased() {
    let mut options = Options {
        concurrency: 8,
        shutdown_grace: 5,
        ..Options::default()
    };
    options.sim.faults = vec![latency(200, "POST /tasks")];
    let h = Harness::start(options).await;
    let ids = task_ids("s", 400);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for("jobs running", Duration::from_secs(20), || async {
        h.status_count(LocalStatus::AwaitingCompletion).await >= 40
            && h.queue_counts().await.running >= 4
    })
    .await;
    let asked = std::time::Instant::now();
    w.signal("TERM");
    let status = w
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("exits within the grace");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took <= Duration::from_secs(6), "took {took:?}");
    let q = h.queue_counts().await;
    assert_eq!(q.running, 0, "nothing left leased: {q:?}");
    assert_eq!(q.pending + q.scheduled + q.done, 20, "{q:?}");
    assert!(q.done < 20, "stopped before the end: {q:?}");

    let mut w = h.spawn_worker();
    wait_for(
        "the rest submitted by a new worker",
        Duration::from_secs(20),
        || async { h.status_count(LocalStatus::AwaitingCompletion).await == 400 },
    )
    .await;
    assert_eq!(h.sim().stats().duplicate_submissions, 0);
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_named_series() {
    let mut options = Options::default();
    options.sim.faults = vec![
        fault(
            portal_api::sim::FaultKind::Error {
                status: 503,
                retry_after: None,
            },
            "POST /tasks",
        )
        .times(1),
    ];
    let h = Harness::start(options).await;
    let ids = task_ids("m", 40);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    w.wait_serving().await;
    wait_for(
        "40 submitted, 2 jobs done",
        Duration::from_secs(20),
        || async {
            h.status_count(LocalStatus::AwaitingCompletion).await == 40
                && h.queue_counts().await.done == 2
        },
    )
    .await;
    let (status, body) = w.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let series = parse_metrics(&body);
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_jobs_total{kind="submit",outcome="succeeded"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_jobs_total{kind="submit",outcome="retried"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&series, r#"portal_sync_job_retries_total{kind="submit"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_job_duration_seconds_count{kind="submit"}"#
        ),
        3.0
    );
    let inf_bucket = series
        .iter()
        .find(|(s, _)| {
            s.starts_with("portal_sync_job_duration_seconds_bucket{")
                && s.contains(r#"kind="submit""#)
                && s.contains(r#"le="+Inf""#)
        })
        .map(|(_, v)| *v);
    assert_eq!(inf_bucket, Some(3.0), "the +Inf bucket holds every attempt");
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_portal_requests_total{endpoint="POST /tasks",status="2xx"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_portal_requests_total{endpoint="POST /tasks",status="503"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_portal_requests_total{endpoint="PUT /tasks/@{code}",status="2xx"}"#
        ),
        40.0
    );
    assert!(
        metric(
            &series,
            r#"portal_sync_portal_request_duration_seconds_count{endpoint="POST /tasks"}"#
        ) >= 3.0
    );
    assert_eq!(
        metric(
            &series,
            r#"portal_sync_tasks_written_back_total{outcome="applied"}"#
        ),
        40.0
    );
    assert_eq!(
        metric(&series, "portal_sync_stale_updates_ignored_total"),
        0.0
    );
    assert_eq!(
        metric(&series, r#"portal_sync_queue_jobs{state="pending"}"#),
        0.0
    );
    assert_eq!(
        metric(&series, r#"portal_sync_queue_jobs{state="running"}"#),
        0.0
    );
    assert_eq!(
        metric(&series, r#"portal_sync_queue_jobs{state="dead"}"#),
        0.0
    );
    assert_eq!(metric(&series, "portal_sync_worker_ready"), 1.0);
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_when_redis_stops_and_back_when_it_returns() {
    let mut h = Harness::start(Options::default()).await;
    let mut w = h.spawn_worker();
    w.wait_serving().await;
    wait_for("ready", Duration::from_secs(10), || async {
        matches!(w.get("/readyz").await, Some((200, _)))
    })
    .await;
    h.redis.stop().expect("stop redis");
    wait_for("not ready while Redis is down", Duration::from_secs(10), || async {
        matches!(w.get("/readyz").await, Some((503, body)) if body.contains("\"store\":\"ok\"") && !body.contains("\"redis\":\"ok\""))
    })
    .await;
    assert!(
        matches!(w.get("/healthz").await, Some((200, _))),
        "alive all the same"
    );
    h.redis.start_again().expect("start redis");
    wait_for("ready again", Duration::from_secs(15), || async {
        matches!(w.get("/readyz").await, Some((200, _)))
    })
    .await;
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stuck_past_the_grace_are_handed_back_and_the_worker_still_exits_zero() {
    let mut options = Options {
        concurrency: 4,
        shutdown_grace: 1,
        ..Options::default()
    };
    options.sim.faults = vec![latency(30_000, "POST /tasks")];
    let h = Harness::start(options).await;
    let ids = task_ids("g", 80);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for(
        "four jobs stuck in POST",
        Duration::from_secs(10),
        || async { h.queue_counts().await.running == 4 },
    )
    .await;
    let asked = std::time::Instant::now();
    w.signal("TERM");
    let status = w
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after the grace");
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "took {:?}",
        asked.elapsed()
    );
    let q = h.queue_counts().await;
    assert_eq!(q.running, 0, "the stuck jobs were handed back: {q:?}");
    assert_eq!(q.pending + q.scheduled, 4, "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_recovers_a_submission_whose_answer_was_lost() {
    let mut options = Options {
        max_attempts: 1,
        ..Options::default()
    };
    options.sim.faults =
        vec![fault(portal_api::sim::FaultKind::AcceptThenFail, "POST /tasks").times(1)];
    let h = Harness::start(options).await;
    let ids = task_ids("f", 20);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for("the submit job dead", Duration::from_secs(10), || async {
        h.queue_counts().await.dead == 1
    })
    .await;
    assert_eq!(h.status_count(LocalStatus::AwaitingSubmission).await, 20);
    assert_eq!(
        h.sim().stats().tasks_total,
        20,
        "the portal holds them all the same"
    );
    let refresh = task_model::SyncJob::refresh("test-run", ids.clone()).expect("job");
    h.push_packages(vec![refresh]).await;
    wait_for(
        "the portal's codes written back",
        Duration::from_secs(10),
        || async { h.status_count(LocalStatus::AwaitingCompletion).await == 20 },
    )
    .await;
    let task = h.load(&ids[3]).await;
    assert_eq!(
        task.portal.map(|p| p.code),
        h.sim().task_by_host_id(&ids[3]).map(|t| t.code)
    );
    assert_eq!(h.sim().stats().duplicate_submissions, 0);
    wait_for(
        "nothing unacknowledged",
        Duration::from_secs(10),
        || async { unacknowledged(&h).await == 0 },
    )
    .await;
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut options = Options {
        concurrency: 2,
        shutdown_grace: 20,
        ..Options::default()
    };
    options.sim.faults = vec![latency(30_000, "POST /tasks")];
    let h = Harness::start(options).await;
    let ids = task_ids("q", 40);
    h.import(&ids).await;
    h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker();
    wait_for("two jobs stuck", Duration::from_secs(10), || async {
        h.queue_counts().await.running == 2
    })
    .await;
    w.signal("TERM");
    // The first signal waits for the stuck jobs (up to 20 s); the second does not.
    assert!(
        w.wait_exit(Duration::from_millis(500)).await.is_none(),
        "still in its grace"
    );
    w.signal("INT");
    let status = w
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("exits at once");
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_real_numbers_behind_its_token() {
    let h = Harness::start(Options {
        dashboard_token: Some("board-token-42".to_owned()),
        ..Options::default()
    })
    .await;
    let ids = task_ids("b", 60);
    h.import(&ids).await;
    let jobs = h.push_submits(&ids, 20).await;
    let mut w = h.spawn_worker_with(&["--dashboard"]);
    w.wait_serving().await;
    wait_for("3 jobs done", Duration::from_secs(20), || async {
        h.queue_counts().await.done == 3
    })
    .await;
    let auth = "Authorization: Bearer board-token-42\r\n";
    let get =
        |path: &'static str, headers: &'static str| harness::http_get_with(w.port, path, headers);

    assert_eq!(
        get("/api/v1/queues", "").await.map(|r| r.0),
        Some(401),
        "no token, no dashboard"
    );
    assert_eq!(
        get("/api/v1/queues", "Authorization: Bearer wrong\r\n")
            .await
            .map(|r| r.0),
        Some(401)
    );
    assert_eq!(
        get("/healthz", "").await.map(|r| r.0),
        Some(200),
        "health is never behind the token"
    );

    let (status, body) = get("/api/v1/queues", auth).await.expect("queues");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sync-jobs"), "{body}");
    let (status, body) = get("/api/v1/queues/sync-jobs/tasks", auth)
        .await
        .expect("tasks");
    assert_eq!(status, 200, "{body}");
    for id in &jobs {
        assert!(body.contains(id.as_str()), "job {id} listed: {body}");
    }
    assert!(
        !body.contains("example.org"),
        "no personal data in the dashboard"
    );
    let (status, body) = get("/api/v1/workers", auth).await.expect("workers");
    assert_eq!(status, 200, "{body}");
    let workers: serde_json::Value = serde_json::from_str(&body).expect("workers JSON");
    assert_eq!(workers.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(workers[0]["queue"], "sync-jobs", "{body}");
    let (status, body) = get("/api/v1/overview", auth).await.expect("overview");
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).expect("overview JSON");
    let stat = |title: &str| {
        overview
            .as_array()
            .and_then(|a| a.iter().find(|s| s["title"] == title))
            .map(|s| s["value"].clone())
    };
    assert_eq!(stat("DONE_JOBS"), Some(json!("3")), "{body}");
    assert_eq!(stat("WORKERS"), Some(json!("1")), "{body}");
    // The remaining routes the UI reads: every queue's tasks, per-queue
    // statistics and workers, and one task's page.
    let (status, body) = get("/api/v1/tasks", auth).await.expect("all tasks");
    assert_eq!(status, 200, "{body}");
    for id in &jobs {
        assert!(body.contains(id.as_str()), "job {id} in all tasks: {body}");
    }
    let (status, body) = get("/api/v1/queues/sync-jobs/stats", auth)
        .await
        .expect("queue stats");
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    let queue_stat = |title: &str| {
        stats
            .as_array()
            .and_then(|a| a.iter().find(|s| s["title"] == title))
            .map(|s| s["value"].clone())
    };
    assert_eq!(queue_stat("DONE_JOBS"), Some(json!("3")), "{body}");
    let (status, body) = get("/api/v1/queues/sync-jobs/workers", auth)
        .await
        .expect("queue workers");
    assert_eq!(status, 200, "{body}");
    let queue_workers: serde_json::Value = serde_json::from_str(&body).expect("workers JSON");
    assert_eq!(queue_workers.as_array().map(Vec::len), Some(1), "{body}");
    let task_path = format!("/api/v1/queues/sync-jobs/tasks/{}", jobs[0]);
    let (status, body) = harness::http_get_with(w.port, &task_path, auth)
        .await
        .expect("one task");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(jobs[0].as_str()), "the task's page: {body}");
    assert!(
        !body.contains("example.org"),
        "no personal data on a task's page"
    );
    let (status, body) = get("/", auth).await.expect("ui");
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!DOCTYPE") || body.contains("<!doctype"),
        "the UI page: {}",
        &body[..body.len().min(200)]
    );
    stop_worker(&mut w).await;
}

/// Every request the simulator has answered, over all endpoints.
fn portal_requests(stats: &portal_api::sim::SimStats) -> u64 {
    stats.requests.values().flat_map(|by| by.values()).sum()
}

/// `(le, cumulative count)` of histogram `name` for the series with `label`.
fn buckets(series: &[(String, f64)], name: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    series
        .iter()
        .filter(|(s, _)| s.starts_with(&prefix) && s.contains(label))
        .filter_map(|(s, v)| {
            let le = s.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect()
}

/// The count of the largest bucket whose bound is below `limit`.
fn count_below(buckets: &[(f64, f64)], limit: f64) -> f64 {
    buckets
        .iter()
        .filter(|(le, _)| *le < limit)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(0.0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_cut_off_retried_and_submitted_once_when_the_portal_is_fast_again()
 {
    const LATENCY_MS: u64 = 4000;
    let mut options = Options {
        job_timeout: 1,
        portal_timeout: 10,
        max_attempts: 8,
        ..Options::default()
    };
    // Slower than the job timeout, faster than the request timeout: only
    // the job timeout can end these attempts.
    options.sim.faults = vec![latency(LATENCY_MS, "POST /tasks")];
    let h = Harness::start(options).await;
    let ids = task_ids("o", 20);
    h.import(&ids).await;
    let mut w = h.spawn_worker();
    w.wait_serving().await;
    let jobs = h.push_submits(&ids, 20).await;

    let retried = r#"portal_sync_jobs_total{kind="submit",outcome="retried"}"#;
    let value = |series: &[(String, f64)], name: &str| {
        series
            .iter()
            .find(|(s, _)| s == name)
            .map_or(0.0, |(_, v)| *v)
    };
    wait_for(
        "two attempts cut off, counted and recorded on the tasks",
        Duration::from_secs(15),
        || async {
            value(&w.metrics().await, retried) >= 2.0
                && h.load(&ids[0]).await.error.is_some_and(|e| e.attempts >= 2)
        },
    )
    .await;
    let series = w.metrics().await;
    let cut = value(&series, retried);
    assert_eq!(
        value(&series, r#"portal_sync_job_retries_total{kind="submit"}"#),
        cut,
        "every cut-off attempt counts as a retry"
    );
    assert_eq!(
        value(
            &series,
            r#"portal_sync_jobs_total{kind="submit",outcome="succeeded"}"#
        ),
        0.0
    );
    // Each attempt lasted the job timeout (1 s), not the portal's 4 s.
    let durations = buckets(
        &series,
        "portal_sync_job_duration_seconds",
        r#"kind="submit""#,
    );
    let attempts_seen = count_below(&durations, f64::INFINITY);
    assert!(attempts_seen >= 2.0, "{durations:?}");
    assert_eq!(
        count_below(&durations, 1.0),
        0.0,
        "no attempt ended before the job timeout: {durations:?}"
    );
    assert_eq!(
        count_below(&durations, LATENCY_MS as f64 / 1000.0),
        attempts_seen,
        "every attempt was cut off before the portal answered: {durations:?}"
    );
    let task = h.load(&ids[0]).await;
    assert_eq!(task.status, LocalStatus::AwaitingSubmission);
    let error = task.error.expect("the task carries the timeout");
    assert!(error.message.contains("job timeout"), "{error:?}");
    let job = h.queue.job(&jobs[0]).await.expect("job").expect("stored");
    assert!(job.attempts >= 2, "{job:?}");
    assert_ne!(job.state, job_queue::JobState::Dead, "{job:?}");
    assert_eq!(h.queue_counts().await.dead, 0);
    assert_eq!(
        h.counts().await.leased,
        20,
        "a job that will be retried keeps its tasks leased"
    );
    assert!(
        h.sim()
            .stats()
            .faults_injected
            .get("latency")
            .is_some_and(|n| *n >= 2),
        "each attempt's POST was slowed"
    );

    h.sim().clear_faults();
    wait_for(
        "20 tasks submitted and the job done",
        Duration::from_secs(15),
        || async {
            h.status_count(LocalStatus::AwaitingCompletion).await == 20
                && h.queue_counts().await.done == 1
        },
    )
    .await;
    let stats = h.sim().stats();
    assert_eq!(stats.tasks_total, 20, "{stats:?}");
    assert_eq!(stats.duplicate_submissions, 0, "{stats:?}");
    assert_eq!(stats.packages_accepted, 1, "{stats:?}");
    let job = h.queue.job(&jobs[0]).await.expect("job").expect("stored");
    assert!(job.attempts as f64 > cut, "{job:?}");
    let series = w.metrics().await;
    assert_eq!(
        value(
            &series,
            r#"portal_sync_jobs_total{kind="submit",outcome="succeeded"}"#
        ),
        1.0
    );
    assert_eq!(h.counts().await.leased, 0, "leases released once done");
    stop_worker(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_requests_stay_within_the_rate_limit() {
    const RATE: f64 = 5.0;
    // The worker's bucket holds one second's worth (worker.rs).
    const BURST: f64 = 5.0;
    // Measure until this many requests: three seconds at the limit.
    const TARGET: u64 = 20;
    let h = Harness::start(Options {
        rate_limit_per_second: Some(RATE),
        concurrency: 8,
        ..Options::default()
    })
    .await;
    // 20 jobs of 5 tasks: 120 requests (a POST and 5 acknowledgements
    // each), which 8 jobs at once would make in well under a second.
    let ids = task_ids("l", 100);
    h.import(&ids).await;
    h.push_submits(&ids, 5).await;
    let sim = h.sim();
    assert_eq!(portal_requests(&sim.stats()), 0);

    // The bucket starts full when the process starts, after this instant:
    // by any later time t the portal can have seen at most
    // BURST + RATE × (t − start) requests of it.
    let start = std::time::Instant::now();
    let mut w = h.spawn_worker();
    let deadline = start + Duration::from_secs(15);
    let (mut n, mut elapsed) = (0, 0.0);
    while n < TARGET {
        n = portal_requests(&sim.stats());
        elapsed = start.elapsed().as_secs_f64();
        let bound = BURST + RATE * elapsed;
        assert!(
            n as f64 <= bound,
            "{n} portal requests after {elapsed:.3} s, more than {BURST} + {RATE}/s × {elapsed:.3} s = {bound:.1}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "only {n} portal requests in {elapsed:.1} s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "rate limit {RATE}/s: {n} portal requests in {elapsed:.2} s since the process started"
    );
    assert!(
        h.status_count(LocalStatus::AwaitingCompletion).await < 100,
        "the limit, not the work, set the pace"
    );
    assert_eq!(sim.stats().duplicate_submissions, 0);
    w.signal("KILL");
    w.wait_exit(Duration::from_secs(5)).await.expect("killed");
}

/// The API routes the dashboard UI reads.
const UI_API_ROUTES: &[&str] = &[
    "/api/v1/overview",
    "/api/v1/queues",
    "/api/v1/workers",
    "/api/v1/tasks",
    "/api/v1/queues/sync-jobs/tasks",
    "/api/v1/queues/sync-jobs/stats",
    "/api/v1/queues/sync-jobs/workers",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opens_the_dashboard_once_with_the_token_then_uses_its_cookie() {
    const TOKEN: &str = "tok-9f27c1e4b8d0";
    let h = Harness::start(Options {
        dashboard_token: Some(TOKEN.to_owned()),
        ..Options::default()
    })
    .await;
    let ids = task_ids("u", 20);
    h.import(&ids).await;
    let jobs = h.push_submits(&ids, 20).await;
    // Everything the binary logs, at every level, goes to a file.
    let mut w = h.spawn_worker_logged(&["--dashboard"], "trace");
    w.wait_serving().await;
    wait_for("the job done", Duration::from_secs(20), || async {
        h.queue_counts().await.done == 1
    })
    .await;
    let get = |path: String, headers: String| async move {
        harness::http_request(w.port, &path, &headers)
            .await
            .expect("an answer")
    };

    for path in ["/", "/api/v1/queues"] {
        let r = get(path.into(), String::new()).await;
        assert_eq!(r.status, 401, "no token: {path}");
    }
    let r = get("/?token=tok-wrong".into(), String::new()).await;
    assert_eq!(r.status, 401, "wrong token");
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    let r = get(
        "/api/v1/queues".into(),
        "Cookie: portal_sync_dashboard=tok-wrong\r\n".into(),
    )
    .await;
    assert_eq!(r.status, 401, "wrong cookie");

    // The login: a redirect to the URL without the token, and the cookie.
    let r = get(format!("/?token={TOKEN}"), String::new()).await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/"));
    let set = r.header("set-cookie").expect("a cookie").to_owned();
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    assert_eq!(
        attributes[0],
        format!("portal_sync_dashboard={TOKEN}"),
        "{set}"
    );
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&a), "{a} in {set}");
    }

    // The cookie alone: the page, its script, every API route it reads.
    let cookie = format!("Cookie: {}\r\n", attributes[0]);
    let page = get("/".into(), cookie.clone()).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html"), "the UI page");
    let script = page
        .body
        .split("from '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("the page imports its script")
        .to_owned();
    let r = get(script.clone(), cookie.clone()).await;
    assert_eq!(r.status, 200, "{script}");
    for path in UI_API_ROUTES {
        let r = get((*path).into(), cookie.clone()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let r = get(
        format!("/api/v1/queues/sync-jobs/tasks/{}", jobs[0]),
        cookie.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "one task's page");
    assert!(r.body.contains(jobs[0].as_str()), "{}", r.body);
    // Scripts keep the header.
    let r = get(
        "/api/v1/queues".into(),
        format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("sync-jobs"), "{}", r.body);

    stop_worker(&mut w).await;
    let logs = w.log_text();
    assert!(
        logs.contains("token accepted, session cookie set"),
        "the login is logged (without the token)"
    );
    assert!(logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""));
    assert!(!logs.contains(TOKEN), "the token in the logs");
    assert!(!logs.contains("tok-wrong"), "a wrong token in the logs");
}
