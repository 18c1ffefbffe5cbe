//! The worker's Prometheus metrics, all in one place so that names match
//! across the code, `/metrics` and dashboards. Every series is prefixed
//! `portal_sync_`:
//!
//! | series | labels | what |
//! |---|---|---|
//! | `portal_sync_jobs_total` | `kind`, `outcome` | jobs finished: `succeeded`, `retried`, `failed`, `deferred` (auth pause), `panicked` |
//! | `portal_sync_job_duration_seconds` | `kind` | wall time of one job attempt |
//! | `portal_sync_job_retries_total` | `kind` | attempts handed back for a later retry |
//! | `portal_sync_portal_requests_total` | `endpoint`, `status` | portal calls by HTTP status (`network`, `timeout` when none) |
//! | `portal_sync_portal_request_duration_seconds` | `endpoint` | latency of portal calls |
//! | `portal_sync_tasks_written_back_total` | `outcome` | task updates applied to the store |
//! | `portal_sync_stale_updates_ignored_total` | | write-backs the monotonic rules refused |
//! | `portal_sync_queue_jobs` | `state` | queue `pending`, `running`, `dead` (read at scrape time) |
//! | `portal_sync_worker_ready` | | 1 while `/readyz` would answer 200 |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// How a job attempt ended, as counted in `portal_sync_jobs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    /// Handed back to the queue for a later attempt.
    Retried,
    /// Failed for good (the queue moves it to the dead letters once its
    /// attempts are used up, or at once when not retryable).
    Failed,
    /// Handed back without using an attempt (the portal refused our key).
    Deferred,
    Panicked,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Retried => "retried",
            JobOutcome::Failed => "failed",
            JobOutcome::Deferred => "deferred",
            JobOutcome::Panicked => "panicked",
        }
    }
}

fn duration_histogram() -> Histogram {
    // 5 ms … ~82 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

struct Inner {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    retries: Family<KindLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    written_back: Family<OutcomeLabel, Counter>,
    stale_ignored: Counter,
    queue: Family<StateLabel, Gauge>,
    ready: Gauge,
}

/// Handle on the worker's metrics; cheap to clone, shared by all jobs.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portal_sync");
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register("jobs", "Jobs finished, by kind and outcome", jobs.clone());
        let job_duration = Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "job_duration_seconds",
            "Wall time of one job attempt",
            job_duration.clone(),
        );
        let retries = Family::<KindLabel, Counter>::default();
        registry.register(
            "job_retries",
            "Job attempts handed back to the queue for a later retry",
            retries.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "portal_requests",
            "Requests to the Patient Portal, by endpoint and status",
            requests.clone(),
        );
        let request_duration =
            Family::<EndpointLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        registry.register(
            "portal_request_duration_seconds",
            "Latency of requests to the Patient Portal",
            request_duration.clone(),
        );
        let written_back = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tasks_written_back",
            "Task updates written to the store, by outcome",
            written_back.clone(),
        );
        let stale_ignored = Counter::default();
        registry.register(
            "stale_updates_ignored",
            "Portal updates the store refused as stale or backwards",
            stale_ignored.clone(),
        );
        let queue = Family::<StateLabel, Gauge>::default();
        registry.register("queue_jobs", "Jobs in the queue, by state", queue.clone());
        let ready = Gauge::default();
        registry.register("worker_ready", "1 while the worker is ready", ready.clone());
        Metrics(Arc::new(Inner {
            registry,
            jobs,
            job_duration,
            retries,
            requests,
            request_duration,
            written_back,
            stale_ignored,
            queue,
            ready,
        }))
    }

    /// Counts a finished job attempt and its duration.
    pub fn job_finished(&self, kind: &'static str, outcome: JobOutcome, took: Duration) {
        self.0
            .jobs
            .get_or_create(&JobLabels {
                kind,
                outcome: outcome.as_str(),
            })
            .inc();
        self.0
            .job_duration
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
        if outcome == JobOutcome::Retried {
            self.0.retries.get_or_create(&KindLabel { kind }).inc();
        }
    }

    /// Counts one portal request. `status` is the HTTP status, or `network` /
    /// `timeout` when there was none.
    pub fn portal_request(&self, endpoint: &'static str, status: String, took: Duration) {
        self.0
            .requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.0
            .request_duration
            .get_or_create(&EndpointLabel { endpoint })
            .observe(took.as_secs_f64());
    }

    /// Counts `n` tasks written back with `outcome`.
    pub fn written_back(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.0
                .written_back
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(n);
        }
    }

    pub fn stale_ignored(&self, n: u64) {
        self.0.stale_ignored.inc_by(n);
    }

    pub fn set_queue(&self, pending: u64, running: u64, dead: u64) {
        for (state, v) in [("pending", pending), ("running", running), ("dead", dead)] {
            self.0
                .queue
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.set(i64::from(ready));
    }

    /// The Prometheus/OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_text_names_every_series() {
        let m = Metrics::new();
        m.job_finished("submit", JobOutcome::Retried, Duration::from_millis(3));
        m.portal_request("POST /tasks", "201".into(), Duration::from_millis(20));
        m.written_back("submitted", 20);
        m.stale_ignored(1);
        m.set_queue(1, 2, 3);
        let text = m.encode();
        for needle in [
            "portal_sync_jobs_total{kind=\"submit\",outcome=\"retried\"} 1",
            "portal_sync_job_retries_total{kind=\"submit\"} 1",
            "portal_sync_job_duration_seconds_count{kind=\"submit\"} 1",
            "portal_sync_portal_requests_total{endpoint=\"POST /tasks\",status=\"201\"} 1",
            "portal_sync_portal_request_duration_seconds_bucket",
            "portal_sync_tasks_written_back_total{outcome=\"submitted\"} 20",
            "portal_sync_stale_updates_ignored_total 1",
            "portal_sync_queue_jobs{state=\"dead\"} 3",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
