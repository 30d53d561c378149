//! Records the store reads and writes. Field types are domain types where one exists;
//! conversion from rows happens in one place (`sql::rows`).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nervix_core::matching::AgentProfile;
use nervix_core::notice::NotificationKind;
use nervix_core::reputation::{Level, Reputation};
use nervix_core::{Complexity, Role, TaskKind, TaskStatus};
use serde_json::Value;
use uuid::Uuid;

/// The platform's own ledger owner (treasury and the escrow of admin-posted tasks).
pub const PLATFORM: Uuid = Uuid::nil();

nervix_core::wire_enum!(
    /// What a challenge proves when signed: a new enrollment, or a login.
    ChallengePurpose {
        Enroll = "enroll",
        Auth = "auth",
    }
);

#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub id: Uuid,
    pub purpose: ChallengePurpose,
    /// The agent logging in (auth challenges only).
    pub agent_id: Option<Uuid>,
    pub public_key: String,
    pub challenge: String,
    /// The pending enrollment request (enroll challenges only).
    pub payload: Option<Value>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ChallengeRecord {
    pub id: Uuid,
    pub purpose: ChallengePurpose,
    pub agent_id: Option<Uuid>,
    pub public_key: String,
    pub challenge: String,
    pub payload: Option<Value>,
    pub failures: i64,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub id: Uuid,
    pub handle: String,
    pub name: String,
    pub public_key: String,
    pub encryption_public_key: Option<String>,
    pub capabilities: Vec<String>,
    pub metadata: Value,
    pub max_concurrent_tasks: i64,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub id: Uuid,
    pub handle: String,
    pub name: String,
    pub public_key: String,
    pub encryption_public_key: Option<String>,
    pub capabilities: Vec<String>,
    pub metadata: Value,
    pub max_concurrent_tasks: i64,
    pub available: bool,
    pub role: Role,
    pub suspended: bool,
    /// Reputation in hundredths (5000 = 50.00), and its three layers.
    pub reputation: i64,
    pub rep_automated: i64,
    pub rep_success: i64,
    pub rep_peer: i64,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
    /// Tasks the agent holds (`claimed`), counted by the database as claims come and go.
    pub active_tasks: i64,
    /// The most tasks the agent's level lets it hold at once, written with its reputation.
    pub level_max_tasks: i64,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AgentRecord {
    /// How many tasks the agent may hold at once: its own setting, capped by its level (the
    /// database's claim check takes the same minimum).
    pub fn capacity(&self) -> i64 {
        self.max_concurrent_tasks.min(self.level_max_tasks)
    }

    /// The agent as matching and the claim's eligibility check see it: one conversion for
    /// both, so they cannot disagree about who may take a task. `online` is the caller's
    /// judgement (matching: seen within the online window; a claimant: it is asking now).
    pub fn profile(&self, online: bool) -> AgentProfile {
        // Eligibility binary-searches the capabilities: sorted, whatever order was stored.
        let mut capabilities = self.capabilities.clone();
        capabilities.sort_unstable();
        capabilities.dedup();
        let decided = self.tasks_completed + self.tasks_failed;
        AgentProfile {
            id: self.id,
            capabilities,
            reputation: Reputation::from_hundredths(self.reputation),
            completed_tasks: self.tasks_completed,
            online,
            available: self.available,
            suspended: self.suspended,
            active_tasks: u32::try_from(self.active_tasks).unwrap_or(u32::MAX),
            max_concurrent_tasks: u32::try_from(self.capacity()).unwrap_or(0),
            recent_success_permille: if decided == 0 {
                500
            } else {
                u32::try_from(self.tasks_completed * 1000 / decided).unwrap_or(500)
            },
        }
    }
}

/// A validated change to an agent's own settings. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AgentConfigPatch {
    pub name: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub metadata: Option<Value>,
    /// `Some(None)` clears the key.
    pub encryption_public_key: Option<Option<String>>,
    pub max_concurrent_tasks: Option<i64>,
    pub available: Option<bool>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    pub capability: Option<String>,
    pub level: Option<nervix_core::Level>,
    /// `Some(true)`: seen since `online_since`; `Some(false)`: not.
    pub online: Option<bool>,
    pub online_since: DateTime<Utc>,
    /// A case-insensitive part of the handle or the name (ASCII case only on SQLite).
    pub search: Option<String>,
    /// Keyset pagination: ids are UUIDv7, so id order is creation order.
    pub before: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub jti: Uuid,
    pub agent_id: Uuid,
    pub kid: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    pub handle: String,
    pub role: Role,
    pub suspended: bool,
    pub revoked: bool,
}

