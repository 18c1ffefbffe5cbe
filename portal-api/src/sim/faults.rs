//! Fault injection: rules that add latency or break answers, per endpoint or
//! for all, set by flag (`--fault`) or at run time (`/_sim/faults`).
//!
//! What each kind does, and what the client should make of it:
//!
//! | kind | the simulator | the client sees |
//! |---|---|---|
//! | `latency` | waits `ms`, or uniformly `min_ms..=max_ms`, then answers | a slow answer |
//! | `error` | answers `status` (default 500) without doing the work; `retry_after` adds `Retry-After` | `Status`, retryable for 408/429/5xx |
//! | `drop` | does the work, then closes the connection without a complete answer | `Network` (interrupted) |
//! | `hang` | never answers (until `ms`, default an hour, or shutdown) | `Network` (timeout) |
//! | `malformed` | does the work, answers 200 with invalid JSON | `Decode` |
//! | `truncate` | does the work, answers with the first half of the body, framed as complete | `Decode` (truncated, retryable) |
//! | `accept_then_fail` | does the work (stores the package), answers 500 | `Status` 500 — the case that makes naive clients submit duplicates |

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Every endpoint the simulator serves, as fault rules and stats name them.
pub const ENDPOINTS: &[&str] = &[
    "GET /tasks",
    "POST /tasks",
    "GET /tasks/@{code}",
    "PUT /tasks/@{code}",
    "DELETE /tasks/@{code}",
    "GET /subjects",
    "PUT /subjects/@{code}",
    "GET /subjects/@{code}/users",
    "PUT /subjects/@{code}/users/@{user}",
    "GET /consents",
    "POST /consents",
    "PUT /consents/@{code}",
    "DELETE /consents/@{code}",
    "GET /studies/{id}",
    "POST /studies",
    "POST /enrollmentprofiles",
];

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    Latency {
        #[serde(default)]
        ms: Option<u64>,
        #[serde(default)]
        min_ms: Option<u64>,
        #[serde(default)]
        max_ms: Option<u64>,
    },
    Error {
        #[serde(default = "default_error_status")]
        status: u16,
        /// Seconds, sent as `Retry-After`.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    Drop,
    Hang {
        #[serde(default)]
        ms: Option<u64>,
    },
    Malformed,
    Truncate,
    AcceptThenFail,
}

fn default_error_status() -> u16 {
    500
}

fn default_rate() -> f64 {
    1.0
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Error { .. } => "error",
            FaultKind::Drop => "drop",
            FaultKind::Hang { .. } => "hang",
            FaultKind::Malformed => "malformed",
            FaultKind::Truncate => "truncate",
            FaultKind::AcceptThenFail => "accept_then_fail",
        }
    }
}

/// One rule: a kind, where it applies, how often, how many times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// One of [`ENDPOINTS`]; `None` for every endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Probability per request, 0..=1 (default 1).
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Fire at most this many times, then stay inert.
    #[serde(default)]
    pub times: Option<u64>,
}

impl FaultRule {
    pub fn new(kind: FaultKind) -> FaultRule {
        FaultRule {
            endpoint: None,
            kind,
            rate: 1.0,
            times: None,
        }
    }

