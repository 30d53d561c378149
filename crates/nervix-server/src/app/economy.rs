//! Money: balances, ledger entries, operator grants from the treasury, the bonus pool and
//! withdrawals.

use chrono::Utc;
use nervix_core::economy::Destination;
use nervix_core::Money;
use nervix_store::{
    AgentRecord, Balances, LedgerEntry, LedgerQuery, NewWithdrawal, StoreError, WithdrawalDecision,
    WithdrawalQuery, WithdrawalRecord, WithdrawalStatus,
};
use serde_json::json;
use uuid::Uuid;

use super::idempotency::{self, Outcome, Render};
use super::{audit, notifications, App, Caller, Error, ErrorKind, Result};

pub async fn balances(app: &App, caller: &Caller) -> Result<Balances> {
    Ok(app.store.balances(caller.id).await?)
}

/// Up to `limit` of the caller's ledger entries after the cursor, newest first.
pub async fn entries(
    app: &App,
    caller: &Caller,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<LedgerEntry>> {
    Ok(app
        .store
        .ledger_entries(&LedgerQuery {
            owner: Some(caller.id),
            task_id: None,
            before,
            limit,
        })
        .await?)
}

/// The largest single grant: 1,000,000,000.00. Balances are i64 cents and the database
/// stores them as 64-bit integers (SQLite silently turns an overflowing sum into a float that
/// no longer reads back), so an unbounded grant could make an account unreadable.
pub const MAX_GRANT_CENTS: i64 = 100_000_000_000;

/// An amount that moves in one operation (a grant, pool funding, a withdrawal): positive and
/// at most [`MAX_GRANT_CENTS`].
fn bounded(amount: Money) -> Result<Money> {
    let max = Money::from_cents(MAX_GRANT_CENTS);
    Ok(nervix_core::economy::transfer_amount(
        "amount", amount, max,
    )?)
}

/// Credits an agent from the platform treasury (admins only; audited).
pub async fn grant(
    app: &App,
    caller: &Caller,
    id_or_handle: &str,
    amount: Money,
    memo: Option<String>,
) -> Result<AgentRecord> {
    caller.require_admin()?;
    let amount = bounded(amount)?;
    let agent = app.find_agent(id_or_handle).await?;
    let memo = memo.unwrap_or_else(|| "operator grant".into());
    let entry = audit::by(
        caller,
        "admin.grant",
        Some(agent.id.to_string()),
        json!({"amount": amount, "memo": memo}),
    );
    app.store
        .grant(agent.id, amount.cents(), &memo, &entry)
        .await?;
    Ok(agent)
}

/// The bonus pool's balance (admins only).
pub async fn bonus_pool(app: &App, caller: &Caller) -> Result<Money> {
    caller.require_admin()?;
    Ok(Money::from_cents(app.store.bonus_pool().await?))
}

/// Moves money from the treasury into the bonus pool, which pays level bonuses (admins only;
/// audited). Returns the pool's new balance.
pub async fn fund_bonus_pool(
    app: &App,
    caller: &Caller,
    amount: Money,
    memo: Option<String>,
) -> Result<Money> {
    caller.require_admin()?;
    let amount = bounded(amount)?;
    let memo = memo.unwrap_or_else(|| "bonus pool funding".into());
    let entry = audit::by(
        caller,
        "admin.bonus_pool.fund",
        None,
        json!({"amount": amount, "memo": memo}),
    );
    let balance = app
        .store
        .fund_bonus_pool(amount.cents(), &memo, &entry)
        .await?;
    Ok(Money::from_cents(balance))
}

/// Requests a withdrawal of the caller's available money: moved to its pending withdrawals at
/// once, paid out when an admin approves. More than the available balance: 422
/// `insufficient_funds`.
pub async fn request_withdrawal(
    app: &App,
    caller: &Caller,
    amount: Money,
    destination: Destination,
    key: Option<&idempotency::Key>,
    render: Render<WithdrawalRecord>,
) -> Result<Outcome<WithdrawalRecord>> {
    let amount = bounded(amount)?;
    idempotency::once(app, caller, key, |saver| async {
        let w = NewWithdrawal {
            id: Uuid::now_v7(),
            agent_id: caller.id,
            amount_cents: amount.cents(),
            destination: destination.as_str().to_owned(),
            at: Utc::now(),
        };
        let save = saver.map(|s| s.save(move |w: &WithdrawalRecord| render(w).ok()));
        match app.store.request_withdrawal(&w, save).await {
            Ok(w) => Ok(w),
            // Not a payment required: the request is well-formed but asks for more than the
            // caller has (the contract's 422).
            Err(StoreError::InsufficientFunds) => Err(Error::new(
                ErrorKind::Invalid,
                "insufficient_funds",
                "the available balance does not cover the withdrawal",
            )),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Decides a pending withdrawal, exactly once (admins only; audited): approved, it is paid
/// out; rejected, the money returns to the agent's available balance. A second decision: 409.
pub async fn decide_withdrawal(
    app: &App,
    caller: &Caller,
    id: Uuid,
    approve: bool,
) -> Result<WithdrawalRecord> {
    caller.require_admin()?;
    let action = if approve {
        "admin.withdrawal.approve"
    } else {
        "admin.withdrawal.reject"
    };
    let entry = audit::by(caller, action, Some(id.to_string()), json!({}));
    let decision = WithdrawalDecision {
        id,
        approve,
        by: caller.id,
        at: entry.at,
    };
    let w = match app.store.decide_withdrawal(&decision, &entry).await {
        Ok(w) => w,
        Err(StoreError::NotFound) => return Err(Error::not_found("withdrawal")),
        Err(StoreError::Conflict(_)) => {
            return Err(Error::conflict(
                "already_decided",
                "this withdrawal was decided already",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    notifications::withdrawal_decided(app, &w).await;
    Ok(w)
}

/// Withdrawals, newest first: the caller's own, or (admins, `all`) everyone's.
pub async fn withdrawals(
    app: &App,
    caller: &Caller,
    all: bool,
    status: Option<WithdrawalStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<WithdrawalRecord>> {
    if all {
        caller.require_admin()?;
    }
    Ok(app
        .store
        .withdrawals(&WithdrawalQuery {
            agent_id: (!all).then_some(caller.id),
            status,
            before,
            limit,
        })
        .await?)
}
