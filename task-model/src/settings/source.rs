//! Where setting values come from: the YAML file, read into a tree that keeps
//! each node's line and column, and the environment variables laid over it.
//! The result is one [`Entry`] per `block.key`, each knowing its [`Origin`],
//! so that a typed reader can name the key, the origin and the value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::{KeyProblem, ProblemKind, SettingsError};
use super::{ENV_PREFIX, ENV_SEPARATOR, Env, KEYS};

/// A YAML node with the locations of its children.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl Node {
    /// What kind of value this is, for "expected …, found …" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }

    /// A short rendering of the value for error messages (never used for
    /// secret keys).
    pub(crate) fn show(&self) -> String {
        match self {
            Node::Null => "null".into(),
            Node::Bool(b) => b.to_string(),
            Node::Int(i) => i.to_string(),
            Node::Float(f) => f.to_string(),
            Node::Str(s) => show_str(s),
            Node::Seq(items) => {
                let inner: Vec<String> = items.iter().map(|n| n.value.show()).collect();
                format!("[{}]", inner.join(", "))
            }
            Node::Map(_) => "{…}".into(),
        }
    }
}

/// A string quoted and cut to a readable length.
pub(crate) fn show_str(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    } else {
        format!("{s:?}")
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Node>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The settings file, at a line and column (1-based; 0 when unknown).
    File {
        path: PathBuf,
        line: u64,
        column: u64,
    },
    /// An environment variable.
    Env(String),
    /// Not set anywhere.
    Unset,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } if *line > 0 => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Origin::File { path, .. } => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Unset => f.write_str("not set"),
        }
    }
}

/// A raw value: a YAML node from the file, or an environment variable's text.
#[derive(Clone, Debug)]
pub(crate) enum Raw {
    Yaml(Node),
    Env(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) raw: Raw,
    pub(crate) origin: Origin,
}

/// Every `block.key` that is set, file first, environment on top.
#[derive(Debug, Default)]
pub(crate) struct Layers {
    pub(crate) entries: BTreeMap<(String, String), Entry>,
    /// Where the file has each block, for "missing key" messages.
    pub(crate) blocks: BTreeMap<String, Origin>,
}

fn file_origin(path: &Path, loc: serde_saphyr::Location) -> Origin {
    Origin::File {
        path: path.to_owned(),
        line: loc.line(),
        column: loc.column(),
    }
}

/// Reads the YAML text of the settings file into [`Layers`], reporting keys
/// outside the schema and blocks that are not mappings.
pub(crate) fn read_yaml(
    text: &str,
    path: &Path,
    problems: &mut Vec<KeyProblem>,
) -> Result<Layers, SettingsError> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location();
        SettingsError::Syntax {
            path: path.to_owned(),
            line: loc.map_or(0, |l| l.line()),
            column: loc.map_or(0, |l| l.column()),
            // The plain message; line and column are in their own fields.
            message: serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::UserMessageFormatter,
                e.without_snippet(),
            )
            .into_owned(),
        }
    })?;
    let mut layers = Layers::default();
    let top = match root.value {
        Node::Null => return Ok(layers),
        Node::Map(top) => top,
        other => {
            problems.push(KeyProblem {
                key: String::new(),
                origin: file_origin(path, root.referenced),
                kind: ProblemKind::Invalid {
                    value: Some(other.show()),
                    expected: format!(
                        "a mapping with the blocks {}",
                        KEYS.iter().map(|(b, _)| *b).collect::<Vec<_>>().join(", ")
                    ),
                },
            });
            return Ok(layers);
        }
    };
    for (block_key, block) in top {
        let origin = file_origin(path, block_key.referenced);
        let Some(block_name) = key_name(&block_key.value, "", &origin, problems) else {
            continue;
        };
        let Some((_, keys)) = KEYS.iter().find(|(b, _)| *b == block_name) else {
            problems.push(KeyProblem {
                key: block_name,
                origin,
                kind: ProblemKind::Unknown {
                    expected: KEYS.iter().map(|(b, _)| *b).collect(),
                },
            });
            continue;
        };
        layers.blocks.insert(block_name.clone(), origin.clone());
        let entries = match block.value {
            // `redis:` with nothing under it: all defaults.
            Node::Null => continue,
            Node::Map(entries) => entries,
            other => {
                problems.push(KeyProblem {
                    key: block_name.clone(),
                    origin: file_origin(path, block.referenced),
                    kind: ProblemKind::Invalid {
                        value: Some(other.show()),
                        expected: format!("a mapping of the keys {}", keys.join(", ")),
                    },
                });
                continue;
            }
        };
        for (key, value) in entries {
            let origin = file_origin(path, key.referenced);
            let Some(name) = key_name(&key.value, &block_name, &origin, problems) else {
                continue;
            };
            if !keys.contains(&name.as_str()) {
                problems.push(KeyProblem {
                    key: format!("{block_name}.{name}"),
                    origin,
                    kind: ProblemKind::Unknown {
                        expected: keys.to_vec(),
                    },
                });
                continue;
            }
            layers.entries.insert(
                (block_name.clone(), name),
                Entry {
                    raw: Raw::Yaml(value.value),
                    origin: file_origin(path, value.referenced),
                },
            );
        }
    }
    Ok(layers)
}

fn key_name(
    key: &Node,
    block: &str,
    origin: &Origin,
    problems: &mut Vec<KeyProblem>,
) -> Option<String> {
    match key {
        Node::Str(s) => Some(s.clone()),
        other => {
            problems.push(KeyProblem {
                key: if block.is_empty() {
                    other.show()
                } else {
                    format!("{block}.{}", other.show())
                },
                origin: origin.clone(),
                kind: ProblemKind::Invalid {
                    value: None,
                    expected: "a key that is a plain name".into(),
                },
            });
            None
        }
    }
}

/// The variable name for `block.key`: `PORTAL_SYNC__BLOCK__KEY`.
pub fn env_var_name(block: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}{ENV_SEPARATOR}{}",
        block.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// Lays the environment over the file: a set variable replaces the file's
/// value; a variable set to the empty string removes it (back to the default,
/// or to "missing"). Variables with the prefix that name no key are reported.
pub(crate) fn overlay_env(layers: &mut Layers, env: &Env, problems: &mut Vec<KeyProblem>) {
    for (var, value) in env.iter() {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let found = KEYS.iter().find_map(|(block, keys)| {
            keys.iter()
                .find(|key| env_var_name(block, key) == var)
                .map(|key| (block.to_string(), key.to_string()))
        });
        let Some(slot) = found else {
            problems.push(KeyProblem {
                key: rest.to_ascii_lowercase().replace(ENV_SEPARATOR, "."),
                origin: Origin::Env(var.to_owned()),
                kind: ProblemKind::Unknown {
                    expected: Vec::new(),
                },
            });
            continue;
        };
        if value.is_empty() {
            layers.entries.remove(&slot);
        } else {
            layers.entries.insert(
                slot,
                Entry {
                    raw: Raw::Env(value.to_owned()),
                    origin: Origin::Env(var.to_owned()),
                },
            );
        }
    }
}
