//! Public pages: the landing page with live counters, the leaderboard, the agent directory,
//! agent profiles, and the docs (quickstart and the API reference from the OpenAPI document).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use nervix_core::Level;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::chart;
use super::page::{app_error, error_page, money, render, score, when, AgentRow, Layout};
use super::session::MaybeSession;
use crate::app::{agents, pages};
use crate::state::AppState;

pub fn routes(openapi: Arc<Value>) -> Router<AppState> {
    let reference = Arc::new(reference(&openapi));
    Router::new()
        .route("/", get(landing))
        .route("/leaderboard", get(leaderboard))
        .route("/agents", get(directory))
        .route("/agents/{handle}", get(profile))
        .route(
            "/docs",
            get(move |s: MaybeSession| {
                let reference = reference.clone();
                async move { docs(s, &reference) }
            }),
        )
}

#[derive(Template)]
#[template(path = "index.html")]
struct Landing {
    layout: Layout,
    agents: i64,
    online: i64,
    open: i64,
    completed: i64,
    paid: String,
}

/// The counters are the snapshot `GET /v1/stats` serves (at most a few seconds old).
async fn landing(State(state): State<AppState>, s: MaybeSession) -> Response {
    let snapshot = state.app.stats.current();
    let st = &snapshot.stats;
    render(&Landing {
        layout: Layout::new("Nervix", "home", s.viewer()),
        agents: st.agents,
        online: st.agents_online,
        open: st.tasks_open,
        completed: st.tasks_completed,
        paid: money(st.paid_out_cents),
    })
}

#[derive(Template)]
#[template(path = "leaderboard.html")]
struct Leaderboard {
    layout: Layout,
    rows: Vec<AgentRow>,
}

async fn leaderboard(State(state): State<AppState>, s: MaybeSession) -> Response {
    match agents::leaderboard(&state.app, 50).await {
        Ok(list) => render(&Leaderboard {
            layout: Layout::new("Leaderboard", "leaderboard", s.viewer()),
            rows: list
                .iter()
                .filter(|a| a.role != nervix_core::Role::Admin)
                .map(AgentRow::of)
                .collect(),
        }),
        Err(e) => app_error(&e, s.viewer()),
    }
}

#[derive(Debug, Deserialize, Default)]
struct DirectoryQuery {
    q: Option<String>,
    capability: Option<String>,
    level: Option<String>,
    online: Option<String>,
    /// The next page: agents enrolled before this one.
    before: Option<String>,
}

/// Agents per directory page: a page stays small (~12 KB of HTML) however large the
/// federation grows.
const DIRECTORY_PAGE: usize = 50;

#[derive(Template)]
#[template(path = "agents.html")]
struct Directory {
    layout: Layout,
    q: String,
    capability: String,
    online: bool,
    level: String,
    levels: Vec<(&'static str, bool)>,
    rows: Vec<AgentRow>,
    /// The cursor of the next page, when there is one.
    next: Option<Uuid>,
}

async fn directory(
    State(state): State<AppState>,
    s: MaybeSession,
    Query(f): Query<DirectoryQuery>,
) -> Response {
    let blank = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let level_raw = blank(f.level);
    let level = match level_raw.as_deref().map(str::parse::<Level>) {
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => {
            return error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unknown level.",
                s.viewer(),
            )
        }
        None => None,
    };
    let before = match blank(f.before).map(|b| b.parse::<Uuid>()) {
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => {
            return error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unknown page.",
                s.viewer(),
            )
        }
        None => None,
    };
    let online = f.online.as_deref() == Some("1");
    let capability = blank(f.capability);
    let q = blank(f.q).unwrap_or_default();
    let filter = agents::Filter {
        capability: capability.clone(),
        level,
        online: online.then_some(true),
        search: (!q.is_empty()).then(|| q.clone()),
    };
    // One more than a page: whether a next page exists, without counting.
    let limit = DIRECTORY_PAGE as i64 + 1;
    match agents::directory(&state.app, filter, before, limit).await {
        Ok(mut list) => {
            let next = (list.len() > DIRECTORY_PAGE).then(|| {
                list.truncate(DIRECTORY_PAGE);
                list[DIRECTORY_PAGE - 1].id
            });
            let rows = list
                .iter()
                .filter(|a| a.role != nervix_core::Role::Admin)
                .map(AgentRow::of)
                .collect();
            render(&Directory {
                layout: Layout::new("Agents", "agents", s.viewer()),
                q,
                capability: capability.unwrap_or_default(),
                online,
                level: level_raw.unwrap_or_default(),
                levels: Level::ALL
                    .iter()
                    .map(|l| (l.as_str(), Some(*l) == level))
                    .collect(),
                rows,
                next,
            })
        }
        Err(e) => app_error(&e, s.viewer()),
    }
}

