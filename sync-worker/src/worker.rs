//! One worker process's run: the apalis worker on the Redis backend with the
//! [`JobService`], the HTTP server, the portal key probe, and the graceful
//! shutdown that ties them together.
//!
//! ```text
//! stop requested ──► apalis stops fetching; jobs fetched but not started go
//!                    back to the queue at once; running jobs finish
//!                ──► within `shutdown_grace`? done : the rest are dropped and
//!                    their leases released by the backend
//!                ──► backend drained (every outcome written, nothing leased)
//!                ──► HTTP server and probe stop ──► run returns
//! ```
//!
//! `Worker` is also what `portal-sync demo` runs in-process: build it from
//! parts with [`Worker::new`] and call [`Worker::run`] with a token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use job_queue::JobQueue;
use task_model::store::{AnyStore, TaskStore};
use task_model::{Settings, SyncJob};
use tokio_util::sync::CancellationToken;

use crate::auth_gate::AuthGate;
use crate::handlers::JobContext;
use crate::http::{CheckResult, HttpError, HttpServer, Probes};
use crate::identity::WorkerIdentity;
use crate::job::{JobLimits, JobService};
use crate::metrics::Metrics;
use crate::portal::Portal;

/// How one worker runs, beside its queue, store and portal.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub identity: WorkerIdentity,
    /// Where `/healthz`, `/readyz`, `/metrics` are served; `None`: nowhere.
    pub http_bind: Option<SocketAddr>,
    /// Time running jobs get to finish after a stop request.
    pub shutdown_grace: Duration,
    /// Per-attempt limits and retry delays.
    pub limits: JobLimits,
    /// How often the portal is asked whether it accepts our key again.
    pub auth_probe_every: Duration,
}

/// Why a worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Queue(#[from] job_queue::QueueError),
    #[error(transparent)]
    Store(#[from] task_model::store::StoreError),
    #[error(transparent)]
    Portal(#[from] portal_api::PortalError),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// `true` if running jobs were still going when the grace ran out (they
    /// were dropped and their leases released).
    pub grace_exceeded: bool,
}

/// A worker, ready to run.
pub struct Worker {
    ctx: JobContext,
    queue: JobQueue,
    gate: AuthGate,
    options: WorkerOptions,
    http: Option<HttpServer>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("identity", &self.options.identity)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

struct WorkerProbes {
    queue: JobQueue,
    store: AnyStore,
    gate: AuthGate,
}

impl Probes for WorkerProbes {
    fn check_queue(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            match self.queue.counts().await {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        })
    }

    fn check_store(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            // One indexed lookup of an id that never exists: a round trip to
            // the database, no scan.
            match self.store.load(&["readyz-probe\u{0}".to_owned()]).await {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        })
    }

    fn check_portal(&self) -> CheckResult {
        self.gate.refusal()
    }

    fn queue_counts(&self) -> BoxFuture<'_, Option<(u64, u64, u64)>> {
        Box::pin(async move {
            self.queue
                .counts()
                .await
                .ok()
                .map(|c| (c.pending + c.scheduled, c.running, c.dead))
        })
    }
}

/// What the command line may change over the settings file.
#[derive(Clone, Debug)]
pub struct Overrides {
    /// Jobs at once (`worker.concurrency` otherwise).
    pub concurrency: Option<usize>,
    /// The queue to work (`sync-jobs` otherwise).
    pub queue: Option<String>,
    /// HTTP listener (`worker.http_bind` otherwise).
    pub http_bind: Option<SocketAddr>,
    /// How often to ask the portal whether it accepts our key again.
    pub auth_probe_every: Duration,
    /// Job lease lifetime without renewal (the queue's default otherwise).
    pub lease_timeout: Option<Duration>,
    /// Serve the queue dashboard on the HTTP listener.
    pub dashboard: bool,
    pub identity: WorkerIdentity,
}

impl Worker {
    /// Connects everything the settings name: the store, the queue, the
    /// portal client; binds the HTTP server.
    pub async fn connect(settings: &Settings, overrides: Overrides) -> Result<Worker, WorkerError> {
        let concurrency = overrides
            .concurrency
            .unwrap_or(settings.worker.concurrency)
            .max(1);
        let queue_name = overrides.queue.as_deref().unwrap_or(task_model::QUEUE_NAME);
        let store = task_model::store::open_store_with(
            settings.store.url.expose(),
            settings.store.pool_size,
        )
        .await?;
        let queue = JobQueue::connect(crate::settings::queue_config(
            settings,
            queue_name,
            concurrency,
            overrides.lease_timeout,
        )?)
        .await?;
        let client = portal_api::Client::new(crate::settings::portal_client_config(
            &settings.portal_client,
        ))?;
        let rate_limit = settings
            .worker
            .rate_limit_per_second
            .filter(|r| *r > 0.0)
            .map(|r| {
                // A burst of one second's worth, at least one request.
                let burst = u32::try_from(r.ceil() as u64).unwrap_or(u32::MAX).max(1);
                Arc::new(crate::rate_limit::RateLimiter::new(r, burst))
            });
        let options = WorkerOptions {
            identity: overrides.identity,
            http_bind: Some(overrides.http_bind.unwrap_or(settings.worker.http_bind)),
            shutdown_grace: settings.worker.shutdown_grace,
            limits: crate::settings::job_limits(settings, overrides.auth_probe_every),
            auth_probe_every: overrides.auth_probe_every,
        };
        let dashboard = overrides.dashboard.then(|| {
            crate::dashboard::dashboard_routes(&queue, settings.worker.dashboard_token.clone())
        });
        let worker = Worker::new(queue, store, client, rate_limit, options).await?;
        Ok(match dashboard {
            Some(routes) => worker.with_routes(routes),
            None => worker,
        })
    }

