//! Peer reviews, and the spot checks they decide: the queue of held submissions, a review
//! that accepts or rejects one, and the reaper that accepts those nobody reviewed in time.

use chrono::{DateTime, Utc};
use nervix_core::TaskStatus;
use uuid::Uuid;

use super::claims::{accept, reject, HELD};
use super::tasks::fetch_task;
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::{self, *};
use crate::sql::Tx;
use crate::{Result, StoreError};

const REVIEW_COLUMNS: &str =
    "id, submission_id, reviewer_id, subject_id, score, feedback, decision, created_at";

#[derive(sqlx::FromRow)]
struct ReviewRow {
    id: Uuid,
    submission_id: Uuid,
    reviewer_id: Uuid,
    subject_id: Uuid,
    score: i64,
    feedback: String,
    decision: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<ReviewRow> for ReviewRecord {
    type Error = StoreError;

    fn try_from(r: ReviewRow) -> Result<Self, StoreError> {
        let decision = r
            .decision
            .map(|d| {
                d.parse::<SubmissionStatus>()
                    .map_err(|_| StoreError::Corrupt(format!("unknown review decision {d:?}")))
            })
            .transpose()?;
        Ok(ReviewRecord {
            id: r.id,
            submission_id: r.submission_id,
            reviewer_id: r.reviewer_id,
            subject_id: r.subject_id,
            score: r.score,
            feedback: r.feedback,
            decision,
            created_at: r.created_at,
        })
    }
}

async fn fetch_submission(conn: &mut Conn, id: Uuid) -> Result<Option<SubmissionRecord>> {
    let row: Option<SubmissionRow> = sqlx::query_as(&format!(
        "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(
    skip_all,
    name = "store.review",
    level = "debug",
    fields(submission = %r.submission_id, reviewer = %r.reviewer_id)
)]
pub(super) async fn review(store: &Backend, r: &NewReview) -> Result<ReviewOutcome> {
    store
        .write(r.clone(), |tx, r| Box::pin(review_in(tx, r)))
        .await
}

/// Records a review and, when it is a reviewer's review of a held submission, decides it: at
/// or above the acceptance threshold the task completes and is paid at the review's score,
/// below it the submission is rejected as if the checks had failed.
async fn review_in(mut tx: Tx<'_, Db>, r: &NewReview) -> Result<ReviewOutcome> {
    let Some(sub) = fetch_submission(&mut tx, r.submission_id).await? else {
        return tx.refuse(Ok(ReviewOutcome::SubmissionNotFound));
    };
    if sub.agent_id == r.reviewer_id {
        return tx.refuse(Ok(ReviewOutcome::OwnSubmission));
    }
    let row: Option<ReviewRow> = sqlx::query_as(&format!(
        "INSERT INTO reviews (id, submission_id, reviewer_id, subject_id, score, feedback, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (submission_id, \
         reviewer_id) DO NOTHING RETURNING {REVIEW_COLUMNS}"
    ))
    .bind(r.id)
    .bind(r.submission_id)
    .bind(r.reviewer_id)
    .bind(sub.agent_id)
    .bind(i64::from(r.score))
    .bind(&r.feedback)
    .bind(r.at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        // ON CONFLICT DO NOTHING matched and wrote nothing.
        return tx.refuse(Ok(ReviewOutcome::AlreadyReviewed));
    };
    let mut review: ReviewRecord = row.try_into()?;
    let settled = if r.may_decide && sub.status == SubmissionStatus::PendingReview {
        let verdict = if r.score >= r.accept_threshold {
            Verdict::Accept(r.score)
        } else {
            Verdict::Reject(r.score)
        };
        let settled = decide(&mut tx, &sub, verdict, &r.retry, r.at).await?;
        if let Some(s) = &settled {
            sqlx::query("UPDATE reviews SET decision = $1 WHERE id = $2")
                .bind(s.submission.status.as_str())
                .bind(review.id)
                .execute(&mut *tx)
                .await?;
            review.decision = Some(s.submission.status);
        }
        settled
    } else {
        None
    };
    tx.commit().await?;
    Ok(ReviewOutcome::Done { review, settled })
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Accept(u8),
    Reject(u8),
}

/// Decides a held submission: pays or rejects its task and records the decision on the
/// submission, only while it is still held. `None` when someone decided it first.
async fn decide(
    conn: &mut Conn,
    sub: &SubmissionRecord,
    verdict: Verdict,
    retry: &RetryPolicy,
    at: DateTime<Utc>,
) -> Result<Option<Settled>> {
    let (status, score, payout, task, unblocked, cancelled) = match verdict {
        Verdict::Accept(score) => {
            let Some(a) = accept(conn, sub.task_id, sub.agent_id, HELD, score, at).await? else {
                return Ok(None);
            };
            let payout = Some(a.payout_cents);
            (
                SubmissionStatus::Accepted,
                score,
                payout,
                a.task,
                a.unblocked,
                Vec::new(),
            )
        }
        Verdict::Reject(score) => {
            let Some(task) = fetch_task(&mut *conn, sub.task_id).await? else {
                return Ok(None);
            };
            if task.status != TaskStatus::Submitted || task.assigned_agent_id != Some(sub.agent_id)
            {
                return Ok(None);
            }
            let Some((after, cancelled)) = reject(conn, &task, retry, at).await? else {
                return Ok(None);
            };
            (
                SubmissionStatus::Rejected,
                score,
                None,
                after,
                Vec::new(),
                cancelled,
            )
        }
    };
    let row: Option<SubmissionRow> = sqlx::query_as(&format!(
        "UPDATE submissions SET status = $1, final_score = $2, payout_cents = $3, decided_at = \
         $4, review_deadline = NULL WHERE id = $5 AND status = 'pending_review' RETURNING \
         {SUBMISSION_COLUMNS}"
    ))
    .bind(status.as_str())
    .bind(i64::from(score))
    .bind(payout)
    .bind(at)
    .bind(sub.id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        // The task moved with this decision, so the submission was still held: a row that
        // is not is a broken invariant, and the transaction must not commit half of it.
        return Err(StoreError::Corrupt(format!(
            "submission {} held for a task that was not",
            sub.id
        )));
    };
    Ok(Some(Settled {
        submission: row.try_into()?,
        task,
        unblocked,
        cancelled,
    }))
}

#[tracing::instrument(skip_all, name = "store.review_queue", level = "debug")]
pub(super) async fn review_queue(store: &Backend, q: &PageQuery) -> Result<Vec<SubmissionRecord>> {
    // Oldest first: a queue is worked from its front.
    let rows: Vec<SubmissionRow> = sqlx::query_as(&format!(
        "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE status = 'pending_review' AND ($1 IS \
         NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind(q.cursor)
    .bind(q.limit)
    .fetch_all(store.reader())
    .await?;
    rows::collect(rows)
}

#[tracing::instrument(skip_all, name = "store.reviews_of", level = "debug", fields(submission = %id))]
pub(super) async fn reviews_of(store: &Backend, id: Uuid) -> Result<Vec<ReviewRecord>> {
    let rows: Vec<ReviewRow> = sqlx::query_as(&format!(
        "SELECT {REVIEW_COLUMNS} FROM reviews WHERE submission_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(store.reader())
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Accepts, on their automated score, held submissions whose review deadline has passed.
/// Each is decided in a write of its own, conditional on it still being held, so a review
/// landing at the same moment or another node's reaper decides it at most once.
#[tracing::instrument(skip_all, name = "store.expire_reviews", level = "debug")]
pub(super) async fn expire_reviews(
    store: &Backend,
    now: DateTime<Utc>,
    retry: &RetryPolicy,
    limit: i64,
) -> Result<Vec<Settled>> {
    let due: Vec<SubmissionRow> = sqlx::query_as(&format!(
        "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE status = 'pending_review' AND \
         review_deadline <= $1 ORDER BY review_deadline LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    let mut settled = Vec::new();
    for sub in rows::collect::<_, SubmissionRecord>(due)? {
        let score = u8::try_from(sub.quality_score.clamp(0, 100)).unwrap_or(0);
        let decided = store
            .write((sub, *retry, now), move |mut tx, (sub, retry, now)| {
                Box::pin(async move {
                    let Some(s) = decide(&mut tx, sub, Verdict::Accept(score), retry, *now).await?
                    else {
                        return tx.refuse(Ok(None));
                    };
                    tx.commit().await?;
                    Ok(Some(s))
                })
            })
            .await?;
        settled.extend(decided);
    }
    Ok(settled)
}
