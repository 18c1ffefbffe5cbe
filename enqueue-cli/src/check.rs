//! `portal-sync check`: are the settings valid, and does every dependency
//! answer? Each check reports its result and latency; the command fails
//! (exit 3) if any does, or exit 2 if the settings themselves are bad.
//!
//! The portal check makes one cheap authenticated request,
//! `GET /tasks?limit=1&offset=0`, so a wrong API key or a certificate problem
//! shows here rather than in the workers. The key itself is never printed.

use std::time::{Duration, Instant};

use portal_api::wire::TaskQuery;
use portal_api::{Client, ClientConfig, PortalError};
use serde::Serialize;
use task_model::settings::Settings;
use task_model::store::TaskStore;

use crate::cli::CheckArgs;
use crate::context::{connect_redis, load_settings, open_task_store};
use crate::exit::{CommandError, ExitStatus};
use crate::output::print_json;

/// Longest a store or Redis check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// `settings`, `redis`, `store`, `portal`.
    pub name: &'static str,
    /// What was checked (a path or a URL without its password).
    pub target: String,
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `--json` form of `check`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

async fn timed<T, E: std::fmt::Display>(
    name: &'static str,
    target: String,
    limit: Duration,
    work: impl Future<Output = Result<T, E>>,
    detail: impl FnOnce(&T) -> Option<String>,
) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(limit, work).await;
    let latency_ms = ms(started.elapsed());
    let (ok, detail, error) = match outcome {
        Ok(Ok(v)) => (true, detail(&v), None),
        Ok(Err(e)) => (false, None, Some(e.to_string())),
        Err(_) => (
            false,
            None,
            Some(format!(
                "no answer within {}",
                crate::output::human_duration(limit)
            )),
        ),
    };
    CheckResult {
        name,
        target,
        ok,
        latency_ms,
        detail,
        error,
    }
}

/// What to do about a failed portal check.
fn portal_hint(e: &PortalError) -> String {
    let text = e.to_string();
    if matches!(e, PortalError::Unauthorized { .. }) {
        format!(
            "{text} (the portal refused the API key: check `portal_client.api_key` or `api_key_file`)"
        )
    } else {
        format!("{text} (check `portal_client.url`, the network and any client certificate)")
    }
}

/// Runs `check`.
pub async fn run_check(
    config_path: &std::path::Path,
    args: &CheckArgs,
) -> Result<ExitStatus, CommandError> {
    let started = Instant::now();
    let settings = load_settings(config_path);
    let settings_check = CheckResult {
        name: "settings",
        target: config_path.display().to_string(),
        ok: settings.is_ok(),
        latency_ms: ms(started.elapsed()),
        detail: None,
        error: settings.as_ref().err().map(|e| e.to_string()),
    };
    let settings: Settings = match settings {
        Ok(s) => s,
        Err(e) => {
            if args.json {
                print_json(&CheckReport {
                    ok: false,
                    checks: vec![settings_check],
                });
            } else {
                println!("FAIL  settings  {}", config_path.display());
            }
            return Err(e);
        }
    };

    let redis = timed(
        "redis",
        settings.redis.url.redacted().to_string(),
        CHECK_TIMEOUT,
        async {
            let mut conn = connect_redis(&settings).await?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| CommandError::redis(settings.redis.url.redacted(), e))?;
            Ok::<_, CommandError>(pong)
        },
        |_| Some(format!("namespace {}", settings.redis.namespace)),
    )
    .await;

    let store = timed(
        "store",
        settings.store.url.redacted().to_string(),
        CHECK_TIMEOUT,
        async {
            let store = open_task_store(&settings).await?;
            store
                .counts(chrono::Utc::now())
                .await
                .map_err(|e| CommandError::store(settings.store.url.redacted(), e))
        },
        |counts| Some(format!("{} task(s)", counts.total)),
    )
    .await;

    let portal_settings = &settings.portal_client;
    let portal = timed(
        "portal",
        format!(
            "GET {}/tasks?limit=1",
            portal_settings.url.redacted().trim_end_matches('/')
        ),
        portal_settings.timeout + Duration::from_secs(1),
        async {
            let client =
                Client::new(ClientConfig::from(portal_settings)).map_err(|e| portal_hint(&e))?;
            client
                .list_tasks_page(&TaskQuery::default(), 1, 0)
                .await
                .map_err(|e| portal_hint(&e))
        },
        |_| Some("API key accepted".to_string()),
    )
    .await;

    let checks = vec![settings_check, redis, store, portal];
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        print_json(&CheckReport {
            ok: failed == 0,
            checks: checks.clone(),
        });
    } else {
        for c in &checks {
            let status = if c.ok { "ok  " } else { "FAIL" };
            let note = c
                .error
                .as_deref()
                .or(c.detail.as_deref())
                .unwrap_or_default();
            println!(
                "{status}  {:<8}  {:>8.1} ms  {}  {note}",
                c.name, c.latency_ms, c.target
            );
        }
    }
    for c in checks.iter().filter(|c| !c.ok) {
        eprintln!(
            "portal-sync: check {} ({}) failed: {}",
            c.name,
            c.target,
            c.error.as_deref().unwrap_or("unknown error")
        );
    }
    if failed > 0 {
        Err(CommandError::ChecksFailed(failed))
    } else {
        Ok(ExitStatus::Done)
    }
}
