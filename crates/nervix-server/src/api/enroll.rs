//! Enrollment and auth: proof of key possession through signed, single-use challenges.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::{
    AgentName, Capabilities, EncryptionKey, FieldErrors, MaxConcurrentTasks, Metadata, PublicKey,
    Scope, Scopes,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::auth::{self, Challenge, Enrollment, Session};
use crate::app::Caller;
use crate::error::{ApiResult, Problem};
use crate::http::{ApiJson, ClientIp};
use crate::openapi;
use crate::state::AppState;
use crate::wire::agents::AgentView;
use crate::wire::int;

pub fn routes() -> OpenApiRouter<AppState> {
    let limited = OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(enroll_respond))
        .routes(routes!(auth_challenge))
        .routes(routes!(auth_token));
    OpenApiRouter::new()
        .merge(limited)
        .routes(routes!(verify))
        .routes(routes!(rotate))
        .routes(routes!(revoke))
        .routes(routes!(create_token))
}

/// The routes `limit_by_ip` applies to.
pub const IP_LIMITED: &[&str] = &[
    "/v1/enroll",
    "/v1/enroll/{enrollment_id}/respond",
    "/v1/auth/challenge",
    "/v1/auth/token",
];

#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrollRequest {
    #[schema(schema_with = openapi::handle)]
    pub agent_id: String,
    /// Defaults to `agent_id`.
    #[schema(schema_with = openapi::agent_name)]
    pub agent_name: Option<String>,
    #[schema(schema_with = openapi::public_key)]
    pub public_key: String,
    #[schema(schema_with = openapi::encryption_key)]
    pub encryption_public_key: Option<String>,
    #[serde(default)]
    #[schema(schema_with = openapi::capabilities)]
    pub capabilities: Vec<String>,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "int::optional")]
    #[schema(schema_with = openapi::max_concurrent_tasks)]
    pub max_concurrent_tasks: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollResponse {
    pub enrollment_id: Uuid,
    /// Sign the UTF-8 bytes of this string exactly as given.
    pub challenge: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignatureBody {
    #[schema(schema_with = openapi::signature)]
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    pub agent: AgentView,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthChallengeRequest {
    /// The agent's handle or UUID.
    pub agent_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthChallengeResponse {
    pub challenge_id: Uuid,
    pub challenge: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthTokenRequest {
    pub challenge_id: Uuid,
    #[schema(schema_with = openapi::signature)]
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub agent_id: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    /// What the token may do: its scopes within what the agent's role allows.
    pub scopes: Vec<&'static str>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    #[schema(schema_with = openapi::scopes)]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "int::optional")]
    #[schema(schema_with = openapi::token_lifetime)]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    pub scopes: Vec<&'static str>,
}

fn scope_names(scopes: Scopes) -> Vec<&'static str> {
    scopes.iter().map(Scope::as_str).collect()
}

impl EnrollRequest {
    /// Every field parsed; all problems reported at once.
    fn parse(self) -> Result<Enrollment, FieldErrors> {
        let mut errs = FieldErrors::default();
        let handle = errs.check(auth::enrollable_handle(&self.agent_id));
        let public_key = errs.check(PublicKey::parse(&self.public_key));
        let encryption_public_key = self
            .encryption_public_key
            .as_deref()
            .map(|k| errs.check(EncryptionKey::parse(k)));
        let capabilities = errs.check(Capabilities::parse("capabilities", &self.capabilities));
        let name = self
            .agent_name
            .as_deref()
            .map(|n| errs.check(AgentName::parse(n)));
        let metadata = errs.check(self.metadata.map_or(Ok(Metadata::empty()), Metadata::parse));
        let max_concurrent_tasks = errs.check(
            self.max_concurrent_tasks
                .map_or(Ok(MaxConcurrentTasks::DEFAULT), MaxConcurrentTasks::parse),
        );
        // An optional field: absent is `Some(None)`, sent but unparsable is `None`.
        match (
            handle,
            public_key,
            capabilities,
            metadata,
            max_concurrent_tasks,
            name.map_or(Some(None), |n| n.map(Some)),
            encryption_public_key.map_or(Some(None), |k| k.map(Some)),
        ) {
            (
                Some(handle),
                Some(public_key),
                Some(capabilities),
                Some(metadata),
                Some(max),
                Some(name),
                Some(key),
            ) if errs.is_empty() => Ok(Enrollment {
                handle,
                name,
                public_key,
                encryption_public_key: key,
                capabilities,
                metadata,
                max_concurrent_tasks: max,
            }),
            _ => Err(errs),
        }
    }
}

impl From<Challenge> for EnrollResponse {
    fn from(c: Challenge) -> Self {
        EnrollResponse {
            enrollment_id: c.id,
            challenge: c.text,
            expires_at: c.expires_at,
        }
    }
}

impl From<Session> for TokenResponse {
    fn from(s: Session) -> Self {
        TokenResponse {
            token: s.token,
            token_type: "Bearer",
            expires_at: s.expires_at,
            agent: AgentView::public(&s.agent),
        }
    }
}

/// Enroll: validate, refuse taken handles/keys early, and hand out a challenge.
#[utoipa::path(post, path = "/v1/enroll", tag = "auth", request_body = EnrollRequest,
    responses((status = 201, body = EnrollResponse, description = "A challenge to sign."),
        (status = 409, body = Problem, description = "`agent_id_taken` or `public_key_taken`.")))]
async fn enroll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let challenge = auth::enroll(&state.app, req.parse()?).await?;
    Ok((StatusCode::CREATED, Json(challenge.into())))
}

