//! The REST client: one typed method per route of the contract, token renewal, pagination.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeZone as _, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{ClientError, Problem};
use crate::keys::AgentKeys;
use crate::pages::Pages;
use crate::stream::EventStream;
use crate::tls::Trust;
use crate::types::{
    AdminWithdrawalQuery, Agent, AgentQuery, Announcement, AuditQuery, AuditRecord, AuthChallenge,
    BonusPool, Channel, ChannelMembers, ChannelQuery, ClaimRequest, ClaimResponse, ConfigPatch,
    ContributionsQuery, CreateTokenRequest, CreatedToken, Earnings, EnrollRequest, EnrollResponse,
    Granted, Health, Leaderboard, LedgerEntry, ListQuery, MarkRead, Message, MessageHistoryQuery,
    NewAnnouncement, NewChannel, NewReview, NewTask, NewWorkflow, Notification, NotificationQuery,
    Page, Readiness, Reputation, ReputationHistoryQuery, ReputationSnapshot, Review,
    ReviewQueueQuery, Role, SendMessage, SentMessage, Stats, Submission, SubmitRequest,
    SubmitResponse, Task, TaskQuery, TokenResponse, Transfer, VerifyResponse, Withdrawal,
    WithdrawalQuery, WithdrawalRequest, WorkHistoryEntry, WorkHistoryQuery, Workflow,
};

type Result<T, E = ClientError> = std::result::Result<T, E>;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a non-JSON error body is kept as the problem's `detail`.
const MAX_ERROR_DETAIL: usize = 512;
/// Renewal starts this long before expiry at the latest (unless a tenth of the lifetime is
/// shorter), so a 90-day token is renewed on its last day.
const MAX_RENEW_MARGIN: chrono::Duration = chrono::Duration::days(1);
/// After a failed renewal, calls go on with the still-valid token and try again only after
/// this pause, rather than doubling every request while the server refuses.
const RENEW_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// A Nervix API client, optionally carrying an agent's bearer token.
///
/// Cloning is cheap and shares the connection pool. Clones also share the token (a *session*)
/// until one of them gets a token of its own (enroll, log in, [`Client::set_token`]): so a
/// renewal or rotation by one clone serves them all, while a clone given another agent's token
/// acts as that agent without affecting the others.
///
/// **Token renewal.** The client knows when its token expires (from the auth response, or the
/// token's own `exp` claim). Once it holds the agent's signing key ([`Client::login`],
/// [`Client::set_signing_key`]), a call made when less than a tenth of the token's lifetime
/// (at most one day) remains first gets a fresh token through `auth/challenge` and
/// `auth/token`, transparently. Should that fail while the old token is still valid, the call
/// goes on with the old one and renewal is retried a little later.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    trust: Trust,
    base: Url,
    session: Arc<Session>,
    renew_margin: Option<Duration>,
}

/// The credentials that clones of one client share.
#[derive(Default)]
struct Session {
    state: RwLock<AuthState>,
    /// Serializes renewals, so concurrent calls that find the token due renew it once.
    renewal: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct AuthState {
    credential: Option<Credential>,
    signer: Option<Signer>,
    last_failed_renewal: Option<Instant>,
}

struct Credential {
    token: Zeroizing<String>,
    issued_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
struct Signer {
    keys: Arc<AgentKeys>,
    agent_id: String,
}

impl Credential {
    /// A token of unknown origin: its lifetime is read from its own claims, if it has them.
    fn from_token(token: String) -> Self {
        let (issued_at, expires_at) = jwt_times(&token).unzip();
        Credential {
            token: Zeroizing::new(token),
            issued_at,
            expires_at,
        }
    }

    /// A token the server just issued: it expires when the response says.
    fn from_response(t: &TokenResponse) -> Self {
        let claims = jwt_times(&t.token);
        Credential {
            token: Zeroizing::new(t.token.clone()),
            issued_at: Some(claims.map_or_else(Utc::now, |(iat, _)| iat)),
            expires_at: Some(t.expires_at),
        }
    }

