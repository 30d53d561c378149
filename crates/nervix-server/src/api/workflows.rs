//! DAG workflows: a set of tasks with dependencies by key, posted (and escrowed) at once.

use axum::extract::{Path, State};
use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::{Money, TaskStatus};
use nervix_store::TaskRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::idempotency::Render;
use crate::app::workflows::{self, Node, Workflow};
use crate::app::{self, Caller};
use crate::error::{ApiResult, Problem};
use crate::http::{idempotency_key, respond, ApiJson};
use crate::openapi::{self, IdempotencyHeader};
use crate::state::AppState;
use crate::wire::tasks::{TaskFields, TaskView};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_workflow))
        .routes(routes!(get_workflow))
        .routes(routes!(cancel_workflow))
}

/// A task of a workflow: the task fields with a `key`, and `depends_on` naming keys.
pub type WorkflowTask = TaskFields;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewWorkflowRequest {
    #[schema(schema_with = openapi::workflow_name)]
    pub name: String,
    /// 1–1,000 tasks; keys unique, dependencies without cycles.
    #[schema(min_items = 1, max_items = 1000)]
    pub tasks: Vec<WorkflowTask>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub running: usize,
    pub percent: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub id: Uuid,
    pub name: String,
    /// active | completed | failed | cancelled
    pub status: String,
    pub posted_by: Uuid,
    pub tasks: Vec<TaskView>,
    pub progress: Progress,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Progress {
    fn of(tasks: &[TaskRecord]) -> Self {
        let count = |f: &dyn Fn(TaskStatus) -> bool| tasks.iter().filter(|t| f(t.status)).count();
        let completed = count(&|s| s == TaskStatus::Completed);
        let failed = count(&|s| {
            matches!(
                s,
                TaskStatus::Failed | TaskStatus::Expired | TaskStatus::Cancelled
            )
        });
        let running = count(&|s| matches!(s, TaskStatus::Claimed | TaskStatus::Submitted));
        let total = tasks.len();
        Progress {
            total,
            completed,
            failed,
            running,
            percent: (completed * 100)
                .checked_div(total)
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(0),
        }
    }
}

impl From<Workflow> for WorkflowView {
    fn from(
        Workflow {
            workflow: wf,
            tasks,
        }: Workflow,
    ) -> Self {
        let progress = Progress::of(&tasks);
        WorkflowView {
            id: wf.id,
            name: wf.name,
            status: wf.status.as_str().to_owned(),
            posted_by: wf.posted_by,
            tasks: tasks.into_iter().map(Into::into).collect(),
            progress,
            created_at: wf.created_at,
            updated_at: wf.updated_at,
        }
    }
}

/// Post a workflow. Cycles, unknown keys, self-dependencies or over 1,000 tasks: 422 `invalid_dag`.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", security(("bearer" = ["tasks:post"])), request_body = NewWorkflowRequest,
    params(IdempotencyHeader),
    responses((status = 201, body = WorkflowView, description = "The workflow and its tasks, their rewards escrowed."),
        (status = 402, body = Problem, description = "`insufficient_funds`: the balance does not cover the rewards.")))]
async fn post_workflow(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewWorkflowRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&method, &uri, &headers, &req)?;
    let name = workflows::parse_name(&req.name)?;
    let nodes: Vec<Node<'_, &TaskFields>> = req
        .tasks
        .iter()
        .map(|t| Node {
            key: t.key.as_deref().unwrap_or_default(),
            depends_on: &t.depends_on,
            fields: t,
        })
        .collect();
    let max_reward = Money::from_cents(state.app.config.max_reward_cents);
    let now = Utc::now();
    let parse = |t: &&TaskFields, prefix: &str| t.parse(max_reward, now, prefix);
    let render: Render<Workflow> = Arc::new(|w| {
        let view = WorkflowView::from(Workflow {
            workflow: w.workflow.clone(),
            tasks: w.tasks.clone(),
        });
        Ok((
            201,
            serde_json::to_value(view).map_err(app::Error::internal)?,
        ))
    });
    let outcome = workflows::post(
        &state.app,
        &caller,
        name,
        &nodes,
        parse,
        key.as_ref(),
        render.clone(),
    )
    .await?;
    respond(outcome, &render)
}

/// A workflow with its tasks and progress.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows", security(("bearer" = ["tasks:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowView, description = "The workflow."),
        (status = 404, body = Problem, description = "No such workflow.")))]
async fn get_workflow(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WorkflowView>> {
    Ok(Json(workflows::get(&state.app, id).await?.into()))
}

/// Cancel a workflow (poster or admin): every open task is cancelled and refunded.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows", security(("bearer" = ["tasks:post"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowView, description = "The workflow, cancelled."),
        (status = 403, body = Problem, description = "Only the poster or an admin may cancel."),
        (status = 404, body = Problem, description = "No such workflow."),
        (status = 409, body = Problem, description = "The workflow is finished already.")))]
async fn cancel_workflow(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WorkflowView>> {
    Ok(Json(
        workflows::cancel(&state.app, &caller, id).await?.into(),
    ))
}
