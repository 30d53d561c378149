//! The one SQL implementation of [`crate::Store`].
//!
//! sqlx has no trait that abstracts "a database whose types include Uuid, DateTime and Json"
//! without pages of where-clauses, so the implementation is written once as a macro body and
//! instantiated for `sqlx::Sqlite` and `sqlx::Postgres`; the SQL text is the same on both.
//! Backend differences are confined to the migrations and to how a backend runs a write: each
//! supplies `write` (a transaction, retried on transient conflicts) and `write_one` (a single
//! self-contained statement) with the same signature. On SQLite both run on the dedicated
//! writer thread; on PostgreSQL, on a pooled connection.
//!
//! The database keeps the ledger's invariants (migration 0003): inserting an entry applies it
//! to its account's cached balance, an overdraft aborts the statement, entries cannot be
//! changed. It also keeps the capability index tables in step with the `capabilities` columns,
//! and each agent's count of claimed tasks, refusing a claim beyond its capacity.

pub(crate) mod rows;

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A write transaction as the body of a `write` sees it: a transaction of its own, or a part
/// of the SQLite writer's commit group. Either way the body commits what it means to keep, and
/// what it drops uncommitted is undone.
pub(crate) enum Tx<'c, DB: sqlx::Database> {
    Own(sqlx::Transaction<'c, DB>),
    /// Inside the SQLite writer's group transaction. `commit` marks the work as meant to stay;
    /// the group then commits it with the others. Work not marked makes the writer undo the
    /// whole group and run each of its writes again alone (`sqlite::writer`).
    Grouped {
        conn: &'c mut DB::Connection,
        committed: &'c AtomicBool,
    },
}

impl<DB: sqlx::Database> Tx<'_, DB> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Own(tx) => tx.commit().await,
            Tx::Grouped { committed, .. } => {
                committed.store(true, Ordering::Release);
                Ok(())
            }
        }
    }
}

impl<DB: sqlx::Database> Deref for Tx<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            Tx::Own(tx) => tx,
            Tx::Grouped { conn, .. } => conn,
        }
    }
}

impl<DB: sqlx::Database> DerefMut for Tx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Tx::Own(tx) => tx,
            Tx::Grouped { conn, .. } => conn,
        }
    }
}

/// The claim: one conditional write, the same on both backends. `$1` agent, `$2` lease end,
/// `$3` now, `$4` task. Concurrent claimers queue on the row (PostgreSQL row lock, SQLite's
/// single writer); once the winner commits, the others re-check the condition against the new
/// row and update nothing. The agent's capacity is enforced by the trigger that counts its
/// claimed tasks (migration 0003), inside this same statement. Not `SKIP LOCKED`: that also
/// skips a row held by any other short write (a matching round's `mark_notified`, say), and
/// every claimer of an available task would then lose.
pub(crate) const CLAIM: &str = "UPDATE tasks SET status = 'claimed', assigned_agent_id = $1, \
    lease_expires_at = $2, updated_at = $3 \
    WHERE id = $4 AND status = 'available' AND (retry_at IS NULL OR retry_at <= $3) \
    AND EXISTS (SELECT 1 FROM agents WHERE id = $1 AND suspended = FALSE AND available = TRUE)";

