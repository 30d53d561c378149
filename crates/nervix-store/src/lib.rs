//! Nervix storage.
//!
//! One [`Store`] trait, implemented once in SQL (the private `sql` module) and instantiated for two backends:
//! [`SqliteStore`] (the embedded default: one file, WAL, a single writer connection) and
//! [`PgStore`] (several `nervix` nodes sharing one database). The SQL is the same text on both
//! (`$N` placeholders, portable column types); where the databases really differ, the backend
//! supplies the fragment. The conformance suite in `tests/` runs every case against both.
//!
//! Every method that changes state runs in one transaction: callers never see half a write.

pub mod cpu;
mod error;
pub mod model;
mod postgres;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nervix_core::{Level, Role};
use uuid::Uuid;

pub use cpu::WriterCpu;
pub use error::{Conflict, StoreError};
pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Bad signatures after which a challenge is locked for good.
pub const MAX_CHALLENGE_FAILURES: i64 = 5;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://…`) and runs its migrations.
pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, opts).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, opts).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL scheme (expected sqlite:// or postgres://): {}",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// Pool sizing. Background workers get their own small pool so they can never starve the API.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
    /// Where the SQLite writer runs (ignored by PostgreSQL). Off by default: pinning a thread
    /// to a CPU only pays when the rest of the process keeps off that CPU, which is the
    /// caller's decision (`nervix serve` asks for [`WriterCpu::Auto`] and confines itself).
    pub sqlite_writer_cpu: WriterCpu,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
            sqlite_writer_cpu: WriterCpu::Off,
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;
    async fn close(&self);

    // ---- challenges, enrollment, tokens --------------------------------------------------
    async fn insert_challenge(&self, c: &NewChallenge) -> Result<()>;
    /// Stores an enrollment challenge unless `handle` or the challenge's public key is already
    /// enrolled, in one statement; returns the conflict instead when one is.
    async fn insert_enrollment_challenge(
        &self,
        c: &NewChallenge,
        handle: &str,
    ) -> Result<Option<Conflict>>;
    async fn challenge(&self, id: Uuid) -> Result<Option<ChallengeRecord>>;
    /// Counts one bad signature; returns the new failure count.
    async fn record_challenge_failure(&self, id: Uuid) -> Result<i64>;
    /// Consumes an enrollment challenge and creates the agent with its ledger accounts, its first
    /// token and the audit record, all or nothing. A challenge that is no longer usable
    /// (consumed meanwhile, expired, locked) yields `Conflict::ChallengeUsed`.
    async fn complete_enrollment(
        &self,
        challenge_id: Uuid,
        agent: &NewAgent,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<AgentRecord>;
    /// Consumes a login challenge and records the token it buys.
    async fn complete_login(
        &self,
        challenge_id: Uuid,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<()>;
    async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> Result<()>;
    /// What a request bearing token `jti` for `agent_id` may do right now.
    async fn auth_state(&self, jti: Uuid, agent_id: Uuid) -> Result<Option<AuthState>>;
    /// Revokes `jti`; false when it was already revoked or unknown.
    async fn revoke_token(&self, jti: Uuid, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool>;
    /// Revokes `old` and records `new` in one step; false when `old` was no longer live.
    async fn rotate_token(&self, old: Uuid, new: &TokenRecord, audit: &AuditEntry) -> Result<bool>;
    /// Drops challenges that expired before `before`. Returns how many went.
    async fn purge_challenges(&self, before: DateTime<Utc>) -> Result<u64>;

    // ---- agents ---------------------------------------------------------------------------
    async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>>;
    async fn agent_by_handle(&self, handle: &str) -> Result<Option<AgentRecord>>;
    /// Which of `handle` / `public_key` is already enrolled, if any.
    async fn enrollment_conflict(&self, handle: &str, public_key: &str)
        -> Result<Option<Conflict>>;
    async fn list_agents(&self, q: &AgentQuery) -> Result<Vec<AgentRecord>>;
    /// Every agent's matching profile inputs, for warming the in-memory capability index.
    async fn all_agents(&self) -> Result<Vec<AgentRecord>>;
    /// Top agents by reputation (then completed tasks), excluding suspended ones and admins.
    async fn leaderboard(&self, limit: i64) -> Result<Vec<AgentRecord>>;
    async fn update_agent_config(
        &self,
        id: Uuid,
        patch: &AgentConfigPatch,
        audit: &AuditEntry,
    ) -> Result<AgentRecord>;
    async fn set_suspended(
        &self,
        id: Uuid,
        suspended: bool,
        audit: &AuditEntry,
    ) -> Result<AgentRecord>;
    /// Creates the agent if its handle is free (used for the operator's admin identity).
    /// Sets the role of an agent that is not an admin; `None` when there is no such agent.
    async fn set_role(
        &self,
        id: Uuid,
        role: Role,
        audit: &AuditEntry,
    ) -> Result<Option<AgentRecord>>;
    async fn ensure_agent(&self, agent: &NewAgent, audit: &AuditEntry) -> Result<AgentRecord>;
    async fn touch_agent(&self, id: Uuid, at: DateTime<Utc>) -> Result<()>;

    // ---- audit and stats ------------------------------------------------------------------
    async fn append_audit(&self, e: &AuditEntry) -> Result<()>;
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>>;
    async fn stats(&self, online_since: DateTime<Utc>) -> Result<Stats>;

    // ---- tasks, workflows, ledger ---------------------------------------------------------
    /// Escrows the reward from the poster (or the treasury) and creates the tasks of one post:
    /// a single task or a whole workflow, all or nothing. With `save`, the response is stored
    /// under its key in the same transaction; a key already used fails with
    /// `Conflict::IdempotencyKeyUsed` and writes nothing (see [`SaveResponse`]).
    async fn post_tasks(
        &self,
        post: &NewPost,
        save: Option<SaveResponse<Vec<TaskRecord>>>,
    ) -> Result<Vec<TaskRecord>>;
    async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>>;
    async fn tasks_by_ids(&self, ids: &[Uuid]) -> Result<Vec<TaskRecord>>;
    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskRecord>>;
    /// The dependency index rows of a task (the row's own `depends_on` is what renders).
    async fn task_dependencies(&self, id: Uuid) -> Result<Vec<Uuid>>;
    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowRecord>>;
    async fn workflow_tasks(&self, id: Uuid) -> Result<Vec<TaskRecord>>;
    /// The claim: one conditional write. Exactly one of any number of concurrent callers wins.
    async fn claim_task(&self, claim: &ClaimRequest) -> Result<ClaimOutcome>;
    /// Stores a submission and applies its decision (accept → pay, reject → retry or fail),
    /// cascading to dependents, all in one transaction. `save` as for [`Store::post_tasks`].
    async fn submit(
        &self,
        s: &NewSubmission,
        save: Option<SaveResponse<SubmitOutcome>>,
    ) -> Result<SubmitOutcome>;
    async fn submission(&self, id: Uuid) -> Result<Option<SubmissionRecord>>;

    // ---- artifacts (migration 0015) ----
    async fn insert_artifact(&self, a: &NewArtifact) -> Result<ArtifactRecord>;
    async fn artifact(&self, id: Uuid) -> Result<Option<ArtifactRecord>>;
    /// The artifacts a submission references, oldest first.
    async fn submission_artifacts(&self, submission: Uuid) -> Result<Vec<ArtifactRecord>>;
    /// Up to `limit` artifacts created before `before` that no submission references, oldest
    /// first.
    async fn orphan_artifacts(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ArtifactRecord>>;
    /// Deletes the artifact's row if it is still an orphan created before `before`; false when
    /// a submission took it meanwhile (or it is gone). The object is the caller's to delete.
    async fn delete_orphan_artifact(&self, id: Uuid, before: DateTime<Utc>) -> Result<bool>;
    /// The assignee gives the task back (attempt not counted against it).
    async fn release_task(
        &self,
        task_id: Uuid,
        agent_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<TaskRecord>;
    /// Cancels a task and refunds every unsettled escrow; its open dependents are cancelled
    /// (and refunded) with it. Returns the task and the dependents cancelled in cascade.
    async fn cancel_task(
        &self,
        task_id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(TaskRecord, Vec<TaskRecord>)>;
    /// Cancels a workflow: every open task of it, and their open dependents elsewhere. Returns
    /// the workflow and every task whose status changed.
    async fn cancel_workflow(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(WorkflowRecord, Vec<TaskRecord>)>;
    /// Returns tasks whose lease ran out to the pool (or fails them when out of attempts),
    /// naming whose lease ran out on each.
    async fn expire_leases(
        &self,
        now: DateTime<Utc>,
        retry: &RetryPolicy,
        limit: i64,
    ) -> Result<ExpiredLeases>;
    /// Marks overdue tasks `expired` and refunds them.
    async fn expire_deadlines(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TaskRecord>>;
    /// Available tasks due a (re)notification: back-off over, or nobody claimed in the window.
    async fn tasks_to_notify(
        &self,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>>;
    /// Moves a task from notification round `round` to the next one; false when another node
    /// did so first, which makes the widening loop safe to run on every node.
    async fn mark_notified(&self, task_id: Uuid, round: i64, at: DateTime<Utc>) -> Result<bool>;
    /// How many tasks each agent holds (`claimed`), for the matching index.
    async fn active_task_counts(&self) -> Result<Vec<(Uuid, i64)>>;

    async fn balances(&self, owner: Uuid) -> Result<Balances>;
    async fn ledger_entries(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>>;
    /// Sum of every entry of every account: always zero in a healthy ledger.
    async fn ledger_total(&self) -> Result<i64>;
    /// Accounts whose cached balance differs from the sum of their entries (should be none).
    async fn ledger_mismatches(&self) -> Result<Vec<Uuid>>;
    /// Moves money from the treasury to an agent's available balance (operator grant).
    async fn grant(&self, to: Uuid, amount: i64, memo: &str, audit: &AuditEntry) -> Result<()>;

    // ---- economy ----------------------------------------------------------------------------
    /// The bonus pool's balance: what level bonuses can still be paid from.
    async fn bonus_pool(&self) -> Result<i64>;
    /// Moves money from the treasury to the bonus pool (the operator funds it); returns the
    /// pool's new balance.
    async fn fund_bonus_pool(&self, amount: i64, memo: &str, audit: &AuditEntry) -> Result<i64>;
    /// Moves the amount from the agent's available balance to its pending withdrawals and
    /// records the request, in one transaction; `StoreError::InsufficientFunds` when the
    /// balance does not cover it. `save` as for [`Store::post_tasks`].
    async fn request_withdrawal(
        &self,
        w: &NewWithdrawal,
        save: Option<SaveResponse<WithdrawalRecord>>,
    ) -> Result<WithdrawalRecord>;
    /// Decides a pending withdrawal exactly once: approved, the money leaves the platform
    /// (the platform's `withdrawn` account); rejected, it returns to the agent's available
    /// balance. `NotFound`, or `Conflict::InvalidState` when it was decided already.
    async fn decide_withdrawal(
        &self,
        d: &WithdrawalDecision,
        audit: &AuditEntry,
    ) -> Result<WithdrawalRecord>;
    async fn withdrawal(&self, id: Uuid) -> Result<Option<WithdrawalRecord>>;
    async fn withdrawals(&self, q: &WithdrawalQuery) -> Result<Vec<WithdrawalRecord>>;
    /// Agents that may not claim `task` again (released it, lost its lease, were rejected).
    async fn excluded_agents(&self, task: Uuid) -> Result<Vec<Uuid>>;
    /// Recomputes every balance from its entries and checks every transaction, the overdraft
    /// rule, the treasury's uses and the conservation of money, in one read snapshot.
    async fn verify_ledger(&self) -> Result<LedgerReport>;

    // ---- messages and channels --------------------------------------------------------------
    /// Stores a message, in one transaction: to a channel only while the sender is a member
    /// (else `NotFound`, nothing written), checked again by the insert itself. Returns it with
    /// who it is for (the recipient; or the channel's other current members) and, when `m`
    /// carries a frame, each recipient's event of it, stored in the same transaction. `save`
    /// as for [`Store::post_tasks`].
    async fn send_message(
        &self,
        m: &NewMessage,
        save: Option<SaveResponse<SentMessage>>,
    ) -> Result<SentMessage>;
    /// A conversation's messages, newest first (by `created_at`, then id), older than
    /// `q.before`: the direct messages between the viewer and one agent (both ways, nobody
    /// else's), or a channel's, which only a current member may read (`NotFound` otherwise).
    async fn message_history(&self, q: &HistoryQuery) -> Result<Vec<MessageRecord>>;
    /// Creates a channel whose members are its creator and `c.members`, with the audit record.
    async fn create_channel(&self, c: &NewChannel, audit: &AuditEntry) -> Result<ChannelDetail>;
    /// Adds members (bringing back any who left) on behalf of a current member (`NotFound`
    /// for anyone else), within `a.max_members` (`Invalid` on `members` beyond it); the audit
    /// record's details list who was added.
    async fn add_channel_members(
        &self,
        a: &NewMembers,
        audit: &AuditEntry,
    ) -> Result<ChannelDetail>;
    /// `agent` leaves `channel`; `NotFound` when it is not a current member.
    async fn leave_channel(&self, channel: Uuid, agent: Uuid, audit: &AuditEntry) -> Result<()>;
    /// A channel with its members, as `viewer` may see it: `None` unless a current member.
    async fn channel(&self, id: Uuid, viewer: Uuid) -> Result<Option<ChannelDetail>>;
    /// The channels `agent` is a current member of, newest first, before `q.cursor`.
    async fn channels_of(&self, agent: Uuid, q: &PageQuery) -> Result<Vec<ChannelRecord>>;

    /// The response stored for a key by an operation given a [`SaveResponse`], to replay.
    /// Records a peer review; a reviewer's review of a held submission also decides it.
    async fn review(&self, r: &NewReview) -> Result<ReviewOutcome>;
    /// Submissions held for a spot check, oldest first, after `q.cursor`.
    async fn review_queue(&self, q: &PageQuery) -> Result<Vec<SubmissionRecord>>;
    async fn reviews_of(&self, submission: Uuid) -> Result<Vec<ReviewRecord>>;
    /// Accepts on their automated score the held submissions whose review deadline passed.
    async fn expire_reviews(
        &self,
        now: DateTime<Utc>,
        retry: &RetryPolicy,
        limit: i64,
    ) -> Result<Vec<Settled>>;

    /// Agents whose reputation evidence changed since their score was computed.
    async fn stale_reputations(&self, limit: i64) -> Result<Vec<StaleReputation>>;
    async fn reputation_evidence(&self, agent: Uuid) -> Result<EvidenceRecords>;
    /// Records a recomputed score if its evidence is still current: `Some(the level it had)`,
    /// or `None` when newer evidence arrived meanwhile.
    async fn record_reputation(&self, u: &ReputationUpdate) -> Result<Option<Level>>;
    /// Score snapshots, newest first, before `q.cursor`.
    async fn reputation_history(
        &self,
        agent: Uuid,
        q: &PageQuery,
    ) -> Result<Vec<ReputationSnapshot>>;
    /// The agent's submissions with their tasks, newest first, before `q.cursor`.
    async fn work_history(&self, agent: Uuid, q: &PageQuery) -> Result<Vec<HistoryEntry>>;

    // Signed reputation receipts (migration 0014).
    /// Stores receipts in one write; their submissions' receipts are no longer due. A second
    /// receipt for the same submission is ignored: the first stays what is served.
    async fn insert_receipts(&self, rs: &[NewReceipt]) -> Result<()>;
    /// Up to `limit` accepted submissions whose receipt is not issued yet (migration 0016: an
    /// acceptance makes one due, in its own transaction), with what a receipt states of them.
    async fn receipts_due(&self, limit: i64) -> Result<Vec<DueReceipt>>;
    /// Is the receipt of this accepted submission still to be issued?
    async fn receipt_is_due(&self, submission: Uuid) -> Result<bool>;
    /// An agent's receipts, newest first.
    async fn receipts_of(&self, agent: Uuid, q: &PageQuery) -> Result<Vec<ReceiptRecord>>;
    /// The receipt of a task's accepted work, if any.
    async fn receipt_for_task(&self, task: Uuid) -> Result<Option<ReceiptRecord>>;
    async fn receipt_summary(&self, agent: Uuid) -> Result<ReceiptSummary>;
    /// Every key that signed a receipt (they stay in the JWKS: see `nervix admin rotate-signing-key`).
    async fn receipt_kids(&self) -> Result<Vec<String>>;
    /// The accepted submission of a task (its completed work), if any.
    async fn accepted_submission(&self, task: Uuid) -> Result<Option<SubmissionRecord>>;

    async fn idempotent_response(
        &self,
        scope: &IdempotencyScope,
    ) -> Result<Option<IdempotentResponse>>;
    /// Drops responses stored before `before` (their keys may then be used again).
    async fn purge_idempotent_responses(&self, before: DateTime<Utc>) -> Result<u64>;

    // ---- real time: per-agent event stream, notifications, announcements ------------------
    /// Stores frames for agents in one transaction, each under the next `seq` of its agent
    /// (an agent's events numbered in the order given, without gaps). On PostgreSQL one
    /// agent's events commit in `seq` order.
    async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<StoredEvent>>;
    /// Up to `limit` of the agent's stored events with a `seq` above `after`, in `seq` order.
    async fn events_since(&self, agent: Uuid, after: i64, limit: i64) -> Result<Vec<StoredEvent>>;
    /// The last `seq` allocated to the agent (0: none yet).
    async fn last_event_seq(&self, agent: Uuid) -> Result<i64>;
    /// Drops up to `limit` events stored before `before`; returns how many went. Numbering
    /// continues where it was.
    async fn prune_events(&self, before: DateTime<Utc>, limit: i64) -> Result<u64>;
    /// Stores notifications and, in the same transaction, each as an event of its agent (type
    /// `notification`, data [`NewNotification::frame_data`]). Returns the events.
    async fn create_notifications(&self, ns: &[NewNotification]) -> Result<Vec<StoredEvent>>;
    /// One agent's notifications, newest first, after `q.cursor`.
    async fn notifications(&self, q: &NotificationQuery) -> Result<Vec<NotificationRecord>>;
    /// Marks unread notifications of `agent` read (ids of other agents' notifications match
    /// nothing); returns how many changed.
    async fn mark_notifications_read(
        &self,
        agent: Uuid,
        which: &MarkRead,
        at: DateTime<Utc>,
    ) -> Result<u64>;
    /// Drops up to `limit` notifications read before `read_before`; returns how many went.
    async fn prune_notifications(&self, read_before: DateTime<Utc>, limit: i64) -> Result<u64>;
    /// Stores an announcement, fans it out as an `announcement` event (data
    /// [`NewAnnouncement::frame_data`]) to every agent enrolled at the time, and records the
    /// audit entry, in one transaction. Returns each agent's `seq` of the event.
    async fn create_announcement(
        &self,
        a: &NewAnnouncement,
        audit: &AuditEntry,
    ) -> Result<Vec<(Uuid, i64)>>;

    // ---- token-signing keys ----------------------------------------------------------------
    /// Every token-signing key, oldest first. Every node verifies with all of them and signs
    /// with the newest.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Stores the keys whose kid is not stored yet (a kid already there keeps its row), in one
    /// transaction; returns how many were new. With `only_if_none`, stores nothing when any
    /// key is stored already (the first start's import or first key).
    async fn insert_signing_keys(
        &self,
        keys: &[SigningKeyRecord],
        only_if_none: bool,
    ) -> Result<u64>;
    /// Replaces the secrets of keys still stored in the clear (`KeySeal::None`) by their sealed
    /// form, in one transaction; a key sealed meanwhile (by another node) is left as it is.
    /// Returns how many were sealed here.
    async fn seal_signing_keys(&self, sealed: &[SigningKeyRecord]) -> Result<u64>;
    /// Deletes the keys a newer key replaced before `retired_before` (no unexpired token can
    /// name them) and that signed no receipt; returns their kids. The newest key always stays.
    async fn prune_signing_keys(&self, retired_before: DateTime<Utc>) -> Result<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinning the SQLite writer is opt-in: a library user (or a test) that takes the defaults
    /// leaves every thread to the OS.
    #[test]
    fn default_options_do_not_pin_the_writer() {
        assert_eq!(ConnectOptions::default().sqlite_writer_cpu, WriterCpu::Off);
    }
}