/// Complete an enrollment with the signed challenge; returns the first token.
#[utoipa::path(post, path = "/v1/enroll/{enrollment_id}/respond", tag = "auth", request_body = SignatureBody,
    params(("enrollment_id" = Uuid, Path)),
    responses((status = 200, body = TokenResponse, description = "The agent is enrolled: its first token."),
        (status = 401, body = Problem, description = "The signature does not verify (the challenge stays usable until it expires or 5 failures)."),
        (status = 404, body = Problem, description = "No such enrollment."),
        (status = 409, body = Problem, description = "`challenge_used`, `challenge_locked`, or the handle or key was enrolled meanwhile."),
        (status = 410, body = Problem, description = "`challenge_expired`.")))]
async fn enroll_respond(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(enrollment_id): Path<Uuid>,
    ApiJson(body): ApiJson<SignatureBody>,
) -> ApiResult<Json<TokenResponse>> {
    let session = auth::complete_enrollment(&state.app, enrollment_id, &body.signature, ip).await?;
    Ok(Json(session.into()))
}

/// Ask for a login challenge for an enrolled agent.
#[utoipa::path(post, path = "/v1/auth/challenge", tag = "auth", request_body = AuthChallengeRequest,
    responses((status = 201, body = AuthChallengeResponse, description = "A challenge to sign."),
        (status = 403, body = Problem, description = "`agent_suspended`, or `no_key_login`: the operator's admin identity gets its tokens from `nervix admin create-token`."),
        (status = 404, body = Problem, description = "No such agent.")))]
async fn auth_challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AuthChallengeRequest>,
) -> ApiResult<(StatusCode, Json<AuthChallengeResponse>)> {
    let c = auth::login_challenge(&state.app, &req.agent_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(AuthChallengeResponse {
            challenge_id: c.id,
            challenge: c.text,
            expires_at: c.expires_at,
        }),
    ))
}

/// Exchange a signed login challenge for a token.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = AuthTokenRequest,
    responses((status = 200, body = TokenResponse, description = "A fresh token."),
        (status = 401, body = Problem, description = "The signature does not verify."),
        (status = 403, body = Problem, description = "`agent_suspended`."),
        (status = 404, body = Problem, description = "No such challenge."),
        (status = 409, body = Problem, description = "`challenge_used` or `challenge_locked`."),
        (status = 410, body = Problem, description = "`challenge_expired`.")))]
async fn auth_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<AuthTokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let session = auth::login(&state.app, req.challenge_id, &req.signature, ip).await?;
    Ok(Json(session.into()))
}

/// Check the presented token.
#[utoipa::path(get, path = "/v1/auth/verify", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = VerifyResponse, description = "The token is valid.")))]
async fn verify(caller: Caller) -> Json<VerifyResponse> {
    Json(VerifyResponse {
        valid: true,
        scopes: scope_names(caller.scopes()),
        agent_id: caller.handle,
        role: caller.role.to_string(),
        expires_at: caller.expires_at,
    })
}

/// Swap the presented token for a fresh one; the presented one is revoked.
#[utoipa::path(post, path = "/v1/auth/rotate", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TokenResponse, description = "The fresh token; the presented one is revoked.")))]
async fn rotate(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(auth::rotate(&state.app, &caller).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResponse {
    pub revoked: bool,
}

/// Revoke the presented token.
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = RevokeResponse, description = "The presented token is revoked.")))]
async fn revoke(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<RevokeResponse>> {
    let revoked = auth::revoke(&state.app, &caller).await?;
    Ok(Json(RevokeResponse { revoked }))
}

/// Mint a narrower token for the presenting token's agent: it can do only what its
/// `scopes` name (for example read-only for a dashboard or a monitoring script), each of which
/// the presenting token must have. The presenting token stays valid; the new one is revoked
/// with `POST /v1/auth/revoke` presented with it, and rotation keeps its scopes.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "auth", security(("bearer" = [])),
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken, description = "The new token."),
        (status = 403, body = Problem, description = "`insufficient_scope`: a scope asked for is not one the presenting token has; `agent_suspended`.")))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let req = auth::TokenRequest::parse(&body.scopes, body.expires_in, state.app.config.token_ttl)?;
    let scopes = req.scopes;
    let session = auth::create_token(&state.app, &caller, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: session.token,
            token_type: "Bearer",
            expires_at: session.expires_at,
            scopes: scope_names(scopes),
        }),
    ))
}
