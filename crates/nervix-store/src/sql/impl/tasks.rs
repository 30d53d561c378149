//! Posting tasks (escrowed), reading and listing them, notification rounds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use nervix_core::TaskStatus;
use sqlx::types::Json;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::housekeeping::insert_audit;
use super::idempotency::{claim_key, key_used, store_response, KEY_USED};
use super::ledger::post_ledger;
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::{self, *};
use crate::sql::Tx;
use crate::{Result, StoreError};

pub(super) async fn fetch_task(conn: &mut Conn, id: Uuid) -> Result<Option<TaskRecord>> {
    let row: Option<TaskRow> =
        sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(
    skip_all,
    name = "store.post_tasks",
    level = "debug",
    fields(poster = %post.poster, tasks = post.tasks.len())
)]
pub(super) async fn post_tasks(
    store: &Backend,
    post: &NewPost,
    save: Option<SaveResponse<Vec<TaskRecord>>>,
) -> Result<Vec<TaskRecord>> {
    store
        .write((post.clone(), save), |tx, (post, save)| {
            Box::pin(post_tasks_in(tx, post, save.as_ref()))
        })
        .await
}

/// The body of [`post_tasks`].
async fn post_tasks_in(
    mut tx: Tx<'_, Db>,
    post: &NewPost,
    save: Option<&SaveResponse<Vec<TaskRecord>>>,
) -> Result<Vec<TaskRecord>> {
    if !can_afford(&mut tx, post).await? {
        // Only read so far. A retry whose first run spent the money replays that run's
        // response rather than this refusal.
        let used = key_used(&mut tx, save).await?;
        return tx.refuse(Err(if used {
            KEY_USED
        } else {
            StoreError::InsufficientFunds
        }));
    }
    if let Some(save) = save {
        if !claim_key(&mut tx, save).await? {
            return tx.refuse(Err(KEY_USED));
        }
    }
    if let Some(wf) = &post.workflow {
        sqlx::query(
            "INSERT INTO workflows (id, name, status, posted_by, created_at, updated_at) \
             VALUES ($1, $2, 'active', $3, $4, $4)",
        )
        .bind(wf.id)
        .bind(&wf.name)
        .bind(post.poster)
        .bind(post.at)
        .execute(&mut *tx)
        .await?;
    }
    let mut created: Vec<TaskRecord> = Vec::with_capacity(post.tasks.len());
    let mut total: i64 = 0;
    // Dependents within this post, counted up front so each task is inserted with its final
    // count (dependencies point at earlier tasks of the post).
    let deps: Vec<Vec<Uuid>> = post
        .tasks
        .iter()
        .map(|t| {
            let mut d = t.depends_on.clone();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    let mut dependents_here: HashMap<Uuid, i64> = HashMap::new();
    for dep in deps.iter().flatten() {
        *dependents_here.entry(*dep).or_default() += 1;
    }
    for (t, depends_on) in post.tasks.iter().zip(&deps) {
        // A task starts blocked unless every dependency is already completed; a dependency
        // that can never complete makes the post invalid.
        let mut blocked = false;
        for dep in depends_on {
            let status = match created.iter().find(|c| c.id == *dep) {
                Some(c) => Some(c.status),
                None => count_dependent(&mut tx, *dep).await?,
            };
            match status {
                None => {
                    let why = format!("task {dep} does not exist");
                    return Err(StoreError::invalid("depends_on", why));
                }
                Some(TaskStatus::Completed) => {}
                Some(s) if s.is_terminal() => {
                    let why = format!("task {dep} is {s} and can never complete");
                    return Err(StoreError::invalid("depends_on", why));
                }
                Some(_) => blocked = true,
            }
        }
        let dependents = dependents_here.get(&t.id).copied().unwrap_or(0);
        let row = insert_task(&mut tx, post, t, depends_on, blocked, dependents).await?;
        total = total
            .checked_add(t.reward_cents)
            .ok_or_else(|| StoreError::invalid("reward", "total reward is too large"))?;
        created.push(row);
    }
    let (source, funder) = if post.from_treasury {
        (account_id(PLATFORM, AccountKind::Treasury), PLATFORM)
    } else {
        (account_id(post.poster, AccountKind::Available), post.poster)
    };
    let escrow = account_id(funder, AccountKind::Escrow);
    for t in &created {
        post_ledger(
            &mut tx,
            post.at,
            Some(t.id),
            "task posted: reward escrowed",
            &[
                (source, -t.reward_cents, "escrow_hold"),
                (escrow, t.reward_cents, "escrow_hold"),
            ],
        )
        .await?;
    }
    if let Some(audit) = &post.audit {
        insert_audit(&mut tx, audit).await?;
    }
    if let Some(save) = save {
        store_response(&mut tx, save, &created).await?;
    }
    tx.commit().await?;
    Ok(created)
}

/// Whether the poster's balance covers the post's rewards, read before anything is written so
/// that the common refusal, insufficient funds, writes nothing (a refusal after writing
/// spoils a SQLite commit group). On SQLite the read is exact (the writer holds the lock);
/// on PostgreSQL it is a snapshot, and the database's overdraft check on the escrow postings
/// stays the guard. Posts from the treasury, rewards too large to add up and unknown posters
/// pass here and meet the checks that follow.
async fn can_afford(conn: &mut Conn, post: &NewPost) -> Result<bool> {
    if post.from_treasury {
        return Ok(true);
    }
    let Some(needed) = post
        .tasks
        .iter()
        .try_fold(0i64, |sum, t| sum.checked_add(t.reward_cents))
    else {
        return Ok(true);
    };
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
            .bind(account_id(post.poster, AccountKind::Available))
            .fetch_optional(conn)
            .await?;
    Ok(balance.is_none_or(|b| b >= needed))
}

/// Counts one more dependent of the existing task `upstream` and returns its status (`None`:
/// no such task). Counting the dependent locks the upstream row (PostgreSQL), so its
/// completion cannot slip in between this read of its status and our commit: either it
/// completed first and we see it, or it waits for us and its unblocking sees our task.
async fn count_dependent(conn: &mut Conn, upstream: Uuid) -> Result<Option<TaskStatus>> {
    let s: Option<String> = sqlx::query_scalar(
        "UPDATE tasks SET dependents = dependents + 1 WHERE id = $1 RETURNING status",
    )
    .bind(upstream)
    .fetch_optional(conn)
    .await?;
    Ok(s.and_then(|s| s.parse::<TaskStatus>().ok()))
}

/// Inserts one task of `post` with its dependency index rows.
async fn insert_task(
    conn: &mut Conn,
    post: &NewPost,
    t: &NewTask,
    depends_on: &[Uuid],
    blocked: bool,
    dependents: i64,
) -> Result<TaskRecord> {
    let status = if blocked {
        TaskStatus::Blocked
    } else {
        TaskStatus::Available
    };
    let first_round = post.notifies_first_round && !blocked;
    let row: TaskRow = sqlx::query_as(&format!(
        "INSERT INTO tasks (id, title, description, capabilities, min_reputation, reward_cents, \
         complexity, kind, output_schema, language, deadline, status, workflow_id, workflow_key, \
         posted_by, funded_by_treasury, attempts, max_attempts, notify_round, notified_at, \
         settled, depends_on, dependents, created_at, updated_at, min_words, reserved_for) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, \
         $19, $20, FALSE, $21, $22, $18, $18, $23, $24) \
         RETURNING {TASK_COLUMNS}"
    ))
    .bind(t.id)
    .bind(&t.title)
    .bind(&t.description)
    .bind(Json(&t.capabilities))
    .bind(t.min_reputation)
    .bind(t.reward_cents)
    .bind(t.complexity.as_str())
    .bind(t.kind.as_str())
    .bind(t.output_schema.as_ref().map(Json))
    .bind(&t.language)
    .bind(t.deadline)
    .bind(status.as_str())
    .bind(post.workflow.as_ref().map(|w| w.id))
    .bind(&t.workflow_key)
    .bind(post.poster)
    .bind(post.from_treasury)
    .bind(t.max_attempts)
    .bind(post.at)
    .bind(i64::from(first_round))
    .bind(first_round.then_some(post.at))
    .bind(Json(depends_on))
    .bind(dependents)
    .bind(t.min_words)
    .bind(post.reserved_for)
    .fetch_one(&mut *conn)
    .await?;
    if !depends_on.is_empty() {
        let mut qb =
            QueryBuilder::<Db>::new("INSERT INTO task_dependencies (task_id, depends_on) ");
        qb.push_values(depends_on, |mut b, d| {
            b.push_bind(t.id).push_bind(*d);
        });
        qb.build().execute(&mut *conn).await?;
    }
    row.try_into()
}

#[tracing::instrument(skip_all, name = "store.task", level = "debug", fields(id = %id))]
pub(super) async fn task(store: &Backend, id: Uuid) -> Result<Option<TaskRecord>> {
    let row: Option<TaskRow> =
        sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(store.reader())
            .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(skip_all, name = "store.tasks_by_ids", level = "debug")]
pub(super) async fn tasks_by_ids(store: &Backend, ids: &[Uuid]) -> Result<Vec<TaskRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb = QueryBuilder::<Db>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ("));
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(") ORDER BY id");
    let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    rows::collect(rows)
}

#[tracing::instrument(skip_all, name = "store.list_tasks", level = "debug")]
pub(super) async fn list_tasks(store: &Backend, q: &TaskQuery) -> Result<Vec<TaskRecord>> {
    let mut qb = QueryBuilder::<Db>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
    if let Some(status) = q.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(cap) = &q.capability {
        qb.push(" AND id IN (SELECT task_id FROM task_capabilities WHERE capability = ")
            .push_bind(cap)
            .push(")");
    }
    if let Some(c) = q.complexity {
        qb.push(" AND complexity = ").push_bind(c.as_str());
    }
    if let Some(p) = q.posted_by {
        qb.push(" AND posted_by = ").push_bind(p);
    }
    if let Some(a) = q.assigned_to {
        qb.push(" AND assigned_agent_id = ").push_bind(a);
    }
    if let Some(e) = &q.eligible_for {
        qb.push(" AND status = 'available' AND posted_by <> ")
            .push_bind(e.agent_id);
        qb.push(
            " AND NOT EXISTS (SELECT 1 FROM task_exclusions x WHERE x.task_id = tasks.id AND \
             x.agent_id = ",
        )
        .push_bind(e.agent_id)
        .push(")");
        qb.push(" AND (reserved_for IS NULL OR reserved_for = ")
            .push_bind(e.agent_id)
            .push(")");
        qb.push(" AND min_reputation <= ").push_bind(e.reputation);
        qb.push(" AND (retry_at IS NULL OR retry_at <= ")
            .push_bind(e.now)
            .push(")");
        qb.push(" AND complexity IN (");
        let mut sep = qb.separated(", ");
        for c in &e.complexities {
            sep.push_bind(c.as_str());
        }
        qb.push(
            ") AND NOT EXISTS (SELECT 1 FROM task_capabilities tc WHERE tc.task_id = tasks.id AND \
             NOT EXISTS (SELECT 1 FROM agent_capabilities ac WHERE ac.agent_id = ",
        );
        qb.push_bind(e.agent_id)
            .push(" AND ac.capability = tc.capability))");
    }
    if let Some(before) = q.before {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    rows::collect(rows)
}

#[tracing::instrument(
    skip_all,
    name = "store.task_dependencies",
    level = "debug",
    fields(id = %id)
)]
pub(super) async fn task_dependencies(store: &Backend, id: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT depends_on FROM task_dependencies WHERE task_id = $1 ORDER BY depends_on",
    )
    .bind(id)
    .fetch_all(store.reader())
    .await?)
}

