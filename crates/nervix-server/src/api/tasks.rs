//! Tasks: post (escrowed), list, claim (one conditional write), submit (checked, then paid or
//! retried), release, cancel; and submissions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::dag::MAX_WORKFLOW_TASKS;
use nervix_core::ids::parse_capabilities;
use nervix_core::quality::{
    normalize_content, quality_score, validate_output_schema, CheckResult, Submission,
};
use nervix_core::reputation::Reputation;
use nervix_core::{Complexity, FieldError, FieldErrors, Level, Money, Role, TaskKind, TaskStatus};
use nervix_store::{
    ClaimOutcome, ClaimRequest, Decision, EligibilityFilter, IdempotencyScope, IdempotentResponse,
    NewPost, NewSubmission, NewTask, SaveResponse, SubmissionRecord, SubmitOutcome, TaskQuery,
    TaskRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{audit, ApiJson, Page, PageParams};
use crate::auth::Caller;
use crate::bus::{Event, Frame};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

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

#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
pub struct Requirements {
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// 0–100.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub min_reputation: Option<Reputation>,
}

/// The fields of a task as posted (alone, or inside a workflow).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskFields {
    /// A workflow task's key, which its siblings' `depends_on` name (workflows only).
    #[serde(default)]
    pub key: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub requirements: Requirements,
    /// JSON number or decimal string with at most two decimals.
    #[schema(value_type = String, example = "50.00")]
    pub reward: Money,
    /// simple | medium | complex | expert
    pub complexity: String,
    pub deadline: DateTime<Utc>,
    /// text | json | markdown | code (default text)
    pub kind: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub language: Option<String>,
    /// 1–10, default 3.
    pub max_attempts: Option<i64>,
    /// Upstream tasks: their UUIDs for `POST /v1/tasks`, keys of this workflow's tasks inside
    /// `POST /v1/workflows`.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// `POST /v1/tasks` takes the task fields with `depends_on` holding task UUIDs.
pub type NewTaskRequest = TaskFields;

#[derive(Debug, Serialize, ToSchema)]
pub struct RequirementsView {
    pub capabilities: Vec<String>,
    #[schema(value_type = String)]
    pub min_reputation: Reputation,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub requirements: RequirementsView,
    #[schema(value_type = String, example = "50.00")]
    pub reward: Money,
    #[schema(value_type = String)]
    pub complexity: Complexity,
    pub deadline: DateTime<Utc>,
    #[schema(value_type = String)]
    pub status: TaskStatus,
    #[schema(value_type = String)]
    pub kind: TaskKind,
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub language: Option<String>,
    pub depends_on: Vec<Uuid>,
    pub workflow_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub posted_by: Uuid,
    pub assigned_agent_id: Option<Uuid>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// While set and in the future, the task is in retry back-off and cannot be claimed.
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> Self {
        TaskView {
            id: t.id,
            title: t.title,
            description: t.description,
            requirements: RequirementsView {
                capabilities: t.capabilities,
                min_reputation: Reputation::from_hundredths(t.min_reputation),
            },
            reward: Money::from_cents(t.reward_cents),
            complexity: t.complexity,
            deadline: t.deadline,
            status: t.status,
            kind: t.kind,
            output_schema: t.output_schema,
            language: t.language,
            depends_on: t.depends_on,
            workflow_id: t.workflow_id,
            key: t.workflow_key,
            posted_by: t.posted_by,
            assigned_agent_id: t.assigned_agent_id,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            lease_expires_at: t.lease_expires_at,
            retry_at: t.retry_at.filter(|r| *r > Utc::now()),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Validates posted task fields; errors are named `{prefix}{field}`.
pub fn validate_fields(
    state: &AppState,
    f: &TaskFields,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<NewTask, FieldErrors> {
    let mut errs = FieldErrors::default();
    let name = |field: &str| format!("{prefix}{field}");
    let title = f.title.trim();
    if title.is_empty() || title.chars().count() > 500 {
        errs.push(name("title"), "must be 1 to 500 characters");
    }
    if f.description.chars().count() > 20_000 {
        errs.push(name("description"), "must be at most 20000 characters");
    }
    if !f.reward.is_positive() {
        errs.push(name("reward"), "must be greater than 0");
    } else if f.reward.cents() > state.config.max_reward_cents {
        errs.push(
            name("reward"),
            format!(
                "must be at most {}",
                Money::from_cents(state.config.max_reward_cents)
            ),
        );
    }
    let complexity = f
        .complexity
        .parse::<Complexity>()
        .map_err(|e| errs.push(name("complexity"), e.to_string()))
        .ok();
    let kind = match f.kind.as_deref() {
        None => Some(TaskKind::Text),
        Some(k) => k
            .parse::<TaskKind>()
            .map_err(|e| errs.push(name("kind"), e.to_string()))
            .ok(),
    };
    if f.deadline <= now {
        errs.push(name("deadline"), "must be in the future");
    }
    let caps = parse_capabilities(
        &name("requirements.capabilities"),
        &f.requirements.capabilities,
    )
    .map_err(|e| errs.0.push(e))
    .ok();
    if let Some(schema) = &f.output_schema {
        if let Err(e) = validate_output_schema(schema) {
            errs.push(
                name("output_schema"),
                format!("is not a valid JSON Schema: {e}"),
            );
        }
    }
    if let Some(lang) = &f.language {
        if lang.is_empty() || lang.len() > 32 {
            errs.push(name("language"), "must be 1 to 32 characters");
        }
    }
    let max_attempts = f.max_attempts.unwrap_or(3);
    if !(1..=10).contains(&max_attempts) {
        errs.push(name("max_attempts"), "must be between 1 and 10");
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let (Some(complexity), Some(kind), Some(capabilities)) = (complexity, kind, caps) else {
        return Err(FieldError::new(name("body"), "invalid task").into());
    };
    Ok(NewTask {
        id: Uuid::now_v7(),
        title: title.to_owned(),
        description: f.description.clone(),
        capabilities,
        min_reputation: f
            .requirements
            .min_reputation
            .map_or(0, Reputation::hundredths),
        reward_cents: f.reward.cents(),
        complexity,
        kind,
        output_schema: f.output_schema.clone(),
        language: f.language.clone(),
        deadline: f.deadline,
        depends_on: Vec::new(),
        workflow_key: None,
        max_attempts,
    })
}

/// Replays the stored response for a repeated `Idempotency-Key` (scoped by caller, `method`
/// and `path`), or runs `f` with the key, which hands it to the store: the response is then
/// stored in the transaction of the work, so concurrent duplicates run the work once and the
/// others replay its response. The same key with a different body is refused.
pub async fn idempotent<B, F, Fut>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    (method, path): (&str, &str),
    body: &B,
    f: F,
) -> ApiResult<Response>
where
    B: Serialize,
    F: FnOnce(Option<Idempotency>) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        let (status, value) = f(None).await?;
        return Ok((status, Json(value)).into_response());
    };
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        ));
    }
    let hash = hex(&Sha256::digest(
        serde_json::to_vec(body).unwrap_or_default(),
    ));
    let scope = IdempotencyScope {
        agent_id: caller.id,
        method: method.to_owned(),
        path: path.to_owned(),
        key,
    };
    if let Some(prev) = state.store.idempotent_response(&scope).await? {
        return replay(prev, &hash);
    }
    let idempotency = Idempotency {
        scope: scope.clone(),
        request_hash: hash.clone(),
    };
    match f(Some(idempotency)).await {
        Ok((status, value)) => Ok((status, Json(value)).into_response()),
        // The key answered another request meanwhile: a concurrent duplicate (the store
        // refused this one, having written nothing) or one whose work is why this one failed.
        Err(e) => match state.store.idempotent_response(&scope).await? {
            Some(prev) => replay(prev, &hash),
            None => Err(e),
        },
    }
}

