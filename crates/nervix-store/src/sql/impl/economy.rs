//! The economy past the task ledger: the bonus pool, withdrawals, re-claim exclusions and the
//! ledger's verification.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::housekeeping::insert_audit;
use super::idempotency::{claim_key, key_used, store_response, KEY_USED};
use super::ledger::{ensure_account, post_ledger};
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::*;
use crate::{Conflict, Result, StoreError};

/// Treasury entry kinds that are the operator putting money in (or taking a refund back):
/// anything else debiting the treasury pays someone from nowhere.
const TREASURY_KINDS: &str = "('grant', 'escrow_hold', 'refund', 'bonus_pool_fund')";

/// Takes the bonus pool's row for the rest of the transaction and returns its balance. On
/// PostgreSQL the no-op update waits for any other writer of the pool and then sees its
/// committed balance (a plain read could see a balance another payout is spending); SQLite's
/// single writer is alone anyway. Every writer of the pool takes it this way before any other
/// ledger account, so pool-first is part of the lock order (task, agent, pool, accounts by id).
pub(super) async fn lock_bonus_pool(conn: &mut Conn) -> Result<i64> {
    let balance: Option<i64> = sqlx::query_scalar(
        "UPDATE ledger_accounts SET balance = balance WHERE id = $1 RETURNING balance",
    )
    .bind(account_id(PLATFORM, AccountKind::BonusPool))
    .fetch_optional(conn)
    .await?;
    Ok(balance.unwrap_or(0))
}

/// Records that `agent` may not claim `task` again, in the caller's transaction.
pub(super) async fn exclude(
    conn: &mut Conn,
    task: Uuid,
    agent: Uuid,
    reason: ExclusionReason,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO task_exclusions (task_id, agent_id, reason, created_at) VALUES ($1, $2, $3, \
         $4) ON CONFLICT (task_id, agent_id, reason) DO NOTHING",
    )
    .bind(task)
    .bind(agent)
    .bind(reason.as_str())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ClaimReadRow {
    #[sqlx(flatten)]
    task: TaskRow,
    exclusion: Option<String>,
}

/// The task as a claim judges it, with why `agent` may not take it (if it lost or gave it
/// back before): one read.
#[tracing::instrument(skip_all, name = "store.task_for_claim", level = "debug", fields(task = %task, agent = %agent))]
pub(super) async fn task_for_claim(
    store: &Backend,
    task: Uuid,
    agent: Uuid,
) -> Result<Option<(TaskRecord, Option<ExclusionReason>)>> {
    let row: Option<ClaimReadRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS}, (SELECT e.reason FROM task_exclusions e WHERE e.task_id = \
         tasks.id AND e.agent_id = $2 ORDER BY e.created_at LIMIT 1) AS exclusion FROM tasks \
         WHERE id = $1"
    ))
    .bind(task)
    .bind(agent)
    .fetch_optional(store.reader())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let exclusion = row
        .exclusion
        .map(|r| {
            r.parse()
                .map_err(|_| StoreError::Corrupt(format!("unknown exclusion reason {r:?}")))
        })
        .transpose()?;
    Ok(Some((row.task.try_into()?, exclusion)))
}

#[tracing::instrument(skip_all, name = "store.excluded_agents", level = "debug", fields(task = %task))]
pub(super) async fn excluded_agents(store: &Backend, task: Uuid) -> Result<Vec<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT agent_id FROM task_exclusions WHERE task_id = $1")
            .bind(task)
            .fetch_all(store.reader())
            .await?,
    )
}

#[tracing::instrument(
    skip_all,
    name = "store.fund_bonus_pool",
    level = "debug",
    fields(amount)
)]
pub(super) async fn fund_bonus_pool(
    store: &Backend,
    amount: i64,
    memo: &str,
    audit: &AuditEntry,
) -> Result<i64> {
    store
        .write(
            (amount, memo.to_owned(), audit.clone()),
            |mut tx, &(amount, ref memo, ref audit)| {
                Box::pin(async move {
                    if amount <= 0 {
                        let e = StoreError::invalid("amount", "must be greater than 0");
                        return tx.refuse(Err(e));
                    }
                    let before = lock_bonus_pool(&mut tx).await?;
                    post_ledger(
                        &mut tx,
                        audit.at,
                        None,
                        memo,
                        &[
                            (
                                account_id(PLATFORM, AccountKind::Treasury),
                                -amount,
                                "bonus_pool_fund",
                            ),
                            (
                                account_id(PLATFORM, AccountKind::BonusPool),
                                amount,
                                "bonus_pool_fund",
                            ),
                        ],
                    )
                    .await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(before + amount)
                })
            },
        )
        .await
}

