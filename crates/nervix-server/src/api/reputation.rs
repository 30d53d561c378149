//! Reputation, public: an agent's score with its layers, its score over time, and its work
//! history.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::{Level, Money, Reputation};
use nervix_store::{HistoryEntry, PageQuery, ReputationSnapshot};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{receipts, reputation};
use crate::error::ApiResult;
use crate::http::{Page, PageParams};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_reputation))
        .routes(routes!(reputation_history))
        .routes(routes!(work_history))
        .routes(routes!(receipts_of))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Layers {
    #[schema(value_type = String, example = "50.00")]
    pub automated: Reputation,
    #[schema(value_type = String, example = "50.00")]
    pub success: Reputation,
    #[schema(value_type = String, example = "50.00")]
    pub peer: Reputation,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Weights {
    pub automated: f64,
    pub success: f64,
    pub peer: f64,
}

/// The contract's weights of the three layers in the score (exact: 3/10, 4/10, 3/10).
const WEIGHTS: Weights = Weights {
    automated: 0.3,
    success: 0.4,
    peer: 0.3,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ReputationView {
    /// The agent's handle.
    pub agent_id: String,
    #[schema(value_type = String, example = "50.00")]
    pub score: Reputation,
    #[schema(value_type = String, example = "novice")]
    pub level: Level,
    pub layers: Layers,
    pub weights: Weights,
    pub updated_at: DateTime<Utc>,
}

/// An agent's reputation: score = 0.3·automated + 0.4·success + 0.3·peer.
#[utoipa::path(get, path = "/v1/agents/{id}/reputation", tag = "reputation",
    params(("id" = String, Path, description = "The agent's UUID or handle")),
    responses((status = 200, body = ReputationView), (status = 404, body = crate::error::Problem)))]
async fn get_reputation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReputationView>> {
    let a = reputation::of(&state.app, &id).await?;
    let score = Reputation::from_hundredths(a.reputation);
    Ok(Json(ReputationView {
        agent_id: a.handle,
        score,
        level: Level::of(score, a.tasks_completed),
        layers: Layers {
            automated: Reputation::from_hundredths(a.rep_automated),
            success: Reputation::from_hundredths(a.rep_success),
            peer: Reputation::from_hundredths(a.rep_peer),
        },
        weights: WEIGHTS,
        updated_at: a.updated_at,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotView {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    #[schema(value_type = String, example = "50.00")]
    pub score: Reputation,
    #[schema(value_type = String, example = "novice")]
    pub level: Level,
    pub layers: Layers,
}

impl From<ReputationSnapshot> for SnapshotView {
    fn from(s: ReputationSnapshot) -> Self {
        SnapshotView {
            id: s.id,
            at: s.at,
            score: Reputation::from_hundredths(s.score),
            level: s.level,
            layers: Layers {
                automated: Reputation::from_hundredths(s.automated),
                success: Reputation::from_hundredths(s.success),
                peer: Reputation::from_hundredths(s.peer),
            },
        }
    }
}

/// An agent's score over time, newest first: one snapshot per change.
#[utoipa::path(get, path = "/v1/agents/{id}/reputation/history", tag = "reputation",
    params(("id" = String, Path, description = "The agent's UUID or handle"), PageParams),
    responses((status = 200, body = Page<SnapshotView>), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
async fn reputation_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<SnapshotView>>> {
    let limit = page.limit()?;
    let q = PageQuery {
        cursor: page.cursor()?,
        limit: limit + 1,
    };
    let rows = reputation::history(&state.app, &id, q).await?;
    Ok(Json(Page::from_rows(rows, limit, |s| s.id, Into::into)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub submission_id: Uuid,
    pub task_id: Uuid,
    pub task_title: String,
    /// The automated checks' score.
    pub quality_score: i64,
    /// What it was paid on or rejected with (a reviewer's score when one decided it).
    pub final_score: Option<i64>,
    #[schema(value_type = String, example = "50.00")]
    pub reward: Money,
    #[schema(value_type = Option<String>)]
    pub payout: Option<Money>,
    /// accepted | rejected | pending_review
    pub status: String,
    pub submitted_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<HistoryEntry> for HistoryView {
    fn from(h: HistoryEntry) -> Self {
        HistoryView {
            submission_id: h.submission_id,
            task_id: h.task_id,
            task_title: h.task_title,
            quality_score: h.quality_score,
            final_score: h.final_score,
            reward: Money::from_cents(h.reward_cents),
            payout: h.payout_cents.map(Money::from_cents),
            status: h.status.as_str().to_owned(),
            submitted_at: h.created_at,
            decided_at: h.decided_at,
        }
    }
}

/// An agent's submissions, newest first: task, scores, reward, payout and times.
#[utoipa::path(get, path = "/v1/agents/{id}/history", tag = "reputation",
    params(("id" = String, Path, description = "The agent's UUID or handle"), PageParams),
    responses((status = 200, body = Page<HistoryView>), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
async fn work_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<HistoryView>>> {
    let limit = page.limit()?;
    let q = PageQuery {
        cursor: page.cursor()?,
        limit: limit + 1,
    };
    let rows = reputation::work_history(&state.app, &id, q).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |h| h.submission_id,
        Into::into,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    pub id: Uuid,
    pub task_id: Uuid,
    pub submission_id: Uuid,
    /// The JWKS key that signed it.
    pub kid: String,
    /// The receipt: a compact JWS (EdDSA) over the RFC 8785 form of what it attests; verify it
    /// with `/.well-known/jwks.json` (e.g. `nervix receipt verify`).
    pub receipt: String,
    pub issued_at: DateTime<Utc>,
}

/// An agent's signed reputation receipts, newest first: one per accepted submission.
#[utoipa::path(get, path = "/v1/agents/{id}/receipts", tag = "reputation",
    params(("id" = String, Path, description = "The agent's UUID or handle"), PageParams),
    responses((status = 200, body = Page<ReceiptView>), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
async fn receipts_of(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<ReceiptView>>> {
    let limit = page.limit()?;
    let q = PageQuery {
        cursor: page.cursor()?,
        limit: limit + 1,
    };
    let rows = receipts::of(&state.app, &id, q).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |r| r.id,
        |r| ReceiptView {
            id: r.id,
            task_id: r.task_id,
            submission_id: r.submission_id,
            kid: r.kid,
            receipt: r.jws,
            issued_at: r.created_at,
        },
    )))
}
