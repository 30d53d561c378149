//! Operator commands that work on the server's data folder and database directly
//! (`nervix admin ...`), for the same configuration as `nervix serve`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use nervix_core::Role;
use nervix_store::{AuditEntry, NewAgent};
use rand::RngCore;
use serde_json::json;
use uuid::Uuid;

use crate::app::auth::ADMIN_HANDLE;
use crate::auth::keys::{KeyError, KeyRing};
use crate::config::Config;
use crate::server::{ensure_data_dir, open_store, ServerError};

/// Issues an admin token (90 days) for the operator's admin identity.
pub async fn create_admin_token(config: &Config) -> Result<String, ServerError> {
    let store = open_store(config, 2).await?;
    let keys = KeyRing::load_or_create(&config.data_dir)?;
    let now = Utc::now();
    // The admin identity logs in only through this command, never by challenge: its public
    // key is random bytes whose private half nobody has.
    let mut unusable = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut unusable);
    let agent = NewAgent {
        id: Uuid::now_v7(),
        handle: ADMIN_HANDLE.into(),
        name: "Platform administrator".into(),
        public_key: STANDARD.encode(unusable),
        encryption_public_key: None,
        capabilities: Vec::new(),
        metadata: json!({}),
        max_concurrent_tasks: 1,
        role: Role::Admin,
        created_at: now,
    };
    let created = AuditEntry {
        at: now,
        actor_id: None,
        actor_handle: Some("operator".into()),
        action: "admin.bootstrap".into(),
        target: Some(agent.id.to_string()),
        client_ip: None,
        details: json!({}),
    };
    let admin = store.ensure_agent(&agent, &created).await?;
    if admin.role != Role::Admin {
        // Enrollment refuses this handle, so only a database edited by hand gets here.
        store.close().await;
        return Err(ServerError::Store(nervix_store::StoreError::Corrupt(
            format!("the handle {ADMIN_HANDLE:?} belongs to an agent without the admin role"),
        )));
    }
    let issued = crate::auth::issue(
        &keys,
        admin.id,
        &admin.handle,
        Role::Admin,
        now,
        config.token_ttl,
    )
    .map_err(|e| {
        ServerError::Keys(KeyError::Malformed {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })
    })?;
    let audit = AuditEntry {
        at: now,
        actor_id: Some(admin.id),
        actor_handle: Some(admin.handle.clone()),
        action: "token.issue".into(),
        target: Some(admin.id.to_string()),
        client_ip: None,
        details: json!({"jti": issued.record.jti, "via": "nervix admin create-token"}),
    };
    store.insert_token(&issued.record, &audit).await?;
    store.close().await;
    Ok(issued.token)
}

/// Creates a new active signing key; older keys keep verifying until their tokens expire,
/// and keys retired longer than the token lifetime are deleted. Returns the new kid.
pub fn rotate_signing_key(config: &Config) -> Result<(String, Vec<String>), ServerError> {
    ensure_data_dir(&config.data_dir)?;
    KeyRing::load_or_create(&config.data_dir)?;
    let kid = KeyRing::generate(&config.data_dir)?;
    let pruned = KeyRing::prune(&config.data_dir, config.token_ttl)?;
    Ok((kid, pruned))
}

/// Recomputes the ledger from its entries and reports what does not add up.
pub async fn verify_ledger(config: &Config) -> Result<nervix_store::LedgerReport, ServerError> {
    let store = open_store(config, 2).await?;
    let report = store.verify_ledger().await;
    store.close().await;
    Ok(report?)
}
