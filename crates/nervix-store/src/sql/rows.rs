//! Row shapes shared by both backends and their conversion into records.

use chrono::{DateTime, Utc};
use nervix_core::{Complexity, Role, TaskKind, TaskStatus};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::model::*;
use crate::StoreError;

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} {s:?}")))
}

pub(crate) const AGENT_COLUMNS: &str = "id, handle, name, public_key, encryption_public_key, \
    capabilities, metadata, max_concurrent_tasks, available, role, suspended, reputation, \
    rep_automated, rep_success, rep_peer, tasks_completed, tasks_failed, active_tasks, \
    level_max_tasks, last_seen_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(crate) struct AgentRow {
    id: Uuid,
    handle: String,
    name: String,
    public_key: String,
    encryption_public_key: Option<String>,
    capabilities: Json<Vec<String>>,
    metadata: Json<Value>,
    max_concurrent_tasks: i64,
    available: bool,
    role: String,
    suspended: bool,
    reputation: i64,
    rep_automated: i64,
    rep_success: i64,
    rep_peer: i64,
    tasks_completed: i64,
    tasks_failed: i64,
    active_tasks: i64,
    level_max_tasks: i64,
    last_seen_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;

    fn try_from(r: AgentRow) -> Result<Self, StoreError> {
        Ok(AgentRecord {
            id: r.id,
            handle: r.handle,
            name: r.name,
            public_key: r.public_key,
            encryption_public_key: r.encryption_public_key,
            capabilities: r.capabilities.0,
            metadata: r.metadata.0,
            max_concurrent_tasks: r.max_concurrent_tasks,
            available: r.available,
            role: parse::<Role>("role", &r.role)?,
            suspended: r.suspended,
            reputation: r.reputation,
            rep_automated: r.rep_automated,
            rep_success: r.rep_success,
            rep_peer: r.rep_peer,
            tasks_completed: r.tasks_completed,
            tasks_failed: r.tasks_failed,
            active_tasks: r.active_tasks,
            level_max_tasks: r.level_max_tasks,
            last_seen_at: r.last_seen_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(crate) const CHALLENGE_COLUMNS: &str =
    "id, purpose, agent_id, public_key, challenge, payload, failures, expires_at, consumed_at, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct ChallengeRow {
    id: Uuid,
    purpose: String,
    agent_id: Option<Uuid>,
    public_key: String,
    challenge: String,
    payload: Option<Json<Value>>,
    failures: i64,
    expires_at: DateTime<Utc>,
    consumed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<ChallengeRow> for ChallengeRecord {
    type Error = StoreError;

    fn try_from(r: ChallengeRow) -> Result<Self, StoreError> {
        let purpose = parse::<ChallengePurpose>("purpose", &r.purpose)?;
        Ok(ChallengeRecord {
            id: r.id,
            purpose,
            agent_id: r.agent_id,
            public_key: r.public_key,
            challenge: r.challenge,
            payload: r.payload.map(|j| j.0),
            failures: r.failures,
            expires_at: r.expires_at,
            consumed_at: r.consumed_at,
            created_at: r.created_at,
        })
    }
}

pub(crate) const AUDIT_COLUMNS: &str =
    "id, at, actor_id, actor_handle, action, target, client_ip, details";

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: Uuid,
    at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_handle: Option<String>,
    action: String,
    target: Option<String>,
    client_ip: Option<String>,
    details: Json<Value>,
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        AuditRecord {
            id: r.id,
            at: r.at,
            actor_id: r.actor_id,
            actor_handle: r.actor_handle,
            action: r.action,
            target: r.target,
            client_ip: r.client_ip,
            details: r.details.0,
        }
    }
}

pub(crate) const TASK_COLUMNS: &str = "id, title, description, capabilities, min_reputation, \
    reward_cents, complexity, kind, output_schema, language, min_words, deadline, status, \
    workflow_id, workflow_key, posted_by, funded_by_treasury, assigned_agent_id, attempts, max_attempts, \
    lease_expires_at, retry_at, notify_round, notified_at, settled, depends_on, dependents, \
    created_at, updated_at, reserved_for";

#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: Uuid,
    title: String,
    description: String,
    capabilities: Json<Vec<String>>,
    min_reputation: i64,
    reward_cents: i64,
    complexity: String,
    kind: String,
    output_schema: Option<Json<Value>>,
    language: Option<String>,
    min_words: Option<i64>,
    deadline: DateTime<Utc>,
    status: String,
    workflow_id: Option<Uuid>,
    workflow_key: Option<String>,
    posted_by: Uuid,
    funded_by_treasury: bool,
    assigned_agent_id: Option<Uuid>,
    attempts: i64,
    max_attempts: i64,
    lease_expires_at: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
    notify_round: i64,
    notified_at: Option<DateTime<Utc>>,
    settled: bool,
    depends_on: Json<Vec<Uuid>>,
    dependents: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    reserved_for: Option<Uuid>,
}

