//! [`RedisBackend`]: the apalis-core `Backend` a worker is built on, its
//! `TaskSink`, and [`LeaseLayer`], the middleware that turns a handler's
//! result into the job's outcome (done, retry, dead) under its lease.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::future::BoxSyncFuture;
use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{JobError, QueueError, RetryDecision};
use crate::queue::{JobQueue, PushOptions, epoch_ms};
use crate::runtime::{Runtime, Settle, SettleKind};

/// JSON codec of job payloads (the stored form is JSON bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    type Error = serde_json::Error;
    type Compact = Vec<u8>;

    fn encode(&self, val: &T) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(val)
    }

    fn decode(&self, val: &Vec<u8>) -> Result<T, serde_json::Error> {
        serde_json::from_slice(val)
    }
}

/// The lease under which a task runs; in every task's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Job id.
    pub id: String,
    /// Lease generation: the token an outcome must carry to be accepted.
    pub generation: u64,
    /// This delivery's number (1 for the first).
    pub attempt: u32,
    /// Deliveries allowed.
    pub max_attempts: u32,
}

/// The apalis backend of one worker on one queue. Make one per worker with
/// [`JobQueue::backend`]; give it to `WorkerBuilder::backend`.
///
/// It decodes payloads itself: a payload that is not an `Args` goes to the
/// dead set with the decoding error instead of stopping the worker.
pub struct RedisBackend<Args> {
    queue: JobQueue,
    runtime: Arc<Runtime>,
    sink_buffer: Vec<(Vec<u8>, PushOptions)>,
    sink_future: Option<BoxSyncFuture<Result<(), QueueError>>>,
    close_future: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("queue", &self.queue.config().queue)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl<Args> Drop for RedisBackend<Args> {
    fn drop(&mut self) {
        // Dropped without a clean close (e.g. the shutdown grace ran out):
        // still release what is buffered and flush outcomes.
        self.runtime.closing.cancel();
    }
}

/// Waits until a worker's backend has released its jobs, written every
/// outcome and deregistered. Await it after the worker (or `Monitor`) returns,
/// so a clean exit leaves nothing leased.
#[derive(Debug, Clone)]
pub struct DrainHandle {
    runtime: Arc<Runtime>,
}

impl DrainHandle {
    /// Starts the drain (if the worker has not) and waits for its end.
    pub async fn drained(&self) {
        self.runtime.closing.cancel();
        if self.runtime.is_started() {
            self.runtime.closed.cancelled().await;
        }
    }

    /// Outcomes this worker had rejected as stale so far.
    #[must_use]
    pub fn stale_acks(&self) -> u64 {
        self.runtime.stale_acks.load(Ordering::Relaxed)
    }
}

impl<Args> RedisBackend<Args> {
    pub(crate) fn new(queue: JobQueue) -> Self {
        let runtime = Runtime::new(queue.clone());
        Self {
            queue,
            runtime,
            sink_buffer: Vec::new(),
            sink_future: None,
            close_future: None,
            _args: PhantomData,
        }
    }

    /// The queue this backend works.
    #[must_use]
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// A handle to await this worker's final release and flush.
    #[must_use]
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle {
            runtime: Arc::clone(&self.runtime),
        }
    }

    fn ensure_started(&self, worker: &WorkerContext) {
        if !self.runtime.is_started() {
            let probe = worker.clone();
            self.runtime
                .start(worker.name(), Box::new(move || probe.is_shutting_down()));
        }
    }
}

