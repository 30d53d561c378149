//! DAG workflows: a set of tasks with dependencies by key, posted (and escrowed) at once.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use nervix_core::dag::{topo_order, DagNode};
use nervix_core::{FieldErrors, TaskStatus};
use nervix_store::{NewPost, NewWorkflow, TaskRecord, WorkflowRecord, WorkflowStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::tasks::{after_change, announce, idempotent, validate_fields, TaskFields, TaskView};
use super::{audit, ApiJson};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

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
    pub name: String,
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

fn progress(tasks: &[TaskRecord]) -> Progress {
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

fn render(wf: WorkflowRecord, tasks: Vec<TaskRecord>) -> WorkflowView {
    let progress = progress(&tasks);
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

/// Post a workflow. Cycles, unknown keys, self-dependencies or over 1,000 tasks: 422 `invalid_dag`.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", security(("bearer" = [])), request_body = NewWorkflowRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = WorkflowView), (status = 402, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn post_workflow(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewWorkflowRequest>,
) -> ApiResult<Response> {
    let at = ("POST", "/v1/workflows");
    idempotent(&state, &caller, &headers, at, &req, |idem| async {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::field("name", "must be 1 to 200 characters"));
        }
        let nodes: Vec<DagNode<'_>> = req
            .tasks
            .iter()
            .map(|t| DagNode {
                key: t.key.as_deref().unwrap_or_default(),
                depends_on: &t.depends_on,
            })
            .collect();
        let order = topo_order(&nodes)
            .map_err(|e| ApiError::unprocessable("invalid_dag", e.to_string()))?;
        // At the precision the databases keep, as the rendered workflow below must match it.
        let now = Utc::now().trunc_subsecs(6);
        let mut errs = FieldErrors::default();
        let mut ids: HashMap<&str, Uuid> = HashMap::new();
        let mut tasks = Vec::with_capacity(order.len());
        for i in order {
            let wt = &req.tasks[i];
            match validate_fields(&state, wt, &format!("tasks[{i}]."), now) {
                Ok(mut t) => {
                    t.workflow_key = wt.key.clone();
                    t.depends_on = wt
                        .depends_on
                        .iter()
                        .filter_map(|k| ids.get(k.as_str()).copied())
                        .collect();
                    ids.insert(wt.key.as_deref().unwrap_or_default(), t.id);
                    tasks.push(t);
                }
                Err(e) => {
                    errs.0.extend(e.0);
                    // Keep dependents resolvable so every task's own errors are reported.
                    ids.insert(wt.key.as_deref().unwrap_or_default(), Uuid::nil());
                }
            }
        }
        errs.into_result()?;
        let wf_id = Uuid::now_v7();
        let post = NewPost {
            poster: caller.id,
            from_treasury: caller.is_admin(),
            workflow: Some(NewWorkflow {
                id: wf_id,
                name: name.to_owned(),
            }),
            tasks,
            at: now,
            audit: Some(audit(
                Some(&caller),
                None,
                "workflow.post",
                Some(wf_id.to_string()),
                json!({"tasks": req.tasks.len()}),
            )),
            notifies_first_round: true,
        };
        // The workflow as the post stores it (the response is rendered in its transaction).
        let wf = WorkflowRecord {
            id: wf_id,
            name: name.to_owned(),
            status: WorkflowStatus::Active,
            posted_by: caller.id,
            created_at: now,
            updated_at: now,
        };
        let respond = move |created: &Vec<TaskRecord>| {
            let view = render(wf.clone(), created.clone());
            Some((StatusCode::CREATED, serde_json::to_value(&view).ok()?))
        };
        let save = idem.map(|i| i.save(respond.clone()));
        let created = state.store.post_tasks(&post, save).await?;
        for t in created.iter().filter(|t| t.status == TaskStatus::Available) {
            announce(&state, t.clone());
        }
        respond(&created).ok_or_else(|| ApiError::internal("the workflow could not be rendered"))
    })
    .await
}

/// A workflow with its tasks and progress.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = crate::error::Problem)))]
async fn get_workflow(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WorkflowView>> {
    let wf = state
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let tasks = state.store.workflow_tasks(id).await?;
    Ok(Json(render(wf, tasks)))
}

/// Cancel a workflow (poster or admin): every open task is cancelled and refunded.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowView), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn cancel_workflow(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WorkflowView>> {
    let wf = state
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    if wf.posted_by != caller.id && !caller.is_admin() {
        return Err(ApiError::forbidden(
            "forbidden",
            "only the poster or an admin may cancel a workflow",
        ));
    }
    let entry = audit(
        Some(&caller),
        None,
        "workflow.cancel",
        Some(id.to_string()),
        json!({}),
    );
    let wf = state.store.cancel_workflow(id, Utc::now(), &entry).await?;
    let tasks = state.store.workflow_tasks(id).await?;
    for t in &tasks {
        after_change(&state, t).await;
    }
    Ok(Json(render(wf, tasks)))
}
