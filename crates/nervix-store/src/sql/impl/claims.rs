//! The claim, submissions and giving a task back.

use chrono::{DateTime, Utc};
use nervix_core::matching::{check_eligibility, Ineligible, TaskProfile};
use nervix_core::reputation::{settle, PairHistory, Reputation};
use nervix_core::{Level, TaskStatus};
use sqlx::types::Json;
use uuid::Uuid;

use super::agents::agent;
use super::economy::{exclude, lock_bonus_pool, task_for_claim};
use super::idempotency::{claim_key, key_used, store_response, KEY_USED};
use super::ledger::{funding_account, post_ledger};
use super::lifecycle::{finish_task, retry_or_fail};
use super::tasks::fetch_task;
use super::workflows::on_completed;
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::*;
use crate::sql::Tx;
use crate::{Conflict, Result, StoreError};

#[tracing::instrument(
    skip_all,
    name = "store.claim_task",
    level = "debug",
    fields(task = %c.task_id, agent = %c.agent_id)
)]
pub(super) async fn claim_task(store: &Backend, c: &ClaimRequest) -> Result<ClaimOutcome> {
    // Eligibility is judged on a snapshot read without the write lock; the claim
    // itself is one conditional statement that re-checks what must hold at the
    // instant of the claim: the task still available, the agent not suspended or
    // paused, and (the capacity trigger) below max_concurrent_tasks. When it
    // matches nothing, something changed since the snapshot: judge again.
    for _ in 0..3 {
        let (agent, task) = futures::try_join!(
            agent(store, c.agent_id),
            task_for_claim(store, c.task_id, c.agent_id)
        )?;
        let Some(agent) = agent else {
            return Ok(ClaimOutcome::AgentNotFound);
        };
        let Some((task, exclusion)) = task else {
            return Ok(ClaimOutcome::TaskNotFound);
        };
        match task.status {
            TaskStatus::Available => {}
            TaskStatus::Claimed | TaskStatus::Submitted | TaskStatus::Completed => {
                return Ok(ClaimOutcome::AlreadyClaimed)
            }
            other => return Ok(ClaimOutcome::NotAvailable(other)),
        }
        if task.retry_at.is_some_and(|r| r > c.at) {
            return Ok(ClaimOutcome::NotAvailable(TaskStatus::Available));
        }
        if task.reserved_for.is_some_and(|r| r != agent.id) {
            return Ok(ClaimOutcome::Reserved);
        }
        if let Some(reason) = exclusion {
            return Ok(ClaimOutcome::Excluded(reason));
        }
        match check_eligibility(
            &agent.profile(true),
            &TaskProfile {
                capabilities: task.capabilities.clone(),
                complexity: task.complexity,
                min_reputation: Reputation::from_hundredths(task.min_reputation),
                posted_by: task.posted_by,
            },
        ) {
            Ok(()) => {}
            Err(Ineligible::AtCapacity) => return Ok(ClaimOutcome::AtCapacity),
            Err(why) => return Ok(ClaimOutcome::NotEligible(why)),
        }
        let lease_end = (c.at + chrono::Duration::seconds(c.lease_seconds)).min(task.deadline);
        let claimed = store
            .write_one(
                (agent.id, lease_end, c.at, task.id),
                |conn, (agent, lease_end, at, task)| {
                    Box::pin(async move {
                        let row: Option<TaskRow> = sqlx::query_as(&format!(
                            "{} RETURNING {TASK_COLUMNS}",
                            crate::sql::CLAIM
                        ))
                        .bind(agent)
                        .bind(lease_end)
                        .bind(at)
                        .bind(task)
                        .fetch_optional(&mut *conn)
                        .await?;
                        Ok(row)
                    })
                },
            )
            .await;
        match claimed {
            Ok(Some(row)) => return Ok(ClaimOutcome::Claimed(row.try_into()?)),
            Ok(None) => continue,
            Err(e) if e.is_at_capacity() => return Ok(ClaimOutcome::AtCapacity),
            Err(e) => return Err(e),
        }
    }
    // Three snapshots in a row went stale before the claim landed: someone else
    // keeps changing this task, so it is not ours to take.
    Ok(ClaimOutcome::AlreadyClaimed)
}

