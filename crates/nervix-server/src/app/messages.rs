//! Messages between agents, direct or in channels, and the channels themselves.
//!
//! The server relays; it never reads. A payload (usually a NaCl `crypto_box` from the sender's
//! to the recipient's `encryption_public_key`) is stored as the bytes that came and sent on as
//! the same bytes, to the recipient's connections (a `message` frame) and through history.
//! Who may see what is decided by storage on every read and send: the two parties of a direct
//! conversation, the current members of a channel; to anyone else a channel does not exist
//! (404, never 403, which would confirm it does).
//!
//! [`send`] is the one way in, for `POST /v1/messages/send` and the WebSocket `message.send`
//! frame alike: it charges the sender's message quota (`crate::quota`), honours an Idempotency-Key (see
//! [`idempotency_key`]) and returns the response body the REST route sends.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{SubsecRound, Utc};
use nervix_core::message::{ChannelName, Members, MessageTarget, SendMessage};
use nervix_core::FieldError;
use nervix_store::{
    ChannelDetail, ChannelRecord, Conversation, EventFrame, HistoryQuery, MessageRecord, MessageTo,
    NewChannel, NewMembers, NewMessage, PageQuery, SentMessage, StoreError,
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::idempotency::{self, Key, Outcome, Stored};
use super::{audit, events, App, Caller, Error, ErrorKind, Result};
use crate::bus::Frame;

/// The route a send's Idempotency-Key is scoped to, whichever transport carried the send.
pub const SEND_PATH: &str = "/v1/messages/send";

/// The Idempotency-Key of a send, from the REST header or the `message.send` frame. Scoped to
/// `POST /v1/messages/send` and compared by the parsed request, so that a retry gets the
/// first response over either transport, and the same key with another message is 422.
pub fn idempotency_key(key: Option<&str>, req: &SendMessage) -> Result<Option<Key>> {
    Key::parse(key, "POST", SEND_PATH, req.canonical().as_bytes())
}

/// The response to a send: 201 `{"id", "created_at"}`.
fn sent_body(sent: &SentMessage) -> (u16, Value) {
    (
        201,
        json!({ "id": sent.message.id, "created_at": sent.message.created_at }),
    )
}

/// Sends a message from the caller and delivers it to its recipients' connections. Returns
/// the response (status and body) that `POST /v1/messages/send` sends: fresh, or the stored
/// one when `key` was answered before.
///
/// Refusals: over the message quota 429 `rate_limited`; an unknown recipient or a channel the
/// caller is not a member of 404; `encrypted` to an agent without an `encryption_public_key`
/// 422 `no_encryption_key` (naming `to`); a key reused with another message 422.
pub async fn send(
    app: &App,
    caller: &Caller,
    req: SendMessage,
    key: Option<&Key>,
) -> Result<Stored> {
    app.message_quota.check(caller.id).map_err(|secs| {
        Error::new(
            ErrorKind::RateLimited,
            "rate_limited",
            "too many messages; retry later",
        )
        .retry_after(secs)
    })?;
    let outcome = idempotency::once(app, caller, key, |saver| async {
        let (to, to_handle) = match &req.target {
            MessageTarget::Agent(name) => {
                let recipient = app.find_agent(name).await.map_err(|e| match e.kind {
                    ErrorKind::NotFound => Error::not_found("recipient agent"),
                    _ => e,
                })?;
                if req.encrypted && recipient.encryption_public_key.is_none() {
                    let mut e = Error::invalid(
                        "no_encryption_key",
                        "the recipient has no encryption_public_key to encrypt to",
                    );
                    e.errors = vec![FieldError::new(
                        "to",
                        "has no encryption_public_key; send with encrypted: false",
                    )];
                    return Err(e);
                }
                (MessageTo::Agent(recipient.id), Some(recipient.handle))
            }
            MessageTarget::Channel(c) => (MessageTo::Channel(*c), None),
        };
        let mut m = NewMessage {
            id: Uuid::now_v7(),
            sender_id: caller.id,
            to,
            encrypted: req.encrypted,
            payload: req.payload.clone(),
            nonce: req.nonce.map(|n| n.to_vec()),
            // What both backends keep, so the response says what history will.
            at: Utc::now().trunc_subsecs(6),
            frame: None,
        };
        let frame = frame(&m, &caller.handle, to_handle);
        let (kind, data) = frame.parts().map_err(Error::internal)?;
        m.frame = Some(EventFrame { kind, data });
        let save = saver.map(|s| s.save(|sent: &SentMessage| Some(sent_body(sent))));
        match app.store.send_message(&m, save).await {
            Ok(sent) => Ok((sent, frame)),
            Err(StoreError::NotFound) => Err(Error::not_found("channel")),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    match outcome {
        Outcome::Done((sent, frame)) => {
            // Stored with the message: published now, with no write in between.
            events::publish_stored(app, &sent.events, &frame).await;
            let (status, body) = sent_body(&sent);
            Ok(Stored { status, body })
        }
        // Delivered when it was first sent.
        Outcome::Replayed(stored) => Ok(stored),
    }
}

/// The `message` frame of a message about to be stored.
fn frame(m: &NewMessage, sender_handle: &str, recipient_handle: Option<String>) -> Frame {
    let (to, channel) = match m.to {
        MessageTo::Agent(a) => (Some(a), None),
        MessageTo::Channel(c) => (None, Some(c)),
    };
    Frame::Message {
        id: m.id,
        from: m.sender_id,
        from_agent_id: sender_handle.to_owned(),
        to,
        to_agent_id: recipient_handle,
        channel,
        encrypted: m.encrypted,
        payload: STANDARD.encode(&m.payload),
        nonce: m.nonce.as_ref().map(|n| STANDARD.encode(n)),
        created_at: m.at,
    }
}

/// Whose history to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryOf {
    /// The caller's direct messages with this agent (UUID or handle).
    Agent(String),
    /// A channel the caller is a member of.
    Channel(Uuid),
}

/// A conversation of the caller's, newest first, older than `before`; `limit` rows. Nobody
/// reads another pair's conversation: `Agent(x)` is only ever the caller and `x`.
pub async fn history(
    app: &App,
    caller: &Caller,
    of: HistoryOf,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MessageRecord>> {
    let conversation = match of {
        HistoryOf::Agent(name) => Conversation::With(app.find_agent(&name).await?.id),
        HistoryOf::Channel(id) => Conversation::Channel(id),
    };
    let q = HistoryQuery {
        viewer: caller.id,
        conversation,
        before,
        limit,
    };
    match app.store.message_history(&q).await {
        Err(StoreError::NotFound) => Err(Error::not_found("channel")),
        other => Ok(other?),
    }
}

/// The agents `members` names, each by id; an unknown one is 404 naming its entry.
async fn resolve(app: &App, members: &Members) -> Result<Vec<Uuid>> {
    let mut out = Vec::with_capacity(members.len());
    for (i, name) in members.entries() {
        match app.find_agent(name).await {
            Ok(a) => out.push(a.id),
            Err(e) if e.kind == ErrorKind::NotFound => {
                let field = Members::field(i);
                let mut e = Error::new(
                    ErrorKind::NotFound,
                    "not_found",
                    format!("{field}: no such agent"),
                );
                e.errors = vec![FieldError::new(field, "no such agent")];
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Creates a channel with the caller and `members` in it (audited).
pub async fn create_channel(
    app: &App,
    caller: &Caller,
    name: ChannelName,
    members: Members,
) -> Result<ChannelDetail> {
    let ids = resolve(app, &members).await?;
    let id = Uuid::now_v7();
    let entry = audit::by(
        caller,
        "channel.create",
        Some(id.to_string()),
        json!({ "name": name.as_str(), "members": ids }),
    );
    let c = NewChannel {
        id,
        name: name.into_inner(),
        created_by: caller.id,
        members: ids,
        at: entry.at.trunc_subsecs(6),
    };
    Ok(app.store.create_channel(&c, &entry).await?)
}

/// Adds `members` to a channel the caller is a member of (audited: who was added). Bringing
/// back an agent that left is adding it. At most [`Members::MAX_PER_CHANNEL`] members.
pub async fn add_members(
    app: &App,
    caller: &Caller,
    channel: Uuid,
    members: Members,
) -> Result<ChannelDetail> {
    let ids = resolve(app, &members).await?;
    let entry = audit::by(
        caller,
        "channel.members.add",
        Some(channel.to_string()),
        json!({}),
    );
    let a = NewMembers {
        channel_id: channel,
        by: caller.id,
        members: ids,
        max_members: Members::MAX_PER_CHANNEL,
        at: entry.at.trunc_subsecs(6),
    };
    match app.store.add_channel_members(&a, &entry).await {
        Err(StoreError::NotFound) => Err(Error::not_found("channel")),
        other => Ok(other?),
    }
}

/// The caller leaves a channel (audited): it can no longer read or send to it, unless a
/// member adds it again.
pub async fn leave(app: &App, caller: &Caller, channel: Uuid) -> Result<()> {
    let entry = audit::by(
        caller,
        "channel.leave",
        Some(channel.to_string()),
        json!({}),
    );
    match app.store.leave_channel(channel, caller.id, &entry).await {
        Err(StoreError::NotFound) => Err(Error::not_found("channel")),
        other => Ok(other?),
    }
}

/// A channel the caller is a member of, with its members.
pub async fn channel(app: &App, caller: &Caller, id: Uuid) -> Result<ChannelDetail> {
    app.store
        .channel(id, caller.id)
        .await?
        .ok_or_else(|| Error::not_found("channel"))
}

/// The caller's channels, newest first, after the cursor.
pub async fn channels(
    app: &App,
    caller: &Caller,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ChannelRecord>> {
    Ok(app
        .store
        .channels_of(
            caller.id,
            &PageQuery {
                cursor: before,
                limit,
            },
        )
        .await?)
}
