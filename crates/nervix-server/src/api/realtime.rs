//! `GET /v1/agent/connect`: an agent's WebSocket. It authenticates (by header, or by a first
//! `auth` frame), then carries the agent's stream (the hub's [`Subscription`]: a replay from
//! `since`, then live frames) and the frames the agent sends, until either side closes, the
//! client falls silent or behind, or its token stops being valid.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use futures::SinkExt;
use nervix_core::Scope;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{self, auth, messages, notifications, Caller, ErrorKind};
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::client_ip;
use crate::hub::{Ended, Next, Subscription};
use crate::state::AppState;
use crate::wire::messages::SendMessageBody;
use crate::wire::notifications::MarkReadBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(connect))
}

/// The read buffer of a connection: small, because most connections are idle most of the
/// time and thousands of them share the server's memory.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes written to the socket at once (a larger frame goes out whole).
const WRITE_BUFFER: usize = 4 * 1024;
/// The largest message (and frame) an agent may send.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long the server tries to deliver its close frame, and waits for the client's, before it
/// drops the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// The longest close reason the protocol allows (a close frame's payload is at most 125
/// bytes, two of which are the code).
const MAX_REASON: usize = 123;

/// Close codes, with the reason text saying what to do.
mod code {
    /// The server is shutting down: reconnect (to another node) with `since`.
    pub const GOING_AWAY: u16 = 1001;
    pub const INTERNAL: u16 = 1011;
    /// The client did not take its frames fast enough: reconnect with `since`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The `auth` frame was bad (not the token: its shape).
    pub const BAD_AUTH_FRAME: u16 = 4400;
    /// No token, a bad one, none in time, or it stopped being valid (revoked, expired).
    pub const UNAUTHORIZED: u16 = 4401;
    /// The agent is suspended, or the token lacks the `events` scope.
    pub const FORBIDDEN: u16 = 4403;
    /// Nothing (not even a pong) came from the client for the idle timeout.
    pub const IDLE: u16 = 4408;
    pub const RATE_LIMITED: u16 = 4429;
}

/// How a session ends from the server's side.
#[derive(Debug)]
struct Close {
    code: u16,
    reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Close { code, reason }
    }

    fn internal() -> Self {
        Close::new(code::INTERNAL, "internal error; reconnect with since")
    }

    /// The close for an application error of authentication.
    fn from_auth(e: &app::Error) -> Self {
        match e.kind {
            ErrorKind::Unauthenticated => Close::new(code::UNAUTHORIZED, e.detail.clone()),
            ErrorKind::Forbidden => Close::new(code::FORBIDDEN, e.detail.clone()),
            _ => Close::internal(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ConnectParams {
    /// The last `seq` the agent saw: every stored event after it is replayed first, in
    /// order, before live frames. Without it, only live frames.
    #[param(minimum = 0)]
    pub since: Option<i64>,
}

fn since(raw: Option<i64>) -> Result<Option<i64>, ApiError> {
    match raw {
        Some(n) if n < 0 => Err(ApiError::field("since", "must be at least 0")),
        other => Ok(other),
    }
}

/// The agent's real-time connection (WebSocket).
///
/// Authenticate with `Authorization: Bearer <token>` on the upgrade request, or, where a
/// client cannot set headers, with a first frame `{"type": "auth", "data": {"token": "...",
/// "since": 42}}` within 5 seconds (`since` optional). Every frame is a JSON text message
/// `{"type", "data"}`; frames that are stored carry a top-level `seq`, increasing by one per
/// frame of the agent. After authentication the server sends `ready` (`{"agent_id", "seq"}`:
/// where the stream starts), then replays every stored frame after `since`, then live frames:
/// no gap, no duplicate.
///
/// Server → agent, stored (with `seq`): `task_available`, `task_update`, `earning`,
/// `reputation_update`, `notification` (`{"id", "kind", "title", "body", "data",
/// "created_at"}`), `announcement` (`{"id", "title", "body", "created_at"}`), `message`. Not
/// stored (no `seq`): `ready`, `pong`, `notifications.marked` (`{"marked"}`), `message.sent`
/// (`{"id", "created_at"}`), `error` (`{"code", "message", "errors"?}`, for a frame the server
/// could not act on).
///
/// Agent → server: `ping` (answered by `pong`), `notifications.mark_read` (`{"ids": [...]}` or
/// `{"all": true}`), `message.send` (`data` is the body of `POST /v1/messages/send`; an
/// optional top-level `"idempotency_key"` works as that route's header, shared with it). An
/// unknown type gets an `error` frame; the connection stays open. Messages are at most 64 KiB.
///
/// The server pings every 20 s and closes a connection it heard nothing from (not even a pong)
/// for 75 s (4408). Close codes: 4401 no, bad or late token, or the token was revoked or
/// expired while connected; 4403 agent suspended, or the token lacks the `events` scope (the
/// frames `message.send` and `notifications.mark_read` need `messages` and `notifications`,
/// or get an `error` frame `insufficient_scope`); 4400 malformed `auth` frame; 4008 slow
/// consumer: the client fell more than 4096 frames behind or did not read for 15 s (reconnect
/// with `since`; the reason gives the last `seq` sent); 4429 over the agent's request rate;
/// 1001 the server is shutting down; 1011 internal error.
#[utoipa::path(get, path = "/v1/agent/connect", tag = "realtime", params(ConnectParams),
    security((), ("bearer" = ["events"])),
    responses((status = 101, description = "Switching Protocols: the connection is now the agent's WebSocket (frames above)."),
        (status = 426, body = Problem, description = "`upgrade_required`: not a WebSocket upgrade request.")))]
async fn connect(
    State(state): State<AppState>,
    Query(params): Query<ConnectParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    parts: Parts,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("this route speaks WebSocket: {e}"),
        )
    })?;
    let since = since(params.since)?;
    let ip = client_ip(&parts);
    // A header token was checked before the upgrade (`http::authorize`, with this route's
    // scope), so a bad one is an ordinary 401/403.
    let caller = parts.extensions.get::<Caller>().cloned();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(state, socket, caller, since, ip)))
}

