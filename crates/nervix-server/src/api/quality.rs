//! Peer review and the spot-check queue.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::review::Review;
use nervix_store::{PageQuery, ReviewRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::quality::{self, Reviewed};
use crate::app::Caller;
use crate::error::ApiResult;
use crate::http::{ApiJson, Page, PageParams};
use crate::state::AppState;
use crate::wire::int;
use crate::wire::submissions::SubmissionView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_review))
        .routes(routes!(queue))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub submission_id: Uuid,
    /// 0–100.
    #[serde(deserialize_with = "int::required")]
    #[schema(minimum = 0, maximum = 100)]
    pub score: i64,
    /// What the worker should know; at most 4,000 characters.
    #[schema(max_length = 4000)]
    pub feedback: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    pub id: Uuid,
    pub submission_id: Uuid,
    pub reviewer_id: Uuid,
    /// The agent whose work was reviewed.
    pub agent_id: Uuid,
    pub score: i64,
    pub feedback: String,
    /// `accepted` or `rejected` when this review decided a held submission, else `null`.
    pub decision: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The submission as this review left it, when it decided it.
    pub submission: Option<SubmissionView>,
}

impl ReviewView {
    fn new(review: ReviewRecord, submission: Option<SubmissionView>) -> Self {
        ReviewView {
            id: review.id,
            submission_id: review.submission_id,
            reviewer_id: review.reviewer_id,
            agent_id: review.subject_id,
            score: review.score,
            feedback: review.feedback,
            decision: review.decision.map(|d| d.as_str().to_owned()),
            created_at: review.created_at,
            submission,
        }
    }
}

/// Review a submission (peer layer of reputation). Whoever may read the submission may review
/// it, except the agent who did the work; a reviewer's or admin's review of a held submission
/// also decides it.
#[utoipa::path(post, path = "/v1/quality/submit", tag = "quality", security(("bearer" = ["reviews"])), request_body = ReviewBody,
    responses((status = 201, body = ReviewView), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn submit_review(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ReviewBody>,
) -> ApiResult<(StatusCode, Json<ReviewView>)> {
    let review = Review::parse(body.score, body.feedback.as_deref())?;
    let Reviewed { review, settled } =
        quality::review(&state.app, &caller, body.submission_id, review).await?;
    let submission = settled.map(|s| SubmissionView::from(s.submission));
    Ok((
        StatusCode::CREATED,
        Json(ReviewView::new(review, submission)),
    ))
}

/// Submissions held for a spot check, oldest first (reviewers and admins).
#[utoipa::path(get, path = "/v1/quality/queue", tag = "quality", security(("bearer" = ["reviews"])), params(PageParams),
    responses((status = 200, body = Page<SubmissionView>), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn queue(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<SubmissionView>>> {
    let limit = page.limit()?;
    let q = PageQuery {
        cursor: page.cursor()?,
        limit: limit + 1,
    };
    let rows = quality::queue(&state.app, &caller, q).await?;
    Ok(Json(Page::from_rows(rows, limit, |s| s.id, Into::into)))
}
