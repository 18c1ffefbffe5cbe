//! The record of the last enqueue run, kept in Redis at
//! `<namespace>:enqueue:last-run` (the run's JSON summary) so that
//! `portal-sync status` can say when cron last ran and what it did.

use redis::aio::MultiplexedConnection;

use crate::summary::EnqueueSummary;

/// Kept for 30 days: a record older than that says little.
const KEEP_SECS: u64 = 30 * 24 * 3600;

/// The key of the record in a namespace.
pub fn last_run_key(namespace: &str) -> String {
    format!("{namespace}:enqueue:last-run")
}

/// Writes `summary` as the last run.
pub async fn record_last_run(
    conn: &mut MultiplexedConnection,
    namespace: &str,
    summary: &EnqueueSummary,
) -> Result<(), redis::RedisError> {
    let body = serde_json::to_string(summary).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "cannot encode the run summary",
            e.to_string(),
        ))
    })?;
    redis::cmd("SET")
        .arg(last_run_key(namespace))
        .arg(body)
        .arg("EX")
        .arg(KEEP_SECS)
        .query_async(conn)
        .await
}

/// The last run, if one was recorded. A record this version cannot read is
/// reported as absent with a warning.
pub async fn read_last_run(
    conn: &mut MultiplexedConnection,
    namespace: &str,
) -> Result<Option<EnqueueSummary>, redis::RedisError> {
    let body: Option<String> = redis::cmd("GET")
        .arg(last_run_key(namespace))
        .query_async(conn)
        .await?;
    Ok(body.and_then(|b| match serde_json::from_str(&b) {
        Ok(summary) => Some(summary),
        Err(e) => {
            tracing::warn!(error = %e, "the last-run record in Redis cannot be read; ignoring it");
            None
        }
    }))
}
