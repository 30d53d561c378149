//! Withdrawals as the agent and the operator see them.

use chrono::{DateTime, Utc};
use nervix_core::Money;
use nervix_store::WithdrawalRecord;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalView {
    pub id: Uuid,
    pub agent_id: Uuid,
    #[schema(value_type = String, example = "25.00")]
    pub amount: Money,
    pub destination: String,
    /// pending | paid | rejected
    #[schema(example = "pending")]
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<WithdrawalRecord> for WithdrawalView {
    fn from(w: WithdrawalRecord) -> Self {
        WithdrawalView {
            id: w.id,
            agent_id: w.agent_id,
            amount: Money::from_cents(w.amount_cents),
            destination: w.destination,
            status: w.status.as_str().to_owned(),
            created_at: w.created_at,
            decided_at: w.decided_at,
        }
    }
}
