//! The one error type of the portal client, [`PortalError`], and the one place
//! that decides whether a failed call is worth retrying.
//!
//! Every variant that comes from a request names the HTTP method and the
//! endpoint (the URL without its query string). The API key travels only in a
//! request header and is never part of an error.

use std::fmt;
use std::time::{Duration, SystemTime};

use task_model::TaskId;

/// Longest body excerpt kept in [`PortalError::Status`] (bytes of UTF-8).
pub const BODY_EXCERPT_LIMIT: usize = 512;

/// The start of the real portal's answer to a task whose `host_system_id` it
/// already holds.
pub const DUPLICATE_TASK_PREFIX: &str = "Specified host_system_id already exists";
/// Also part of the real portal's duplicate answer.
pub const DUPLICATE_TASK_CONTEXT: &str = "While creating Task for submission";

/// Which request failed: method and endpoint (scheme, host, path; no query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: reqwest::Method,
    pub endpoint: String,
}

impl Call {
    pub(crate) fn new(method: reqwest::Method, url: &url::Url) -> Call {
        let mut endpoint = url.clone();
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        // A key or password pasted into the URL must not reach an error.
        let _ = endpoint.set_username("");
        let _ = endpoint.set_password(None);
        Call {
            method,
            endpoint: endpoint.to_string(),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.endpoint)
    }
}

/// What kind of transport failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkErrorKind {
    /// The connection (TCP or TLS) could not be established.
    Connect,
    /// No complete answer within the configured timeout.
    Timeout,
    /// The connection broke while sending the request or reading the answer
    /// (reset, closed early, body shorter than announced).
    Interrupted,
}

impl fmt::Display for NetworkErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkErrorKind::Connect => "could not connect",
            NetworkErrorKind::Timeout => "timed out",
            NetworkErrorKind::Interrupted => "connection interrupted",
        })
    }
}

/// Everything that can go wrong talking to the Patient Portal.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The client could not be built from its configuration.
    #[error("portal client configuration: {what}: {message}")]
    Config { what: String, message: String },

    /// Transport failure: connect, timeout, reset. Always retryable.
    #[error("{call}: {kind}: {message}")]
    Network {
        call: Call,
        kind: NetworkErrorKind,
        message: String,
    },

    /// 401 or 403: the portal does not accept our API key (or certificate).
    /// Retrying cannot help.
    #[error("{call}: the portal refused our credentials (HTTP {status})")]
    Unauthorized { call: Call, status: u16 },

    /// 400 with the portal's `error` text.
    #[error("{call}: the portal rejected the request: {message}")]
    Rejected { call: Call, message: String },

    /// The real portal's duplicate answer: a task with this `host_system_id`
    /// is already on the portal. `host_system_id` is the id named in the
    /// portal's text; if the text names none of the submitted ids, it is the
    /// package's only id for a one-task package, and `None` for a larger
    /// package (split it to find the duplicate).
    #[error(
        "{call}: task {} is already on the portal: {message}",
        host_system_id.as_deref().unwrap_or("(one of the package)")
    )]
    TaskAlreadySubmitted {
        call: Call,
        host_system_id: Option<TaskId>,
        message: String,
    },

    /// 404 where something had to exist (an update or a listing).
    #[error("{call}: not found on the portal (HTTP 404)")]
    NotFound { call: Call },

    /// 409: the object changed since the revision we named (a stale
    /// acknowledgement); read it again.
    #[error("{call}: conflict (HTTP 409): {message}")]
    Conflict { call: Call, message: String },

    /// Any other unexpected status, with a bounded excerpt of the body.
    #[error("{call}: HTTP {status}: {body_excerpt}")]
    Status {
        call: Call,
        status: u16,
        body_excerpt: String,
        /// From `Retry-After` (seconds or HTTP date), when the portal sent it.
        retry_after: Option<Duration>,
    },

    /// The answer was not what the contract says: where in the body and why.
    /// `truncated` means the JSON ended early (a body cut in transit, though
    /// its framing claimed it complete); only that case is retryable.
    #[error("{call}: undecodable response at `{path}`: {message}")]
    Decode {
        call: Call,
        path: String,
        message: String,
        truncated: bool,
    },

    /// The portal broke the paging contract (e.g. it ignores `offset`).
    #[error("{call}: portal broke the contract: {message}")]
    Protocol { call: Call, message: String },
}

