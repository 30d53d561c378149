//! The JSON shapes of a task: as posted (alone or inside a workflow) and as returned.

use chrono::{DateTime, Utc};
use nervix_core::reputation::Reputation;
use nervix_core::task::TaskInput;
use nervix_core::{Complexity, FieldErrors, Money, TaskKind, TaskSpec, TaskStatus};
use nervix_store::TaskRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::openapi;
use crate::wire::int;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
pub struct Requirements {
    /// Capabilities a claimant must have.
    #[serde(default)]
    #[schema(schema_with = openapi::capabilities)]
    pub capabilities: Vec<String>,
    /// The least reputation a claimant must have, 0–100 (default 0).
    #[serde(default)]
    #[schema(schema_with = openapi::min_reputation)]
    pub min_reputation: Option<Reputation>,
}

/// The fields of a task as posted (alone, or inside a workflow). In the document this is a
/// workflow's task; `POST /v1/tasks` takes [`NewTaskSchema`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = WorkflowTask)]
pub struct TaskFields {
    /// The key this task's siblings name in their `depends_on` (workflows only).
    #[serde(default)]
    #[schema(schema_with = openapi::workflow_key, required = true)]
    pub key: Option<String>,
    #[schema(schema_with = openapi::task_title)]
    pub title: String,
    /// At most 20,000 characters.
    #[serde(default)]
    #[schema(max_length = 20000)]
    pub description: String,
    #[serde(default)]
    pub requirements: Requirements,
    #[schema(schema_with = openapi::reward)]
    pub reward: Money,
    #[schema(schema_with = openapi::complexity)]
    pub complexity: String,
    /// Must be in the future.
    #[schema(example = "2099-01-01T00:00:00Z")]
    pub deadline: DateTime<Utc>,
    #[schema(schema_with = openapi::kind)]
    pub kind: Option<String>,
    /// A JSON Schema (an object; no remote `$ref`s) that `kind: json` work must satisfy.
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    /// The programming language of `kind: code` work, 1–32 characters.
    #[schema(min_length = 1, max_length = 32)]
    pub language: Option<String>,
    /// Text and markdown tasks: the fewest words an answer may have, 0–100000 (default 20).
    /// Ignored for json and code tasks, which have no word count.
    #[serde(default, deserialize_with = "int::optional")]
    #[schema(minimum = 0, maximum = 100000)]
    pub min_words: Option<i64>,
    /// Attempts before the task fails, 1–10 (default 3).
    #[serde(default, deserialize_with = "int::optional")]
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<i64>,
    /// Keys of this workflow's tasks that must complete first.
    #[serde(default)]
    #[schema(schema_with = openapi::workflow_dependencies)]
    pub depends_on: Vec<String>,
}

/// `POST /v1/tasks`'s body as the document states it: a workflow task's fields, without a
/// `key` (a lone task has none), and `depends_on` holding task UUIDs.
pub struct NewTaskSchema;

impl utoipa::PartialSchema for NewTaskSchema {
    fn schema() -> RefOr<Schema> {
        let mut schema = <TaskFields as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(o)) = &mut schema {
            o.properties.insert("key".into(), openapi::no_key().into());
            o.required.retain(|r| r != "key");
            o.properties
                .insert("depends_on".into(), openapi::task_dependencies().into());
        }
        schema
    }
}

impl ToSchema for NewTaskSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "NewTask".into()
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        <TaskFields as ToSchema>::schemas(out);
    }
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
