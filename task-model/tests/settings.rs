//! The settings loader: defaults, every kind of bad file, environment
//! overrides, and secrets kept out of `Debug` and errors. Each test writes its
//! own files in its own temp dir and passes its own environment map.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret;
use task_model::settings::{
    ClientCertificate, Env, KEYS, KeyProblem, Origin, ProblemKind, Settings, SettingsError,
    StoreKind, env_var_name,
};

const KEY: &str = "sk-very-secret-portal-key-4711";

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("temp dir"))
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn load_text(text: &str, env: &Env) -> (Dir, Result<Settings, SettingsError>) {
    let dir = Dir::new();
    let path = dir.write("settings.yaml", text);
    let result = Settings::load(&path, env);
    (dir, result)
}

fn load_ok(text: &str) -> Settings {
    let (_dir, r) = load_text(text, &Env::empty());
    r.unwrap_or_else(|e| panic!("settings should load: {e}"))
}

/// Loads, expects key problems, and returns them with the rendered message.
fn problems(text: &str, env: &Env) -> (Vec<KeyProblem>, String) {
    let (_dir, r) = load_text(text, env);
    match r {
        Err(e @ SettingsError::Invalid { .. }) => (e.problems().to_vec(), e.to_string()),
        Err(other) => panic!("expected key problems, got {other}"),
        Ok(s) => panic!("expected an error, loaded {s:?}"),
    }
}

/// Expects exactly one problem, at `key`.
fn one_problem(text: &str, env: &Env, key: &str) -> (KeyProblem, String) {
    let (ps, msg) = problems(text, env);
    assert_eq!(ps.len(), 1, "expected one problem at {key}: {msg}");
    assert_eq!(ps[0].key, key, "{msg}");
    assert!(msg.contains(key), "message must name the key: {msg}");
    (ps[0].clone(), msg)
}

const MINIMAL: &str = "portal_client:\n  url: https://portal.example.org/api\n  api_key: sk-very-secret-portal-key-4711\n";

