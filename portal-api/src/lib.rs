//! The Patient Portal HTTP contract, both sides of the wire in one crate.
//!
//! * [`Client`]: the typed async client portal-sync uses (reqwest, rustls
//!   with *ring*, TLS verification always on, optional mutual TLS). Build one
//!   per process from a [`ClientConfig`] and share it.
//! * [`PortalError`]: the one error type; [`PortalError::is_retryable`] and
//!   [`PortalError::retry_after`] are the one place that maps a portal answer
//!   to retry or not.
//! * [`wire`]: the JSON envelopes and the portal's objects.
//! * `sim` (feature `sim`, binary `portal-sim`): an in-memory portal with
//!   fault injection and a control API, for tests, benchmarks and demos.
//!
//! ```no_run
//! # async fn run() -> Result<(), portal_api::PortalError> {
//! use portal_api::{Client, ClientConfig, wire::TaskQuery};
//! let client = Client::new(ClientConfig::new(
//!     "https://patient-portal.example.com/api",
//!     "secret".to_owned().into(),
//! ))?;
//! for task in client.list_tasks(&TaskQuery::unacknowledged()).await? {
//!     client.acknowledge_task(&task.code, task.revision).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! What it does not do: decide what to submit, retry, or back off. Those are
//! the worker's; this crate only says whether a retry can help.

mod client;
mod config;
mod error;
mod tls;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

pub use client::{API_KEY_HEADER, Client, collect_pages};
pub use config::{ClientConfig, ClientIdentity, DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT, Pem};
pub use error::{
    BODY_EXCERPT_LIMIT, Call, DUPLICATE_TASK_CONTEXT, DUPLICATE_TASK_PREFIX, NetworkErrorKind,
    PortalError, duplicate_task_id, is_duplicate_task_message, parse_retry_after,
};
