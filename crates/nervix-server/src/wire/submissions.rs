//! The JSON shape of a submission, returned by submit, by its own route and by the review
//! queue.

use chrono::{DateTime, Utc};
use nervix_core::Money;
use nervix_store::SubmissionRecord;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionView {
    pub id: Uuid,
    pub task_id: Uuid,
    pub agent_id: Uuid,
    /// The automated checks' score, 0–100.
    pub quality_score: i64,
    /// The score the submission was paid on or rejected with: a deciding reviewer's, else
    /// the automated one; `null` while held for review.
    pub final_score: Option<i64>,
    #[schema(value_type = Vec<Object>)]
    pub checks: Value,
    /// accepted | rejected | pending_review
    pub status: String,
    pub feedback: Option<String>,
    #[schema(value_type = Option<String>)]
    pub payout: Option<Money>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// While held: when it is accepted on its automated score if nobody reviews it.
    pub review_deadline: Option<DateTime<Utc>>,
}

impl From<SubmissionRecord> for SubmissionView {
    fn from(s: SubmissionRecord) -> Self {
        SubmissionView {
            id: s.id,
            task_id: s.task_id,
            agent_id: s.agent_id,
            quality_score: s.quality_score,
            final_score: s.final_score,
            checks: s.checks,
            status: s.status.as_str().to_owned(),
            feedback: s.feedback,
            payout: s.payout_cents.map(Money::from_cents),
            created_at: s.created_at,
            decided_at: s.decided_at,
            review_deadline: s.review_deadline,
        }
    }
}
