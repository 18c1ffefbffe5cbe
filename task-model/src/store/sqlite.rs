//! The SQLite backend: the embedded default, one database file created and
//! migrated on first use.
//!
//! The file runs in WAL mode (readers never block the writer) with a busy
//! timeout, so several processes (the enqueue run, a few workers, the host)
//! can share it. A write is either one statement (SQLite takes the write lock
//! at its first step, waiting out the busy timeout) or a `BEGIN IMMEDIATE`
//! transaction (which takes the lock up front), so no write fails halfway on
//! a lock upgrade. Lists of ids are bound as one JSON array and unpacked with
//! `json_each`, so each statement is prepared once whatever the list length.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::import::{self, ImportBackend, PreparedTask, StoredTasks};
use super::row::{
    self, CurrentState, DocumentCache, DocumentKind, DocumentPair, RawPortal, RawTask,
};
use super::stream::{DuePages, Segment, decode_rows, stream_due_with};
use super::write_back::{PlannedWrite, WriteBackBackend, write_back_with};
use super::{
    DEFAULT_BATCH_SIZE, DueQuery, ImportReport, LeaseRequest, RowError, StatusCounts, StoreError,
    TaskStore, WriteBackReport,
};
use crate::task::{LocalTask, PortalTask, TaskId};

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn migrator() -> Migrator {
    super::migrator(&[
        (
            1,
            "task store",
            include_str!("../../migrations/sqlite/0001_task_store.sql"),
        ),
        (
            2,
            "task leases",
            include_str!("../../migrations/sqlite/0002_task_leases.sql"),
        ),
    ])
}

/// A task store in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn ids_json(ids: &[TaskId]) -> String {
    // Serializing strings cannot fail.
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) and migrates the
    /// store at `sqlite://PATH` or `sqlite:PATH`.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(url, crate::settings::DEFAULT_SQLITE_POOL_SIZE).await
    }

    /// As [`SqliteStore::open`], with at most `connections` connections (each
    /// a reader with its own page cache; writes take turns on the file).
    pub async fn open_with(url: &str, connections: u32) -> Result<SqliteStore, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if path.is_empty() {
            return Err(bad("no file path (expected sqlite://PATH)"));
        }
        if path.contains('?') || path.starts_with(":memory:") {
            return Err(bad(
                "expected a file path; query parameters and in-memory databases are not supported",
            ));
        }
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                url: url.to_string(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // 1 MiB of page cache per connection (SQLite's default is 2 MiB):
            // the operating system caches the file as well, and a worker's
            // pool of several connections otherwise holds most of its memory.
            .pragma("cache_size", "-1024")
            // Room for a whole page of rows, so the connection's worker thread
            // runs a page query without waiting for the reader.
            .row_buffer_size(DEFAULT_BATCH_SIZE);
        let pool = SqlitePoolOptions::new()
            .max_connections(connections.max(1))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                url: url.to_string(),
                source,
            })?;
        let migrator = migrator();
        // Two processes opening a new file at once race to migrate it; the
        // loser finds the work done on its second look.
        if migrator.run(&pool).await.is_err() {
            migrator
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migrate {
                    url: url.to_string(),
                    source,
                })?;
        }
        Ok(SqliteStore { pool })
    }

    /// The connection pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// The due-task query for each kind of page; every variant takes the same
/// four parameters (?1 status, ?2 now, ?3 limit, ?4 cursor).
macro_rules! due_sql {
    ($condition:literal) => {
        concat!(
            "SELECT host_system_id, display_name, instrument_hash, form_hash, \
             subject, parameters, initial_assessment, status, \
             portal_code, portal_subject_code, portal_status, portal_revision, \
             portal_date_created, portal_date_started, portal_date_completed, portal_assessment, \
             error_message, error_attempts, error_at, row_version FROM tasks WHERE ",
            $condition,
            // One probe of the lease key per candidate row.
            " AND COALESCE((SELECT l.lease_until FROM task_leases l \
               WHERE l.host_system_id = tasks.host_system_id), 0) <= ?2 \
             ORDER BY host_system_id LIMIT ?3"
        )
    };
}

impl DuePages for SqliteStore {
    type Row = SqliteRow;

