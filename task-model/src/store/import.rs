//! Reading host tasks for import: a JSON array or NDJSON, parsed record by
//! record on a blocking thread and handed to the backend in batches, so the
//! input never has to fit in memory and one bad record costs only itself.
//!
//! Each good record becomes a [`PreparedTask`]: its columns as stored. The
//! instrument and form are checked to be JSON but kept as the text given
//! (parsing them into values and writing them out again was most of an
//! import's time), keyed by the SHA-256 of that text: documents written the
//! same way are stored once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};

use serde::Deserialize;
use serde::de::{SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::row::json_problem;
use super::{ImportReport, SkippedRecord, StoreError};
use crate::task::{LocalStatus, Subject, TaskId};

/// Where a record sits in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordPosition {
    /// NDJSON: the 1-based line number.
    Line(u64),
    /// JSON array: the 0-based index of the element.
    Index(u64),
}

impl fmt::Display for RecordPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordPosition::Line(n) => write!(f, "line {n}"),
            RecordPosition::Index(i) => write!(f, "record {i} (array index)"),
        }
    }
}

/// A record that could not be stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{position}{}: {message}", task_id.as_ref().map(|t| format!(" (task {t})")).unwrap_or_default())]
pub struct ImportError {
    pub position: RecordPosition,
    /// The record's `host_system_id`, when it could be read.
    pub task_id: Option<TaskId>,
    pub message: String,
}

/// A document as stored: its key and its JSON text.
#[derive(Clone, Debug)]
pub(crate) struct Document {
    pub hash: String,
    pub body: String,
}

impl Document {
    /// The document in canonical form (object keys sorted at every level, no
    /// insignificant whitespace), keyed by the SHA-256 of that text: the same
    /// document written with other spacing or key order is stored once.
    fn canonical(raw: &RawValue) -> Result<Document, serde_json::Error> {
        let value: Value = serde_json::from_str(raw.get())?;
        let body = serde_json::to_string(&sorted_keys(value))?;
        let hash = hex_sha256(body.as_bytes());
        Ok(Document { hash, body })
    }
}

/// `value` with the keys of every object in sorted order (whatever map
/// serde_json was built with).
fn sorted_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut hash = String::with_capacity(64);
    for byte in Sha256::digest(bytes) {
        // Writing to a String cannot fail.
        let _ = write!(hash, "{byte:02x}");
    }
    hash
}

/// The canonical [`Document`] of each document text seen in this import,
/// by the digest of the text as given, so a document shared by many tasks
/// is parsed and rewritten once. Bounded: forgotten past
/// [`DocumentKeys::LIMIT`] distinct texts.
#[derive(Default)]
struct DocumentKeys {
    by_text: HashMap<[u8; 32], Document>,
}

impl DocumentKeys {
    const LIMIT: usize = 1024;

    fn of(&mut self, raw: &RawValue) -> Result<Document, serde_json::Error> {
        let digest: [u8; 32] = Sha256::digest(raw.get().as_bytes()).into();
        if let Some(doc) = self.by_text.get(&digest) {
            return Ok(doc.clone());
        }
        let doc = Document::canonical(raw)?;
        if self.by_text.len() >= Self::LIMIT {
            self.by_text.clear();
        }
        self.by_text.insert(digest, doc.clone());
        Ok(doc)
    }
}

/// A host task as read for import: the [`HostTask`] shape, key for key
/// (unknown keys refused), with the documents kept as the JSON text given
/// rather than parsed into values and written out again.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRecord<'a> {
    host_system_id: TaskId,
    display_name: String,
    #[serde(borrow)]
    instrument: &'a RawValue,
    #[serde(borrow)]
    form: &'a RawValue,
    subject: Subject,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(default, borrow)]
    assessment: Option<&'a RawValue>,
}

/// A good record, as the columns it is stored in.
#[derive(Clone, Debug)]
pub(crate) struct PreparedTask {
    pub position: RecordPosition,
    pub id: TaskId,
    pub display_name: String,
    pub instrument: Document,
    pub form: Document,
    pub subject: String,
    pub parameters: Option<String>,
    pub initial_assessment: Option<String>,
}

