//! The settings file: one YAML document, loaded once by [`Settings::load`]
//! (every binary uses this loader), with every key overridable by an
//! environment variable.
//!
//! ```yaml
//! portal_client:                  # the seed's block, key for key
//!   url: https://patient-portal.example.com/api   # required, http:// or https://
//!   api_key: your_secret_key      # exactly one of api_key …
//!   # api_key_file: /run/secrets/portal-key      # … or a file holding the key
//!   timeout: 30                   # seconds per request, 1..=3600, default 30
//!   task_package_size: 20         # tasks per POST and page size, 1..=1000, default 20
//!   client_certificate: client.pem              # optional: one PEM (cert + key)
//!   # client_certificate: [client.crt, client.key]  # or certificate and key
//!   ca_bundle: ca.pem             # optional: extra trusted roots (PEM)
//! redis:
//!   url: redis://127.0.0.1:6379   # redis://, rediss://, redis+unix://, unix://
//!   namespace: portal-sync        # key prefix of every queue
//! store:
//!   url: sqlite://portal-sync.db  # or postgres://user:password@host/db
//!   pool_size: 4                  # pooled store connections, 1..=256 (default 4 on SQLite, 8 on PostgreSQL)
//! worker:
//!   concurrency: 32               # jobs run at once, 1..=4096
//!   rate_limit_per_second: 10     # optional: portal requests per second (decimals allowed)
//!   job_timeout: 300              # seconds one job may take, 1..=86400
//!   shutdown_grace: 25            # seconds to finish held jobs on SIGTERM, 0..=3600
//!   max_attempts: 10              # deliveries before a job goes to dead letters, 1..=1000
//!   backoff_base: 1               # seconds before the first retry, 0.001..=3600
//!   backoff_cap: 300              # longest wait between retries, seconds, ≥ backoff_base
//!   http_bind: 127.0.0.1:9102     # health, metrics and dashboard listener
//!   dashboard_token: …            # optional: bearer token for the queue dashboard
//! ```
//!
//! Only `portal_client.url` and one of `api_key` / `api_key_file` are
//! required; every other key has the default shown. Unknown blocks and keys
//! are errors, so a typo never silently falls back to a default. Relative paths
//! are relative to the working directory. `api_key_file` is read (and its
//! surrounding whitespace trimmed) when the settings are loaded, so an
//! unreadable file fails at start.
//!
//! # Environment variables
//!
//! `PORTAL_SYNC__<BLOCK>__<KEY>`, upper case, two underscores between the
//! parts: `PORTAL_SYNC__PORTAL_CLIENT__URL`, `PORTAL_SYNC__WORKER__CONCURRENCY`
//! ([`env_var_name`]). A variable replaces the file's value; a variable set to
//! the empty string removes the file's value (so `PORTAL_SYNC__PORTAL_CLIENT__API_KEY=…`
//! with `PORTAL_SYNC__PORTAL_CLIENT__API_KEY_FILE=` swaps a key file for a
//! key). Values are read as the key's type: numbers as numbers,
//! `client_certificate` as `cert.pem` or `cert.pem,key.pem`. A variable with the
//! prefix that names no key is an error, like an unknown key in the file. The
//! environment is passed in as an [`Env`] ([`Env::from_process`] in binaries,
//! a literal map in tests).
//!
//! # Errors and secrets
//!
//! A bad file fails with a [`SettingsError`]: a syntax error with its line and
//! column, or the list of every wrong key, each with its path
//! (`portal_client.timeout`), its origin (`settings.yaml:4:12` or the
//! variable's name), the value, and what was expected. The API key and the
//! dashboard token are [`SecretString`]s and never shown, not even when
//! invalid; URLs are [`SecretUrl`]s whose passwords are masked in `Debug`,
//! `Display` and errors.

mod error;
mod read;
mod secret_url;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

pub use error::{KeyProblem, ProblemKind, SettingsError};
pub use secret_url::SecretUrl;
pub use source::{Origin, env_var_name};

use read::{Reader, Shown};

