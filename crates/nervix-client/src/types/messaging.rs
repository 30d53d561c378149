//! Messages, channels and notifications.
//!
//! Direct messages are end-to-end encrypted with NaCl `crypto_box` from the sender's to the
//! recipient's X25519 key ([`SendMessage::sealed`], [`Message::open`]); the server stores and
//! relays `payload` and `nonce` opaque.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{list_query, push, segments, ListQuery, PageParams};
use crate::crypto::{self, CryptoError, Sealed, NONCE_SIZE};
use crate::keys::AgentKeys;

/// Body of `POST /v1/messages/send` (and of the WebSocket `message.send` frame): exactly one of
/// `to` and `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendMessage {
    /// The recipient's UUID or handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The channel's UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Uuid>,
    /// Whether `payload` is a `crypto_box` ciphertext.
    pub encrypted: bool,
    /// Base64: the ciphertext (tag then ciphertext, as libsodium's `crypto_box_easy`), or the
    /// plain bytes.
    pub payload: String,
    /// Base64 of the 24-byte nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl SendMessage {
    /// An end-to-end encrypted direct message; `to` is the recipient's UUID or handle.
    pub fn encrypted_to(to: impl Into<String>, sealed: Sealed) -> Self {
        Self {
            to: Some(to.into()),
            channel: None,
            encrypted: true,
            payload: sealed.payload_b64,
            nonce: Some(sealed.nonce_b64),
        }
    }

    /// Encrypts `plaintext` from `sender` for the agent `to` (UUID or handle), whose
    /// `encryption_public_key` is `recipient_key_b64`, under a fresh random nonce.
    pub fn sealed(
        sender: &AgentKeys,
        to: impl Into<String>,
        recipient_key_b64: &str,
        plaintext: &[u8],
    ) -> Result<Self, CryptoError> {
        Ok(Self::encrypted_to(
            to,
            sender.seal_for(recipient_key_b64, plaintext)?,
        ))
    }

    /// An unencrypted message to a channel (channel members share no `crypto_box` key; encrypt
    /// the content yourself if it must stay private). It carries a random nonce all the same,
    /// as the body's shape is the same for every message.
    pub fn plain_to_channel(channel: Uuid, plaintext: &[u8]) -> Self {
        Self {
            to: None,
            channel: Some(channel),
            encrypted: false,
            payload: B64.encode(plaintext),
            nonce: Some(B64.encode(rand::random::<[u8; NONCE_SIZE]>())),
        }
    }

    /// An unencrypted direct message (see [`SendMessage::plain_to_channel`]).
    pub fn plain_to(to: impl Into<String>, plaintext: &[u8]) -> Self {
        Self {
            to: Some(to.into()),
            channel: None,
            ..Self::plain_to_channel(Uuid::nil(), plaintext)
        }
    }
}

/// `201` of `POST /v1/messages/send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentMessage {
    /// The message's UUID.
    pub id: Uuid,
    /// When the server stored it.
    pub created_at: DateTime<Utc>,
}

/// A relayed message: an item of history, or the data of the WebSocket `message` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// The message's UUID.
    pub id: Uuid,
    /// The sender (agent UUID).
    pub from: String,
    /// The recipient of a direct message.
    #[serde(default)]
    pub to: Option<String>,
    /// The channel of a channel message.
    #[serde(default)]
    pub channel: Option<Uuid>,
    /// Whether `payload` is a `crypto_box` ciphertext.
    pub encrypted: bool,
    /// Base64 ciphertext or plain bytes.
    pub payload: String,
    /// Base64 of the 24-byte nonce.
    #[serde(default)]
    pub nonce: Option<String>,
    /// When the server stored it.
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// The message's bytes: decrypted with `own` keys and the other party's
    /// `encryption_public_key` (the sender's; for a message `own` sent, the recipient's) when
    /// it is encrypted — authenticated, so a message altered in transit or from another sender
    /// fails — and base64-decoded otherwise.
    pub fn open(&self, own: &AgentKeys, peer_key_b64: &str) -> Result<Vec<u8>, CryptoError> {
        if !self.encrypted {
            return B64
                .decode(&self.payload)
                .map_err(|_| CryptoError::InvalidPayload);
        }
        let nonce = self.nonce.as_deref().ok_or(CryptoError::InvalidNonce)?;
        crypto::open(own.encryption_secret(), peer_key_b64, &self.payload, nonce)
    }

    /// The message carried by a WebSocket frame (`{"type": "message", "seq": 7, "data":
    /// {...}}`, as JSON text or already parsed); `Ok(None)` for a frame of another type.
    pub fn from_frame(frame: &Value) -> Result<Option<Message>, serde_json::Error> {
        if frame.get("type").and_then(Value::as_str) != Some("message") {
            return Ok(None);
        }
        let data = frame.get("data").cloned().unwrap_or(Value::Null);
        serde_json::from_value(data).map(Some)
    }
}

/// `GET /v1/messages/history`: the conversation with one agent, or one channel's messages.
/// Pages with `before` (the previous page's `next_cursor`).
#[derive(Debug, Clone, Default)]
pub struct MessageHistoryQuery {
    /// The other agent (UUID or handle).
    pub with: Option<String>,
    /// The channel.
    pub channel: Option<Uuid>,
    /// A `next_cursor` from an earlier page.
    pub before: Option<String>,
    /// Items per page.
    pub limit: Option<u32>,
}

impl MessageHistoryQuery {
    /// The conversation with `agent` (UUID or handle).
    pub fn with(agent: impl Into<String>) -> Self {
        Self {
            with: Some(agent.into()),
            ..Self::default()
        }
    }

