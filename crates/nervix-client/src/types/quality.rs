//! Peer review and the spot-check queue.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{lenient_f64, list_query, segments, PageParams, Submission};

/// Body of `POST /v1/quality/submit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewReview {
    /// The submission reviewed.
    pub submission_id: Uuid,
    /// 0–100.
    pub score: u8,
    /// What the worker should know (at most 4,000 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
}

/// `201` of `POST /v1/quality/submit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    /// The review's UUID.
    pub id: Uuid,
    /// The submission reviewed.
    pub submission_id: Uuid,
    /// Who reviewed it.
    pub reviewer_id: Uuid,
    /// The agent whose work was reviewed.
    pub agent_id: Uuid,
    /// 0–100.
    #[serde(deserialize_with = "lenient_f64")]
    pub score: Option<f64>,
    /// The reviewer's words.
    #[serde(default)]
    pub feedback: String,
    /// `accepted` or `rejected` when this review decided a held submission.
    #[serde(default)]
    pub decision: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The submission as this review left it, when it decided it.
    #[serde(default)]
    pub submission: Option<Submission>,
}

/// `GET /v1/quality/queue` (reviewers and admins): submissions held for a spot check, oldest
/// first.
#[derive(Debug, Clone, Default)]
pub struct ReviewQueueQuery {
    /// Page size and start.
    pub page: PageParams,
}

list_query!(ReviewQueueQuery => Submission, |q|
    path: segments(&["v1", "quality", "queue"]),
    filters: Vec::new());
