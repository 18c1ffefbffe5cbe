//! Every validation rule of `task_model::validate`, each with a bad task.

use std::sync::Arc;

use serde_json::{Value, json};
use task_model::validate::{
    DocumentValidator, FieldError, MAX_DISPLAY_NAME_CHARS, MAX_DOCUMENT_BYTES, MAX_EMAIL_BYTES,
    MAX_ID_BYTES, MAX_USERS, Problem, validate_task_with,
};
use task_model::{HostTask, Subject, User, ValidationErrors, validate_task};

fn user(id: &str) -> User {
    User {
        host_system_id: id.into(),
        display_name: format!("User {id}"),
        email: Some(format!("{id}@example.org")),
    }
}

fn good_task() -> HostTask {
    HostTask {
        host_system_id: "task-1".into(),
        display_name: "Intake form".into(),
        instrument: Arc::new(json!({
            "id": "urn:example:intake",
            "version": "1.0",
            "title": "Intake",
            "record": [{"id": "q1", "type": "text"}],
        })),
        form: Arc::new(json!({
            "instrument": {"id": "urn:example:intake", "version": "1.0"},
            "defaultLocalization": "en",
            "pages": [],
        })),
        subject: Subject {
            host_system_id: "subject-1".into(),
            display_name: "Subject One".into(),
            users: vec![user("u1"), user("u2")],
        },
        parameters: Some(json!({"lang": "en"})),
        assessment: Some(json!({
            "instrument": {"id": "urn:example:intake", "version": "1.0"},
            "values": {"q1": {"value": "x"}},
        })),
    }
}

/// Validates `task`, expects it to fail, and checks that the task id is named.
fn errors(task: &HostTask) -> ValidationErrors {
    let err = validate_task(task).expect_err("task should be invalid");
    assert_eq!(err.task_id, task.host_system_id);
    assert!(!err.errors.is_empty());
    err
}

/// Expects exactly one error, at `path`, and returns its problem.
fn only_error(task: &HostTask, path: &str) -> Problem {
    let err = errors(task);
    assert_eq!(
        err.errors.len(),
        1,
        "expected one error at {path}, got: {err}"
    );
    let e = &err.errors[0];
    assert_eq!(e.path, path, "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("{:?}", task.host_system_id)) && shown.contains(path),
        "message must name task and field: {shown}"
    );
    e.problem.clone()
}

#[test]
fn good_task_is_valid() {
    assert_eq!(validate_task(&good_task()), Ok(()));
    let mut minimal = good_task();
    minimal.parameters = None;
    minimal.assessment = None;
    assert_eq!(validate_task(&minimal), Ok(()));
}

#[test]
fn empty_host_system_id_is_rejected() {
    let mut t = good_task();
    t.host_system_id = " ".into();
    assert_eq!(only_error(&t, "host_system_id"), Problem::Empty);
}

#[test]
fn empty_display_name_is_rejected() {
    let mut t = good_task();
    t.display_name = String::new();
    assert_eq!(only_error(&t, "display_name"), Problem::Empty);
}

#[test]
fn empty_subject_id_and_name_are_rejected() {
    let mut t = good_task();
    t.subject.host_system_id = String::new();
    t.subject.display_name = "\t".into();
    let err = errors(&t);
    assert_eq!(err.at("subject.host_system_id"), Some(&Problem::Empty));
    assert_eq!(err.at("subject.display_name"), Some(&Problem::Empty));
    assert_eq!(err.errors.len(), 2, "{err}");
}

#[test]
fn empty_user_id_and_name_are_rejected() {
    let mut t = good_task();
    t.subject.users[1].host_system_id = String::new();
    t.subject.users[1].display_name = String::new();
    let err = errors(&t);
    assert_eq!(
        err.at("subject.users[1].host_system_id"),
        Some(&Problem::Empty)
    );
    assert_eq!(
        err.at("subject.users[1].display_name"),
        Some(&Problem::Empty)
    );
    assert_eq!(err.errors.len(), 2, "{err}");
}

