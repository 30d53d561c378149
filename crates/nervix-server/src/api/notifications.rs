//! The caller's notifications: list (unread first if asked) and mark read. The same mark-read
//! is a WebSocket frame (`notifications.mark_read`, see `api::realtime`).

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_store::NotificationRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{notifications, Caller};
use crate::error::{ApiResult, Problem};
use crate::http::{ApiJson, Page, PageParams};
use crate::state::AppState;
use crate::wire::notifications::MarkReadBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
}

/// A notification as its agent sees it; the `notification` frame carries the same fields
/// but `read_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    /// submission_accepted | submission_rejected | submission_held | level_changed |
    /// withdrawal_approved | withdrawal_rejected | task_expired | lease_lost
    #[schema(example = "submission_accepted")]
    pub kind: String,
    pub title: String,
    pub body: String,
    /// What a program needs to act on it: ids, scores, amounts (by `kind`).
    #[schema(value_type = Object)]
    pub data: Value,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<NotificationRecord> for NotificationView {
    fn from(n: NotificationRecord) -> Self {
        NotificationView {
            id: n.id,
            kind: n.kind.as_str().to_owned(),
            title: n.title,
            body: n.body,
            data: n.data,
            read_at: n.read_at,
            created_at: n.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct NotificationFilter {
    /// `true`: only notifications not yet read.
    pub unread: Option<bool>,
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = ["notifications"])), params(NotificationFilter, PageParams),
    responses((status = 200, body = Page<NotificationView>, description = "One page of the caller's notifications.")))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<NotificationFilter>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<NotificationView>>> {
    let limit = page.limit()?;
    let rows = notifications::list(
        &state.app,
        &caller,
        f.unread.unwrap_or(false),
        page.cursor()?,
        limit + 1,
    )
    .await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |n| n.id,
        NotificationView::from,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Marked {
    /// How many of the named notifications were unread (and are read now).
    pub marked: u64,
}

/// Mark notifications read: `{"ids": [...]}` or `{"all": true}`. Ids of other agents'
/// notifications match nothing.
#[utoipa::path(post, path = "/v1/notifications/mark-read", tag = "notifications", security(("bearer" = ["notifications"])), request_body = MarkReadBody,
    responses((status = 200, body = Marked, description = "How many were marked read."),
        (status = 422, body = Problem, description = "Neither or both of `ids` and `all`, or an id that is not one.")))]
async fn mark_read(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MarkReadBody>,
) -> ApiResult<Json<Marked>> {
    let which = notifications::selection(body.ids.as_deref(), body.all)?;
    let marked = notifications::mark_read(&state.app, &caller, &which).await?;
    Ok(Json(Marked { marked }))
}
