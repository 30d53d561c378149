//! Tokens and the authenticated caller.
//!
//! A request is authenticated when its bearer JWT is EdDSA-signed by one of our keys, has our
//! `iss`/`aud`, is unexpired, and storage says its `jti` is live for that agent. Role and
//! suspension come from storage on every request, so a suspension or revocation bites at once.

pub mod keys;
mod verified;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use nervix_core::Role;
use nervix_store::TokenRecord;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub use verified::VerifiedTokens;

pub const ISSUER: &str = "nervix";
pub const AUDIENCE: &str = "nervix-api";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub agent_id: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// A freshly signed token and what storage must remember of it.
pub struct Issued {
    pub token: String,
    pub record: TokenRecord,
}

pub fn issue(
    ring: &keys::KeyRing,
    agent: Uuid,
    handle: &str,
    role: Role,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<Issued, ApiError> {
    let key = ring.active();
    let expires_at = now + ttl;
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: agent,
        agent_id: handle.into(),
        role,
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
        jti: Uuid::new_v4(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let token =
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(ApiError::internal)?;
    Ok(Issued {
        token,
        record: TokenRecord {
            jti: claims.jti,
            agent_id: agent,
            kid: key.kid.clone(),
            issued_at: now,
            expires_at,
        },
    })
}

/// Checks signature, algorithm, issuer, audience and expiry. Storage checks come after.
pub fn verify(ring: &keys::KeyRing, token: &str) -> Result<Claims, ApiError> {
    verify_with_kid(ring, token).map(|(claims, _)| claims)
}

/// [`verify`], also naming the key (`kid`) that signed the token.
fn verify_with_kid(ring: &keys::KeyRing, token: &str) -> Result<(Claims, String), ApiError> {
    let bad = || ApiError::unauthorized("invalid or expired token");
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
    // Only EdDSA: `none`, HMAC with our public key as secret, RSA… are all refused here
    // and again by `Validation`, which pins the algorithm list.
    if header.alg != Algorithm::EdDSA {
        return Err(bad());
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| ring.get(kid))
        .ok_or_else(bad)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
        .map(|d| (d.claims, key.kid.clone()))
        .map_err(|_| bad())
}

/// The authenticated agent making a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub handle: String,
    pub role: Role,
    pub jti: Uuid,
    pub expires_at: DateTime<Utc>,
    pub client_ip: Option<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("forbidden", "admin role required"))
        }
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let caller = authenticate(state, token, crate::api::client_ip(parts)).await?;
        state.presence.seen(state, caller.id);
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// Full token check: cryptography, then storage (revocation, role, suspension), then the
/// agent's rate limit.
pub async fn authenticate(
    state: &AppState,
    token: &str,
    client_ip: Option<String>,
) -> Result<Caller, ApiError> {
    let claims = {
        let ring: Arc<keys::KeyRing> = state.keys();
        state.verified.verify(&ring, token, Utc::now())?
    };
    let auth = state
        .store
        .auth_state(claims.jti, claims.sub)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    if auth.revoked {
        return Err(ApiError::unauthorized("token has been revoked"));
    }
    if auth.suspended {
        return Err(ApiError::forbidden(
            "agent_suspended",
            "this agent is suspended",
        ));
    }
    // Charged only now: a revoked token (say, a stolen one) must not spend the budget of the
    // agent it was taken from. The price is one storage read per request beyond the limit.
    state.limits.check_agent(claims.sub)?;
    Ok(Caller {
        id: claims.sub,
        handle: auth.handle,
        role: auth.role,
        jti: claims.jti,
        expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_default(),
        client_ip,
    })
}
