//! The audit log, platform statistics and purges of what has expired.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Backend, Conn, Db, OPEN_STATUSES};
use crate::model::*;
use crate::sql::rows::*;
use crate::Result;

pub(super) async fn insert_audit(conn: &mut Conn, e: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor_id, actor_handle, action, target, client_ip, \
         details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(e.at)
    .bind(e.actor_id)
    .bind(&e.actor_handle)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.client_ip)
    .bind(Json(&e.details))
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, name = "store.append_audit", level = "debug")]
pub(super) async fn append_audit(store: &Backend, e: &AuditEntry) -> Result<()> {
    store
        .write_one(e.clone(), |conn, e| {
            Box::pin(async move { insert_audit(conn, e).await })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.list_audit", level = "debug")]
pub(super) async fn list_audit(store: &Backend, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let mut qb =
        QueryBuilder::<Db>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
    if let Some(action) = &q.action {
        qb.push(" AND action = ").push_bind(action);
    }
    if let Some(actor) = q.actor_id {
        qb.push(" AND actor_id = ").push_bind(actor);
    }
    if let Some(target) = &q.target {
        qb.push(" AND target = ").push_bind(target);
    }
    if let Some(since) = q.since {
        qb.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = q.until {
        qb.push(" AND at < ").push_bind(until);
    }
    if let Some(before) = q.before {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<AuditRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[tracing::instrument(skip_all, name = "store.stats", level = "debug")]
pub(super) async fn stats(store: &Backend, online_since: DateTime<Utc>) -> Result<Stats> {
    let (agents, agents_online): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_seen_at >= $1 THEN 1 ELSE 0 END), 0) FROM \
         agents",
    )
    .bind(online_since)
    .fetch_one(store.reader())
    .await?;
    let (tasks_total, tasks_open, tasks_completed): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status IN {OPEN_STATUSES} THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) FROM tasks"
    ))
    .fetch_one(store.reader())
    .await?;
    let workflows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflows")
        .fetch_one(store.reader())
        .await?;
    let paid_out_cents: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries WHERE kind IN \
         ('payout', 'bonus')",
    )
    .fetch_one(store.reader())
    .await?;
    Ok(Stats {
        agents,
        agents_online,
        tasks_total,
        tasks_open,
        tasks_completed,
        workflows,
        paid_out_cents,
    })
}

/// Runs a housekeeping `DELETE` whose only parameter (`$1`) is a cut-off time.
async fn delete_before(store: &Backend, sql: &'static str, before: DateTime<Utc>) -> Result<u64> {
    store
        .write_one(before, move |conn, before| {
            Box::pin(async move {
                Ok(sqlx::query(sql)
                    .bind(before)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected())
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.purge_challenges", level = "debug")]
pub(super) async fn purge_challenges(store: &Backend, before: DateTime<Utc>) -> Result<u64> {
    delete_before(
        store,
        "DELETE FROM challenges WHERE expires_at < $1",
        before,
    )
    .await
}

#[tracing::instrument(skip_all, name = "store.purge_idempotent_responses", level = "debug")]
pub(super) async fn purge_idempotent_responses(
    store: &Backend,
    before: DateTime<Utc>,
) -> Result<u64> {
    let sql = "DELETE FROM idempotency_keys WHERE created_at < $1";
    delete_before(store, sql, before).await
}

#[tracing::instrument(skip_all, name = "store.ping", level = "debug")]
pub(super) async fn ping(store: &Backend) -> Result<()> {
    sqlx::query("SELECT 1").execute(store.reader()).await?;
    Ok(())
}
