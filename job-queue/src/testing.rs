//! Private Redis servers for tests (feature `testing`): the one place in the
//! workspace that starts `redis-server` processes. Each server runs from
//! `redis-server` on `PATH`, on a free port of 127.0.0.1, in its own temp
//! directory, and is killed when dropped. Never the machine's shared Redis.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    aof: bool,
    extra: Vec<String>,
}

/// Picks a port nobody listens on right now.
///
/// # Errors
/// When no local port can be bound.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} within {timeout:?}"),
    ))
}

fn signal(pid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -{sig} {pid} failed: {status}"
        )))
    }
}

impl RedisServer {
    /// Starts a server without persistence.
    ///
    /// # Errors
    /// When `redis-server` is missing or does not answer within 10 s.
    pub fn start() -> io::Result<Self> {
        Self::launch(false, Vec::new())
    }

    /// Starts a server with an append-only file fsynced on every write, so
    /// what was acknowledged survives [`RedisServer::restart`] and crashes.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with_aof() -> io::Result<Self> {
        Self::launch(true, Vec::new())
    }

    /// Starts a server with extra `redis-server` arguments (e.g. cluster mode).
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with_args(aof: bool, extra: Vec<String>) -> io::Result<Self> {
        Self::launch(aof, extra)
    }

    fn launch(aof: bool, extra: Vec<String>) -> io::Result<Self> {
        let mut dir = tempfile::Builder::new()
            .prefix("job-queue-redis-")
            .tempdir()?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = Self {
                child: None,
                port,
                dir,
                aof,
                extra: extra.clone(),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = Some(e);
                    dir = server.take_dir()?;
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn take_dir(mut self) -> io::Result<tempfile::TempDir> {
        self.kill_now();
        let replacement = tempfile::Builder::new()
            .prefix("job-queue-redis-")
            .tempdir()?;
        Ok(std::mem::replace(&mut self.dir, replacement))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .arg("--daemonize")
            .arg("no");
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("starting redis-server from PATH: {e}"))
        })?;
        self.child = Some(child);
        let port = self.port;
        let waited = wait_until(
            "redis-server answering PING",
            Duration::from_secs(10),
            || ping(port),
        );
        if waited.is_err()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(io::Error::other(format!(
                "redis-server on port {port} exited: {status}; log in {}",
                self.dir.path().display()
            )));
        }
        waited
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while running.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server gracefully (SIGTERM: AOF flushed) and waits for it.
    ///
    /// # Errors
    /// When the process cannot be signalled.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (with AOF, the
    /// data comes back).
    ///
    /// # Errors
    /// When it does not answer again within 10 s.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    ///
    /// # Errors
    /// As those.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    ///
    /// # Errors
    /// When the process cannot be signalled.
    pub fn pause(&self) -> io::Result<()> {
        match self.pid() {
            Some(pid) => signal(pid, "STOP"),
            None => Ok(()),
        }
    }

    /// Thaws a paused server (SIGCONT).
    ///
    /// # Errors
    /// When the process cannot be signalled.
    pub fn resume(&self) -> io::Result<()> {
        match self.pid() {
            Some(pid) => signal(pid, "CONT"),
            None => Ok(()),
        }
    }

    /// `INFO memory` field `used_memory`, in bytes.
    ///
    /// # Errors
    /// When the server does not answer.
    pub fn used_memory(&self) -> redis::RedisResult<u64> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let info: String = redis::cmd("INFO").arg("memory").query(&mut conn)?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A paused server ignores SIGKILL until continued on some kernels' views; be sure.
            let _ = signal(pid, "CONT");
        }
        self.kill_now();
    }
}

/// A local Redis Cluster of `n` masters (no replicas), built with
/// `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) cluster-mode servers and joins them.
    ///
    /// # Errors
    /// When a node does not start or the cluster does not become ready in 20 s.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(RedisServer::start_with_args(
                false,
                vec![
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-config-file".to_owned(),
                    "nodes.conf".to_owned(),
                    "--cluster-node-timeout".to_owned(),
                    "2000".to_owned(),
                ],
            )?);
        }
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port()));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cmd.output().map_err(|e| {
            io::Error::new(e.kind(), format!("running redis-cli --cluster create: {e}"))
        })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        let ports: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
        wait_until(
            "cluster_state:ok on every node",
            Duration::from_secs(20),
            || {
                ports.iter().all(|p| {
                    Command::new("redis-cli")
                        .args(["-p", &p.to_string(), "cluster", "info"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                        .unwrap_or(false)
                })
            },
        )?;
        Ok(Self { nodes })
    }

    /// `redis://127.0.0.1:<port>/` of every node.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// Path of a binary built next to the running test executable (e.g. the
/// `job-queue-test-worker`), found through `CARGO_BIN_EXE_*` or the target dir.
#[must_use]
pub fn sibling_binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap_or_default();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
