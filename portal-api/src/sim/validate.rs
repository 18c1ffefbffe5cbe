//! How the simulator checks a submitted task, the way a portal would before
//! storing it. [`TaskValidator`] is the seam: [`BasicValidator`] checks the
//! fields portal-sync depends on; full RIOS validation plugs in here later.

use serde_json::Value;
use task_model::HostTask;

/// Checks one submitted task; the error text becomes the portal's 400
/// `error` (prefixed with the task's id by the caller).
pub trait TaskValidator: Send + Sync + 'static {
    fn validate(&self, task: &HostTask) -> Result<(), String>;
}

/// Required fields, a subject with users who all have an e-mail, and the
/// form's and the initial assessment's instrument reference equal to the
/// instrument's `id` and `version`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BasicValidator;

impl TaskValidator for BasicValidator {
    fn validate(&self, task: &HostTask) -> Result<(), String> {
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
        let (id, version) = instrument_ref(&task.instrument, "instrument")?;
        let form_instrument = task
            .form
            .get("instrument")
            .ok_or("form.instrument: required")?;
        same_ref(form_instrument, "form.instrument", id, version)?;
        if let Some(assessment) = &task.assessment {
            let a_instrument = assessment
                .get("instrument")
                .ok_or("assessment.instrument: required")?;
            same_ref(a_instrument, "assessment.instrument", id, version)?;
        }
        if let Some(params) = &task.parameters
            && !params.is_object()
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

fn instrument_ref<'a>(doc: &'a Value, what: &str) -> Result<(&'a str, &'a str), String> {
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{what}.{name}: required (a string)"))
    };
    Ok((field("id")?, field("version")?))
}

fn same_ref(doc: &Value, what: &str, id: &str, version: &str) -> Result<(), String> {
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
