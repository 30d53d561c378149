//! Responses stored under an `Idempotency-Key`, in the transaction of the work they answer.
//!
//! An operation given a [`SaveResponse`] claims the key with its first write (an insert that
//! does nothing when the key exists), does its work, renders its outcome and stores the
//! response before it commits: the work and its response are kept together or not at all,
//! and nothing is ever reserved beyond the transaction. On PostgreSQL a concurrent request
//! with the same key waits on the uncommitted insert, then finds the key used; on SQLite the
//! single writer runs them one after the other. Either way the work runs once, and the
//! losers fail with `Conflict::IdempotencyKeyUsed` having written nothing (a refusal, which
//! keeps a SQLite commit group clean), then read and replay the stored response.
//!
//! An operation that may refuse before claiming the key (a read, or an update that matched
//! nothing) asks [`key_used`] first: a duplicate of a request that already succeeded, whose
//! work may be the very reason for the refusal, is told the key is used instead.

use chrono::{DateTime, Utc};

use super::{Backend, Conn};
use crate::model::*;
use crate::{Conflict, Result, StoreError};

/// The error of an operation whose key already answered a request.
pub(super) const KEY_USED: StoreError = StoreError::Conflict(Conflict::IdempotencyKeyUsed);

/// Claims the key of `save` in the current transaction; false (and nothing written) when it
/// is already used. The row holds no response until [`store_response`] writes it, before the
/// commit; it is never committed without one.
pub(super) async fn claim_key<T>(conn: &mut Conn, save: &SaveResponse<T>) -> Result<bool> {
    let s = &save.scope;
    let n = sqlx::query(
        "INSERT INTO idempotency_keys \
         (agent_id, method, path, key, request_hash, status, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, 0, '', $6) \
         ON CONFLICT (agent_id, method, path, key) DO NOTHING",
    )
    .bind(s.agent_id)
    .bind(&s.method)
    .bind(&s.path)
    .bind(&s.key)
    .bind(&save.request_hash)
    .bind(save.created_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Whether a response is stored under the key of `save` (a read: writes nothing).
pub(super) async fn key_used<T>(conn: &mut Conn, save: Option<&SaveResponse<T>>) -> Result<bool> {
    let Some(save) = save else {
        return Ok(false);
    };
    let s = &save.scope;
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT status FROM idempotency_keys \
         WHERE agent_id = $1 AND method = $2 AND path = $3 AND key = $4",
    )
    .bind(s.agent_id)
    .bind(&s.method)
    .bind(&s.path)
    .bind(&s.key)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// Stores the response `save` renders for `outcome` under the key claimed by [`claim_key`];
/// when it renders none (not a success), gives the key up again, so that nothing of it is
/// committed.
pub(super) async fn store_response<T>(
    conn: &mut Conn,
    save: &SaveResponse<T>,
    outcome: &T,
) -> Result<()> {
    let s = &save.scope;
    let q = match (save.render)(outcome) {
        Some((status, body)) => sqlx::query(
            "UPDATE idempotency_keys SET status = $5, body = $6 \
             WHERE agent_id = $1 AND method = $2 AND path = $3 AND key = $4",
        )
        .bind(s.agent_id)
        .bind(&s.method)
        .bind(&s.path)
        .bind(&s.key)
        .bind(i64::from(status))
        .bind(body),
        None => sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE agent_id = $1 AND method = $2 AND path = $3 AND key = $4",
        )
        .bind(s.agent_id)
        .bind(&s.method)
        .bind(&s.path)
        .bind(&s.key),
    };
    if q.execute(conn).await?.rows_affected() != 1 {
        return Err(StoreError::Corrupt(
            "the claimed idempotency key is gone".to_owned(),
        ));
    }
    Ok(())
}

#[tracing::instrument(skip_all, name = "store.idempotent_response", level = "debug")]
pub(super) async fn idempotent_response(
    store: &Backend,
    scope: &IdempotencyScope,
) -> Result<Option<IdempotentResponse>> {
    let row: Option<(String, i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT request_hash, status, body, created_at FROM idempotency_keys \
         WHERE agent_id = $1 AND method = $2 AND path = $3 AND key = $4",
    )
    .bind(scope.agent_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key)
    .fetch_optional(store.reader())
    .await?;
    let Some((request_hash, status, body, created_at)) = row else {
        return Ok(None);
    };
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| {
            StoreError::Corrupt(format!("stored idempotent response has status {status}"))
        })?;
    Ok(Some(IdempotentResponse {
        request_hash,
        status,
        body,
        created_at,
    }))
}
