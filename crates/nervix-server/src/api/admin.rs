//! Operator actions. Every route requires `role: admin` and is audited.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::Money;
use nervix_store::AuditRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{agents, audit, economy, Caller};
use crate::error::{ApiResult, Problem};
use crate::http::{ApiJson, Page, PageParams};
use crate::openapi;
use crate::state::AppState;
use crate::wire::agents::AgentView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(suspend))
        .routes(routes!(reinstate))
        .routes(routes!(grant))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> Self {
        AuditView {
            id: r.id,
            at: r.at,
            actor_id: r.actor_id,
            actor: r.actor_handle,
            action: r.action,
            target: r.target,
            client_ip: r.client_ip,
            details: r.details,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditFilter {
    /// Only records of this action (e.g. `admin.grant`; empty: any).
    pub action: Option<String>,
    /// Only records by this actor (UUID or handle; empty: any).
    pub actor: Option<String>,
    /// Only records about this target (empty: any).
    pub target: Option<String>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time.
    pub until: Option<DateTime<Utc>>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = [])), params(AuditFilter, PageParams),
    responses((status = 200, body = Page<AuditView>, description = "One page of audit records."),
        (status = 403, body = Problem, description = "The caller is not an admin."),
        (status = 404, body = Problem, description = "`actor` names no agent.")))]
async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<AuditFilter>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<AuditView>>> {
    let limit = page.limit()?;
    let filter = audit::Filter {
        // An empty filter (`?actor=` as forms send it) filters nothing.
        action: f.action.filter(|a| !a.is_empty()),
        actor: f.actor.filter(|a| !a.is_empty()),
        target: f.target.filter(|t| !t.is_empty()),
        since: f.since,
        until: f.until,
    };
    let rows = audit::list(&state.app, &caller, filter, page.cursor()?, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |r| r.id,
        AuditView::from,
    )))
}

/// Suspend an agent: all its tokens stop working at once.
#[utoipa::path(post, path = "/v1/admin/agents/{id}/suspend", tag = "admin", security(("bearer" = [])), params(("id" = String, Path, description = "UUID or agent_id handle")),
    responses((status = 200, body = AgentView, description = "The agent, suspended."),
        (status = 403, body = Problem, description = "The caller is not an admin, or names itself (`invalid_target`)."),
        (status = 404, body = Problem, description = "No such agent.")))]
async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let a = agents::set_suspended(&state.app, &caller, &id, true).await?;
    Ok(Json(AgentView::public(&a)))
}

/// Lift a suspension.
#[utoipa::path(post, path = "/v1/admin/agents/{id}/reinstate", tag = "admin", security(("bearer" = [])), params(("id" = String, Path, description = "UUID or agent_id handle")),
    responses((status = 200, body = AgentView, description = "The agent, no longer suspended."),
        (status = 403, body = Problem, description = "The caller is not an admin, or names itself (`invalid_target`)."),
        (status = 404, body = Problem, description = "No such agent.")))]
async fn reinstate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let a = agents::set_suspended(&state.app, &caller, &id, false).await?;
    Ok(Json(AgentView::public(&a)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GrantBody {
    #[schema(schema_with = openapi::grant_amount)]
    pub amount: Money,
    /// Default `operator grant`.
    pub memo: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantResponse {
    pub agent_id: Uuid,
    #[schema(value_type = String)]
    pub amount: Money,
}

/// Credit an agent from the platform treasury (e.g. to fund the tasks it posts).
#[utoipa::path(post, path = "/v1/admin/agents/{id}/grant", tag = "admin", security(("bearer" = [])), params(("id" = String, Path, description = "UUID or agent_id handle")), request_body = GrantBody,
    responses((status = 200, body = GrantResponse, description = "The agent was credited."),
        (status = 403, body = Problem, description = "The caller is not an admin."),
        (status = 404, body = Problem, description = "No such agent.")))]
async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrantBody>,
) -> ApiResult<Json<GrantResponse>> {
    let agent = economy::grant(&state.app, &caller, &id, body.amount, body.memo).await?;
    Ok(Json(GrantResponse {
        agent_id: agent.id,
        amount: body.amount,
    }))
}
