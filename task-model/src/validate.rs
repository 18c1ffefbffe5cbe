//! Validation of a host task before submission: [`validate_task`] collects
//! every problem of one task, each naming the field by its path
//! (`subject.users[1].email`), into one [`ValidationErrors`] that names the task.
//!
//! What is checked here (the portal's submission contract, structure only):
//!
//! - required strings present and not blank: `host_system_id`, `display_name`,
//!   `subject.host_system_id`, `subject.display_name`, and each user's
//!   `host_system_id` and `display_name`;
//! - the subject has at least one user, every user has an e-mail that is not
//!   obviously malformed (the seed's rule: a task addressed to a user without
//!   e-mail is not submitted), and user ids are unique within the subject;
//! - sizes: ids up to [`MAX_ID_BYTES`], display names up to
//!   [`MAX_DISPLAY_NAME_CHARS`], e-mails up to [`MAX_EMAIL_BYTES`], each JSON
//!   document up to [`MAX_DOCUMENT_BYTES`] serialized, at most [`MAX_USERS`]
//!   users;
//! - `instrument`, `form`, `parameters` and `assessment` are JSON objects; the
//!   instrument has string `id` and `version`; the form's and the initial
//!   assessment's `instrument.id` / `instrument.version` equal them.
//!
//! What is not checked here: the full RIOS structure of the documents. That is
//! the [`DocumentValidator`] seam: [`validate_task_with`] runs the checks above
//! and then the given validator; [`validate_task`] uses [`StructureOnly`],
//! which adds nothing. A later RIOS validator implements the trait and reports
//! through [`Problem::Rios`].
//!
//! Messages carry ids, paths, sizes and instrument references, never names,
//! e-mail addresses or answers, so they are safe to store as a task's error
//! and to log.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::task::{HostTask, User};

/// Longest id (task, subject, user `host_system_id`), in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest display name (task, subject, user), in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 255;
/// Longest e-mail address, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Largest JSON document (instrument, form, parameters, assessment), in bytes
/// of compact JSON.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most users one subject may have.
pub const MAX_USERS: usize = 100;

