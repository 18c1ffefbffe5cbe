//! The local task store: where the host puts tasks and where portal-sync keeps
//! what the portal said about them.
//!
//! One contract ([`TaskStore`]), two backends that behave identically:
//! [`SqliteStore`] (the embedded default, one file created and migrated on
//! first use) and [`PostgresStore`]. Binaries pick one from a URL with
//! [`open_store`] and get an [`AnyStore`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), task_model::store::StoreError> {
//! use futures::StreamExt;
//! use task_model::store::{DueQuery, LeaseRequest, TaskStore, open_store};
//! use task_model::LocalStatus;
//!
//! let store = open_store("sqlite://portal-sync.db").await?;
//! let now = chrono::Utc::now();
//! let mut due = store.stream_due(DueQuery::new(vec![LocalStatus::AwaitingSubmission], now));
//! while let Some(item) = due.next().await {
//!     match item {
//!         Ok(task) => { /* package it */ let _ = task.id(); }
//!         Err(e) if e.is_bad_row() => { /* report the task and go on */ }
//!         Err(e) => return Err(e),
//!     }
//! }
//! let got = store
//!     .lease(LeaseRequest::new(vec!["t-1".into()], "job-1", now + chrono::Duration::minutes(10), now))
//!     .await?;
//! # let _ = got; Ok(()) }
//! ```
//!
//! The schema is the host integration contract; `docs/store.md` says which
//! columns the host writes, which portal-sync writes back and which it never
//! touches. Instrument and form documents are stored once per distinct content
//! (keyed by a SHA-256 of their JSON text) and referenced from each task.
//!
//! Rules every backend keeps (the conformance suite in
//! `tests/store_conformance.rs` checks each one against both):
//! - **Import** reads a JSON array or NDJSON; a bad record is reported with its
//!   line (NDJSON) or array index and skipped, the good ones land, and each
//!   record lands whole or not at all. Re-importing a known `host_system_id`
//!   replaces the host-owned fields while the task is still
//!   `awaiting-submission` (and clears its last error); once submitted the
//!   task is frozen and the record is reported as skipped.
//! - **Streaming** walks the due tasks in key order, one page at a time, so
//!   memory does not grow with the number of tasks; tasks under a live lease
//!   are left out. A row the host wrote badly (invalid JSON, unknown status,
//!   a missing document) is one [`StoreError::BadRow`] item naming the task
//!   and the column; the stream goes on.
//! - **Leases** are per task (job id, expiry); a lease is taken only where no
//!   other job holds a live one, unless forced.
//! - **Write-back** goes through [`crate::transition::decide_update`], the one
//!   place that decides transitions, and writes with a compare-and-set on a
//!   per-row version, so racing workers can never move a task backwards.
//! - **Errors** are recorded beside the status (message, attempts, time).

mod import;
mod postgres;
mod row;
mod sqlite;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;
mod write_back;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::Read;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::task::{LocalStatus, LocalTask, PortalTask, TaskId};

