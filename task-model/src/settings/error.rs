//! Errors of the settings loader: each names the key (`portal_client.timeout`),
//! where its value came from (file, line and column, or environment
//! variable), the value unless it is secret, and what was expected.

use std::fmt;
use std::path::PathBuf;

use super::source::Origin;

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML (or not UTF-8). `line` and `column` are 1-based, 0 when unknown.
    #[error("settings file {}: {}", path.display(), show_syntax(*line, *column, message))]
    Syntax {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    /// One or more keys are wrong; all of them are listed.
    #[error("{}", show_problems(problems))]
    Invalid { problems: Vec<KeyProblem> },
}

impl SettingsError {
    /// The key problems (empty for read and syntax errors).
    pub fn problems(&self) -> &[KeyProblem] {
        match self {
            SettingsError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

fn show_syntax(line: u64, column: u64, message: &str) -> String {
    if line == 0 {
        message.to_owned()
    } else {
        format!("YAML syntax error at line {line}, column {column}: {message}")
    }
}

fn show_problems(problems: &[KeyProblem]) -> String {
    let mut out = format!(
        "invalid settings ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

/// One wrong key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProblem {
    /// `block.key` (or just `block`).
    pub key: String,
    pub origin: Origin,
    pub kind: ProblemKind,
}

/// What is wrong with a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Not a key of the settings; `expected` lists the valid ones there.
    Unknown { expected: Vec<&'static str> },
    /// Required and not set.
    Missing { expected: String },
    /// Set to something unusable. `value` is `None` for secrets.
    Invalid {
        value: Option<String>,
        expected: String,
    },
    /// Contradicts another key (e.g. both `api_key` and `api_key_file`).
    Conflict { message: String },
    /// A file the key names could not be read.
    Unreadable { path: PathBuf, reason: String },
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "the document"
        } else {
            &self.key
        };
        match &self.kind {
            ProblemKind::Unknown { expected } if expected.is_empty() => write!(
                f,
                "{key} ({}): unknown setting; variables are named PORTAL_SYNC__<BLOCK>__<KEY>",
                self.origin
            ),
            ProblemKind::Unknown { expected } => write!(
                f,
                "{key} ({}): unknown key; expected one of: {}",
                self.origin,
                expected.join(", ")
            ),
            ProblemKind::Missing { expected } => {
                write!(f, "{key}: required but missing; expected {expected}")
            }
            ProblemKind::Invalid {
                value: Some(value),
                expected,
            } => write!(
                f,
                "{key} ({}): {value} is invalid; expected {expected}",
                self.origin
            ),
            ProblemKind::Invalid {
                value: None,
                expected,
            } => write!(
                f,
                "{key} ({}): value (not shown) is invalid; expected {expected}",
                self.origin
            ),
            ProblemKind::Conflict { message } => write!(f, "{key} ({}): {message}", self.origin),
            ProblemKind::Unreadable { path, reason } => write!(
                f,
                "{key} ({}): cannot read {}: {reason}",
                self.origin,
                path.display()
            ),
        }
    }
}