#[test]
fn subject_without_users_is_rejected() {
    let mut t = good_task();
    t.subject.users.clear();
    assert_eq!(only_error(&t, "subject.users"), Problem::NoUsers);
}

#[test]
fn user_without_email_is_rejected() {
    let mut t = good_task();
    t.subject.users[1].email = None;
    assert_eq!(only_error(&t, "subject.users[1].email"), Problem::NoEmail);
    t.subject.users[1].email = Some("  ".into());
    assert_eq!(only_error(&t, "subject.users[1].email"), Problem::NoEmail);
}

#[test]
fn malformed_emails_are_rejected_without_repeating_the_address() {
    for bad in [
        "no-at-sign.example.org",
        "two@@example.org",
        "@example.org",
        "someone@",
        "someone@localhost",
        "someone@.example.org",
        "someone@example.org.",
        "some one@example.org",
        "someone@example..org",
    ] {
        let mut t = good_task();
        t.subject.users[0].email = Some(bad.into());
        let problem = only_error(&t, "subject.users[0].email");
        assert!(
            matches!(problem, Problem::MalformedEmail { .. }),
            "{bad}: {problem:?}"
        );
        let shown = validate_task(&t).expect_err("invalid").to_string();
        assert!(!shown.contains(bad), "address leaked into message: {shown}");
    }
}

#[test]
fn duplicate_user_ids_are_rejected() {
    let mut t = good_task();
    t.subject.users.push(user("u1"));
    let problem = only_error(&t, "subject.users[2].host_system_id");
    assert_eq!(
        problem,
        Problem::DuplicateId {
            id: "u1".into(),
            first: "subject.users[0].host_system_id".into()
        }
    );
}

#[test]
fn oversize_ids_are_rejected() {
    let long = "x".repeat(MAX_ID_BYTES + 1);
    for path in [
        "host_system_id",
        "subject.host_system_id",
        "subject.users[0].host_system_id",
    ] {
        let mut t = good_task();
        match path {
            "host_system_id" => t.host_system_id = long.clone(),
            "subject.host_system_id" => t.subject.host_system_id = long.clone(),
            _ => t.subject.users[0].host_system_id = long.clone(),
        }
        assert_eq!(
            only_error(&t, path),
            Problem::TooLong {
                len: MAX_ID_BYTES + 1,
                max: MAX_ID_BYTES,
                unit: "bytes"
            }
        );
    }
    let mut t = good_task();
    t.host_system_id = "x".repeat(MAX_ID_BYTES);
    assert_eq!(validate_task(&t), Ok(()), "the limit itself is allowed");
}

#[test]
fn oversize_display_names_are_rejected() {
    // Counted in characters: a multi-byte name at the limit is fine.
    let mut t = good_task();
    t.display_name = "é".repeat(MAX_DISPLAY_NAME_CHARS);
    assert_eq!(validate_task(&t), Ok(()));
    t.display_name.push('é');
    assert!(matches!(
        only_error(&t, "display_name"),
        Problem::TooLong {
            max: MAX_DISPLAY_NAME_CHARS,
            ..
        }
    ));
    let mut t = good_task();
    t.subject.display_name = "n".repeat(MAX_DISPLAY_NAME_CHARS + 1);
    assert!(matches!(
        only_error(&t, "subject.display_name"),
        Problem::TooLong { .. }
    ));
    let mut t = good_task();
    t.subject.users[1].display_name = "n".repeat(MAX_DISPLAY_NAME_CHARS + 1);
    assert!(matches!(
        only_error(&t, "subject.users[1].display_name"),
        Problem::TooLong { .. }
    ));
}

#[test]
fn oversize_email_is_rejected() {
    let mut t = good_task();
    let local = "a".repeat(MAX_EMAIL_BYTES);
    t.subject.users[0].email = Some(format!("{local}@example.org"));
    assert!(matches!(
        only_error(&t, "subject.users[0].email"),
        Problem::TooLong {
            max: MAX_EMAIL_BYTES,
            ..
        }
    ));
}

