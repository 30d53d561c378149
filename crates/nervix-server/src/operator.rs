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
use crate::auth::keys::{self, KeyError, KeyRing};
use crate::config::Config;
use crate::server::{open_store, ServerError};

/// Issues an admin token (90 days) for the operator's admin identity.
pub async fn create_admin_token(config: &Config) -> Result<String, ServerError> {
    let store = open_store(config, 2).await?;
    let keys = match open_keys(config, store.as_ref()).await {
        Ok(keys) => keys,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
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

/// The signing keys as `serve` opens them (the same master key, import and sealing).
async fn open_keys(
    config: &Config,
    store: &dyn nervix_store::Store,
) -> Result<KeyRing, ServerError> {
    let master = config.master_key.load()?;
    Ok(keys::open(store, &config.data_dir, master.as_ref()).await?)
}

/// Creates a new active signing key in the database, which every running node takes up
/// within seconds; older keys keep verifying until their tokens expire, and keys retired
/// longer than the token lifetime are deleted. Returns the new kid and the deleted ones.
pub async fn rotate_signing_key(config: &Config) -> Result<(String, Vec<String>), ServerError> {
    let store = open_store(config, 2).await?;
    let rotated = async {
        open_keys(config, store.as_ref()).await?;
        let master = config.master_key.load()?;
        Ok(keys::rotate(store.as_ref(), master.as_ref(), config.token_ttl).await?)
    }
    .await;
    store.close().await;
    rotated
}

/// Recomputes the ledger from its entries and reports what does not add up.
pub async fn verify_ledger(config: &Config) -> Result<nervix_store::LedgerReport, ServerError> {
    let store = open_store(config, 2).await?;
    let report = store.verify_ledger().await;
    store.close().await;
    Ok(report?)
}
