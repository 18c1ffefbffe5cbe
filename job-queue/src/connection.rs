//! One place that opens Redis connections: a single server through a
//! reconnecting `ConnectionManager`, or Redis Cluster through the cluster
//! client. Both reconnect by themselves; callers retry failed commands with
//! [`Backoff`].

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::{QueueConfig, redact_url};
use crate::error::QueueError;

/// A connection to the queue's Redis, single server or cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Conn::Single"),
            Self::Cluster(_) => f.write_str("Conn::Cluster"),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens a connection. `response_timeout` must exceed the longest blocking
/// command sent on it.
pub(crate) async fn connect(
    config: &QueueConfig,
    response_timeout: Duration,
) -> Result<Conn, QueueError> {
    let url = redact_url(&config.redis_url);
    let err = |action: &'static str| {
        let url = url.clone();
        move |source| QueueError::Redis {
            url,
            action,
            source,
        }
    };
    if config.cluster_urls.is_empty() {
        let client =
            redis::Client::open(config.redis_url.as_str()).map_err(err("parsing the redis url"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let manager = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(err("connecting"))?;
        Ok(Conn::Single(manager))
    } else {
        let client =
            redis::cluster::ClusterClient::builder(config.cluster_urls.iter().map(String::as_str))
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(response_timeout)
                .retries(3)
                .build()
                .map_err(err("parsing the cluster urls"))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(err("connecting to the cluster"))?;
        Ok(Conn::Cluster(conn))
    }
}

/// Opens a connection, retrying with backoff for up to `config.reconnect_for`.
pub(crate) async fn connect_with_retry(
    config: &QueueConfig,
    response_timeout: Duration,
) -> Result<Conn, QueueError> {
    let deadline = tokio::time::Instant::now() + config.reconnect_for;
    let mut backoff = Backoff::new();
    loop {
        match connect(config, response_timeout).await {
            Ok(conn) => return Ok(conn),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(queue = %config.queue, error = %e, "redis not reachable yet; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Exponential backoff with full jitter between retries of a failed Redis
/// call: 50 ms doubling up to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { attempt: 0 }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) async fn wait(&mut self) {
        use rand::Rng;
        let ceiling = (50u64 << self.attempt.min(7)).min(5000);
        self.attempt = self.attempt.saturating_add(1);
        let ms = rand::rng().random_range(ceiling / 2..=ceiling);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