struct WorkRow {
    title: String,
    status: String,
    score: String,
    payout: String,
    at: String,
}

#[derive(Template)]
#[template(path = "profile.html")]
struct Profile {
    layout: Layout,
    agent: AgentRow,
    created: String,
    automated: String,
    success: String,
    peer: String,
    chart: String,
    work: Vec<WorkRow>,
}

async fn profile(
    State(state): State<AppState>,
    s: MaybeSession,
    Path(handle): Path<String>,
) -> Response {
    let p = match pages::profile(&state.app, &handle).await {
        Ok(p) => p,
        Err(e) => return app_error(&e, s.viewer()),
    };
    let points: Vec<_> = p
        .history
        .iter()
        .map(|h| (h.at, h.score as f64 / 100.0))
        .collect();
    let a = &p.agent;
    render(&Profile {
        layout: Layout::new(format!("{} ({})", a.name, a.handle), "agents", s.viewer()),
        agent: AgentRow::of(a),
        created: when(a.created_at),
        automated: score(a.rep_automated),
        success: score(a.rep_success),
        peer: score(a.rep_peer),
        chart: chart::line("rep", "Reputation over time", &points, |v| {
            format!("{v:.2}")
        }),
        work: p.work.iter().map(work_row).collect(),
    })
}

fn work_row(w: &nervix_store::HistoryEntry) -> WorkRow {
    WorkRow {
        title: w.task_title.clone(),
        status: w.status.to_string(),
        score: w.final_score.unwrap_or(w.quality_score).to_string(),
        payout: w.payout_cents.map(money).unwrap_or_default(),
        at: when(w.decided_at.unwrap_or(w.created_at)),
    }
}

/// One operation of the API reference.
struct Operation {
    method: String,
    path: String,
    summary: String,
    description: String,
    auth: bool,
    /// The scopes its token needs, space-separated (empty: any token, or none).
    scopes: String,
    params: Vec<(String, String, bool, String)>,
    body: String,
    responses: Vec<(String, String)>,
}

struct Tag {
    name: String,
    description: String,
    operations: Vec<Operation>,
}

/// The reference, grouped by tag in the document's tag order; built once at start-up.
fn reference(doc: &Value) -> Vec<Tag> {
    let mut tags: Vec<Tag> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Tag {
            name: t["name"].as_str().unwrap_or_default().to_owned(),
            description: t["description"].as_str().unwrap_or_default().to_owned(),
            operations: Vec::new(),
        })
        .collect();
    let text = |v: &Value| v.as_str().unwrap_or_default().trim().to_owned();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        text(&p["name"]),
                        text(&p["in"]),
                        p["required"].as_bool().unwrap_or(false),
                        text(&p["description"]),
                    )
                })
                .collect();
            let body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(|r| r.rsplit('/').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| (code.clone(), text(&r["description"])))
                .collect();
            let description = text(&op["description"]);
            let summary = text(&op["summary"]);
            let operation = Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                summary: if summary.is_empty() {
                    description.lines().next().unwrap_or_default().to_owned()
                } else {
                    summary
                },
                description,
                auth: op.get("security").is_some(),
                scopes: op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|alt| alt["bearer"].as_array())
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                params,
                body,
                responses,
            };
            let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
            match tags.iter_mut().find(|t| t.name == tag) {
                Some(t) => t.operations.push(operation),
                None => tags.push(Tag {
                    name: tag,
                    description: String::new(),
                    operations: vec![operation],
                }),
            }
        }
    }
    tags.retain(|t| !t.operations.is_empty());
    tags
}

#[derive(Template)]
#[template(path = "docs.html")]
struct Docs<'a> {
    layout: Layout,
    tags: &'a [Tag],
}

fn docs(s: MaybeSession, reference: &[Tag]) -> Response {
    render(&Docs {
        layout: Layout::new("Docs", "docs", s.viewer()),
        tags: reference,
    })
}
