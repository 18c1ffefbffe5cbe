//! `sync-worker`: the long-running process that drains the portal-sync job
//! queue. It takes [`task_model::SyncJob`]s from Redis (the `job-queue`
//! backend under the apalis 1.0 runtime), talks to the Patient Portal
//! through [`portal_api::Client`] and writes results into the task store.
//! Any number of copies run at once; each serves `/healthz`, `/readyz` and
//! Prometheus `/metrics`.
//!
//! - [`handlers`]: [`submit_package`], [`refresh_tasks`], [`pull_updates`] —
//!   one job attempt each, idempotent, write-back before acknowledgement.
//! - [`job`]: the tower service apalis drives — span per job, job timeout,
//!   panic isolation, the one mapping of failures to retry decisions.
//! - [`worker`]: [`Worker`] — assembles a run and its graceful shutdown;
//!   also what `portal-sync demo` runs in-process.
//! - [`auth_gate`]: pause on 401/403, resume when the key works again.
//! - [`dashboard`]: apalis-board's UI and API behind `worker.dashboard_token`
//!   (bearer header for scripts, a one-time `?token=` login and a cookie for
//!   browsers).
//! - [`portal`], [`rate_limit`], [`metrics`], [`http`], [`identity`],
//!   [`logging`], [`signals`]: the surroundings.
//!
//! What it does not do: decide what needs syncing (that is `portal-sync
//! enqueue`), or retry by itself (the queue reschedules failed jobs).

pub mod auth_gate;
pub mod dashboard;
pub mod handlers;
pub mod http;
pub mod identity;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod portal;
pub mod rate_limit;
pub mod settings;
pub mod signals;
pub mod store_batch;
pub mod worker;

pub use handlers::{JobContext, JobReport, pull_updates, refresh_tasks, submit_package};
pub use identity::WorkerIdentity;
pub use worker::{Overrides, RunSummary, Worker, WorkerError, WorkerOptions};