pub use import::{ImportError, RecordPosition};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Records per import or write-back transaction.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// Tasks read per page while streaming, unless the query says otherwise.
/// Tasks of a page share their parsed documents, so a page costs little
/// memory; larger pages mean fewer round trips (store_bench: on PostgreSQL
/// 30,436 tasks/s at 500, 35,830 at 1,000 before leases had their own table).
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// The task store contract. Implemented by [`SqliteStore`], [`PostgresStore`]
/// and [`AnyStore`] (which forwards to either).
///
/// Every method that names tasks by id accepts ids that do not exist; what
/// happens to them is said per method.
pub trait TaskStore: Send + Sync {
    /// Imports host tasks from a JSON array or NDJSON (one task per line; blank
    /// lines are ignored). Bad records are reported and skipped; see
    /// [`ImportReport`]. Fails as a whole only when the input cannot be read
    /// or the database fails.
    fn import<R: Read + Send + 'static>(
        &self,
        input: R,
    ) -> impl Future<Output = Result<ImportReport, StoreError>> + Send;

    /// Streams the tasks whose status is in `query.statuses` and that are not
    /// under a live lease at `query.now`, in `host_system_id` order, reading
    /// `query.batch_size` rows at a time. Rows with an unknown status are
    /// yielded as [`StoreError::BadRow`] whatever the filter, so the host
    /// learns about them. Any other error ends the stream.
    fn stream_due(&self, query: DueQuery) -> BoxStream<'static, Result<LocalTask, StoreError>>;

    /// Leases `request.ids` for `request.job_id` until `request.until`.
    /// Without `force`, a task under another job's live lease is left alone;
    /// the answer lists the ids that were leased (unknown ids never are).
    fn lease(
        &self,
        request: LeaseRequest,
    ) -> impl Future<Output = Result<Vec<TaskId>, StoreError>> + Send;

    /// Takes several leases in one transaction (one commit for a whole page of
    /// packages); answers, per request in order, the ids it got. An id named
    /// by two requests goes only to the first.
    fn lease_many(
        &self,
        requests: &[LeaseRequest],
    ) -> impl Future<Output = Result<Vec<Vec<TaskId>>, StoreError>> + Send;

    /// Releases the leases `job_id` still holds on `ids`; a lease taken over
    /// by another job is left alone. Answers how many were released.
    fn release(
        &self,
        ids: &[TaskId],
        job_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Loads tasks by id, one answer per id in the order asked: the task, or a
    /// [`RowError`] for a bad row or an id the store does not hold.
    fn load(
        &self,
        ids: &[TaskId],
    ) -> impl Future<Output = Result<Vec<Result<LocalTask, RowError>>, StoreError>> + Send;

    /// Applies portal results through [`crate::transition::decide_update`].
    /// Monotonic and idempotent: a repeated, stale or backwards update changes
    /// nothing and is counted. Several updates for one task in one call are
    /// applied in order.
    fn write_back(
        &self,
        updates: &[PortalTask],
    ) -> impl Future<Output = Result<WriteBackReport, StoreError>> + Send;

    /// Records an error on a task (message, attempts + 1, now) without
    /// touching its status. Answers whether the task exists.
    fn record_error(
        &self,
        id: &str,
        message: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Clears the recorded error (and its attempt count) of `ids`. Answers how
    /// many tasks had one.
    fn clear_error(&self, ids: &[TaskId]) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts by status, with errors and with live leases at `now`.
    fn counts(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<StatusCounts, StoreError>> + Send;
}

/// Which tasks [`TaskStore::stream_due`] yields.
#[derive(Clone, Debug, PartialEq)]
pub struct DueQuery {
    pub statuses: Vec<LocalStatus>,
    /// Leases that end at or before this instant are expired.
    pub now: DateTime<Utc>,
    /// Rows per page (at least 1).
    pub batch_size: usize,
}

impl DueQuery {
    pub fn new(statuses: Vec<LocalStatus>, now: DateTime<Utc>) -> DueQuery {
        DueQuery {
            statuses,
            now,
            batch_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// A lease of some tasks for one job.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRequest {
    pub ids: Vec<TaskId>,
    pub job_id: String,
    /// The lease lapses at this instant; the tasks are due again after it.
    pub until: DateTime<Utc>,
    /// Leases that end at or before this instant are expired.
    pub now: DateTime<Utc>,
    /// Take the tasks even from another job's live lease (an operator's
    /// explicit `--task` run).
    pub force: bool,
}

impl LeaseRequest {
    pub fn new(
        ids: Vec<TaskId>,
        job_id: impl Into<String>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> LeaseRequest {
        LeaseRequest {
            ids,
            job_id: job_id.into(),
            until,
            now,
            force: false,
        }
    }

    /// The same request, forced.
    pub fn forced(mut self) -> LeaseRequest {
        self.force = true;
        self
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// New tasks stored.
    pub inserted: u64,
    /// Known tasks, still awaiting submission, whose host fields were replaced.
    pub updated: u64,
    /// Known tasks left alone because they were already submitted.
    pub skipped: Vec<SkippedRecord>,
    /// Records that could not be stored, in input order.
    pub errors: Vec<ImportError>,
}

impl ImportReport {
    /// Records read, whatever became of them.
    pub fn records(&self) -> u64 {
        self.inserted + self.updated + self.skipped.len() as u64 + self.errors.len() as u64
    }
}

/// A record whose task was already past `awaiting-submission`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRecord {
    pub position: RecordPosition,
    pub task_id: TaskId,
    /// The stored status (as spelled in the database).
    pub status: String,
}

impl fmt::Display for SkippedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: task {} skipped: already {} (host fields are frozen once submitted)",
            self.position, self.task_id, self.status
        )
    }
}

/// What a write-back did, update by update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBackReport {
    /// Updates that moved a task forward (status or portal state).
    pub applied: u64,
    /// Updates equal to what the task already held.
    pub repeated: u64,
    /// Updates older than what the task already held.
    pub stale: u64,
    /// Updates that would have moved a task backwards.
    pub backwards: u64,
    /// Updates that contradict what the task holds: (task id, why).
    pub conflicts: Vec<(TaskId, String)>,
    /// Updates for tasks the store does not hold.
    pub unknown: Vec<TaskId>,
    /// Updates for tasks whose stored row cannot be read.
    pub bad_rows: Vec<RowError>,
}

impl WriteBackReport {
    /// Updates that changed nothing because of the transition rules.
    pub fn ignored(&self) -> u64 {
        self.repeated + self.stale + self.backwards
    }

    fn absorb(&mut self, other: WriteBackReport) {
        self.applied += other.applied;
        self.repeated += other.repeated;
        self.stale += other.stale;
        self.backwards += other.backwards;
        self.conflicts.extend(other.conflicts);
        self.unknown.extend(other.unknown);
        self.bad_rows.extend(other.bad_rows);
    }
}

/// Task counts for `portal-sync status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Every known status appears, with 0 when no task has it.
    pub by_status: BTreeMap<LocalStatus, u64>,
    /// Rows whose status column holds no known status.
    pub unknown_status: u64,
    /// Tasks carrying a recorded error.
    pub with_error: u64,
    /// Tasks under a live lease.
    pub leased: u64,
    pub total: u64,
}

