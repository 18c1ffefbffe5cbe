//! [`Dashboard`]: a read-and-push view of a queue for apalis-board and other
//! tools that speak apalis-core's `Expose` traits (`Metrics`, `ListQueues`,
//! `ListWorkers`, `ListTasks`, `ListAllTasks`, `FetchById`, `TaskSink`).
//!
//! It is a `Backend` only because those traits require one: it never hands
//! out jobs (`poll_next` ends at once). Payloads are shown as JSON values.
//!
//! Status mapping: `Pending` = pending list, `Queued` = scheduled (delayed),
//! `Running` = leased, `Done` = done, `Failed` = dead; no filter lists all of
//! them in that order, running first.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::future::BoxSyncFuture;
use apalis_core::backend::{
    Backend, BackendConfig, FetchById, Filter, ListAllTasks, ListQueues, ListTasks, ListWorkers,
    Metrics, QueueInfo, RunningWorker, StatType, Statistic, WireFormatBackend,
};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backend::{options_of, poll_push, start_push};
use crate::error::QueueError;
use crate::queue::{JobInfo, JobQueue, JobState, QueueCounts, worker_ttl};

/// JSON-value codec: what the dashboard shows as a task's arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonValueCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonValueCodec {
    type Error = serde_json::Error;
    type Compact = Value;

    fn encode(&self, val: &T) -> Result<Value, serde_json::Error> {
        serde_json::to_value(val)
    }

    fn decode(&self, val: &Value) -> Result<T, serde_json::Error> {
        T::deserialize(val)
    }
}

/// A dashboard view of one queue (and, for the `all` listings, of every queue
/// of its namespace). Cheap to clone.
pub struct Dashboard<Args> {
    queue: JobQueue,
    sink_buffer: Vec<Task<Value>>,
    sink_future: Option<BoxSyncFuture<Result<(), QueueError>>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> Clone for Dashboard<Args> {
    fn clone(&self) -> Self {
        Self::new(self.queue.clone())
    }
}

impl<Args> std::fmt::Debug for Dashboard<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("queue", &self.queue.config().queue)
            .finish_non_exhaustive()
    }
}

impl<Args> Dashboard<Args> {
    pub(crate) fn new(queue: JobQueue) -> Self {
        Self {
            queue,
            sink_buffer: Vec::new(),
            sink_future: None,
            _args: PhantomData,
        }
    }
}

impl JobQueue {
    /// A dashboard view of this queue (apalis-board's `register`).
    #[must_use]
    pub fn dashboard<Args>(&self) -> Dashboard<Args> {
        Dashboard::new(self.clone())
    }

