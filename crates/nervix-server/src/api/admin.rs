//! Operator actions. Every route requires `role: admin` and is audited.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::notice::Announcement;
use nervix_core::{Money, Role};
use nervix_store::{AuditRecord, WithdrawalStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{agents, audit, auth, economy, notifications, Caller};
use crate::error::{ApiResult, Problem};
use crate::http::{ApiJson, Page, PageParams};
use crate::openapi;
use crate::state::AppState;
use crate::wire::agents::AgentView;
use crate::wire::economy::WithdrawalView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(suspend))
        .routes(routes!(reinstate))
        .routes(routes!(set_role))
        .routes(routes!(grant))
        .routes(routes!(bonus_pool))
        .routes(routes!(fund_bonus_pool))
        .routes(routes!(list_withdrawals))
        .routes(routes!(approve_withdrawal))
        .routes(routes!(reject_withdrawal))
        .routes(routes!(announce))
        .routes(routes!(rotate_signing_key))
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
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = ["admin"])), params(AuditFilter, PageParams),
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
#[utoipa::path(post, path = "/v1/admin/agents/{id}/suspend", tag = "admin", security(("bearer" = ["admin"])), params(("id" = String, Path, description = "UUID or agent_id handle")),
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
#[utoipa::path(post, path = "/v1/admin/agents/{id}/reinstate", tag = "admin", security(("bearer" = ["admin"])), params(("id" = String, Path, description = "UUID or agent_id handle")),
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
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    #[schema(schema_with = openapi::assignable_role)]
    pub role: Role,
}

