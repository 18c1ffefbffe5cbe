//! [`JobQueue`]: the producer and operator side of a queue — push jobs, read
//! counts, inspect, re-drive and purge dead letters — and the factory of
//! worker backends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::RedisBackend;
use crate::config::{QueueConfig, redact_url};
use crate::connection::{Backoff, Conn, connect_with_retry};
use crate::error::QueueError;
use crate::scripts::Scripts;

/// Options of one pushed job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// The job id; a new ULID when `None`. A job whose id is pending,
    /// scheduled or running is not stored again.
    pub id: Option<String>,
    /// Idempotency key: while a job holding it is pending, scheduled or
    /// running, pushing another with the same key stores nothing.
    pub idempotency_key: Option<String>,
    /// Run no earlier than this from now.
    pub delay: Duration,
    /// Overrides the queue's `max_attempts` for this job.
    pub max_attempts: Option<u32>,
}

impl PushOptions {
    /// Options with an explicit job id.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            ..Self::default()
        }
    }
    /// Options with an idempotency key.
    pub fn with_idempotency_key(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            ..Self::default()
        }
    }
}

/// A job and its push options, for [`JobQueue::push_bulk`].
#[derive(Debug, Clone)]
pub struct NewJob<T> {
    /// The payload (ids only, never personal data).
    pub job: T,
    /// Its options.
    pub options: PushOptions,
}

impl<T> From<T> for NewJob<T> {
    fn from(job: T) -> Self {
        Self {
            job,
            options: PushOptions::default(),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// The id holding the job: the new job's, or for a duplicate the id of
    /// the job already there.
    pub id: String,
    /// `true` if the job was stored, `false` if an equal one was already
    /// pending, scheduled or running.
    pub new: bool,
}

/// Counts of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Ready to run.
    pub pending: u64,
    /// Delayed (retry backoff or pushed with a delay).
    pub scheduled: u64,
    /// Leased to a worker.
    pub running: u64,
    /// Completed within the done retention.
    pub done: u64,
    /// Dead within the dead retention.
    pub dead: u64,
    /// Age of the job at the head of pending.
    pub oldest_pending_age: Option<Duration>,
    /// Acknowledgements rejected because their lease was no longer current.
    pub stale_acks: u64,
    /// Leases that lapsed and were taken back.
    pub lapsed_leases: u64,
    /// Workers that heartbeat recently.
    pub workers: u64,
}

/// State of a job as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run.
    Pending,
    /// Waiting for its due time.
    Scheduled,
    /// Leased to a worker.
    Running,
    /// Completed.
    Done,
    /// Out of attempts or refused for good.
    Dead,
}

impl JobState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "scheduled" => Self::Scheduled,
            "running" => Self::Running,
            "done" => Self::Done,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// One stored job, as read back (dead letters, dashboards, `fetch_by_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// Its state.
    pub state: JobState,
    /// The serialized payload (JSON).
    pub payload: Vec<u8>,
    /// Deliveries so far.
    pub attempts: u32,
    /// Deliveries allowed.
    pub max_attempts: u32,
    /// The last error, if any delivery failed.
    pub last_error: Option<String>,
    /// Push time, ms since the epoch.
    pub created_ms: u64,
    /// When it finished (done or dead), ms since the epoch.
    pub finished_ms: Option<u64>,
    /// When it was last leased, ms since the epoch.
    pub leased_ms: Option<u64>,
    /// The worker that last held it.
    pub worker: Option<String>,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// When it is (or was) due, ms since the epoch.
    pub ready_ms: Option<u64>,
}

impl JobInfo {
    /// Decodes the payload.
    ///
    /// # Errors
    /// [`QueueError::Codec`] when the payload is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self, queue: &str) -> Result<T, QueueError> {
        serde_json::from_slice(&self.payload).map_err(|source| QueueError::Codec {
            queue: queue.to_owned(),
            id: self.id.clone(),
            source,
        })
    }

    pub(crate) fn from_fields(id: String, mut fields: HashMap<String, Vec<u8>>) -> Option<Self> {
        let text = |v: Vec<u8>| String::from_utf8(v).ok();
        let mut take = |k: &str| fields.remove(k).and_then(text).filter(|s| !s.is_empty());
        let state = JobState::parse(&take("state")?)?;
        let num = |v: Option<String>| v.and_then(|s| s.parse::<u64>().ok());
        let attempts = num(take("attempts")).unwrap_or(0);
        let max_attempts = num(take("max")).unwrap_or(0);
        let last_error = take("error");
        let created_ms = num(take("created")).unwrap_or(0);
        let finished_ms = num(take("done_at"));
        let leased_ms = num(take("lease_at"));
        let worker = take("worker");
        let idempotency_key = take("idem");
        let ready_ms = num(take("ready_at"));
        let payload = fields.remove("payload").unwrap_or_default();
        Some(Self {
            id,
            state,
            payload,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
            last_error,
            created_ms,
            finished_ms,
            leased_ms,
            worker,
            idempotency_key,
            ready_ms,
        })
    }
}