    /// Workers of this queue that heartbeat recently.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn workers(&self) -> Result<Vec<RunningWorker>, QueueError> {
        let config = self.config().clone();
        let keys = config.keys.clone();
        let now = crate::queue::epoch_ms();
        let since = now.saturating_sub(crate::queue::ms(worker_ttl(&config)));
        let names: Vec<String> = self
            .call("listing workers", |mut conn| {
                let key = keys.workers();
                async move {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(key)
                        .arg(since)
                        .arg("+inf")
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET")
                .arg(keys.worker(name))
                .arg("started")
                .arg("last")
                .arg("layers");
        }
        let records: Vec<(Option<u64>, Option<u64>, Option<String>)> = self
            .call("reading workers", |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(names
            .into_iter()
            .zip(records)
            .filter_map(|(id, (started, last, layers))| {
                Some(RunningWorker {
                    id,
                    queue: config.queue.clone(),
                    backend: "job-queue (redis)".to_owned(),
                    started_at: started? / 1000,
                    last_heartbeat: last? / 1000,
                    layers: layers.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// One page of jobs in `state` (all states when `None`), as stored.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<JobInfo>, QueueError> {
        let order = match state {
            Some(s) => vec![s],
            None => vec![
                JobState::Running,
                JobState::Pending,
                JobState::Scheduled,
                JobState::Done,
                JobState::Dead,
            ],
        };
        let counts = self.counts().await?;
        let mut skip = offset;
        let mut left = limit;
        let mut ids = Vec::new();
        for s in order {
            if left == 0 {
                break;
            }
            let size = count_of(&counts, s);
            if skip >= size {
                skip -= size;
                continue;
            }
            let take = left.min(size - skip);
            let keys = &self.config().keys;
            let page = match s {
                JobState::Pending => self.pending_ids(skip, take).await?,
                JobState::Scheduled => self.ids_in(keys.scheduled(), skip, take).await?,
                JobState::Running => self.ids_in(keys.leased(), skip, take).await?,
                JobState::Done => self.ids_in(keys.done(), skip, take).await?,
                JobState::Dead => self.ids_in(keys.dead(), skip, take).await?,
            };
            left -= take;
            skip = 0;
            ids.extend(page);
        }
        Ok(self.jobs(&ids).await?.into_iter().flatten().collect())
    }
}

fn count_of(counts: &QueueCounts, state: JobState) -> u64 {
    match state {
        JobState::Pending => counts.pending,
        JobState::Scheduled => counts.scheduled,
        JobState::Running => counts.running,
        JobState::Done => counts.done,
        JobState::Dead => counts.dead,
    }
}

fn state_of(status: &Status) -> Option<JobState> {
    match status {
        Status::Pending => Some(JobState::Pending),
        Status::Queued => Some(JobState::Scheduled),
        Status::Running => Some(JobState::Running),
        Status::Done => Some(JobState::Done),
        Status::Failed => Some(JobState::Dead),
        _ => None,
    }
}

fn status_of(state: JobState) -> Status {
    match state {
        JobState::Pending => Status::Pending,
        JobState::Scheduled => Status::Queued,
        JobState::Running => Status::Running,
        JobState::Done => Status::Done,
        JobState::Dead => Status::Failed,
    }
}

/// An apalis task carrying a stored job (payload as JSON, last error in the
/// metadata under `last_error`).
fn task_of(job: JobInfo, queue: &str) -> Task<Value> {
    let args = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
    let mut metadata = MetadataStore::new();
    if let Some(err) = &job.last_error {
        let _ = metadata.insert("last_error", err.clone());
    }
    let _ = metadata.insert("state", format!("{:?}", job.state).to_lowercase());
    let mut builder = TaskBuilder::new(args)
        .task_id(TaskId::from_string(job.id))
        .attempt(job.attempts as usize)
        .max_attempts(job.max_attempts as usize)
        .status(status_of(job.state))
        .done_at(job.finished_ms.map(|m| m / 1000))
        .lock_at(job.leased_ms.map(|m| m / 1000))
        .lock_by(job.worker)
        .queue(queue.into())
        .with_metadata(metadata);
    if let Some(ready) = job.ready_ms {
        builder = builder.run_at_timestamp(ready / 1000);
    }
    if let Some(key) = job.idempotency_key {
        builder = builder.idempotency_key(key);
    }
    builder.build()
}

fn stat(title: &str, stat_type: StatType, value: String, priority: u64) -> Statistic {
    Statistic {
        title: title.to_owned(),
        stat_type,
        value,
        priority: Some(priority),
    }
}

/// apalis-board's statistic names (as apalis-redis uses them), from our counts.
pub(crate) fn statistics(c: &QueueCounts) -> Vec<Statistic> {
    let total = c.pending + c.scheduled + c.running + c.done + c.dead;
    let finished = c.done + c.dead;
    let rate = |n: u64| {
        if finished == 0 {
            "0.00".to_owned()
        } else {
            format!("{:.2}", n as f64 * 100.0 / finished as f64)
        }
    };
    vec![
        stat("RUNNING_JOBS", StatType::Number, c.running.to_string(), 1),
        stat("PENDING_JOBS", StatType::Number, c.pending.to_string(), 2),
        stat(
            "SCHEDULED_JOBS",
            StatType::Number,
            c.scheduled.to_string(),
            3,
        ),
        stat("FAILED_JOBS", StatType::Number, c.dead.to_string(), 4),
        stat("DONE_JOBS", StatType::Number, c.done.to_string(), 5),
        stat("TOTAL_JOBS", StatType::Number, total.to_string(), 6),
        stat("SUCCESS_RATE", StatType::Percentage, rate(c.done), 7),
        stat("FAILURE_RATE", StatType::Percentage, rate(c.dead), 8),
        stat(
            "OLDEST_PENDING_AGE_SECONDS",
            StatType::Decimal,
            format!(
                "{:.3}",
                c.oldest_pending_age.unwrap_or(Duration::ZERO).as_secs_f64()
            ),
            9,
        ),
        stat("STALE_ACKS", StatType::Number, c.stale_acks.to_string(), 10),
        stat(
            "LAPSED_LEASES",
            StatType::Number,
            c.lapsed_leases.to_string(),
            11,
        ),
        stat("WORKERS", StatType::Number, c.workers.to_string(), 12),
    ]
}

fn sum(a: &QueueCounts, b: &QueueCounts) -> QueueCounts {
    QueueCounts {
        pending: a.pending + b.pending,
        scheduled: a.scheduled + b.scheduled,
        running: a.running + b.running,
        done: a.done + b.done,
        dead: a.dead + b.dead,
        oldest_pending_age: a.oldest_pending_age.max(b.oldest_pending_age),
        stale_acks: a.stale_acks + b.stale_acks,
        lapsed_leases: a.lapsed_leases + b.lapsed_leases,
        workers: a.workers + b.workers,
    }
}

impl<Args> Backend for Dashboard<Args> {
    type Task = Task<Value>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<Value>, QueueError>>> {
        // A view, not a source of work.
        Poll::Ready(None)
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }
}

impl<Args> BackendConfig for Dashboard<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Durable;
    type Config = crate::config::QueueConfig;
    type Layer = tower::layer::util::Identity;

    fn config(&self) -> &Self::Config {
        self.queue.config()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        tower::layer::util::Identity::new()
    }
}

impl<Args> WireFormatBackend for Dashboard<Args> {
    type Codec = JsonValueCodec;
    type Compact = Value;

    fn codec(&self) -> &JsonValueCodec {
        &JsonValueCodec
    }
}

impl<Args> futures::Sink<Task<Value>> for Dashboard<Args> {
    type Error = QueueError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, task: Task<Value>) -> Result<(), QueueError> {
        self.get_mut().sink_buffer.push(task);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        let this = self.get_mut();
        if this.sink_future.is_none() {
            if this.sink_buffer.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut jobs = Vec::new();
            for task in std::mem::take(&mut this.sink_buffer) {
                let options = options_of(&task);
                let payload =
                    serde_json::to_vec(&task.args).map_err(|source| QueueError::Codec {
                        queue: this.queue.config().queue.clone(),
                        id: options.id.clone().unwrap_or_else(|| "(new)".to_owned()),
                        source,
                    })?;
                jobs.push((payload, options));
            }
            start_push(&mut this.sink_future, &this.queue, jobs);
        }
        poll_push(&mut this.sink_future, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        self.poll_flush(cx)
    }
}

impl<Args: Send + 'static> Metrics for Dashboard<Args> {
    fn global(&self) -> impl Future<Output = Result<Vec<Statistic>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move {
            let mut total = QueueCounts::default();
            for name in queue.queue_names().await? {
                total = sum(&total, &queue.counts_of(&name).await?);
            }
            Ok(statistics(&total))
        }
    }

    fn fetch_by_queue(&self) -> impl Future<Output = Result<Vec<Statistic>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move { Ok(statistics(&queue.counts().await?)) }
    }
}

impl<Args: Send + 'static> ListQueues for Dashboard<Args> {
    fn list_queues(&self) -> impl Future<Output = Result<Vec<QueueInfo>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move {
            let mut out = Vec::new();
            for name in queue.queue_names().await? {
                let other = queue.sibling(&name);
                let counts = other.counts().await?;
                let workers = other.workers().await?.into_iter().map(|w| w.id).collect();
                let activity = other.activity(7).await?;
                out.push(QueueInfo {
                    name,
                    stats: statistics(&counts),
                    workers,
                    activity,
                });
            }
            Ok(out)
        }
    }
}

impl JobQueue {
    /// Jobs completed per day, the last `days` days, oldest first.
    pub(crate) async fn activity(&self, days: u64) -> Result<Vec<usize>, QueueError> {
        let today = crate::queue::epoch_ms() / 86_400_000;
        let fields: Vec<String> = (0..days)
            .rev()
            .map(|d| format!("day:{}", today.saturating_sub(d)))
            .collect();
        let key = self.config().keys.stats();
        let values: Vec<Option<usize>> = self
            .call("reading activity", |mut conn| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key).arg(&fields);
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
}

impl<Args: Send + 'static> ListWorkers for Dashboard<Args> {
    fn list_workers(&self) -> impl Future<Output = Result<Vec<RunningWorker>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move { queue.workers().await }
    }

