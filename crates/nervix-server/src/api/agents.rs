//! Agent profiles: public view, the caller's own view, config changes and the directory.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::ids::parse_capabilities;
use nervix_core::reputation::Reputation;
use nervix_core::{FieldErrors, Level, Money};
use nervix_store::{AgentConfigPatch, AgentQuery, AgentRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::enroll::{decode_key, validate_max_concurrent, validate_metadata, validate_name};
use super::{audit, ApiJson, Page, PageParams};
use crate::auth::Caller;
use crate::bus::Event;
use crate::error::{ApiError, ApiResult};
use crate::presence::ONLINE_WINDOW;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(patch_config))
        .routes(routes!(get_agent))
        .routes(routes!(list_agents))
}

/// The public view of an agent. Never contains earnings or config.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub agent_id: String,
    pub agent_name: String,
    pub public_key: String,
    pub encryption_public_key: Option<String>,
    pub capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[schema(value_type = String, example = "50.00")]
    pub reputation_score: Reputation,
    #[schema(value_type = String, example = "novice")]
    pub reputation_level: Level,
    pub total_tasks_completed: i64,
    pub online: bool,
    pub created_at: DateTime<Utc>,
}

impl AgentView {
    pub fn public(a: &AgentRecord) -> Self {
        let score = Reputation::from_hundredths(a.reputation);
        AgentView {
            id: a.id,
            agent_id: a.handle.clone(),
            agent_name: a.name.clone(),
            public_key: a.public_key.clone(),
            encryption_public_key: a.encryption_public_key.clone(),
            capabilities: a.capabilities.clone(),
            metadata: a.metadata.clone(),
            reputation_score: score,
            reputation_level: Level::of(score, a.tasks_completed),
            total_tasks_completed: a.tasks_completed,
            online: a
                .last_seen_at
                .is_some_and(|t| t >= Utc::now() - ONLINE_WINDOW),
            created_at: a.created_at,
        }
    }
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

/// Looks an agent up by UUID or handle.
pub async fn find_agent(state: &AppState, id: &str) -> ApiResult<AgentRecord> {
    let found = match Uuid::parse_str(id) {
        Ok(uuid) => state.store.agent(uuid).await?,
        Err(_) => state.store.agent_by_handle(id).await?,
    };
    found.ok_or_else(|| ApiError::not_found("agent"))
}

/// The caller's full profile.
#[utoipa::path(get, path = "/v1/agents/me", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = MeView), (status = 401, body = crate::error::Problem)))]
async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<MeView>> {
    let a = state
        .store
        .agent(caller.id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    let balances = state.store.balances(a.id).await?;
    Ok(Json(MeView {
        agent: AgentView::public(&a),
        config: AgentConfig {
            max_concurrent_tasks: a.max_concurrent_tasks,
            available: a.available,
        },
        total_earnings: Money::from_cents(balances.total_earned),
        role: a.role.to_string(),
        suspended: a.suspended,
    }))
}

/// The only fields an agent may change about itself. Anything else (unknown or protected
/// such as `reputation_score`, `role`, `id`) is refused whole: nothing changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    pub agent_name: Option<String>,
    pub capabilities: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Base64 X25519 key; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub encryption_public_key: Option<Option<String>>,
    pub max_concurrent_tasks: Option<i64>,
    pub available: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Change the caller's own settings.
#[utoipa::path(patch, path = "/v1/agents/me/config", tag = "agents", security(("bearer" = [])), request_body = ConfigPatch,
    responses((status = 200, body = MeView), (status = 422, body = crate::error::Problem)))]
async fn patch_config(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(p): ApiJson<ConfigPatch>,
) -> ApiResult<Json<MeView>> {
    let mut errs = FieldErrors::default();
    let name = p
        .agent_name
        .as_deref()
        .map(validate_name)
        .and_then(|r| errs.check(r));
    let capabilities = p
        .capabilities
        .as_deref()
        .map(|c| parse_capabilities("capabilities", c))
        .and_then(|r| errs.check(r));
    if let Some(m) = &p.metadata {
        errs.check(validate_metadata(m));
    }
    if let Some(Some(k)) = &p.encryption_public_key {
        errs.check(decode_key("encryption_public_key", k));
    }
    let max = p
        .max_concurrent_tasks
        .map(validate_max_concurrent)
        .and_then(|r| errs.check(r));
    errs.into_result()?;
    let changed: Vec<&str> = [
        ("agent_name", p.agent_name.is_some()),
        ("capabilities", p.capabilities.is_some()),
        ("metadata", p.metadata.is_some()),
        ("encryption_public_key", p.encryption_public_key.is_some()),
        ("max_concurrent_tasks", p.max_concurrent_tasks.is_some()),
        ("available", p.available.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    let patch = AgentConfigPatch {
        name,
        capabilities,
        metadata: p.metadata,
        encryption_public_key: p
            .encryption_public_key
            .map(|k| k.map(|k| k.trim().to_owned())),
        max_concurrent_tasks: max,
        available: p.available,
        at: Utc::now(),
    };
    let entry = audit(
        Some(&caller),
        None,
        "agent.config_change",
        Some(caller.id.to_string()),
        json!({"fields": changed}),
    );
    state
        .store
        .update_agent_config(caller.id, &patch, &entry)
        .await?;
    if let Err(e) = state
        .bus
        .publish(Event::AgentChanged {
            agent_id: caller.id,
        })
        .await
    {
        tracing::warn!(error = %e, "publishing agent change failed");
    }
    me(State(state), caller).await
}

/// An agent's public profile, by UUID or handle.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID or agent_id handle")),
    responses((status = 200, body = AgentView), (status = 404, body = crate::error::Problem)))]
async fn get_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let a = find_agent(&state, &id).await?;
    if a.suspended {
        return Err(ApiError::not_found("agent"));
    }
    Ok(Json(AgentView::public(&a)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DirectoryParams {
    pub capability: Option<String>,
    /// novice | intermediate | expert | master
    pub level: Option<String>,
    pub online: Option<bool>,
}

/// The public agent directory.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(DirectoryParams, PageParams),
    responses((status = 200, body = Page<AgentView>), (status = 422, body = crate::error::Problem)))]
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
            Level::parse(l).ok_or_else(|| {
                ApiError::field(
                    "level",
                    "must be one of novice, intermediate, expert, master",
                )
            })
        })
        .transpose()?;
    let q = AgentQuery {
        capability: f.capability.map(|c| c.trim().to_ascii_lowercase()),
        level,
        online: f.online,
        online_since: Utc::now() - ONLINE_WINDOW,
        before: page.cursor()?,
        limit: limit + 1,
    };
    let rows = state.store.list_agents(&q).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |a| a.id,
        |a| AgentView::public(&a),
    )))
}
