//! The ledger: balanced postings, balances, grants; and stored idempotent responses.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::housekeeping::insert_audit;
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::*;
use crate::{Result, StoreError};

pub(super) async fn ensure_account(conn: &mut Conn, owner: Uuid, kind: AccountKind) -> Result<()> {
    sqlx::query(
        "INSERT INTO ledger_accounts (id, owner_id, kind, balance) VALUES ($1, $2, $3, 0) ON \
         CONFLICT (owner_id, kind) DO NOTHING",
    )
    .bind(account_id(owner, kind))
    .bind(owner)
    .bind(kind.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// One balanced ledger transaction: a single multi-row insert of its entries, which
/// the database applies to the accounts' balances (migration 0003). A debit that would
/// take a non-treasury account below zero aborts the statement: insufficient funds.
pub(super) async fn post_ledger(
    conn: &mut Conn,
    at: DateTime<Utc>,
    task_id: Option<Uuid>,
    memo: &str,
    legs: &[(Uuid, i64, &str)],
) -> Result<()> {
    let total: i128 = legs.iter().map(|l| i128::from(l.1)).sum();
    if total != 0 {
        return Err(StoreError::Corrupt(format!(
            "unbalanced ledger transaction ({memo}): {total}"
        )));
    }
    // In one global order (account id, then credits first), so that on PostgreSQL the
    // balance trigger locks the accounts of any two postings in the same order: taken
    // in the callers' order, two settlements between the same two agents in opposite
    // directions deadlocked.
    let mut legs: Vec<&(Uuid, i64, &str)> = legs.iter().filter(|l| l.1 != 0).collect();
    if legs.is_empty() {
        return Ok(());
    }
    legs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let txn_id = Uuid::now_v7();
    let mut qb = QueryBuilder::<Db>::new(
        "INSERT INTO ledger_entries (id, txn_id, account_id, amount, kind, task_id, memo, \
         created_at) ",
    );
    qb.push_values(legs, |mut b, &(account, amount, kind)| {
        b.push_bind(Uuid::now_v7())
            .push_bind(txn_id)
            .push_bind(account)
            .push_bind(amount)
            .push_bind(kind)
            .push_bind(task_id)
            .push_bind(memo)
            .push_bind(at);
    });
    qb.build()
        .execute(conn)
        .await
        .map_err(StoreError::from_ledger)?;
    Ok(())
}

/// The account a task's escrow came from and returns to.
pub(super) fn funding_account(task: &TaskRecord) -> Uuid {
    if task.funded_by_treasury {
        account_id(PLATFORM, AccountKind::Treasury)
    } else {
        account_id(task.posted_by, AccountKind::Available)
    }
}

pub(super) async fn refund(
    conn: &mut Conn,
    task: &TaskRecord,
    at: DateTime<Utc>,
    why: &str,
) -> Result<()> {
    post_ledger(
        conn,
        at,
        Some(task.id),
        why,
        &[
            (
                account_id(task.funder(), AccountKind::Escrow),
                -task.reward_cents,
                "escrow_release",
            ),
            (funding_account(task), task.reward_cents, "refund"),
        ],
    )
    .await
}

#[tracing::instrument(skip_all, name = "store.ensure_platform_accounts", level = "debug")]
pub(crate) async fn ensure_platform_accounts(store: &Backend) -> Result<()> {
    store
        .write((), |mut tx, _| {
            Box::pin(async move {
                ensure_account(&mut tx, PLATFORM, AccountKind::Treasury).await?;
                ensure_account(&mut tx, PLATFORM, AccountKind::Escrow).await?;
                ensure_account(&mut tx, PLATFORM, AccountKind::BonusPool).await?;
                ensure_account(&mut tx, PLATFORM, AccountKind::Withdrawn).await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.balances", level = "debug")]
pub(super) async fn balances(store: &Backend, owner: Uuid) -> Result<Balances> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, balance FROM ledger_accounts WHERE owner_id = $1")
            .bind(owner)
            .fetch_all(store.reader())
            .await?;
    let mut b = Balances::default();
    for (kind, balance) in rows {
        match kind.as_str() {
            "available" | "treasury" => b.available = balance,
            "escrow" => b.escrow = balance,
            "pending_withdrawal" => b.pending_withdrawal = balance,
            _ => {}
        }
    }
    (b.total_earned, b.total_withdrawn) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN account_id = $1 AND kind IN ('payout', 'bonus') THEN \
         amount ELSE 0 END), 0) AS BIGINT), CAST(COALESCE(SUM(CASE WHEN account_id = $2 AND kind \
         = 'withdrawal_paid' THEN -amount ELSE 0 END), 0) AS BIGINT) FROM ledger_entries WHERE \
         account_id IN ($1, $2)",
    )
    .bind(account_id(owner, AccountKind::Available))
    .bind(account_id(owner, AccountKind::PendingWithdrawal))
    .fetch_one(store.reader())
    .await?;
    Ok(b)
}

#[tracing::instrument(skip_all, name = "store.bonus_pool", level = "debug")]
pub(super) async fn bonus_pool(store: &Backend) -> Result<i64> {
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
            .bind(account_id(PLATFORM, AccountKind::BonusPool))
            .fetch_optional(store.reader())
            .await?;
    Ok(balance.unwrap_or(0))
}

#[tracing::instrument(skip_all, name = "store.ledger_entries", level = "debug")]
pub(super) async fn ledger_entries(store: &Backend, q: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
    let mut qb = QueryBuilder::<Db>::new(format!(
        "SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE 1 = 1"
    ));
    if let Some(owner) = q.owner {
        qb.push(" AND account_id IN (SELECT id FROM ledger_accounts WHERE owner_id = ")
            .push_bind(owner)
            .push(")");
    }
    if let Some(task) = q.task_id {
        qb.push(" AND task_id = ").push_bind(task);
    }
    if let Some(before) = q.before {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<LedgerRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[tracing::instrument(skip_all, name = "store.ledger_total", level = "debug")]
pub(super) async fn ledger_total(store: &Backend) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries")
            .fetch_one(store.reader())
            .await?,
    )
}

#[tracing::instrument(skip_all, name = "store.ledger_mismatches", level = "debug")]
pub(super) async fn ledger_mismatches(store: &Backend) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT a.id FROM ledger_accounts a WHERE a.balance <> (SELECT \
         CAST(COALESCE(SUM(e.amount), 0) AS BIGINT) FROM ledger_entries e WHERE e.account_id = \
         a.id)",
    )
    .fetch_all(store.reader())
    .await?)
}

#[tracing::instrument(skip_all, name = "store.grant", level = "debug", fields(to = %to, amount))]
pub(super) async fn grant(
    store: &Backend,
    to: Uuid,
    amount: i64,
    memo: &str,
    audit: &AuditEntry,
) -> Result<()> {
    store
        .write(
            (to, amount, memo.to_owned(), audit.clone()),
            |mut tx, &(to, amount, ref memo, ref audit)| {
                Box::pin(async move {
                    if amount <= 0 {
                        let e = StoreError::invalid("amount", "must be positive");
                        return tx.refuse(Err(e));
                    }
                    post_ledger(
                        &mut tx,
                        audit.at,
                        None,
                        memo,
                        &[
                            (
                                account_id(PLATFORM, AccountKind::Treasury),
                                -amount,
                                "grant",
                            ),
                            (account_id(to, AccountKind::Available), amount, "grant"),
                        ],
                    )
                    .await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(())
                })
            },
        )
        .await
}
