//! Challenges, enrollment, login and tokens.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::agents::insert_agent;
use super::housekeeping::insert_audit;
use super::{Backend, Conn};
use crate::model::*;
use crate::sql::rows::*;
use crate::{Conflict, Result, StoreError};

async fn insert_token_row(conn: &mut Conn, t: &TokenRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO tokens (jti, agent_id, kid, issued_at, expires_at) VALUES ($1, $2, $3, $4, \
         $5)",
    )
    .bind(t.jti)
    .bind(t.agent_id)
    .bind(&t.kid)
    .bind(t.issued_at)
    .bind(t.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a challenge consumed; false when it is no longer usable (consumed meanwhile,
/// expired, locked), in which case nothing was written.
async fn consume_challenge(conn: &mut Conn, id: Uuid, at: DateTime<Utc>) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE challenges SET consumed_at = $1 WHERE id = $2 AND consumed_at IS NULL AND \
         expires_at > $1 AND failures < $3",
    )
    .bind(at)
    .bind(id)
    .bind(crate::MAX_CHALLENGE_FAILURES)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// What completing with a challenge that is no longer usable yields.
const CHALLENGE_USED: StoreError = StoreError::Conflict(Conflict::ChallengeUsed);

/// Inserts a challenge; with `handle`, only if neither it nor the challenge's public
/// key is enrolled yet (one statement, so the check and the insert cannot drift).
async fn insert_challenge_unless_enrolled(
    store: &Backend,
    c: &NewChallenge,
    handle: Option<&str>,
) -> Result<bool> {
    let data = (c.clone(), handle.map(str::to_owned));
    store
        .write_one(data, |conn, (c, handle)| {
            Box::pin(async move {
                let guard = if handle.is_some() {
                    " WHERE NOT EXISTS (SELECT 1 FROM agents WHERE handle = $9 OR public_key = $4)"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO challenges (id, purpose, agent_id, public_key, challenge, \
                     payload, failures, expires_at, created_at) SELECT $1, $2, $3, $4, $5, $6, 0, \
                     $7, $8{guard}"
                );
                let mut q = sqlx::query(&sql)
                    .bind(c.id)
                    .bind(c.purpose.as_str())
                    .bind(c.agent_id)
                    .bind(&c.public_key)
                    .bind(&c.challenge)
                    .bind(c.payload.as_ref().map(Json))
                    .bind(c.expires_at)
                    .bind(c.created_at);
                if let Some(h) = handle {
                    q = q.bind(h);
                }
                Ok(q.execute(&mut *conn).await?.rows_affected() == 1)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.insert_challenge", level = "debug")]
pub(super) async fn insert_challenge(store: &Backend, c: &NewChallenge) -> Result<()> {
    insert_challenge_unless_enrolled(store, c, None).await?;
    Ok(())
}

#[tracing::instrument(skip_all, name = "store.insert_enrollment_challenge", level = "debug")]
pub(super) async fn insert_enrollment_challenge(
    store: &Backend,
    c: &NewChallenge,
    handle: &str,
) -> Result<Option<Conflict>> {
    if insert_challenge_unless_enrolled(store, c, Some(handle)).await? {
        return Ok(None);
    }
    Ok(Some(
        super::agents::enrollment_conflict(store, handle, &c.public_key)
            .await?
            .unwrap_or(Conflict::DuplicateHandle),
    ))
}

#[tracing::instrument(skip_all, name = "store.challenge", level = "debug", fields(id = %id))]
pub(super) async fn challenge(store: &Backend, id: Uuid) -> Result<Option<ChallengeRecord>> {
    let row: Option<ChallengeRow> = sqlx::query_as(&format!(
        "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(
    skip_all,
    name = "store.record_challenge_failure",
    level = "debug",
    fields(id = %id)
)]
pub(super) async fn record_challenge_failure(store: &Backend, id: Uuid) -> Result<i64> {
    store
        .write_one(id, |conn, id| {
            Box::pin(async move {
                let n: Option<i64> = sqlx::query_scalar(
                    "UPDATE challenges SET failures = failures + 1 WHERE id = $1 RETURNING \
                     failures",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                n.ok_or(StoreError::NotFound)
            })
        })
        .await
}

#[tracing::instrument(
    skip_all,
    name = "store.complete_enrollment",
    level = "debug",
    fields(challenge = %challenge_id)
)]
pub(super) async fn complete_enrollment(
    store: &Backend,
    challenge_id: Uuid,
    agent: &NewAgent,
    token: &TokenRecord,
    audit: &AuditEntry,
) -> Result<AgentRecord> {
    let data = (challenge_id, agent.clone(), token.clone(), audit.clone());
    store
        .write(data, |mut tx, (challenge_id, agent, token, audit)| {
            Box::pin(async move {
                if !consume_challenge(&mut tx, *challenge_id, agent.created_at).await? {
                    return tx.refuse(Err(CHALLENGE_USED));
                }
                let record = insert_agent(&mut tx, agent).await?;
                insert_token_row(&mut tx, token).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(record)
            })
        })
        .await
}

#[tracing::instrument(
    skip_all,
    name = "store.complete_login",
    level = "debug",
    fields(challenge = %challenge_id)
)]
pub(super) async fn complete_login(
    store: &Backend,
    challenge_id: Uuid,
    token: &TokenRecord,
    audit: &AuditEntry,
) -> Result<()> {
    let data = (challenge_id, token.clone(), audit.clone());
    store
        .write(data, |mut tx, (challenge_id, token, audit)| {
            Box::pin(async move {
                if !consume_challenge(&mut tx, *challenge_id, token.issued_at).await? {
                    return tx.refuse(Err(CHALLENGE_USED));
                }
                insert_token_row(&mut tx, token).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.insert_token", level = "debug")]
pub(super) async fn insert_token(
    store: &Backend,
    token: &TokenRecord,
    audit: &AuditEntry,
) -> Result<()> {
    store
        .write((token.clone(), audit.clone()), |mut tx, (token, audit)| {
            Box::pin(async move {
                insert_token_row(&mut tx, token).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.auth_state", level = "debug")]
pub(super) async fn auth_state(
    store: &Backend,
    jti: Uuid,
    agent_id: Uuid,
) -> Result<Option<AuthState>> {
    let row: Option<(String, String, bool, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT a.handle, a.role, a.suspended, t.revoked_at FROM tokens t JOIN agents a ON a.id = \
         t.agent_id WHERE t.jti = $1 AND t.agent_id = $2",
    )
    .bind(jti)
    .bind(agent_id)
    .fetch_optional(store.reader())
    .await?;
    row.map(|(handle, role, suspended, revoked_at)| {
        Ok(AuthState {
            handle,
            role: role
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("unknown role {role:?}")))?,
            suspended,
            revoked: revoked_at.is_some(),
        })
    })
    .transpose()
}

#[tracing::instrument(skip_all, name = "store.revoke_token", level = "debug")]
pub(super) async fn revoke_token(
    store: &Backend,
    jti: Uuid,
    at: DateTime<Utc>,
    audit: &AuditEntry,
) -> Result<bool> {
    store
        .write((jti, at, audit.clone()), |mut tx, (jti, at, audit)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL",
                )
                .bind(*at)
                .bind(*jti)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    insert_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.rotate_token", level = "debug")]
pub(super) async fn rotate_token(
    store: &Backend,
    old: Uuid,
    new: &TokenRecord,
    audit: &AuditEntry,
) -> Result<bool> {
    store
        .write(
            (old, new.clone(), audit.clone()),
            |mut tx, (old, new, audit)| {
                Box::pin(async move {
                    let n = sqlx::query(
                        "UPDATE tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL",
                    )
                    .bind(new.issued_at)
                    .bind(*old)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        // The UPDATE matched nothing.
                        return tx.refuse(Ok(false));
                    }
                    insert_token_row(&mut tx, new).await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(true)
                })
            },
        )
        .await
}