impl<Args> Backend for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.ensure_started(worker);
        let limit = self.queue.config().concurrency;
        if self.runtime.running.load(Ordering::SeqCst) < limit {
            return Poll::Ready(Ok(()));
        }
        self.runtime.backend_waker.register(cx.waker());
        if self.runtime.running.load(Ordering::SeqCst) < limit {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<Args>, QueueError>>> {
        self.ensure_started(worker);
        loop {
            let job = match self.runtime.pop_buffered() {
                Some(job) => job,
                None => {
                    self.runtime.backend_waker.register(cx.waker());
                    match self.runtime.pop_buffered() {
                        Some(job) => job,
                        None => {
                            self.runtime.want_more();
                            return Poll::Pending;
                        }
                    }
                }
            };
            let args: Args = match serde_json::from_slice(&job.payload) {
                Ok(args) => args,
                Err(e) => {
                    tracing::error!(queue = %self.queue.config().queue, job = %job.id, error = %e, "payload does not decode; job is dead");
                    self.runtime.settle(Settle {
                        id: job.id,
                        gen_: job.gen_,
                        kind: SettleKind::Dead,
                        error: format!(
                            "payload is not a valid {}: {e}",
                            std::any::type_name::<Args>()
                        ),
                    });
                    continue;
                }
            };
            self.runtime.running.fetch_add(1, Ordering::SeqCst);
            let lease = Lease {
                id: job.id.clone(),
                generation: job.gen_,
                attempt: job.attempts,
                max_attempts: job.max_attempts,
            };
            let task = TaskBuilder::new(args)
                .task_id(TaskId::from_string(job.id))
                .attempt(job.attempts.saturating_sub(1) as usize)
                .max_attempts(job.max_attempts as usize)
                .status(Status::Queued)
                .lock_by(Some(self.runtime.worker_name().to_owned()))
                .lock_at(Some(epoch_ms() / 1000))
                .queue(self.queue.config().queue.as_str().into())
                .data(lease)
                .build();
            return Poll::Ready(Some(Ok(task)));
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.runtime.closing.cancel();
        if !self.runtime.is_started() {
            return Poll::Ready(Ok(()));
        }
        let closed = self
            .close_future
            .get_or_insert_with(|| Box::pin(self.runtime.closed.clone().cancelled_owned()));
        match closed.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Args> BackendConfig for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = crate::config::QueueConfig;
    type Layer = LeaseLayer;

    fn config(&self) -> &Self::Config {
        self.queue.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> LeaseLayer {
        *self
            .runtime
            .layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = worker.get_service().to_owned();
        LeaseLayer {
            runtime: Arc::clone(&self.runtime),
        }
    }
}

impl<Args> WireFormatBackend for RedisBackend<Args> {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &JsonCodec
    }
}

/// Push options from an apalis task's context (id, idempotency key, run_at,
/// max attempts).
pub(crate) fn options_of<A>(task: &Task<A>) -> PushOptions {
    let delay = task
        .run_at()
        .map(|at| at.saturating_mul(1000).saturating_sub(epoch_ms()))
        .map_or(Duration::ZERO, Duration::from_millis);
    PushOptions {
        id: task.task_id().map(ToString::to_string),
        idempotency_key: task.idempotency_key().map(str::to_owned),
        delay,
        max_attempts: task
            .max_attempts()
            .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
    }
}

impl<Args> futures::Sink<Task<Args>> for RedisBackend<Args>
where
    Args: Serialize + DeserializeOwned + Send + 'static,
{
    type Error = QueueError;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, task: Task<Args>) -> Result<(), QueueError> {
        let this = self.get_mut();
        let options = options_of(&task);
        let payload = serde_json::to_vec(&task.args).map_err(|source| QueueError::Codec {
            queue: this.queue.config().queue.clone(),
            id: options.id.clone().unwrap_or_else(|| "(new)".to_owned()),
            source,
        })?;
        this.sink_buffer.push((payload, options));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        let this = self.get_mut();
        if this.sink_future.is_none() {
            if this.sink_buffer.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let jobs = std::mem::take(&mut this.sink_buffer);
            start_push(&mut this.sink_future, &this.queue, jobs);
        }
        poll_push(&mut this.sink_future, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        self.poll_flush(cx)
    }
}

/// Starts pushing `jobs` (encoded payloads with their options) as the
/// sink's in-flight flush. Shared by the worker backend's and the
/// dashboard's `Sink`s.
pub(crate) fn start_push(
    slot: &mut Option<BoxSyncFuture<Result<(), QueueError>>>,
    queue: &JobQueue,
    jobs: Vec<(Vec<u8>, PushOptions)>,
) {
    let queue = queue.clone();
    *slot = Some(BoxSyncFuture::new(
        async move { queue.push_encoded(jobs).await.map(|_| ()) }.boxed(),
    ));
}

/// Drives the sink's in-flight flush, if any, to its end.
pub(crate) fn poll_push(
    slot: &mut Option<BoxSyncFuture<Result<(), QueueError>>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), QueueError>> {
    let Some(fut) = slot.as_mut() else {
        return Poll::Ready(Ok(()));
    };
    match fut.poll_unpin(cx) {
        Poll::Ready(result) => {
            *slot = None;
            Poll::Ready(result)
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Middleware that settles each job after its handler returns: done on
/// success; on failure retried or dead as the error and the attempts say. A
/// job whose handler future is dropped unfinished is released.
#[derive(Debug, Clone)]
pub struct LeaseLayer {
    runtime: Arc<Runtime>,
}

impl<S> tower::Layer<S> for LeaseLayer {
    type Service = LeaseService<S>;

    fn layer(&self, inner: S) -> LeaseService<S> {
        LeaseService {
            inner,
            runtime: Arc::clone(&self.runtime),
        }
    }
}

/// See [`LeaseLayer`].
#[derive(Debug, Clone)]
pub struct LeaseService<S> {
    inner: S,
    runtime: Arc<Runtime>,
}

/// Settles the lease when dropped, unless disarmed by a normal settle.
struct ReleaseOnDrop {
    runtime: Arc<Runtime>,
    lease: Option<Lease>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.runtime.settle(Settle {
                id: lease.id,
                gen_: lease.generation,
                kind: SettleKind::ReleaseStarted,
                error: "released: the worker stopped before the job finished".to_owned(),
            });
            self.runtime.finished_running();
        }
    }
}

const MAX_ERROR_LEN: usize = 2000;

/// The outcome of a failed delivery.
fn failure_outcome(
    err: &BoxDynError,
    lease: &Lease,
    policy: &crate::config::RetryPolicy,
) -> (SettleKind, String) {
    let mut decision = RetryDecision::Backoff;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = source {
        if let Some(job) = e.downcast_ref::<JobError>() {
            decision = job.decision();
            break;
        }
        if e.downcast_ref::<AbortError>().is_some() {
            decision = RetryDecision::Never;
            break;
        }
        if let Some(r) = e.downcast_ref::<RetryAfterError>() {
            decision = RetryDecision::After(r.get_duration());
            break;
        }
        source = e.source();
    }
    let mut message = err.to_string();
    if message.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let exhausted = lease.attempt >= lease.max_attempts;
    let kind = match decision {
        RetryDecision::Never => SettleKind::Dead,
        _ if exhausted => SettleKind::Dead,
        RetryDecision::After(d) => SettleKind::Retry(d),
        RetryDecision::Backoff => SettleKind::Retry(policy.backoff(lease.attempt)),
    };
    (kind, message)
}

impl<S, Args> tower::Service<Task<Args>> for LeaseService<S>
where
    S: tower::Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let lease = task.data().get::<Lease>().cloned();
        let runtime = Arc::clone(&self.runtime);
        let fut = self.inner.call(task);
        async move {
            let mut guard = ReleaseOnDrop {
                runtime: Arc::clone(&runtime),
                lease,
            };
            let result = fut.await.map_err(Into::into);
            if let Some(lease) = guard.lease.take() {
                let (kind, error) = match &result {
                    Ok(_) => (SettleKind::Done, String::new()),
                    Err(e) => failure_outcome(e, &lease, &runtime.queue.config().retry),
                };
                runtime.settle(Settle {
                    id: lease.id,
                    gen_: lease.generation,
                    kind,
                    error,
                });
                runtime.finished_running();
            }
            result
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;

    fn lease(attempt: u32, max: u32) -> Lease {
        Lease {
            id: "j".to_owned(),
            generation: 1,
            attempt,
            max_attempts: max,
        }
    }

    #[test]
    fn handler_errors_map_to_outcomes() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
        };
        let never: BoxDynError = Box::new(JobError::no_retry("bad request"));
        assert_eq!(
            failure_outcome(&never, &lease(1, 3), &policy).0,
            SettleKind::Dead
        );
        let after: BoxDynError = Box::new(JobError::retry_after("429", Duration::from_secs(7)));
        assert_eq!(
            failure_outcome(&after, &lease(1, 3), &policy).0,
            SettleKind::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            failure_outcome(&after, &lease(3, 3), &policy).0,
            SettleKind::Dead
        );
        let plain: BoxDynError = "boom".into();
        match failure_outcome(&plain, &lease(2, 3), &policy) {
            (SettleKind::Retry(d), msg) => {
                assert!(d <= Duration::from_millis(200));
                assert_eq!(msg, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
        let abort: BoxDynError = Box::new(AbortError::new("stop"));
        assert_eq!(
            failure_outcome(&abort, &lease(1, 3), &policy).0,
            SettleKind::Dead
        );
    }
}
