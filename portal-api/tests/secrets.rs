//! The API key never appears in `Debug`, `Display`, errors or logs: every
//! error class is produced through real calls (the simulator and a portal
//! that breaks the contract), formatted both ways and searched for the key,
//! with all tracing output captured and searched too.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portal_api::sim::{FaultKind, FaultRule};
use portal_api::wire::{TaskQuery, TaskUpdate};
use portal_api::{Client, ClientConfig, ClientIdentity, Pem, PortalError};
use secrecy::SecretString;
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} leaks the API key: {text}");
    // Not even a long prefix of it.
    assert!(
        !text.contains(&KEY[..12]),
        "{what} leaks part of the API key: {text}"
    );
}

#[tokio::test]
async fn the_api_key_appears_in_no_error_debug_output_or_log() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = sim().await;
    let odd = support::odd_portal::start().await;
    let client = client(sim.url());
    let odd_client = client_with_page(&odd.url, 3);
    let handle = sim.handle();
    let mut errors: Vec<PortalError> = Vec::new();

    // Config: a key that is not a valid header value must not be echoed.
    let bad_key = format!("{KEY}\u{7}tail");
    errors.push(
        Client::new(ClientConfig::new(sim.url(), SecretString::from(bad_key))).expect_err("config"),
    );
    errors.push(
        Client::new(
            client_config(sim.url())
                .with_client_identity(ClientIdentity::Combined(Pem::inline(KEY))),
        )
        .expect_err("bad identity"),
    );
    // Network: connect refused, timeout, interruption.
    errors.push(
        Client::new(client_config("http://127.0.0.1:1"))
            .expect("client")
            .get_task("T1")
            .await
            .expect_err("connect"),
    );
    handle
        .set_faults(vec![
            FaultRule::new(FaultKind::Hang { ms: Some(2_000) }).on("GET /tasks/@{code}"),
        ])
        .expect("rule");
    let quick = Client::new(client_config(sim.url()).with_timeout(Duration::from_millis(200)))
        .expect("client");
    errors.push(quick.get_task("T1").await.expect_err("timeout"));
    handle
        .set_faults(vec![FaultRule::new(FaultKind::Drop).on("GET /tasks")])
        .expect("rule");
    errors.push(
        client
            .list_tasks(&TaskQuery::default())
            .await
            .expect_err("drop"),
    );
    handle.clear_faults();
    // Unauthorized: a simulator that expects another key.
    let other = start_sim(portal_api::sim::SimConfig::new("another-key")).await;
    errors.push(
        support::client(other.url())
            .get_task("T1")
            .await
            .expect_err("401"),
    );
    // Rejected, TaskAlreadySubmitted, NotFound, Conflict, Status.
    let mut invalid = task("bad");
    invalid.subject.users[0].email = None;
    errors.push(client.submit_tasks(&[invalid]).await.expect_err("400"));
    let stored = client.submit_tasks(&tasks("s", 1)).await.expect("submit");
    errors.push(client.submit_tasks(&tasks("s", 1)).await.expect_err("dup"));
    errors.push(
        client
            .update_task("T404", &TaskUpdate::default())
            .await
            .expect_err("404"),
    );
    handle.start_task(&stored[0].code).expect("start");
    errors.push(
        client
            .acknowledge_task(&stored[0].code, 1)
            .await
            .expect_err("409"),
    );
    handle
        .set_faults(vec![FaultRule::new(FaultKind::Error {
            status: 429,
            retry_after: Some(1),
        })])
        .expect("rule");
    errors.push(client.get_task("T1").await.expect_err("429"));
    // Decode (malformed and truncated).
    handle
        .set_faults(vec![FaultRule::new(FaultKind::Malformed)])
        .expect("rule");
    errors.push(client.get_task("T1").await.expect_err("malformed"));
    handle
        .set_faults(vec![FaultRule::new(FaultKind::Truncate)])
        .expect("rule");
    errors.push(
        client
            .list_tasks(&TaskQuery::default())
            .await
            .expect_err("truncated"),
    );
    handle.clear_faults();
    // The odd portal: protocol breach, a wrong type, and key echoes.
    errors.push(
        odd_client
            .list_tasks(&TaskQuery::default())
            .await
            .expect_err("protocol"),
    );
    errors.push(odd_client.get_task("T1").await.expect_err("decode"));
    errors.push(
        odd_client
            .update_task("T1", &TaskUpdate::default())
            .await
            .expect_err("echoing 500"),
    );
    errors.push(odd_client.delete_task("T1").await.expect_err("echoing 400"));

    let mut seen = std::collections::BTreeSet::new();
    for err in &errors {
        let name = format!("{err:?}");
        let variant = name.split([' ', '{', '(']).next().unwrap_or("").to_owned();
        seen.insert(variant);
        assert_no_key("Debug", &format!("{err:?}"));
        assert_no_key("Display", &format!("{err}"));
        assert_no_key("alternate Debug", &format!("{err:#?}"));
    }
    for variant in [
        "Config",
        "Network",
        "Unauthorized",
        "Rejected",
        "TaskAlreadySubmitted",
        "NotFound",
        "Conflict",
        "Status",
        "Decode",
        "Protocol",
    ] {
        assert!(
            seen.contains(variant),
            "no {variant} error produced: {seen:?}"
        );
    }
    // The echoed key was scrubbed, not just absent by luck.
    let echoed = format!("{}", errors[errors.len() - 2]);
    assert!(echoed.contains("[redacted]"), "{echoed}");

    assert_no_key("Client Debug", &format!("{client:?}"));
    assert_no_key(
        "ClientConfig Debug",
        &format!("{:?}", client_config(sim.url())),
    );
    assert_no_key(
        "SimConfig Debug",
        &format!("{:?}", portal_api::sim::SimConfig::new(KEY)),
    );
    drop(_guard);
    let logs = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        logs.contains("portal call"),
        "debug events were captured: {logs}"
    );
    assert_no_key("logs", &logs);
}
