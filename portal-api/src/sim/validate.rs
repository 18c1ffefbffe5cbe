//! How the simulator checks a submitted task, the way a portal would before
//! storing it. [`TaskValidator`] is the seam: [`BasicValidator`] checks the
//! fields portal-sync depends on; full RIOS validation plugs in here later.
//!
//! The simulator keeps submitted RIOS documents as raw JSON
//! ([`SubmittedTask`]): parsing 2 KB documents into `serde_json::Value`
//! trees on every submission would make the simulator, not the system under
//! test, the bottleneck of load runs. A validator that wants whole trees can
//! call [`SubmittedTask::to_host_task`].

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use task_model::{HostTask, Subject};

/// A task as submitted on the wire (the fields of [`HostTask`]), with the
/// RIOS documents left as raw JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedTask {
    pub host_system_id: String,
    pub display_name: String,
    pub instrument: Box<RawValue>,
    pub form: Box<RawValue>,
    pub subject: Subject,
    #[serde(default)]
    pub parameters: Option<Box<RawValue>>,
    #[serde(default)]
    pub assessment: Option<Box<RawValue>>,
}

impl SubmittedTask {
    /// The same task with its documents as raw JSON.
    pub fn from_host_task(task: &HostTask) -> Result<SubmittedTask, serde_json::Error> {
        let raw = serde_json::value::to_raw_value;
        Ok(SubmittedTask {
            host_system_id: task.host_system_id.clone(),
            display_name: task.display_name.clone(),
            instrument: raw(task.instrument.as_ref())?,
            form: raw(task.form.as_ref())?,
            subject: task.subject.clone(),
            parameters: task.parameters.as_ref().map(raw).transpose()?,
            assessment: task.assessment.as_ref().map(raw).transpose()?,
        })
    }

    /// The same task with its documents parsed.
    pub fn to_host_task(&self) -> Result<HostTask, serde_json::Error> {
        let parse = |raw: &RawValue| serde_json::from_str::<Value>(raw.get());
        Ok(HostTask {
            host_system_id: self.host_system_id.clone(),
            display_name: self.display_name.clone(),
            instrument: parse(&self.instrument)?.into(),
            form: parse(&self.form)?.into(),
            subject: self.subject.clone(),
            parameters: self.parameters.as_deref().map(parse).transpose()?,
            assessment: self.assessment.as_deref().map(parse).transpose()?,
        })
    }

    /// `{"id": …, "version": …}` of the instrument (for generated
    /// assessments); `null` members if the instrument lacks them.
    pub fn instrument_ref(&self) -> Value {
        let head: InstrumentHead = serde_json::from_str(self.instrument.get()).unwrap_or_default();
        serde_json::json!({ "id": head.id, "version": head.version })
    }

    /// Same task, same documents byte for byte (what `ignore-identical`
    /// accepts: a client resubmitting what it sent before).
    pub fn same_as(&self, other: &SubmittedTask) -> bool {
        let raw = |r: &Option<Box<RawValue>>| r.as_deref().map(RawValue::get).map(str::to_owned);
        self.host_system_id == other.host_system_id
            && self.display_name == other.display_name
            && self.subject == other.subject
            && self.instrument.get() == other.instrument.get()
            && self.form.get() == other.form.get()
            && raw(&self.parameters) == raw(&other.parameters)
            && raw(&self.assessment) == raw(&other.assessment)
    }
}

impl Clone for SubmittedTask {
    fn clone(&self) -> SubmittedTask {
        SubmittedTask {
            host_system_id: self.host_system_id.clone(),
            display_name: self.display_name.clone(),
            instrument: self.instrument.clone(),
            form: self.form.clone(),
            subject: self.subject.clone(),
            parameters: self.parameters.clone(),
            assessment: self.assessment.clone(),
        }
    }
}