    /// Builds a worker from its parts and binds its HTTP server (if any).
    /// The queue's `concurrency` is the number of jobs run at once.
    pub async fn new(
        queue: JobQueue,
        store: AnyStore,
        client: portal_api::Client,
        rate_limit: Option<Arc<crate::rate_limit::RateLimiter>>,
        options: WorkerOptions,
    ) -> Result<Worker, WorkerError> {
        let metrics = Metrics::new();
        let portal = Portal::new(client, rate_limit, metrics.clone());
        let gate = AuthGate::new();
        let http = match options.http_bind {
            Some(addr) => {
                let probes = Arc::new(WorkerProbes {
                    queue: queue.clone(),
                    store: store.clone(),
                    gate: gate.clone(),
                });
                Some(HttpServer::bind(addr, metrics.clone(), probes).await?)
            }
            None => None,
        };
        let batch = crate::store_batch::StoreBatcher::start(store.clone(), metrics.clone());
        Ok(Worker {
            ctx: JobContext {
                store,
                batch,
                portal,
                metrics,
            },
            queue,
            gate,
            options,
            http,
        })
    }

    /// Where the HTTP server listens (useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpServer::local_addr)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// Adds routes (the dashboard) to the HTTP server.
    pub fn with_routes(mut self, routes: axum::Router) -> Worker {
        self.http = self.http.map(|h| h.with_router(routes));
        self
    }

    /// Runs until `shutdown` is cancelled, then stops gracefully (module doc).
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, WorkerError> {
        let Worker {
            ctx,
            queue,
            gate,
            options,
            http,
        } = self;
        // Stops the helpers once the worker itself is done.
        let helpers = CancellationToken::new();
        let http_task = http.map(|server| tokio::spawn(server.serve(helpers.clone())));
        let probe_task = {
            let gate = gate.clone();
            let portal = ctx.portal.clone();
            let every = options.auth_probe_every;
            let token = helpers.clone();
            tokio::spawn(async move { gate.run_probe(portal, every, token).await })
        };
        ctx.metrics.set_ready(true);

        let backend = queue.backend::<SyncJob>();
        let drain = backend.drain_handle();
        let wctx = WorkerContext::new(options.identity.as_str());
        let service = JobService::new(ctx.clone(), gate, options.limits, shutdown.clone());
        let worker = WorkerBuilder::new(wctx.clone())
            .backend(backend)
            .build(service);
        tracing::info!(worker = %options.identity, queue = %queue.config().queue(), concurrency = queue.config().concurrency(), "worker started");

        // Boxed so that it can really be dropped below, before the drain.
        let mut run = Box::pin(worker.run());
        let mut grace_exceeded = false;
        let mut result = tokio::select! {
            r = &mut run => Some(r),
            _ = shutdown.cancelled() => None,
        };
        if result.is_none() {
            tracing::info!(grace = ?options.shutdown_grace, running = wctx.task_count(), "stopping: no new jobs; waiting for running ones");
            if let Err(e) = wctx.stop() {
                tracing::debug!(error = %e, "worker was not running");
            }
            match tokio::time::timeout(options.shutdown_grace, &mut run).await {
                Ok(r) => result = Some(r),
                Err(_) => {
                    grace_exceeded = true;
                    tracing::warn!(
                        running = wctx.task_count(),
                        "shutdown grace ran out; handing the running jobs back to the queue"
                    );
                }
            }
        }
        // Dropping the worker drops any job still running; the backend
        // releases their leases. Then wait until every outcome is written.
        drop(run);
        drain.drained().await;
        ctx.metrics.set_ready(false);
        helpers.cancel();
        if let Some(task) = http_task
            && let Ok(Err(e)) = task.await
        {
            tracing::warn!(error = %e, "HTTP server stopped with an error");
        }
        let _ = probe_task.await;
        if let Some(Err(e)) = result {
            tracing::error!(error = %e, "worker stopped with an error");
        }
        tracing::info!(worker = %options.identity, grace_exceeded, "worker stopped");
        Ok(RunSummary { grace_exceeded })
    }
}