/// One problem with one field of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the task: `display_name`, `subject.users[1].email`,
    /// `form.instrument.version`, …
    pub path: String,
    pub problem: Problem,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A required string is empty or only whitespace.
    Empty,
    /// A required key of a JSON document is absent.
    Missing,
    /// Longer than its limit.
    TooLong {
        len: usize,
        max: usize,
        unit: &'static str,
    },
    /// The subject has no users.
    NoUsers,
    /// A user has no e-mail.
    NoEmail,
    /// The e-mail is obviously not an address (the address itself is not
    /// repeated here).
    MalformedEmail { reason: &'static str },
    /// A user id occurs twice; `first` is the path of the first occurrence.
    DuplicateId { id: String, first: String },
    /// Expected a JSON object.
    NotAnObject { found: &'static str },
    /// Expected a JSON string.
    NotAString { found: &'static str },
    /// Must equal the field at `other`.
    Mismatch {
        found: String,
        expected: String,
        other: String,
    },
    /// Reported by a [`DocumentValidator`] (full RIOS validation).
    Rios(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("is required and must not be empty"),
            Problem::Missing => f.write_str("is required but missing"),
            Problem::TooLong { len, max, unit } => {
                write!(f, "is {len} {unit} long, at most {max} allowed")
            }
            Problem::NoUsers => f.write_str(
                "has no users; a task needs at least one user with an e-mail to be submitted",
            ),
            Problem::NoEmail => f.write_str(
                "is missing; a task addressed to a user without e-mail is not submitted",
            ),
            Problem::MalformedEmail { reason } => {
                write!(f, "is not a valid e-mail address ({reason})")
            }
            Problem::DuplicateId { id, first } => {
                write!(f, "duplicate user id {id:?}, also at {first}")
            }
            Problem::NotAnObject { found } => write!(f, "expected a JSON object, found {found}"),
            Problem::NotAString { found } => write!(f, "expected a JSON string, found {found}"),
            Problem::Mismatch {
                found,
                expected,
                other,
            } => write!(
                f,
                "is {found:?} but {other} is {expected:?}; they must be equal"
            ),
            Problem::Rios(msg) => f.write_str(msg),
        }
    }
}

/// Every problem found in one task.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The task's `host_system_id` (possibly empty: that is then one of the errors).
    pub task_id: String,
    /// Never empty.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// The problem at `path`, if any (handy for callers and tests).
    pub fn at(&self, path: &str) -> Option<&Problem> {
        self.errors
            .iter()
            .find(|e| e.path == path)
            .map(|e| &e.problem)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {:?} is not valid: ", self.task_id)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The seam for validating the RIOS documents of a task beyond structure.
/// Implementations push one [`FieldError`] per problem, with paths rooted at
/// the task (`instrument.record[2].type`), usually with [`Problem::Rios`].
pub trait DocumentValidator {
    fn validate_documents(&self, task: &HostTask, errors: &mut Vec<FieldError>);
}

/// The [`DocumentValidator`] that adds nothing beyond the structural checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct StructureOnly;

impl DocumentValidator for StructureOnly {
    fn validate_documents(&self, _task: &HostTask, _errors: &mut Vec<FieldError>) {}
}

/// Checks `task` against the submission contract (module doc).
pub fn validate_task(task: &HostTask) -> Result<(), ValidationErrors> {
    validate_task_with(task, &StructureOnly)
}

/// [`validate_task`], then `documents` on the RIOS documents.
pub fn validate_task_with(
    task: &HostTask,
    documents: &dyn DocumentValidator,
) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    c.id("host_system_id", &task.host_system_id);
    c.display_name("display_name", &task.display_name);

    let subject = &task.subject;
    c.id("subject.host_system_id", &subject.host_system_id);
    c.display_name("subject.display_name", &subject.display_name);
    check_users(&mut c, &subject.users);

    let instrument_ref = check_instrument(&mut c, &task.instrument);
    check_document(&mut c, "form", &task.form);
    check_instrument_reference(&mut c, "form", &task.form, instrument_ref.as_ref());
    if let Some(parameters) = &task.parameters {
        check_document(&mut c, "parameters", parameters);
    }
    if let Some(assessment) = &task.assessment {
        check_document(&mut c, "assessment", assessment);
        check_instrument_reference(&mut c, "assessment", assessment, instrument_ref.as_ref());
    }

    documents.validate_documents(task, &mut c.errors);
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors {
            task_id: task.host_system_id.clone(),
            errors: c.errors,
        })
    }
}

#[derive(Default)]
struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    fn push(&mut self, path: impl Into<String>, problem: Problem) {
        self.errors.push(FieldError {
            path: path.into(),
            problem,
        });
    }

    /// A required id: not blank, at most [`MAX_ID_BYTES`].
    fn id(&mut self, path: impl Into<String>, value: &str) {
        let path = path.into();
        if value.trim().is_empty() {
            self.push(path, Problem::Empty);
        } else if value.len() > MAX_ID_BYTES {
            self.push(
                path,
                Problem::TooLong {
                    len: value.len(),
                    max: MAX_ID_BYTES,
                    unit: "bytes",
                },
            );
        }
    }

    /// A required display name: not blank, at most [`MAX_DISPLAY_NAME_CHARS`].
    fn display_name(&mut self, path: impl Into<String>, value: &str) {
        let path = path.into();
        let chars = value.chars().count();
        if value.trim().is_empty() {
            self.push(path, Problem::Empty);
        } else if chars > MAX_DISPLAY_NAME_CHARS {
            self.push(
                path,
                Problem::TooLong {
                    len: chars,
                    max: MAX_DISPLAY_NAME_CHARS,
                    unit: "characters",
                },
            );
        }
    }
}