/// Prefix of every settings variable.
pub const ENV_PREFIX: &str = "PORTAL_SYNC__";
/// Separator between block and key in a variable name.
pub const ENV_SEPARATOR: &str = "__";

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_TASK_PACKAGE_SIZE: usize = 20;
/// Largest `task_package_size`.
pub const MAX_TASK_PACKAGE_SIZE: usize = 1000;
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_NAMESPACE: &str = "portal-sync";
pub const DEFAULT_STORE_URL: &str = "sqlite://portal-sync.db";
/// Default `store.pool_size` on PostgreSQL.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// Default `store.pool_size` on SQLite: the file has one writer at a time,
/// so more connections add memory (a page cache and a thread each) more
/// than speed.
pub const DEFAULT_SQLITE_POOL_SIZE: u32 = 4;

/// The default `store.pool_size` for the store at `url`.
pub fn default_pool_size(url: &str) -> u32 {
    if url.starts_with("sqlite:") {
        DEFAULT_SQLITE_POOL_SIZE
    } else {
        DEFAULT_POOL_SIZE
    }
}
pub const DEFAULT_CONCURRENCY: usize = 32;
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(300);
pub const DEFAULT_HTTP_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9102);

/// Every block and its keys, in file order; nothing else is accepted.
pub const KEYS: &[(&str, &[&str])] = &[
    (
        "portal_client",
        &[
            "url",
            "api_key",
            "api_key_file",
            "timeout",
            "task_package_size",
            "client_certificate",
            "ca_bundle",
        ],
    ),
    ("redis", &["url", "namespace"]),
    ("store", &["url", "pool_size"]),
    (
        "worker",
        &[
            "concurrency",
            "rate_limit_per_second",
            "job_timeout",
            "shutdown_grace",
            "max_attempts",
            "backoff_base",
            "backoff_cap",
            "http_bind",
            "dashboard_token",
        ],
    ),
];

/// The loaded settings: every value checked, defaults filled in.
#[derive(Clone, Debug)]
pub struct Settings {
    pub portal_client: PortalClientSettings,
    pub redis: RedisSettings,
    pub store: StoreSettings,
    pub worker: WorkerSettings,
}

/// The seed's `portal_client` block.
#[derive(Clone, Debug)]
pub struct PortalClientSettings {
    /// `http://` or `https://`.
    pub url: SecretUrl,
    /// From `api_key`, or read from `api_key_file`.
    pub api_key: SecretString,
    /// Where the key was read from, when it came from a file.
    pub api_key_file: Option<PathBuf>,
    pub timeout: Duration,
    pub task_package_size: usize,
    pub client_certificate: Option<ClientCertificate>,
    pub ca_bundle: Option<PathBuf>,
}

/// `client_certificate`: one PEM with certificate chain and private key, or
/// the two files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCertificate {
    Combined(PathBuf),
    Split { cert: PathBuf, key: PathBuf },
}

#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: SecretUrl,
    /// Prefix of every Redis key portal-sync writes.
    pub namespace: String,
}

/// Which store `store.url` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// `sqlite://path` (created on first use) or `postgres://…`.
    pub url: SecretUrl,
    pub pool_size: u32,
}

impl StoreSettings {
    pub fn kind(&self) -> StoreKind {
        match self.url.scheme() {
            "sqlite" => StoreKind::Sqlite,
            _ => StoreKind::Postgres,
        }
    }
}

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// Portal requests per second, unlimited when `None`.
    pub rate_limit_per_second: Option<f64>,
    pub job_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub http_bind: SocketAddr,
    pub dashboard_token: Option<SecretString>,
}

impl Default for WorkerSettings {
    fn default() -> WorkerSettings {
        WorkerSettings {
            concurrency: DEFAULT_CONCURRENCY,
            rate_limit_per_second: None,
            job_timeout: DEFAULT_JOB_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            http_bind: DEFAULT_HTTP_BIND,
            dashboard_token: None,
        }
    }
}

/// The environment variables the loader sees. `Debug` lists names only
/// (values may be secrets).
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Settings variables whose value is not valid Unicode.
    not_unicode: Vec<String>,
}

impl Env {
    /// No variables.
    pub fn empty() -> Env {
        Env::default()
    }