#[tracing::instrument(
    skip_all,
    name = "store.submit",
    level = "debug",
    fields(task = %s.task_id, agent = %s.agent_id)
)]
pub(super) async fn submit(
    store: &Backend,
    s: &NewSubmission,
    save: Option<SaveResponse<SubmitOutcome>>,
) -> Result<SubmitOutcome> {
    store
        .write((s.clone(), save), |tx, (s, save)| {
            Box::pin(submit_in(tx, s, save.as_ref()))
        })
        .await
}

/// The body of [`submit`]. Rows are locked task first, then agent, then ledger accounts: the
/// order a claim takes them (its capacity trigger updates the agent), so that no two writers
/// ever wait on each other in a circle (PostgreSQL).
///
/// With `save`, the key is claimed by the first write that cannot be a no-op: refusals come
/// before it and write nothing, and a duplicate of a request that already went through (its
/// work is why this one is refused) is told the key is used instead.
async fn submit_in(
    mut tx: Tx<'_, Db>,
    s: &NewSubmission,
    save: Option<&SaveResponse<SubmitOutcome>>,
) -> Result<SubmitOutcome> {
    let (status, payout, final_task, unblocked, cancelled) = match s.decision {
        Decision::Accept => {
            let accepted = accept(
                &mut tx,
                s.task_id,
                s.agent_id,
                CLAIMED,
                s.quality_score,
                s.at,
            )
            .await?;
            let Some(accepted) = accepted else {
                return refuse_unmatched(tx, save, s.task_id).await;
            };
            if let Some(save) = save {
                if !claim_key(&mut tx, save).await? {
                    // After completing the task: dropping undoes that.
                    return Err(KEY_USED);
                }
            }
            (
                SubmissionStatus::Accepted,
                Some(accepted.payout_cents),
                accepted.task,
                accepted.unblocked,
                Vec::new(),
            )
        }
        Decision::Reject => {
            let Some(task) = fetch_task(&mut tx, s.task_id).await? else {
                return refuse(tx, save, SubmitOutcome::TaskNotFound).await;
            };
            if task.status != TaskStatus::Claimed || task.assigned_agent_id != Some(s.agent_id) {
                return refuse(tx, save, SubmitOutcome::NotAssignee).await;
            }
            if let Some(save) = save {
                if !claim_key(&mut tx, save).await? {
                    // Only read so far.
                    return tx.refuse(Err(KEY_USED));
                }
            }
            let Some((after, cancelled)) = reject(&mut tx, &task, &s.retry, s.at).await? else {
                return Ok(SubmitOutcome::NotAssignee);
            };
            (
                SubmissionStatus::Rejected,
                None,
                after,
                Vec::new(),
                cancelled,
            )
        }
        Decision::Hold { .. } => {
            let row: Option<TaskRow> = sqlx::query_as(&format!(
                "UPDATE tasks SET status = 'submitted', lease_expires_at = NULL, updated_at = $1 \
                 WHERE id = $2 AND status = 'claimed' AND assigned_agent_id = $3 RETURNING \
                 {TASK_COLUMNS}"
            ))
            .bind(s.at)
            .bind(s.task_id)
            .bind(s.agent_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return refuse_unmatched(tx, save, s.task_id).await;
            };
            if let Some(save) = save {
                if !claim_key(&mut tx, save).await? {
                    return Err(KEY_USED);
                }
            }
            let held = row.try_into()?;
            (
                SubmissionStatus::PendingReview,
                None,
                held,
                Vec::new(),
                Vec::new(),
            )
        }
    };
    let (decided_at, review_deadline, final_score) = match s.decision {
        Decision::Hold { review_deadline } => (None, Some(review_deadline), None),
        _ => (Some(s.at), None, Some(i64::from(s.quality_score))),
    };
    let row: SubmissionRow = sqlx::query_as(&format!(
        "INSERT INTO submissions (id, task_id, agent_id, content, notes, quality_score, checks, \
         status, feedback, payout_cents, created_at, decided_at, review_deadline, final_score) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING \
         {SUBMISSION_COLUMNS}"
    ))
    .bind(s.id)
    .bind(s.task_id)
    .bind(s.agent_id)
    .bind(Json(&s.content))
    .bind(&s.notes)
    .bind(i64::from(s.quality_score))
    .bind(Json(&s.checks))
    .bind(status.as_str())
    .bind(&s.feedback)
    .bind(payout)
    .bind(s.at)
    .bind(decided_at)
    .bind(review_deadline)
    .bind(final_score)
    .fetch_one(&mut *tx)
    .await?;
    super::artifacts::link(&mut tx, s).await?;
    let outcome = SubmitOutcome::Done {
        submission: row.try_into()?,
        task: final_task,
        unblocked,
        cancelled,
    };
    if let Some(save) = save {
        store_response(&mut tx, save, &outcome).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// The status a task is submitted from.
pub(super) const CLAIMED: &str = "('claimed')";
/// The status of a task whose submission is held for a spot check.
pub(super) const HELD: &str = "('submitted')";

/// A task completed and paid.
pub(super) struct Accepted {
    pub task: TaskRecord,
    pub payout_cents: i64,
    pub unblocked: Vec<TaskRecord>,
}

/// Completes a task `agent` holds in one of `from` and pays it at `score`: the escrow pays
/// `reward × score`, the rest returns to the funder, and the level bonus comes on top.
/// `None` (nothing written) when the task is not held by the agent in one of `from`.
pub(super) async fn accept(
    tx: &mut Conn,
    task_id: Uuid,
    agent_id: Uuid,
    from: &str,
    score: u8,
    at: DateTime<Utc>,
) -> Result<Option<Accepted>> {
    let Some(done) =
        finish_task(tx, task_id, TaskStatus::Completed, from, Some(agent_id), at).await?
    else {
        return Ok(None);
    };
    // The level comes from the locked row, not from a read a concurrent submit of the same
    // agent could race.
    let (reputation, completed): (i64, i64) = sqlx::query_as(
        "UPDATE agents SET tasks_completed = tasks_completed + 1, updated_at = $1 WHERE id = $2 \
         RETURNING reputation, tasks_completed",
    )
    .bind(at)
    .bind(agent_id)
    .fetch_one(&mut *tx)
    .await?;
    // The level the work was done at: before this completion.
    let level = Level::of(Reputation::from_hundredths(reputation), completed - 1);
    let reward = nervix_core::Money::from_cents(done.reward_cents);
    let wanted = settle(reward, score, level);
    // The level bonus comes out of the bonus pool: discounted for the pair, then cut to what
    // the pool holds (read under its lock, so concurrent payouts cannot both spend the same
    // balance).
    let mut memo = "task completed: payout".to_owned();
    let money = if wanted.bonus.is_positive() {
        // The pool's lock comes first: every settlement that pays a bonus takes it, so the
        // pair's history read after it includes every such settlement committed before
        // (PostgreSQL gives each statement a fresh snapshot), and two settlements between
        // the same pair cannot both be the first.
        let pool = lock_bonus_pool(tx).await?;
        let (money, pair_cut) = wanted.discount_for_pair(pair_history(tx, &done).await?);
        let (money, pool_cut) = money.cap_bonus(nervix_core::Money::from_cents(pool));
        for cut in pair_cut.into_iter().chain(pool_cut) {
            memo.push_str(&format!("; {cut}"));
        }
        money
    } else {
        wanted
    };
    let worker = account_id(agent_id, AccountKind::Available);
    let escrow = account_id(done.funder(), AccountKind::Escrow);
    let pool = account_id(PLATFORM, AccountKind::BonusPool);
    post_ledger(
        tx,
        at,
        Some(done.id),
        &memo,
        &[
            (escrow, -done.reward_cents, "escrow_release"),
            (pool, -money.bonus.cents(), "bonus"),
            (worker, money.from_escrow.cents(), "payout"),
            (worker, money.bonus.cents(), "bonus"),
            (funding_account(&done), money.refund.cents(), "refund"),
        ],
    )
    .await?;
    let unblocked = on_completed(tx, &done, at).await?;
    Ok(Some(Accepted {
        task: done,
        payout_cents: money.payout().cents(),
        unblocked,
    }))
}

/// How many tasks by `done`'s poster its worker completed before it, and whether the poster
/// completed one of the worker's: each completed task is exactly one accepted submission.
/// Operator-posted tasks are no pair.
async fn pair_history(tx: &mut Conn, done: &TaskRecord) -> Result<PairHistory> {
    let Some(worker) = done.assigned_agent_id.filter(|_| !done.funded_by_treasury) else {
        return Ok(PairHistory::default());
    };
    // PAIR_DECAY^64 of any bonus in cents (below 2^63) rounds down to nothing, so counting
    // stops there.
    let (earlier, back): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE posted_by = $1 AND \
         assigned_agent_id = $2 AND status = 'completed' AND funded_by_treasury = FALSE AND id \
         <> $3 LIMIT 64) AS earlier), (SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE \
         posted_by = $2 AND assigned_agent_id = $1 AND status = 'completed' AND \
         funded_by_treasury = FALSE LIMIT 1) AS back)",
    )
    .bind(done.posted_by)
    .bind(worker)
    .bind(done.id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(PairHistory {
        earlier: u32::try_from(earlier).unwrap_or(u32::MAX),
        reciprocal: back > 0,
    })
}

