//! Wire types of the Patient Portal API: the JSON envelopes around
//! [`HostTask`] and [`PortalTask`], and the portal's subjects, users,
//! consents, studies and enrollment profiles.
//!
//! Only tasks are specified in detail (ARCHITECTURE.md, "Patient Portal
//! API"). For the other objects we type the fields portal-sync relies on and
//! keep every other field in `extra`, so nothing the portal sends is lost on
//! a read-modify-write.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use task_model::{HostTask, PortalTask, TaskId};

/// `POST /tasks` body: a package, accepted or rejected whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskPackage {
    pub tasks: Vec<HostTask>,
}

/// A page of tasks: `GET /tasks` and the `201` of `POST /tasks`. `count` is
/// the size of this page (a portal may report a total instead; the client
/// never trusts it for paging).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<PortalTask>,
    #[serde(default)]
    pub count: Option<u64>,
}

/// Filters of `GET /tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// `unabbreviated=1`: whole objects (with the assessment so far).
    pub unabbreviated: bool,
    /// `unacknowledged=1`: only tasks changed since our last acknowledgement.
    pub unacknowledged: bool,
    /// `host_system_id=…` (repeated): only these tasks.
    pub host_system_ids: Vec<TaskId>,
}

impl TaskQuery {
    /// Changes the host has not acknowledged, whole.
    pub fn unacknowledged() -> TaskQuery {
        TaskQuery {
            unabbreviated: true,
            unacknowledged: true,
            host_system_ids: Vec::new(),
        }
    }

    /// The given tasks, whole.
    pub fn by_host_ids<I, S>(ids: I) -> TaskQuery
    where
        I: IntoIterator<Item = S>,
        S: Into<TaskId>,
    {
        TaskQuery {
            unabbreviated: true,
            unacknowledged: false,
            host_system_ids: ids.into_iter().map(Into::into).collect(),
        }
    }

    pub(crate) fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if self.unabbreviated {
            pairs.push(("unabbreviated", "1".to_owned()));
        }
        if self.unacknowledged {
            pairs.push(("unacknowledged", "1".to_owned()));
        }
        for id in &self.host_system_ids {
            pairs.push(("host_system_id", id.clone()));
        }
        pairs
    }
}

/// `PUT /tasks/@{code}` body. An acknowledgement is
/// `{"acknowledged": true, "revision": r}`; other fields change the task
/// host-side. Absent fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<bool>,
    /// With `acknowledged`: the revision we read; the portal answers 409 if
    /// the task has changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl TaskUpdate {
    pub fn acknowledge(revision: u64) -> TaskUpdate {
        TaskUpdate {
            acknowledged: Some(true),
            revision: Some(revision),
            ..TaskUpdate::default()
        }
    }
}

/// A subject as the portal knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortalSubject {
    pub code: String,
    pub host_system_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `PUT /subjects/@{code}` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SubjectUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /subjects` page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectPage {
    pub subjects: Vec<PortalSubject>,
    #[serde(default)]
    pub count: Option<u64>,
}

/// A user of a subject as the portal knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortalUser {
    pub code: String,
    pub host_system_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `PUT /subjects/@{s}/users/@{u}` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /subjects/@{code}/users` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<PortalUser>,
    #[serde(default)]
    pub count: Option<u64>,
}

/// A consent the host submits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewConsent {
    pub host_system_id: String,
    pub subject_host_system_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A consent as the portal knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortalConsent {
    pub code: String,
    pub host_system_id: String,
    #[serde(default)]
    pub acknowledged: bool,
    #[serde(default)]
    pub revision: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /consents` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsentPackage {
    pub consents: Vec<NewConsent>,
}

/// `GET /consents` page and `POST /consents` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsentPage {
    pub consents: Vec<PortalConsent>,
    #[serde(default)]
    pub count: Option<u64>,
}

/// A study (`GET /studies/{id}`, `POST /studies`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An enrollment profile to publish (`POST /enrollmentprofiles`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentProfile {
    pub study_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of a `400` (and of the simulator's other error answers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
