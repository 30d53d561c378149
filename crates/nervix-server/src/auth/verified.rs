//! Tokens whose signature and claims were already verified.
//!
//! An agent sends the same bearer token on every request for up to 90 days; checking its
//! Ed25519 signature each time is most of the CPU an authenticated request costs. A token's
//! text is immutable and its signature check deterministic, so the verdict is remembered,
//! keyed by the SHA-256 of the exact token text: any change to header, claims or signature is a
//! different key and goes through the full check. Only verified tokens are remembered. A
//! remembered verdict is used only while the token is unexpired and the key that signed it is
//! still in the ring (a key deleted from the key store stops its tokens at once). Revocation,
//! role and suspension are not part of the verdict: storage is asked on every request.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::keys::KeyRing;
use super::token::{verify_with_kid, AuthError, Claims};

/// Bounds the memory: about 300 bytes an entry.
const CAPACITY: usize = 16_384;

struct Verdict {
    claims: Arc<Claims>,
    kid: String,
}

pub struct VerifiedTokens {
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
    capacity: usize,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl VerifiedTokens {
    pub fn with_capacity(capacity: usize) -> Self {
        VerifiedTokens {
            verdicts: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The token's claims if it is valid at `now`: from a remembered verdict, or by the full
    /// check ([`super::verify`]), whose success is then remembered.
    pub fn verify(
        &self,
        ring: &KeyRing,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<Claims>, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let verdicts = self.verdicts.lock();
            if let Some(v) = verdicts.get(&key) {
                // The same rule as the full check (no leeway): valid up to and including `exp`.
                if v.claims.exp >= now.timestamp() && ring.get(&v.kid).is_some() {
                    return Ok(v.claims.clone());
                }
                // Expired, or its key was removed: fall through to the full check, which
                // refuses it with the usual error.
            }
        }
        let (claims, kid) = verify_with_kid(ring, token)?;
        if claims.exp < now.timestamp() {
            return Err(AuthError::InvalidToken);
        }
        let claims = Arc::new(claims);
        let mut verdicts = self.verdicts.lock();
        if verdicts.len() >= self.capacity {
            let now = now.timestamp();
            verdicts.retain(|_, v| v.claims.exp >= now);
            if verdicts.len() >= self.capacity {
                // Everything still valid: forget it all rather than track recency; the cost
                // is one signature check per token, once.
                verdicts.clear();
            }
        }
        verdicts.insert(
            key,
            Verdict {
                claims: claims.clone(),
                kid,
            },
        );
        Ok(claims)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.verdicts.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{issue, AUDIENCE, ISSUER};
    use nervix_core::Role;
    use uuid::Uuid;

    fn token(ring: &KeyRing, ttl: chrono::Duration) -> String {
        issue(
            ring,
            Uuid::now_v7(),
            "alpha",
            Role::Agent,
            None,
            Utc::now(),
            ttl,
        )
        .unwrap()
        .token
    }

    #[test]
    fn remembers_a_verified_token_and_returns_its_claims() {
        let ring = KeyRing::generate();
        let cache = VerifiedTokens::default();
        let t = token(&ring, chrono::Duration::days(1));
        let first = cache.verify(&ring, &t, Utc::now()).unwrap();
        let again = cache.verify(&ring, &t, Utc::now()).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(first.jti, again.jti);
        assert_eq!((again.iss.as_str(), again.aud.as_str()), (ISSUER, AUDIENCE));
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let ring = KeyRing::generate();
        let cache = VerifiedTokens::default();
        let t = token(&ring, chrono::Duration::seconds(60));
        cache.verify(&ring, &t, Utc::now()).unwrap();
        let later = Utc::now() + chrono::Duration::seconds(61);
        assert!(cache.verify(&ring, &t, later).is_err());
    }

    #[test]
    fn a_remembered_token_dies_with_its_key() {
        let ring = KeyRing::generate();
        let other = KeyRing::generate();
        let cache = VerifiedTokens::default();
        let t = token(&ring, chrono::Duration::days(1));
        cache.verify(&ring, &t, Utc::now()).unwrap();
        // The same cache consulted with a ring that no longer holds the signing key.
        assert!(cache.verify(&other, &t, Utc::now()).is_err());
    }

    #[test]
    fn a_tampered_token_is_not_a_hit() {
        let ring = KeyRing::generate();
        let cache = VerifiedTokens::default();
        let t = token(&ring, chrono::Duration::days(1));
        cache.verify(&ring, &t, Utc::now()).unwrap();
        // Same signature, different claims.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged_claims = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"iss":"nervix","aud":"nervix-api","sub":"00000000-0000-0000-0000-000000000000","agent_id":"admin","role":"admin","iat":0,"exp":99999999999,"jti":"00000000-0000-0000-0000-000000000000"}"#,
        );
        parts[1] = &forged_claims;
        assert!(cache.verify(&ring, &parts.join("."), Utc::now()).is_err());
    }

    #[test]
    fn stays_bounded() {
        let ring = KeyRing::generate();
        let cache = VerifiedTokens::with_capacity(8);
        for _ in 0..20 {
            cache
                .verify(&ring, &token(&ring, chrono::Duration::days(1)), Utc::now())
                .unwrap();
            assert!(cache.len() <= 8);
        }
    }
}
