//! The simulator's in-memory portal: tasks with their lifecycle and
//! revisions, subjects and users, consents, studies and enrollment profiles.
//!
//! Everything here is synchronous and runs under one lock held for a few
//! microseconds per request; indexes (by host id, unacknowledged) keep every
//! request away from full scans except plain paging.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use task_model::{PortalDate, PortalStatus, PortalTask};

use crate::error::{DUPLICATE_TASK_CONTEXT, DUPLICATE_TASK_PREFIX};
use crate::wire::{
    EnrollmentProfile, NewConsent, PortalConsent, PortalSubject, PortalUser, Study, SubjectUpdate,
    TaskQuery, TaskUpdate, UserUpdate,
};

use super::DuplicatePolicy;
use super::validate::SubmittedTask;

/// Why the portal refused something; mapped to an HTTP status by the
/// routes and to [`SimError`](super::SimError) by the Rust handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400 `{"error": …}`.
    Invalid(String),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 413.
    TooLarge(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(m)
            | Refusal::NotFound(m)
            | Refusal::Conflict(m)
            | Refusal::TooLarge(m) => f.write_str(m),
        }
    }
}

#[derive(Debug)]
pub(crate) struct SimTask {
    pub(crate) seq: u64,
    pub(crate) task: Arc<SubmittedTask>,
    pub(crate) subject_code: String,
    pub(crate) status: PortalStatus,
    pub(crate) date_created: PortalDate,
    pub(crate) date_started: Option<PortalDate>,
    pub(crate) date_completed: Option<PortalDate>,
    pub(crate) assessment: Option<Value>,
    pub(crate) revision: u64,
    pub(crate) acknowledged: bool,
}

/// A task as the simulator answers it: the [`PortalTask`] fields, plus
/// `display_name` and the assessment when asked `unabbreviated`.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub code: String,
    pub host_system_id: String,
    pub subject_code: String,
    pub status: PortalStatus,
    #[serde(serialize_with = "portal_date")]
    pub date_created: Option<PortalDate>,
    #[serde(serialize_with = "portal_date")]
    pub date_started: Option<PortalDate>,
    #[serde(serialize_with = "portal_date")]
    pub date_completed: Option<PortalDate>,
    pub revision: u64,
    pub acknowledged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assessment: Option<Value>,
}

/// `YYYY-MM-DD HH:MM:SS` without going through a format string on every
/// answer (the same text as `PortalDate`'s own `Display`).
fn portal_date<S: serde::Serializer>(date: &Option<PortalDate>, s: S) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    match date {
        None => s.serialize_none(),
        Some(PortalDate(t)) => s.collect_str(&format_args!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )),
    }
}

impl TaskView {
    /// The same data in the client's type (for the Rust control handle).
    pub fn to_portal_task(&self) -> PortalTask {
        PortalTask {
            code: self.code.clone(),
            host_system_id: self.host_system_id.clone(),
            subject_code: self.subject_code.clone(),
            status: self.status,
            date_created: self.date_created,
            date_started: self.date_started,
            date_completed: self.date_completed,
            assessment: self.assessment.clone(),
            revision: self.revision,
            acknowledged: self.acknowledged,
        }
    }
}

pub(crate) fn task_code(seq: u64) -> String {
    format!("T{seq:08}")
}

fn parse_code(code: &str, prefix: char) -> Option<u64> {
    code.strip_prefix(prefix)?.parse().ok()
}

impl SimTask {
    pub(crate) fn view(&self, unabbreviated: bool) -> TaskView {
        TaskView {
            code: task_code(self.seq),
            host_system_id: self.task.host_system_id.clone(),
            subject_code: self.subject_code.clone(),
            status: self.status,
            date_created: Some(self.date_created),
            date_started: self.date_started,
            date_completed: self.date_completed,
            revision: self.revision,
            acknowledged: self.acknowledged,
            display_name: unabbreviated.then(|| self.task.display_name.clone()),
            assessment: if unabbreviated {
                self.assessment.clone()
            } else {
                None
            },
        }
    }
}

