//! Tasks: post (escrowed), list, claim (one conditional write), submit (checked, then paid or
//! retried), release, cancel; and submissions.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::{Capabilities, Complexity, FieldErrors, Lease, Money, Notes, TaskStatus};
use nervix_store::TaskRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::idempotency::Render;
use crate::app::tasks::{self, Submitted, Work};
use crate::app::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::http::{idempotency_key, respond, ApiJson, Page, PageParams};
use crate::state::AppState;
use crate::wire::submissions::SubmissionView;
use crate::wire::tasks::{TaskFields, TaskView};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_task, list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(claim))
        .routes(routes!(submit))
        .routes(routes!(release))
        .routes(routes!(cancel))
        .routes(routes!(get_submission))
}

/// `POST /v1/tasks` takes the task fields with `depends_on` holding task UUIDs.
pub type NewTaskRequest = TaskFields;

fn json<T: Serialize>(v: &T) -> app::Result<Value> {
    serde_json::to_value(v).map_err(app::Error::internal)
}

/// Post a task; its reward is escrowed from the poster (admins: the platform treasury).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), request_body = NewTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TaskView), (status = 402, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn post_task(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewTaskRequest>,
) -> ApiResult<Response> {
    if req.key.is_some() {
        return Err(ApiError::field(
            "key",
            "only tasks inside a workflow have a key",
        ));
    }
    let spec = req.parse(
        Money::from_cents(state.app.config.max_reward_cents),
        Utc::now(),
        "",
    )?;
    let depends_on = tasks::parse_dependencies(&req.depends_on)?;
    let key = idempotency_key(&method, &uri, &headers, &req)?;
    let render: Render<TaskRecord> = Arc::new(|t| Ok((201, json(&TaskView::from(t.clone()))?)));
    let outcome = tasks::post(
        &state.app,
        &caller,
        &spec,
        depends_on,
        key.as_ref(),
        render.clone(),
    )
    .await?;
    respond(outcome, &render)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TaskFilter {
    pub status: Option<String>,
    pub capability: Option<String>,
    pub complexity: Option<String>,
    /// Only tasks the caller may claim now. Default true for agents, false for admins.
    pub eligible: Option<bool>,
}

/// List tasks.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), params(TaskFilter, PageParams),
    responses((status = 200, body = Page<TaskView>)))]
async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<TaskFilter>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<TaskView>>> {
    let limit = page.limit()?;
    let mut errs = FieldErrors::default();
    let status = f.status.as_deref().and_then(|s| {
        errs.check(
            s.parse::<TaskStatus>()
                .map_err(|e| nervix_core::FieldError::new("status", e.to_string())),
        )
    });
    let complexity = f.complexity.as_deref().and_then(|s| {
        errs.check(
            s.parse::<Complexity>()
                .map_err(|e| nervix_core::FieldError::new("complexity", e.to_string())),
        )
    });
    let capability = f
        .capability
        .as_deref()
        .and_then(|c| errs.check(Capabilities::parse_one("capability", c)));
    errs.into_result()?;
    let filter = tasks::Filter {
        status,
        capability,
        complexity,
        eligible: f.eligible,
    };
    let rows = tasks::list(&state.app, &caller, filter, page.cursor()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |t| t.id, TaskView::from)))
}

/// One task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView), (status = 404, body = crate::error::Problem)))]
async fn get_task(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(tasks::get(&state.app, id).await?.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ClaimBody {
    /// Seconds the agent expects to need: the lease (60 s – 7 days, default 3600), capped by the deadline.
    pub estimated_duration: Option<i64>,
    /// Informational; eligibility uses the enrolled capabilities.
    #[serde(default)]
    pub agent_capabilities: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimResponse {
    pub task: TaskView,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Claim a task. Exactly one of any number of concurrent claimers wins.
#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = ClaimBody,
    responses((status = 200, body = ClaimResponse), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<ClaimResponse>> {
    // The body is optional: an empty one means the defaults.
    let body: ClaimBody = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::field("body", e.to_string()),
            _ => ApiError::bad_request(format!("malformed JSON: {e}")),
        })?
    };
    let lease = Lease::parse(body.estimated_duration)?;
    let t = tasks::claim(&state.app, &caller, id, lease).await?;
    let lease_expires_at = t.lease_expires_at;
    Ok(Json(ClaimResponse {
        task: TaskView::from(t),
        lease_expires_at,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmissionData {
    /// A string; for `kind: json` a JSON value (a string holding JSON is parsed too).
    #[schema(value_type = Object)]
    pub content: Value,
    pub notes: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmitBody {
    pub submission_data: SubmissionData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponse {
    pub submission: SubmissionView,
    pub task: TaskView,
}
/// Submit work for a claimed task (assignee only). Checks run before the response.
#[utoipa::path(post, path = "/v1/tasks/{id}/submit", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)), request_body = SubmitBody,
    responses((status = 202, body = SubmitResponse), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<SubmitBody>,
) -> ApiResult<Response> {
    let key = idempotency_key(&method, &uri, &headers, &body)?;
    let notes = body
        .submission_data
        .notes
        .as_deref()
        .map(Notes::parse)
        .transpose()?;
    let work = Work {
        content: body.submission_data.content,
        notes,
    };
    let render: Render<Submitted> = Arc::new(|s| {
        let view = SubmitResponse {
            submission: s.submission.clone().into(),
            task: TaskView::from(s.task.clone()),
        };
        Ok((202, json(&view)?))
    });
    let outcome =
        tasks::submit(&state.app, &caller, id, work, key.as_ref(), render.clone()).await?;
    respond(outcome, &render)
}

/// Give a claimed task back (assignee only); no attempt is counted.
#[utoipa::path(post, path = "/v1/tasks/{id}/release", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView), (status = 409, body = crate::error::Problem)))]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(tasks::release(&state.app, &caller, id).await?.into()))
}

/// Cancel a task (poster or admin); the escrow is refunded and dependents are cancelled.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(tasks::cancel(&state.app, &caller, id).await?.into()))
}

/// A submission: visible to its submitter, the task's poster, reviewers and admins.
#[utoipa::path(get, path = "/v1/submissions/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = SubmissionView), (status = 404, body = crate::error::Problem)))]
async fn get_submission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<SubmissionView>> {
    Ok(Json(
        tasks::submission(&state.app, &caller, id).await?.into(),
    ))
}
