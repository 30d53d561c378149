//! Enrollment and login by proof of key possession (signed, single-use challenges), and the
//! tokens they buy: authentication of a bearer token, rotation, revocation.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signature;
use nervix_core::{
    AgentHandle, AgentName, Capabilities, EncryptionKey, FieldError, FieldErrors,
    MaxConcurrentTasks, Metadata, PublicKey, Role, Scopes,
};
use nervix_store::{
    AgentRecord, ChallengePurpose, ChallengeRecord, NewAgent, NewChallenge, StoreError,
    MAX_CHALLENGE_FAILURES,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{audit, events, App, Caller, Error, ErrorKind, Result};
use crate::auth::{self as tokens, AuthError, Issued};

pub const ENROLL_PREFIX: &str = "nervix-enroll-v1";
pub const AUTH_PREFIX: &str = "nervix-auth-v1";
/// Handle of the operator's admin identity (`nervix admin create-token`).
pub const ADMIN_HANDLE: &str = "admin";
/// Handles no agent may enroll under: the operator's identity and names that would pass for
/// the platform itself.
pub const RESERVED_HANDLES: &[&str] = &[
    ADMIN_HANDLE,
    "nervix",
    "system",
    "root",
    "operator",
    "platform",
];

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidToken => Error::unauthenticated(e.to_string()),
            AuthError::Signing(_) => Error::internal(e),
        }
    }
}

/// An enrollment as requested, every field parsed.
#[derive(Debug)]
pub struct Enrollment {
    pub handle: AgentHandle,
    pub name: Option<AgentName>,
    pub public_key: PublicKey,
    pub encryption_public_key: Option<EncryptionKey>,
    pub capabilities: Capabilities,
    pub metadata: Metadata,
    pub max_concurrent_tasks: MaxConcurrentTasks,
}

/// What the enrollment challenge remembers until it is answered.
#[derive(Serialize, Deserialize)]
struct PendingEnrollment {
    agent_id: String,
    agent_name: String,
    encryption_public_key: Option<String>,
    capabilities: Vec<String>,
    metadata: serde_json::Value,
    max_concurrent_tasks: i64,
}

/// A challenge to sign: the exact UTF-8 text, and until when it may be answered.
#[derive(Debug)]
pub struct Challenge {
    pub id: Uuid,
    pub text: String,
    pub expires_at: DateTime<Utc>,
}

fn challenge_text(prefix: &str, id: Uuid) -> String {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    format!("{prefix}:{id}:{}", URL_SAFE_NO_PAD.encode(nonce))
}

/// A handle an agent may enroll under: valid, and not reserved.
pub fn enrollable_handle(raw: &str) -> std::result::Result<AgentHandle, FieldError> {
    let handle = AgentHandle::parse(raw)?;
    if RESERVED_HANDLES.contains(&handle.as_str()) {
        return Err(FieldError::new("agent_id", "is reserved"));
    }
    Ok(handle)
}

/// Starts an enrollment: refuses reserved or taken handles and keys, and hands out a challenge.
pub async fn enroll(app: &App, e: Enrollment) -> Result<Challenge> {
    enrollable_handle(e.handle.as_str())?;
    let now = Utc::now();
    let id = Uuid::now_v7();
    let text = challenge_text(ENROLL_PREFIX, id);
    let expires_at = now + app.config.challenge_ttl;
    let pending = PendingEnrollment {
        agent_id: e.handle.to_string(),
        agent_name: e
            .name
            .map_or_else(|| e.handle.to_string(), AgentName::into_inner),
        encryption_public_key: e.encryption_public_key.map(EncryptionKey::into_inner),
        capabilities: e.capabilities.into_vec(),
        metadata: e.metadata.into_inner(),
        max_concurrent_tasks: e.max_concurrent_tasks.get(),
    };
    let conflict = app
        .store
        .insert_enrollment_challenge(
            &NewChallenge {
                id,
                purpose: ChallengePurpose::Enroll,
                agent_id: None,
                public_key: e.public_key.to_base64(),
                challenge: text.clone(),
                payload: Some(serde_json::to_value(&pending).map_err(Error::internal)?),
                expires_at,
                created_at: now,
            },
            e.handle.as_str(),
        )
        .await?;
    if let Some(conflict) = conflict {
        return Err(StoreError::Conflict(conflict).into());
    }
    Ok(Challenge {
        id,
        text,
        expires_at,
    })
}

