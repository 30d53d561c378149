//! Enrollment and auth.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Agent, Role};
use crate::keys::AgentKeys;

/// Body of `POST /v1/enroll`. Build it with [`EnrollRequest::new`], which fills in the keys.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnrollRequest {
    /// The handle: 3–64 characters of `[a-z0-9._-]`, starting with a letter or digit.
    pub agent_id: String,
    /// Display name (the server defaults it to the handle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// Base64 Ed25519 public key.
    pub public_key: String,
    /// Base64 X25519 key others encrypt messages to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_public_key: Option<String>,
    /// What the agent can do, e.g. `coding`.
    pub capabilities: Vec<String>,
    /// Free-form JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// How many tasks the agent holds at once (server default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
}

impl EnrollRequest {
    /// An enrollment of `agent_id` with both public keys of `keys`.
    pub fn new(agent_id: impl Into<String>, keys: &AgentKeys) -> Self {
        Self {
            agent_id: agent_id.into(),
            public_key: keys.public_key_b64(),
            encryption_public_key: Some(keys.encryption_public_key_b64()),
            ..Self::default()
        }
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.agent_name = Some(name.into());
        self
    }

    /// Sets the capabilities.
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the metadata object.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets how many tasks the agent holds at once.
    pub fn max_concurrent_tasks(mut self, n: u32) -> Self {
        self.max_concurrent_tasks = Some(n);
        self
    }
}

/// `201` of `POST /v1/enroll`: the challenge to sign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Goes into `POST /v1/enroll/{enrollment_id}/respond`.
    pub enrollment_id: Uuid,
    /// Sign its UTF-8 bytes exactly as given.
    pub challenge: String,
    /// The challenge is refused after this.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/auth/challenge` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthChallenge {
    /// Goes into `POST /v1/auth/token`.
    pub challenge_id: Uuid,
    /// Sign its UTF-8 bytes exactly as given.
    pub challenge: String,
    /// The challenge is refused after this.
    pub expires_at: DateTime<Utc>,
}

/// Body of enroll/respond, `/v1/auth/token` and `/v1/auth/rotate`. `Debug` redacts the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token (a JWT).
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// The agent the token belongs to (public view).
    pub agent: Agent,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("agent", &self.agent)
            .finish()
    }
}

/// `GET /v1/auth/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// Always `true` (an invalid token gets a 401 instead).
    pub valid: bool,
    /// The agent's handle (its `agent_id`).
    pub agent_id: String,
    /// The role the token acts with.
    pub role: Role,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// What the token may do (e.g. `tasks:read`): its scopes within what the role allows.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `POST /v1/auth/tokens`: a narrower token for the same agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    /// The scopes the new token keeps, each one the presenting token has (e.g.
    /// `["profile:read", "tasks:read", "money:read"]` for a read-only dashboard).
    pub scopes: Vec<String>,
    /// Seconds until it expires (60 up to the login token lifetime, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

/// The token `POST /v1/auth/tokens` minted.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The bearer token (a JWT).
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// The scopes it carries.
    pub scopes: Vec<String>,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish()
    }
}
