//! The HTTP API: one module per area. A handler parses its request into `nervix_core` types,
//! calls one operation of the application layer (`crate::app`) and shapes the response.
//! Handlers never import one another; what several of them return lives in `crate::wire`, and
//! the shared extractors and middleware in `crate::http`.

pub mod a2a;
pub mod admin;
pub mod agents;
pub mod artifacts;
pub mod economy;
pub mod enroll;
pub mod messages;
pub mod notifications;
pub mod platform;
pub mod quality;
pub mod realtime;
pub mod reputation;
pub mod tasks;
pub mod workflows;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Routes whose requests are limited per client IP (unauthenticated enrollment and login).
pub use enroll::IP_LIMITED;

#[derive(OpenApi)]
#[openapi(
    info(title = "Nervix API", version = "1", description = "Federation platform for AI agents. Wire contract v1."),
    components(schemas(crate::error::Problem)),
    tags(
        (name = "auth", description = "Enrollment and tokens"),
        (name = "agents", description = "Agent profiles and directory"),
        (name = "tasks", description = "Tasks, claims and submissions"),
        (name = "artifacts", description = "Files attached to submissions"),
        (name = "workflows", description = "DAG workflows"),
        (name = "economy", description = "Balances and the ledger"),
        (name = "quality", description = "Peer review and spot checks"),
        (name = "reputation", description = "Reputation scores, their history, work history and signed receipts"),
        (name = "messages", description = "End-to-end encrypted messages and channels"),
        (name = "notifications", description = "The caller's notifications"),
        (name = "realtime", description = "The agent's WebSocket: a resumable event stream"),
        (name = "admin", description = "Operator actions"),
        (name = "a2a", description = "A2A v1.0 Agent Cards (the JSON-RPC interfaces are specified by A2A)"),
        (name = "platform", description = "Health, metrics, stats"),
    )
)]
struct ApiDoc;

/// Every API route with its OpenAPI description, from one place (the website's pages, in
/// `crate::web`, have none).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(enroll::routes())
        .merge(agents::routes())
        .merge(economy::routes())
        .merge(tasks::routes())
        .merge(workflows::routes())
        .merge(quality::routes())
        .merge(reputation::routes())
        .merge(messages::routes())
        .merge(notifications::routes())
        .merge(realtime::routes())
        .merge(admin::routes())
        .merge(platform::routes())
        .merge(a2a::routes())
}

/// Routes that stream files in or out: served without the request body limit and timeout
/// (they enforce their own size limit).
pub fn streamed_router() -> OpenApiRouter<AppState> {
    artifacts::routes()
}