    pub fn on(mut self, endpoint: &str) -> FaultRule {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    pub fn rate(mut self, rate: f64) -> FaultRule {
        self.rate = rate;
        self
    }

    pub fn times(mut self, times: u64) -> FaultRule {
        self.times = Some(times);
        self
    }

    /// Checks the rule; the error says which field is wrong.
    pub fn check(&self) -> Result<(), String> {
        if let Some(e) = &self.endpoint
            && !ENDPOINTS.contains(&e.as_str())
        {
            return Err(format!(
                "endpoint {e:?} is not one of: {}",
                ENDPOINTS.join(", ")
            ));
        }
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!("rate {} is not within 0..=1", self.rate));
        }
        match &self.kind {
            FaultKind::Latency { ms, min_ms, max_ms } => match (ms, min_ms, max_ms) {
                (Some(_), None, None) => {}
                (None, Some(lo), Some(hi)) if lo <= hi => {}
                _ => return Err("latency needs `ms`, or `min_ms` <= `max_ms`".into()),
            },
            FaultKind::Error { status, .. } if !(400..=599).contains(status) => {
                return Err(format!("error status {status} is not 4xx or 5xx"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Parses the `--fault` flag: `KIND[:ARG][@ENDPOINT][%RATE][xTIMES]`,
    /// e.g. `latency:5`, `latency:1-20`, `error:503@POST /tasks%0.1`,
    /// `error:429/2` (Retry-After 2 s), `drop@GET /tasks x3`… Or a JSON rule.
    pub fn parse_flag(text: &str) -> Result<FaultRule, String> {
        let text = text.trim();
        if text.starts_with('{') {
            let rule: FaultRule =
                serde_json::from_str(text).map_err(|e| format!("fault {text:?}: {e}"))?;
            rule.check()?;
            return Ok(rule);
        }
        let (rest, times) = match text.rsplit_once('x') {
            Some((r, t)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => (
                r.trim(),
                Some(
                    t.parse()
                        .map_err(|_| format!("fault {text:?}: bad count"))?,
                ),
            ),
            _ => (text, None),
        };
        let (rest, rate) = match rest.rsplit_once('%') {
            Some((r, p)) => (
                r.trim(),
                p.trim()
                    .parse()
                    .map_err(|_| format!("fault {text:?}: bad rate {p:?}"))?,
            ),
            None => (rest, 1.0),
        };
        let (head, endpoint) = match rest.split_once('@') {
            Some((h, e)) => (h.trim(), Some(e.trim().to_owned())),
            None => (rest, None),
        };
        let (kind, arg) = match head.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (head, None),
        };
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("fault {text:?}: bad number {s:?}"))
        };
        let kind = match (kind, arg) {
            ("latency", Some(a)) => match a.split_once('-') {
                Some((lo, hi)) => FaultKind::Latency {
                    ms: None,
                    min_ms: Some(num(lo)?),
                    max_ms: Some(num(hi)?),
                },
                None => FaultKind::Latency {
                    ms: Some(num(a)?),
                    min_ms: None,
                    max_ms: None,
                },
            },
            ("error", a) => {
                let (status, retry_after) = match a.map(|a| a.split_once('/')) {
                    Some(Some((s, r))) => (num(s)? as u16, Some(num(r)?)),
                    Some(None) => (num(a.unwrap_or("500"))? as u16, None),
                    None => (500, None),
                };
                FaultKind::Error {
                    status,
                    retry_after,
                }
            }
            ("drop", None) => FaultKind::Drop,
            ("hang", a) => FaultKind::Hang {
                ms: a.map(num).transpose()?,
            },
            ("malformed", None) => FaultKind::Malformed,
            ("truncate", None) => FaultKind::Truncate,
            ("accept_then_fail" | "accept-then-fail", None) => FaultKind::AcceptThenFail,
            _ => {
                return Err(format!(
                    "fault {text:?}: expected latency:MS|latency:MIN-MAX|error[:STATUS[/RETRY_AFTER]]|drop|hang[:MS]|malformed|truncate|accept_then_fail"
                ));
            }
        };
        let rule = FaultRule {
            endpoint,
            kind,
            rate,
            times,
        };
        rule.check()?;
        Ok(rule)
    }
}

/// What the request path must do, as decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Decision {
    pub(crate) delay: Duration,
    /// The one breaking fault that fired, if any (first matching rule wins).
    pub(crate) fault: Option<FaultKind>,
}

/// The rules in force and how often each has fired.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    rules: Vec<(FaultRule, u64)>,
}

impl FaultPlan {
    pub(crate) fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|(r, _)| r.clone()).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn replace(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules.into_iter().map(|r| (r, 0)).collect();
    }

    pub(crate) fn add(&mut self, rule: FaultRule) {
        self.rules.push((rule, 0));
    }

    pub(crate) fn decide(&mut self, endpoint: &str, rng: &mut impl Rng) -> Decision {
        let mut decision = Decision::default();
        for (rule, fired) in &mut self.rules {
            if rule.endpoint.as_deref().is_some_and(|e| e != endpoint) {
                continue;
            }
            if rule.times.is_some_and(|t| *fired >= t) {
                continue;
            }
            let is_latency = matches!(rule.kind, FaultKind::Latency { .. });
            if !is_latency && decision.fault.is_some() {
                continue;
            }
            if rule.rate < 1.0 && !rng.random_bool(rule.rate) {
                continue;
            }
            *fired += 1;
            match &rule.kind {
                FaultKind::Latency { ms, min_ms, max_ms } => {
                    let ms = match (ms, min_ms, max_ms) {
                        (Some(ms), _, _) => *ms,
                        (None, Some(lo), Some(hi)) => rng.random_range(*lo..=*hi),
                        _ => 0,
                    };
                    decision.delay += Duration::from_millis(ms);
                }
                other => decision.fault = Some(other.clone()),
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_rules() {
        let r = FaultRule::parse_flag("error:429/3@POST /tasks%0.5x2").expect("parses");
        assert_eq!(r.endpoint.as_deref(), Some("POST /tasks"));
        assert_eq!(
            r.kind,
            FaultKind::Error {
                status: 429,
                retry_after: Some(3)
            }
        );
        assert_eq!((r.rate, r.times), (0.5, Some(2)));
        let r = FaultRule::parse_flag("latency:1-20").expect("parses");
        assert_eq!(
            r.kind,
            FaultKind::Latency {
                ms: None,
                min_ms: Some(1),
                max_ms: Some(20)
            }
        );
        assert!(FaultRule::parse_flag("drop@GET /nowhere").is_err());
        assert!(FaultRule::parse_flag("explode").is_err());
        let j = FaultRule::parse_flag(r#"{"kind":"hang","endpoint":"GET /tasks"}"#).expect("json");
        assert_eq!(j.kind, FaultKind::Hang { ms: None });
    }
}
