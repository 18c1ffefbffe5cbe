//! The worker's view of the portal: the typed [`portal_api::Client`] behind
//! the per-process request rate limit, with every request counted and timed
//! in [`Metrics`] (`portal_sync_portal_requests_total{endpoint,status}` and
//! the latency histogram). Handlers call the portal only through here.
//!
//! The `status` label is the HTTP status of an error answer, `2xx` for a
//! success, `404` for an absent task, and `network` / `timeout` / `decode` /
//! `protocol` when the portal gave no usable status.

use std::sync::Arc;
use std::time::Instant;

use portal_api::wire::TaskQuery;
use portal_api::{Client, NetworkErrorKind, PortalError};
use task_model::{HostTask, PortalTask, TaskId};

use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;

const EP_POST_TASKS: &str = "POST /tasks";
const EP_GET_TASKS: &str = "GET /tasks";
const EP_GET_TASK: &str = "GET /tasks/@{code}";
const EP_PUT_TASK: &str = "PUT /tasks/@{code}";

/// The rate-limited, instrumented portal client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Portal {
    client: Client,
    limiter: Option<Arc<RateLimiter>>,
    metrics: Metrics,
}

fn status_label(err: &PortalError) -> String {
    match (err.status(), err) {
        (Some(s), _) => s.to_string(),
        (
            None,
            PortalError::Network {
                kind: NetworkErrorKind::Timeout,
                ..
            },
        ) => "timeout".to_owned(),
        (None, PortalError::Network { .. }) => "network".to_owned(),
        (None, PortalError::Decode { .. }) => "decode".to_owned(),
        (None, PortalError::Protocol { .. }) => "protocol".to_owned(),
        (None, _) => "error".to_owned(),
    }
}

impl Portal {
    /// `limiter`: at most that many requests per second from this process.
    pub fn new(client: Client, limiter: Option<Arc<RateLimiter>>, metrics: Metrics) -> Portal {
        Portal {
            client,
            limiter,
            metrics,
        }
    }

    /// Tasks per POST and per page.
    pub fn package_size(&self) -> usize {
        self.client.page_size()
    }

    async fn call<T, F>(
        &self,
        endpoint: &'static str,
        ok_label: fn(&T) -> &'static str,
        fut: F,
    ) -> Result<T, PortalError>
    where
        F: Future<Output = Result<T, PortalError>>,
    {
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let start = Instant::now();
        let result = fut.await;
        let status = match &result {
            Ok(v) => ok_label(v).to_owned(),
            Err(e) => status_label(e),
        };
        self.metrics
            .portal_request(endpoint, status, start.elapsed());
        result
    }

    /// `POST /tasks` with one package.
    pub async fn submit_tasks(&self, tasks: &[HostTask]) -> Result<Vec<PortalTask>, PortalError> {
        self.call(EP_POST_TASKS, |_| "2xx", self.client.submit_tasks(tasks))
            .await
    }

    /// The portal's tasks for these host ids, whole. One request per chunk of
    /// the package size in the usual case: the page limit is one more than the
    /// ids asked, so a complete answer is always a short (last) page.
    pub async fn tasks_by_host_ids(&self, ids: &[TaskId]) -> Result<Vec<PortalTask>, PortalError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.package_size().max(1)) {
            let query = TaskQuery::by_host_ids(chunk.iter().cloned());
            let limit = chunk.len() + 1;
            let mut offset = 0;
            loop {
                let page = self
                    .call(
                        EP_GET_TASKS,
                        |_| "2xx",
                        self.client.list_tasks_page(&query, limit, offset),
                    )
                    .await?;
                let n = page.len();
                found.extend(page);
                // A portal that ignores the host id filter would page through
                // everything; stop once more came back than was asked for.
                if n < limit || offset + n > chunk.len() * 2 {
                    break;
                }
                offset += n;
            }
        }
        Ok(found)
    }

    /// One page of the unacknowledged changes, whole.
    pub async fn unacknowledged_page(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<PortalTask>, PortalError> {
        let query = TaskQuery::unacknowledged();
        self.call(
            EP_GET_TASKS,
            |_| "2xx",
            self.client.list_tasks_page(&query, limit, offset),
        )
        .await
    }

    /// `GET /tasks/@{code}`; `None` if the portal has no such task.
    pub async fn get_task(&self, code: &str) -> Result<Option<PortalTask>, PortalError> {
        self.call(
            EP_GET_TASK,
            |t: &Option<PortalTask>| if t.is_some() { "2xx" } else { "404" },
            self.client.get_task(code),
        )
        .await
    }

    /// Acknowledges `code` at `revision`; 409 if it changed since.
    pub async fn acknowledge_task(&self, code: &str, revision: u64) -> Result<(), PortalError> {
        self.call(
            EP_PUT_TASK,
            |_| "2xx",
            self.client.acknowledge_task(code, revision),
        )
        .await
    }

    /// A cheap authenticated request (one unacknowledged task) to learn
    /// whether the portal accepts our key again.
    pub async fn probe(&self) -> Result<(), PortalError> {
        self.unacknowledged_page(1, 0).await.map(|_| ())
    }
}
