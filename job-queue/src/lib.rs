//! # job-queue
//!
//! The Redis side of portal-sync's queue: an [apalis-core] 1.0 backend written
//! on the `redis` crate, with Lua scripts where atomicity needs them. It moves
//! opaque JSON jobs (generic over the job type with serde) and knows nothing
//! of tasks or portals.
//!
//! ```no_run
//! # async fn demo() -> Result<(), job_queue::QueueError> {
//! use job_queue::{JobQueue, PushOptions, QueueConfig};
//! let config = QueueConfig::builder("redis://127.0.0.1:6379", "sync")
//!     .namespace("portal-sync")
//!     .concurrency(32)
//!     .build()?;
//! let queue = JobQueue::connect(config).await?;
//! let pushed = queue.push(&42u32, PushOptions::with_idempotency_key("answer")).await?;
//! assert!(pushed.new);
//! let counts = queue.counts().await?;
//! # let _ = counts;
//! // Workers: WorkerBuilder::new("w1").backend(queue.backend::<u32>()).build(handler)
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//!
//! - **At-least-once with leases.** A fetched job is leased for the
//!   visibility timeout (default 30 s), renewed every third of it while the
//!   worker holds it. A lease that lapses (worker killed, paused, cut off) is
//!   taken back by whichever worker fetches next, whatever the dead worker was
//!   called. Every lease has a generation; an outcome carrying an old
//!   generation is rejected and counted (`stale_acks`), so a paused worker
//!   cannot complete a job that was handed to someone else. A lapse counts as
//!   an attempt.
//! - **Any backlog.** No script unpacks an unbounded list: due scheduled jobs
//!   and lapsed leases move in batches of `move_batch` (default 1000) per call,
//!   fetches pop at most the worker's free capacity, pushes go in chunks of
//!   `push_chunk` (default 500).
//! - **No pickup stall.** An idle worker blocks on a wake-up list (`BLPOP`)
//!   that every push (and every fetch that leaves work behind) marks, so a new
//!   job starts within milliseconds; a bounded poll (default 1 s) is the
//!   fallback, and due times of scheduled jobs shorten the sleep.
//! - **Retries as configured.** At most `max_attempts` deliveries; the n-th
//!   retry waits a full-jitter delay in `[0, min(cap, base·2^(n-1))]`. A
//!   handler returns [`JobError::no_retry`] (dead at once) or
//!   [`JobError::retry_after`] (scheduled then); apalis' `AbortError` and
//!   `RetryAfterError` are understood too. Attempts and the last error are
//!   kept on the job. The backend owns retries: do not add apalis' retry layer.
//! - **Dead letters.** Jobs out of attempts or refused for good are kept with
//!   payload, attempts, last error and time; [`JobQueue::dead_letters`],
//!   [`JobQueue::retry_dead`] and [`JobQueue::purge_dead`] list, re-drive and
//!   purge them.
//! - **Deduplication.** A push whose id, or idempotency key, belongs to a job
//!   still pending, scheduled or running stores nothing (atomically, in the
//!   push script) and reports `new: false` with the holder's id.
//! - **Clean shutdown.** When the worker stops, jobs fetched but not started
//!   go back to the head of pending at once (attempt undone); running jobs
//!   finish under apalis' graceful shutdown, or, if their future is dropped
//!   (grace ran out), are released. Await [`DrainHandle::drained`] after the
//!   worker returns and nothing stays leased. A worker restarted under the
//!   same name just works: leases belong to jobs, not to worker names.
//! - **Redis faults.** Every worker-side call retries with backoff for as long
//!   as Redis is away; producer calls retry for `reconnect_for` (default 60 s)
//!   and then fail. A push that returned `Ok` is in Redis; it survives a Redis
//!   restart as far as Redis' own persistence does (run it with AOF).
//! - **Retention.** Completed jobs expire after `retention.done` (default 24 h),
//!   dead ones after `retention.dead` (default 7 days): `PEXPIRE` on the job
//!   hash, and the done/dead indexes are trimmed on every settle.
//!
//! Concurrency is the backend's: `QueueConfig::concurrency` jobs run at once
//! per worker and `prefetch` more are leased ahead.
//!
//! ## Key layout
//!
//! Every key of a queue starts with the hash tag `{namespace:queue}` (one
//! Redis Cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns:q}:pending` | list | ids ready to run, head first |
//! | `{ns:q}:scheduled` | zset | delayed ids by due time (ms) |
//! | `{ns:q}:leased` | zset | leased ids by lease expiry (ms) |
//! | `{ns:q}:done` | zset | completed ids by completion time (trimmed to retention) |
//! | `{ns:q}:dead` | zset | dead ids by time of death (trimmed to retention) |
//! | `{ns:q}:job:<id>` | hash | `payload`, `state`, `attempts`, `max`, `gen` (lease generation), `worker`, `error`, `created`, `ready_at`, `lease_at`, `done_at`, `idem` |
//! | `{ns:q}:idem:<key>` | string | id of the active job holding an idempotency key |
//! | `{ns:q}:wake` | list | wake-up marker idle workers block on |
//! | `{ns:q}:stats` | hash | `pushed`, `duplicates`, `completed`, `retried`, `died`, `lapsed`, `stale_acks`, `day:<n>` |
//! | `{ns:q}:workers` | zset | worker names by last heartbeat (ms) |
//! | `{ns:q}:worker:<name>` | hash | worker record, expires 3 heartbeats after the last |
//! | `{ns}:queues` | set | queue names of the namespace (plain commands only) |
//!
//! Job states: `pending` → `running` → `done` | `scheduled` (retry) | `dead`;
//! `scheduled` → `pending` when due; `running` → `pending` when its lease
//! lapses or it is released.
//!
//! ## Not here
//!
//! Task semantics, portals, metrics exporters: those live in the binaries.
//! Job payloads should carry ids only.
//!
//! [apalis-core]: https://docs.rs/apalis-core

mod backend;
mod config;
mod connection;
mod error;
mod expose;
mod keys;
mod queue;
mod runtime;
mod scripts;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{DrainHandle, JsonCodec, Lease, LeaseLayer, LeaseService, RedisBackend};
pub use config::{QueueConfig, QueueConfigBuilder, Retention, RetryPolicy};
pub use error::{JobError, QueueError, RetryDecision};
pub use expose::{Dashboard, JsonValueCodec};
pub use keys::Keys;
pub use queue::{JobInfo, JobQueue, JobState, NewJob, PushOptions, PushOutcome, QueueCounts};