#[test]
fn too_many_users_are_rejected() {
    let mut t = good_task();
    t.subject.users = (0..=MAX_USERS).map(|i| user(&format!("u{i}"))).collect();
    assert!(matches!(
        only_error(&t, "subject.users"),
        Problem::TooLong { max: MAX_USERS, .. }
    ));
}

#[test]
fn oversize_documents_are_rejected() {
    let big = Value::String("x".repeat(MAX_DOCUMENT_BYTES));
    for path in ["instrument", "form", "parameters", "assessment"] {
        let mut t = good_task();
        let doc = match path {
            "instrument" => Arc::make_mut(&mut t.instrument),
            "form" => Arc::make_mut(&mut t.form),
            "parameters" => t.parameters.as_mut().expect("parameters"),
            _ => t.assessment.as_mut().expect("assessment"),
        };
        doc["padding"] = big.clone();
        let problem = only_error(&t, path);
        assert!(
            matches!(problem, Problem::TooLong { max: MAX_DOCUMENT_BYTES, unit: "bytes", len } if len > MAX_DOCUMENT_BYTES),
            "{path}: {problem:?}"
        );
    }
}

#[test]
fn documents_must_be_json_objects() {
    for (path, value) in [
        ("instrument", json!([1, 2])),
        ("form", json!("form")),
        ("parameters", json!(3)),
        ("assessment", Value::Null),
    ] {
        let mut t = good_task();
        match path {
            "instrument" => t.instrument = value.into(),
            "form" => t.form = value.into(),
            "parameters" => t.parameters = Some(value),
            _ => t.assessment = Some(value),
        }
        let err = errors(&t);
        assert!(
            matches!(err.at(path), Some(Problem::NotAnObject { .. })),
            "{path}: {err}"
        );
        if path != "instrument" {
            assert_eq!(err.errors.len(), 1, "{err}");
        }
    }
}

#[test]
fn instrument_needs_string_id_and_version() {
    let mut t = good_task();
    Arc::make_mut(&mut t.instrument)
        .as_object_mut()
        .expect("object")
        .remove("id");
    Arc::make_mut(&mut t.instrument)["version"] = json!(1);
    let err = errors(&t);
    assert_eq!(err.at("instrument.id"), Some(&Problem::Missing));
    assert_eq!(
        err.at("instrument.version"),
        Some(&Problem::NotAString { found: "a number" })
    );
}

#[test]
fn form_must_reference_the_instrument() {
    let mut t = good_task();
    Arc::make_mut(&mut t.form)["instrument"]["id"] = json!("urn:example:other");
    assert_eq!(
        only_error(&t, "form.instrument.id"),
        Problem::Mismatch {
            found: "urn:example:other".into(),
            expected: "urn:example:intake".into(),
            other: "instrument.id".into()
        }
    );
    let mut t = good_task();
    Arc::make_mut(&mut t.form)["instrument"]["version"] = json!("2.0");
    assert!(matches!(
        only_error(&t, "form.instrument.version"),
        Problem::Mismatch { .. }
    ));
    let mut t = good_task();
    Arc::make_mut(&mut t.form)
        .as_object_mut()
        .expect("object")
        .remove("instrument");
    assert_eq!(only_error(&t, "form.instrument"), Problem::Missing);
}

#[test]
fn initial_assessment_must_reference_the_instrument() {
    let mut t = good_task();
    t.assessment.as_mut().expect("assessment")["instrument"]["version"] = json!("0.9");
    let shown = validate_task(&t).expect_err("invalid").to_string();
    assert!(
        shown.contains("assessment.instrument.version") && shown.contains("0.9"),
        "{shown}"
    );
    let mut t = good_task();
    t.assessment.as_mut().expect("assessment")["instrument"] = json!("urn:example:intake");
    assert_eq!(
        only_error(&t, "assessment.instrument"),
        Problem::NotAnObject { found: "a string" }
    );
}