/// A fresh token and the agent it is for.
#[derive(Debug)]
pub struct Session {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub agent: AgentRecord,
}

/// Loads a challenge for `purpose` and checks it is still usable and the signature is right.
/// A bad signature counts towards the lock-out.
async fn check_challenge(
    app: &App,
    id: Uuid,
    purpose: ChallengePurpose,
    signature: &str,
) -> Result<ChallengeRecord> {
    let what = match purpose {
        ChallengePurpose::Enroll => "enrollment",
        ChallengePurpose::Auth => "challenge",
    };
    let c = app
        .store
        .challenge(id)
        .await?
        .filter(|c| c.purpose == purpose)
        .ok_or_else(|| Error::not_found(what))?;
    if c.consumed_at.is_some() {
        return Err(Error::conflict(
            "challenge_used",
            "this challenge was already used",
        ));
    }
    if c.expires_at <= Utc::now() {
        return Err(Error::new(
            ErrorKind::Gone,
            "challenge_expired",
            "this challenge has expired",
        ));
    }
    if c.failures >= MAX_CHALLENGE_FAILURES {
        return Err(Error::conflict(
            "challenge_locked",
            "too many bad signatures; request a new challenge",
        ));
    }
    let sig_bytes: [u8; 64] = STANDARD
        .decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::field(
                "signature",
                "must be 64 bytes, base64 (standard alphabet, padded)",
            )
        })?;
    let key = PublicKey::parse(&c.public_key)
        .map_err(|_| Error::internal("stored public key is invalid"))?;
    if key
        .verifying_key()
        .verify_strict(c.challenge.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .is_err()
    {
        app.store.record_challenge_failure(id).await?;
        return Err(Error::new(
            ErrorKind::Unauthenticated,
            "invalid_signature",
            "signature does not verify",
        ));
    }
    Ok(c)
}

fn issue(
    app: &App,
    agent: &AgentRecord,
    scopes: Option<Scopes>,
    ttl: chrono::Duration,
) -> Result<Issued> {
    Ok(tokens::issue(
        &app.keys(),
        agent.id,
        &agent.handle,
        agent.role,
        scopes,
        Utc::now(),
        ttl,
    )?)
}

/// Completes an enrollment with the signed challenge: the agent, its accounts, its first token
/// and the audit record are created together.
pub async fn complete_enrollment(
    app: &App,
    enrollment_id: Uuid,
    signature: &str,
    ip: Option<String>,
) -> Result<Session> {
    let c = check_challenge(app, enrollment_id, ChallengePurpose::Enroll, signature).await?;
    let pending: PendingEnrollment = c
        .payload
        .clone()
        .and_then(|p| serde_json::from_value(p).ok())
        .ok_or_else(|| Error::internal("enrollment payload unreadable"))?;
    let now = Utc::now();
    let agent = NewAgent {
        id: Uuid::now_v7(),
        handle: pending.agent_id,
        name: pending.agent_name,
        public_key: c.public_key.clone(),
        encryption_public_key: pending.encryption_public_key,
        capabilities: pending.capabilities,
        metadata: pending.metadata,
        max_concurrent_tasks: pending.max_concurrent_tasks,
        role: Role::Agent,
        created_at: now,
    };
    let issued = tokens::issue(
        &app.keys(),
        agent.id,
        &agent.handle,
        Role::Agent,
        None,
        now,
        app.config.token_ttl,
    )?;
    // The enrolling client acts as the agent it becomes.
    let entry = audit::by_agent(
        (agent.id, &agent.handle),
        ip,
        "agent.enroll",
        json!({"agent_id": agent.handle, "jti": issued.record.jti}),
    );
    let record = app
        .store
        .complete_enrollment(c.id, &agent, &issued.record, &entry)
        .await?;
    events::agent_changed(app, record.id).await;
    Ok(Session {
        token: issued.token,
        expires_at: issued.record.expires_at,
        agent: record,
    })
}

fn refuse_suspended(agent: &AgentRecord) -> Result<()> {
    if agent.suspended {
        return Err(Error::forbidden(
            "agent_suspended",
            "this agent is suspended",
        ));
    }
    Ok(())
}

