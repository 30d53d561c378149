//! A2A v1.0, JSON-RPC binding: signed Agent Cards and the task methods.
//!
//! * `GET /.well-known/agent-card.json`: the platform as one A2A agent (skills: the
//!   capabilities present in the federation); its interface is `POST /a2a`.
//! * `GET /a2a/agents/{handle}/.well-known/agent-card.json`: one agent, whose interface
//!   `POST /a2a/agents/{handle}` posts tasks reserved for it; the card carries the agent's
//!   signed-receipts extension.
//!
//! Cards are signed (A2A §8.4: JWS, EdDSA, `kid` of `/.well-known/jwks.json`, over the RFC
//! 8785 form of the card without `signatures` and without default values) and served with an
//! `ETag` (a hash of the body) and `Cache-Control`.
//!
//! State mapping (Nervix → A2A):
//!
//! | Nervix                 | A2A                     |
//! |------------------------|-------------------------|
//! | blocked, available     | `TASK_STATE_SUBMITTED`  |
//! | claimed, submitted     | `TASK_STATE_WORKING`    |
//! | completed              | `TASK_STATE_COMPLETED` (artifact: the accepted work, and a data part with the quality checks and the signed receipt); `TASK_STATE_WORKING` for the moment its receipt is being issued |
//! | failed                 | `TASK_STATE_FAILED`     |
//! | cancelled, expired     | `TASK_STATE_CANCELED`   |
//!
//! Versions: `A2A-Version: 1.0` (header, or the `A2A-Version` query parameter). An empty or
//! missing version means 0.3 (A2A §3.6.2), which this interface does not speak: it answers
//! `VersionNotSupportedError` (-32009) naming 1.0, as it does for any other version.
//!
//! Blocking `SendMessage` waits at most `app::a2a::BLOCKING_WAIT_CAP` (20 s) for the task to
//! end, then answers with the task as it stands; `returnImmediately: true` answers at once.

use std::collections::HashMap;
use std::convert::Infallible;

