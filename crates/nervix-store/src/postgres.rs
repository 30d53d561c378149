//! PostgreSQL, for several `nervix` nodes sharing one database.

use std::str::FromStr;

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Postgres;

use crate::sql::{retry_transient, Tx};
use crate::ConnectOptions;

// The one SQL implementation, compiled here against PostgreSQL (and in `sqlite/mod.rs`
// against SQLite): mounting the same files twice is the point.
#[allow(clippy::duplicate_mod)]
#[path = "sql/impl/mod.rs"]
mod sql_impl;

/// The database the mounted SQL (`sql_impl`) is written against.
type Db = Postgres;
/// The store the mounted SQL implements [`crate::Store`] for.
type Backend = PgStore;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(crate) const BACKEND: &'static str = "postgres";

    pub async fn connect(url: &str, opts: &ConnectOptions) -> crate::Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?, opts).await
    }

    /// Connects with explicit options (tests use this to pin a private schema).
    pub async fn connect_with(
        options: PgConnectOptions,
        opts: &ConnectOptions,
    ) -> crate::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let store = PgStore { pool };
        sql_impl::ensure_platform_accounts(&store).await?;
        Ok(store)
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `f` in a transaction, again from the start if PostgreSQL aborted it to break a
    /// deadlock or a serialization conflict. `f` commits; a transaction it drops uncommitted
    /// is rolled back. (Same signature as the SQLite backend's, whose writer thread needs
    /// `data` owned.)
    async fn write<D, T, F>(&self, data: D, f: F) -> crate::Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(Tx<'c, Postgres>, &'c D) -> BoxFuture<'c, crate::Result<T>>
            + Send
            + Sync
            + 'static,
    {
        retry_transient(&mut (&self.pool, &f, &data), |&mut (pool, f, data)| {
            Box::pin(async move {
                let tx = pool.begin().await?;
                f(Tx::Own(tx), data).await
            })
        })
        .await
    }

    /// Runs a single-statement write `f` (atomic on its own) on a pooled connection.
    async fn write_one<D, T, F>(&self, data: D, f: F) -> crate::Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut PgConnection, &'c D) -> BoxFuture<'c, crate::Result<T>>
            + Send
            + Sync
            + 'static,
    {
        let mut conn = self.pool.acquire().await?;
        f(&mut conn, &data).await
    }

    async fn close_pools(&self) {
        self.pool.close().await;
    }
}
