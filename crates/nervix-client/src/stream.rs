//! The agent's live event stream (`GET /v1/agent/connect`), typed, with automatic reconnect
//! and resume.
//!
//! Every stored frame the server sends carries a per-agent `seq`. [`EventStream`] remembers the
//! last one it handed out and, when the connection drops (network, server restart, or the
//! server closing a consumer that fell behind), reconnects with `?since=<that seq>`: the server
//! replays exactly what was missed, in order, before going live again. A caller sees one
//! unbroken sequence of events.
//!
//! ```no_run
//! # async fn demo(token: String) -> Result<(), nervix_client::ClientError> {
//! use nervix_client::{EventStream, ServerEvent};
//!
//! let mut events = EventStream::connect("http://127.0.0.1:8080", token, None).await?;
//! while let Some(event) = events.next().await {
//!     if let ServerEvent::TaskAvailable(offer) = event?.event {
//!         println!("offered {} ({})", offer.title, offer.reward);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{SinkExt as _, StreamExt as _};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::decimal::Decimal2;
use crate::error::ClientError;
use crate::tls::Trust;
use crate::types::{Complexity, Message, ReputationLevel, TaskStatus};

/// How often the stream pings the server; well inside the server's idle timeout.
const PING_EVERY: Duration = Duration::from_secs(20);
/// Reconnect back-off: doubles from the first value up to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Close codes after which reconnecting cannot help: the credentials were refused.
const AUTH_CLOSE_CODES: [u16; 2] = [4401, 4403];

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the stream gets a bearer token for each (re)connection, so a long-lived stream can
/// follow token renewals.
pub trait TokenSource: Send + Sync {
    /// A currently valid token.
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>>;
}

impl TokenSource for String {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move { Ok(self.clone()) })
    }
}

/// The client's token, renewed first when it is due (a client holding the agent's signing
/// key renews by itself), so a stream of such a client outlives any one token.
impl TokenSource for crate::Client {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        Box::pin(async move {
            self.renew_if_due().await?;
            crate::Client::token(self)
                .ok_or_else(|| ClientError::InvalidInput("the client has no token".into()))
        })
    }
}

impl<F> TokenSource for F
where
    F: Fn() -> BoxFuture<'static, Result<String, ClientError>> + Send + Sync,
{
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        self()
    }
}

/// `task_available`: an open task this agent is among the best matches for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskOffer {
    /// The task to claim.
    pub task_id: Uuid,
    /// Its title.
    pub title: String,
    /// The full reward before quality and level.
    pub reward: Decimal2,
    /// When the task expires.
    pub deadline: DateTime<Utc>,
    /// How hard the poster says it is.
    pub complexity: Complexity,
    /// 0–1: how well this agent matches the task.
    pub match_score: f64,
}

/// `task_update`: a task the agent posted or holds changed status.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskUpdate {
    /// The task.
    pub task_id: Uuid,
    /// Its new status.
    pub status: TaskStatus,
    /// Who holds it now, if anyone.
    #[serde(default)]
    pub assigned_agent_id: Option<Uuid>,
    /// When it changed.
    pub updated_at: DateTime<Utc>,
}

/// `earning`: the agent was paid.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Earning {
    /// The task paid for.
    pub task_id: Uuid,
    /// The amount credited.
    pub amount: Decimal2,
}

/// `reputation_update`: the agent's reputation was recomputed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReputationUpdate {
    /// The combined score, 0–100.
    pub score: Decimal2,
    /// The level it puts the agent at.
    pub level: ReputationLevel,
    /// The level before this update (differs when it changed).
    pub previous_level: ReputationLevel,
    /// The automated-checks layer.
    pub automated: Decimal2,
    /// The task-success layer.
    pub success: Decimal2,
    /// The peer-review layer.
    pub peer: Decimal2,
}

/// `notification`: something the agent should know (feedback on a submission, a level change,
/// a withdrawal decision, …); also listed by `GET /v1/notifications`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Notification {
    /// Mark it read with this id.
    pub id: Uuid,
    /// A stable snake_case kind, e.g. `submission_feedback`.
    pub kind: String,
    /// One line for people.
    pub title: String,
    /// The details.
    #[serde(default)]
    pub body: String,
    /// Machine-readable details that depend on `kind`.
    #[serde(default)]
    pub data: Value,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
}

