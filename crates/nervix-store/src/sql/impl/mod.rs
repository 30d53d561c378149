//! The one SQL implementation of [`Store`], mounted once per backend.
//!
//! These files are not a module of `sql`: each backend mounts them as a child module of its
//! own (`#[path = "../sql/impl/mod.rs"] mod sql_impl;` in `sqlite/mod.rs`, and likewise in
//! `postgres.rs`), next to two type aliases:
//!
//! ```text
//! type Db = sqlx::Sqlite;      // or sqlx::Postgres
//! type Backend = SqliteStore;  // or PgStore
//! ```
//!
//! so the code below is compiled twice, once against each database, from one text. (sqlx has
//! no trait for "a database whose types include Uuid, DateTime and Json" short of pages of
//! where-clauses on every function; mounting the same files twice gets the same effect with
//! ordinary, concrete code that rustfmt formats and rust-analyzer follows.) `Backend` supplies
//! `reader()` (the read pool), `write` (a transaction, retried on transient conflicts) and
//! `write_one` (one self-contained statement), with the same signatures on both backends.
//!
//! Each area is a file: `auth` (challenges, enrollment, tokens), `agents`, `tasks` (posting,
//! listing, notification rounds), `claims` (claim, submit, release), `lifecycle` (ending,
//! retrying and expiring tasks), `workflows` (workflows and the cascade along dependencies),
//! `ledger` (postings, balances, grants), `economy` (bonus pool, withdrawals, re-claim
//! exclusions, ledger verification), `idempotency` (responses stored with the work they
//! answer), `reviews` (peer reviews and the spot checks they decide), `reputation` (evidence,
//! recorded scores, histories), `events` (the per-agent event stream, notifications,
//! announcements), `signing_keys` (the token-signing keys every node shares), `messages`
//! (direct and channel messages, channels and their members), `artifacts` (uploaded files'
//! metadata; the submit links them) and `housekeeping` (audit, stats, purges). Every store
//! operation runs in a `tracing` span named `store.<operation>`
//! (level debug); on SQLite the span follows the write onto the writer thread.
//!
//! The database keeps the ledger's invariants (migration 0003): inserting an entry applies it
//! to its account's cached balance, an overdraft aborts the statement, entries cannot be
//! changed. It also keeps the capability index tables in step with the `capabilities` columns,
//! and each agent's count of claimed tasks, refusing a claim beyond its capacity.

mod agents;
mod artifacts;
mod auth;
mod claims;
mod economy;
mod events;
mod housekeeping;
mod idempotency;
mod ledger;
mod lifecycle;
mod messages;
mod receipts;
mod reputation;
mod reviews;
mod signing_keys;
mod tasks;
mod workflows;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nervix_core::{Level, Role};
use uuid::Uuid;

use super::{Backend, Db};
use crate::model::*;
use crate::{Conflict, Result, Store};

pub(super) use ledger::ensure_platform_accounts;

/// The backend's connection type, what write bodies run their statements on.
type Conn = <Db as sqlx::Database>::Connection;

/// Task statuses from which a task can still be finished (completed, failed, cancelled, …).
const OPEN_STATUSES: &str = "('blocked', 'available', 'claimed')";