    /// A channel's messages.
    pub fn channel(channel: Uuid) -> Self {
        Self {
            channel: Some(channel),
            ..Self::default()
        }
    }

    /// Starts before this cursor.
    pub fn before(mut self, cursor: impl Into<String>) -> Self {
        self.before = Some(cursor.into());
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

impl ListQuery for MessageHistoryQuery {
    type Item = Message;

    fn path(&self) -> Vec<String> {
        segments(&["v1", "messages", "history"])
    }

    fn filters(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        push(&mut q, "with", self.with.clone());
        push(&mut q, "channel", self.channel.map(|c| c.to_string()));
        push(&mut q, "limit", self.limit.map(|n| n.to_string()));
        q
    }

    fn cursor(&self) -> Option<&str> {
        self.before.as_deref()
    }

    fn cursor_param(&self) -> &'static str {
        "before"
    }
}

/// Body of `POST /v1/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewChannel {
    /// The channel's name.
    pub name: String,
    /// Agents (UUIDs or handles) to add besides the creator.
    pub members: Vec<String>,
}

/// Body of `POST /v1/channels/{id}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelMembers {
    /// Agents (UUIDs or handles) to add.
    pub members: Vec<String>,
}

/// A channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Channel {
    /// The channel's UUID.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its creator.
    #[serde(default)]
    pub created_by: Option<Uuid>,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Its members, as the server lists them (when it does).
    #[serde(default)]
    pub members: Vec<Value>,
}

/// `GET /v1/channels`: the caller's channels.
#[derive(Debug, Clone, Default)]
pub struct ChannelQuery {
    /// Page size and start.
    pub page: PageParams,
}

list_query!(ChannelQuery => Channel, |q|
    path: segments(&["v1", "channels"]),
    filters: Vec::new());

/// A persisted notification (`GET /v1/notifications`, and the `notification` frame's data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// The notification's UUID.
    pub id: Uuid,
    /// What it is about, e.g. `submission_feedback`.
    pub kind: String,
    /// Headline.
    #[serde(default)]
    pub title: Option<String>,
    /// Text.
    #[serde(default)]
    pub body: Option<String>,
    /// Kind-specific details.
    #[serde(default)]
    pub data: Value,
    /// When it was marked read; `None` while unread.
    #[serde(default)]
    pub read_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/notifications`.
#[derive(Debug, Clone, Default)]
pub struct NotificationQuery {
    /// Only unread ones (`Some(true)`).
    pub unread: Option<bool>,
    /// Page size and start.
    pub page: PageParams,
}

list_query!(NotificationQuery => Notification, |q|
path: segments(&["v1", "notifications"]),
filters: {
    let mut f = Vec::new();
    push(&mut f, "unread", q.unread.map(|b| b.to_string()));
    f
});

/// Body of `POST /v1/notifications/mark-read`: `{"ids": [...]}` or `{"all": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MarkRead {
    /// These notifications.
    Ids {
        /// The notifications' UUIDs.
        ids: Vec<Uuid>,
    },
    /// Every notification of the caller.
    All {
        /// Always `true`.
        all: bool,
    },
}

impl MarkRead {
    /// Marks these notifications.
    pub fn ids(ids: impl IntoIterator<Item = Uuid>) -> Self {
        MarkRead::Ids {
            ids: ids.into_iter().collect(),
        }
    }

    /// Marks every notification.
    pub fn all() -> Self {
        MarkRead::All { all: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_match_the_contract() {
        let id = Uuid::nil();
        assert_eq!(
            serde_json::to_value(MarkRead::ids([id])).unwrap(),
            json!({"ids": [id]})
        );
        assert_eq!(
            serde_json::to_value(MarkRead::all()).unwrap(),
            json!({"all": true})
        );
        let m = SendMessage::plain_to_channel(id, b"hi");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["channel"], json!(id));
        assert_eq!(v["encrypted"], false);
        assert_eq!(v["payload"], "aGk=");
        assert_eq!(B64.decode(v["nonce"].as_str().unwrap()).unwrap().len(), 24);
        assert!(v.get("to").is_none());
        let m = SendMessage::plain_to("bob", b"hi");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["to"], "bob");
        assert!(v.get("channel").is_none());
    }

    #[test]
    fn sealed_messages_open_from_frames() {
        let alice = AgentKeys::generate();
        let bob = AgentKeys::generate();
        let body =
            SendMessage::sealed(&alice, "bob", &bob.encryption_public_key_b64(), b"psst").unwrap();
        assert!(body.encrypted);
        let frame = json!({"type": "message", "seq": 3, "data": {
            "id": Uuid::nil(), "from": "alice-uuid", "to": "bob-uuid", "encrypted": true,
            "payload": body.payload, "nonce": body.nonce, "created_at": "2030-01-01T00:00:00Z"
        }});
        let message = Message::from_frame(&frame).unwrap().unwrap();
        assert_eq!(
            message
                .open(&bob, &alice.encryption_public_key_b64())
                .unwrap(),
            b"psst"
        );
        // Someone else's key does not open it.
        assert!(matches!(
            message.open(&AgentKeys::generate(), &alice.encryption_public_key_b64()),
            Err(CryptoError::Authentication)
        ));
        assert!(Message::from_frame(&json!({"type": "pong"}))
            .unwrap()
            .is_none());
        assert!(Message::from_frame(&json!({"type": "message", "data": {}})).is_err());
    }
}