impl PreparedTask {
    fn from_record(
        position: RecordPosition,
        record: ImportRecord<'_>,
        keys: &mut DocumentKeys,
    ) -> Result<PreparedTask, ImportError> {
        let fail = |message: String| ImportError {
            position,
            task_id: Some(record.host_system_id.clone()),
            message,
        };
        if record.host_system_id.trim().is_empty() {
            return Err(ImportError {
                position,
                task_id: None,
                message: "host_system_id is empty".into(),
            });
        }
        // PostgreSQL text cannot hold NUL; refuse it on both backends alike.
        for (field, text) in [
            ("host_system_id", &record.host_system_id),
            ("display_name", &record.display_name),
        ] {
            if text.contains('\0') {
                return Err(fail(format!("{field} contains a NUL character")));
            }
        }
        let subject = serde_json::to_string(&record.subject)
            .map_err(|e| fail(format!("subject cannot be stored: {e}")))?;
        // A JSON `null` is an absent optional, as in [`HostTask`].
        let optional = |raw: Option<&RawValue>| {
            raw.map(|r| r.get())
                .filter(|text| text.trim() != "null")
                .map(str::to_string)
        };
        let instrument = keys
            .of(record.instrument)
            .map_err(|e| fail(format!("instrument cannot be stored: {e}")))?;
        let form = keys
            .of(record.form)
            .map_err(|e| fail(format!("form cannot be stored: {e}")))?;
        Ok(PreparedTask {
            position,
            instrument,
            form,
            subject,
            parameters: optional(record.parameters),
            initial_assessment: optional(record.assessment),
            display_name: record.display_name,
            id: record.host_system_id,
        })
    }
}

type Parsed = Result<PreparedTask, ImportError>;

/// What the parser hands the writer.
enum Message {
    Batch(Vec<Parsed>),
    Failed(StoreError),
}

/// The record's `host_system_id` if the text is at least an object with one.
fn id_of_value(value: &Value) -> Option<TaskId> {
    value
        .get("host_system_id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Parses one record's JSON text.
fn parse_record(position: RecordPosition, text: &[u8], keys: &mut DocumentKeys) -> Parsed {
    match serde_json::from_slice::<ImportRecord<'_>>(text) {
        Ok(record) => PreparedTask::from_record(position, record, keys),
        Err(e) => {
            let task_id = serde_json::from_slice::<Value>(text)
                .ok()
                .as_ref()
                .and_then(id_of_value);
            let what = if task_id.is_some() || e.is_data() {
                "not a task"
            } else {
                "invalid JSON"
            };
            Err(ImportError {
                position,
                task_id,
                message: format!("{what}: {}", json_problem(&e)),
            })
        }
    }
}

/// Sends full batches down the channel; false once the writer has gone.
struct Batcher {
    tx: mpsc::Sender<Message>,
    batch: Vec<Parsed>,
    size: usize,
    keys: DocumentKeys,
}

impl Batcher {
    fn push(&mut self, parsed: Parsed) -> bool {
        self.batch.push(parsed);
        if self.batch.len() >= self.size {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.size));
        self.tx.blocking_send(Message::Batch(batch)).is_ok()
    }

    fn fail(&mut self, error: StoreError) {
        self.flush();
        let _ = self.tx.blocking_send(Message::Failed(error));
    }
}

/// `lines_before`: blank lines already consumed while looking at the start.
fn parse_ndjson<R: BufRead>(mut input: R, lines_before: u64, out: &mut Batcher) {
    let mut line = Vec::new();
    let mut number = lines_before;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return out.fail(StoreError::ReadInput { source }),
        }
        number += 1;
        let text = line.trim_ascii();
        // A UTF-8 byte order mark may open the first line.
        let text = if number == lines_before + 1 {
            text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text)
        } else {
            text
        };
        if text.is_empty() {
            continue;
        }
        let parsed = parse_record(RecordPosition::Line(number), text, &mut out.keys);
        if !out.push(parsed) {
            return;
        }
    }
    out.flush();
}

/// Visits the elements of a JSON array one at a time.
struct Elements<'a> {
    out: &'a mut Batcher,
    seen: &'a mut u64,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of tasks")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            let index = *self.seen;
            *self.seen += 1;
            let parsed = parse_record(
                RecordPosition::Index(index),
                raw.get().as_bytes(),
                &mut self.out.keys,
            );
            if !self.out.push(parsed) {
                break;
            }
        }
        Ok(())
    }
}

fn parse_array<R: Read>(input: R, out: &mut Batcher) {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut seen = 0u64;
    let result = (&mut de)
        .deserialize_seq(Elements {
            out: &mut *out,
            seen: &mut seen,
        })
        .and_then(|()| de.end());
    if let Err(e) = result {
        if e.is_io() {
            return out.fail(StoreError::ReadInput {
                source: std::io::Error::other(e),
            });
        }
        // The array itself is broken at this point: what came before has
        // been handed on; nothing after it can be read.
        let message = format!(
            "invalid JSON at line {} column {}; the rest of the array cannot be read: {}",
            e.line(),
            e.column(),
            json_problem(&e)
        );
        out.push(Err(ImportError {
            position: RecordPosition::Index(seen),
            task_id: None,
            message,
        }));
    }
    out.flush();
}

