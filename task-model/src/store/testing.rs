//! Throwaway task stores for tests of this and other crates (cargo feature
//! `testing`): each [`TestDatabase`] is a fresh SQLite file in its own temp
//! directory, or a fresh PostgreSQL database, removed when dropped — also when
//! the test fails — so tests run in parallel and leave nothing behind.
//!
//! PostgreSQL is found through [`POSTGRES_ENV`] (default
//! [`DEFAULT_POSTGRES_URL`]). If no server answers, [`TestDatabase::postgres`]
//! panics with a message saying how to start one or how to opt out; only an
//! explicit `PORTAL_SYNC_TEST_POSTGRES=skip` makes it answer `None`.
//!
//! ```no_run
//! # async fn t() {
//! use task_model::store::testing::TestDatabase;
//! let db = TestDatabase::sqlite();
//! let store = db.open().await;
//! // … or pass `db.url()` to a binary under test.
//! # let _ = store; }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::{AnyStore, StoreError, open_store};

/// The environment variable naming the PostgreSQL server tests use (a URL
/// whose database is used only to create and drop the test databases), or
/// `skip` to opt out of PostgreSQL tests explicitly.
pub const POSTGRES_ENV: &str = "PORTAL_SYNC_TEST_POSTGRES";

/// This machine's server, used when [`POSTGRES_ENV`] is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which backend a [`TestDatabase`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, private store location; removed on drop.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: Backend,
    /// SQLite: the directory holding the file.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server URL and the database to drop.
    postgres: Option<(String, String)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "portal_sync_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database (path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{name}"));
            parsed.to_string()
        }
        Err(_) => format!("{}/{name}", url.trim_end_matches('/')),
    }
}

impl TestDatabase {
    /// A new SQLite file (not yet created: the store creates it on open).
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::Builder::new()
            .prefix("portal-sync-store-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for a test store: {e}"));
        let url = format!("sqlite://{}", dir.path().join("tasks.db").display());
        TestDatabase {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new, empty PostgreSQL database on the test server; `None` only when
    /// [`POSTGRES_ENV`] is `skip`. Panics, saying what to do, when no server
    /// answers.
    pub async fn postgres() -> Option<TestDatabase> {
        let server = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        if server.trim().eq_ignore_ascii_case("skip") {
            return None;
        }
        let mut admin =
            match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&server))
                .await
            {
                Ok(Ok(conn)) => conn,
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer within 10 s".to_string(),
                    };
                    panic!(
                        "PostgreSQL tests need a server, and none answers at {} ({why}).\n\
                     Start one (on this machine: `pg_ctlcluster --skip-systemctl-redirect \
                     $(ls /etc/postgresql) main start`), point {POSTGRES_ENV} at another \
                     (postgres://USER@HOST:PORT/DB, a user allowed to create databases), \
                     or opt out explicitly with {POSTGRES_ENV}=skip.",
                        super::redact_url(&server)
                    )
                }
            };
        let name = unique_name();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create test database {name} on {}: {e}",
                    super::redact_url(&server)
                )
            });
        let _ = admin.close().await;
        Some(TestDatabase {
            url: with_database(&server, &name),
            backend: Backend::Postgres,
            _dir: None,
            postgres: Some((server, name)),
        })
    }

    /// The store URL (`sqlite://…` or `postgres://…`), for binaries under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens (creating and migrating) the store.
    pub async fn open(&self) -> AnyStore {
        self.try_open()
            .await
            .unwrap_or_else(|e| panic!("cannot open test store {}: {e}", self.url))
    }

    pub async fn try_open(&self) -> Result<AnyStore, StoreError> {
        open_store(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a short-lived thread with its own runtime drops the database.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await
                    {
                        eprintln!("could not drop test database {name}: {e}");
                    }
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Runs raw SQL on a store (tests that play the host writing rows directly).
pub async fn execute_sql(store: &AnyStore, sql: &str) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match store {
        AnyStore::Sqlite(s) => sqlx::raw_sql(sql)
            .execute(s.pool())
            .await
            .map(|r| r.rows_affected()),
        AnyStore::Postgres(s) => sqlx::raw_sql(sql)
            .execute(s.pool())
            .await
            .map(|r| r.rows_affected()),
    }
}

/// Runs a query answering one integer (e.g. `SELECT COUNT(*) FROM …`).
pub async fn query_i64(store: &AnyStore, sql: &str) -> Result<i64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match store {
        AnyStore::Sqlite(s) => sqlx::query_scalar::<_, i64>(sql).fetch_one(s.pool()).await,
        AnyStore::Postgres(s) => sqlx::query_scalar::<_, i64>(sql).fetch_one(s.pool()).await,
    }
}
