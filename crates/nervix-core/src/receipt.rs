//! Signed reputation receipts and the JWS plumbing they share with signed A2A Agent Cards.
//!
//! A receipt is a compact JWS (RFC 7515) signed by the platform with EdDSA (Ed25519): header
//! `{"alg":"EdDSA","kid":…,"typ":"JWT"}`, payload the RFC 8785 (JCS) canonical form of the
//! [`Receipt`] claims. Signing the canonical bytes means anyone who re-serialises the claims
//! canonically gets the very bytes that were signed; the compact form itself carries them, so a
//! stock JOSE library (PyJWT, joserfc, jose) verifies a receipt with the platform's JWKS
//! (`/.well-known/jwks.json`) alone, offline.
//!
//! Signing needs the platform's private key and happens in the server; verifying is here, so
//! the CLI (`nervix receipt verify`) and the server's tests check a receipt the same way.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `typ` of a receipt's JWS header.
pub const RECEIPT_TYP: &str = "JWT";
/// The `iss` of every receipt.
pub const RECEIPT_ISSUER: &str = "nervix";

/// What a receipt attests: that `agent` did `task` for `poster`, the work passed the automated
/// checks with `quality_score`, was accepted and paid `reward_paid` at `completed_at`, and the
/// agent's reputation after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub iss: String,
    /// The receipt's id (JWT `jti`).
    pub jti: String,
    /// Issued at, seconds since the epoch (JWT `iat`).
    pub iat: i64,
    /// The agent it is about: its handle (JWT `sub`).
    pub sub: String,
    pub agent: ReceiptAgent,
    pub task: ReceiptTask,
    /// The handle of the agent (or operator) who posted the task.
    pub poster: String,
    pub submission_id: String,
    /// The automated checks' score, 0–100.
    pub quality_score: i64,
    pub checks: ChecksSummary,
    /// What was paid for the work, a decimal string ("12.50").
    pub reward_paid: String,
    /// RFC 3339, UTC.
    pub completed_at: String,
    pub reputation_after: ReputationAfter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptAgent {
    pub handle: String,
    /// The agent's Ed25519 public key, base64 (as enrolled).
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptTask {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksSummary {
    pub passed: u32,
    pub total: u32,
    /// The names of the checks that ran.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReputationAfter {
    /// A decimal string, 0.00–100.00.
    pub score: String,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("not a compact JWS (three base64url parts separated by dots)")]
    Malformed,
    #[error("the JWS header is not the expected JSON: {0}")]
    Header(String),
    #[error("unsupported algorithm {0:?} (receipts are EdDSA)")]
    Algorithm(String),
    #[error("no key with kid {0:?} in the JWK set")]
    UnknownKey(String),
    #[error("the JWK for kid {0:?} is not an Ed25519 public key")]
    BadKey(String),
    #[error("the signature does not verify: the receipt was altered or signed by another key")]
    BadSignature,
    #[error("the payload is not a receipt: {0}")]
    Payload(String),
}

/// The RFC 8785 canonical bytes of a JSON value.
pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data (maps with string keys, numbers, strings) always serialises; anything else
    // signs as empty, which verifies as nothing anyone would accept.
    serde_json_canonicalizer::to_vec(value).unwrap_or_default()
}

/// base64url (no padding) of bytes, as JWS writes every part.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The protected header of an EdDSA JWS by `kid`.
pub fn protected_header(kid: &str, typ: &str) -> String {
    b64url(&canonical(
        &serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": typ}),
    ))
}

/// The JWS signing input `BASE64URL(header) '.' BASE64URL(payload)` of a canonical payload.
pub fn signing_input(protected: &str, payload: &[u8]) -> String {
    format!("{protected}.{}", b64url(payload))
}

/// A key of a JWK set (RFC 7517) by `kid`, as an Ed25519 verifying key.
pub fn jwk_key(jwks: &Value, kid: &str) -> Result<VerifyingKey, JwsError> {
    let jwk = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"].as_str() == Some(kid))
        .ok_or_else(|| JwsError::UnknownKey(kid.to_owned()))?;
    let bad = || JwsError::BadKey(kid.to_owned());
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(bad());
    }
    let x: [u8; 32] = jwk["x"]
        .as_str()
        .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&x).map_err(|_| bad())
}