async fn session(
    state: AppState,
    mut socket: WebSocket,
    caller: Option<Caller>,
    since: Option<i64>,
    ip: Option<String>,
) {
    if let Some(close) = serve(&state, &mut socket, caller, since, ip).await {
        let frame = CloseFrame {
            code: close.code,
            reason: Utf8Bytes::from(close.reason),
        };
        // The closing handshake: after its close frame the server reads (and drops) what the
        // client still sends until the client's close frame. Dropping the socket at once
        // would answer a late pong with a reset, and a reset makes the client's system
        // discard what it had not read yet: the close frame and its reason.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if socket.send(Message::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(msg)) = socket.recv().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// Why a send did not complete.
enum Unsent {
    /// The socket failed or the client is gone.
    Gone,
    /// The client did not take it within the write timeout. `accepted`: as for `Interrupted`.
    Stuck { accepted: bool },
    /// The hub wants the connection closed (the reason is `Subscription::next`'s to give).
    /// `accepted`: the message made it into the socket's buffer (it goes out before a close).
    Interrupted { accepted: bool },
}

/// Sends `msg`, giving up when the client takes longer than `within` to read it (a slow
/// consumer) or the hub interrupts.
/// Accepting the message into the socket's buffer and flushing it are raced separately, so
/// the caller knows whether an interrupted message will still reach the client.
async fn send(
    socket: &mut WebSocket,
    sub: &Subscription,
    msg: Message,
    within: Duration,
) -> Result<(), Unsent> {
    let outcome =
        |r: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>, accepted| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Unsent::Gone),
            Err(_) => Err(Unsent::Stuck { accepted }),
        };
    tokio::select! {
        fed = tokio::time::timeout(within, socket.feed(msg)) => outcome(fed, false)?,
        () = sub.interrupted() => return Err(Unsent::Interrupted { accepted: false }),
    }
    tokio::select! {
        flushed = tokio::time::timeout(within, socket.flush()) => outcome(flushed, true),
        () = sub.interrupted() => Err(Unsent::Interrupted { accepted: true }),
    }
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

/// Why a client counts as a slow consumer.
#[derive(Debug, Clone, Copy)]
enum Slow {
    /// It did not read a frame within the write timeout.
    NotReading,
    /// It fell more than `max_lag` frames behind.
    Behind,
}

/// `delivered`: the last `seq` the socket accepted, where the client should resume.
fn slow_consumer(state: &AppState, why: Slow, delivered: i64) -> Close {
    state.app.metrics.ws_slow_consumer_closes.inc();
    let why = match why {
        Slow::NotReading => "not reading",
        Slow::Behind => "too far behind",
    };
    Close::new(
        code::SLOW_CONSUMER,
        format!("slow consumer ({why}): reconnect with since={delivered}"),
    )
}

/// Runs the session; returns the close to send, or `None` when the client left.
async fn serve(
    state: &AppState,
    socket: &mut WebSocket,
    caller: Option<Caller>,
    since: Option<i64>,
    ip: Option<String>,
) -> Option<Close> {
    let app = &state.app;
    let ws = app.config.ws.clone();
    let (caller, since) = match caller {
        Some(c) => (c, since),
        None => match await_auth(state, socket, ip).await {
            Ok(Some((c, s))) => (c, s.or(since)),
            Ok(None) => return None,
            Err(close) => return Some(close),
        },
    };
    app.presence.connected(caller.id);
    let mut sub = match state.hub.subscribe(caller.id, since).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "opening an agent stream failed");
            return Some(Close::internal());
        }
    };
    // The last `seq` the socket accepted (what `since` skips counts as delivered).
    let mut delivered = sub.last_seq();
    let ready = json!({"type": "ready", "data": {"agent_id": caller.id, "seq": delivered}});
    match send(socket, &sub, text(&ready), ws.write_timeout).await {
        // Interrupted: `next` says why, first thing.
        Ok(()) | Err(Unsent::Interrupted { .. }) => {}
        Err(Unsent::Gone) => return None,
        Err(Unsent::Stuck { .. }) => {
            return Some(slow_consumer(state, Slow::NotReading, delivered))
        }
    }
    let mut tick = tokio::time::interval_at(Instant::now() + ws.ping_interval, ws.ping_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let mut checked = Instant::now();
    loop {
        // Unbiased: a long replay (frames always ready) must not starve the client's frames
        // and pongs, nor the idle and token checks.
        tokio::select! {
            next = sub.next() => match next {
                Ok(Next::Frame(d)) => {
                    match send(socket, &sub, Message::Text(Utf8Bytes::from(&*d.text)), ws.write_timeout).await {
                        // Interrupted, `next` says why to close.
                        Ok(()) | Err(Unsent::Interrupted { accepted: true }) => {
                            delivered = d.seq;
                            app.metrics.ws_frames_sent.inc();
                        }
                        Err(Unsent::Interrupted { accepted: false }) => {}
                        Err(Unsent::Gone) => return None,
                        // Accepted, it goes out before the close frame.
                        Err(Unsent::Stuck { accepted }) => {
                            let delivered = if accepted { d.seq } else { delivered };
                            return Some(slow_consumer(state, Slow::NotReading, delivered));
                        }
                    }
                }
                Ok(Next::Recheck) => {
                    if let Err(e) = auth::recheck(app, &caller).await {
                        return Some(Close::from_auth(&e));
                    }
                    checked = Instant::now();
                }
                Ok(Next::Close(Ended::SlowConsumer)) => return Some(slow_consumer(state, Slow::Behind, delivered)),
                Ok(Next::Close(Ended::Shutdown)) => {
                    return Some(Close::new(
                        code::GOING_AWAY,
                        format!("server shutting down: reconnect with since={delivered}"),
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, agent = %caller.id, "reading an agent stream failed");
                    return Some(Close::internal());
                }
            },
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else {
                    return None;
                };
                heard = Instant::now();
                let reply = match msg {
                    Message::Text(t) => incoming(state, &caller, t.as_str()).await,
                    Message::Binary(_) => Some(error_frame(
                        "bad_frame",
                        "frames are JSON text messages",
                        &[],
                    )),
                    // The protocol answers pings itself; both count as signs of life.
                    Message::Ping(_) | Message::Pong(_) => None,
                    Message::Close(_) => return None,
                };
                if let Some(reply) = reply {
                    match send(socket, &sub, text(&reply), ws.write_timeout).await {
                        Ok(()) | Err(Unsent::Interrupted { .. }) => {}
                        Err(Unsent::Gone) => return None,
                        Err(Unsent::Stuck { .. }) => return Some(slow_consumer(state, Slow::NotReading, delivered)),
                    }
                }
            }
            _ = tick.tick() => {
                if heard.elapsed() >= ws.idle_timeout {
                    return Some(Close::new(
                        code::IDLE,
                        format!("idle: nothing from the client for {} s", ws.idle_timeout.as_secs()),
                    ));
                }
                if checked.elapsed() >= ws.auth_recheck {
                    if let Err(e) = auth::recheck(app, &caller).await {
                        return Some(Close::from_auth(&e));
                    }
                    checked = Instant::now();
                }
                app.presence.seen(caller.id);
                match send(socket, &sub, Message::Ping(Default::default()), ws.write_timeout).await {
                    Ok(()) | Err(Unsent::Interrupted { .. }) => {}
                    Err(Unsent::Gone) => return None,
                    Err(Unsent::Stuck { .. }) => return Some(slow_consumer(state, Slow::NotReading, delivered)),
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    /// `message.send` only: the Idempotency-Key a REST send would carry in its header.
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthData {
    token: String,
    #[serde(default)]
    since: Option<i64>,
}

/// Waits for the `auth` frame of a connection that came without a header token. `Ok(None)`:
/// the client left first.
async fn await_auth(
    state: &AppState,
    socket: &mut WebSocket,
    ip: Option<String>,
) -> Result<Option<(Caller, Option<i64>)>, Close> {
    let wait = state.app.config.ws.auth_timeout;
    let deadline = Instant::now() + wait;
    let expected =
        "expected an auth frame first: {\"type\": \"auth\", \"data\": {\"token\": \"...\"}}";
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                return Err(Close::new(
                    code::UNAUTHORIZED,
                    format!(
                        "authentication timed out: send an auth frame within {} ms",
                        wait.as_millis()
                    ),
                ))
            }
            Ok(None | Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(msg))) => msg,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Ok(None),
            Message::Binary(_) => return Err(Close::new(code::UNAUTHORIZED, expected)),
        };
        let frame = match serde_json::from_str::<Incoming>(text.as_str()) {
            Ok(f) if f.kind == "auth" => f,
            _ => return Err(Close::new(code::UNAUTHORIZED, expected)),
        };
        let data: AuthData = serde_json::from_value(frame.data)
            .map_err(|e| Close::new(code::BAD_AUTH_FRAME, format!("bad auth frame: {e}")))?;
        if data.since.is_some_and(|n| n < 0) {
            return Err(Close::new(
                code::BAD_AUTH_FRAME,
                "bad auth frame: since must be at least 0",
            ));
        }
        let caller = auth::authenticate(&state.app, &data.token, ip)
            .await
            .and_then(|caller| caller.require(Scope::Events).map(|()| caller))
            .map_err(|e| Close::from_auth(&e))?;
        if state.limits.check_agent(caller.id).is_err() {
            return Err(Close::new(
                code::RATE_LIMITED,
                "over the agent's request rate",
            ));
        }
        return Ok(Some((caller, data.since)));
    }
}

fn error_frame(code: &str, message: &str, errors: &[nervix_core::FieldError]) -> Value {
    let mut data = json!({"code": code, "message": message});
    if !errors.is_empty() {
        data["errors"] = json!(errors);
    }
    json!({"type": "error", "data": data})
}

fn app_error_frame(e: &app::Error) -> Value {
    error_frame(e.code, &e.detail, &e.errors)
}

/// Acts on one frame from the agent and returns the reply to send, if any. Every type an
/// agent may send has its arm here, each calling one operation of `app/`; all but `ping`
/// count against the agent's request rate, as a REST request would.
async fn incoming(state: &AppState, caller: &Caller, raw: &str) -> Option<Value> {
    let frame = match serde_json::from_str::<Incoming>(raw) {
        Ok(f) => f,
        Err(e) => {
            return Some(error_frame(
                "bad_frame",
                &format!("expected {{\"type\", \"data\"}}: {e}"),
                &[],
            ))
        }
    };
    if frame.kind != "ping" {
        if let Err(limited) = state.limits.check_agent(caller.id) {
            let mut reply = error_frame(
                "rate_limited",
                "over the agent's request rate; retry later",
                &[],
            );
            reply["data"]["retry_after"] = json!(limited.retry_after_secs);
            return Some(reply);
        }
    }
    Some(match frame.kind.as_str() {
        "ping" => json!({"type": "pong", "data": {}}),
        "notifications.mark_read" => match mark_read(state, caller, frame.data).await {
            Ok(marked) => json!({"type": "notifications.marked", "data": {"marked": marked}}),
            Err(e) => app_error_frame(&e),
        },
        "message.send" => {
            match send_message(state, caller, frame.data, frame.idempotency_key.as_deref()).await {
                Ok(sent) => json!({"type": "message.sent", "data": sent}),
                Err(e) => app_error_frame(&e),
            }
        }
        "auth" => error_frame(
            "already_authenticated",
            "this connection is authenticated already",
            &[],
        ),
        other => error_frame(
            "unknown_type",
            &format!("unknown frame type {other:?}"),
            &[],
        ),
    })
}

/// The same operation as `POST /v1/messages/send`, with the same body, refusals and
/// idempotency (a key used over REST replays here too, and the other way round).
async fn send_message(
    state: &AppState,
    caller: &Caller,
    data: Value,
    key: Option<&str>,
) -> Result<Value, app::Error> {
    caller.require(Scope::Messages)?;
    let body: SendMessageBody =
        serde_json::from_value(data).map_err(|e| app::Error::field("data", e.to_string()))?;
    let req = body.parse()?;
    let key = messages::idempotency_key(key, &req)?;
    Ok(messages::send(&state.app, caller, req, key.as_ref())
        .await?
        .body)
}

async fn mark_read(state: &AppState, caller: &Caller, data: Value) -> Result<u64, app::Error> {
    caller.require(Scope::Notifications)?;
    let body: MarkReadBody =
        serde_json::from_value(data).map_err(|e| app::Error::field("data", e.to_string()))?;
    let which = notifications::selection(body.ids.as_deref(), body.all)?;
    notifications::mark_read(&state.app, caller, &which).await
}