use ::a2a::{
    error_code, methods, A2AError, AgentCapabilities, AgentCard, AgentExtension, AgentInterface,
    AgentProvider, AgentSkill, Artifact, FieldViolation, HttpAuthSecurityScheme, JsonRpcError,
    JsonRpcId, ListTasksResponse, Part, PartContent, SecurityScheme, SendMessageRequest, Task,
    TaskArtifactUpdateEvent, TaskState, TaskStatus, TaskStatusUpdateEvent, TypedDetail,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use nervix_core::task::TaskInput;
use nervix_core::{Money, Reputation, Scope, TaskSpec, TaskStatus as Status};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::a2a::{self as ops, A2aTask, BLOCKING_WAIT_CAP};
use crate::app::{Caller, Error as AppError, ErrorKind};
use crate::http::authorize::AnyScope;
use crate::state::AppState;

/// The protocol version this interface speaks.
const VERSION: &str = "1.0";
/// The URI of the signed-receipts extension on per-agent cards.
pub const RECEIPTS_EXTENSION: &str = "urn:nervix:a2a:ext:reputation-receipts:v1";
const CARD_CACHE: &str = "public, max-age=60";
/// The default deadline of a task posted without one.
const DEFAULT_DEADLINE_HOURS: i64 = 24;
const LIST_DEFAULT: i64 = 50;
const LIST_MAX: i64 = 100;

pub fn routes() -> OpenApiRouter<AppState> {
    // The JSON-RPC interfaces are described by the A2A specification (a2a.proto), not by this
    // API's OpenAPI document: one POST per interface whose body names the method, answered 200
    // with a JSON-RPC result or error whatever the method, which an OpenAPI operation cannot
    // state. The cards are ordinary documents and are described here.
    OpenApiRouter::new()
        .routes(routes!(platform_card))
        .routes(routes!(agent_card))
        .route("/a2a", post(platform_rpc))
        .route("/a2a/agents/{handle}", post(agent_rpc))
}

// ---------------------------------------------------------------------------------------
// Agent Cards
// ---------------------------------------------------------------------------------------

/// The URL this server is reached at, as the client reached it.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

fn interface(url: String) -> AgentInterface {
    let mut i = AgentInterface::new(url, "JSONRPC");
    i.protocol_version = VERSION.to_owned();
    i
}

fn security(card: &mut AgentCard) {
    card.security_schemes = Some(HashMap::from([(
        "bearer".to_owned(),
        SecurityScheme::HttpAuth(HttpAuthSecurityScheme {
            scheme: "Bearer".to_owned(),
            bearer_format: Some("JWT".to_owned()),
            description: Some(
                "A Nervix agent token (EdDSA JWT from POST /v1/auth/token); the caller posts \
                 and pays for the tasks it sends"
                    .to_owned(),
            ),
        }),
    )]));
    card.security_requirements = Some(vec![HashMap::from([("bearer".to_owned(), Vec::new())])]);
}

fn skill(capability: &str, description: String) -> AgentSkill {
    AgentSkill {
        id: capability.to_owned(),
        name: capability.to_owned(),
        description,
        tags: vec![capability.to_owned()],
        examples: None,
        input_modes: None,
        output_modes: None,
        security_requirements: None,
    }
}

fn base_card(name: String, description: String, url: String, skills: Vec<AgentSkill>) -> AgentCard {
    let mut card = AgentCard {
        name,
        description,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        supported_interfaces: vec![interface(url)],
        capabilities: AgentCapabilities {
            streaming: Some(true),
            push_notifications: Some(false),
            extensions: None,
            extended_agent_card: None,
        },
        default_input_modes: vec!["text/plain".to_owned(), "application/json".to_owned()],
        default_output_modes: vec!["text/plain".to_owned(), "application/json".to_owned()],
        skills,
        provider: None,
        documentation_url: None,
        icon_url: None,
        security_schemes: None,
        security_requirements: None,
        signatures: None,
    };
    security(&mut card);
    card
}

/// The card as signed (A2A §8.4.1): without `signatures`, and without the values ProtoJSON
/// leaves out (empty strings, lists and objects, and `false` of the non-optional
/// `AgentExtension.required`), so a verifier that rebuilds the card from its protobuf form
/// canonicalises the same bytes.
pub fn signed_form(card: &Value) -> Value {
    fn clean(v: &Value, in_extension: bool) -> Option<Value> {
        match v {
            Value::Object(m) => {
                let out: serde_json::Map<String, Value> = m
                    .iter()
                    .filter(|(k, v)| {
                        !(in_extension && *k == "required" && **v == Value::Bool(false))
                    })
                    .filter_map(|(k, v)| clean(v, k == "extensions").map(|v| (k.clone(), v)))
                    .collect();
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Value::Array(a) => {
                let out: Vec<Value> = a.iter().filter_map(|v| clean(v, in_extension)).collect();
                (!out.is_empty()).then_some(Value::Array(out))
            }
            Value::String(s) if s.is_empty() => None,
            other => Some(other.clone()),
        }
    }
    let mut card = card.clone();
    if let Some(m) = card.as_object_mut() {
        m.remove("signatures");
    }
    clean(&card, false).unwrap_or_else(|| json!({}))
}

/// The card with its signature, as served.
fn signed_card(state: &AppState, card: &AgentCard) -> Result<Vec<u8>, String> {
    let mut value = serde_json::to_value(card).map_err(|e| e.to_string())?;
    let signature = ops::sign_card(&state.app, &signed_form(&value)).map_err(|e| e.to_string())?;
    value["signatures"] = json!([signature]);
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}

/// Signs the card and answers it with `ETag` and `Cache-Control` (304 on a matching
/// `If-None-Match`).
fn serve_card(state: &AppState, headers: &HeaderMap, card: AgentCard) -> Response {
    let body = match signed_card(state, &card) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "agent card");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..16]));
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, CARD_CACHE.to_owned()),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(header::CONTENT_TYPE, "application/json".to_owned())],
        body,
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The platform's A2A v1.0 Agent Card, signed (JWS EdDSA over its RFC 8785 form).
#[utoipa::path(get, path = "/.well-known/agent-card.json", tag = "a2a",
    responses((status = 200, body = serde_json::Value, description = "The signed Agent Card (ETag, Cache-Control)."),
        (status = 304, description = "Unchanged since the ETag sent in If-None-Match.")))]
async fn platform_card(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let skills = ops::capabilities(&state.app)
        .into_iter()
        .map(|(cap, agents)| {
            skill(
                &cap,
                format!("Tasks needing {cap}, done by the federation's {agents} agent(s) with it"),
            )
        })
        .collect();
    let mut card = base_card(
        "Nervix".to_owned(),
        "A federation of AI agents: a message becomes an escrowed task (text parts: its \
         description; a data part: structured requirements; metadata: reward, capabilities, \
         complexity, deadline), done by an eligible agent, checked automatically and paid."
            .to_owned(),
        format!("{base}/a2a"),
        skills,
    );
    card.provider = Some(AgentProvider {
        organization: "Nervix".to_owned(),
        url: base.clone(),
    });
    card.documentation_url = Some(format!("{base}/v1/openapi.json"));
    serve_card(&state, &headers, card)
}

/// An agent's A2A v1.0 Agent Card: its interface posts tasks reserved for it; the
/// signed-receipts extension summarises its record.
#[utoipa::path(get, path = "/a2a/agents/{handle}/.well-known/agent-card.json", tag = "a2a",
    params(("handle" = String, Path, description = "The agent's handle or UUID")),
    responses((status = 200, body = serde_json::Value, description = "The signed Agent Card (ETag, Cache-Control)."),
        (status = 304, description = "Unchanged since the ETag sent in If-None-Match."),
        (status = 404, body = crate::error::Problem)))]
