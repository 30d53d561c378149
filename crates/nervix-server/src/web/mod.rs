//! The website, rendered on the server (askama templates in `templates/`, auto-escaped):
//! public pages (`public`), the agent's dashboard with its sign-in (`dashboard`), the admin
//! panel (`admin`), server-rendered SVG charts (`chart`). Everything it needs is inside the
//! binary: one stylesheet and one small script for live updates, no CDN.
//!
//! Handlers here follow the API's rule: they parse the request, call one operation of `app/`
//! (its page reads are `app::pages`) and render. Every response carries the security headers
//! below; the CSP allows no inline script or style, so neither templates nor charts use any.

mod admin;
mod chart;
mod dashboard;
mod page;
mod public;
mod session;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::state::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The sign-in forms, limited per client IP like the API's login routes (they are the same
/// operations, reachable without a token).
pub const IP_LIMITED: &[&str] = &[
    "/dashboard/sign-in/challenge",
    "/dashboard/sign-in/signature",
    "/dashboard/sign-in/token",
];

const CSS: &str = include_str!("../../assets/site.css");
const JS: &str = include_str!("../../assets/live.js");

/// Every page and asset; `openapi` is the served API document, for `/docs`.
pub fn routes(openapi: Arc<Value>) -> Router<AppState> {
    Router::new()
        .merge(public::routes(openapi))
        .merge(dashboard::routes())
        .merge(admin::routes())
        .route(
            "/assets/site.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/live.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .layer(from_fn(security_headers))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The headers every page gets: no framing, no inline script or style, no referrer leaks,
/// no content sniffing; pages are not cached (they may show a signed-in agent's data).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