/// Parses `input` (an array if its first non-blank byte is `[`, else NDJSON).
fn parse_input<R: Read>(input: R, out: &mut Batcher) {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut lines_before = 0u64;
    let first = loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(source) => return out.fail(StoreError::ReadInput { source }),
        };
        if buf.is_empty() {
            break None;
        }
        let skip = buf
            .iter()
            .take_while(|b| b.is_ascii_whitespace() || matches!(b, 0xef | 0xbb | 0xbf))
            .count();
        if skip < buf.len() {
            break Some(buf[skip]);
        }
        lines_before += buf.iter().filter(|b| **b == b'\n').count() as u64;
        reader.consume(skip);
    };
    match first {
        None => {}
        Some(b'[') => {
            // Drop a byte order mark before the array.
            if let Ok(buf) = reader.fill_buf() {
                let bom = buf.starts_with(b"\xef\xbb\xbf");
                if bom {
                    reader.consume(3);
                }
            }
            parse_array(reader, out)
        }
        Some(_) => parse_ndjson(reader, lines_before, out),
    }
}

/// How a backend stores a batch of good records.
pub(crate) trait ImportBackend: Sync {
    /// The stored status of those of `ids` that exist (an unreadable status
    /// reads as unknown, so such a record is skipped, never merged).
    fn existing_statuses(
        &self,
        ids: &[TaskId],
    ) -> impl Future<Output = Result<HashMap<String, String>, StoreError>> + Send;

    /// Stores `new` and `updates` in one transaction (all or nothing) and
    /// answers the ids inserted, the ids updated and the hashes of the
    /// documents it committed. `known` holds hashes already committed.
    fn store_tasks(
        &self,
        new: &[PreparedTask],
        updates: &[PreparedTask],
        known: &HashSet<String>,
    ) -> impl Future<Output = StoredTasks> + Send;
}

/// What [`ImportBackend::store_tasks`] answers: ids inserted, ids updated,
/// document hashes committed.
pub(crate) type StoredTasks = Result<(HashSet<String>, HashSet<String>, Vec<String>), sqlx::Error>;

/// Stores `batch` (no id twice) through `backend` and answers what became of
/// each record. `known` holds hashes of documents already committed by this
/// import; the ones committed now are added. If the database refuses some
/// record, each is stored on its own to find it; the others still land.
async fn write_batch<B: ImportBackend>(
    backend: &B,
    batch: Vec<PreparedTask>,
    known: &mut HashSet<String>,
) -> Result<BatchOutcome, StoreError> {
    let ids: Vec<TaskId> = batch.iter().map(|t| t.id.clone()).collect();
    let existing = backend.existing_statuses(&ids).await?;
    let classified = classify(batch, &existing);
    let mut outcome = BatchOutcome {
        skipped: classified.skipped,
        ..BatchOutcome::default()
    };
    let import_failed = |source| StoreError::Query {
        operation: "import",
        source,
    };
    match backend
        .store_tasks(&classified.new, &classified.updates, known)
        .await
    {
        Ok((inserted, updated, docs)) => {
            known.extend(docs);
            tally_stored(
                &mut outcome,
                classified.new,
                classified.updates,
                &inserted,
                &updated,
            );
            Ok(outcome)
        }
        Err(e) if is_record_error(&e) => {
            for task in classified.new.into_iter().chain(classified.updates) {
                let one = std::slice::from_ref(&task);
                let (new, updates) = if existing.contains_key(&task.id) {
                    (&[][..], one)
                } else {
                    (one, &[][..])
                };
                match backend.store_tasks(new, updates, &HashSet::new()).await {
                    Ok((inserted, updated, _)) => tally_stored(
                        &mut outcome,
                        new.to_vec(),
                        updates.to_vec(),
                        &inserted,
                        &updated,
                    ),
                    Err(e) if is_record_error(&e) => outcome.errors.push(ImportError {
                        position: task.position,
                        task_id: Some(task.id.clone()),
                        message: format!("the database refused the record: {e}"),
                    }),
                    Err(e) => return Err(import_failed(e)),
                }
            }
            Ok(outcome)
        }
        Err(e) => Err(import_failed(e)),
    }
}

