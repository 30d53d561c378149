//! Messages and channels: send (direct or to a channel), history, and the channels the caller
//! is a member of. Payloads are relayed as sent; the server never decrypts them.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use nervix_core::message::{parse_recipient, ChannelName, Members};
use nervix_core::{FieldError, FieldErrors};
use nervix_store::{ChannelDetail, ChannelMember, ChannelRecord, MessageRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::messages::{self, HistoryOf};
use crate::app::Caller;
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::{idempotency_header, ApiJson, Page, PageParams};
use crate::openapi::{self, IdempotencyHeader};
use crate::state::AppState;
use crate::wire::messages::SendMessageBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(history))
        .routes(routes!(create_channel, my_channels))
        .routes(routes!(get_channel))
        .routes(routes!(add_members))
        .routes(routes!(leave_channel))
}

/// `201` of a send.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Send a message to an agent or to a channel the caller is a member of. The recipients'
/// connections get it as a `message` frame; everyone gets it through history.
#[utoipa::path(post, path = "/v1/messages/send", tag = "messages", security(("bearer" = ["messages"])),
    params(IdempotencyHeader), request_body = SendMessageBody,
    responses((status = 201, body = SentView, description = "Stored, and delivered to the recipients' connections."),
        (status = 404, body = Problem, description = "No such recipient, or a channel the caller is not a member of (or that does not exist)."),
        (status = 422, body = Problem, description = "`validation_failed` (`errors` names each field); `no_encryption_key`: `encrypted` to an agent without an `encryption_public_key`; `idempotency_key_reused`."),
        (status = 429, body = Problem, description = "`rate_limited`: over the caller's messages per minute (`NERVIX_RATE_LIMIT_MESSAGES`) or its request rate.",
            headers(("Retry-After" = u64, description = "Seconds after which a retry may succeed.")))))]
async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessageBody>,
) -> ApiResult<Response> {
    let req = body.parse()?;
    let key = messages::idempotency_key(idempotency_header(&headers)?, &req)?;
    let sent = messages::send(&state.app, &caller, req, key.as_ref()).await?;
    let status = StatusCode::from_u16(sent.status).map_err(ApiError::internal)?;
    Ok((status, Json(sent.body)).into_response())
}

/// A message as history lists it (and as the `message` frame carries it).
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    /// The sender's UUID.
    pub from: Uuid,
    /// The sender's handle.
    pub from_agent_id: String,
    /// A direct message's recipient (absent for a channel message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_agent_id: Option<String>,
    /// A channel message's channel (absent for a direct message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Uuid>,
    pub encrypted: bool,
    /// Standard base64 of the bytes the sender sent.
    pub payload: String,
    /// Standard base64 of the 24-byte nonce; null when the sender gave none.
    pub nonce: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<MessageRecord> for MessageView {
    fn from(m: MessageRecord) -> Self {
        MessageView {
            id: m.id,
            from: m.sender_id,
            from_agent_id: m.sender_handle,
            to: m.recipient_id,
            to_agent_id: m.recipient_handle,
            channel: m.channel_id,
            encrypted: m.encrypted,
            payload: STANDARD.encode(&m.payload),
            nonce: m.nonce.map(|n| STANDARD.encode(n)),
            created_at: m.created_at,
        }
    }
}

/// `?with=` or `?channel=` (exactly one), `?before=`, `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryParams {
    /// The agent (UUID or handle) whose direct messages with the caller to list.
    #[param(schema_with = openapi::recipient)]
    pub with: Option<String>,
    /// A channel the caller is a member of.
    #[param(schema_with = openapi::channel_id)]
    pub channel: Option<String>,
    /// `next_cursor` of the previous page: list messages older than that one.
    #[param(schema_with = openapi::cursor)]
    pub before: Option<String>,
    /// Items per page, default 50; above 200 is served as 200.
    #[param(minimum = 1, maximum = 9223372036854775807_i64)]
    pub limit: Option<i64>,
}

/// A conversation's messages, newest first (by time sent, then id): the direct messages
/// between the caller and `with` (both ways; nobody else's), or a channel's. Give exactly one
/// of `with` and `channel`; page back with `before` = the previous page's `next_cursor`.
#[utoipa::path(get, path = "/v1/messages/history", tag = "messages", security(("bearer" = ["messages"])),
    params(HistoryParams),
    responses((status = 200, body = Page<MessageView>, description = "One page of messages, newest first."),
        (status = 404, body = Problem, description = "No such agent, or a channel the caller is not a member of."),
        (status = 422, body = Problem, description = "`validation_failed`: neither or both of `with` and `channel`, a malformed `channel`, `before` or `limit`.")))]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HistoryParams>,
) -> ApiResult<Json<Page<MessageView>>> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.before.clone(),
    };
    let limit = page.limit()?;
    let before = page
        .cursor()
        .map_err(|_| ApiError::field("before", "is not a cursor from this API"))?;
    let of = match (q.with, q.channel) {
        (Some(with), None) => HistoryOf::Agent(
            parse_recipient(&with).map_err(|e| ApiError::field("with", e.message))?,
        ),
        (None, Some(channel)) => HistoryOf::Channel(
            Uuid::parse_str(channel.trim())
                .map_err(|_| ApiError::field("channel", "must be a UUID"))?,
        ),
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "channel",
                "give either `with` or `channel`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::field(
                "with",
                "give `with` (an agent) or `channel`",
            ))
        }
    };
    let rows = messages::history(&state.app, &caller, of, before, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |m| m.id,
        MessageView::from,
    )))
}