    fn renewal_due(&self, now: DateTime<Utc>, margin: Option<Duration>) -> bool {
        let Some(expires_at) = self.expires_at else {
            return false;
        };
        let margin = match margin {
            Some(m) => chrono::Duration::from_std(m).unwrap_or(MAX_RENEW_MARGIN),
            None => {
                let lifetime = expires_at - self.issued_at.unwrap_or(expires_at);
                (lifetime / 10).min(MAX_RENEW_MARGIN)
            }
        };
        expires_at - now < margin
    }
}

/// `iat` and `exp` of a JWT, read without verifying it (only the server can, and it does).
fn jwt_times(token: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    #[derive(Deserialize)]
    struct Claims {
        iat: i64,
        exp: i64,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some((
        Utc.timestamp_opt(claims.iat, 0).single()?,
        Utc.timestamp_opt(claims.exp, 0).single()?,
    ))
}

impl Session {
    fn new(credential: Option<Credential>, signer: Option<Signer>) -> Arc<Self> {
        Arc::new(Session {
            state: RwLock::new(AuthState {
                credential,
                signer,
                last_failed_renewal: None,
            }),
            renewal: tokio::sync::Mutex::new(()),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&AuthState) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut AuthState) -> T) -> T {
        f(&mut self.state.write().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A response from [`Client::request_raw`], whatever its status.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as received.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON; `Null` when it is empty, a JSON string when it is not JSON.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// A header's value, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A fresh random `Idempotency-Key` (a UUID). Keep it for the retries of one request: a
/// retry with the same key and body returns the first response instead of acting twice.
pub fn new_idempotency_key() -> String {
    Uuid::new_v4().to_string()
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`), with its own
    /// connection pool and a 30 s request timeout.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_trust(base_url, Trust::default())
    }

    /// A client that verifies an `https://` server with `trust` (e.g. a private CA:
    /// [`Trust::with_ca_file`]), for REST calls and [`Client::event_stream`] alike.
    pub fn with_trust(base_url: &str, trust: Trust) -> Result<Self> {
        let http = trust
            .http_builder()
            .user_agent(concat!("nervix-client/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        let mut client = Self::with_http_client(base_url, http)?;
        client.trust = trust;
        Ok(client)
    }

    /// The agent's event stream on this client's server, as this client's agent, verified
    /// with this client's trust (see [`EventStream::connect`]).
    pub async fn event_stream(&self, since: Option<i64>) -> Result<EventStream> {
        EventStream::connect_with_trust(self.base.as_str(), self.clone(), since, &self.trust).await
    }

    /// A client reusing an existing `reqwest::Client`, so many agents share one pool. Its
    /// event streams trust the public roots.
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("expected an http:// or https:// URL"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("must not have a query or fragment"));
        }
        Ok(Self {
            http,
            trust: Trust::default(),
            base,
            session: Session::new(None, None),
            renew_margin: None,
        })
    }

    /// This client with `token` (see [`Client::set_token`]).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.set_token(token);
        self
    }

    /// Acts with `token` from now on, in a session of its own (clones made before keep theirs).
    /// Its expiry is read from the token's `exp` claim; no signing key is known for it until
    /// [`Client::set_signing_key`].
    pub fn set_token(&mut self, token: impl Into<String>) {
        self.session = Session::new(Some(Credential::from_token(token.into())), None);
    }

    /// Drops the token (and signing key): later calls are anonymous.
    pub fn clear_token(&mut self) {
        self.session = Session::new(None, None);
    }

    /// The bearer token in use, if any.
    pub fn token(&self) -> Option<String> {
        self.session
            .read(|s| s.credential.as_ref().map(|c| c.token.to_string()))
    }

    /// When the token in use expires, if known.
    pub fn token_expires_at(&self) -> Option<DateTime<Utc>> {
        self.session
            .read(|s| s.credential.as_ref().and_then(|c| c.expires_at))
    }

    /// Lets the client renew its token by itself, signing login challenges for `agent_id`
    /// (handle or UUID) with `keys`. Shared with the clones that share this client's token.
    pub fn set_signing_key(&mut self, keys: Arc<AgentKeys>, agent_id: impl Into<String>) {
        let signer = Signer {
            keys,
            agent_id: agent_id.into(),
        };
        self.session.write(|s| s.signer = Some(signer));
    }

    /// This client with a signing key (see [`Client::set_signing_key`]).
    pub fn with_signing_key(mut self, keys: Arc<AgentKeys>, agent_id: impl Into<String>) -> Self {
        self.set_signing_key(keys, agent_id);
        self
    }

    /// Renews the token when less than `margin` of its life remains, instead of the default
    /// (a tenth of its lifetime, at most one day).
    pub fn with_renew_margin(mut self, margin: Duration) -> Self {
        self.renew_margin = Some(margin);
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ---- enrollment and auth ----------------------------------------------------------------

    /// Enrolls a new agent: requests a challenge, signs it with `keys` and answers it. The new
    /// token is stored in the client (in a session of its own).
    ///
    /// `request.public_key` must be `keys`' public key ([`EnrollRequest::new`] sets it). Call
    /// [`Client::set_signing_key`] afterwards for automatic renewal.
    pub async fn enroll(
        &mut self,
        keys: &AgentKeys,
        request: &EnrollRequest,
    ) -> Result<TokenResponse> {
        let started = self.start_enroll(request).await?;
        let signature = keys.sign_challenge(&started.challenge);
        self.respond_enroll(started.enrollment_id, &signature).await
    }

    /// `POST /v1/enroll`: the first half of [`Client::enroll`].
    pub async fn start_enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse> {
        let url = self.endpoint(&["v1", "enroll"])?;
        self.send_public(self.http.post(url).json(request)).await
    }

    /// `POST /v1/enroll/{id}/respond` with a base64 signature (any string is sent as is, so
    /// tests can send bad ones). Stores the token on success.
    pub async fn respond_enroll(
        &mut self,
        enrollment_id: Uuid,
        signature_b64: &str,
    ) -> Result<TokenResponse> {
        let url = self.endpoint(&["v1", "enroll", &enrollment_id.to_string(), "respond"])?;
        let body = json!({ "signature": signature_b64 });
        let token: TokenResponse = self.send_public(self.http.post(url).json(&body)).await?;
        self.session = Session::new(Some(Credential::from_response(&token)), None);
        Ok(token)
    }

    /// Logs in an enrolled agent (challenge, signature, token). Stores the token.
    pub async fn authenticate(
        &mut self,
        keys: &AgentKeys,
        agent_id: &str,
    ) -> Result<TokenResponse> {
        let challenge = self.auth_challenge(agent_id).await?;
        let signature = keys.sign_challenge(&challenge.challenge);
        self.auth_token(challenge.challenge_id, &signature).await
    }

    /// Logs in like [`Client::authenticate`] and keeps `keys`, so the token is renewed before
    /// it expires without the caller noticing.
    pub async fn login(&mut self, keys: Arc<AgentKeys>, agent_id: &str) -> Result<TokenResponse> {
        let token = self.authenticate(&keys, agent_id).await?;
        self.set_signing_key(keys, agent_id);
        Ok(token)
    }

    /// `POST /v1/auth/challenge` for the agent with this handle (or UUID).
    pub async fn auth_challenge(&self, agent_id: &str) -> Result<AuthChallenge> {
        let url = self.endpoint(&["v1", "auth", "challenge"])?;
        let body = json!({ "agent_id": agent_id });
        self.send_public(self.http.post(url).json(&body)).await
    }

    /// `POST /v1/auth/token`. Stores the token on success.
    pub async fn auth_token(
        &mut self,
        challenge_id: Uuid,
        signature_b64: &str,
    ) -> Result<TokenResponse> {
        let token = self.fetch_token(challenge_id, signature_b64).await?;
        self.session = Session::new(Some(Credential::from_response(&token)), None);
        Ok(token)
    }

    /// `GET /v1/auth/verify` for the current token.
    pub async fn verify(&self) -> Result<VerifyResponse> {
        let url = self.endpoint(&["v1", "auth", "verify"])?;
        self.send(self.http.get(url)).await
    }

    /// Swaps the current token for a fresh one (the old one is revoked) and stores it, for
    /// every clone sharing this client's token.
    pub async fn rotate(&mut self) -> Result<TokenResponse> {
        let url = self.endpoint(&["v1", "auth", "rotate"])?;
        let token: TokenResponse = self.send(self.http.post(url)).await?;
        self.session
            .write(|s| s.credential = Some(Credential::from_response(&token)));
        Ok(token)
    }

    /// Mints a narrower token for this agent (`POST /v1/auth/tokens`), e.g. read-only for a
    /// dashboard or a monitoring script; the current token stays as it is. Hand the new token
    /// to [`Client::with_token`] of another client.
    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<CreatedToken> {
        let url = self.endpoint(&["v1", "auth", "tokens"])?;
        self.send(self.http.post(url).json(request)).await
    }

    /// Revokes the current token. The client keeps it (now useless) so callers can observe
    /// the rejection; call [`Client::clear_token`] to drop it.
    pub async fn revoke(&self) -> Result<()> {
        let url = self.endpoint(&["v1", "auth", "revoke"])?;
        self.send_no_content(self.http.post(url)).await
    }

    /// Gets a fresh token now with the signing key (challenge and token) and stores it for
    /// every clone sharing this client's token. The old token stays valid until it expires.
    pub async fn renew_token(&self) -> Result<TokenResponse> {
        let signer = self
            .session
            .read(|s| s.signer.clone())
            .ok_or(ClientError::NoSigningKey)?;
        let _one_at_a_time = self.session.renewal.lock().await;
        let token = self.reauthenticate(&signer).await?;
        self.session.write(|s| {
            s.credential = Some(Credential::from_response(&token));
            s.last_failed_renewal = None;
        });
        Ok(token)
    }

    // ---- agents -----------------------------------------------------------------------------

    /// `GET /v1/agents/me`: the full view, with `config`, `total_earnings` and `role`.
    pub async fn me(&self) -> Result<Agent> {
        let url = self.endpoint(&["v1", "agents", "me"])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/agents/{id}` by UUID or handle (public view).
    pub async fn agent(&self, id_or_handle: &str) -> Result<Agent> {
        let url = self.endpoint(&["v1", "agents", id_or_handle])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/agents`: one page of the public directory.
    pub async fn agents(&self, query: &AgentQuery) -> Result<Page<Agent>> {
        self.list(query).await
    }

    /// `PATCH /v1/agents/me/config` with a raw JSON body, so forbidden fields can be sent too.
    /// Returns the updated agent (full view).
    pub async fn patch_config(&self, patch: &Value) -> Result<Agent> {
        let url = self.endpoint(&["v1", "agents", "me", "config"])?;
        self.send(self.http.patch(url).json(patch)).await
    }

    /// `PATCH /v1/agents/me/config`: changes the fields set in `patch`; returns the full view.
    pub async fn update_config(&self, patch: &ConfigPatch) -> Result<Agent> {
        let url = self.endpoint(&["v1", "agents", "me", "config"])?;
        self.send(self.http.patch(url).json(patch)).await
    }

    /// `GET /v1/agents/{id}/reputation`.
    pub async fn reputation(&self, id_or_handle: &str) -> Result<Reputation> {
        let url = self.endpoint(&["v1", "agents", id_or_handle, "reputation"])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/agents/{id}/reputation/history`: one page of score snapshots, newest first.
    pub async fn reputation_history(
        &self,
        query: &ReputationHistoryQuery,
    ) -> Result<Page<ReputationSnapshot>> {
        self.list(query).await
    }

    /// `GET /v1/agents/{id}/history`: one page of submissions, newest first.
    pub async fn work_history(&self, query: &WorkHistoryQuery) -> Result<Page<WorkHistoryEntry>> {
        self.list(query).await
    }

    // ---- economy ----------------------------------------------------------------------------

    /// `GET /v1/agents/me/earnings`.
    pub async fn earnings(&self) -> Result<Earnings> {
        let url = self.endpoint(&["v1", "agents", "me", "earnings"])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/agents/me/contributions`: one page of the caller's ledger entries.
    pub async fn contributions(&self, query: &ContributionsQuery) -> Result<Page<LedgerEntry>> {
        self.list(query).await
    }

    /// `POST /v1/withdrawal/request`: moves `amount` to pending withdrawals until an admin
    /// decides. With an idempotency key, a retry never requests twice.
    pub async fn request_withdrawal(
        &self,
        request: &WithdrawalRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Withdrawal> {
        let url = self.endpoint(&["v1", "withdrawal", "request"])?;
        let req = idempotent(self.http.post(url).json(request), idempotency_key)?;
        self.send(req).await
    }

    /// `GET /v1/withdrawals`: one page of the caller's withdrawals.
    pub async fn withdrawals(&self, query: &WithdrawalQuery) -> Result<Page<Withdrawal>> {
        self.list(query).await
    }

    // ---- tasks and workflows ----------------------------------------------------------------

    /// `POST /v1/tasks`. With an idempotency key, a retry returns the first response instead
    /// of posting (and escrowing) twice.
    pub async fn post_task(&self, task: &NewTask, idempotency_key: Option<&str>) -> Result<Task> {
        let url = self.endpoint(&["v1", "tasks"])?;
        let req = idempotent(self.http.post(url).json(task), idempotency_key)?;
        self.send(req).await
    }

    /// `GET /v1/tasks`: one page.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Page<Task>> {
        self.list(query).await
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn task(&self, id: Uuid) -> Result<Task> {
        let url = self.endpoint(&["v1", "tasks", &id.to_string()])?;
        self.send(self.http.get(url)).await
    }

    /// `POST /v1/tasks/{id}/claim`. Losing a race is `409 already_claimed`.
    pub async fn claim(&self, id: Uuid, request: &ClaimRequest) -> Result<ClaimResponse> {
        let url = self.endpoint(&["v1", "tasks", &id.to_string(), "claim"])?;
        self.send(self.http.post(url).json(request)).await
    }

    /// `POST /v1/tasks/{id}/submit`; the response already carries the automated checks.
    pub async fn submit(
        &self,
        id: Uuid,
        request: &SubmitRequest,
        idempotency_key: Option<&str>,
    ) -> Result<SubmitResponse> {
        let url = self.endpoint(&["v1", "tasks", &id.to_string(), "submit"])?;
        let req = idempotent(self.http.post(url).json(request), idempotency_key)?;
        self.send(req).await
    }

    /// `POST /v1/tasks/{id}/release`: the assignee hands the task back.
    pub async fn release(&self, id: Uuid) -> Result<Task> {
        let url = self.endpoint(&["v1", "tasks", &id.to_string(), "release"])?;
        self.send(self.http.post(url)).await
    }

    /// `POST /v1/tasks/{id}/cancel` (poster or admin); the escrow is refunded.
    pub async fn cancel(&self, id: Uuid) -> Result<Task> {
        let url = self.endpoint(&["v1", "tasks", &id.to_string(), "cancel"])?;
        self.send(self.http.post(url)).await
    }

    /// `GET /v1/submissions/{id}` (the submitter, the poster, reviewers, admins).
    pub async fn submission(&self, id: Uuid) -> Result<Submission> {
        let url = self.endpoint(&["v1", "submissions", &id.to_string()])?;
        self.send(self.http.get(url)).await
    }

    /// `POST /v1/workflows`.
    pub async fn post_workflow(
        &self,
        workflow: &NewWorkflow,
        idempotency_key: Option<&str>,
    ) -> Result<Workflow> {
        let url = self.endpoint(&["v1", "workflows"])?;
        let req = idempotent(self.http.post(url).json(workflow), idempotency_key)?;
        self.send(req).await
    }

    /// `GET /v1/workflows/{id}`, with `progress`.
    pub async fn workflow(&self, id: Uuid) -> Result<Workflow> {
        let url = self.endpoint(&["v1", "workflows", &id.to_string()])?;
        self.send(self.http.get(url)).await
    }

    /// `POST /v1/workflows/{id}/cancel` (poster or admin): cancels its open tasks.
    pub async fn cancel_workflow(&self, id: Uuid) -> Result<Workflow> {
        let url = self.endpoint(&["v1", "workflows", &id.to_string(), "cancel"])?;
        self.send(self.http.post(url)).await
    }

    /// Polls `GET /v1/workflows/{id}` every `every` until the workflow is completed, failed
    /// or cancelled, calling `on_update` with each state seen; returns the final one. Wrap it
    /// in `tokio::time::timeout` to give up.
    pub async fn wait_for_workflow(
        &self,
        id: Uuid,
        every: Duration,
        mut on_update: impl FnMut(&Workflow),
    ) -> Result<Workflow> {
        loop {
            let workflow = self.workflow(id).await?;
            on_update(&workflow);
            if workflow.status.is_final() {
                return Ok(workflow);
            }
            tokio::time::sleep(every).await;
        }
    }

    // ---- quality ----------------------------------------------------------------------------

    /// `POST /v1/quality/submit`: reviews a submission (peer layer); a reviewer's or admin's
    /// review of a held submission also decides it.
    pub async fn review(&self, review: &NewReview) -> Result<Review> {
        let url = self.endpoint(&["v1", "quality", "submit"])?;
        self.send(self.http.post(url).json(review)).await
    }

    /// `GET /v1/quality/queue` (reviewers and admins): one page of held submissions.
    pub async fn review_queue(&self, query: &ReviewQueueQuery) -> Result<Page<Submission>> {
        self.list(query).await
    }

    // ---- admin ------------------------------------------------------------------------------

    /// `GET /v1/admin/audit`: one page of the audit log, newest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord>> {
        self.list(query).await
    }

    /// `POST /v1/admin/agents/{id}/suspend`: all the agent's tokens stop working.
    pub async fn suspend(&self, id_or_handle: &str) -> Result<Agent> {
        let url = self.endpoint(&["v1", "admin", "agents", id_or_handle, "suspend"])?;
        self.send(self.http.post(url)).await
    }

    /// `POST /v1/admin/agents/{id}/reinstate`: lifts a suspension.
    pub async fn reinstate(&self, id_or_handle: &str) -> Result<Agent> {
        let url = self.endpoint(&["v1", "admin", "agents", id_or_handle, "reinstate"])?;
        self.send(self.http.post(url)).await
    }

    /// `POST /v1/admin/agents/{id}/role`: `agent` or `reviewer`, from the agent's next request.
    pub async fn set_role(&self, id_or_handle: &str, role: Role) -> Result<Agent> {
        let url = self.endpoint(&["v1", "admin", "agents", id_or_handle, "role"])?;
        let body = json!({ "role": role });
        self.send(self.http.post(url).json(&body)).await
    }

    /// `POST /v1/admin/agents/{id}/grant`: credits the agent from the platform treasury.
    pub async fn grant(&self, id_or_handle: &str, grant: &Transfer) -> Result<Granted> {
        let url = self.endpoint(&["v1", "admin", "agents", id_or_handle, "grant"])?;
        self.send(self.http.post(url).json(grant)).await
    }

    /// `GET /v1/admin/bonus-pool`.
    pub async fn bonus_pool(&self) -> Result<BonusPool> {
        let url = self.endpoint(&["v1", "admin", "bonus-pool"])?;
        self.send(self.http.get(url)).await
    }

    /// `POST /v1/admin/bonus-pool/fund`: moves money from the treasury to the bonus pool.
    pub async fn fund_bonus_pool(&self, fund: &Transfer) -> Result<BonusPool> {
        let url = self.endpoint(&["v1", "admin", "bonus-pool", "fund"])?;
        self.send(self.http.post(url).json(fund)).await
    }

    /// `GET /v1/admin/withdrawals`: one page of every agent's withdrawals.
    pub async fn admin_withdrawals(
        &self,
        query: &AdminWithdrawalQuery,
    ) -> Result<Page<Withdrawal>> {
        self.list(query).await
    }

    /// `POST /v1/admin/withdrawals/{id}/approve`: the withdrawal is paid out.
    pub async fn approve_withdrawal(&self, id: Uuid) -> Result<Withdrawal> {
        let url = self.endpoint(&["v1", "admin", "withdrawals", &id.to_string(), "approve"])?;
        self.send(self.http.post(url)).await
    }

    /// `POST /v1/admin/withdrawals/{id}/reject`: the money returns to the agent's balance.
    pub async fn reject_withdrawal(&self, id: Uuid) -> Result<Withdrawal> {
        let url = self.endpoint(&["v1", "admin", "withdrawals", &id.to_string(), "reject"])?;
        self.send(self.http.post(url)).await
    }

    /// `POST /v1/admin/announcements`: stored and pushed to every agent.
    pub async fn announce(&self, announcement: &NewAnnouncement) -> Result<Announcement> {
        let url = self.endpoint(&["v1", "admin", "announcements"])?;
        self.send(self.http.post(url).json(announcement)).await
    }

    // ---- messages, channels, notifications --------------------------------------------------

    /// `POST /v1/messages/send`.
    pub async fn send_message(
        &self,
        message: &SendMessage,
        idempotency_key: Option<&str>,
    ) -> Result<SentMessage> {
        let url = self.endpoint(&["v1", "messages", "send"])?;
        let req = idempotent(self.http.post(url).json(message), idempotency_key)?;
        self.send(req).await
    }

    /// Encrypts `plaintext` for the agent `to` (UUID or handle) with `sender`'s key and sends
    /// it: looks up the recipient's `encryption_public_key`, seals, posts.
    pub async fn send_sealed(
        &self,
        sender: &AgentKeys,
        to: &str,
        plaintext: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<SentMessage> {
        let recipient = self.agent(to).await?;
        let key = recipient.encryption_public_key.as_deref().ok_or_else(|| {
            ClientError::InvalidInput(format!("agent {to} has no encryption_public_key"))
        })?;
        let body = SendMessage::sealed(sender, recipient.id.to_string(), key, plaintext)?;
        self.send_message(&body, idempotency_key).await
    }

    /// The bytes of a message of `keys`' agent, received or sent: looks up the other
    /// party's `encryption_public_key` (the sender's, or for a message this agent sent, the
    /// recipient's) and decrypts; an unencrypted payload is only decoded.
    pub async fn open_message(&self, keys: &AgentKeys, message: &Message) -> Result<Vec<u8>> {
        if !message.encrypted {
            return Ok(message.open(keys, "")?);
        }
        let no_key = |who: &str| {
            ClientError::InvalidInput(format!("agent {who} has no encryption_public_key"))
        };
        let sender = self.agent(&message.from).await?;
        let sender_key = sender
            .encryption_public_key
            .ok_or_else(|| no_key(&message.from))?;
        let own_key = keys.encryption_public_key_b64();
        if sender_key != own_key {
            return Ok(message.open(keys, &sender_key)?);
        }
        // Our own message: the box was made with the recipient's key.
        let to = message.to.as_deref().ok_or_else(|| {
            ClientError::InvalidInput("an encrypted message without a recipient".to_owned())
        })?;
        let recipient = self.agent(to).await?;
        let key = recipient.encryption_public_key.ok_or_else(|| no_key(to))?;
        Ok(message.open(keys, &key)?)
    }

    /// `GET /v1/messages/history?with=` for the conversation with one agent (UUID or handle).
    pub async fn messages_with(&self, agent: &str, limit: Option<u32>) -> Result<Page<Message>> {
        let mut query = MessageHistoryQuery::with(agent);
        query.limit = limit;
        self.list(&query).await
    }

    /// `GET /v1/messages/history`: one page of a conversation or a channel.
    pub async fn message_history(&self, query: &MessageHistoryQuery) -> Result<Page<Message>> {
        self.list(query).await
    }

    /// `POST /v1/channels`: a channel with the caller and `members`.
    pub async fn create_channel(&self, channel: &NewChannel) -> Result<Channel> {
        let url = self.endpoint(&["v1", "channels"])?;
        self.send(self.http.post(url).json(channel)).await
    }

    /// `POST /v1/channels/{id}/members`: adds agents (UUIDs or handles) to a channel.
    pub async fn add_channel_members(&self, channel: Uuid, members: &[String]) -> Result<()> {
        let url = self.endpoint(&["v1", "channels", &channel.to_string(), "members"])?;
        let body = ChannelMembers {
            members: members.to_vec(),
        };
        self.send_no_content(self.http.post(url).json(&body)).await
    }

    /// `GET /v1/channels`: one page of the caller's channels.
    pub async fn channels(&self, query: &ChannelQuery) -> Result<Page<Channel>> {
        self.list(query).await
    }

    /// `GET /v1/notifications`: one page of the caller's notifications.
    pub async fn notifications(&self, query: &NotificationQuery) -> Result<Page<Notification>> {
        self.list(query).await
    }

    /// `POST /v1/notifications/mark-read`.
    pub async fn mark_notifications_read(&self, which: &MarkRead) -> Result<()> {
        let url = self.endpoint(&["v1", "notifications", "mark-read"])?;
        self.send_no_content(self.http.post(url).json(which)).await
    }

    // ---- platform ---------------------------------------------------------------------------

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health> {
        let url = self.endpoint(&["healthz"])?;
        self.send_public(self.http.get(url)).await
    }

    /// `GET /readyz`; a database that does not answer is a 503 error.
    pub async fn readiness(&self) -> Result<Readiness> {
        let url = self.endpoint(&["readyz"])?;
        self.send_public(self.http.get(url)).await
    }

    /// `GET /metrics`: Prometheus/OpenMetrics text.
    pub async fn metrics(&self) -> Result<String> {
        let url = self.endpoint(&["metrics"])?;
        let (_, body) = self.execute(self.http.get(url)).await?;
        Ok(String::from_utf8_lossy(body.as_ref()).into_owned())
    }

    /// `GET /v1/stats` as raw JSON (the contract leaves its shape open; see
    /// [`Client::platform_stats`] for today's fields).
    pub async fn stats(&self) -> Result<Value> {
        let url = self.endpoint(&["v1", "stats"])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/stats`, typed.
    pub async fn platform_stats(&self) -> Result<Stats> {
        let url = self.endpoint(&["v1", "stats"])?;
        self.send_public(self.http.get(url)).await
    }

    /// `GET /v1/leaderboard`: the top `limit` agents (1–100; server default 20).
    pub async fn leaderboard(&self, limit: Option<u32>) -> Result<Leaderboard> {
        let mut pairs = Vec::new();
        if let Some(limit) = limit {
            pairs.push(("limit", limit.to_string()));
        }
        let url = with_query(self.endpoint(&["v1", "leaderboard"])?, &pairs);
        self.send_public(self.http.get(url)).await
    }

    /// `GET /.well-known/jwks.json`: the keys that verify tokens.
    pub async fn jwks(&self) -> Result<Value> {
        let url = self.endpoint(&[".well-known", "jwks.json"])?;
        self.send_public(self.http.get(url)).await
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<Value> {
        let url = self.endpoint(&["v1", "openapi.json"])?;
        self.send_public(self.http.get(url)).await
    }

    // ---- pagination -------------------------------------------------------------------------

    /// One page of any list (`query` says which, its filters and where to start).
    pub async fn list<Q: ListQuery>(&self, query: &Q) -> Result<Page<Q::Item>> {
        self.page(
            &query.path(),
            &query.filters(),
            query.cursor_param(),
            query.cursor(),
        )
        .await
    }

    /// Every item of a list, page after page, as they are needed:
    ///
    /// ```no_run
    /// # async fn demo(client: nervix_client::Client) -> Result<(), nervix_client::ClientError> {
    /// use nervix_client::{TaskQuery, TaskStatus};
    /// let query = TaskQuery { status: Some(TaskStatus::Available), ..TaskQuery::default() };
    /// let mut tasks = client.pages(query);
    /// while let Some(task) = tasks.try_next().await? {
    ///     println!("{} {}", task.id, task.title);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn pages<Q: ListQuery>(&self, query: Q) -> Pages<Q::Item> {
        Pages::new(
            self.clone(),
            query.path(),
            query.filters(),
            query.cursor_param(),
            query.cursor().map(str::to_owned),
        )
    }

    pub(crate) async fn page<T: DeserializeOwned>(
        &self,
        path: &[String],
        filters: &[(&'static str, String)],
        cursor_param: &'static str,
        cursor: Option<&str>,
    ) -> Result<Page<T>> {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut pairs = filters.to_vec();
        if let Some(cursor) = cursor {
            pairs.push((cursor_param, cursor.to_owned()));
        }
        let url = with_query(self.endpoint(&segments)?, &pairs);
        self.send(self.http.get(url)).await
    }

    // ---- escape hatches ---------------------------------------------------------------------

    /// Sends any request and returns the status and JSON body whatever the status (`Null` for
    /// an empty body, a JSON string for a non-JSON one). `path` includes the query and starts
    /// with `/`, e.g. `/v1/tasks?limit=500`. Only transport failures are errors.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::InvalidInput(format!("cannot serialize the body: {e}")))?;
        let raw = self.request_raw(method, path, &[], body).await?;
        Ok((raw.status, raw.json()))
    }

    /// Like [`Client::request`] but with extra headers and a body sent byte for byte (as
    /// `application/json` unless a `content-type` header is given), for malformed-input tests.
    /// An `authorization` header given here is sent instead of the client's token.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse> {
        let has = |wanted: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(wanted));
        let mut req = self.http.request(method, self.raw_url(path)?);
        // The caller's own `Authorization` replaces the client's token rather than joining it,
        // so tests can present forged or malformed credentials.
        req = if has("authorization") {
            req.header(ACCEPT, "application/json")
        } else {
            self.renew_if_due().await?;
            self.with_bearer(req)
        };
        if let Some(body) = body {
            if !has("content-type") {
                req = req.header(CONTENT_TYPE, "application/json");
            }
            req = req.body(body);
        }
        for (name, value) in headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid_header(name, e))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| invalid_header(name.as_str(), e))?;
            req = req.header(name, value);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?.to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    // ---- plumbing ---------------------------------------------------------------------------

    fn endpoint(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        // `cannot_be_a_base` URLs are rejected in the constructor, so this cannot fail; the
        // segments are percent-encoded, which keeps handles from escaping their path segment.
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "cannot hold a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn raw_url(&self, path_and_query: &str) -> Result<Url> {
        let joined = format!(
            "{}/{}",
            self.base.as_str().trim_end_matches('/'),
            path_and_query.trim_start_matches('/')
        );
        Url::parse(&joined).map_err(|e| ClientError::InvalidUrl {
            url: joined,
            reason: e.to_string(),
        })
    }

    /// Adds `Accept` and the token.
    fn with_bearer(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req.header(ACCEPT, "application/json");
        let token = self
            .session
            .read(|s| s.credential.as_ref().map(|c| c.token.clone()));
        match token {
            // `bearer_auth` marks the header sensitive, keeping it out of reqwest's debug logs.
            Some(token) => req.bearer_auth(token.as_str()),
            None => req,
        }
    }

    pub(crate) async fn renew_if_due(&self) -> Result<()> {
        let due = |s: &AuthState| -> Option<(Signer, bool)> {
            let (credential, signer) = (s.credential.as_ref()?, s.signer.as_ref()?);
            let now = Utc::now();
            if !credential.renewal_due(now, self.renew_margin) {
                return None;
            }
            let expired = credential.expires_at.is_some_and(|at| at <= now);
            let pausing = s
                .last_failed_renewal
                .is_some_and(|at| at.elapsed() < RENEW_RETRY_PAUSE);
            (expired || !pausing).then(|| (signer.clone(), expired))
        };
        if self.session.read(due).is_none() {
            return Ok(());
        }
        let _one_at_a_time = self.session.renewal.lock().await;
        // Whoever held the lock before may have renewed already.
        let Some((signer, expired)) = self.session.read(due) else {
            return Ok(());
        };
        match self.reauthenticate(&signer).await {
            Ok(token) => {
                self.session.write(|s| {
                    s.credential = Some(Credential::from_response(&token));
                    s.last_failed_renewal = None;
                });
                Ok(())
            }
            // The old token still works: use it, and try again after a pause.
            Err(_) if !expired => {
                self.session
                    .write(|s| s.last_failed_renewal = Some(Instant::now()));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn reauthenticate(&self, signer: &Signer) -> Result<TokenResponse> {
        let challenge = self.auth_challenge(&signer.agent_id).await?;
        let signature = signer.keys.sign_challenge(&challenge.challenge);
        self.fetch_token(challenge.challenge_id, &signature).await
    }

    async fn fetch_token(&self, challenge_id: Uuid, signature_b64: &str) -> Result<TokenResponse> {
        let url = self.endpoint(&["v1", "auth", "token"])?;
        let body = json!({ "challenge_id": challenge_id, "signature": signature_b64 });
        self.send_public(self.http.post(url).json(&body)).await
    }

    /// An authenticated call decoded as `T`.
    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        self.renew_if_due().await?;
        let (status, body) = self.execute(self.with_bearer(req)).await?;
        decode(status, body.as_ref())
    }

    /// A call that needs no token (enrollment, login, public pages): sent without one, and
    /// never waiting on a renewal (which itself uses these routes).
    async fn send_public<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let (status, body) = self.execute(req.header(ACCEPT, "application/json")).await?;
        decode(status, body.as_ref())
    }

    /// For endpoints whose success body carries nothing the caller needs.
    async fn send_no_content(&self, req: RequestBuilder) -> Result<()> {
        self.renew_if_due().await?;
        self.execute(self.with_bearer(req)).await.map(drop)
    }

    /// Sends a request as it is; an error status becomes [`ClientError::Api`].
    async fn execute(&self, req: RequestBuilder) -> Result<(StatusCode, impl AsRef<[u8]>)> {
        let resp = req.send().await?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &body, retry_after));
        }
        Ok((status, body))
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        status: status.as_u16(),
        source,
    })
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (token, signer) = self.session.read(|s| {
            (
                s.credential.as_ref().map(|_| "<redacted>"),
                s.signer.as_ref().map(|s| s.agent_id.clone()),
            )
        });
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &token)
            .field("signing_key_for", &signer)
            .finish_non_exhaustive()
    }
}

fn api_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ClientError {
    let mut problem = problem_from(status, body);
    problem.retry_after = retry_after;
    ClientError::Api {
        status: status.as_u16(),
        problem: Box::new(problem),
    }
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    // A date in the past means "now".
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

/// Errors from the API are problem documents; anything else (a proxy's HTML page, a bare 404
/// from a router) is wrapped in one so callers handle a single shape.
fn problem_from(status: StatusCode, body: &[u8]) -> Problem {
    if let Ok(problem) = serde_json::from_slice::<Problem>(body) {
        return problem;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let detail = (!text.is_empty()).then(|| {
        let mut end = text.len().min(MAX_ERROR_DETAIL);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    });
    Problem {
        type_: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("error").to_owned(),
        status: Some(status.as_u16()),
        detail,
        code: None,
        errors: Vec::new(),
        retry_after: None,
    }
}

fn with_query(mut url: Url, pairs: &[(&str, String)]) -> Url {
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url
}

fn idempotent(req: RequestBuilder, key: Option<&str>) -> Result<RequestBuilder> {
    match key {
        None => Ok(req),
        Some(key) => {
            let value =
                HeaderValue::from_str(key).map_err(|e| invalid_header("Idempotency-Key", e))?;
            Ok(req.header(IDEMPOTENCY_KEY, value))
        }
    }
}

fn invalid_header(name: &str, e: impl fmt::Display) -> ClientError {
    ClientError::InvalidInput(format!("invalid header {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_path() {
        for base in ["https://h.example/api", "https://h.example/api/"] {
            let client = Client::new(base).unwrap();
            assert_eq!(
                client
                    .endpoint(&["v1", "agents", "x y/z"])
                    .unwrap()
                    .as_str(),
                "https://h.example/api/v1/agents/x%20y%2Fz"
            );
            assert_eq!(
                client.raw_url("/v1/tasks?limit=500").unwrap().as_str(),
                "https://h.example/api/v1/tasks?limit=500"
            );
        }
        let root = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            root.endpoint(&["v1", "stats"]).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/stats"
        );
    }

    #[test]
    fn problem_documents_are_parsed() {
        let body = br#"{"type":"https://x/validation","title":"Unprocessable","status":422,
            "detail":"bad input","code":"validation_failed",
            "errors":[{"field":"deadline","message":"must be in the future"}]}"#;
        let p = problem_from(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(p.code.as_deref(), Some("validation_failed"));
        assert_eq!(p.errors[0].field, "deadline");
        assert_eq!(
            p.to_string(),
            "Unprocessable [validation_failed]: bad input; deadline: must be in the future"
        );

        let long = "é".repeat(MAX_ERROR_DETAIL);
        let p = problem_from(StatusCode::BAD_GATEWAY, long.as_bytes());
        assert_eq!(p.title, "Bad Gateway");
        assert!(p.detail.unwrap().len() <= MAX_ERROR_DETAIL);
        assert_eq!(problem_from(StatusCode::NOT_FOUND, b"").detail, None);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    fn jwt(iat: i64, exp: i64) -> String {
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{iat},"exp":{exp},"sub":"x"}}"#));
        format!("eyJhbGciOiJFZERTQSJ9.{claims}.c2ln")
    }

    #[test]
    fn token_lifetime_comes_from_its_claims() {
        let (iat, exp) = jwt_times(&jwt(1_000, 2_000)).unwrap();
        assert_eq!((iat.timestamp(), exp.timestamp()), (1_000, 2_000));
        assert_eq!(jwt_times("not-a-jwt"), None);
        assert_eq!(jwt_times("a.%%%.c"), None);
        assert_eq!(
            jwt_times(&format!("a.{}.c", URL_SAFE_NO_PAD.encode("{}"))),
            None
        );

        let client = Client::new("http://127.0.0.1:1")
            .unwrap()
            .with_token(jwt(1_000, 2_000));
        assert_eq!(client.token_expires_at().unwrap().timestamp(), 2_000);
        let opaque = Client::new("http://127.0.0.1:1")
            .unwrap()
            .with_token("opaque");
        assert_eq!(opaque.token_expires_at(), None);
    }

    #[test]
    fn renewal_is_due_in_the_last_tenth_or_day() {
        let at = |s: i64| Utc.timestamp_opt(s, 0).single().unwrap();
        let day = 86_400;
        // 90 days: due in the last day only.
        let long = Credential::from_token(jwt(0, 90 * day));
        assert!(!long.renewal_due(at(89 * day - 1), None));
        assert!(long.renewal_due(at(89 * day + 1), None));
        // 100 s: due in the last 10 s.
        let short = Credential::from_token(jwt(0, 100));
        assert!(!short.renewal_due(at(89), None));
        assert!(short.renewal_due(at(91), None));
        assert!(short.renewal_due(at(500), None), "expired is due");
        // An explicit margin wins.
        assert!(short.renewal_due(at(50), Some(Duration::from_secs(60))));
        // Unknown expiry: never due.
        assert!(!Credential::from_token("opaque".into()).renewal_due(at(i64::from(u32::MAX)), None));
    }

    #[test]
    fn clones_share_a_session_until_given_their_own_token() {
        let a = Client::new("http://127.0.0.1:1").unwrap().with_token("one");
        let b = a.clone();
        a.session.write(|s| {
            s.credential = Some(Credential::from_token("renewed".into()));
        });
        assert_eq!(b.token().as_deref(), Some("renewed"));
        let c = b.clone().with_token("other");
        assert_eq!(c.token().as_deref(), Some("other"));
        assert_eq!(a.token().as_deref(), Some("renewed"));
        assert!(!format!("{c:?}").contains("other"));
    }
}