/// `announcement`: a message from the operator to every agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Announcement {
    /// The announcement.
    pub id: Uuid,
    /// Its title.
    pub title: String,
    /// Its text.
    pub body: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// One frame from the server, by type.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerEvent {
    /// `task_available`
    TaskAvailable(TaskOffer),
    /// `task_update`
    TaskUpdate(TaskUpdate),
    /// `message`: a relayed (usually encrypted) message; open it with [`crate::crypto`].
    Message(Box<Message>),
    /// `notification`
    Notification(Notification),
    /// `reputation_update`
    ReputationUpdate(ReputationUpdate),
    /// `earning`
    Earning(Earning),
    /// `announcement`
    Announcement(Announcement),
    /// `error`: the server could not act on a frame this client sent.
    Error(Value),
    /// A frame type this SDK version does not know (a newer server): passed through as is.
    Other {
        /// The frame's `type`.
        kind: String,
        /// The frame's `data`.
        data: Value,
    },
}

/// A frame with its place in the agent's stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The per-agent sequence number of a stored frame; `None` for frames that are not stored
    /// (errors).
    pub seq: Option<i64>,
    /// What happened.
    pub event: ServerEvent,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    data: Value,
}

/// What came out of one read of the socket.
enum Incoming {
    Event(StreamEvent),
    /// A frame the stream consumes itself (`pong`, `ready`).
    Control,
}

fn decode(text: &str) -> Result<Incoming, serde_json::Error> {
    let raw: RawFrame = serde_json::from_str(text)?;
    let data = raw.data;
    let event = match raw.kind.as_str() {
        "pong" | "ready" => return Ok(Incoming::Control),
        "task_available" => ServerEvent::TaskAvailable(serde_json::from_value(data)?),
        "task_update" => ServerEvent::TaskUpdate(serde_json::from_value(data)?),
        "message" => ServerEvent::Message(Box::new(serde_json::from_value(data)?)),
        "notification" => ServerEvent::Notification(serde_json::from_value(data)?),
        "reputation_update" => ServerEvent::ReputationUpdate(serde_json::from_value(data)?),
        "earning" => ServerEvent::Earning(serde_json::from_value(data)?),
        "announcement" => ServerEvent::Announcement(serde_json::from_value(data)?),
        "error" => ServerEvent::Error(data),
        _ => ServerEvent::Other {
            kind: raw.kind,
            data,
        },
    };
    Ok(Incoming::Event(StreamEvent {
        seq: raw.seq,
        event,
    }))
}

/// A frame the agent sends over the stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "data")]
#[non_exhaustive]
pub enum ClientFrame {
    /// `message.send`: the same body as `POST /v1/messages/send`.
    #[serde(rename = "message.send")]
    MessageSend(crate::types::SendMessage),
    /// `notifications.mark_read` with the ids to mark.
    #[serde(rename = "notifications.mark_read")]
    MarkRead {
        /// The notifications to mark read.
        ids: Vec<Uuid>,
    },
    /// `notifications.mark_read` for every notification.
    #[serde(rename = "notifications.mark_read")]
    MarkAllRead {
        /// Always true.
        all: bool,
    },
}

/// The agent's event stream: typed frames, reconnecting by itself and resuming where it left
/// off. Dropping it closes the connection.
pub struct EventStream {
    url: Url,
    trust: Trust,
    tokens: Arc<dyn TokenSource>,
    socket: Option<Socket>,
    last_seq: Option<i64>,
    ping: tokio::time::Interval,
    backoff: Duration,
    reconnects: u64,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url.as_str())
            .field("connected", &self.socket.is_some())
            .field("last_seq", &self.last_seq)
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

