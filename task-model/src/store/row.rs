//! Reading stored rows back into tasks, shared by both backends: the column
//! list, the raw row, the document cache, and the checks that turn a row the
//! host wrote badly into a [`RowError`] naming the task and the column.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::RowError;
use crate::task::{
    HostTask, LocalStatus, LocalTask, PortalDate, PortalState, PortalStatus, Subject, TaskError,
};

/// A `tasks` row as stored, before any check.
#[derive(Debug)]
pub(crate) struct RawTask {
    pub id: String,
    display_name: String,
    pub instrument_hash: String,
    pub form_hash: String,
    subject: String,
    parameters: Option<String>,
    initial_assessment: Option<String>,
    status: String,
    portal: RawPortalColumns,
    error_message: Option<String>,
    error_attempts: i64,
    error_at: Option<String>,
}

/// The portal-state columns as stored.
#[derive(Debug, Default)]
struct RawPortalColumns {
    code: Option<String>,
    subject_code: Option<String>,
    status: Option<String>,
    revision: Option<i64>,
    date_created: Option<String>,
    date_started: Option<String>,
    date_completed: Option<String>,
    assessment: Option<String>,
}

/// What write-back needs of a row: status, portal state and version.
#[derive(Debug)]
pub(crate) struct RawPortal {
    pub id: String,
    status: String,
    portal: RawPortalColumns,
    pub version: i64,
}

/// A row's current state, checked.
#[derive(Clone, Debug)]
pub(crate) struct CurrentState {
    pub status: LocalStatus,
    pub portal: Option<PortalState>,
    pub version: i64,
}

/// Reads column `index` named `column`, turning a type mismatch (SQLite keeps
/// whatever the host wrote) into a [`RowError`].
fn column<'r, R, T>(row: &'r R, index: usize, column: &'static str, id: &str) -> Result<T, RowError>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(index).map_err(|e| RowError::BadColumn {
        task_id: id.to_string(),
        column,
        message: format!("unreadable value: {e}"),
    })
}

fn row_id<R>(row: &R) -> Result<String, RowError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    column(row, 0, "host_system_id", "<unreadable id>")
}

/// A stored document: its hash and its body, or why the body is unreadable.
pub(crate) type DocumentPair = (String, Result<String, String>);

/// The `(hash, body)` of each fetched document row (columns `hash`, `body`);
/// a body that cannot be read as text is kept as a message, so the tasks
/// that reference it are reported, not the whole page refused. A row whose
/// hash cannot be read is left out (its tasks then report a missing
/// document).
pub(crate) fn document_pairs<R>(rows: Vec<R>) -> Vec<DocumentPair>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .filter_map(|row| {
            let hash = row.try_get::<String, _>(0).ok()?;
            let body = row
                .try_get::<String, _>(1)
                .map_err(|e| format!("unreadable: {e}"));
            Some((hash, body))
        })
        .collect()
}

impl RawPortalColumns {
    fn from_row<R>(row: &R, first: usize, id: &str) -> Result<RawPortalColumns, RowError>
    where
        R: Row,
        usize: ColumnIndex<R>,
        for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(RawPortalColumns {
            code: column(row, first, "portal_code", id)?,
            subject_code: column(row, first + 1, "portal_subject_code", id)?,
            status: column(row, first + 2, "portal_status", id)?,
            revision: column(row, first + 3, "portal_revision", id)?,
            date_created: column(row, first + 4, "portal_date_created", id)?,
            date_started: column(row, first + 5, "portal_date_started", id)?,
            date_completed: column(row, first + 6, "portal_date_completed", id)?,
            assessment: column(row, first + 7, "portal_assessment", id)?,
        })
    }
}

impl RawTask {
    /// Reads a row whose columns are, in order: host_system_id, display_name,
    /// instrument_hash, form_hash, subject, parameters, initial_assessment,
    /// status, the eight portal_* columns, error_message, error_attempts,
    /// error_at.
    pub(crate) fn from_row<R>(row: &R) -> Result<RawTask, RowError>
    where
        R: Row,
        usize: ColumnIndex<R>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let id = row_id(row)?;
        let i = id.as_str();
        Ok(RawTask {
            display_name: column(row, 1, "display_name", i)?,
            instrument_hash: column(row, 2, "instrument_hash", i)?,
            form_hash: column(row, 3, "form_hash", i)?,
            subject: column(row, 4, "subject", i)?,
            parameters: column(row, 5, "parameters", i)?,
            initial_assessment: column(row, 6, "initial_assessment", i)?,
            status: column(row, 7, "status", i)?,
            portal: RawPortalColumns::from_row(row, 8, i)?,
            error_message: column(row, 16, "error_message", i)?,
            error_attempts: column(row, 17, "error_attempts", i)?,
            error_at: column(row, 18, "error_at", i)?,
            id,
        })
    }
}

