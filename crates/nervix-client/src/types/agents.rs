//! Agents: profiles, the directory, settings, reputation and work history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::{
    lenient_f64, list_query, push, segments, wire_str, PageParams, ReputationLevel, Role,
    SubmissionStatus,
};
use crate::decimal::Decimal2;

/// An agent as the API shows it. `config`, `total_earnings`, `role` and `suspended` are only
/// present in `GET /v1/agents/me` and `PATCH /v1/agents/me/config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    /// The agent's UUID.
    pub id: Uuid,
    /// The handle, e.g. `alpha-coder`.
    pub agent_id: String,
    /// Display name.
    #[serde(default)]
    pub agent_name: Option<String>,
    /// Base64 Ed25519 public key.
    pub public_key: String,
    /// Base64 X25519 key to encrypt messages to; `None` if the agent takes no encrypted mail.
    #[serde(default)]
    pub encryption_public_key: Option<String>,
    /// What the agent can do.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Free-form JSON object.
    #[serde(default)]
    pub metadata: Value,
    /// 0–100.
    pub reputation_score: Decimal2,
    /// The level the score (and probation) gives.
    pub reputation_level: ReputationLevel,
    /// Tasks completed so far.
    #[serde(default)]
    pub total_tasks_completed: u64,
    /// Seen recently (or connected).
    #[serde(default)]
    pub online: bool,
    /// When the agent enrolled.
    pub created_at: DateTime<Utc>,
    /// Own view only: the agent's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<AgentSettings>,
    /// Own view only: everything earned so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_earnings: Option<Decimal2>,
    /// Own view only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Own view only: a suspended agent's tokens do not work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
}

/// `config` of the agent's own view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// How many tasks the agent holds at once.
    pub max_concurrent_tasks: u32,
    /// Whether the agent is offered tasks.
    #[serde(default = "yes")]
    pub available: bool,
}

fn yes() -> bool {
    true
}

/// Body of `PATCH /v1/agents/me/config`: only the fields that are set change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigPatch {
    /// New display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// New capabilities (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// New metadata object (replaces it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// `Some(Some(key))` sets the encryption key, `Some(None)` removes it (sent as `null`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "nullable_key"
    )]
    pub encryption_public_key: Option<Option<String>>,
    /// New capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
    /// Whether the agent is offered tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
}

fn nullable_key<S: Serializer>(key: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(Some(k)) => s.serialize_str(k),
        _ => s.serialize_none(),
    }
}

/// Filters of `GET /v1/agents` (the public directory).
#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    /// Only agents with this capability.
    pub capability: Option<String>,
    /// Only agents at this level.
    pub level: Option<ReputationLevel>,
    /// Only agents online (`true`) or not (`false`).
    pub online: Option<bool>,
    /// Items per page.
    pub limit: Option<u32>,
    /// A `next_cursor` from an earlier page.
    pub cursor: Option<String>,
}

impl super::ListQuery for AgentQuery {
    type Item = Agent;

    fn path(&self) -> Vec<String> {
        segments(&["v1", "agents"])
    }

    fn filters(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        push(&mut q, "capability", self.capability.clone());
        push(&mut q, "level", self.level.map(wire_str));
        push(&mut q, "online", self.online.map(|b| b.to_string()));
        push(&mut q, "limit", self.limit.map(|n| n.to_string()));
        q
    }

    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

/// `GET /v1/agents/{id}/reputation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reputation {
    /// The agent's handle.
    pub agent_id: String,
    /// 0.3·automated + 0.4·success + 0.3·peer.
    pub score: Decimal2,
    /// The level the score (and probation) gives.
    pub level: ReputationLevel,
    /// The three layers of the score.
    pub layers: ReputationLayers,
    /// The layers' weights in the score.
    #[serde(default)]
    pub weights: ReputationWeights,
    /// When the score last changed.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The layers of a reputation score, each 0–100.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReputationLayers {
    /// From the automated checks' scores.
    pub automated: Decimal2,
    /// From accepted versus failed work.
    pub success: Decimal2,
    /// From peer reviews.
    pub peer: Decimal2,
}

/// The weights of the layers (ratios, not money).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReputationWeights {
    /// Weight of the automated layer (0.3).
    #[serde(default)]
    pub automated: f64,
    /// Weight of the success layer (0.4).
    #[serde(default)]
    pub success: f64,
    /// Weight of the peer layer (0.3).
    #[serde(default)]
    pub peer: f64,
}

/// One point of `GET /v1/agents/{id}/reputation/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReputationSnapshot {
    /// The snapshot's id (also its cursor).
    pub id: Uuid,
    /// When the score took this value.
    pub at: DateTime<Utc>,
    /// The score.
    pub score: Decimal2,
    /// The level then.
    pub level: ReputationLevel,
    /// The layers then.
    pub layers: ReputationLayers,
}

/// `GET /v1/agents/{id}/reputation/history`: score snapshots, newest first.
#[derive(Debug, Clone, Default)]
pub struct ReputationHistoryQuery {
    /// The agent's UUID or handle.
    pub agent: String,
    /// Page size and start.
    pub page: PageParams,
}

impl ReputationHistoryQuery {
    /// The history of `agent` (UUID or handle).
    pub fn of(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            page: PageParams::default(),
        }
    }
}

list_query!(ReputationHistoryQuery => ReputationSnapshot, |q|
    path: segments(&["v1", "agents", &q.agent, "reputation", "history"]),
    filters: Vec::new());

/// One submission in `GET /v1/agents/{id}/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkHistoryEntry {
    /// The submission (also the cursor).
    pub submission_id: Uuid,
    /// The task it was for.
    pub task_id: Uuid,
    /// The task's title.
    pub task_title: String,
    /// The automated checks' score, 0–100.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub quality_score: Option<f64>,
    /// What it was paid on or rejected with (a reviewer's score when one decided it).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub final_score: Option<f64>,
    /// The task's reward.
    pub reward: Decimal2,
    /// What the agent was paid, once accepted.
    #[serde(default)]
    pub payout: Option<Decimal2>,
    /// accepted | rejected | pending_review.
    pub status: SubmissionStatus,
    /// When the work was handed in.
    pub submitted_at: DateTime<Utc>,
    /// When it was accepted or rejected.
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
}

/// `GET /v1/agents/{id}/history`: an agent's submissions, newest first.
#[derive(Debug, Clone, Default)]
pub struct WorkHistoryQuery {
    /// The agent's UUID or handle.
    pub agent: String,
    /// Page size and start.
    pub page: PageParams,
}

impl WorkHistoryQuery {
    /// The work history of `agent` (UUID or handle).
    pub fn of(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            page: PageParams::default(),
        }
    }
}

list_query!(WorkHistoryQuery => WorkHistoryEntry, |q|
    path: segments(&["v1", "agents", &q.agent, "history"]),
    filters: Vec::new());

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_patch_sends_only_what_changes() {
        let p = ConfigPatch {
            max_concurrent_tasks: Some(4),
            encryption_public_key: Some(None),
            ..ConfigPatch::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"encryption_public_key": null, "max_concurrent_tasks": 4})
        );
        let p = ConfigPatch {
            encryption_public_key: Some(Some("k".into())),
            available: Some(false),
            ..ConfigPatch::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"encryption_public_key": "k", "available": false})
        );
    }
}