impl TryFrom<TaskRow> for TaskRecord {
    type Error = StoreError;

    fn try_from(r: TaskRow) -> Result<Self, StoreError> {
        Ok(TaskRecord {
            id: r.id,
            title: r.title,
            description: r.description,
            capabilities: r.capabilities.0,
            min_reputation: r.min_reputation,
            reward_cents: r.reward_cents,
            complexity: parse::<Complexity>("complexity", &r.complexity)?,
            kind: parse::<TaskKind>("kind", &r.kind)?,
            output_schema: r.output_schema.map(|j| j.0),
            language: r.language,
            min_words: r.min_words,
            deadline: r.deadline,
            status: parse::<TaskStatus>("status", &r.status)?,
            workflow_id: r.workflow_id,
            workflow_key: r.workflow_key,
            posted_by: r.posted_by,
            funded_by_treasury: r.funded_by_treasury,
            assigned_agent_id: r.assigned_agent_id,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            lease_expires_at: r.lease_expires_at,
            retry_at: r.retry_at,
            notify_round: r.notify_round,
            notified_at: r.notified_at,
            settled: r.settled,
            depends_on: r.depends_on.0,
            dependents: r.dependents,
            created_at: r.created_at,
            updated_at: r.updated_at,
            reserved_for: r.reserved_for,
        })
    }
}

