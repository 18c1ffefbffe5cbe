//! The demo's sample host tasks: realistic, valid RIOS instruments and web
//! forms (three of them, written for this demo under `demo/rios/`), subjects
//! with one or two users, and a few deliberately invalid tasks so that the
//! error path shows.
//!
//! Generation is deterministic for a given seed, so two runs with the same
//! `--tasks` and `--seed` seed the same store.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use task_model::{HostTask, Subject, User};

/// One instrument with its web form, as the host would hold them.
struct Instrument {
    /// Short name used in task ids and display names.
    slug: &'static str,
    display_name: &'static str,
    instrument: &'static str,
    form: &'static str,
    /// Filled in by a parent about a child (two users likely), not by the
    /// subject (one user).
    parent_report: bool,
}

const INSTRUMENTS: [Instrument; 3] = [
    Instrument {
        slug: "mood",
        display_name: "Two-Week Mood Check",
        instrument: include_str!("rios/mood-check.instrument.json"),
        form: include_str!("rios/mood-check.form.json"),
        parent_report: false,
    },
    Instrument {
        slug: "sleep",
        display_name: "Morning Sleep Diary",
        instrument: include_str!("rios/sleep-diary.instrument.json"),
        form: include_str!("rios/sleep-diary.form.json"),
        parent_report: false,
    },
    Instrument {
        slug: "child",
        display_name: "Child Daily Routines (parent report)",
        instrument: include_str!("rios/child-routines.instrument.json"),
        form: include_str!("rios/child-routines.form.json"),
        parent_report: true,
    },
];

const FIRST_NAMES: [&str; 16] = [
    "Avery", "Jordan", "Priya", "Mateo", "Hannah", "Kenji", "Amara", "Lucas", "Sofia", "Omar",
    "Freya", "Daniel", "Leila", "Tomás", "Grace", "Nikhil",
];
const LAST_NAMES: [&str; 16] = [
    "Chen",
    "Okafor",
    "Novak",
    "García",
    "Lindqvist",
    "Haddad",
    "Murphy",
    "Tanaka",
    "Rossi",
    "Schmidt",
    "Adeyemi",
    "Kowalski",
    "Dubois",
    "Singh",
    "Walker",
    "Moreau",
];
const VISITS: [&str; 4] = ["baseline", "week-4", "week-12", "follow-up"];

/// Why a sample task is invalid on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// Its only user has no e-mail address (the seed's rule: not submitted).
    UserWithoutEmail,
    /// Its subject has no users at all.
    SubjectWithoutUsers,
    /// Its form was written for another version of the instrument.
    FormForOtherVersion,
}

impl Defect {
    const ALL: [Defect; 3] = [
        Defect::UserWithoutEmail,
        Defect::SubjectWithoutUsers,
        Defect::FormForOtherVersion,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Defect::UserWithoutEmail => "user without e-mail",
            Defect::SubjectWithoutUsers => "subject without users",
            Defect::FormForOtherVersion => "form for another instrument version",
        }
    }
}

/// One sample task, before its documents are attached.
#[derive(Clone, Debug)]
struct Planned {
    id: String,
    instrument: usize,
    subject: Subject,
    visit: &'static str,
    defect: Option<Defect>,
}

/// The generated tasks, and which of them are invalid on purpose. Tasks are
/// kept without their documents and built one at a time
/// ([`Samples::task`], [`SampleReader`]), so memory stays small however many
/// there are.
#[derive(Debug)]
pub struct Samples {
    planned: Vec<Planned>,
    /// (instrument, form) per entry of [`INSTRUMENTS`].
    documents: Vec<(Value, Value)>,
    /// (task id, defect) of every deliberately invalid task.
    pub invalid: Vec<(String, Defect)>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.planned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    pub fn valid(&self) -> usize {
        self.planned.len() - self.invalid.len()
    }

