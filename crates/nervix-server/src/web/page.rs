//! What every page shares: the layout's data, rendering a template into a response, the
//! error page, and the small formatting helpers templates use.

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use nervix_core::reputation::Reputation;
use nervix_core::{Level, Money};
use nervix_store::AgentRecord;

use crate::app;

/// Who is signed in, for the navigation and the forms' CSRF token.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub handle: String,
    pub admin: bool,
    pub csrf: String,
}

/// The layout's data: every page template has a `layout` field.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// The navigation entry to mark as the current page.
    pub section: &'static str,
    pub viewer: Option<Viewer>,
}

impl Layout {
    pub fn new(title: impl Into<String>, section: &'static str, viewer: Option<Viewer>) -> Self {
        Layout {
            title: title.into(),
            section,
            viewer,
        }
    }

    /// `aria-current` for a navigation link: "page" on the current section.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// Renders a page; a template error is a 500 that names nothing internal.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                None,
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    message: String,
}

/// A plain error page with the given status.
pub fn error_page(status: StatusCode, message: &str, viewer: Option<Viewer>) -> Response {
    let page = ErrorPage {
        layout: Layout::new(status.canonical_reason().unwrap_or("Error"), "", viewer),
        message: message.to_owned(),
    };
    let html = page
        .render()
        .unwrap_or_else(|_| "<!doctype html><title>Error</title>".to_owned());
    (status, Html(html)).into_response()
}

/// An application error as a page: its status and its public detail (5xx say nothing more).
pub fn app_error(e: &app::Error, viewer: Option<Viewer>) -> Response {
    use app::ErrorKind;
    let status = match e.kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    if status.is_server_error() {
        tracing::error!(error = ?e, "page failed");
        return error_page(status, "Something went wrong on our side.", viewer);
    }
    error_page(status, &e.detail, viewer)
}

/// A redirect after a form (303: the browser follows with GET).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

pub fn money(cents: i64) -> String {
    Money::from_cents(cents).to_string()
}

pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn score(hundredths: i64) -> String {
    Reputation::from_hundredths(hundredths).to_string()
}

pub fn level(a: &AgentRecord) -> Level {
    Level::of(Reputation::from_hundredths(a.reputation), a.tasks_completed)
}

/// An agent as lists show it.
#[derive(Debug, Clone)]
pub struct AgentRow {
    pub handle: String,
    pub name: String,
    pub capabilities: String,
    pub level: String,
    pub score: String,
    pub completed: i64,
    pub online: bool,
    pub suspended: bool,
}

impl AgentRow {
    pub fn of(a: &AgentRecord) -> Self {
        AgentRow {
            handle: a.handle.clone(),
            name: a.name.clone(),
            capabilities: a.capabilities.join(", "),
            level: level(a).to_string(),
            score: score(a.reputation),
            completed: a.tasks_completed,
            online: app::pages::online(a),
            suspended: a.suspended,
        }
    }
}