/// Counts what [`ImportBackend::store_tasks`] did; a record that neither
/// landed nor updated lost a race with another writer and is reported as
/// skipped.
fn tally_stored(
    outcome: &mut BatchOutcome,
    new: Vec<PreparedTask>,
    updates: Vec<PreparedTask>,
    inserted: &HashSet<String>,
    updated: &HashSet<String>,
) {
    for task in new {
        if inserted.contains(&task.id) {
            outcome.inserted += 1;
        } else {
            outcome.skipped.push(SkippedRecord {
                position: task.position,
                task_id: task.id,
                status: "inserted meanwhile by another writer".into(),
            });
        }
    }
    for task in updates {
        if updated.contains(&task.id) {
            outcome.updated += 1;
        } else {
            outcome.skipped.push(SkippedRecord {
                position: task.position,
                task_id: task.id,
                status: "submitted meanwhile".into(),
            });
        }
    }
}

/// Runs an import: parses `input` on a blocking thread and hands batches of
/// good records to `backend`. The report lists errors in input order.
pub(crate) async fn run_import<R, B>(
    backend: &B,
    input: R,
    batch_size: usize,
) -> Result<ImportReport, StoreError>
where
    R: Read + Send + 'static,
    B: ImportBackend,
{
    let mut known: HashSet<String> = HashSet::new();
    let size = batch_size.max(1);
    let (tx, mut rx) = mpsc::channel::<Message>(4);
    let parser = tokio::task::spawn_blocking(move || {
        let mut out = Batcher {
            tx,
            batch: Vec::with_capacity(size),
            size,
            keys: DocumentKeys::default(),
        };
        parse_input(input, &mut out);
    });
    let mut report = ImportReport::default();
    while let Some(message) = rx.recv().await {
        let batch = match message {
            Message::Batch(batch) => batch,
            Message::Failed(e) => return Err(e),
        };
        let mut good = Vec::with_capacity(batch.len());
        for parsed in batch {
            match parsed {
                Ok(task) => good.push(task),
                Err(e) => report.errors.push(e),
            }
        }
        // Two records for one task in one batch: store them in turn, so the
        // later one is an update of the earlier.
        for part in split_repeated_ids(good) {
            let outcome = write_batch(backend, part, &mut known).await?;
            report.inserted += outcome.inserted;
            report.updated += outcome.updated;
            report.skipped.extend(outcome.skipped);
            report.errors.extend(outcome.errors);
        }
    }
    // The parser has finished (its sender is gone); a panic in it is a bug.
    if let Err(e) = parser.await {
        return Err(StoreError::ReadInput {
            source: std::io::Error::other(format!("import parser failed: {e}")),
        });
    }
    report.errors.sort_by_key(|e| e.position);
    report.skipped.sort_by_key(|s| s.position);
    Ok(report)
}

/// Splits a batch so that no part holds one id twice, keeping order.
fn split_repeated_ids(batch: Vec<PreparedTask>) -> Vec<Vec<PreparedTask>> {
    let mut parts = Vec::new();
    let mut part: Vec<PreparedTask> = Vec::with_capacity(batch.len());
    let mut ids: HashSet<TaskId> = HashSet::new();
    for task in batch {
        if !ids.insert(task.id.clone()) {
            parts.push(std::mem::take(&mut part));
            ids.clear();
            ids.insert(task.id.clone());
        }
        part.push(task);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// What became of one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub skipped: Vec<SkippedRecord>,
    pub errors: Vec<ImportError>,
}

/// A batch sorted by what the store already holds.
#[derive(Debug, Default)]
pub(crate) struct Classified {
    pub new: Vec<PreparedTask>,
    /// Known and still awaiting submission: host fields are replaced.
    pub updates: Vec<PreparedTask>,
    pub skipped: Vec<SkippedRecord>,
}

/// Sorts `batch` by the stored status of each id (`existing`: id → status
/// as spelled in the database).
pub(crate) fn classify(batch: Vec<PreparedTask>, existing: &HashMap<String, String>) -> Classified {
    let mut out = Classified::default();
    for task in batch {
        match existing.get(&task.id) {
            None => out.new.push(task),
            Some(status) if status == LocalStatus::AwaitingSubmission.as_str() => {
                out.updates.push(task)
            }
            Some(status) => out.skipped.push(SkippedRecord {
                position: task.position,
                task_id: task.id,
                status: status.clone(),
            }),
        }
    }
    out
}

/// The distinct documents of `tasks` not yet in `known`, per table.
pub(crate) fn new_documents<'a>(
    tasks: impl IntoIterator<Item = &'a PreparedTask>,
    known: &HashSet<String>,
) -> (Vec<&'a Document>, Vec<&'a Document>) {
    let mut instruments: Vec<&Document> = Vec::new();
    let mut forms: Vec<&Document> = Vec::new();
    for task in tasks {
        if !known.contains(&task.instrument.hash)
            && !instruments.iter().any(|d| d.hash == task.instrument.hash)
        {
            instruments.push(&task.instrument);
        }
        if !known.contains(&task.form.hash) && !forms.iter().any(|d| d.hash == task.form.hash) {
            forms.push(&task.form);
        }
    }
    (instruments, forms)
}