async fn agent_card(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (agent, receipts) = match ops::agent(&state.app, &handle).await {
        Ok(a) => a,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let base = base_url(&headers);
    let skills = agent
        .capabilities
        .iter()
        .map(|c| skill(c, format!("{} does tasks needing {c}", agent.handle)))
        .collect();
    let mut card = base_card(
        agent.name.clone(),
        format!(
            "Nervix agent {}: tasks sent here are escrowed from the sender and offered to this \
             agent only.",
            agent.handle
        ),
        format!("{base}/a2a/agents/{}", agent.handle),
        skills,
    );
    let score = Reputation::from_hundredths(agent.reputation);
    let mut params = HashMap::from([
        ("agentHandle".to_owned(), json!(agent.handle)),
        ("publicKey".to_owned(), json!(agent.public_key)),
        ("reputation".to_owned(), json!(score.to_string())),
        (
            "level".to_owned(),
            json!(nervix_core::Level::of(score, agent.tasks_completed).to_string()),
        ),
        ("tasksCompleted".to_owned(), json!(agent.tasks_completed)),
        ("receipts".to_owned(), json!(receipts.count)),
        (
            "receiptsUrl".to_owned(),
            json!(format!("{base}/v1/agents/{}/receipts", agent.handle)),
        ),
        (
            "jwksUrl".to_owned(),
            json!(format!("{base}/.well-known/jwks.json")),
        ),
    ]);
    if let Some(latest) = receipts.latest {
        params.insert("latestReceiptAt".to_owned(), json!(rfc3339(latest)));
    }
    card.capabilities.extensions = Some(vec![AgentExtension {
        uri: RECEIPTS_EXTENSION.to_owned(),
        description: Some(
            "Signed reputation receipts: one compact JWS (EdDSA, RFC 8785 payload) per accepted \
             task, verifiable offline with the platform's JWKS"
                .to_owned(),
        ),
        required: Some(false),
        params: Some(params),
    }]);
    serve_card(&state, &headers, card)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------
// Tasks as A2A sees them
// ---------------------------------------------------------------------------------------

/// The A2A state of a Nervix status (the table above).
pub fn state_of(s: Status) -> TaskState {
    match s {
        Status::Blocked | Status::Available => TaskState::Submitted,
        Status::Claimed | Status::Submitted => TaskState::Working,
        Status::Completed => TaskState::Completed,
        Status::Failed => TaskState::Failed,
        Status::Cancelled | Status::Expired => TaskState::Canceled,
    }
}

fn status_of(t: &A2aTask) -> TaskStatus {
    TaskStatus {
        state: if t.receipt_pending {
            TaskState::Working
        } else {
            state_of(t.task.status)
        },
        message: None,
        timestamp: Some(t.task.updated_at),
    }
}

/// The artifact of completed work: the content, a part per file it references (a URL the
/// poster downloads with its token, `GET /v1/artifacts/{id}`), and a data part with its
/// quality checks and receipt. `base`: this server's URL as the client reached it.
fn artifact(t: &A2aTask, base: &str) -> Option<Artifact> {
    if t.receipt_pending {
        return None;
    }
    let work = t.work.as_ref()?;
    let content = match &work.content {
        Value::String(s) => Part::text(s.clone()),
        other => Part::data(other.clone()).with_media_type("application/json"),
    };
    let mut quality = json!({
        "submissionId": work.id,
        "qualityScore": work.final_score.unwrap_or(work.quality_score),
        "checks": work.checks,
        "payout": work.payout_cents.map(|c| Money::from_cents(c).to_string()),
    });
    if let Some(r) = &t.receipt {
        quality["receipt"] = json!(r.jws);
        quality["receiptKid"] = json!(r.kid);
    }
    if !t.files.is_empty() {
        quality["files"] = t
            .files
            .iter()
            .map(|f| {
                json!({"artifactId": f.id, "sha256": f.sha256, "sizeBytes": f.size_bytes,
                    "checks": f.checks})
            })
            .collect();
    }
    let files = t.files.iter().map(|f| {
        let part = Part::url(format!("{base}/v1/artifacts/{}", f.id))
            .with_media_type(f.content_type.clone());
        match &f.filename {
            Some(name) => part.with_filename(name.clone()),
            None => part,
        }
    });
    Some(Artifact {
        artifact_id: work.id.to_string(),
        name: Some("result".to_owned()),
        description: Some(
            "The accepted work, its quality checks and its signed receipt".to_owned(),
        ),
        parts: std::iter::once(content)
            .chain(files)
            .chain([Part::data(quality).with_media_type("application/json")])
            .collect(),
        metadata: None,
        extensions: t
            .receipt
            .as_ref()
            .map(|_| vec![RECEIPTS_EXTENSION.to_owned()]),
    })
}

pub fn a2a_task(t: &A2aTask, with_artifacts: bool, base: &str) -> Task {
    let r = &t.task;
    let metadata = HashMap::from([(
        "nervix".to_owned(),
        json!({
            "status": r.status.as_str(),
            "title": r.title,
            "reward": Money::from_cents(r.reward_cents).to_string(),
            "capabilities": r.capabilities,
            "complexity": r.complexity.as_str(),
            "deadline": rfc3339(r.deadline),
            "assignedAgentId": r.assigned_agent_id,
            "reservedFor": r.reserved_for,
        }),
    )]);
    Task {
        id: r.id.to_string(),
        context_id: r.id.to_string(),
        status: status_of(t),
        artifacts: if with_artifacts {
            Some(artifact(t, base).into_iter().collect())
        } else {
            None
        },
        history: None,
        metadata: Some(metadata),
    }
}

// ---------------------------------------------------------------------------------------
// The message → a task spec
// ---------------------------------------------------------------------------------------

fn meta_str<'a>(meta: &'a HashMap<String, Value>, key: &str) -> Option<&'a Value> {
    meta.get(key).filter(|v| !v.is_null())
}

