//! The worker side of a queue: the background tasks one worker runs next to
//! its apalis service.
//!
//! - the *fetcher* leases jobs in batches up to the worker's free capacity and
//!   sleeps, when the queue is empty, until a wake-up marker arrives (blocking
//!   pop by the *waiter*) or the bounded poll interval passes;
//! - the *settler* writes outcomes (done, retry, dead, release) in batches,
//!   each checked against the job's current lease generation;
//! - the *renewer* renews the leases this worker holds and its worker record;
//! - the *trimmer*, on the same heartbeat, drops expired ids from the done and
//!   dead indexes, so they shrink on an idle queue too (settles trim them
//!   while there is traffic).
//!
//! Every Redis call is retried with backoff for as long as Redis is away; a
//! worker never dies of a Redis fault.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::task::AtomicWaker;
use redis::{FromRedisValue, Value};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::QueueConfig;
use crate::connection::{Backoff, Conn, connect};
use crate::queue::{JobQueue, epoch_ms, is_transient, ms, worker_ttl};

/// A job leased to this worker, not yet handed to the service.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) id: String,
    pub(crate) gen_: u64,
    pub(crate) payload: Vec<u8>,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
}

/// How a leased job ends its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettleKind {
    Done,
    Retry(Duration),
    Dead,
    /// Never started: back to the head of pending, attempt undone.
    ReleaseUnstarted,
    /// Started but abandoned (shutdown grace ran out): back to pending.
    ReleaseStarted,
}

impl SettleKind {
    fn code(self) -> &'static str {
        match self {
            Self::Done => "d",
            Self::Retry(_) => "r",
            Self::Dead => "x",
            Self::ReleaseUnstarted => "l",
            Self::ReleaseStarted => "a",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Settle {
    pub(crate) id: String,
    pub(crate) gen_: u64,
    pub(crate) kind: SettleKind,
    pub(crate) error: String,
}

/// State shared by a worker's backend, its lease layer and its background tasks.
pub(crate) struct Runtime {
    pub(crate) queue: JobQueue,
    worker: OnceLock<String>,
    started: AtomicBool,
    started_ms: AtomicU64,
    buffer: Mutex<VecDeque<Fetched>>,
    /// Leases held: id → generation (buffered, running, or being settled).
    held: Mutex<HashMap<String, u64>>,
    pub(crate) running: AtomicUsize,
    pub(crate) backend_waker: AtomicWaker,
    demand: Notify,
    wake: Notify,
    fetcher_idle: AtomicBool,
    idle_changed: Notify,
    fetcher_done: AtomicBool,
    settler_done: AtomicBool,
    settle_tx: mpsc::UnboundedSender<Settle>,
    settle_rx: Mutex<Option<mpsc::UnboundedReceiver<Settle>>>,
    /// Stop fetching, release what is buffered, flush, deregister.
    pub(crate) closing: CancellationToken,
    /// Everything flushed and the worker deregistered.
    pub(crate) closed: CancellationToken,
    shutdown_probe: Mutex<Option<Box<dyn Fn() -> bool + Send + Sync>>>,
    pub(crate) stale_acks: AtomicU64,
    pub(crate) layers: Mutex<String>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("worker", &self.worker.get())
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain data behind.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Runtime {
    pub(crate) fn new(queue: JobQueue) -> Arc<Self> {
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            queue,
            worker: OnceLock::new(),
            started: AtomicBool::new(false),
            started_ms: AtomicU64::new(0),
            buffer: Mutex::new(VecDeque::new()),
            held: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            backend_waker: AtomicWaker::new(),
            demand: Notify::new(),
            wake: Notify::new(),
            fetcher_idle: AtomicBool::new(false),
            idle_changed: Notify::new(),
            fetcher_done: AtomicBool::new(false),
            settler_done: AtomicBool::new(false),
            settle_tx,
            settle_rx: Mutex::new(Some(settle_rx)),
            closing: CancellationToken::new(),
            closed: CancellationToken::new(),
            shutdown_probe: Mutex::new(None),
            stale_acks: AtomicU64::new(0),
            layers: Mutex::new(String::new()),
        })
    }

    pub(crate) fn worker_name(&self) -> &str {
        self.worker.get().map_or("", String::as_str)
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Starts the background tasks once, for the worker called `name`.
    /// `is_shutting_down` lets the fetcher notice a stop before apalis
    /// closes the backend, so buffered jobs go back at once.
    pub(crate) fn start(
        self: &Arc<Self>,
        name: &str,
        is_shutting_down: Box<dyn Fn() -> bool + Send + Sync>,
    ) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.worker.set(name.to_owned());
        self.started_ms.store(epoch_ms(), Ordering::SeqCst);
        *lock(&self.shutdown_probe) = Some(is_shutting_down);
        let rx = lock(&self.settle_rx).take();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(self).fetcher());
        tasks.spawn(Arc::clone(self).waiter());
        if let Some(rx) = rx {
            tasks.spawn(Arc::clone(self).settler(rx));
        }
        tasks.spawn(Arc::clone(self).renewer());
        tasks.spawn(Arc::clone(self).trimmer());
        let me = Arc::clone(self);
        tokio::spawn(async move {
            while tasks.join_next().await.is_some() {}
            me.deregister().await;
            me.closed.cancel();
        });
    }