/// Make an agent a reviewer, or an agent again; takes effect on its next request.
#[utoipa::path(post, path = "/v1/admin/agents/{id}/role", tag = "admin", security(("bearer" = ["admin"])), params(("id" = String, Path)), request_body = RoleBody,
    responses((status = 200, body = AgentView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> ApiResult<Json<AgentView>> {
    let a = agents::set_role(&state.app, &caller, &id, body.role).await?;
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
#[utoipa::path(post, path = "/v1/admin/agents/{id}/grant", tag = "admin", security(("bearer" = ["admin"])), params(("id" = String, Path, description = "UUID or agent_id handle")), request_body = GrantBody,
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

#[derive(Debug, Serialize, ToSchema)]
pub struct BonusPoolView {
    /// What level bonuses can still be paid from.
    #[schema(value_type = String, example = "250.00")]
    pub balance: Money,
}

/// The bonus pool, which pays the level bonus on top of a task's escrow.
#[utoipa::path(get, path = "/v1/admin/bonus-pool", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 200, body = BonusPoolView), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)))]
async fn bonus_pool(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<BonusPoolView>> {
    let balance = economy::bonus_pool(&state.app, &caller).await?;
    Ok(Json(BonusPoolView { balance }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FundBody {
    #[schema(schema_with = openapi::transfer_amount)]
    pub amount: Money,
    pub memo: Option<String>,
}

/// Fund the bonus pool from the platform treasury (audited).
#[utoipa::path(post, path = "/v1/admin/bonus-pool/fund", tag = "admin", security(("bearer" = ["admin"])), request_body = FundBody,
    responses((status = 200, body = BonusPoolView), (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn fund_bonus_pool(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<FundBody>,
) -> ApiResult<Json<BonusPoolView>> {
    let balance = economy::fund_bonus_pool(&state.app, &caller, body.amount, body.memo).await?;
    Ok(Json(BonusPoolView { balance }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WithdrawalFilter {
    /// pending | paid | rejected
    #[param(value_type = Option<String>, pattern = "^(pending|paid|rejected)$")]
    pub status: Option<String>,
}

/// Every agent's withdrawals, newest first.
#[utoipa::path(get, path = "/v1/admin/withdrawals", tag = "admin", security(("bearer" = ["admin"])), params(WithdrawalFilter, PageParams),
    responses((status = 200, body = Page<WithdrawalView>), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn list_withdrawals(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<WithdrawalFilter>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<WithdrawalView>>> {
    let limit = page.limit()?;
    let status = f
        .status
        .as_deref()
        .map(|s| {
            s.parse::<WithdrawalStatus>()
                .map_err(|e| crate::error::ApiError::field("status", e.to_string()))
        })
        .transpose()?;
    let rows =
        economy::withdrawals(&state.app, &caller, true, status, page.cursor()?, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |w| w.id,
        WithdrawalView::from,
    )))
}

/// Approve a pending withdrawal: it is paid out (exactly once; audited).
#[utoipa::path(post, path = "/v1/admin/withdrawals/{id}/approve", tag = "admin", security(("bearer" = ["admin"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WithdrawalView), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "already decided", body = crate::error::Problem)))]
async fn approve_withdrawal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WithdrawalView>> {
    let w = economy::decide_withdrawal(&state.app, &caller, id, true).await?;
    Ok(Json(w.into()))
}

/// Reject a pending withdrawal: the money returns to the agent's available balance (exactly
/// once; audited).
#[utoipa::path(post, path = "/v1/admin/withdrawals/{id}/reject", tag = "admin", security(("bearer" = ["admin"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = WithdrawalView), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "already decided", body = crate::error::Problem)))]
async fn reject_withdrawal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WithdrawalView>> {
    let w = economy::decide_withdrawal(&state.app, &caller, id, false).await?;
    Ok(Json(w.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementBody {
    #[schema(schema_with = openapi::announcement_title)]
    pub title: String,
    #[schema(schema_with = openapi::announcement_body)]
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnnouncementView {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// How many agents it was stored for (every agent enrolled when it was made).
    pub recipients: usize,
}

/// Announce to every agent: stored (agents offline now get it when they reconnect with
/// `since`), pushed as an `announcement` frame to every connected agent, audited.
#[utoipa::path(post, path = "/v1/admin/announcements", tag = "admin", security(("bearer" = ["admin"])), request_body = AnnouncementBody,
    responses((status = 201, body = AnnouncementView, description = "Stored and sent."),
        (status = 403, body = Problem, description = "The caller is not an admin."),
        (status = 422, body = Problem, description = "`title` or `body` is empty or too long.")))]
async fn announce(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AnnouncementBody>,
) -> ApiResult<(StatusCode, Json<AnnouncementView>)> {
    let a = Announcement::parse(&body.title, &body.body)?;
    let done = notifications::announce(&state.app, &caller, a).await?;
    let a = done.announcement;
    Ok((
        StatusCode::CREATED,
        Json(AnnouncementView {
            id: a.id,
            title: a.title,
            body: a.body,
            created_by: a.created_by,
            created_at: a.created_at,
            recipients: done.recipients,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyRotationView {
    /// The new active key's `kid` (RFC 7638 thumbprint), listed in `/.well-known/jwks.json`.
    pub kid: String,
    /// Keys retired longer than the token lifetime, deleted with this rotation.
    pub pruned: Vec<String>,
}

/// Make a new token-signing key the active one, on every node: this node signs with it at
/// once, the others within seconds (they share the keys through the database, and accept its
/// tokens at once). Tokens signed by older keys stay valid until they expire. Audited
/// (`signing_key.rotate`). The same as `nervix admin rotate-signing-key`. The keys are
/// stored sealed with AES-256-GCM under the operator's master key (`NERVIX_MASTER_KEY` or
/// `NERVIX_MASTER_KEY_FILE`) when one is configured, in the clear otherwise.
#[utoipa::path(post, path = "/v1/admin/signing-keys/rotate", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 201, body = SigningKeyRotationView, description = "The new key is active."),
        (status = 401, body = Problem, description = "No valid token."),
        (status = 403, body = Problem, description = "The caller is not an admin.")))]
async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<SigningKeyRotationView>)> {
    let r = auth::rotate_signing_key(&state.app, &caller).await?;
    Ok((
        StatusCode::CREATED,
        Json(SigningKeyRotationView {
            kid: r.kid,
            pruned: r.pruned,
        }),
    ))
}
