//! The Redis side of the job queue: an apalis-core 1.0 backend on the `redis`
//! crate with leases, retries, dead letters, retention and counts.