impl RawPortal {
    /// Reads a row whose columns are, in order: host_system_id, status, the
    /// eight portal_* columns, row_version.
    pub(crate) fn from_row<R>(row: &R) -> Result<RawPortal, RowError>
    where
        R: Row,
        usize: ColumnIndex<R>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let id = row_id(row)?;
        let i = id.as_str();
        Ok(RawPortal {
            status: column(row, 1, "status", i)?,
            portal: RawPortalColumns::from_row(row, 2, i)?,
            version: column(row, 10, "row_version", i)?,
            id,
        })
    }

    /// Checks the row.
    pub(crate) fn decode(&self) -> Result<CurrentState, RowError> {
        Ok(CurrentState {
            status: decode_status(&self.id, &self.status)?,
            portal: decode_portal(&self.id, &self.portal)?,
            version: self.version,
        })
    }
}

fn bad(id: &str, column: &'static str, message: impl Into<String>) -> RowError {
    RowError::BadColumn {
        task_id: id.to_string(),
        column,
        message: message.into(),
    }
}

/// A JSON error without the values it quotes: serde quotes offending strings
/// (which may be names or answers) in `"…"`; field names are in backticks and
/// kept.
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut in_quote = false;
    for ch in text.chars() {
        if ch == '"' {
            if in_quote {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(ch);
        }
    }
    out
}

fn decode_json(id: &str, column: &'static str, text: &str) -> Result<Value, RowError> {
    serde_json::from_str(text)
        .map_err(|e| bad(id, column, format!("invalid JSON: {}", json_problem(&e))))
}

fn decode_optional_json(
    id: &str,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<Value>, RowError> {
    text.map(|t| decode_json(id, column, t)).transpose()
}

fn decode_status(id: &str, status: &str) -> Result<LocalStatus, RowError> {
    LocalStatus::parse(status).ok_or_else(|| {
        bad(
            id,
            "status",
            format!(
                "unknown status {status:?} (expected awaiting-submission, awaiting-completion, complete or cancelled)"
            ),
        )
    })
}

fn decode_date(
    id: &str,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<PortalDate>, RowError> {
    text.map(|t| {
        PortalDate::parse(t).map_err(|e| {
            bad(
                id,
                column,
                format!("{t:?}: {e} (expected YYYY-MM-DD HH:MM:SS)"),
            )
        })
    })
    .transpose()
}

fn decode_portal(id: &str, raw: &RawPortalColumns) -> Result<Option<PortalState>, RowError> {
    let Some(code) = &raw.code else {
        return Ok(None);
    };
    let subject_code = raw.subject_code.clone().ok_or_else(|| {
        bad(
            id,
            "portal_subject_code",
            "missing while portal_code is set",
        )
    })?;
    let status_text = raw
        .status
        .as_deref()
        .ok_or_else(|| bad(id, "portal_status", "missing while portal_code is set"))?;
    let status = PortalStatus::parse(status_text).ok_or_else(|| {
        bad(
            id,
            "portal_status",
            format!("unknown portal status {status_text:?}"),
        )
    })?;
    let revision = match raw.revision {
        None => 0,
        Some(r) => u64::try_from(r).map_err(|_| bad(id, "portal_revision", "negative"))?,
    };
    Ok(Some(PortalState {
        code: code.clone(),
        subject_code,
        status,
        revision,
        date_created: decode_date(id, "portal_date_created", raw.date_created.as_deref())?,
        date_started: decode_date(id, "portal_date_started", raw.date_started.as_deref())?,
        date_completed: decode_date(id, "portal_date_completed", raw.date_completed.as_deref())?,
        assessment: decode_optional_json(id, "portal_assessment", raw.assessment.as_deref())?,
    }))
}

/// A parsed document, or why its stored text is not JSON.
type ParsedDocument = Result<Arc<Value>, String>;

/// Parsed instrument and form documents by hash, so a page of tasks sharing a
/// few documents parses each once. Bounded: cleared when it holds more than
/// [`DocumentCache::CAPACITY`] documents.
#[derive(Debug, Default)]
pub(crate) struct DocumentCache {
    instruments: HashMap<String, ParsedDocument>,
    forms: HashMap<String, ParsedDocument>,
}

/// The two document tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DocumentKind {
    Instrument,
    Form,
}

impl DocumentKind {
    pub(crate) fn table(self) -> &'static str {
        match self {
            DocumentKind::Instrument => "instruments",
            DocumentKind::Form => "forms",
        }
    }

    fn hash_column(self) -> &'static str {
        match self {
            DocumentKind::Instrument => "instrument_hash",
            DocumentKind::Form => "form_hash",
        }
    }

    fn body_column(self) -> &'static str {
        match self {
            DocumentKind::Instrument => "instruments.body",
            DocumentKind::Form => "forms.body",
        }
    }
}

impl DocumentCache {
    const CAPACITY: usize = 512;

    fn map(&self, kind: DocumentKind) -> &HashMap<String, ParsedDocument> {
        match kind {
            DocumentKind::Instrument => &self.instruments,
            DocumentKind::Form => &self.forms,
        }
    }