    async fn page(
        &self,
        segment: Segment,
        now_millis: i64,
        limit: i64,
        after: Option<&str>,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let sql = match (segment, after) {
            (Segment::Status(_), None) => due_sql!("status = ?1 AND ?4 IS NULL"),
            (Segment::Status(_), Some(_)) => due_sql!("status = ?1 AND host_system_id > ?4"),
            (Segment::Unknown, None) => due_sql!(
                "status NOT IN ('awaiting-submission', 'awaiting-completion', 'complete', 'cancelled') \
                 AND ?1 IS NULL AND ?4 IS NULL"
            ),
            (Segment::Unknown, Some(_)) => due_sql!(
                "status NOT IN ('awaiting-submission', 'awaiting-completion', 'complete', 'cancelled') \
                 AND ?1 IS NULL AND host_system_id > ?4"
            ),
        };
        let status = match segment {
            Segment::Status(s) => Some(s.as_str()),
            Segment::Unknown => None,
        };
        sqlx::query(sql)
            .bind(status)
            .bind(now_millis)
            .bind(limit)
            .bind(after)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("stream due tasks"))
    }

    fn row_id(row: &SqliteRow) -> Result<String, sqlx::Error> {
        row.try_get(0)
    }

    fn raw_task(row: &SqliteRow) -> Result<RawTask, RowError> {
        RawTask::from_row(row)
    }

    async fn documents(
        &self,
        kind: DocumentKind,
        hashes: Vec<String>,
    ) -> Result<Vec<DocumentPair>, StoreError> {
        let sql = match kind {
            DocumentKind::Instrument => {
                "SELECT hash, body FROM instruments WHERE hash IN (SELECT value FROM json_each(?1))"
            }
            DocumentKind::Form => {
                "SELECT hash, body FROM forms WHERE hash IN (SELECT value FROM json_each(?1))"
            }
        };
        let rows = sqlx::query(sql)
            .bind(ids_json(&hashes))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read documents"))?;
        Ok(row::document_pairs(rows))
    }
}

impl ImportBackend for SqliteStore {
    async fn existing_statuses(
        &self,
        ids: &[TaskId],
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows = sqlx::query(
            "SELECT host_system_id, status FROM tasks \
             WHERE host_system_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids_json(ids))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("import: read existing tasks"))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: String = row
                .try_get(0)
                .map_err(StoreError::query("import: read existing tasks"))?;
            // An unreadable status reads as unknown: such a task is not
            // awaiting submission, so the record is skipped, never merged.
            let status: String = row.try_get(1).unwrap_or_else(|_| "<unreadable>".into());
            out.insert(id, status);
        }
        Ok(out)
    }

    /// Stores `tasks` in one transaction (all or nothing).
    async fn store_tasks(
        &self,
        new: &[PreparedTask],
        updates: &[PreparedTask],
        known: &HashSet<String>,
    ) -> StoredTasks {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (instruments, forms) = import::new_documents(new.iter().chain(updates), known);
        let mut committed_docs = Vec::new();
        for (kind, docs) in [
            (DocumentKind::Instrument, instruments),
            (DocumentKind::Form, forms),
        ] {
            for chunk in docs.chunks(200) {
                let mut q = QueryBuilder::<Sqlite>::new(format!(
                    "INSERT INTO {} (hash, body) ",
                    kind.table()
                ));
                q.push_values(chunk, |mut b, doc| {
                    b.push_bind(doc.hash.clone()).push_bind(doc.body.clone());
                });
                q.push(" ON CONFLICT (hash) DO NOTHING");
                q.build().execute(&mut *tx).await?;
                committed_docs.extend(chunk.iter().map(|d| d.hash.clone()));
            }
        }
        let mut inserted = HashSet::new();
        for chunk in new.chunks(DEFAULT_BATCH_SIZE) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO tasks (host_system_id, display_name, instrument_hash, form_hash, \
                 subject, parameters, initial_assessment) ",
            );
            q.push_values(chunk, |mut b, t| {
                b.push_bind(t.id.clone())
                    .push_bind(t.display_name.clone())
                    .push_bind(t.instrument.hash.clone())
                    .push_bind(t.form.hash.clone())
                    .push_bind(t.subject.clone())
                    .push_bind(t.parameters.clone())
                    .push_bind(t.initial_assessment.clone());
            });
            q.push(" ON CONFLICT (host_system_id) DO NOTHING RETURNING host_system_id");
            for row in q.build().fetch_all(&mut *tx).await? {
                inserted.insert(row.try_get::<String, _>(0)?);
            }
        }
        let mut updated = HashSet::new();
        for t in updates {
            let done = sqlx::query(
                "UPDATE tasks SET display_name = ?1, instrument_hash = ?2, form_hash = ?3, \
                 subject = ?4, parameters = ?5, initial_assessment = ?6, \
                 error_message = NULL, error_attempts = 0, error_at = NULL, \
                 row_version = row_version + 1 \
                 WHERE host_system_id = ?7 AND status = 'awaiting-submission'",
            )
            .bind(&t.display_name)
            .bind(&t.instrument.hash)
            .bind(&t.form.hash)
            .bind(&t.subject)
            .bind(&t.parameters)
            .bind(&t.initial_assessment)
            .bind(&t.id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                updated.insert(t.id.clone());
            }
        }
        tx.commit().await?;
        Ok((inserted, updated, committed_docs))
    }
}

