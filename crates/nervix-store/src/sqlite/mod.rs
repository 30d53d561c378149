//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so every write goes through one connection owned by the
//! [`writer::Writer`] thread (no `SQLITE_BUSY` storms between our own connections), each
//! transaction opened with `BEGIN IMMEDIATE` (no lock upgrade that fails half-way when another
//! process writes). Reads run concurrently on a separate read-only pool, which WAL makes safe.
//! Most WAL checkpoint work runs on a connection of its own ([`checkpoint`]), off the write
//! path; the writer's own automatic checkpoint then finds little left to do.

mod checkpoint;
#[cfg(test)]
mod group_tests;
mod refusals;
// The one SQL implementation, compiled here against SQLite (and in `postgres.rs` against
// PostgreSQL): mounting the same files twice is the point.
#[allow(clippy::duplicate_mod)]
#[path = "../sql/impl/mod.rs"]
mod sql_impl;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, Sqlite};

use crate::sql::{retry_transient, Ending, Tx};
use crate::ConnectOptions;
use checkpoint::Checkpointer;
use writer::{Mode, Ran, Writer};

/// The database the mounted SQL (`sql_impl`) is written against.
type Db = Sqlite;
/// The store the mounted SQL implements [`crate::Store`] for.
type Backend = SqliteStore;

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    checkpointer: Checkpointer,
}

impl SqliteStore {
    pub(crate) const BACKEND: &'static str = "sqlite";