    fn shutting_down(&self) -> bool {
        self.closing.is_cancelled()
            || lock(&self.shutdown_probe)
                .as_ref()
                .is_some_and(|probe| probe())
    }

    pub(crate) fn pop_buffered(&self) -> Option<Fetched> {
        let job = lock(&self.buffer).pop_front();
        if job.is_some() {
            self.demand.notify_one();
        }
        job
    }

    pub(crate) fn want_more(&self) {
        self.demand.notify_one();
    }

    /// Records the end of a lease; the settler writes it.
    pub(crate) fn settle(&self, settle: Settle) {
        if let Err(mpsc::error::SendError(lost)) = self.settle_tx.send(settle) {
            // The settler is gone (runtime shut down): the lease lapses and the
            // job is delivered again.
            tracing::warn!(queue = %self.queue.config().queue, job = %lost.id, "settle after shutdown; the lease will lapse");
        }
    }

    /// A job handed to the service has finished (or was dropped).
    pub(crate) fn finished_running(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.backend_waker.wake();
        self.demand.notify_one();
    }

    fn capacity(&self) -> usize {
        let config = self.queue.config();
        let busy = self.running.load(Ordering::SeqCst) + lock(&self.buffer).len();
        (config.concurrency + config.prefetch).saturating_sub(busy)
    }

