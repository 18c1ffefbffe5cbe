//! The job payload that travels through the Redis queue, [`SyncJob`], the
//! queue's name, [`QUEUE_NAME`], and the idempotency key the enqueue command
//! uses to avoid pushing the same job twice.
//!
//! A job carries **ids only**: its kind, the run that produced it, the host ids
//! of its tasks, or the page to pull. It never carries names, e-mails, answers
//! or documents, so nothing personal sits in Redis; the worker loads the tasks
//! from the store when the job runs and so always sends their current version.
//! The types allow nothing else: there is no field that could hold task
//! content, and unknown fields are rejected on decode.
//!
//! The shape is checked on decode as well as by the constructors: *submit* and
//! *refresh* need at least one task id and no page; *pull* needs a page and no
//! task ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::task::TaskId;

/// The name of the queue every [`SyncJob`] goes through (the Redis namespace
/// from the settings is put in front of it by the queue backend).
pub const QUEUE_NAME: &str = "sync-jobs";

/// What a job asks the worker to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Submit a package of tasks (local status `awaiting-submission`).
    Submit,
    /// Fetch the current portal state of a package of tasks.
    Refresh,
    /// Fetch one page of unacknowledged portal changes.
    Pull,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Submit, JobKind::Refresh, JobKind::Pull];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Submit => "submit",
            JobKind::Refresh => "refresh",
            JobKind::Pull => "pull",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One page of the portal's list of unacknowledged changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullPage {
    pub offset: u64,
    /// Page size, normally the settings' `task_package_size`.
    pub limit: u32,
}

/// A job as it sits in the queue: ids only (module doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSyncJob")]
pub struct SyncJob {
    pub kind: JobKind,
    /// The enqueue run that produced this job (for logs and metrics).
    pub run_id: String,
    /// Host ids of the tasks to submit or refresh; empty for a pull.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_ids: Vec<TaskId>,
    /// The page to pull; `None` for submit and refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PullPage>,
}

/// The wire form before its shape is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyncJob {
    kind: JobKind,
    run_id: String,
    #[serde(default)]
    task_ids: Vec<TaskId>,
    #[serde(default)]
    page: Option<PullPage>,
}

impl TryFrom<RawSyncJob> for SyncJob {
    type Error = JobShapeError;

    fn try_from(raw: RawSyncJob) -> Result<SyncJob, JobShapeError> {
        let job = SyncJob {
            kind: raw.kind,
            run_id: raw.run_id,
            task_ids: raw.task_ids,
            page: raw.page,
        };
        job.check_shape()?;
        Ok(job)
    }
}

/// A job whose fields do not fit its kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobShapeError {
    #[error("{kind} job of run {run_id:?} has no task ids")]
    NoTasks { kind: JobKind, run_id: String },
    #[error("{kind} job of run {run_id:?} has a page; only pull jobs have one")]
    UnexpectedPage { kind: JobKind, run_id: String },
    #[error("pull job of run {run_id:?} has no page")]
    NoPage { run_id: String },
    #[error("pull job of run {run_id:?} has {count} task ids; pull jobs carry none")]
    UnexpectedTasks { run_id: String, count: usize },
    #[error("pull job of run {run_id:?} has page limit 0")]
    EmptyPage { run_id: String },
    #[error("{kind} job has an empty run id")]
    NoRunId { kind: JobKind },
}

impl SyncJob {
    /// A job that submits `task_ids`.
    pub fn submit(
        run_id: impl Into<String>,
        task_ids: Vec<TaskId>,
    ) -> Result<SyncJob, JobShapeError> {
        Self::for_tasks(JobKind::Submit, run_id.into(), task_ids)
    }

    /// A job that refreshes `task_ids` from the portal.
    pub fn refresh(
        run_id: impl Into<String>,
        task_ids: Vec<TaskId>,
    ) -> Result<SyncJob, JobShapeError> {
        Self::for_tasks(JobKind::Refresh, run_id.into(), task_ids)
    }

