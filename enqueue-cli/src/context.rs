//! Opening what a command needs from the settings: the settings themselves,
//! the task store, a Redis connection (run lock, last-run record) and the job
//! queue. Each failure becomes a [`CommandError`] that names the dependency
//! and maps to its exit code (2 for settings, 3 for an unreachable service).

use std::path::Path;
use std::time::Duration;

use job_queue::{JobQueue, QueueConfig};
use redis::aio::MultiplexedConnection;
use task_model::QUEUE_NAME;
use task_model::settings::{Env, Settings};
use task_model::store::{AnyStore, open_store_with};

use crate::exit::CommandError;

/// How long a command waits for Redis to answer before it gives up. Cron
/// runs again in a minute; waiting longer only delays the error.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one Redis command may take.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a queue call keeps retrying through a Redis hiccup.
pub const QUEUE_RECONNECT_FOR: Duration = Duration::from_secs(3);

/// Reads the settings file with the process environment's overrides.
pub fn load_settings(path: &Path) -> Result<Settings, CommandError> {
    Settings::load(path, &Env::from_process()).map_err(|e| CommandError::Settings {
        lines: e.to_string().lines().map(str::to_string).collect(),
    })
}

/// Opens (creating and migrating on first use) the task store.
pub async fn open_task_store(settings: &Settings) -> Result<AnyStore, CommandError> {
    open_store_with(settings.store.url.expose(), settings.store.pool_size)
        .await
        .map_err(|e| CommandError::store(settings.store.url.redacted(), e))
}

/// A plain Redis connection for the run lock and the last-run record.
pub async fn connect_redis(settings: &Settings) -> Result<MultiplexedConnection, CommandError> {
    let url = &settings.redis.url;
    let client =
        redis::Client::open(url.expose()).map_err(|e| CommandError::redis(url.redacted(), e))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| CommandError::redis(url.redacted(), e))
}

/// The queue's configuration from the settings (namespace, queue name, and
/// the retry policy of the `worker` block: a job's attempts are fixed when it
/// is pushed, so the producer must push with the workers' policy).
pub fn queue_config(settings: &Settings) -> Result<QueueConfig, CommandError> {
    QueueConfig::builder(settings.redis.url.expose(), QUEUE_NAME)
        .namespace(settings.redis.namespace.clone())
        .retry(sync_worker::settings::retry_policy(settings))
        .reconnect_for(QUEUE_RECONNECT_FOR)
        .build()
        .map_err(|e| CommandError::Settings {
            lines: vec![format!("redis: {e}")],
        })
}

/// Connects to the job queue.
pub async fn connect_queue(settings: &Settings) -> Result<JobQueue, CommandError> {
    let config = queue_config(settings)?;
    JobQueue::connect(config)
        .await
        .map_err(|source| CommandError::Queue {
            action: "connecting to the queue",
            source,
        })
}