/// Takes a task back from the agent whose submission was rejected (who may not claim it
/// again): to the pool while attempts remain, else failed (and its dependents cancelled). `None` when the task was no
/// longer the agent's to lose.
pub(super) async fn reject(
    tx: &mut Conn,
    task: &TaskRecord,
    retry: &RetryPolicy,
    at: DateTime<Utc>,
) -> Result<Option<(TaskRecord, Vec<TaskRecord>)>> {
    let Some(agent) = task.assigned_agent_id else {
        return Ok(None);
    };
    let why = "attempts exhausted";
    let (after, cancelled) = retry_or_fail(tx, task, retry, at, why).await?;
    let Some(after) = after else {
        return Ok(None);
    };
    exclude(tx, task.id, agent, ExclusionReason::Rejected, at).await?;
    sqlx::query("UPDATE agents SET tasks_failed = tasks_failed + 1, updated_at = $1 WHERE id = $2")
        .bind(at)
        .bind(agent)
        .execute(&mut *tx)
        .await?;
    Ok(Some((after, cancelled)))
}

/// Refuses a submit whose conditional UPDATE matched nothing (so nothing was written): no such
/// task, or not held by the submitter.
async fn refuse_unmatched(
    mut tx: Tx<'_, Db>,
    save: Option<&SaveResponse<SubmitOutcome>>,
    task_id: Uuid,
) -> Result<SubmitOutcome> {
    let refusal = match fetch_task(&mut tx, task_id).await? {
        None => SubmitOutcome::TaskNotFound,
        Some(_) => SubmitOutcome::NotAssignee,
    };
    refuse(tx, save, refusal).await
}

