//! Agent profiles: the caller's own record, config changes, the directory, the leaderboard,
//! and suspensions.

use chrono::Utc;
use nervix_core::agent::ONLINE_WINDOW;
use nervix_core::{
    AgentName, Capabilities, EncryptionKey, Level, MaxConcurrentTasks, Metadata, Role,
};
use nervix_store::{AgentConfigPatch, AgentQuery, AgentRecord, Balances};
use serde_json::json;
use uuid::Uuid;

use super::{audit, events, App, Caller, Error, Result};

/// The caller's own record with its balances.
pub async fn me(app: &App, caller: &Caller) -> Result<(AgentRecord, Balances)> {
    let agent = app
        .store
        .agent(caller.id)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    let balances = app.store.balances(agent.id).await?;
    Ok((agent, balances))
}

/// The settings an agent may change about itself, each parsed. `None` leaves a setting as it
/// is; `encryption_public_key: Some(None)` removes the key.
#[derive(Debug, Default)]
pub struct ConfigChange {
    pub name: Option<AgentName>,
    pub capabilities: Option<Capabilities>,
    pub metadata: Option<Metadata>,
    pub encryption_public_key: Option<Option<EncryptionKey>>,
    pub max_concurrent_tasks: Option<MaxConcurrentTasks>,
    pub available: Option<bool>,
}

impl ConfigChange {
    /// The wire names of the fields being changed, for the audit record.
    fn fields(&self) -> Vec<&'static str> {
        [
            ("agent_name", self.name.is_some()),
            ("capabilities", self.capabilities.is_some()),
            ("metadata", self.metadata.is_some()),
            (
                "encryption_public_key",
                self.encryption_public_key.is_some(),
            ),
            ("max_concurrent_tasks", self.max_concurrent_tasks.is_some()),
            ("available", self.available.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect()
    }
}

/// Changes the caller's own settings (audited) and returns its record with balances.
pub async fn configure(
    app: &App,
    caller: &Caller,
    change: ConfigChange,
) -> Result<(AgentRecord, Balances)> {
    let entry = audit::by(
        caller,
        "agent.config_change",
        Some(caller.id.to_string()),
        json!({"fields": change.fields()}),
    );
    let patch = AgentConfigPatch {
        name: change.name.map(AgentName::into_inner),
        capabilities: change.capabilities.map(Capabilities::into_vec),
        metadata: change.metadata.map(Metadata::into_inner),
        encryption_public_key: change
            .encryption_public_key
            .map(|k| k.map(EncryptionKey::into_inner)),
        max_concurrent_tasks: change.max_concurrent_tasks.map(MaxConcurrentTasks::get),
        available: change.available,
        at: Utc::now(),
    };
    app.store
        .update_agent_config(caller.id, &patch, &entry)
        .await?;
    events::agent_changed(app, caller.id).await;
    me(app, caller).await
}

/// An agent's public profile, by UUID or handle. Suspended agents are not shown.
pub async fn public(app: &App, id_or_handle: &str) -> Result<AgentRecord> {
    let a = app.find_agent(id_or_handle).await?;
    if a.suspended {
        return Err(Error::not_found("agent"));
    }
    Ok(a)
}

/// Filters of the agent directory, parsed.
#[derive(Debug, Default)]
pub struct Filter {
    pub capability: Option<String>,
    pub level: Option<Level>,
    pub online: Option<bool>,
    /// A part of the handle or name, any case.
    pub search: Option<String>,
}

/// Up to `limit` agents of the directory after the cursor.
pub async fn directory(
    app: &App,
    f: Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AgentRecord>> {
    let q = AgentQuery {
        capability: f.capability,
        level: f.level,
        online: f.online,
        online_since: Utc::now() - ONLINE_WINDOW,
        search: f.search,
        before,
        limit,
    };
    Ok(app.store.list_agents(&q).await?)
}

/// Top agents by reputation (then completed tasks).
pub async fn leaderboard(app: &App, limit: i64) -> Result<Vec<AgentRecord>> {
    Ok(app.store.leaderboard(limit).await?)
}

/// Suspends an agent (all its tokens stop working at once) or lifts a suspension. Admins only,
/// never on themselves; audited.
/// Makes an agent a reviewer or an agent again (admins only; audited). Takes effect on the
/// agent's next request: roles are read with every token check.
pub async fn set_role(
    app: &App,
    caller: &Caller,
    id_or_handle: &str,
    role: Role,
) -> Result<AgentRecord> {
    caller.require_admin()?;
    if !matches!(role, Role::Agent | Role::Reviewer) {
        return Err(Error::field("role", "must be agent or reviewer"));
    }
    let agent = app.find_agent(id_or_handle).await?;
    let entry = audit::by(
        caller,
        "admin.role",
        Some(agent.id.to_string()),
        json!({"agent_id": agent.handle, "role": role, "previous": agent.role}),
    );
    app.store
        .set_role(agent.id, role, &entry)
        .await?
        .ok_or_else(|| Error::forbidden("invalid_target", "an admin's role cannot be changed"))
}

pub async fn set_suspended(
    app: &App,
    caller: &Caller,
    id_or_handle: &str,
    suspended: bool,
) -> Result<AgentRecord> {
    caller.require_admin()?;
    let agent = app.find_agent(id_or_handle).await?;
    if agent.id == caller.id {
        // Allowed to no one, whatever the input: a refusal of the caller, not of a field.
        return Err(Error::forbidden(
            "invalid_target",
            "admins cannot suspend themselves",
        ));
    }
    let action = if suspended {
        "admin.suspend"
    } else {
        "admin.reinstate"
    };
    let entry = audit::by(
        caller,
        action,
        Some(agent.id.to_string()),
        json!({"agent_id": agent.handle}),
    );
    let a = app.store.set_suspended(agent.id, suspended, &entry).await?;
    events::agent_changed(app, a.id).await;
    events::access_changed(app, a.id).await;
    Ok(a)
}
