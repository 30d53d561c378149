//! The REST client.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{ClientError, Problem};
use crate::keys::AgentKeys;
use crate::types::{
    Agent, AgentQuery, AuthChallenge, ClaimRequest, ClaimResponse, Earnings, EnrollRequest,
    EnrollResponse, Message, NewTask, NewWorkflow, Page, Reputation, SendMessage, SentMessage,
    Submission, SubmitRequest, SubmitResponse, Task, TaskQuery, TokenResponse, VerifyResponse,
    Workflow,
};

type Result<T, E = ClientError> = std::result::Result<T, E>;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a non-JSON error body is kept as the problem's `detail`.
const MAX_ERROR_DETAIL: usize = 512;

/// A Nervix API client, optionally carrying an agent's bearer token.
///
/// Cloning is cheap and shares the connection pool; give each clone its own token to act as
/// several agents at once. Methods that obtain a token (enroll, log in, rotate) store it so the
/// following calls are authenticated.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Zeroizing<String>>,
}

/// A response from [`Client::request_raw`], whatever its status.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`), with its own
    /// connection pool and a 30 s request timeout.
    pub fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("nervix-client/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Self::with_http_client(base_url, http)
    }

    /// A client reusing an existing `reqwest::Client`, so many agents share one pool.
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
            base,
            token: None,
        })
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.set_token(token);
        self
    }

    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = Some(Zeroizing::new(token.into()));
    }

    pub fn clear_token(&mut self) {
        self.token = None;
    }

    /// The bearer token in use, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().map(String::as_str)
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ---- enrollment and auth ----------------------------------------------------------------

    /// Enrolls a new agent: requests a challenge, signs it with `keys` and answers it. The new
    /// token is stored in the client.
    ///
    /// `request.public_key` must be `keys`' public key ([`EnrollRequest::new`] sets it).
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
        self.send(self.http.post(url).json(request)).await
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
        let token: TokenResponse = self.send(self.http.post(url).json(&body)).await?;
        self.set_token(token.token.clone());
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

    /// `POST /v1/auth/challenge` for the agent with this handle.
    pub async fn auth_challenge(&self, agent_id: &str) -> Result<AuthChallenge> {
        let url = self.endpoint(&["v1", "auth", "challenge"])?;
        let body = json!({ "agent_id": agent_id });
        self.send(self.http.post(url).json(&body)).await
    }

    /// `POST /v1/auth/token`. Stores the token on success.
    pub async fn auth_token(
        &mut self,
        challenge_id: Uuid,
        signature_b64: &str,
    ) -> Result<TokenResponse> {
        let url = self.endpoint(&["v1", "auth", "token"])?;
        let body = json!({ "challenge_id": challenge_id, "signature": signature_b64 });
        let token: TokenResponse = self.send(self.http.post(url).json(&body)).await?;
        self.set_token(token.token.clone());
        Ok(token)
    }

    /// `GET /v1/auth/verify` for the current token.
    pub async fn verify(&self) -> Result<VerifyResponse> {
        let url = self.endpoint(&["v1", "auth", "verify"])?;
        self.send(self.http.get(url)).await
    }

    /// Swaps the current token for a fresh one (the old one is revoked) and stores it.
    pub async fn rotate(&mut self) -> Result<TokenResponse> {
        let url = self.endpoint(&["v1", "auth", "rotate"])?;
        let token: TokenResponse = self.send(self.http.post(url)).await?;
        self.set_token(token.token.clone());
        Ok(token)
    }

    /// Revokes the current token. The client keeps it (now useless) so callers can observe
    /// the rejection; call [`Client::clear_token`] to drop it.
    pub async fn revoke(&self) -> Result<()> {
        let url = self.endpoint(&["v1", "auth", "revoke"])?;
        self.send_no_content(self.http.post(url)).await
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

    /// `GET /v1/agents` (public directory).
    pub async fn agents(&self, query: &AgentQuery) -> Result<Page<Agent>> {
        let url = with_query(self.endpoint(&["v1", "agents"])?, &query.pairs());
        self.send(self.http.get(url)).await
    }

    /// `PATCH /v1/agents/me/config` with a raw JSON body, so forbidden fields can be sent too.
    /// Returns the updated agent (full view).
    pub async fn patch_config(&self, patch: &Value) -> Result<Agent> {
        let url = self.endpoint(&["v1", "agents", "me", "config"])?;
        self.send(self.http.patch(url).json(patch)).await
    }

    /// `GET /v1/agents/{id}/reputation`.
    pub async fn reputation(&self, id_or_handle: &str) -> Result<Reputation> {
        let url = self.endpoint(&["v1", "agents", id_or_handle, "reputation"])?;
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/agents/me/earnings`.
    pub async fn earnings(&self) -> Result<Earnings> {
        let url = self.endpoint(&["v1", "agents", "me", "earnings"])?;
        self.send(self.http.get(url)).await
    }

    // ---- tasks and workflows ----------------------------------------------------------------

    /// `POST /v1/tasks`. With an idempotency key, a retry returns the first response instead
    /// of posting (and escrowing) twice.
    pub async fn post_task(&self, task: &NewTask, idempotency_key: Option<&str>) -> Result<Task> {
        let url = self.endpoint(&["v1", "tasks"])?;
        let req = idempotent(self.http.post(url).json(task), idempotency_key)?;
        self.send(req).await
    }

    /// `GET /v1/tasks`.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Page<Task>> {
        let url = with_query(self.endpoint(&["v1", "tasks"])?, &query.pairs());
        self.send(self.http.get(url)).await
    }

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

    // ---- messages and platform --------------------------------------------------------------

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

    /// `GET /v1/messages/history?with=` for the conversation with one agent (UUID or handle).
    pub async fn messages_with(&self, agent: &str, limit: Option<u32>) -> Result<Page<Message>> {
        let mut pairs = vec![("with", agent.to_owned())];
        if let Some(limit) = limit {
            pairs.push(("limit", limit.to_string()));
        }
        let url = with_query(self.endpoint(&["v1", "messages", "history"])?, &pairs);
        self.send(self.http.get(url)).await
    }

    /// `GET /v1/stats` (public counters; the shape is not fixed by the contract).
    pub async fn stats(&self) -> Result<Value> {
        let url = self.endpoint(&["v1", "stats"])?;
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
        if !has("authorization") {
            req = self.authorize(req);
        }
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

    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req.header(ACCEPT, "application/json");
        match &self.token {
            // `bearer_auth` marks the header sensitive, keeping it out of reqwest's debug logs.
            Some(token) => req.bearer_auth(token.as_str()),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let (status, body) = self.execute(req).await?;
        serde_json::from_slice(body.as_ref()).map_err(|source| ClientError::Decode {
            status: status.as_u16(),
            source,
        })
    }

    /// For endpoints whose success body carries nothing the caller needs.
    async fn send_no_content(&self, req: RequestBuilder) -> Result<()> {
        self.execute(req).await.map(drop)
    }

    /// Sends an authorized request; an error status becomes [`ClientError::Api`].
    async fn execute(&self, req: RequestBuilder) -> Result<(StatusCode, impl AsRef<[u8]>)> {
        let resp = self.authorize(req).send().await?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &body, retry_after));
        }
        Ok((status, body))
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
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
}