    pub async fn connect(url: &str, opts: &ConnectOptions) -> crate::Result<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged payout must survive a power cut or an OS crash, not only a crash
            // of this process: under WAL + NORMAL a commit returns before the log reaches the
            // disk, and the last transactions can vanish with the page cache. FULL syncs the
            // log on every COMMIT; group commit (`writer`) shares that one fsync among every
            // write of the group, which is what keeps its cost small (docs/PERFORMANCE.md).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let mut conn = base.connect().await?;
        sqlx::migrate!("migrations/sqlite").run(&mut conn).await?;
        conn.close().await?;
        let writer = Writer::start(base.clone(), opts.sqlite_writer_cpu).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.clamp(1, 3))
            .acquire_timeout(opts.acquire_timeout)
            // A local file cannot drop a connection the way a network can; the ping sqlx
            // would send on every checkout is a wasted round trip to the connection thread.
            .test_before_acquire(false)
            .connect_with(base.clone().read_only(true))
            .await?;
        let checkpointer = Checkpointer::start(base);
        let store = SqliteStore {
            writer,
            reader,
            checkpointer,
        };
        sql_impl::ensure_platform_accounts(&store).await?;
        Ok(store)
    }

    /// The database file a `sqlite:` URL names (`None` for an in-memory database).
    pub fn file_of(url: &str) -> crate::Result<Option<std::path::PathBuf>> {
        let options = SqliteConnectOptions::from_str(url)?;
        let path = options.get_filename();
        Ok(
            (path != std::path::Path::new(":memory:") && !path.as_os_str().is_empty())
                .then(|| path.to_owned()),
        )
    }

    /// Writes a consistent copy of the database at `url` to `dest`, a file that must not
    /// exist yet, while other connections (a running server's) go on reading and writing:
    /// `VACUUM INTO` reads one snapshot in a read transaction, so it neither waits for the
    /// writer nor holds it up, and the copy holds every table, signing keys stored in the
    /// database included. The copy is synced to disk before this returns.
    pub async fn backup_into(url: &str, dest: &std::path::Path) -> crate::Result<()> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = options.connect().await?;
        let dest_text = dest.to_str().ok_or_else(|| {
            crate::StoreError::Config(format!("{} is not a UTF-8 path", dest.display()))
        })?;
        let copied = sqlx::query("VACUUM INTO $1")
            .bind(dest_text)
            .execute(&mut conn)
            .await;
        conn.close().await?;
        copied?;
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| crate::StoreError::Config(format!("syncing {}: {e}", dest.display())))
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Runs `f` in a write transaction on the writer thread: its own (`BEGIN IMMEDIATE`, again
    /// from the start if SQLite reports a transient lock conflict), or a part of the writer's
    /// commit group. `f` commits, refuses having written nothing, or drops what it wrote (see
    /// [`Tx`]). `data` is what `f` works on, owned because the writer thread may outlive the
    /// caller's borrow. `f` may run more than once (the writer undoes and re-runs a group when
    /// one of its jobs dropped its part).
    async fn write<D, T, F>(&self, data: D, f: F) -> crate::Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(Tx<'c, Sqlite>, &'c D) -> BoxFuture<'c, crate::Result<T>>
            + Send
            + Sync
            + 'static,
    {
        let work = Arc::new((f, data));
        self.writer
            .run(move |conn, mode| {
                let work = work.clone();
                Box::pin(async move {
                    let (f, data) = &*work;
                    match mode {
                        Mode::Grouped => {
                            let before = refusals::baseline(conn).await;
                            let ending = Ending::new();
                            let tx = Tx::Grouped {
                                conn: &mut *conn,
                                ending: &ending,
                            };
                            let result = f(tx, data).await;
                            let clean = if ending.refused() {
                                refusals::check_unchanged(conn, before).await;
                                true
                            } else {
                                result.is_ok() && ending.committed()
                            };
                            Ran { result, clean }
                        }
                        Mode::Alone => Ran {
                            result: retry_transient(&mut (conn, f, data), |(conn, f, data)| {
                                Box::pin(async move {
                                    let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                                    f(Tx::Own(tx), data).await
                                })
                            })
                            .await,
                            clean: true,
                        },
                    }
                })
            })
            .await
    }

    /// Runs a single-statement write `f` (atomic on its own, also inside a commit group) on
    /// the writer thread. `f` may run more than once, like `write`'s. In a group, a refusal
    /// (a business error, or the statement refused by a constraint) leaves the group clean
    /// (see [`refusals::statement_refused`]): `f` must not return one after its statement
    /// changed rows.
    async fn write_one<D, T, F>(&self, data: D, f: F) -> crate::Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection, &'c D) -> BoxFuture<'c, crate::Result<T>>
            + Send
            + Sync
            + 'static,
    {
        let work = Arc::new((f, data));
        self.writer
            .run(move |conn, mode| {
                let work = work.clone();
                Box::pin(async move {
                    let (f, data) = &*work;
                    if mode == Mode::Alone {
                        // Autocommit: the statement is its own transaction.
                        let result = f(conn, data).await;
                        return Ran {
                            result,
                            clean: true,
                        };
                    }
                    let before = refusals::baseline(conn).await;
                    let result = f(&mut *conn, data).await;
                    let clean = match &result {
                        Ok(_) => true,
                        Err(e) if refusals::statement_refused(e) => {
                            refusals::check_unchanged(conn, before).await;
                            true
                        }
                        // Some failures roll back the whole transaction.
                        Err(_) => false,
                    };
                    Ran { result, clean }
                })
            })
            .await
    }

    async fn close_pools(&self) {
        self.reader.close().await;
        self.writer.close().await;
        self.checkpointer.close().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The connection that commits (the writer's) syncs the WAL on every commit, and the file
    /// is in WAL mode: `synchronous` is per connection, so the store's own is the one to ask.
    #[tokio::test]
    async fn the_writer_commits_durably_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("d.db").display());
        let store = SqliteStore::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        let (synchronous, journal): (i64, String) = store
            .write_one((), |conn, ()| {
                Box::pin(async move {
                    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                        .fetch_one(&mut *conn)
                        .await?;
                    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                        .fetch_one(&mut *conn)
                        .await?;
                    Ok((sync, journal))
                })
            })
            .await
            .unwrap();
        // 2 = FULL (0 OFF, 1 NORMAL, 3 EXTRA).
        assert_eq!(synchronous, 2, "PRAGMA synchronous on the writer");
        assert_eq!(journal, "wal");
        store.close_pools().await;
    }

    /// `.cargo/config.toml` reaches the SQLite that libsqlite3-sys bundles.
    #[tokio::test]
    async fn built_with_the_workspace_compile_options() {
        let mut conn = SqliteConnectOptions::from_str("sqlite::memory:")
            .unwrap()
            .connect()
            .await
            .unwrap();
        let options: Vec<String> =
            sqlx::query_scalar("SELECT compile_options FROM pragma_compile_options")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }
}