    /// The process environment's `PORTAL_SYNC__*` variables.
    pub fn from_process() -> Env {
        let mut env = Env::default();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            match value.into_string() {
                Ok(v) => {
                    env.vars.insert(name.to_owned(), v);
                }
                Err(_) => env.not_unicode.push(name.to_owned()),
            }
        }
        env
    }

    /// Adds or replaces one variable.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Env {
        self.vars.insert(name.into(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Env {
        Env {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            not_unicode: Vec::new(),
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("not_unicode", &self.not_unicode)
            .finish()
    }
}

impl Settings {
    /// Reads the settings file at `path`, lays `env` over it and checks every
    /// value (module doc).
    pub fn load(path: &Path, env: &Env) -> Result<Settings, SettingsError> {
        let bytes = std::fs::read(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| SettingsError::Syntax {
            path: path.to_owned(),
            line: 0,
            column: 0,
            message: format!(
                "the file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Settings::from_yaml(&text, path, env)
    }

    /// [`Settings::load`] for YAML text already in memory; `path` names it in
    /// errors.
    pub fn from_yaml(text: &str, path: &Path, env: &Env) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        let mut layers = source::read_yaml(text, path, &mut problems)?;
        for name in &env.not_unicode {
            problems.push(KeyProblem {
                key: name.clone(),
                origin: Origin::Env(name.clone()),
                kind: ProblemKind::Invalid {
                    value: None,
                    expected: "a value that is valid Unicode".into(),
                },
            });
        }
        source::overlay_env(&mut layers, env, &mut problems);
        let mut r = Reader {
            layers: &layers,
            problems: &mut problems,
        };
        let portal_client = read_portal_client(&mut r);
        let redis = read_redis(&mut r);
        let store = read_store(&mut r);
        let worker = read_worker(&mut r);
        match (portal_client, redis, store, worker) {
            (Some(portal_client), Some(redis), Some(store), Some(worker))
                if problems.is_empty() =>
            {
                Ok(Settings {
                    portal_client,
                    redis,
                    store,
                    worker,
                })
            }
            _ => Err(SettingsError::Invalid { problems }),
        }
    }
}

const PC: &str = "portal_client";

fn read_portal_client(r: &mut Reader<'_>) -> Option<PortalClientSettings> {
    let url_what = "an http:// or https:// URL of the portal API";
    let url = r.url(PC, "url", &["http", "https"], url_what);
    if !r.is_set(PC, "url") {
        r.missing(PC, "url", url_what);
    }
    let api_key = read_api_key(r);
    let timeout = r.seconds(
        PC,
        "timeout",
        DEFAULT_TIMEOUT,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );
    let task_package_size = r.integer(
        PC,
        "task_package_size",
        DEFAULT_TASK_PACKAGE_SIZE as u64,
        1,
        MAX_TASK_PACKAGE_SIZE as u64,
        " of tasks",
    ) as usize;
    let client_certificate = r.client_certificate(PC, "client_certificate");
    let ca_bundle = r.path(PC, "ca_bundle");
    let (api_key, api_key_file) = api_key?;
    Some(PortalClientSettings {
        url: url?,
        api_key,
        api_key_file,
        timeout,
        task_package_size,
        client_certificate,
        ca_bundle,
    })
}

/// Exactly one of `api_key` and `api_key_file`; the file is read now.
fn read_api_key(r: &mut Reader<'_>) -> Option<(SecretString, Option<PathBuf>)> {
    let inline = r.is_set(PC, "api_key");
    let file = r.is_set(PC, "api_key_file");
    match (inline, file) {
        (true, true) => {
            let origin = r.origin(PC, "api_key_file");
            r.push(
                PC,
                "api_key_file",
                origin,
                ProblemKind::Conflict {
                    message: format!(
                        "both api_key and api_key_file are set; set exactly one \
                         (an empty {} removes a file value)",
                        env_var_name(PC, "api_key_file")
                    ),
                },
            );
            None
        }
        (false, false) => {
            r.missing(
                PC,
                "api_key",
                "the portal API key: api_key, or api_key_file naming a file that holds it",
            );
            None
        }
        (true, false) => r
            .secret(PC, "api_key", "the portal API key")
            .map(|k| (k, None)),
        (false, true) => {
            let path = r.path(PC, "api_key_file")?;
            let origin = r.origin(PC, "api_key_file");
            let unreadable = |reason: String| ProblemKind::Unreadable {
                path: path.clone(),
                reason,
            };
            match std::fs::read(&path) {
                Err(e) => {
                    r.push(PC, "api_key_file", origin, unreadable(e.to_string()));
                    None
                }
                Ok(bytes) => match String::from_utf8(bytes) {
                    Err(_) => {
                        r.push(
                            PC,
                            "api_key_file",
                            origin,
                            unreadable("not UTF-8 text".into()),
                        );
                        None
                    }
                    Ok(text) if text.trim().is_empty() => {
                        r.push(
                            PC,
                            "api_key_file",
                            origin,
                            unreadable("the file is empty".into()),
                        );
                        None
                    }
                    Ok(text) => Some((SecretString::from(text.trim().to_owned()), Some(path))),
                },
            }
        }
    }
}

fn read_redis(r: &mut Reader<'_>) -> Option<RedisSettings> {
    let what = "a Redis URL";
    let schemes = ["redis", "rediss", "redis+unix", "unix"];
    let url = if r.is_set("redis", "url") {
        r.url("redis", "url", &schemes, what)?
    } else {
        SecretUrl::parse(DEFAULT_REDIS_URL).ok()?
    };
    let namespace = match r.non_empty("redis", "namespace", Shown::Plain, "a key prefix") {
        None => DEFAULT_NAMESPACE.to_owned(),
        Some(ns) => {
            let ok = ns.len() <= 64
                && ns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
            if !ok {
                let origin = r.origin("redis", "namespace");
                r.push(
                    "redis",
                    "namespace",
                    origin,
                    ProblemKind::Invalid {
                        value: Some(source::show_str(&ns)),
                        expected: "at most 64 of the characters A-Z a-z 0-9 - _ . :".into(),
                    },
                );
            }
            ns
        }
    };
    Some(RedisSettings { url, namespace })
}

fn read_store(r: &mut Reader<'_>) -> Option<StoreSettings> {
    let url = if r.is_set("store", "url") {
        r.url(
            "store",
            "url",
            &["sqlite", "postgres", "postgresql"],
            "a store URL, sqlite://path or postgres://…",
        )?
    } else {
        SecretUrl::parse(DEFAULT_STORE_URL).ok()?
    };
    let default_pool = default_pool_size(url.expose());
    let pool_size = r.integer(
        "store",
        "pool_size",
        u64::from(default_pool),
        1,
        256,
        " of connections",
    ) as u32;
    Some(StoreSettings { url, pool_size })
}

fn read_worker(r: &mut Reader<'_>) -> Option<WorkerSettings> {
    const W: &str = "worker";
    let concurrency = r.integer(
        W,
        "concurrency",
        DEFAULT_CONCURRENCY as u64,
        1,
        4096,
        " of jobs",
    ) as usize;
    let rate_limit_per_second = r.number(
        W,
        "rate_limit_per_second",
        0.0,
        100_000.0,
        " of requests per second",
    );
    let job_timeout = r.seconds(
        W,
        "job_timeout",
        DEFAULT_JOB_TIMEOUT,
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    );
    let shutdown_grace = r.seconds(
        W,
        "shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
        Duration::ZERO,
        Duration::from_secs(3600),
    );
    let max_attempts = r.integer(
        W,
        "max_attempts",
        u64::from(DEFAULT_MAX_ATTEMPTS),
        1,
        1000,
        " of attempts",
    ) as u32;
    let backoff_base = r.seconds(
        W,
        "backoff_base",
        DEFAULT_BACKOFF_BASE,
        Duration::from_millis(1),
        Duration::from_secs(3600),
    );
    let backoff_cap = r.seconds(
        W,
        "backoff_cap",
        DEFAULT_BACKOFF_CAP,
        Duration::from_millis(1),
        Duration::from_secs(86_400),
    );
    if backoff_cap < backoff_base {
        let origin = r.origin(W, "backoff_cap");
        r.push(
            W,
            "backoff_cap",
            origin,
            ProblemKind::Conflict {
                message: format!(
                    "backoff_cap ({} s) is below backoff_base ({} s); the cap must be at least the base",
                    backoff_cap.as_secs_f64(),
                    backoff_base.as_secs_f64()
                ),
            },
        );
    }
    let http_bind = r.socket_addr(W, "http_bind", DEFAULT_HTTP_BIND);
    let dashboard_token = r.secret(W, "dashboard_token", "a bearer token");
    Some(WorkerSettings {
        concurrency,
        rate_limit_per_second,
        job_timeout,
        shutdown_grace,
        max_attempts,
        backoff_base,
        backoff_cap,
        http_bind,
        dashboard_token,
    })
}
