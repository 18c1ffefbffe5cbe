//! The PostgreSQL backend: the same schema, rules and answers as the SQLite
//! one, for sites that run a database server.
//!
//! The database in the URL is created if it does not exist, then migrated
//! (sqlx takes an advisory lock, so concurrent first starts are safe). Lists
//! of ids travel as one `text[]` parameter; batches are written with
//! `UNNEST` over column arrays, one statement per batch.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::Row as _;
use sqlx::migrate::{MigrateDatabase as _, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::import::{self, ImportBackend, PreparedTask, StoredTasks};
use super::row::{
    self, CurrentState, DocumentCache, DocumentKind, DocumentPair, RawPortal, RawTask,
};
use super::stream::{DuePages, Segment, decode_rows, stream_due_with};
use super::write_back::{PlannedWrite, WriteBackBackend, write_back_with};
use super::{
    DEFAULT_BATCH_SIZE, DueQuery, ImportReport, LeaseRequest, RowError, StatusCounts, StoreError,
    TaskStore, WriteBackReport, redact_url,
};
use crate::task::{LocalTask, PortalTask, TaskId};

fn migrator() -> Migrator {
    super::migrator(&[
        (
            1,
            "task store",
            include_str!("../../migrations/postgres/0001_task_store.sql"),
        ),
        (
            2,
            "task leases",
            include_str!("../../migrations/postgres/0002_task_leases.sql"),
        ),
    ])
}

/// A task store in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

const TASK_SELECT: &str = "SELECT host_system_id, display_name, instrument_hash, form_hash, \
     subject, parameters, initial_assessment, status, \
     portal_code, portal_subject_code, portal_status, portal_revision, \
     portal_date_created, portal_date_started, portal_date_completed, portal_assessment, \
     error_message, error_attempts, error_at, row_version FROM tasks ";

impl PostgresStore {
    /// Opens the store at `postgres://…`, creating the database if it does not
    /// exist and migrating it.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(url, crate::settings::DEFAULT_POOL_SIZE).await
    }

    /// As [`PostgresStore::open`], with at most `connections` connections.
    pub async fn open_with(url: &str, connections: u32) -> Result<PostgresStore, StoreError> {
        let shown = redact_url(url);
        let open_err = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open_err)?
            .application_name("portal-sync");
        if !sqlx::Postgres::database_exists(url)
            .await
            .map_err(open_err)?
        {
            // Another process may create it at the same moment; that is fine.
            if let Err(e) = sqlx::Postgres::create_database(url).await
                && !sqlx::Postgres::database_exists(url).await.unwrap_or(false)
            {
                return Err(open_err(e));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        migrator()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(PostgresStore { pool })
    }

    /// The connection pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A batch of tasks as column arrays for `UNNEST`.
struct TaskColumns<'a> {
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    instruments: Vec<&'a str>,
    forms: Vec<&'a str>,
    subjects: Vec<&'a str>,
    parameters: Vec<Option<&'a str>>,
    assessments: Vec<Option<&'a str>>,
}

/// The due-task query for each kind of page; every variant takes the same
/// four parameters ($1 status, $2 now, $3 limit, $4 cursor).
macro_rules! due_sql {
    ($condition:literal, $order:literal) => {
        concat!(
            "SELECT host_system_id, display_name, instrument_hash, form_hash, \
             subject, parameters, initial_assessment, status, \
             portal_code, portal_subject_code, portal_status, portal_revision, \
             portal_date_created, portal_date_started, portal_date_completed, portal_assessment, \
             error_message, error_attempts, error_at, row_version FROM tasks WHERE ",
            $condition,
            // A scalar subquery, so each candidate row costs one probe of the
            // lease key (the planner turns NOT EXISTS into a join that reads
            // every lease).
            " AND COALESCE((SELECT l.lease_until FROM task_leases l \
               WHERE l.host_system_id = tasks.host_system_id), 0) <= $2 ORDER BY ",
            $order,
            " LIMIT $3"
        )
    };
}

impl DuePages for PostgresStore {
    type Row = PgRow;

    async fn page(
        &self,
        segment: Segment,
        now_millis: i64,
        limit: i64,
        after: Option<&str>,
    ) -> Result<Vec<PgRow>, StoreError> {
        let sql = match (segment, after) {
            (Segment::Status(_), None) => due_sql!(
                "status = $1 AND $4::text IS NULL",
                // The whole index order, so the planner walks the index.
                "status, host_system_id"
            ),
            (Segment::Status(_), Some(_)) => due_sql!(
                "status = $1 AND host_system_id > $4",
                "status, host_system_id"
            ),
            (Segment::Unknown, None) => due_sql!(
                "status <> ALL('{awaiting-submission,awaiting-completion,complete,cancelled}'::text[]) \
                 AND $1::text IS NULL AND $4::text IS NULL",
                "host_system_id"
            ),
            (Segment::Unknown, Some(_)) => due_sql!(
                "status <> ALL('{awaiting-submission,awaiting-completion,complete,cancelled}'::text[]) \
                 AND $1::text IS NULL AND host_system_id > $4",
                "host_system_id"
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

    fn row_id(row: &PgRow) -> Result<String, sqlx::Error> {
        row.try_get(0)
    }

    fn raw_task(row: &PgRow) -> Result<RawTask, RowError> {
        RawTask::from_row(row)
    }

    async fn documents(
        &self,
        kind: DocumentKind,
        hashes: Vec<String>,
    ) -> Result<Vec<DocumentPair>, StoreError> {
        let sql = match kind {
            DocumentKind::Instrument => "SELECT hash, body FROM instruments WHERE hash = ANY($1)",
            DocumentKind::Form => "SELECT hash, body FROM forms WHERE hash = ANY($1)",
        };
        let rows = sqlx::query(sql)
            .bind(&hashes)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read documents"))?;
        Ok(row::document_pairs(rows))
    }
}

impl ImportBackend for PostgresStore {
    async fn existing_statuses(
        &self,
        ids: &[TaskId],
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows =
            sqlx::query("SELECT host_system_id, status FROM tasks WHERE host_system_id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query("import: read existing tasks"))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: String = row
                .try_get(0)
                .map_err(StoreError::query("import: read existing tasks"))?;
            let status: String = row.try_get(1).unwrap_or_else(|_| "<unreadable>".into());
            out.insert(id, status);
        }
        Ok(out)
    }

    async fn store_tasks(
        &self,
        new: &[PreparedTask],
        updates: &[PreparedTask],
        known: &HashSet<String>,
    ) -> StoredTasks {
        let mut tx = self.pool.begin().await?;
        let (instruments, forms) = import::new_documents(new.iter().chain(updates), known);
        let mut committed_docs = Vec::new();
        for (sql, docs) in [
            (
                "INSERT INTO instruments (hash, body) SELECT * FROM UNNEST($1::text[], $2::text[]) \
                 ON CONFLICT (hash) DO NOTHING",
                instruments,
            ),
            (
                "INSERT INTO forms (hash, body) SELECT * FROM UNNEST($1::text[], $2::text[]) \
                 ON CONFLICT (hash) DO NOTHING",
                forms,
            ),
        ] {
            if docs.is_empty() {
                continue;
            }
            let hashes: Vec<&str> = docs.iter().map(|d| d.hash.as_str()).collect();
            let bodies: Vec<&str> = docs.iter().map(|d| d.body.as_str()).collect();
            sqlx::query(sql)
                .bind(&hashes)
                .bind(&bodies)
                .execute(&mut *tx)
                .await?;
            committed_docs.extend(hashes.iter().map(|h| h.to_string()));
        }
        fn columns(tasks: &[PreparedTask]) -> TaskColumns<'_> {
            TaskColumns {
                ids: tasks.iter().map(|t| t.id.as_str()).collect(),
                names: tasks.iter().map(|t| t.display_name.as_str()).collect(),
                instruments: tasks.iter().map(|t| t.instrument.hash.as_str()).collect(),
                forms: tasks.iter().map(|t| t.form.hash.as_str()).collect(),
                subjects: tasks.iter().map(|t| t.subject.as_str()).collect(),
                parameters: tasks.iter().map(|t| t.parameters.as_deref()).collect(),
                assessments: tasks
                    .iter()
                    .map(|t| t.initial_assessment.as_deref())
                    .collect(),
            }
        }
        let mut inserted = HashSet::new();
        if !new.is_empty() {
            let c = columns(new);
            let rows = sqlx::query(
                "INSERT INTO tasks (host_system_id, display_name, instrument_hash, form_hash, \
                 subject, parameters, initial_assessment) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::text[], $7::text[]) \
                 ON CONFLICT (host_system_id) DO NOTHING RETURNING host_system_id",
            )
            .bind(&c.ids)
            .bind(&c.names)
            .bind(&c.instruments)
            .bind(&c.forms)
            .bind(&c.subjects)
            .bind(&c.parameters)
            .bind(&c.assessments)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                inserted.insert(row.try_get::<String, _>(0)?);
            }
        }
        let mut updated = HashSet::new();
        if !updates.is_empty() {
            let c = columns(updates);
            let rows = sqlx::query(
                "UPDATE tasks AS t SET display_name = u.display_name, \
                 instrument_hash = u.instrument_hash, form_hash = u.form_hash, \
                 subject = u.subject, parameters = u.parameters, \
                 initial_assessment = u.initial_assessment, \
                 error_message = NULL, error_attempts = 0, error_at = NULL, \
                 row_version = t.row_version + 1 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::text[], $7::text[]) \
                 AS u(host_system_id, display_name, instrument_hash, form_hash, subject, \
                 parameters, initial_assessment) \
                 WHERE t.host_system_id = u.host_system_id AND t.status = 'awaiting-submission' \
                 RETURNING t.host_system_id",
            )
            .bind(&c.ids)
            .bind(&c.names)
            .bind(&c.instruments)
            .bind(&c.forms)
            .bind(&c.subjects)
            .bind(&c.parameters)
            .bind(&c.assessments)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                updated.insert(row.try_get::<String, _>(0)?);
            }
        }
        tx.commit().await?;
        Ok((inserted, updated, committed_docs))
    }
}

impl WriteBackBackend for PostgresStore {
    async fn read_states(
        &self,
        ids: &[TaskId],
    ) -> Result<HashMap<TaskId, Result<CurrentState, RowError>>, StoreError> {
        let rows = sqlx::query(
            "SELECT host_system_id, status, \
             portal_code, portal_subject_code, portal_status, portal_revision, \
             portal_date_created, portal_date_started, portal_date_completed, portal_assessment, \
             row_version FROM tasks WHERE host_system_id = ANY($1)",
        )
        .bind(ids)
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
        let ids: Vec<&str> = writes.iter().map(|w| w.id.as_str()).collect();
        let versions: Vec<i64> = writes.iter().map(|w| w.version).collect();
        let statuses: Vec<&str> = writes.iter().map(|w| w.status.as_str()).collect();
        let codes: Vec<&str> = writes.iter().map(|w| w.portal.code.as_str()).collect();
        let subjects: Vec<&str> = writes
            .iter()
            .map(|w| w.portal.subject_code.as_str())
            .collect();
        let portal_statuses: Vec<&str> = writes.iter().map(|w| w.portal.status).collect();
        let revisions: Vec<i64> = writes.iter().map(|w| w.portal.revision).collect();
        let created: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.portal.date_created.as_deref())
            .collect();
        let started: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.portal.date_started.as_deref())
            .collect();
        let completed: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.portal.date_completed.as_deref())
            .collect();
        let assessments: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.portal.assessment.as_deref())
            .collect();
        // One statement, so no transaction is needed: it applies whole.
        let rows = sqlx::query(
            "UPDATE tasks AS t SET status = u.status, portal_code = u.code, \
             portal_subject_code = u.subject_code, portal_status = u.portal_status, \
             portal_revision = u.revision, portal_date_created = u.date_created, \
             portal_date_started = u.date_started, portal_date_completed = u.date_completed, \
             portal_assessment = u.assessment, row_version = t.row_version + 1 \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[]) \
             AS u(id, version, status, code, subject_code, portal_status, revision, \
             date_created, date_started, date_completed, assessment) \
             WHERE t.host_system_id = u.id AND t.row_version = u.version \
             RETURNING t.host_system_id",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&statuses)
        .bind(&codes)
        .bind(&subjects)
        .bind(&portal_statuses)
        .bind(&revisions)
        .bind(&created)
        .bind(&started)
        .bind(&completed)
        .bind(&assessments)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("write-back: update tasks"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<HashSet<_>, _>>()
            .map_err(StoreError::query("write-back: update tasks"))
    }

    async fn record_conflict(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        self.record_error(id, message).await
    }
}

