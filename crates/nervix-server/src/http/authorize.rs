//! Which token may call which route. Every API route states the scopes it needs in its
//! OpenAPI annotation (`security(("bearer" = ["tasks:read"]))`); this module reads them back
//! from the built document and enforces them before the handler runs, so the document and the
//! enforcement cannot disagree.
//!
//! A handler that takes a [`Caller`] on a route that states no requirement only accepts an
//! unrestricted token (fail closed); the JSON-RPC routes, whose scope depends on the method
//! in the body, take [`AnyScope`] and check each method's scope themselves.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nervix_core::{Scope, Scopes};
use serde_json::Value;

use super::{bearer, client_ip};
use crate::app::{self, Caller};
use crate::error::ApiError;
use crate::openapi::BEARER;
use crate::state::AppState;

/// What a route asks of its caller's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// Every scope listed (an empty set: any valid token).
    pub scopes: Scopes,
    /// The route also serves requests without a token (it authenticates in another way).
    pub optional: bool,
}

/// The requirement of every route that has one, by method and path template.
#[derive(Debug, Default)]
pub struct RouteScopes {
    /// By path template, then method: looked up with the request's borrowed path.
    routes: HashMap<String, HashMap<Method, Requirement>>,
}

impl RouteScopes {
    /// Reads the `security` of every operation of an OpenAPI document. A scope name the
    /// server does not know is an error: a typo would otherwise lock a route or be ignored.
    pub fn from_openapi(doc: &Value) -> Result<RouteScopes, String> {
        let mut routes: HashMap<String, HashMap<Method, Requirement>> = HashMap::new();
        let paths = doc["paths"].as_object().into_iter().flatten();
        for (path, item) in paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Some(security) = op.get("security").and_then(Value::as_array) else {
                    continue;
                };
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                let mut requirement = Requirement {
                    scopes: Scopes::NONE,
                    optional: false,
                };
                for alternative in security {
                    let Some(schemes) = alternative.as_object() else {
                        continue;
                    };
                    if schemes.is_empty() {
                        requirement.optional = true;
                    }
                    for name in schemes
                        .get(BEARER)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let name = name.as_str().unwrap_or_default();
                        let scope = Scope::parse(name).ok_or_else(|| {
                            format!("{method} {path}: unknown scope {name:?} in its security")
                        })?;
                        requirement.scopes = requirement.scopes.union(Scopes::of(&[scope]));
                    }
                }
                routes
                    .entry(path.clone())
                    .or_default()
                    .insert(method, requirement);
            }
        }
        Ok(RouteScopes { routes })
    }

    pub fn get(&self, method: &Method, path: &str) -> Option<Requirement> {
        self.routes.get(path)?.get(method).copied()
    }
}

/// The middleware's state: the application and the table it enforces.
#[derive(Clone)]
pub struct Authorization {
    pub state: AppState,
    pub routes: Arc<RouteScopes>,
}

/// Marks a request whose route's requirement was checked here.
#[derive(Clone, Copy)]
struct Checked;

/// Authenticates and checks the scopes of every request to a route that states a
/// requirement, before any of its parameters are parsed: 401 without a valid token, 403
/// `insufficient_scope` when the token lacks one. The caller is left in the request for the
/// handler's extractor.
pub async fn authorize(State(authz): State<Authorization>, req: Request, next: Next) -> Response {
    let requirement = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| authz.routes.get(req.method(), p.as_str()));
    let Some(requirement) = requirement else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    if !(requirement.optional && bearer(&parts).is_none()) {
        let checked = match authenticate(&mut parts, &authz.state).await {
            Ok(caller) => caller
                .require_all(requirement.scopes)
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            return e.into_response();
        }
    }
    parts.extensions.insert(Checked);
    next.run(Request::from_parts(parts, body)).await
}

/// The bearer token's caller, authenticated once per request. A revoked or suspended caller
/// is refused before it is charged against its agent's rate limit, so a stolen, revoked
/// token cannot exhaust the budget of the agent it was taken from.
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
    if let Some(caller) = parts.extensions.get::<Caller>() {
        return Ok(caller.clone());
    }
    let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let caller = app::auth::authenticate(&state.app, token, client_ip(parts)).await?;
    state.limits.check_agent(caller.id)?;
    parts.extensions.insert(caller.clone());
    Ok(caller)
}

/// The authenticated caller, its route's scopes checked by [`authorize`]. On a route that
/// states none, only an unrestricted token passes.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let checked = parts.extensions.get::<Checked>().is_some();
        let caller = authenticate(parts, state).await?;
        if !checked && caller.granted.is_some() {
            return Err(ApiError::from(app::Error::forbidden(
                "insufficient_scope",
                "this route accepts only unrestricted tokens",
            )));
        }
        Ok(caller)
    }
}

/// The authenticated caller of a route whose handler checks the scope of each operation
/// itself (JSON-RPC, where the body names the method).
pub struct AnyScope(pub Caller);

impl FromRequestParts<AppState> for AnyScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(AnyScope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_operations_scopes_and_optional_auth() {
        let doc = json!({"paths": {
            "/v1/tasks/{id}": {
                "get": {"security": [{"bearer": ["tasks:read"]}]},
                "parameters": [],
            },
            "/v1/agent/connect": {"get": {"security": [{}, {"bearer": ["events"]}]}},
            "/v1/auth/verify": {"get": {"security": [{"bearer": []}]}},
            "/healthz": {"get": {}},
        }});
        let routes = RouteScopes::from_openapi(&doc).unwrap();
        assert_eq!(
            routes.get(&Method::GET, "/v1/tasks/{id}"),
            Some(Requirement {
                scopes: Scopes::of(&[Scope::TasksRead]),
                optional: false
            })
        );
        assert_eq!(
            routes.get(&Method::GET, "/v1/agent/connect"),
            Some(Requirement {
                scopes: Scopes::of(&[Scope::Events]),
                optional: true
            })
        );
        assert_eq!(
            routes
                .get(&Method::GET, "/v1/auth/verify")
                .map(|r| r.scopes),
            Some(Scopes::NONE)
        );
        assert_eq!(routes.get(&Method::GET, "/healthz"), None);
        assert_eq!(routes.get(&Method::POST, "/v1/tasks/{id}"), None);
    }

    #[test]
    fn an_unknown_scope_in_the_document_is_an_error() {
        let doc = json!({"paths": {"/x": {"get": {"security": [{"bearer": ["task:read"]}]}}}});
        let e = RouteScopes::from_openapi(&doc).unwrap_err();
        assert!(e.contains("GET /x") && e.contains("task:read"), "{e}");
    }
}