/// A deadline: RFC 3339, or a duration from now (`90m`, `24h`, `7d`).
fn parse_deadline(v: &Value, now: DateTime<Utc>) -> Result<DateTime<Utc>, AppError> {
    let bad = || {
        AppError::field(
            "metadata.deadline",
            "must be RFC 3339 or a duration like 24h",
        )
    };
    let s = v.as_str().ok_or_else(bad)?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let Some((at, unit)) = s.char_indices().last() else {
        return Err(bad());
    };
    let n: i64 = s[..at].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| (0..=10 * 365 * 86_400).contains(s))
    .ok_or_else(bad)?;
    Ok(now + chrono::Duration::seconds(secs))
}

/// Reads the task a `SendMessage` asks for (A2A §3.1.1: text parts → description, a data part
/// → the structured requirements, metadata → reward, capabilities, complexity, deadline).
pub fn task_spec(
    req: &SendMessageRequest,
    max_reward: Money,
    now: DateTime<Utc>,
) -> Result<TaskSpec, AppError> {
    let msg = &req.message;
    if msg.task_id.is_some() {
        return Err(AppError::new(
            ErrorKind::Conflict,
            "follow_up_unsupported",
            "a Nervix task takes no further messages: send a new message for a new task",
        ));
    }
    let mut texts = Vec::new();
    let mut data: Option<&Value> = None;
    for (i, p) in msg.parts.iter().enumerate() {
        match &p.content {
            PartContent::Text(t) => texts.push(t.as_str()),
            PartContent::Data(d) if data.is_none() => data = Some(d),
            PartContent::Data(_) => {
                return Err(AppError::field(
                    format!("message.parts[{i}]"),
                    "at most one data part (the requirements)",
                ))
            }
            _ => {
                return Err(AppError::new(
                    ErrorKind::Invalid,
                    "content_type_not_supported",
                    format!("message.parts[{i}]: only text and data parts are supported"),
                ))
            }
        }
    }
    let description = texts.join("\n\n");
    // Request metadata wins over the message's.
    let mut meta: HashMap<String, Value> = msg.metadata.clone().unwrap_or_default();
    meta.extend(req.metadata.clone().unwrap_or_default());
    let title = match meta_str(&meta, "title").and_then(Value::as_str) {
        Some(t) => t.to_owned(),
        None => description
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .chars()
            .take(120)
            .collect(),
    };
    let reward = match meta_str(&meta, "reward") {
        Some(Value::String(s)) => s
            .parse::<Money>()
            .map_err(|e| AppError::field("metadata.reward", e.to_string()))?,
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|f| Money::from_cents((f * 100.0).round() as i64))
            .ok_or_else(|| AppError::field("metadata.reward", "must be an amount"))?,
        _ => {
            return Err(AppError::field(
                "metadata.reward",
                "is required (e.g. \"12.50\")",
            ))
        }
    };
    let capabilities: Vec<String> = match meta_str(&meta, "capabilities") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| AppError::field("metadata.capabilities", "must be strings"))?,
        Some(Value::String(s)) => s
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        None => Vec::new(),
        Some(_) => {
            return Err(AppError::field(
                "metadata.capabilities",
                "must be a list of strings",
            ))
        }
    };
    let complexity = meta_str(&meta, "complexity")
        .and_then(Value::as_str)
        .unwrap_or("simple")
        .to_owned();
    let deadline = match meta_str(&meta, "deadline") {
        Some(v) => parse_deadline(v, now)?,
        None => now + chrono::Duration::hours(DEFAULT_DEADLINE_HOURS),
    };
    let req_field = |k: &str| data.and_then(|d| d.get(k)).filter(|v| !v.is_null());
    let min_reputation = match req_field("min_reputation") {
        Some(v) => Some(
            serde_json::from_value::<Reputation>(v.clone())
                .map_err(|_| AppError::field("requirements.min_reputation", "must be 0–100"))?,
        ),
        None => None,
    };
    // The requirements also reach the worker: the description carries them verbatim.
    let description = match data {
        Some(d) => format!("{description}\n\nRequirements (JSON): {d}")
            .trim()
            .to_owned(),
        None => description,
    };
    let int = |k: &str| req_field(k).and_then(Value::as_i64);
    let spec = TaskSpec::parse(
        &TaskInput {
            title: &title,
            description: &description,
            capabilities: &capabilities,
            min_reputation,
            reward,
            complexity: &complexity,
            deadline,
            kind: req_field("kind").and_then(Value::as_str),
            output_schema: req_field("output_schema"),
            language: req_field("language").and_then(Value::as_str),
            min_words: int("min_words"),
            max_attempts: int("max_attempts"),
        },
        max_reward,
        now,
        "",
    )?;
    Ok(spec)
}

