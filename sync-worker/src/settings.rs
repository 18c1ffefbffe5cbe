//! From the settings file ([`task_model::Settings`], the one loader) to the
//! worker's parts: the portal client's configuration, the queue's
//! configuration, the job limits.

use std::time::Duration;

use job_queue::{QueueConfig, RetryPolicy};
use portal_api::{ClientConfig, ClientIdentity, Pem};
use task_model::Settings;
use task_model::settings::{ClientCertificate, PortalClientSettings};

use crate::job::JobLimits;

/// The portal client's configuration from the `portal_client` block.
pub fn portal_client_config(pc: &PortalClientSettings) -> ClientConfig {
    let mut config = ClientConfig::new(pc.url.expose(), pc.api_key.clone())
        .with_timeout(pc.timeout)
        .with_page_size(pc.task_package_size);
    if let Some(cert) = &pc.client_certificate {
        config = config.with_client_identity(match cert {
            ClientCertificate::Combined(path) => ClientIdentity::Combined(Pem::file(path)),
            ClientCertificate::Split { cert, key } => ClientIdentity::Split {
                cert: Pem::file(cert),
                key: Pem::file(key),
            },
        });
    }
    if let Some(ca) = &pc.ca_bundle {
        config = config.with_ca_bundle(Pem::file(ca));
    }
    config
}

/// The queue's retry policy from the `worker` block.
pub fn retry_policy(settings: &Settings) -> RetryPolicy {
    RetryPolicy {
        max_attempts: settings.worker.max_attempts,
        base: settings.worker.backoff_base,
        cap: settings.worker.backoff_cap,
    }
}

/// The worker's queue configuration: Redis and namespace from the `redis`
/// block, `concurrency` jobs at once, retries from the `worker` block.
/// `lease_timeout`: how long a job stays leased to a worker that stopped
/// renewing it (killed, frozen) before another worker may take it; the
/// queue's default when `None`.
pub fn queue_config(
    settings: &Settings,
    queue: &str,
    concurrency: usize,
    lease_timeout: Option<Duration>,
) -> Result<QueueConfig, job_queue::QueueError> {
    let mut builder = QueueConfig::builder(settings.redis.url.expose(), queue)
        .namespace(settings.redis.namespace.clone())
        .concurrency(concurrency)
        .retry(retry_policy(settings));
    if let Some(t) = lease_timeout {
        builder = builder.visibility_timeout(t);
    }
    builder.build()
}

/// Job limits from the `worker` block.
pub fn job_limits(settings: &Settings, auth_backoff: Duration) -> JobLimits {
    JobLimits {
        job_timeout: settings.worker.job_timeout,
        retry: retry_policy(settings),
        auth_backoff,
    }
}
