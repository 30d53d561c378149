//! The HTTP edge's shared pieces: extractors with contract-shaped rejections (JSON bodies,
//! the authenticated caller, the client's address, pagination) and the middleware every route
//! runs through (metrics, problem+json for every error, per-IP limits).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, MatchedPath, Request};
use axum::http::{header, request::Parts, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::idempotency::{self, Outcome, Render};
use crate::error::{ApiError, PROBLEM_JSON};
use crate::metrics::RequestLabels;
use crate::state::AppState;

pub mod authorize;

/// `axum::Json` with contract-shaped rejections: malformed JSON → 400, a body that does not
/// fit the schema → 422 naming the field, wrong content type → 415.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| json_rejection(JsonRejection::from(e)))?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            // serde stops at the first problem it meets, so a body cut short after an unknown
            // key (`{"role": `) reads as a data error. Malformed JSON is 400, whatever else is
            // wrong with it; only this (rare) path parses the bytes a second time.
            Err(JsonRejection::JsonDataError(data)) => {
                match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                    Err(syntax) => Err(ApiError::bad_request(format!("malformed JSON: {syntax}"))),
                    Ok(_) => Err(json_rejection(JsonRejection::JsonDataError(data))),
                }
            }
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or any `application/*+json`, parameters allowed (as axum's `Json`).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
    else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let text = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text);
            let (path, message) = text.split_once(": ").unwrap_or((".", text));
            // serde names an unknown field only in the message: `unknown field `role``.
            let field = if path == "." || path.is_empty() {
                message
                    .split('`')
                    .nth(1)
                    .map_or_else(|| "body".to_owned(), str::to_owned)
            } else {
                path.to_owned()
            };
            ApiError::field(field, message.split(" at line ").next().unwrap_or(message))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            )
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// The client's address as seen on the socket.
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

pub fn client_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// Items per page, default 50; above 200 is served as 200.
    #[param(minimum = 1, maximum = 9223372036854775807_i64)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(schema_with = crate::openapi::cursor)]
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            // Above the maximum is served as the maximum, as clients paging "as much as
            // possible" expect; zero or negative is a mistake worth telling.
            Some(n) if n >= 1 => Ok(n.min(200)),
            Some(_) => Err(ApiError::field("limit", "must be at least 1")),
        }
    }

    pub fn cursor(&self) -> Result<Option<Uuid>, ApiError> {
        self.cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| ApiError::field("cursor", "is not a cursor from this API"))
            })
            .transpose()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: i64,
        id: impl Fn(&R) -> Uuid,
        map: impl Fn(R) -> T,
    ) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next_cursor = if more {
            rows.last().map(|r| id(r).to_string())
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}

/// A bearer token in `Authorization`.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Request counts and latency by matched route (never the raw path: ids would explode the
/// label set) and status.
pub async fn track_metrics(
    state: axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let res = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: res.status().as_u16(),
    };
    state.app.metrics.requests.get_or_create(&labels).inc();
    state
        .app
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    res
}

/// Turns every error response that is not already problem+json (404/405 from the router,
/// 413 from the body limit, 408 from the timeout, …) into one.
pub async fn problemize(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    // The website's error pages are HTML, for a person to read.
    let is_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_problem || is_page {
        return res;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this resource")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        s if s.is_server_error() => ("internal_error", "an internal error occurred"),
        _ => ("bad_request", "the request could not be processed"),
    };
    // Keep what outer layers and the router said (Allow, x-request-id, …); only the body
    // and its type change.
    let mut headers = res.headers().clone();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    let mut out = ApiError::new(status, code, detail).into_response();
    for (name, value) in &headers {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

/// Per-IP limit for the unauthenticated enrollment and login routes.
pub async fn limit_by_ip(
    state: axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if let Err(e) = state.limits.check_ip(addr.ip()) {
            return ApiError::from(e).into_response();
        }
    }
    next.run(req).await
}

/// The `Idempotency-Key` header's text, if the request has one.
pub fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))
        })
        .transpose()
}

/// The `Idempotency-Key` of a request to `method` `uri` whose parsed body is `body`.
pub fn idempotency_key<B: Serialize>(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &B,
) -> Result<Option<idempotency::Key>, ApiError> {
    let header = idempotency_header(headers)?;
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    Ok(idempotency::Key::parse(
        header,
        method.as_str(),
        uri.path(),
        &bytes,
    )?)
}

/// The response of an idempotent operation: rendered fresh, or replayed exactly as first sent.
pub fn respond<T>(outcome: Outcome<T>, render: &Render<T>) -> Result<Response, ApiError> {
    let (status, body) = match outcome {
        Outcome::Done(v) => render(&v)?,
        Outcome::Replayed(stored) => (stored.status, stored.body),
    };
    let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
    Ok((status, Json(body)).into_response())
}
