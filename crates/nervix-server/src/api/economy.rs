//! The caller's money: balances, ledger entries (escrow, payouts, refunds, grants) and
//! withdrawals.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::economy::Destination;
use nervix_core::Money;
use nervix_store::{account_id, AccountKind, LedgerEntry, WithdrawalRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::idempotency::Render;
use crate::app::{self, economy, Caller};
use crate::error::ApiResult;
use crate::http::{idempotency_key, respond, ApiJson, Page, PageParams};
use crate::openapi;
use crate::state::AppState;
use crate::wire::economy::WithdrawalView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(earnings))
        .routes(routes!(contributions))
        .routes(routes!(request_withdrawal))
        .routes(routes!(my_withdrawals))
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
#[utoipa::path(get, path = "/v1/agents/me/earnings", tag = "economy", security(("bearer" = ["money:read"])),
    responses((status = 200, body = Earnings, description = "The caller's balances.")))]
async fn earnings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Earnings>> {
    let b = economy::balances(&state.app, &caller).await?;
    Ok(Json(Earnings {
        balance: Money::from_cents(b.available),
        escrowed: Money::from_cents(b.escrow),
        pending_withdrawals: Money::from_cents(b.pending_withdrawal),
        total_earned: Money::from_cents(b.total_earned),
        total_withdrawn: Money::from_cents(b.total_withdrawn),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub id: Uuid,
    /// escrow_hold | escrow_release | payout | bonus | refund | grant | withdrawal_request |
    /// withdrawal_paid | withdrawal_released
    pub kind: String,
    /// Signed: positive credits the account, negative debits it.
    #[schema(value_type = String, example = "-12.50")]
    pub amount: Money,
    /// available | escrow | pending_withdrawal
    pub account: &'static str,
    pub task_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub memo: String,
}

/// The caller's ledger entries, newest first.
#[utoipa::path(get, path = "/v1/agents/me/contributions", tag = "economy", security(("bearer" = ["money:read"])), params(PageParams),
    responses((status = 200, body = Page<EntryView>, description = "One page of ledger entries.")))]
async fn contributions(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<EntryView>>> {
    let limit = page.limit()?;
    let rows = economy::entries(&state.app, &caller, page.cursor()?, limit + 1).await?;
    let escrow = account_id(caller.id, AccountKind::Escrow);
    let pending = account_id(caller.id, AccountKind::PendingWithdrawal);
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
            } else if e.account_id == pending {
                "pending_withdrawal"
            } else {
                "available"
            },
            task_id: e.task_id,
            created_at: e.created_at,
            memo: e.memo,
        },
    )))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WithdrawalRequest {
    /// More than zero, at most the available balance.
    #[schema(schema_with = openapi::transfer_amount)]
    pub amount: Money,
    /// Where to pay it: 1–256 characters the operator's payout process understands.
    #[schema(schema_with = openapi::destination)]
    pub destination: String,
}

/// Request a withdrawal: the amount moves from the available balance to pending withdrawals
/// until an admin approves (paid out) or rejects (released back) it.
#[utoipa::path(post, path = "/v1/withdrawal/request", tag = "economy", security(("bearer" = ["money:withdraw"])),
    params(("Idempotency-Key" = Option<String>, Header)), request_body = WithdrawalRequest,
    responses((status = 201, body = WithdrawalView), (status = 400, body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 422, description = "invalid amount or destination, insufficient_funds, or an Idempotency-Key reused with another body", body = crate::error::Problem)))]
async fn request_withdrawal(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(body): ApiJson<WithdrawalRequest>,
) -> ApiResult<Response> {
    let destination = Destination::parse(&body.destination)?;
    let key = idempotency_key(&method, &uri, &headers, &body)?;
    let render: Render<WithdrawalRecord> = Arc::new(|w| {
        let view = WithdrawalView::from(w.clone());
        Ok((
            201,
            serde_json::to_value(view).map_err(app::Error::internal)?,
        ))
    });
    let outcome = economy::request_withdrawal(
        &state.app,
        &caller,
        body.amount,
        destination,
        key.as_ref(),
        render.clone(),
    )
    .await?;
    respond(outcome, &render)
}

/// The caller's withdrawals, newest first.
#[utoipa::path(get, path = "/v1/withdrawals", tag = "economy", security(("bearer" = ["money:read"])), params(PageParams),
    responses((status = 200, body = Page<WithdrawalView>), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn my_withdrawals(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<WithdrawalView>>> {
    let limit = page.limit()?;
    let rows =
        economy::withdrawals(&state.app, &caller, false, None, page.cursor()?, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |w| w.id,
        WithdrawalView::from,
    )))
}