#[derive(Debug)]
struct SimSubject {
    host_system_id: String,
    display_name: String,
    extra: Map<String, Value>,
    users: BTreeMap<u64, SimUser>,
}

#[derive(Debug)]
struct SimUser {
    host_system_id: String,
    display_name: String,
    email: Option<String>,
    extra: Map<String, Value>,
}

#[derive(Debug)]
struct SimConsent {
    consent: NewConsent,
    revision: u64,
    acknowledged: bool,
}

/// A patient-side change, from the control API or the patients mode.
#[derive(Clone, Debug, PartialEq)]
pub enum PatientAction {
    Start,
    Save(Value),
    Complete(Value),
    Cancel,
}

/// Counters kept beside the data.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) duplicate_submissions: u64,
    pub(crate) stale_acknowledgements: u64,
    pub(crate) packages_accepted: u64,
    pub(crate) packages_rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    next_seq: u64,
    tasks: BTreeMap<u64, SimTask>,
    by_host_id: HashMap<String, u64>,
    unacknowledged: BTreeSet<u64>,
    subjects: BTreeMap<u64, SimSubject>,
    subject_by_host_id: HashMap<String, u64>,
    next_user: u64,
    consents: BTreeMap<u64, SimConsent>,
    unacknowledged_consents: BTreeSet<u64>,
    studies: BTreeMap<String, Study>,
    profiles: Vec<EnrollmentProfile>,
    pub(crate) counters: Counters,
}

/// The simulator's clock: the portal reports local time without zone.
pub(crate) fn now() -> PortalDate {
    let t = chrono::Local::now().naive_local();
    // Portal dates have whole seconds.
    PortalDate(t.with_nanosecond_zero())
}

trait NanoZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl NanoZero for chrono::NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

impl Store {
    // ---- tasks ---------------------------------------------------------

    /// Stores a whole package or nothing.
    pub(crate) fn submit(
        &mut self,
        tasks: Vec<SubmittedTask>,
        policy: DuplicatePolicy,
    ) -> Result<Vec<TaskView>, Refusal> {
        // Check everything before changing anything.
        let mut in_package = HashMap::new();
        let mut existing = Vec::with_capacity(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            if let Some(first) = in_package.insert(task.host_system_id.as_str(), i) {
                self.counters.packages_rejected += 1;
                self.counters.duplicate_submissions += 1;
                return Err(Refusal::Invalid(format!(
                    "{} {}: also at #{first} of this package. {} #{i}.",
                    DUPLICATE_TASK_PREFIX,
                    quoted(&task.host_system_id),
                    DUPLICATE_TASK_CONTEXT
                )));
            }
            match self.by_host_id.get(&task.host_system_id) {
                None => existing.push(None),
                Some(&seq) => {
                    self.counters.duplicate_submissions += 1;
                    let identical = self.tasks.get(&seq).is_some_and(|t| t.task.same_as(task));
                    if policy == DuplicatePolicy::IgnoreIdentical && identical {
                        existing.push(Some(seq));
                    } else {
                        self.counters.packages_rejected += 1;
                        return Err(Refusal::Invalid(format!(
                            "{} {}. {} #{i}.",
                            DUPLICATE_TASK_PREFIX,
                            quoted(&task.host_system_id),
                            DUPLICATE_TASK_CONTEXT
                        )));
                    }
                }
            }
        }
        self.counters.packages_accepted += 1;
        let date = now();
        let mut answer = Vec::with_capacity(tasks.len());
        for (task, existing) in tasks.into_iter().zip(existing) {
            if let Some(seq) = existing {
                if let Some(t) = self.tasks.get(&seq) {
                    answer.push(t.view(false));
                }
                continue;
            }
            let subject_code = self.upsert_subject(&task);
            self.next_seq += 1;
            let seq = self.next_seq;
            self.by_host_id.insert(task.host_system_id.clone(), seq);
            self.unacknowledged.insert(seq);
            let stored = SimTask {
                seq,
                assessment: task
                    .assessment
                    .as_deref()
                    .and_then(|raw| serde_json::from_str(raw.get()).ok()),
                task: Arc::new(task),
                subject_code,
                status: PortalStatus::Waiting,
                date_created: date,
                date_started: None,
                date_completed: None,
                revision: 1,
                acknowledged: false,
            };
            answer.push(stored.view(false));
            self.tasks.insert(seq, stored);
        }
        Ok(answer)
    }