impl WriteBackBackend for SqliteStore {
    async fn read_states(
        &self,
        ids: &[TaskId],
    ) -> Result<HashMap<TaskId, Result<CurrentState, RowError>>, StoreError> {
        let rows = sqlx::query(
            "SELECT host_system_id, status, \
             portal_code, portal_subject_code, portal_status, portal_revision, \
             portal_date_created, portal_date_started, portal_date_completed, portal_assessment, \
             row_version FROM tasks WHERE host_system_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids_json(ids))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("write-back: read tasks"))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in &rows {
            match RawPortal::from_row(row) {
                Ok(raw) => {
                    let state = raw.decode();
                    out.insert(raw.id, state);
                }
                Err(e) => {
                    out.insert(e.task_id().to_string(), Err(e));
                }
            }
        }
        Ok(out)
    }

    async fn apply_writes(&self, writes: &[PlannedWrite]) -> Result<HashSet<TaskId>, StoreError> {
        let rows: Vec<serde_json::Value> = writes
            .iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.id,
                    "version": w.version,
                    "status": w.status.as_str(),
                    "code": w.portal.code,
                    "subject_code": w.portal.subject_code,
                    "portal_status": w.portal.status,
                    "revision": w.portal.revision,
                    "created": w.portal.date_created,
                    "started": w.portal.date_started,
                    "completed": w.portal.date_completed,
                    "assessment": w.portal.assessment,
                })
            })
            .collect();
        // One statement: it applies whole, each row only where its version
        // still matches.
        let written = sqlx::query(
            "UPDATE tasks SET status = u.status, portal_code = u.code, \
             portal_subject_code = u.subject_code, portal_status = u.portal_status, \
             portal_revision = u.revision, portal_date_created = u.created, \
             portal_date_started = u.started, portal_date_completed = u.completed, \
             portal_assessment = u.assessment, row_version = tasks.row_version + 1 \
             FROM (SELECT value ->> 'id' AS id, value ->> 'version' AS version, \
                          value ->> 'status' AS status, value ->> 'code' AS code, \
                          value ->> 'subject_code' AS subject_code, \
                          value ->> 'portal_status' AS portal_status, \
                          value ->> 'revision' AS revision, value ->> 'created' AS created, \
                          value ->> 'started' AS started, value ->> 'completed' AS completed, \
                          value ->> 'assessment' AS assessment \
                   FROM json_each(?1)) AS u \
             WHERE tasks.host_system_id = u.id AND tasks.row_version = u.version \
             RETURNING host_system_id",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("write-back: update tasks"))?;
        written
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<HashSet<_>, _>>()
            .map_err(StoreError::query("write-back: update tasks"))
    }

    async fn record_conflict(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        self.record_error(id, message).await
    }
}