/// An `Idempotency-Key` for the store operation of a request.
pub struct Idempotency {
    scope: IdempotencyScope,
    request_hash: String,
}

impl Idempotency {
    /// Asks the store to keep the response `render` makes of its outcome with the work;
    /// `None` (not a success) keeps nothing.
    pub fn save<T>(
        self,
        render: impl Fn(&T) -> Option<(StatusCode, Value)> + Send + Sync + 'static,
    ) -> SaveResponse<T> {
        SaveResponse {
            scope: self.scope,
            request_hash: self.request_hash,
            created_at: Utc::now(),
            render: Arc::new(move |outcome: &T| {
                render(outcome).map(|(status, value)| (status.as_u16(), value.to_string()))
            }),
        }
    }
}

/// The stored response, exactly as stored: one that cannot be decoded is an internal error,
/// never a made-up answer.
fn replay(prev: IdempotentResponse, hash: &str) -> ApiResult<Response> {
    if prev.request_hash != hash {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different body",
        ));
    }
    let status = StatusCode::from_u16(prev.status)
        .map_err(|e| ApiError::internal(format!("stored response status {}: {e}", prev.status)))?;
    let value: Value = serde_json::from_str(&prev.body)
        .map_err(|e| ApiError::internal(format!("stored response body: {e}")))?;
    Ok((status, Json(value)).into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_value<T: Serialize>(v: &T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

/// Side effects after a task changed: tell poster and assignee, and offer it if available.
pub async fn after_change(state: &AppState, t: &TaskRecord) {
    let frame = Frame {
        kind: "task_update".into(),
        data: json!({"task_id": t.id, "status": t.status, "assigned_agent_id": t.assigned_agent_id, "updated_at": t.updated_at}),
    };
    let mut to = vec![t.posted_by];
    to.extend(t.assigned_agent_id);
    for agent_id in to {
        if let Err(e) = state
            .bus
            .publish(Event::ToAgent {
                agent_id,
                frame: frame.clone(),
            })
            .await
        {
            tracing::warn!(error = %e, "publishing task_update failed");
        }
    }
    if t.status == TaskStatus::Available && t.retry_at.is_none_or(|r| r <= Utc::now()) {
        offer(state, t.clone());
    }
}

/// Publishes the first matching round of a freshly posted task (stored as already in round 1,
/// see `NewPost::notifies_first_round`): no database write stands between post and notify.
pub fn announce(state: &AppState, t: TaskRecord) {
    let state = state.clone();
    tokio::spawn(async move {
        state
            .matcher
            .publish_round(state.bus.as_ref(), &state.metrics, &t, 0, t.created_at)
            .await;
    });
}

/// Runs the next matching round of a task that became available again, in the background.
pub fn offer(state: &AppState, t: TaskRecord) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state
            .matcher
            .notify(
                state.store.as_ref(),
                state.bus.as_ref(),
                &state.metrics,
                &t,
                t.updated_at,
            )
            .await
        {
            tracing::warn!(task = %t.id, error = %e, "matching failed; the matching loop will retry");
        }
    });
}