    fn upsert_subject(&mut self, task: &SubmittedTask) -> String {
        let s = &task.subject;
        let seq = match self.subject_by_host_id.get(&s.host_system_id) {
            Some(&seq) => seq,
            None => {
                let seq = self.subjects.len() as u64 + 1;
                self.subject_by_host_id
                    .insert(s.host_system_id.clone(), seq);
                self.subjects.insert(
                    seq,
                    SimSubject {
                        host_system_id: s.host_system_id.clone(),
                        display_name: s.display_name.clone(),
                        extra: Map::new(),
                        users: BTreeMap::new(),
                    },
                );
                seq
            }
        };
        if let Some(subject) = self.subjects.get_mut(&seq) {
            for user in &s.users {
                let known = subject
                    .users
                    .values_mut()
                    .find(|u| u.host_system_id == user.host_system_id);
                match known {
                    Some(u) => {
                        u.display_name = user.display_name.clone();
                        u.email = user.email.clone();
                    }
                    None => {
                        self.next_user += 1;
                        subject.users.insert(
                            self.next_user,
                            SimUser {
                                host_system_id: user.host_system_id.clone(),
                                display_name: user.display_name.clone(),
                                email: user.email.clone(),
                                extra: Map::new(),
                            },
                        );
                    }
                }
            }
        }
        format!("S{seq:06}")
    }

    pub(crate) fn list_tasks(
        &self,
        query: &TaskQuery,
        limit: usize,
        offset: usize,
    ) -> Vec<TaskView> {
        let wanted = |t: &&SimTask| !query.unacknowledged || !t.acknowledged;
        let views = |it: &mut dyn Iterator<Item = &SimTask>| {
            it.filter(wanted)
                .skip(offset)
                .take(limit)
                .map(|t| t.view(query.unabbreviated))
                .collect()
        };
        if !query.host_system_ids.is_empty() {
            let mut seqs: Vec<u64> = query
                .host_system_ids
                .iter()
                .filter_map(|id| self.by_host_id.get(id).copied())
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            views(&mut seqs.iter().filter_map(|s| self.tasks.get(s)))
        } else if query.unacknowledged {
            views(&mut self.unacknowledged.iter().filter_map(|s| self.tasks.get(s)))
        } else {
            views(&mut self.tasks.values())
        }
    }

    fn task_mut(&mut self, code: &str) -> Result<&mut SimTask, Refusal> {
        parse_code(code, 'T')
            .and_then(|seq| self.tasks.get_mut(&seq))
            .ok_or_else(|| Refusal::NotFound(format!("no task {code:?}")))
    }

    /// The instrument reference of a task, for generated assessments.
    pub(crate) fn task_instrument_ref(&self, code: &str) -> Option<Value> {
        parse_code(code, 'T')
            .and_then(|seq| self.tasks.get(&seq))
            .map(|t| t.task.instrument_ref())
    }

    /// How many tasks a list query matches in all (for a portal that
    /// reports totals as `count`).
    pub(crate) fn count_tasks(&self, query: &TaskQuery) -> usize {
        self.list_tasks(query, usize::MAX, 0).len()
    }

    pub(crate) fn get_task(&self, code: &str) -> Option<TaskView> {
        parse_code(code, 'T')
            .and_then(|seq| self.tasks.get(&seq))
            .map(|t| t.view(true))
    }