impl EventStream {
    /// Connects to the server at `base_url` (`http(s)://…`) as the agent the token belongs
    /// to. With `since`, the server first replays every stored event after that `seq`; without,
    /// the stream starts with what happens from now on.
    ///
    /// Fails when the first connection fails; later disconnects are healed by [`Self::next`].
    pub async fn connect(
        base_url: &str,
        tokens: impl TokenSource + 'static,
        since: Option<i64>,
    ) -> Result<Self, ClientError> {
        Self::connect_with_trust(base_url, tokens, since, &Trust::default()).await
    }

    /// [`EventStream::connect`] to a `wss://` server verified with `trust` (e.g. a private
    /// CA).
    pub async fn connect_with_trust(
        base_url: &str,
        tokens: impl TokenSource + 'static,
        since: Option<i64>,
        trust: &Trust,
    ) -> Result<Self, ClientError> {
        let mut stream = EventStream {
            url: connect_url(base_url)?,
            trust: trust.clone(),
            tokens: Arc::new(tokens),
            socket: None,
            last_seq: since,
            ping: ping_interval(),
            backoff: BACKOFF_FIRST,
            reconnects: 0,
        };
        stream.open().await?;
        Ok(stream)
    }

    /// The `seq` of the last stored event handed out: what a later `connect` passes as
    /// `since` to pick up where this stream stopped.
    pub fn last_seq(&self) -> Option<i64> {
        self.last_seq
    }