/// A login challenge for an enrolled agent (by UUID or handle).
pub async fn login_challenge(app: &App, id_or_handle: &str) -> Result<Challenge> {
    let agent = app.find_agent(id_or_handle).await?;
    refuse_suspended(&agent)?;
    // The operator's admin identity holds random bytes as its key (`nervix admin
    // create-token` is its only way in); a challenge nobody can answer helps no one.
    if agent.handle == ADMIN_HANDLE || PublicKey::parse(&agent.public_key).is_err() {
        return Err(Error::forbidden(
            "no_key_login",
            "this identity cannot log in with a key; the operator issues its tokens",
        ));
    }
    let now = Utc::now();
    let id = Uuid::now_v7();
    let text = challenge_text(AUTH_PREFIX, id);
    let expires_at = now + app.config.challenge_ttl;
    app.store
        .insert_challenge(&NewChallenge {
            id,
            purpose: ChallengePurpose::Auth,
            agent_id: Some(agent.id),
            public_key: agent.public_key.clone(),
            challenge: text.clone(),
            payload: None,
            expires_at,
            created_at: now,
        })
        .await?;
    Ok(Challenge {
        id,
        text,
        expires_at,
    })
}

/// Exchanges a signed login challenge for a token.
pub async fn login(
    app: &App,
    challenge_id: Uuid,
    signature: &str,
    ip: Option<String>,
) -> Result<Session> {
    let c = check_challenge(app, challenge_id, ChallengePurpose::Auth, signature).await?;
    let agent_id = c
        .agent_id
        .ok_or_else(|| Error::internal("auth challenge without agent"))?;
    let agent = app
        .store
        .agent(agent_id)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    refuse_suspended(&agent)?;
    let issued = issue(app, &agent, None, app.config.token_ttl)?;
    let entry = audit::by_agent(
        (agent.id, &agent.handle),
        ip,
        "token.issue",
        json!({"agent_id": agent.handle, "jti": issued.record.jti}),
    );
    app.store
        .complete_login(c.id, &issued.record, &entry)
        .await?;
    Ok(Session {
        token: issued.token,
        expires_at: issued.record.expires_at,
        agent,
    })
}

/// Full check of a bearer token: cryptography (remembered per token), then storage:
/// revocation, role and suspension, read on every request so they bite at once.
pub async fn authenticate(app: &App, token: &str, client_ip: Option<String>) -> Result<Caller> {
    let now = Utc::now();
    let claims = match app.verified.verify(&app.keys(), token, now) {
        Ok(claims) => claims,
        Err(e) => match tokens::kid_of(token) {
            // Signed by a key another node made a moment ago (a rotation there), which this
            // node's periodic reload has not brought yet.
            Some(kid)
                if app.keys().get(&kid).is_none()
                    && app.keys.refresh_for(app.store.as_ref(), &kid).await =>
            {
                app.verified.verify(&app.keys(), token, now)?
            }
            _ => return Err(e.into()),
        },
    };
    let state = app
        .store
        .auth_state(claims.jti, claims.sub)
        .await?
        .ok_or_else(|| Error::unauthenticated("invalid or expired token"))?;
    if state.revoked {
        return Err(Error::unauthenticated("token has been revoked"));
    }
    if state.suspended {
        return Err(Error::forbidden(
            "agent_suspended",
            "this agent is suspended",
        ));
    }
    app.presence.seen(claims.sub);
    Ok(Caller {
        id: claims.sub,
        handle: state.handle,
        role: state.role,
        jti: claims.jti,
        expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_default(),
        client_ip,
        granted: claims.scopes(),
    })
}

/// Swaps the caller's token for a fresh one with the same scopes; the presented one is revoked.
pub async fn rotate(app: &App, caller: &Caller) -> Result<Session> {
    let agent = app
        .store
        .agent(caller.id)
        .await?
        .ok_or_else(|| Error::unauthenticated("unknown agent"))?;
    let issued = issue(app, &agent, caller.granted, app.config.token_ttl)?;
    let entry = audit::by(
        caller,
        "token.rotate",
        Some(agent.id.to_string()),
        json!({"old_jti": caller.jti, "new_jti": issued.record.jti}),
    );
    if !app
        .store
        .rotate_token(caller.jti, &issued.record, &entry)
        .await?
    {
        return Err(Error::unauthenticated("token has been revoked"));
    }
    events::access_changed(app, caller.id).await;
    Ok(Session {
        token: issued.token,
        expires_at: issued.record.expires_at,
        agent,
    })
}

/// The shortest life a minted token may have: less is a mistake, not least privilege.
pub const MIN_TOKEN_TTL: chrono::Duration = chrono::Duration::minutes(1);