    fn list_all_workers(
        &self,
    ) -> impl Future<Output = Result<Vec<RunningWorker>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move {
            let mut out = Vec::new();
            for name in queue.queue_names().await? {
                let other = queue.sibling(&name);
                out.extend(other.workers().await?);
            }
            Ok(out)
        }
    }
}

impl JobQueue {
    /// A handle on another queue of the namespace, sharing the connection.
    pub(crate) fn sibling(&self, queue: &str) -> JobQueue {
        JobQueue {
            inner: std::sync::Arc::new(crate::queue::Inner {
                config: self.config().for_queue(queue),
                conn: self.inner.conn.clone(),
                scripts: crate::scripts::Scripts::new(),
            }),
        }
    }
}

fn page(filter: &Filter) -> (u64, u64) {
    (u64::from(filter.offset()), u64::from(filter.limit()))
}

impl<Args: Send + 'static> ListTasks for Dashboard<Args> {
    fn list_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<Value>>, QueueError>> + Send {
        let queue = self.queue.clone();
        let filter = filter.clone();
        async move {
            let state = filter.status.as_ref().map(state_of);
            if state == Some(None) {
                return Ok(Vec::new());
            }
            let (offset, limit) = page(&filter);
            let name = queue.config().queue.clone();
            Ok(queue
                .list_jobs(state.flatten(), offset, limit)
                .await?
                .into_iter()
                .map(|j| task_of(j, &name))
                .collect())
        }
    }
}