/// Runs a write transaction again when the database aborted it to break a deadlock or a
/// serialization conflict (PostgreSQL under contention; SQLite busy). Every attempt starts a
/// fresh transaction, so nothing of the aborted one remains.
macro_rules! retry_transient {
    ($body:block) => {{
        let mut attempt = 0u32;
        loop {
            let result: $crate::Result<_> = async $body.await;
            match result {
                Err(e) if e.is_transient() && attempt < 4 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "transient database conflict; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(2u64 << attempt)).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retry_transient;

macro_rules! impl_sql_store {
    ($store:ident, $db:ty) => {
        mod sql_impl {
        use super::$store;
        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use nervix_core::matching::{check_eligibility, AgentProfile, Ineligible, TaskProfile};
        use nervix_core::reputation::{settle, Reputation};
        use nervix_core::{Level, TaskStatus};
        use sqlx::types::Json;
        use sqlx::QueryBuilder;
        use uuid::Uuid;

        use $crate::model::*;
        use $crate::sql::rows::{self, *};
        use $crate::{Conflict, Result, Store, StoreError};

        type Conn = <$db as sqlx::Database>::Connection;

        const OPEN_STATUSES: &str = "('blocked', 'available', 'claimed')";

        async fn insert_audit(conn: &mut Conn, e: &AuditEntry) -> Result<()> {
            sqlx::query(
                "INSERT INTO audit_log (id, at, actor_id, actor_handle, action, target, client_ip, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(Uuid::now_v7())
            .bind(e.at)
            .bind(e.actor_id)
            .bind(&e.actor_handle)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.client_ip)
            .bind(Json(&e.details))
            .execute(conn)
            .await?;
            Ok(())
        }

        async fn insert_token(conn: &mut Conn, t: &TokenRecord) -> Result<()> {
            sqlx::query(
                "INSERT INTO tokens (jti, agent_id, kid, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(t.jti)
            .bind(t.agent_id)
            .bind(&t.kid)
            .bind(t.issued_at)
            .bind(t.expires_at)
            .execute(conn)
            .await?;
            Ok(())
        }

        async fn insert_agent(conn: &mut Conn, a: &NewAgent) -> Result<AgentRecord> {
            let initial = nervix_core::reputation::INITIAL_SCORE.hundredths();
            let row: AgentRow = sqlx::query_as(&format!(
                "INSERT INTO agents (id, handle, name, public_key, encryption_public_key, capabilities, \
                 metadata, max_concurrent_tasks, available, role, suspended, reputation, rep_automated, \
                 rep_success, rep_peer, tasks_completed, tasks_failed, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9, FALSE, $10, $10, $10, $10, 0, 0, $11, $11) \
                 RETURNING {AGENT_COLUMNS}"
            ))
            .bind(a.id)
            .bind(&a.handle)
            .bind(&a.name)
            .bind(&a.public_key)
            .bind(&a.encryption_public_key)
            .bind(Json(&a.capabilities))
            .bind(Json(&a.metadata))
            .bind(a.max_concurrent_tasks)
            .bind(a.role.as_str())
            .bind(initial)
            .bind(a.created_at)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::from_insert_agent)?;
            sqlx::query("INSERT INTO ledger_accounts (id, owner_id, kind, balance) VALUES ($1, $2, $3, 0), ($4, $2, $5, 0)")
                .bind(account_id(a.id, AccountKind::Available))
                .bind(a.id)
                .bind(AccountKind::Available.as_str())
                .bind(account_id(a.id, AccountKind::Escrow))
                .bind(AccountKind::Escrow.as_str())
                .execute(conn)
                .await?;
            row.try_into()
        }

        pub(crate) async fn ensure_account(conn: &mut Conn, owner: Uuid, kind: AccountKind) -> Result<()> {
            sqlx::query(
                "INSERT INTO ledger_accounts (id, owner_id, kind, balance) VALUES ($1, $2, $3, 0) \
                 ON CONFLICT (owner_id, kind) DO NOTHING",
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
        async fn post_ledger(
            conn: &mut Conn,
            at: DateTime<Utc>,
            task_id: Option<Uuid>,
            memo: &str,
            legs: &[(Uuid, i64, &str)],
        ) -> Result<()> {
            let total: i128 = legs.iter().map(|l| i128::from(l.1)).sum();
            if total != 0 {
                return Err(StoreError::Corrupt(format!("unbalanced ledger transaction ({memo}): {total}")));
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
            let mut qb = QueryBuilder::<$db>::new(
                "INSERT INTO ledger_entries (id, txn_id, account_id, amount, kind, task_id, memo, created_at) ",
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
            qb.build().execute(conn).await.map_err(StoreError::from_ledger)?;
            Ok(())
        }

        /// The claimant as `check_eligibility` sees it.
        fn claim_profile(agent: &AgentRecord) -> AgentProfile {
            // `check_eligibility` binary-searches the capabilities: they must be sorted,
            // whatever order the agent was stored with.
            let mut capabilities = agent.capabilities.clone();
            capabilities.sort_unstable();
            capabilities.dedup();
            AgentProfile {
                id: agent.id,
                capabilities,
                reputation: Reputation::from_hundredths(agent.reputation),
                completed_tasks: agent.tasks_completed,
                online: true,
                available: agent.available,
                suspended: agent.suspended,
                active_tasks: u32::try_from(agent.active_tasks).unwrap_or(u32::MAX),
                max_concurrent_tasks: u32::try_from(agent.max_concurrent_tasks).unwrap_or(0),
                recent_success_permille: 500,
            }
        }

        /// The account a task's escrow came from and returns to.
        fn funding_account(task: &TaskRecord) -> Uuid {
            if task.funded_by_treasury {
                account_id(PLATFORM, AccountKind::Treasury)
            } else {
                account_id(task.posted_by, AccountKind::Available)
            }
        }

        async fn fetch_task(conn: &mut Conn, id: Uuid) -> Result<Option<TaskRecord>> {
            let row: Option<TaskRow> = sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
                .bind(id)
                .fetch_optional(conn)
                .await?;
            row.map(TryInto::try_into).transpose()
        }

        /// Moves a task into a terminal status and marks its escrow settled, if it is still in
        /// one of `from`. Returns the task only to the caller that made the move, so the escrow
        /// is settled exactly once however many workers race for it.
        ///
        /// With `held_by`, only while that agent holds the task.
        async fn finish_task(
            conn: &mut Conn,
            id: Uuid,
            to: TaskStatus,
            from: &str,
            held_by: Option<Uuid>,
            at: DateTime<Utc>,
        ) -> Result<Option<TaskRecord>> {
            let holder = if held_by.is_some() { " AND assigned_agent_id = $4" } else { "" };
            let sql = format!(
                "UPDATE tasks SET status = $1, settled = TRUE, lease_expires_at = NULL, updated_at = $2 \
                 WHERE id = $3 AND status IN {from} AND settled = FALSE{holder} RETURNING {TASK_COLUMNS}"
            );
            let mut q = sqlx::query_as(&sql)
            .bind(to.as_str())
            .bind(at)
            .bind(id);
            if let Some(agent) = held_by {
                q = q.bind(agent);
            }
            let row: Option<TaskRow> = q.fetch_optional(conn).await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn refund(conn: &mut Conn, task: &TaskRecord, at: DateTime<Utc>, why: &str) -> Result<()> {
            post_ledger(
                conn,
                at,
                Some(task.id),
                why,
                &[
                    (account_id(task.funder(), AccountKind::Escrow), -task.reward_cents, "escrow_release"),
                    (funding_account(task), task.reward_cents, "refund"),
                ],
            )
            .await
        }

        /// Ends a task for good without paying anyone: refund, cancel everything downstream
        /// (refunding each), and fail its workflow.
        async fn abandon(conn: &mut Conn, task: &TaskRecord, at: DateTime<Utc>, why: &str) -> Result<Vec<TaskRecord>> {
            refund(conn, task, at, why).await?;
            let mut cancelled = Vec::new();
            let mut frontier = vec![(task.id, task.dependents)];
            while let Some((upstream, dependents)) = frontier.pop() {
                if dependents == 0 {
                    continue;
                }
                let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
                    "SELECT t.id FROM tasks t JOIN task_dependencies d ON d.task_id = t.id \
                     WHERE d.depends_on = $1 AND t.status IN {OPEN_STATUSES}"
                ))
                .bind(upstream)
                .fetch_all(&mut *conn)
                .await?;
                for id in ids {
                    if let Some(t) = finish_task(conn, id, TaskStatus::Cancelled, OPEN_STATUSES, None, at).await? {
                        refund(conn, &t, at, "upstream task failed").await?;
                        frontier.push((t.id, t.dependents));
                        cancelled.push(t);
                    }
                }
            }
            if let Some(wf) = task.workflow_id {
                set_workflow_status(conn, wf, WorkflowStatus::Failed, at).await?;
            }
            Ok(cancelled)
        }

        async fn set_workflow_status(conn: &mut Conn, id: Uuid, status: WorkflowStatus, at: DateTime<Utc>) -> Result<bool> {
            let n = sqlx::query("UPDATE workflows SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'active'")
                .bind(status.as_str())
                .bind(at)
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected();
            Ok(n == 1)
        }

        /// Makes `available` every blocked dependent of `upstream` whose dependencies are now
        /// all completed, and completes the workflow when nothing is left.
        async fn on_completed(conn: &mut Conn, task: &TaskRecord, at: DateTime<Utc>) -> Result<Vec<TaskRecord>> {
            let rows: Vec<TaskRow> = if task.dependents == 0 {
                Vec::new()
            } else {
                sqlx::query_as(&format!(
                "UPDATE tasks SET status = 'available', updated_at = $1 \
                 WHERE status = 'blocked' \
                   AND id IN (SELECT task_id FROM task_dependencies WHERE depends_on = $2) \
                   AND NOT EXISTS (SELECT 1 FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on \
                                   WHERE d.task_id = tasks.id AND u.status <> 'completed') \
                 RETURNING {TASK_COLUMNS}"
                ))
                .bind(at)
                .bind(task.id)
                .fetch_all(&mut *conn)
                .await?
            };
            if let Some(wf) = task.workflow_id {
                let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE workflow_id = $1 AND status <> 'completed'")
                    .bind(wf)
                    .fetch_one(&mut *conn)
                    .await?;
                if open == 0 {
                    set_workflow_status(conn, wf, WorkflowStatus::Completed, at).await?;
                }
            }
            rows::collect(rows)
        }

        /// Takes a claimed task back from its assignee: to the pool after a back-off while
        /// attempts remain (the failed attempt counted), else `failed` for good.
        async fn retry_or_fail(
            conn: &mut Conn,
            task: &TaskRecord,
            retry: &RetryPolicy,
            at: DateTime<Utc>,
            why: &str,
        ) -> Result<(Option<TaskRecord>, Vec<TaskRecord>)> {
            let attempts = task.attempts + 1;
            if attempts >= task.max_attempts {
                sqlx::query("UPDATE tasks SET attempts = $1 WHERE id = $2 AND status = 'claimed'")
                    .bind(attempts)
                    .bind(task.id)
                    .execute(&mut *conn)
                    .await?;
                let Some(failed) = finish_task(conn, task.id, TaskStatus::Failed, "('claimed')", task.assigned_agent_id, at).await? else {
                    return Ok((None, Vec::new()));
                };
                let cancelled = abandon(conn, &failed, at, why).await?;
                return Ok((Some(failed), cancelled));
            }
            let retry_at = at + chrono::Duration::seconds(retry.delay_seconds(attempts));
            let row: Option<TaskRow> = sqlx::query_as(&format!(
                "UPDATE tasks SET status = 'available', assigned_agent_id = NULL, lease_expires_at = NULL, \
                 attempts = $1, retry_at = $2, notify_round = 0, notified_at = NULL, updated_at = $3 \
                 WHERE id = $4 AND status = 'claimed' AND assigned_agent_id = $5 RETURNING {TASK_COLUMNS}"
            ))
            .bind(attempts)
            .bind(retry_at)
            .bind(at)
            .bind(task.id)
            .bind(task.assigned_agent_id)
            .fetch_optional(conn)
            .await?;
            Ok((row.map(TryInto::try_into).transpose()?, Vec::new()))
        }

        impl $store {
            async fn fetch_agent(&self, sql: &str, key: impl for<'q> sqlx::Encode<'q, $db> + sqlx::Type<$db> + Send) -> Result<Option<AgentRecord>> {
                let row: Option<AgentRow> = sqlx::query_as(sql).bind(key).fetch_optional(self.reader()).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn consume_challenge(conn: &mut Conn, id: Uuid, at: DateTime<Utc>) -> Result<()> {
                let n = sqlx::query(
                    "UPDATE challenges SET consumed_at = $1 \
                     WHERE id = $2 AND consumed_at IS NULL AND expires_at > $1 AND failures < $3",
                )
                .bind(at)
                .bind(id)
                .bind($crate::MAX_CHALLENGE_FAILURES)
                .execute(conn)
                .await?
                .rows_affected();
                if n == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Conflict(Conflict::ChallengeUsed))
                }
            }

            /// Inserts a challenge; with `handle`, only if neither it nor the challenge's public
            /// key is enrolled yet (one statement, so the check and the insert cannot drift).
            async fn insert_challenge_unless_enrolled(&self, c: &NewChallenge, handle: Option<&str>) -> Result<bool> {
                let data = (c.clone(), handle.map(str::to_owned));
                self.write_one(data, |conn, (c, handle)| Box::pin(async move {
                let guard = if handle.is_some() {
                    " WHERE NOT EXISTS (SELECT 1 FROM agents WHERE handle = $9 OR public_key = $4)"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO challenges (id, purpose, agent_id, public_key, challenge, payload, failures, \
                     expires_at, created_at) SELECT $1, $2, $3, $4, $5, $6, 0, $7, $8{guard}"
                );
                let mut q = sqlx::query(&sql)
                    .bind(c.id)
                    .bind(c.purpose.as_str())
                    .bind(c.agent_id)
                    .bind(&c.public_key)
                    .bind(&c.challenge)
                    .bind(c.payload.as_ref().map(Json))
                    .bind(c.expires_at)
                    .bind(c.created_at);
                if let Some(h) = handle {
                    q = q.bind(h);
                }
                Ok(q.execute(&mut *conn).await?.rows_affected() == 1)
                }))
                .await
            }

            /// Runs a housekeeping `DELETE` whose only parameter (`$1`) is a cut-off time.
            async fn delete_before(&self, sql: &'static str, before: DateTime<Utc>) -> Result<u64> {
                self.write_one(before, move |conn, before| Box::pin(async move {
                    Ok(sqlx::query(sql).bind(before).execute(&mut *conn).await?.rows_affected())
                }))
                .await
            }

            pub(crate) async fn ensure_platform_accounts(&self) -> Result<()> {
                self.write((), |mut tx, _| Box::pin(async move {
                    ensure_account(&mut tx, PLATFORM, AccountKind::Treasury).await?;
                    ensure_account(&mut tx, PLATFORM, AccountKind::Escrow).await?;
                    tx.commit().await?;
                    Ok(())
                }))
                .await
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn close(&self) {
                self.close_pools().await;
            }

            async fn insert_challenge(&self, c: &NewChallenge) -> Result<()> {
                self.insert_challenge_unless_enrolled(c, None).await?;
                Ok(())
            }

            async fn insert_enrollment_challenge(&self, c: &NewChallenge, handle: &str) -> Result<Option<Conflict>> {
                if self.insert_challenge_unless_enrolled(c, Some(handle)).await? {
                    return Ok(None);
                }
                Ok(Some(self.enrollment_conflict(handle, &c.public_key).await?.unwrap_or(Conflict::DuplicateHandle)))
            }

            async fn challenge(&self, id: Uuid) -> Result<Option<ChallengeRecord>> {
                let row: Option<ChallengeRow> = sqlx::query_as(&format!("SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn record_challenge_failure(&self, id: Uuid) -> Result<i64> {
                self.write_one(id, |conn, id| Box::pin(async move {
                    let n: Option<i64> = sqlx::query_scalar("UPDATE challenges SET failures = failures + 1 WHERE id = $1 RETURNING failures")
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    n.ok_or(StoreError::NotFound)
                }))
                .await
            }

            async fn complete_enrollment(&self, challenge_id: Uuid, agent: &NewAgent, token: &TokenRecord, audit: &AuditEntry) -> Result<AgentRecord> {
                let data = (challenge_id, agent.clone(), token.clone(), audit.clone());
                self.write(data, |mut tx, (challenge_id, agent, token, audit)| Box::pin(async move {
                    Self::consume_challenge(&mut tx, *challenge_id, agent.created_at).await?;
                    let record = insert_agent(&mut tx, agent).await?;
                    insert_token(&mut tx, token).await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(record)
                }))
                .await
            }

            async fn complete_login(&self, challenge_id: Uuid, token: &TokenRecord, audit: &AuditEntry) -> Result<()> {
                let data = (challenge_id, token.clone(), audit.clone());
                self.write(data, |mut tx, (challenge_id, token, audit)| Box::pin(async move {
                    Self::consume_challenge(&mut tx, *challenge_id, token.issued_at).await?;
                    insert_token(&mut tx, token).await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(())
                }))
                .await
            }

            async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> Result<()> {
                self.write((token.clone(), audit.clone()), |mut tx, (token, audit)| Box::pin(async move {
                    insert_token(&mut tx, token).await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(())
                }))
                .await
            }

            async fn auth_state(&self, jti: Uuid, agent_id: Uuid) -> Result<Option<AuthState>> {
                let row: Option<(String, String, bool, Option<DateTime<Utc>>)> = sqlx::query_as(
                    "SELECT a.handle, a.role, a.suspended, t.revoked_at FROM tokens t \
                     JOIN agents a ON a.id = t.agent_id WHERE t.jti = $1 AND t.agent_id = $2",
                )
                .bind(jti)
                .bind(agent_id)
                .fetch_optional(self.reader())
                .await?;
                row.map(|(handle, role, suspended, revoked_at)| {
                    Ok(AuthState {
                        handle,
                        role: role.parse().map_err(|_| StoreError::Corrupt(format!("unknown role {role:?}")))?,
                        suspended,
                        revoked: revoked_at.is_some(),
                    })
                })
                .transpose()
            }

            async fn revoke_token(&self, jti: Uuid, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool> {
                self.write((jti, at, audit.clone()), |mut tx, (jti, at, audit)| Box::pin(async move {
                    let n = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL")
                        .bind(*at)
                        .bind(*jti)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n == 1 {
                        insert_audit(&mut tx, audit).await?;
                    }
                    tx.commit().await?;
                    Ok(n == 1)
                }))
                .await
            }

            async fn rotate_token(&self, old: Uuid, new: &TokenRecord, audit: &AuditEntry) -> Result<bool> {
                self.write((old, new.clone(), audit.clone()), |mut tx, (old, new, audit)| Box::pin(async move {
                    let n = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL")
                        .bind(new.issued_at)
                        .bind(*old)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n != 1 {
                        return Ok(false);
                    }
                    insert_token(&mut tx, new).await?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(true)
                }))
                .await
            }

            async fn purge_challenges(&self, before: DateTime<Utc>) -> Result<u64> {
                self.delete_before("DELETE FROM challenges WHERE expires_at < $1", before).await
            }

            async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>> {
                self.fetch_agent(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"), id).await
            }

            async fn agent_by_handle(&self, handle: &str) -> Result<Option<AgentRecord>> {
                self.fetch_agent(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE handle = $1"), handle.to_owned()).await
            }

            async fn enrollment_conflict(&self, handle: &str, public_key: &str) -> Result<Option<Conflict>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT handle FROM agents WHERE handle = $1 OR public_key = $2 LIMIT 1")
                    .bind(handle)
                    .bind(public_key)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map(|(h,)| if h == handle { Conflict::DuplicateHandle } else { Conflict::DuplicatePublicKey }))
            }

            async fn list_agents(&self, q: &AgentQuery) -> Result<Vec<AgentRecord>> {
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {AGENT_COLUMNS} FROM agents WHERE suspended = FALSE"));
                if let Some(cap) = &q.capability {
                    qb.push(" AND id IN (SELECT agent_id FROM agent_capabilities WHERE capability = ").push_bind(cap).push(")");
                }
                if let Some(level) = q.level {
                    let p = nervix_core::reputation::PROBATION_TASKS;
                    let (lo, hi) = match level {
                        Level::Novice => (0, 4999),
                        Level::Intermediate => (5000, 7499),
                        Level::Expert => (7500, 8999),
                        Level::Master => (9000, 10_000),
                    };
                    if level == Level::Novice {
                        qb.push(" AND (reputation < 5000 OR tasks_completed < ").push_bind(p).push(")");
                    } else {
                        qb.push(" AND tasks_completed >= ").push_bind(p)
                            .push(" AND reputation >= ").push_bind(lo)
                            .push(" AND reputation <= ").push_bind(hi);
                    }
                }
                match q.online {
                    Some(true) => {
                        qb.push(" AND last_seen_at >= ").push_bind(q.online_since);
                    }
                    Some(false) => {
                        qb.push(" AND (last_seen_at IS NULL OR last_seen_at < ").push_bind(q.online_since).push(")");
                    }
                    None => {}
                }
                if let Some(before) = q.before {
                    qb.push(" AND id < ").push_bind(before);
                }
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
                let rows: Vec<AgentRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                rows::collect(rows)
            }

            async fn all_agents(&self) -> Result<Vec<AgentRecord>> {
                let rows: Vec<AgentRow> = sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents"))
                    .fetch_all(self.reader())
                    .await?;
                rows::collect(rows)
            }

            async fn leaderboard(&self, limit: i64) -> Result<Vec<AgentRecord>> {
                let rows: Vec<AgentRow> = sqlx::query_as(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE suspended = FALSE AND role <> 'admin' \
                     ORDER BY reputation DESC, tasks_completed DESC, id LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows::collect(rows)
            }

            async fn update_agent_config(&self, id: Uuid, p: &AgentConfigPatch, audit: &AuditEntry) -> Result<AgentRecord> {
                self.write((id, p.clone(), audit.clone()), |mut tx, (id, p, audit)| Box::pin(async move {
                let mut qb = QueryBuilder::<$db>::new("UPDATE agents SET updated_at = ");
                qb.push_bind(p.at);
                if let Some(name) = &p.name {
                    qb.push(", name = ").push_bind(name);
                }
                if let Some(caps) = &p.capabilities {
                    qb.push(", capabilities = ").push_bind(Json(caps));
                }
                if let Some(meta) = &p.metadata {
                    qb.push(", metadata = ").push_bind(Json(meta));
                }
                if let Some(key) = &p.encryption_public_key {
                    qb.push(", encryption_public_key = ").push_bind(key);
                }
                if let Some(max) = p.max_concurrent_tasks {
                    qb.push(", max_concurrent_tasks = ").push_bind(max);
                }
                if let Some(available) = p.available {
                    qb.push(", available = ").push_bind(available);
                }
                // The capability index follows the column (trigger, migration 0003).
                qb.push(" WHERE id = ").push_bind(*id).push(format!(" RETURNING {AGENT_COLUMNS}"));
                let row: Option<AgentRow> = qb.build_query_as().fetch_optional(&mut *tx).await?;
                let row = row.ok_or(StoreError::NotFound)?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                row.try_into()
                }))
                .await
            }

            async fn set_suspended(&self, id: Uuid, suspended: bool, audit: &AuditEntry) -> Result<AgentRecord> {
                self.write((id, suspended, audit.clone()), |mut tx, (id, suspended, audit)| Box::pin(async move {
                    let row: Option<AgentRow> = sqlx::query_as(&format!(
                        "UPDATE agents SET suspended = $1, updated_at = $2 WHERE id = $3 RETURNING {AGENT_COLUMNS}"
                    ))
                    .bind(*suspended)
                    .bind(audit.at)
                    .bind(*id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let row = row.ok_or(StoreError::NotFound)?;
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    row.try_into()
                }))
                .await
            }

            async fn ensure_agent(&self, agent: &NewAgent, audit: &AuditEntry) -> Result<AgentRecord> {
                if let Some(existing) = self.agent_by_handle(&agent.handle).await? {
                    return Ok(existing);
                }
                let created = self
                    .write((agent.clone(), audit.clone()), |mut tx, (agent, audit)| Box::pin(async move {
                        let record = insert_agent(&mut tx, agent).await?;
                        insert_audit(&mut tx, audit).await?;
                        tx.commit().await?;
                        Ok(record)
                    }))
                    .await;
                match created {
                    // Created concurrently by another process: use theirs.
                    Err(StoreError::Conflict(Conflict::DuplicateHandle)) => {
                        self.agent_by_handle(&agent.handle).await?.ok_or(StoreError::NotFound)
                    }
                    other => other,
                }
            }

            async fn touch_agent(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
                self.write_one((id, at), |conn, (id, at)| Box::pin(async move {
                    sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }))
                .await
            }

            async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
                self.write_one(e.clone(), |conn, e| Box::pin(async move { insert_audit(conn, &e).await })).await
            }

            async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
                if let Some(action) = &q.action {
                    qb.push(" AND action = ").push_bind(action);
                }
                if let Some(actor) = q.actor_id {
                    qb.push(" AND actor_id = ").push_bind(actor);
                }
                if let Some(target) = &q.target {
                    qb.push(" AND target = ").push_bind(target);
                }
                if let Some(since) = q.since {
                    qb.push(" AND at >= ").push_bind(since);
                }
                if let Some(until) = q.until {
                    qb.push(" AND at < ").push_bind(until);
                }
                if let Some(before) = q.before {
                    qb.push(" AND id < ").push_bind(before);
                }
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
                let rows: Vec<AuditRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn stats(&self, online_since: DateTime<Utc>) -> Result<Stats> {
                let (agents, agents_online): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_seen_at >= $1 THEN 1 ELSE 0 END), 0) FROM agents",
                )
                .bind(online_since)
                .fetch_one(self.reader())
                .await?;
                let (tasks_total, tasks_open, tasks_completed): (i64, i64, i64) = sqlx::query_as(&format!(
                    "SELECT COUNT(*), \
                     COALESCE(SUM(CASE WHEN status IN {OPEN_STATUSES} THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) FROM tasks"
                ))
                .fetch_one(self.reader())
                .await?;
                let workflows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflows").fetch_one(self.reader()).await?;
                let paid_out_cents: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries WHERE kind IN ('payout', 'bonus')",
                )
                .fetch_one(self.reader())
                .await?;
                Ok(Stats { agents, agents_online, tasks_total, tasks_open, tasks_completed, workflows, paid_out_cents })
            }

            async fn post_tasks(&self, post: &NewPost) -> Result<Vec<TaskRecord>> {
                self.write(post.clone(), |mut tx, post| Box::pin(async move {
                if let Some(wf) = &post.workflow {
                    sqlx::query(
                        "INSERT INTO workflows (id, name, status, posted_by, created_at, updated_at) VALUES ($1, $2, 'active', $3, $4, $4)",
                    )
                    .bind(wf.id)
                    .bind(&wf.name)
                    .bind(post.poster)
                    .bind(post.at)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut created: Vec<TaskRecord> = Vec::with_capacity(post.tasks.len());
                let mut total: i64 = 0;
                // Dependents within this post, counted up front so each task is inserted with
                // its final count (dependencies point at earlier tasks of the post).
                let deps: Vec<Vec<Uuid>> = post.tasks.iter().map(|t| {
                    let mut d = t.depends_on.clone();
                    d.sort_unstable();
                    d.dedup();
                    d
                }).collect();
                let mut dependents_here: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
                for dep in deps.iter().flatten() {
                    *dependents_here.entry(*dep).or_default() += 1;
                }
                for (t, depends_on) in post.tasks.iter().zip(&deps) {
                    // A task starts blocked unless every dependency is already completed; a
                    // dependency that can never complete makes the post invalid.
                    let mut blocked = false;
                    for dep in depends_on {
                        let status = match created.iter().find(|c| c.id == *dep) {
                            Some(c) => Some(c.status),
                            None => {
                                // Counting the dependent locks the upstream row (PostgreSQL),
                                // so its completion cannot slip in between this read of its
                                // status and our commit: either it completed first and we
                                // see it, or it waits for us and its unblocking sees our task.
                                let s: Option<String> = sqlx::query_scalar(
                                    "UPDATE tasks SET dependents = dependents + 1 WHERE id = $1 RETURNING status",
                                )
                                .bind(dep)
                                .fetch_optional(&mut *tx)
                                .await?;
                                s.and_then(|s| s.parse::<TaskStatus>().ok())
                            }
                        };
                        match status {
                            None => return Err(StoreError::invalid("depends_on", format!("task {dep} does not exist"))),
                            Some(TaskStatus::Completed) => {}
                            Some(s) if s.is_terminal() => {
                                return Err(StoreError::invalid("depends_on", format!("task {dep} is {s} and can never complete")))
                            }
                            Some(_) => blocked = true,
                        }
                    }
                    let status = if blocked { TaskStatus::Blocked } else { TaskStatus::Available };
                    let first_round = post.notifies_first_round && !blocked;
                    let row: TaskRow = sqlx::query_as(&format!(
                        "INSERT INTO tasks (id, title, description, capabilities, min_reputation, reward_cents, \
                         complexity, kind, output_schema, language, deadline, status, workflow_id, workflow_key, \
                         posted_by, funded_by_treasury, attempts, max_attempts, notify_round, notified_at, settled, depends_on, \
                         dependents, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, $19, $20, FALSE, $21, $22, $18, $18) \
                         RETURNING {TASK_COLUMNS}"
                    ))
                    .bind(t.id)
                    .bind(&t.title)
                    .bind(&t.description)
                    .bind(Json(&t.capabilities))
                    .bind(t.min_reputation)
                    .bind(t.reward_cents)
                    .bind(t.complexity.as_str())
                    .bind(t.kind.as_str())
                    .bind(t.output_schema.as_ref().map(Json))
                    .bind(&t.language)
                    .bind(t.deadline)
                    .bind(status.as_str())
                    .bind(post.workflow.as_ref().map(|w| w.id))
                    .bind(&t.workflow_key)
                    .bind(post.poster)
                    .bind(post.from_treasury)
                    .bind(t.max_attempts)
                    .bind(post.at)
                    .bind(i64::from(first_round))
                    .bind(first_round.then_some(post.at))
                    .bind(Json(depends_on))
                    .bind(dependents_here.get(&t.id).copied().unwrap_or(0))
                    .fetch_one(&mut *tx)
                    .await?;
                    if !depends_on.is_empty() {
                        let mut qb = QueryBuilder::<$db>::new("INSERT INTO task_dependencies (task_id, depends_on) ");
                        qb.push_values(depends_on, |mut b, d| {
                            b.push_bind(t.id).push_bind(*d);
                        });
                        qb.build().execute(&mut *tx).await?;
                    }
                    total = total.checked_add(t.reward_cents).ok_or_else(|| StoreError::invalid("reward", "total reward is too large"))?;
                    created.push(row.try_into()?);
                }
                let (source, funder) = if post.from_treasury {
                    (account_id(PLATFORM, AccountKind::Treasury), PLATFORM)
                } else {
                    (account_id(post.poster, AccountKind::Available), post.poster)
                };
                for t in &created {
                    post_ledger(
                        &mut tx,
                        post.at,
                        Some(t.id),
                        "task posted: reward escrowed",
                        &[(source, -t.reward_cents, "escrow_hold"), (account_id(funder, AccountKind::Escrow), t.reward_cents, "escrow_hold")],
                    )
                    .await?;
                }
                if let Some(audit) = &post.audit {
                    insert_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(created)
                }))
                .await
            }

            async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>> {
                let row: Option<TaskRow> = sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn tasks_by_ids(&self, ids: &[Uuid]) -> Result<Vec<TaskRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ("));
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                qb.push(") ORDER BY id");
                let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                rows::collect(rows)
            }

            async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskRecord>> {
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
                if let Some(status) = q.status {
                    qb.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(cap) = &q.capability {
                    qb.push(" AND id IN (SELECT task_id FROM task_capabilities WHERE capability = ").push_bind(cap).push(")");
                }
                if let Some(c) = q.complexity {
                    qb.push(" AND complexity = ").push_bind(c.as_str());
                }
                if let Some(p) = q.posted_by {
                    qb.push(" AND posted_by = ").push_bind(p);
                }
                if let Some(a) = q.assigned_to {
                    qb.push(" AND assigned_agent_id = ").push_bind(a);
                }
                if let Some(e) = &q.eligible_for {
                    qb.push(" AND status = 'available' AND posted_by <> ").push_bind(e.agent_id);
                    qb.push(" AND min_reputation <= ").push_bind(e.reputation);
                    qb.push(" AND (retry_at IS NULL OR retry_at <= ").push_bind(e.now).push(")");
                    qb.push(" AND complexity IN (");
                    let mut sep = qb.separated(", ");
                    for c in &e.complexities {
                        sep.push_bind(c.as_str());
                    }
                    qb.push(") AND NOT EXISTS (SELECT 1 FROM task_capabilities tc WHERE tc.task_id = tasks.id \
                             AND NOT EXISTS (SELECT 1 FROM agent_capabilities ac WHERE ac.agent_id = ");
                    qb.push_bind(e.agent_id).push(" AND ac.capability = tc.capability))");
                }
                if let Some(before) = q.before {
                    qb.push(" AND id < ").push_bind(before);
                }
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
                let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                rows::collect(rows)
            }

            async fn task_dependencies(&self, id: Uuid) -> Result<Vec<Uuid>> {
                Ok(sqlx::query_scalar("SELECT depends_on FROM task_dependencies WHERE task_id = $1 ORDER BY depends_on")
                    .bind(id)
                    .fetch_all(self.reader())
                    .await?)
            }

            async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowRecord>> {
                let row: Option<WorkflowRow> = sqlx::query_as(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn workflow_tasks(&self, id: Uuid) -> Result<Vec<TaskRecord>> {
                let rows: Vec<TaskRow> = sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 ORDER BY id"))
                    .bind(id)
                    .fetch_all(self.reader())
                    .await?;
                rows::collect(rows)
            }

            async fn claim_task(&self, c: &ClaimRequest) -> Result<ClaimOutcome> {
                // Eligibility is judged on a snapshot read without the write lock; the claim
                // itself is one conditional statement that re-checks what must hold at the
                // instant of the claim: the task still available, the agent not suspended or
                // paused, and (the capacity trigger) below max_concurrent_tasks. When it
                // matches nothing, something changed since the snapshot: judge again.
                for _ in 0..3 {
                    let (agent, task) = futures::try_join!(self.agent(c.agent_id), self.task(c.task_id))?;
                    let Some(agent) = agent else { return Ok(ClaimOutcome::AgentNotFound) };
                    let Some(task) = task else { return Ok(ClaimOutcome::TaskNotFound) };
                    match task.status {
                        TaskStatus::Available => {}
                        TaskStatus::Claimed | TaskStatus::Submitted | TaskStatus::Completed => return Ok(ClaimOutcome::AlreadyClaimed),
                        other => return Ok(ClaimOutcome::NotAvailable(other)),
                    }
                    if task.retry_at.is_some_and(|r| r > c.at) {
                        return Ok(ClaimOutcome::NotAvailable(TaskStatus::Available));
                    }
                    match check_eligibility(&claim_profile(&agent), &TaskProfile {
                        capabilities: task.capabilities.clone(),
                        complexity: task.complexity,
                        min_reputation: Reputation::from_hundredths(task.min_reputation),
                        posted_by: task.posted_by,
                    }) {
                        Ok(()) => {}
                        Err(Ineligible::AtCapacity) => return Ok(ClaimOutcome::AtCapacity),
                        Err(why) => return Ok(ClaimOutcome::NotEligible(why)),
                    }
                    let lease_end = (c.at + chrono::Duration::seconds(c.lease_seconds)).min(task.deadline);
                    let claimed = self
                        .write_one((agent.id, lease_end, c.at, task.id), |conn, (agent, lease_end, at, task)| Box::pin(async move {
                            let row: Option<TaskRow> = sqlx::query_as(&format!("{} RETURNING {TASK_COLUMNS}", $crate::sql::CLAIM))
                                .bind(agent)
                                .bind(lease_end)
                                .bind(at)
                                .bind(task)
                                .fetch_optional(&mut *conn)
                                .await?;
                            Ok(row)
                        }))
                        .await;
                    match claimed {
                        Ok(Some(row)) => return Ok(ClaimOutcome::Claimed(row.try_into()?)),
                        Ok(None) => continue,
                        Err(e) if e.is_at_capacity() => return Ok(ClaimOutcome::AtCapacity),
                        Err(e) => return Err(e),
                    }
                }
                // Three snapshots in a row went stale before the claim landed: someone else
                // keeps changing this task, so it is not ours to take.
                Ok(ClaimOutcome::AlreadyClaimed)
            }

            async fn submit(&self, s: &NewSubmission) -> Result<SubmitOutcome> {
                // Rows are locked task first, then agent, then ledger accounts: the order a
                // claim takes them (its capacity trigger updates the agent), so that no two
                // writers ever wait on each other in a circle (PostgreSQL).
                self.write(s.clone(), |mut tx, s| Box::pin(async move {
                let (status, payout, final_task, unblocked, cancelled) = match s.decision {
                    Decision::Accept => {
                        let done = finish_task(&mut tx, s.task_id, TaskStatus::Completed, "('claimed')", Some(s.agent_id), s.at).await?;
                        let Some(done) = done else {
                            return Ok(match fetch_task(&mut tx, s.task_id).await? {
                                None => SubmitOutcome::TaskNotFound,
                                Some(_) => SubmitOutcome::NotAssignee,
                            });
                        };
                        // The level comes from the locked row, not from a read a concurrent
                        // submit of the same agent could race.
                        let (reputation, completed): (i64, i64) = sqlx::query_as(
                            "UPDATE agents SET tasks_completed = tasks_completed + 1, updated_at = $1 WHERE id = $2 \
                             RETURNING reputation, tasks_completed",
                        )
                        .bind(s.at)
                        .bind(s.agent_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        // The level the work was done at: before this completion.
                        let level = Level::of(Reputation::from_hundredths(reputation), completed - 1);
                        let money = settle(nervix_core::Money::from_cents(done.reward_cents), s.quality_score, level);
                        let worker = account_id(s.agent_id, AccountKind::Available);
                        post_ledger(
                            &mut tx,
                            s.at,
                            Some(done.id),
                            "task completed: payout",
                            &[
                                (account_id(done.funder(), AccountKind::Escrow), -done.reward_cents, "escrow_release"),
                                (account_id(PLATFORM, AccountKind::Treasury), -money.bonus.cents(), "bonus"),
                                (worker, money.from_escrow.cents(), "payout"),
                                (worker, money.bonus.cents(), "bonus"),
                                (funding_account(&done), money.refund.cents(), "refund"),
                            ],
                        )
                        .await?;
                        let unblocked = on_completed(&mut tx, &done, s.at).await?;
                        (SubmissionStatus::Accepted, Some(money.payout().cents()), done, unblocked, Vec::new())
                    }
                    Decision::Reject => {
                        let Some(task) = fetch_task(&mut tx, s.task_id).await? else { return Ok(SubmitOutcome::TaskNotFound) };
                        if task.status != TaskStatus::Claimed || task.assigned_agent_id != Some(s.agent_id) {
                            return Ok(SubmitOutcome::NotAssignee);
                        }
                        let (after, cancelled) = retry_or_fail(&mut tx, &task, &s.retry, s.at, "attempts exhausted").await?;
                        let Some(after) = after else { return Ok(SubmitOutcome::NotAssignee) };
                        sqlx::query("UPDATE agents SET tasks_failed = tasks_failed + 1, updated_at = $1 WHERE id = $2")
                            .bind(s.at)
                            .bind(s.agent_id)
                            .execute(&mut *tx)
                            .await?;
                        (SubmissionStatus::Rejected, None, after, Vec::new(), cancelled)
                    }
                };
                let row: SubmissionRow = sqlx::query_as(&format!(
                    "INSERT INTO submissions (id, task_id, agent_id, content, notes, quality_score, checks, status, \
                     feedback, payout_cents, created_at, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                     RETURNING {SUBMISSION_COLUMNS}"
                ))
                .bind(s.id)
                .bind(s.task_id)
                .bind(s.agent_id)
                .bind(Json(&s.content))
                .bind(&s.notes)
                .bind(i64::from(s.quality_score))
                .bind(Json(&s.checks))
                .bind(status.as_str())
                .bind(&s.feedback)
                .bind(payout)
                .bind(s.at)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(SubmitOutcome::Done { submission: row.try_into()?, task: final_task, unblocked, cancelled })
                }))
                .await
            }

            async fn submission(&self, id: Uuid) -> Result<Option<SubmissionRecord>> {
                let row: Option<SubmissionRow> = sqlx::query_as(&format!("SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn release_task(&self, task_id: Uuid, agent_id: Uuid, at: DateTime<Utc>) -> Result<TaskRecord> {
                self.write_one((task_id, agent_id, at), |conn, (task_id, agent_id, at)| Box::pin(async move {
                let row: Option<TaskRow> = sqlx::query_as(&format!(
                    "UPDATE tasks SET status = 'available', assigned_agent_id = NULL, lease_expires_at = NULL, \
                     notify_round = 0, notified_at = NULL, updated_at = $1 \
                     WHERE id = $2 AND status = 'claimed' AND assigned_agent_id = $3 RETURNING {TASK_COLUMNS}"
                ))
                .bind(at)
                .bind(task_id)
                .bind(agent_id)
                .fetch_optional(&mut *conn)
                .await?;
                row.ok_or(StoreError::Conflict(Conflict::InvalidState))?.try_into()
                }))
                .await
            }

            async fn cancel_task(&self, task_id: Uuid, at: DateTime<Utc>, audit: &AuditEntry) -> Result<TaskRecord> {
                self.write((task_id, at, audit.clone()), |mut tx, &(task_id, at, ref audit)| Box::pin(async move {
                let Some(task) = finish_task(&mut tx, task_id, TaskStatus::Cancelled, OPEN_STATUSES, None, at).await? else {
                    return Err(match fetch_task(&mut tx, task_id).await? {
                        None => StoreError::NotFound,
                        Some(_) => StoreError::Conflict(Conflict::InvalidState),
                    });
                };
                abandon(&mut tx, &task, at, "task cancelled").await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(task)
                }))
                .await
            }

            async fn cancel_workflow(&self, id: Uuid, at: DateTime<Utc>, audit: &AuditEntry) -> Result<WorkflowRecord> {
                self.write((id, at, audit.clone()), |mut tx, &(id, at, ref audit)| Box::pin(async move {
                if !set_workflow_status(&mut tx, id, WorkflowStatus::Cancelled, at).await? {
                    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM workflows WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Err(if exists.is_some() { StoreError::Conflict(Conflict::InvalidState) } else { StoreError::NotFound });
                }
                let ids: Vec<Uuid> = sqlx::query_scalar(&format!("SELECT id FROM tasks WHERE workflow_id = $1 AND status IN {OPEN_STATUSES}"))
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                for task_id in ids {
                    if let Some(t) = finish_task(&mut tx, task_id, TaskStatus::Cancelled, OPEN_STATUSES, None, at).await? {
                        // Like a cancelled task: refund, and cancel dependents outside the
                        // workflow too (they could never become available otherwise).
                        abandon(&mut tx, &t, at, "workflow cancelled").await?;
                    }
                }
                insert_audit(&mut tx, audit).await?;
                let row: WorkflowRow = sqlx::query_as(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.try_into()
                }))
                .await
            }

            async fn expire_leases(&self, now: DateTime<Utc>, retry: &RetryPolicy, limit: i64) -> Result<Vec<TaskRecord>> {
                self.write((now, *retry, limit), |mut tx, &(now, ref retry, limit)| Box::pin(async move {
                let rows: Vec<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'claimed' AND lease_expires_at < $1 \
                     ORDER BY lease_expires_at LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut changed = Vec::new();
                for task in rows::collect::<_, TaskRecord>(rows)? {
                    let (after, cancelled) = retry_or_fail(&mut tx, &task, retry, now, "lease expired, attempts exhausted").await?;
                    changed.extend(after);
                    changed.extend(cancelled);
                }
                tx.commit().await?;
                Ok(changed)
                }))
                .await
            }

            async fn expire_deadlines(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TaskRecord>> {
                self.write((now, limit), |mut tx, &(now, limit)| Box::pin(async move {
                let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
                    "SELECT id FROM tasks WHERE status IN {OPEN_STATUSES} AND deadline < $1 ORDER BY deadline LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut changed = Vec::new();
                for id in ids {
                    if let Some(t) = finish_task(&mut tx, id, TaskStatus::Expired, OPEN_STATUSES, None, now).await? {
                        let cancelled = abandon(&mut tx, &t, now, "deadline passed").await?;
                        changed.push(t);
                        changed.extend(cancelled);
                    }
                }
                tx.commit().await?;
                Ok(changed)
                }))
                .await
            }

            async fn tasks_to_notify(&self, now: DateTime<Utc>, window_start: DateTime<Utc>, limit: i64) -> Result<Vec<TaskRecord>> {
                let rows: Vec<TaskRow> = sqlx::query_as(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'available' \
                     AND (retry_at IS NULL OR retry_at <= $1) AND (notified_at IS NULL OR notified_at < $2) \
                     ORDER BY id LIMIT $3"
                ))
                .bind(now)
                .bind(window_start)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows::collect(rows)
            }

            async fn mark_notified(&self, task_id: Uuid, round: i64, at: DateTime<Utc>) -> Result<bool> {
                self.write_one((task_id, round, at), |conn, (task_id, round, at)| Box::pin(async move {
                    let n = sqlx::query("UPDATE tasks SET notify_round = $1 + 1, notified_at = $2 WHERE id = $3 AND notify_round = $1")
                        .bind(round)
                        .bind(at)
                        .bind(task_id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    Ok(n == 1)
                }))
                .await
            }

            async fn active_task_counts(&self) -> Result<Vec<(Uuid, i64)>> {
                Ok(sqlx::query_as(
                    "SELECT assigned_agent_id, COUNT(*) FROM tasks WHERE status = 'claimed' AND assigned_agent_id IS NOT NULL \
                     GROUP BY assigned_agent_id",
                )
                .fetch_all(self.reader())
                .await?)
            }

            async fn balances(&self, owner: Uuid) -> Result<Balances> {
                let rows: Vec<(String, i64)> = sqlx::query_as("SELECT kind, balance FROM ledger_accounts WHERE owner_id = $1")
                    .bind(owner)
                    .fetch_all(self.reader())
                    .await?;
                let mut b = Balances::default();
                for (kind, balance) in rows {
                    match kind.as_str() {
                        "available" | "treasury" => b.available = balance,
                        "escrow" => b.escrow = balance,
                        _ => {}
                    }
                }
                b.total_earned = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries \
                     WHERE account_id = $1 AND kind IN ('payout', 'bonus')",
                )
                .bind(account_id(owner, AccountKind::Available))
                .fetch_one(self.reader())
                .await?;
                Ok(b)
            }

            async fn ledger_entries(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE 1 = 1"));
                if let Some(owner) = q.owner {
                    qb.push(" AND account_id IN (SELECT id FROM ledger_accounts WHERE owner_id = ").push_bind(owner).push(")");
                }
                if let Some(task) = q.task_id {
                    qb.push(" AND task_id = ").push_bind(task);
                }
                if let Some(before) = q.before {
                    qb.push(" AND id < ").push_bind(before);
                }
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
                let rows: Vec<LedgerRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn ledger_total(&self) -> Result<i64> {
                Ok(sqlx::query_scalar("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_entries")
                    .fetch_one(self.reader())
                    .await?)
            }

            async fn ledger_mismatches(&self) -> Result<Vec<Uuid>> {
                Ok(sqlx::query_scalar(
                    "SELECT a.id FROM ledger_accounts a WHERE a.balance <> \
                     (SELECT CAST(COALESCE(SUM(e.amount), 0) AS BIGINT) FROM ledger_entries e WHERE e.account_id = a.id)",
                )
                .fetch_all(self.reader())
                .await?)
            }

            async fn grant(&self, to: Uuid, amount: i64, memo: &str, audit: &AuditEntry) -> Result<()> {
                self.write((to, amount, memo.to_owned(), audit.clone()), |mut tx, &(to, amount, ref memo, ref audit)| Box::pin(async move {
                if amount <= 0 {
                    return Err(StoreError::invalid("amount", "must be positive"));
                }
                post_ledger(
                    &mut tx,
                    audit.at,
                    None,
                    memo,
                    &[(account_id(PLATFORM, AccountKind::Treasury), -amount, "grant"), (account_id(to, AccountKind::Available), amount, "grant")],
                )
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
                }))
                .await
            }

            async fn idempotent_response(&self, agent: Uuid, key: &str) -> Result<Option<IdempotentResponse>> {
                let row: Option<(String, i64, String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE agent_id = $1 AND key = $2",
                )
                .bind(agent)
                .bind(key)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(|(request_hash, status, body, created_at)| IdempotentResponse {
                    request_hash,
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                    created_at,
                }))
            }

            async fn save_idempotent_response(&self, agent: Uuid, key: &str, r: &IdempotentResponse) -> Result<bool> {
                self.write_one((agent, key.to_owned(), r.clone()), |conn, (agent, key, r)| Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO idempotency_keys (agent_id, key, request_hash, status, body, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (agent_id, key) DO NOTHING",
                )
                .bind(agent)
                .bind(key)
                .bind(&r.request_hash)
                .bind(i64::from(r.status))
                .bind(&r.body)
                .bind(r.created_at)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(n == 1)
                }))
                .await
            }

            async fn finish_idempotent_response(&self, agent: Uuid, key: &str, status: u16, body: &str) -> Result<()> {
                self.write_one((agent, key.to_owned(), status, body.to_owned()), |conn, (agent, key, status, body)| Box::pin(async move {
                sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE agent_id = $3 AND key = $4 AND status = 0")
                    .bind(i64::from(*status))
                    .bind(body)
                    .bind(agent)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
                }))
                .await
            }

            async fn release_idempotency_key(&self, agent: Uuid, key: &str) -> Result<()> {
                self.write_one((agent, key.to_owned()), |conn, (agent, key)| Box::pin(async move {
                    sqlx::query("DELETE FROM idempotency_keys WHERE agent_id = $1 AND key = $2 AND status = 0")
                        .bind(agent)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }))
                .await
            }

            async fn purge_stale_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64> {
                self.delete_before("DELETE FROM idempotency_keys WHERE status = 0 AND created_at < $1", before).await
            }
        }
        }
    };
}

pub(crate) use impl_sql_store;