impl PortalError {
    /// Whether trying the same call again later may succeed: network
    /// failures, 408, 429, 5xx and a truncated body. Authentication
    /// failures, rejections, conflicts and otherwise undecodable answers are
    /// not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            PortalError::Network { .. } => true,
            PortalError::Decode { truncated, .. } => *truncated,
            PortalError::Status { status, .. } => {
                *status == 408 || *status == 429 || (500..=599).contains(status)
            }
            PortalError::Config { .. }
            | PortalError::Unauthorized { .. }
            | PortalError::Rejected { .. }
            | PortalError::TaskAlreadySubmitted { .. }
            | PortalError::NotFound { .. }
            | PortalError::Conflict { .. }
            | PortalError::Protocol { .. } => false,
        }
    }

    /// How long the portal asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PortalError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status the portal answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            PortalError::Unauthorized { status, .. } | PortalError::Status { status, .. } => {
                Some(*status)
            }
            PortalError::Rejected { .. } | PortalError::TaskAlreadySubmitted { .. } => Some(400),
            PortalError::NotFound { .. } => Some(404),
            PortalError::Conflict { .. } => Some(409),
            _ => None,
        }
    }

    /// The failed call, except for configuration errors.
    pub fn call(&self) -> Option<&Call> {
        match self {
            PortalError::Config { .. } => None,
            PortalError::Network { call, .. }
            | PortalError::Unauthorized { call, .. }
            | PortalError::Rejected { call, .. }
            | PortalError::TaskAlreadySubmitted { call, .. }
            | PortalError::NotFound { call }
            | PortalError::Conflict { call, .. }
            | PortalError::Status { call, .. }
            | PortalError::Decode { call, .. }
            | PortalError::Protocol { call, .. } => Some(call),
        }
    }

    pub(crate) fn config(what: impl Into<String>, message: impl fmt::Display) -> PortalError {
        PortalError::Config {
            what: what.into(),
            message: message.to_string(),
        }
    }

    /// Classifies a transport error from reqwest. The message is taken
    /// without the URL (which may carry a query string).
    pub(crate) fn from_transport(call: Call, err: reqwest::Error) -> PortalError {
        let kind = if err.is_timeout() {
            NetworkErrorKind::Timeout
        } else if err.is_connect() {
            NetworkErrorKind::Connect
        } else {
            NetworkErrorKind::Interrupted
        };
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        PortalError::Network {
            call,
            kind,
            message,
        }
    }
}

/// Parses a `Retry-After` value: delay in seconds, or an HTTP date (a date in
/// the past means "now").
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether a 400 error text is the real portal's duplicate-task answer.
pub fn is_duplicate_task_message(message: &str) -> bool {
    message.contains(DUPLICATE_TASK_PREFIX) && message.contains(DUPLICATE_TASK_CONTEXT)
}

/// Finds which submitted id the portal's duplicate text names. The portal's
/// exact wording around the id is not known, so we look for each submitted
/// id as a whole word (not part of a longer id) and take the longest match;
/// failing that, a one-task package names its only task.
pub fn duplicate_task_id(message: &str, submitted: &[&str]) -> Option<TaskId> {
    let is_id_char = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/');
    let mut best: Option<&str> = None;
    for id in submitted.iter().copied().filter(|id| !id.is_empty()) {
        let found = message.match_indices(id).any(|(at, _)| {
            let before = message[..at].chars().next_back();
            let rest = &message[at + id.len()..];
            // A '.' ends a sentence unless more of an id follows it.
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            let after = rest.chars().next();
            let continues = after.is_some_and(is_id_char);
            !before.is_some_and(is_id_char) && !continues
        });
        if found && best.is_none_or(|b| b.len() < id.len()) {
            best = Some(id);
        }
    }
    match (best, submitted) {
        (Some(id), _) => Some(id.to_owned()),
        (None, [only]) => Some((*only).to_owned()),
        (None, _) => None,
    }
}

/// At most [`BODY_EXCERPT_LIMIT`] bytes of a body, cut on a char boundary.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= BODY_EXCERPT_LIMIT {
        return text.to_owned();
    }
    let mut end = BODY_EXCERPT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let got = parse_retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(got > Duration::from_secs(100) && got <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn duplicate_id_is_taken_from_the_text_as_a_whole_word() {
        let msg = "Specified host_system_id already exists: task-10. While creating Task for submission #3";
        assert_eq!(
            duplicate_task_id(msg, &["task-1", "task-10", "task-100"]).as_deref(),
            Some("task-10")
        );
        let bare = "Specified host_system_id already exists. While creating Task for submission";
        assert_eq!(duplicate_task_id(bare, &["a"]).as_deref(), Some("a"));
        assert_eq!(duplicate_task_id(bare, &["a", "b"]), None);
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "é".repeat(2000);
        let ex = body_excerpt(long.as_bytes());
        assert!(ex.len() < BODY_EXCERPT_LIMIT + 40, "{}", ex.len());
        assert!(ex.ends_with("(4000 bytes in all)"));
    }
}
