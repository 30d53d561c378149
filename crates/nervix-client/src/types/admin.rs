//! Operator actions (`role: admin`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{list_query, push, segments, PageParams};
use crate::decimal::Decimal2;

/// One record of `GET /v1/admin/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The record's UUID.
    pub id: Uuid,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it (`None` for the system).
    #[serde(default)]
    pub actor_id: Option<Uuid>,
    /// The actor's handle.
    #[serde(default)]
    pub actor: Option<String>,
    /// What was done, e.g. `admin.grant`.
    pub action: String,
    /// What it was done to.
    #[serde(default)]
    pub target: Option<String>,
    /// From where.
    #[serde(default)]
    pub client_ip: Option<String>,
    /// Action-specific details (never secrets).
    #[serde(default)]
    pub details: Value,
}

/// `GET /v1/admin/audit`: the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only records of this action.
    pub action: Option<String>,
    /// Only records by this actor (UUID or handle).
    pub actor: Option<String>,
    /// Only records about this target.
    pub target: Option<String>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time.
    pub until: Option<DateTime<Utc>>,
    /// Page size and start.
    pub page: PageParams,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

list_query!(AuditQuery => AuditRecord, |q|
path: segments(&["v1", "admin", "audit"]),
filters: {
    let mut f = Vec::new();
    push(&mut f, "action", q.action.clone());
    push(&mut f, "actor", q.actor.clone());
    push(&mut f, "target", q.target.clone());
    push(&mut f, "since", q.since.map(rfc3339));
    push(&mut f, "until", q.until.map(rfc3339));
    f
});

/// An amount moved by the operator: the body of `POST /v1/admin/agents/{id}/grant` and of
/// `POST /v1/admin/bonus-pool/fund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// How much.
    pub amount: Decimal2,
    /// Why (recorded in the ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

impl Transfer {
    /// `amount` with no memo.
    pub fn new(amount: Decimal2) -> Self {
        Self { amount, memo: None }
    }

    /// Sets the memo.
    pub fn memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = Some(memo.into());
        self
    }
}

/// `200` of a grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Granted {
    /// The credited agent's UUID.
    pub agent_id: Uuid,
    /// The amount credited.
    pub amount: Decimal2,
}

/// `GET /v1/admin/bonus-pool` (and the answer to funding it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BonusPool {
    /// What level bonuses can still be paid from.
    pub balance: Decimal2,
}

/// Body of `POST /v1/admin/announcements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewAnnouncement {
    /// Headline.
    pub title: String,
    /// Text.
    pub body: String,
}

/// An announcement: the `201` of `POST /v1/admin/announcements` and the data of the
/// `announcement` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Announcement {
    /// The announcement's UUID.
    pub id: Uuid,
    /// Headline.
    pub title: String,
    /// Text.
    pub body: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}