    /// Makes room for a page's documents and answers the hashes of `kind`
    /// that `rows` need and the cache lacks (each once).
    pub(crate) fn missing<'a>(
        &mut self,
        kind: DocumentKind,
        rows: impl IntoIterator<Item = &'a RawTask>,
    ) -> Vec<String> {
        if self.instruments.len() + self.forms.len() > Self::CAPACITY {
            self.instruments.clear();
            self.forms.clear();
        }
        let map = self.map(kind);
        let mut out: Vec<String> = Vec::new();
        for row in rows {
            let hash = match kind {
                DocumentKind::Instrument => &row.instrument_hash,
                DocumentKind::Form => &row.form_hash,
            };
            if !map.contains_key(hash) && !out.contains(hash) {
                out.push(hash.clone());
            }
        }
        out
    }

    /// Parses and keeps a document read from its table (or why its body
    /// could not be read).
    pub(crate) fn insert(
        &mut self,
        kind: DocumentKind,
        hash: String,
        body: Result<String, String>,
    ) {
        let parsed = body.and_then(|body| {
            serde_json::from_str(&body)
                .map(Arc::new)
                .map_err(|e| json_problem(&e))
        });
        match kind {
            DocumentKind::Instrument => self.instruments.insert(hash, parsed),
            DocumentKind::Form => self.forms.insert(hash, parsed),
        };
    }

    fn get(&self, kind: DocumentKind, id: &str, hash: &str) -> Result<Arc<Value>, RowError> {
        match self.map(kind).get(hash) {
            Some(Ok(value)) => Ok(Arc::clone(value)),
            Some(Err(problem)) => Err(bad(
                id,
                kind.body_column(),
                format!("document {hash} is not valid JSON: {problem}"),
            )),
            None => Err(bad(
                id,
                kind.hash_column(),
                format!("no {} row with hash {hash:?}", kind.table()),
            )),
        }
    }
}

/// Checks a row and builds the task; `docs` must hold the row's documents
/// (fetched after [`DocumentCache::missing`]).
pub(crate) fn decode_task(raw: RawTask, docs: &DocumentCache) -> Result<LocalTask, RowError> {
    let id = raw.id.as_str();
    let status = decode_status(id, &raw.status)?;
    let subject: Subject = serde_json::from_str(&raw.subject).map_err(|e| {
        bad(
            id,
            "subject",
            format!("invalid subject: {}", json_problem(&e)),
        )
    })?;
    let parameters = decode_optional_json(id, "parameters", raw.parameters.as_deref())?;
    let assessment =
        decode_optional_json(id, "initial_assessment", raw.initial_assessment.as_deref())?;
    let instrument = docs.get(DocumentKind::Instrument, id, &raw.instrument_hash)?;
    let form = docs.get(DocumentKind::Form, id, &raw.form_hash)?;
    let portal = decode_portal(id, &raw.portal)?;
    let error = match raw.error_message {
        None => None,
        Some(message) => {
            let at_text = raw
                .error_at
                .as_deref()
                .ok_or_else(|| bad(id, "error_at", "missing while error_message is set"))?;
            let at = DateTime::parse_from_rfc3339(at_text)
                .map_err(|e| {
                    bad(
                        id,
                        "error_at",
                        format!("{at_text:?}: {e} (expected RFC 3339)"),
                    )
                })?
                .with_timezone(&Utc);
            let attempts = u32::try_from(raw.error_attempts)
                .map_err(|_| bad(id, "error_attempts", "out of range"))?;
            Some(TaskError {
                message,
                attempts,
                at,
            })
        }
    };
    Ok(LocalTask {
        task: HostTask {
            host_system_id: raw.id,
            display_name: raw.display_name,
            instrument,
            form,
            subject,
            parameters,
            assessment,
        },
        status,
        portal,
        error,
    })
}

/// Time as stored in `error_at`.
pub(crate) fn timestamp_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Time as stored in `lease_until` (milliseconds since the Unix epoch).
pub(crate) fn lease_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The portal-state column values of a state about to be written.
#[derive(Debug)]
pub(crate) struct PortalColumns {
    pub code: String,
    pub subject_code: String,
    pub status: &'static str,
    pub revision: i64,
    pub date_created: Option<String>,
    pub date_started: Option<String>,
    pub date_completed: Option<String>,
    pub assessment: Option<String>,
}

impl PortalColumns {
    pub(crate) fn from_state(state: &PortalState) -> PortalColumns {
        PortalColumns {
            code: state.code.clone(),
            subject_code: state.subject_code.clone(),
            status: state.status.as_str(),
            // Revisions beyond i64 do not occur; saturate rather than wrap.
            revision: i64::try_from(state.revision).unwrap_or(i64::MAX),
            date_created: state.date_created.map(|d| d.to_string()),
            date_started: state.date_started.map(|d| d.to_string()),
            date_completed: state.date_completed.map(|d| d.to_string()),
            assessment: state.assessment.as_ref().map(Value::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_problem_hides_quoted_values() {
        let e = serde_json::from_str::<u32>(r#""Alice Secret""#)
            .err()
            .map(|e| json_problem(&e))
            .unwrap_or_default();
        assert!(!e.contains("Alice"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
    }
}