/// Whether a database error is about this record (a constraint, a value the
/// database refuses) rather than the database itself being unavailable.
pub(crate) fn is_record_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(_) | sqlx::Error::Encode(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Vec<Parsed> {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut out = Batcher {
            tx,
            batch: Vec::new(),
            size: 2,
            keys: DocumentKeys::default(),
        };
        let text = text.to_string();
        std::thread::spawn(move || parse_input(text.as_bytes(), &mut out))
            .join()
            .expect("parser thread");
        let mut all = Vec::new();
        while let Ok(Message::Batch(batch)) = rx.try_recv() {
            all.extend(batch);
        }
        all
    }

    const TASK: &str = r#"{"host_system_id":"t1","display_name":"T","instrument":{"b":1,"a":2},"form":{},"subject":{"host_system_id":"s","display_name":"S","users":[]}}"#;

    #[test]
    fn equal_documents_hash_equal() {
        let raw = |t: &str| serde_json::from_str::<Box<RawValue>>(t).expect("json");
        let doc = |t: &str| Document::canonical(&raw(t)).expect("document");
        let a = doc(r#"{"a":1,"b":[1,2],"c":{"y":1,"x":2}}"#);
        assert_eq!(a.hash.len(), 64);
        assert_eq!(a.body, r#"{"a":1,"b":[1,2],"c":{"x":2,"y":1}}"#);
        // Other spacing and key order: the same document.
        let b = doc("{ \"c\": {\"x\": 2, \"y\": 1},\n  \"b\": [1, 2], \"a\": 1 }");
        assert_eq!(
            (a.hash.as_str(), a.body.as_str()),
            (b.hash.as_str(), b.body.as_str())
        );
        assert_ne!(a.hash, doc(r#"{"a":2}"#).hash);
        // Array order is content.
        assert_ne!(a.hash, doc(r#"{"a":1,"b":[2,1],"c":{"x":2,"y":1}}"#).hash);
        let mut keys = DocumentKeys::default();
        assert_eq!(
            keys.of(&raw(r#"{"b":1,"a":2}"#)).expect("doc").body,
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(keys.by_text.len(), 1);
    }

    #[test]
    fn ndjson_reports_the_line_of_a_bad_record() {
        let text = format!("{TASK}\n\n{{not json\n{}\n", TASK.replace("t1", "t2"));
        let parsed = parse_all(&text);
        assert_eq!(parsed.len(), 3);
        assert!(parsed[0].is_ok());
        let err = parsed[1].as_ref().expect_err("line 3 is bad");
        assert_eq!(err.position, RecordPosition::Line(3));
        assert!(err.message.starts_with("invalid JSON"), "{}", err.message);
        assert_eq!(parsed[2].as_ref().map(|t| t.id.as_str()).ok(), Some("t2"));
    }

    #[test]
    fn array_reports_the_index_of_a_bad_record() {
        let bad = TASK.replace("\"form\":{},", "");
        let text = format!("\u{feff} [{TASK}, {bad}, {}]", TASK.replace("t1", "t3"));
        let parsed = parse_all(&text);
        assert_eq!(parsed.len(), 3);
        let err = parsed[1].as_ref().expect_err("index 1 is bad");
        assert_eq!(err.position, RecordPosition::Index(1));
        assert_eq!(err.task_id.as_deref(), Some("t1"));
        assert!(
            err.message.contains("missing field `form`"),
            "{}",
            err.message
        );
        assert!(parsed[2].is_ok());
    }

    #[test]
    fn broken_array_keeps_what_came_before() {
        let text = format!("[{TASK}, {{\"host_system_id\": ");
        let parsed = parse_all(&text);
        assert_eq!(parsed.len(), 2);
        assert!(parsed[0].is_ok());
        let err = parsed[1].as_ref().expect_err("truncated");
        assert_eq!(err.position, RecordPosition::Index(1));
        assert!(err.message.contains("rest of the array"), "{}", err.message);
    }

    #[test]
    fn repeated_ids_go_to_separate_parts() {
        let parsed: Vec<PreparedTask> = parse_all(&format!("{TASK}\n{TASK}\n"))
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(split_repeated_ids(parsed).len(), 2);
    }
}
