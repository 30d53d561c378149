//! Workflows: DAGs of tasks posted at once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{lenient_f64_required, wire_enum, NewTask, Task};

/// Body of `POST /v1/workflows`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewWorkflow {
    /// The workflow's name.
    pub name: String,
    /// Its tasks; `depends_on` names sibling keys.
    pub tasks: Vec<NewWorkflowTask>,
}

/// A task inside a workflow: its key plus the ordinary task fields, whose `depends_on` lists
/// the keys of sibling tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewWorkflowTask {
    /// Unique within the workflow; siblings name it in `depends_on`.
    pub key: String,
    /// The task's fields.
    #[serde(flatten)]
    pub task: NewTask,
}

// `NewTask` is only `Serialize` for callers; a workflow file (YAML, JSON) is read through the
// same shape, so it deserializes too.
impl<'de> Deserialize<'de> for NewTask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            title: String,
            #[serde(default)]
            description: String,
            #[serde(default)]
            requirements: super::Requirements,
            reward: crate::Decimal2,
            #[serde(default)]
            complexity: super::Complexity,
            #[serde(default)]
            deadline: Option<DateTime<Utc>>,
            #[serde(default)]
            kind: Option<super::TaskKind>,
            #[serde(default)]
            output_schema: Option<serde_json::Value>,
            #[serde(default)]
            language: Option<String>,
            #[serde(default)]
            min_words: Option<u32>,
            #[serde(default)]
            depends_on: Vec<String>,
            #[serde(default)]
            max_attempts: Option<u32>,
        }
        let f = Fields::deserialize(d)?;
        Ok(NewTask {
            title: f.title,
            description: f.description,
            requirements: f.requirements,
            reward: f.reward,
            complexity: f.complexity,
            deadline: f.deadline,
            kind: f.kind,
            output_schema: f.output_schema,
            language: f.language,
            min_words: f.min_words,
            depends_on: f.depends_on,
            max_attempts: f.max_attempts,
        })
    }
}

wire_enum!(
    /// Where a workflow is in its life.
    WorkflowStatus {
        /// Tasks still open.
        Active,
        /// Every task completed.
        Completed,
        /// A task failed or expired.
        Failed,
        /// Cancelled by its poster or an admin.
        Cancelled,
    }
);

impl WorkflowStatus {
    /// Whether the workflow can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Completed | WorkflowStatus::Failed | WorkflowStatus::Cancelled
        )
    }
}

/// A workflow with its tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workflow {
    /// The workflow's UUID.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Where it is in its life.
    pub status: WorkflowStatus,
    /// The poster's UUID.
    #[serde(default)]
    pub posted_by: Option<Uuid>,
    /// Its tasks, each with its `key`.
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// How far along it is.
    #[serde(default)]
    pub progress: Option<WorkflowProgress>,
    /// When it was posted.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it last changed.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `progress` of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowProgress {
    /// Tasks in the workflow.
    pub total: u32,
    /// Tasks completed.
    pub completed: u32,
    /// Tasks failed, expired or cancelled.
    pub failed: u32,
    /// Tasks claimed or submitted.
    pub running: u32,
    /// Completed share, 0–100.
    #[serde(deserialize_with = "lenient_f64_required")]
    pub percent: f64,
}