pub(crate) const WORKFLOW_COLUMNS: &str = "id, name, status, posted_by, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(crate) struct WorkflowRow {
    id: Uuid,
    name: String,
    status: String,
    posted_by: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<WorkflowRow> for WorkflowRecord {
    type Error = StoreError;

    fn try_from(r: WorkflowRow) -> Result<Self, StoreError> {
        Ok(WorkflowRecord {
            id: r.id,
            name: r.name,
            status: parse::<WorkflowStatus>("status", &r.status)?,
            posted_by: r.posted_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(crate) const SUBMISSION_COLUMNS: &str =
    "id, task_id, agent_id, content, notes, quality_score, \
    checks, status, feedback, payout_cents, created_at, decided_at, review_deadline, final_score";

#[derive(sqlx::FromRow)]
pub(crate) struct SubmissionRow {
    id: Uuid,
    task_id: Uuid,
    agent_id: Uuid,
    content: Json<Value>,
    notes: Option<String>,
    quality_score: i64,
    checks: Json<Value>,
    status: String,
    feedback: Option<String>,
    payout_cents: Option<i64>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    review_deadline: Option<DateTime<Utc>>,
    final_score: Option<i64>,
}

impl TryFrom<SubmissionRow> for SubmissionRecord {
    type Error = StoreError;

    fn try_from(r: SubmissionRow) -> Result<Self, StoreError> {
        Ok(SubmissionRecord {
            id: r.id,
            task_id: r.task_id,
            agent_id: r.agent_id,
            content: r.content.0,
            notes: r.notes,
            quality_score: r.quality_score,
            checks: r.checks.0,
            status: parse::<SubmissionStatus>("status", &r.status)?,
            feedback: r.feedback,
            payout_cents: r.payout_cents,
            created_at: r.created_at,
            decided_at: r.decided_at,
            review_deadline: r.review_deadline,
            final_score: r.final_score,
        })
    }
}

pub(crate) const LEDGER_COLUMNS: &str =
    "id, txn_id, account_id, amount, kind, task_id, memo, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct LedgerRow {
    id: Uuid,
    txn_id: Uuid,
    account_id: Uuid,
    amount: i64,
    kind: String,
    task_id: Option<Uuid>,
    memo: String,
    created_at: DateTime<Utc>,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(r: LedgerRow) -> Self {
        LedgerEntry {
            id: r.id,
            txn_id: r.txn_id,
            account_id: r.account_id,
            amount: r.amount,
            kind: r.kind,
            task_id: r.task_id,
            memo: r.memo,
            created_at: r.created_at,
        }
    }
}

pub(crate) fn collect<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

pub(crate) const WITHDRAWAL_COLUMNS: &str =
    "id, agent_id, amount_cents, destination, status, created_at, decided_at, decided_by";

#[derive(sqlx::FromRow)]
pub(crate) struct WithdrawalRow {
    id: Uuid,
    agent_id: Uuid,
    amount_cents: i64,
    destination: String,
    status: String,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    decided_by: Option<Uuid>,
}

impl TryFrom<WithdrawalRow> for WithdrawalRecord {
    type Error = StoreError;

    fn try_from(r: WithdrawalRow) -> Result<Self, StoreError> {
        Ok(WithdrawalRecord {
            id: r.id,
            agent_id: r.agent_id,
            amount_cents: r.amount_cents,
            destination: r.destination,
            status: parse("withdrawal status", &r.status)?,
            created_at: r.created_at,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
        })
    }
}

pub(crate) const EVENT_COLUMNS: &str = "agent_id, seq, kind, data, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    agent_id: Uuid,
    seq: i64,
    kind: String,
    data: Json<Value>,
    created_at: DateTime<Utc>,
}

impl From<EventRow> for StoredEvent {
    fn from(r: EventRow) -> Self {
        StoredEvent {
            agent_id: r.agent_id,
            seq: r.seq,
            kind: r.kind,
            data: r.data.0,
            created_at: r.created_at,
        }
    }
}

/// A message with its sender's and recipient's handles: `m` is `messages`, `s` the sender's
/// agent row, `r` the recipient's (left-joined: channel messages have none).
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.sender_id, s.handle AS sender_handle, \
    m.recipient_id, r.handle AS recipient_handle, m.channel_id, m.encrypted, m.payload, m.nonce, \
    m.created_at";

/// `FROM` clause for [`MESSAGE_COLUMNS`].
pub(crate) const MESSAGE_FROM: &str = "messages m JOIN agents s ON s.id = m.sender_id \
    LEFT JOIN agents r ON r.id = m.recipient_id";

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: Uuid,
    sender_id: Uuid,
    sender_handle: String,
    recipient_id: Option<Uuid>,
    recipient_handle: Option<String>,
    channel_id: Option<Uuid>,
    encrypted: bool,
    payload: Vec<u8>,
    nonce: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
}

impl From<MessageRow> for MessageRecord {
    fn from(r: MessageRow) -> Self {
        MessageRecord {
            id: r.id,
            sender_id: r.sender_id,
            sender_handle: r.sender_handle,
            recipient_id: r.recipient_id,
            recipient_handle: r.recipient_handle,
            channel_id: r.channel_id,
            encrypted: r.encrypted,
            payload: r.payload,
            nonce: r.nonce,
            created_at: r.created_at,
        }
    }
}

pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, agent_id, kind, title, body, data, read_at, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct NotificationRow {
    id: Uuid,
    agent_id: Uuid,
    kind: String,
    title: String,
    body: String,
    data: Json<Value>,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<NotificationRow> for NotificationRecord {
    type Error = StoreError;

    fn try_from(r: NotificationRow) -> Result<Self, StoreError> {
        Ok(NotificationRecord {
            id: r.id,
            agent_id: r.agent_id,
            kind: parse("notification kind", &r.kind)?,
            title: r.title,
            body: r.body,
            data: r.data.0,
            read_at: r.read_at,
            created_at: r.created_at,
        })
    }
}

/// A channel with its count of current members: `c` is `channels`.
pub(crate) const CHANNEL_COLUMNS: &str = "c.id, c.name, c.created_by, c.created_at, \
    (SELECT COUNT(*) FROM channel_members cm WHERE cm.channel_id = c.id AND cm.left_at IS NULL) \
    AS member_count";

#[derive(sqlx::FromRow)]
pub(crate) struct ChannelRow {
    id: Uuid,
    name: String,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    member_count: i64,
}

impl From<ChannelRow> for ChannelRecord {
    fn from(r: ChannelRow) -> Self {
        ChannelRecord {
            id: r.id,
            name: r.name,
            created_by: r.created_by,
            created_at: r.created_at,
            member_count: r.member_count,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ChannelMemberRow {
    agent_id: Uuid,
    handle: String,
    joined_at: DateTime<Utc>,
}

impl From<ChannelMemberRow> for ChannelMember {
    fn from(r: ChannelMemberRow) -> Self {
        ChannelMember {
            agent_id: r.agent_id,
            handle: r.handle,
            joined_at: r.joined_at,
        }
    }
}

pub(crate) const ARTIFACT_COLUMNS: &str = "id, task_id, uploaded_by, submission_id, filename, \
    content_type, size_bytes, sha256, object_key, checks, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct ArtifactRow {
    id: Uuid,
    task_id: Uuid,
    uploaded_by: Uuid,
    submission_id: Option<Uuid>,
    filename: Option<String>,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    object_key: String,
    checks: Json<Value>,
    created_at: DateTime<Utc>,
}

impl From<ArtifactRow> for ArtifactRecord {
    fn from(r: ArtifactRow) -> Self {
        ArtifactRecord {
            id: r.id,
            task_id: r.task_id,
            uploaded_by: r.uploaded_by,
            submission_id: r.submission_id,
            filename: r.filename,
            content_type: r.content_type,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            object_key: r.object_key,
            checks: r.checks.0,
            created_at: r.created_at,
        }
    }
}
