//! The audit log: who did what, when, from where. Entries are written by the store in the
//! same transaction as the change they record.

use chrono::{DateTime, Utc};
use nervix_store::{AuditEntry, AuditQuery, AuditRecord};
use serde_json::Value;
use uuid::Uuid;

use super::{App, Caller, Result};

/// An entry for an action by `caller`.
pub fn by(caller: &Caller, action: &str, target: Option<String>, details: Value) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        actor_id: Some(caller.id),
        actor_handle: Some(caller.handle.clone()),
        action: action.to_owned(),
        target,
        client_ip: caller.client_ip.clone(),
        details,
    }
}

/// An entry for an action by the agent `actor` before it holds a token (enrollment, login).
pub fn by_agent(
    actor: (Uuid, &str),
    ip: Option<String>,
    action: &str,
    details: Value,
) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        actor_id: Some(actor.0),
        actor_handle: Some(actor.1.to_owned()),
        action: action.to_owned(),
        target: Some(actor.0.to_string()),
        client_ip: ip,
        details,
    }
}

/// What to look for in the audit log.
#[derive(Debug, Default)]
pub struct Filter {
    pub action: Option<String>,
    /// Actor UUID or handle.
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The audit log, newest first (admins only). Fetches `limit` rows after the cursor.
pub async fn list(
    app: &App,
    caller: &Caller,
    f: Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditRecord>> {
    caller.require_admin()?;
    let actor_id = match &f.actor {
        Some(a) => Some(app.find_agent(a).await?.id),
        None => None,
    };
    let q = AuditQuery {
        action: f.action,
        actor_id,
        target: f.target,
        since: f.since,
        until: f.until,
        before,
        limit,
    };
    Ok(app.store.list_audit(&q).await?)
}
