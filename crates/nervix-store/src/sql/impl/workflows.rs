//! Workflows, and what a task's end does along its dependencies.

use chrono::{DateTime, Utc};
use nervix_core::TaskStatus;
use uuid::Uuid;

use super::housekeeping::insert_audit;
use super::ledger::refund;
use super::lifecycle::finish_task;
use super::{Backend, Conn, OPEN_STATUSES};
use crate::model::*;
use crate::sql::rows::{self, *};
use crate::{Conflict, Result, StoreError};

/// Ends a task for good without paying anyone: refund, cancel everything downstream
/// (refunding each), and fail its workflow.
pub(super) async fn abandon(
    conn: &mut Conn,
    task: &TaskRecord,
    at: DateTime<Utc>,
    why: &str,
) -> Result<Vec<TaskRecord>> {
    refund(conn, task, at, why).await?;
    let mut cancelled = Vec::new();
    let mut frontier = vec![(task.id, task.dependents)];
    while let Some((upstream, dependents)) = frontier.pop() {
        if dependents == 0 {
            continue;
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT t.id FROM tasks t JOIN task_dependencies d ON d.task_id = t.id WHERE \
             d.depends_on = $1 AND t.status IN {OPEN_STATUSES}"
        ))
        .bind(upstream)
        .fetch_all(&mut *conn)
        .await?;
        for id in ids {
            if let Some(t) =
                finish_task(conn, id, TaskStatus::Cancelled, OPEN_STATUSES, None, at).await?
            {
                refund(conn, &t, at, "upstream task failed").await?;
                frontier.push((t.id, t.dependents));
                cancelled.push(t);
            }
        }
    }
    if let Some(wf) = task.workflow_id {
        set_workflow_status(conn, wf, WorkflowStatus::Failed, at).await?;
    }
    Ok(cancelled)
}

pub(super) async fn set_workflow_status(
    conn: &mut Conn,
    id: Uuid,
    status: WorkflowStatus,
    at: DateTime<Utc>,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE workflows SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'active'",
    )
    .bind(status.as_str())
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Makes `available` every blocked dependent of `upstream` whose dependencies are now
/// all completed, and completes the workflow when nothing is left.
pub(super) async fn on_completed(
    conn: &mut Conn,
    task: &TaskRecord,
    at: DateTime<Utc>,
) -> Result<Vec<TaskRecord>> {
    let rows: Vec<TaskRow> = if task.dependents == 0 {
        Vec::new()
    } else {
        sqlx::query_as(&format!(
            "UPDATE tasks SET status = 'available', updated_at = $1 WHERE status = 'blocked' AND \
             id IN (SELECT task_id FROM task_dependencies WHERE depends_on = $2) AND NOT EXISTS \
             (SELECT 1 FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on WHERE \
             d.task_id = tasks.id AND u.status <> 'completed') RETURNING {TASK_COLUMNS}"
        ))
        .bind(at)
        .bind(task.id)
        .fetch_all(&mut *conn)
        .await?
    };
    if let Some(wf) = task.workflow_id {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE workflow_id = $1 AND status <> 'completed'",
        )
        .bind(wf)
        .fetch_one(&mut *conn)
        .await?;
        if open == 0 {
            set_workflow_status(conn, wf, WorkflowStatus::Completed, at).await?;
        }
    }
    rows::collect(rows)
}

#[tracing::instrument(skip_all, name = "store.workflow", level = "debug", fields(id = %id))]
pub(super) async fn workflow(store: &Backend, id: Uuid) -> Result<Option<WorkflowRecord>> {
    let row: Option<WorkflowRow> = sqlx::query_as(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(skip_all, name = "store.workflow_tasks", level = "debug", fields(id = %id))]
pub(super) async fn workflow_tasks(store: &Backend, id: Uuid) -> Result<Vec<TaskRecord>> {
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(store.reader())
    .await?;
    rows::collect(rows)
}

#[tracing::instrument(skip_all, name = "store.cancel_workflow", level = "debug", fields(id = %id))]
pub(super) async fn cancel_workflow(
    store: &Backend,
    id: Uuid,
    at: DateTime<Utc>,
    audit: &AuditEntry,
) -> Result<(WorkflowRecord, Vec<TaskRecord>)> {
    store
        .write((id, at, audit.clone()), |mut tx, &(id, at, ref audit)| {
            Box::pin(async move {
                if !set_workflow_status(&mut tx, id, WorkflowStatus::Cancelled, at).await? {
                    let exists: Option<Uuid> =
                        sqlx::query_scalar("SELECT id FROM workflows WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    // The UPDATE matched nothing, and this only reads.
                    return tx.refuse(Err(if exists.is_some() {
                        StoreError::Conflict(Conflict::InvalidState)
                    } else {
                        StoreError::NotFound
                    }));
                }
                let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
                    "SELECT id FROM tasks WHERE workflow_id = $1 AND status IN {OPEN_STATUSES}"
                ))
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let mut changed = Vec::with_capacity(ids.len());
                for task_id in ids {
                    if let Some(t) = finish_task(
                        &mut tx,
                        task_id,
                        TaskStatus::Cancelled,
                        OPEN_STATUSES,
                        None,
                        at,
                    )
                    .await?
                    {
                        // Like a cancelled task: refund, and cancel dependents outside the
                        // workflow too (they could never become available otherwise).
                        let cascaded = abandon(&mut tx, &t, at, "workflow cancelled").await?;
                        changed.push(t);
                        changed.extend(cascaded);
                    }
                }
                insert_audit(&mut tx, audit).await?;
                let row: WorkflowRow = sqlx::query_as(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok((row.try_into()?, changed))
            })
        })
        .await
}
