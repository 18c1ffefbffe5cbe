//! `sync-worker`: drains the portal-sync job queue until signalled.
//!
//! ```text
//! sync-worker --config portal-sync.yaml [--concurrency N] [--queue NAME]
//!             [--log-format auto|json|text] [--http-bind ADDR] [--dashboard]
//! ```
//!
//! Every settings key can be overridden with `PORTAL_SYNC__<BLOCK>__<KEY>`
//! (see the settings documentation). SIGTERM or SIGINT stops it gracefully
//! (exit 0); a second signal stops it at once (exit 130).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sync_worker::logging::{LogFormat, init_logging};
use sync_worker::{Overrides, Worker, WorkerIdentity};
use task_model::{Env, Settings};
use tokio_util::sync::CancellationToken;

/// Takes sync jobs from the queue, calls the Patient Portal, writes results
/// back to the task store. Run any number of copies.
#[derive(Debug, Parser)]
#[command(name = "sync-worker", version, about, long_about = None)]
struct Cli {
    /// The settings file (YAML).
    #[arg(long, short = 'c', env = "PORTAL_SYNC_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Jobs run at once by this process (default: `worker.concurrency`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Option<u32>,
    /// The queue to work.
    #[arg(long, value_name = "NAME", default_value = task_model::QUEUE_NAME)]
    queue: String,
    /// Log format: JSON lines, readable text, or auto (JSON unless on a terminal).
    #[arg(long, value_enum, default_value = "auto")]
    log_format: LogFormat,
    /// Listen address of /healthz, /readyz, /metrics (default: `worker.http_bind`).
    #[arg(long, value_name = "ADDR")]
    http_bind: Option<SocketAddr>,
    /// Seconds between checks whether the portal accepts our key again,
    /// after it refused it.
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    auth_retry_interval: f64,
    /// Seconds a job stays leased to a worker that stopped renewing it
    /// (killed, frozen) before another worker takes it over (default 30).
    #[arg(long, value_name = "SECONDS")]
    lease_timeout: Option<f64>,
    /// Serve the queue dashboard (apalis-board UI and API) on the HTTP
    /// listener, behind `worker.dashboard_token` when that is set.
    #[arg(long)]
    dashboard: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let settings = match Settings::load(&cli.config, &Env::from_process()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "settings are not usable");
            eprintln!("sync-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sync-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sync-worker failed");
            eprintln!("sync-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    sync_worker::signals::spawn_signal_listener(shutdown.clone())
        .context("installing the SIGTERM/SIGINT handlers")?;
    let auth_probe_every = Duration::try_from_secs_f64(cli.auth_retry_interval)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--auth-retry-interval must be a positive number of seconds")?;
    let lease_timeout = match cli.lease_timeout {
        None => None,
        Some(s) => Some(
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| *d >= Duration::from_millis(100))
                .context("--lease-timeout must be at least 0.1 seconds")?,
        ),
    };
    let identity = WorkerIdentity::generate();
    let overrides = Overrides {
        concurrency: cli.concurrency.map(|c| c as usize),
        queue: Some(cli.queue),
        http_bind: cli.http_bind,
        auth_probe_every,
        lease_timeout,
        dashboard: cli.dashboard,
        identity: identity.clone(),
    };
    let worker = tokio::select! {
        w = Worker::connect(&settings, overrides) => w.context("starting the worker")?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    if let Some(addr) = worker.http_addr() {
        tracing::info!(worker = %identity, http = %addr, dashboard = cli.dashboard, "serving /healthz, /readyz, /metrics");
    }
    worker.run(shutdown).await.context("running the worker")?;
    Ok(())
}