#[async_trait]
impl Store for Backend {
    fn backend(&self) -> &'static str {
        Self::BACKEND
    }

    async fn ping(&self) -> Result<()> {
        housekeeping::ping(self).await
    }

    async fn close(&self) {
        self.close_pools().await;
    }

    async fn insert_challenge(&self, c: &NewChallenge) -> Result<()> {
        auth::insert_challenge(self, c).await
    }

    async fn insert_enrollment_challenge(
        &self,
        c: &NewChallenge,
        handle: &str,
    ) -> Result<Option<Conflict>> {
        auth::insert_enrollment_challenge(self, c, handle).await
    }

    async fn challenge(&self, id: Uuid) -> Result<Option<ChallengeRecord>> {
        auth::challenge(self, id).await
    }

    async fn record_challenge_failure(&self, id: Uuid) -> Result<i64> {
        auth::record_challenge_failure(self, id).await
    }

    async fn complete_enrollment(
        &self,
        challenge_id: Uuid,
        agent: &NewAgent,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<AgentRecord> {
        auth::complete_enrollment(self, challenge_id, agent, token, audit).await
    }

    async fn complete_login(
        &self,
        challenge_id: Uuid,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<()> {
        auth::complete_login(self, challenge_id, token, audit).await
    }

    async fn insert_token(&self, token: &TokenRecord, audit: &AuditEntry) -> Result<()> {
        auth::insert_token(self, token, audit).await
    }

    async fn auth_state(&self, jti: Uuid, agent_id: Uuid) -> Result<Option<AuthState>> {
        auth::auth_state(self, jti, agent_id).await
    }

    async fn revoke_token(&self, jti: Uuid, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool> {
        auth::revoke_token(self, jti, at, audit).await
    }

    async fn rotate_token(&self, old: Uuid, new: &TokenRecord, audit: &AuditEntry) -> Result<bool> {
        auth::rotate_token(self, old, new, audit).await
    }

    async fn purge_challenges(&self, before: DateTime<Utc>) -> Result<u64> {
        housekeeping::purge_challenges(self, before).await
    }

    async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>> {
        agents::agent(self, id).await
    }

    async fn agent_by_handle(&self, handle: &str) -> Result<Option<AgentRecord>> {
        agents::agent_by_handle(self, handle).await
    }

    async fn enrollment_conflict(
        &self,
        handle: &str,
        public_key: &str,
    ) -> Result<Option<Conflict>> {
        agents::enrollment_conflict(self, handle, public_key).await
    }

    async fn list_agents(&self, q: &AgentQuery) -> Result<Vec<AgentRecord>> {
        agents::list_agents(self, q).await
    }

    async fn all_agents(&self) -> Result<Vec<AgentRecord>> {
        agents::all_agents(self).await
    }

    async fn leaderboard(&self, limit: i64) -> Result<Vec<AgentRecord>> {
        agents::leaderboard(self, limit).await
    }

    async fn update_agent_config(
        &self,
        id: Uuid,
        patch: &AgentConfigPatch,
        audit: &AuditEntry,
    ) -> Result<AgentRecord> {
        agents::update_agent_config(self, id, patch, audit).await
    }

    async fn set_suspended(
        &self,
        id: Uuid,
        suspended: bool,
        audit: &AuditEntry,
    ) -> Result<AgentRecord> {
        agents::set_suspended(self, id, suspended, audit).await
    }

    async fn set_role(
        &self,
        id: Uuid,
        role: Role,
        audit: &AuditEntry,
    ) -> Result<Option<AgentRecord>> {
        agents::set_role(self, id, role, audit).await
    }

    async fn ensure_agent(&self, agent: &NewAgent, audit: &AuditEntry) -> Result<AgentRecord> {
        agents::ensure_agent(self, agent, audit).await
    }

    async fn touch_agent(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        agents::touch_agent(self, id, at).await
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
        housekeeping::append_audit(self, e).await
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        housekeeping::list_audit(self, q).await
    }

    async fn stats(&self, online_since: DateTime<Utc>) -> Result<Stats> {
        housekeeping::stats(self, online_since).await
    }

    async fn post_tasks(
        &self,
        post: &NewPost,
        save: Option<SaveResponse<Vec<TaskRecord>>>,
    ) -> Result<Vec<TaskRecord>> {
        tasks::post_tasks(self, post, save).await
    }

    async fn task(&self, id: Uuid) -> Result<Option<TaskRecord>> {
        tasks::task(self, id).await
    }

    async fn tasks_by_ids(&self, ids: &[Uuid]) -> Result<Vec<TaskRecord>> {
        tasks::tasks_by_ids(self, ids).await
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskRecord>> {
        tasks::list_tasks(self, q).await
    }

    async fn task_dependencies(&self, id: Uuid) -> Result<Vec<Uuid>> {
        tasks::task_dependencies(self, id).await
    }

    async fn workflow(&self, id: Uuid) -> Result<Option<WorkflowRecord>> {
        workflows::workflow(self, id).await
    }

    async fn workflow_tasks(&self, id: Uuid) -> Result<Vec<TaskRecord>> {
        workflows::workflow_tasks(self, id).await
    }

    async fn claim_task(&self, claim: &ClaimRequest) -> Result<ClaimOutcome> {
        claims::claim_task(self, claim).await
    }

    async fn submit(
        &self,
        s: &NewSubmission,
        save: Option<SaveResponse<SubmitOutcome>>,
    ) -> Result<SubmitOutcome> {
        claims::submit(self, s, save).await
    }

    async fn submission(&self, id: Uuid) -> Result<Option<SubmissionRecord>> {
        claims::submission(self, id).await
    }

    async fn insert_artifact(&self, a: &NewArtifact) -> Result<ArtifactRecord> {
        artifacts::insert_artifact(self, a).await
    }

    async fn artifact(&self, id: Uuid) -> Result<Option<ArtifactRecord>> {
        artifacts::artifact(self, id).await
    }

    async fn submission_artifacts(&self, submission: Uuid) -> Result<Vec<ArtifactRecord>> {
        artifacts::submission_artifacts(self, submission).await
    }

    async fn orphan_artifacts(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ArtifactRecord>> {
        artifacts::orphan_artifacts(self, before, limit).await
    }

    async fn delete_orphan_artifact(&self, id: Uuid, before: DateTime<Utc>) -> Result<bool> {
        artifacts::delete_orphan_artifact(self, id, before).await
    }

    async fn release_task(
        &self,
        task_id: Uuid,
        agent_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<TaskRecord> {
        claims::release_task(self, task_id, agent_id, at).await
    }

    async fn cancel_task(
        &self,
        task_id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(TaskRecord, Vec<TaskRecord>)> {
        lifecycle::cancel_task(self, task_id, at, audit).await
    }

    async fn cancel_workflow(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(WorkflowRecord, Vec<TaskRecord>)> {
        workflows::cancel_workflow(self, id, at, audit).await
    }

    async fn expire_leases(
        &self,
        now: DateTime<Utc>,
        retry: &RetryPolicy,
        limit: i64,
    ) -> Result<ExpiredLeases> {
        lifecycle::expire_leases(self, now, retry, limit).await
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TaskRecord>> {
        lifecycle::expire_deadlines(self, now, limit).await
    }

    async fn tasks_to_notify(
        &self,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>> {
        tasks::tasks_to_notify(self, now, window_start, limit).await
    }

    async fn mark_notified(&self, task_id: Uuid, round: i64, at: DateTime<Utc>) -> Result<bool> {
        tasks::mark_notified(self, task_id, round, at).await
    }

    async fn active_task_counts(&self) -> Result<Vec<(Uuid, i64)>> {
        tasks::active_task_counts(self).await
    }

    async fn balances(&self, owner: Uuid) -> Result<Balances> {
        ledger::balances(self, owner).await
    }

    async fn ledger_entries(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
        ledger::ledger_entries(self, q).await
    }

    async fn ledger_total(&self) -> Result<i64> {
        ledger::ledger_total(self).await
    }

    async fn ledger_mismatches(&self) -> Result<Vec<Uuid>> {
        ledger::ledger_mismatches(self).await
    }

    async fn grant(&self, to: Uuid, amount: i64, memo: &str, audit: &AuditEntry) -> Result<()> {
        ledger::grant(self, to, amount, memo, audit).await
    }

    async fn review(&self, r: &NewReview) -> Result<ReviewOutcome> {
        reviews::review(self, r).await
    }

    async fn review_queue(&self, q: &PageQuery) -> Result<Vec<SubmissionRecord>> {
        reviews::review_queue(self, q).await
    }

    async fn reviews_of(&self, submission: Uuid) -> Result<Vec<ReviewRecord>> {
        reviews::reviews_of(self, submission).await
    }

    async fn expire_reviews(
        &self,
        now: DateTime<Utc>,
        retry: &RetryPolicy,
        limit: i64,
    ) -> Result<Vec<Settled>> {
        reviews::expire_reviews(self, now, retry, limit).await
    }

    async fn stale_reputations(&self, limit: i64) -> Result<Vec<StaleReputation>> {
        reputation::stale_reputations(self, limit).await
    }

    async fn reputation_evidence(&self, agent: Uuid) -> Result<EvidenceRecords> {
        reputation::reputation_evidence(self, agent).await
    }

    async fn record_reputation(&self, u: &ReputationUpdate) -> Result<Option<Level>> {
        reputation::record_reputation(self, u).await
    }

    async fn reputation_history(
        &self,
        agent: Uuid,
        q: &PageQuery,
    ) -> Result<Vec<ReputationSnapshot>> {
        reputation::reputation_history(self, agent, q).await
    }

    async fn work_history(&self, agent: Uuid, q: &PageQuery) -> Result<Vec<HistoryEntry>> {
        reputation::work_history(self, agent, q).await
    }

    async fn insert_receipts(&self, rs: &[NewReceipt]) -> Result<()> {
        receipts::insert_receipts(self, rs).await
    }

    async fn receipts_due(&self, limit: i64) -> Result<Vec<DueReceipt>> {
        receipts::receipts_due(self, limit).await
    }

    async fn receipt_is_due(&self, submission: Uuid) -> Result<bool> {
        receipts::receipt_is_due(self, submission).await
    }

    async fn receipts_of(&self, agent: Uuid, q: &PageQuery) -> Result<Vec<ReceiptRecord>> {
        receipts::receipts_of(self, agent, q).await
    }

    async fn receipt_for_task(&self, task: Uuid) -> Result<Option<ReceiptRecord>> {
        receipts::receipt_for_task(self, task).await
    }

    async fn receipt_summary(&self, agent: Uuid) -> Result<ReceiptSummary> {
        receipts::receipt_summary(self, agent).await
    }

    async fn receipt_kids(&self) -> Result<Vec<String>> {
        receipts::receipt_kids(self).await
    }

    async fn accepted_submission(&self, task: Uuid) -> Result<Option<SubmissionRecord>> {
        receipts::accepted_submission(self, task).await
    }

    async fn bonus_pool(&self) -> Result<i64> {
        ledger::bonus_pool(self).await
    }

    async fn fund_bonus_pool(&self, amount: i64, memo: &str, audit: &AuditEntry) -> Result<i64> {
        economy::fund_bonus_pool(self, amount, memo, audit).await
    }

    async fn request_withdrawal(
        &self,
        w: &NewWithdrawal,
        save: Option<SaveResponse<WithdrawalRecord>>,
    ) -> Result<WithdrawalRecord> {
        economy::request_withdrawal(self, w, save).await
    }

    async fn decide_withdrawal(
        &self,
        d: &WithdrawalDecision,
        audit: &AuditEntry,
    ) -> Result<WithdrawalRecord> {
        economy::decide_withdrawal(self, d, audit).await
    }

    async fn withdrawal(&self, id: Uuid) -> Result<Option<WithdrawalRecord>> {
        economy::withdrawal(self, id).await
    }

    async fn withdrawals(&self, q: &WithdrawalQuery) -> Result<Vec<WithdrawalRecord>> {
        economy::withdrawals(self, q).await
    }

    async fn excluded_agents(&self, task: Uuid) -> Result<Vec<Uuid>> {
        economy::excluded_agents(self, task).await
    }

    async fn verify_ledger(&self) -> Result<LedgerReport> {
        economy::verify_ledger(self).await
    }

    async fn send_message(
        &self,
        m: &NewMessage,
        save: Option<SaveResponse<SentMessage>>,
    ) -> Result<SentMessage> {
        messages::send_message(self, m, save).await
    }

    async fn message_history(&self, q: &HistoryQuery) -> Result<Vec<MessageRecord>> {
        messages::message_history(self, q).await
    }

    async fn create_channel(&self, c: &NewChannel, audit: &AuditEntry) -> Result<ChannelDetail> {
        messages::create_channel(self, c, audit).await
    }

    async fn add_channel_members(
        &self,
        a: &NewMembers,
        audit: &AuditEntry,
    ) -> Result<ChannelDetail> {
        messages::add_channel_members(self, a, audit).await
    }

    async fn leave_channel(&self, channel: Uuid, agent: Uuid, audit: &AuditEntry) -> Result<()> {
        messages::leave_channel(self, channel, agent, audit).await
    }

    async fn channel(&self, id: Uuid, viewer: Uuid) -> Result<Option<ChannelDetail>> {
        messages::channel(self, id, viewer).await
    }

    async fn channels_of(&self, agent: Uuid, q: &PageQuery) -> Result<Vec<ChannelRecord>> {
        messages::channels_of(self, agent, q).await
    }

    async fn idempotent_response(
        &self,
        scope: &IdempotencyScope,
    ) -> Result<Option<IdempotentResponse>> {
        idempotency::idempotent_response(self, scope).await
    }

    async fn purge_idempotent_responses(&self, before: DateTime<Utc>) -> Result<u64> {
        housekeeping::purge_idempotent_responses(self, before).await
    }

    async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<StoredEvent>> {
        events::append_events(self, events).await
    }

    async fn events_since(&self, agent: Uuid, after: i64, limit: i64) -> Result<Vec<StoredEvent>> {
        events::events_since(self, agent, after, limit).await
    }

    async fn last_event_seq(&self, agent: Uuid) -> Result<i64> {
        events::last_event_seq(self, agent).await
    }

    async fn prune_events(&self, before: DateTime<Utc>, limit: i64) -> Result<u64> {
        events::prune_events(self, before, limit).await
    }

    async fn create_notifications(&self, ns: &[NewNotification]) -> Result<Vec<StoredEvent>> {
        events::create_notifications(self, ns).await
    }

    async fn notifications(&self, q: &NotificationQuery) -> Result<Vec<NotificationRecord>> {
        events::notifications(self, q).await
    }

    async fn mark_notifications_read(
        &self,
        agent: Uuid,
        which: &MarkRead,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        events::mark_notifications_read(self, agent, which, at).await
    }

    async fn prune_notifications(&self, read_before: DateTime<Utc>, limit: i64) -> Result<u64> {
        events::prune_notifications(self, read_before, limit).await
    }

    async fn create_announcement(
        &self,
        a: &NewAnnouncement,
        audit: &AuditEntry,
    ) -> Result<Vec<(Uuid, i64)>> {
        events::create_announcement(self, a, audit).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        signing_keys::signing_keys(self).await
    }

    async fn insert_signing_keys(
        &self,
        keys: &[SigningKeyRecord],
        only_if_none: bool,
    ) -> Result<u64> {
        signing_keys::insert_signing_keys(self, keys, only_if_none).await
    }

    async fn seal_signing_keys(&self, sealed: &[SigningKeyRecord]) -> Result<u64> {
        signing_keys::seal_signing_keys(self, sealed).await
    }

    async fn prune_signing_keys(&self, retired_before: DateTime<Utc>) -> Result<Vec<String>> {
        signing_keys::prune_signing_keys(self, retired_before).await
    }
}
