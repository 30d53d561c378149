//! Web sessions: the signed-in agent's bearer token in an HttpOnly, SameSite=Strict cookie
//! (Secure when the request came over TLS), checked like any bearer token on every request, so
//! revocation, suspension and expiry bite at once. No session table: the token is the session.
//!
//! Every form carries a CSRF token. Signed in, it is bound to the session (a hash of the
//! cookie's token: a page from another origin can neither read the cookie nor compute it);
//! before sign-in, it is a random value also set as a cookie (double submit).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use nervix_core::Scopes;

use super::page::{app_error, error_page, see_other, Viewer};
use crate::app::{self, Caller};
use crate::http::client_ip;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "nervix_session";
pub const SIGNIN_COOKIE: &str = "nervix_signin";
pub const SIGN_IN_PATH: &str = "/dashboard/sign-in";

/// How a session's token came to be: minted by the sign-in page for this browser (revoked at
/// sign-out), or pasted (an agent's own token, which signing out of the page must not kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Minted,
    Pasted,
}

impl Origin {
    fn prefix(self) -> &'static str {
        match self {
            Origin::Minted => "m.",
            Origin::Pasted => "p.",
        }
    }
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub viewer: Viewer,
    pub origin: Origin,
}

impl Session {
    /// The refusal of a form whose CSRF token is missing or not this session's.
    pub fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        (!same(sent, &self.viewer.csrf)).then(|| csrf_refused(Some(self.viewer.clone())))
    }

    /// The refusal of a page or form the session's token has not the scopes for (a pasted
    /// token may have been narrowed, e.g. to read-only).
    pub fn scope_refusal(&self, needed: Scopes) -> Option<Response> {
        let refused = self.caller.require_all(needed).err()?;
        Some(app_error(&refused, Some(self.viewer.clone())))
    }
}

pub fn csrf_refused(viewer: Option<Viewer>) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "This form was refused: its security token is missing or stale. Reload the page and try again.",
        viewer,
    )
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !b.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn csrf_for(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"nervix-web-csrf\0");
    h.update(token.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so).
pub fn is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The response that signs a browser in: the cookie, then the page to go to.
pub fn start(
    token: &str,
    origin: Origin,
    expires_at: DateTime<Utc>,
    secure: bool,
    to: &str,
) -> Response {
    let max_age = (expires_at - Utc::now()).num_seconds().max(0);
    let value = format!("{}{token}", origin.prefix());
    let mut res = see_other(to);
    let headers = res.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &value, max_age, secure),
    );
    headers.append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, "", 0, secure));
    res
}

/// The response that signs a browser out.
pub fn end(secure: bool) -> Response {
    let mut res = see_other("/");
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure),
    );
    res
}

/// The token behind a session cookie, and how it was obtained.
fn token_of(headers: &HeaderMap) -> Option<(&str, Origin)> {
    let v = cookie(headers, SESSION_COOKIE)?;
    if let Some(t) = v.strip_prefix("m.") {
        Some((t, Origin::Minted))
    } else {
        v.strip_prefix("p.").map(|t| (t, Origin::Pasted))
    }
}

async fn session(parts: &Parts, state: &AppState) -> Option<Session> {
    let (token, origin) = token_of(&parts.headers)?;
    let caller = app::auth::authenticate(&state.app, token, client_ip(parts))
        .await
        .ok()?;
    let viewer = Viewer {
        handle: caller.handle.clone(),
        admin: caller.is_admin(),
        csrf: csrf_for(token),
    };
    Some(Session {
        caller,
        viewer,
        origin,
    })
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        session(parts, state)
            .await
            .ok_or_else(|| see_other(SIGN_IN_PATH))
    }
}

/// A signed-in admin. Anyone else is sent to sign in: the controls are never rendered for them.
pub struct AdminSession(pub Session);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session(parts, state).await {
            Some(s) if s.caller.is_admin() => Ok(AdminSession(s)),
            _ => Err(see_other(&format!("{SIGN_IN_PATH}?admin=1"))),
        }
    }
}

/// Public pages show who is signed in, if anyone.
pub struct MaybeSession(pub Option<Session>);

impl MaybeSession {
    pub fn viewer(&self) -> Option<Viewer> {
        self.0.as_ref().map(|s| s.viewer.clone())
    }
}

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(MaybeSession(session(parts, state).await))
    }
}

/// The sign-in forms' CSRF value: the browser's existing one, or a fresh one to set.
pub struct SigninCsrf {
    pub value: String,
    fresh: bool,
    secure: bool,
}

impl SigninCsrf {
    pub fn of(headers: &HeaderMap) -> Self {
        let secure = is_tls(headers);
        match cookie(headers, SIGNIN_COOKIE).filter(|v| v.len() == 43) {
            Some(v) => SigninCsrf {
                value: v.to_owned(),
                fresh: false,
                secure,
            },
            None => {
                let mut nonce = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                SigninCsrf {
                    value: URL_SAFE_NO_PAD.encode(nonce),
                    fresh: true,
                    secure,
                }
            }
        }
    }

    /// The refusal of a sign-in form whose token does not match the browser's cookie.
    pub fn refusal(headers: &HeaderMap, sent: &str) -> Option<Response> {
        match cookie(headers, SIGNIN_COOKIE) {
            Some(v) if same(sent, v) => None,
            _ => Some(csrf_refused(None)),
        }
    }

    /// Adds the cookie to a page's response when it is new.
    pub fn attach(&self, mut res: Response) -> Response {
        if self.fresh {
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SIGNIN_COOKIE, &self.value, 3600, self.secure),
            );
        }
        res.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_the_session_and_compared_whole() {
        let a = csrf_for("token-a");
        assert_eq!(a, csrf_for("token-a"));
        assert_ne!(a, csrf_for("token-b"));
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[..a.len() - 1]));
        assert!(!same("", ""), "an empty expected token matches nothing");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_nervix_session=evil; nervix_session=m.abc.def; other=1"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("m.abc.def"));
        assert_eq!(token_of(&h), Some(("abc.def", Origin::Minted)));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("nervix_session=abc"),
        );
        assert_eq!(token_of(&h), None, "no origin prefix: not ours");
    }

    #[test]
    fn session_cookies_are_http_only_and_strict_and_secure_over_tls() {
        let plain = set_cookie(SESSION_COOKIE, "m.t", 60, false);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let tls = set_cookie(SESSION_COOKIE, "m.t", 60, true);
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_tls(&h));
    }
}