/// Refuses a submit that has written nothing with `refusal`, or with `KEY_USED` when its key
/// already answered a request.
async fn refuse(
    mut tx: Tx<'_, Db>,
    save: Option<&SaveResponse<SubmitOutcome>>,
    refusal: SubmitOutcome,
) -> Result<SubmitOutcome> {
    let used = key_used(&mut tx, save).await?;
    tx.refuse(if used { Err(KEY_USED) } else { Ok(refusal) })
}

#[tracing::instrument(skip_all, name = "store.submission", level = "debug", fields(id = %id))]
pub(super) async fn submission(store: &Backend, id: Uuid) -> Result<Option<SubmissionRecord>> {
    let row: Option<SubmissionRow> = sqlx::query_as(&format!(
        "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(
    skip_all,
    name = "store.release_task",
    level = "debug",
    fields(task = %task_id, agent = %agent_id)
)]
pub(super) async fn release_task(
    store: &Backend,
    task_id: Uuid,
    agent_id: Uuid,
    at: DateTime<Utc>,
) -> Result<TaskRecord> {
    let data = (task_id, agent_id, at);
    store
        .write(data, |mut tx, &(task_id, agent_id, at)| {
            Box::pin(async move {
                let row: Option<TaskRow> = sqlx::query_as(&format!(
                    "UPDATE tasks SET status = 'available', assigned_agent_id = NULL, \
                     lease_expires_at = NULL, notify_round = 0, notified_at = NULL, updated_at = \
                     $1 WHERE id = $2 AND status = 'claimed' AND assigned_agent_id = $3 RETURNING \
                     {TASK_COLUMNS}"
                ))
                .bind(at)
                .bind(task_id)
                .bind(agent_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    // Matched nothing: nothing written.
                    return tx.refuse(Err(StoreError::Conflict(Conflict::InvalidState)));
                };
                let task = TaskRecord::try_from(row)?;
                exclude(&mut tx, task_id, agent_id, ExclusionReason::Released, at).await?;
                tx.commit().await?;
                Ok(task)
            })
        })
        .await
}