#[tracing::instrument(skip_all, name = "store.tasks_to_notify", level = "debug")]
pub(super) async fn tasks_to_notify(
    store: &Backend,
    now: DateTime<Utc>,
    window_start: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TaskRecord>> {
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'available' AND (retry_at IS NULL OR \
         retry_at <= $1) AND (notified_at IS NULL OR notified_at < $2) ORDER BY id LIMIT $3"
    ))
    .bind(now)
    .bind(window_start)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows::collect(rows)
}

#[tracing::instrument(
    skip_all,
    name = "store.mark_notified",
    level = "debug",
    fields(task = %task_id)
)]
pub(super) async fn mark_notified(
    store: &Backend,
    task_id: Uuid,
    round: i64,
    at: DateTime<Utc>,
) -> Result<bool> {
    store
        .write_one((task_id, round, at), |conn, (task_id, round, at)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE tasks SET notify_round = $1 + 1, notified_at = $2 WHERE id = $3 AND \
                     notify_round = $1",
                )
                .bind(round)
                .bind(at)
                .bind(task_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.active_task_counts", level = "debug")]
pub(super) async fn active_task_counts(store: &Backend) -> Result<Vec<(Uuid, i64)>> {
    Ok(sqlx::query_as(
        "SELECT assigned_agent_id, COUNT(*) FROM tasks WHERE status = 'claimed' AND \
         assigned_agent_id IS NOT NULL GROUP BY assigned_agent_id",
    )
    .fetch_all(store.reader())
    .await?)
}
