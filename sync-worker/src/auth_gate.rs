//! The portal refusing our key (401/403) is not a job failure: every job
//! would fail the same way. The gate turns it into a worker state:
//!
//! - the first refusal closes the gate: one clear error in the log,
//!   `/readyz` answers 503, and the job service stops taking jobs from the
//!   queue (its `poll_ready` waits on the gate), so the queue is not burnt
//!   through;
//! - while closed, [`AuthGate::run_probe`] asks the portal a cheap
//!   authenticated question every back-off period;
//! - when the portal answers, the gate opens and jobs flow again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::portal::Portal;

#[derive(Debug)]
struct Inner {
    open: watch::Sender<bool>,
    reason: Mutex<Option<String>>,
}

/// Shared open/closed state; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthGate(Arc<Inner>);

impl Default for AuthGate {
    fn default() -> Self {
        AuthGate::new()
    }
}

impl AuthGate {
    pub fn new() -> AuthGate {
        let (open, _) = watch::channel(true);
        AuthGate(Arc::new(Inner {
            open,
            reason: Mutex::new(None),
        }))
    }

    pub fn is_open(&self) -> bool {
        *self.0.open.borrow()
    }

    /// Why the gate is closed, if it is.
    pub fn refusal(&self) -> Option<String> {
        if self.is_open() {
            None
        } else {
            self.0
                .reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or(None)
                .or_else(|| Some("the portal refuses our API key".to_owned()))
        }
    }

    /// Closes the gate after a 401/403. Logs once per closing.
    pub fn refuse(&self, why: &str) {
        if let Ok(mut r) = self.0.reason.lock() {
            *r = Some(format!("the portal refuses our API key: {why}"));
        }
        let was_open = self.0.open.send_replace(false);
        if was_open {
            tracing::error!(
                error = %why,
                "the portal refuses our API key; pausing: no jobs are taken until it accepts the key again (check portal_client.api_key)"
            );
        }
    }

    fn reopen(&self) {
        let was_open = self.0.open.send_replace(true);
        if !was_open {
            tracing::info!("the portal accepts our API key again; resuming");
        }
    }

    /// Resolves when the gate is open.
    pub async fn wait_open(&self) {
        let mut rx = self.0.open.subscribe();
        // `wait_for` fails only when the sender is gone, which it never is
        // while `self` lives.
        let _ = rx.wait_for(|open| *open).await;
    }

    async fn wait_closed(&self) {
        let mut rx = self.0.open.subscribe();
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// While the gate is closed, probes the portal every `every` and reopens
    /// the gate once the key works. Runs until `shutdown`.
    pub async fn run_probe(&self, portal: Portal, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wait_closed() => {}
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match portal.probe().await {
                    Ok(()) => {
                        self.reopen();
                        break;
                    }
                    Err(e @ portal_api::PortalError::Unauthorized { .. }) => {
                        tracing::debug!(error = %e, "portal still refuses our key");
                    }
                    // Another failure says nothing about the key; try again
                    // later rather than reopen into an outage.
                    Err(e) => tracing::debug!(error = %e, "portal probe failed"),
                }
            }
        }
    }
}
