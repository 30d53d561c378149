//! EdDSA JWTs: what a token claims, how one is issued, and its cryptographic check.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use nervix_core::{Role, Scopes};
use nervix_store::TokenRecord;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Deliberately one message for every way a token can be wrong: which check failed is
    /// of use to an attacker only.
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("signing a token failed: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

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
    /// The scopes a narrowed token keeps, space-separated; absent on an unrestricted token
    /// (enrollment, login), which may do whatever its agent's role allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// `None`: unrestricted.
    pub fn scopes(&self) -> Option<Scopes> {
        self.scope.as_deref().map(Scopes::from_claim)
    }
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
    scopes: Option<Scopes>,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<Issued, AuthError> {
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
        scope: scopes.map(Scopes::to_claim),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
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

/// The key a token names in its header (`kid`), unverified.
pub fn kid_of(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// Checks signature, algorithm, issuer, audience and expiry. Storage checks come after.
pub fn verify(ring: &keys::KeyRing, token: &str) -> Result<Claims, AuthError> {
    verify_with_kid(ring, token).map(|(claims, _)| claims)
}

/// [`verify`], also naming the key (`kid`) that signed the token.
pub(super) fn verify_with_kid(
    ring: &keys::KeyRing,
    token: &str,
) -> Result<(Claims, String), AuthError> {
    let bad = || AuthError::InvalidToken;
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