    /// A job that pulls one page of unacknowledged changes.
    pub fn pull(run_id: impl Into<String>, page: PullPage) -> Result<SyncJob, JobShapeError> {
        let job = SyncJob {
            kind: JobKind::Pull,
            run_id: run_id.into(),
            task_ids: Vec::new(),
            page: Some(page),
        };
        job.check_shape()?;
        Ok(job)
    }

    fn for_tasks(
        kind: JobKind,
        run_id: String,
        task_ids: Vec<TaskId>,
    ) -> Result<SyncJob, JobShapeError> {
        let job = SyncJob {
            kind,
            run_id,
            task_ids,
            page: None,
        };
        job.check_shape()?;
        Ok(job)
    }

    /// Whether the fields fit the kind (module doc).
    pub fn check_shape(&self) -> Result<(), JobShapeError> {
        let run_id = || self.run_id.clone();
        if self.run_id.is_empty() {
            return Err(JobShapeError::NoRunId { kind: self.kind });
        }
        match self.kind {
            JobKind::Submit | JobKind::Refresh => {
                if self.task_ids.is_empty() {
                    return Err(JobShapeError::NoTasks {
                        kind: self.kind,
                        run_id: run_id(),
                    });
                }
                if self.page.is_some() {
                    return Err(JobShapeError::UnexpectedPage {
                        kind: self.kind,
                        run_id: run_id(),
                    });
                }
            }
            JobKind::Pull => {
                if !self.task_ids.is_empty() {
                    return Err(JobShapeError::UnexpectedTasks {
                        run_id: run_id(),
                        count: self.task_ids.len(),
                    });
                }
                match self.page {
                    None => return Err(JobShapeError::NoPage { run_id: run_id() }),
                    Some(PullPage { limit: 0, .. }) => {
                        return Err(JobShapeError::EmptyPage { run_id: run_id() });
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// A deterministic key for deduplication: equal for two jobs of the same
    /// kind over the same set of task ids (order and repeats do not matter),
    /// or the same pull page; independent of `run_id`, so a second enqueue
    /// run while the first run's jobs are pending produces the same keys.
    ///
    /// Form: `submit:<32 hex digits>` (the first 128 bits of a SHA-256 over
    /// the sorted, deduplicated, length-prefixed ids), `pull:<offset>:<limit>`.
    /// Stable across processes, platforms and releases.
    pub fn idempotency_key(&self) -> String {
        match (self.kind, self.page) {
            (JobKind::Pull, Some(page)) => format!("pull:{}:{}", page.offset, page.limit),
            (kind, _) => format!("{kind}:{}", task_set_digest(&self.task_ids)),
        }
    }
}

/// Hex of the first 16 bytes of SHA-256 over the sorted, deduplicated ids,
/// each prefixed by its length so that no two id sets encode alike.
fn task_set_digest(ids: &[TaskId]) -> String {
    let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hasher = Sha256::new();
    for id in sorted {
        hasher.update((id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<TaskId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn payload_holds_ids_only() {
        let job = SyncJob::submit("run-1", ids(&["t1", "t2"])).expect("job");
        let v = serde_json::to_value(&job).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"kind": "submit", "run_id": "run-1", "task_ids": ["t1", "t2"]})
        );
        let pull = SyncJob::pull(
            "run-1",
            PullPage {
                offset: 40,
                limit: 20,
            },
        )
        .expect("job");
        let v = serde_json::to_value(&pull).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"kind": "pull", "run_id": "run-1", "page": {"offset": 40, "limit": 20}})
        );
    }

    #[test]
    fn payload_round_trips() {
        let job = SyncJob::refresh("run-2", ids(&["a", "b"])).expect("job");
        let back: SyncJob =
            serde_json::from_str(&serde_json::to_string(&job).expect("json")).expect("decode");
        assert_eq!(back, job);
    }

    #[test]
    fn decoding_rejects_extra_fields_and_bad_shapes() {
        for (bad, expect) in [
            (
                r#"{"kind":"submit","run_id":"r","task_ids":["a"],"email":"x@y.org"}"#,
                "unknown field `email`",
            ),
            (r#"{"kind":"submit","run_id":"r"}"#, "has no task ids"),
            (
                r#"{"kind":"pull","run_id":"r","task_ids":["a"],"page":{"offset":0,"limit":5}}"#,
                "carry none",
            ),
            (r#"{"kind":"pull","run_id":"r"}"#, "has no page"),
            (
                r#"{"kind":"refresh","run_id":"r","task_ids":["a"],"page":{"offset":0,"limit":5}}"#,
                "only pull jobs",
            ),
            (r#"{"kind":"push","run_id":"r"}"#, "unknown variant `push`"),
            (
                r#"{"kind":"submit","run_id":"","task_ids":["a"]}"#,
                "empty run id",
            ),
        ] {
            let err = serde_json::from_str::<SyncJob>(bad).expect_err(bad);
            assert!(err.to_string().contains(expect), "{bad}: {err}");
        }
    }

    #[test]
    fn constructors_check_shape() {
        assert_eq!(
            SyncJob::submit("r", vec![]),
            Err(JobShapeError::NoTasks {
                kind: JobKind::Submit,
                run_id: "r".into()
            })
        );
        assert_eq!(
            SyncJob::pull(
                "r",
                PullPage {
                    offset: 0,
                    limit: 0
                }
            ),
            Err(JobShapeError::EmptyPage { run_id: "r".into() })
        );
    }

    #[test]
    fn idempotency_key_ignores_order_repeats_and_run() {
        let a = SyncJob::submit("run-1", ids(&["t1", "t2", "t3"])).expect("job");
        let b = SyncJob::submit("run-2", ids(&["t3", "t1", "t2", "t1"])).expect("job");
        assert_eq!(a.idempotency_key(), b.idempotency_key());
        assert!(a.idempotency_key().starts_with("submit:"));
        assert_eq!(a.idempotency_key().len(), "submit:".len() + 32);
    }

    #[test]
    fn idempotency_key_separates_kinds_sets_and_pages() {
        let submit = SyncJob::submit("r", ids(&["t1", "t2"])).expect("job");
        let refresh = SyncJob::refresh("r", ids(&["t1", "t2"])).expect("job");
        let other = SyncJob::submit("r", ids(&["t1", "t3"])).expect("job");
        // Length prefixes keep ["ab", "c"] and ["a", "bc"] apart.
        let split1 = SyncJob::submit("r", ids(&["ab", "c"])).expect("job");
        let split2 = SyncJob::submit("r", ids(&["a", "bc"])).expect("job");
        assert_ne!(submit.idempotency_key(), refresh.idempotency_key());
        assert_ne!(submit.idempotency_key(), other.idempotency_key());
        assert_ne!(split1.idempotency_key(), split2.idempotency_key());
        let p1 = SyncJob::pull(
            "r",
            PullPage {
                offset: 0,
                limit: 20,
            },
        )
        .expect("job");
        let p2 = SyncJob::pull(
            "r",
            PullPage {
                offset: 20,
                limit: 20,
            },
        )
        .expect("job");
        assert_eq!(p1.idempotency_key(), "pull:0:20");
        assert_ne!(p1.idempotency_key(), p2.idempotency_key());
    }

    #[test]
    fn idempotency_key_is_stable() {
        // Pinned: the key is stored in Redis and must not change between
        // releases, or a rolling upgrade would enqueue duplicates.
        let job = SyncJob::submit("r", ids(&["t1"])).expect("job");
        assert_eq!(
            job.idempotency_key(),
            "submit:837a9ae45693e27a2cf037bc8bb18258"
        );
    }
}
