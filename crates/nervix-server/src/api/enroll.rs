//! Enrollment and auth: proof of key possession through signed, single-use challenges.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use nervix_core::ids::parse_capabilities;
use nervix_core::{AgentHandle, FieldErrors, Role};
use nervix_store::{
    ChallengePurpose, ChallengeRecord, NewAgent, NewChallenge, MAX_CHALLENGE_FAILURES,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::agents::AgentView;
use super::{audit, ApiJson, ClientIp};
use crate::auth::{self, Caller};
use crate::bus::Event;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const ENROLL_PREFIX: &str = "nervix-enroll-v1";
/// Handles no agent may enroll under: the operator's identity and names that would pass for
/// the platform itself.
pub const RESERVED_HANDLES: &[&str] = &[
    crate::operator::ADMIN_HANDLE,
    "nervix",
    "system",
    "root",
    "operator",
    "platform",
];
pub const AUTH_PREFIX: &str = "nervix-auth-v1";

pub fn routes() -> OpenApiRouter<AppState> {
    let limited = OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(enroll_respond))
        .routes(routes!(auth_challenge))
        .routes(routes!(auth_token));
    OpenApiRouter::new()
        .merge(limited)
        .routes(routes!(verify))
        .routes(routes!(rotate))
        .routes(routes!(revoke))
}

/// The routes `limit_by_ip` applies to.
pub const IP_LIMITED: &[&str] = &[
    "/v1/enroll",
    "/v1/enroll/{enrollment_id}/respond",
    "/v1/auth/challenge",
    "/v1/auth/token",
];

#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// 3–64 chars of `[a-z0-9._-]`, starting with a letter or digit.
    pub agent_id: String,
    pub agent_name: Option<String>,
    /// Ed25519 public key, base64 (32 bytes).
    pub public_key: String,
    /// X25519 public key for encrypted messages, base64 (32 bytes).
    pub encryption_public_key: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub max_concurrent_tasks: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollResponse {
    pub enrollment_id: Uuid,
    /// Sign the UTF-8 bytes of this string exactly as given.
    pub challenge: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignatureBody {
    /// Ed25519 signature of the challenge, base64 (64 bytes).
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    pub agent: AgentView,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthChallengeRequest {
    /// The agent's handle or UUID.
    pub agent_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthChallengeResponse {
    pub challenge_id: Uuid,
    pub challenge: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthTokenRequest {
    pub challenge_id: Uuid,
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub agent_id: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
}

pub fn decode_key(field: &str, b64: &str) -> Result<[u8; 32], nervix_core::FieldError> {
    STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            nervix_core::FieldError::new(
                field,
                "must be 32 bytes, base64 (standard alphabet, padded)",
            )
        })
}

/// A usable Ed25519 verification key (a valid point, not of small order).
fn parse_public_key(b64: &str) -> Result<VerifyingKey, nervix_core::FieldError> {
    let bytes = decode_key("public_key", b64)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
        nervix_core::FieldError::new("public_key", "is not a valid Ed25519 public key")
    })?;
    if key.is_weak() {
        return Err(nervix_core::FieldError::new(
            "public_key",
            "is a weak Ed25519 key",
        ));
    }
    Ok(key)
}

pub fn validate_metadata(v: &Value) -> Result<(), nervix_core::FieldError> {
    if !v.is_object() {
        return Err(nervix_core::FieldError::new(
            "metadata",
            "must be a JSON object",
        ));
    }
    if serde_json::to_vec(v).map_or(0, |b| b.len()) > 16 * 1024 {
        return Err(nervix_core::FieldError::new(
            "metadata",
            "must be at most 16 KiB",
        ));
    }
    Ok(())
}

pub fn validate_name(name: &str) -> Result<String, nervix_core::FieldError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 128 {
        return Err(nervix_core::FieldError::new(
            "agent_name",
            "must be 1 to 128 characters",
        ));
    }
    Ok(n.to_owned())
}

pub fn validate_max_concurrent(n: i64) -> Result<i64, nervix_core::FieldError> {
    if (1..=100).contains(&n) {
        Ok(n)
    } else {
        Err(nervix_core::FieldError::new(
            "max_concurrent_tasks",
            "must be between 1 and 100",
        ))
    }
}

fn challenge_text(prefix: &str, id: Uuid) -> String {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    format!("{prefix}:{id}:{}", URL_SAFE_NO_PAD.encode(nonce))
}

