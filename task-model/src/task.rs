//! Task vocabulary shared by every crate: what the host writes (a [`HostTask`]),
//! what the portal answers (a [`PortalTask`]), and the local record that joins
//! the two (a [`LocalTask`]).
//!
//! RIOS documents (instrument, form, assessment) are kept as JSON values here;
//! their structure is checked by validation, not by these types.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The host's identifier of a task (`host_system_id`), the key everywhere.
pub type TaskId = String;

/// A user who fills in forms (a patient, a parent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub host_system_id: String,
    pub display_name: String,
    /// A user without e-mail cannot be reached by the portal; a task addressed
    /// to one is not submitted (the seed's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The person a form is about, with the users who may fill it in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub host_system_id: String,
    pub display_name: String,
    #[serde(default)]
    pub users: Vec<User>,
}

/// A task as the host writes it: the submission contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTask {
    pub host_system_id: TaskId,
    pub display_name: String,
    /// RIOS instrument definition. Shared (`Arc`): many tasks use the same
    /// few instruments, and the store hands every task of a page the one
    /// parsed copy instead of a deep clone each.
    pub instrument: Arc<Value>,
    /// RIOS web form configuration for that instrument (shared likewise).
    pub form: Arc<Value>,
    pub subject: Subject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Optional initial RIOS assessment (pre-filled answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment: Option<Value>,
}

/// Local status of a task. Moves forward only:
/// `awaiting-submission → awaiting-completion → complete`, or to `cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalStatus {
    AwaitingSubmission,
    AwaitingCompletion,
    Complete,
    Cancelled,
}

impl LocalStatus {
    pub const ALL: [LocalStatus; 4] = [
        LocalStatus::AwaitingSubmission,
        LocalStatus::AwaitingCompletion,
        LocalStatus::Complete,
        LocalStatus::Cancelled,
    ];

    /// The wire and database spelling (`awaiting-submission`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            LocalStatus::AwaitingSubmission => "awaiting-submission",
            LocalStatus::AwaitingCompletion => "awaiting-completion",
            LocalStatus::Complete => "complete",
            LocalStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the spelling of [`LocalStatus::as_str`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<LocalStatus> {
        LocalStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `complete` and `cancelled` never change again.
    pub fn is_final(self) -> bool {
        matches!(self, LocalStatus::Complete | LocalStatus::Cancelled)
    }
}

impl std::fmt::Display for LocalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of a task on the portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortalStatus {
    Waiting,
    InProgress,
    Complete,
    Cancelled,
}

impl PortalStatus {
    pub const ALL: [PortalStatus; 4] = [
        PortalStatus::Waiting,
        PortalStatus::InProgress,
        PortalStatus::Complete,
        PortalStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PortalStatus::Waiting => "waiting",
            PortalStatus::InProgress => "in-progress",
            PortalStatus::Complete => "complete",
            PortalStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<PortalStatus> {
        PortalStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for PortalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A portal timestamp, `YYYY-MM-DD HH:MM:SS` on the wire (portal local time,
/// no zone, as the original client received it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortalDate(pub chrono::NaiveDateTime);

impl PortalDate {
    pub const FORMAT: &'static str = "%Y-%m-%d %H:%M:%S";

    pub fn parse(s: &str) -> Result<PortalDate, chrono::ParseError> {
        chrono::NaiveDateTime::parse_from_str(s, Self::FORMAT).map(PortalDate)
    }
}

impl std::fmt::Display for PortalDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format(Self::FORMAT))
    }
}

impl Serialize for PortalDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortalDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PortalDate::parse(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid portal date {s:?}: {e} (expected YYYY-MM-DD HH:MM:SS)"
            ))
        })
    }
}

/// A task as the portal reports it. Unknown fields from the portal are
/// ignored (the portal may add some); the ones below are what write-back uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortalTask {
    pub code: String,
    pub host_system_id: TaskId,
    pub subject_code: String,
    pub status: PortalStatus,
    #[serde(default)]
    pub date_created: Option<PortalDate>,
    #[serde(default)]
    pub date_started: Option<PortalDate>,
    #[serde(default)]
    pub date_completed: Option<PortalDate>,
    /// The assessment entered so far (complete when `status` is `complete`).
    #[serde(default)]
    pub assessment: Option<Value>,
    /// Bumped by every portal-side change. A portal that lacks revisions
    /// reports none; it is read as 0.
    #[serde(default)]
    pub revision: u64,
    /// Cleared by every portal-side change; set by our acknowledgement.
    #[serde(default)]
    pub acknowledged: bool,
}

/// What portal-sync has written back about a task: the portal's identity for
/// it and the latest portal state applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortalState {
    pub code: String,
    pub subject_code: String,
    pub status: PortalStatus,
    pub revision: u64,
    pub date_created: Option<PortalDate>,
    pub date_started: Option<PortalDate>,
    pub date_completed: Option<PortalDate>,
    pub assessment: Option<Value>,
}

/// The last error recorded on a task, beside its status (never as a status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub message: String,
    /// How many times an attempt on this task has failed.
    pub attempts: u32,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The local record of a task: the host's task, its local status, what the
/// portal reported last, and the last error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalTask {
    pub task: HostTask,
    pub status: LocalStatus,
    pub portal: Option<PortalState>,
    pub error: Option<TaskError>,
}

impl LocalTask {
    pub fn id(&self) -> &str {
        &self.task.host_system_id
    }
}
