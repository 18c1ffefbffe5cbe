//! The Redis key layout of one queue. Every key of a queue starts with the
//! hash tag `{namespace:queue}`, so all of them live in one Redis Cluster slot
//! and every script touches a single slot.

/// Names of the Redis keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    registry: String,
}

impl Keys {
    /// The keys of `queue` in `namespace`.
    #[must_use]
    pub fn new(namespace: &str, queue: &str) -> Self {
        Self {
            prefix: format!("{{{namespace}:{queue}}}"),
            registry: format!("{{{namespace}}}:queues"),
        }
    }
    /// `{ns:queue}`: the hash tag and prefix of every key of the queue.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// List of job ids ready to run, oldest at the head.
    #[must_use]
    pub fn pending(&self) -> String {
        format!("{}:pending", self.prefix)
    }
    /// Sorted set of delayed job ids, scored by due time (ms).
    #[must_use]
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.prefix)
    }
    /// Sorted set of leased (running) job ids, scored by lease expiry (ms).
    #[must_use]
    pub fn leased(&self) -> String {
        format!("{}:leased", self.prefix)
    }
    /// Sorted set of completed job ids, scored by completion time (ms).
    #[must_use]
    pub fn done(&self) -> String {
        format!("{}:done", self.prefix)
    }
    /// Sorted set of dead job ids, scored by time of death (ms).
    #[must_use]
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }
    /// Hash of one job.
    #[must_use]
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    /// String mapping an idempotency key to the job id holding it.
    #[must_use]
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }
    /// List idle workers block on; a marker is pushed when work arrives.
    #[must_use]
    pub fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }
    /// Hash of counters (stale acks, redeliveries, completions, per-day activity).
    #[must_use]
    pub fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }
    /// Sorted set of worker names, scored by last heartbeat (ms).
    #[must_use]
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    /// Hash describing one worker; expires when the worker stops heartbeating.
    #[must_use]
    pub fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }
    /// Set of queue names of the namespace (its own slot; written with plain
    /// commands, never inside a queue script).
    #[must_use]
    pub fn registry(&self) -> &str {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_key_shares_the_hash_tag() {
        let keys = Keys::new("ns", "q");
        for key in [
            keys.pending(),
            keys.scheduled(),
            keys.leased(),
            keys.done(),
            keys.dead(),
            keys.job("01J"),
            keys.idempotency("k"),
            keys.wake(),
            keys.stats(),
            keys.workers(),
            keys.worker("w"),
        ] {
            assert!(key.starts_with("{ns:q}:"), "{key}");
        }
    }
}