/// Post a task; its reward is escrowed from the poster (admins: the platform treasury).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), request_body = NewTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TaskView), (status = 402, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn post_task(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewTaskRequest>,
) -> ApiResult<Response> {
    let at = ("POST", "/v1/tasks");
    idempotent(&state, &caller, &headers, at, &req, |idem| async {
        let now = Utc::now();
        if req.key.is_some() {
            return Err(ApiError::field(
                "key",
                "only tasks inside a workflow have a key",
            ));
        }
        let mut task = validate_fields(&state, &req, "", now)?;
        if req.depends_on.len() > MAX_WORKFLOW_TASKS {
            return Err(ApiError::field("depends_on", "too many dependencies"));
        }
        let mut deps = req
            .depends_on
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Uuid::parse_str(d.trim())
                    .map_err(|_| ApiError::field(format!("depends_on[{i}]"), "must be a task UUID"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        deps.sort();
        deps.dedup();
        task.depends_on = deps;
        let post = NewPost {
            poster: caller.id,
            from_treasury: caller.is_admin(),
            workflow: None,
            tasks: vec![task],
            at: now,
            audit: None,
            notifies_first_round: true,
        };
        let render = |created: &Vec<TaskRecord>| {
            let v = TaskView::from(created.first()?.clone());
            Some((StatusCode::CREATED, serde_json::to_value(&v).ok()?))
        };
        let save = idem.map(|i| i.save(render));
        let created = state.store.post_tasks(&post, save).await?;
        let response = render(&created);
        let t = created
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("post created no task"))?;
        if t.status == TaskStatus::Available {
            announce(&state, t.clone());
        }
        response.ok_or_else(|| ApiError::internal("the posted task could not be rendered"))
    })
    .await
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
        s.parse::<TaskStatus>()
            .map_err(|e| errs.push("status", e.to_string()))
            .ok()
    });
    let complexity = f.complexity.as_deref().and_then(|s| {
        s.parse::<Complexity>()
            .map_err(|e| errs.push("complexity", e.to_string()))
            .ok()
    });
    errs.into_result()?;
    let eligible = f.eligible.unwrap_or(caller.role == Role::Agent);
    let eligible_for = if eligible {
        let me = state
            .store
            .agent(caller.id)
            .await?
            .ok_or_else(|| ApiError::not_found("agent"))?;
        let level = Level::of(
            Reputation::from_hundredths(me.reputation),
            me.tasks_completed,
        );
        Some(EligibilityFilter {
            agent_id: me.id,
            reputation: me.reputation,
            complexities: Complexity::ALL
                .iter()
                .copied()
                .filter(|c| level.allows(*c))
                .collect(),
            now: Utc::now(),
        })
    } else {
        None
    };
    let q = TaskQuery {
        status,
        capability: f.capability.map(|c| c.trim().to_ascii_lowercase()),
        complexity,
        posted_by: None,
        assigned_to: None,
        eligible_for,
        before: page.cursor()?,
        limit: limit + 1,
    };
    let rows = state.store.list_tasks(&q).await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<TaskView> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(0))
        .map(TaskView::from)
        .collect();
    let next_cursor = if more {
        items.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// One task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView), (status = 404, body = crate::error::Problem)))]
async fn get_task(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    let t = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    Ok(Json(TaskView::from(t)))
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
    body: axum::body::Bytes,
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
    let lease = body.estimated_duration.unwrap_or(3600);
    if !(60..=7 * 24 * 3600).contains(&lease) {
        return Err(ApiError::field(
            "estimated_duration",
            "must be between 60 and 604800 seconds",
        ));
    }
    let outcome = state
        .store
        .claim_task(&ClaimRequest {
            task_id: id,
            agent_id: caller.id,
            lease_seconds: lease,
            at: Utc::now(),
        })
        .await?;
    match outcome {
        ClaimOutcome::Claimed(t) => {
            state.matcher.adjust_active(caller.id, 1);
            after_change(&state, &t).await;
            let lease_expires_at = t.lease_expires_at;
            Ok(Json(ClaimResponse {
                task: TaskView::from(t),
                lease_expires_at,
            }))
        }
        ClaimOutcome::AlreadyClaimed => Err(ApiError::conflict(
            "already_claimed",
            "another agent claimed this task first",
        )),
        ClaimOutcome::NotAvailable(TaskStatus::Available) => Err(ApiError::conflict(
            "not_available",
            "task is in retry back-off; try again later",
        )),
        ClaimOutcome::NotAvailable(s) => {
            Err(ApiError::conflict("not_available", format!("task is {s}")))
        }
        ClaimOutcome::NotEligible(why) => Err(ApiError::forbidden("not_eligible", why.to_string())),
        ClaimOutcome::AtCapacity => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "at_capacity",
            "you hold max_concurrent_tasks tasks already",
        )),
        ClaimOutcome::TaskNotFound => Err(ApiError::not_found("task")),
        ClaimOutcome::AgentNotFound => Err(ApiError::unauthorized("unknown agent")),
    }
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
pub struct SubmissionView {
    pub id: Uuid,
    pub task_id: Uuid,
    pub agent_id: Uuid,
    pub quality_score: i64,
    #[schema(value_type = Vec<Object>)]
    pub checks: Value,
    /// accepted | rejected | pending_review
    pub status: String,
    pub feedback: Option<String>,
    #[schema(value_type = Option<String>)]
    pub payout: Option<Money>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<SubmissionRecord> for SubmissionView {
    fn from(s: SubmissionRecord) -> Self {
        SubmissionView {
            id: s.id,
            task_id: s.task_id,
            agent_id: s.agent_id,
            quality_score: s.quality_score,
            checks: s.checks,
            status: s.status.as_str().to_owned(),
            feedback: s.feedback,
            payout: s.payout_cents.map(Money::from_cents),
            created_at: s.created_at,
            decided_at: s.decided_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponse {
    pub submission: SubmissionView,
    pub task: TaskView,
}

fn feedback(checks: &[CheckResult], score: u8, threshold: u8) -> String {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.details))
        .collect();
    if score >= threshold {
        format!("accepted with quality score {score}")
    } else if failed.is_empty() {
        format!("quality score {score} is under the acceptance threshold {threshold}")
    } else {
        format!("quality score {score} is under the acceptance threshold {threshold}; failed checks: {}", failed.join("; "))
    }
}

/// Submit work for a claimed task (assignee only). Checks run before the response.
#[utoipa::path(post, path = "/v1/tasks/{id}/submit", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)), request_body = SubmitBody,
    responses((status = 202, body = SubmitResponse), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<SubmitBody>,
) -> ApiResult<Response> {
    let path = format!("/v1/tasks/{id}/submit");
    let at = ("POST", path.as_str());
    idempotent(&state, &caller, &headers, at, &body, |idem| async {
        let task = state
            .store
            .task(id)
            .await?
            .ok_or_else(|| ApiError::not_found("task"))?;
        if task.assigned_agent_id != Some(caller.id) || task.status != TaskStatus::Claimed {
            return Err(if task.assigned_agent_id == Some(caller.id) {
                ApiError::conflict("invalid_state", format!("task is {}", task.status))
            } else {
                ApiError::forbidden("not_assignee", "only the agent holding the task may submit")
            });
        }
        let content = normalize_content(task.kind, &body.submission_data.content)?;
        if let Some(notes) = &body.submission_data.notes {
            if notes.chars().count() > 10_000 {
                return Err(ApiError::field(
                    "submission_data.notes",
                    "must be at most 10000 characters",
                ));
            }
        }
        let checks = state.checks.run(&Submission {
            kind: task.kind,
            output_schema: task.output_schema.as_ref(),
            content: &content,
        });
        let score = quality_score(&checks);
        let threshold = state.config.accept_threshold;
        let decision = if score >= threshold {
            Decision::Accept
        } else {
            Decision::Reject
        };
        let render = |outcome: &SubmitOutcome| {
            let SubmitOutcome::Done {
                submission, task, ..
            } = outcome
            else {
                return None;
            };
            let resp = SubmitResponse {
                submission: submission.clone().into(),
                task: TaskView::from(task.clone()),
            };
            Some((StatusCode::ACCEPTED, serde_json::to_value(&resp).ok()?))
        };
        let save = idem.map(|i| i.save(render));
        let outcome = state
            .store
            .submit(
                &NewSubmission {
                    id: Uuid::now_v7(),
                    task_id: id,
                    agent_id: caller.id,
                    content,
                    notes: body.submission_data.notes.clone(),
                    quality_score: score,
                    checks: to_value(&checks)?,
                    decision,
                    feedback: Some(feedback(&checks, score, threshold)),
                    retry: state.config.retry,
                    at: Utc::now(),
                },
                save,
            )
            .await?;
        let response = render(&outcome);
        let SubmitOutcome::Done {
            submission,
            task,
            unblocked,
            cancelled,
        } = outcome
        else {
            return Err(ApiError::conflict(
                "invalid_state",
                "the task is no longer held by you",
            ));
        };
        state.matcher.adjust_active(caller.id, -1);
        after_change(&state, &task).await;
        for t in unblocked.iter().chain(cancelled.iter()) {
            after_change(&state, t).await;
        }
        if let Some(payout) = submission.payout_cents {
            let frame = Frame {
                kind: "earning".into(),
                data: json!({"task_id": task.id, "amount": Money::from_cents(payout)}),
            };
            if let Err(e) = state
                .bus
                .publish(Event::ToAgent {
                    agent_id: caller.id,
                    frame,
                })
                .await
            {
                tracing::warn!(error = %e, "publishing earning failed");
            }
        }
        response.ok_or_else(|| ApiError::internal("the submission could not be rendered"))
    })
    .await
}

/// Give a claimed task back (assignee only); no attempt is counted.
#[utoipa::path(post, path = "/v1/tasks/{id}/release", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView), (status = 409, body = crate::error::Problem)))]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    let t = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    if t.assigned_agent_id != Some(caller.id) {
        return Err(ApiError::forbidden(
            "not_assignee",
            "only the agent holding the task may release it",
        ));
    }
    let t = state.store.release_task(id, caller.id, Utc::now()).await?;
    state.matcher.adjust_active(caller.id, -1);
    after_change(&state, &t).await;
    Ok(Json(TaskView::from(t)))
}