impl<Args: Send + 'static> ListAllTasks for Dashboard<Args> {
    fn list_all_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<Value>>, QueueError>> + Send {
        let queue = self.queue.clone();
        let filter = filter.clone();
        async move {
            let state = filter.status.as_ref().map(state_of);
            if state == Some(None) {
                return Ok(Vec::new());
            }
            let (mut skip, mut left) = page(&filter);
            let mut out = Vec::new();
            for name in queue.queue_names().await? {
                if left == 0 {
                    break;
                }
                let other = queue.sibling(&name);
                let counts = other.counts().await?;
                let size = match state.flatten() {
                    Some(s) => count_of(&counts, s),
                    None => {
                        counts.pending
                            + counts.scheduled
                            + counts.running
                            + counts.done
                            + counts.dead
                    }
                };
                if skip >= size {
                    skip -= size;
                    continue;
                }
                let jobs = other.list_jobs(state.flatten(), skip, left).await?;
                left = left.saturating_sub(jobs.len() as u64);
                skip = 0;
                out.extend(jobs.into_iter().map(|j| task_of(j, &name)));
            }
            Ok(out)
        }
    }
}

impl<Args: Send + 'static> FetchById for Dashboard<Args> {
    fn fetch_by_id(
        &mut self,
        task_id: &TaskId,
    ) -> impl Future<Output = Result<Option<Task<Value>>, QueueError>> + Send {
        let queue = self.queue.clone();
        let id = task_id.to_string();
        async move {
            let name = queue.config().queue.clone();
            Ok(queue.job(&id).await?.map(|j| task_of(j, &name)))
        }
    }
}
