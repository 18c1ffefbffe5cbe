//! Typed readers over the layered entries: each turns one `block.key` into a
//! value or records a [`KeyProblem`] naming the key, the origin, the value
//! (unless secret) and what was expected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::ClientCertificate;
use super::error::{KeyProblem, ProblemKind};
use super::secret_url::SecretUrl;
use super::source::{Entry, Layers, Node, Origin, Raw, env_var_name, show_str};

pub(crate) struct Reader<'a> {
    pub(crate) layers: &'a Layers,
    pub(crate) problems: &'a mut Vec<KeyProblem>,
}

/// How a value may be shown in an error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    Plain,
    /// A URL: shown with its password masked, or not at all if unparsable
    /// and it looks like it holds credentials.
    Url,
    Secret,
}

impl Reader<'_> {
    pub(crate) fn entry(&self, block: &str, key: &str) -> Option<&Entry> {
        self.layers.entries.get(&(block.to_owned(), key.to_owned()))
    }

    pub(crate) fn is_set(&self, block: &str, key: &str) -> bool {
        self.entry(block, key).is_some()
    }

    pub(crate) fn origin(&self, block: &str, key: &str) -> Origin {
        self.entry(block, key)
            .map(|e| e.origin.clone())
            .or_else(|| self.layers.blocks.get(block).cloned())
            .unwrap_or(Origin::Unset)
    }

    pub(crate) fn push(&mut self, block: &str, key: &str, origin: Origin, kind: ProblemKind) {
        self.problems.push(KeyProblem {
            key: format!("{block}.{key}"),
            origin,
            kind,
        });
    }

    fn invalid(&mut self, block: &str, key: &str, entry: &Entry, shown: Shown, expected: String) {
        let value = match shown {
            Shown::Secret => None,
            Shown::Plain => Some(show_raw(&entry.raw)),
            Shown::Url => match &entry.raw {
                Raw::Yaml(Node::Str(s)) | Raw::Env(s) => match SecretUrl::parse(s) {
                    Ok(u) => Some(show_str(u.redacted())),
                    Err(_) if s.contains('@') => None,
                    Err(_) => Some(show_str(s)),
                },
                Raw::Yaml(other) => Some(other.show()),
            },
        };
        let origin = entry.origin.clone();
        self.push(block, key, origin, ProblemKind::Invalid { value, expected });
    }

    pub(crate) fn missing(&mut self, block: &str, key: &str, expected: impl Into<String>) {
        let origin = self.origin(block, key);
        let var = env_var_name(block, key);
        self.push(
            block,
            key,
            origin,
            ProblemKind::Missing {
                expected: format!("{} (in the file, or {var})", expected.into()),
            },
        );
    }

    /// A string, `None` when unset (or invalid, which is recorded).
    pub(crate) fn string(&mut self, block: &str, key: &str, shown: Shown) -> Option<String> {
        let entry = self.entry(block, key)?.clone();
        match &entry.raw {
            Raw::Env(s) | Raw::Yaml(Node::Str(s)) => Some(s.clone()),
            Raw::Yaml(other) => {
                let expected = format!("a string, found {}", other.kind());
                self.invalid(block, key, &entry, shown, expected);
                None
            }
        }
    }

    /// A non-blank string.
    pub(crate) fn non_empty(
        &mut self,
        block: &str,
        key: &str,
        shown: Shown,
        what: &str,
    ) -> Option<String> {
        let s = self.string(block, key, shown)?;
        if s.trim().is_empty() {
            let entry = self.entry(block, key)?.clone();
            self.invalid(block, key, &entry, shown, format!("{what}, not blank"));
            return None;
        }
        Some(s)
    }

    pub(crate) fn secret(&mut self, block: &str, key: &str, what: &str) -> Option<SecretString> {
        self.non_empty(block, key, Shown::Secret, what)
            .map(SecretString::from)
    }

    /// A URL whose scheme is one of `schemes`.
    pub(crate) fn url(
        &mut self,
        block: &str,
        key: &str,
        schemes: &[&str],
        what: &str,
    ) -> Option<SecretUrl> {
        let text = self.non_empty(block, key, Shown::Url, what)?;
        let entry = self.entry(block, key)?.clone();
        match SecretUrl::parse(text.trim()) {
            Ok(u) if schemes.contains(&u.scheme()) => Some(u),
            Ok(u) => {
                let expected = format!(
                    "{what} (scheme {}), not {}://",
                    schemes.join(", "),
                    u.scheme()
                );
                self.invalid(block, key, &entry, Shown::Url, expected);
                None
            }
            Err(e) => {
                self.invalid(block, key, &entry, Shown::Url, format!("{what} ({e})"));
                None
            }
        }
    }

    /// An integer in `min..=max`, or `default` when unset.
    pub(crate) fn integer(
        &mut self,
        block: &str,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
        unit: &str,
    ) -> u64 {
        let Some(entry) = self.entry(block, key).cloned() else {
            return default;
        };
        let expected = || format!("a whole number{unit} from {min} to {max}");
        let n: Option<i128> = match &entry.raw {
            Raw::Yaml(Node::Int(i)) => Some(*i),
            Raw::Env(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= i128::from(min) && n <= i128::from(max) => {
                u64::try_from(n).unwrap_or(default)
            }
            Some(_) => {
                self.invalid(block, key, &entry, Shown::Plain, expected());
                default
            }
            None => {
                let found = match &entry.raw {
                    Raw::Yaml(node) => format!(", found {}", node.kind()),
                    Raw::Env(_) => String::new(),
                };
                self.invalid(
                    block,
                    key,
                    &entry,
                    Shown::Plain,
                    format!("{}{found}", expected()),
                );
                default
            }
        }
    }

    /// A number (integer or decimal) in `min..=max`, `None` when unset.
    pub(crate) fn number(
        &mut self,
        block: &str,
        key: &str,
        min_exclusive: f64,
        max: f64,
        unit: &str,
    ) -> Option<f64> {
        let entry = self.entry(block, key)?.clone();
        let n: Option<f64> = match &entry.raw {
            Raw::Yaml(Node::Int(i)) => Some(*i as f64),
            Raw::Yaml(Node::Float(f)) => Some(*f),
            Raw::Env(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > min_exclusive && n <= max => Some(n),
            _ => {
                let found = match &entry.raw {
                    Raw::Yaml(node) if !matches!(node, Node::Int(_) | Node::Float(_)) => {
                        format!(", found {}", node.kind())
                    }
                    _ => String::new(),
                };
                let expected =
                    format!("a number{unit} greater than {min_exclusive} and at most {max}{found}");
                self.invalid(block, key, &entry, Shown::Plain, expected);
                None
            }
        }
    }

    /// A duration in seconds (integer or decimal) in `min..=max`, or `default`.
    pub(crate) fn seconds(
        &mut self,
        block: &str,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(entry) = self.entry(block, key).cloned() else {
            return default;
        };
        let secs: Option<f64> = match &entry.raw {
            Raw::Yaml(Node::Int(i)) => Some(*i as f64),
            Raw::Yaml(Node::Float(f)) => Some(*f),
            Raw::Env(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let range_ok = |s: f64| s.is_finite() && s >= min.as_secs_f64() && s <= max.as_secs_f64();
        match secs {
            Some(s) if range_ok(s) => Duration::from_secs_f64(s),
            _ => {
                let found = match &entry.raw {
                    Raw::Yaml(node) if !matches!(node, Node::Int(_) | Node::Float(_)) => {
                        format!(", found {}", node.kind())
                    }
                    _ => String::new(),
                };
                let expected = format!(
                    "a number of seconds from {} to {}{found}",
                    min.as_secs_f64(),
                    max.as_secs_f64()
                );
                self.invalid(block, key, &entry, Shown::Plain, expected);
                default
            }
        }
    }

    pub(crate) fn path(&mut self, block: &str, key: &str) -> Option<PathBuf> {
        self.non_empty(block, key, Shown::Plain, "a file path")
            .map(PathBuf::from)
    }

    pub(crate) fn socket_addr(
        &mut self,
        block: &str,
        key: &str,
        default: SocketAddr,
    ) -> SocketAddr {
        let Some(text) = self.non_empty(block, key, Shown::Plain, "an address host:port") else {
            return default;
        };
        match text.trim().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                if let Some(entry) = self.entry(block, key).cloned() {
                    self.invalid(
                        block,
                        key,
                        &entry,
                        Shown::Plain,
                        "an IP address and port, e.g. 127.0.0.1:9102 or [::]:9102".into(),
                    );
                }
                default
            }
        }
    }

    /// One PEM path, or `[cert, key]` (in the environment: `cert,key`).
    pub(crate) fn client_certificate(
        &mut self,
        block: &str,
        key: &str,
    ) -> Option<ClientCertificate> {
        let entry = self.entry(block, key)?.clone();
        const EXPECTED: &str =
            "one PEM file path (certificate and key) or a list [certificate path, key path]";
        let paths: Option<Vec<String>> = match &entry.raw {
            Raw::Yaml(Node::Str(s)) => Some(vec![s.clone()]),
            Raw::Yaml(Node::Seq(items)) => items
                .iter()
                .map(|n| match &n.value {
                    Node::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            Raw::Env(s) => Some(s.split(',').map(|p| p.trim().to_owned()).collect()),
            Raw::Yaml(_) => None,
        };
        let paths = paths.filter(|p| p.iter().all(|s| !s.trim().is_empty()));
        match paths.as_deref() {
            Some([one]) => Some(ClientCertificate::Combined(PathBuf::from(one))),
            Some([cert, key]) => Some(ClientCertificate::Split {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            _ => {
                let expected = match &entry.raw {
                    Raw::Env(_) => {
                        format!("{EXPECTED}; in the environment: cert.pem or cert.pem,key.pem")
                    }
                    _ => EXPECTED.to_owned(),
                };
                self.invalid(block, key, &entry, Shown::Plain, expected);
                None
            }
        }
    }
}

fn show_raw(raw: &Raw) -> String {
    match raw {
        Raw::Yaml(node) => node.show(),
        Raw::Env(s) => show_str(s),
    }
}