/// Cancel a task (poster or admin); the escrow is refunded and dependents are cancelled.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TaskView>> {
    let t = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    if t.posted_by != caller.id && !caller.is_admin() {
        return Err(ApiError::forbidden(
            "forbidden",
            "only the poster or an admin may cancel a task",
        ));
    }
    let entry = audit(
        Some(&caller),
        None,
        "task.cancel",
        Some(id.to_string()),
        json!({}),
    );
    let t = state.store.cancel_task(id, Utc::now(), &entry).await?;
    if let Some(a) = t.assigned_agent_id {
        state.matcher.adjust_active(a, -1);
    }
    after_change(&state, &t).await;
    Ok(Json(TaskView::from(t)))
}

/// A submission: visible to its submitter, the task's poster, reviewers and admins.
#[utoipa::path(get, path = "/v1/submissions/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = SubmissionView), (status = 404, body = crate::error::Problem)))]
async fn get_submission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<SubmissionView>> {
    let s = state
        .store
        .submission(id)
        .await?
        .ok_or_else(|| ApiError::not_found("submission"))?;
    let allowed =
        s.agent_id == caller.id || matches!(caller.role, Role::Admin | Role::Reviewer) || {
            let t = state.store.task(s.task_id).await?;
            t.is_some_and(|t| t.posted_by == caller.id)
        };
    if !allowed {
        return Err(ApiError::not_found("submission"));
    }
    Ok(Json(s.into()))
}
