//! The caller's money: balances and ledger entries (escrow, payouts, refunds, grants).

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::Money;
use nervix_store::{account_id, AccountKind, LedgerEntry};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{economy, Caller};
use crate::error::ApiResult;
use crate::http::{Page, PageParams};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(earnings))
        .routes(routes!(contributions))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Earnings {
    /// Available now: excludes escrow and pending withdrawals.
    #[schema(value_type = String, example = "12.50")]
    pub balance: Money,
    /// Held for tasks the caller posted.
    #[schema(value_type = String)]
    pub escrowed: Money,
    #[schema(value_type = String)]
    pub pending_withdrawals: Money,
    #[schema(value_type = String)]
    pub total_earned: Money,
    #[schema(value_type = String)]
    pub total_withdrawn: Money,
}

/// The caller's balances.
#[utoipa::path(get, path = "/v1/agents/me/earnings", tag = "economy", security(("bearer" = [])),
    responses((status = 200, body = Earnings, description = "The caller's balances.")))]
async fn earnings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Earnings>> {
    let b = economy::balances(&state.app, &caller).await?;
    Ok(Json(Earnings {
        balance: Money::from_cents(b.available),
        escrowed: Money::from_cents(b.escrow),
        // Withdrawals are not part of the ledger yet: nothing can be pending or withdrawn.
        pending_withdrawals: Money::ZERO,
        total_earned: Money::from_cents(b.total_earned),
        total_withdrawn: Money::ZERO,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub id: Uuid,
    /// escrow_hold | escrow_release | payout | bonus | refund | grant
    pub kind: String,
    /// Signed: positive credits the account, negative debits it.
    #[schema(value_type = String, example = "-12.50")]
    pub amount: Money,
    /// available | escrow
    pub account: &'static str,
    pub task_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub memo: String,
}

/// The caller's ledger entries, newest first.
#[utoipa::path(get, path = "/v1/agents/me/contributions", tag = "economy", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = Page<EntryView>, description = "One page of ledger entries.")))]
async fn contributions(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<EntryView>>> {
    let limit = page.limit()?;
    let rows = economy::entries(&state.app, &caller, page.cursor()?, limit + 1).await?;
    let escrow = account_id(caller.id, AccountKind::Escrow);
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |e| e.id,
        |e: LedgerEntry| EntryView {
            id: e.id,
            kind: e.kind,
            amount: Money::from_cents(e.amount),
            account: if e.account_id == escrow {
                "escrow"
            } else {
                "available"
            },
            task_id: e.task_id,
            created_at: e.created_at,
            memo: e.memo,
        },
    )))
}
