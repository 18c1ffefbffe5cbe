//! Queue configuration: where the queue lives, how long leases last, how
//! failed jobs are retried and how long finished jobs are kept.

use std::time::Duration;

use rand::Rng;

use crate::error::QueueError;
use crate::keys::Keys;

/// How failed jobs are retried: at most `max_attempts` deliveries in all, the
/// n-th retry waiting a uniformly random time in `[0, min(cap, base·2^(n-1))]`
/// ("full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries in all, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff before the first retry (upper bound of its jitter window).
    pub base: Duration,
    /// Upper bound of any backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The window the delay before retry number `retry` (1-based) is drawn from.
    #[must_use]
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let ceiling = self.base.saturating_mul(1u32 << exp.min(31));
        ceiling.min(self.cap)
    }

    /// A full-jitter delay before retry number `retry` (1-based).
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry).as_millis();
        let ceiling = u64::try_from(ceiling).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }
}

/// How long finished jobs stay readable before Redis expires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed jobs (and their data). Default 24 h.
    pub done: Duration,
    /// Dead jobs (and their data). Default 7 days.
    pub dead: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            done: Duration::from_secs(24 * 3600),
            dead: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Everything needed to reach one queue and to work it.
///
/// Built with [`QueueConfig::builder`]; only the Redis URL and the queue name
/// are required.
#[derive(Clone)]
pub struct QueueConfig {
    pub(crate) redis_url: String,
    pub(crate) cluster_urls: Vec<String>,
    pub(crate) namespace: String,
    pub(crate) queue: String,
    pub(crate) visibility_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) retention: Retention,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) move_batch: usize,
    pub(crate) push_chunk: usize,
    pub(crate) reconnect_for: Duration,
    pub(crate) keys: Keys,
}

impl std::fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password; show only where it points.
        f.debug_struct("QueueConfig")
            .field("redis", &redact_url(&self.redis_url))
            .field("cluster", &self.cluster_urls.len())
            .field("namespace", &self.namespace)
            .field("queue", &self.queue)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("retry", &self.retry)
            .field("retention", &self.retention)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl QueueConfig {
    /// Starts a configuration for `queue` on the Redis server at `redis_url`.
    pub fn builder(redis_url: impl Into<String>, queue: impl Into<String>) -> QueueConfigBuilder {
        QueueConfigBuilder {
            redis_url: redis_url.into(),
            cluster_urls: Vec::new(),
            namespace: "portal-sync".to_owned(),
            queue: queue.into(),
            visibility_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            retention: Retention::default(),
            concurrency: 10,
            prefetch: None,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: None,
            move_batch: 1000,
            push_chunk: 500,
            reconnect_for: Duration::from_secs(60),
        }
    }

    /// The namespace all keys of this deployment start with.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The queue name.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }
    /// How long a fetched job stays leased without renewal.
    #[must_use]
    pub fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }
    /// The retry policy.
    #[must_use]
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
    /// The retention of finished jobs.
    #[must_use]
    pub fn retention(&self) -> &Retention {
        &self.retention
    }
    /// Jobs one worker runs at the same time.
    #[must_use]
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }
    /// The Redis key layout of this queue.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    /// The same settings for another queue of the same namespace.
    #[must_use]
    pub fn for_queue(&self, queue: &str) -> Self {
        let mut other = self.clone();
        other.queue = queue.to_owned();
        other.keys = Keys::new(&self.namespace, queue);
        other
    }
}

/// Builder for [`QueueConfig`]; see each setter for its default.
#[derive(Debug, Clone)]
pub struct QueueConfigBuilder {
    redis_url: String,
    cluster_urls: Vec<String>,
    namespace: String,
    queue: String,
    visibility_timeout: Duration,
    retry: RetryPolicy,
    retention: Retention,
    concurrency: usize,
    prefetch: Option<usize>,
    poll_interval: Duration,
    heartbeat_interval: Option<Duration>,
    move_batch: usize,
    push_chunk: usize,
    reconnect_for: Duration,
}