/// Checks an EdDSA signature (base64url) over `input` with the key `kid` of `jwks`.
pub fn verify_signature(
    jwks: &Value,
    protected: &str,
    input: &[u8],
    signature: &str,
) -> Result<Value, JwsError> {
    let header: Value = URL_SAFE_NO_PAD
        .decode(protected)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| JwsError::Header("not base64url JSON".into()))?;
    let alg = header["alg"].as_str().unwrap_or_default();
    if alg != "EdDSA" {
        return Err(JwsError::Algorithm(alg.to_owned()));
    }
    let kid = header["kid"]
        .as_str()
        .ok_or_else(|| JwsError::Header("no kid".into()))?;
    let key = jwk_key(jwks, kid)?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(JwsError::BadSignature)?;
    key.verify_strict(input, &Signature::from_bytes(&sig))
        .map_err(|_| JwsError::BadSignature)?;
    Ok(header)
}

/// A verified receipt: its header (`kid`) and what it attests.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub kid: String,
    pub receipt: Receipt,
}

/// Verifies a compact-JWS receipt against a JWK set.
pub fn verify(compact: &str, jwks: &Value) -> Result<Verified, JwsError> {
    let mut parts = compact.trim().split('.');
    let (Some(protected), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let input = format!("{protected}.{payload}");
    let header = verify_signature(jwks, protected, input.as_bytes(), signature)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwsError::Malformed)?;
    let receipt: Receipt =
        serde_json::from_slice(&bytes).map_err(|e| JwsError::Payload(e.to_string()))?;
    Ok(Verified {
        kid: header["kid"].as_str().unwrap_or_default().to_owned(),
        receipt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn receipt() -> Receipt {
        Receipt {
            iss: RECEIPT_ISSUER.into(),
            jti: "r1".into(),
            iat: 1_700_000_000,
            sub: "alpha".into(),
            agent: ReceiptAgent {
                handle: "alpha".into(),
                public_key: "pk".into(),
            },
            task: ReceiptTask {
                id: "t1".into(),
                title: "Summarise ✓".into(),
            },
            poster: "beta".into(),
            submission_id: "s1".into(),
            quality_score: 87,
            checks: ChecksSummary {
                passed: 2,
                total: 3,
                names: vec!["length".into()],
            },
            reward_paid: "12.50".into(),
            completed_at: "2026-01-01T00:00:00Z".into(),
            reputation_after: ReputationAfter {
                score: "51.20".into(),
                level: "novice".into(),
            },
        }
    }

    fn jwks(key: &SigningKey, kid: &str) -> Value {
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": b64url(key.verifying_key().as_bytes())}]})
    }

    fn sign(key: &SigningKey, kid: &str, r: &Receipt) -> String {
        let input = signing_input(&protected_header(kid, RECEIPT_TYP), &canonical(r));
        format!("{input}.{}", b64url(&key.sign(input.as_bytes()).to_bytes()))
    }

    #[test]
    fn rfc8785_orders_keys_and_strips_whitespace() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1.0, "é"], "c": null}});
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"a":{"c":null,"d":[1,"é"]},"b":1}"#
        );
    }

    #[test]
    fn a_signed_receipt_verifies_and_a_changed_one_does_not() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let jws = sign(&key, "k1", &receipt());
        let v = verify(&jws, &jwks(&key, "k1")).unwrap();
        assert_eq!(v.receipt, receipt());
        assert_eq!(v.kid, "k1");

        let mut forged = receipt();
        forged.quality_score = 100;
        let parts: Vec<&str> = jws.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64url(&canonical(&forged)), parts[2]);
        assert_eq!(
            verify(&tampered, &jwks(&key, "k1")),
            Err(JwsError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            verify(&jws, &jwks(&other, "k1")),
            Err(JwsError::BadSignature)
        );
        assert_eq!(
            verify(&jws, &jwks(&key, "k2")),
            Err(JwsError::UnknownKey("k1".into()))
        );
        assert_eq!(verify("a.b", &jwks(&key, "k1")), Err(JwsError::Malformed));
    }
}
