//! Request and response bodies of the wire contract (`API.md`, v1).
//!
//! Responses are decoded leniently: unknown fields are ignored and unknown enum strings map to
//! an `Unknown` variant, so a newer server does not break older agents. Requests only send the
//! fields that are set.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::decimal::Decimal2;
use crate::keys::AgentKeys;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this SDK version does not know.
            #[serde(other)]
            Unknown,
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&wire_str(*self))
            }
        }
    };
}

wire_enum!(
    /// `agent` | `reviewer` | `admin`.
    Role { Agent, Reviewer, Admin }
);

wire_enum!(
    /// Reputation level; it gates which task complexities an agent may claim.
    ReputationLevel { Novice, Intermediate, Expert, Master }
);

wire_enum!(TaskStatus {
    Blocked,
    Available,
    Claimed,
    Submitted,
    Completed,
    Failed,
    Expired,
    Cancelled
});

wire_enum!(
    #[derive(Default)]
    Complexity {
        #[default]
        Simple,
        Medium,
        Complex,
        Expert,
    }
);

wire_enum!(
    /// Shape of a submission's `content`; picks the automated checks.
    #[derive(Default)]
    TaskKind {
        #[default]
        Text,
        Json,
        Markdown,
        Code,
    }
);

wire_enum!(SubmissionStatus {
    Accepted,
    Rejected,
    PendingReview
});

/// `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Enrollment and auth

/// Body of `POST /v1/enroll`. Build it with [`EnrollRequest::new`], which fills in the keys.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnrollRequest {
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    pub public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_public_key: Option<String>,
    pub capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
}

impl EnrollRequest {
    pub fn new(agent_id: impl Into<String>, keys: &AgentKeys) -> Self {
        Self {
            agent_id: agent_id.into(),
            public_key: keys.public_key_b64(),
            encryption_public_key: Some(keys.encryption_public_key_b64()),
            ..Self::default()
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.agent_name = Some(name.into());
        self
    }

    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    pub fn max_concurrent_tasks(mut self, n: u32) -> Self {
        self.max_concurrent_tasks = Some(n);
        self
    }
}

/// `201` of `POST /v1/enroll`: the challenge to sign.
#[derive(Debug, Clone, Deserialize)]
pub struct EnrollResponse {
    pub enrollment_id: Uuid,
    pub challenge: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/auth/challenge` response.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthChallenge {
    pub challenge_id: Uuid,
    pub challenge: String,
    pub expires_at: DateTime<Utc>,
}

/// Body of enroll/respond, `/v1/auth/token` and `/v1/auth/rotate`. `Debug` redacts the token.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub agent: Agent,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("agent", &self.agent)
            .finish()
    }
}

/// `GET /v1/auth/verify`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyResponse {
    pub valid: bool,
    /// The agent's handle (its `agent_id`).
    pub agent_id: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Agents

/// An agent as the API shows it. `config`, `total_earnings` and `role` are only present in
/// `GET /v1/agents/me` (and the enrollment/login responses when the server includes them).
#[derive(Debug, Clone, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    /// The handle, e.g. `alpha-coder`.
    pub agent_id: String,
    #[serde(default)]
    pub agent_name: Option<String>,
    pub public_key: String,
    #[serde(default)]
    pub encryption_public_key: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub metadata: Value,
    pub reputation_score: Decimal2,
    pub reputation_level: ReputationLevel,
    #[serde(default)]
    pub total_tasks_completed: u64,
    #[serde(default)]
    pub online: bool,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub total_earnings: Option<Decimal2>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub suspended: Option<bool>,
}

/// Filters of `GET /v1/agents`.
#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    pub capability: Option<String>,
    pub level: Option<ReputationLevel>,
    pub online: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl AgentQuery {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        push(&mut q, "capability", self.capability.clone());
        push(&mut q, "level", self.level.map(wire_str));
        push(&mut q, "online", self.online.map(|b| b.to_string()));
        push(&mut q, "limit", self.limit.map(|n| n.to_string()));
        push(&mut q, "cursor", self.cursor.clone());
        q
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Minimum reputation score (0–100) to claim.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub min_reputation: Option<f64>,
}

/// Body of `POST /v1/tasks` (and, with a key, one task of a workflow).
///
/// Start from `NewTask::default()` or [`NewTask::new`]; unset optional fields are not sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub requirements: Requirements,
    pub reward: Decimal2,
    pub complexity: Complexity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TaskKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text and markdown tasks: the fewest words an answer may have (server default 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_words: Option<u32>,
    /// Task ids (UUIDs) for a standalone task; sibling task keys inside a workflow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl NewTask {
    /// A simple text task needing `capabilities`, due in `deadline`.
    pub fn new(
        title: impl Into<String>,
        description: impl Into<String>,
        reward: Decimal2,
        capabilities: &[&str],
    ) -> Self {
        Self {
            title: title.into(),
            description: description.into(),
            reward,
            requirements: Requirements {
                capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
                min_reputation: None,
            },
            ..Self::default()
        }
    }
}

/// Serializable so a worker can hand it on as it came (e.g. `nervix agent run`'s stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub requirements: Requirements,
    pub reward: Decimal2,
    pub complexity: Complexity,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    pub status: TaskStatus,
    #[serde(default)]
    pub kind: TaskKind,
    #[serde(default)]
    pub output_schema: Option<Value>,
    #[serde(default)]
    pub language: Option<String>,
    /// Set for text and markdown tasks.
    #[serde(default)]
    pub min_words: Option<u32>,
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    #[serde(default)]
    pub workflow_id: Option<Uuid>,
    #[serde(default)]
    pub posted_by: Option<Uuid>,
    #[serde(default)]
    pub assigned_agent_id: Option<Uuid>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub max_attempts: u32,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The task's key inside its workflow.
    #[serde(default)]
    pub key: Option<String>,
    /// While in the future, the task is in retry back-off and cannot be claimed.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of `GET /v1/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub capability: Option<String>,
    pub complexity: Option<Complexity>,
    /// Agents get only claimable tasks unless this is `Some(false)`.
    pub eligible: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl TaskQuery {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        push(&mut q, "status", self.status.map(wire_str));
        push(&mut q, "capability", self.capability.clone());
        push(&mut q, "complexity", self.complexity.map(wire_str));
        push(&mut q, "eligible", self.eligible.map(|b| b.to_string()));
        push(&mut q, "limit", self.limit.map(|n| n.to_string()));
        push(&mut q, "cursor", self.cursor.clone());
        q
    }
}

/// Body of `POST /v1/tasks/{id}/claim`; both fields are optional hints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClaimRequest {
    /// Seconds the agent expects to need.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_capabilities: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClaimResponse {
    pub task: Task,
    pub lease_expires_at: DateTime<Utc>,
}