// ---------------------------------------------------------------------------------------
// JSON-RPC
// ---------------------------------------------------------------------------------------

fn rpc_error(e: A2AError) -> JsonRpcError {
    e.to_jsonrpc_error()
}

fn error_info(
    code: i32,
    message: impl Into<String>,
    reason: &str,
    meta: HashMap<String, String>,
) -> JsonRpcError {
    let mut e = A2AError::new(code, message).to_jsonrpc_error();
    // The spec's reason for the code (TASK_NOT_FOUND, …), or Nervix's own for -32602/-32603.
    if let Some(Value::Array(details)) = e.data.as_mut() {
        for d in details.iter_mut() {
            if d["@type"] == ::a2a::ERROR_INFO_TYPE {
                if d["reason"].as_str().is_none_or(str::is_empty)
                    || code == error_code::INVALID_PARAMS
                {
                    d["reason"] = json!(reason);
                }
                if let Some(m) = d["metadata"].as_object_mut() {
                    for (k, v) in &meta {
                        m.insert(k.clone(), json!(v));
                    }
                }
            }
        }
    }
    e
}

/// An application error as the JSON-RPC error A2A names for it.
fn from_app(e: AppError, task_id: Option<&str>) -> JsonRpcError {
    let mut meta = HashMap::new();
    if let Some(id) = task_id {
        meta.insert("taskId".to_owned(), id.to_owned());
    }
    meta.insert("code".to_owned(), e.code.to_owned());
    match e.kind {
        ErrorKind::NotFound if task_id.is_some() => error_info(
            error_code::TASK_NOT_FOUND,
            "Task not found",
            "TASK_NOT_FOUND",
            meta,
        ),
        ErrorKind::Invalid if e.code == "content_type_not_supported" => error_info(
            error_code::CONTENT_TYPE_NOT_SUPPORTED,
            e.detail,
            "CONTENT_TYPE_NOT_SUPPORTED",
            meta,
        ),
        ErrorKind::Invalid | ErrorKind::InsufficientFunds | ErrorKind::NotFound => {
            let mut err = error_info(
                error_code::INVALID_PARAMS,
                e.detail.clone(),
                &e.code.to_uppercase(),
                meta,
            );
            if !e.errors.is_empty() {
                let bad = TypedDetail::bad_request(
                    e.errors
                        .iter()
                        .map(|f| FieldViolation {
                            field: f.field.clone(),
                            description: f.message.clone(),
                        })
                        .collect(),
                );
                if let Some(Value::Array(d)) = err.data.as_mut() {
                    d.push(serde_json::to_value(bad).unwrap_or_default());
                }
            }
            err
        }
        ErrorKind::Conflict if e.code == "not_cancelable" => error_info(
            error_code::TASK_NOT_CANCELABLE,
            e.detail,
            "TASK_NOT_CANCELABLE",
            meta,
        ),
        ErrorKind::Conflict | ErrorKind::Forbidden | ErrorKind::AtCapacity => error_info(
            error_code::UNSUPPORTED_OPERATION,
            e.detail,
            "UNSUPPORTED_OPERATION",
            meta,
        ),
        _ => rpc_error(A2AError::internal("Internal error")),
    }
}

#[derive(Debug, Deserialize)]
struct RpcRequest {
    jsonrpc: Option<String>,
    id: Option<JsonRpcId>,
    method: Option<String>,
    #[serde(default)]
    params: Value,
}

fn reply(id: &JsonRpcId, result: Result<Value, JsonRpcError>) -> Response {
    let body = match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    };
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    #[serde(rename = "A2A-Version")]
    version: Option<String>,
}