/// A stored row that cannot be read as a task, or an id the store lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("task {task_id}: column {column}: {message}")]
    BadColumn {
        task_id: TaskId,
        column: &'static str,
        message: String,
    },
    #[error("task {task_id}: not in the store")]
    Missing { task_id: TaskId },
}

impl RowError {
    pub fn task_id(&self) -> &str {
        match self {
            RowError::BadColumn { task_id, .. } | RowError::Missing { task_id } => task_id,
        }
    }
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot open store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate store {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("store {operation} failed: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("import: cannot read the input: {source}")]
    ReadInput {
        #[source]
        source: std::io::Error,
    },
    #[error("write-back of task {task_id}: the row kept changing under us ({rounds} attempts)")]
    Contended { task_id: TaskId, rounds: u32 },
    /// The reader behind a due-task stream stopped before the end (it
    /// panicked or its runtime shut down): the stream is incomplete.
    #[error("store stream due tasks stopped before the end: {reason}")]
    StreamStopped { reason: String },
    /// A row the host wrote that cannot be read; the task is skipped.
    #[error(transparent)]
    BadRow(RowError),
}

impl StoreError {
    /// True for a per-task problem that a run reports and goes past.
    pub fn is_bad_row(&self) -> bool {
        matches!(self, StoreError::BadRow(_))
    }

    fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { operation, source }
    }
}

/// Puts loaded tasks in the order their ids were asked for; an id with no
/// row gets [`RowError::Missing`]. Asked twice, an id is answered twice.
fn in_asked_order(
    ids: &[TaskId],
    decoded: Vec<Result<LocalTask, RowError>>,
) -> Vec<Result<LocalTask, RowError>> {
    let by_id: std::collections::HashMap<String, Result<LocalTask, RowError>> = decoded
        .into_iter()
        .map(|r| {
            let id = match &r {
                Ok(task) => task.id().to_string(),
                Err(e) => e.task_id().to_string(),
            };
            (id, r)
        })
        .collect();
    ids.iter()
        .map(|id| {
            by_id.get(id).cloned().unwrap_or_else(|| {
                Err(RowError::Missing {
                    task_id: id.clone(),
                })
            })
        })
        .collect()
}

/// One statement's worth of a [`TaskStore::lease_many`] call: the leases that
/// share an expiry instant and a `force` flag (in practice, all of a call).
struct LeaseGroup<'a> {
    now_millis: i64,
    force: bool,
    /// `(task id, job id, lease until in ms)`, each task id once per call.
    rows: Vec<(&'a str, &'a str, i64)>,
}