/// A narrower token as asked for: its scopes and its life.
#[derive(Debug)]
pub struct TokenRequest {
    pub scopes: Scopes,
    pub ttl: chrono::Duration,
}

impl TokenRequest {
    /// `expires_in` in seconds; absent means the server's token lifetime, which is also
    /// the most a token may have.
    pub fn parse(
        scopes: &[String],
        expires_in: Option<i64>,
        max_ttl: chrono::Duration,
    ) -> Result<TokenRequest> {
        let scopes = Scopes::parse_list(scopes);
        let ttl = match expires_in {
            None => Ok(max_ttl),
            Some(secs) if (MIN_TOKEN_TTL.num_seconds()..=max_ttl.num_seconds()).contains(&secs) => {
                Ok(chrono::Duration::seconds(secs))
            }
            Some(_) => Err(FieldError::new(
                "expires_in",
                format!(
                    "must be between {} and {} seconds",
                    MIN_TOKEN_TTL.num_seconds(),
                    max_ttl.num_seconds()
                ),
            )),
        };
        match (scopes, ttl) {
            (Ok(scopes), Ok(ttl)) => Ok(TokenRequest { scopes, ttl }),
            (scopes, ttl) => {
                Err(FieldErrors(scopes.err().into_iter().chain(ttl.err()).collect()).into())
            }
        }
    }
}

/// Mints a token for the caller's agent that can do only what `req.scopes` name. A token
/// cannot grant what it lacks: each scope asked for must be one the caller's token has. The
/// caller's token stays valid; the new one is revoked by itself (`POST /v1/auth/revoke`).
pub async fn create_token(app: &App, caller: &Caller, req: TokenRequest) -> Result<Session> {
    caller.require_all(req.scopes)?;
    let agent = app
        .store
        .agent(caller.id)
        .await?
        .ok_or_else(|| Error::unauthenticated("unknown agent"))?;
    let issued = issue(app, &agent, Some(req.scopes), req.ttl)?;
    let entry = audit::by(
        caller,
        "token.create",
        Some(agent.id.to_string()),
        json!({
            "jti": issued.record.jti,
            "by_jti": caller.jti,
            "scopes": req.scopes.to_claim(),
            "expires_at": issued.record.expires_at,
        }),
    );
    app.store.insert_token(&issued.record, &entry).await?;
    Ok(Session {
        token: issued.token,
        expires_at: issued.record.expires_at,
        agent,
    })
}

/// Revokes the caller's token; false when it was revoked already.
pub async fn revoke(app: &App, caller: &Caller) -> Result<bool> {
    let entry = audit::by(
        caller,
        "token.revoke",
        Some(caller.id.to_string()),
        json!({"jti": caller.jti}),
    );
    let revoked = app
        .store
        .revoke_token(caller.jti, Utc::now(), &entry)
        .await?;
    if revoked {
        events::access_changed(app, caller.id).await;
    }
    Ok(revoked)
}

/// Checks again, for a long-lived connection, what [`authenticate`] checked when it opened:
/// the token has not expired or been revoked, and the agent is not suspended.
pub async fn recheck(app: &App, caller: &Caller) -> Result<()> {
    if Utc::now() >= caller.expires_at {
        return Err(Error::unauthenticated("token has expired"));
    }
    let state = app
        .store
        .auth_state(caller.jti, caller.id)
        .await?
        .ok_or_else(|| Error::unauthenticated("invalid or expired token"))?;
    if state.revoked {
        return Err(Error::unauthenticated("token has been revoked"));
    }
    if state.suspended {
        return Err(Error::forbidden(
            "agent_suspended",
            "this agent is suspended",
        ));
    }
    Ok(())
}

/// What a signing-key rotation did.
pub struct KeyRotation {
    pub kid: String,
    pub pruned: Vec<String>,
}

/// Makes a new token-signing key the active one on every node (this one at once, the others
/// within their reload interval); keys retired longer than the token lifetime are deleted.
/// Admins only; audited.
pub async fn rotate_signing_key(app: &App, caller: &Caller) -> Result<KeyRotation> {
    caller.require_admin()?;
    let (kid, pruned) = app
        .keys
        .rotate(app.store.as_ref(), app.config.token_ttl)
        .await
        .map_err(Error::internal)?;
    let entry = audit::by(
        caller,
        "signing_key.rotate",
        Some(kid.clone()),
        json!({"kid": kid, "pruned": pruned}),
    );
    app.store.append_audit(&entry).await?;
    Ok(KeyRotation { kid, pruned })
}
