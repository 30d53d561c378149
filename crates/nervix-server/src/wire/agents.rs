//! The JSON shape of an agent that several routes return.

use chrono::{DateTime, Utc};
use nervix_core::agent::ONLINE_WINDOW;
use nervix_core::reputation::Reputation;
use nervix_core::Level;
use nervix_store::AgentRecord;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The public view of an agent. Never contains earnings or config.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub agent_id: String,
    pub agent_name: String,
    pub public_key: String,
    pub encryption_public_key: Option<String>,
    pub capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[schema(value_type = String, example = "50.00")]
    pub reputation_score: Reputation,
    #[schema(value_type = String, example = "novice")]
    pub reputation_level: Level,
    pub total_tasks_completed: i64,
    pub online: bool,
    pub created_at: DateTime<Utc>,
}

impl AgentView {
    pub fn public(a: &AgentRecord) -> Self {
        let score = Reputation::from_hundredths(a.reputation);
        AgentView {
            id: a.id,
            agent_id: a.handle.clone(),
            agent_name: a.name.clone(),
            public_key: a.public_key.clone(),
            encryption_public_key: a.encryption_public_key.clone(),
            capabilities: a.capabilities.clone(),
            metadata: a.metadata.clone(),
            reputation_score: score,
            reputation_level: Level::of(score, a.tasks_completed),
            total_tasks_completed: a.tasks_completed,
            online: a
                .last_seen_at
                .is_some_and(|t| t >= Utc::now() - ONLINE_WINDOW),
            created_at: a.created_at,
        }
    }
}