impl TaskStore for PostgresStore {
    async fn import<R: Read + Send + 'static>(&self, input: R) -> Result<ImportReport, StoreError> {
        let report = import::run_import(self, input, DEFAULT_BATCH_SIZE).await?;
        // Fresh statistics after a bulk load: without them the planner reads
        // a due-task page by bitmap scan and sort over every remaining row
        // instead of walking the (status, id) index.
        if report.inserted >= 1000 {
            sqlx::query("ANALYZE tasks")
                .execute(&self.pool)
                .await
                .map_err(StoreError::query("import: analyze"))?;
        }
        Ok(report)
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
        let mut tx = self.pool.begin().await.map_err(op())?;
        // A lease lost in a server crash only makes its tasks due again
        // (jobs are idempotent), so lease commits need not wait for the
        // disk.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(op())?;
        for group in &groups {
            let ids: Vec<&str> = group.rows.iter().map(|r| r.0).collect();
            let jobs: Vec<&str> = group.rows.iter().map(|r| r.1).collect();
            let until: Vec<i64> = group.rows.iter().map(|r| r.2).collect();
            let rows = sqlx::query(
                "INSERT INTO task_leases AS l (host_system_id, job_id, lease_until) \
                 SELECT u.id, u.job, u.until \
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS u(id, job, until) \
                 WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.host_system_id = u.id) \
                 ON CONFLICT (host_system_id) DO UPDATE \
                 SET job_id = excluded.job_id, lease_until = excluded.lease_until \
                 WHERE $5 OR l.lease_until <= $4 OR l.job_id = excluded.job_id \
                 RETURNING l.host_system_id",
            )
            .bind(&ids)
            .bind(&jobs)
            .bind(&until)
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
        let done =
            sqlx::query("DELETE FROM task_leases WHERE host_system_id = ANY($1) AND job_id = $2")
                .bind(ids)
                .bind(job_id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::query("release tasks"))?;
        Ok(done.rows_affected())
    }

    async fn load(&self, ids: &[TaskId]) -> Result<Vec<Result<LocalTask, RowError>>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{TASK_SELECT} WHERE host_system_id = ANY($1)"
        )))
        .bind(ids)
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
            "UPDATE tasks SET error_message = $1, error_attempts = error_attempts + 1, \
             error_at = $2 WHERE host_system_id = $3",
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
             WHERE host_system_id = ANY($1) \
             AND (error_message IS NOT NULL OR error_attempts <> 0)",
        )
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("clear error"))?;
        Ok(done.rows_affected())
    }

    async fn counts(&self, now: DateTime<Utc>) -> Result<StatusCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT t.status, COUNT(*)::bigint, \
             SUM(CASE WHEN t.error_message IS NOT NULL THEN 1 ELSE 0 END)::bigint, \
             SUM(CASE WHEN l.lease_until > $1 THEN 1 ELSE 0 END)::bigint \
             FROM tasks t LEFT JOIN task_leases l ON l.host_system_id = t.host_system_id \
             GROUP BY t.status",
        )
        .bind(row::lease_millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("count tasks"))?;
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