#[tracing::instrument(
    skip_all,
    name = "store.request_withdrawal",
    level = "debug",
    fields(agent = %w.agent_id, amount = w.amount_cents)
)]
pub(super) async fn request_withdrawal(
    store: &Backend,
    w: &NewWithdrawal,
    save: Option<SaveResponse<WithdrawalRecord>>,
) -> Result<WithdrawalRecord> {
    store
        .write((w.clone(), save), |mut tx, (w, save)| {
            Box::pin(async move {
                let save = save.as_ref();
                if w.amount_cents <= 0 {
                    let e = StoreError::invalid("amount", "must be greater than 0");
                    return tx.refuse(Err(e));
                }
                // Read before anything is written, so that the common refusal writes nothing.
                // Exact on SQLite (the writer holds the lock); on PostgreSQL a snapshot, and the
                // overdraft check on the posting below stays the guard against a concurrent
                // spender.
                let available = account_id(w.agent_id, AccountKind::Available);
                let balance: Option<i64> =
                    sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
                        .bind(available)
                        .fetch_optional(&mut *tx)
                        .await?;
                if balance.unwrap_or(0) < w.amount_cents {
                    let used = key_used(&mut tx, save).await?;
                    let e = if used {
                        KEY_USED
                    } else {
                        StoreError::InsufficientFunds
                    };
                    return tx.refuse(Err(e));
                }
                if let Some(save) = save {
                    if !claim_key(&mut tx, save).await? {
                        // Only read so far.
                        return tx.refuse(Err(KEY_USED));
                    }
                }
                ensure_account(&mut tx, w.agent_id, AccountKind::PendingWithdrawal).await?;
                let row: WithdrawalRow = sqlx::query_as(&format!(
                    "INSERT INTO withdrawals (id, agent_id, amount_cents, destination, status, \
                     created_at) VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING \
                     {WITHDRAWAL_COLUMNS}"
                ))
                .bind(w.id)
                .bind(w.agent_id)
                .bind(w.amount_cents)
                .bind(&w.destination)
                .bind(w.at)
                .fetch_one(&mut *tx)
                .await?;
                post_ledger(
                    &mut tx,
                    w.at,
                    None,
                    &format!("withdrawal {} requested", w.id),
                    &[
                        (available, -w.amount_cents, "withdrawal_request"),
                        (
                            account_id(w.agent_id, AccountKind::PendingWithdrawal),
                            w.amount_cents,
                            "withdrawal_request",
                        ),
                    ],
                )
                .await?;
                let record = WithdrawalRecord::try_from(row)?;
                if let Some(save) = save {
                    store_response(&mut tx, save, &record).await?;
                }
                tx.commit().await?;
                Ok(record)
            })
        })
        .await
}