/// One security-relevant action. Never put a secret in `details`.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_handle: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_handle: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    pub details: Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub actor_id: Option<Uuid>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub agents: i64,
    pub agents_online: i64,
    pub tasks_total: i64,
    pub tasks_open: i64,
    pub tasks_completed: i64,
    pub workflows: i64,
    pub paid_out_cents: i64,
}

// ---- tasks -------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub min_reputation: i64,
    pub reward_cents: i64,
    pub complexity: Complexity,
    pub kind: TaskKind,
    pub output_schema: Option<Value>,
    pub language: Option<String>,
    /// Text and markdown tasks: the fewest words an answer may have; `None` for other kinds.
    pub min_words: Option<i64>,
    pub deadline: DateTime<Utc>,
    /// Upstream tasks: existing ids, or ids of tasks earlier in the same post.
    pub depends_on: Vec<Uuid>,
    pub workflow_key: Option<String>,
    pub max_attempts: i64,
}

#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub id: Uuid,
    pub name: String,
}

/// One `POST /v1/tasks` or `POST /v1/workflows`. Tasks are in dependency order.
#[derive(Debug, Clone)]
pub struct NewPost {
    pub poster: Uuid,
    /// Admins post from the platform treasury; everyone else from their own balance.
    pub from_treasury: bool,
    pub workflow: Option<NewWorkflow>,
    pub tasks: Vec<NewTask>,
    pub at: DateTime<Utc>,
    pub audit: Option<AuditEntry>,
    /// The posting node publishes the first matching round of its available tasks itself, so
    /// they are stored as already in round 1: the widening loop takes over only after the
    /// window, and nobody else repeats round 0.
    pub notifies_first_round: bool,
    /// Every task of the post is offered to this agent only (see `TaskRecord::reserved_for`).
    pub reserved_for: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub min_reputation: i64,
    pub reward_cents: i64,
    pub complexity: Complexity,
    pub kind: TaskKind,
    pub output_schema: Option<Value>,
    pub language: Option<String>,
    /// Text and markdown tasks: the fewest words an answer may have; `None` for other kinds.
    pub min_words: Option<i64>,
    pub deadline: DateTime<Utc>,
    pub status: TaskStatus,
    pub workflow_id: Option<Uuid>,
    pub workflow_key: Option<String>,
    pub posted_by: Uuid,
    pub funded_by_treasury: bool,
    pub assigned_agent_id: Option<Uuid>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub notify_round: i64,
    pub notified_at: Option<DateTime<Utc>>,
    pub settled: bool,
    /// Upstream tasks, sorted (fixed at posting).
    pub depends_on: Vec<Uuid>,
    /// How many tasks depend on this one (grows as dependents are posted).
    pub dependents: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The only agent this task is offered to and may be claimed by (posted at that agent's
    /// A2A interface); `None`: open to every eligible agent.
    pub reserved_for: Option<Uuid>,
}

impl TaskRecord {
    /// Who funded the escrow: the poster, or the platform for treasury-funded tasks.
    pub fn funder(&self) -> Uuid {
        if self.funded_by_treasury {
            PLATFORM
        } else {
            self.posted_by
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub capability: Option<String>,
    pub complexity: Option<Complexity>,
    pub posted_by: Option<Uuid>,
    pub assigned_to: Option<Uuid>,
    /// Only tasks this agent may claim now (capabilities, level, reputation, not its own,
    /// not in retry back-off). Capacity is not a property of the task and is left out.
    pub eligible_for: Option<EligibilityFilter>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct EligibilityFilter {
    pub agent_id: Uuid,
    pub reputation: i64,
    pub complexities: Vec<Complexity>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    pub id: Uuid,
    pub name: String,
    pub status: WorkflowStatus,
    pub posted_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

nervix_core::wire_enum!(WorkflowStatus {
    Active = "active",
    Completed = "completed",
    Failed = "failed",
    Cancelled = "cancelled",
});

/// What a pass of the lease reaper changed.
#[derive(Debug, Clone, Default)]
pub struct ExpiredLeases {
    /// Every task whose status changed: the tasks taken back (to the pool, or failed when out
    /// of attempts) and the dependents cancelled with those that failed.
    pub changed: Vec<TaskRecord>,
    /// `(task, agent)`: whose lease ran out on which task. The task record no longer names
    /// the agent once it is back in the pool.
    pub lost: Vec<(Uuid, Uuid)>,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub task_id: Uuid,
    pub agent_id: Uuid,
    /// Requested lease; the store caps it at the deadline.
    pub lease_seconds: i64,
    pub at: DateTime<Utc>,
}

// Returned once per call and matched right away; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    Claimed(TaskRecord),
    /// Someone else holds (or finished) it.
    AlreadyClaimed,
    /// Blocked, in retry back-off, or over.
    NotAvailable(TaskStatus),
    NotEligible(nervix_core::matching::Ineligible),
    /// The agent lost this task before (see [`ExclusionReason`]) and may not claim it again.
    Excluded(ExclusionReason),
    /// The task is offered to another agent only (`TaskRecord::reserved_for`).
    Reserved,
    AtCapacity,
    TaskNotFound,
    AgentNotFound,
}

/// When a rejected or abandoned task is offered again: `base · 2^(attempts-1)`, capped.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base_seconds: i64,
    pub max_seconds: i64,
}

impl RetryPolicy {
    pub fn delay_seconds(&self, attempts: i64) -> i64 {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.base_seconds
            .saturating_mul(1i64 << exp)
            .min(self.max_seconds)
            .max(0)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_seconds: 5,
            max_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject,
    /// Held for a spot check: unpaid until a reviewer decides or `review_deadline` passes,
    /// when it is accepted on its automated score.
    Hold {
        review_deadline: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
pub struct NewSubmission {
    pub id: Uuid,
    pub task_id: Uuid,
    pub agent_id: Uuid,
    pub content: Value,
    pub notes: Option<String>,
    pub quality_score: u8,
    pub checks: Value,
    pub decision: Decision,
    pub feedback: Option<String>,
    pub retry: RetryPolicy,
    pub at: DateTime<Utc>,
    /// Artifacts the submission references: each must be the submitter's upload for this
    /// task and not referenced yet, or nothing is written.
    pub artifacts: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionRecord {
    pub id: Uuid,
    pub task_id: Uuid,
    pub agent_id: Uuid,
    pub content: Value,
    pub notes: Option<String>,
    pub quality_score: i64,
    pub checks: Value,
    pub status: SubmissionStatus,
    pub feedback: Option<String>,
    pub payout_cents: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// While held for a spot check: when it is accepted on its automated score.
    pub review_deadline: Option<DateTime<Utc>>,
    /// The score it was paid on or rejected with: a deciding reviewer's, else the automated one.
    pub final_score: Option<i64>,
}

nervix_core::wire_enum!(SubmissionStatus {
    Accepted = "accepted",
    Rejected = "rejected",
    PendingReview = "pending_review",
});

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    Done {
        submission: SubmissionRecord,
        task: TaskRecord,
        /// Tasks whose last dependency just completed (now `available`).
        unblocked: Vec<TaskRecord>,
        /// Tasks cancelled because this one failed for good.
        cancelled: Vec<TaskRecord>,
    },
    TaskNotFound,
    /// The caller is not the task's current assignee, or the task is not `claimed`.
    NotAssignee,
}

/// A submission decided (accepted or rejected) after it was held, and what its decision moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub submission: SubmissionRecord,
    pub task: TaskRecord,
    pub unblocked: Vec<TaskRecord>,
    pub cancelled: Vec<TaskRecord>,
}

// ---- reviews and reputation -------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct NewReview {
    pub id: Uuid,
    pub submission_id: Uuid,
    pub reviewer_id: Uuid,
    pub score: u8,
    pub feedback: String,
    /// Whether the reviewer may decide a held submission (reviewers and admins).
    pub may_decide: bool,
    /// A deciding review at or above this score accepts, below it rejects.
    pub accept_threshold: u8,
    pub retry: RetryPolicy,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRecord {
    pub id: Uuid,
    pub submission_id: Uuid,
    pub reviewer_id: Uuid,
    /// The agent whose work was reviewed.
    pub subject_id: Uuid,
    pub score: i64,
    pub feedback: String,
    /// The decision this review made on a held submission, if it made one.
    pub decision: Option<SubmissionStatus>,
    pub created_at: DateTime<Utc>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewOutcome {
    Done {
        review: ReviewRecord,
        settled: Option<Settled>,
    },
    SubmissionNotFound,
    /// The reviewer did the work under review.
    OwnSubmission,
    /// This reviewer already reviewed this submission.
    AlreadyReviewed,
}

/// Agents whose reputation evidence changed since their score was last computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleReputation {
    pub agent_id: Uuid,
    /// The evidence version to compute; the result is recorded only if it is still current.
    pub version: i64,
    /// Read with the version: the level depends on it.
    pub tasks_completed: i64,
}

/// What an agent's reputation is computed from, as stored (newest first, bounded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvidenceRecords {
    /// Work the agent did, one entry per decided submission, release or lost lease.
    pub work: Vec<WorkRecord>,
    /// Tasks the agent posted and others did: who and when (for reciprocity).
    pub posted_work: Vec<(Uuid, DateTime<Utc>)>,
    /// Reviews of the agent's work, with each reviewer's current score.
    pub reviews: Vec<ReviewEvidence>,
    /// Reviews the agent gave: whose work and when (for reciprocity).
    pub reviews_given: Vec<(Uuid, DateTime<Utc>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkRecord {
    pub task_id: Uuid,
    /// `None` for tasks the operator posted (from the treasury): no counterpart.
    pub poster: Option<Uuid>,
    pub at: DateTime<Utc>,
    pub outcome: WorkOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkOutcome {
    Accepted { score: u8, on_time: bool },
    Rejected { score: u8 },
    Released,
    LeaseLost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReviewEvidence {
    pub reviewer: Uuid,
    /// The reviewer's current score; the operator's admin identity counts as 100.00.
    pub reviewer_score: i64,
    pub score: u8,
    pub at: DateTime<Utc>,
}

/// A recomputed reputation, recorded only while `version` is the agent's current evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ReputationUpdate {
    /// The snapshot's id.
    pub id: Uuid,
    pub agent_id: Uuid,
    pub version: i64,
    pub score: i64,
    pub automated: i64,
    pub success: i64,
    pub peer: i64,
    pub level: Level,
    pub level_max_tasks: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReputationSnapshot {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub at: DateTime<Utc>,
    pub score: i64,
    pub automated: i64,
    pub success: i64,
    pub peer: i64,
    pub level: Level,
}

/// One entry of an agent's public work history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub submission_id: Uuid,
    pub task_id: Uuid,
    pub task_title: String,
    pub quality_score: i64,
    pub final_score: Option<i64>,
    pub reward_cents: i64,
    pub payout_cents: Option<i64>,
    pub status: SubmissionStatus,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Exclusive cursor: the id of the last item of the previous page (ids are UUIDv7, so
    /// in time order).
    pub cursor: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balances {
    /// Spendable now: excludes escrow and pending withdrawals. For the platform: the treasury.
    pub available: i64,
    pub escrow: i64,
    /// Requested withdrawals not yet decided.
    pub pending_withdrawal: i64,
    /// Payouts and level bonuses received.
    pub total_earned: i64,
    /// Withdrawals paid out.
    pub total_withdrawn: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub id: Uuid,
    pub txn_id: Uuid,
    pub account_id: Uuid,
    pub amount: i64,
    pub kind: String,
    pub task_id: Option<Uuid>,
    pub memo: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct LedgerQuery {
    pub owner: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Deterministic ledger account id of `(owner, kind)`, so postings need no lookup.
pub fn account_id(owner: Uuid, kind: AccountKind) -> Uuid {
    Uuid::new_v5(&owner, kind.as_str().as_bytes())
}

nervix_core::wire_enum!(
    /// The accounts every owner has. `Treasury` belongs to the platform and is the only
    /// account allowed below zero: it is where money comes from. The platform's `BonusPool`
    /// pays level bonuses (only the operator funds it, from the treasury); an agent's
    /// `PendingWithdrawal` holds requested withdrawals until an admin decides them; the
    /// platform's `Withdrawn` records money paid out of the platform.
    AccountKind {
        Available = "available",
        Escrow = "escrow",
        Treasury = "treasury",
        BonusPool = "bonus_pool",
        PendingWithdrawal = "pending_withdrawal",
        Withdrawn = "withdrawn",
    }
);

nervix_core::wire_enum!(
    /// Why an agent may not claim a task again (`task_exclusions.reason`).
    ExclusionReason {
        Released = "released",
        LeaseLost = "lease_lost",
        Rejected = "rejected",
    }
);

impl ExclusionReason {
    /// The claim's refusal, in words.
    pub fn detail(self) -> &'static str {
        match self {
            ExclusionReason::Released => "you released this task and may not claim it again",
            ExclusionReason::LeaseLost => {
                "your lease on this task ran out and you may not claim it again"
            }
            ExclusionReason::Rejected => {
                "a submission of yours for this task was rejected and you may not claim it again"
            }
        }
    }
}

// ---- withdrawals, verification -------------------------------------------------------------

nervix_core::wire_enum!(WithdrawalStatus {
    Pending = "pending",
    Paid = "paid",
    Rejected = "rejected",
});

#[derive(Debug, Clone)]
pub struct NewWithdrawal {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub amount_cents: i64,
    pub destination: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRecord {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub amount_cents: i64,
    pub destination: String,
    pub status: WithdrawalStatus,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Uuid>,
}

#[derive(Debug, Clone, Default)]
pub struct WithdrawalQuery {
    pub agent_id: Option<Uuid>,
    pub status: Option<WithdrawalStatus>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// An admin's decision on a pending withdrawal.
#[derive(Debug, Clone)]
pub struct WithdrawalDecision {
    pub id: Uuid,
    /// true: paid out; false: released back to the agent's available balance.
    pub approve: bool,
    pub by: Uuid,
    pub at: DateTime<Utc>,
}

/// Totals of one account kind, over every owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindTotal {
    pub kind: String,
    pub accounts: i64,
    pub balance: i64,
}

/// An account whose cached balance is not the sum of its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceMismatch {
    pub account_id: Uuid,
    pub owner_id: Uuid,
    pub kind: String,
    pub cached: i64,
    pub computed: i64,
}

/// What [`crate::Store::verify_ledger`] found. Clean when every list is empty and the
/// conservation sums agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerReport {
    pub accounts: i64,
    pub entries: i64,
    pub transactions: i64,
    pub per_kind: Vec<KindTotal>,
    pub mismatched_balances: Vec<BalanceMismatch>,
    /// Transactions whose entries do not sum to zero: (txn id, sum).
    pub unbalanced_transactions: Vec<(Uuid, i64)>,
    /// Accounts below zero other than the treasury: (account id, kind, balance).
    pub overdrawn_accounts: Vec<(Uuid, String, i64)>,
    /// Entries that took money out of the treasury other than by a grant, an admin's posting
    /// or a bonus pool funding (or put it back by a refund): (entry id, kind).
    pub treasury_misuse: Vec<(Uuid, String)>,
    /// Sum of every balance owned by an agent (available, escrow, pending withdrawal).
    pub agents_total: i64,
    /// What the operator put in and has not taken back: −treasury, less what the platform still
    /// holds (its escrow, the bonus pool) and what has left it (withdrawn).
    pub operator_put_in: i64,
}

impl LedgerReport {
    /// Every problem found, in words; empty when the ledger is sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.mismatched_balances {
            out.push(format!(
                "account {} ({} of {}): cached balance {} but its entries sum to {}",
                m.account_id, m.kind, m.owner_id, m.cached, m.computed
            ));
        }
        for (txn, sum) in &self.unbalanced_transactions {
            out.push(format!("transaction {txn}: entries sum to {sum}, not 0"));
        }
        for (id, kind, balance) in &self.overdrawn_accounts {
            out.push(format!("account {id} ({kind}) is below zero: {balance}"));
        }
        for (id, kind) in &self.treasury_misuse {
            out.push(format!("entry {id}: the treasury paid a {kind:?} entry"));
        }
        if self.agents_total > self.operator_put_in {
            out.push(format!(
                "conservation: agents hold {} cents but the operator put in only {}",
                self.agents_total, self.operator_put_in
            ));
        }
        out
    }

    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }
}

// ---- real time: the per-agent event stream, notifications, announcements ------------------

/// A frame for one agent, to store under that agent's next sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub agent_id: Uuid,
    /// The frame's `type` (`task_update`, `notification`, …).
    pub kind: String,
    /// The frame's `data`.
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

/// A stored frame: `seq` numbers an agent's events 1, 2, 3, … with no gap, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub agent_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    /// What a program needs to act on it (task and submission ids, scores, …).
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

impl NewNotification {
    /// The `data` of the `notification` frame that carries it (stored with it as an event).
    pub fn frame_data(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "created_at": self.created_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One agent's notifications, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationQuery {
    pub agent_id: Uuid,
    pub unread_only: bool,
    /// Exclusive cursor: the id of the last notification of the previous page.
    pub cursor: Option<Uuid>,
    pub limit: i64,
}

/// Which of an agent's notifications to mark read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkRead {
    Ids(Vec<Uuid>),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAnnouncement {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl NewAnnouncement {
    /// The `data` of the `announcement` frame every agent is sent.
    pub fn frame_data(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "created_at": self.created_at,
        })
    }
}

// ---- idempotency -------------------------------------------------------------------------

/// What an `Idempotency-Key` is scoped by: the caller, the HTTP method and the path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyScope {
    pub agent_id: Uuid,
    pub method: String,
    pub path: String,
    pub key: String,
}

/// Renders the outcome of an operation as the HTTP response to store for its key: status and
/// body, or `None` when the outcome is not a success (nothing is stored, the key stays free).
pub type RenderResponse<T> = Arc<dyn Fn(&T) -> Option<(u16, String)> + Send + Sync>;

/// Asks an operation to store its response under a key, in the transaction of its work: the
/// key is claimed first (a key already used makes the operation write nothing and fail with
/// `Conflict::IdempotencyKeyUsed`), and the rendered response is stored before the commit.
pub struct SaveResponse<T> {
    pub scope: IdempotencyScope,
    /// Identifies the request body, so that a replay can tell a reused key from a retry.
    pub request_hash: String,
    pub created_at: DateTime<Utc>,
    pub render: RenderResponse<T>,
}

impl<T> Clone for SaveResponse<T> {
    fn clone(&self) -> Self {
        SaveResponse {
            scope: self.scope.clone(),
            request_hash: self.request_hash.clone(),
            created_at: self.created_at,
            render: Arc::clone(&self.render),
        }
    }
}

impl<T> fmt::Debug for SaveResponse<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaveResponse")
            .field("scope", &self.scope)
            .field("request_hash", &self.request_hash)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A response stored for a key, to replay to a retry of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

// ---- messages and channels -----------------------------------------------------------------

/// Where a stored message goes: one agent, or a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTo {
    Agent(Uuid),
    Channel(Uuid),
}

/// The namespace of direct conversations' ids (UUIDv5 of the two agents' ids, smaller first).
const DIRECT_CONVERSATIONS: Uuid = Uuid::from_u128(0x6e65_7276_6978_4d5f_8000_6469_7265_6374);

/// The id of the direct conversation between `a` and `b`: the same whichever of them asks.
pub fn direct_conversation(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(lo.as_bytes());
    name[16..].copy_from_slice(hi.as_bytes());
    Uuid::new_v5(&DIRECT_CONVERSATIONS, &name)
}

impl MessageTo {
    /// The conversation a message to this target from `sender` belongs to.
    pub fn conversation(&self, sender: Uuid) -> Uuid {
        match *self {
            MessageTo::Agent(recipient) => direct_conversation(sender, recipient),
            MessageTo::Channel(channel) => channel,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub sender_id: Uuid,
    pub to: MessageTo,
    pub encrypted: bool,
    /// Stored and relayed as sent.
    pub payload: Vec<u8>,
    pub nonce: Option<Vec<u8>>,
    pub at: DateTime<Utc>,
    /// The frame each recipient is sent, stored in the send's own transaction as the
    /// recipient's next event: delivery then waits for no second write, and a message is
    /// never kept without its events (nor the other way round).
    pub frame: Option<EventFrame>,
}

/// A frame's `type` and `data`, to be stored as an event of each agent it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    pub kind: String,
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: Uuid,
    pub sender_id: Uuid,
    pub sender_handle: String,
    /// Set for a direct message.
    pub recipient_id: Option<Uuid>,
    pub recipient_handle: Option<String>,
    /// Set for a channel message.
    pub channel_id: Option<Uuid>,
    pub encrypted: bool,
    pub payload: Vec<u8>,
    pub nonce: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// A stored message and who it is for: the recipient of a direct message, or the channel's
/// members (but the sender) when it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message: MessageRecord,
    pub recipients: Vec<Uuid>,
    /// The recipients' events of [`NewMessage::frame`], in `recipients` order (none without
    /// a frame), committed with the message.
    pub events: Vec<StoredEvent>,
}

/// Whose messages a history lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// The direct messages between the viewer and this agent, both ways.
    With(Uuid),
    /// A channel's messages (the viewer must be a member).
    Channel(Uuid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub viewer: Uuid,
    pub conversation: Conversation,
    /// Exclusive cursor: a message of this conversation; the page holds older ones.
    pub before: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct NewChannel {
    pub id: Uuid,
    pub name: String,
    pub created_by: Uuid,
    /// Besides the creator, who is always a member.
    pub members: Vec<Uuid>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewMembers {
    pub channel_id: Uuid,
    /// Who adds them: must be a member.
    pub by: Uuid,
    pub members: Vec<Uuid>,
    /// How many members the channel may have at once.
    pub max_members: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: Uuid,
    pub name: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    /// Current members.
    pub member_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMember {
    pub agent_id: Uuid,
    pub handle: String,
    pub joined_at: DateTime<Utc>,
}

/// A channel with its current members, oldest member first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDetail {
    pub channel: ChannelRecord,
    pub members: Vec<ChannelMember>,
}

/// How a stored token-signing key's secret is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySeal {
    /// The 32-byte Ed25519 seed itself.
    None,
    /// The seed sealed with AES-256-GCM under the operator's master key: 12-byte nonce, then
    /// the ciphertext and its 16-byte tag; the kid is the associated data.
    Aes256Gcm,
}

impl KeySeal {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySeal::None => "none",
            KeySeal::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl std::str::FromStr for KeySeal {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "none" => Ok(KeySeal::None),
            "aes-256-gcm" => Ok(KeySeal::Aes256Gcm),
            _ => Err(()),
        }
    }
}

/// A token-signing key as the database keeps it (the server seals and unseals `secret`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub seal: KeySeal,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("seal", &self.seal)
            .finish_non_exhaustive()
    }
}

/// A file uploaded for a task (see migration 0015), before any submission references it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewArtifact {
    pub id: Uuid,
    pub task_id: Uuid,
    pub uploaded_by: Uuid,
    pub filename: Option<String>,
    pub content_type: String,
    pub size_bytes: i64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Where the content is in object storage.
    pub object_key: String,
    /// The automated checks run on the file (`[CheckResult]`).
    pub checks: Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRecord {
    pub id: Uuid,
    pub task_id: Uuid,
    pub uploaded_by: Uuid,
    /// The submission that references the file; `None` while it is unreferenced.
    pub submission_id: Option<Uuid>,
    pub filename: Option<String>,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub object_key: String,
    pub checks: Value,
    pub created_at: DateTime<Utc>,
}

/// A signed reputation receipt as issued (a compact JWS; its payload is what it attests).
#[derive(Debug, Clone, PartialEq)]
pub struct NewReceipt {
    pub id: Uuid,
    pub submission_id: Uuid,
    pub task_id: Uuid,
    pub agent_id: Uuid,
    /// The signing key's id (JWKS `kid`).
    pub kid: String,
    pub jws: String,
    pub created_at: DateTime<Utc>,
}

pub type ReceiptRecord = NewReceipt;

/// An accepted submission whose receipt is still to be issued, with what its receipt states.
#[derive(Debug, Clone, PartialEq)]
pub struct DueReceipt {
    pub submission_id: Uuid,
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub task_title: String,
    pub posted_by: Uuid,
    /// `None` when the poster is gone from the directory.
    pub poster_handle: Option<String>,
    pub quality_score: i64,
    pub final_score: Option<i64>,
    /// The submission's checks as stored (`[{name, passed, score, details}]`).
    pub checks: Value,
    pub payout_cents: Option<i64>,
    pub decided_at: DateTime<Utc>,
}

/// How many receipts an agent holds, and when the newest was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptSummary {
    pub count: i64,
    pub latest: Option<DateTime<Utc>>,
}