    /// Every task id, in generation order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.planned.iter().map(|p| p.id.as_str())
    }

    /// The `i`-th task, whole.
    pub fn task(&self, i: usize) -> Option<HostTask> {
        let p = self.planned.get(i)?;
        let spec = &INSTRUMENTS[p.instrument];
        let (instrument, form) = &self.documents[p.instrument];
        let mut task = HostTask {
            host_system_id: p.id.clone(),
            display_name: spec.display_name.to_owned(),
            instrument: instrument.clone().into(),
            form: form.clone().into(),
            subject: p.subject.clone(),
            parameters: Some(json!({ "visit": p.visit })),
            assessment: None,
        };
        if let Some(defect) = p.defect {
            apply_defect(&mut task, defect);
        }
        Some(task)
    }
}

/// The tasks as NDJSON (the format `portal-sync import` reads), one line
/// built at a time.
#[derive(Debug)]
pub struct SampleReader {
    samples: std::sync::Arc<Samples>,
    next: usize,
    line: Vec<u8>,
    at: usize,
}

impl SampleReader {
    pub fn new(samples: std::sync::Arc<Samples>) -> SampleReader {
        SampleReader {
            samples,
            next: 0,
            line: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for SampleReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.line.len() {
            let Some(task) = self.samples.task(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.line.clear();
            self.at = 0;
            serde_json::to_writer(&mut self.line, &task).map_err(std::io::Error::other)?;
            self.line.push(b'\n');
        }
        let n = out.len().min(self.line.len() - self.at);
        out[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// How many of `n` tasks are made invalid: a few, never most.
fn invalid_count(n: usize) -> usize {
    match n {
        0 | 1 => 0,
        2..=9 => 1,
        _ => (n / 200).clamp(3, 12),
    }
}

/// Generates `n` tasks from `seed`. Subjects get one to three tasks each;
/// the invalid ones are spread through the set and have subjects of their own.
pub fn generate(n: usize, seed: u64) -> Samples {
    let mut rng = StdRng::seed_from_u64(seed);
    let documents: Vec<(Value, Value)> = INSTRUMENTS
        .iter()
        .map(|i| (parse_document(i.instrument), parse_document(i.form)))
        .collect();
    let bad = invalid_count(n);
    // Spread the invalid ones evenly, starting a little way in.
    let bad_every = n.checked_div(bad);
    let mut planned = Vec::with_capacity(n);
    let mut invalid = Vec::with_capacity(bad);
    let mut subject_seq = 0usize;
    let mut user_seq = 0usize;
    let mut subject: Option<(Subject, usize)> = None;
    for i in 0..n {
        let which = rng.random_range(0..INSTRUMENTS.len());
        let spec = &INSTRUMENTS[which];
        let id = format!("demo-{:06}-{}", i + 1, spec.slug);
        let is_bad = bad_every.is_some_and(|every| i % every == every / 2 && invalid.len() < bad);

        let subject_value = if is_bad {
            subject_seq += 1;
            user_seq += 1;
            new_subject(&mut rng, subject_seq, user_seq, 1)
        } else {
            // Reuse the current subject for one to three tasks.
            let reuse = matches!(&subject, Some((_, left)) if *left > 0);
            if !reuse {
                subject_seq += 1;
                let users = if spec.parent_report || rng.random_bool(0.3) {
                    2
                } else {
                    1
                };
                let s = new_subject(&mut rng, subject_seq, user_seq + 1, users);
                user_seq += s.users.len();
                subject = Some((s, rng.random_range(0..3)));
            } else if let Some((_, left)) = &mut subject {
                *left -= 1;
            }
            match &subject {
                Some((s, _)) => s.clone(),
                None => new_subject(&mut rng, subject_seq, user_seq, 1),
            }
        };

        let defect = is_bad.then(|| Defect::ALL[invalid.len() % Defect::ALL.len()]);
        if let Some(defect) = defect {
            invalid.push((id.clone(), defect));
        }
        planned.push(Planned {
            id,
            instrument: which,
            subject: subject_value,
            visit: VISITS[i % VISITS.len()],
            defect,
        });
    }
    Samples {
        planned,
        documents,
        invalid,
    }
}

fn parse_document(text: &'static str) -> Value {
    // The documents are this crate's own files; the unit test below parses
    // each, so a broken one fails the build's tests, not a user's run.
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn new_subject(rng: &mut StdRng, subject_seq: usize, first_user: usize, users: usize) -> Subject {
    let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
    let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
    let users = (0..users)
        .map(|k| {
            let user_first = if users == 1 {
                first
            } else {
                FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())]
            };
            let n = first_user + k;
            User {
                host_system_id: format!("demo-user-{n:06}"),
                display_name: format!("{user_first} {last}"),
                email: Some(format!(
                    "{}.{}.{n}@example.org",
                    ascii_lower(user_first),
                    ascii_lower(last)
                )),
            }
        })
        .collect();
    Subject {
        host_system_id: format!("demo-subject-{subject_seq:06}"),
        display_name: format!("{first} {last}"),
        users,
    }
}

/// Lower-case ASCII letters only, for the local part of an e-mail address.
fn ascii_lower(name: &str) -> String {
    name.chars()
        .filter_map(|c| match c {
            'á' => Some('a'),
            'é' => Some('e'),
            'í' => Some('i'),
            'ó' => Some('o'),
            'ú' => Some('u'),
            c if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn apply_defect(task: &mut HostTask, defect: Defect) {
    match defect {
        Defect::UserWithoutEmail => {
            for user in &mut task.subject.users {
                user.email = None;
            }
        }
        Defect::SubjectWithoutUsers => task.subject.users.clear(),
        Defect::FormForOtherVersion => {
            if let Some(reference) = std::sync::Arc::make_mut(&mut task.form).get_mut("instrument")
            {
                reference["version"] = json!("0.9");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_model::validate_task;

    #[test]
    fn every_document_is_json_with_matching_instrument_reference() {
        for spec in &INSTRUMENTS {
            let instrument: Value = serde_json::from_str(spec.instrument).expect("instrument JSON");
            let form: Value = serde_json::from_str(spec.form).expect("form JSON");
            assert_eq!(form["instrument"]["id"], instrument["id"], "{}", spec.slug);
            assert_eq!(
                form["instrument"]["version"], instrument["version"],
                "{}",
                spec.slug
            );
        }
    }

    #[test]
    fn valid_samples_pass_validation_and_invalid_ones_fail_for_their_defect() {
        let samples = generate(1000, 7);
        assert_eq!(samples.len(), 1000);
        assert_eq!(samples.invalid.len(), 5);
        let bad: std::collections::HashMap<_, _> = samples.invalid.iter().cloned().collect();
        for task in (0..samples.len()).map(|i| samples.task(i).expect("task")) {
            let result = validate_task(&task);
            match bad.get(&task.host_system_id) {
                None => assert!(result.is_ok(), "{}: {result:?}", task.host_system_id),
                Some(defect) => {
                    let errors = result.expect_err("invalid on purpose").to_string();
                    let path = match defect {
                        Defect::UserWithoutEmail => "email",
                        Defect::SubjectWithoutUsers => "subject.users",
                        Defect::FormForOtherVersion => "form.instrument",
                    };
                    assert!(errors.contains(path), "{defect:?}: {errors}");
                }
            }
        }
        let kinds: std::collections::BTreeSet<_> =
            samples.invalid.iter().map(|(_, d)| d.describe()).collect();
        assert_eq!(kinds.len(), 3, "every defect appears");
    }

    #[test]
    fn subjects_have_one_or_two_users_and_ids_are_unique() {
        let samples = generate(300, 1);
        let ids: std::collections::HashSet<_> = samples.ids().collect();
        assert_eq!(ids.len(), 300);
        let counts: std::collections::BTreeSet<_> = (0..samples.len())
            .map(|i| samples.task(i).expect("task").subject.users.len())
            .collect();
        assert!(counts.contains(&1) && counts.contains(&2), "{counts:?}");
        assert!(counts.iter().all(|n| *n <= 2));
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let ndjson = |seed| {
            let mut out = String::new();
            std::io::Read::read_to_string(
                &mut SampleReader::new(std::sync::Arc::new(generate(50, seed))),
                &mut out,
            )
            .expect("reads");
            out
        };
        let a = ndjson(3);
        assert_eq!(a, ndjson(3));
        assert_ne!(a, ndjson(4));
        assert_eq!(a.lines().count(), 50);
        for line in a.lines() {
            let task: HostTask = serde_json::from_str(line).expect("each line is a host task");
            assert!(task.host_system_id.starts_with("demo-"));
        }
    }
}
