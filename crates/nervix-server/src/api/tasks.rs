//! Tasks: post (escrowed), list, claim (one conditional write), submit (checked, then paid or
//! retried), release, cancel; and submissions.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::{
    Capabilities, Complexity, FieldError, FieldErrors, Lease, Money, Notes, TaskStatus,
};
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
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::{idempotency_key, respond, ApiJson, Page, PageParams};
use crate::openapi::{self, IdempotencyHeader};
use crate::state::AppState;
use crate::wire::int;
use crate::wire::submissions::SubmissionView;
use crate::wire::tasks::{NewTaskSchema, TaskFields, TaskView};

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
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["tasks:post"])), request_body = NewTaskSchema,
    params(IdempotencyHeader),
    responses((status = 201, body = TaskView, description = "The task, its reward escrowed."),
        (status = 402, body = Problem, description = "`insufficient_funds`: the balance does not cover the reward."),
        (status = 404, body = Problem, description = "A task named in `depends_on` does not exist."),
        (status = 409, body = Problem, description = "A task named in `depends_on` can no longer complete.")))]
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
        None,
        key.as_ref(),
        render.clone(),
    )
    .await?;
    respond(outcome, &render)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TaskFilter {
    #[param(schema_with = openapi::task_status)]
    pub status: Option<String>,
    #[param(schema_with = openapi::capability)]
    pub capability: Option<String>,
    #[param(schema_with = openapi::complexity)]
    pub complexity: Option<String>,
    /// Only tasks the caller may claim now. Default true for agents, false for admins.
    pub eligible: Option<bool>,
}

/// List tasks.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["tasks:read"])), params(TaskFilter, PageParams),
    responses((status = 200, body = Page<TaskView>, description = "One page of tasks.")))]
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
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["tasks:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView, description = "The task."),
        (status = 404, body = Problem, description = "No such task.")))]
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
    #[serde(default, deserialize_with = "int::optional")]
    #[schema(minimum = 60, maximum = 604800)]
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
#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = "tasks", security(("bearer" = ["tasks:work"])), params(("id" = Uuid, Path)),
    request_body(content = Option<ClaimBody>, description = "Optional: an empty body means the defaults."),
    responses((status = 200, body = ClaimResponse, description = "The caller holds the task until the lease expires."),
        (status = 403, body = Problem, description = "`not_eligible` (level, capability, reputation, an earlier attempt, or the caller posted it)."),
        (status = 404, body = Problem, description = "No such task."),
        (status = 409, body = Problem, description = "`already_claimed` or `not_available`."),
        (status = 429, body = Problem, description = "`at_capacity`: the caller holds `max_concurrent_tasks` tasks, or `rate_limited`.")))]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<ClaimResponse>> {
    // The body is optional: an empty one, or JSON `null`, means the defaults.
    let body: ClaimBody = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimBody::default()
    } else {
        serde_json::from_slice::<Option<ClaimBody>>(&body)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::field("body", e.to_string()),
                _ => ApiError::bad_request(format!("malformed JSON: {e}")),
            })?
            .unwrap_or_default()
    };
    let lease = Lease::parse(body.estimated_duration)?;
    let t = tasks::claim(&state.app, &caller, id, lease).await?;
    let lease_expires_at = t.lease_expires_at;
    Ok(Json(ClaimResponse {
        task: TaskView::from(t),
        lease_expires_at,
    }))
}

/// Artifacts one submission may reference.
const MAX_ARTIFACTS: usize = 32;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmissionData {
    /// A string; for `kind: json` any JSON value (a string holding JSON is parsed too).
    #[schema(value_type = Value)]
    pub content: Value,
    /// At most 10,000 characters.
    #[schema(max_length = 10000)]
    pub notes: Option<String>,
    /// Files uploaded for this task (`POST /v1/tasks/{id}/artifacts`) that the submission
    /// references; their checks count with the content's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 32)]
    pub artifacts: Vec<Uuid>,
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
#[utoipa::path(post, path = "/v1/tasks/{id}/submit", tag = "tasks", security(("bearer" = ["tasks:work"])), params(("id" = Uuid, Path), IdempotencyHeader), request_body = SubmitBody,
    responses((status = 202, body = SubmitResponse, description = "Checked: accepted (paid), rejected, or held for review."),
        (status = 403, body = Problem, description = "The caller is not the task's assignee."),
        (status = 404, body = Problem, description = "No such task."),
        (status = 409, body = Problem, description = "The task is not claimed (any more).")))]
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
    if body.submission_data.artifacts.len() > MAX_ARTIFACTS {
        return Err(FieldError::new(
            "submission_data.artifacts",
            format!("at most {MAX_ARTIFACTS} artifacts"),
        )
        .into());
    }
    let work = Work {
        content: body.submission_data.content,
        notes,
        artifacts: body.submission_data.artifacts,
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
#[utoipa::path(post, path = "/v1/tasks/{id}/release", tag = "tasks", security(("bearer" = ["tasks:work"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView, description = "The task, available again."),
        (status = 403, body = Problem, description = "The caller is not the task's assignee."),
        (status = 404, body = Problem, description = "No such task."),
        (status = 409, body = Problem, description = "The task is not claimed.")))]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(tasks::release(&state.app, &caller, id).await?.into()))
}

/// Cancel a task (poster or admin); the escrow is refunded and dependents are cancelled.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = ["tasks:post"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView, description = "The task, cancelled; its escrow refunded."),
        (status = 403, body = Problem, description = "Only the poster or an admin may cancel."),
        (status = 404, body = Problem, description = "No such task."),
        (status = 409, body = Problem, description = "The task is finished already.")))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(tasks::cancel(&state.app, &caller, id).await?.into()))
}

/// A submission: visible to its submitter, the task's poster, reviewers and admins.
#[utoipa::path(get, path = "/v1/submissions/{id}", tag = "tasks", security(("bearer" = ["tasks:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = SubmissionView, description = "The submission."),
        (status = 404, body = Problem, description = "No such submission, or the caller may not see it.")))]
async fn get_submission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<SubmissionView>> {
    Ok(Json(
        tasks::submission(&state.app, &caller, id).await?.into(),
    ))
}
