//! Fresh, isolated stores for tests: a SQLite file in a temporary folder, or a private schema
//! in the PostgreSQL database named by `NERVIX_TEST_POSTGRES_URL`.
//!
//! Test scaffolding: a setup failure panics with a message, which is what a test wants.
#![allow(clippy::expect_used)]

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

use crate::{ConnectOptions, PgStore, SqliteStore, Store};

/// A backend that tests run on; [`backend_matrix!`](crate::backend_matrix) runs every case on
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh, empty store on this backend; `None` when PostgreSQL tests skip (see
    /// [`postgres_url`]).
    pub async fn test_store(self) -> Option<TestStore> {
        match self {
            Backend::Sqlite => Some(sqlite().await),
            Backend::Postgres => postgres().await,
        }
    }
}

/// Runs each test case on both backends: one `#[tokio::test]` per case and backend, named
/// `sqlite::<case>` and `postgres::<case>` inside the module that invokes the macro.
///
/// ```text
/// nervix_store::backend_matrix! {
///     run = crate::support::run;       // optional: `, workers = 2` after the runner
///     case_a,
///     case_b [multi],
/// }
/// ```
///
/// - **Cases** are async functions of the invoking module, listed by name. The macro does not
///   fix their signature: it hands each one, uncalled, to the runner.
/// - **The runner** is an async function `run(backend: Backend, case: F)` that each test crate
///   supplies for its kind of case: the store's conformance suite opens a fresh store on the
///   backend, calls `case(store)` and tears the store down; the server's tests call
///   `case(backend)` and let the case start a server. A runner that finds the backend not
///   configured (PostgreSQL without `NERVIX_TEST_POSTGRES_URL`, outside CI) returns without
///   calling the case, and the test passes after printing SKIP. Its path is resolved inside the
///   generated `sqlite` and `postgres` modules, so write it from `crate::`.
/// - **The runtime**: a case runs on a current-thread runtime, or with `workers = N` after the
///   runner, on a multi-thread runtime with `N` workers; a case marked `[multi]` runs on a
///   multi-thread runtime with 4 workers either way (for races between tasks).
///
/// The invoking crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dependency.
#[macro_export]
macro_rules! backend_matrix {
    (run = $run:path, workers = $workers:tt; $($cases:tt)*) => {
        $crate::backend_matrix!(@matrix $run, [$workers]; $($cases)*);
    };
    (run = $run:path; $($cases:tt)*) => {
        $crate::backend_matrix!(@matrix $run, []; $($cases)*);
    };
    (@matrix $run:path, $workers:tt; $($case:ident $([$multi:ident])?),* $(,)?) => {
        mod sqlite {
            $($crate::backend_matrix!(@test $run, Sqlite, $case, $workers, [$($multi)?]);)*
        }
        mod postgres {
            $($crate::backend_matrix!(@test $run, Postgres, $case, $workers, [$($multi)?]);)*
        }
    };
    (@test $run:path, $backend:ident, $case:ident, [$($workers:tt)?], [multi]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            $run($crate::testing::Backend::$backend, super::$case).await;
        }
    };
    (@test $run:path, $backend:ident, $case:ident, [], []) => {
        #[tokio::test]
        async fn $case() {
            $run($crate::testing::Backend::$backend, super::$case).await;
        }
    };
    (@test $run:path, $backend:ident, $case:ident, [$workers:tt], []) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
        async fn $case() {
            $run($crate::testing::Backend::$backend, super::$case).await;
        }
    };
}

/// Keeps the temporary folder of a SQLite test store alive.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("nervix.db").display());
    let store = SqliteStore::connect(&url, &ConnectOptions::default())
        .await
        .expect("open sqlite store");
    TestStore {
        store: Arc::new(store),
        url,
        _dir: Some(dir),
    }
}

/// The PostgreSQL URL for tests, or `None` (the caller prints that it skips). In CI
/// (`CI=true`) a missing URL is a hard failure: nothing may silently skip there.
pub fn postgres_url() -> Option<String> {
    match std::env::var("NERVIX_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "NERVIX_TEST_POSTGRES_URL must be set in CI"
            );
            eprintln!("SKIP: NERVIX_TEST_POSTGRES_URL is not set; PostgreSQL tests skip");
            None
        }
    }
}

/// Creates a new, empty schema in the test database and returns its name.
async fn create_schema(base: &str) -> String {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to NERVIX_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    conn.close().await.ok();
    schema
}

/// A database URL for a new, empty schema of the test database, for code that connects by URL
/// (a server under test); `None` when PostgreSQL tests skip.
pub async fn postgres_database_url() -> Option<String> {
    let base = postgres_url()?;
    let schema = create_schema(&base).await;
    Some(with_search_path(&base, &schema))
}

/// A store on a new, empty schema of the test database; `None` when PostgreSQL tests skip.
pub async fn postgres() -> Option<TestStore> {
    let base = postgres_url()?;
    let schema = create_schema(&base).await;
    let url = with_search_path(&base, &schema);
    let options = PgConnectOptions::from_str(&base)
        .expect("parse postgres url")
        .options([("search_path", schema.as_str())]);
    let store = PgStore::connect_with(options, &ConnectOptions::default())
        .await
        .expect("open postgres store");
    Some(TestStore {
        store: Arc::new(store),
        url,
        _dir: None,
    })
}

/// `base` with `options=-csearch_path=schema`, so a server started from the URL uses the schema.
pub fn with_search_path(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}