fn with_portal(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn line_of(p: &KeyProblem) -> u64 {
    match &p.origin {
        Origin::File { line, .. } => *line,
        other => panic!("expected a file origin, got {other:?}"),
    }
}

#[test]
fn minimal_file_gets_every_default() {
    let s = load_ok(MINIMAL);
    let pc = &s.portal_client;
    assert_eq!(pc.url.expose(), "https://portal.example.org/api");
    assert_eq!(pc.api_key.expose_secret(), KEY);
    assert_eq!(pc.api_key_file, None);
    assert_eq!(pc.timeout, Duration::from_secs(30));
    assert_eq!(pc.task_package_size, 20);
    assert_eq!(pc.client_certificate, None);
    assert_eq!(pc.ca_bundle, None);
    assert_eq!(s.redis.url.expose(), "redis://127.0.0.1:6379");
    assert_eq!(s.redis.namespace, "portal-sync");
    assert_eq!(s.store.url.expose(), "sqlite://portal-sync.db");
    assert_eq!(s.store.kind(), StoreKind::Sqlite);
    assert_eq!(s.store.pool_size, 4, "SQLite's default pool");
    let w = &s.worker;
    assert_eq!(w.concurrency, 32);
    assert_eq!(w.rate_limit_per_second, None);
    assert_eq!(w.shutdown_grace, Duration::from_secs(25));
    assert_eq!(w.http_bind.to_string(), "127.0.0.1:9102");
    assert!(w.dashboard_token.is_none());
    assert!(w.backoff_base <= w.backoff_cap);
}

#[test]
fn the_default_pool_size_depends_on_the_backend() {
    let s = load_ok(&with_portal(
        "store:\n  url: postgres://sync@db.example.org/tasks\n",
    ));
    assert_eq!(s.store.kind(), StoreKind::Postgres);
    assert_eq!(s.store.pool_size, 8);
    let s = load_ok(&with_portal(
        "store:\n  url: sqlite:///var/lib/portal-sync/tasks.db\n",
    ));
    assert_eq!(s.store.pool_size, 4);
    let s = load_ok(&with_portal(
        "store:\n  url: sqlite:///var/lib/portal-sync/tasks.db\n  pool_size: 9\n",
    ));
    assert_eq!(s.store.pool_size, 9, "a set value wins");
}

#[test]
fn seed_block_pastes_in_unchanged() {
    // The seed guide's block, comments and all.
    let seed = "\
portal_client:
  # URL for the portal api endpoint
  url: https://patient-portal.example.com/path/to/portal/api
  # API Key received from the portal
  api_key: your_secret_key
  # request timeout in seconds, optional
  timeout: 30
  # how many task could be submitted or received per one HTTP request,
  # optional
  task_package_size: 20
";
    let s = load_ok(seed);
    assert_eq!(s.portal_client.api_key.expose_secret(), "your_secret_key");
    assert_eq!(s.portal_client.timeout, Duration::from_secs(30));
}

#[test]
fn full_file_is_read_key_for_key() {
    let s = load_ok(
        "\
portal_client:
  url: http://localhost:8080/api/
  api_key: k
  timeout: 2.5
  task_package_size: 1000
  client_certificate: [client.crt, client.key]
  ca_bundle: /etc/ssl/extra.pem
redis: { url: 'rediss://:pw@redis.internal:6380/2', namespace: 'ps:test' }
store:
  url: postgres://sync:pw@db.internal/portal
  pool_size: 20
worker:
  concurrency: 4
  rate_limit_per_second: 0.5
  job_timeout: 60
  shutdown_grace: 0
  max_attempts: 3
  backoff_base: 0.25
  backoff_cap: 10
  http_bind: '[::]:9200'
  dashboard_token: board-token
",
    );
    let pc = &s.portal_client;
    assert_eq!(pc.timeout, Duration::from_millis(2500));
    assert_eq!(pc.task_package_size, 1000);
    assert_eq!(
        pc.client_certificate,
        Some(ClientCertificate::Split {
            cert: "client.crt".into(),
            key: "client.key".into()
        })
    );
    assert_eq!(
        pc.ca_bundle.as_deref(),
        Some(Path::new("/etc/ssl/extra.pem"))
    );
    assert_eq!(s.redis.url.expose(), "rediss://:pw@redis.internal:6380/2");
    assert_eq!(s.redis.namespace, "ps:test");
    assert_eq!(s.store.kind(), StoreKind::Postgres);
    assert_eq!(s.store.pool_size, 20);
    let w = &s.worker;
    assert_eq!(w.concurrency, 4);
    assert_eq!(w.rate_limit_per_second, Some(0.5));
    assert_eq!(w.job_timeout, Duration::from_secs(60));
    assert_eq!(w.shutdown_grace, Duration::ZERO);
    assert_eq!(w.max_attempts, 3);
    assert_eq!(w.backoff_base, Duration::from_millis(250));
    assert_eq!(w.backoff_cap, Duration::from_secs(10));
    assert_eq!(w.http_bind.to_string(), "[::]:9200");
    assert_eq!(
        w.dashboard_token.as_ref().map(|t| t.expose_secret()),
        Some("board-token")
    );
}

#[test]
fn single_client_certificate_path_is_combined() {
    let s = load_ok(&with_portal("  client_certificate: client.pem\n"));
    assert_eq!(
        s.portal_client.client_certificate,
        Some(ClientCertificate::Combined("client.pem".into()))
    );
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let (dir, r) = load_text(
        "portal_client:\n  url: https://x.example.org\n  api_key: [unclosed\n",
        &Env::empty(),
    );
    match r {
        Err(SettingsError::Syntax {
            path, line, column, ..
        }) => {
            assert_eq!(path, dir.path("settings.yaml"));
            assert!(line >= 3, "line {line}");
            assert!(column > 0);
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let (_dir, r) = load_text("portal_client:\n\turl: x\n", &Env::empty());
    let err = r.expect_err("tab indentation is a syntax error");
    assert!(
        matches!(err, SettingsError::Syntax { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("settings.yaml"), "{err}");
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let (_dir, r) = load_text(&with_portal("  timeout: 5\n  timeout: 6\n"), &Env::empty());
    assert!(
        matches!(r, Err(SettingsError::Syntax { line: 5, .. })),
        "{r:?}"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_line_and_the_valid_keys() {
    let (p, msg) = one_problem(
        &with_portal("  task_packge_size: 10\n"),
        &Env::empty(),
        "portal_client.task_packge_size",
    );
    assert_eq!(line_of(&p), 4);
    assert!(matches!(p.kind, ProblemKind::Unknown { .. }));
    assert!(msg.contains("task_package_size"), "lists valid keys: {msg}");
    assert!(msg.contains("settings.yaml:4:3"), "{msg}");
}

#[test]
fn unknown_block_is_rejected() {
    let (p, msg) = one_problem(
        &with_portal("workers:\n  concurrency: 3\n"),
        &Env::empty(),
        "workers",
    );
    assert!(matches!(p.kind, ProblemKind::Unknown { .. }));
    assert!(msg.contains("worker"), "{msg}");
}

#[test]
fn wrong_type_names_key_value_and_expectation() {
    let (p, msg) = one_problem(
        &with_portal("  timeout: thirty\n"),
        &Env::empty(),
        "portal_client.timeout",
    );
    assert_eq!(line_of(&p), 4);
    match &p.kind {
        ProblemKind::Invalid { value, expected } => {
            assert_eq!(value.as_deref(), Some("\"thirty\""));
            assert!(expected.contains("seconds"), "{expected}");
            assert!(expected.contains("a string"), "{expected}");
        }
        other => panic!("{other:?}"),
    }
    assert!(msg.contains("thirty"), "{msg}");

    let (_p, msg) = one_problem(
        &with_portal("redis:\n  namespace: [a, b]\n"),
        &Env::empty(),
        "redis.namespace",
    );
    assert!(msg.contains("a string, found a list"), "{msg}");

    let (_p, msg) = one_problem(&with_portal("worker: 5\n"), &Env::empty(), "worker");
    assert!(msg.contains("mapping"), "{msg}");
}

#[test]
fn out_of_range_numbers_are_rejected() {
    for (yaml, key, shown) in [
        ("  timeout: 0\n", "portal_client.timeout", "0"),
        ("  timeout: 3601\n", "portal_client.timeout", "3601"),
        (
            "  task_package_size: 0\n",
            "portal_client.task_package_size",
            "0",
        ),
        (
            "  task_package_size: 1001\n",
            "portal_client.task_package_size",
            "1001",
        ),
        (
            "  task_package_size: -3\n",
            "portal_client.task_package_size",
            "-3",
        ),
        ("worker:\n  concurrency: 0\n", "worker.concurrency", "0"),
        ("worker:\n  max_attempts: 0\n", "worker.max_attempts", "0"),
        (
            "worker:\n  rate_limit_per_second: 0\n",
            "worker.rate_limit_per_second",
            "0",
        ),
        ("worker:\n  job_timeout: 0\n", "worker.job_timeout", "0"),
        ("store:\n  pool_size: 0\n", "store.pool_size", "0"),
    ] {
        let (p, msg) = one_problem(&with_portal(yaml), &Env::empty(), key);
        match &p.kind {
            ProblemKind::Invalid { value, expected } => {
                assert_eq!(value.as_deref(), Some(shown), "{msg}");
                assert!(
                    expected.contains(" to ") || expected.contains("greater"),
                    "{msg}"
                );
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    // A decimal where a whole number is needed.
    let (_p, msg) = one_problem(
        &with_portal("  task_package_size: 2.5\n"),
        &Env::empty(),
        "portal_client.task_package_size",
    );
    assert!(msg.contains("whole number"), "{msg}");
}

#[test]
fn backoff_cap_below_base_is_rejected() {
    let (p, _msg) = one_problem(
        &with_portal("worker:\n  backoff_base: 10\n  backoff_cap: 5\n"),
        &Env::empty(),
        "worker.backoff_cap",
    );
    assert!(matches!(p.kind, ProblemKind::Conflict { .. }));
}

#[test]
fn bad_bind_address_and_namespace_are_rejected() {
    one_problem(
        &with_portal("worker:\n  http_bind: localhost\n"),
        &Env::empty(),
        "worker.http_bind",
    );
    one_problem(
        &with_portal("redis:\n  namespace: 'has space'\n"),
        &Env::empty(),
        "redis.namespace",
    );
}

#[test]
fn missing_url_is_reported() {
    let (p, msg) = one_problem(
        "portal_client:\n  api_key: k\n",
        &Env::empty(),
        "portal_client.url",
    );
    assert!(matches!(p.kind, ProblemKind::Missing { .. }));
    assert!(
        msg.contains("PORTAL_SYNC__PORTAL_CLIENT__URL"),
        "says how to set it: {msg}"
    );
    // An empty file misses both url and key.
    let (ps, msg) = problems("", &Env::empty());
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["portal_client.url", "portal_client.api_key"],
        "{msg}"
    );
}

#[test]
fn url_scheme_must_fit_the_key() {
    for (yaml, key, scheme) in [
        (
            "portal_client:\n  url: ftp://portal.example.org\n  api_key: k\n",
            "portal_client.url",
            "ftp",
        ),
        (
            "portal_client:\n  url: portal.example.org/api\n  api_key: k\n",
            "portal_client.url",
            "",
        ),
        (
            &with_portal("redis:\n  url: http://127.0.0.1:6379\n"),
            "redis.url",
            "http",
        ),
        (
            &with_portal("store:\n  url: mysql://db/portal\n"),
            "store.url",
            "mysql",
        ),
    ] {
        let (p, msg) = one_problem(yaml, &Env::empty(), key);
        assert!(matches!(p.kind, ProblemKind::Invalid { .. }), "{msg}");
        if !scheme.is_empty() {
            assert!(msg.contains(&format!("not {scheme}://")), "{msg}");
        }
    }
}

#[test]
fn bad_url_value_is_shown_without_its_password() {
    let (_p, msg) = one_problem(
        &with_portal("store:\n  url: mysql://app:hunter2@db/portal\n"),
        &Env::empty(),
        "store.url",
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("mysql://app:***@db/portal"), "{msg}");
}

#[test]
fn both_api_key_and_api_key_file_is_rejected() {
    let dir = Dir::new();
    let keyfile = dir.write("key", KEY);
    let text = format!(
        "portal_client:\n  url: https://p.example.org\n  api_key: {KEY}\n  api_key_file: {}\n",
        keyfile.display()
    );
    let (p, msg) = one_problem(&text, &Env::empty(), "portal_client.api_key_file");
    assert!(matches!(p.kind, ProblemKind::Conflict { .. }));
    assert!(msg.contains("exactly one"), "{msg}");
    assert!(!msg.contains(KEY), "{msg}");
}

#[test]
fn neither_api_key_nor_api_key_file_is_rejected() {
    let (p, msg) = one_problem(
        "portal_client:\n  url: https://p.example.org\n",
        &Env::empty(),
        "portal_client.api_key",
    );
    assert!(matches!(p.kind, ProblemKind::Missing { .. }));
    assert!(msg.contains("api_key_file"), "{msg}");
}

#[test]
fn api_key_is_read_from_its_file_and_trimmed() {
    let dir = Dir::new();
    let keyfile = dir.write("portal-key", &format!("{KEY}\n"));
    let path = dir.write(
        "settings.yaml",
        &format!(
            "portal_client:\n  url: https://p.example.org\n  api_key_file: {}\n",
            keyfile.display()
        ),
    );
    let s = Settings::load(&path, &Env::empty()).expect("loads");
    assert_eq!(s.portal_client.api_key.expose_secret(), KEY);
    assert_eq!(s.portal_client.api_key_file, Some(keyfile));
}

#[test]
fn unreadable_api_key_file_is_reported_with_its_path() {
    let dir = Dir::new();
    let missing = dir.path("no-such-key");
    let text = format!(
        "portal_client:\n  url: https://p.example.org\n  api_key_file: {}\n",
        missing.display()
    );
    let (p, msg) = one_problem(&text, &Env::empty(), "portal_client.api_key_file");
    match &p.kind {
        ProblemKind::Unreadable { path, .. } => assert_eq!(path, &missing),
        other => panic!("{other:?}"),
    }
    assert!(msg.contains("no-such-key"), "{msg}");

    let empty = dir.write("empty-key", "\n");
    let text = format!(
        "portal_client:\n  url: https://p.example.org\n  api_key_file: {}\n",
        empty.display()
    );
    let (_p, msg) = one_problem(&text, &Env::empty(), "portal_client.api_key_file");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn missing_settings_file_is_a_read_error() {
    let dir = Dir::new();
    let err = Settings::load(&dir.path("absent.yaml"), &Env::empty()).expect_err("absent");
    assert!(matches!(err, SettingsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.yaml"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let (ps, msg) = problems(
        "portal_client:\n  url: ftp://x\n  timeout: 0\n  bogus: 1\nworker:\n  concurrency: -1\n",
        &Env::empty(),
    );
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "portal_client.bogus",
        "portal_client.url",
        "portal_client.timeout",
        "portal_client.api_key",
        "worker.concurrency",
    ] {
        assert!(keys.contains(&k), "{k} missing from {msg}");
    }
}

// ---- secrets ---------------------------------------------------------------

#[test]
fn debug_of_loaded_settings_shows_no_secret() {
    let s = load_ok(
        "\
portal_client:
  url: https://portal.example.org/api
  api_key: sk-very-secret-portal-key-4711
redis:
  url: redis://:redis-pass-99@127.0.0.1:6379
store:
  url: postgres://sync:pg-pass-77@db.internal/portal
worker:
  dashboard_token: board-token-55
",
    );
    let shown = format!("{s:?}");
    for secret in [KEY, "redis-pass-99", "pg-pass-77", "board-token-55"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("postgres://sync:***@db.internal/portal"),
        "{shown}"
    );
    assert!(shown.contains("portal.example.org"), "{shown}");
    let pretty = format!("{s:#?}");
    assert!(!pretty.contains(KEY));
}

#[test]
fn invalid_secret_values_are_not_shown() {
    let (p, msg) = one_problem(
        "portal_client:\n  url: https://p.example.org\n  api_key: [sk-very-secret-portal-key-4711]\n",
        &Env::empty(),
        "portal_client.api_key",
    );
    assert!(matches!(&p.kind, ProblemKind::Invalid { value: None, .. }));
    assert!(!msg.contains(KEY), "{msg}");
    assert!(!format!("{p:?}").contains(KEY));

    let env = Env::empty().with("PORTAL_SYNC__WORKER__DASHBOARD_TOKEN", "   ");
    let (_p, msg) = one_problem(MINIMAL, &env, "worker.dashboard_token");
    assert!(msg.contains("not shown"), "{msg}");
}

#[test]
fn env_debug_shows_names_only() {
    let env = Env::empty().with("PORTAL_SYNC__PORTAL_CLIENT__API_KEY", KEY);
    let shown = format!("{env:?}");
    assert!(shown.contains("PORTAL_SYNC__PORTAL_CLIENT__API_KEY"));
    assert!(!shown.contains(KEY), "{shown}");
}

// ---- environment -----------------------------------------------------------

#[test]
fn env_var_names_follow_one_scheme() {
    assert_eq!(
        env_var_name("portal_client", "url"),
        "PORTAL_SYNC__PORTAL_CLIENT__URL"
    );
    assert_eq!(
        env_var_name("worker", "shutdown_grace"),
        "PORTAL_SYNC__WORKER__SHUTDOWN_GRACE"
    );
}

/// A valid value for every key, as an environment variable would carry it.
fn env_value(block: &str, key: &str, dir: &Dir) -> Option<String> {
    Some(
        match (block, key) {
            ("portal_client", "url") => "https://env.example.org/api",
            ("portal_client", "api_key") => "env-key",
            ("portal_client", "api_key_file") => return None, // exclusive with api_key; own test
            ("portal_client", "timeout") => "7",
            ("portal_client", "task_package_size") => "55",
            ("portal_client", "client_certificate") => "c.crt,c.key",
            ("portal_client", "ca_bundle") => "ca.pem",
            ("redis", "url") => "redis://10.0.0.1:7000",
            ("redis", "namespace") => "env-ns",
            ("store", "url") => "postgres://db.internal/env",
            ("store", "pool_size") => "3",
            ("worker", "concurrency") => "9",
            ("worker", "rate_limit_per_second") => "2.5",
            ("worker", "job_timeout") => "120",
            ("worker", "shutdown_grace") => "5",
            ("worker", "max_attempts") => "4",
            ("worker", "backoff_base") => "2",
            ("worker", "backoff_cap") => "20",
            ("worker", "http_bind") => "0.0.0.0:9999",
            ("worker", "dashboard_token") => "env-token",
            _ => {
                let _ = dir;
                panic!("no test value for {block}.{key}: add one")
            }
        }
        .to_owned(),
    )
}

#[test]
fn every_key_can_be_set_from_the_environment() {
    let dir = Dir::new();
    let mut env = Env::empty();
    for (block, keys) in KEYS {
        for key in *keys {
            if let Some(v) = env_value(block, key, &dir) {
                env = env.with(env_var_name(block, key), v);
            }
        }
    }
    // The file says otherwise everywhere it can; the environment wins.
    let file = dir.write(
        "settings.yaml",
        "portal_client:\n  url: https://file.example.org\n  api_key: file-key\n  timeout: 99\nworker:\n  concurrency: 1\n",
    );
    let s = Settings::load(&file, &env).unwrap_or_else(|e| panic!("{e}"));
    let pc = &s.portal_client;
    assert_eq!(pc.url.expose(), "https://env.example.org/api");
    assert_eq!(pc.api_key.expose_secret(), "env-key");
    assert_eq!(pc.timeout, Duration::from_secs(7));
    assert_eq!(pc.task_package_size, 55);
    assert_eq!(
        pc.client_certificate,
        Some(ClientCertificate::Split {
            cert: "c.crt".into(),
            key: "c.key".into()
        })
    );
    assert_eq!(pc.ca_bundle.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(s.redis.url.expose(), "redis://10.0.0.1:7000");
    assert_eq!(s.redis.namespace, "env-ns");
    assert_eq!(s.store.url.expose(), "postgres://db.internal/env");
    assert_eq!(s.store.pool_size, 3);
    let w = &s.worker;
    assert_eq!(w.concurrency, 9);
    assert_eq!(w.rate_limit_per_second, Some(2.5));
    assert_eq!(w.job_timeout, Duration::from_secs(120));
    assert_eq!(w.shutdown_grace, Duration::from_secs(5));
    assert_eq!(w.max_attempts, 4);
    assert_eq!(w.backoff_base, Duration::from_secs(2));
    assert_eq!(w.backoff_cap, Duration::from_secs(20));
    assert_eq!(w.http_bind.to_string(), "0.0.0.0:9999");
    assert_eq!(
        w.dashboard_token.as_ref().map(|t| t.expose_secret()),
        Some("env-token")
    );
}

#[test]
fn api_key_file_from_env_replaces_inline_key_when_cleared() {
    let dir = Dir::new();
    let keyfile = dir.write("k", "from-file\n");
    let env = Env::empty()
        .with(
            "PORTAL_SYNC__PORTAL_CLIENT__API_KEY_FILE",
            keyfile.display().to_string(),
        )
        .with("PORTAL_SYNC__PORTAL_CLIENT__API_KEY", "");
    let (_d, r) = load_text(MINIMAL, &env);
    let s = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.portal_client.api_key.expose_secret(), "from-file");
    // Without clearing, both are set: the conflict names the key.
    let env = Env::empty().with(
        "PORTAL_SYNC__PORTAL_CLIENT__API_KEY_FILE",
        keyfile.display().to_string(),
    );
    let (p, _msg) = one_problem(MINIMAL, &env, "portal_client.api_key_file");
    assert_eq!(
        p.origin,
        Origin::Env("PORTAL_SYNC__PORTAL_CLIENT__API_KEY_FILE".into())
    );
}

#[test]
fn environment_alone_is_enough() {
    let env = Env::empty()
        .with("PORTAL_SYNC__PORTAL_CLIENT__URL", "https://p.example.org")
        .with("PORTAL_SYNC__PORTAL_CLIENT__API_KEY", "k");
    let (_d, r) = load_text("", &env);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn bad_env_value_names_the_variable() {
    let env = Env::empty().with("PORTAL_SYNC__PORTAL_CLIENT__TIMEOUT", "soon");
    let (p, msg) = one_problem(MINIMAL, &env, "portal_client.timeout");
    assert_eq!(
        p.origin,
        Origin::Env("PORTAL_SYNC__PORTAL_CLIENT__TIMEOUT".into())
    );
    assert!(
        msg.contains("environment variable PORTAL_SYNC__PORTAL_CLIENT__TIMEOUT"),
        "{msg}"
    );
    assert!(msg.contains("\"soon\""), "{msg}");

    let env = Env::empty().with("PORTAL_SYNC__PORTAL_CLIENT__TASK_PACKAGE_SIZE", "5000");
    let (_p, msg) = one_problem(MINIMAL, &env, "portal_client.task_package_size");
    assert!(msg.contains("1 to 1000"), "{msg}");

    let env = Env::empty().with("PORTAL_SYNC__PORTAL_CLIENT__CLIENT_CERTIFICATE", "a,b,c");
    one_problem(MINIMAL, &env, "portal_client.client_certificate");

    let env = Env::empty().with("PORTAL_SYNC__REDIS__URL", "http://r:6379");
    let (p, _msg) = one_problem(MINIMAL, &env, "redis.url");
    assert_eq!(p.origin, Origin::Env("PORTAL_SYNC__REDIS__URL".into()));
}

#[test]
fn unknown_env_var_with_the_prefix_is_rejected() {
    let env = Env::empty()
        .with("PORTAL_SYNC__WORKER__CONCURENCY", "3")
        .with("PORTAL_SYNC_UNRELATED", "ignored")
        .with("HOME", "/root");
    let (p, msg) = one_problem(MINIMAL, &env, "worker.concurency");
    assert_eq!(
        p.origin,
        Origin::Env("PORTAL_SYNC__WORKER__CONCURENCY".into())
    );
    assert!(msg.contains("PORTAL_SYNC__WORKER__CONCURENCY"), "{msg}");
}

#[test]
fn empty_env_value_falls_back_to_the_default() {
    let env = Env::empty().with("PORTAL_SYNC__PORTAL_CLIENT__TIMEOUT", "");
    let (_d, r) = load_text(&with_portal("  timeout: 5\n"), &env);
    let s = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.portal_client.timeout, Duration::from_secs(30));
}

#[test]
fn env_url_password_is_masked_in_errors() {
    let env = Env::empty().with("PORTAL_SYNC__STORE__URL", "mysql://u:topsecret@db/x");
    let (_p, msg) = one_problem(MINIMAL, &env, "store.url");
    assert!(!msg.contains("topsecret"), "{msg}");
}

#[test]
fn client_certificate_list_must_have_one_or_two_paths() {
    for yaml in [
        "  client_certificate: [a.crt, a.key, extra.pem]\n",
        "  client_certificate: []\n",
        "  client_certificate: 5\n",
        "  client_certificate: [a.crt, 7]\n",
    ] {
        let (p, msg) = one_problem(
            &with_portal(yaml),
            &Env::empty(),
            "portal_client.client_certificate",
        );
        assert!(matches!(p.kind, ProblemKind::Invalid { .. }), "{msg}");
        assert!(msg.contains("[certificate path, key path]"), "{msg}");
    }
}

#[test]
fn process_environment_is_read_for_the_prefix_only() {
    // Reads the real environment without changing it: whatever is there,
    // only settings variables are taken.
    assert!(std::env::var_os("PATH").is_some(), "test needs PATH set");
    let env = Env::from_process();
    assert_eq!(env.get("PATH"), None);
    let shown = format!("{env:?}");
    assert!(!shown.contains("\"PATH\""), "{shown}");
}

#[test]
fn non_utf8_file_is_rejected() {
    let dir = Dir::new();
    let path = dir.path("settings.yaml");
    std::fs::write(&path, b"portal_client:\n  url: \xff\xfe\n").expect("write");
    let err = Settings::load(&path, &Env::empty()).expect_err("not UTF-8");
    assert!(matches!(err, SettingsError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}