    async fn fetcher(self: Arc<Self>) {
        let config = self.queue.config().clone();
        let mut backoff = Backoff::new();
        let shutdown_tick = Duration::from_millis(50);
        loop {
            if self.shutting_down() {
                break;
            }
            let want = self.capacity().min(config.prefetch.max(1));
            // Refill in batches: while the service still has buffered jobs to
            // take, wait until at least half the prefetch is free (fewer,
            // larger script calls); with an empty buffer, fetch whatever fits.
            let buffered = lock(&self.buffer).len();
            let refill_at = (config.prefetch / 2).max(1);
            if want == 0 || (want < refill_at && buffered > 0) {
                tokio::select! {
                    () = self.demand.notified() => {}
                    () = self.closing.cancelled() => {}
                    () = tokio::time::sleep(shutdown_tick) => {}
                }
                continue;
            }
            let (more, next_due, jobs) = match self.fetch(want).await {
                Ok(v) => {
                    backoff.reset();
                    v
                }
                Err(e) => {
                    tracing::warn!(queue = %config.queue, error = %e, "fetch failed; retrying");
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = self.closing.cancelled() => {}
                    }
                    continue;
                }
            };
            let got = jobs.len();
            if got > 0 {
                {
                    let mut held = lock(&self.held);
                    for job in &jobs {
                        held.insert(job.id.clone(), job.gen_);
                    }
                }
                lock(&self.buffer).extend(jobs);
                self.backend_waker.wake();
            }
            if more || got > 0 {
                continue;
            }
            // Nothing ready: sleep until woken, due work, or the poll interval.
            let mut sleep_for = config.poll_interval;
            if let Ok(due) = u64::try_from(next_due) {
                sleep_for = sleep_for.min(Duration::from_millis(due.max(1)));
            }
            self.fetcher_idle.store(true, Ordering::SeqCst);
            self.idle_changed.notify_one();
            let deadline = tokio::time::Instant::now() + sleep_for;
            loop {
                tokio::select! {
                    () = self.wake.notified() => break,
                    () = tokio::time::sleep_until(deadline) => break,
                    () = self.closing.cancelled() => break,
                    () = tokio::time::sleep(shutdown_tick) => {
                        if self.shutting_down() { break; }
                    }
                }
            }
            self.fetcher_idle.store(false, Ordering::SeqCst);
        }
        // Stopping: whatever is buffered was never started; give it back now.
        let unstarted: Vec<Fetched> = lock(&self.buffer).drain(..).collect();
        if !unstarted.is_empty() {
            tracing::info!(queue = %config.queue, jobs = unstarted.len(), "releasing unstarted jobs");
        }
        for job in unstarted {
            self.settle(Settle {
                id: job.id,
                gen_: job.gen_,
                kind: SettleKind::ReleaseUnstarted,
                error: String::new(),
            });
        }
        self.fetcher_done.store(true, Ordering::SeqCst);
        self.closing.cancel();
    }

    async fn fetch(&self, want: usize) -> redis::RedisResult<(bool, i64, Vec<Fetched>)> {
        let config = self.queue.config();
        let keys = &config.keys;
        let mut conn = self.queue.inner.conn.clone();
        let value: Value = self
            .queue
            .inner
            .scripts
            .fetch
            .key(keys.pending())
            .arg(keys.prefix())
            .arg(want)
            .arg(self.worker_name())
            .arg(ms(config.visibility_timeout))
            .arg(config.move_batch)
            .arg(ms(config.retention.dead))
            .invoke_async(&mut conn)
            .await?;
        parse_fetch(value).map_err(|detail| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "fetch script answer",
                detail,
            ))
        })
    }

    /// Blocks on the wake-up list while the fetcher is idle, so an idle
    /// worker sees a new job within milliseconds.
    async fn waiter(self: Arc<Self>) {
        let config = self.queue.config().clone();
        let block = config.poll_interval;
        let mut conn: Option<Conn> = None;
        let mut backoff = Backoff::new();
        loop {
            if self.closing.is_cancelled() {
                return;
            }
            if !self.fetcher_idle.load(Ordering::SeqCst) {
                tokio::select! {
                    () = self.idle_changed.notified() => {}
                    () = self.closing.cancelled() => return,
                }
                continue;
            }
            let c = match &mut conn {
                Some(c) => c,
                None => match connect(&config, block + Duration::from_secs(5)).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::warn!(queue = %config.queue, error = %e, "wake-up connection failed; retrying");
                        tokio::select! {
                            () = backoff.wait() => {}
                            () = self.closing.cancelled() => return,
                        }
                        continue;
                    }
                },
            };
            let mut blpop = redis::cmd("BLPOP");
            blpop.arg(config.keys.wake()).arg(block.as_secs_f64());
            let popped = tokio::select! {
                r = blpop.query_async::<Option<(String, String)>>(c) => r,
                () = self.closing.cancelled() => return,
            };
            match popped {
                Ok(Some(_)) => {
                    backoff.reset();
                    if self.fetcher_idle.load(Ordering::SeqCst) {
                        self.wake.notify_one();
                    } else {
                        // Busy now: hand the wake-up on to another worker.
                        let _ = redis::cmd("RPUSH")
                            .arg(config.keys.wake())
                            .arg(1)
                            .query_async::<()>(c)
                            .await;
                    }
                }
                Ok(None) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(queue = %config.queue, error = %e, "waiting for work failed; retrying");
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = self.closing.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn settler(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Settle>) {
        const BATCH: usize = 500;
        let config = self.queue.config().clone();
        let mut backoff = Backoff::new();
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                first = rx.recv() => match first {
                    Some(s) => batch.push(s),
                    None => {
                        self.settler_done.store(true, Ordering::SeqCst);
                        return;
                    }
                },
                () = tokio::time::sleep(Duration::from_millis(50)), if self.closing.is_cancelled() => {}
                () = self.closing.cancelled(), if !self.closing.is_cancelled() => {}
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() && batch.len() < 32 && !self.closing.is_cancelled() {
                // Linger a moment so a burst of outcomes shares one script call.
                tokio::time::sleep(Duration::from_millis(1)).await;
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(s) => batch.push(s),
                        Err(_) => break,
                    }
                }
            }
            if batch.is_empty() {
                // Closing: done once nothing runs, nothing is buffered and the
                // fetcher has released its buffer.
                if self.closing.is_cancelled()
                    && self.fetcher_done.load(Ordering::SeqCst)
                    && self.running.load(Ordering::SeqCst) == 0
                    && rx.is_empty()
                {
                    self.settler_done.store(true, Ordering::SeqCst);
                    return;
                }
                continue;
            }
            loop {
                match self.write_settles(&batch).await {
                    Ok(applied) => {
                        backoff.reset();
                        if batch.iter().any(|s| matches!(s.kind, SettleKind::Retry(_))) {
                            // Let the fetcher learn the new due time.
                            self.wake.notify_one();
                        }
                        let mut held = lock(&self.held);
                        for (s, ok) in batch.iter().zip(applied) {
                            held.remove(&s.id);
                            if !ok {
                                self.stale_acks.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(queue = %config.queue, job = %s.id, "stale acknowledgement rejected: the lease had lapsed and the job was handed out again");
                            }
                        }
                        break;
                    }
                    Err(e)
                        if is_transient(&e)
                            || e.kind() == redis::ErrorKind::UnexpectedReturnType =>
                    {
                        tracing::warn!(queue = %config.queue, error = %e, jobs = batch.len(), "writing outcomes failed; retrying");
                        backoff.wait().await;
                    }
                    Err(e) => {
                        // Not retryable (a script fault): the leases lapse and
                        // the jobs are delivered again.
                        tracing::error!(queue = %config.queue, error = %e, jobs = batch.len(), "writing outcomes failed for good");
                        let mut held = lock(&self.held);
                        for s in &batch {
                            held.remove(&s.id);
                        }
                        break;
                    }
                }
            }
        }
    }

    async fn write_settles(&self, batch: &[Settle]) -> redis::RedisResult<Vec<bool>> {
        let config = self.queue.config();
        let keys = &config.keys;
        let mut invocation = self.queue.inner.scripts.settle.prepare_invoke();
        invocation
            .key(keys.pending())
            .arg(keys.prefix())
            .arg(batch.len())
            .arg(ms(config.retention.done))
            .arg(ms(config.retention.dead));
        for s in batch {
            let delay = match s.kind {
                SettleKind::Retry(d) => ms(d),
                _ => 0,
            };
            invocation
                .arg(&s.id)
                .arg(s.gen_)
                .arg(s.kind.code())
                .arg(delay)
                .arg(&s.error);
        }
        invocation.arg(self.worker_name());
        let mut conn = self.queue.inner.conn.clone();
        let flags: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    async fn renewer(self: Arc<Self>) {
        let config = self.queue.config().clone();
        let mut tick = heartbeat(&config);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.closed_inputs() => return,
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(queue = %config.queue, error = %e, "renewing leases failed; retrying at the next heartbeat");
            }
        }
    }

    /// Heartbeat maintenance, traffic or not: trims expired ids from the done
    /// and dead indexes in batches of `move_batch`, repeating while a batch
    /// comes back full. Its own task, so a long catch-up never delays a lease
    /// renewal.
    async fn trimmer(self: Arc<Self>) {
        let config = self.queue.config().clone();
        let mut tick = heartbeat(&config);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.closing.cancelled() => return,
            }
            loop {
                let more = tokio::select! {
                    r = self.trim() => r,
                    () = self.closing.cancelled() => return,
                };
                match more {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(queue = %config.queue, error = %e, "trimming finished jobs failed; retrying at the next heartbeat");
                        break;
                    }
                }
            }
        }
    }

    /// One bounded trim; `true` when a batch came back full (more may be left).
    async fn trim(&self) -> redis::RedisResult<bool> {
        let config = self.queue.config();
        let keys = &config.keys;
        let mut conn = self.queue.inner.conn.clone();
        let removed: Vec<usize> = self
            .queue
            .inner
            .scripts
            .trim
            .key(keys.done())
            .arg(keys.prefix())
            .arg(ms(config.retention.done))
            .arg(ms(config.retention.dead))
            .arg(config.move_batch)
            .invoke_async(&mut conn)
            .await?;
        Ok(removed.iter().any(|&n| n >= config.move_batch))
    }

    /// Resolves when the settler has written everything and stopped.
    async fn closed_inputs(&self) {
        self.closing.cancelled().await;
        while !self.settler_done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn renew(&self) -> redis::RedisResult<()> {
        let config = self.queue.config();
        let keys = &config.keys;
        let held: Vec<(String, u64)> = lock(&self.held)
            .iter()
            .map(|(id, g)| (id.clone(), *g))
            .collect();
        let layers = lock(&self.layers).clone();
        let mut chunks: Vec<&[(String, u64)]> = held.chunks(1000).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let mut invocation = self.queue.inner.scripts.renew.prepare_invoke();
            invocation
                .key(keys.leased())
                .arg(keys.prefix())
                .arg(ms(config.visibility_timeout))
                .arg(self.worker_name())
                .arg(ms(worker_ttl(config)))
                .arg(self.started_ms.load(Ordering::SeqCst))
                .arg(&layers)
                .arg(chunk.len());
            for (id, g) in chunk {
                invocation.arg(id).arg(*g);
            }
            let mut conn = self.queue.inner.conn.clone();
            let lost: Vec<String> = invocation.invoke_async(&mut conn).await?;
            if !lost.is_empty() {
                let mut held = lock(&self.held);
                for id in &lost {
                    tracing::warn!(queue = %config.queue, job = %id, "lease lost before renewal; its outcome will be rejected");
                    held.remove(id);
                }
            }
        }
        Ok(())
    }

    async fn deregister(&self) {
        let config = self.queue.config();
        let name = self.worker_name().to_owned();
        if name.is_empty() {
            return;
        }
        let keys = config.keys.clone();
        let result = self
            .queue
            .call("deregistering the worker", |mut conn| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZREM")
                    .arg(keys.workers())
                    .arg(&name)
                    .ignore()
                    .cmd("DEL")
                    .arg(keys.worker(&name))
                    .ignore();
                async move { pipe.query_async::<()>(&mut conn).await }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(queue = %config.queue, error = %e, "worker record left to expire");
        }
    }
}

