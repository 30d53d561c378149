//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so every write goes through one connection owned by the
//! [`writer::Writer`] thread (no `SQLITE_BUSY` storms between our own connections), each
//! transaction opened with `BEGIN IMMEDIATE` (no lock upgrade that fails half-way when another
//! process writes). Reads run concurrently on a separate read-only pool, which WAL makes safe.
//! Most WAL checkpoint work runs on a connection of its own ([`checkpoint`]), off the write
//! path; the writer's own automatic checkpoint then finds little left to do.

mod checkpoint;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, Sqlite, Transaction};

use crate::sql::impl_sql_store;
use crate::ConnectOptions;
use checkpoint::Checkpointer;
use writer::{Mode, Writer};

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
            // WAL + NORMAL is durable against application crashes; a power cut can lose the
            // last transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let mut conn = base.connect().await?;
        sqlx::migrate!("migrations/sqlite").run(&mut conn).await?;
        let writer = Writer::start(conn, base.clone())?;
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
        store.ensure_platform_accounts().await?;
        Ok(store)
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Runs `f` in a write transaction on the writer thread: its own (`BEGIN IMMEDIATE`, again
    /// from the start if SQLite reports a transient lock conflict), or a savepoint of the
    /// writer's commit group. `f` commits; a transaction it drops uncommitted is rolled back.
    /// `data` is what `f` works on, owned because the writer thread may outlive the caller's
    /// borrow.
    async fn write<D, T, F>(&self, data: D, f: F) -> crate::Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(Transaction<'c, Sqlite>, &'c D) -> BoxFuture<'c, crate::Result<T>>
            + Send
            + Sync
            + 'static,
    {
        self.writer
            .run(move |conn, mode| {
                Box::pin(async move {
                    match mode {
                        Mode::Grouped => {
                            let tx = conn.begin().await?;
                            f(tx, &data).await
                        }
                        Mode::Alone => crate::sql::retry_transient!({
                            let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                            f(tx, &data).await
                        }),
                    }
                })
            })
            .await
    }

    /// Runs a single-statement write `f` (atomic on its own, also inside a commit group) on
    /// the writer thread.
    async fn write_one<D, T, F>(&self, data: D, f: F) -> crate::Result<T>
    where
        D: Send + 'static,
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection, D) -> BoxFuture<'c, crate::Result<T>>
            + Send
            + 'static,
    {
        self.writer.run(move |conn, _| f(conn, data)).await
    }

    async fn close_pools(&self) {
        self.reader.close().await;
        self.writer.close().await;
        self.checkpointer.close().await;
    }
}

impl_sql_store!(SqliteStore, sqlx::Sqlite);