fn check_users(c: &mut Collector, users: &[User]) {
    if users.is_empty() {
        c.push("subject.users", Problem::NoUsers);
        return;
    }
    if users.len() > MAX_USERS {
        c.push(
            "subject.users",
            Problem::TooLong {
                len: users.len(),
                max: MAX_USERS,
                unit: "users",
            },
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        let base = format!("subject.users[{i}]");
        c.id(format!("{base}.host_system_id"), &user.host_system_id);
        c.display_name(format!("{base}.display_name"), &user.display_name);
        match user.email.as_deref() {
            None => c.push(format!("{base}.email"), Problem::NoEmail),
            Some(email) if email.trim().is_empty() => {
                c.push(format!("{base}.email"), Problem::NoEmail)
            }
            Some(email) => {
                if let Some(problem) = email_problem(email) {
                    c.push(format!("{base}.email"), problem);
                }
            }
        }
        if user.host_system_id.trim().is_empty() {
            continue;
        }
        match seen.get(user.host_system_id.as_str()) {
            Some(&first) => c.push(
                format!("{base}.host_system_id"),
                Problem::DuplicateId {
                    id: user.host_system_id.clone(),
                    first: format!("subject.users[{first}].host_system_id"),
                },
            ),
            None => {
                seen.insert(&user.host_system_id, i);
            }
        }
    }
}

/// Catches what is obviously not an address; deliverability is the portal's
/// business.
fn email_problem(email: &str) -> Option<Problem> {
    let malformed = |reason| Some(Problem::MalformedEmail { reason });
    if email.len() > MAX_EMAIL_BYTES {
        return Some(Problem::TooLong {
            len: email.len(),
            max: MAX_EMAIL_BYTES,
            unit: "bytes",
        });
    }
    if email
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return malformed("contains whitespace or control characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return malformed("no '@'");
    };
    if domain.contains('@') {
        return malformed("more than one '@'");
    }
    if local.is_empty() {
        return malformed("nothing before '@'");
    }
    if domain.is_empty() {
        return malformed("nothing after '@'");
    }
    if !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return malformed("the domain is not a dotted name");
    }
    None
}

/// JSON type name for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Counts bytes of serialized JSON without building the string.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn document_bytes(v: &Value) -> usize {
    let mut count = ByteCount(0);
    // Writing a Value into a counter cannot fail (no I/O, string keys only).
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// An object of at most [`MAX_DOCUMENT_BYTES`]; returns whether it is an object.
fn check_document(c: &mut Collector, path: &str, doc: &Value) -> bool {
    if !doc.is_object() {
        c.push(
            path,
            Problem::NotAnObject {
                found: json_type(doc),
            },
        );
        return false;
    }
    let len = document_bytes(doc);
    if len > MAX_DOCUMENT_BYTES {
        c.push(
            path,
            Problem::TooLong {
                len,
                max: MAX_DOCUMENT_BYTES,
                unit: "bytes",
            },
        );
    }
    true
}

/// The instrument's `id` and `version`, when both are strings.
struct InstrumentRef {
    id: String,
    version: String,
}

fn check_instrument(c: &mut Collector, instrument: &Value) -> Option<InstrumentRef> {
    if !check_document(c, "instrument", instrument) {
        return None;
    }
    let id = required_string(c, "instrument.id", instrument.get("id"));
    let version = required_string(c, "instrument.version", instrument.get("version"));
    Some(InstrumentRef {
        id: id?.to_owned(),
        version: version?.to_owned(),
    })
}

fn required_string<'v>(c: &mut Collector, path: &str, v: Option<&'v Value>) -> Option<&'v str> {
    match v {
        None => {
            c.push(path, Problem::Missing);
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            c.push(path, Problem::Empty);
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            c.push(
                path,
                Problem::NotAString {
                    found: json_type(other),
                },
            );
            None
        }
    }
}

/// `<doc>.instrument.id` / `.version` must equal the instrument's.
fn check_instrument_reference(
    c: &mut Collector,
    doc_path: &str,
    doc: &Value,
    instrument: Option<&InstrumentRef>,
) {
    if !doc.is_object() {
        return; // already reported by check_document
    }
    let ref_path = format!("{doc_path}.instrument");
    let reference = match doc.get("instrument") {
        None => {
            c.push(ref_path, Problem::Missing);
            return;
        }
        Some(r) if !r.is_object() => {
            c.push(
                ref_path,
                Problem::NotAnObject {
                    found: json_type(r),
                },
            );
            return;
        }
        Some(r) => r,
    };
    for (key, expected) in [
        ("id", instrument.map(|i| i.id.as_str())),
        ("version", instrument.map(|i| i.version.as_str())),
    ] {
        let path = format!("{ref_path}.{key}");
        let Some(found) = required_string(c, &path, reference.get(key)) else {
            continue;
        };
        if let Some(expected) = expected
            && found != expected
        {
            c.push(
                path,
                Problem::Mismatch {
                    found: found.to_owned(),
                    expected: expected.to_owned(),
                    other: format!("instrument.{key}"),
                },
            );
        }
    }
}