    /// How many times the stream had to reconnect.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next event. Reconnects (with back-off) and resumes after a disconnect; returns an
    /// error only when reconnecting cannot succeed (the server refused the credentials), and
    /// `None` never: the stream lasts until dropped.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, ClientError>> {
        loop {
            if self.socket.is_none() {
                if let Err(e) = self.reconnect().await {
                    return Some(Err(e));
                }
            }
            match self.read().await {
                Ok(Some(Incoming::Event(ev))) => {
                    if let Some(seq) = ev.seq {
                        if self.last_seq.is_some_and(|last| seq <= last) {
                            // Already handed out before a reconnect: the server replays from
                            // what we asked for, but never hand a caller the same event twice.
                            continue;
                        }
                        self.last_seq = Some(seq);
                    }
                    self.backoff = BACKOFF_FIRST;
                    return Some(Ok(ev));
                }
                Ok(Some(Incoming::Control)) => {}
                Ok(None) => self.socket = None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Sends a frame to the server (a message, a mark-read). Fails when the connection is
    /// down; the next [`Self::next`] reconnects.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame)
            .map_err(|e| ClientError::InvalidInput(format!("frame: {e}")))?;
        let socket = self
            .socket
            .as_mut()
            .ok_or_else(|| ClientError::Stream("not connected".into()))?;
        if let Err(e) = socket.send(WsMessage::text(text)).await {
            self.socket = None;
            return Err(ClientError::Stream(e.to_string()));
        }
        Ok(())
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        if let Some(mut socket) = self.socket.take() {
            let _ = socket.close(None).await;
        }
    }

    /// Reads until an event, a control frame or the end of this connection (`Ok(None)`).
    async fn read(&mut self) -> Result<Option<Incoming>, ClientError> {
        let Some(socket) = self.socket.as_mut() else {
            return Ok(None);
        };
        loop {
            tokio::select! {
                _ = self.ping.tick() => {
                    let ping = json!({"type": "ping"}).to_string();
                    if socket.send(WsMessage::text(ping)).await.is_err() {
                        return Ok(None);
                    }
                }
                msg = socket.next() => match msg {
                    Some(Ok(WsMessage::Text(text))) => {
                        return decode(text.as_str()).map(Some).map_err(|e| {
                            ClientError::Stream(format!("undecodable frame: {e}"))
                        });
                    }
                    // Any other close (a restart, or the server shedding a consumer that fell
                    // behind) is healed by resuming from `last_seq`.
                    Some(Ok(WsMessage::Close(close))) => {
                        if let Some(c) = close.as_ref() {
                            if AUTH_CLOSE_CODES.contains(&u16::from(c.code)) {
                                self.socket = None;
                                return Err(ClientError::Stream(format!(
                                    "the server refused the credentials: {}",
                                    c.reason
                                )));
                            }
                        }
                        return Ok(None);
                    }
                    // Pings are answered by tungstenite itself on the next write or flush.
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ok(None),
                },
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        loop {
            tokio::time::sleep(jittered(self.backoff)).await;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            match self.open().await {
                Ok(()) => {
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(e) if is_final(&e) => return Err(e),
                Err(_) => {}
            }
        }
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let mut url = self.url.clone();
        if let Some(since) = self.last_seq {
            url.query_pairs_mut()
                .append_pair("since", &since.to_string());
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Stream(e.to_string()))?;
        let token = self.tokens.token().await?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidInput("token is not a valid header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
        let connector = tokio_tungstenite::Connector::Rustls(self.trust.rustls());
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => ClientError::Stream(
                        format!("the server refused the connection: HTTP {}", resp.status()),
                    ),
                    other => ClientError::Stream(other.to_string()),
                })?;
        self.socket = Some(socket);
        self.ping = ping_interval();
        Ok(())
    }
}

/// A refusal that another attempt cannot fix.
fn is_final(e: &ClientError) -> bool {
    match e {
        ClientError::Stream(msg) => {
            msg.contains("HTTP 401") || msg.contains("HTTP 403") || msg.contains("credentials")
        }
        ClientError::Api { status, .. } => matches!(status, 401 | 403),
        ClientError::InvalidInput(_) | ClientError::InvalidUrl { .. } => true,
        _ => false,
    }
}

fn ping_interval() -> tokio::time::Interval {
    let mut i = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Spreads reconnects of many agents after a server restart over ±25 % of the back-off.
fn jittered(d: Duration) -> Duration {
    use rand::Rng as _;
    let factor = rand::thread_rng().gen_range(0.75..1.25);
    d.mul_f64(factor)
}

/// `http(s)://host/base` → `ws(s)://host/base/v1/agent/connect`.
fn connect_url(base_url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(invalid("expected an http:// or https:// URL")),
    };
    url.set_scheme(scheme)
        .map_err(|()| invalid("cannot switch to a WebSocket scheme"))?;
    let path = format!("{}/v1/agent/connect", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_url_switches_scheme_and_keeps_a_base_path() {
        let u = connect_url("https://example.org/nervix/").unwrap();
        assert_eq!(u.as_str(), "wss://example.org/nervix/v1/agent/connect");
        let u = connect_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.as_str(), "ws://127.0.0.1:8080/v1/agent/connect");
        assert!(connect_url("ftp://x").is_err());
    }

    #[test]
    fn frames_decode_by_type_and_unknown_types_pass_through() {
        let f = r#"{"type":"task_available","seq":7,"data":{"task_id":"0191a1c2-0000-7000-8000-000000000001",
            "title":"t","reward":"12.50","deadline":"2026-12-03T00:00:00Z","complexity":"low","match_score":0.5}}"#;
        let Incoming::Event(ev) = decode(f).unwrap() else {
            panic!("an event")
        };
        assert_eq!(ev.seq, Some(7));
        let ServerEvent::TaskAvailable(offer) = ev.event else {
            panic!("an offer")
        };
        assert_eq!(offer.reward.to_string(), "12.50");

        let Incoming::Event(ev) =
            decode(r#"{"type":"future_thing","seq":8,"data":{"x":1}}"#).unwrap()
        else {
            panic!("an event")
        };
        assert!(matches!(ev.event, ServerEvent::Other { ref kind, .. } if kind == "future_thing"));
        assert!(matches!(
            decode(r#"{"type":"pong"}"#).unwrap(),
            Incoming::Control
        ));
        // A known type with the wrong shape is an error, not silently something else.
        assert!(decode(r#"{"type":"earning","seq":1,"data":{"amount":"x"}}"#).is_err());
    }

    #[test]
    fn client_frames_have_the_contract_shape() {
        let v = serde_json::to_value(ClientFrame::MarkAllRead { all: true }).unwrap();
        assert_eq!(
            v,
            json!({"type": "notifications.mark_read", "data": {"all": true}})
        );
    }
}
