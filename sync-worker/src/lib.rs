//! `sync-worker`: consumes sync jobs, calls the Patient Portal and writes results
//! back to the task store; serves health, metrics and the queue dashboard.
//! (Filled by the sync-worker issue.)
