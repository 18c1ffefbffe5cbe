//! Errors: [`QueueError`] for what the crate's calls can fail with, and
//! [`JobError`], the error a handler returns to say how a failure is retried.

use std::time::Duration;

/// Failure of a queue operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A configuration value is out of range.
    #[error("queue setting `{setting}`: {problem}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Redis could not be reached or answered with an error.
    #[error("redis at {url}, while {action}: {source}")]
    Redis {
        /// Where Redis was expected (password removed).
        url: String,
        /// What the crate was doing.
        action: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A job payload could not be encoded or decoded.
    #[error("job {id} on queue {queue}: payload is not valid for this job type: {source}")]
    Codec {
        /// The queue.
        queue: String,
        /// The job.
        id: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Redis answered something this crate did not expect.
    #[error("queue {queue}: unexpected answer from redis while {action}: {detail}")]
    Protocol {
        /// The queue.
        queue: String,
        /// What the crate was doing.
        action: &'static str,
        /// What was odd.
        detail: String,
    },
    /// The job does not exist (or has expired).
    #[error("queue {queue}: no job {id}")]
    NotFound {
        /// The queue.
        queue: String,
        /// The job.
        id: String,
    },
}

/// What a handler wants done with a job it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry by the queue's policy (backoff with jitter), until out of attempts.
    Backoff,
    /// Retry once this much time has passed (e.g. a portal's `Retry-After`),
    /// if attempts remain.
    After(Duration),
    /// Never retry: the job goes to the dead set at once.
    Never,
}

/// The error type a handler returns so the backend knows how to retry.
///
/// Any other error type is treated as [`RetryDecision::Backoff`]. apalis'
/// `AbortError` counts as [`RetryDecision::Never`] and `RetryAfterError` as
/// [`RetryDecision::After`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    message: String,
    decision: RetryDecision,
}

impl JobError {
    /// A failure to retry by the queue's policy.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            decision: RetryDecision::Backoff,
        }
    }
    /// A failure to retry after `delay`.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            message: message.into(),
            decision: RetryDecision::After(delay),
        }
    }
    /// A failure that retrying cannot fix: dead at once.
    pub fn no_retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            decision: RetryDecision::Never,
        }
    }
    /// What the handler asked for.
    #[must_use]
    pub fn decision(&self) -> RetryDecision {
        self.decision
    }
    /// The message stored as the job's last error.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}
