//! Agent profiles: public view, the caller's own view, config changes and the directory.

use axum::extract::{Path, Query, State};
use axum::Json;
use nervix_core::{
    AgentName, Capabilities, EncryptionKey, FieldErrors, Level, MaxConcurrentTasks, Metadata, Money,
};
use nervix_store::{AgentRecord, Balances};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::agents::{self, ConfigChange};
use crate::app::Caller;
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::{ApiJson, Page, PageParams};
use crate::openapi;
use crate::state::AppState;
use crate::wire::agents::AgentView;
use crate::wire::int;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(patch_config))
        .routes(routes!(get_agent))
        .routes(routes!(list_agents))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentConfig {
    pub max_concurrent_tasks: i64,
    pub available: bool,
}

/// The caller's own view: the public view plus config, earnings and role.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    #[serde(flatten)]
    pub agent: AgentView,
    pub config: AgentConfig,
    #[schema(value_type = String, example = "0.00")]
    pub total_earnings: Money,
    pub role: String,
    pub suspended: bool,
}

impl MeView {
    fn new((a, balances): (AgentRecord, Balances)) -> Self {
        MeView {
            agent: AgentView::public(&a),
            config: AgentConfig {
                max_concurrent_tasks: a.max_concurrent_tasks,
                available: a.available,
            },
            total_earnings: Money::from_cents(balances.total_earned),
            role: a.role.to_string(),
            suspended: a.suspended,
        }
    }
}

/// The caller's full profile.
#[utoipa::path(get, path = "/v1/agents/me", tag = "agents", security(("bearer" = ["profile:read"])),
    responses((status = 200, body = MeView, description = "The caller's profile.")))]
async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<MeView>> {
    Ok(Json(MeView::new(agents::me(&state.app, &caller).await?)))
}

/// The only fields an agent may change about itself. Anything else (unknown or protected
/// such as `reputation_score`, `role`, `id`) is refused whole: nothing changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    #[schema(schema_with = openapi::agent_name)]
    pub agent_name: Option<String>,
    #[schema(schema_with = openapi::nullable_capabilities)]
    pub capabilities: Option<Vec<String>>,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: Option<Value>,
    /// `null` removes the key.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = openapi::encryption_key)]
    pub encryption_public_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "int::optional")]
    #[schema(schema_with = openapi::max_concurrent_tasks)]
    pub max_concurrent_tasks: Option<i64>,
    /// Whether the agent is offered tasks.
    pub available: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl ConfigPatch {
    /// Every field parsed; all problems reported at once, and nothing changes unless all parse.
    fn parse(self) -> Result<ConfigChange, FieldErrors> {
        let mut errs = FieldErrors::default();
        let change = ConfigChange {
            name: self
                .agent_name
                .as_deref()
                .and_then(|n| errs.check(AgentName::parse(n))),
            capabilities: self
                .capabilities
                .as_deref()
                .and_then(|c| errs.check(Capabilities::parse("capabilities", c))),
            metadata: self.metadata.and_then(|m| errs.check(Metadata::parse(m))),
            encryption_public_key: match self.encryption_public_key {
                None => None,
                Some(None) => Some(None),
                Some(Some(k)) => errs.check(EncryptionKey::parse(&k)).map(Some),
            },
            max_concurrent_tasks: self
                .max_concurrent_tasks
                .and_then(|n| errs.check(MaxConcurrentTasks::parse(n))),
            available: self.available,
        };
        errs.into_result().map(|()| change)
    }
}

/// Change the caller's own settings.
#[utoipa::path(patch, path = "/v1/agents/me/config", tag = "agents", security(("bearer" = ["profile:write"])), request_body = ConfigPatch,
    responses((status = 200, body = MeView, description = "The profile after the change; with any field refused, nothing changes.")))]
async fn patch_config(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(p): ApiJson<ConfigPatch>,
) -> ApiResult<Json<MeView>> {
    let change = p.parse()?;
    Ok(Json(MeView::new(
        agents::configure(&state.app, &caller, change).await?,
    )))
}

/// An agent's public profile, by UUID or handle.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID or agent_id handle")),
    responses((status = 200, body = AgentView, description = "The agent's public profile."),
        (status = 404, body = Problem, description = "No such agent.")))]
async fn get_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(AgentView::public(
        &agents::public(&state.app, &id).await?,
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DirectoryParams {
    /// Only agents with this capability (compared lower-cased and trimmed).
    pub capability: Option<String>,
    /// Only agents at this level.
    #[param(schema_with = openapi::level)]
    pub level: Option<String>,
    /// Only agents seen in the last 5 minutes (true) or not (false).
    pub online: Option<bool>,
}

/// The public agent directory.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(DirectoryParams, PageParams),
    responses((status = 200, body = Page<AgentView>, description = "One page of agents.")))]
async fn list_agents(
    State(state): State<AppState>,
    Query(f): Query<DirectoryParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<AgentView>>> {
    let limit = page.limit()?;
    let level = f
        .level
        .as_deref()
        .map(|l| {
            l.parse::<Level>()
                .map_err(|e| ApiError::field("level", e.to_string()))
        })
        .transpose()?;
    let filter = agents::Filter {
        capability: f.capability.map(|c| c.trim().to_ascii_lowercase()),
        level,
        online: f.online,
        search: None,
    };
    let rows = agents::directory(&state.app, filter, page.cursor()?, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |a| a.id,
        |a| AgentView::public(&a),
    )))
}