    /// Host-side `PUT /tasks/@{code}`: an acknowledgement (checked against
    /// the revision, if given) or a change of display name / parameters.
    pub(crate) fn update_task(
        &mut self,
        code: &str,
        update: TaskUpdate,
    ) -> Result<TaskView, Refusal> {
        let task = self.task_mut(code)?;
        let seq = task.seq;
        if update.acknowledged == Some(true) {
            if let Some(r) = update.revision
                && r != task.revision
            {
                let now_at = task.revision;
                self.counters.stale_acknowledgements += 1;
                return Err(Refusal::Conflict(format!(
                    "task {code} changed since revision {r} (now at revision {now_at})"
                )));
            }
            task.acknowledged = true;
            let view = task.view(true);
            self.unacknowledged.remove(&seq);
            return Ok(view);
        }
        if update.display_name.is_some() || update.parameters.is_some() {
            let mut changed = (*task.task).clone();
            if let Some(name) = update.display_name {
                if name.trim().is_empty() {
                    return Err(Refusal::Invalid("display_name: must not be empty".into()));
                }
                changed.display_name = name;
            }
            if let Some(params) = update.parameters {
                if !params.is_object() {
                    return Err(Refusal::Invalid("parameters: expected an object".into()));
                }
                let raw = serde_json::value::to_raw_value(&params)
                    .map_err(|e| Refusal::Invalid(format!("parameters: {e}")))?;
                changed.parameters = Some(raw);
            }
            task.task = Arc::new(changed);
        }
        Ok(task.view(true))
    }

    pub(crate) fn delete_task(&mut self, code: &str) -> Result<(), Refusal> {
        let seq = self.task_mut(code)?.seq;
        if let Some(t) = self.tasks.remove(&seq) {
            self.by_host_id.remove(&t.task.host_system_id);
        }
        self.unacknowledged.remove(&seq);
        Ok(())
    }

    /// A patient-side change: bumps the revision, clears `acknowledged`,
    /// sets the dates.
    pub(crate) fn patient_action(
        &mut self,
        code: &str,
        action: PatientAction,
    ) -> Result<TaskView, Refusal> {
        let task = self.task_mut(code)?;
        use PortalStatus::*;
        let open = matches!(task.status, Waiting | InProgress);
        if !open {
            return Err(Refusal::Conflict(format!(
                "task {code} is {} and cannot change",
                task.status
            )));
        }
        let date = now();
        match action {
            PatientAction::Start => {
                if task.status != Waiting {
                    return Err(Refusal::Conflict(format!("task {code} is already started")));
                }
                task.status = InProgress;
                task.date_started = Some(date);
            }
            PatientAction::Save(assessment) => {
                if task.status == Waiting {
                    task.status = InProgress;
                    task.date_started = Some(date);
                }
                task.assessment = Some(assessment);
            }
            PatientAction::Complete(assessment) => {
                if task.date_started.is_none() {
                    task.date_started = Some(date);
                }
                task.status = Complete;
                task.date_completed = Some(date);
                task.assessment = Some(assessment);
            }
            PatientAction::Cancel => {
                task.status = Cancelled;
            }
        }
        task.revision += 1;
        task.acknowledged = false;
        let seq = task.seq;
        let view = task.view(true);
        self.unacknowledged.insert(seq);
        Ok(view)
    }

    /// Up to `n` waiting tasks after `after` (by code order), for the
    /// patients mode; with the task's instrument reference.
    pub(crate) fn waiting_after(&self, after: u64, n: usize) -> Vec<(u64, Value)> {
        self.tasks
            .range(after + 1..)
            .filter(|(_, t)| t.status == PortalStatus::Waiting)
            .take(n)
            .map(|(seq, t)| (*seq, t.task.instrument_ref()))
            .collect()
    }

