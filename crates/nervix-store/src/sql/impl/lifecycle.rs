//! Ending tasks: finishing, retrying, cancelling, and the lease and deadline reapers.

use chrono::{DateTime, Utc};
use nervix_core::TaskStatus;
use uuid::Uuid;

use super::economy::exclude;
use super::housekeeping::insert_audit;
use super::tasks::fetch_task;
use super::workflows::abandon;
use super::{Backend, Conn, OPEN_STATUSES};
use crate::model::*;
use crate::sql::rows::{self, *};
use crate::{Conflict, Result, StoreError};

/// Moves a task into a terminal status and marks its escrow settled, if it is still in
/// one of `from`. Returns the task only to the caller that made the move, so the escrow
/// is settled exactly once however many workers race for it.
///
/// With `held_by`, only while that agent holds the task.
pub(super) async fn finish_task(
    conn: &mut Conn,
    id: Uuid,
    to: TaskStatus,
    from: &str,
    held_by: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<Option<TaskRecord>> {
    let holder = if held_by.is_some() {
        " AND assigned_agent_id = $4"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE tasks SET status = $1, settled = TRUE, lease_expires_at = NULL, updated_at = $2 \
         WHERE id = $3 AND status IN {from} AND settled = FALSE{holder} RETURNING {TASK_COLUMNS}"
    );
    let mut q = sqlx::query_as(&sql).bind(to.as_str()).bind(at).bind(id);
    if let Some(agent) = held_by {
        q = q.bind(agent);
    }
    let row: Option<TaskRow> = q.fetch_optional(conn).await?;
    row.map(TryInto::try_into).transpose()
}

/// Takes a task back from its assignee (claimed, or submitted and held for review) while it
/// is still in the status `task` was read in: to the pool after a back-off while attempts
/// remain (the failed attempt counted), else `failed` for good.
pub(super) async fn retry_or_fail(
    conn: &mut Conn,
    task: &TaskRecord,
    retry: &RetryPolicy,
    at: DateTime<Utc>,
    why: &str,
) -> Result<(Option<TaskRecord>, Vec<TaskRecord>)> {
    let attempts = task.attempts + 1;
    let from = &format!("('{}')", task.status.as_str());
    if attempts >= task.max_attempts {
        sqlx::query("UPDATE tasks SET attempts = $1 WHERE id = $2 AND status = $3")
            .bind(attempts)
            .bind(task.id)
            .bind(task.status.as_str())
            .execute(&mut *conn)
            .await?;
        let Some(failed) = finish_task(
            conn,
            task.id,
            TaskStatus::Failed,
            from,
            task.assigned_agent_id,
            at,
        )
        .await?
        else {
            return Ok((None, Vec::new()));
        };
        let cancelled = abandon(conn, &failed, at, why).await?;
        return Ok((Some(failed), cancelled));
    }
    let retry_at = at + chrono::Duration::seconds(retry.delay_seconds(attempts));
    let row: Option<TaskRow> = sqlx::query_as(&format!(
        "UPDATE tasks SET status = 'available', assigned_agent_id = NULL, lease_expires_at = NULL, \
         attempts = $1, retry_at = $2, notify_round = 0, notified_at = NULL, updated_at = $3 WHERE \
         id = $4 AND status = $6 AND assigned_agent_id = $5 RETURNING {TASK_COLUMNS}"
    ))
    .bind(attempts)
    .bind(retry_at)
    .bind(at)
    .bind(task.id)
    .bind(task.assigned_agent_id)
    .bind(task.status.as_str())
    .fetch_optional(conn)
    .await?;
    Ok((row.map(TryInto::try_into).transpose()?, Vec::new()))
}

#[tracing::instrument(
    skip_all,
    name = "store.cancel_task",
    level = "debug",
    fields(task = %task_id)
)]
pub(super) async fn cancel_task(
    store: &Backend,
    task_id: Uuid,
    at: DateTime<Utc>,
    audit: &AuditEntry,
) -> Result<(TaskRecord, Vec<TaskRecord>)> {
    store
        .write(
            (task_id, at, audit.clone()),
            |mut tx, &(task_id, at, ref audit)| {
                Box::pin(async move {
                    let Some(task) = finish_task(
                        &mut tx,
                        task_id,
                        TaskStatus::Cancelled,
                        OPEN_STATUSES,
                        None,
                        at,
                    )
                    .await?
                    else {
                        // The UPDATE matched nothing, and this only reads.
                        let refusal = match fetch_task(&mut tx, task_id).await? {
                            None => StoreError::NotFound,
                            Some(_) => StoreError::Conflict(Conflict::InvalidState),
                        };
                        return tx.refuse(Err(refusal));
                    };
                    let cascaded = abandon(&mut tx, &task, at, "task cancelled").await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok((task, cascaded))
                })
            },
        )
        .await
}

#[tracing::instrument(skip_all, name = "store.expire_leases", level = "debug")]
pub(super) async fn expire_leases(
    store: &Backend,
    now: DateTime<Utc>,
    retry: &RetryPolicy,
    limit: i64,
) -> Result<ExpiredLeases> {
    store
        .write((now, *retry, limit), |mut tx, &(now, ref retry, limit)| {
            Box::pin(async move {
                let rows: Vec<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'claimed' AND \
                     lease_expires_at < $1 ORDER BY lease_expires_at LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut out = ExpiredLeases::default();
                for task in rows::collect::<_, TaskRecord>(rows)? {
                    let (after, cancelled) = retry_or_fail(
                        &mut tx,
                        &task,
                        retry,
                        now,
                        "lease expired, attempts exhausted",
                    )
                    .await?;
                    if let (Some(_), Some(holder)) = (&after, task.assigned_agent_id) {
                        exclude(&mut tx, task.id, holder, ExclusionReason::LeaseLost, now).await?;
                        out.lost.push((task.id, holder));
                    }
                    out.changed.extend(after);
                    out.changed.extend(cancelled);
                }
                tx.commit().await?;
                Ok(out)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.expire_deadlines", level = "debug")]
pub(super) async fn expire_deadlines(
    store: &Backend,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TaskRecord>> {
    store
        .write((now, limit), |mut tx, &(now, limit)| {
            Box::pin(async move {
                let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
                    "SELECT id FROM tasks WHERE status IN {OPEN_STATUSES} AND deadline < $1 ORDER \
                     BY deadline LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut changed = Vec::new();
                for id in ids {
                    if let Some(t) =
                        finish_task(&mut tx, id, TaskStatus::Expired, OPEN_STATUSES, None, now)
                            .await?
                    {
                        let cancelled = abandon(&mut tx, &t, now, "deadline passed").await?;
                        changed.push(t);
                        changed.extend(cancelled);
                    }
                }
                tx.commit().await?;
                Ok(changed)
            })
        })
        .await
}