/// Enroll: validate, refuse taken handles/keys early, and hand out a challenge.
#[utoipa::path(post, path = "/v1/enroll", tag = "auth", request_body = EnrollRequest,
    responses((status = 201, body = EnrollResponse), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
async fn enroll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let mut errs = FieldErrors::default();
    let handle = errs.check(AgentHandle::parse(&req.agent_id).and_then(|h| {
        if RESERVED_HANDLES.contains(&h.as_str()) {
            Err(nervix_core::FieldError::new("agent_id", "is reserved"))
        } else {
            Ok(h)
        }
    }));
    let key = errs.check(parse_public_key(&req.public_key));
    if let Some(k) = &req.encryption_public_key {
        errs.check(decode_key("encryption_public_key", k));
    }
    let caps = errs.check(parse_capabilities("capabilities", &req.capabilities));
    let name = req
        .agent_name
        .as_deref()
        .map(validate_name)
        .map(|r| errs.check(r));
    if let Some(m) = &req.metadata {
        errs.check(validate_metadata(m));
    }
    let max = errs.check(validate_max_concurrent(
        req.max_concurrent_tasks.unwrap_or(3),
    ));
    errs.into_result()?;
    let (Some(handle), Some(key), Some(caps), Some(max)) = (handle, key, caps, max) else {
        return Err(ApiError::internal("validated fields missing"));
    };
    let public_key = STANDARD.encode(key.to_bytes());
    let now = Utc::now();
    let id = Uuid::now_v7();
    let challenge = challenge_text(ENROLL_PREFIX, id);
    let expires_at = now + state.config.challenge_ttl;
    let payload = json!({
        "agent_id": handle.as_str(),
        "agent_name": name.flatten().unwrap_or_else(|| handle.to_string()),
        "encryption_public_key": req.encryption_public_key.as_deref().map(str::trim),
        "capabilities": caps,
        "metadata": req.metadata.unwrap_or_else(|| json!({})),
        "max_concurrent_tasks": max,
    });
    let conflict = state
        .store
        .insert_enrollment_challenge(
            &NewChallenge {
                id,
                purpose: ChallengePurpose::Enroll,
                agent_id: None,
                public_key,
                challenge: challenge.clone(),
                payload: Some(payload),
                expires_at,
                created_at: now,
            },
            handle.as_str(),
        )
        .await?;
    if let Some(conflict) = conflict {
        return Err(nervix_store::StoreError::Conflict(conflict).into());
    }
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            enrollment_id: id,
            challenge,
            expires_at,
        }),
    ))
}

/// Loads a challenge for `purpose` and checks it is still usable and the signature is right.
/// A bad signature counts towards the lock-out.
async fn check_challenge(
    state: &AppState,
    id: Uuid,
    purpose: ChallengePurpose,
    signature: &str,
) -> ApiResult<ChallengeRecord> {
    let what = match purpose {
        ChallengePurpose::Enroll => "enrollment",
        ChallengePurpose::Auth => "challenge",
    };
    let c = state
        .store
        .challenge(id)
        .await?
        .filter(|c| c.purpose == purpose)
        .ok_or_else(|| ApiError::not_found(what))?;
    if c.consumed_at.is_some() {
        return Err(ApiError::conflict(
            "challenge_used",
            "this challenge was already used",
        ));
    }
    if c.expires_at <= Utc::now() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "challenge_expired",
            "this challenge has expired",
        ));
    }
    if c.failures >= MAX_CHALLENGE_FAILURES {
        return Err(ApiError::conflict(
            "challenge_locked",
            "too many bad signatures; request a new challenge",
        ));
    }
    let sig_bytes: [u8; 64] = STANDARD
        .decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::field(
                "signature",
                "must be 64 bytes, base64 (standard alphabet, padded)",
            )
        })?;
    let key = decode_key("public_key", &c.public_key)
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| ApiError::internal("stored public key is invalid"))?;
    if key
        .verify_strict(c.challenge.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .is_err()
    {
        state.store.record_challenge_failure(id).await?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "signature does not verify",
        ));
    }
    Ok(c)
}

#[derive(Deserialize)]
struct PendingEnrollment {
    agent_id: String,
    agent_name: String,
    encryption_public_key: Option<String>,
    capabilities: Vec<String>,
    metadata: Value,
    max_concurrent_tasks: i64,
}

/// Complete an enrollment with the signed challenge; returns the first token.
#[utoipa::path(post, path = "/v1/enroll/{enrollment_id}/respond", tag = "auth", request_body = SignatureBody,
    params(("enrollment_id" = Uuid, Path)),
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 410, body = crate::error::Problem)))]
async fn enroll_respond(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(enrollment_id): Path<Uuid>,
    ApiJson(body): ApiJson<SignatureBody>,
) -> ApiResult<Json<TokenResponse>> {
    let c = check_challenge(
        &state,
        enrollment_id,
        ChallengePurpose::Enroll,
        &body.signature,
    )
    .await?;
    let pending: PendingEnrollment = c
        .payload
        .clone()
        .and_then(|p| serde_json::from_value(p).ok())
        .ok_or_else(|| ApiError::internal("enrollment payload unreadable"))?;
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
    let issued = auth::issue(
        &state.keys(),
        agent.id,
        &agent.handle,
        Role::Agent,
        now,
        state.config.token_ttl,
    )?;
    // The enrolling client acts as the agent it becomes.
    let mut entry = audit(
        None,
        ip,
        "agent.enroll",
        Some(agent.id.to_string()),
        json!({"agent_id": agent.handle, "jti": issued.record.jti}),
    );
    entry.actor_id = Some(agent.id);
    entry.actor_handle = Some(agent.handle.clone());
    let record = state
        .store
        .complete_enrollment(c.id, &agent, &issued.record, &entry)
        .await?;
    if let Err(e) = state
        .bus
        .publish(Event::AgentChanged {
            agent_id: record.id,
        })
        .await
    {
        tracing::warn!(error = %e, "publishing agent change failed");
    }
    Ok(Json(TokenResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_at: issued.record.expires_at,
        agent: AgentView::public(&record),
    }))
}

