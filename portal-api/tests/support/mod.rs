//! Shared test setup: start a simulator, build a client for it, make tasks.
#![allow(dead_code)]

pub mod odd_portal;

use std::time::Duration;

use portal_api::sim::{RunningSim, SimConfig, Simulator};
use portal_api::{Client, ClientConfig};
use secrecy::SecretString;
use serde_json::json;
use task_model::{HostTask, Subject, User};

pub const KEY: &str = "sk-test-7f3a9c1e-TOPSECRET";

pub async fn start_sim(config: SimConfig) -> RunningSim {
    Simulator::start(config).await.expect("simulator starts")
}

pub async fn sim() -> RunningSim {
    start_sim(SimConfig::new(KEY)).await
}

pub fn client_config(url: &str) -> ClientConfig {
    ClientConfig::new(url, SecretString::from(KEY.to_owned())).with_timeout(Duration::from_secs(5))
}

pub fn client(url: &str) -> Client {
    Client::new(client_config(url)).expect("client builds")
}

pub fn client_with_page(url: &str, page: usize) -> Client {
    Client::new(client_config(url).with_page_size(page)).expect("client builds")
}

/// A valid task; `pad` adds that many items to the instrument (about 100
/// bytes each) to reach a realistic size.
pub fn task_padded(id: &str, pad: usize) -> HostTask {
    let fields: Vec<_> = (0..pad.max(1))
        .map(|i| json!({"id": format!("q{i:03}"), "type": "text", "description": "How often did this happen in the last two weeks?"}))
        .collect();
    HostTask {
        host_system_id: id.to_owned(),
        display_name: format!("Questionnaire for {id}"),
        instrument: json!({"id": "urn:phq-test", "version": "1.0", "title": "Test instrument", "record": fields}).into(),
        form: json!({"instrument": {"id": "urn:phq-test", "version": "1.0"}, "defaultLocalization": "en", "pages": [{"id": "p1", "elements": []}]}).into(),
        subject: Subject {
            host_system_id: format!("subj-{id}"),
            display_name: "Subject".to_owned(),
            users: vec![User {
                host_system_id: format!("user-{id}"),
                display_name: "Parent".to_owned(),
                email: Some(format!("parent-{id}@example.org")),
            }],
        },
        parameters: None,
        assessment: None,
    }
}

pub fn task(id: &str) -> HostTask {
    task_padded(id, 1)
}

pub fn tasks(prefix: &str, n: usize) -> Vec<HostTask> {
    (0..n).map(|i| task(&format!("{prefix}-{i:03}"))).collect()
}
