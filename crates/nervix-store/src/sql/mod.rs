//! What both backends' SQL shares: the write transaction a body sees ([`Tx`]), the retry of
//! transient conflicts ([`retry_transient`]), row shapes ([`rows`]) and statements used by
//! more than one operation.
//!
//! The SQL implementation of [`crate::Store`] itself lives in `sql/impl/`, which is not a
//! module of this one: each backend mounts it as a child module of its own, next to the type
//! aliases it is written against (see `sql/impl/mod.rs`). Backend differences are confined to
//! the migrations and to how a backend runs a write: each supplies `write` (a transaction,
//! retried on transient conflicts) and `write_one` (a single self-contained statement) with
//! the same signature. On SQLite both run on the dedicated writer thread; on PostgreSQL, on a
//! pooled connection.

pub(crate) mod rows;

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::Result;

/// A write transaction as the body of a `write` sees it: a transaction of its own, or a part
/// of the SQLite writer's commit group. Either way the body ends it in one of three ways:
///
/// - [`Tx::commit`]: keep what it wrote;
/// - [`Tx::refuse`]: an expected business outcome (a refusal: not the assignee, no such task,
///   challenge already used, …) reached **without having written anything**;
/// - dropping it (returning early, usually with an error): undo what it wrote.
///
/// On a transaction of its own, refusing is the same as dropping: nothing to keep. The
/// difference matters in a SQLite commit group, where other writes share the transaction:
/// a committed or refused part leaves the group clean and it commits; a dropped part makes the
/// writer undo the whole group and run each of its writes again alone (`sqlite::writer`),
/// because the group cannot take back only that part's statements.
///
/// **Refusing is only safe when nothing was written.** A body may call `refuse` when every
/// statement it ran read, or matched no row, or failed with a constraint error (unique,
/// foreign key, check, NOT NULL, or a trigger's `RAISE(ABORT)`): SQLite undoes such a
/// statement by itself and leaves the transaction as it was. Other errors (I/O, busy, full,
/// interrupted) may roll back the whole transaction and must never be refused. Debug builds
/// check every refusal in a group against SQLite's count of changed rows and fail the write
/// loudly when it changed any.
pub(crate) enum Tx<'c, DB: sqlx::Database> {
    Own(sqlx::Transaction<'c, DB>),
    /// Inside the SQLite writer's group transaction: `commit` and `refuse` record how the part
    /// ended in `ending`; the group commits when every part ended one of those two ways.
    Grouped {
        conn: &'c mut DB::Connection,
        ending: &'c Ending,
    },
}

impl<DB: sqlx::Database> Tx<'_, DB> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Own(tx) => tx.commit().await,
            Tx::Grouped { ending, .. } => {
                ending.set(Ending::COMMITTED);
                Ok(())
            }
        }
    }

    /// Ends the transaction keeping nothing, for a business refusal reached before anything
    /// was written (see the type's docs), and passes `outcome` through: the caller returns
    /// `tx.refuse(Ok(SubmitOutcome::NotAssignee))` or `tx.refuse(Err(StoreError::…))`.
    pub(crate) fn refuse<T>(self, outcome: T) -> T {
        match self {
            // Dropped: rolled back (there is nothing to roll back).
            Tx::Own(_) => {}
            Tx::Grouped { ending, .. } => ending.set(Ending::REFUSED),
        }
        outcome
    }
}

/// How a write body ended its part of a SQLite commit group ([`Tx::Grouped`]).
#[derive(Debug)]
pub(crate) struct Ending(AtomicU8);

impl Ending {
    /// Neither committed nor refused (yet): a body that returns like this spoils the group.
    const OPEN: u8 = 0;
    const COMMITTED: u8 = 1;
    const REFUSED: u8 = 2;

    pub(crate) fn new() -> Self {
        Ending(AtomicU8::new(Self::OPEN))
    }

    fn set(&self, to: u8) {
        self.0.store(to, Ordering::Release);
    }

    /// The body committed its part: keep it.
    pub(crate) fn committed(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::COMMITTED
    }

    /// The body refused without writing: nothing to keep, nothing to undo.
    pub(crate) fn refused(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::REFUSED
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
/// every claimer of an available task would then lose. An agent that released the task, lost
/// its lease on it or had a submission for it rejected (`task_exclusions`, written in the
/// transaction that took the task from it) never matches.
pub(crate) const CLAIM: &str = "UPDATE tasks SET status = 'claimed', assigned_agent_id = $1, \
    lease_expires_at = $2, updated_at = $3 \
    WHERE id = $4 AND status = 'available' AND (retry_at IS NULL OR retry_at <= $3) \
    AND EXISTS (SELECT 1 FROM agents WHERE id = $1 AND suspended = FALSE AND available = TRUE) \
    AND (reserved_for IS NULL OR reserved_for = $1) \
    AND NOT EXISTS (SELECT 1 FROM task_exclusions WHERE task_id = $4 AND agent_id = $1)";

/// Runs a write transaction again when the database aborted it to break a deadlock or a
/// serialization conflict (PostgreSQL under contention; SQLite busy), up to four more times
/// with a growing pause. `attempt` gets `ctx` (what it opens its transaction on, and whatever
/// else it borrows) and must start a fresh transaction each time, so nothing of an aborted
/// attempt remains.
pub(crate) async fn retry_transient<C, T>(
    ctx: &mut C,
    mut attempt: impl for<'a> FnMut(&'a mut C) -> BoxFuture<'a, Result<T>>,
) -> Result<T> {
    let mut retries = 0u32;
    loop {
        match attempt(ctx).await {
            Err(e) if e.is_transient() && retries < 4 => {
                retries += 1;
                tracing::debug!(error = %e, retries, "transient database conflict; retrying");
                tokio::time::sleep(Duration::from_millis(2u64 << retries)).await;
            }
            other => return other,
        }
    }
}