/// Ask for a login challenge for an enrolled agent.
#[utoipa::path(post, path = "/v1/auth/challenge", tag = "auth", request_body = AuthChallengeRequest,
    responses((status = 201, body = AuthChallengeResponse), (status = 404, body = crate::error::Problem)))]
async fn auth_challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AuthChallengeRequest>,
) -> ApiResult<(StatusCode, Json<AuthChallengeResponse>)> {
    let agent = super::agents::find_agent(&state, &req.agent_id).await?;
    if agent.suspended {
        return Err(ApiError::forbidden(
            "agent_suspended",
            "this agent is suspended",
        ));
    }
    let now = Utc::now();
    let id = Uuid::now_v7();
    let challenge = challenge_text(AUTH_PREFIX, id);
    let expires_at = now + state.config.challenge_ttl;
    state
        .store
        .insert_challenge(&NewChallenge {
            id,
            purpose: ChallengePurpose::Auth,
            agent_id: Some(agent.id),
            public_key: agent.public_key.clone(),
            challenge: challenge.clone(),
            payload: None,
            expires_at,
            created_at: now,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AuthChallengeResponse {
            challenge_id: id,
            challenge,
            expires_at,
        }),
    ))
}

/// Exchange a signed login challenge for a token.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = AuthTokenRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 410, body = crate::error::Problem)))]
async fn auth_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<AuthTokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let c = check_challenge(
        &state,
        req.challenge_id,
        ChallengePurpose::Auth,
        &req.signature,
    )
    .await?;
    let agent_id = c
        .agent_id
        .ok_or_else(|| ApiError::internal("auth challenge without agent"))?;
    let agent = state
        .store
        .agent(agent_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    if agent.suspended {
        return Err(ApiError::forbidden(
            "agent_suspended",
            "this agent is suspended",
        ));
    }
    let issued = auth::issue(
        &state.keys(),
        agent.id,
        &agent.handle,
        agent.role,
        Utc::now(),
        state.config.token_ttl,
    )?;
    let mut entry = audit(
        None,
        ip,
        "token.issue",
        Some(agent.id.to_string()),
        json!({"agent_id": agent.handle, "jti": issued.record.jti}),
    );
    entry.actor_id = Some(agent.id);
    entry.actor_handle = Some(agent.handle.clone());
    state
        .store
        .complete_login(c.id, &issued.record, &entry)
        .await?;
    Ok(Json(TokenResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_at: issued.record.expires_at,
        agent: AgentView::public(&agent),
    }))
}

/// Check the presented token.
#[utoipa::path(get, path = "/v1/auth/verify", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = VerifyResponse), (status = 401, body = crate::error::Problem)))]
async fn verify(caller: Caller) -> Json<VerifyResponse> {
    Json(VerifyResponse {
        valid: true,
        agent_id: caller.handle,
        role: caller.role.to_string(),
        expires_at: caller.expires_at,
    })
}

/// Swap the presented token for a fresh one; the presented one is revoked.
#[utoipa::path(post, path = "/v1/auth/rotate", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem)))]
async fn rotate(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TokenResponse>> {
    let agent = state
        .store
        .agent(caller.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown agent"))?;
    let issued = auth::issue(
        &state.keys(),
        agent.id,
        &agent.handle,
        agent.role,
        Utc::now(),
        state.config.token_ttl,
    )?;
    let entry = audit(
        Some(&caller),
        None,
        "token.rotate",
        Some(agent.id.to_string()),
        json!({"old_jti": caller.jti, "new_jti": issued.record.jti}),
    );
    if !state
        .store
        .rotate_token(caller.jti, &issued.record, &entry)
        .await?
    {
        return Err(ApiError::unauthorized("token has been revoked"));
    }
    Ok(Json(TokenResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_at: issued.record.expires_at,
        agent: AgentView::public(&agent),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResponse {
    pub revoked: bool,
}

/// Revoke the presented token.
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = RevokeResponse), (status = 401, body = crate::error::Problem)))]
async fn revoke(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<RevokeResponse>> {
    let entry = audit(
        Some(&caller),
        None,
        "token.revoke",
        Some(caller.id.to_string()),
        json!({"jti": caller.jti}),
    );
    let revoked = state
        .store
        .revoke_token(caller.jti, Utc::now(), &entry)
        .await?;
    Ok(Json(RevokeResponse { revoked }))
}
