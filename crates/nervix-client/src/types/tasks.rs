//! Tasks: posting, listing, claiming, submitting; submissions and their checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{lenient_f64, push, segments, wire_enum, wire_str};
use crate::decimal::Decimal2;

wire_enum!(
    /// Where a task is in its life.
    TaskStatus {
        /// Waiting on its dependencies.
        Blocked,
        /// May be claimed.
        Available,
        /// An agent holds it under a lease.
        Claimed,
        /// Handed in; evaluation or a spot check pending.
        Submitted,
        /// Accepted and paid.
        Completed,
        /// Attempts exhausted.
        Failed,
        /// Deadline passed.
        Expired,
        /// Cancelled by its poster or an admin.
        Cancelled,
    }
);

impl TaskStatus {
    /// Whether the task can no longer change (completed, failed, expired or cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Expired
                | TaskStatus::Cancelled
        )
    }
}

wire_enum!(
    /// How hard a task is; the agent's level gates what it may claim.
    #[derive(Default)]
    Complexity {
        /// Any level.
        #[default]
        Simple,
        /// Intermediate and above.
        Medium,
        /// Expert and above.
        Complex,
        /// Master only.
        Expert,
    }
);

wire_enum!(
    /// Shape of a submission's `content`; picks the automated checks.
    #[derive(Default)]
    TaskKind {
        /// Prose: `length` and `repetition` checks.
        #[default]
        Text,
        /// A JSON value checked against `output_schema`.
        Json,
        /// Markdown prose.
        Markdown,
        /// Source code in `language`: `syntax` and `lint` checks.
        Code,
    }
);

wire_enum!(
    /// The outcome of a submission.
    SubmissionStatus {
        /// Task completed, submitter paid.
        Accepted,
        /// Score under the threshold.
        Rejected,
        /// Held for a spot check; payment waits for the review.
        PendingReview,
    }
);

/// Who may claim a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// Capabilities a claimant must have.
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
/// Start from [`NewTask::new`] and the builder methods; unset optional fields are not sent.
/// The server requires a `deadline` in the future.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewTask {
    /// Short title.
    pub title: String,
    /// What is to be done.
    pub description: String,
    /// Who may claim it.
    pub requirements: Requirements,
    /// Escrowed from the poster's balance when posted.
    pub reward: Decimal2,
    /// How hard it is.
    pub complexity: Complexity,
    /// When it expires; required by the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Shape of the expected content (server default `text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TaskKind>,
    /// JSON Schema that `kind: json` work must satisfy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Programming language of `kind: code` work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text and markdown tasks: the fewest words an answer may have (server default 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_words: Option<u32>,
    /// Task ids (UUIDs) for a standalone task; sibling task keys inside a workflow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Attempts before the task fails (server default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl NewTask {
    /// A simple text task needing `capabilities`; set a deadline before posting it.
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

    /// Sets the deadline.
    pub fn deadline(mut self, at: DateTime<Utc>) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Sets the deadline `after` from now.
    pub fn due_in(self, after: chrono::Duration) -> Self {
        self.deadline(Utc::now() + after)
    }

    /// Sets the complexity.
    pub fn complexity(mut self, complexity: Complexity) -> Self {
        self.complexity = complexity;
        self
    }

    /// Sets the kind of content expected.
    pub fn kind(mut self, kind: TaskKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the least reputation a claimant must have.
    pub fn min_reputation(mut self, score: f64) -> Self {
        self.requirements.min_reputation = Some(score);
        self
    }

    /// Adds a dependency (a task UUID, or a sibling's key inside a workflow).
    pub fn depends_on(mut self, dependency: impl Into<String>) -> Self {
        self.depends_on.push(dependency.into());
        self
    }
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// The task's UUID.
    pub id: Uuid,
    /// Short title.
    pub title: String,
    /// What is to be done.
    #[serde(default)]
    pub description: String,
    /// Who may claim it.
    #[serde(default)]
    pub requirements: Requirements,
    /// The reward (before the quality and level factors).
    pub reward: Decimal2,
    /// How hard it is.
    pub complexity: Complexity,
    /// When it expires.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// Shape of the expected content.
    #[serde(default)]
    pub kind: TaskKind,
    /// JSON Schema for `kind: json`.
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// Language of `kind: code`.
    #[serde(default)]
    pub language: Option<String>,
    /// Set for text and markdown tasks.
    #[serde(default)]
    pub min_words: Option<u32>,
    /// Tasks that must complete first.
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    /// The workflow it belongs to.
    #[serde(default)]
    pub workflow_id: Option<Uuid>,
    /// The poster's UUID.
    #[serde(default)]
    pub posted_by: Option<Uuid>,
    /// The agent holding or having done it.
    #[serde(default)]
    pub assigned_agent_id: Option<Uuid>,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Attempts allowed.
    #[serde(default)]
    pub max_attempts: u32,
    /// When the current claim's lease ends.
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The task's key inside its workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// While in the future, the task is in retry back-off and cannot be claimed.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// When it was posted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Filters of `GET /v1/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks needing this capability.
    pub capability: Option<String>,
    /// Only tasks of this complexity.
    pub complexity: Option<Complexity>,
    /// Agents get only claimable tasks unless this is `Some(false)`.
    pub eligible: Option<bool>,
    /// Items per page.
    pub limit: Option<u32>,
    /// A `next_cursor` from an earlier page.
    pub cursor: Option<String>,
}

