//! The worker's identity: who holds a lease, who logged a line, which row the
//! dashboard shows. Unique per process, readable by an operator.
//!
//! The host part is the Kubernetes pod name (`POD_NAME`, set through the
//! downward API) or the host name; the random part keeps two processes on one
//! host (or a restarted pod with the same name) apart.

use std::fmt;

/// A process-unique worker name such as `sync-worker-7f9c-0b4e2a91`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkerIdentity(String);

impl WorkerIdentity {
    /// Builds a fresh identity from the pod or host name and 32 random bits.
    pub fn generate() -> WorkerIdentity {
        WorkerIdentity::with_host(&host_name())
    }

    /// Builds a fresh identity on a given host part (tests, the in-process demo).
    pub fn with_host(host: &str) -> WorkerIdentity {
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let host = if host.is_empty() {
            "sync-worker".to_owned()
        } else {
            host
        };
        WorkerIdentity(format!("{host}-{:08x}", rand::random::<u32>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `POD_NAME`, else `HOSTNAME`, else the kernel's host name, else `sync-worker`.
fn host_name() -> String {
    for var in ["POD_NAME", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var) {
            let v = v.trim();
            if !v.is_empty() {
                return v.to_owned();
            }
        }
    }
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(v) = std::fs::read_to_string(file) {
            let v = v.trim();
            if !v.is_empty() {
                return v.to_owned();
            }
        }
    }
    "sync-worker".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_identities_on_one_host_differ() {
        let a = WorkerIdentity::with_host("pod-1");
        let b = WorkerIdentity::with_host("pod-1");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("pod-1-"));
    }

    #[test]
    fn odd_host_characters_are_replaced() {
        let a = WorkerIdentity::with_host("my host/1");
        assert!(a.as_str().starts_with("my-host-1-"), "{a}");
    }
}