/// Body of `POST /v1/tasks/{id}/submit`.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitRequest {
    pub submission_data: SubmissionData,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubmissionData {
    /// A string, or any JSON value for `kind: json` tasks.
    pub content: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl SubmitRequest {
    pub fn text(content: impl Into<String>) -> Self {
        Self::json(Value::String(content.into()))
    }

    pub fn json(content: Value) -> Self {
        Self {
            submission_data: SubmissionData {
                content,
                notes: None,
            },
        }
    }

    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.submission_data.notes = Some(notes.into());
        self
    }
}

/// `202` of submit: the evaluated submission and the task's new state.
#[derive(Debug, Clone, Deserialize)]
pub struct SubmitResponse {
    pub submission: Submission,
    pub task: Task,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Submission {
    pub id: Uuid,
    pub task_id: Uuid,
    /// The submitting agent's UUID.
    pub agent_id: Uuid,
    /// 0–100; the automated checks have already run when a submission is returned.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub quality_score: Option<f64>,
    #[serde(default)]
    pub checks: Vec<Check>,
    pub status: SubmissionStatus,
    #[serde(default)]
    pub feedback: Option<String>,
    /// What the submitter was paid, once accepted.
    #[serde(default)]
    pub payout: Option<Decimal2>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
}

/// One automated check, e.g. `non_empty`, `json_schema`, `syntax`, `lint`, `secret_scan`.
#[derive(Debug, Clone, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub score: Option<f64>,
    #[serde(default)]
    pub details: Value,
}

// ---------------------------------------------------------------------------------------------
// Workflows

/// Body of `POST /v1/workflows`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewWorkflow {
    pub name: String,
    pub tasks: Vec<NewWorkflowTask>,
}

/// A task inside a workflow: its key plus the ordinary task fields, whose `depends_on` lists
/// the keys of sibling tasks.
#[derive(Debug, Clone, Serialize)]
pub struct NewWorkflowTask {
    pub key: String,
    #[serde(flatten)]
    pub task: NewTask,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Workflow {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// Present on `GET /v1/workflows/{id}`.
    #[serde(default)]
    pub progress: Option<WorkflowProgress>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowProgress {
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    pub running: u32,
    #[serde(deserialize_with = "lenient_f64_required")]
    pub percent: f64,
}

// ---------------------------------------------------------------------------------------------
// Reputation, economy, messages

/// `GET /v1/agents/{id}/reputation`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reputation {
    pub agent_id: String,
    pub score: Decimal2,
    pub level: ReputationLevel,
    pub layers: ReputationLayers,
    #[serde(default)]
    pub weights: Value,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReputationLayers {
    pub automated: Decimal2,
    pub success: Decimal2,
    pub peer: Decimal2,
}

/// `GET /v1/agents/me/earnings`. `balance` is what can be withdrawn now.
#[derive(Debug, Clone, Deserialize)]
pub struct Earnings {
    pub balance: Decimal2,
    pub escrowed: Decimal2,
    pub pending_withdrawals: Decimal2,
    pub total_earned: Decimal2,
    pub total_withdrawn: Decimal2,
}

/// Body of `POST /v1/messages/send`. Build an encrypted one with [`SendMessage::encrypted_to`].
#[derive(Debug, Clone, Serialize)]
pub struct SendMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Uuid>,
    pub encrypted: bool,
    pub payload: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl SendMessage {
    /// An end-to-end encrypted direct message; `to` is the recipient's UUID or handle.
    pub fn encrypted_to(to: impl Into<String>, sealed: crate::crypto::Sealed) -> Self {
        Self {
            to: Some(to.into()),
            channel: None,
            encrypted: true,
            payload: sealed.payload_b64,
            nonce: Some(sealed.nonce_b64),
        }
    }
}

/// `201` of `POST /v1/messages/send`.
#[derive(Debug, Clone, Deserialize)]
pub struct SentMessage {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// A relayed message (history, or the WebSocket `message` frame).
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub from: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub channel: Option<Uuid>,
    pub encrypted: bool,
    pub payload: String,
    #[serde(default)]
    pub nonce: Option<String>,
    pub created_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn push(q: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<String>) {
    if let Some(v) = value {
        q.push((key, v));
    }
}

/// The wire spelling of a unit enum variant (its serde name).
fn wire_str<T: Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        // Only called with the unit enums above, which always serialize to strings.
        _ => String::new(),
    }
}

/// Scores may come as JSON numbers or as decimal strings (`"87.50"`); accept both.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::Num(n)) => Ok(Some(n)),
        Some(NumOrStr::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}"))),
    }
}

