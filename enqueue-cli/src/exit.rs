//! Exit codes and the error type every command returns.
//!
//! A [`CommandError`] names what failed and what to do about it in one line
//! (its `Display`), and maps to one exit code. Secrets never reach it: the
//! variants take URLs through [`redact_url`] and never the API key.

use std::process::ExitCode;

/// The process exit status of a command (see [`crate::cli::EXIT_CODES_HELP`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// 0: everything that needed doing was done.
    Done,
    /// 1: some work held back (backpressure) or some records skipped.
    Partial,
    /// 2: bad flags or settings.
    Usage,
    /// 3: a dependency unreachable or failing.
    Unreachable,
    /// 4: another enqueue run holds the lock.
    Locked,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Done => 0,
            ExitStatus::Partial => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Unreachable => 3,
            ExitStatus::Locked => 4,
        }
    }

    /// `Partial` when `partial` holds, else `Done`.
    pub fn done_or_partial(partial: bool) -> ExitStatus {
        if partial {
            ExitStatus::Partial
        } else {
            ExitStatus::Done
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s.code())
    }
}

/// Why a command stopped. Each message says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// One entry per problem found (the loader reports them all at once).
    #[error("settings: {} (fix the settings file or its PORTAL_SYNC__* overrides)", lines.join("; "))]
    Settings { lines: Vec<String> },

    #[error("usage: {message}")]
    Usage { message: String },

    #[error(
        "redis at {url} unreachable: {source} (start Redis or fix `redis.url`; nothing was left leased)"
    )]
    Redis {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{source} (start Redis or fix `redis.url`; what was not pushed is not left leased)")]
    Queue {
        action: &'static str,
        #[source]
        source: job_queue::QueueError,
    },

    #[error(
        "task store at {url} failed: {source} (check the database is up and `store.url`; the next run retries)"
    )]
    Store {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("portal at {url} failed: {message}")]
    Portal { url: String, message: String },

    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "another enqueue run holds the lock (run {holder}, expires in {expires_in_ms} ms); this run did nothing — it is safe to let cron try again"
    )]
    Locked { holder: String, expires_in_ms: i64 },

    #[error("{0} check(s) failed (each is named above; fix it and run `portal-sync check` again)")]
    ChecksFailed(usize),
}

impl CommandError {
    /// The message as lines for stderr, one problem per line.
    pub fn lines(&self) -> Vec<String> {
        match self {
            CommandError::Settings { lines } => {
                let mut out: Vec<String> = lines
                    .iter()
                    .map(|l| l.trim().trim_start_matches("- ").to_string())
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("settings: {l}"))
                    .collect();
                out.push(
                    "settings: fix the settings file (--config) or its PORTAL_SYNC__<BLOCK>__<KEY> overrides"
                        .to_string(),
                );
                out
            }
            other => vec![other.to_string()],
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CommandError::Settings { .. } | CommandError::Usage { .. } => ExitStatus::Usage,
            CommandError::Input { .. } => ExitStatus::Usage,
            CommandError::Redis { .. }
            | CommandError::Queue { .. }
            | CommandError::Store { .. }
            | CommandError::Portal { .. }
            | CommandError::ChecksFailed(_) => ExitStatus::Unreachable,
            CommandError::Locked { .. } => ExitStatus::Locked,
        }
    }

    pub fn redis(url: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        CommandError::Redis {
            url: redact_url(url),
            source: Box::new(source),
        }
    }

    pub fn store(url: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        CommandError::Store {
            url: redact_url(url),
            source: Box::new(source),
        }
    }
}

/// A URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    // scheme://user:password@host… → scheme://user:***@host…
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    format!(
        "{}://{}@{}",
        &url[..scheme_end],
        redacted_userinfo,
        &rest[at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://me:s3cret@db:5432/x?sslmode=require"),
            "postgres://me:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("sqlite://portal-sync.db"),
            "sqlite://portal-sync.db"
        );
    }

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let all = [
            ExitStatus::Done,
            ExitStatus::Partial,
            ExitStatus::Usage,
            ExitStatus::Unreachable,
            ExitStatus::Locked,
        ];
        for s in all {
            assert!(
                crate::cli::EXIT_CODES_HELP.contains(&format!("  {}  ", s.code())),
                "exit code {} missing from --help",
                s.code()
            );
        }
    }
}