impl QueueConfigBuilder {
    /// Key namespace (default `portal-sync`).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
    /// Use Redis Cluster through these seed nodes instead of one server.
    #[must_use]
    pub fn cluster(mut self, nodes: Vec<String>) -> Self {
        self.cluster_urls = nodes;
        self
    }
    /// Lease length of a fetched job (default 30 s); renewed every third of it
    /// while the job runs.
    #[must_use]
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }
    /// Retry policy (default 5 attempts, 1 s base, 300 s cap).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Retention of done and dead jobs (default 24 h and 7 days).
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
    /// Jobs one worker runs at once (default 10).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }
    /// Jobs fetched ahead of free slots (default: the concurrency).
    #[must_use]
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch);
        self
    }
    /// Longest an idle worker waits before looking again when no wake-up
    /// arrives (default 1 s).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
    /// Worker heartbeat (default: a third of the visibility timeout, at most 10 s).
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }
    /// Most jobs one script call moves between sets (default 1000).
    #[must_use]
    pub fn move_batch(mut self, batch: usize) -> Self {
        self.move_batch = batch;
        self
    }
    /// Jobs per push script call in `push_bulk` (default 500).
    #[must_use]
    pub fn push_chunk(mut self, chunk: usize) -> Self {
        self.push_chunk = chunk;
        self
    }
    /// How long a producer call keeps retrying through a Redis outage before
    /// it fails (default 60 s). Workers retry for ever.
    #[must_use]
    pub fn reconnect_for(mut self, duration: Duration) -> Self {
        self.reconnect_for = duration;
        self
    }

    /// Checks the settings and builds the configuration.
    ///
    /// # Errors
    /// [`QueueError::Config`] naming the setting that is out of range.
    pub fn build(self) -> Result<QueueConfig, QueueError> {
        let bad = |setting: &'static str, problem: String| QueueError::Config { setting, problem };
        if self.queue.is_empty() || self.queue.contains(['{', '}', ' ']) {
            return Err(bad(
                "queue",
                format!(
                    "{:?} must be non-empty without braces or spaces",
                    self.queue
                ),
            ));
        }
        if self.namespace.is_empty() || self.namespace.contains(['{', '}', ' ']) {
            return Err(bad(
                "namespace",
                format!(
                    "{:?} must be non-empty without braces or spaces",
                    self.namespace
                ),
            ));
        }
        if self.visibility_timeout < Duration::from_millis(100) {
            return Err(bad(
                "visibility_timeout",
                format!("{:?} is shorter than 100 ms", self.visibility_timeout),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(bad("retry.max_attempts", "must be at least 1".to_owned()));
        }
        if self.retry.cap < self.retry.base {
            return Err(bad(
                "retry.cap",
                format!(
                    "{:?} is below retry.base {:?}",
                    self.retry.cap, self.retry.base
                ),
            ));
        }
        if self.concurrency == 0 {
            return Err(bad("concurrency", "must be at least 1".to_owned()));
        }
        if self.move_batch == 0 || self.move_batch > 5000 {
            return Err(bad(
                "move_batch",
                format!("{} is outside 1..=5000", self.move_batch),
            ));
        }
        if self.push_chunk == 0 || self.push_chunk > 5000 {
            return Err(bad(
                "push_chunk",
                format!("{} is outside 1..=5000", self.push_chunk),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(bad("poll_interval", "must be above zero".to_owned()));
        }
        let heartbeat_interval = self
            .heartbeat_interval
            .unwrap_or_else(|| (self.visibility_timeout / 3).min(Duration::from_secs(10)));
        if heartbeat_interval >= self.visibility_timeout {
            return Err(bad(
                "heartbeat_interval",
                format!(
                    "{heartbeat_interval:?} must be shorter than the visibility timeout {:?}",
                    self.visibility_timeout
                ),
            ));
        }
        let keys = Keys::new(&self.namespace, &self.queue);
        Ok(QueueConfig {
            redis_url: self.redis_url,
            cluster_urls: self.cluster_urls,
            namespace: self.namespace,
            queue: self.queue,
            visibility_timeout: self.visibility_timeout,
            retry: self.retry,
            retention: self.retention,
            concurrency: self.concurrency,
            prefetch: self.prefetch.unwrap_or(self.concurrency),
            poll_interval: self.poll_interval,
            heartbeat_interval,
            move_batch: self.move_batch,
            push_chunk: self.push_chunk,
            reconnect_for: self.reconnect_for,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_full_jitter_window() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(policy.backoff_ceiling(5), Duration::from_millis(1000));
        assert_eq!(policy.backoff_ceiling(60), Duration::from_millis(1000));
        for retry in 1..12 {
            for _ in 0..50 {
                assert!(policy.backoff(retry) <= policy.backoff_ceiling(retry));
            }
        }
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            redact_url("redis://u:secret@host:1/0"),
            "redis://host:1/0".to_owned()
        );
        assert_eq!(redact_url("redis://host:1"), "redis://host:1".to_owned());
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let err = QueueConfig::builder("redis://x", "q{1}")
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("queue"), "{err}");
        let err = QueueConfig::builder("redis://x", "q")
            .concurrency(0)
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("concurrency"), "{err}");
    }
}