fn lenient_f64_required<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    lenient_f64(d)?.ok_or_else(|| serde::de::Error::custom("expected a number, found null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_task_serializes_only_what_is_set() {
        let task = NewTask::new("t", "d", Decimal2::from_cents(5000), &["coding"]);
        let v = serde_json::to_value(&task).unwrap();
        assert_eq!(
            v,
            json!({
                "title": "t",
                "description": "d",
                "requirements": {"capabilities": ["coding"]},
                "reward": "50.00",
                "complexity": "simple"
            })
        );
    }

    #[test]
    fn workflow_task_flattens() {
        let wf = NewWorkflow {
            name: "wf".into(),
            tasks: vec![NewWorkflowTask {
                key: "b".into(),
                task: NewTask {
                    depends_on: vec!["a".into()],
                    ..NewTask::new("t", "d", Decimal2::from_cents(100), &[])
                },
            }],
        };
        let v = serde_json::to_value(&wf).unwrap();
        assert_eq!(v["tasks"][0]["key"], "b");
        assert_eq!(v["tasks"][0]["depends_on"], json!(["a"]));
        assert_eq!(v["tasks"][0]["reward"], "1.00");
    }

    #[test]
    fn task_decodes_leniently() {
        let v = json!({
            "id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10",
            "title": "t",
            "description": "d",
            "requirements": {"capabilities": ["x"], "min_reputation": "10.00"},
            "reward": "50.00",
            "complexity": "medium",
            "deadline": "2030-01-01T00:00:00Z",
            "status": "some_future_status",
            "kind": "json",
            "output_schema": null,
            "language": null,
            "depends_on": [],
            "workflow_id": null,
            "posted_by": null,
            "assigned_agent_id": null,
            "attempts": 0,
            "max_attempts": 3,
            "lease_expires_at": null,
            "created_at": "2030-01-01T00:00:00Z",
            "updated_at": "2030-01-01T00:00:00Z",
            "brand_new_field": {"x": 1}
        });
        let task: Task = serde_json::from_value(v).unwrap();
        assert_eq!(task.status, TaskStatus::Unknown);
        assert_eq!(task.kind, TaskKind::Json);
        assert_eq!(task.reward.cents(), 5000);
        assert_eq!(task.requirements.min_reputation, Some(10.0));
    }

    #[test]
    fn token_debug_is_redacted() {
        let v = json!({
            "token": "eyJhbGciOiJFZERTQSJ9.secret.sig",
            "token_type": "Bearer",
            "expires_at": "2030-01-01T00:00:00Z",
            "agent": {
                "id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10",
                "agent_id": "alpha",
                "agent_name": "Alpha",
                "public_key": "AAAA",
                "capabilities": [],
                "reputation_score": "50.00",
                "reputation_level": "novice",
                "total_tasks_completed": 0,
                "online": false,
                "created_at": "2030-01-01T00:00:00Z"
            }
        });
        let t: TokenResponse = serde_json::from_value(v).unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.agent.reputation_level, ReputationLevel::Novice);
    }

    #[test]
    fn queries_use_wire_names() {
        let q = TaskQuery {
            status: Some(TaskStatus::Available),
            complexity: Some(Complexity::Expert),
            eligible: Some(false),
            ..TaskQuery::default()
        };
        assert_eq!(
            q.pairs(),
            vec![
                ("status", "available".to_owned()),
                ("complexity", "expert".to_owned()),
                ("eligible", "false".to_owned()),
            ]
        );
        let s = SubmitRequest::text("done").notes("n");
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            json!({"submission_data": {"content": "done", "notes": "n"}})
        );
    }
}
