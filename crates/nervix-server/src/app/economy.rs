//! Money: balances, ledger entries, and operator grants from the treasury.

use nervix_core::Money;
use nervix_store::{AgentRecord, Balances, LedgerEntry, LedgerQuery};
use serde_json::json;
use uuid::Uuid;

use super::{audit, App, Caller, Error, Result};

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

/// Credits an agent from the platform treasury (admins only; audited).
pub async fn grant(
    app: &App,
    caller: &Caller,
    id_or_handle: &str,
    amount: Money,
    memo: Option<String>,
) -> Result<AgentRecord> {
    caller.require_admin()?;
    if !amount.is_positive() || amount.cents() > MAX_GRANT_CENTS {
        return Err(Error::field(
            "amount",
            format!(
                "must be greater than 0 and at most {}",
                Money::from_cents(MAX_GRANT_CENTS)
            ),
        ));
    }
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
