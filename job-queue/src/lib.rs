#![doc = include_str!("../README.md")]
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
