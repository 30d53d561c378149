//! What an agent declares about itself, parsed into types that cannot hold an invalid value.
//!
//! Enrollment and the config PATCH take the same fields; each rule lives in exactly one
//! `parse` here, and the error names the wire field so a client can fix it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use serde_json::Value;

use crate::FieldError;

/// An agent seen within this window counts as online (profiles, directory, matching).
pub const ONLINE_WINDOW: chrono::Duration = chrono::Duration::minutes(5);

/// A display name: 1–128 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub const FIELD: &'static str = "agent_name";
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let n = s.trim();
        if n.is_empty() || n.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(Self::FIELD, "must be 1 to 128 characters"));
        }
        Ok(AgentName(n.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Capability tags such as `coding` or `research`: each 1–64 chars of `[a-z0-9._:-]`
/// (lower-cased), at most 64 of them, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Capabilities(Vec<String>);

impl Capabilities {
    pub const MAX: usize = 64;
    pub const MAX_LEN: usize = 64;

    /// `field` names the list on the wire (`capabilities`, `requirements.capabilities`, …).
    pub fn parse(field: &str, caps: &[String]) -> Result<Self, FieldError> {
        if caps.len() > Self::MAX {
            return Err(FieldError::new(field, "at most 64 capabilities"));
        }
        let mut out = caps
            .iter()
            .map(|c| Self::parse_one(field, c))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        out.dedup();
        Ok(Capabilities(out))
    }

    /// One tag, as a filter names it (`?capability=`).
    pub fn parse_one(field: &str, s: &str) -> Result<String, FieldError> {
        let t = s.trim().to_ascii_lowercase();
        if t.is_empty() || t.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                field,
                "each capability must be 1 to 64 characters",
            ));
        }
        let allowed = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | ':')
        };
        if !t.chars().all(allowed) {
            return Err(FieldError::new(
                field,
                "capabilities may only contain a-z, 0-9, '.', '_', '-' and ':'",
            ));
        }
        Ok(t)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// Free-form agent metadata: a JSON object of at most 16 KiB serialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Metadata(Value);

impl Metadata {
    pub const FIELD: &'static str = "metadata";
    pub const MAX_BYTES: usize = 16 * 1024;

    pub fn parse(v: Value) -> Result<Self, FieldError> {
        if !v.is_object() {
            return Err(FieldError::new(Self::FIELD, "must be a JSON object"));
        }
        if serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len()) > Self::MAX_BYTES {
            return Err(FieldError::new(Self::FIELD, "must be at most 16 KiB"));
        }
        Ok(Metadata(v))
    }

    pub fn empty() -> Self {
        Metadata(Value::Object(serde_json::Map::new()))
    }

    pub fn into_inner(self) -> Value {
        self.0
    }
}

/// How many tasks an agent holds at once: 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MaxConcurrentTasks(i64);

impl MaxConcurrentTasks {
    pub const FIELD: &'static str = "max_concurrent_tasks";
    pub const DEFAULT: MaxConcurrentTasks = MaxConcurrentTasks(3);

    pub fn parse(n: i64) -> Result<Self, FieldError> {
        if (1..=100).contains(&n) {
            Ok(MaxConcurrentTasks(n))
        } else {
            Err(FieldError::new(Self::FIELD, "must be between 1 and 100"))
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

/// 32 raw key bytes, standard padded base64 on the wire.
fn key_bytes(field: &str, b64: &str) -> Result<[u8; 32], FieldError> {
    STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            FieldError::new(
                field,
                "must be 32 bytes, base64 (standard alphabet, padded)",
            )
        })
}

/// An agent's identity key: a usable Ed25519 verification key (a valid point, not of small
/// order), whose signatures are checked with `verify_strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub const FIELD: &'static str = "public_key";

    pub fn parse(b64: &str) -> Result<Self, FieldError> {
        let bytes = key_bytes(Self::FIELD, b64)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| FieldError::new(Self::FIELD, "is not a valid Ed25519 public key"))?;
        if key.is_weak() {
            return Err(FieldError::new(Self::FIELD, "is a weak Ed25519 key"));
        }
        Ok(PublicKey(key))
    }

    /// The canonical text stored and served: standard padded base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

/// An X25519 public key for NaCl `crypto_box` messages. The server only stores and serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EncryptionKey(String);

impl EncryptionKey {
    pub const FIELD: &'static str = "encryption_public_key";

    pub fn parse(b64: &str) -> Result<Self, FieldError> {
        key_bytes(Self::FIELD, b64).map(|bytes| EncryptionKey(STANDARD.encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn capabilities_are_normalised() {
        let caps = vec!["Coding".into(), " research".into(), "coding".into()];
        assert_eq!(
            Capabilities::parse("capabilities", &caps)
                .unwrap()
                .as_slice(),
            ["coding", "research"]
        );
        for bad in ["", "a b", &"x".repeat(65)] {
            let e = Capabilities::parse("requirements.capabilities", &[bad.into()]).unwrap_err();
            assert_eq!(e.field, "requirements.capabilities");
        }
        let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        assert!(Capabilities::parse("capabilities", &many).is_err());
    }

    #[test]
    fn names_metadata_and_capacity() {
        assert_eq!(AgentName::parse("  Alpha ").unwrap().as_str(), "Alpha");
        assert!(AgentName::parse("   ").is_err());
        assert!(AgentName::parse(&"é".repeat(129)).is_err());
        assert!(AgentName::parse(&"é".repeat(128)).is_ok());
        assert!(Metadata::parse(serde_json::json!([1])).is_err());
        assert!(Metadata::parse(serde_json::json!({"a": "x".repeat(17 * 1024)})).is_err());
        assert!(Metadata::parse(serde_json::json!({"a": 1})).is_ok());
        assert!(MaxConcurrentTasks::parse(0).is_err());
        assert!(MaxConcurrentTasks::parse(101).is_err());
        assert_eq!(MaxConcurrentTasks::parse(100).unwrap().get(), 100);
    }

    #[test]
    fn keys() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let b64 = STANDARD.encode(key.to_bytes());
        assert_eq!(
            PublicKey::parse(&format!(" {b64} ")).unwrap().to_base64(),
            b64
        );
        // The identity point is of small order: a signature "by" it proves nothing.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::parse(&STANDARD.encode(identity))
                .unwrap_err()
                .message,
            "is a weak Ed25519 key"
        );
        assert!(PublicKey::parse("not base64").is_err());
        assert!(PublicKey::parse(&STANDARD.encode([1u8; 31])).is_err());
        assert_eq!(
            EncryptionKey::parse(&format!("{b64}\n")).unwrap().as_str(),
            b64
        );
        assert_eq!(
            EncryptionKey::parse("AAAA").unwrap_err().field,
            "encryption_public_key"
        );
    }

    proptest! {
        #[test]
        fn parsed_capabilities_are_sorted_valid_and_unique(caps in proptest::collection::vec("[A-Za-z0-9._:-]{1,10}", 0..20)) {
            let parsed = Capabilities::parse("capabilities", &caps).unwrap();
            let v = parsed.as_slice();
            prop_assert!(v.windows(2).all(|w| w[0] < w[1]));
            for c in v {
                prop_assert_eq!(Capabilities::parse_one("c", c).unwrap(), c.clone());
            }
        }
    }
}
