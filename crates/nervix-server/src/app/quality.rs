//! Quality control after the automated checks: spot checks (a random sample of would-be
//! accepted submissions held for a person), peer reviews, the review queue, and the reaper
//! that accepts held work nobody reviewed in time.

use chrono::Utc;
use nervix_core::review::Review;
use nervix_core::{Money, Role};
use nervix_store::{NewReview, PageQuery, ReviewOutcome, ReviewRecord, Settled, SubmissionRecord};
use uuid::Uuid;

use super::{events, notifications, receipts, tasks, App, Caller, Error, Result};
use crate::bus::Frame;

/// A review and, if it decided a held submission, what that moved.
#[derive(Debug)]
pub struct Reviewed {
    pub review: ReviewRecord,
    pub settled: Option<Settled>,
}

/// Reviews a submission. Whoever may read it may review it, except the agent who did the work
/// (403); one review per reviewer (409). A reviewer's or admin's review of a held submission
/// also decides it: at or above the acceptance threshold it is accepted and paid at the
/// review's score, below it rejected.
pub async fn review(
    app: &App,
    caller: &Caller,
    submission_id: Uuid,
    r: Review,
) -> Result<Reviewed> {
    // The same visibility as reading it: the submitter, the poster, reviewers and admins.
    let sub = tasks::submission(app, caller, submission_id).await?;
    if sub.agent_id == caller.id {
        return Err(own_submission());
    }
    let outcome = app
        .store
        .review(&NewReview {
            id: Uuid::now_v7(),
            submission_id,
            reviewer_id: caller.id,
            score: r.score,
            feedback: r.feedback,
            may_decide: matches!(caller.role, Role::Reviewer | Role::Admin),
            accept_threshold: app.config.accept_threshold,
            retry: app.config.retry,
            at: Utc::now(),
        })
        .await?;
    match outcome {
        ReviewOutcome::Done { review, settled } => {
            if let Some(s) = &settled {
                announce_settled(app, s).await;
            }
            Ok(Reviewed { review, settled })
        }
        ReviewOutcome::SubmissionNotFound => Err(Error::not_found("submission")),
        ReviewOutcome::OwnSubmission => Err(own_submission()),
        ReviewOutcome::AlreadyReviewed => Err(Error::conflict(
            "already_reviewed",
            "you have already reviewed this submission",
        )),
    }
}

fn own_submission() -> Error {
    Error::forbidden("own_submission", "nobody reviews their own submission")
}

/// Submissions held for a spot check, oldest first (reviewers and admins).
pub async fn queue(app: &App, caller: &Caller, page: PageQuery) -> Result<Vec<SubmissionRecord>> {
    if !matches!(caller.role, Role::Reviewer | Role::Admin) {
        return Err(Error::forbidden(
            "forbidden",
            "the review queue is for reviewers and admins",
        ));
    }
    Ok(app.store.review_queue(&page).await?)
}

/// Accepts the held submissions whose review deadline passed, on their automated score.
pub async fn expire_reviews(app: &App, limit: i64) -> Result<usize> {
    let settled = app
        .store
        .expire_reviews(Utc::now(), &app.config.retry, limit)
        .await?;
    for s in &settled {
        tracing::info!(submission = %s.submission.id, "review deadline passed: accepted on its automated score");
        announce_settled(app, s).await;
    }
    Ok(settled.len())
}

/// The events of a decided held submission: the task's update, its cascade, and the payout.
async fn announce_settled(app: &App, s: &Settled) {
    receipts::decided(app, &s.submission);
    events::task_changed(app, &s.task).await;
    events::tasks_changed(app, &s.unblocked).await;
    events::tasks_changed(app, &s.cancelled).await;
    if let Some(payout) = s.submission.payout_cents {
        let frame = Frame::Earning {
            task_id: s.task.id,
            amount: Money::from_cents(payout),
        };
        events::to_agent(app, s.submission.agent_id, frame).await;
    }
    notifications::submission_decided(app, &s.submission, &s.task).await;
}