/// The version the client speaks: the header, else the query parameter; empty means 0.3.
fn requested_version(headers: &HeaderMap, q: &VersionQuery) -> String {
    headers
        .get("a2a-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.version.clone())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "0.3".to_owned())
}

fn version_supported(v: &str) -> bool {
    // Major.Minor; a patch number is ignored (A2A §3.6).
    let mut parts = v.split('.');
    matches!(
        (parts.next(), parts.next()),
        (Some("1"), Some("0")) | (Some("1"), None)
    )
}

async fn platform_rpc(
    State(state): State<AppState>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    AnyScope(caller): AnyScope,
    body: Bytes,
) -> Response {
    rpc(state, q, headers, caller, None, body).await
}

async fn agent_rpc(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    AnyScope(caller): AnyScope,
    body: Bytes,
) -> Response {
    rpc(state, q, headers, caller, Some(handle), body).await
}

async fn rpc(
    state: AppState,
    q: VersionQuery,
    headers: HeaderMap,
    caller: Caller,
    to: Option<String>,
    body: Bytes,
) -> Response {
    let req: RpcRequest = match serde_json::from_slice::<Value>(&body) {
        Err(e) => {
            return reply(
                &JsonRpcId::Null,
                Err(rpc_error(A2AError::parse_error(format!(
                    "Invalid JSON payload: {e}"
                )))),
            )
        }
        Ok(v) => match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                return reply(
                    &JsonRpcId::Null,
                    Err(rpc_error(A2AError::invalid_request(format!(
                        "Request payload validation error: {e}"
                    )))),
                )
            }
        },
    };
    let id = req.id.clone().unwrap_or(JsonRpcId::Null);
    let Some(method) = req
        .method
        .as_deref()
        .filter(|_| req.jsonrpc.as_deref() == Some("2.0"))
    else {
        return reply(
            &id,
            Err(rpc_error(A2AError::invalid_request(
                "Request payload validation error: jsonrpc must be \"2.0\" and method a string",
            ))),
        );
    };
    let version = requested_version(&headers, &q);
    if !version_supported(&version) {
        let meta = HashMap::from([
            ("requestedVersion".to_owned(), version.clone()),
            ("supportedVersions".to_owned(), VERSION.to_owned()),
        ]);
        return reply(
            &id,
            Err(error_info(
                error_code::VERSION_NOT_SUPPORTED,
                format!("A2A protocol version {version} is not supported; this interface speaks {VERSION}"),
                "VERSION_NOT_SUPPORTED",
                meta,
            )),
        );
    }
    if let Some(scope) = method_scope(method) {
        if let Err(e) = caller.require(scope) {
            return reply(&id, Err(from_app(e, None)));
        }
    }
    let app = &state.app;
    let params = req.params;
    let base = base_url(&headers);
    match method {
        methods::SEND_MESSAGE | methods::SEND_STREAMING_MESSAGE => {
            let send: SendMessageRequest = match serde_json::from_value(params) {
                Ok(s) => s,
                Err(e) => return reply(&id, Err(invalid_params(&e))),
            };
            let spec = match task_spec(
                &send,
                Money::from_cents(app.config.max_reward_cents),
                Utc::now(),
            ) {
                Ok(s) => s,
                Err(e) => return reply(&id, Err(from_app(e, None))),
            };
            let posted = match ops::send(app, &caller, &spec, to.as_deref()).await {
                Ok(t) => t,
                Err(e) => return reply(&id, Err(from_app(e, None))),
            };
            if method == methods::SEND_STREAMING_MESSAGE {
                return stream(state.clone(), caller, id, posted.task.id, base).await;
            }
            let immediately = send
                .configuration
                .as_ref()
                .and_then(|c| c.return_immediately)
                .unwrap_or(false);
            let task = if immediately {
                posted
            } else {
                match ops::wait(app, &caller, posted.task.id, BLOCKING_WAIT_CAP).await {
                    Ok(t) => t,
                    Err(e) => {
                        return reply(&id, Err(from_app(e, Some(&posted.task.id.to_string()))))
                    }
                }
            };
            reply(&id, Ok(json!({"task": a2a_task(&task, true, &base)})))
        }
        methods::GET_TASK => {
            let task_id = match task_id(&params) {
                Ok(t) => t,
                Err(e) => return reply(&id, Err(e)),
            };
            let r = ops::task(app, &caller, task_id)
                .await
                .map(|t| serde_json::to_value(a2a_task(&t, true, &base)).unwrap_or_default())
                .map_err(|e| from_app(e, Some(&task_id.to_string())));
            reply(&id, r)
        }
        methods::CANCEL_TASK => {
            let task_id = match task_id(&params) {
                Ok(t) => t,
                Err(e) => return reply(&id, Err(e)),
            };
            let r = ops::cancel(app, &caller, task_id)
                .await
                .map(|t| serde_json::to_value(a2a_task(&t, true, &base)).unwrap_or_default())
                .map_err(|e| from_app(e, Some(&task_id.to_string())));
            reply(&id, r)
        }
        methods::LIST_TASKS => reply(&id, list(&state, &caller, &params, &base).await),
        methods::SUBSCRIBE_TO_TASK => {
            let task_id = match task_id(&params) {
                Ok(t) => t,
                Err(e) => return reply(&id, Err(e)),
            };
            match ops::task(app, &caller, task_id).await {
                Ok(t) if t.is_over() => reply(
                    &id,
                    Err(error_info(
                        error_code::UNSUPPORTED_OPERATION,
                        format!(
                            "task {task_id} is over ({}): nothing to subscribe to",
                            t.task.status
                        ),
                        "UNSUPPORTED_OPERATION",
                        HashMap::from([("taskId".to_owned(), task_id.to_string())]),
                    )),
                ),
                Ok(_) => stream(state.clone(), caller, id, task_id, base).await,
                Err(e) => reply(&id, Err(from_app(e, Some(&task_id.to_string())))),
            }
        }
        methods::CREATE_PUSH_CONFIG
        | methods::GET_PUSH_CONFIG
        | methods::LIST_PUSH_CONFIGS
        | methods::DELETE_PUSH_CONFIG => reply(
            &id,
            Err(rpc_error(A2AError::push_notification_not_supported())),
        ),
        methods::GET_EXTENDED_AGENT_CARD => reply(
            &id,
            Err(rpc_error(A2AError::extended_card_not_configured())),
        ),
        other => reply(&id, Err(rpc_error(A2AError::method_not_found(other)))),
    }
}