/// Splits a [`TaskStore::lease_many`] call into [`LeaseGroup`]s; a task named
/// by several requests goes to the first.
fn lease_groups(requests: &[LeaseRequest]) -> Vec<LeaseGroup<'_>> {
    let mut seen = std::collections::HashSet::new();
    let mut groups: Vec<LeaseGroup<'_>> = Vec::new();
    for request in requests {
        let now_millis = row::lease_millis(request.now);
        let at = match groups
            .iter()
            .position(|g| g.now_millis == now_millis && g.force == request.force)
        {
            Some(at) => at,
            None => {
                groups.push(LeaseGroup {
                    now_millis,
                    force: request.force,
                    rows: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let until = row::lease_millis(request.until);
        for id in &request.ids {
            if seen.insert(id.as_str()) {
                groups[at]
                    .rows
                    .push((id.as_str(), request.job_id.as_str(), until));
            }
        }
    }
    groups.retain(|g| !g.rows.is_empty());
    groups
}

/// The answer of a [`TaskStore::lease_many`] call from the ids the backend
/// leased: per request, its leased ids in the order it named them (each id
/// counts for the first request that named it).
fn lease_answers(requests: &[LeaseRequest], leased: &HashSet<String>) -> Vec<Vec<TaskId>> {
    let mut seen = HashSet::new();
    requests
        .iter()
        .map(|request| {
            request
                .ids
                .iter()
                .filter(|id| seen.insert(id.as_str()) && leased.contains(id.as_str()))
                .cloned()
                .collect()
        })
        .collect()
}

/// A dialect's migrations, oldest first, as `(version, name, SQL)`.
fn migrator(migrations: &[(i64, &str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr as _;
    sqlx::migrate::Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, name, sql)| {
                sqlx::migrate::Migration::new(
                    *version,
                    name.to_string().into(),
                    sqlx::migrate::MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Builds [`StatusCounts`] from `(status, tasks, with error, leased)` groups.
fn counts_from_groups(groups: Vec<(String, i64, i64, i64)>) -> StatusCounts {
    let mut counts = StatusCounts::default();
    for status in LocalStatus::ALL {
        counts.by_status.insert(status, 0);
    }
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    for (status, tasks, with_error, leased) in groups {
        match LocalStatus::parse(&status) {
            Some(s) => *counts.by_status.entry(s).or_default() += n(tasks),
            None => counts.unknown_status += n(tasks),
        }
        counts.with_error += n(with_error);
        counts.leased += n(leased);
        counts.total += n(tasks);
    }
    counts
}

/// Either backend, chosen at run time from a URL by [`open_store`]. Cheap to
/// clone (a pool handle).
#[derive(Clone, Debug)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Opens the store at `url`, creating and migrating it on first use:
/// `sqlite://relative/or/absolute/path.db` (also `sqlite:path`) or
/// `postgres://user@host:port/database` (also `postgresql://`). Its pool
/// holds the backend's default number of connections (as the settings'
/// `store.pool_size` default); binaries open the store of their settings
/// with [`open_store_with`].
pub async fn open_store(url: &str) -> Result<AnyStore, StoreError> {
    open_store_with(url, crate::settings::default_pool_size(url)).await
}

/// As [`open_store`], with at most `connections` pooled connections (the
/// settings' `store.pool_size`).
pub async fn open_store_with(url: &str, connections: u32) -> Result<AnyStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(AnyStore::Sqlite(
            SqliteStore::open_with(url, connections).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(AnyStore::Postgres(
            PostgresStore::open_with(url, connections).await?,
        ))
    } else {
        Err(StoreError::BadUrl {
            url: redact_url(url),
            reason: "expected sqlite://PATH or postgres://USER@HOST/DATABASE".into(),
        })
    }
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

macro_rules! forward {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl TaskStore for AnyStore {
    async fn import<R: Read + Send + 'static>(&self, input: R) -> Result<ImportReport, StoreError> {
        forward!(self, s => s.import(input).await)
    }

    fn stream_due(&self, query: DueQuery) -> BoxStream<'static, Result<LocalTask, StoreError>> {
        forward!(self, s => s.stream_due(query))
    }

    async fn lease(&self, request: LeaseRequest) -> Result<Vec<TaskId>, StoreError> {
        forward!(self, s => s.lease(request).await)
    }

    async fn lease_many(&self, requests: &[LeaseRequest]) -> Result<Vec<Vec<TaskId>>, StoreError> {
        forward!(self, s => s.lease_many(requests).await)
    }

    async fn release(&self, ids: &[TaskId], job_id: &str) -> Result<u64, StoreError> {
        forward!(self, s => s.release(ids, job_id).await)
    }

    async fn load(&self, ids: &[TaskId]) -> Result<Vec<Result<LocalTask, RowError>>, StoreError> {
        forward!(self, s => s.load(ids).await)
    }

    async fn write_back(&self, updates: &[PortalTask]) -> Result<WriteBackReport, StoreError> {
        forward!(self, s => s.write_back(updates).await)
    }

    async fn record_error(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        forward!(self, s => s.record_error(id, message).await)
    }

    async fn clear_error(&self, ids: &[TaskId]) -> Result<u64, StoreError> {
        forward!(self, s => s.clear_error(ids).await)
    }

    async fn counts(&self, now: DateTime<Utc>) -> Result<StatusCounts, StoreError> {
        forward!(self, s => s.counts(now).await)
    }
}