pub(crate) struct Inner {
    pub(crate) config: QueueConfig,
    pub(crate) conn: Conn,
    pub(crate) scripts: Scripts,
}

/// A handle on one queue. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct JobQueue {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Whether a failed Redis call is worth retrying (connection trouble, server
/// loading or failing over) rather than a fault in the request.
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_timeout()
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
}

pub(crate) fn protocol(queue: &str, action: &'static str, detail: impl ToString) -> QueueError {
    QueueError::Protocol {
        queue: queue.to_owned(),
        action,
        detail: detail.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl JobQueue {
    /// Connects to the queue's Redis, retrying for up to the configured
    /// `reconnect_for` while it is unreachable.
    ///
    /// # Errors
    /// [`QueueError::Redis`] when Redis stays unreachable.
    pub async fn connect(config: QueueConfig) -> Result<Self, QueueError> {
        let conn = connect_with_retry(&config, Duration::from_secs(10)).await?;
        let queue = Self {
            inner: Arc::new(Inner {
                config,
                conn,
                scripts: Scripts::new(),
            }),
        };
        queue.register_queue().await?;
        Ok(queue)
    }

    /// The queue's configuration.
    #[must_use]
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// A worker backend for `WorkerBuilder::backend`, decoding jobs as `Args`.
    /// Each worker needs its own backend; they share this queue's connection.
    #[must_use]
    pub fn backend<Args>(&self) -> RedisBackend<Args> {
        RedisBackend::new(self.clone())
    }

    /// Runs one Redis call, retrying transient failures with backoff for up
    /// to `reconnect_for`.
    pub(crate) async fn call<T, F, Fut>(&self, action: &'static str, f: F) -> Result<T, QueueError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.reconnect_for;
        let mut backoff = Backoff::new();
        loop {
            match f(self.inner.conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::warn!(queue = %self.inner.config.queue, action, error = %e, "redis call failed; retrying");
                    backoff.wait().await;
                }
                Err(source) => {
                    return Err(QueueError::Redis {
                        url: redact_url(&self.inner.config.redis_url),
                        action,
                        source,
                    });
                }
            }
        }
    }

    async fn register_queue(&self) -> Result<(), QueueError> {
        let keys = self.inner.config.keys.clone();
        let queue = self.inner.config.queue.clone();
        self.call("registering the queue", |mut conn| {
            let registry = keys.registry().to_owned();
            let queue = queue.clone();
            async move {
                redis::cmd("SADD")
                    .arg(registry)
                    .arg(queue)
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await
    }

    /// Pushes one job.
    ///
    /// # Errors
    /// [`QueueError::Codec`] if `job` cannot be serialized,
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn push<T: Serialize>(
        &self,
        job: &T,
        options: PushOptions,
    ) -> Result<PushOutcome, QueueError> {
        let payload = self.encode(job, options.id.as_deref())?;
        let mut out = self.push_encoded(vec![(payload, options)]).await?;
        out.pop()
            .ok_or_else(|| protocol(&self.inner.config.queue, "pushing", "empty answer"))
    }

    /// Pushes many jobs in pipelined chunks; one outcome per job, in order.
    ///
    /// # Errors
    /// As [`JobQueue::push`]. Chunks already written stay written.
    pub async fn push_bulk<T: Serialize>(
        &self,
        jobs: impl IntoIterator<Item = NewJob<T>>,
    ) -> Result<Vec<PushOutcome>, QueueError> {
        let mut encoded = Vec::new();
        for NewJob { job, options } in jobs {
            let payload = self.encode(&job, options.id.as_deref())?;
            encoded.push((payload, options));
        }
        self.push_encoded(encoded).await
    }

    fn encode<T: Serialize>(&self, job: &T, id: Option<&str>) -> Result<Vec<u8>, QueueError> {
        serde_json::to_vec(job).map_err(|source| QueueError::Codec {
            queue: self.inner.config.queue.clone(),
            id: id.unwrap_or("(new)").to_owned(),
            source,
        })
    }

    /// Pushes already-encoded payloads.
    pub(crate) async fn push_encoded(
        &self,
        jobs: Vec<(Vec<u8>, PushOptions)>,
    ) -> Result<Vec<PushOutcome>, QueueError> {
        let config = &self.inner.config;
        let default_max = config.retry.max_attempts;
        // Ids are fixed before the first try, so a retry after a lost answer
        // finds its own job and still reports it as new.
        let jobs: Vec<(String, bool, Vec<u8>, PushOptions)> = jobs
            .into_iter()
            .map(|(payload, opts)| {
                let generated = opts.id.is_none();
                let id = opts
                    .id
                    .clone()
                    .unwrap_or_else(|| ulid::Ulid::new().to_string());
                (id, generated, payload, opts)
            })
            .collect();
        let mut outcomes = Vec::with_capacity(jobs.len());
        // Several chunks in flight at once on the multiplexed connection.
        const IN_FLIGHT: usize = 8;
        let chunks: Vec<_> = jobs.chunks(config.push_chunk).collect();
        for group in chunks.chunks(IN_FLIGHT) {
            let calls = group
                .iter()
                .map(|chunk| self.push_chunk(chunk, default_max));
            for result in futures::future::join_all(calls).await {
                outcomes.extend(result?);
            }
        }
        Ok(outcomes)
    }

    async fn push_chunk(
        &self,
        chunk: &[(String, bool, Vec<u8>, PushOptions)],
        default_max: u32,
    ) -> Result<Vec<PushOutcome>, QueueError> {
        let keys = &self.inner.config.keys;
        let build = |check_generated: bool| {
            let mut invocation = self.inner.scripts.push.prepare_invoke();
            invocation
                .key(keys.pending())
                .arg(keys.prefix())
                .arg(chunk.len())
                .arg(if check_generated { "1" } else { "0" });
            for (id, generated, payload, opts) in chunk {
                let delay = u64::try_from(opts.delay.as_millis()).unwrap_or(u64::MAX);
                invocation
                    .arg(id)
                    .arg(opts.idempotency_key.as_deref().unwrap_or(""))
                    .arg(payload.as_slice())
                    .arg(opts.max_attempts.unwrap_or(default_max).max(1))
                    .arg(delay)
                    .arg(if *generated { "1" } else { "0" });
            }
            invocation
        };
        let first = build(false);
        let retry = build(true);
        // The first try trusts generated ids to be new; a retry (the first
        // answer may have been lost after the script ran) checks them.
        let tries = std::sync::atomic::AtomicU32::new(0);
        let answer: Vec<Value> = self
            .call("pushing jobs", |mut conn| {
                let invocation = if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    &first
                } else {
                    &retry
                };
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let queue = &self.inner.config.queue;
        if answer.len() != chunk.len() * 2 {
            return Err(protocol(
                queue,
                "pushing jobs",
                format!("{} values for {} jobs", answer.len(), chunk.len()),
            ));
        }
        let mut out = Vec::with_capacity(chunk.len());
        let mut values = answer.into_iter();
        for (id, generated, _, _) in chunk {
            let (Some(flag), Some(holder)) = (values.next(), values.next()) else {
                break;
            };
            let flag =
                i64::from_redis_value(flag).map_err(|e| protocol(queue, "pushing jobs", e))?;
            let holder =
                String::from_redis_value(holder).map_err(|e| protocol(queue, "pushing jobs", e))?;
            let new = flag == 1 || (*generated && holder == *id);
            out.push(PushOutcome { id: holder, new });
        }
        Ok(out)
    }

    /// Counts of this queue.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn counts(&self) -> Result<QueueCounts, QueueError> {
        self.counts_of(&self.inner.config.queue).await
    }

    /// Counts of another queue of the same namespace.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn counts_of(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        let config = self.inner.config.for_queue(queue);
        let keys = &config.keys;
        let ttl = worker_ttl(&config);
        let mut invocation = self.inner.scripts.counts.prepare_invoke();
        invocation
            .key(keys.pending())
            .arg(keys.prefix())
            .arg(ms(config.retention.done))
            .arg(ms(config.retention.dead))
            .arg(ms(ttl));
        let v: Vec<i64> = self
            .call("reading counts", |mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        let n = |i: usize| u64::try_from(get(i)).unwrap_or(0);
        Ok(QueueCounts {
            pending: n(0),
            scheduled: n(1),
            running: n(2),
            done: n(3),
            dead: n(4),
            oldest_pending_age: u64::try_from(get(5)).ok().map(Duration::from_millis),
            stale_acks: n(6),
            lapsed_leases: n(7),
            workers: n(8),
        })
    }

    /// Names of the queues registered in this namespace.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn queue_names(&self) -> Result<Vec<String>, QueueError> {
        let registry = self.inner.config.keys.registry().to_owned();
        let mut names: Vec<String> = self
            .call("listing queues", |mut conn| {
                let registry = registry.clone();
                async move {
                    redis::cmd("SMEMBERS")
                        .arg(registry)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        names.sort();
        Ok(names)
    }

    /// One job by id, `None` if absent or expired.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, QueueError> {
        Ok(self.jobs(&[id.to_owned()]).await?.pop().flatten())
    }

    /// Several jobs by id, in order; `None` for absent ones. Pipelined.
    pub(crate) async fn jobs(&self, ids: &[String]) -> Result<Vec<Option<JobInfo>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.inner.config.keys;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL")
                .arg(keys.job(id))
                .cmd("ZSCORE")
                .arg(keys.leased())
                .arg(id);
        }
        let answers: Vec<(JobFields, Option<f64>)> = self
            .call("reading jobs", |mut conn| {
                let pipe = &pipe;
                async move {
                    let flat: Vec<Value> = pipe.query_async(&mut conn).await?;
                    let mut out = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(h), Some(z)) = (it.next(), it.next()) {
                        out.push((
                            JobFields::from_redis_value(h)?,
                            Option::<f64>::from_redis_value(z)?,
                        ));
                    }
                    Ok(out)
                }
            })
            .await?;
        let vt = ms(self.inner.config.visibility_timeout);
        Ok(ids
            .iter()
            .zip(answers)
            .map(|(id, (fields, lease_expiry))| {
                let mut job = JobInfo::from_fields(id.clone(), fields)?;
                // A job is running while it is in the leased set (its hash is
                // not rewritten when a lease starts).
                if let Some(expiry) = lease_expiry {
                    job.state = JobState::Running;
                    job.attempts = job.attempts.saturating_add(1);
                    job.leased_ms = Some((expiry as u64).saturating_sub(vt));
                    job.worker = None;
                }
                Some(job)
            })
            .collect())
    }

    /// Ids in a sorted set of the queue, newest first.
    pub(crate) async fn ids_in(
        &self,
        key: String,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<String>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.call("listing job ids", |mut conn| {
            let key = key.clone();
            async move {
                redis::cmd("ZREVRANGE")
                    .arg(key)
                    .arg(offset)
                    .arg(offset + limit - 1)
                    .query_async(&mut conn)
                    .await
            }
        })
        .await
    }

    /// Ids in the pending list, head first.
    pub(crate) async fn pending_ids(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<String>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.inner.config.keys.pending();
        self.call("listing pending ids", |mut conn| {
            let key = key.clone();
            async move {
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(offset)
                    .arg(offset + limit - 1)
                    .query_async(&mut conn)
                    .await
            }
        })
        .await
    }

    /// Dead jobs, newest first.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn dead_letters(&self, offset: u64, limit: u64) -> Result<Vec<JobInfo>, QueueError> {
        let ids = self
            .ids_in(self.inner.config.keys.dead(), offset, limit)
            .await?;
        Ok(self.jobs(&ids).await?.into_iter().flatten().collect())
    }

    /// Re-drives the given dead jobs: back to pending with fresh attempts.
    /// Returns how many were dead and are now pending.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn retry_dead(&self, ids: &[String]) -> Result<u64, QueueError> {
        self.dead_action("retry", ids).await
    }

    /// Deletes the given dead jobs. Returns how many were removed.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn purge_dead(&self, ids: &[String]) -> Result<u64, QueueError> {
        self.dead_action("purge", ids).await
    }

    /// Re-drives every dead job, in bounded batches. Returns how many.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn retry_all_dead(&self) -> Result<u64, QueueError> {
        self.dead_action_all("retry").await
    }

    /// Deletes every dead job, in bounded batches. Returns how many.
    ///
    /// # Errors
    /// [`QueueError::Redis`] if Redis stays unreachable.
    pub async fn purge_all_dead(&self) -> Result<u64, QueueError> {
        self.dead_action_all("purge").await
    }

    async fn dead_action_all(&self, action: &'static str) -> Result<u64, QueueError> {
        let batch = self.inner.config.move_batch as u64;
        let mut total = 0;
        loop {
            let ids = self.ids_in(self.inner.config.keys.dead(), 0, batch).await?;
            if ids.is_empty() {
                return Ok(total);
            }
            total += self.dead_action(action, &ids).await?;
        }
    }

    async fn dead_action(&self, action: &'static str, ids: &[String]) -> Result<u64, QueueError> {
        let keys = &self.inner.config.keys;
        let mut total = 0;
        for chunk in ids.chunks(self.inner.config.move_batch) {
            let mut invocation = self.inner.scripts.dead.prepare_invoke();
            invocation.key(keys.dead()).arg(keys.prefix()).arg(action);
            for id in chunk {
                invocation.arg(id);
            }
            let n: u64 = self
                .call("acting on dead jobs", |mut conn| {
                    let invocation = &invocation;
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            total += n;
        }
        Ok(total)
    }
}

/// A job hash as read, field → raw value.
type JobFields = HashMap<String, Vec<u8>>;

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a worker record outlives its last heartbeat.
pub(crate) fn worker_ttl(config: &QueueConfig) -> Duration {
    config.heartbeat_interval * 3
}

pub(crate) fn epoch_ms() -> u64 {
    now_ms()
}