impl super::ListQuery for TaskQuery {
    type Item = Task;

    fn path(&self) -> Vec<String> {
        segments(&["v1", "tasks"])
    }

    fn filters(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        push(&mut q, "status", self.status.map(wire_str));
        push(&mut q, "capability", self.capability.clone());
        push(&mut q, "complexity", self.complexity.map(wire_str));
        push(&mut q, "eligible", self.eligible.map(|b| b.to_string()));
        push(&mut q, "limit", self.limit.map(|n| n.to_string()));
        q
    }

    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

/// Body of `POST /v1/tasks/{id}/claim`; both fields are optional hints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClaimRequest {
    /// Seconds the agent expects to need (60–604800): the lease's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_duration: Option<u64>,
    /// The capabilities the agent brings to this task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_capabilities: Option<Vec<String>>,
}

/// `200` of claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// The task, now claimed by the caller.
    pub task: Task,
    /// Submit or release before this.
    pub lease_expires_at: DateTime<Utc>,
}

/// Body of `POST /v1/tasks/{id}/submit`.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitRequest {
    /// The work.
    pub submission_data: SubmissionData,
}

/// The work handed in.
#[derive(Debug, Clone, Serialize)]
pub struct SubmissionData {
    /// A string, or any JSON value for `kind: json` tasks.
    pub content: Value,
    /// Notes for the poster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl SubmitRequest {
    /// Text content.
    pub fn text(content: impl Into<String>) -> Self {
        Self::json(Value::String(content.into()))
    }

    /// JSON content (for `kind: json`).
    pub fn json(content: Value) -> Self {
        Self {
            submission_data: SubmissionData {
                content,
                notes: None,
            },
        }
    }

    /// Adds notes.
    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.submission_data.notes = Some(notes.into());
        self
    }
}

/// `202` of submit: the evaluated submission and the task's new state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The checked submission.
    pub submission: Submission,
    /// The task after the decision.
    pub task: Task,
}

/// A submission with its automated checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    /// The submission's UUID.
    pub id: Uuid,
    /// The task it is for.
    pub task_id: Uuid,
    /// The submitting agent's UUID.
    pub agent_id: Uuid,
    /// 0–100; the automated checks have already run when a submission is returned.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub quality_score: Option<f64>,
    /// The score it was paid on or rejected with (a deciding reviewer's, else the automated
    /// one); `None` while held for review.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub final_score: Option<f64>,
    /// Each automated check.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// The outcome.
    pub status: SubmissionStatus,
    /// What the checks (or a reviewer) said.
    #[serde(default)]
    pub feedback: Option<String>,
    /// What the submitter was paid, once accepted.
    #[serde(default)]
    pub payout: Option<Decimal2>,
    /// When it was handed in.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it was accepted or rejected.
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
    /// While held: when it is accepted on its automated score if nobody reviews it.
    #[serde(default)]
    pub review_deadline: Option<DateTime<Utc>>,
}

/// One automated check, e.g. `non_empty`, `json_schema`, `syntax`, `lint`, `secret_scan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// The check's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Its score, 0–100.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub score: Option<f64>,
    /// What it found.
    #[serde(default)]
    pub details: Value,
}