#[tracing::instrument(
    skip_all,
    name = "store.decide_withdrawal",
    level = "debug",
    fields(id = %d.id, approve = d.approve)
)]
pub(super) async fn decide_withdrawal(
    store: &Backend,
    d: &WithdrawalDecision,
    audit: &AuditEntry,
) -> Result<WithdrawalRecord> {
    store
        .write((d.clone(), audit.clone()), |mut tx, (d, audit)| {
            Box::pin(async move {
                let to = if d.approve {
                    WithdrawalStatus::Paid
                } else {
                    WithdrawalStatus::Rejected
                };
                // Decided exactly once: the second decision matches no row.
                let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
                    "UPDATE withdrawals SET status = $1, decided_at = $2, decided_by = $3 WHERE \
                     id = $4 AND status = 'pending' RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(to.as_str())
                .bind(d.at)
                .bind(d.by)
                .bind(d.id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    // The UPDATE matched nothing, and this only reads.
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT amount_cents FROM withdrawals WHERE id = $1")
                            .bind(d.id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return tx.refuse(Err(match exists {
                        None => StoreError::NotFound,
                        Some(_) => StoreError::Conflict(Conflict::InvalidState),
                    }));
                };
                let w = WithdrawalRecord::try_from(row)?;
                let pending = account_id(w.agent_id, AccountKind::PendingWithdrawal);
                let (to_account, kind, memo) = if d.approve {
                    (
                        account_id(PLATFORM, AccountKind::Withdrawn),
                        "withdrawal_paid",
                        format!("withdrawal {} paid out", w.id),
                    )
                } else {
                    (
                        account_id(w.agent_id, AccountKind::Available),
                        "withdrawal_released",
                        format!("withdrawal {} rejected: released", w.id),
                    )
                };
                post_ledger(
                    &mut tx,
                    d.at,
                    None,
                    &memo,
                    &[
                        (pending, -w.amount_cents, kind),
                        (to_account, w.amount_cents, kind),
                    ],
                )
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(w)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.withdrawal", level = "debug", fields(id = %id))]
pub(super) async fn withdrawal(store: &Backend, id: Uuid) -> Result<Option<WithdrawalRecord>> {
    let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
        "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(skip_all, name = "store.withdrawals", level = "debug")]
pub(super) async fn withdrawals(
    store: &Backend,
    q: &WithdrawalQuery,
) -> Result<Vec<WithdrawalRecord>> {
    let mut qb = QueryBuilder::<Db>::new(format!(
        "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE 1 = 1"
    ));
    if let Some(agent) = q.agent_id {
        qb.push(" AND agent_id = ").push_bind(agent);
    }
    if let Some(status) = q.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(before) = q.before {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<WithdrawalRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    collect(rows)
}

/// Recomputes the ledger from its entries, in one read snapshot so that a live server's
/// writes cannot show up as a mismatch.
#[tracing::instrument(skip_all, name = "store.verify_ledger", level = "debug")]
pub(super) async fn verify_ledger(store: &Backend) -> Result<LedgerReport> {
    let mut tx = store.reader().begin().await?;
    if Backend::BACKEND == "postgres" {
        // Read committed would give every statement its own snapshot.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let accounts = count("SELECT COUNT(*) FROM ledger_accounts")
        .fetch_one(&mut *tx)
        .await?;
    let entries = count("SELECT COUNT(*) FROM ledger_entries")
        .fetch_one(&mut *tx)
        .await?;
    let transactions = count("SELECT COUNT(DISTINCT txn_id) FROM ledger_entries")
        .fetch_one(&mut *tx)
        .await?;
    let per_kind: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT kind, COUNT(*), CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM ledger_accounts \
         GROUP BY kind ORDER BY kind",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mismatched: Vec<(Uuid, Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT a.id, a.owner_id, a.kind, a.balance, CAST(COALESCE(e.total, 0) AS BIGINT) FROM \
         ledger_accounts a LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger_entries \
         GROUP BY account_id) e ON e.account_id = a.id WHERE a.balance <> COALESCE(e.total, 0) \
         ORDER BY a.id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let unbalanced_transactions: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT txn_id, CAST(SUM(amount) AS BIGINT) FROM ledger_entries GROUP BY txn_id HAVING \
         SUM(amount) <> 0 ORDER BY txn_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let overdrawn_accounts: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT id, kind, balance FROM ledger_accounts WHERE balance < 0 AND kind <> 'treasury' \
         ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let treasury_misuse: Vec<(Uuid, String)> = sqlx::query_as(&format!(
        "SELECT id, kind FROM ledger_entries WHERE account_id = $1 AND amount < 0 AND kind NOT IN \
         {TREASURY_KINDS} ORDER BY id"
    ))
    .bind(account_id(PLATFORM, AccountKind::Treasury))
    .fetch_all(&mut *tx)
    .await?;
    // From the entries, not the cached balances, so that a tampered cache cannot hide here.
    let (agents_total, platform_total): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN a.owner_id <> $1 THEN e.amount ELSE 0 END), 0) AS \
         BIGINT), CAST(COALESCE(SUM(CASE WHEN a.owner_id = $1 THEN e.amount ELSE 0 END), 0) AS \
         BIGINT) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id",
    )
    .bind(PLATFORM)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(LedgerReport {
        accounts,
        entries,
        transactions,
        per_kind: per_kind
            .into_iter()
            .map(|(kind, accounts, balance)| KindTotal {
                kind,
                accounts,
                balance,
            })
            .collect(),
        mismatched_balances: mismatched
            .into_iter()
            .map(
                |(account_id, owner_id, kind, cached, computed)| BalanceMismatch {
                    account_id,
                    owner_id,
                    kind,
                    cached,
                    computed,
                },
            )
            .collect(),
        unbalanced_transactions,
        overdrawn_accounts,
        treasury_misuse,
        agents_total,
        operator_put_in: -platform_total,
    })
}
