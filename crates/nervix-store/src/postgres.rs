//! PostgreSQL, for several `nervix` nodes sharing one database.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::sql::{impl_sql_store, Dialect};
use crate::ConnectOptions;

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
        store.ensure_platform_accounts().await?;
        Ok(store)
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// For single-statement writes, which need no explicit transaction.
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> crate::Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn close_pools(&self) {
        self.pool.close().await;
    }
}

impl Dialect for PgStore {
    const LOCK_ROW: &'static str = " FOR UPDATE";
}

impl_sql_store!(PgStore, sqlx::Postgres);
