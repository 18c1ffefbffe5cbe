//! The worker's HTTP server: `/healthz`, `/readyz` and `/metrics` (and the
//! queue dashboard when enabled, mounted by the caller with
//! [`HttpServer::with_router`]).
//!
//! - `/healthz` answers 200 while the process runs: it does no I/O, so a
//!   liveness probe never kills a worker for a slow Redis.
//! - `/readyz` answers 200 only when Redis and the store answer and the
//!   portal is not refusing our key; otherwise 503. The body says which
//!   check failed, in JSON.
//! - `/metrics` is the Prometheus text exposition of [`Metrics`]; the queue
//!   gauges and `worker_ready` are brought up to date at scrape time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Default bind address of the worker's HTTP server.
pub const DEFAULT_HTTP_BIND: &str = "127.0.0.1:9102";

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of one readiness check: `None` when fine, else why not.
pub type CheckResult = Option<String>;

/// What `/readyz` and `/metrics` need to ask the rest of the worker.
pub trait Probes: Send + Sync + 'static {
    /// Is Redis reachable? `None` when it is.
    fn check_queue(&self) -> BoxFuture<'_, CheckResult>;
    /// Is the task store reachable? `None` when it is.
    fn check_store(&self) -> BoxFuture<'_, CheckResult>;
    /// Is the portal refusing our key? `Some(reason)` while it does.
    fn check_portal(&self) -> CheckResult;
    /// Pending, running and dead job counts of the queue, for the gauges.
    fn queue_counts(&self) -> BoxFuture<'_, Option<(u64, u64, u64)>>;
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    probes: Arc<dyn Probes>,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub redis: String,
    pub store: String,
    pub portal: String,
}

fn describe(check: &CheckResult) -> String {
    match check {
        None => "ok".to_owned(),
        Some(why) => why.clone(),
    }
}

async fn with_timeout(what: &str, fut: BoxFuture<'_, CheckResult>) -> CheckResult {
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Some(format!("{what} did not answer within {CHECK_TIMEOUT:?}")),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Runs every readiness check (each bounded by [`CHECK_TIMEOUT`]) and keeps
/// the `worker_ready` gauge in step.
async fn ready_report(state: &AppState) -> ReadyReport {
    let (redis, store) = tokio::join!(
        with_timeout("redis", state.probes.check_queue()),
        with_timeout("store", state.probes.check_store()),
    );
    let portal = state.probes.check_portal();
    let ready = redis.is_none() && store.is_none() && portal.is_none();
    state.metrics.set_ready(ready);
    ReadyReport {
        ready,
        redis: describe(&redis),
        store: describe(&store),
        portal: describe(&portal),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let report = ready_report(&state).await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn serve_metrics(State(state): State<AppState>) -> Response {
    ready_report(&state).await;
    if let Ok(Some((pending, running, dead))) =
        tokio::time::timeout(CHECK_TIMEOUT, state.probes.queue_counts()).await
    {
        state.metrics.set_queue(pending, running, dead);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The bound HTTP server, before it runs.
pub struct HttpServer {
    listener: TcpListener,
    router: Router,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port; see [`HttpServer::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Metrics,
        probes: Arc<dyn Probes>,
    ) -> Result<HttpServer, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(serve_metrics))
            .with_state(AppState { metrics, probes });
        Ok(HttpServer { listener, router })
    }

    /// Adds more routes (the dashboard) beside the built-in ones.
    pub fn with_router(mut self, extra: Router) -> HttpServer {
        self.router = self.router.merge(extra);
        self
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), HttpError> {
        let addr = self
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|source| HttpError::Serve { addr, source })
    }
}
