//! Health, readiness, metrics, public stats, JWKS and the OpenAPI document.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use nervix_core::Money;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::agents;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;
use crate::wire::agents::AgentView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(stats))
        .routes(routes!(leaderboard))
        .routes(routes!(jwks))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
}

/// A JSON Web Key Set (RFC 7517) of Ed25519 keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "platform",
    responses((status = 200, body = Health, description = "Alive: `{\"status\": \"ok\"}`.")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "platform",
    responses((status = 200, body = Readiness, description = "The database answers."),
        (status = 503, body = Problem, description = "`not_ready`: the database does not answer.")))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.app.store.ping()).await {
        Ok(Ok(())) => Ok(Json(
            serde_json::json!({"status": "ready", "database": state.app.store.backend()}),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "database unavailable",
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "database timed out",
        )),
    }
}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "platform",
    responses((status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String,
        description = "OpenMetrics text.")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.app.metrics.render(),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    pub agents: i64,
    pub agents_online: i64,
    pub tasks_total: i64,
    pub tasks_open: i64,
    pub tasks_completed: i64,
    pub workflows: i64,
    #[schema(value_type = String)]
    pub total_paid_out: Money,
}

/// Public platform counters, from a snapshot: counted at startup and again every 5 seconds in
/// the background, so they lag the platform by at most those 5 seconds plus the time one count
/// takes (longer only while counting fails, which the server logs). `agents_online` counts the
/// agents seen in the 5 minutes before the snapshot. A request never counts.
#[utoipa::path(get, path = "/v1/stats", tag = "platform", responses((status = 200, body = StatsView, description = "The counters.")))]
async fn stats(State(state): State<AppState>) -> Json<StatsView> {
    let snapshot = state.app.stats.current();
    let s = &snapshot.stats;
    Json(StatsView {
        agents: s.agents,
        agents_online: s.agents_online,
        tasks_total: s.tasks_total,
        tasks_open: s.tasks_open,
        tasks_completed: s.tasks_completed,
        workflows: s.workflows,
        total_paid_out: Money::from_cents(s.paid_out_cents),
    })
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct LeaderboardParams {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    pub rank: usize,
    #[serde(flatten)]
    pub agent: AgentView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Leaderboard {
    pub items: Vec<LeaderboardEntry>,
}

/// Top agents by reputation.
#[utoipa::path(get, path = "/v1/leaderboard", tag = "platform", params(LeaderboardParams),
    responses((status = 200, body = Leaderboard, description = "The top agents, best first.")))]
async fn leaderboard(
    State(state): State<AppState>,
    Query(p): Query<LeaderboardParams>,
) -> ApiResult<Json<Leaderboard>> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 100"));
    }
    let agents = agents::leaderboard(&state.app, limit).await?;
    Ok(Json(Leaderboard {
        items: agents
            .iter()
            .enumerate()
            .map(|(i, a)| LeaderboardEntry {
                rank: i + 1,
                agent: AgentView::public(a),
            })
            .collect(),
    }))
}

/// The token-verification keys (RFC 7517, OKP/Ed25519).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, body = Jwks, description = "The JWK set.")))]
async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.app.keys().jwks())
}