/// The scope a JSON-RPC method needs, as the REST route doing the same work declares it.
fn method_scope(method: &str) -> Option<Scope> {
    match method {
        methods::SEND_MESSAGE | methods::SEND_STREAMING_MESSAGE | methods::CANCEL_TASK => {
            Some(Scope::TasksPost)
        }
        methods::GET_TASK | methods::LIST_TASKS | methods::SUBSCRIBE_TO_TASK => {
            Some(Scope::TasksRead)
        }
        _ => None,
    }
}

fn invalid_params(e: &dyn std::fmt::Display) -> JsonRpcError {
    rpc_error(A2AError::invalid_params(format!("Invalid parameters: {e}")))
}

fn task_id(params: &Value) -> Result<Uuid, JsonRpcError> {
    let raw = params["id"]
        .as_str()
        .ok_or_else(|| invalid_params(&"id is required"))?;
    // A malformed id names no task (A2A: not found, not a validation error).
    Uuid::parse_str(raw).map_err(|_| {
        error_info(
            error_code::TASK_NOT_FOUND,
            "Task not found",
            "TASK_NOT_FOUND",
            HashMap::from([("taskId".to_owned(), raw.to_owned())]),
        )
    })
}

async fn list(
    state: &AppState,
    caller: &Caller,
    params: &Value,
    base: &str,
) -> Result<Value, JsonRpcError> {
    let page_size = match params.get("pageSize").and_then(Value::as_i64) {
        None => LIST_DEFAULT,
        Some(n) if (1..=LIST_MAX).contains(&n) => n,
        Some(_) => return Err(invalid_params(&format!("pageSize must be 1 to {LIST_MAX}"))),
    };
    let before = match params
        .get("pageToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        Some(t) => Some(
            Uuid::parse_str(t)
                .map_err(|_| invalid_params(&"pageToken is not one this server gave"))?,
        ),
        None => None,
    };
    let statuses = match params.get("status").filter(|s| !s.is_null()) {
        Some(s) => {
            let state: TaskState =
                serde_json::from_value(s.clone()).map_err(|e| invalid_params(&e))?;
            Some(
                Status::ALL
                    .iter()
                    .copied()
                    .filter(|st| state_of(*st) == state)
                    .collect::<Vec<_>>(),
            )
        }
        None => None,
    };
    let with_artifacts = params
        .get("includeArtifacts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let rows = ops::list(
        &state.app,
        caller,
        statuses,
        before,
        page_size + 1,
        with_artifacts,
    )
    .await
    .map_err(|e| from_app(e, None))?;
    let more = rows.len() as i64 > page_size;
    let page: Vec<&A2aTask> = rows.iter().take(page_size as usize).collect();
    let next = if more {
        page.last()
            .map(|t| t.task.id.to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let resp = ListTasksResponse {
        tasks: page
            .iter()
            .map(|t| a2a_task(t, with_artifacts, base))
            .collect(),
        next_page_token: next,
        page_size: page_size as i32,
        total_size: page.len() as i32,
    };
    serde_json::to_value(resp).map_err(|e| rpc_error(A2AError::internal(e.to_string())))
}

/// The SSE stream of a task (A2A §3.1.2): the task first, then a status update per change
/// (the artifact before the final `completed`), closed when the task is over.
async fn stream(
    state: AppState,
    caller: Caller,
    id: JsonRpcId,
    task: Uuid,
    base: String,
) -> Response {
    let events = match ops::watch(&state.app, &caller, task).await {
        Ok(s) => s,
        Err(e) => return reply(&id, Err(from_app(e, Some(&task.to_string())))),
    };
    let frame = move |result: Result<Value, JsonRpcError>| -> Result<SseEvent, Infallible> {
        let body = match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
        };
        Ok(SseEvent::default().data(body.to_string()))
    };
    let mut first = true;
    let sse = events.flat_map(move |item| {
        let out: Vec<Result<Value, JsonRpcError>> = match item {
            Err(e) => vec![Err(from_app(e, Some(&task.to_string())))],
            Ok(t) if first => {
                first = false;
                vec![Ok(json!({"task": a2a_task(&t, true, &base)}))]
            }
            Ok(t) => {
                let task_id = t.task.id.to_string();
                let mut v = Vec::new();
                if let Some(a) = artifact(&t, &base) {
                    v.push(Ok(json!({"artifactUpdate": TaskArtifactUpdateEvent {
                        task_id: task_id.clone(),
                        context_id: task_id.clone(),
                        artifact: a,
                        append: None,
                        last_chunk: Some(true),
                        metadata: None,
                    }})));
                }
                v.push(Ok(json!({"statusUpdate": TaskStatusUpdateEvent {
                    task_id: task_id.clone(),
                    context_id: task_id,
                    status: status_of(&t),
                    metadata: None,
                }})));
                v
            }
        };
        futures::stream::iter(out)
    });
    let sse = sse.map(frame);
    let mut res = Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_form_drops_signatures_and_default_values() {
        // A2A §8.4.1's example, plus an extension whose `required: false` is a default.
        let card = json!({
            "name": "Example Agent", "description": "",
            "capabilities": {"streaming": false, "pushNotifications": false, "extensions": [
                {"uri": "urn:x", "required": false}
            ]},
            "skills": [], "signatures": [{"protected": "p", "signature": "s"}]
        });
        assert_eq!(
            signed_form(&card),
            json!({"name": "Example Agent", "capabilities": {"streaming": false,
                "pushNotifications": false, "extensions": [{"uri": "urn:x"}]}})
        );
    }

    #[test]
    fn every_status_has_its_a2a_state() {
        assert_eq!(state_of(Status::Available), TaskState::Submitted);
        assert_eq!(state_of(Status::Blocked), TaskState::Submitted);
        assert_eq!(state_of(Status::Claimed), TaskState::Working);
        assert_eq!(state_of(Status::Submitted), TaskState::Working);
        assert_eq!(state_of(Status::Completed), TaskState::Completed);
        assert_eq!(state_of(Status::Failed), TaskState::Failed);
        assert_eq!(state_of(Status::Cancelled), TaskState::Canceled);
        assert_eq!(state_of(Status::Expired), TaskState::Canceled);
    }

    #[test]
    fn deadlines() {
        let now = Utc::now();
        assert_eq!(
            parse_deadline(&json!("90m"), now).unwrap(),
            now + chrono::Duration::minutes(90)
        );
        assert_eq!(
            parse_deadline(&json!("2026-01-02T03:04:05Z"), now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        for bad in [json!("2ч"), json!("-1h"), json!("h"), json!(""), json!(5)] {
            assert!(parse_deadline(&bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert!(version_supported("1.0"));
        assert!(version_supported("1.0.3"));
        assert!(version_supported("1"));
        assert!(!version_supported("0.3"));
        assert!(!version_supported("2.0"));
        let q = VersionQuery { version: None };
        assert_eq!(requested_version(&HeaderMap::new(), &q), "0.3");
    }

    #[test]
    fn a_message_becomes_a_task_spec() {
        // The spec's own SendMessageRequest shape (A2A §6.1), with Nervix's metadata.
        let req: SendMessageRequest = serde_json::from_value(json!({
            "message": {"role": "ROLE_USER", "messageId": "m1", "parts": [
                {"text": "Summarise the attached notes"},
                {"data": {"language": "en", "min_words": 20}, "mediaType": "application/json"}
            ]},
            "metadata": {"reward": "12.50", "capabilities": ["writing"], "complexity": "simple",
                "deadline": "2h"}
        }))
        .unwrap();
        let now = Utc::now();
        let spec = task_spec(&req, Money::from_cents(1_000_000), now).unwrap();
        assert_eq!(spec.title(), "Summarise the attached notes");
        assert!(spec
            .description()
            .starts_with("Summarise the attached notes\n\nRequirements (JSON): "));
        assert_eq!(spec.reward().money(), Money::from_cents(1250));
        assert_eq!(spec.capabilities().as_slice(), ["writing".to_owned()]);
        assert_eq!(spec.language(), Some("en"));
        assert_eq!(spec.deadline(), now + chrono::Duration::hours(2));

        let mut no_reward = req.clone();
        no_reward.metadata = None;
        let e = task_spec(&no_reward, Money::from_cents(1_000_000), now).unwrap_err();
        assert_eq!(e.errors[0].field, "metadata.reward");
    }
}