impl TaskStore for SqliteStore {
    async fn import<R: Read + Send + 'static>(&self, input: R) -> Result<ImportReport, StoreError> {
        import::run_import(self, input, DEFAULT_BATCH_SIZE).await
    }

    fn stream_due(&self, query: DueQuery) -> BoxStream<'static, Result<LocalTask, StoreError>> {
        stream_due_with(self.clone(), query)
    }

    async fn lease(&self, request: LeaseRequest) -> Result<Vec<TaskId>, StoreError> {
        let mut got = self.lease_many(std::slice::from_ref(&request)).await?;
        Ok(got.pop().unwrap_or_default())
    }

    async fn lease_many(&self, requests: &[LeaseRequest]) -> Result<Vec<Vec<TaskId>>, StoreError> {
        let groups = super::lease_groups(requests);
        let mut leased = HashSet::new();
        if groups.is_empty() {
            return Ok(super::lease_answers(requests, &leased));
        }
        let op = || StoreError::query("lease tasks");
        // One write transaction for the call, its lock taken up front.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(op())?;
        for group in &groups {
            let rows = sqlx::query(
                "INSERT INTO task_leases (host_system_id, job_id, lease_until) \
                 SELECT u.value ->> 0, u.value ->> 1, u.value ->> 2 FROM json_each(?1) AS u \
                 WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.host_system_id = u.value ->> 0) \
                 ON CONFLICT (host_system_id) DO UPDATE \
                 SET job_id = excluded.job_id, lease_until = excluded.lease_until \
                 WHERE ?3 OR task_leases.lease_until <= ?2 \
                 OR task_leases.job_id = excluded.job_id \
                 RETURNING host_system_id",
            )
            // Serializing strings and numbers cannot fail.
            .bind(serde_json::to_string(&group.rows).unwrap_or_else(|_| "[]".into()))
            .bind(group.now_millis)
            .bind(group.force)
            .fetch_all(&mut *tx)
            .await
            .map_err(op())?;
            for r in &rows {
                leased.insert(r.try_get::<String, _>(0).map_err(op())?);
            }
        }
        tx.commit().await.map_err(op())?;
        Ok(super::lease_answers(requests, &leased))
    }

    async fn release(&self, ids: &[TaskId], job_id: &str) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM task_leases \
             WHERE host_system_id IN (SELECT value FROM json_each(?1)) AND job_id = ?2",
        )
        .bind(ids_json(ids))
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("release tasks"))?;
        Ok(done.rows_affected())
    }

    async fn load(&self, ids: &[TaskId]) -> Result<Vec<Result<LocalTask, RowError>>, StoreError> {
        let rows = sqlx::query(
            "SELECT host_system_id, display_name, instrument_hash, form_hash, \
             subject, parameters, initial_assessment, status, \
             portal_code, portal_subject_code, portal_status, portal_revision, \
             portal_date_created, portal_date_started, portal_date_completed, portal_assessment, \
             error_message, error_attempts, error_at, row_version \
             FROM tasks WHERE host_system_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids_json(ids))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("load tasks"))?;
        let mut cache = DocumentCache::default();
        let decoded = decode_rows(self, rows, &mut cache).await?;
        Ok(super::in_asked_order(ids, decoded))
    }

    async fn write_back(&self, updates: &[PortalTask]) -> Result<WriteBackReport, StoreError> {
        write_back_with(self, updates).await
    }

    async fn record_error(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET error_message = ?1, error_attempts = error_attempts + 1, \
             error_at = ?2 WHERE host_system_id = ?3",
        )
        .bind(message)
        .bind(row::timestamp_text(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("record error"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn clear_error(&self, ids: &[TaskId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE tasks SET error_message = NULL, error_attempts = 0, error_at = NULL \
             WHERE host_system_id IN (SELECT value FROM json_each(?1)) \
             AND (error_message IS NOT NULL OR error_attempts <> 0)",
        )
        .bind(ids_json(ids))
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("clear error"))?;
        Ok(done.rows_affected())
    }

    async fn counts(&self, now: DateTime<Utc>) -> Result<StatusCounts, StoreError> {
        let op = StoreError::query("count tasks");
        let rows = sqlx::query(
            "SELECT t.status, COUNT(*), \
             SUM(CASE WHEN t.error_message IS NOT NULL THEN 1 ELSE 0 END), \
             SUM(CASE WHEN l.lease_until > ?1 THEN 1 ELSE 0 END) \
             FROM tasks t LEFT JOIN task_leases l ON l.host_system_id = t.host_system_id \
             GROUP BY t.status",
        )
        .bind(row::lease_millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(op)?;
        let mut groups = Vec::with_capacity(rows.len());
        for r in &rows {
            let status = r.try_get::<String, _>(0).unwrap_or_default();
            let get = |i: usize| {
                r.try_get::<Option<i64>, _>(i)
                    .map(|v| v.unwrap_or(0))
                    .map_err(StoreError::query("count tasks"))
            };
            groups.push((status, get(1)?, get(2)?, get(3)?));
        }
        Ok(super::counts_from_groups(groups))
    }
}