    pub(crate) fn tasks_by_status(&self) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> = PortalStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        for t in self.tasks.values() {
            *counts.entry(t.status.as_str().to_owned()).or_default() += 1;
        }
        counts
    }

    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    // ---- subjects and users --------------------------------------------

    fn subject_view(seq: u64, s: &SimSubject) -> PortalSubject {
        PortalSubject {
            code: format!("S{seq:06}"),
            host_system_id: s.host_system_id.clone(),
            display_name: Some(s.display_name.clone()),
            extra: s.extra.clone(),
        }
    }

    pub(crate) fn list_subjects(&self, limit: usize, offset: usize) -> Vec<PortalSubject> {
        self.subjects
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(seq, s)| Self::subject_view(*seq, s))
            .collect()
    }

    fn subject_mut(&mut self, code: &str) -> Result<(u64, &mut SimSubject), Refusal> {
        parse_code(code, 'S')
            .and_then(|seq| self.subjects.get_mut(&seq).map(|s| (seq, s)))
            .ok_or_else(|| Refusal::NotFound(format!("no subject {code:?}")))
    }

    pub(crate) fn update_subject(
        &mut self,
        code: &str,
        update: SubjectUpdate,
    ) -> Result<PortalSubject, Refusal> {
        let (seq, s) = self.subject_mut(code)?;
        if let Some(name) = update.display_name {
            s.display_name = name;
        }
        s.extra.extend(update.extra);
        Ok(Self::subject_view(seq, s))
    }

    fn user_view(seq: u64, u: &SimUser) -> PortalUser {
        PortalUser {
            code: format!("U{seq:06}"),
            host_system_id: u.host_system_id.clone(),
            display_name: Some(u.display_name.clone()),
            email: u.email.clone(),
            extra: u.extra.clone(),
        }
    }

    pub(crate) fn list_users(&mut self, subject: &str) -> Result<Vec<PortalUser>, Refusal> {
        let (_, s) = self.subject_mut(subject)?;
        Ok(s.users
            .iter()
            .map(|(seq, u)| Self::user_view(*seq, u))
            .collect())
    }

    pub(crate) fn update_user(
        &mut self,
        subject: &str,
        user: &str,
        update: UserUpdate,
    ) -> Result<PortalUser, Refusal> {
        let (_, s) = self.subject_mut(subject)?;
        let (seq, u) = parse_code(user, 'U')
            .and_then(|seq| s.users.get_mut(&seq).map(|u| (seq, u)))
            .ok_or_else(|| {
                Refusal::NotFound(format!("no user {user:?} for subject {subject:?}"))
            })?;
        if let Some(email) = update.email {
            if !email.contains('@') {
                return Err(Refusal::Invalid(format!(
                    "email: {email:?} is not an e-mail address"
                )));
            }
            u.email = Some(email);
        }
        if let Some(name) = update.display_name {
            u.display_name = name;
        }
        u.extra.extend(update.extra);
        Ok(Self::user_view(seq, u))
    }

    // ---- consents --------------------------------------------------------

    fn consent_view(seq: u64, c: &SimConsent) -> PortalConsent {
        let mut extra = c.consent.extra.clone();
        extra.insert(
            "subject_host_system_id".into(),
            Value::String(c.consent.subject_host_system_id.clone()),
        );
        PortalConsent {
            code: format!("C{seq:06}"),
            host_system_id: c.consent.host_system_id.clone(),
            acknowledged: c.acknowledged,
            revision: c.revision,
            extra,
        }
    }

    pub(crate) fn submit_consents(
        &mut self,
        consents: Vec<NewConsent>,
    ) -> Result<Vec<PortalConsent>, Refusal> {
        for (i, c) in consents.iter().enumerate() {
            if c.host_system_id.trim().is_empty() {
                return Err(Refusal::Invalid(format!(
                    "consents[{i}].host_system_id: required"
                )));
            }
            if !self
                .subject_by_host_id
                .contains_key(&c.subject_host_system_id)
            {
                return Err(Refusal::Invalid(format!(
                    "consents[{i}].subject_host_system_id: no subject {:?}",
                    c.subject_host_system_id
                )));
            }
        }
        let mut answer = Vec::with_capacity(consents.len());
        for consent in consents {
            let seq = self.consents.keys().next_back().copied().unwrap_or(0) + 1;
            let c = SimConsent {
                consent,
                revision: 1,
                acknowledged: false,
            };
            answer.push(Self::consent_view(seq, &c));
            self.consents.insert(seq, c);
            self.unacknowledged_consents.insert(seq);
        }
        Ok(answer)
    }

    pub(crate) fn list_consents(
        &self,
        unacknowledged: bool,
        limit: usize,
        offset: usize,
    ) -> Vec<PortalConsent> {
        let view = |(seq, c): (&u64, &SimConsent)| Self::consent_view(*seq, c);
        if unacknowledged {
            self.unacknowledged_consents
                .iter()
                .filter_map(|s| self.consents.get_key_value(s))
                .skip(offset)
                .take(limit)
                .map(view)
                .collect()
        } else {
            self.consents
                .iter()
                .skip(offset)
                .take(limit)
                .map(view)
                .collect()
        }
    }

    pub(crate) fn update_consent(
        &mut self,
        code: &str,
        update: Map<String, Value>,
    ) -> Result<PortalConsent, Refusal> {
        let seq = parse_code(code, 'C')
            .filter(|s| self.consents.contains_key(s))
            .ok_or_else(|| Refusal::NotFound(format!("no consent {code:?}")))?;
        let Some(c) = self.consents.get_mut(&seq) else {
            return Err(Refusal::NotFound(format!("no consent {code:?}")));
        };
        let mut update = update;
        if update.get("acknowledged") == Some(&Value::Bool(true)) {
            if let Some(r) = update.get("revision").and_then(Value::as_u64)
                && r != c.revision
            {
                let now_at = c.revision;
                self.counters.stale_acknowledgements += 1;
                return Err(Refusal::Conflict(format!(
                    "consent {code} changed since revision {r} (now at revision {now_at})"
                )));
            }
            c.acknowledged = true;
            self.unacknowledged_consents.remove(&seq);
            return Ok(Self::consent_view(seq, c));
        }
        update.remove("acknowledged");
        update.remove("revision");
        c.consent.extra.extend(update);
        Ok(Self::consent_view(seq, c))
    }

    pub(crate) fn delete_consent(&mut self, code: &str) -> Result<(), Refusal> {
        let seq = parse_code(code, 'C')
            .filter(|s| self.consents.contains_key(s))
            .ok_or_else(|| Refusal::NotFound(format!("no consent {code:?}")))?;
        self.consents.remove(&seq);
        self.unacknowledged_consents.remove(&seq);
        Ok(())
    }

    // ---- studies and enrollment profiles --------------------------------

    pub(crate) fn get_study(&self, id: &str) -> Option<Study> {
        self.studies.get(id).cloned()
    }

    pub(crate) fn create_study(&mut self, study: Study) -> Result<Study, Refusal> {
        if study.id.trim().is_empty() {
            return Err(Refusal::Invalid("id: required".into()));
        }
        if self.studies.contains_key(&study.id) {
            return Err(Refusal::Invalid(format!(
                "study {:?} already exists",
                study.id
            )));
        }
        self.studies.insert(study.id.clone(), study.clone());
        Ok(study)
    }

    pub(crate) fn publish_profile(
        &mut self,
        profile: EnrollmentProfile,
    ) -> Result<EnrollmentProfile, Refusal> {
        if !self.studies.contains_key(&profile.study_id) {
            return Err(Refusal::Invalid(format!(
                "study_id: no study {:?}",
                profile.study_id
            )));
        }
        self.profiles.push(profile.clone());
        Ok(profile)
    }
}

fn quoted(id: &str) -> String {
    format!("'{id}'")
}
