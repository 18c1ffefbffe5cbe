//! Every fault mode of the simulator, and how the client classifies it.

mod support;

use std::time::{Duration, Instant};

use portal_api::sim::{FaultKind, FaultRule, SimConfig};
use portal_api::wire::TaskQuery;
use portal_api::{Client, NetworkErrorKind, PortalError};
use support::*;

fn error_rule(status: u16, retry_after: Option<u64>) -> FaultRule {
    FaultRule::new(FaultKind::Error {
        status,
        retry_after,
    })
}

#[tokio::test]
async fn injected_server_errors_are_retryable_and_429_carries_retry_after() {
    let sim = sim().await;
    let client = client(sim.url());
    let handle = sim.handle();
    for status in [500u16, 502, 503] {
        handle
            .set_faults(vec![error_rule(status, None)])
            .expect("rule");
        let err = client.get_task("T1").await.expect_err("fault");
        assert!(
            matches!(err, PortalError::Status { status: s, .. } if s == status),
            "{err:?}"
        );
        assert!(err.is_retryable(), "{status}");
        assert_eq!(err.retry_after(), None);
    }
    handle
        .set_faults(vec![error_rule(429, Some(7))])
        .expect("rule");
    let err = client.get_task("T1").await.expect_err("429");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    handle
        .set_faults(vec![error_rule(422, None)])
        .expect("rule");
    let err = client.get_task("T1").await.expect_err("422");
    assert!(!err.is_retryable(), "{err:?}");
    handle.clear_faults();
    assert_eq!(client.get_task("T1").await.expect("healthy again"), None);
    assert_eq!(handle.stats().faults_injected.get("error"), Some(&5));
}

#[tokio::test]
async fn a_rule_for_one_endpoint_leaves_the_others_alone_and_times_limits_it() {
    let sim = sim().await;
    let client = client(sim.url());
    sim.handle()
        .set_faults(vec![error_rule(503, None).on("POST /tasks").times(2)])
        .expect("rule");
    assert!(client.list_tasks(&TaskQuery::default()).await.is_ok());
    for _ in 0..2 {
        let err = client.submit_tasks(&tasks("e", 1)).await.expect_err("503");
        assert_eq!(err.status(), Some(503));
    }
    assert_eq!(
        client
            .submit_tasks(&tasks("e", 1))
            .await
            .expect("third")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_retryable_interruption_after_the_work_was_done() {
    let sim = sim().await;
    let client = client(sim.url());
    sim.handle()
        .set_faults(vec![
            FaultRule::new(FaultKind::Drop).on("POST /tasks").times(1),
        ])
        .expect("rule");
    let err = client
        .submit_tasks(&tasks("x", 2))
        .await
        .expect_err("dropped");
    assert!(
        matches!(
            err,
            PortalError::Network {
                kind: NetworkErrorKind::Interrupted,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    // The portal stored the package; a retry is recognised as a duplicate.
    assert_eq!(sim.handle().stats().tasks_total, 2);
    let again = client.submit_tasks(&tasks("x", 2)).await.expect_err("dup");
    assert!(matches!(err_kind(&again), "already"), "{again:?}");
}

fn err_kind(e: &PortalError) -> &'static str {
    match e {
        PortalError::TaskAlreadySubmitted { .. } => "already",
        _ => "other",
    }
}

#[tokio::test]
async fn a_hanging_portal_is_a_retryable_timeout() {
    let sim = sim().await;
    let client = Client::new(client_config(sim.url()).with_timeout(Duration::from_millis(300)))
        .expect("client");
    sim.handle()
        .set_faults(vec![FaultRule::new(FaultKind::Hang { ms: None })])
        .expect("rule");
    let started = Instant::now();
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("hang");
    assert!(
        matches!(
            err,
            PortalError::Network {
                kind: NetworkErrorKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3));
    sim.shutdown().await; // releases the hung request
}

#[tokio::test]
async fn malformed_json_is_an_undecodable_response_naming_the_path() {
    let sim = sim().await;
    let client = client(sim.url());
    sim.handle()
        .set_faults(vec![FaultRule::new(FaultKind::Malformed)])
        .expect("rule");
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("bad json");
    match &err {
        PortalError::Decode {
            path, truncated, ..
        } => {
            assert!(path.starts_with("tasks"), "{path}");
            assert!(!truncated);
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("GET http://"), "{err}");
}

#[tokio::test]
async fn a_truncated_body_is_a_retryable_decode_error() {
    let sim = sim().await;
    let client = client(sim.url());
    client.submit_tasks(&tasks("t", 3)).await.expect("submit");
    sim.handle()
        .set_faults(vec![FaultRule::new(FaultKind::Truncate).on("GET /tasks")])
        .expect("rule");
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("truncated");
    assert!(
        matches!(
            err,
            PortalError::Decode {
                truncated: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn accept_then_fail_stores_the_package_and_answers_500() {
    let sim = sim().await;
    let client = client(sim.url());
    sim.handle()
        .set_faults(vec![
            FaultRule::new(FaultKind::AcceptThenFail)
                .on("POST /tasks")
                .times(1),
        ])
        .expect("rule");
    let err = client.submit_tasks(&tasks("a", 3)).await.expect_err("500");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_retryable());
    let stats = sim.handle().stats();
    assert_eq!(stats.tasks_total, 3);
    assert_eq!(stats.requests_with("POST /tasks", 500), 1);
    // The naive retry is answered with the duplicate error, id included.
    let again = client.submit_tasks(&tasks("a", 3)).await.expect_err("dup");
    match again {
        PortalError::TaskAlreadySubmitted { host_system_id, .. } => {
            assert_eq!(host_system_id.as_deref(), Some("a-000"));
        }
        other => panic!("expected TaskAlreadySubmitted, got {other:?}"),
    }
}

#[tokio::test]
async fn latency_is_added_fixed_or_within_a_range() {
    let mut config = SimConfig::new(KEY);
    config.faults = vec![FaultRule::parse_flag("latency:300@GET /tasks/@{code}").expect("flag")];
    let sim = start_sim(config).await;
    let client = client(sim.url());
    let started = Instant::now();
    client.get_task("T1").await.expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    client
        .list_tasks(&TaskQuery::default())
        .await
        .expect("other endpoint");
    assert!(started.elapsed() < Duration::from_millis(300));
    sim.handle()
        .set_faults(vec![FaultRule::parse_flag("latency:50-80").expect("flag")])
        .expect("rule");
    let started = Instant::now();
    client
        .list_tasks(&TaskQuery::default())
        .await
        .expect("range");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(50), "{took:?}");
    assert_eq!(
        sim.handle().stats().faults_injected.get("latency"),
        Some(&2)
    );
}

#[tokio::test]
async fn an_error_rate_is_deterministic_for_a_seed() {
    async fn failures(seed: u64) -> Vec<bool> {
        let mut config = SimConfig::new(KEY);
        config.seed = seed;
        config.faults = vec![error_rule(503, None).rate(0.5)];
        let sim = start_sim(config).await;
        let client = client(sim.url());
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(client.get_task("T1").await.is_err());
        }
        out
    }
    let a = failures(42).await;
    assert_eq!(a, failures(42).await);
    let n = a.iter().filter(|f| **f).count();
    assert!((8..=32).contains(&n), "{n} of 40 failed at rate 0.5");
}
