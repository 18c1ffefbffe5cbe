//! Which Redis the demo uses, and the private `redis-server` it starts when
//! none is given.
//!
//! In order: `REDIS_URL`; the settings file's `redis.url` (when the file
//! exists); a private `redis-server` from `PATH` on a free loopback port, with
//! its data in the demo folder, stopped at the end. A Redis that does not
//! answer `PING` is passed over with a note. The demo never falls back to
//! `redis://127.0.0.1:6379` unasked: that Redis may be someone's real queue. On a Redis the demo did not start, it works in a
//! namespace of its own (`portal-sync-demo-<id>`) and deletes that
//! namespace's keys at the end, so it never touches another queue.
//!
//! This is the workspace's one launcher for a shipped binary; tests use
//! `job_queue::testing::RedisServer`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use task_model::settings::DEFAULT_NAMESPACE;
use tokio::process::{Child, Command};

use crate::exit::redact_url;

/// How long a Redis has to answer `PING` before it is passed over.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a private server has to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the chosen Redis came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisOrigin {
    EnvVar,
    SettingsFile(PathBuf),
    Private,
}

/// The Redis the demo runs on.
#[derive(Debug)]
pub struct DemoRedis {
    /// The URL (may hold a password: show it through [`DemoRedis::shown_url`]).
    pub url: String,
    pub origin: RedisOrigin,
    /// Key prefix of everything the demo writes.
    pub namespace: String,
    server: Option<PrivateRedis>,
}

/// Why no Redis could be had.
#[derive(Debug, thiserror::Error)]
pub enum NoRedis {
    #[error(
        "the demo needs Redis, and found none: {tried}; install Redis (e.g. `apt install redis-server` or `brew install redis`) so that `redis-server` is on PATH, or set REDIS_URL=redis://HOST:PORT"
    )]
    NotFound { tried: String },
    #[error("could not start the private redis-server ({path}): {reason}")]
    Start { path: String, reason: String },
}

impl DemoRedis {
    /// Finds or starts a Redis (module doc). `settings_file` is the global
    /// `--config` path; `dir` is the demo folder. `notes` receives one line
    /// per Redis passed over.
    pub async fn provide(
        settings_file: &Path,
        dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<DemoRedis, NoRedis> {
        let mut tried = Vec::new();
        let own_namespace = || {
            format!(
                "portal-sync-demo-{}",
                ulid::Ulid::new().to_string().to_ascii_lowercase()
            )
        };

        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.trim().is_empty()
        {
            match ping(&url).await {
                Ok(()) => {
                    return Ok(DemoRedis {
                        url,
                        origin: RedisOrigin::EnvVar,
                        namespace: own_namespace(),
                        server: None,
                    });
                }
                Err(e) => {
                    notes.push(format!(
                        "REDIS_URL={} does not answer ({e}); looking further",
                        redact_url(&url)
                    ));
                    tried.push(format!("REDIS_URL={} unreachable", redact_url(&url)));
                }
            }
        }

        if settings_file.exists() {
            match crate::context::load_settings(settings_file) {
                Ok(settings) => {
                    let url = settings.redis.url.expose().to_string();
                    match ping(&url).await {
                        Ok(()) => {
                            return Ok(DemoRedis {
                                url,
                                origin: RedisOrigin::SettingsFile(settings_file.to_owned()),
                                namespace: own_namespace(),
                                server: None,
                            });
                        }
                        Err(e) => {
                            notes.push(format!(
                                "redis.url of {} ({}) does not answer ({e}); looking further",
                                settings_file.display(),
                                settings.redis.url.redacted()
                            ));
                            tried.push(format!("{} unreachable", settings.redis.url.redacted()));
                        }
                    }
                }
                Err(e) => notes.push(format!(
                    "ignoring the settings file {} for Redis: {}",
                    settings_file.display(),
                    e.lines().join("; ")
                )),
            }
        }

        match find_on_path("redis-server") {
            Some(path) => {
                let server = PrivateRedis::start(&path, &dir.join("redis")).await?;
                Ok(DemoRedis {
                    url: server.url(),
                    origin: RedisOrigin::Private,
                    namespace: DEFAULT_NAMESPACE.to_owned(),
                    server: Some(server),
                })
            }
            None => {
                if tried.is_empty() {
                    tried.push("REDIS_URL is not set".to_owned());
                }
                tried.push("no redis-server on PATH".to_owned());
                Err(NoRedis::NotFound {
                    tried: tried.join(", "),
                })
            }
        }
    }

    /// The URL with any password masked.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// One line for people: which Redis, from where.
    pub fn describe(&self) -> String {
        let url = self.shown_url();
        match &self.origin {
            RedisOrigin::EnvVar => format!("{url} (REDIS_URL), namespace {}", self.namespace),
            RedisOrigin::SettingsFile(path) => format!(
                "{url} (from {}), namespace {}",
                path.display(),
                self.namespace
            ),
            RedisOrigin::Private => format!("private redis-server at {url} (stopped at the end)"),
        }
    }

    /// `env`, `settings` or `private`, for the JSON summary.
    pub fn origin_name(&self) -> &'static str {
        match self.origin {
            RedisOrigin::EnvVar => "env",
            RedisOrigin::SettingsFile(_) => "settings",
            RedisOrigin::Private => "private",
        }
    }

    /// Stops the private server, or deletes the demo namespace's keys from a
    /// Redis the demo did not start. Answers a note when something was left.
    pub async fn finish(self) -> Option<String> {
        match self.server {
            Some(server) => server.stop().await.err(),
            None => delete_namespace(&self.url, &self.namespace)
                .await
                .err()
                .map(|e| {
                    format!(
                        "could not delete the demo's keys (namespace {}) from {}: {e}",
                        self.namespace,
                        redact_url(&self.url)
                    )
                }),
        }
    }
}

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PING_TIMEOUT))
        .set_response_timeout(Some(PING_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn ping(url: &str) -> redis::RedisResult<()> {
    let mut conn = connect(url).await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}

/// Deletes every key naming `namespace` (the queue's `{ns:queue}` keys, the
/// run lock and last-run record).
async fn delete_namespace(url: &str, namespace: &str) -> redis::RedisResult<()> {
    let mut conn = connect(url).await?;
    let pattern = format!("*{namespace}*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        for key in keys {
            redis::cmd("UNLINK")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `redis-server` child process on 127.0.0.1, without persistence.
#[derive(Debug)]
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start(program: &Path, dir: &Path) -> Result<PrivateRedis, NoRedis> {
        let fail = |reason: String| NoRedis::Start {
            path: program.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let mut last = String::new();
        // A port found free can be taken before the server binds it; try a
        // few.
        for _ in 0..5 {
            let port = free_port().map_err(|e| fail(format!("no free local port: {e}")))?;
            let mut child = Command::new(program)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // If the demo dies, so does its Redis.
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| fail(e.to_string()))?;
            let url = format!("redis://127.0.0.1:{port}/");
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if ping(&url).await.is_ok() {
                    return Ok(PrivateRedis { child, port });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "it exited ({status}); see {}",
                        dir.join("redis.log").display()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    last = format!("it did not answer PING within {START_TIMEOUT:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(fail(last))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `SHUTDOWN NOSAVE`, then waits for the process; kills it if it lingers.
    async fn stop(mut self) -> Result<(), String> {
        if let Ok(mut conn) = connect(&self.url()).await {
            // The server closes the connection instead of answering.
            let _ = redis::cmd("SHUTDOWN")
                .arg("NOSAVE")
                .query_async::<()>(&mut conn)
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for the private redis-server: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Ok(())
            }
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
