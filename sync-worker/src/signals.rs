//! SIGTERM and SIGINT: the first asks for a graceful stop, the second ends the
//! process at once.
//!
//! Kubernetes sends SIGTERM, waits `terminationGracePeriodSeconds` (30 s by
//! default), then SIGKILLs; the worker's own grace (`shutdown_grace`, 25 s)
//! is below that so held jobs are finished or handed back before the kill.
//! An operator pressing Ctrl-C twice means "now": that exits with 130 without
//! waiting (leases then lapse and the jobs come back, as after a kill).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Listens for SIGTERM/SIGINT in the background. The first one cancels
/// `shutdown`; a second one exits the process immediately with status 130.
///
/// Fails only if the signal handlers cannot be installed.
pub fn spawn_signal_listener(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = first,
            "shutdown requested: no new jobs, finishing held ones"
        );
        shutdown.cancel();
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = second, "second signal: exiting now");
        std::process::exit(130);
    });
    Ok(())
}