#[test]
fn all_problems_of_a_task_are_reported_together() {
    let mut t = good_task();
    t.display_name.clear();
    t.subject.users[0].email = None;
    t.form = json!([]).into();
    let err = errors(&t);
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["display_name", "subject.users[0].email", "form"]);
}

#[test]
fn messages_carry_no_names_or_emails() {
    let mut t = good_task();
    t.subject.users.push(user("u1"));
    t.subject.users[0].email = Some("broken.example.org".into());
    t.display_name = "x".repeat(MAX_DISPLAY_NAME_CHARS + 1);
    let shown = validate_task(&t).expect_err("invalid").to_string();
    for secret in ["User u1", "broken.example.org", "Subject One", "xxxxx"] {
        assert!(!shown.contains(secret), "{secret:?} leaked: {shown}");
    }
}

/// A stand-in for the later RIOS validator: shows that the seam's findings
/// join the structural ones.
struct RequireRecord;

impl DocumentValidator for RequireRecord {
    fn validate_documents(&self, task: &HostTask, errors: &mut Vec<FieldError>) {
        if task.instrument.get("record").is_none() {
            errors.push(FieldError {
                path: "instrument.record".into(),
                problem: Problem::Rios("an instrument needs a record".into()),
            });
        }
    }
}

#[test]
fn document_validator_seam_adds_its_findings() {
    let t = good_task();
    assert_eq!(validate_task_with(&t, &RequireRecord), Ok(()));
    let mut t = good_task();
    Arc::make_mut(&mut t.instrument)
        .as_object_mut()
        .expect("object")
        .remove("record");
    assert_eq!(validate_task(&t), Ok(()), "structure alone does not care");
    let err = validate_task_with(&t, &RequireRecord).expect_err("invalid");
    assert_eq!(
        err.at("instrument.record"),
        Some(&Problem::Rios("an instrument needs a record".into()))
    );
}

// ---- real documents ----------------------------------------------------------

/// The RIOS conformance corpus beside the project (`../shared/rios-corpus`),
/// or where `RIOS_CORPUS` points; `None` (the test says so and passes as
/// skipped) where it is absent, as in a checkout without `shared/`.
fn rios_corpus() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("RIOS_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/rios-corpus")
        });
    if !dir.join("instruments/good").is_dir() {
        eprintln!(
            "skipped: RIOS corpus not found at {}; set RIOS_CORPUS to its directory",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn good_documents(dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut docs: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "json").then(|| (path.display().to_string(), read_json(&path)))
        })
        .collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs
}

#[test]
fn rios_corpus_pairs_pass_the_structural_checks() {
    let Some(corpus) = rios_corpus() else {
        return;
    };
    let instruments = good_documents(&corpus.join("instruments/good"));
    let forms = good_documents(&corpus.join("forms/good"));
    let assessments = good_documents(&corpus.join("assessments/good"));
    let find = |docs: &[(String, Value)], id: &Value| {
        docs.iter()
            .find(|(_, d)| d["instrument"]["id"] == *id)
            .map(|(_, d)| d.clone())
    };
    let mut paired = 0;
    for (name, instrument) in &instruments {
        let Some(form) = find(&forms, &instrument["id"]) else {
            continue;
        };
        let mut t = good_task();
        t.instrument = instrument.clone().into();
        t.form = form.into();
        t.assessment = find(&assessments, &instrument["id"]);
        assert_eq!(validate_task(&t), Ok(()), "{name}");
        paired += 1;

        // The same documents with another instrument's form do not pass.
        let other = forms
            .iter()
            .find(|(_, f)| f["instrument"]["id"] != instrument["id"])
            .map(|(_, f)| f.clone())
            .expect("another form");
        t.form = other.into();
        let err = validate_task(&t).expect_err("mismatched form");
        assert!(
            matches!(err.at("form.instrument.id"), Some(Problem::Mismatch { .. })),
            "{name}: {err}"
        );
    }
    assert!(
        paired >= 2,
        "expected all_types and matrix pairs, got {paired}"
    );
}