/// A worker's heartbeat ticker: the first tick at once, a late tick delays
/// the next rather than bunching up.
fn heartbeat(config: &QueueConfig) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

fn parse_fetch(value: Value) -> Result<(bool, i64, Vec<Fetched>), String> {
    let Value::Array(mut parts) = value else {
        return Err(format!("expected an array, got {value:?}"));
    };
    if parts.len() != 3 {
        return Err(format!("expected 3 parts, got {}", parts.len()));
    }
    let jobs = parts.pop().unwrap_or(Value::Nil);
    let next_due =
        i64::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(|e| e.to_string())?;
    let more =
        i64::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(|e| e.to_string())? == 1;
    let jobs = match jobs {
        Value::Array(v) => v,
        Value::Nil => Vec::new(),
        other => return Err(format!("expected job array, got {other:?}")),
    };
    if jobs.len() % 6 != 0 {
        return Err(format!("job array of {} values", jobs.len()));
    }
    let mut out = Vec::with_capacity(jobs.len() / 6);
    let mut it = jobs.into_iter();
    while let (Some(id), Some(g), Some(payload), Some(attempts), Some(max), Some(_created)) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) {
        let s = |e: redis::ParsingError| e.to_string();
        out.push(Fetched {
            id: String::from_redis_value(id).map_err(s)?,
            gen_: u64::from_redis_value(g).map_err(s)?,
            payload: Vec::<u8>::from_redis_value(payload).map_err(s)?,
            attempts: u32::from_redis_value(attempts).map_err(s)?,
            max_attempts: u32::from_redis_value(max).map_err(s)?,
        });
    }
    Ok((more, next_due, out))
}