/// A channel as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub name: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    /// Current members.
    pub member_count: i64,
}

impl From<ChannelRecord> for ChannelView {
    fn from(c: ChannelRecord) -> Self {
        ChannelView {
            id: c.id,
            name: c.name,
            created_by: c.created_by,
            created_at: c.created_at,
            member_count: c.member_count,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// The member's UUID.
    pub id: Uuid,
    /// The member's handle.
    pub agent_id: String,
    pub joined_at: DateTime<Utc>,
}

impl From<ChannelMember> for MemberView {
    fn from(m: ChannelMember) -> Self {
        MemberView {
            id: m.agent_id,
            agent_id: m.handle,
            joined_at: m.joined_at,
        }
    }
}

/// A channel with its current members, longest-standing first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelDetailView {
    #[serde(flatten)]
    pub channel: ChannelView,
    pub members: Vec<MemberView>,
}

impl From<ChannelDetail> for ChannelDetailView {
    fn from(d: ChannelDetail) -> Self {
        ChannelDetailView {
            channel: d.channel.into(),
            members: d.members.into_iter().map(MemberView::from).collect(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewChannelBody {
    #[schema(schema_with = openapi::channel_name)]
    pub name: String,
    /// Members besides the creator, who is always one.
    #[serde(default)]
    #[schema(schema_with = openapi::initial_members)]
    pub members: Vec<String>,
}

/// Create a channel; the caller is a member, with the agents listed.
#[utoipa::path(post, path = "/v1/channels", tag = "messages", security(("bearer" = ["messages"])),
    request_body = NewChannelBody,
    responses((status = 201, body = ChannelDetailView, description = "The channel and its members."),
        (status = 404, body = Problem, description = "An agent in `members` does not exist (`errors` names it).")))]
async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewChannelBody>,
) -> ApiResult<(StatusCode, Json<ChannelDetailView>)> {
    let mut errs = FieldErrors::default();
    let name = errs.check(ChannelName::parse(&body.name));
    let members = match Members::parse(&body.members, false) {
        Ok(m) => Some(m),
        Err(e) => {
            errs.0.extend(e.0);
            None
        }
    };
    errs.into_result()?;
    let (Some(name), Some(members)) = (name, members) else {
        return Err(FieldError::new("body", "invalid channel").into());
    };
    let c = messages::create_channel(&state.app, &caller, name, members).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// The caller's channels, newest first.
#[utoipa::path(get, path = "/v1/channels", tag = "messages", security(("bearer" = ["messages"])), params(PageParams),
    responses((status = 200, body = Page<ChannelView>, description = "One page of the channels the caller is a member of.")))]
async fn my_channels(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<ChannelView>>> {
    let limit = page.limit()?;
    let rows = messages::channels(&state.app, &caller, page.cursor()?, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |c| c.id,
        ChannelView::from,
    )))
}

/// A channel the caller is a member of, with its members.
#[utoipa::path(get, path = "/v1/channels/{id}", tag = "messages", security(("bearer" = ["messages"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = ChannelDetailView, description = "The channel and its members."),
        (status = 404, body = Problem, description = "No such channel, or the caller is not a member.")))]
async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ChannelDetailView>> {
    Ok(Json(
        messages::channel(&state.app, &caller, id).await?.into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMembersBody {
    #[schema(schema_with = openapi::added_members)]
    pub members: Vec<String>,
}

/// Add agents to a channel the caller is a member of (an agent that left comes back).
#[utoipa::path(post, path = "/v1/channels/{id}/members", tag = "messages", security(("bearer" = ["messages"])),
    params(("id" = Uuid, Path)), request_body = AddMembersBody,
    responses((status = 200, body = ChannelDetailView, description = "The channel and its members."),
        (status = 404, body = Problem, description = "No such channel, the caller is not a member, or an agent in `members` does not exist (`errors` names it)."),
        (status = 422, body = Problem, description = "`validation_failed`, also when the channel would have more than 1000 members.")))]
async fn add_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<AddMembersBody>,
) -> ApiResult<Json<ChannelDetailView>> {
    let members = Members::parse(&body.members, true)?;
    Ok(Json(
        messages::add_members(&state.app, &caller, id, members)
            .await?
            .into(),
    ))
}

/// Leave a channel: the caller can no longer read or send to it, unless a member adds it again.
#[utoipa::path(post, path = "/v1/channels/{id}/leave", tag = "messages", security(("bearer" = ["messages"])), params(("id" = Uuid, Path)),
    responses((status = 204, description = "The caller is no longer a member."),
        (status = 404, body = Problem, description = "No such channel, or the caller is not a member.")))]
async fn leave_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    messages::leave(&state.app, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
