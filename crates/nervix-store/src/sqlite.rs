//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly one connection
//! (no `SQLITE_BUSY` storms between our own connections), each transaction opened with
//! `BEGIN IMMEDIATE` (no lock upgrades that fail half-way when another process writes).
//! Reads run concurrently on a separate pool, which WAL makes safe.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::sql::{impl_sql_store, Dialect};
use crate::ConnectOptions;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.clamp(1, 3))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.read_only(true))
            .await?;
        let store = SqliteStore { writer, reader };
        store.ensure_platform_accounts().await?;
        Ok(store)
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// For single-statement writes, which need no explicit transaction.
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> crate::Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn close_pools(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

impl Dialect for SqliteStore {
    const LOCK_ROW: &'static str = "";
}

impl_sql_store!(SqliteStore, sqlx::Sqlite);
