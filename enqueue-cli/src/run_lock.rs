//! The enqueue run lock: one `portal-sync enqueue` at a time per namespace.
//!
//! A run takes `<namespace>:enqueue:lock` with `SET NX PX` (value: its run id)
//! and keeps it alive by extending the expiry while it works. If the process
//! dies, the lock lapses after [`LOCK_TTL`] and the next cron run proceeds.
//! Release and renewal compare the value first, so a run never deletes or
//! extends a lock that another run took after its own had lapsed.
//!
//! The lock saves wasted work; it is not what prevents double-enqueueing —
//! store leases and queue idempotency keys do that, so an overlap after a
//! lapse is harmless.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

/// How long a lock lives without renewal.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// How often a holder extends its lock.
const RENEW_EVERY: Duration = Duration::from_secs(10);

const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The lock key of a namespace.
pub fn lock_key(namespace: &str) -> String {
    format!("{namespace}:enqueue:lock")
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock held by run {holder} for another {expires_in_ms} ms")]
    Held { holder: String, expires_in_ms: i64 },
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A held lock, renewed in the background until [`RunLock::release`].
#[derive(Debug)]
pub struct RunLock {
    conn: MultiplexedConnection,
    key: String,
    run_id: String,
    renewer: JoinHandle<()>,
}

impl RunLock {
    /// Takes the lock for `run_id`, or reports who holds it.
    pub async fn acquire(
        conn: MultiplexedConnection,
        namespace: &str,
        run_id: &str,
    ) -> Result<RunLock, LockError> {
        let key = lock_key(namespace);
        let mut c = conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(run_id)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if taken.is_none() {
            let (holder, ttl): (Option<String>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await?;
            return Err(LockError::Held {
                holder: holder.unwrap_or_else(|| "(just released)".into()),
                expires_in_ms: ttl.max(0),
            });
        }
        let renewer = tokio::spawn(renew_forever(conn.clone(), key.clone(), run_id.to_string()));
        Ok(RunLock {
            conn,
            key,
            run_id: run_id.to_string(),
            renewer,
        })
    }

    /// Stops renewing and deletes the lock if it is still ours. A failure is
    /// logged, not returned: the lock then lapses on its own.
    pub async fn release(mut self) {
        self.renewer.abort();
        let result: redis::RedisResult<i64> = redis::Script::new(RELEASE_SCRIPT)
            .key(&self.key)
            .arg(&self.run_id)
            .invoke_async(&mut self.conn)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, key = %self.key, "could not release the enqueue lock; it lapses on its own");
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew_forever(mut conn: MultiplexedConnection, key: String, run_id: String) {
    let script = redis::Script::new(RENEW_SCRIPT);
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewed: redis::RedisResult<i64> = script
            .key(&key)
            .arg(&run_id)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(key = %key, "the enqueue lock lapsed and was taken or removed; store leases still keep runs apart");
                return;
            }
            Err(e) => tracing::warn!(error = %e, key = %key, "could not renew the enqueue lock"),
        }
    }
}