/// Checks one submitted task; the error text becomes the portal's 400
/// `error` (prefixed with the task's position and id by the caller).
pub trait TaskValidator: Send + Sync + 'static {
    fn validate(&self, task: &HostTask) -> Result<(), String>;

    /// What the simulator calls, with the documents still raw. The default
    /// parses them and calls [`TaskValidator::validate`]; [`BasicValidator`]
    /// checks the raw documents directly (the fast path of load runs).
    fn validate_submitted(&self, task: &SubmittedTask) -> Result<(), String> {
        let host = task.to_host_task().map_err(|e| format!("documents: {e}"))?;
        self.validate(&host)
    }
}

/// Required fields, a subject with users who all have an e-mail, and the
/// form's and the initial assessment's instrument reference equal to the
/// instrument's `id` and `version`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BasicValidator;

/// The only members of a RIOS instrument the basic checks read; the rest
/// of the document is skipped without being built.
#[derive(Debug, Default, Deserialize)]
struct InstrumentHead {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// A form or an assessment: its `instrument` reference.
#[derive(Debug, Deserialize)]
struct DocumentHead {
    #[serde(default)]
    instrument: Option<InstrumentHead>,
}

fn head<'a, T: Deserialize<'a>>(raw: &'a RawValue, what: &str) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("{what}: {e}"))
}

impl TaskValidator for BasicValidator {
    fn validate(&self, task: &HostTask) -> Result<(), String> {
        let raw = SubmittedTask::from_host_task(task).map_err(|e| format!("documents: {e}"))?;
        self.validate_submitted(&raw)
    }

    fn validate_submitted(&self, task: &SubmittedTask) -> Result<(), String> {
        require_text("host_system_id", &task.host_system_id)?;
        require_text("display_name", &task.display_name)?;
        let subject = &task.subject;
        require_text("subject.host_system_id", &subject.host_system_id)?;
        require_text("subject.display_name", &subject.display_name)?;
        if subject.users.is_empty() {
            return Err("subject.users: a subject needs at least one user".into());
        }
        for (i, user) in subject.users.iter().enumerate() {
            require_text(
                &format!("subject.users[{i}].host_system_id"),
                &user.host_system_id,
            )?;
            match user.email.as_deref().map(str::trim) {
                Some(email) if email.contains('@') && !email.starts_with('@') => {}
                Some(email) => {
                    return Err(format!(
                        "subject.users[{i}].email: {email:?} is not an e-mail address"
                    ));
                }
                None => return Err(format!("subject.users[{i}].email: required")),
            }
        }
        let instrument: InstrumentHead = head(&task.instrument, "instrument")?;
        let (id, version) = instrument_ref(&instrument, "instrument")?;
        let form: DocumentHead = head(&task.form, "form")?;
        let form_ref = form.instrument.ok_or("form.instrument: required")?;
        same_ref(&form_ref, "form.instrument", id, version)?;
        if let Some(raw) = &task.assessment {
            let assessment: DocumentHead = head(raw, "assessment")?;
            let a_ref = assessment
                .instrument
                .ok_or("assessment.instrument: required")?;
            same_ref(&a_ref, "assessment.instrument", id, version)?;
        }
        if let Some(params) = &task.parameters
            && !params.get().trim_start().starts_with('{')
        {
            return Err("parameters: expected an object".into());
        }
        Ok(())
    }
}

fn require_text(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{what}: required"))
    } else {
        Ok(())
    }
}

fn instrument_ref<'a>(doc: &'a InstrumentHead, what: &str) -> Result<(&'a str, &'a str), String> {
    let field = |v: &'a Option<String>, name: &str| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{what}.{name}: required (a string)"))
    };
    Ok((field(&doc.id, "id")?, field(&doc.version, "version")?))
}

fn same_ref(doc: &InstrumentHead, what: &str, id: &str, version: &str) -> Result<(), String> {
    let (got_id, got_version) = instrument_ref(doc, what)?;
    if got_id != id {
        return Err(format!(
            "{what}.id: {got_id:?} differs from instrument.id {id:?}"
        ));
    }
    if got_version != version {
        return Err(format!(
            "{what}.version: {got_version:?} differs from instrument.version {version:?}"
        ));
    }
    Ok(())
}
