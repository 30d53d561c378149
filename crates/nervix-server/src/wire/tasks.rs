//! The JSON shapes of a task: as posted (alone or inside a workflow) and as returned.

use chrono::{DateTime, Utc};
use nervix_core::reputation::Reputation;
use nervix_core::task::TaskInput;
use nervix_core::{Complexity, FieldErrors, Money, TaskKind, TaskSpec, TaskStatus};
use nervix_store::TaskRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
pub struct Requirements {
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// 0–100.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub min_reputation: Option<Reputation>,
}

/// The fields of a task as posted (alone, or inside a workflow).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskFields {
    /// A workflow task's key, which its siblings' `depends_on` name (workflows only).
    #[serde(default)]
    pub key: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub requirements: Requirements,
    /// JSON number or decimal string with at most two decimals.
    #[schema(value_type = String, example = "50.00")]
    pub reward: Money,
    /// simple | medium | complex | expert
    pub complexity: String,
    pub deadline: DateTime<Utc>,
    /// text | json | markdown | code (default text)
    pub kind: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub language: Option<String>,
    /// Text and markdown tasks: the fewest words an answer may have, 0–100000 (default 20).
    pub min_words: Option<i64>,
    /// 1–10, default 3.
    pub max_attempts: Option<i64>,
    /// Upstream tasks: their UUIDs for `POST /v1/tasks`, keys of this workflow's tasks inside
    /// `POST /v1/workflows`.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequirementsView {
    pub capabilities: Vec<String>,
    #[schema(value_type = String)]
    pub min_reputation: Reputation,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub requirements: RequirementsView,
    #[schema(value_type = String, example = "50.00")]
    pub reward: Money,
    #[schema(value_type = String)]
    pub complexity: Complexity,
    pub deadline: DateTime<Utc>,
    #[schema(value_type = String)]
    pub status: TaskStatus,
    #[schema(value_type = String)]
    pub kind: TaskKind,
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub language: Option<String>,
    /// The fewest words an answer may have: set for text and markdown tasks, null otherwise.
    pub min_words: Option<i64>,
    pub depends_on: Vec<Uuid>,
    pub workflow_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub posted_by: Uuid,
    pub assigned_agent_id: Option<Uuid>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// While set and in the future, the task is in retry back-off and cannot be claimed.
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> Self {
        TaskView {
            id: t.id,
            title: t.title,
            description: t.description,
            requirements: RequirementsView {
                capabilities: t.capabilities,
                min_reputation: Reputation::from_hundredths(t.min_reputation),
            },
            reward: Money::from_cents(t.reward_cents),
            complexity: t.complexity,
            deadline: t.deadline,
            status: t.status,
            kind: t.kind,
            output_schema: t.output_schema,
            language: t.language,
            min_words: t.min_words,
            depends_on: t.depends_on,
            workflow_id: t.workflow_id,
            key: t.workflow_key,
            posted_by: t.posted_by,
            assigned_agent_id: t.assigned_agent_id,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            lease_expires_at: t.lease_expires_at,
            retry_at: t.retry_at.filter(|r| *r > Utc::now()),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

impl TaskFields {
    /// The posted fields as a task spec; errors are named `{prefix}{field}`.
    pub fn parse(
        &self,
        max_reward: Money,
        now: DateTime<Utc>,
        prefix: &str,
    ) -> Result<TaskSpec, FieldErrors> {
        TaskSpec::parse(
            &TaskInput {
                title: &self.title,
                description: &self.description,
                capabilities: &self.requirements.capabilities,
                min_reputation: self.requirements.min_reputation,
                reward: self.reward,
                complexity: &self.complexity,
                deadline: self.deadline,
                kind: self.kind.as_deref(),
                output_schema: self.output_schema.as_ref(),
                language: self.language.as_deref(),
                min_words: self.min_words,
                max_attempts: self.max_attempts,
            },
            max_reward,
            now,
            prefix,
        )
    }
}
